"""Cluster mode: the shards a cluster-enabled Redis/Valkey cluster has now (`CLUSTER
SHARDS` from the first seed that answers) and the node settings the proxies rely on
(`health.cluster.node_config`). I/O only; what to do with the answers is the controller's."""

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
    """The cluster's shards that serve slots, as the first seed that answers sees them."""
    errors = []
    for addr in seeds:
        try:
            async with asyncio.timeout(timeout):
                reply = await client(addr).execute_command("CLUSTER", "SHARDS")
            return [s for s in shards_from_cluster_shards(reply) if s.ranges and s.master]
        except (TimeoutError, RedisError, OSError, ValueError, TypeError) as exc:
            errors.append(f"{addr}: {str(exc) or type(exc).__name__}")
    raise DiscoveryError("no cluster node answered CLUSTER SHARDS (" + "; ".join(errors) + ")")


def initial_topologies(shards: list[Shard]) -> dict[str, Topology]:
    """Epoch 1 of every shard: the roles and slots the cluster has now."""
    return {s.id: Topology(1, s.master, s.replicas, slots=s.ranges) for s in shards}


async def config_problems(nodes: Iterable[str], client: Client, timeout: float) -> list[str]:
    """One line per node setting that is not what the proxies need (unreachable nodes are
    the probes' business, not a configuration problem)."""
    out: list[str] = []
    for addr in nodes:
        try:
            got = {}
            for key in ("cluster-enabled", *REQUIRED):
                async with asyncio.timeout(timeout):
                    got.update(_pairs(await client(addr).execute_command("CONFIG", "GET", key)))
        except (TimeoutError, RedisError, OSError) as exc:
            log.debug("CONFIG GET on %s failed: %r", addr, exc)
            continue
        out.extend(node_config_problems(addr, got))
    return out


def _pairs(reply) -> dict:
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[0::2], reply[1::2]))
