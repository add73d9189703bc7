"""Non-voting learners (etcd's model) in raft/core.py, on hand-driven clusters.

A learner gets the log, snapshots and follower leases like a follower, never
campaigns and is never asked for a vote, and is not counted for commit, the
leader lease or check-quorum; it routes writes, so writes_fenced waits for it.
"""

from __future__ import annotations

import json
import random

import pytest

from raft.codec import snapshot_from_dict, snapshot_to_dict
from raft.core import (
    FOLLOWER,
    LEADER,
    ConfChange,
    Config,
    ProposalRejected,
    RaftCore,
    decode_config,
    encode_members,
)
from raft.messages import EntryKind, Message, PreVote, RequestVote, Snapshot
from tests.sim.scripted import Cluster

LEARNERS = ["l1", "l2", "l3", "l4"]


def _record_votes(c: Cluster) -> list[Message]:
    seen: list[Message] = []

    def spy(m: Message) -> bool:
        if isinstance(m, (PreVote, RequestVote)):
            seen.append(m)
        return False

    c.drop_if = spy
    return seen


def test_learners_never_campaign_and_are_never_asked_for_votes() -> None:
    c = Cluster(3, learners=LEARNERS)
    votes = _record_votes(c)
    for lid in LEARNERS:  # alone and with no leader, for many election timeouts
        c.tick(lid, 5 * c.cfg.election_ticks)
        c.stabilize()
        assert c.cores[lid].role == FOLLOWER and c.cores[lid].term == 0
    c.tick_all(5 * c.cfg.election_ticks)
    leader = c.leader()
    assert leader is not None and leader.id not in LEARNERS
    assert votes and all(m.dst not in LEARNERS and m.src not in LEARNERS for m in votes)
    for lid in LEARNERS:
        assert c.cores[lid].is_learner() and not c.cores[lid].promotable()
        assert c.cores[lid].leader_id == leader.id


def test_commit_and_leader_lease_ignore_learners() -> None:
    c = Cluster(3, learners=LEARNERS)
    c.elect("n1")
    c.tick_all(2)
    n1 = c.cores["n1"]
    # n1 + n2 are a quorum of the 3 voters: commit and lease without n3 and every learner
    for other in ["n3", *LEARNERS]:
        c.cut("n1", other)
    n1.propose(b"a")
    c.tick_all(2)
    assert n1.commit_index == n1.log.last_index
    assert n1.lease_valid()
    # four learners answer, but only one voter (n1 itself): no commit, no lease, and
    # check-quorum makes n1 step down
    c.recover()
    c.cut("n1", "n2")
    c.cut("n1", "n3")
    before = n1.commit_index
    n1.propose(b"b")
    c.stabilize()
    assert n1.commit_index == before

    def tick_leader_and_learners() -> None:
        c.tick("n1")
        for lid in LEARNERS:
            c.tick(lid)
        c.stabilize()

    for _ in range(c.cfg.effective_lease_ticks + 1):  # the learners ack every heartbeat meanwhile
        tick_leader_and_learners()
    assert not n1.lease_valid()
    for _ in range(2 * c.cfg.election_ticks):
        if n1.role != LEADER:
            break
        tick_leader_and_learners()
    assert n1.role == FOLLOWER


def test_learner_holds_a_follower_lease_and_writes_fenced_waits_for_a_cut_learner() -> None:
    c = Cluster(3, learners=["l1"])
    c.elect("n1")
    c.tick_all(2)
    n1, l1 = c.cores["n1"], c.cores["l1"]
    assert l1.follower_lease_valid()
    c.cut("n1", "l1")  # l1 may still route writes and never hears of the commit
    n1.propose(b"new topology")
    c.stabilize()
    waited = c.ticks_until_fenced("n1", n1.commit_index, "l1")
    assert not l1.follower_lease_valid()
    assert waited > 1  # the voters alone answer within one tick: the wait was for l1


def test_removed_learner_lease_is_waited_out() -> None:
    c = Cluster(3, learners=["l1"])
    c.elect("n1")
    c.tick_all(2)
    n1, l1 = c.cores["n1"], c.cores["l1"]
    assert l1.follower_lease_valid()
    c.cut("n1", "l1")
    n1.propose_conf_change(ConfChange("remove", "l1"))
    c.stabilize()
    assert "l1" not in n1.learners and n1.commit_index == n1.config_index
    n1.propose(b"v")
    c.stabilize()
    waited = c.ticks_until_fenced("n1", n1.commit_index, "l1")
    assert waited > 1


def _join_empty(c: Cluster, nid: str, cfg: Config) -> None:
    c.ids.append(nid)
    c.disks[nid] = type(c.disks["n1"])()
    c.applied[nid] = []
    c.restored[nid] = 0
    c.cores[nid] = RaftCore(nid, {}, None, rng=random.Random(7), config=cfg)


@pytest.mark.parametrize("op", ["promote", "add"])
def test_learner_joins_then_is_promoted(op: str) -> None:
    cfg = Config(election_ticks=10, heartbeat_ticks=1, snapshot_threshold=4)
    c = Cluster(3, cfg=cfg)
    c.elect("n1")
    n1 = c.cores["n1"]
    for i in range(10):
        n1.propose(f"v{i}".encode())
        c.stabilize()
    _join_empty(c, "n4", cfg)
    n1.propose_conf_change(ConfChange("add_learner", "n4", "http://n4"))
    c.tick_all(3)
    n4 = c.cores["n4"]
    assert n4.learners == {"n4": "http://n4"} and n4.is_learner()
    assert [e.data for e in c.applied["n4"]] == [f"v{i}".encode() for i in range(10)]
    assert n1.quorum() == 2 and sorted(n1.members) == ["n1", "n2", "n3"]
    with pytest.raises(ProposalRejected):
        n1.transfer_leadership("n4")
    assert n1.best_transferee() in ("n2", "n3")
    with pytest.raises(ProposalRejected):
        n1.propose_conf_change(ConfChange("add_learner", "n4"))  # already a learner
    n1.propose_conf_change(ConfChange(op, "n4"))
    c.tick_all(3)
    assert n4.members.get("n4") == "http://n4" and not n4.learners and n1.quorum() == 3
    n1.transfer_leadership("n4")
    c.tick_all(3)
    assert n4.role == LEADER


def test_membership_change_errors() -> None:
    c = Cluster(1, learners=["l1"])
    c.elect("n1")
    n1 = c.cores["n1"]
    with pytest.raises(ProposalRejected, match="already a voter"):
        n1.propose_conf_change(ConfChange("add_learner", "n1"))
    with pytest.raises(ProposalRejected, match="not a learner"):
        n1.propose_conf_change(ConfChange("promote", "x"))
    with pytest.raises(ProposalRejected, match="last voter"):
        n1.propose_conf_change(ConfChange("remove", "n1"))
    n1.propose_conf_change(ConfChange("remove", "l1"))
    c.stabilize()
    assert n1.learners == {} and n1.members == {"n1": ""}


def test_learners_survive_compaction_and_restart() -> None:
    cfg = Config(election_ticks=10, heartbeat_ticks=1, snapshot_threshold=4)
    c = Cluster(3, cfg=cfg, learners=["l1"])
    c.elect("n1")
    n1 = c.cores["n1"]
    n1.propose_conf_change(ConfChange("add_learner", "l2", "http://l2"))
    c.stabilize()
    for i in range(10):
        n1.propose(f"v{i}".encode())
        c.stabilize()
    assert n1.log.snapshot.index > n1.config_index
    assert n1.log.snapshot.learners == {"l1": "", "l2": "http://l2"}
    c.crash("n1")
    n1 = c.restart("n1")
    assert n1.learners == {"l1": "", "l2": "http://l2"}


def test_config_and_snapshot_without_learners_encode_as_before() -> None:
    """Rolling upgrades: an older node reads what a newer one writes while no learner exists."""
    assert encode_members({"b": "u2", "a": "u1"}) == b'{"members":{"a":"u1","b":"u2"}}'
    assert encode_members({"a": "u1"}, {}) == b'{"members":{"a":"u1"}}'
    data = encode_members({"a": "u1"}, {"l": "u3"})
    assert json.loads(data) == {"members": {"a": "u1"}, "learners": {"l": "u3"}}
    assert decode_config(data) == ({"a": "u1"}, {"l": "u3"})
    assert decode_config(b'{"members":{"a":"u1"}}') == ({"a": "u1"}, {})
    old = Snapshot(index=3, term=2, members={"a": "u1"}, data=b"x")
    assert set(snapshot_to_dict(old)) == {"index", "term", "members", "data"}
    assert snapshot_from_dict(snapshot_to_dict(old)) == old
    new = Snapshot(index=3, term=2, members={"a": "u1"}, data=b"x", learners={"l": "u3"})
    assert snapshot_from_dict(snapshot_to_dict(new)) == new
    assert EntryKind.CONFIG  # CONFIG entries carry the same JSON
