"""Hash slots and key positions (proxy/cluster): pure checks against the values of the
Redis Cluster specification; tests/integration/test_cluster_keyspecs.py compares
key positions with a real server's COMMAND GETKEYS."""

from __future__ import annotations

import pytest

from proxy.cluster.keyslot import crc16, hash_tag, key_slot
from proxy.cluster.keyspecs import KeySpec, key_positions, parse_key_specs


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
