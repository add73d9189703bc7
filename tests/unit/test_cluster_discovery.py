"""Cluster discovery commits the shards only once every seed that answers sees the same masters
serving the same slots: a forming cluster's nodes each know part of it for a while."""

from __future__ import annotations

import asyncio

import pytest

from health.cluster.discovery import (
    DiscoveryError,
    agreed_shards,
    cluster_shards,
    config_problems,
)
from health.cluster.node_config import REQUIRED
from proxy.routing.slotmap import Shard

A = Shard("a", ((0, 8191),), "10.0.0.1:6379", ("10.0.0.3:6379",))
B = Shard("b", ((8192, 16383),), "10.0.0.2:6379", ("10.0.0.4:6379",))


def test_seeds_that_agree_give_the_shards_in_any_order():
    assert agreed_shards({"s1": [A, B], "s2": [B, A]}) == [A, B]


@pytest.mark.parametrize("other, why", [
    ([A], "1 masters, 8192 slots, 1 replicas"),                           # knows B but not yet its slots
    ([B], "1 masters, 8192 slots, 1 replicas"),                           # before CLUSTER MEET: only itself
    ([A, Shard("b", ((8192, 16000),), "10.0.0.2:6379", ("10.0.0.4:6379",))], "2 masters, 16001 slots, 2 replicas"),
    ([A, Shard("b", ((8192, 16383),), "10.0.0.9:6379", ("10.0.0.4:6379",))], "2 masters, 16384 slots, 2 replicas"),
    ([A, Shard("b", ((8192, 16383),), "10.0.0.2:6379")], "2 masters, 16384 slots, 1 replicas"),   # not yet a replica
])
def test_seeds_that_disagree_say_what_each_sees(other, why):
    reason = agreed_shards({"s1": [A, B], "s2": other})
    assert isinstance(reason, str) and "do not agree" in reason
    assert "s1 2 masters, 16384 slots, 2 replicas" in reason and f"s2 {why}" in reason


class FakeNode:
    def __init__(self, reply):
        self.reply = reply

    async def execute_command(self, *args):
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def shards_reply(*shards: Shard) -> list:
    out = []
    for s in shards:
        nodes = [{"ip": s.master.split(":")[0], "port": int(s.master.split(":")[1]), "role": "master", "id": s.id}]
        nodes += [{"ip": r.split(":")[0], "port": int(r.split(":")[1]), "role": "replica", "id": r} for r in s.replicas]
        out.append({"slots": [x for rng in s.ranges for x in rng], "nodes": nodes})
    return out


def test_discovery_asks_every_seed_and_waits_for_them_to_agree():
    replies = {"s1": shards_reply(A, B), "s2": shards_reply(A), "down": OSError("connection refused")}

    def discover() -> list[Shard]:
        return asyncio.run(cluster_shards(list(replies), lambda addr: FakeNode(replies[addr]), 1.0))

    with pytest.raises(DiscoveryError, match="do not agree"):
        discover()
    replies["s2"] = shards_reply(B, A)
    assert [(s.master, s.ranges) for s in discover()] == [(A.master, A.ranges), (B.master, B.ranges)]
    replies["s1"] = replies["s2"] = OSError("connection refused")
    with pytest.raises(DiscoveryError, match="no cluster node answered"):
        discover()


class ConfigNode:
    """CONFIG GET answers from `config`; "never" never answers. `waiting` (shared by the
    nodes of a test) counts the nodes with a question outstanding, and its peak."""

    def __init__(self, config: dict | str, waiting: dict[str, int]):
        self.config, self.waiting = config, waiting

    async def execute_command(self, *args):
        assert args[:2] == ("CONFIG", "GET")
        w = self.waiting
        w["now"] += 1
        w["peak"] = max(w["peak"], w["now"])
        try:
            if self.config == "never":
                await asyncio.sleep(3600)
            await asyncio.sleep(0)
            return [args[2], self.config[args[2]]] if args[2] in self.config else []
        finally:
            w["now"] -= 1


def test_config_problems_asks_the_nodes_together_and_reports_in_their_order():
    good = {"cluster-enabled": "yes", **{k: want for k, (want, _) in REQUIRED.items()}}
    waiting = {"now": 0, "peak": 0}
    configs = {"n1": {**good, "cluster-require-full-coverage": "yes"}, "dead1": "never", "dead2": "never",
               "n2": {"cluster-enabled": "no"}, "n3": good}
    nodes = {addr: ConfigNode(config, waiting) for addr, config in configs.items()}
    problems = asyncio.run(config_problems(list(nodes), lambda addr: nodes[addr], 0.05))
    assert [p.split(":")[0] for p in problems] == ["n1", "n2"], problems
    assert "cluster-require-full-coverage" in problems[0] and "not a cluster node" in problems[1]
    # every node had its question out at once: the silent ones cost one timeout together
    assert waiting["peak"] == len(nodes)
