"""Where a command goes: the master of the committed topology, or a replica.

The router only answers questions about nodes (addresses); which connection
carries the bytes is the session's business.
"""

from __future__ import annotations

import itertools

from health.probes.probe import Health
from health.shard.decide import NodeTags, serves_reads

from .topology import Topology


class Router:
    def __init__(self, topology: Topology, health: Health, read_policy: str) -> None:
        self.topology = topology
        self.health = health
        self.read_policy = read_policy
        self.tags: dict[str, NodeTags] = {}     # the operator's node tags: noloadbalance nodes serve no reads
        self._rr = itertools.count()

    @property
    def master(self) -> str | None:
        return self.topology.master

    def set_topology(self, topology: Topology) -> None:
        self.topology = topology
        for addr in topology.nodes:
            self.health.add_node(addr)

    def readable_replicas(self) -> list[str]:
        master = self.topology.master
        return [r for r in self.topology.replicas if self.health.readable(r, master) and serves_reads(r, self.tags)]

    def replica_fit(self, addr: str | None) -> bool:
        return addr is not None and addr in self.topology.replicas and \
            self.health.readable(addr, self.topology.master) and serves_reads(addr, self.tags)

    def pick_read_node(self) -> str | None:
        """A node for a client's reads, round-robin over the candidates.

        `replicas`: healthy replicas, else the master; `any`: healthy replicas
        and the master; `master`: the master.
        """
        if self.read_policy == "master":
            return self.topology.master
        candidates = self.readable_replicas()
        if self.read_policy == "any" and self.topology.master:
            candidates.append(self.topology.master)
        if not candidates:
            return self.topology.master
        return candidates[next(self._rr) % len(candidates)]
