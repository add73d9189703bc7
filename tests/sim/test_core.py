"""raft/core.py behaviours beyond the regression list, on hand-driven clusters."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from raft.core import FOLLOWER, LEADER, ConfChange, Config, NotLeader, ProposalRejected, RaftCore
from raft.messages import AppendEntries, AppendEntriesResponse, Entry, EntryKind, PreVote, PreVoteResponse
from tests.sim.scripted import Cluster


def values(c: Cluster, nid: str) -> list[bytes]:
    return [e.data for e in c.applied[nid]]


@pytest.mark.parametrize(
    "kwargs",
    [dict(heartbeat_ticks=0), dict(election_ticks=1, heartbeat_ticks=1), dict(lease_ticks=10), dict(max_inflight=0)],
)
def test_config_validate(kwargs) -> None:
    with pytest.raises(ValueError):
        Config(**kwargs).validate()


def test_elects_one_leader_and_replicates() -> None:
    c = Cluster(5)
    c.tick_all(3 * c.cfg.election_ticks)
    leaders = [x for x in c.cores.values() if x.role == LEADER]
    assert len(leaders) == 1
    leaders[0].propose(b"v")
    c.tick_all(2)
    assert all(values(c, n) == [b"v"] for n in c.ids)


def test_pre_vote_does_not_bump_terms() -> None:
    core = RaftCore("b", ["a", "b", "c"], None, rng=random.Random(0))
    core.step(PreVote(term=7, src="a", dst="b", last_log_index=0, last_log_term=0))
    rd = core.ready()
    assert core.term == 0 and core.vote is None
    assert rd.messages == (PreVoteResponse(7, "b", "a", True),)


def test_divergent_follower_log_is_repaired() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    for i in range(5):
        c.cores["n1"].propose(f"a{i}".encode())
    c.stabilize()
    # n3 is led to believe in uncommitted entries of a dead-end term.
    n3 = c.cores["n3"]
    n3.step(
        AppendEntries(
            n3.term + 5,
            "ghost",
            "n3",
            n3.log.last_index,
            n3.log.last_term,
            tuple(Entry(n3.term + 5, n3.log.last_index + 1 + k, EntryKind.NORMAL, b"junk") for k in range(3)),
            0,
        )
    )
    c.flush("n3")
    c.queue.clear()
    c.recover()
    c.tick_all(5 * c.cfg.election_ticks)
    leader = c.leader()
    assert leader is not None
    leader.propose(b"after")
    c.tick_all(3)
    expect = [f"a{i}".encode() for i in range(5)] + [b"after"]
    for nid in c.ids:
        assert values(c, nid) == expect
        assert all(e.data != b"junk" for e in c.cores[nid].log.entries)


def test_leader_steps_down_on_higher_term_reply() -> None:
    c = Cluster(3)
    c.elect("n1")
    n1 = c.cores["n1"]
    n1.step(AppendEntries(n1.term + 1, "n2", "n1", 0, 0, (), 0))
    assert n1.role == FOLLOWER and n1.leader_id == "n2"


def test_leadership_transfer() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.cores["n1"].propose(b"x")
    c.stabilize()
    c.cores["n1"].transfer_leadership("n3")
    with pytest.raises(NotLeader) as exc:
        c.cores["n1"].propose(b"during")
    assert exc.value.leader_hint == "n3"
    c.stabilize()
    assert c.cores["n3"].role == LEADER
    assert c.cores["n1"].role == FOLLOWER and c.cores["n1"].leader_id == "n3"


def test_best_transferee_is_the_most_up_to_date_live_voter() -> None:
    c = Cluster(3)
    c.elect("n1")
    assert c.cores["n2"].best_transferee() is None, "only a leader names one"
    c.isolate("n3")
    c.cores["n1"].propose(b"x")
    c.stabilize()
    assert c.cores["n1"].best_transferee() == "n2", "n3 missed an entry"
    c.recover()
    c.stabilize()
    c.isolate("n2")
    c.tick_all(c.cfg.election_ticks)           # n2's activity mark is from before the cut
    c.cores["n1"].propose(b"y")
    c.stabilize()
    assert c.cores["n1"].best_transferee() == "n3"


def test_best_transferee_passes_over_a_voter_stopped_a_moment_ago() -> None:
    """A rolling restart stops a follower, then the leader: the follower still counts as
    active for the rest of the election timeout, and a handover to it would leave the
    cluster without a leader until the next election."""
    c = Cluster(5)
    c.elect("n1")
    n1 = c.cores["n1"]
    n1.propose(b"x")
    c.stabilize()
    c.isolate("n5")                             # stopped: hears and answers nothing
    c.tick_all(3 * c.cfg.heartbeat_ticks)      # three heartbeats, well within an election timeout
    c.stabilize()
    assert 3 * c.cfg.heartbeat_ticks < c.cfg.election_ticks and n1._prs["n5"].recent_active
    assert n1._prs["n5"].match == n1._prs["n4"].match, "as up to date as the others"
    assert n1.best_transferee() != "n5"


def test_transfer_to_non_member_rejected() -> None:
    c = Cluster(3)
    c.elect("n1")
    with pytest.raises(ProposalRejected):
        c.cores["n1"].transfer_leadership("zz")


def test_inflight_and_batch_bounds() -> None:
    cfg = Config(election_ticks=10, heartbeat_ticks=5, max_inflight=2, max_batch=3)
    c = Cluster(3, cfg=cfg)
    c.elect("n1")
    c.tick_all(1)
    n1 = c.cores["n1"]
    c.isolate("n2")
    c.isolate("n3")  # messages vanish, so nothing is acknowledged
    for i in range(20):
        n1.propose(f"v{i}".encode())
    sent = [m for m in n1.ready().messages if isinstance(m, AppendEntries) and m.dst == "n2" and m.entries]
    assert len(sent) == 2
    assert all(len(m.entries) <= 3 for m in sent)


def test_remove_leader_then_others_elect() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.tick_all(1)
    c.cores["n1"].propose_conf_change(ConfChange("remove", "n1"))
    c.tick_all(2)
    assert c.cores["n1"].role == FOLLOWER
    assert sorted(c.cores["n2"].members) == ["n2", "n3"]
    c.tick_all(5 * c.cfg.election_ticks)
    leader = c.leader()
    assert leader is not None and leader.id in ("n2", "n3")
    assert sorted(leader.members) == ["n2", "n3"]


def test_add_member_joins_through_snapshot() -> None:
    cfg = Config(election_ticks=10, heartbeat_ticks=1, snapshot_threshold=4)
    c = Cluster(3, cfg=cfg, ids=["n1", "n2", "n3"])
    c.elect("n1")
    for i in range(10):
        c.cores["n1"].propose(f"v{i}".encode())
        c.stabilize()
    assert c.cores["n1"].log.snapshot.index > 0
    # n4 starts empty, with no membership: it waits to be added.
    c.ids.append("n4")
    c.disks["n4"] = type(c.disks["n1"])()
    c.applied["n4"] = []
    c.restored["n4"] = 0
    c.cores["n4"] = RaftCore("n4", {}, None, rng=random.Random(9), config=cfg)
    c.tick_all(3 * cfg.election_ticks)
    assert c.cores["n4"].role == FOLLOWER and c.cores["n4"].leader_id is None
    c.cores["n1"].propose_conf_change(ConfChange("add", "n4", "http://n4"))
    c.tick_all(3)
    assert c.restored["n4"] >= 1
    assert values(c, "n4") == [f"v{i}".encode() for i in range(10)]
    assert c.cores["n4"].members["n4"] == "http://n4"


def test_follower_lease_follows_leader_lease() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.tick_all(2)
    assert c.cores["n1"].lease_valid()
    assert c.cores["n2"].follower_lease_valid()
    c.isolate("n1")
    for _ in range(c.cfg.election_ticks):
        c.tick_all(1)
    assert not c.cores["n1"].lease_valid()
    assert not c.cores["n2"].follower_lease_valid() or c.cores["n2"].leader_id != "n1"


def test_lease_ticks_left_counts_down_to_the_end_of_the_lease_and_is_zero_without_one() -> None:
    """What the C data plane trusts a permit for (RaftNode.lease_seconds_left): never
    beyond the tick at which lease_valid / follower_lease_valid turn false."""
    c = Cluster(3)
    c.elect("n1")
    c.tick_all(2)
    for nid in ("n1", "n2"):
        assert 0 < c.cores[nid].lease_ticks_left() <= c.cfg.effective_lease_ticks
    c.isolate("n1")
    for _ in range(2 * c.cfg.election_ticks):
        left = {nid: c.cores[nid].lease_ticks_left() for nid in ("n1", "n2")}
        c.tick_all(1)
        for nid, before in left.items():
            core = c.cores[nid]
            held = core.lease_valid() or core.follower_lease_valid()
            if before <= 1:
                # a lease said to end within this tick has ended (unless a new one began)
                assert not held or core.lease_ticks_left() > 0, nid
            if not held:
                assert core.lease_ticks_left() == 0, nid
    assert c.cores["n1"].lease_ticks_left() == 0


@pytest.mark.parametrize("lease, heartbeat", [(8, 2), (8, 3), (8, 4), (7, 3), (6, 3), (5, 2), (4, 2), (3, 1), (2, 1)])
def test_a_follower_keeps_its_lease_between_heartbeats_only_if_two_periods_fit_in_it(lease, heartbeat) -> None:
    """The rule the proxy's configuration enforces (proxy.process.config.heartbeat_lease_problem):
    with messages delivered at once, a follower's lease lapses between heartbeats exactly when
    two heartbeat periods do not fit in the lease, since it is counted from its answer to the
    heartbeat before the one that renews it."""
    from proxy.process.config import heartbeat_lease_problem

    c = Cluster(3, Config(election_ticks=10, heartbeat_ticks=heartbeat, lease_ticks=lease))
    c.elect("n1")
    c.tick_all(2 * c.cfg.election_ticks)
    lapsed = 0
    for _ in range(10 * heartbeat):
        c.tick_all(1)
        assert c.cores["n1"].lease_valid()
        lapsed += not c.cores["n2"].follower_lease_valid()
    assert (lapsed == 0) == (2 * heartbeat < lease), lapsed
    proxy_timing = SimpleNamespace(heartbeat_ticks=heartbeat, lease_ticks=lease, lease_ms=lease * 50, tick_ms=50)
    assert (heartbeat_lease_problem(proxy_timing) is None) == (lapsed == 0)


def test_follower_takes_no_lease_from_a_heartbeat_long_in_flight() -> None:
    """A heartbeat delayed in flight would stretch the follower's lease past the
    leader's by the delay; the echo of the follower's own tick bounds the delay,
    and a message that may have been in flight too long vouches for nothing."""
    f = RaftCore("f", ["l", "f", "x"], None, rng=random.Random(1), boot_id=7)
    f.step(AppendEntries(1, "l", "f", 0, 0, (), commit=0, ctx=5, lease_ticks=8, echo_boot=-1))
    assert not f.follower_lease_valid()  # nothing of ours echoed yet
    rd = f.ready()
    (resp,) = rd.messages
    f.advance(rd)
    assert (resp.fctx, resp.fboot) == (0, 7)
    late = f.cfg.max_lease_delay_ticks + 1
    for _ in range(late):
        f.tick()
    f.step(AppendEntries(1, "l", "f", 0, 0, (), commit=0, ctx=6, lease_ticks=8, echo=resp.fctx, echo_boot=7))
    assert not f.follower_lease_valid()  # it answers a response sent `late` ticks ago
    f.step(AppendEntries(1, "l", "f", 0, 0, (), commit=0, ctx=7, lease_ticks=8, echo=late, echo_boot=3))
    assert not f.follower_lease_valid()  # an echo of an earlier start of this node proves nothing
    f.step(AppendEntries(1, "l", "f", 0, 0, (), commit=0, ctx=8, lease_ticks=8, echo=late - 1, echo_boot=7))
    assert f.follower_lease_valid()  # a timely one: 8 ticks less one of margin
    for _ in range(6):
        f.tick()
    assert f.follower_lease_valid()
    f.tick()
    assert not f.follower_lease_valid()
    f.step(AppendEntries(1, "l", "f", 0, 0, (), commit=0, ctx=9, lease_ticks=8, echo=10**6,
                         echo_boot=7))
    assert not f.follower_lease_valid()  # an echo from our future is no echo
    f.step(AppendEntries(1, "l", "f", 0, 0, (), commit=0, ctx=10, lease_ticks=8))
    assert f.follower_lease_valid()  # a leader of the version before echoes: its rule, from arrival


def test_follower_holds_no_lease_until_it_applied_what_the_leader_committed() -> None:
    f = RaftCore("f", ["l", "f", "x"], None, rng=random.Random(2), boot_id=1)
    f.step(AppendEntries(1, "l", "f", 0, 0, (), commit=0, ctx=1, lease_ticks=8))
    f.advance(f.ready())
    es = (Entry(1, 1, EntryKind.NORMAL, b"new topology"),)
    f.step(AppendEntries(1, "l", "f", 0, 0, es, commit=1, ctx=2, lease_ticks=8, echo=0, echo_boot=1))
    assert not f.follower_lease_valid()  # committed, not yet applied here
    rd = f.ready()
    assert rd.committed_entries == ()  # first it must be made durable
    f.advance(rd)
    rd = f.ready()
    assert rd.committed_entries == es
    f.advance(rd)
    assert f.follower_lease_valid()


def test_writes_fenced_after_every_peer_heard_of_the_commit() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.tick_all(2)
    n1 = c.cores["n1"]
    c.drop_if = lambda m: isinstance(m, AppendEntriesResponse) and m.src == "n3"  # n3's answers are lost
    n1.propose(b"v")
    c.stabilize()
    idx = n1.commit_index
    assert values(c, "n3") == [b"v"]
    assert not n1.writes_fenced(idx)  # n3 applied it, but n1 cannot know
    c.drop_if = None
    c.tick_all(1)
    assert n1.writes_fenced(idx)
    assert not n1.writes_fenced(idx + 1)
    assert not c.cores["n2"].writes_fenced(idx)  # only a leader can tell
    n1.propose(b"w")
    c.stabilize()
    assert n1.writes_fenced(n1.commit_index)  # the commit's own broadcast brought both answers


def test_writes_fenced_waits_out_the_lease_of_a_silent_peer() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.tick_all(2)
    n1 = c.cores["n1"]
    assert c.cores["n3"].follower_lease_valid()
    c.cut("n1", "n3")  # n3 may still hold its lease and never hears of the commit
    n1.propose(b"v")
    c.stabilize()
    waited = c.ticks_until_fenced("n1", n1.commit_index, "n3")
    assert not c.cores["n3"].follower_lease_valid()
    assert waited > 1  # more than the one tick the acks of the live peer take


def test_writes_fenced_does_not_wait_for_a_peer_silent_longer_than_a_lease() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.tick_all(2)
    n1 = c.cores["n1"]
    c.crash("n3")
    c.tick_all(n1.cfg.lease_outlives_ticks)
    n1.propose(b"v")
    c.stabilize()
    idx = n1.commit_index
    c.tick_all(1)
    assert n1.writes_fenced(idx)  # n2 heard of the commit; n3 can hold no lease by now


def test_follower_applies_only_entries_it_has_made_durable() -> None:
    core = RaftCore("f", ["l", "f", "x"], None, rng=random.Random(4))
    es = tuple(Entry(1, i, EntryKind.NORMAL, f"e{i}".encode()) for i in (1, 2))
    core.step(AppendEntries(1, "l", "f", 0, 0, es, commit=2))
    rd = core.ready()
    assert rd.entries_to_persist == es
    assert rd.committed_entries == ()  # committed by the cluster, but not yet on our disk
    core.advance(rd)
    assert core.ready().committed_entries == es


def test_abandoned_transfer_steps_down_instead_of_reclaiming_the_lease() -> None:
    """A TimeoutNow delayed past the transfer timeout would start a campaign that
    ignores followers' leases; the old leader must not hold a lease then."""
    c = Cluster(3)
    c.elect("n1")
    c.tick_all(2)
    n1 = c.cores["n1"]
    assert n1.lease_valid()
    c.drop_if = lambda m: m.dst == "n3"  # n3 never hears the TimeoutNow (nor anything else)
    n1.transfer_leadership("n3")
    assert not n1.lease_valid()
    for _ in range(c.cfg.election_ticks):
        assert not n1.lease_valid()
        n1.tick()
        c.stabilize()
    assert n1.role == FOLLOWER and not n1.lease_valid()


def test_a_hastened_first_election_is_held_after_the_ticks_given_then_timeouts_are_random_again() -> None:
    c = Cluster(3)
    et = c.cfg.election_ticks
    n1 = c.cores["n1"]
    n1.hasten_election(2)
    c.tick_all(2)
    assert n1.role == LEADER and c.leader() is n1       # not after a whole election timeout (>= et ticks)
    assert all(c.cores[n].leader_id == "n1" for n in c.ids)
    # on a node with a leader it does nothing: no campaign that would disrupt n1
    n2 = c.cores["n2"]
    n2.hasten_election(1)
    c.tick_all(et - 1)
    assert n1.role == LEADER and n2.role == FOLLOWER and n2.term == n1.term


def test_a_hastened_election_that_fails_is_retried_after_a_randomized_timeout() -> None:
    c = Cluster(3)
    et = c.cfg.election_ticks
    n1 = c.cores["n1"]
    c.isolate("n1")                    # its peers not listening yet (a gated bootstrap)
    n1.hasten_election(2)
    c.tick("n1", 2)
    c.stabilize()
    assert n1.role != LEADER and n1._randomized_timeout >= et
    c.recover()
    c.tick_all(3 * et)
    assert c.leader() is not None
