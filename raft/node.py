"""The asyncio driver around :class:`raft.core.RaftCore`.

Three things run in the event loop: a ticker that calls ``core.tick()`` every
``tick_ms``; the transport, which hands messages to :meth:`RaftNode.receive`
(stepped at once, the core is cheap); and the Ready loop, which persists each
Ready in a worker thread *before* sending its messages, then applies what is
committed and advances. Because fsync runs off the loop, a slow disk delays
only the Ready loop: ticks go on, so a leader whose acks stop still steps down.

A :class:`~raft.storage.StorageError` stops the node: it no longer steps
messages, so it neither votes nor acks, and proposals fail with that error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import time
from collections.abc import Callable

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

__all__ = ["NotLeader", "ProposalRejected", "RaftNode", "StorageError"]


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
    ) -> None:
        """``peers`` maps node id -> admin base URL and includes this node; on a
        fresh data dir it is the bootstrap membership, unless ``join`` is set:
        then the node starts with no membership and waits to be added by the
        leader (``add_member``). ``transport`` defaults to HTTP to the peers' URLs.
        ``lease_ticks`` (default election_ticks - 2) bounds how long a lease lasts
        after the quorum ack it rests on; keep it below election_ticks."""
        self.node_id = node_id
        self._on_sync = on_sync
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

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._disk = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raft-disk-{self.node_id}")
        self.failed = None
        state = await loop.run_in_executor(self._disk, self.storage.load)
        fresh = state.snapshot is None and not state.entries and state.hard_state.term == 0
        bootstrap = {} if (self.join and fresh) else self.peers
        self.core = RaftCore(self.node_id, bootstrap, state, rng=self._rng, config=self.config,
                             boot_id=random.SystemRandom().getrandbits(62) | 1)
        if state.snapshot is not None:
            self._restore_cb(state.snapshot.data)
        self._applied = self.core.applied_index
        self._update_peers()
        await self.transport.start()
        self._running = True
        self._tasks = [loop.create_task(self._ticker()), loop.create_task(self._ready_loop())]
        self._wake.set()

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
        if self.core is None:
            raise RuntimeError("RaftNode not started")
        return self.core

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
        return sorted(self._c().members)

    @property
    def commit_index(self) -> int:
        return self._c().commit_index

    @property
    def applied_index(self) -> int:
        return self._applied

    def lease_held(self) -> bool:
        """Leader: a quorum acked within the lease window. Follower: its leader
        said it held a lease, recently enough by our clock. Never after a
        storage failure."""
        if self.core is None or self.failed is not None or not self._running:
            return False
        if time.monotonic() - self._last_tick_at > 3 * self.tick_ms / 1000:
            return False  # the ticker is late (stopped or starved): ticks do not yet show the time passed
        if self.core.role == LEADER:
            return self.core.lease_valid()
        return self.core.follower_lease_valid()

    @property
    def fence_timeout_s(self) -> float:
        """writes_fenced turns true at most this long after the commit."""
        return self.config.lease_outlives_ticks * self.tick_ms / 1000

    def writes_fenced(self, index: int) -> bool:
        """Leader: every proxy that may still route writes has applied ``index``
        (see RaftCore.writes_fenced)."""
        return self.core is not None and self.failed is None and self.core.writes_fenced(index)

    def status(self) -> dict[str, object]:
        """The "raft" section of the admin /status JSON (plus a few extras)."""
        return {
            "role": self.role,
            "term": self.term,
            "leader": self.leader_id,
            "members": self.members,
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

    async def add_member(self, node_id: str, url: str, timeout: float = 5.0) -> None:
        self._check_usable()
        entry = self._c().propose_conf_change(ConfChange("add", node_id, url))
        await self._wait_applied(entry, timeout)

    async def remove_member(self, node_id: str, timeout: float = 5.0) -> None:
        self._check_usable()
        entry = self._c().propose_conf_change(ConfChange("remove", node_id))
        await self._wait_applied(entry, timeout)

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
                await asyncio.wait_for(self._changed.wait(), remaining)
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
        await asyncio.wait_for(fut, timeout)

    # ------------------------------------------------------------------ inputs

    def receive(self, msg: Message) -> None:
        """Called by the transport for every incoming message."""
        if self.core is None or not self._running or self.failed is not None:
            return
        self.core.step(msg)
        self._wake.set()
        self._changed.set()

    async def _ticker(self) -> None:
        """Tick by the monotonic clock, not by the number of wake-ups.

        A process that was stopped (SIGSTOP) or starved catches up every tick
        it missed, so its lease and check-quorum see the real time that
        passed: a deposed leader never reports a lease after it resumes.
        """
        interval = self.tick_ms / 1000
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            now = loop.time()
            due = int((now - next_tick) / interval) + 1
            next_tick += due * interval
            self._last_tick_at = time.monotonic()
            if self.failed is None:
                core = self._c()
                for _ in range(min(due, 4 * self.config.election_ticks)):
                    core.tick()
            self._wake.set()
            self._changed.set()

    # ------------------------------------------------------------------ Ready loop

    async def _ready_loop(self) -> None:
        loop = asyncio.get_running_loop()
        core = self._c()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while core.has_ready():
                rd = core.ready()
                t0 = time.monotonic()
                try:
                    await loop.run_in_executor(self._disk, self.storage.save, rd)
                except StorageError as exc:
                    self._fail(exc)
                    return
                if rd.must_sync and self._on_sync is not None:
                    self._on_sync(time.monotonic() - t0)
                for m in rd.messages:
                    self.transport.send(m.dst, m)
                self._apply(rd)
                core.advance(rd)
                if core.should_snapshot():
                    core.compact(self._snapshot_cb())
                self._update_peers()
                self._changed.set()

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
        for nid, url in self._c().members.items():
            if url:
                peers[nid] = url
        self.transport.set_peers(peers)

    def _fail(self, exc: StorageError) -> None:
        log.error("raft storage failed, node %s stops voting and acking: %s", self.node_id, exc)
        self.failed = exc
        self._fail_waiters(exc)
        self._changed.set()

    def _fail_waiters(self, exc: Exception) -> None:
        for waiters in self._waiters.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.set_exception(exc)
        self._waiters.clear()

