"""health/maintenance.py and its records in the replicated state (issue 17): maintenance
mode (pause/resume, an expiry judged by the leader) and the failover history."""

from __future__ import annotations

import json

import pytest

from health.maintenance import (
    BUSY,
    HISTORY_MAX,
    MANUAL,
    OBJECTIVELY_DOWN,
    FailoverRecord,
    Pause,
    bounded,
    busy_master_left_alone,
    down_cause,
    parse_duration,
    pause_expired,
    pause_until,
)
from health.shard.switchover import switchover_budget
from health.state_machine import TopologyStateMachine
from proxy.routing.topology import Topology


def rec(epoch: int, shard: str = "") -> FailoverRecord:
    return FailoverRecord(epoch, 1000.0 + epoch, "h:1", "h:2", OBJECTIVELY_DOWN, 700, "proxy-1", shard)


def sm() -> TopologyStateMachine:
    return TopologyStateMachine(lambda *_: None)


def test_a_pause_expires_only_at_its_expiry_and_one_without_never():
    p = Pause("upgrade", until=100.0, by="ops@host", at=40.0)
    assert not pause_expired(p, 99.9)
    assert pause_expired(p, 100.0) and pause_expired(p, 1e12)
    assert not pause_expired(Pause("forever", until=None), 1e12)
    assert not pause_expired(None, 1e12)


def test_the_expiry_is_counted_from_the_leaders_now():
    assert pause_until(50.0, 30.0) == 80.0
    assert pause_until(50.0, None) is None
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            pause_until(50.0, bad)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400),
                                          ("500ms", 0.5), ("45", 45), ("1.5h", 5400), (" 10 M ", 600)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "-5m", "10 minutes", "h", "1w"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_a_busy_master_is_told_apart_from_one_that_stopped_answering():
    assert down_cause("BUSY Redis is busy running a script.") == BUSY
    assert down_cause("Connection refused") == OBJECTIVELY_DOWN
    assert down_cause(None) == OBJECTIVELY_DOWN


def test_the_history_is_bounded_and_a_reapplied_record_counts_once():
    records: list[FailoverRecord] = []
    for e in range(1, HISTORY_MAX + 11):
        records = bounded(records, rec(e))
    assert len(records) == HISTORY_MAX and records[0].epoch == 11 and records[-1].epoch == HISTORY_MAX + 10
    assert bounded(records, rec(HISTORY_MAX + 10)) is records
    # cluster mode: epochs are per shard
    assert len(bounded([rec(3, "s1")], rec(3, "s2"))) == 2


def test_pause_and_resume_entries_replicate_and_survive_a_snapshot():
    a = sm()
    pause = Pause("kernel upgrade", until=2e9, by="ops@host", at=1e9)
    a.apply(TopologyStateMachine.pause_entry(pause))
    assert a.pause == pause
    b = sm()
    b.restore(a.snapshot())
    assert b.pause == pause
    a.apply(TopologyStateMachine.pause_entry(None))
    assert a.pause is None
    b.restore(a.snapshot())      # a snapshot without a pause ends the one restored over
    assert b.pause is None


def test_failover_records_replicate_and_survive_a_snapshot():
    a = sm()
    a.apply(TopologyStateMachine.entry(Topology(1, "h:1", ("h:2",))))
    r1 = FailoverRecord(2, 1e9, "h:1", "h:2", MANUAL, 120, "proxy-2", detail="switchover to h:2")
    r2 = FailoverRecord(3, 1e9 + 5, "h:2", "h:1", OBJECTIVELY_DOWN, None, "proxy-1", shard="abc")
    for r in (r1, r2, r1):
        a.apply(TopologyStateMachine.record_entry(r))
    assert a.failover_history == [r1, r2]
    b = sm()
    b.restore(a.snapshot())
    assert b.failover_history == [r1, r2]
    assert "shard" not in json.loads(TopologyStateMachine.record_entry(r1))["record"]


def test_snapshots_and_entries_of_older_versions_still_load():
    """Rolling upgrade: a snapshot without the new keys means not paused, no history."""
    old = json.dumps({"topology": {"epoch": 4, "master": "h:1", "replicas": ["h:2"]}}).encode()
    b = sm()
    b.apply(TopologyStateMachine.pause_entry(Pause("x")))
    b.apply(TopologyStateMachine.record_entry(rec(2)))
    b.restore(old)
    assert b.topology.epoch == 4 and b.pause is None and b.failover_history == []
    # and an older proxy ignores the new entries (their op is unknown to it): they carry no topology
    for data in (TopologyStateMachine.pause_entry(Pause("x")), TopologyStateMachine.record_entry(rec(2))):
        assert "topology" not in json.loads(data)


def test_the_switchover_budget_keeps_time_for_the_commit_within_the_timeout():
    assert switchover_budget(10.0) == (9.0, 1.0)
    catch_up, commit = switchover_budget(2.0)
    assert catch_up + commit == 2.0 and commit == pytest.approx(0.4)
    with pytest.raises(ValueError):
        switchover_budget(0.0)


def test_a_busy_master_is_left_alone_while_its_scripts_keep_being_killed() -> None:
    """Found objectively down at 10.0 while answering -BUSY, grace 0.5 s: left alone for the
    grace; after it only while a kill ended a script within the grace (a client re-running its
    runaway script keeps the master busy, each run killed); a refused kill ends nothing."""
    grace = 0.5
    assert busy_master_left_alone(10.4, 10.0, None, grace)          # the kill's time to show
    assert not busy_master_left_alone(10.5, 10.0, None, grace)      # no kill ended anything
    assert busy_master_left_alone(10.9, 10.0, 10.7, grace)          # a run killed 0.2 s ago
    assert not busy_master_left_alone(11.3, 10.0, 10.7, grace)      # none since: unkillable now
    assert not busy_master_left_alone(10.9, 10.0, 9.0, grace)       # a kill from an older spell
