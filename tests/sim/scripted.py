"""A hand-driven cluster for scenario tests (etcd's ``network`` in raft_test.go).

Nothing happens unless the test says so: ``tick``, ``stabilize`` (persist and
deliver until quiet), ``cut``/``isolate``/``recover``, ``crash``/``restart``.
Every Ready is persisted to a :class:`MemDisk` before its messages move.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from raft.core import LEADER, Config, RaftCore
from raft.messages import Entry, EntryKind, Message, Snapshot
from tests.sim.harness import MemDisk


class Cluster:
    def __init__(self, n: int = 3, cfg: Config | None = None, seed: int = 0, ids: list[str] | None = None,
                 learners: list[str] | None = None) -> None:
        """``n`` voters (or ``ids``) plus ``learners`` in the bootstrap configuration."""
        self.voter_ids = ids or [f"n{i}" for i in range(1, n + 1)]
        self.learner_ids = list(learners or [])
        self.ids = [*self.voter_ids, *self.learner_ids]
        self.cfg = cfg or Config(election_ticks=10, heartbeat_ticks=1)
        self.rng = random.Random(seed)
        self.disks = {i: MemDisk() for i in self.ids}
        self.applied: dict[str, list[Entry]] = {i: [] for i in self.ids}
        self.cores: dict[str, RaftCore] = {}
        self.down: set[str] = set()
        self.cut_links: set[tuple[str, str]] = set()
        self.queue: list[Message] = []
        self.drop_if: Callable[[Message], bool] | None = None  # extra, test-defined message loss
        self.own_snapshots: dict[str, Snapshot] = {}
        self.restored: dict[str, int] = {i: 0 for i in self.ids}
        self.boots = 0
        for i in self.ids:
            self.cores[i] = self._new_core(i)

    def _new_core(self, nid: str) -> RaftCore:
        return RaftCore(
            nid,
            {i: "" for i in self.voter_ids},
            self.disks[nid].state(),
            rng=random.Random(self.rng.getrandbits(32)),
            config=self.cfg,
            boot_id=self._next_boot(),
            learners={i: "" for i in self.learner_ids},
        )

    def _next_boot(self) -> int:
        self.boots += 1
        return self.boots

    # -- driving ------------------------------------------------------------------

    def flush(self, nid: str) -> None:
        """Persist every Ready of ``nid``, queue its messages, apply, advance."""
        core = self.cores[nid]
        while core.has_ready():
            rd = core.ready()
            self.disks[nid].save(rd)
            self.queue.extend(rd.messages)
            snap = rd.snapshot_to_persist
            if snap is not None and snap is not self.own_snapshots.get(nid):  # from the leader: restore
                self.applied[nid] = [Entry(0, 0, EntryKind.NORMAL, v) for v in snap.data.split(b",") if v]
                self.restored[nid] += 1
            self.applied[nid].extend(e for e in rd.committed_entries if e.kind == EntryKind.NORMAL)
            core.advance(rd)
            if core.should_snapshot():
                self.own_snapshots[nid] = core.compact(b",".join(e.data for e in self.applied[nid]))

    def stabilize(self, max_rounds: int = 1000) -> None:
        for _ in range(max_rounds):
            for nid in self.ids:
                if nid not in self.down:
                    self.flush(nid)
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for m in batch:
                if m.dst in self.down or m.src in self.down or (m.src, m.dst) in self.cut_links:
                    continue
                if self.drop_if is not None and self.drop_if(m):
                    continue
                if m.dst in self.cores:
                    self.cores[m.dst].step(m)
        raise AssertionError("cluster did not quiesce")

    def tick(self, nid: str, n: int = 1) -> None:
        for _ in range(n):
            self.cores[nid].tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for nid in self.ids:
                if nid not in self.down:
                    self.cores[nid].tick()
            self.stabilize()

    def elect(self, nid: str) -> None:
        """Make ``nid`` leader by running its election timer out while the others hold still."""
        core = self.cores[nid]
        for _ in range(10 * self.cfg.election_ticks):
            if core.role == LEADER:
                break
            core.tick()
            self.stabilize()
        assert core.role == LEADER, f"{nid} did not become leader"
        self.stabilize()

    def leader(self) -> RaftCore | None:
        ls = [c for i, c in self.cores.items() if i not in self.down and c.role == LEADER]
        return max(ls, key=lambda c: c.term) if ls else None

    # -- faults -------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, nid: str) -> None:
        for other in self.ids:
            if other != nid:
                self.cut(nid, other)

    def recover(self) -> None:
        self.cut_links.clear()

    def crash(self, nid: str) -> None:
        """Stop ``nid``; whatever it had not persisted is gone."""
        self.down.add(nid)
        self.queue = [m for m in self.queue if m.src != nid]

    def restart(self, nid: str) -> RaftCore:
        self.down.discard(nid)
        self.cores[nid] = self._new_core(nid)
        self.applied[nid] = []
        return self.cores[nid]

    def ticks_until_fenced(self, leader: str, idx: int, cut_off: str) -> int:
        """Tick every node until `leader` says entry `idx` is fenced, checking that it never
        is while `cut_off` (a node that cannot hear of `idx`) still holds a valid lease;
        returns the ticks it took (bounded by the lease's lifetime)."""
        lead, other = self.cores[leader], self.cores[cut_off]
        waited = 0
        while not lead.writes_fenced(idx):
            assert waited <= self.cfg.lease_outlives_ticks
            self.tick_all(1)
            waited += 1
            if other.follower_lease_valid():      # it could still act on the old state
                assert not lead.writes_fenced(idx)
        return waited
