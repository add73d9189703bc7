"""Smoke test of `python -m benchmarks.resharding --quick` (issue 15): a 3-shard cluster
and 3 proxies in cluster mode, a steady GET/SET load through all 3, and one migration of
1000 slots; every figure the benchmark reports exists.

It asserts that the figures exist and that nothing was lost (the masters hold every
preloaded key once, no client error), not how fast anything was: timing on a shared
2-core machine is the benchmark's to report, not a test's to assert.
"""

from __future__ import annotations

import json

import pytest

from .benchmark_smoke import RUN_LIMIT_S, run_quick

pytestmark = pytest.mark.timeout(RUN_LIMIT_S + 20)


def test_quick_resharding_benchmark_reports_rate_and_latency_side_by_side(tmp_path):
    done = run_quick("benchmarks.resharding", tmp_path)
    print(done.stdout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-6000:]}"
    assert done.stdout.startswith("load average at start:"), done.stdout[:200]
    doc = json.loads((tmp_path / "resharding-latest.json").read_text())
    (r,) = doc["rounds"]
    m = r["migration"]
    assert m["state"] == "done" and m["done"] == m["total"] == 1000
    assert m["keys_moved"] > 0 and m["keys_per_s"] > 0 and m["slots_per_s"] > 0
    for phase in ("baseline", "during"):
        s = r[phase]
        assert s["ops"] > 0 and s["p50_ms"] > 0 and s["p99_ms"] >= s["p50_ms"] and s["errors"] == 0, (phase, s)
    assert doc["keys_on_masters"] == doc["keys_preloaded"] == 5000
    assert "migration / baseline" in done.stdout and "keys/s" in done.stdout
