"""Cluster mode: the shards a cluster-enabled Redis/Valkey cluster has now (`CLUSTER
SHARDS` from every seed that answers, once they agree: `agreed_shards`) and the node
settings the proxies rely on (`health.cluster.node_config`). I/O, and that one check of
the answers; what to do with the shards is the controller's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from redis.exceptions import RedisError

from health.cluster.node_config import REQUIRED, node_config_problems
from proxy.routing.slotmap import Shard, shards_from_cluster_shards
from proxy.routing.topology import Topology

log = logging.getLogger("health.cluster")

Client = Callable[[str], object]     # node address -> a redis.asyncio client


class DiscoveryError(RuntimeError):
    pass


async def cluster_shards(seeds: Iterable[str], client: Client, timeout: float) -> list[Shard]:
    """The cluster's shards that serve slots, once every seed that answers sees the same
    ones (masters, slots and replicas); DiscoveryError when none answers or they do not
    agree yet."""
    async def ask(addr: str) -> list[Shard] | str:
        try:
            async with asyncio.timeout(timeout):
                reply = await client(addr).execute_command("CLUSTER", "SHARDS")
            return [s for s in shards_from_cluster_shards(reply) if s.ranges and s.master]
        except (TimeoutError, RedisError, OSError, ValueError, TypeError) as exc:
            return f"{addr}: {str(exc) or type(exc).__name__}"

    seeds = list(seeds)
    answers = dict(zip(seeds, await asyncio.gather(*(ask(a) for a in seeds))))
    views = {a: v for a, v in answers.items() if not isinstance(v, str)}
    if not views:
        raise DiscoveryError("no cluster node answered CLUSTER SHARDS (" + "; ".join(answers.values()) + ")")
    shards = agreed_shards(views)
    if isinstance(shards, str):
        raise DiscoveryError(shards)
    return shards


def agreed_shards(views: dict[str, list[Shard]]) -> list[Shard] | str:
    """The shards if every view (seed address -> what it says) has the same masters serving
    the same slots with the same replicas, else why not. A forming cluster's nodes disagree
    for a while: before CLUSTER MEET each knows only itself, and after its handshake a node
    may know a master for a second or two before it learns that master's slots; a topology
    committed from one of those views would leave shards or slots out for good."""
    def composition(shards: list[Shard]) -> list[tuple]:
        return sorted((s.master, tuple(sorted(s.ranges)), tuple(sorted(s.replicas))) for s in shards)

    seen = {a: composition(v) for a, v in views.items()}
    first = next(iter(views))
    differ = [a for a, c in seen.items() if c != seen[first]]
    if not differ:
        return views[first]

    def said(a: str) -> str:
        slots = sum(e - s + 1 for _, ranges, _ in seen[a] for s, e in ranges)
        return f"{a} {len(seen[a])} masters, {slots} slots, {sum(len(r) for *_, r in seen[a])} replicas"

    return ("the seeds do not agree on the cluster's masters, slots and replicas yet (is it still forming?): "
            + "; ".join(said(a) for a in [first, *differ]))


def initial_topologies(shards: list[Shard]) -> dict[str, Topology]:
    """Epoch 1 of every shard: the roles and slots the cluster has now."""
    return {s.id: Topology(1, s.master, s.replicas, slots=s.ranges) for s in shards}


async def config_problems(nodes: Iterable[str], client: Client, timeout: float) -> list[str]:
    """One line per node setting that is not what the proxies need, in the nodes' order
    (unreachable nodes are the probes' business, not a configuration problem). The nodes
    are asked together, as discovery asks its seeds: an unreachable node delays the report
    by its timeouts once, not once for every node after it."""
    async def ask(addr: str) -> list[str]:
        got = {}
        try:
            for key in ("cluster-enabled", *REQUIRED):
                async with asyncio.timeout(timeout):
                    got.update(_pairs(await client(addr).execute_command("CONFIG", "GET", key)))
        except (TimeoutError, RedisError, OSError) as exc:
            log.debug("CONFIG GET on %s failed: %r", addr, exc)
            return []
        return node_config_problems(addr, got)

    return [p for problems in await asyncio.gather(*(ask(a) for a in nodes)) for p in problems]


def _pairs(reply) -> dict:
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[0::2], reply[1::2]))
