"""The proxies as a cluster, for cluster-aware clients (redis-py's RedisCluster,
`redis-cli -c`): `CLUSTER SLOTS | SHARDS | NODES | INFO | MYID | KEYSLOT` answers in
Redis' own reply shapes, built from the proxies' addresses only. Pure.

Every proxy serves every slot, so each answers that it is the master of all 16384 and
the other proxies are its replicas: a cluster-aware client then sends everything to
the proxy it asked (or to the other proxies when it prefers replicas for reads), and
never sees a MOVED, because the proxies follow the real cluster's map themselves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .keyslot import SLOTS


@dataclass(frozen=True)
class ProxyNode:
    name: str
    host: str
    port: int

    @property
    def id(self) -> str:
        """A stable 40-hex node id for the proxy."""
        return hashlib.sha1(f"redis-raft-proxy-cluster:{self.name}".encode()).hexdigest()


def _entry(n: ProxyNode) -> list:
    return [n.host.encode(), n.port, n.id.encode(), []]


def cluster_slots(me: ProxyNode, others: list[ProxyNode]) -> list:
    return [[0, SLOTS - 1, _entry(me), *(_entry(o) for o in others)]]


def _shard_node(n: ProxyNode, role: str) -> list:
    return [b"id", n.id.encode(), b"port", n.port, b"ip", n.host.encode(), b"endpoint", n.host.encode(),
            b"role", role.encode(), b"replication-offset", 0, b"health", b"online"]


def cluster_shards(me: ProxyNode, others: list[ProxyNode]) -> list:
    nodes = [_shard_node(me, "master"), *(_shard_node(o, "replica") for o in others)]
    return [[b"slots", [0, SLOTS - 1], b"nodes", nodes]]


def cluster_nodes(me: ProxyNode, others: list[ProxyNode]) -> bytes:
    """CLUSTER NODES' text: `id ip:port@cport flags master ping pong epoch link slots`."""
    lines = [f"{me.id} {me.host}:{me.port}@0 myself,master - 0 0 1 connected 0-{SLOTS - 1}"]
    lines += [f"{o.id} {o.host}:{o.port}@0 slave {me.id} 0 0 1 connected" for o in others]
    return ("\n".join(lines) + "\n").encode()


def cluster_info(known: int, state_ok: bool) -> bytes:
    fields = [("cluster_state", "ok" if state_ok else "fail"), ("cluster_slots_assigned", SLOTS),
              ("cluster_slots_ok", SLOTS if state_ok else 0), ("cluster_slots_pfail", 0),
              ("cluster_slots_fail", 0 if state_ok else SLOTS), ("cluster_known_nodes", known),
              ("cluster_size", 1), ("cluster_current_epoch", 1), ("cluster_my_epoch", 1)]
    return "".join(f"{k}:{v}\r\n" for k, v in fields).encode()
