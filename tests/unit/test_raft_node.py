"""RaftNode: three real drivers in one event loop over the in-memory transport."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from pathlib import Path

import pytest

import raft.node as rnode
from raft.cluster import ClusterMeta
from raft.messages import AppendEntries
from raft.node import ClusterMismatch, NotLeader, RaftNode, StorageError, wake_time
from raft.transport import InMemoryNetwork

TICK_MS = 10
IDS = ["a", "b", "c"]


class KV:
    """The app: a list of applied values."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def apply(self, data: bytes) -> None:
        self.values.append(data)

    def snapshot(self) -> bytes:
        return json.dumps([v.decode() for v in self.values]).encode()

    def restore(self, data: bytes) -> None:
        self.values = [v.encode() for v in json.loads(data)]


class Harness:
    def __init__(self, tmp: Path, snapshot_threshold: int = 1000) -> None:
        self.tmp = tmp
        self.net = InMemoryNetwork()
        self.nodes: dict[str, RaftNode] = {}
        self.apps: dict[str, KV] = {}
        self.snapshot_threshold = snapshot_threshold
        self.seed = 0
        self.heartbeat_ticks = 1

    async def start(self, nid: str, join: bool = False, ids: list[str] = IDS) -> RaftNode:
        app = KV()
        self.seed += 1
        node = RaftNode(
            nid,
            {i: f"mem://{i}" for i in ids},
            str(self.tmp / nid),
            "s3cret",
            app.apply,
            app.snapshot,
            app.restore,
            tick_ms=TICK_MS,
            election_ticks=10,
            heartbeat_ticks=self.heartbeat_ticks,
            transport=self.net.transport(nid),
            join=join,
            snapshot_threshold=self.snapshot_threshold,
            rng=random.Random(self.seed),
            bootstrap_poll_s=0.02,
        )
        self.net.register(nid, node.receive, node)
        await node.start()
        self.nodes[nid], self.apps[nid] = node, app
        return node

    async def kill(self, nid: str) -> None:
        self.net.unregister(nid)
        await self.nodes.pop(nid).stop()

    async def leader(self, timeout: float = 5.0) -> RaftNode:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            leaders = [n for n in self.nodes.values() if n.role == "leader" and n.lease_held()]
            if len(leaders) == 1:
                return leaders[0]
            await asyncio.sleep(TICK_MS / 1000)  # polling with a bounded deadline
        raise AssertionError("no leader holding a lease")

    async def eventually(self, pred, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            if loop.time() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(TICK_MS / 1000)

    async def close(self) -> None:
        for nid in list(self.nodes):
            await self.kill(nid)


@pytest.fixture
async def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    await harness.close()


async def test_elects_proposes_and_survives_restarts(h: Harness) -> None:
    for nid in IDS:
        await h.start(nid)
    leader = await h.leader()
    assert leader.members == IDS
    st = leader.status()
    assert st["role"] == "leader" and st["leader"] == leader.node_id and st["lease_held"] is True
    assert st["members"] == IDS and st["term"] == leader.term
    await leader.propose(b"one", timeout=5)
    assert h.apps[leader.node_id].values == [b"one"]
    follower = next(n for n in IDS if n != leader.node_id)
    with pytest.raises(NotLeader) as exc:
        await h.nodes[follower].propose(b"nope", timeout=1)
    assert exc.value.leader_hint == leader.node_id

    # A follower dies; the majority goes on; it comes back with everything.
    await h.kill(follower)
    await leader.propose(b"two", timeout=5)
    await h.start(follower)
    await h.eventually(lambda: h.apps[follower].values == [b"one", b"two"])

    # The leader dies: a new one is elected and keeps every committed value.
    old = leader.node_id
    old_term = leader.term
    await h.kill(old)
    new = await h.leader()
    assert new.node_id != old and new.term > old_term
    await new.propose(b"three", timeout=5)
    await h.start(old)
    await h.eventually(lambda: all(h.apps[n].values == [b"one", b"two", b"three"] for n in IDS))

    # Whole-cluster restart: state is rebuilt from disk alone.
    for nid in IDS:
        await h.kill(nid)
    for nid in IDS:
        await h.start(nid)
    await h.eventually(lambda: all(h.apps[n].values == [b"one", b"two", b"three"] for n in IDS))
    leader = await h.leader()
    await leader.propose(b"four", timeout=5)
    assert h.apps[leader.node_id].values[-1] == b"four"


async def test_snapshot_catches_up_a_lagging_node(tmp_path) -> None:
    h = Harness(tmp_path, snapshot_threshold=5)
    try:
        for nid in IDS:
            await h.start(nid)
        leader = await h.leader()
        lagging = next(n for n in IDS if n != leader.node_id)
        await h.kill(lagging)
        for i in range(12):
            await leader.propose(f"v{i}".encode(), timeout=5)
        assert leader.core is not None and leader.core.log.snapshot.index > 0
        await h.start(lagging)
        want = [f"v{i}".encode() for i in range(12)]
        await h.eventually(lambda: h.apps[lagging].values == want)
    finally:
        await h.close()


async def test_transfer_and_membership(h: Harness) -> None:
    for nid in IDS:
        await h.start(nid)
    leader = await h.leader()
    target = next(n for n in IDS if n != leader.node_id)
    await leader.transfer_leadership(target)
    new = await h.leader()
    assert new.node_id == target

    await h.start("d", join=True, ids=IDS + ["d"])
    await new.add_member("d", "mem://d", timeout=5)
    assert new.members == sorted(IDS + ["d"])
    await new.propose(b"after-join", timeout=5)
    await h.eventually(lambda: h.apps["d"].values == [b"after-join"])
    await h.eventually(lambda: h.nodes["d"].members == sorted(IDS + ["d"]))

    await new.remove_member("d", timeout=5)
    assert new.members == IDS


async def test_learner_joins_follows_holds_a_lease_and_is_promoted(h: Harness) -> None:
    for nid in IDS:
        await h.start(nid)
    leader = await h.leader()
    await h.start("l", join=True, ids=IDS + ["l"])
    await leader.add_member("l", "mem://l", timeout=5, learner=True)
    assert leader.members == IDS and leader.learners == ["l"]
    await leader.propose(b"to-learner", timeout=5)
    learner = h.nodes["l"]
    await h.eventually(lambda: h.apps["l"].values == [b"to-learner"])
    await h.eventually(lambda: learner.is_learner and learner.lease_held())
    st = learner.status()
    assert st["role"] == "learner" and st["learners"] == ["l"] and st["members"] == IDS
    assert leader.status()["learners"] == ["l"]
    await leader.promote_member("l", timeout=5)
    assert leader.members == sorted(IDS + ["l"]) and leader.learners == []
    await h.eventually(lambda: learner.status()["role"] == "follower" and not learner.is_learner)
    await leader.remove_member("l", timeout=5)
    assert leader.members == IDS


async def test_isolated_leader_loses_lease_and_steps_down(h: Harness) -> None:
    for nid in IDS:
        await h.start(nid)
    leader = await h.leader()
    h.net.isolate(leader.node_id)
    await h.eventually(lambda: not leader.lease_held(), timeout=2)
    await h.eventually(lambda: leader.role != "leader", timeout=3)
    with pytest.raises(NotLeader):
        await leader.propose(b"x", timeout=1)


async def test_storage_failure_stops_the_node(h: Harness, monkeypatch) -> None:
    for nid in IDS:
        await h.start(nid)
    leader = await h.leader()

    def broken(_rd) -> None:
        raise StorageError("disk full")

    monkeypatch.setattr(leader.storage, "save", broken)
    with pytest.raises(StorageError):
        await leader.propose(b"x", timeout=5)
    assert leader.failed is not None and not leader.lease_held() and leader.role == "follower"
    # the process is told to exit (proxy.process.cli), so that a supervisor restarts it on its durable state
    assert leader.fatal is not None and leader.fatal.done() and isinstance(leader.fatal.result(), StorageError)
    others = [h.nodes[n] for n in IDS if n != leader.node_id]
    await h.eventually(lambda: any(n.role == "leader" for n in others))


async def test_stalled_disk_does_not_stop_ticks(h: Harness, monkeypatch) -> None:
    """Regression: fsync runs off the loop, so an isolated leader whose disk hangs
    still ticks, loses its lease and steps down."""
    import threading

    for nid in IDS:
        await h.start(nid)
    leader = await h.leader()
    release = threading.Event()
    real_save = leader.storage.save

    def hanging_save(rd) -> None:
        release.wait(10)
        real_save(rd)

    monkeypatch.setattr(leader.storage, "save", hanging_save)
    h.net.isolate(leader.node_id)
    try:
        await h.eventually(lambda: leader.role != "leader", timeout=3)
        assert not leader.lease_held()
    finally:
        release.set()


async def test_single_node_applies_only_after_fsync(tmp_path) -> None:
    """Regression: on a one-node cluster an entry is applied only after the
    save that made it durable has returned."""
    events: list[tuple[str, object]] = []
    node = RaftNode(
        "solo", {"solo": "mem://solo"}, str(tmp_path / "solo"), "s",
        lambda d: events.append(("apply", d)), lambda: b"[]", lambda _d: None,
        tick_ms=TICK_MS, transport=InMemoryNetwork().transport("solo"), rng=random.Random(5),
    )
    await node.start()
    try:
        real_save = node.storage.save

        def recording_save(rd) -> None:
            real_save(rd)
            events.append(("saved", tuple(e.data for e in rd.entries_to_persist)))

        node.storage.save = recording_save  # type: ignore[method-assign]
        await node.wait_for(lambda: node.role == "leader", timeout=5)
        await node.propose(b"durable", timeout=5)
        saved_at = next(i for i, ev in enumerate(events) if ev[0] == "saved" and b"durable" in ev[1])
        applied_at = events.index(("apply", b"durable"))
        assert saved_at < applied_at
    finally:
        await node.stop()


# ---------------------------------------------------------------------- cluster id


def cluster_file(h: Harness, nid: str) -> dict:
    return json.loads((h.tmp / nid / "cluster.json").read_text())


async def form_cluster(h: Harness) -> str:
    for nid in IDS:
        await h.start(nid)
    leader = await h.leader()
    await leader.propose(b"v1", timeout=5)
    await h.eventually(lambda: all(
        (h.tmp / n / "cluster.json").exists() and set(cluster_file(h, n)["seeded"]) == set(IDS) for n in IDS))
    ids = {cluster_file(h, n)["cluster_id"] for n in IDS}
    assert len(ids) == 1 and len(next(iter(ids))) == 32
    return ids.pop()


async def test_bootstrap_gives_every_node_one_persisted_cluster_id(h: Harness) -> None:
    cid = await form_cluster(h)
    assert all(n.status()["cluster_id"] == cid for n in h.nodes.values())
    for nid in IDS:  # survives a restart
        await h.kill(nid)
    for nid in IDS:
        await h.start(nid)
    await h.leader()
    assert all(n.cluster.cluster_id == cid for n in h.nodes.values())


async def test_a_brand_new_clusters_first_member_by_name_holds_its_first_election(h: Harness) -> None:
    """It campaigns FIRST_ELECTION_TICKS after its bootstrap check, the others only after a
    randomized election timeout (10-19 ticks here) of their own: "a" leads, at term 1."""
    for nid in IDS:
        await h.start(nid)
    leader = await h.leader()
    assert (leader.node_id, leader.status()["term"]) == ("a", 1)
    # restarted, the cluster is no longer brand-new: no member is hastened (a restarted node
    # waits out an election timeout before it votes, so a leader's lease cannot overlap)
    for nid in IDS:
        await h.kill(nid)
    for nid in IDS:
        await h.start(nid)
    assert all(n.core._randomized_timeout >= 10 for n in h.nodes.values())
    await h.leader()


async def test_wiped_member_refuses_to_bootstrap_and_rejoins_with_join(h: Harness) -> None:
    """A proxy that lost its data dir, started with its usual peers, must not take
    part as if new: it fails, naming --join. With --join it catches up."""
    cid = await form_cluster(h)
    await h.kill("c")
    shutil.rmtree(h.tmp / "c")
    c = await h.start("c")
    exc = await asyncio.wait_for(c.fatal, 5)
    assert isinstance(exc, ClusterMismatch)
    assert "--join" in str(exc) and cid in str(exc) and "(c)" in str(exc)
    assert c.term == 0 and c.status()["bootstrap_pending"]
    await h.kill("c")
    shutil.rmtree(h.tmp / "c")
    c = await h.start("c", join=True)  # still a member: the leader brings it up to date
    await h.eventually(lambda: h.apps["c"].values == [b"v1"])
    await h.eventually(lambda: c.cluster.cluster_id == cid)


async def test_two_wiped_members_wait_for_the_third_then_refuse(h: Harness) -> None:
    """Two empty data dirs are a quorum of three: they must not form a new cluster
    while the one member that remembers is down."""
    await form_cluster(h)
    for nid in IDS:
        await h.kill(nid)
    for nid in ("b", "c"):
        shutil.rmtree(h.tmp / nid)
        await h.start(nid)
    await asyncio.sleep(30 * TICK_MS / 1000)  # three election timeouts: time to (wrongly) elect
    assert all(h.nodes[n].term == 0 and h.nodes[n].status()["bootstrap_pending"] for n in ("b", "c"))
    await h.start("a")
    for nid in ("b", "c"):
        assert isinstance(await asyncio.wait_for(h.nodes[nid].fatal, 5), ClusterMismatch)


async def test_messages_from_another_cluster_are_refused(h: Harness) -> None:
    cid = await form_cluster(h)
    a = h.nodes["a"]
    other = ClusterMeta("f" * 32, frozenset({"x"}))
    assert a.peer_meta("x", other) is not None
    term = a.term
    h.net.deliver("x", "a", AppendEntries(term + 5, "x", "a", 0, 0, (), 0), other)
    await asyncio.sleep(5 * TICK_MS / 1000)
    assert a.term == term  # never stepped: the higher term would have deposed or moved it
    # A peer that sends no id (a version before cluster ids) is still heard.
    assert a.peer_meta("b", None) is None
    assert a.peer_meta("b", ClusterMeta(cid, frozenset({"b"}))) is None


async def test_heartbeats_with_nothing_to_persist_skip_the_disk_thread(h: Harness, monkeypatch) -> None:
    """Issue 16 (idle cost): a Ready that carries only messages (heartbeats, their acks)
    is not handed to the storage thread; one with something to persist still is."""
    for nid in IDS:
        await h.start(nid)
    leader = await h.leader()
    empty: list[str] = []
    saved: list[str] = []
    for node in h.nodes.values():
        real_save = node.storage.save

        def save(rd, real_save=real_save, nid=node.node_id) -> None:
            if rd.hard_state is None and not rd.entries_to_persist and rd.snapshot_to_persist is None:
                empty.append(nid)
            else:
                saved.append(nid)
            real_save(rd)

        monkeypatch.setattr(node.storage, "save", save)
    beats = h.net.delivered
    await h.eventually(lambda: h.net.delivered >= beats + 40)    # 10 heartbeat rounds and acks
    assert empty == []
    await leader.propose(b"x", timeout=5)
    assert set(saved) >= {leader.node_id}


async def test_a_follower_applies_a_commit_before_saving_the_commit_index(h: Harness, monkeypatch) -> None:
    """A commit the follower learns costs its lease no fsync: the entry is applied (and
    the lease held) while the save of the new commit index still hangs; an entry itself
    is still applied only after the save that made it durable (the test above)."""
    import threading

    for nid in IDS:
        await h.start(nid)
    leader = await h.leader()
    follower = next(n for n in h.nodes.values() if n is not leader)
    await h.eventually(lambda: follower.lease_held())
    release, hanging = threading.Event(), threading.Event()
    hung_commit = []
    real_save = follower.storage.save

    def save(rd) -> None:
        if rd.hard_state is not None and not rd.entries_to_persist and rd.snapshot_to_persist is None:
            hung_commit.append(rd.hard_state.commit)
            hanging.set()
            release.wait(10)
        real_save(rd)

    monkeypatch.setattr(follower.storage, "save", save)
    try:
        # The commit must reach the follower apart from the entry: on a loaded machine the
        # entry and the next heartbeat can be stepped together and saved in one go (nothing
        # to hang then), so a value is proposed again until a commit-only save happens.
        for i in range(10):
            await leader.propose(b"k=%d" % i, timeout=5)
            try:
                await h.eventually(hanging.is_set, timeout=1)
                break
            except AssertionError:
                continue
        await h.eventually(lambda: hanging.is_set() and follower.applied_index >= hung_commit[0], timeout=3)
        assert not release.is_set() and hung_commit[0] >= 1
        assert follower.lease_held() and not follower.lease_waits_for_apply()
    finally:
        release.set()
    await h.eventually(lambda: follower.storage.load().hard_state.commit >= leader.commit_index, timeout=3)


async def test_on_tick_is_called_after_every_tick(h: Harness) -> None:
    """Issue 16: the proxy watches its lease from the Raft ticker instead of a 20 ms poll; a
    callback that raises does not stop the clock."""
    for nid in IDS:
        await h.start(nid)
    node = await h.leader()
    calls: list[int] = []

    def on_tick() -> None:
        calls.append(node.core._now)
        raise RuntimeError("the app's bug")

    node.on_tick = on_tick
    await h.eventually(lambda: len(calls) >= 5)
    assert calls == sorted(calls) and calls[-1] > calls[0]


async def test_a_slow_save_is_logged(h: Harness, monkeypatch, caplog) -> None:
    """A save slower than SLOW_SAVE_S is logged (event=raft_slow_fsync): the node sends and
    applies nothing meanwhile, which otherwise shows only as lapsed leases."""
    import time

    import raft.node

    for nid in IDS:
        await h.start(nid)
    leader = await h.leader()
    real_save = leader.storage.save

    def slow_save(rd) -> None:
        time.sleep(0.05)
        real_save(rd)

    monkeypatch.setattr(raft.node, "SLOW_SAVE_S", 0.02)
    monkeypatch.setattr(leader.storage, "save", slow_save)
    with caplog.at_level("WARNING", logger="raft.node"):
        await leader.propose(b"x", timeout=5)
    assert any("event=raft_slow_fsync node=" + leader.node_id in r.getMessage() for r in caplog.records)


def test_the_ticker_wakes_on_the_heartbeat_grid() -> None:
    """Issue 16: once per heartbeat period (2 ticks of 50 ms: every 100 ms, with the probes),
    at the first grid point on or after the next tick due."""
    assert wake_time(10.05, 0.05, 2) == pytest.approx(10.1)
    assert wake_time(10.1, 0.05, 2) == pytest.approx(10.1)
    assert wake_time(10.15000000001, 0.05, 2) == pytest.approx(10.2)
    assert wake_time(10.05, 0.05, 1) == pytest.approx(10.05)      # heartbeat every tick: every tick


async def test_reading_the_core_between_wake_ups_applies_the_ticks_that_passed(h: Harness, monkeypatch) -> None:
    """Issue 16: the ticker sleeps through a heartbeat period, so whatever looks at the core
    (a lease, the role, a message) first brings its clock up to date: a lease is never
    judged on ticks that are late, however long the ticker sleeps."""
    for nid in IDS:
        await h.start(nid)
    node = await h.leader()
    for t in node._tasks[:1]:       # the ticker: from here on only reads move the clock
        t.cancel()
    now0, base = node.core._now, node._next_tick
    clock = {"t": base + 0.2 * TICK_MS / 1000}
    monkeypatch.setattr(rnode.time, "monotonic", lambda: clock["t"])
    assert node.role == "leader" and node.core._now == now0 + 1          # the tick due at `base`
    clock["t"] = base + 2.5 * TICK_MS / 1000
    node.lease_held()
    assert node.core._now == now0 + 3 and node._next_tick == pytest.approx(base + 3 * TICK_MS / 1000)
    node.lease_held()
    assert node.core._now == now0 + 3                                     # nothing more is due yet
    # a leader whose quorum has not answered for an election timeout (by the clock: no
    # wake-up counted it) holds no lease and steps down when next looked at
    h.net.isolate(node.node_id)
    clock["t"] = base + (3 + 2 * node.config.election_ticks) * TICK_MS / 1000
    assert not node.lease_held() and node.role != "leader"


async def test_a_leader_beats_on_the_wake_up_grid_whenever_its_ticks_are_applied(h: Harness, monkeypatch) -> None:
    """Issue 16: a tick applied between two wake-ups (by an answer arriving, a lease read) must
    not send the heartbeat there: it goes at the grid's multiples of heartbeat_ticks, where
    every proxy wakes anyway. (Heartbeats sent whenever a read applied the tick came 60-140 ms
    apart with 30 ms between proxies, and a follower's lease lapsed in between.)"""
    h.heartbeat_ticks = 2
    for nid in IDS:
        await h.start(nid)
    node = await h.leader()
    for t in node._tasks[:1]:       # the ticker: only reads move the clock from here on
        t.cancel()
    interval = TICK_MS / 1000
    beats: list[int] = []
    core, tick = node.core, node.core.tick

    def recording_tick() -> None:
        tick()
        if core.role == "leader" and core._heartbeat_elapsed == 0:    # it sent its heartbeats
            beats.append(round(clock["t"] / interval - 1 / 3))        # the grid tick applied
    monkeypatch.setattr(core, "tick", recording_tick)
    start = round(node._next_tick / interval)
    core._heartbeat_elapsed = 0 if start % 2 == 0 else 1    # counted from here, it would beat on odd ticks
    clock = {"t": node._next_tick}
    monkeypatch.setattr(rnode.time, "monotonic", lambda: clock["t"])
    for n in range(start, start + 12):     # one tick at a time, each by a read
        clock["t"] = (n + 1 / 3) * interval
        node.lease_held()
    assert len(beats) == 6 and all(b % 2 == 0 for b in beats), beats
