"""Replication lag in seconds (health/probes/probe.py `lag_seconds`): from the master's
probed offsets, how old the data a replica held at its probe was."""

from __future__ import annotations

from collections import deque

from health.probes.probe import Health, lag_seconds

# the master probed every 100 ms: (sent_at, master_repl_offset)
SAMPLES = deque([(10.0, 100), (10.1, 100), (10.2, 150), (10.3, 200), (10.4, 260)])


def test_a_replica_with_everything_the_master_had_has_no_lag():
    assert lag_seconds(SAMPLES, 260, 10.45) == 0.0
    assert lag_seconds(SAMPLES, 300, 10.45) == 0.0


def test_lag_counts_from_the_first_master_probe_beyond_the_replica():
    # the replica held 150 at 10.45: the master had more from the probe at 10.3 on
    assert lag_seconds(SAMPLES, 150, 10.45) == 10.45 - 10.3
    assert lag_seconds(SAMPLES, 120, 10.45) == 10.45 - 10.2


def test_master_probes_after_the_replicas_are_no_evidence():
    # probed at 10.25 holding 150: the master's later 200 and 260 do not count against it
    assert lag_seconds(SAMPLES, 150, 10.25) == 0.0


def test_a_replica_behind_every_kept_sample_gets_a_lower_bound():
    assert lag_seconds(SAMPLES, 50, 12.0) == 12.0 - 10.0


def test_health_needs_both_probed():
    h = Health(["m:1", "r:2"], down_after_ms=1000)
    assert h.replica_lag_seconds("r:2", "m:1") is None
    h.nodes["m:1"].samples.extend(SAMPLES)
    r = h.nodes["r:2"]
    r.ever_ok, r.last_ok, r.offset = True, 10.45, 150
    assert h.replica_lag_seconds("r:2", "m:1") == 10.45 - 10.3
    assert h.replica_lag_seconds("unknown:3", "m:1") is None
