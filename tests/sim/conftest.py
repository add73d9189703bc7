from __future__ import annotations

from tests.sim import test_sim


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    s = test_sim.SUMMARY
    if s:
        terminalreporter.write_line(
            f"raft sim: {s['seeds']} seeds in {s['seconds']}s = {s['per_minute']} seeds/min "
            f"on {s['workers']} worker processes "
            f"({s['acked']} acknowledged values checked)"
        )
    if test_sim.LIVENESS:
        terminalreporter.write_line(
            f"raft sim liveness: no leader within 2 election timeouts in {test_sim.LIVENESS['late']} seeds; "
            f"median time to first leader {test_sim.LIVENESS['median_ms']} virtual ms"
        )
