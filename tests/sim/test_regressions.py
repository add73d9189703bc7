"""One scenario per entry of STYLE.md's "Raft bugs to have a regression test for"."""

from __future__ import annotations

import random

import pytest

from raft.core import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    ConfChange,
    Config,
    ProposalRejected,
    RaftCore,
    StorageState,
)
from raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    PreVote,
    RequestVote,
    RequestVoteResponse,
)
from tests.sim.scripted import Cluster


def committed_values(c: Cluster, nid: str) -> list[bytes]:
    return [e.data for e in c.applied[nid]]


# 1 -------------------------------------------------------------------------------


def test_vote_survives_restart_so_no_double_vote() -> None:
    c = Cluster(3)
    n1 = c.cores["n1"]
    n1.step(RequestVote(term=5, src="n2", dst="n1", last_log_index=0, last_log_term=0))
    rd = n1.ready()
    # The vote leaves only together with the hard state that records it.
    assert rd.hard_state == HardState(term=5, vote="n2", commit=0)
    assert any(isinstance(m, RequestVoteResponse) and m.granted for m in rd.messages)
    c.disks["n1"].save(rd)
    n1.advance(rd)

    c.crash("n1")
    n1 = c.restart("n1")
    assert (n1.term, n1.vote) == (5, "n2")
    for _ in range(n1.cfg.election_ticks):  # let the post-restart quiet period pass
        n1.tick()
    n1.step(RequestVote(term=5, src="n3", dst="n1", last_log_index=9, last_log_term=4))
    replies = [m for m in n1.ready().messages if isinstance(m, RequestVoteResponse)]
    assert replies and not replies[0].granted


def test_whole_cluster_restart_keeps_terms_and_committed_entries() -> None:
    c = Cluster(3)
    c.elect("n1")
    term = c.cores["n1"].term
    for v in (b"a", b"b", b"c"):
        c.cores["n1"].propose(v)
        c.stabilize()
    c.tick_all(2)
    assert committed_values(c, "n2") == [b"a", b"b", b"c"]
    for nid in c.ids:
        c.crash(nid)
    for nid in c.ids:
        core = c.restart(nid)
        assert core.term == term
    for _ in range(10 * c.cfg.election_ticks):  # everybody ticks, as after a real restart
        if c.leader() is not None:
            break
        c.tick_all(1)
    leader = c.leader()
    assert leader is not None and leader.term > term
    leader.propose(b"d")
    c.stabilize()
    c.tick_all(2)
    for nid in c.ids:
        assert committed_values(c, nid) == [b"a", b"b", b"c", b"d"]


# 2 -------------------------------------------------------------------------------


def _leader_with_old_entries(n_voters: int = 5) -> RaftCore:
    """A node whose log ends with entries of term 1..2 that became leader in term 3."""
    ids = [f"n{i}" for i in range(1, n_voters + 1)]
    old = (Entry(1, 1, EntryKind.NOOP), Entry(2, 2, EntryKind.NORMAL, b"old"))
    core = RaftCore("n1", ids, StorageState(HardState(term=2, vote="n1"), None, old), rng=random.Random(1))
    core._campaign(pre=False)  # term 3
    assert core.role == CANDIDATE and core.term == 3
    for voter in ids[1:3]:
        core.step(RequestVoteResponse(term=3, src=voter, dst="n1", granted=True))
    assert core.role == LEADER
    rd = core.ready()
    core.advance(rd)  # the no-op (index 3, term 3) is durable on the leader
    return core


def test_figure8_old_term_entry_not_committed_by_counting_replicas() -> None:
    core = _leader_with_old_entries()
    for f in ("n2", "n3", "n4"):  # a majority now stores index 2 (term 2)
        core.step(AppendEntriesResponse(term=3, src=f, dst="n1", success=True, match_index=2))
    assert core.commit_index == 0, "an entry of an earlier term was committed by counting replicas"
    core.step(AppendEntriesResponse(term=3, src="n2", dst="n1", success=True, match_index=3))
    core.step(AppendEntriesResponse(term=3, src="n3", dst="n1", success=True, match_index=3))
    assert core.commit_index == 3  # committing the own-term no-op commits index 2 with it


def test_figure8_sequence_on_a_cluster() -> None:
    """The paper's Figure 8 played on five cores: an old-term entry that reaches a
    majority under a newer leader must not count as committed, because a
    leader of an intermediate term can still overwrite it."""
    c = Cluster(5, cfg=Config(election_ticks=10, heartbeat_ticks=1, check_quorum=False, max_batch=1))
    c.elect("n1")
    c.tick_all(1)
    base = c.cores["n1"].commit_index
    # (a) n1 (term 1) gets "A" only as far as n2, then crashes.
    for other in ("n3", "n4", "n5"):
        c.cut("n1", other)
    c.cores["n1"].propose(b"A")
    c.stabilize()
    c.crash("n1")
    c.recover()
    # (b) n5 wins term 2 with n3 and n4, but its own entry at the same index reaches nobody.
    c.drop_if = lambda m: isinstance(m, AppendEntries) and m.src == "n5"
    c.elect("n5")
    assert c.cores["n5"].log.term_at(base + 1) == c.cores["n5"].term
    c.crash("n5")
    # (c) n1 returns and wins term 3; "A" (term 1) reaches n3, its own no-op does not.
    c.drop_if = lambda m: (
        isinstance(m, AppendEntries)
        and m.src == "n1"
        and m.dst in ("n3", "n4")
        and c.cores[m.dst].log.last_index > base  # it would accept ...
        and any(e.index > base + 1 for e in m.entries)  # ... the no-op: lose it
    )
    c.restart("n1")
    c.elect("n1")
    n1 = c.cores["n1"]
    for _ in range(3):  # heartbeats let n1 find where n3's and n4's logs end
        n1.tick()
        c.stabilize()
    assert [c.cores[n].log.term_at(base + 1) for n in ("n1", "n2", "n3")] == [1, 1, 1]  # a majority holds A
    assert n1.commit_index == base, "Figure 8: an old-term entry was committed by counting replicas"
    # (d) n1 crashes; n5 returns and, legally, overwrites A with its own term-2 entry.
    c.crash("n1")
    c.drop_if = None
    c.restart("n5")
    c.elect("n5")
    c.tick_all(2)
    assert c.cores["n3"].log.term_at(base + 1) == 2
    assert all(b"A" not in committed_values(c, n) for n in c.ids)


# 3 -------------------------------------------------------------------------------


def test_membership_change_refused_until_leader_commits_own_term() -> None:
    core = _leader_with_old_entries(n_voters=3)
    with pytest.raises(ProposalRejected, match="committed an entry of its term"):
        core.propose_conf_change(ConfChange("add", "n9"))
    core.step(AppendEntriesResponse(term=3, src="n2", dst="n1", success=True, match_index=3))
    assert core.commit_index == 3
    core.propose_conf_change(ConfChange("add", "n9"))
    assert "n9" in core.members  # in force as soon as it is in the log
    with pytest.raises(ProposalRejected, match="pending"):
        core.propose_conf_change(ConfChange("remove", "n2"))


# 4 -------------------------------------------------------------------------------


def test_vote_response_from_older_term_is_ignored() -> None:
    ids = ["n1", "n2", "n3"]
    core = RaftCore("n1", ids, StorageState(HardState(term=4)), rng=random.Random(2))
    core._campaign(pre=False)  # term 5
    core.ready()
    core.step(RequestVoteResponse(term=4, src="n2", dst="n1", granted=True))
    core.step(RequestVoteResponse(term=4, src="n3", dst="n1", granted=True))
    assert core.role == CANDIDATE
    core.step(RequestVoteResponse(term=5, src="n2", dst="n1", granted=True))
    assert core.role == LEADER


# 5 -------------------------------------------------------------------------------


@pytest.mark.parametrize("pre_vote", [True, False])
def test_rejoining_node_does_not_disrupt_leader(pre_vote: bool) -> None:
    c = Cluster(3, cfg=Config(election_ticks=10, heartbeat_ticks=1, pre_vote=pre_vote, check_quorum=True))
    c.elect("n1")
    term = c.cores["n1"].term
    c.isolate("n3")
    for _ in range(10 * c.cfg.election_ticks):
        c.tick_all(1)
    if pre_vote:
        assert c.cores["n3"].term == term  # pre-vote kept the isolated node from inflating its term
    if not pre_vote:
        # Without pre-vote the isolated node inflates its term and, on return,
        # forces the healthy leader to step down: the hazard pre-vote removes.
        assert c.cores["n3"].term > term
        return
    c.recover()
    # n3's timer fires before any heartbeat reaches it: its pre-votes arrive at
    # nodes that hear from n1, and must be ignored.
    c.queue.clear()
    for _ in range(3 * c.cfg.election_ticks):
        c.tick("n3")
        c.flush("n3")
        if any(isinstance(m, PreVote) for m in c.queue):
            break
    assert any(isinstance(m, PreVote) for m in c.queue), "n3 should have pre-voted"
    c.stabilize()
    c.tick_all(3 * c.cfg.election_ticks)
    leader = c.leader()
    assert leader is not None and leader.id == "n1" and leader.term == term
    assert c.cores["n3"].leader_id == "n1"


# 6 -------------------------------------------------------------------------------


def test_leader_steps_down_on_ticks_alone_while_acks_stop() -> None:
    """The driver keeps ticking while its disk stalls: the core must notice it
    lost its quorum and step down, and its lease must end before then."""
    c = Cluster(3)
    c.elect("n1")
    c.tick_all(2)
    n1 = c.cores["n1"]
    assert n1.lease_valid()
    n1.ready()  # a Ready is taken for persisting and the disk never returns
    lease_lost_at = None
    for t in range(1, 3 * c.cfg.election_ticks):
        n1.tick()
        if lease_lost_at is None and not n1.lease_valid():
            lease_lost_at = t
        if n1.role != LEADER:
            break
    assert n1.role == FOLLOWER
    assert lease_lost_at is not None and lease_lost_at <= c.cfg.election_ticks
    assert t <= 2 * c.cfg.election_ticks


def test_lease_ends_before_any_other_node_can_win() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.tick_all(2)
    c.isolate("n1")
    ticks = 0
    while c.cores["n1"].lease_valid():
        c.tick_all(1)
        ticks += 1
        assert all(c.cores[n].role != LEADER for n in ("n2", "n3")), "a new leader while the old lease held"
    assert ticks <= c.cfg.election_ticks


# 7 -------------------------------------------------------------------------------


def test_single_node_reports_commit_only_after_entry_is_durable() -> None:
    core = RaftCore("solo", ["solo"], None, rng=random.Random(3))
    for _ in range(2 * core.cfg.election_ticks):
        core.tick()
        if core.role == LEADER:
            break
    assert core.role == LEADER
    core.advance(core.ready())
    while core.has_ready():
        core.advance(core.ready())
    e = core.propose(b"v")
    rd = core.ready()
    assert e in rd.entries_to_persist
    assert e not in rd.committed_entries
    assert core.commit_index < e.index
    core.advance(rd)  # the driver fsynced the entry
    rd2 = core.ready()
    assert e in rd2.committed_entries
    assert rd2.hard_state is not None and rd2.hard_state.commit == e.index
