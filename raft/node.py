"""The asyncio driver around :class:`raft.core.RaftCore`.

Three things run in the event loop: a ticker that calls ``core.tick()`` once
for every ``tick_ms`` that passed; the transport, which hands messages to
:meth:`RaftNode.receive` (stepped at once, the core is cheap); and the Ready
loop, which persists each Ready in a worker thread *before* sending its
messages, then applies what is committed and advances. Because fsync runs off
the loop, a slow disk delays only the Ready loop: ticks go on, so a leader
whose acks stop still steps down.

The ticker wakes once per heartbeat period (``heartbeat_ticks`` ticks), not
every tick: between its wake-ups nothing is due that cannot wait (a leader
sends heartbeats once a period; a follower only counts towards its election
timeout), and every read of the core's state, every message and every
proposal first applies the ticks the clock says have passed (``_c``). So the
core's time is as exact as with a wake-up per tick wherever it is looked at
(a lease is never judged on a late clock), and an idle proxy wakes half as
often (issue 16).

A :class:`~raft.storage.StorageError` stops the node: it no longer steps
messages, so it neither votes nor acks, and proposals fail with that error;
``fatal`` then holds the error and the process exits, so that its supervisor
starts it again on what it made durable (a full disk, once freed, costs one
restart; retrying writes after a failed fsync in-process could count data
that only sits in the page cache as stored).

The cluster id (raft.cluster) is kept in the data dir. A node started on an
empty data dir without ``join`` takes no part (no ticks, no messages) until
every peer has told it its cluster id; if a peer's cluster counts this node as
a member that had its data, it never does: ``fatal`` then holds the
:class:`~raft.cluster.ClusterMismatch`, and the process should exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import random
import time
from collections.abc import Callable

from raft.cluster import ClusterMeta, ClusterMismatch, bootstrap_verdict, peer_problem
from raft.core import (
    LEADER,
    PRE_CANDIDATE,
    ConfChange,
    Config,
    NotLeader,
    ProposalRejected,
    RaftCore,
    Ready,
)
from raft.messages import Entry, EntryKind, Message
from raft.storage import Storage, StorageError
from raft.transport import HttpTransport, Transport

log = logging.getLogger(__name__)
# a save (fsync) slower than this is logged: the node sends and applies nothing meanwhile,
# so a disk that stalls for seconds (another process flushing a large file) lapses leases
SLOW_SAVE_S = 1.0
# a brand-new cluster's first election: its first member campaigns this many ticks after its
# bootstrap check passed (time for the others to pass theirs; they drop messages until then)
FIRST_ELECTION_TICKS = 3
TIMER_SLACK_S = 0.002   # the ticker applies a tick due this soon (the loop's timers may fire early)

__all__ = ["ClusterMismatch", "NotLeader", "ProposalRejected", "RaftNode", "StorageError"]


def wake_time(next_tick: float, interval: float, period: int) -> float:
    """When the ticker wakes next: the first multiple of `period` ticks (of `interval`
    seconds, counted from 0 on the monotonic clock) at or after the tick due at `next_tick`."""
    n = round(next_tick / interval)               # that tick's number on the grid
    return -(-n // period) * period * interval


class RaftNode:
    def __init__(
        self,
        node_id: str,
        peers: dict[str, str],
        data_dir: str,
        secret: str,
        apply: Callable[[bytes], None],
        snapshot: Callable[[], bytes],
        restore: Callable[[bytes], None],
        tick_ms: int = 50,
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        *,
        transport: Transport | None = None,
        join: bool = False,
        snapshot_threshold: int = 1000,
        lease_ticks: int | None = None,
        rng: random.Random | None = None,
        on_sync: Callable[[float], None] | None = None,
        bootstrap_poll_s: float = 0.5,
    ) -> None:
        """``peers`` maps node id -> admin base URL and includes this node; on a
        fresh data dir it is the bootstrap membership, unless ``join`` is set:
        then the node starts with no membership and waits to be added by the
        leader (``add_member``). ``transport`` defaults to HTTP to the peers' URLs.
        ``lease_ticks`` (default election_ticks - 2) bounds how long a lease lasts
        after the quorum ack it rests on; keep it below election_ticks."""
        self.node_id = node_id
        self._on_sync = on_sync
        # Called at every wake-up of the ticker, when a lease may have run out by time (the app
        # watches its lease there rather than polling: issue 16).
        self.on_tick: Callable[[], None] | None = None
        # called after each batch of Raft work (messages in, commits applied): a lease may
        # have been renewed (the C data plane's permit follows it: proxy/dataplane)
        self.on_ready: Callable[[], None] | None = None
        # How late the ticker's last wake-up ran after its time: the event loop was busy
        # (or the process not scheduled) that long, and sent no heartbeat meanwhile.
        self.wake_late_s = 0.0
        self.peers = dict(peers)
        self.data_dir = data_dir
        self.secret = secret
        self._apply_cb = apply
        self._snapshot_cb = snapshot
        self._restore_cb = restore
        self.tick_ms = tick_ms
        self.config = Config(
            election_ticks=election_ticks,
            heartbeat_ticks=heartbeat_ticks,
            snapshot_threshold=snapshot_threshold,
            lease_ticks=lease_ticks,
        )
        self.config.validate()
        self.join = join
        self._rng = rng or random.Random()
        self.transport: Transport = transport or HttpTransport(node_id, self.peers, secret)
        self.cluster = ClusterMeta()
        self._cluster_loaded = False
        self._cluster_dirty = False
        self._refused_from: set[str] = set()
        self._gated = False  # empty data dir: waiting for the bootstrap check
        self.bootstrap_poll_s = bootstrap_poll_s
        self.fatal: asyncio.Future[ClusterMismatch | StorageError] | None = None
        self.transport.set_meta_source(lambda: self.cluster)
        self.storage = Storage(data_dir)
        self.core: RaftCore | None = None
        self.failed: StorageError | None = None
        self._applied = 0
        self._waiters: dict[int, list[tuple[int, asyncio.Future[None]]]] = {}
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._disk: concurrent.futures.ThreadPoolExecutor | None = None  # one thread: saves stay ordered
        self._running = False
        self._last_tick_at = time.monotonic()
        self._next_tick: float | None = None    # when the next tick is due (the loop's clock); None: not ticking

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._disk = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                           thread_name_prefix=f"raft-disk-{self.node_id}")
        self.failed = None
        state = await self._on_disk("load", self.storage.load)
        self.cluster = await self._on_disk("load_cluster", self.storage.load_cluster)
        self.fatal = loop.create_future()
        fresh = state.snapshot is None and not state.entries and state.hard_state.term == 0
        bootstrap = {} if (self.join and fresh) else self.peers
        self.core = RaftCore(self.node_id, bootstrap, state, rng=self._rng, config=self.config,
                             boot_id=random.SystemRandom().getrandbits(62) | 1, cluster_id=self.cluster.cluster_id)
        self._cluster_loaded = True
        self._gated = fresh and not self.join and not self.cluster.cluster_id and any(
            p != self.node_id for p in self.peers)
        if state.snapshot is not None:
            self._restore_cb(state.snapshot.data)
        self._applied = self.core.applied_index
        self._update_peers()
        await self.transport.start()
        self._running = True
        self._tasks = [loop.create_task(self._ticker()), loop.create_task(self._ready_loop())]
        if self._gated:
            self._tasks.append(loop.create_task(self._bootstrap_check()))
        self._wake.set()

    async def _bootstrap_check(self) -> None:
        """Empty data dir, no --join: take part only once every peer has said that
        its cluster does not know this node as a member that had its data."""
        loop = asyncio.get_running_loop()
        answers: dict[str, ClusterMeta | None] = {}
        others = [p for p in self.peers if p != self.node_id]
        next_log = loop.time()
        # the first polls come quickly (peers started together are up within moments),
        # then every bootstrap_poll_s
        pause = min(0.1, self.bootstrap_poll_s)
        while True:
            for p in others:
                if p not in answers:
                    meta = await self.transport.cluster_info(p)
                    if meta is not None:
                        answers[p] = meta
            verdict = bootstrap_verdict(self.node_id, answers, list(self.peers),
                                        getattr(self.transport, "peer_errors", None))
            if verdict is None:
                known = sorted({m.cluster_id for m in answers.values() if m is not None and m.cluster_id})
                log.info("event=raft_bootstrap node=%s peers_answered=%s existing_cluster=%s",
                         self.node_id, ",".join(sorted(answers)), ",".join(known) or "none")
                if not known and self.node_id == min(self.peers):
                    # a brand-new cluster: its first member by name holds the first election
                    # at once rather than after 0.5-1 s of silence nobody is keeping
                    self._c().hasten_election(FIRST_ELECTION_TICKS)
                self._gated = False
                self._wake.set()
                return
            kind, why = verdict
            if kind == "refuse":
                self._refuse(ClusterMismatch(why))
                return
            if loop.time() >= next_log:
                log.warning("raft node %s: %s", self.node_id, why)
                next_log = loop.time() + 5.0
            await asyncio.sleep(pause)
            pause = min(2 * pause, self.bootstrap_poll_s)

    def _refuse(self, exc: ClusterMismatch) -> None:
        log.error("raft node %s refuses to take part: %s", self.node_id, exc)
        self._gated = True
        if self.fatal is not None and not self.fatal.done():
            self.fatal.set_result(exc)
        self._changed.set()

    async def stop(self) -> None:
        self._running = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.transport.close()
        if self._disk is not None:
            await asyncio.get_running_loop().run_in_executor(self._disk, self._close_storage)
            self._disk.shutdown(wait=True)
            self._disk = None
        self._fail_waiters(NotLeader(None))

    def _close_storage(self) -> None:
        try:
            self.storage.close()
        except StorageError:
            pass

    # ------------------------------------------------------------------ state

    def _c(self) -> RaftCore:
        """The core, its clock brought up to now (see the module docstring)."""
        if self.core is None:
            raise RuntimeError("RaftNode not started")
        if self._next_tick is not None and time.monotonic() >= self._next_tick:
            self._catch_up()
        return self.core

    def _catch_up(self, early: float = 0.0) -> None:
        """Apply every tick due by the clock. A process that was stopped (SIGSTOP) or
        starved catches up every tick it missed (up to four election timeouts), so its
        lease and check-quorum see the real time that passed: a deposed leader never
        reports a lease after it resumes. (time.monotonic and the loop's clock are the
        same clock; the loop's is read once per iteration, so never ahead of it.)"""
        assert self._next_tick is not None and self.core is not None
        interval = self.tick_ms / 1000
        late = time.monotonic() + early - self._next_tick
        if late < 0:
            return
        due = int(late / interval) + 1
        first = round(self._next_tick / interval)      # the grid number of the first tick due
        self._next_tick += due * interval
        self._last_tick_at = time.monotonic()
        if self.failed is None and not self._gated:
            core = self.core
            applied = min(due, 4 * self.config.election_ticks)
            # the ticks applied are the last `applied` of those due: the core's tick now + 1 is
            # grid tick first + due - applied, so its heartbeats go on the wake-up grid
            core.heartbeat_phase = (first + due - applied - 1 - core.now) % self.config.heartbeat_ticks
            for _ in range(applied):
                core.tick()
            self._wake.set()
            self._changed.set()

    @property
    def role(self) -> str:
        r = self._c().role
        if self.failed is not None:
            return "follower"  # a node that cannot persist neither leads nor campaigns
        return "candidate" if r == PRE_CANDIDATE else r

    @property
    def term(self) -> int:
        return self._c().term

    @property
    def leader_id(self) -> str | None:
        return self._c().leader_id

    @property
    def members(self) -> list[str]:
        """The voters."""
        return sorted(self._c().members)

    @property
    def learners(self) -> list[str]:
        """The non-voting learners: they follow the log and route writes under the
        same lease and fence rules, but never vote (see raft.core.ConfChange)."""
        return sorted(self._c().learners)

    @property
    def is_learner(self) -> bool:
        return self.core is not None and self.core.is_learner()

    @property
    def commit_index(self) -> int:
        return self._c().commit_index

    @property
    def applied_index(self) -> int:
        return self._applied

    def _lease_core(self) -> RaftCore | None:
        """The core whose lease can count, caught up with the ticks; None before start,
        after a storage failure, once stopped, or when not ticking (ticks do not show the
        time passed)."""
        if self.core is None or self.failed is not None or not self._running:
            return None
        core = self._c()
        if time.monotonic() - self._last_tick_at > 3 * self.tick_ms / 1000:
            return None
        return core

    def lease_held(self) -> bool:
        """Leader: a quorum acked within the lease window. Follower: its leader
        said it held a lease, recently enough by our clock. Never after a
        storage failure."""
        core = self._lease_core()
        if core is None:
            return False
        return core.lease_valid() if core.role == LEADER else core.follower_lease_valid()

    def lease_seconds_left(self) -> float:
        """How long the lease held now lasts by this node's clock (0.0: none): a tick less
        than the core's count, as the current tick began up to a tick ago."""
        core = self._lease_core()
        if core is None or not self.lease_held():
            return 0.0
        return max(0, core.lease_ticks_left() - 1) * self.tick_ms / 1000

    def lease_waits_for_apply(self) -> bool:
        """The lease is lapsed only until this node applies what was committed (see
        RaftCore.lease_waits_for_apply); never when it cannot count at all."""
        core = self._lease_core()
        return core is not None and core.lease_waits_for_apply()

    @property
    def fence_timeout_s(self) -> float:
        """writes_fenced turns true at most this long after the commit."""
        return self.config.lease_outlives_ticks * self.tick_ms / 1000

    def writes_fenced(self, index: int) -> bool:
        """Leader: every proxy that may still route writes has applied ``index``
        (see RaftCore.writes_fenced)."""
        return self.core is not None and self.failed is None and self._c().writes_fenced(index)

    def status(self) -> dict[str, object]:
        """The "raft" section of the admin /status JSON (plus a few extras)."""
        return {
            "cluster_id": self.cluster.cluster_id or None,
            "bootstrap_pending": self._gated,
            "role": "learner" if self.is_learner and self.role == "follower" else self.role,
            "term": self.term,
            "leader": self.leader_id,
            "members": self.members,
            "learners": self.learners,
            "commit_index": self.commit_index,
            "applied_index": self.applied_index,
            "lease_held": self.lease_held(),
            "storage_error": str(self.failed) if self.failed is not None else None,
        }

    # ------------------------------------------------------------------ requests

    async def propose(self, data: bytes, timeout: float) -> None:
        """Resolve once ``data`` is committed and applied here; raises NotLeader,
        StorageError or asyncio.TimeoutError (the entry may still commit later)."""
        self._check_usable()
        entry = self._c().propose(data)
        await self._wait_applied(entry, timeout)

    async def add_member(self, node_id: str, url: str, timeout: float = 5.0, *, learner: bool = False) -> None:
        """Add a voter (promoting it if it is a learner), or with ``learner`` a learner."""
        self._check_usable()
        entry = self._c().propose_conf_change(ConfChange("add_learner" if learner else "add", node_id, url))
        await self._wait_applied(entry, timeout)

    async def promote_member(self, node_id: str, timeout: float = 5.0) -> None:
        """Make a learner a voter."""
        self._check_usable()
        entry = self._c().propose_conf_change(ConfChange("promote", node_id))
        await self._wait_applied(entry, timeout)

    async def remove_member(self, node_id: str, timeout: float = 5.0) -> None:
        self._check_usable()
        entry = self._c().propose_conf_change(ConfChange("remove", node_id))
        await self._wait_applied(entry, timeout)

    def best_transferee(self) -> str | None:
        """Leader: the most up-to-date voter that answered lately (None: none, or not leader)."""
        return self._c().best_transferee() if self.core is not None and self.failed is None else None

    async def transfer_leadership(self, to: str, timeout: float | None = None) -> None:
        """Hand leadership to ``to`` and wait until this node is no longer leader."""
        self._check_usable()
        self._c().transfer_leadership(to)
        self._wake.set()
        if timeout is None:
            timeout = 2 * self.config.election_ticks * self.tick_ms / 1000
        await self.wait_for(lambda: self._c().role != LEADER, timeout)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds (re-checked whenever the node changes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError()
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def _check_usable(self) -> None:
        if self.failed is not None:
            raise self.failed
        if not self._running:
            raise NotLeader(None)

    async def _wait_applied(self, entry: Entry, timeout: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(entry.index, []).append((entry.term, fut))
        self._wake.set()
        async with asyncio.timeout(timeout):
            await fut

    # ------------------------------------------------------------------ inputs

    def receive(self, msg: Message) -> None:
        """Called by the transport for every incoming message."""
        if self.core is None or not self._running or self.failed is not None or self._gated:
            return
        self._c().step(msg)
        self._wake.set()
        self._changed.set()

    def cluster_info(self) -> ClusterMeta | None:
        """What GET /raft/cluster answers: None until the data dir is loaded (an
        early answer of "no id" could let a wiped peer bootstrap)."""
        return self.cluster if self._cluster_loaded else None

    def peer_meta(self, src: str, meta: ClusterMeta | None) -> str | None:
        """Called by the transport with the sender's cluster id (None: it sent none)
        before its messages are delivered; returns why to refuse them, or None."""
        if meta is None or not self._cluster_loaded:
            return None
        mine = self.cluster
        problem = peer_problem(mine, meta, src)
        if problem is not None:
            if src not in self._refused_from:
                self._refused_from.add(src)
                log.error("raft node %s: %s", self.node_id, problem)
            return problem
        if not mine.cluster_id:
            if self._gated:
                verdict = bootstrap_verdict(self.node_id, {src: meta}, [])
                if verdict is not None:  # the sender's cluster knows us: found out before the check did
                    self._refuse(ClusterMismatch(verdict[1]))
                return None
            # A peer of our cluster that knows the id (it was committed there): adopt it.
            if self.core is not None and not self.core.cluster_id:
                self.core.cluster_id = meta.cluster_id
            self._learn_cluster(meta.cluster_id, meta.seeded | {src})
            return None
        seeded = mine.seeded | meta.seeded | {src}
        if seeded != mine.seeded:
            self.cluster = ClusterMeta(mine.cluster_id, seeded)
            self._cluster_dirty = True
            self._wake.set()
        return None

    def _learn_cluster(self, cluster_id: str, seeded: frozenset[str]) -> None:
        self.cluster = ClusterMeta(cluster_id, seeded | self.cluster.seeded | {self.node_id})
        self._cluster_dirty = True
        self._wake.set()
        log.info("event=raft_cluster_id node=%s cluster_id=%s", self.node_id, cluster_id)

    async def _ticker(self) -> None:
        """Tick by the monotonic clock, not by the number of wake-ups: wake once per
        heartbeat period and apply the ticks that passed (`_catch_up`; anything that
        looks at the core in between has applied its share already)."""
        interval = self.tick_ms / 1000
        period = self.config.heartbeat_ticks
        # on the grid of the monotonic clock that the proxy's other periodic tasks use
        # (health.probes.probe.until_next): one wake-up for all of them
        self._next_tick = (math.floor(time.monotonic() / interval) + 1) * interval
        loop = asyncio.get_running_loop()
        while True:
            wake_at = wake_time(self._next_tick, interval, period)
            await asyncio.sleep(max(0.0, wake_at - loop.time()))
            self.wake_late_s = max(0.0, loop.time() - wake_at)
            if self.core is not None:
                # the loop's timers have a resolution of a millisecond and may fire that
                # much early: a tick due within it is applied now, not by another wake-up
                self._catch_up(early=TIMER_SLACK_S)
            if self.on_tick is not None:
                try:
                    self.on_tick()
                except Exception:  # the app's bug must not stop the clock
                    log.exception("on_tick callback failed")

    # ------------------------------------------------------------------ Ready loop

    async def _ready_loop(self) -> None:
        core = self._c()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while core.has_ready():
                rd = core.ready()
                t0 = time.monotonic()
                early = rd.applies_early
                if early:       # only the commit index to save: leases need not wait for its fsync
                    self._apply(rd)
                    core.applied_early(rd)
                # Most Readies (heartbeats and their acks) have nothing to persist:
                # those skip the disk thread and its two thread hand-offs (issue 16).
                if rd.hard_state is not None or rd.entries_to_persist or rd.snapshot_to_persist is not None:
                    try:        # (a commit-only hard state is written and fsynced too: atomic_write)
                        await self._on_disk("save", self.storage.save, rd)
                    except StorageError as exc:
                        self._fail(exc)
                        return
                if rd.must_sync and self._on_sync is not None:
                    self._on_sync(time.monotonic() - t0)
                for m in rd.messages:
                    self.transport.send(m.dst, m)
                if not early:
                    self._apply(rd)
                core.advance(rd)
                if core.should_snapshot():
                    core.compact(self._snapshot_cb())
                self._update_peers()
                self._changed.set()
            if self.on_ready is not None:
                try:
                    self.on_ready()
                except Exception:  # the app's bug must not stop consensus
                    log.exception("on_ready callback failed")
            if core.cluster_id and not self.cluster.cluster_id:
                self._learn_cluster(core.cluster_id, frozenset())
            if self._cluster_dirty:
                self._cluster_dirty = False
                try:
                    await self._on_disk("save_cluster", self.storage.save_cluster, self.cluster)
                except StorageError as exc:
                    self._fail(exc)
                    return

    async def _on_disk(self, op: str, fn, *args):
        """`fn(*args)` on the disk thread; one slower than SLOW_SAVE_S is logged: meanwhile
        the node sends and applies nothing (a save) or has not started (a load)."""
        t0 = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._disk, fn, *args)
        finally:
            took = time.monotonic() - t0
            if took > SLOW_SAVE_S:
                log.warning("event=raft_slow_fsync node=%s op=%s ms=%.0f", self.node_id, op, took * 1000)

    def _apply(self, rd: Ready) -> None:
        snap = rd.snapshot_to_persist
        if snap is not None and snap.index > self._applied:
            self._restore_cb(snap.data)
            self._applied = snap.index
            self._resolve_through(snap.index, None)
        for e in rd.committed_entries:
            if e.index <= self._applied:
                continue
            if e.kind == EntryKind.NORMAL:
                try:
                    self._apply_cb(e.data)
                except Exception:  # the app's bug must not wedge consensus
                    log.exception("apply callback failed at index %d", e.index)
            self._applied = e.index
            self._resolve_through(e.index, e)

    def _resolve_through(self, index: int, entry: Entry | None) -> None:
        for i in [i for i in self._waiters if i <= index]:
            for term, fut in self._waiters.pop(i):
                if fut.done():
                    continue
                if entry is not None and i == entry.index and entry.term == term:
                    fut.set_result(None)
                else:  # overwritten by another leader, or folded into a snapshot we cannot check
                    fut.set_exception(NotLeader(self.leader_id))

    def _update_peers(self) -> None:
        peers = dict(self.peers)
        core = self._c()
        for nid, url in (*core.members.items(), *core.learners.items()):
            if url:
                peers[nid] = url
        self.transport.set_peers(peers)

    def _fail(self, exc: StorageError) -> None:
        log.error("event=storage_failed node=%s error=%r stops voting and acking", self.node_id, str(exc))
        self.failed = exc
        self._fail_waiters(exc)
        if self.fatal is not None and not self.fatal.done():
            self.fatal.set_result(exc)
        self._changed.set()

    def _fail_waiters(self, exc: Exception) -> None:
        for waiters in self._waiters.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.set_exception(exc)
        self._waiters.clear()

