"""The topology the proxies agree on: which Redis node is master, which replicate."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Topology:
    """One committed topology.  `epoch` grows by one with every change."""

    epoch: int
    master: str | None
    replicas: tuple[str, ...] = ()
    priorities: dict = field(default_factory=dict, compare=False, hash=False)
    writes_paused: bool = False     # a graceful switchover is draining the master

    @property
    def nodes(self) -> tuple[str, ...]:
        return ((self.master,) if self.master else ()) + self.replicas

    def with_master(self, new_master: str) -> "Topology":
        """The next epoch, with `new_master` promoted and every other node a replica."""
        others = tuple(n for n in self.nodes if n != new_master)
        return Topology(self.epoch + 1, new_master, others, self.priorities)

    def paused(self) -> "Topology":
        """The next epoch, same roles, writes held on every proxy."""
        return Topology(self.epoch + 1, self.master, self.replicas, self.priorities, writes_paused=True)

    def resumed(self) -> "Topology":
        return Topology(self.epoch + 1, self.master, self.replicas, self.priorities)

    def to_dict(self) -> dict:
        d = {"epoch": self.epoch, "master": self.master, "replicas": list(self.replicas)}
        if self.writes_paused:
            d["writes_paused"] = True
        return d

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, d: dict) -> "Topology":
        return cls(int(d["epoch"]), d.get("master"), tuple(d.get("replicas", ())),
                   writes_paused=bool(d.get("writes_paused", False)))

    @classmethod
    def initial(cls, nodes: list[str], master: str) -> "Topology":
        return cls(1, master, tuple(n for n in nodes if n != master))
