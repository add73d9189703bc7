"""Cluster mode's pure parts: the committed shards as a router, the replicated state with
shards, and how the replies of a command served by several nodes are combined."""

from __future__ import annotations

import hiredis
import pytest

from health.cluster.discovery import initial_topologies
from health.probes.probe import Health
from health.state_machine import TopologyStateMachine
from proxy.protocol.keyspecs import Keys
from proxy.routing.cluster_router import ClusterRouter
from proxy.routing.keyslot import key_slot, ranges_text
from proxy.routing.slotmap import Shard
from proxy.routing.split import plan
from proxy.routing.topology import Topology
from proxy.session.cluster_fanout import (
    SHARD_BITS,
    combine_concat,
    combine_first,
    combine_min,
    combine_plan,
    combine_scan,
    combine_sum,
    scan_cursor,
)

A = Topology(1, "h:1", ("h:4",), slots=((0, 5460),))
B = Topology(1, "h:2", ("h:5",), slots=((5461, 10922),))
C = Topology(1, "h:3", ("h:6",), slots=((10923, 16383),))


def router() -> ClusterRouter:
    r = ClusterRouter(Health([], 500), "replicas")
    for shard, t in (("a", A), ("b", B), ("c", C)):
        r.set_shard(shard, t)
    return r


def test_every_slot_has_the_committed_owner_and_nodes_their_shard():
    r = router()
    assert r.slots.uncovered() == []
    assert r.slots.owner(0).id == "a" and r.slots.owner(5461).id == "b" and r.slots.owner(16383).id == "c"
    assert r.shard_of("h:5") == "b" and r.topology_of("h:6") is C and r.shard_of("h:9") is None
    assert r.masters == ["h:1", "h:2", "h:3"]
    assert set(r.health.nodes) == {f"h:{i}" for i in range(1, 7)}


def test_a_failover_changes_one_shard_and_keeps_its_slots():
    r = router()
    r.set_shard("b", B.with_master("h:5"))
    assert r.slots.owner(6000).master == "h:5" and r.topology_of("h:2").master == "h:5"
    assert r.topology_of("h:2").epoch == 2 and r.topology_of("h:1") is A


def test_moved_reroutes_one_slot_to_a_committed_master_only():
    r = router()
    assert r.moved(100, "h:2") is True
    assert r.slots.owner(100).id == "b" and r.slots.owner(101).id == "a"
    assert r.moved(101, "h:9") is False and r.slots.owner(101).id == "a"
    r.set_shard("a", A.paused())        # a committed change restores the committed map
    assert r.slots.owner(100).id == "a"


def test_two_committed_owners_of_a_slot_keep_the_last_good_map():
    r = router()
    r.set_shard("d", Topology(1, "h:7", (), slots=((5000, 5001),)))
    assert r.slots.owner(5000).id == "a"


def test_ranges_text():
    assert ranges_text(((0, 5460), (7, 7))) == "0-5460,7"
    assert ranges_text(()) == "none"


def test_shards_commit_together_and_survive_a_snapshot():
    seen = []
    sm = TopologyStateMachine(lambda *a: seen.append(("single", a)), lambda s, new, old, why: seen.append((s, new)))
    shards = initial_topologies([Shard("a", ((0, 8191),), "h:1", ("h:3",)), Shard("b", ((8192, 16383),), "h:2")])
    sm.apply(TopologyStateMachine.shards_entry(shards, "initial"))
    assert [s for s, _ in seen] == ["a", "b"] and sm.topology is None
    assert sm.cluster_shards["a"].slots == ((0, 8191),) and sm.cluster_shards["b"].replicas == ()
    sm.apply(TopologyStateMachine.entry(sm.cluster_shards["a"].with_master("h:3"), "failover", "a"))
    restored = TopologyStateMachine(lambda *a: None)
    restored.restore(sm.snapshot())
    assert restored.cluster_shards["a"].master == "h:3" and restored.cluster_shards["a"].slots == ((0, 8191),)
    assert restored.cluster_shards["a"].epoch == 2


def test_an_older_epoch_never_replaces_a_shard():
    sm = TopologyStateMachine(lambda *a: None)
    sm.apply(TopologyStateMachine.entry(Topology(3, "h:2", ("h:1",), slots=((0, 1),)), "", "a"))
    sm.apply(TopologyStateMachine.shards_entry({"a": Topology(1, "h:1", ("h:2",), slots=((0, 1),))}))
    assert sm.cluster_shards["a"].master == "h:2"


def _values(raw: bytes):
    r = hiredis.Reader()
    r.feed(raw)
    return r.gets()


def test_mget_values_come_back_in_key_order():
    r = router()
    keys = [b"k%d" % i for i in range(40)]
    argv = [b"mget", *keys]
    p = plan(argv, Keys(tuple(range(1, 41)), True), r.slots)
    assert p.kind == "split" and len({part.shard for part in p.parts}) == 3
    raws = [b"*%d\r\n" % len(part.order) + b"".join(b"$%d\r\n%s\r\n" % (len(keys[n]) + 1, keys[n] + b"!")
                                                   for n in part.order) for part in p.parts]
    assert _values(combine_plan(p, False)(raws)) == [k + b"!" for k in keys]


def test_combined_replies():
    assert combine_sum([b":2\r\n", b":3\r\n"]) == b":5\r\n"
    assert combine_min([b":2\r\n", b":1\r\n"]) == b":1\r\n"
    assert combine_first([b"+OK\r\n", b"-ERR x\r\n"]) == b"-ERR x\r\n"
    assert _values(combine_concat([b"*1\r\n$1\r\na\r\n", b"*0\r\n", b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"])) \
        == [b"a", b"b", b"c"]


@pytest.mark.parametrize("index,node_cursor,expected", [(0, 17, (17 << SHARD_BITS) | 0), (0, 0, 1), (2, 0, 0)])
def test_scan_cursor_walks_shard_after_shard(index, node_cursor, expected):
    raw = b"*2\r\n$%d\r\n%d\r\n*1\r\n$1\r\nk\r\n" % (len(str(node_cursor)), node_cursor)
    cursor, keys = _values(combine_scan(index, 3)([raw]))
    assert int(cursor) == expected and keys == [b"k"]
    assert scan_cursor(int(cursor))[0] == (index if node_cursor else (index + 1) % 3)


def test_hash_tags_pick_the_slot():
    assert key_slot(b"{user1}:a") == key_slot(b"{user1}:b") == key_slot(b"user1")
