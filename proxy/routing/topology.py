"""The topology the proxies agree on: which Redis node is master, which replicate.

Besides the roles, the committed topology records the master's replication
history (`History`): the replication id its dataset continues and the highest
offset the leader has seen it reach.  It is part of the replicated state, so a
new Raft leader knows it too; the leader never makes a node master, nor points
replicas at it, unless that node's own history covers this one (see
`health.shard.decide.contains`).  A node restarted without its data has a new
replication id and is therefore never taken for the master it replaced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class History:
    """A replication history: stream `replid` up to at least `offset` bytes.

    `parent`: the stream `replid` was started from (a promoted node's `master_replid2`),
    identical to it up to `parent_offset` (`second_repl_offset` - 1). "" when not known
    (a record of an older version, or a stream that started empty)."""

    replid: str
    offset: int
    parent: str = ""
    parent_offset: int = -1
    run_id: str = ""        # the Redis process it was recorded from ("" not known: older records)

    def to_dict(self) -> dict:
        d: dict = {"replid": self.replid, "offset": self.offset}
        if self.parent:     # (versions before it read the record without these)
            d["parent"], d["parent_offset"] = self.parent, self.parent_offset
        if self.run_id:
            d["run_id"] = self.run_id
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "History | None":
        if not d or not d.get("replid"):
            return None
        return cls(str(d["replid"]), int(d.get("offset") or 0), str(d.get("parent") or ""),
                   int(d.get("parent_offset", -1)), str(d.get("run_id") or ""))


@dataclass(frozen=True)
class Topology:
    """One committed topology.  `epoch` grows by one with every change of roles."""

    epoch: int
    master: str | None
    replicas: tuple[str, ...] = ()
    writes_paused: bool = False     # a graceful switchover is draining the master, or no node is safe
    history: History | None = field(default=None, compare=False)   # the master's known history
    hold_reason: str = ""           # why writes are paused, when it is not a switchover
    slots: tuple[tuple[int, int], ...] = ()    # cluster mode: the shard's slot ranges (inclusive)

    @property
    def nodes(self) -> tuple[str, ...]:
        return ((self.master,) if self.master else ()) + self.replicas

    def with_master(self, new_master: str, history: History | None = None) -> "Topology":
        """The next epoch, with `new_master` promoted and every other node a replica.
        `history`: what the new master holds (its own history when chosen)."""
        others = tuple(n for n in self.nodes if n != new_master)
        return Topology(self.epoch + 1, new_master, others,
                        history=history if history is not None else self.history, slots=self.slots)

    def paused(self, reason: str = "") -> "Topology":
        """The next epoch, same roles, writes held on every proxy."""
        return Topology(self.epoch + 1, self.master, self.replicas, writes_paused=True,
                        history=self.history, hold_reason=reason, slots=self.slots)

    def resumed(self) -> "Topology":
        return Topology(self.epoch + 1, self.master, self.replicas, history=self.history, slots=self.slots)

    def with_history(self, history: History) -> "Topology":
        """The same epoch and roles with a newer record of the master's history."""
        return replace(self, history=history)

    def to_dict(self) -> dict:
        d = {"epoch": self.epoch, "master": self.master, "replicas": list(self.replicas)}
        if self.writes_paused:
            d["writes_paused"] = True
        if self.hold_reason:
            d["hold_reason"] = self.hold_reason
        if self.history is not None:
            d["history"] = self.history.to_dict()
        if self.slots:
            d["slots"] = [list(r) for r in self.slots]
        return d

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, d: dict) -> "Topology":
        return cls(int(d["epoch"]), d.get("master"), tuple(d.get("replicas", ())),
                   writes_paused=bool(d.get("writes_paused", False)), history=History.from_dict(d.get("history")),
                   hold_reason=str(d.get("hold_reason") or ""),
                   slots=tuple((int(a), int(b)) for a, b in d.get("slots") or ()))

    @classmethod
    def initial(cls, nodes: list[str], master: str) -> "Topology":
        return cls(1, master, tuple(n for n in nodes if n != master))
