"""Deterministic whole-cluster Raft simulator.

Every node is a :class:`raft.core.RaftCore` driven the way ``raft/node.py``
drives it: ticks on its own (skewed) clock, messages as they arrive, one Ready
at a time persisted to a simulated disk before its messages leave. All
randomness comes from one seed, time is virtual (milliseconds), so a failing
seed replays exactly.

Faults: message drop, delay (hence reorder), rare long delays (0.5-2 s, so a
message arrives after leadership changed), stale re-delivery of messages from
earlier terms, duplication, partitions, crash/restart from the simulated disk
(including a crash after persisting but before sending), disk stalls,
clock-rate skew, membership changes and leadership transfers while all that
happens.

After every event :class:`Checker` verifies election safety, leader
append-only, log matching, leader completeness, state machine safety (on the
application's state: the same entry and the same state digest at every index
on every node) and that nothing reported committed is ever lost; the simulator
adds the lease checks: no two leaders hold a lease, a node holding a lease has
applied (in its application, not only its core's index) everything a leader
reported fenced, and a core never counts as applied what its application has
not applied.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import itertools
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raft.core import (
    CANDIDATE,
    LEADER,
    PRE_CANDIDATE,
    ConfChange,
    Config,
    NotLeader,
    ProposalRejected,
    RaftCore,
    Ready,
    StorageState,
)
from raft.messages import (
    Entry,
    EntryKind,
    HardState,
    Message,
    PreVote,
    RequestVote,
    Snapshot,
)
from raft.storage import Storage


class InvariantViolation(AssertionError):
    pass


# --------------------------------------------------------------------------- disk


class MemDisk:
    """What a node's storage holds; same semantics as raft/storage.py."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    def _base(self) -> int:
        return self.snapshot.index if self.snapshot else 0

    def term_at(self, index: int) -> int | None:
        if self.snapshot and index == self.snapshot.index:
            return self.snapshot.term
        if index == 0:
            return 0
        pos = index - self._base() - 1
        if 0 <= pos < len(self.entries):
            return self.entries[pos].term
        return None

    def save(self, rd: Ready) -> None:
        s = rd.snapshot_to_persist
        if s is not None:
            keep = self.term_at(s.index) == s.term
            self.entries = [e for e in self.entries if e.index > s.index] if keep else []
            self.snapshot = s
        if rd.entries_to_persist:
            first = rd.entries_to_persist[0].index
            self.entries = [e for e in self.entries if e.index < first]
            self.entries.extend(rd.entries_to_persist)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def state(self) -> StorageState:
        return StorageState(self.hard_state, self.snapshot, tuple(self.entries))


# --------------------------------------------------------------------------- app


class App:
    """A tiny state machine: the list of applied values plus a running digest."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.index = 0
        self.digest = b""

    def apply(self, e: Entry) -> None:
        if e.kind == EntryKind.NORMAL:
            self.values.append(e.data)
        self.index = e.index
        self.digest = hashlib.blake2b(self.digest + bytes([e.kind]) + e.data, digest_size=8).digest()

    def snapshot(self) -> bytes:
        return json.dumps({"i": self.index, "d": self.digest.hex(), "v": [v.hex() for v in self.values]}).encode()

    def restore(self, data: bytes) -> None:
        d: dict[str, Any] = json.loads(data) if data else {"i": 0, "d": "", "v": []}
        self.index = d["i"]
        self.digest = bytes.fromhex(d["d"])
        self.values = [bytes.fromhex(v) for v in d["v"]]


# --------------------------------------------------------------------------- checker


class Checker:
    """The Raft paper's safety properties, checked incrementally."""

    def __init__(self) -> None:
        self.leader_of_term: dict[int, str] = {}
        self.committed: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, kind, data)
        self.digest_at: dict[int, bytes] = {}
        self.entry_sig: dict[tuple[int, int], tuple[int, bytes, int | None]] = {}
        self.leader_mark: dict[str, tuple[int, int, int]] = {}  # id -> (term, last_index, last_term)
        self.max_committed = 0

    def fail(self, msg: str) -> None:
        raise InvariantViolation(msg)

    def on_state(self, node: str, core: RaftCore) -> None:
        if core.role in (PRE_CANDIDATE, CANDIDATE, LEADER) and core.is_learner():
            self.fail(f"learner: {node} is a learner but {core.role} in term {core.term}")
        if core.role != LEADER:
            self.leader_mark.pop(node, None)
            return
        prev = self.leader_of_term.setdefault(core.term, node)
        if prev != node:
            self.fail(f"election safety: {prev} and {node} both leaders in term {core.term}")
        mark = self.leader_mark.get(node)
        log = core.log
        if mark is None or mark[0] != core.term:
            self._check_leader_completeness(node, core)
        else:
            _, li, lt = mark
            if log.last_index < li or (li > log.snapshot.index and log.term_at(li) != lt):
                self.fail(f"leader append-only: {node} term {core.term} lost entry {li}")
        self.leader_mark[node] = (core.term, log.last_index, log.last_term)

    def _check_leader_completeness(self, node: str, core: RaftCore) -> None:
        log = core.log
        for i, (t, _, _) in self.committed.items():
            if i > log.snapshot.index and log.term_at(i) != t:
                self.fail(f"leader completeness: new leader {node} term {core.term} lacks committed entry {i}")
        snap = log.snapshot
        if snap.index in self.digest_at and snap.data:
            if bytes.fromhex(json.loads(snap.data)["d"]) != self.digest_at[snap.index]:
                self.fail(f"leader completeness: {node}'s snapshot at {snap.index} differs from committed state")

    def on_persist(self, node: str, disk: MemDisk, rd: Ready) -> None:
        """Log matching: an (index, term) pair always names the same entry with the same predecessor."""
        if not rd.entries_to_persist:
            return
        prev_term = disk.term_at(rd.entries_to_persist[0].index - 1)
        for e in rd.entries_to_persist:
            sig = (int(e.kind), e.data, prev_term)
            old = self.entry_sig.setdefault((e.index, e.term), sig)
            if old != sig and not (old[:2] == sig[:2] and (old[2] is None or sig[2] is None)):
                self.fail(f"log matching: {node} entry ({e.index},{e.term}) differs from another log's")
            prev_term = e.term

    def on_apply(self, node: str, e: Entry, app: App) -> None:
        rec = (e.term, int(e.kind), e.data)
        old = self.committed.setdefault(e.index, rec)
        if old != rec:
            self.fail(f"state machine safety: {node} applied {rec} at {e.index}, others applied {old}")
        d = self.digest_at.setdefault(e.index, app.digest)
        if d != app.digest:
            self.fail(f"state machine safety: {node} state at {e.index} differs")
        self.max_committed = max(self.max_committed, e.index)

    def on_restore(self, node: str, app: App) -> None:
        d = self.digest_at.get(app.index)
        if d is not None and d != app.digest:
            self.fail(f"state machine safety: {node} restored a snapshot at {app.index} that differs")


# --------------------------------------------------------------------------- simulator


@dataclass
class Faults:
    """Probabilities and rates of the fault injector; ``Faults.none()`` for a calm run."""

    drop: float = 0.05
    dup: float = 0.03
    delay_ms: tuple[float, float] = (0.5, 8.0)
    long_delay: float = 0.02  # probability of a 20..80 ms delay (reordering)
    rare_delay: float = 0.003  # probability of a 500..2000 ms delay: arrives after leadership changed
    archive: float = 0.02  # share of sent messages kept for a later stale re-delivery (the "replay" fault)
    fault_every_ms: tuple[float, float] = (150.0, 700.0)
    crash_after_persist: float = 0.002
    skew: float = 0.05
    membership: bool = True
    active: bool = True

    @staticmethod
    def none() -> Faults:
        return Faults(drop=0.0, dup=0.0, long_delay=0.0, rare_delay=0.0, archive=0.0, crash_after_persist=0.0,
                      membership=False, active=False)


@dataclass
class SimNode:
    id: str
    bootstrap: dict[str, str]
    bootstrap_learners: dict[str, str] = field(default_factory=dict)
    disk: MemDisk = field(default_factory=MemDisk)
    storage: Storage | None = None  # optional real raft.storage.Storage shadowing ``disk``
    core: RaftCore | None = None
    app: App = field(default_factory=App)
    alive: bool = False
    incarnation: int = 0
    busy: bool = False
    rate: float = 1.0
    stall_until: float = 0.0
    last_role: tuple[str, int] = ("", 0)


class Sim:
    def __init__(
        self,
        seed: int,
        n: int = 3,
        spares: int = 1,
        faults: Faults | None = None,
        cfg: Config | None = None,
        tick_ms: float = 10.0,
        check_leases: bool = True,
        storage_dir: str | None = None,
        learners: int = 0,
    ) -> None:
        """``storage_dir``: also persist through raft.storage.Storage there and check
        on every restart that it reloads exactly what was persisted. ``learners``:
        that many non-voting learners in the bootstrap configuration (after the
        voters, before the spares); membership faults then also add, promote and
        remove learners."""
        self.storage_dir = storage_dir
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.cfg = cfg or Config(election_ticks=10, heartbeat_ticks=2, max_inflight=4, max_batch=16,
                                 snapshot_threshold=40)
        self.tick_ms = tick_ms
        self.check_leases = check_leases
        self.now = 0.0
        self._seq = itertools.count()
        self._events: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._handlers: dict[str, Callable[..., None]] = {}
        self.checker = Checker()
        ids = [f"n{i}" for i in range(1, n + 1)]
        members = {i: "" for i in ids}
        learner_ids = {f"n{k}": "" for k in range(n + 1, n + learners + 1)}
        self.with_learners = learners > 0
        self.nodes: dict[str, SimNode] = {}
        for i in [*ids, *learner_ids]:
            self.nodes[i] = SimNode(i, bootstrap=members, bootstrap_learners=learner_ids)
        for k in range(n + learners + 1, n + learners + spares + 1):
            self.nodes[f"n{k}"] = SimNode(f"n{k}", bootstrap={})  # joins when added
        self.group: dict[str, int] = {i: 0 for i in self.nodes}
        self.acked: dict[bytes, None] = {}  # insertion-ordered set
        self._pending: dict[str, tuple[str, Entry]] = {}
        self._value_seq = itertools.count()
        self.events_run = 0
        self.stats: collections.Counter[str] = collections.Counter()
        self.elected_at: float | None = None
        self.fenced_index = 0  # highest index a leader reported writes_fenced for
        self._archive: collections.deque[Message] = collections.deque(maxlen=128)  # for stale re-delivery
        for node in self.nodes.values():
            node.rate = 1.0 + self.rng.uniform(-self.faults.skew, self.faults.skew)
            self.start(node.id)
        if self.faults.active:
            self._at(self.rng.uniform(*self.faults.fault_every_ms), "fault")
        self._at(50.0, "propose")

    # ------------------------------------------------------------------ events

    def _at(self, t: float, kind: str, *args: Any) -> None:
        heapq.heappush(self._events, (t, next(self._seq), kind, args))

    def run_until(self, t_end: float, stop: Callable[[], bool] | None = None) -> None:
        events, handlers = self._events, self._handlers
        while events and events[0][0] <= t_end:
            t, _, kind, args = heapq.heappop(events)
            self.now = t
            self.events_run += 1
            handler = handlers.get(kind)
            if handler is None:
                handler = handlers[kind] = getattr(self, "_ev_" + kind)
            handler(*args)
            if stop is not None and stop():
                return
        self.now = max(self.now, t_end)

    def _ev_tick(self, nid: str, inc: int) -> None:
        node = self.nodes[nid]
        if not node.alive or node.incarnation != inc:
            return
        assert node.core is not None
        node.core.tick()
        self._at(self.now + self.tick_ms / node.rate, "tick", nid, inc)
        self._after(node)

    def _ev_deliver(self, msg: Message) -> None:
        node = self.nodes.get(msg.dst)
        if node is None or not node.alive or self.group[msg.src] != self.group[msg.dst]:
            return
        assert node.core is not None
        node.core.step(msg)
        self._after(node)

    def _ev_persisted(self, nid: str, inc: int, rd: Ready) -> None:
        node = self.nodes[nid]
        if not node.alive or node.incarnation != inc:
            return
        assert node.core is not None
        self.checker.on_persist(nid, node.disk, rd)
        node.disk.save(rd)
        if node.storage is not None:
            node.storage.save(rd)
        if self.faults.crash_after_persist and self.rng.random() < self.faults.crash_after_persist:
            self.stats["crash_after_persist"] += 1
            self.crash(nid)  # persisted, but nothing sent or applied
            return
        for m in rd.messages:
            self.send(m)
        if rd.snapshot_to_persist is not None and rd.snapshot_to_persist.index > node.app.index:
            self.stats["snapshot_installed"] += 1
            node.app.restore(rd.snapshot_to_persist.data)
            self.checker.on_restore(nid, node.app)
        self._apply(node, rd)
        node.core.advance(rd)
        node.busy = False
        if node.core.should_snapshot():
            node.core.compact(node.app.snapshot())
            self.stats["compacted"] += 1
        self._after(node)

    def _apply(self, node: SimNode, rd: Ready) -> None:
        for e in rd.committed_entries:
            if e.index <= node.app.index:
                continue
            node.app.apply(e)
            if e.kind == EntryKind.CONFIG:
                self.stats["config_applied"] += 1
            self.checker.on_apply(node.id, e, node.app)
            if e.kind == EntryKind.NORMAL:
                pend = self._pending.get(e.data.decode())
                if pend and pend[0] == node.id and pend[1].term == e.term and pend[1].index == e.index:
                    self.acked[e.data] = None

    def _after(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        self.checker.on_state(node.id, core)
        if core.role == LEADER and self.elected_at is None:
            self.elected_at = self.now
        if self.check_leases and core.role == LEADER:
            for other in self.nodes.values():
                oc = other.core
                if (other is not node and other.alive and oc is not None and oc.role == LEADER
                        and oc.lease_valid() and core.lease_valid()):
                    self.checker.fail(
                        f"lease: {node.id} (term {core.term}) and {other.id} (term {oc.term}) both hold a lease"
                    )
            if core.commit_index > self.fenced_index and core.writes_fenced(core.commit_index):
                self.fenced_index = core.commit_index
                for other in self.nodes.values():
                    self._check_fence(other)
        if self.check_leases:
            self._check_fence(node)
        self._check_applied(node)
        if not node.busy and core.has_ready():
            rd = core.ready()
            node.busy = True
            if rd.applies_early:     # as RaftNode does: apply now, persist the commit index later
                self.stats["applied_early"] += 1
                self._apply(node, rd)
                core.applied_early(rd)
            latency = self.rng.uniform(0.05, 1.0)
            self._at(max(self.now + latency, node.stall_until), "persisted", node.id, node.incarnation, rd)

    def _check_fence(self, node: SimNode) -> None:
        """Once a leader said every lease holder has applied index i (writes_fenced),
        no node may hold a lease, leader or follower, unless its application (not
        only the core's applied index) has applied i."""
        core = node.core
        if not node.alive or core is None:
            return
        applied = min(core.applied_index, node.app.index)
        if applied >= self.fenced_index:
            return
        if core.lease_valid() or core.follower_lease_valid():
            self.checker.fail(f"fence: {node.id} (term {core.term}, {core.role}) holds a lease but its application "
                              f"applied only {node.app.index} (core: {core.applied_index}) < fenced "
                              f"{self.fenced_index}")

    def _check_applied(self, node: SimNode) -> None:
        """The core never counts as applied what the application has not applied
        (a snapshot counts once the application restored it)."""
        core = node.core
        if node.alive and core is not None and core.applied_index > node.app.index:
            self.checker.fail(f"applied: {node.id}'s core says applied {core.applied_index}, its application "
                              f"is at {node.app.index}")

    # ------------------------------------------------------------------ network

    def send(self, m: Message) -> None:
        if isinstance(m, (PreVote, RequestVote)):
            src = self.nodes[m.src].core
            if src is not None and m.dst in src.learners:
                self.checker.fail(f"learner: {m.src} asked learner {m.dst} for a vote")
        f = self.faults
        if self.group[m.src] != self.group[m.dst] or (f.drop and self.rng.random() < f.drop):
            return
        if f.archive and self.rng.random() < f.archive:
            self._archive.append(m)
        copies = 2 if f.dup and self.rng.random() < f.dup else 1
        for _ in range(copies):
            if f.rare_delay and self.rng.random() < f.rare_delay:
                delay = self.rng.uniform(500.0, 2000.0)
                self.stats["rare_delay"] += 1
            elif f.long_delay and self.rng.random() < f.long_delay:
                delay = self.rng.uniform(20.0, 80.0)
            else:
                delay = self.rng.uniform(*f.delay_ms)
            self._at(self.now + delay, "deliver", m)

    def replay_stale(self, max_msgs: int = 3) -> None:
        """Deliver again a few messages sent in earlier terms (a network that held
        them up, or a peer that retried them), across leadership changes."""
        terms = [n.core.term for n in self.nodes.values() if n.core is not None]
        newest = max(terms, default=0)
        old = [m for m in self._archive if m.term < newest]
        for m in self.rng.sample(old, min(max_msgs, len(old))):
            self.stats["stale_redelivered"] += 1
            self._at(self.now + self.rng.uniform(0.0, 50.0), "deliver", m)

    def heal(self) -> None:
        for k in self.group:
            self.group[k] = 0

    def partition(self, *groups: list[str]) -> None:
        for g, ids in enumerate(groups):
            for i in ids:
                self.group[i] = g + 1

    # ------------------------------------------------------------------ lifecycle

    def start(self, nid: str) -> None:
        node = self.nodes[nid]
        node.incarnation += 1
        if self.storage_dir is not None:
            self._reopen_storage(node)
        node.core = RaftCore(
            nid,
            node.bootstrap,
            node.disk.state(),
            rng=random.Random(self.rng.getrandbits(64)),
            config=self.cfg,
            boot_id=node.incarnation,
            learners=node.bootstrap_learners,
        )
        node.app = App()
        if node.disk.snapshot is not None:
            node.app.restore(node.disk.snapshot.data)
            self.checker.on_restore(nid, node.app)
        node.alive = True
        node.busy = False
        node.stall_until = 0.0
        self._at(self.now + self.rng.uniform(0, self.tick_ms), "tick", nid, node.incarnation)
        self._after(node)

    def _reopen_storage(self, node: SimNode) -> None:
        """Load the node's real data dir and demand it equals the simulated disk."""
        if node.storage is not None:
            node.storage.close()
        assert self.storage_dir is not None
        node.storage = Storage(os.path.join(self.storage_dir, node.id))
        got = node.storage.load()
        want = node.disk.state()
        if (got.hard_state, got.snapshot, got.entries) != (want.hard_state, want.snapshot, want.entries):
            self.checker.fail(f"storage: {node.id} reloaded {got} but had persisted {want}")

    def crash(self, nid: str) -> None:
        node = self.nodes[nid]
        self.stats["crash"] += 1
        node.alive = False
        node.incarnation += 1
        node.busy = False
        self.checker.leader_mark.pop(nid, None)

    # ------------------------------------------------------------------ workload and faults

    def elected_at_or_none(self) -> bool:
        """A ``stop`` predicate for run_until: some node has become leader."""
        return self.elected_at is not None

    def leaders(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.alive and n.core is not None and n.core.role == LEADER]

    def propose(self, value: bytes | None = None) -> bytes | None:
        """Propose to some node that believes it leads; returns the value or None."""
        leaders = self.leaders()
        if not leaders:
            return None
        node = self.rng.choice(leaders)
        v = value if value is not None else f"v{next(self._value_seq)}".encode()
        try:
            assert node.core is not None
            e = node.core.propose(v)
        except NotLeader:
            return None
        self._pending[v.decode()] = (node.id, e)
        self._after(node)
        return v

    def _ev_propose(self) -> None:
        self.propose()
        self._at(self.now + self.rng.uniform(10.0, 60.0), "propose")

    def _ev_fault(self) -> None:
        if not self.faults.active:
            return
        self._random_fault()
        self._at(self.now + self.rng.uniform(*self.faults.fault_every_ms), "fault")

    def _random_fault(self) -> None:
        r = self.rng
        ids = sorted(self.nodes)
        down = [i for i in ids if not self.nodes[i].alive]
        choice = r.random()
        if choice < 0.03:
            self.replay_stale()
        elif choice < 0.18:
            self.stats["heal"] += 1
            self.heal()
        elif choice < 0.30:
            shuffled = ids[:]
            r.shuffle(shuffled)
            cut = r.randint(1, len(ids) - 1)
            self.partition(shuffled[:cut], shuffled[cut:])
            self.stats["partition"] += 1
        elif choice < 0.38:
            victim = r.choice(ids)
            self.partition([victim], [i for i in ids if i != victim])
        elif choice < 0.52:
            if len(down) < 2:
                # Half the time the victim is a leader: the case that exercises Figure 8.
                leaders = [n.id for n in self.leaders()]
                pool = leaders if leaders and r.random() < 0.5 else [i for i in ids if self.nodes[i].alive]
                self.crash(r.choice(pool))
        elif choice < 0.68:
            if down:
                self.start(r.choice(down))
        elif choice < 0.76:
            node = self.nodes[r.choice(ids)]
            node.stall_until = self.now + r.uniform(20.0, 300.0)
            self.stats["disk_stall"] += 1
        elif choice < 0.82:
            for ldr in self.leaders():
                assert ldr.core is not None
                try:
                    ldr.core.transfer_leadership(r.choice(sorted(ldr.core.members)))
                    self.stats["transfer"] += 1
                except (NotLeader, ProposalRejected):
                    pass
                self._after(ldr)
        elif self.faults.membership:
            for ldr in self.leaders():
                core = ldr.core
                assert core is not None
                members = sorted(core.members)
                learners = sorted(core.learners)
                outsiders = [i for i in ids if i not in core.members and i not in core.learners]
                try:
                    if self.with_learners and r.random() < 0.5:
                        self._learner_change(core, outsiders, learners)
                    elif outsiders and (len(members) <= 3 or r.random() < 0.5):
                        core.propose_conf_change(ConfChange("add", r.choice(outsiders)))
                    elif len(members) > 3:
                        core.propose_conf_change(ConfChange("remove", r.choice(members)))
                except (NotLeader, ProposalRejected):
                    pass
                self._after(ldr)

    def _learner_change(self, core: RaftCore, outsiders: list[str], learners: list[str]) -> None:
        """Add a learner, promote one (while voters are few), or remove one."""
        r = self.rng
        choice = r.random()
        if outsiders and (choice < 0.4 or not learners):
            core.propose_conf_change(ConfChange("add_learner", r.choice(outsiders)))
            self.stats["learner_added"] += 1
        elif learners and choice < 0.7 and len(core.members) <= 4:
            core.propose_conf_change(ConfChange("promote", r.choice(learners)))
            self.stats["learner_promoted"] += 1
        elif learners:
            core.propose_conf_change(ConfChange("remove", r.choice(learners)))
            self.stats["learner_removed"] += 1

    # ------------------------------------------------------------------ end-of-run checks

    def settle(self, max_ms: float = 5000.0) -> None:
        """Heal everything, restart the dead, and demand progress: a leader emerges,
        a new proposal commits and every live member applies it."""
        self.faults.active = False
        self.faults.drop = self.faults.dup = self.faults.long_delay = self.faults.rare_delay = 0.0
        self.faults.archive = 0.0
        self.faults.crash_after_persist = 0.0
        self.heal()
        for node in self.nodes.values():
            node.stall_until = 0.0
            if not node.alive:
                self.start(node.id)
        deadline = self.now + max_ms
        marker: bytes | None = None
        attempt = 0
        while True:
            if self.now >= deadline:
                raise InvariantViolation(f"liveness: no progress within {max_ms} ms after healing")
            if marker is None or (marker not in self.acked and not self._proposer_still_leads(marker)):
                marker = self.propose(f"settle-{attempt}".encode())
                attempt += 1
            self.run_until(self.now + 20.0)
            if marker is not None and marker in self.acked and self._all_members_applied():
                break
        self.check_final()

    def _proposer_still_leads(self, value: bytes) -> bool:
        nid, e = self._pending[value.decode()]
        core = self.nodes[nid].core
        return self.nodes[nid].alive and core is not None and core.role == LEADER and core.term == e.term

    def _all_members_applied(self) -> bool:
        ldr = self.leaders()
        if len(ldr) != 1 or ldr[0].core is None:
            return False
        # Not just the leader's commit index: a leader that removed itself may have
        # committed further entries (under the new configuration) before a new
        # leader of a later term, which commits them again only with its own entry.
        target = max(ldr[0].core.commit_index, self.checker.max_committed)
        return all(self.nodes[m].app.index >= target for m in (*ldr[0].core.members, *ldr[0].core.learners))

    def check_final(self) -> None:
        ldr = self.leaders()[0]
        assert ldr.core is not None
        for m in (*ldr.core.members, *ldr.core.learners):
            values = set(self.nodes[m].app.values)
            lost = [v for v in self.acked if v not in values]
            if lost:
                raise InvariantViolation(f"acknowledged values lost on {m}: {lost[:5]}")
