"""Hash slots and key positions (proxy/cluster): pure checks against the values of the
Redis Cluster specification; tests/integration/test_cluster_keyspecs.py compares
key positions with a real server's COMMAND GETKEYS."""

from __future__ import annotations

import pytest

from proxy.routing.keyslot import crc16, hash_tag, key_slot
from proxy.protocol.keyspecs import KeySpec, key_positions, parse_key_specs


def test_crc16_reference_value():
    assert crc16(b"123456789") == 0x31C3       # the specification's check value (XMODEM)


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

from proxy.routing.slotmap import Shard, SlotMap, SlotMapError, shards_from_cluster_shards  # noqa: E402


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
