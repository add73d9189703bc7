"""The data path against real processes: redis-py through the proxy to a real replica set.

One replica set and a handful of proxies are shared by the whole module
(started in parallel).  Every test uses its own key prefix, so tests do not
see each other's data.  Unless stated, the proxy runs read_policy=replicas
with the default read_your_writes=true, so a client must always see its own
writes even though its reads may go to replicas.

The data-family tests run twice: RESP2 (the client stays on the proxy's
shared, pipelined upstream connections) and RESP3 (`HELLO 3`: the client
moves to dedicated upstream connections).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid

import hiredis
import pytest
import redis

from .harness import ProxyProcess, RawClient, ReplicaSet, commandstats_calls, wait_until

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------------
# module fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxies(replica_set: ReplicaSet, module_proxy_factory) -> dict[str, ProxyProcess]:
    """Several proxies over the same replica set, started concurrently."""
    specs = {
        "replicas": dict(read_policy="replicas"),
        "replicas_no_ryw": dict(read_policy="replicas", read_your_writes=False),
        "master": dict(read_policy="master"),
        "any": dict(read_policy="any", read_your_writes=False),
        # only for test_read_never_sees_a_later_write_of_the_same_pipeline: its
        # upstream connections must still be cold when that test starts
        "cold": dict(read_policy="replicas"),
    }
    # Failure detection is not under test here: a generous down_after_ms keeps the
    # heavy tests (10 MB values, 100k pipelines) on a loaded machine from looking
    # like a dead master to the proxies' failover logic.
    out = {name: module_proxy_factory(replica_set, start=False, node=f"dp-{name.replace('_', '-')}",
                                      down_after_ms=10_000, **kw)
           for name, kw in specs.items()}
    for p in out.values():
        p.spawn()
    for p in out.values():
        p.wait_ready()
    return out


@pytest.fixture(scope="module")
def proxy(proxies) -> ProxyProcess:
    return proxies["replicas"]


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def r(request, proxy) -> redis.Redis:
    client = proxy.client(protocol=request.param)
    yield client
    client.close()


@pytest.fixture
def k(request) -> str:
    """A key prefix unique to this test (and run)."""
    name = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in request.node.name)
    return f"{name}:{uuid.uuid4().hex[:8]}:"     # no glob characters: tests use KEYS/SCAN MATCH


def _fresh_reader_sees(proxy: ProxyProcess, key: str, expected: bytes, timeout: float = 10.0) -> None:
    """A new client (no own writes, so it may read a replica) eventually sees `expected`."""
    c = proxy.client()
    try:
        wait_until(lambda: c.get(key) == expected, timeout,
                   message=f"a fresh client to read {key!r} through the proxy")
    finally:
        c.close()


def _blocked_clients(server) -> int:
    return int(server.info("clients")["blocked_clients"])


# ---------------------------------------------------------------------------
# data families
# ---------------------------------------------------------------------------

def test_strings(r, k):
    assert r.set(k + "s", "hello") is True
    assert r.get(k + "s") == b"hello"
    assert r.append(k + "s", " world") == 11
    assert r.strlen(k + "s") == 11
    assert r.getrange(k + "s", 0, 4) == b"hello"
    assert r.setrange(k + "s", 6, "WORLD") == 11
    assert r.get(k + "s") == b"hello WORLD"
    assert r.get(k + "missing") is None

    assert r.incr(k + "n") == 1
    assert r.incrby(k + "n", 10) == 11
    assert r.decr(k + "n") == 10
    assert r.decrby(k + "n", 5) == 5
    assert r.incrbyfloat(k + "n", 1.5) == pytest.approx(6.5)
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr(k + "s")

    assert r.mset({k + "a": "1", k + "b": "2"}) is True
    assert r.mget([k + "a", k + "b", k + "nope"]) == [b"1", b"2", None]
    assert r.msetnx({k + "a": "x", k + "c": "y"}) is False
    assert r.setnx(k + "a", "x") is False
    assert r.set(k + "a", "3", get=True) == b"1"
    assert r.set(k + "c", "v", nx=True) is True
    assert r.set(k + "c", "w", nx=True) is None
    assert r.set(k + "nx2", "w", xx=True) is None
    assert r.getset(k + "c", "z") == b"v"
    assert r.getdel(k + "c") == b"z"
    assert r.get(k + "c") is None
    assert r.getex(k + "a", ex=100) == b"3"
    assert 0 < r.ttl(k + "a") <= 100
    assert r.execute_command("SETEX", k + "se", 100, "v") is True     # (redis-py deprecated its setex)
    assert r.psetex(k + "pse", 100000, "v") is True
    assert 0 < r.pttl(k + "pse") <= 100000

    r.mset({k + "l1": "ohmytext", k + "l2": "mynewtext"})
    assert r.lcs(k + "l1", k + "l2") == b"mytext"


def test_bitmaps_hyperloglog_geo(r, k):
    assert r.setbit(k + "bits", 7, 1) == 0
    assert r.setbit(k + "bits", 7, 1) == 1
    assert r.getbit(k + "bits", 7) == 1
    assert r.getbit(k + "bits", 6) == 0
    assert r.bitcount(k + "bits") == 1
    assert r.bitpos(k + "bits", 1) == 7
    r.set(k + "b2", b"\xff")
    assert r.bitop("AND", k + "band", k + "bits", k + "b2") == 1
    assert r.get(k + "band") == b"\x01"

    assert r.pfadd(k + "hll", "a", "b", "c") == 1
    assert r.pfadd(k + "hll", "a") == 0
    assert r.pfcount(k + "hll") == 3
    r.pfadd(k + "hll2", "d")
    assert r.pfmerge(k + "hll3", k + "hll", k + "hll2") is True
    assert r.pfcount(k + "hll3") == 4

    assert r.geoadd(k + "geo", (13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania")) == 2
    assert r.geodist(k + "geo", "Palermo", "Catania", unit="km") == pytest.approx(166.2742, abs=0.01)
    (lon, lat), = r.geopos(k + "geo", "Palermo")
    assert lon == pytest.approx(13.361389, abs=1e-4) and lat == pytest.approx(38.115556, abs=1e-4)
    found = r.geosearch(k + "geo", longitude=15, latitude=37, radius=200, unit="km", sort="ASC")
    assert found == [b"Catania", b"Palermo"]


def test_hashes(r, k):
    h = k + "h"
    assert r.hset(h, mapping={"a": "1", "b": "2"}) == 2
    assert r.hset(h, "c", "3") == 1
    assert r.hset(h, "c", "4") == 0
    assert r.hget(h, "c") == b"4"
    assert r.hget(h, "zz") is None
    assert r.hmget(h, ["a", "b", "zz"]) == [b"1", b"2", None]
    assert r.hgetall(h) == {b"a": b"1", b"b": b"2", b"c": b"4"}
    assert r.hincrby(h, "a", 5) == 6
    assert r.hincrbyfloat(h, "b", 0.5) == pytest.approx(2.5)
    assert r.hsetnx(h, "a", "x") == 0
    assert r.hexists(h, "a") is True
    assert r.hexists(h, "zz") is False
    assert r.hlen(h) == 3
    assert sorted(r.hkeys(h)) == [b"a", b"b", b"c"]
    assert sorted(r.hvals(h)) == sorted([b"6", b"2.5", b"4"])
    assert r.hstrlen(h, "b") == 3
    assert r.hdel(h, "a", "zz") == 1
    cursor, found = r.hscan(h, 0, count=100)
    assert cursor == 0 and found == {b"b": b"2.5", b"c": b"4"}
    assert r.hrandfield(h) in (b"b", b"c")
    assert r.delete(h) == 1
    assert r.hgetall(h) == {}


def test_lists(r, k):
    lst = k + "l"
    assert r.rpush(lst, "a", "b", "c") == 3
    assert r.lpush(lst, "z") == 4
    assert r.lrange(lst, 0, -1) == [b"z", b"a", b"b", b"c"]
    assert r.llen(lst) == 4
    assert r.lindex(lst, 1) == b"a"
    assert r.lset(lst, 1, "A") is True
    assert r.linsert(lst, "BEFORE", "b", "ab") == 5
    assert r.lpos(lst, "b") == 3
    assert r.lrem(lst, 1, "ab") == 1
    assert r.lpop(lst) == b"z"
    assert r.rpop(lst) == b"c"
    assert r.lrange(lst, 0, -1) == [b"A", b"b"]
    assert r.rpush(lst, "x", "y", "w") == 5
    assert r.ltrim(lst, 1, -1) is True
    assert r.lrange(lst, 0, -1) == [b"b", b"x", b"y", b"w"]
    assert r.lmove(lst, k + "l2", "LEFT", "RIGHT") == b"b"
    assert r.rpoplpush(lst, k + "l2") == b"w"
    assert r.lrange(k + "l2", 0, -1) == [b"w", b"b"]
    assert r.lpop(lst, 5) == [b"x", b"y"]
    assert r.lpop(lst) is None
    assert r.exists(lst) == 0


def test_blocking_list_commands(r, proxy, replica_set, k):
    lst = k + "bl"
    r.rpush(lst, "ready")
    assert r.blpop([lst], timeout=1) in ([lst.encode(), b"ready"], (lst.encode(), b"ready"))
    t0 = time.monotonic()
    assert r.blpop([lst], timeout=0.2) is None
    assert 0.15 <= time.monotonic() - t0 < 5

    # A BRPOP that blocks is woken by another client's push.
    result = {}

    def waiter():
        c = proxy.client(protocol=r.connection_pool.connection_kwargs["protocol"])
        try:
            result["v"] = c.brpop([lst], timeout=10)
        except Exception as exc:  # noqa: BLE001
            result["v"] = exc
        finally:
            c.close()

    before = _blocked_clients(replica_set.master)
    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: _blocked_clients(replica_set.master) > before, 10,
               message="BRPOP to block on the master")
    pusher = proxy.client()
    assert pusher.lpush(lst, "wake") == 1
    pusher.close()
    t.join(10)
    assert not t.is_alive()
    assert result["v"] in ([lst.encode(), b"wake"], (lst.encode(), b"wake"))
    # The client that blocked can go on normally.
    assert r.set(lst + ":after", "1") and r.get(lst + ":after") == b"1"


def test_sets(r, k):
    s1, s2 = k + "s1", k + "s2"
    assert r.sadd(s1, "a", "b", "c") == 3
    assert r.sadd(s1, "a") == 0
    assert r.smembers(s1) == {b"a", b"b", b"c"}
    assert r.sismember(s1, "a") in (True, 1)
    assert r.sismember(s1, "zz") in (False, 0)
    assert [bool(x) for x in r.smismember(s1, ["a", "zz"])] == [True, False]
    assert r.scard(s1) == 3
    r.sadd(s2, "b", "c", "d")
    assert r.sinter([s1, s2]) == {b"b", b"c"}
    assert r.sunion([s1, s2]) == {b"a", b"b", b"c", b"d"}
    assert r.sdiff([s1, s2]) == {b"a"}
    assert r.sinterstore(k + "s3", [s1, s2]) == 2
    assert r.smembers(k + "s3") == {b"b", b"c"}
    assert r.sintercard(2, [s1, s2]) == 2
    assert r.smove(s1, s2, "a") is True
    assert r.srem(s2, "a", "zz") == 1
    assert r.srandmember(s1) in (b"b", b"c")
    popped = r.spop(s1)
    assert popped in (b"b", b"c")
    assert r.scard(s1) == 1
    cursor, members = r.sscan(s2, 0, count=100)
    assert cursor == 0 and set(members) == {b"b", b"c", b"d"}


def _pairs(reply) -> list[tuple]:
    """(member, score) pairs: redis-py gives tuples on RESP2 and lists on RESP3."""
    if len(reply) == 2 and not isinstance(reply[0], (list, tuple)):
        return [tuple(reply)]                  # RESP3 ZPOPMIN/ZPOPMAX without COUNT: one flat pair
    return [tuple(x) for x in reply]


def test_sorted_sets(r, k):
    z = k + "z"
    assert r.zadd(z, {"a": 1, "b": 2, "c": 3}) == 3
    assert r.zadd(z, {"a": 1.5}) == 0
    assert r.zrange(z, 0, -1) == [b"a", b"b", b"c"]
    assert _pairs(r.zrange(z, 0, -1, withscores=True)) == [(b"a", 1.5), (b"b", 2.0), (b"c", 3.0)]
    assert r.zrevrange(z, 0, 0) == [b"c"]
    assert r.zrangebyscore(z, 2, 3) == [b"b", b"c"]
    assert r.zscore(z, "a") == 1.5
    assert r.zscore(z, "zz") is None
    assert r.zmscore(z, ["a", "zz"]) == [1.5, None]
    assert r.zincrby(z, 2, "a") == 3.5
    assert r.zrank(z, "a") == 2
    assert r.zrevrank(z, "a") == 0
    assert r.zcard(z) == 3
    assert r.zcount(z, 2, 3) == 2
    assert r.zrem(z, "b", "zz") == 1
    r.zadd(k + "z2", {"c": 10, "d": 4})
    assert r.zunionstore(k + "zu", [z, k + "z2"]) == 3
    assert _pairs(r.zrange(k + "zu", 0, -1, withscores=True)) == [(b"a", 3.5), (b"d", 4.0), (b"c", 13.0)]
    assert r.zinterstore(k + "zi", [z, k + "z2"]) == 1
    assert _pairs(r.zrange(k + "zi", 0, -1, withscores=True)) == [(b"c", 13.0)]
    r.zadd(k + "lex", {"a": 0, "b": 0, "c": 0})
    assert r.zrangebylex(k + "lex", "[b", "+") == [b"b", b"c"]
    assert _pairs(r.zpopmin(z)) == [(b"c", 3.0)]
    assert _pairs(r.zpopmax(z)) == [(b"a", 3.5)]
    assert r.zcard(z) == 0


def _entries(items) -> list[tuple[bytes, dict]]:
    return [(bytes(i), dict(f)) for i, f in items]


def _xread_norm(reply) -> dict[bytes, list[tuple[bytes, dict]]]:
    """XREAD/XREADGROUP reply as {stream: [(id, fields)]} for RESP2 (list) and RESP3 (map)."""
    if isinstance(reply, dict):
        out = {}
        for key, v in reply.items():
            # redis-py wraps the RESP3 entry list in one more list
            if len(v) == 1 and isinstance(v[0], list) and v[0] and isinstance(v[0][0], (list, tuple)):
                v = v[0]
            out[key] = _entries(v)
        return out
    return {key: _entries(v) for key, v in reply}


def test_streams(r, proxy, replica_set, k):
    s = k + "stream"
    sb = s.encode()
    assert r.xadd(s, {"f": "1"}, id="1-1") == b"1-1"
    assert r.xadd(s, {"f": "2"}, id="2-1") == b"2-1"
    auto = r.xadd(s, {"f": "3"})
    assert b"-" in auto and int(auto.split(b"-")[0]) > 2
    with pytest.raises(redis.ResponseError, match="equal or smaller"):
        r.xadd(s, {"f": "x"}, id="1-0")
    assert r.xlen(s) == 3
    assert _entries(r.xrange(s)) == [(b"1-1", {b"f": b"1"}), (b"2-1", {b"f": b"2"}), (auto, {b"f": b"3"})]
    assert _entries(r.xrange(s, min="2-0", max="2-9")) == [(b"2-1", {b"f": b"2"})]
    assert _entries(r.xrevrange(s, count=1)) == [(auto, {b"f": b"3"})]
    assert _xread_norm(r.xread({s: "1-1"}, count=1)) == {sb: [(b"2-1", {b"f": b"2"})]}

    assert r.xgroup_create(s, "g", id="0") is True
    got = _xread_norm(r.xreadgroup("g", "c1", {s: ">"}, count=2))
    assert got == {sb: [(b"1-1", {b"f": b"1"}), (b"2-1", {b"f": b"2"})]}
    assert r.xack(s, "g", "1-1") == 1
    pending = r.xpending(s, "g")
    assert pending["pending"] == 1 and pending["min"] == b"2-1"
    claimed = r.xclaim(s, "g", "c2", min_idle_time=0, message_ids=["2-1"])
    assert _entries(claimed) == [(b"2-1", {b"f": b"2"})]
    info = r.xinfo_stream(s)
    assert info["length"] == 3 and info["groups"] == 1

    # XREADGROUP ... BLOCK is woken by an XADD from another client.
    result = {}
    proto = r.connection_pool.connection_kwargs["protocol"]

    def waiter():
        c = proxy.client(protocol=proto)
        try:
            result["v"] = c.xreadgroup("g", "c3", {s: ">"}, count=10, block=10_000)
        except Exception as exc:  # noqa: BLE001
            result["v"] = exc
        finally:
            c.close()

    # Drain what is new for the group first, so the blocking read really blocks.
    assert _xread_norm(r.xreadgroup("g", "c1", {s: ">"}))[sb] == [(auto, {b"f": b"3"})]
    before = _blocked_clients(replica_set.master)
    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: _blocked_clients(replica_set.master) > before, 10,
               message="XREADGROUP BLOCK to block on the master")
    new_id = r.xadd(s, {"f": "4"})
    t.join(10)
    assert not t.is_alive()
    assert not isinstance(result["v"], Exception), result["v"]
    assert _xread_norm(result["v"]) == {sb: [(new_id, {b"f": b"4"})]}

    assert r.xdel(s, "1-1") == 1
    assert r.xtrim(s, maxlen=1, approximate=False) == 2
    assert _entries(r.xrange(s)) == [(new_id, {b"f": b"4"})]


def test_keys(r, k):
    r.mset({k + "a": "1", k + "b": "2"})
    r.rpush(k + "list", "x")
    assert r.exists(k + "a", k + "b", k + "nope") == 2
    assert r.type(k + "a") == b"string"
    assert r.type(k + "list") == b"list"
    assert r.type(k + "nope") == b"none"
    assert sorted(r.keys(k + "*")) == sorted([(k + "a").encode(), (k + "b").encode(), (k + "list").encode()])
    assert sorted(r.scan_iter(match=k + "*", count=1000)) == sorted(r.keys(k + "*"))
    assert r.randomkey() is not None
    assert r.rename(k + "a", k + "a2") is True
    assert r.get(k + "a2") == b"1" and r.exists(k + "a") == 0
    assert r.renamenx(k + "a2", k + "b") is False
    assert r.copy(k + "a2", k + "copy") is True
    assert r.get(k + "copy") == b"1"
    dumped = r.dump(k + "list")
    assert r.restore(k + "restored", 0, dumped) in (True, b"OK")
    assert r.lrange(k + "restored", 0, -1) == [b"x"]
    assert r.object("encoding", k + "a2") in (b"int", "int")
    assert r.touch(k + "a2", k + "nope") == 1
    assert r.dbsize() >= 5
    r.rpush(k + "nums", 3, 1, 2)
    assert r.sort(k + "nums") == [b"1", b"2", b"3"]
    assert r.unlink(k + "copy") == 1
    assert r.delete(k + "a2", k + "b", k + "nope") == 2
    assert r.exists(k + "a2", k + "b") == 0


def test_expiry(r, proxy, k):
    e = k + "e"
    r.set(e, "v")
    assert r.ttl(e) == -1
    assert r.ttl(k + "nope") == -2
    assert r.expire(e, 100) is True
    assert 0 < r.ttl(e) <= 100
    assert r.pexpire(e, 50_000) is True
    assert 40_000 < r.pttl(e) <= 50_000
    assert r.expire(e, 10, gt=True) is False       # Redis 7 options pass through
    assert r.persist(e) is True
    assert r.ttl(e) == -1
    at = int(time.time()) + 1000
    assert r.expireat(e, at) is True
    assert r.expiretime(e) == at
    assert r.pexpireat(e, at * 1000 + 500) is True
    assert r.pexpiretime(e) == at * 1000 + 500

    # A key with a short TTL disappears for the writer and for fresh readers (replicas).
    r.set(k + "short", "v", px=150)
    assert r.get(k + "short") == b"v" or r.get(k + "short") is None
    wait_until(lambda: r.get(k + "short") is None, 5, message="the key to expire for its writer")
    assert r.exists(k + "short") == 0
    fresh = proxy.client()
    try:
        wait_until(lambda: fresh.get(k + "short") is None, 5, message="the key to expire for a fresh reader")
    finally:
        fresh.close()


def test_transactions_and_scripts(r, proxy, k):
    pipe = r.pipeline(transaction=True)
    pipe.set(k + "t", "1").incr(k + "t").get(k + "t")
    assert pipe.execute() == [True, 2, b"2"]

    other = proxy.client()
    try:
        with r.pipeline(transaction=True) as p:
            p.watch(k + "t")
            assert p.get(k + "t") == b"2"
            other.set(k + "t", "changed")
            p.multi()
            p.set(k + "t", "mine")
            with pytest.raises(redis.WatchError):
                p.execute()
        assert r.get(k + "t") == b"changed"
    finally:
        other.close()

    assert r.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, k + "lua", 5) == 5
    sha = r.script_load("return redis.call('GET', KEYS[1])")
    assert r.evalsha(sha, 1, k + "lua") == b"5"


def test_pubsub(proxy, k):
    sub_client = proxy.client()
    pub = proxy.client()
    try:
        ps = sub_client.pubsub()
        ps.subscribe(k + "chan")
        first = ps.get_message(timeout=5)
        assert first and first["type"] == "subscribe"
        wait_until(lambda: pub.publish(k + "chan", "hello") >= 1, 5, message="a subscriber to be registered")
        msg = wait_until(lambda: ps.get_message(timeout=0.5), 5, message="the published message")
        assert msg["type"] == "message" and msg["data"] == b"hello"
        ps.close()
    finally:
        sub_client.close()
        pub.close()


# ---------------------------------------------------------------------------
# pipelines
# ---------------------------------------------------------------------------

def test_pipeline_mixed_reads_and_writes_in_order(r, k):
    """1000 interleaved SET/GET/INCR/LPUSH/LRANGE in one pipeline, each reply checked.

    Under read_policy=replicas the reads may go to replicas, but the client
    must still see its own writes from earlier in the same pipeline, and
    every reply must be the one for its own command.
    """
    rng = random.Random(20240601)
    strings: dict[str, bytes] = {}
    counters: dict[str, int] = {}
    lists: dict[str, list[bytes]] = {}
    expected = []
    pipe = r.pipeline(transaction=False)
    for i in range(1000):
        op = rng.choice(("set", "get", "incr", "lpush", "lrange"))
        n = rng.randrange(5)
        if op == "set":
            key, val = f"{k}s{n}", f"v{i}".encode()
            pipe.set(key, val)
            strings[key] = val
            expected.append(True)
        elif op == "get":
            key = f"{k}s{n}"
            pipe.get(key)
            expected.append(strings.get(key))
        elif op == "incr":
            key = f"{k}c{n}"
            pipe.incr(key)
            counters[key] = counters.get(key, 0) + 1
            expected.append(counters[key])
        elif op == "lpush":
            key = f"{k}l{n}"
            pipe.lpush(key, f"e{i}")
            lists.setdefault(key, []).insert(0, f"e{i}".encode())
            expected.append(len(lists[key]))
        else:
            key = f"{k}l{n}"
            pipe.lrange(key, 0, -1)
            expected.append(list(lists.get(key, [])))
    got = pipe.execute()
    assert len(got) == 1000
    bad = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got)) if e != g]
    assert not bad, f"{len(bad)} wrong replies, first (index, expected, got): {bad[:5]}"


def test_read_never_sees_a_later_write_of_the_same_pipeline(proxies, k):
    """Pipeline [GET x, SET x v0 .. SET x v199] from fresh clients: the GET runs first, so it sees nothing.

    Under read_policy=replicas (read_your_writes=true) the GET may go to a
    replica while the SETs go to the master; the proxy must still not let the
    replica answer the GET after the later SETs reached it through
    replication.  The proxy is fresh, so the first reads on each replica meet
    upstream connections that are still being opened; ten fresh clients try
    both replicas, cold and warm.
    """
    proxy = proxies["cold"]
    seen = []
    for j in range(10):
        with proxy.client() as c:
            pipe = c.pipeline(transaction=False)
            pipe.get(f"{k}x{j}")
            for i in range(200):
                pipe.set(f"{k}x{j}", f"v{i}")
            got = pipe.execute()
        assert got[1:] == [True] * 200
        seen.append(got[0])
    assert seen == [None] * 10, f"a GET saw the value of a SET issued after it: {seen}"


def test_pipeline_mixed_without_read_your_writes_replies_belong_to_their_commands(proxies, replica_set, k):
    """read_your_writes=false: reads really go to replicas mid-pipeline and may be stale,
    but every reply must still be a possible answer to its own command (a value
    that key had at some earlier point), never another command's reply."""
    p = proxies["replicas_no_ryw"]
    rng = random.Random(7)
    history: dict[str, list] = {}            # key -> every state it had so far (None first)
    checks = []
    _reset_stats(replica_set)
    with p.client() as c:
        pipe = c.pipeline(transaction=False)
        counters: dict[str, int] = {}
        for i in range(1000):
            op = rng.choice(("set", "get", "incr", "lpush", "lrange"))
            n = rng.randrange(5)
            if op == "set":
                key = f"{k}s{n}"
                pipe.set(key, f"v{i}")
                history.setdefault(key, [None]).append(f"v{i}".encode())
                checks.append(("exact", True))
            elif op == "get":
                key = f"{k}s{n}"
                pipe.get(key)
                checks.append(("one_of", list(history.get(key, [None]))))
            elif op == "incr":
                key = f"{k}c{n}"
                counters[key] = counters.get(key, 0) + 1
                pipe.incr(key)
                checks.append(("exact", counters[key]))
            elif op == "lpush":
                key = f"{k}l{n}"
                states = history.setdefault(key, [[]])
                states.append([f"e{i}".encode()] + states[-1])
                pipe.lpush(key, f"e{i}")
                checks.append(("exact", len(states[-1])))
            else:
                key = f"{k}l{n}"
                pipe.lrange(key, 0, -1)
                checks.append(("one_of", [list(x) for x in history.get(key, [[]])]))
        got = pipe.execute()
    bad = [(i, chk, g) for i, (chk, g) in enumerate(zip(checks, got))
           if (chk[0] == "exact" and g != chk[1]) or (chk[0] == "one_of" and g not in chk[1])]
    assert not bad, f"{len(bad)} replies that cannot belong to their command, first: {bad[:3]}"
    stats = {s.addr: commandstats_calls(s, "get") + commandstats_calls(s, "lrange") for s in replica_set.servers}
    assert sum(v for a, v in stats.items() if a != replica_set.master.addr) > 0, \
        f"no read of the pipeline reached a replica: {stats}"


def test_errors_pass_through(r, k):
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("NOSUCHCOMMAND", "x")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("GET")
    r.rpush(k + "list", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.get(k + "list")
    assert r.ping() is True


@pytest.mark.timeout(90)
def test_pipeline_100k_commands(proxy, k):
    """100,000 commands (INCR to the master, GETs that may go to replicas) in one pipeline.

    Sent over a raw socket with hiredis encoding/decoding (redis-py's own
    pipeline machinery would dominate the time); every reply is checked.
    """
    values = {f"{k}p{j}": f"value-{j}".encode() for j in range(100)}
    with proxy.client() as c:
        c.mset(values)
    chunks, expected = [], []
    n_incr = 0
    for i in range(100_000):
        if i % 2 == 0:
            chunks.append(hiredis.pack_command(("INCR", k + "counter")))
            n_incr += 1
            expected.append(n_incr)
        else:
            key = f"{k}p{i % 100}"
            chunks.append(hiredis.pack_command(("GET", key)))
            expected.append(values[key])
    payload = b"".join(chunks)
    with RawClient(proxy.port, timeout=60) as raw:
        t0 = time.monotonic()
        sender = threading.Thread(target=raw.send, args=(payload,), daemon=True)
        sender.start()
        got = raw.read_replies(100_000)
        elapsed = time.monotonic() - t0
        sender.join(10)
        print(f"100k-command pipeline through the proxy: {elapsed:.2f}s")
        bad = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got)) if e != g]
        assert not bad, f"{len(bad)} wrong replies, first (index, expected, got): {bad[:5]}"
        assert raw.command("GET", k + "counter") == b"50000"
        assert raw.command("PING") == b"PONG"


# ---------------------------------------------------------------------------
# large and binary values, inline commands
# ---------------------------------------------------------------------------

def test_large_value_10mb(r, proxy, k):
    value = os.urandom(10 * 1024 * 1024)
    assert r.set(k + "big", value) is True
    assert r.get(k + "big") == value
    assert r.strlen(k + "big") == len(value)
    _fresh_reader_sees(proxy, k + "big", value, timeout=20)


def test_binary_safe_keys_and_values(r, proxy, k):
    all_bytes = bytes(range(256))
    key = k.encode() + all_bytes + b"\r\n*1\r\n$4\r\nPING\r\n"
    value = all_bytes + b"\r\n\r\n$-1\r\n" + all_bytes[::-1]
    assert r.set(key, value) is True
    assert r.get(key) == value
    assert r.exists(key) == 1
    assert r.hset(k + "h", all_bytes, value) == 1
    assert r.hget(k + "h", all_bytes) == value
    assert r.rpush(k + "l", b"\r\n", b"", all_bytes) == 3
    assert r.lrange(k + "l", 0, -1) == [b"\r\n", b"", all_bytes]
    assert r.set(k.encode() + b"empty", b"") is True
    assert r.get(k.encode() + b"empty") == b""
    assert r.keys(k.encode() + b"\x00*") == [key]
    _fresh_reader_sees(proxy, key, value)


def _read_exact_prefix(raw: RawClient, expected: bytes, timeout: float = 10.0) -> bytes:
    """Read until `expected` bytes arrived; return what arrived (for an exact comparison)."""
    deadline = time.monotonic() + timeout
    got = b""
    while len(got) < len(expected) and time.monotonic() < deadline:
        raw.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = raw.sock.recv(65536)
        except socket.timeout:
            break
        if not data:
            break
        got += data
    return got


def test_inline_commands(proxy, k):
    with RawClient(proxy.port) as raw:
        raw.send(b"PING\r\n")
        assert _read_exact_prefix(raw, b"+PONG\r\n") == b"+PONG\r\n"
        raw.send(f"SET {k}i v\r\n".encode())
        assert _read_exact_prefix(raw, b"+OK\r\n") == b"+OK\r\n"
        raw.send(f"GET {k}i\r\n".encode())
        assert _read_exact_prefix(raw, b"$1\r\nv\r\n") == b"$1\r\nv\r\n"
        # \n alone ends a line too; empty lines are ignored
        raw.send(b"\r\n\nPING\n")
        assert _read_exact_prefix(raw, b"+PONG\r\n") == b"+PONG\r\n"
        # quotes and escapes, like redis-cli / sdssplitargs
        raw.send(f'SET "{k}quoted key" "a \\"quoted\\" value\\r\\n\\x41\\x00"\r\n'.encode())
        assert _read_exact_prefix(raw, b"+OK\r\n") == b"+OK\r\n"
        raw.send(b"ECHO 'single quoted \\' arg'\r\n")
        want = b"$19\r\nsingle quoted ' arg\r\n"
        assert _read_exact_prefix(raw, want) == want
        # inline and RESP commands mixed in one packet, order kept
        resp_set = f"*3\r\n$3\r\nSET\r\n${len(k) + 2}\r\n{k}xk\r\n$1\r\n1\r\n".encode()
        resp_incr = f"*2\r\n$4\r\nINCR\r\n${len(k) + 2}\r\n{k}xk\r\n".encode()
        raw.send(resp_set + f"INCR {k}xk\r\n".encode() + resp_incr + b"PING\r\n")
        want = b"+OK\r\n:2\r\n:3\r\n+PONG\r\n"
        assert _read_exact_prefix(raw, want) == want
    _fresh_reader_sees(proxy, f"{k}quoted key", b'a "quoted" value\r\nA\x00')


def test_commands_split_across_many_small_packets(proxy, k):
    """A pipeline (RESP and inline, one 200 KB bulk) arriving in 1..9-byte pieces."""
    big = os.urandom(200 * 1024)
    payload = (hiredis.pack_command(("SET", k + "a", "1"))
               + f"INCR {k}a\r\n".encode()
               + hiredis.pack_command(("SET", k + "big", big))
               + hiredis.pack_command(("STRLEN", k + "big"))
               + b"PING\r\n"
               + hiredis.pack_command(("RPUSH", k + "l", "x\r\ny", "")) * 3
               + hiredis.pack_command(("LRANGE", k + "l", "0", "1"))
               + hiredis.pack_command(("GET", k + "a")))
    expected = [b"OK", 2, b"OK", len(big), b"PONG", 2, 4, 6, [b"x\r\ny", b""], b"2"]
    rng = random.Random(3)
    with RawClient(proxy.port, timeout=30) as raw:
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head, tail = payload[:4000], payload[4000:]

        def sender():
            pos = 0
            while pos < len(head):             # the first 4 KB byte by byte, more or less
                step = rng.randint(1, 9)
                raw.send(head[pos:pos + step])
                pos += step
            for i in range(0, len(tail), 1500):
                raw.send(tail[i:i + 1500])
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        got = raw.read_replies(len(expected))
        t.join(10)
    assert got == expected


# ---------------------------------------------------------------------------
# read policies: where reads actually go
# ---------------------------------------------------------------------------

def _reset_stats(rs: ReplicaSet) -> None:
    for s in rs.servers:
        with s.client() as c:
            c.config_resetstat()


def _gets(rs: ReplicaSet) -> dict[str, int]:
    return {s.addr: commandstats_calls(s, "get") for s in rs.servers}


def _seed_and_sync(proxy: ProxyProcess, rs: ReplicaSet, k: str, n: int = 20) -> dict[str, bytes]:
    values = {f"{k}{i}": f"val-{i}".encode() for i in range(n)}
    with proxy.client() as c:
        assert c.mset(values) is True
    rs.wait_synced()
    return values


def _read_with_fresh_clients(proxy: ProxyProcess, values: dict[str, bytes], clients: int) -> int:
    n = 0
    for _ in range(clients):
        with proxy.client() as c:
            for key, val in values.items():
                assert c.get(key) == val
                n += 1
    return n


def test_reads_go_to_replicas(proxies, replica_set, k):
    """read_policy=replicas, read_your_writes=false: GETs are served by replicas only."""
    p = proxies["replicas_no_ryw"]
    values = _seed_and_sync(p, replica_set, k)
    _reset_stats(replica_set)
    n = _read_with_fresh_clients(p, values, clients=10)
    stats = _gets(replica_set)
    replica_gets = {a: stats[a] for a in stats if a != replica_set.master.addr}
    assert stats[replica_set.master.addr] == 0, f"GETs reached the master: {stats}"
    assert sum(replica_gets.values()) == n, f"expected {n} GETs on replicas: {stats}"
    assert all(v > 0 for v in replica_gets.values()), f"reads not spread over both replicas: {stats}"


def test_read_your_writes_reads_reach_replicas_when_caught_up(proxy, replica_set, k):
    """Default read_your_writes=true: reads move to a replica once it has the client's write."""
    with proxy.client() as c:
        assert c.set(k + "w", "1") is True
        replica_set.wait_synced()
        _reset_stats(replica_set)

        def served_by_replica() -> bool:
            assert c.get(k + "w") == b"1"
            stats = _gets(replica_set)
            return any(v for a, v in stats.items() if a != replica_set.master.addr)
        wait_until(served_by_replica, 10, interval=0.05, message="a GET to be served by a replica")


def test_read_policy_master(proxies, replica_set, k):
    p = proxies["master"]
    values = _seed_and_sync(p, replica_set, k)
    _reset_stats(replica_set)
    n = _read_with_fresh_clients(p, values, clients=5)
    stats = _gets(replica_set)
    assert stats[replica_set.master.addr] == n, stats
    assert all(v == 0 for a, v in stats.items() if a != replica_set.master.addr), stats


def test_read_policy_any(proxies, replica_set, k):
    p = proxies["any"]
    values = _seed_and_sync(p, replica_set, k)
    _reset_stats(replica_set)
    n = _read_with_fresh_clients(p, values, clients=12)
    stats = _gets(replica_set)
    assert sum(stats.values()) == n, stats
    assert all(v > 0 for v in stats.values()), f"read_policy=any should use master and replicas: {stats}"
