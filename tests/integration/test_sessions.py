"""Client sessions through a real proxy: transactions, SELECT, CLIENT, RESP3, scripts, refusals.

Everything runs against real redis-server processes (1 master + 2 replicas,
`replica_set` from conftest) and one real `redis-raft-proxy` process
(`proxy`, read_policy=replicas, read_your_writes=true), with redis-py (sync
and asyncio) and raw sockets where the exact bytes matter.

The other session files (test_session_*.py) import the small helpers below.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import hiredis
import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .harness import HOST, ReplicaSet, commandstats_calls, encode_command, wait_until

pytestmark = pytest.mark.timeout(30)


# ---------------------------------------------------------------------------
# helpers shared by the test_session_*.py files
# ---------------------------------------------------------------------------

def uniq(prefix: str = "k") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


def aclient(port: int, *, protocol: int = 2, decode: bool = False, timeout: float = 10.0, **kw) -> aioredis.Redis:
    """An asyncio redis-py client with no retries."""
    return aioredis.Redis(host=HOST, port=port, protocol=protocol, decode_responses=decode,
                          socket_timeout=timeout, socket_connect_timeout=timeout,
                          retry=Retry(NoBackoff(), 0), **kw)


def master_client_list(rs: ReplicaSet) -> list[dict]:
    with rs.master.client(decode=True, timeout=5) as c:
        return c.client_list()


def blocked_on_master(rs: ReplicaSet, name: str) -> bool:
    """True when the master shows a connection named `name` blocked ('b' flag)."""
    return any(c.get("name") == name and "b" in c.get("flags", "") for c in master_client_list(rs))


def wait_blocked(rs: ReplicaSet, name: str, timeout: float = 5.0) -> None:
    wait_until(lambda: blocked_on_master(rs, name), timeout,
               message=lambda: f"a connection named {name!r} blocked on the master; clients: "
                               f"{[(c.get('name'), c.get('flags'), c.get('cmd')) for c in master_client_list(rs)]}")


def replica_calls(rs: ReplicaSet, command: str) -> int:
    return sum(commandstats_calls(r, command) for r in rs.replicas)


def wait_replicas_healthy(proxy, timeout: float = 10.0) -> None:
    """Wait until the proxy's /status shows every replica healthy (reads may go there)."""
    def healthy() -> bool:
        reps = proxy.status()["topology"]["replicas"]
        return bool(reps) and all(r.get("healthy") for r in reps)
    wait_until(healthy, timeout, message=lambda: f"{proxy.name}: replicas healthy in /status")


def is_error(reply) -> bool:
    return isinstance(reply, (hiredis.ReplyError, Exception))


def assert_refused(reply, what: str) -> None:
    assert is_error(reply), f"{what}: expected an error, got {reply!r}"
    assert "redis-raft-proxy" in str(reply), f"{what}: error does not mention redis-raft-proxy: {reply!r}"


# ---------------------------------------------------------------------------
# MULTI / EXEC / DISCARD / WATCH / UNWATCH
# ---------------------------------------------------------------------------

def test_multi_exec_queued_replies_and_reads_inside(proxy, replica_set):
    k = uniq("tx")
    with proxy.raw() as c:
        assert c.command("SET", k, "before") == b"OK"
        assert c.command("MULTI") == b"OK"
        assert c.command("GET", k) == b"QUEUED"
        assert c.command("SET", k, "after") == b"QUEUED"
        assert c.command("GET", k) == b"QUEUED"
        assert c.command("INCR", k) == b"QUEUED"          # fails at EXEC time: not an integer
        reply = c.command("EXEC")
        assert reply[:3] == [b"before", b"OK", b"after"]
        assert is_error(reply[3]) and "not an integer" in str(reply[3])
        # the connection goes on normally after EXEC
        assert c.command("GET", k) == b"after"
        assert c.command("PING") == b"PONG"
    with replica_set.master.client() as m:
        assert m.get(k) == b"after"


def test_multi_pipelined_in_one_write_keeps_order(proxy):
    """Commands before MULTI, the transaction and commands after it, all in one write."""
    k = uniq("txp")
    cmds = [("SET", k, "1"), ("GET", k), ("MULTI",), ("SET", k, "2"), ("GET", k), ("EXEC",), ("GET", k),
            ("PING",)]
    with proxy.raw() as c:
        c.send(b"".join(encode_command(*cmd) for cmd in cmds))
        replies = c.read_replies(len(cmds))
    assert replies == [b"OK", b"1", b"OK", b"QUEUED", b"QUEUED", [b"OK", b"2"], b"2", b"PONG"]


def test_commands_the_proxy_answers_are_queued_inside_multi(proxy):
    """PING, ECHO, CLIENT GETNAME/ID/INFO inside MULTI answer QUEUED and have their
    element in EXEC's reply, as in Redis (redis-py: "Wrong number of response
    items from pipeline execution" for a transaction with a PING otherwise)."""
    k = uniq("txping")
    with proxy.raw() as c:
        assert c.command("CLIENT", "SETNAME", "txname") == b"OK"
        assert c.command("MULTI") == b"OK"
        for cmd in [("SET", k, "v"), ("PING",), ("ECHO", "hi"), ("CLIENT", "GETNAME"), ("CLIENT", "ID"),
                    ("PING", "msg"), ("GET", k)]:
            assert c.command(*cmd) == b"QUEUED", cmd
        reply = c.command("EXEC")
        assert len(reply) == 7, reply
        assert reply[:4] == [b"OK", b"PONG", b"hi", b"txname"] and isinstance(reply[4], int), reply
        assert reply[5:] == [b"msg", b"v"], reply
        assert c.command("PING") == b"PONG"                 # answered by the proxy again after EXEC
    with proxy.client() as r:
        pipe = r.pipeline(transaction=True)
        pipe.set(k, "w").ping().echo("e").get(k)
        assert pipe.execute() == [True, True, b"e", b"w"]


def test_discard(proxy, replica_set):
    k = uniq("disc")
    with proxy.raw() as c:
        assert c.command("SET", k, "orig") == b"OK"
        assert c.command("MULTI") == b"OK"
        assert c.command("SET", k, "changed") == b"QUEUED"
        assert c.command("DISCARD") == b"OK"
        assert c.command("GET", k) == b"orig"
        err = c.command("DISCARD")
        assert is_error(err) and "without MULTI" in str(err)
        err = c.command("EXEC")
        assert is_error(err) and "without MULTI" in str(err)
        assert c.command("SET", k, "later") == b"OK"
    with replica_set.master.client() as m:
        assert m.get(k) == b"later"


def test_execabort_on_bad_command_inside_multi(proxy, replica_set):
    k = uniq("abort")
    with proxy.raw() as c:
        assert c.command("MULTI") == b"OK"
        assert c.command("SET", k, "1") == b"QUEUED"
        err = c.command("SET", k)                 # wrong arity: rejected while queuing
        assert is_error(err) and "wrong number of arguments" in str(err)
        err = c.command("NOSUCHCOMMAND", "x")
        assert is_error(err) and "unknown command" in str(err)
        reply = c.command("EXEC")
        assert is_error(reply) and str(reply).startswith("EXECABORT"), reply
        assert c.command("EXISTS", k) == 0
        nested = c.command("MULTI")
        assert nested == b"OK"
        err = c.command("MULTI")
        assert is_error(err) and "nested" in str(err)
        assert c.command("DISCARD") == b"OK"
        assert c.command("PING") == b"PONG"
    with replica_set.master.client() as m:
        assert m.exists(k) == 0
    # redis-py surfaces the abort too
    with proxy.client() as r:
        pipe = r.pipeline(transaction=True)
        pipe.set(k, "x")
        pipe.execute_command("SET", k)             # arity error
        with pytest.raises(redis.ResponseError):
            pipe.execute()
        assert r.exists(k) == 0


def test_refused_command_inside_multi_aborts_the_transaction(proxy, replica_set):
    """Redis aborts EXEC after any command rejected while queuing; a command the
    proxy refuses inside MULTI must do the same, not let EXEC run the rest."""
    k = uniq("refmulti")
    with proxy.raw() as c:
        assert c.command("MULTI") == b"OK"
        assert c.command("SET", k, "1") == b"QUEUED"
        assert_refused(c.command("DEBUG", "SLEEP", "1"), "DEBUG inside MULTI")
        reply = c.command("EXEC")
        assert is_error(reply) and str(reply).startswith("EXECABORT"), \
            f"EXEC after a refused command inside MULTI answered {reply!r}"
        assert c.command("PING") == b"PONG"
    with replica_set.master.client() as m:
        assert m.exists(k) == 0, "the transaction ran although a command inside it was refused"


def test_watch_nil_exec_when_another_client_modifies(proxy, replica_set):
    k = uniq("watch")
    with proxy.raw() as c1, proxy.client() as c2:
        assert c1.command("SET", k, "v0") == b"OK"
        assert c1.command("WATCH", k) == b"OK"
        assert c1.command("GET", k) == b"v0"          # read under WATCH
        assert c2.set(k, "other") is True
        assert c1.command("MULTI") == b"OK"
        assert c1.command("SET", k, "mine") == b"QUEUED"
        assert c1.command("EXEC") is None              # the watched key changed: nil
        assert c1.command("GET", k) == b"other"
        # WATCH without a change: EXEC runs
        assert c1.command("WATCH", k) == b"OK"
        assert c1.command("MULTI") == b"OK"
        assert c1.command("SET", k, "mine") == b"QUEUED"
        assert c1.command("EXEC") == [b"OK"]
        # UNWATCH forgets the watch: a later change does not abort
        assert c1.command("WATCH", k) == b"OK"
        assert c1.command("UNWATCH") == b"OK"
        assert c2.set(k, "third") is True
        assert c1.command("MULTI") == b"OK"
        assert c1.command("SET", k, "fourth") == b"QUEUED"
        assert c1.command("EXEC") == [b"OK"]
    with replica_set.master.client() as m:
        assert m.get(k) == b"fourth"


def test_watch_error_with_redis_py(proxy):
    k = uniq("watchpy")
    with proxy.client() as r, proxy.client() as other:
        r.set(k, "1")
        with r.pipeline() as pipe:
            pipe.watch(k)
            assert pipe.get(k) == b"1"
            other.set(k, "2")
            pipe.multi()
            pipe.set(k, "3")
            with pytest.raises(redis.WatchError):
                pipe.execute()
        assert r.get(k) == b"2"

        def incr(pipe):
            value = int(pipe.get(k))
            pipe.multi()
            pipe.set(k, value + 10)
        r.transaction(incr, k)
        assert r.get(k) == b"12"


def _watch_incr(r: redis.Redis, key: str, max_tries: int = 2000) -> int:
    """Optimistic increment with WATCH/GET/MULTI/SET/EXEC; returns retries used."""
    for tries in range(max_tries):
        with r.pipeline() as pipe:
            try:
                pipe.watch(key)
                value = int(pipe.get(key) or 0)
                pipe.multi()
                pipe.set(key, value + 1)
                pipe.execute()
                return tries
            except redis.WatchError:
                continue
    raise AssertionError(f"WATCH increment of {key} did not succeed in {max_tries} tries")


def test_transactions_interleaved_with_pipelines_from_threads(proxy, replica_set):
    base = uniq("mix")
    counter, a, b, plain = f"{base}:cnt", f"{base}:a", f"{base}:b", f"{base}:plain"
    tx_threads, pipe_threads, rounds = 4, 4, 40
    errors: list[str] = []

    def tx_worker(tid: int) -> None:
        try:
            with proxy.client() as r:
                for i in range(rounds):
                    _watch_incr(r, counter)
                    res = r.pipeline(transaction=True).incr(a).get(f"{base}:own:{tid}").incr(b) \
                        .set(f"{base}:own:{tid}", i).execute()
                    if res[0] != res[2]:
                        errors.append(f"non-atomic MULTI: a={res[0]} b={res[2]}")
                    if i and res[1] != str(i - 1).encode():
                        errors.append(f"thread {tid} read {res[1]!r} inside MULTI, expected {i - 1}")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"tx worker {tid}: {exc!r}")

    def pipe_worker(tid: int) -> None:
        try:
            with proxy.client() as r:
                for i in range(rounds):
                    p = r.pipeline(transaction=False)
                    for j in range(10):
                        p.set(f"{base}:p:{tid}:{j}", f"{i}-{j}")
                        p.get(f"{base}:p:{tid}:{j}")
                        p.incr(plain)
                    res = p.execute()
                    for j in range(10):
                        if res[3 * j] is not True or res[3 * j + 1] != f"{i}-{j}".encode():
                            errors.append(f"pipeline {tid} round {i} got {res[3 * j:3 * j + 2]!r}")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"pipe worker {tid}: {exc!r}")

    threads = [threading.Thread(target=tx_worker, args=(t,)) for t in range(tx_threads)]
    threads += [threading.Thread(target=pipe_worker, args=(t,)) for t in range(pipe_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(25)
    assert not any(t.is_alive() for t in threads), "worker threads did not finish in 25 s"
    assert not errors, errors[:10]
    with replica_set.master.client() as m:
        assert int(m.get(counter)) == tx_threads * rounds, "lost update: WATCH did not protect the increment"
        assert int(m.get(a)) == int(m.get(b)) == tx_threads * rounds
        assert int(m.get(plain)) == pipe_threads * rounds * 10


async def test_async_transactions_and_watch(proxy, replica_set):
    base = uniq("atx")
    r = aclient(proxy.port)
    other = aclient(proxy.port)
    try:
        async with r.pipeline(transaction=True) as pipe:
            res = await pipe.set(f"{base}:x", "1").incr(f"{base}:x").get(f"{base}:x").execute()
        assert res == [True, 2, b"2"]

        async with r.pipeline() as pipe:
            await pipe.watch(f"{base}:x")
            assert await pipe.get(f"{base}:x") == b"2"
            await other.set(f"{base}:x", "99")
            pipe.multi()
            pipe.set(f"{base}:x", "3")
            with pytest.raises(redis.WatchError):
                await pipe.execute()
        assert await r.get(f"{base}:x") == b"99"

        # many concurrent optimistic increments from several asyncio clients
        clients = [aclient(proxy.port) for _ in range(5)]

        async def bump(c: aioredis.Redis, n: int) -> None:
            for _ in range(n):
                for _try in range(2000):
                    async with c.pipeline() as pipe:
                        try:
                            await pipe.watch(f"{base}:cnt")
                            v = int(await pipe.get(f"{base}:cnt") or 0)
                            pipe.multi()
                            pipe.set(f"{base}:cnt", v + 1)
                            await pipe.execute()
                            break
                        except redis.WatchError:
                            continue
                else:
                    raise AssertionError("no WATCH success in 2000 tries")

        try:
            await asyncio.wait_for(asyncio.gather(*(bump(c, 20) for c in clients)), 20)
        finally:
            for c in clients:
                await c.aclose()
        assert int(await r.get(f"{base}:cnt")) == 100
    finally:
        await r.aclose()
        await other.aclose()


# ---------------------------------------------------------------------------
# SELECT
# ---------------------------------------------------------------------------

def test_select_db_kept_across_commands_and_replica_reads(proxy, replica_set):
    wait_replicas_healthy(proxy)
    k = uniq("sel")
    with proxy.raw() as c, proxy.client() as db0:
        assert c.command("SELECT", "3") == b"OK"
        assert c.command("SET", k, "in-db3") == b"OK"
        assert c.command("GET", k) == b"in-db3"        # read-your-writes, in db 3
        assert db0.get(k) is None, "a db-0 client sees a key written in db 3"
        # wait until every replica has the key in db 3, then reads may go to replicas
        for rep in replica_set.replicas:
            with rep.client(db=3) as rc:
                wait_until(lambda: rc.get(k) == b"in-db3", 5, message=f"{rep.addr} to replicate {k}")
        before = replica_calls(replica_set, "get")
        seen: list = []

        def replica_served() -> bool:
            for _ in range(20):
                seen.append(c.command("GET", k))
            return replica_calls(replica_set, "get") > before
        wait_until(replica_served, 10, interval=0.05,
                   message="a GET in db 3 to be served by a replica")
        assert set(seen) == {b"in-db3"}, f"reads in db 3 returned {set(seen)!r}"
        assert c.command("DBSIZE") >= 1
        assert c.command("EXISTS", k) == 1
        # a bad SELECT keeps the previous db
        err = c.command("SELECT", "9999")
        assert is_error(err)
        assert c.command("GET", k) == b"in-db3"
        assert c.command("SELECT", "0") == b"OK"
        assert c.command("GET", k) is None
        assert c.command("SELECT", "3") == b"OK"
        assert c.command("GET", k) == b"in-db3"
    with replica_set.master.client(db=3) as m3, replica_set.master.client() as m0:
        assert m3.get(k) == b"in-db3"
        assert m0.get(k) is None


async def test_select_with_asyncio_client(proxy, replica_set):
    k = uniq("asel")
    r5 = aclient(proxy.port, db=5)
    r0 = aclient(proxy.port)
    try:
        await r5.set(k, "five")
        for i in range(50):                     # writes then reads, all in db 5
            await r5.set(k, f"five-{i}")
            assert await r5.get(k) == f"five-{i}".encode()
        assert await r0.get(k) is None
    finally:
        await r5.aclose()
        await r0.aclose()
    with replica_set.master.client(db=5) as m5:
        assert m5.get(k) == b"five-49"


# ---------------------------------------------------------------------------
# HELLO 2/3 and RESP3 replies
# ---------------------------------------------------------------------------

def test_resp3_replies_reach_the_client_unchanged(proxy):
    h, s, z = uniq("h"), uniq("s"), uniq("z")
    with proxy.raw() as c:
        hello = c.command("HELLO", "3")
        assert isinstance(hello, dict) and hello.get(b"proto") == 3, hello
        # written on this connection: its reads see them (another client's writes may not
        # have reached the replica it reads yet)
        assert c.command("HSET", h, "f1", "v1", "f2", "v2") == 2
        assert c.command("SADD", s, "a", "b") == 2
        assert c.command("ZADD", z, "1.5", "m") == 1
        checks = [
            (("HGETALL", h), b"%2\r\n"),
            (("SMEMBERS", s), b"~2\r\n"),
            (("ZSCORE", z, "m"), b",1.5\r\n"),
            (("GET", uniq("missing")), b"_\r\n"),
            (("EVAL", "return {double=3.5}", "0"), b",3.5\r\n"),
            (("EVAL", "return {big_number='123456789012345678901234567890'}", "0"),
             b"(123456789012345678901234567890\r\n"),
            (("EVAL", "return {map={a=1}}", "0"), b"%1\r\n$1\r\na\r\n:1\r\n"),
            (("EVAL", "return true", "0"), b":1\r\n"),
            (("EVAL", "return {set={x=true}}", "0"), b"~1\r\n$1\r\nx\r\n"),
        ]
        for cmd, prefix in checks:
            start = len(c.raw)
            c.command(*cmd)
            got = bytes(c.raw[start:])
            assert got.startswith(prefix), f"{cmd[0]} over RESP3: expected {prefix!r}..., got {got[:80]!r}"
        # and back to RESP2
        hello = c.command("HELLO", "2")
        assert isinstance(hello, list)
        for cmd, prefix in [(("HGETALL", h), b"*4\r\n"), (("ZSCORE", z, "m"), b"$3\r\n1.5\r\n"),
                            (("GET", uniq("missing")), b"$-1\r\n")]:
            start = len(c.raw)
            c.command(*cmd)
            got = bytes(c.raw[start:])
            assert got.startswith(prefix), f"{cmd[0]} after HELLO 2: expected {prefix!r}, got {got[:80]!r}"


def test_resp3_with_redis_py(proxy):
    h, s, z = uniq("h"), uniq("s"), uniq("z")
    with proxy.client(protocol=3) as r:
        r.hset(h, mapping={"f1": "v1", "f2": "v2"})
        r.sadd(s, "a", "b")
        r.zadd(z, {"m": 2.25})
        for _ in range(20):                     # some of these are served by replicas
            assert r.hgetall(h) == {b"f1": b"v1", b"f2": b"v2"}
            assert r.smembers(s) == {b"a", b"b"}
            assert r.zscore(z, "m") == 2.25
        assert r.execute_command("EVAL", "return {double=3.5}", 0) == 3.5
        assert r.get(uniq("none")) is None
        assert r.ping() is True


async def test_resp3_with_asyncio_client(proxy):
    h = uniq("ah")
    r = aclient(proxy.port, protocol=3)
    try:
        await r.hset(h, mapping={"a": "1"})
        await r.zadd(h + "z", {"x": 0.5})
        for _ in range(10):
            assert await r.hgetall(h) == {b"a": b"1"}
            assert await r.zscore(h + "z", "x") == 0.5
        hello = await r.execute_command("HELLO", "3")
        assert hello[b"proto"] == 3
    finally:
        await r.aclose()


# ---------------------------------------------------------------------------
# CLIENT, RESET, QUIT, ECHO, PING, TIME, CLIENT REPLY
# ---------------------------------------------------------------------------

def test_client_setname_getname_id(proxy):
    with proxy.raw() as c, proxy.raw() as d:
        assert c.command("CLIENT", "GETNAME") is None
        assert c.command("CLIENT", "SETNAME", "alpha") == b"OK"
        assert c.command("CLIENT", "GETNAME") == b"alpha"
        err = c.command("CLIENT", "SETNAME", "has space")
        assert is_error(err)
        assert c.command("CLIENT", "GETNAME") == b"alpha"
        id1, id2 = c.command("CLIENT", "ID"), d.command("CLIENT", "ID")
        assert isinstance(id1, int) and isinstance(id2, int) and id1 != id2
        assert c.command("CLIENT", "ID") == id1                 # stable per connection
        assert d.command("CLIENT", "GETNAME") is None            # names are per client
        # the name is kept after the client moves to its own upstream connections
        assert c.command("SELECT", "2") == b"OK"
        assert c.command("CLIENT", "GETNAME") == b"alpha"
        assert c.command("CLIENT", "ID") == id1


def test_client_info_reports_this_client(proxy):
    """CLIENT INFO describes the calling client: its name and db, as in Redis."""
    with proxy.raw() as c:
        assert c.command("CLIENT", "SETNAME", "infoclient") == b"OK"
        info = c.command("CLIENT", "INFO")
        assert isinstance(info, bytes) and b"id=" in info, info
        assert b"name=infoclient " in info, f"CLIENT INFO after CLIENT SETNAME: {info!r}"
        assert c.command("SELECT", "4") == b"OK"
        info = c.command("CLIENT", "INFO")
        assert b"name=infoclient " in info and b" db=4 " in info, f"CLIENT INFO after SELECT 4: {info!r}"


def test_client_tracking_invalidation_push(proxy, replica_set):
    wait_replicas_healthy(proxy)
    k = uniq("trk")
    with proxy.client() as w:
        w.set(k, "v1")
    with proxy.raw(timeout=5) as c, proxy.client() as other:
        assert isinstance(c.command("HELLO", "3"), dict)
        assert c.command("CLIENT", "TRACKING", "ON") == b"OK"
        # make sure the replicas have the key, so the read may be served by one
        for rep in replica_set.replicas:
            with rep.client() as rc:
                wait_until(lambda: rc.get(k) == b"v1", 5, message="replication of the tracked key")
        assert c.command("GET", k) == b"v1"
        start = len(c.raw)
        other.set(k, "v2")
        push = c.read_reply()
        got = bytes(c.raw[start:])
        assert got.startswith(b">2\r\n$10\r\ninvalidate\r\n"), f"expected an invalidation push, got {got[:100]!r}"
        assert push[0] == b"invalidate" and push[1] == [k.encode()], push
        assert c.command("GET", k) == b"v2"
        assert c.command("CLIENT", "TRACKING", "OFF") == b"OK"


def test_client_tracking_redirect_to_a_subscriber_by_its_client_id(proxy, replica_set):
    """RESP2 client-side caching: invalidations go to the connection whose
    CLIENT ID was given to REDIRECT; those ids are the proxy's, not the master's."""
    k = uniq("trkr")
    with proxy.client() as w:
        w.set(k, "v1")
    with proxy.raw(timeout=5) as sub, proxy.raw(timeout=5) as c, proxy.client() as other:
        sub_id = sub.command("CLIENT", "ID")
        assert sub.command("SUBSCRIBE", "__redis__:invalidate") == [b"subscribe", b"__redis__:invalidate", 1]
        assert c.command("CLIENT", "TRACKING", "ON", "REDIRECT", str(sub_id)) == b"OK"
        assert c.command("CLIENT", "GETREDIR") != -1
        assert c.command("GET", k) == b"v1"
        other.set(k, "v2")
        assert sub.read_reply() == [b"message", b"__redis__:invalidate", [k.encode()]]
        assert c.command("CLIENT", "TRACKING", "OFF") == b"OK"
    with proxy.raw(timeout=5) as c:
        own = c.command("CLIENT", "ID")      # redirect to itself: its own, brand-new connection
        assert c.command("CLIENT", "TRACKING", "ON", "REDIRECT", str(own)) == b"OK"
        assert c.command("CLIENT", "TRACKING", "OFF") == b"OK"
        for bad in ("999999999", "nope"):    # unknown ids: Redis' answers, no other connection's
            err = c.command("CLIENT", "TRACKING", "ON", "REDIRECT", bad)
            assert is_error(err), err


def test_client_unblock_by_client_id(proxy, replica_set):
    """CLIENT UNBLOCK takes the id the blocked client got from CLIENT ID (the proxy's)."""
    k = uniq("unblk")
    with proxy.raw(timeout=10) as blk, proxy.raw() as other:
        blk_id = blk.command("CLIENT", "ID")
        assert other.command("CLIENT", "UNBLOCK", str(blk_id)) == 0          # not blocked yet
        assert blk.command("CLIENT", "SETNAME", "unblock-me") == b"OK"
        blk.send(encode_command("BLPOP", k, "0"))
        wait_blocked(replica_set, "unblock-me")
        assert other.command("CLIENT", "UNBLOCK", str(blk_id), "ERROR") == 1
        err = blk.read_reply()
        assert is_error(err) and str(err).startswith("UNBLOCKED"), err
        blk.send(encode_command("BLPOP", k, "0"))
        wait_blocked(replica_set, "unblock-me")
        assert other.command("CLIENT", "UNBLOCK", str(blk_id)) == 1          # TIMEOUT: a nil reply
        assert blk.read_reply() is None
        assert other.command("CLIENT", "UNBLOCK", "999999999") == 0
        assert is_error(other.command("CLIENT", "UNBLOCK", str(blk_id), "bogus"))


def test_reset_quit_echo_ping_time(proxy, replica_set):
    k = uniq("reset")
    with proxy.raw() as c:
        assert c.command("PING") == b"PONG"
        assert c.command("PING", "hello") == b"hello"
        assert c.command("ECHO", "a\r\nb") == b"a\r\nb"
        secs, usecs = c.command("TIME")
        assert abs(int(secs) - time.time()) < 5 and 0 <= int(usecs) < 1_000_000
        assert c.command("SELECT", "6") == b"OK"
        assert c.command("CLIENT", "SETNAME", "before-reset") == b"OK"
        assert c.command("SET", k, "db6") == b"OK"
        assert c.command("MULTI") == b"OK"
        assert c.command("SET", k, "never") == b"QUEUED"
        assert c.command("RESET") == b"RESET"
        # back to db 0, no name, no transaction
        assert c.command("CLIENT", "GETNAME") is None
        assert c.command("GET", k) is None
        err = c.command("EXEC")
        assert is_error(err) and "without MULTI" in str(err), err
        assert c.command("SELECT", "6") == b"OK"
        assert c.command("GET", k) == b"db6", "the queued SET ran although RESET discarded it"
        assert c.command("QUIT") == b"OK"
        rest = c.read_until_closed(5)
        assert rest == b""
    # pipelined: commands after QUIT are not executed
    with proxy.raw() as c:
        c.send(encode_command("SET", k + "q", "1") + encode_command("QUIT") + encode_command("SET", k + "q", "2"))
        assert c.read_replies(2) == [b"OK", b"OK"]
        c.read_until_closed(5)
    with proxy.client() as r:       # no writes of its own: it may read a replica, which lags
        wait_until(lambda: r.get(k + "q") == b"1", 10, message="the SET before QUIT through a replica")
    with replica_set.master.client() as m:
        assert m.get(k + "q") == b"1", "a command after QUIT ran"


def test_client_reply_off_on_skip(proxy):
    k = uniq("reply")
    with proxy.raw() as c:
        c.send(encode_command("CLIENT", "REPLY", "OFF") + encode_command("SET", k, "1")
               + encode_command("GET", k) + encode_command("PING") + encode_command("CLIENT", "REPLY", "ON"))
        assert c.read_reply() == b"OK", "the first reply after CLIENT REPLY OFF must be ON's +OK"
        assert c.command("GET", k) == b"1"
        c.send(encode_command("CLIENT", "REPLY", "SKIP") + encode_command("SET", k, "2")
               + encode_command("GET", k))
        assert c.read_reply() == b"2"
        # SKIP inside the same write, then an inline command
        c.send(encode_command("CLIENT", "REPLY", "SKIP") + encode_command("INCR", k) + b"GET " + k.encode() + b"\r\n")
        assert c.read_reply() == b"3"
        assert c.command("PING") == b"PONG"
        c.sock.settimeout(0.3)
        with pytest.raises(OSError):
            c.sock.recv(100)                       # nothing else was queued for us


# ---------------------------------------------------------------------------
# scripts and functions
# ---------------------------------------------------------------------------

def test_eval_and_fcall_go_to_the_master(proxy, replica_set):
    k = uniq("eval")
    m = replica_set.master
    before_m = commandstats_calls(m, "eval"), commandstats_calls(m, "evalsha"), commandstats_calls(m, "fcall")
    before_r = replica_calls(replica_set, "eval") + replica_calls(replica_set, "evalsha") \
        + replica_calls(replica_set, "fcall")
    lib = "#!lua name=sessionlib\nredis.register_function('sess_set', function(keys, args) " \
          "return redis.call('SET', keys[1], args[1]) end)\n" \
          "redis.register_function{function_name='sess_get', callback=function(keys, args) " \
          "return redis.call('GET', keys[1]) end, flags={'no-writes'}}"
    with proxy.client() as r:
        assert r.function_load(lib, replace=True) == b"sessionlib"
        try:
            for i in range(20):
                assert r.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, k, f"e{i}") == b"OK"
                assert r.eval("return redis.call('GET', KEYS[1])", 1, k) == f"e{i}".encode()
            sha = r.script_load("return redis.call('INCR', KEYS[1])")
            for i in range(5):
                assert r.evalsha(sha, 1, k + "n") == i + 1
            for i in range(5):
                assert r.fcall("sess_set", 1, k + "f", f"f{i}") == b"OK"
                assert r.get(k + "f") == f"f{i}".encode()
            assert r.fcall_ro("sess_get", 1, k + "f") == b"f4"
        finally:
            r.function_delete("sessionlib")
    assert commandstats_calls(m, "eval") - before_m[0] >= 40
    assert commandstats_calls(m, "evalsha") - before_m[1] >= 5
    assert commandstats_calls(m, "fcall") - before_m[2] >= 5
    after_r = replica_calls(replica_set, "eval") + replica_calls(replica_set, "evalsha") \
        + replica_calls(replica_set, "fcall")
    assert after_r == before_r, "EVAL/EVALSHA/FCALL reached a replica"


def test_eval_ro_may_go_to_replicas(proxy, replica_set):
    wait_replicas_healthy(proxy)
    k = uniq("ro")
    with proxy.client() as w:
        w.set(k, "ro-value")
    for rep in replica_set.replicas:
        with rep.client() as rc:
            wait_until(lambda: rc.get(k) == b"ro-value", 5, message="replication")
    before = replica_calls(replica_set, "eval_ro")
    with proxy.client() as r:                    # a fresh client: no own write pending
        for _ in range(20):
            assert r.eval_ro("return redis.call('GET', KEYS[1])", 1, k) == b"ro-value"
    assert replica_calls(replica_set, "eval_ro") > before, "no EVAL_RO was served by a replica"
    # EVALSHA_RO, with the script known to every node (loaded on each directly)
    body = f"return redis.call('GET', KEYS[1]) .. '-{uuid.uuid4().hex[:6]}'"
    for server in replica_set.servers:
        with server.client() as sc:
            sha = sc.script_load(body)
    before = replica_calls(replica_set, "evalsha_ro")
    with proxy.client() as r:
        for _ in range(20):
            assert r.evalsha_ro(sha, 1, k).startswith(b"ro-value-")
    assert replica_calls(replica_set, "evalsha_ro") > before, "no EVALSHA_RO was served by a replica"


def test_script_load_then_evalsha_and_evalsha_ro(proxy, replica_set):
    """SCRIPT LOAD through the proxy, then EVALSHA (master) and EVALSHA_RO (replicas) find it."""
    wait_replicas_healthy(proxy)
    k = uniq("sha")
    with proxy.client() as w:
        w.set(k, "hello")
    for rep in replica_set.replicas:
        with rep.client() as rc:
            wait_until(lambda: rc.get(k) == b"hello", 5, message="replication")
    body = f"return redis.call('GET', KEYS[1]) .. '-{uuid.uuid4().hex[:6]}'"   # a script no node knows yet
    with proxy.client() as r:
        sha = r.script_load(body)
        assert r.evalsha(sha, 1, k).startswith(b"hello-")
        for _ in range(10):
            assert r.evalsha_ro(sha, 1, k).startswith(b"hello-"), "EVALSHA_RO after SCRIPT LOAD"
        assert r.script_exists(sha) == [True]


# ---------------------------------------------------------------------------
# refused commands
# ---------------------------------------------------------------------------

REFUSED_CMDS = [
    ("REPLICAOF", "NO", "ONE"),
    ("SLAVEOF", "NO", "ONE"),
    ("SHUTDOWN", "NOSAVE"),
    ("FAILOVER",),
    ("CLUSTER", "INFO"),
    ("SENTINEL", "MASTERS"),
    ("DEBUG", "SLEEP", "1"), ("DEBUG", "RELOAD"),
    ("replicaof", "127.0.0.1", "1"),
]


def test_refused_commands_are_refused_clearly(proxy, replica_set):
    with proxy.raw() as c:
        for cmd in REFUSED_CMDS:
            assert_refused(c.command(*cmd), " ".join(cmd))
            assert c.command("PING") == b"PONG", f"connection unusable after {cmd[0]}"
        # also as an inline command
        c.send(b"SHUTDOWN\r\n")
        assert_refused(c.read_reply(), "inline SHUTDOWN")
        assert c.command("ECHO", "still-here") == b"still-here"
    with proxy.client() as r:
        for cmd in REFUSED_CMDS:
            with pytest.raises(redis.ResponseError, match="redis-raft-proxy"):
                r.execute_command(*cmd)
        assert r.set(uniq("after-refused"), "1") is True
    # nothing reached Redis: topology unchanged, everything alive
    assert replica_set.master.info()["role"] == "master"
    for rep in replica_set.replicas:
        assert rep.info()["role"] == "slave"
    assert all(s.alive() for s in replica_set.servers)


def test_refused_commands_in_dedicated_and_subscribed_modes(proxy):
    with proxy.raw() as c:
        assert c.command("SELECT", "1") == b"OK"           # dedicated mode
        for cmd in REFUSED_CMDS:
            assert_refused(c.command(*cmd), " ".join(cmd) + " (dedicated)")
        assert c.command("PING") == b"PONG"
    with proxy.raw() as c:
        sub = c.command("SUBSCRIBE", uniq("ch"))
        assert sub[0] == b"subscribe"
        for cmd in [("SHUTDOWN",), ("REPLICAOF", "NO", "ONE"), ("DEBUG", "SLEEP", "0")]:
            assert_refused(c.command(*cmd), " ".join(cmd) + " (subscribed)")
        assert c.command("PING") == [b"pong", b""]


def test_select_inside_multi_changes_the_db_for_later_commands(proxy, replica_set):
    """As in Redis, a SELECT queued in MULTI switches the connection's db at EXEC;
    every later command (reads served by replicas included) uses the new db."""
    wait_replicas_healthy(proxy)
    k = uniq("mselect")
    with proxy.raw() as c:
        assert c.command("MULTI") == b"OK"
        assert c.command("SELECT", "7") == b"QUEUED"
        assert c.command("SET", k, "db7") == b"QUEUED"
        assert c.command("EXEC") == [b"OK", b"OK"]
        assert c.command("GET", k) == b"db7"
        for rep in replica_set.replicas:
            with rep.client(db=7) as rc:
                wait_until(lambda: rc.get(k) == b"db7", 5, message="replication")
        before = replica_calls(replica_set, "get")
        seen = []

        def replica_served() -> bool:
            for _ in range(10):
                seen.append(c.command("GET", k))
            return replica_calls(replica_set, "get") > before
        wait_until(replica_served, 10, interval=0.05, message="a GET to reach a replica")
        assert set(seen) == {b"db7"}, f"GETs after MULTI/SELECT 7/EXEC answered {seen}"
        assert c.command("SET", k + ":2", "x") == b"OK"
    with replica_set.master.client(db=7) as m7:
        assert m7.get(k + ":2") == b"x", "a write after MULTI/SELECT 7/EXEC did not go to db 7"


def test_select_pipelined_with_other_commands(proxy, replica_set):
    k = uniq("psel")
    cmds = [("SET", k, "db0"), ("SELECT", "8"), ("SET", k, "db8"), ("GET", k), ("SELECT", "0"), ("GET", k)]
    with proxy.raw() as c:
        c.send(b"".join(encode_command(*x) for x in cmds))
        assert c.read_replies(len(cmds)) == [b"OK", b"OK", b"OK", b"db8", b"OK", b"db0"]
    with replica_set.master.client(db=8) as m8:
        assert m8.get(k) == b"db8"
