"""Cluster mode: which shard serves a slot and, per shard, which node a command goes to.

Built from the committed topology of every shard (`health.state_machine`): the slot
map (`SlotMap`) says which shard owns a slot, and one `Router` per shard picks the
shard's master or one of its replicas exactly as in single-set mode. A `MOVED` a node
answers moves one slot to another committed shard until the next committed change
(resharding commits ranges; a node's word never names a master Raft did not commit).
"""

from __future__ import annotations

import logging

from health.probes.probe import Health

from .keyslot import SLOTS
from .router import Router
from .slotmap import Shard, SlotMap, SlotMapError
from .topology import Topology

log = logging.getLogger("proxy.routing")


class ClusterRouter:
    def __init__(self, health: Health, read_policy: str) -> None:
        self.health = health
        self.read_policy = read_policy
        self.tags: dict = {}        # node tags (see Router.tags)
        self.routers: dict[str, Router] = {}
        self.slots = SlotMap(())
        self._index: dict[str, int] = {}        # shard id -> its index in the slot map
        self._shard_of: dict[str, str] = {}     # node address -> shard id
        # slots of the slot moves running or queued: read on masters only (a source replica
        # knows nothing of a move: it answers nil for a key already moved, where its master
        # answers ASK; a target replica may not have the keys yet)
        self.migrating = bytearray(SLOTS)

    # -- committed changes --------------------------------------------------------
    def set_shard(self, shard: str, topo: Topology) -> None:
        r = self.routers.get(shard)
        if r is None:
            self.routers[shard] = Router(topo, self.health, self.read_policy)
            self.routers[shard].tags = self.tags
            for addr in topo.nodes:
                self.health.add_node(addr)
        else:
            r.set_topology(topo)
        self._rebuild()

    def set_read_policy(self, policy: str) -> None:
        """The dynamic configuration changed the read policy (every shard's router)."""
        self.read_policy = policy
        for r in self.routers.values():
            r.read_policy = policy

    def set_tags(self, tags: dict) -> None:
        self.tags = tags
        for r in self.routers.values():
            r.tags = tags

    def set_migrating(self, slots) -> None:
        m = bytearray(SLOTS)
        for slot in slots:
            m[slot] = 1
        self.migrating = m

    def remove_shard(self, shard: str) -> None:
        if self.routers.pop(shard, None) is not None:
            self._rebuild()

    def _rebuild(self) -> None:
        shards = [Shard(s, r.topology.slots, r.topology.master, r.topology.replicas)
                  for s, r in sorted(self.routers.items())]
        try:
            self.slots = SlotMap(shards)
        except SlotMapError as exc:     # two committed owners of a slot: keep routing by the last good map
            log.error("event=slot_map_rejected error=%r", str(exc))
            return
        self._index = {sh.id: i for i, sh in enumerate(self.slots.shards)}
        self._shard_of = {addr: s for s, r in self.routers.items() for addr in r.topology.nodes}

    # -- questions the data path asks ---------------------------------------------
    def router(self, shard: str | None) -> Router | None:
        return self.routers.get(shard) if shard is not None else None

    def shard_of(self, addr: str) -> str | None:
        """The shard whose committed topology names node `addr`."""
        return self._shard_of.get(addr)

    def topology_of(self, addr: str) -> Topology | None:
        shard = self._shard_of.get(addr)
        return self.routers[shard].topology if shard is not None else None

    @property
    def masters(self) -> list[str]:
        return [r.topology.master for _, r in sorted(self.routers.items()) if r.topology.master]

    @property
    def nodes(self) -> list[str]:
        return [a for _, r in sorted(self.routers.items()) for a in r.topology.nodes]

    def moved(self, slot: int, addr: str) -> bool:
        """A node answered MOVED `slot` `addr`: route that slot to the shard whose committed
        master is `addr` (True), unless no committed shard has that master (False)."""
        for s, r in self.routers.items():
            if r.topology.master == addr:
                i = self._index.get(s)
                if i is None:
                    return False
                self.slots.reassign(slot, i)
                return True
        return False
