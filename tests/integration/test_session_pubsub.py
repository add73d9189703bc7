"""Pub/sub through the proxy (RAW mode): SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, RESP3 pushes, fan-out."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from .harness import encode_command, wait_until
from .test_sessions import aclient, is_error, uniq

pytestmark = pytest.mark.timeout(40)


def _numsub(rs, channel: str) -> int:
    with rs.master.client(timeout=5) as m:
        return dict(m.pubsub_numsub(channel)).get(channel.encode(), 0)


def _shardnumsub(rs, channel: str) -> int:
    with rs.master.client(timeout=5) as m:
        reply = m.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        return int(reply[1])


def _numpat(rs) -> int:
    with rs.master.client(timeout=5) as m:
        return int(m.execute_command("PUBSUB", "NUMPAT"))


def test_subscribe_ping_publish_unsubscribe_raw(proxy, replica_set):
    ch1, ch2 = uniq("ch"), uniq("ch")
    with proxy.raw(timeout=5) as sub, proxy.client() as pub:
        # a command before SUBSCRIBE in the same write: order is kept
        sub.send(encode_command("SET", ch1 + ":k", "v") + encode_command("SUBSCRIBE", ch1, ch2))
        assert sub.read_reply() == b"OK"
        assert sub.read_reply() == [b"subscribe", ch1.encode(), 1]
        assert sub.read_reply() == [b"subscribe", ch2.encode(), 2]
        assert sub.command("PING") == [b"pong", b""]
        assert sub.command("PING", "hi") == [b"pong", b"hi"]
        assert pub.publish(ch1, "m1") == 1
        assert sub.read_reply() == [b"message", ch1.encode(), b"m1"]
        assert pub.publish(ch2, "m2") == 1
        assert sub.read_reply() == [b"message", ch2.encode(), b"m2"]
        # a normal command is refused while subscribed (as Redis does in RESP2)
        err = sub.command("GET", ch1 + ":k")
        assert is_error(err), err
        assert sub.command("UNSUBSCRIBE", ch1) == [b"unsubscribe", ch1.encode(), 1]
        assert pub.publish(ch1, "lost") == 0
        assert pub.publish(ch2, "m3") == 1
        assert sub.read_reply() == [b"message", ch2.encode(), b"m3"]
        assert sub.command("UNSUBSCRIBE") == [b"unsubscribe", ch2.encode(), 0]
        # after the last UNSUBSCRIBE the connection is a normal one again
        assert sub.command("GET", ch1 + ":k") == b"v"
        assert sub.command("SET", ch1 + ":k", "w") == b"OK"
        assert sub.command("GET", ch1 + ":k") == b"w"
        assert sub.command("PING") == b"PONG"
    wait_until(lambda: _numsub(replica_set, ch2) == 0, 5, message="the subscription to go away")


def test_psubscribe_and_punsubscribe(proxy, replica_set):
    base = uniq("pat")
    with proxy.raw(timeout=5) as sub, proxy.client() as pub:
        before = _numpat(replica_set)
        assert sub.command("PSUBSCRIBE", base + ".*") == [b"psubscribe", (base + ".*").encode(), 1]
        assert pub.publish(base + ".one", "x") == 1
        assert sub.read_reply() == [b"pmessage", (base + ".*").encode(), (base + ".one").encode(), b"x"]
        assert pub.publish(base + "-nomatch", "y") == 0
        assert sub.command("PING") == [b"pong", b""]
        assert sub.command("PUNSUBSCRIBE", base + ".*") == [b"punsubscribe", (base + ".*").encode(), 0]
        assert pub.publish(base + ".two", "z") == 0
        assert sub.command("PING") == b"PONG"
    wait_until(lambda: _numpat(replica_set) <= before, 5, message="PUNSUBSCRIBE to reach the master")


def test_ssubscribe_and_sunsubscribe(proxy, replica_set):
    ch = uniq("shard")
    with proxy.raw(timeout=5) as sub, proxy.client() as pub:
        assert sub.command("SSUBSCRIBE", ch) == [b"ssubscribe", ch.encode(), 1]
        assert _shardnumsub(replica_set, ch) == 1
        assert pub.execute_command("SPUBLISH", ch, "s1") == 1
        assert sub.read_reply() == [b"smessage", ch.encode(), b"s1"]
        assert sub.command("SUNSUBSCRIBE", ch) == [b"sunsubscribe", ch.encode(), 0]
        assert pub.execute_command("SPUBLISH", ch, "s2") == 0
        assert sub.command("PING") == b"PONG"


def test_redis_py_pubsub_sync(proxy):
    ch, pat = uniq("pych"), uniq("pypat")
    with proxy.client() as r, proxy.client() as pub:
        ps = r.pubsub()
        try:
            ps.subscribe(ch)
            ps.psubscribe(pat + "*")
            got = []
            deadline = time.monotonic() + 5
            while len(got) < 2 and time.monotonic() < deadline:
                m = ps.get_message(timeout=0.5)
                if m:
                    got.append(m["type"])
            assert sorted(got) == ["psubscribe", "subscribe"]
            assert pub.publish(ch, "a") == 1
            assert pub.publish(pat + "x", "b") == 1
            msgs = []
            while len(msgs) < 2 and time.monotonic() < deadline:
                m = ps.get_message(timeout=0.5)
                if m:
                    msgs.append((m["type"], m["data"]))
            assert msgs == [("message", b"a"), ("pmessage", b"b")]
            ps.ping()
            m = None
            while m is None and time.monotonic() < deadline:
                m = ps.get_message(timeout=0.5)
            assert m is not None and m["type"] == "pong"
        finally:
            ps.close()


def test_resp3_pubsub_push_messages(proxy):
    ch = uniq("r3")
    with proxy.raw(timeout=5) as sub, proxy.client() as pub:
        hello = sub.command("HELLO", "3")
        assert isinstance(hello, dict) and hello[b"proto"] == 3
        start = len(sub.raw)
        reply = sub.command("SUBSCRIBE", ch)
        assert bytes(sub.raw[start:]).startswith(b">3\r\n$9\r\nsubscribe\r\n"), bytes(sub.raw[start:])
        assert reply == [b"subscribe", ch.encode(), 1]
        start = len(sub.raw)
        assert pub.publish(ch, "push-1") == 1
        assert sub.read_reply() == [b"message", ch.encode(), b"push-1"]
        assert bytes(sub.raw[start:]).startswith(b">3\r\n$7\r\nmessage\r\n")
        # RESP3 allows normal commands while subscribed; replies stay in order
        assert sub.command("ECHO", "x") == b"x"
        assert sub.command("UNSUBSCRIBE", ch) == [b"unsubscribe", ch.encode(), 0]


def test_resp3_pubsub_with_redis_py(proxy):
    ch = uniq("py3")
    with proxy.client(protocol=3) as r, proxy.client() as pub:
        ps = r.pubsub()
        try:
            ps.subscribe(ch)
            deadline = time.monotonic() + 5
            m = None
            while m is None and time.monotonic() < deadline:
                m = ps.get_message(timeout=0.5)
            assert m is not None and m["type"] == "subscribe"
            assert pub.publish(ch, "hello3") == 1
            m = None
            while m is None and time.monotonic() < deadline:
                m = ps.get_message(timeout=0.5)
            assert m is not None and m["type"] == "message" and m["data"] == b"hello3", m
        finally:
            ps.close()


async def test_hundred_subscribers_all_receive(proxy, replica_set):
    ch = uniq("fan")
    clients = [aclient(proxy.port, timeout=10) for _ in range(100)]
    pubsubs = [c.pubsub() for c in clients]
    try:
        await asyncio.wait_for(asyncio.gather(*(ps.subscribe(ch) for ps in pubsubs)), 15)

        async def confirm(ps):
            while True:
                m = await ps.get_message(timeout=1.0)
                if m and m["type"] == "subscribe":
                    return
        await asyncio.wait_for(asyncio.gather(*(confirm(ps) for ps in pubsubs)), 15)
        assert _numsub(replica_set, ch) == 100
        pub = aclient(proxy.port)
        try:
            for i in range(3):
                assert await pub.publish(ch, f"fan-{i}") == 100
        finally:
            await pub.aclose()

        async def receive(ps):
            got = []
            while len(got) < 3:
                m = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if m:
                    got.append(m["data"])
            return got
        results = await asyncio.wait_for(asyncio.gather(*(receive(ps) for ps in pubsubs)), 15)
        assert all(r == [b"fan-0", b"fan-1", b"fan-2"] for r in results), \
            [r for r in results if r != [b"fan-0", b"fan-1", b"fan-2"]][:3]
    finally:
        for ps in pubsubs:
            await ps.aclose()
        for c in clients:
            await c.aclose()
    wait_until(lambda: _numsub(replica_set, ch) == 0, 10, message="100 subscriptions to go away")


def test_subscriber_keeps_receiving_during_other_traffic(proxy):
    ch = uniq("busy")
    n_msgs = 200
    stop = threading.Event()
    errors: list[str] = []
    ops = [0]

    def traffic(tid: int) -> None:
        try:
            with proxy.client() as r:
                i = 0
                while not stop.is_set():
                    key = f"{ch}:t{tid}"
                    r.set(key, i)
                    if r.get(key) != str(i).encode():
                        errors.append(f"traffic {tid}: wrong value")
                    p = r.pipeline(transaction=False)
                    p.incr(key + ":n").get(key)
                    p.execute()
                    i += 1
                    ops[0] += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(f"traffic {tid}: {exc!r}")

    with proxy.raw(timeout=10) as sub, proxy.client() as pub:
        assert sub.command("SUBSCRIBE", ch) == [b"subscribe", ch.encode(), 1]
        workers = [threading.Thread(target=traffic, args=(t,)) for t in range(8)]
        for w in workers:
            w.start()
        try:
            for i in range(n_msgs):
                assert pub.publish(ch, f"m{i}") == 1
            got = [sub.read_reply() for _ in range(n_msgs)]
            wait_until(lambda: ops[0] > 0 or errors, 10, message="the other clients' traffic")
        finally:
            stop.set()
            for w in workers:
                w.join(10)
        assert got == [[b"message", ch.encode(), f"m{i}".encode()] for i in range(n_msgs)]
        assert not errors, errors[:5]
        assert ops[0] > 0, "the other clients made no progress"


def test_reset_and_quit_while_subscribed(proxy, replica_set):
    ch = uniq("rst")
    with proxy.raw(timeout=5) as sub, proxy.client() as pub:
        assert sub.command("SUBSCRIBE", ch)[0] == b"subscribe"
        assert sub.command("PSUBSCRIBE", ch + "*")[0] == b"psubscribe"
        assert sub.command("RESET") == b"RESET"
        assert pub.publish(ch, "after-reset") == 0, "RESET did not end the subscriptions"
        assert sub.command("SET", ch + ":k", "1") == b"OK"
        assert sub.command("GET", ch + ":k") == b"1"
        assert sub.command("CLIENT", "GETNAME") is None
    with proxy.raw(timeout=5) as sub, proxy.client() as pub:
        assert sub.command("SUBSCRIBE", ch)[0] == b"subscribe"
        sub.send(encode_command("QUIT"))
        rest = sub.read_until_closed(5)
        assert rest == b"+OK\r\n", f"QUIT while subscribed: the client received {rest!r}"
    wait_until(lambda: _numsub(replica_set, ch) == 0, 5, message="the subscription to end with QUIT")


def test_subscriber_disconnect_releases_the_master_subscription(proxy, replica_set):
    ch = uniq("gone")
    subs = [proxy.raw(timeout=5) for _ in range(5)]
    try:
        for s in subs:
            assert s.command("SUBSCRIBE", ch)[0] == b"subscribe"
        assert _numsub(replica_set, ch) == 5
    finally:
        for s in subs:
            s.close()
    wait_until(lambda: _numsub(replica_set, ch) == 0, 5, message="the master to drop 5 closed subscribers")


def test_resp3_writes_while_subscribed_keep_their_place_among_messages(proxy):
    """RAW mode frames the stream to find a write's reply (the write is followed by a
    marker PING, see Upstream.raw_write): replies and messages still arrive exactly as
    Redis sent them, a message larger than one read passes through, and a message whose
    payload is the marker's text is not taken for the marker's reply."""
    ch, k = uniq("r3w"), uniq("r3w")
    big = b"b" * (3 << 20)
    with proxy.raw(timeout=10) as sub, proxy.client() as pub:
        assert isinstance(sub.command("HELLO", "3"), dict)
        assert sub.command("SUBSCRIBE", ch) == [b"subscribe", ch.encode(), 1]
        assert pub.publish(ch, big) == 1
        assert sub.read_reply() == [b"message", ch.encode(), big]
        # the first marker on this connection carries "__redis-raft-proxy:1__"
        sub.send(encode_command("PUBLISH", ch, "__redis-raft-proxy:1__") + encode_command("SET", k, "1")
                 + encode_command("GET", k) + encode_command("PUBLISH", ch, "after"))
        got = sub.read_replies(6)
        assert got == [[b"message", ch.encode(), b"__redis-raft-proxy:1__"], 1, b"OK", b"1",
                       [b"message", ch.encode(), b"after"], 1], got
        assert sub.command("PING") == b"PONG"
        assert sub.command("UNSUBSCRIBE", ch) == [b"unsubscribe", ch.encode(), 0]


@pytest.mark.parametrize("protocol", [2, 3])
def test_refusals_while_subscribed_keep_their_place_among_replies(proxy, protocol):
    """A command the proxy refuses itself on a subscribed connection (MULTI, SHUTDOWN)
    is answered after the replies the stream still owes, as Redis orders them: a
    refusal written at once would overtake the SUBSCRIBE's confirmation."""
    ch = uniq("rf")
    with proxy.raw(timeout=5) as sub:
        if protocol == 3:
            assert isinstance(sub.command("HELLO", "3"), dict)
        sub.send(encode_command("SUBSCRIBE", ch) + encode_command("MULTI") + encode_command("SHUTDOWN")
                 + encode_command("PING", "after"))
        got = sub.read_replies(4)
        assert got[0] == [b"subscribe", ch.encode(), 1], got
        assert is_error(got[1]) and "MULTI" in str(got[1]), got
        assert is_error(got[2]) and "SHUTDOWN" in str(got[2]), got
        assert got[3] == ([b"pong", b"after"] if protocol == 2 else b"after"), got
        assert sub.command("UNSUBSCRIBE", ch) == [b"unsubscribe", ch.encode(), 0]
