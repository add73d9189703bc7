"""`redis_raft_proxy_failover_phase` has a series for every phase the controller can be
in: a phase missing from `FAILOVER_PHASES` shows all zeros while the proxy is in it (the
`busy` phase of a master whose scripts are being killed did, until this test)."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.process.metrics import FAILOVER_PHASES

HEALTH = Path(__file__).resolve().parents[2] / "health"
# `self.phase = "x"` and `self.phase, self.phase_reason = "x", ...`
ASSIGNED = re.compile(r'\.phase(?:\s*,\s*self\.phase_reason)?\s*=\s*"([a-z_]+)"')


def test_every_phase_the_controller_sets_has_a_metric_series():
    assigned = {m.group(1) for f in HEALTH.rglob("*.py") for m in ASSIGNED.finditer(f.read_text())}
    assert {"idle", "busy", "switchover", "no_safe_master"} <= assigned, assigned   # the scan finds them
    assert assigned - set(FAILOVER_PHASES) == set(), "phases without a redis_raft_proxy_failover_phase series"


def test_phases_are_listed_once():
    assert len(FAILOVER_PHASES) == len(set(FAILOVER_PHASES))
