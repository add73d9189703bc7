"""CLUSTER * answers of the proxies (proxy/routing/cluster_view.py), read back with
redis-py's own parsers for them."""

from __future__ import annotations

from redis._parsers.helpers import parse_cluster_info, parse_cluster_nodes

from proxy.routing.cluster_view import (
    ProxyNode,
    cluster_info,
    cluster_nodes,
    cluster_shards,
    cluster_slots,
)

ME, P2, P3 = ProxyNode("proxy-1", "10.0.0.1", 6380), ProxyNode("proxy-2", "10.0.0.2", 6380), \
    ProxyNode("proxy-3", "10.0.0.3", 6380)


def test_slots_name_this_proxy_master_of_every_slot():
    (entry,) = cluster_slots(ME, [P2, P3])
    assert entry[0] == 0 and entry[1] == 16383
    assert entry[2][:3] == [b"10.0.0.1", 6380, ME.id.encode()]
    assert [e[0] for e in entry[3:]] == [b"10.0.0.2", b"10.0.0.3"]
    assert len(ME.id) == 40 and ME.id != P2.id


def test_nodes_parse_with_redis_py():
    nodes = parse_cluster_nodes(cluster_nodes(ME, [P2, P3]).decode())
    me = nodes["10.0.0.1:6380"]
    assert "myself" in me["flags"] and "master" in me["flags"] and me["slots"] == [["0", "16383"]]
    assert nodes["10.0.0.2:6380"]["master_id"] == ME.id


def test_info_and_shards():
    info = parse_cluster_info(cluster_info(3, True))
    assert info["cluster_state"] == "ok" and info["cluster_known_nodes"] == "3"
    assert parse_cluster_info(cluster_info(3, False))["cluster_state"] == "fail"
    (shard,) = cluster_shards(ME, [P2])
    assert shard[1] == [0, 16383] and [n[9] for n in shard[3]] == [b"master", b"replica"]
