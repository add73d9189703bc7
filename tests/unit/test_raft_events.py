"""health.raft_events: one log line per Raft change seen by the control loop, none per step."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from health.raft_events import RaftEvents


@dataclass
class View:
    leader_id: str | None = "p1"
    term: int = 1
    role: str = "follower"
    members: list[str] = field(default_factory=lambda: ["p1", "p2", "p3"])
    lease: bool = True
    learners: list[str] = field(default_factory=list)
    applying: bool = False

    def lease_held(self) -> bool:
        return self.lease

    def lease_waits_for_apply(self) -> bool:
        return self.applying


def events(caplog) -> list[str]:
    out = [r.getMessage().split()[0] for r in caplog.records if r.name == "health.raft"]
    caplog.clear()
    return out


def test_each_change_is_logged_once(caplog) -> None:
    caplog.set_level(logging.INFO, logger="health.raft")
    ev, v = RaftEvents("p2"), View()
    ev.observe(v)
    assert events(caplog) == ["event=leader_elected"]
    for _ in range(5):
        ev.observe(v)
    assert events(caplog) == []

    v.lease = False
    ev.observe(v)
    ev.observe(v)
    assert events(caplog) == ["event=lease_lost"]
    v.leader_id, v.term = None, 2
    ev.observe(v)
    assert events(caplog) == ["event=leader_lost"]
    v.leader_id, v.lease = "p3", True
    ev.observe(v)
    assert events(caplog) == ["event=leader_elected", "event=lease_regained"]

    v.members = ["p1", "p2", "p3", "p4"]
    ev.observe(v)
    assert events(caplog) == ["event=member_added"]
    v.members = ["p2", "p3", "p4"]
    ev.observe(v)
    assert events(caplog) == ["event=member_removed"]

    v.learners = ["l1"]
    ev.observe(v)
    assert events(caplog) == ["event=learner_added"]
    v.members, v.learners = ["l1", "p2", "p3", "p4"], []     # promoted
    ev.observe(v)
    assert events(caplog) == ["event=member_added", "event=learner_removed"]


def test_same_leader_in_a_new_term_is_a_new_election(caplog) -> None:
    caplog.set_level(logging.INFO, logger="health.raft")
    ev, v = RaftEvents("p1"), View(leader_id="p1", role="leader")
    ev.observe(v)
    events(caplog)
    v.term = 5
    ev.observe(v)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "leader=p1 term=5" in msgs[0]


def test_a_lease_lapsed_only_while_applying_a_commit_is_info(caplog) -> None:
    caplog.set_level(logging.INFO, logger="health.raft")
    ev, v = RaftEvents("p2"), View()
    ev.observe(v)
    caplog.clear()
    v.lease, v.applying = False, True
    ev.observe(v)
    (rec,) = [r for r in caplog.records if r.name == "health.raft"]
    msg = rec.getMessage()
    assert rec.levelno == logging.INFO and "event=lease_lost" in msg and "reason=applying" in msg
    caplog.clear()
    v.lease, v.applying = True, False
    ev.observe(v)
    v.lease = False
    ev.observe(v)
    (rec,) = [r for r in caplog.records if r.name == "health.raft" and "lease_lost" in r.getMessage()]
    assert rec.levelno == logging.WARNING and "reason=lease" in rec.getMessage()
