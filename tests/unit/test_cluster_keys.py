"""Hash slots, key positions, slot maps and split plans (proxy/routing, proxy/protocol):
pure checks against the values of the Redis Cluster specification; tests/integration/test_cluster_keyspecs.py compares
key positions with a real server's COMMAND GETKEYS."""

from __future__ import annotations

import pytest

from proxy.protocol.keyspecs import Keys, KeySpec, key_positions, parse_key_specs
from proxy.routing.keyslot import crc16, crc16_py, hash_tag, key_slot
from proxy.routing.slotmap import (
    Shard,
    SlotMap,
    SlotMapError,
    shards_from_cluster_shards,
)
from proxy.routing.split import CROSSSLOT, merge_replies, plan


def test_crc16_reference_value():
    assert crc16(b"123456789") == 0x31C3       # the specification's check value (XMODEM)


def test_the_c_crc16_is_the_table_one():
    import random

    rng = random.Random(3)
    for _ in range(500):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        assert crc16(data) == crc16_py(data)


@pytest.mark.parametrize("key,slot", [(b"foo", 12182), (b"bar", 5061), (b"", 0), (b"a", 15495)])
def test_key_slots_match_redis(key, slot):
    assert key_slot(key) == slot


@pytest.mark.parametrize("key,tag", [
    (b"{user1000}.following", b"user1000"), (b"foo{}{bar}", b"foo{}{bar}"), (b"foo{{bar}}zap", b"{bar"),
    (b"foo{bar}{zap}", b"bar"), (b"{}", b"{}"), (b"no-tag", b"no-tag"), (b"{a", b"{a")])
def test_hash_tags_as_the_specification_defines_them(key, tag):
    assert hash_tag(key) == tag


def test_same_tag_same_slot():
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers") == key_slot(b"user1000")


MSET = parse_key_specs([[b"flags", [b"OW", b"update"], b"begin_search", [b"type", b"index", b"spec", [b"index", 1]],
                         b"find_keys", [b"type", b"range", b"spec", [b"lastkey", -1, b"keystep", 2, b"limit", 0]]]])
XREAD = parse_key_specs([[b"flags", [b"RO"], b"begin_search",
                          [b"type", b"keyword", b"spec", [b"keyword", b"STREAMS", b"startfrom", 1]],
                          b"find_keys", [b"type", b"range", b"spec", [b"lastkey", -1, b"keystep", 1, b"limit", 2]]]])
ZUNIONSTORE = (KeySpec("index", index=1), KeySpec("index", index=2, find="keynum", keynumidx=0, firstkey=1))


def argv(*a: str) -> list[bytes]:
    return [x.encode() for x in a]


def test_range_with_step():
    assert key_positions(MSET, argv("MSET", "a", "1", "b", "2")).positions == (1, 3)
    assert key_positions(MSET, argv("MSET", "a")).positions == (1,)   # Redis' arity check refuses it


def test_keyword_and_limit():
    k = key_positions(XREAD, argv("XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"))
    assert k.positions == (4, 5) and k.complete
    assert key_positions(XREAD, argv("XREAD", "COUNT", "2")).positions == ()     # no STREAMS: no keys


def test_keynum():
    k = key_positions(ZUNIONSTORE, argv("ZUNIONSTORE", "dst", "2", "a", "b", "WEIGHTS", "1", "2"))
    assert k.positions == (1, 3, 4)
    assert key_positions(ZUNIONSTORE, argv("ZUNIONSTORE", "dst", "x", "a")) is None
    assert key_positions(ZUNIONSTORE, argv("ZUNIONSTORE", "dst", "5", "a")) is None


def test_unknown_spec_makes_it_incomplete():
    specs = (KeySpec("index", index=1), KeySpec("unknown", find="unknown"))
    k = key_positions(specs, argv("SORT", "k", "STORE", "d"))
    assert k.positions == (1,) and not k.complete


# ---------------------------------------------------------------------------
# slot map
# ---------------------------------------------------------------------------


def three_shards() -> SlotMap:
    return SlotMap([Shard("a", ((0, 5460),), "h:1"), Shard("b", ((5461, 10922),), "h:2"),
                    Shard("c", ((10923, 16383),), "h:3")])


def test_owner_and_grouping():
    m = three_shards()
    assert m.owner(0).id == "a" and m.owner(5461).id == "b" and m.owner(16383).id == "c"
    assert m.uncovered() == []
    slots = [key_slot(k) for k in (b"foo", b"bar", b"{foo}x", b"a")]     # 12182 5061 12182 15495
    assert m.group_by_shard(slots) == {"c": [0, 2, 3], "a": [1]}


def test_gaps_and_overlaps():
    m = SlotMap([Shard("a", ((0, 99), (200, 16383)), "h:1")])
    assert m.uncovered() == [(100, 199)] and m.owner(150) is None
    with pytest.raises(SlotMapError, match="both a and b"):
        SlotMap([Shard("a", ((0, 10),), "h:1"), Shard("b", ((10, 20),), "h:2")])
    with pytest.raises(SlotMapError, match="bad slot range"):
        SlotMap([Shard("a", ((0, 16384),), "h:1")])


def test_cluster_shards_reply():
    reply = [[b"slots", [0, 5460, 6000, 6001], b"nodes", [
        [b"id", b"m1", b"port", 7000, b"ip", b"127.0.0.1", b"endpoint", b"127.0.0.1", b"role", b"master",
         b"replication-offset", 10, b"health", b"online"],
        [b"id", b"r1", b"port", 7003, b"ip", b"127.0.0.1", b"endpoint", b"127.0.0.1", b"role", b"replica",
         b"replication-offset", 10, b"health", b"online"]]]]
    (s,) = shards_from_cluster_shards(reply)
    assert s == Shard("m1", ((0, 5460), (6000, 6001)), "127.0.0.1:7000", ("127.0.0.1:7003",))


# ---------------------------------------------------------------------------
# splitting multi-key commands
# ---------------------------------------------------------------------------


def keys_at(*positions: int) -> Keys:
    return Keys(tuple(positions), True)


def test_one_slot_goes_whole_to_its_shard():
    p = plan(argv("MGET", "{u}a", "{u}b"), keys_at(1, 2), three_shards())
    assert p.kind == "one" and p.slot == key_slot(b"u") and p.shard == three_shards().owner(p.slot).id


def test_mget_across_slots_is_split_per_slot_and_merged_in_order():
    m = three_shards()
    p = plan(argv("MGET", "foo", "bar", "{foo}x", "a"), keys_at(1, 2, 3, 4), m)
    assert p.kind == "split" and p.merge == "values"
    by_slot = {part.slot: part for part in p.parts}
    assert by_slot[12182].argv == (b"MGET", b"foo", b"{foo}x") and by_slot[12182].order == (0, 2)
    assert by_slot[5061].argv == (b"MGET", b"bar") and by_slot[5061].shard == "a"
    replies = [[b"v-" + k for k in part.argv[1:]] for part in p.parts]
    assert merge_replies(p, replies) == [b"v-foo", b"v-bar", b"v-{foo}x", b"v-a"]


def test_mset_keeps_values_with_their_keys_and_del_sums():
    p = plan(argv("MSET", "foo", "1", "bar", "2"), keys_at(1, 3), three_shards())
    assert sorted(part.argv for part in p.parts) == [(b"MSET", b"bar", b"2"), (b"MSET", b"foo", b"1")]
    assert merge_replies(p, [b"OK", b"OK"]) == b"OK"
    d = plan(argv("DEL", "foo", "bar", "a"), keys_at(1, 2, 3), three_shards())
    assert merge_replies(d, [2, 1]) == 3
    err = ValueError("ERR something")
    assert merge_replies(d, [1, err]) is err


def test_commands_that_cannot_be_split_get_crossslot():
    for cmd in (argv("RENAME", "foo", "bar"), argv("SUNIONSTORE", "foo", "bar"),
                argv("MSETNX", "foo", "1", "bar", "2")):
        p = plan(cmd, keys_at(*range(1, len(cmd), 2 if cmd[0] == b"MSETNX" else 1)), three_shards())
        assert p.kind == "error" and p.error == CROSSSLOT, cmd


def test_keyless_and_unowned():
    assert plan(argv("PING"), keys_at(), three_shards()).kind == "keyless"
    gap = SlotMap([Shard("a", ((0, 100),), "h:1")])
    p = plan(argv("GET", "foo"), keys_at(1), gap)
    assert p.kind == "one" and p.shard is None
