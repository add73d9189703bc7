"""Scripted scenarios for the Raft items of issue 12 ("Safety under faults").

Each test replays one fault sequence step by step (no randomness left to chance)
and fails on the code before its fix.
"""

from __future__ import annotations

import random

import pytest

from raft.core import FOLLOWER, LEADER, ConfChange, RaftCore, RaftError
from raft.messages import (
    LEGACY_ECHO,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    Message,
    Snapshot,
)
from tests.sim.harness import MemDisk
from tests.sim.scripted import Cluster


def _transfer(c: Cluster, src: str, dst: str) -> None:
    c.cores[src].transfer_leadership(dst)
    c.stabilize()
    assert c.cores[dst].role == LEADER and c.cores[src].role == FOLLOWER


def test_stale_term_reply_does_not_shorten_the_fence_wait() -> None:
    """Leadership n1 -> n2 -> n1; a term-1 heartbeat held up in the network reaches
    n2 in term 3, and n2 answers it (as it must, so a stale leader steps down)
    without the echo fields of a current reply. The leader must not take that
    answer as "n2 holds no lease of mine": while n2 is slow, n1 commits with n3,
    and n2, still in its lease, has not applied the entry."""
    c = Cluster(3)
    c.elect("n1")
    c.tick_all(2)
    held: list[Message] = []

    def hold_one_heartbeat(m: Message) -> bool:
        if isinstance(m, AppendEntries) and m.dst == "n2" and not held:
            held.append(m)
            return True
        return False

    c.drop_if = hold_one_heartbeat
    c.tick_all(1)
    c.drop_if = None
    assert held and held[0].term == 1
    _transfer(c, "n1", "n2")
    _transfer(c, "n2", "n1")
    n1, n2 = c.cores["n1"], c.cores["n2"]
    assert n1.term == 3
    # n1 leads long enough that leases of earlier leaders are over: only what
    # n1 itself granted is left to wait for.
    c.tick_all(n1.cfg.lease_outlives_ticks + 2)
    assert n2.follower_lease_valid()

    n2.step(held[0])  # the delayed term-1 heartbeat
    c.flush("n2")
    replies = [m for m in c.queue if isinstance(m, AppendEntriesResponse) and m.src == "n2"]
    assert replies and replies[0].term == 3
    c.stabilize()  # n1 receives the stale answer

    c.cut("n1", "n2")  # n2 is slow now: it hears nothing more
    n1.propose(b"new topology")
    c.stabilize()
    idx = n1.commit_index
    assert c.cores["n3"].applied_index >= idx
    assert n2.follower_lease_valid() and n2.applied_index < idx
    assert not n1.writes_fenced(idx), "n2 still holds a lease without having applied the entry"

    # Never a downgrade to the legacy (arrival-timed) lease for n2.
    c.recover()
    n1.tick()
    beats = [m for m in n1.ready().messages if isinstance(m, AppendEntries) and m.dst == "n2"]
    assert beats and all(b.echo_boot != LEGACY_ECHO for b in beats)


def test_removed_member_lease_outlives_a_leadership_change() -> None:
    """n4 holds a lease from n1, n1 removes n4 and hands leadership to n2. n2 does
    not know n4 any more, but n4 may still route writes until its lease runs out:
    n2 must wait that out before it calls an entry fenced."""
    c = Cluster(4)
    c.elect("n1")
    c.tick_all(2)
    n1, n4 = c.cores["n1"], c.cores["n4"]
    assert n4.follower_lease_valid()
    n1.propose_conf_change(ConfChange("remove", "n4"))
    c.stabilize()
    assert "n4" not in n1.members and n1.commit_index >= n1.config_index
    _transfer(c, "n1", "n2")
    n2 = c.cores["n2"]
    n2.propose(b"new topology")
    c.stabilize()
    idx = n2.commit_index
    assert n4.follower_lease_valid() and n4.applied_index < idx
    assert not n2.writes_fenced(idx), "the removed n4 still holds a lease without having applied the entry"
    for _ in range(n2.cfg.lease_outlives_ticks + 1):
        c.tick_all(1)
    assert n2.writes_fenced(idx)  # the wait is bounded


def test_snapshot_counts_as_applied_only_after_the_driver_restored_it() -> None:
    """A follower far behind gets InstallSnapshot; until the driver has restored
    the state machine from it, the follower has not applied those entries and
    must hold no lease (its application still routes by the old state)."""
    f = RaftCore("f", ["l", "f", "x"], None, rng=random.Random(3), boot_id=1)
    snap = Snapshot(index=50, term=1, members={"l": "", "f": "", "x": ""}, data=b"topology@50")
    f.step(InstallSnapshot(1, "l", "f", snap, ctx=1))
    # The next heartbeat arrives before the Ready with the snapshot was handled.
    f.step(AppendEntries(1, "l", "f", 50, 1, (), commit=50, ctx=2, lease_ticks=8))
    assert f.applied_index < 50
    assert not f.follower_lease_valid()
    assert f.lease_waits_for_apply()        # only for the apply: a routine lapse
    rd = f.ready()
    assert rd.snapshot_to_persist == snap
    # ... the driver persists it, restores the application from it, then advances:
    f.advance(rd)
    assert f.applied_index == 50
    f.step(AppendEntries(1, "l", "f", 50, 1, (), commit=50, ctx=3, lease_ticks=8))
    assert f.follower_lease_valid() and not f.lease_waits_for_apply()


def test_a_commit_index_alone_may_be_applied_before_it_is_persisted() -> None:
    """A follower holding an entry learns it is committed: the Ready persists only the
    commit index, so the driver may apply first (`applied_early`) and the lease holds
    again before that save; a Ready with an entry to persist may not."""
    f = RaftCore("f", ["l", "f", "x"], None, rng=random.Random(3), boot_id=1)
    f.step(AppendEntries(1, "l", "f", 0, 0, (Entry(1, 1, EntryKind.NORMAL, b"t"),), commit=0, ctx=1, lease_ticks=8))
    rd = f.ready()
    assert rd.entries_to_persist and not rd.applies_early
    with pytest.raises(RaftError):
        f.applied_early(rd)
    f.advance(rd)
    f.step(AppendEntries(1, "l", "f", 1, 1, (), commit=1, ctx=2, lease_ticks=8))
    assert f.lease_waits_for_apply() and not f.follower_lease_valid()
    rd = f.ready()
    assert rd.applies_early and rd.hard_state is not None and rd.hard_state.commit == 1
    f.applied_early(rd)         # applied; the commit index not saved yet
    assert f.applied_index == 1 and f.follower_lease_valid() and not f.lease_waits_for_apply()
    f.advance(rd)
    assert f.applied_index == 1 and not f.has_ready()


@pytest.mark.parametrize("new_leader", [False, True])
def test_member_back_with_an_empty_log_is_replicated_again(new_leader: bool) -> None:
    """n3 loses its data dir and comes back empty with --join (no membership of its
    own). The leader had it at match 3 and took its rejections for stale ones,
    forever: n3 never caught up. And with the bootstrap membership (no CONFIG entry
    in the log), n3 caught up never learned that it is a member."""
    c = Cluster(3)
    c.elect("n1")
    n1 = c.cores["n1"]
    for v in (b"a", b"b"):
        n1.propose(v)
        c.stabilize()
    assert n1._prs["n3"].match == n1.log.last_index
    c.crash("n3")
    c.disks["n3"] = MemDisk()
    if new_leader:
        _transfer(c, "n1", "n2")
    c.down.discard("n3")
    c.cores["n3"] = RaftCore("n3", {}, None, rng=random.Random(9), config=c.cfg, boot_id=c._next_boot())
    c.applied["n3"] = []
    c.tick_all(3)
    assert [e.data for e in c.applied["n3"]] == [b"a", b"b"]
    assert c.cores["n3"].members == n1.members and c.cores["n3"].promotable()


def test_a_leader_s_lease_lapses_only_until_it_applies_what_it_committed() -> None:
    """The leader's lease, too, waits for its own apply of each commit (an entry it acts
    on): `lease_waits_for_apply` tells that routine lapse from a lease that ran out."""
    c = Cluster(3)
    c.elect("n1")
    c.tick_all(2)
    n1 = c.cores["n1"]
    assert n1.lease_valid() and not n1.lease_waits_for_apply()
    n1.propose(b"batch")
    c.flush("n1")                   # the entry goes out
    batch, c.queue = c.queue, []
    for m in batch:                 # the followers append and acknowledge it ...
        c.cores[m.dst].step(m)
    for nid in ("n2", "n3"):
        c.flush(nid)
    acks, c.queue = [m for m in c.queue if m.dst == "n1"], []
    for m in acks:
        n1.step(m)                  # ... n1 commits it, and has not applied it yet
    assert acks and n1.commit_index > n1.applied_index
    assert not n1.lease_valid() and n1.lease_waits_for_apply()
    c.stabilize()
    assert n1.lease_valid() and not n1.lease_waits_for_apply()
    c.isolate("n1")
    c.tick("n1", n1.cfg.election_ticks * 2)
    assert not n1.lease_valid() and not n1.lease_waits_for_apply()      # ran out: not routine
