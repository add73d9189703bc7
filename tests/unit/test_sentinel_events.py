"""proxy/sentinel.py: pub/sub events derived from health and committed topologies,
and redis-py's Sentinel client against a real listening endpoint (in process)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from proxy.sentinel import PeerInfo, SentinelService, sentinel_id
from proxy.routing.topology import Topology
from test_raft_transport import eventually
from test_sentinel_protocol import M, R1, R2, URLS, call, connect, make, make_server


class Sub:
    """A subscribed session (PSUBSCRIBE *) whose messages are collected."""

    def __init__(self, svc) -> None:
        self.s = connect(svc)
        call(self.s, "PSUBSCRIBE", "*")
        self.mark = len(self.s.transport.data)

    def events(self) -> list[tuple[str, str]]:
        import hiredis

        r = hiredis.Reader()
        r.feed(bytes(self.s.transport.data[self.mark:]))
        self.mark = len(self.s.transport.data)
        out = []
        while (m := r.gets()) is not False:
            assert m[0] == b"pmessage"
            out.append((m[2].decode(), m[3].decode()))
        return out


def go_down(server, addr, seconds=5.0):
    if hasattr(server, "down"):
        server.down.add(addr)
    server.health.nodes[addr].last_ok = time.monotonic() - seconds


def test_failover_announces_odown_switch_master_and_replicas():
    server, svc = make()
    sub = Sub(svc)
    go_down(server, M)
    svc._tick()
    assert sub.events() == [("+sdown", "master mymaster 127.0.0.1 7000")]
    new = Topology(5, R1, (M, R2))
    server.router.set_topology(new)
    svc.on_topology(new, Topology(4, M, (R1, R2)), f"failover: {M} objectively down")
    assert sub.events() == [
        ("+odown", "master mymaster 127.0.0.1 7000 #quorum 2/2"),
        ("+switch-master", "mymaster 127.0.0.1 7000 127.0.0.1 7001"),
        ("+slave", "slave 127.0.0.1:7000 127.0.0.1 7000 @ mymaster 127.0.0.1 7001"),
        ("+slave", "slave 127.0.0.1:7002 127.0.0.1 7002 @ mymaster 127.0.0.1 7001"),
        ("+sdown", "slave 127.0.0.1:7000 127.0.0.1 7000 @ mymaster 127.0.0.1 7001"),
    ]
    # the same commit seen again (hook and poll both) announces nothing twice
    svc.on_topology(new, None, "")
    svc._tick()
    assert sub.events() == []
    # the old master returns (as a replica)
    server.health.nodes[M].last_ok = time.monotonic()
    svc._tick()
    assert sub.events() == [("-sdown", "slave 127.0.0.1:7000 127.0.0.1 7000 @ mymaster 127.0.0.1 7001")]


def test_switchover_announces_switch_master_only():
    server, svc = make()
    sub = Sub(svc)
    paused = Topology(5, M, (R1, R2), writes_paused=True)
    server.router.set_topology(paused)
    svc.on_topology(paused, None, "switchover to R1: pause writes")
    assert sub.events() == []
    new = Topology(6, R2, (M, R1))
    server.router.set_topology(new)
    svc.on_topology(new, paused, f"switchover to {R2}")
    ev = sub.events()
    assert ev[0] == ("+switch-master", "mymaster 127.0.0.1 7000 127.0.0.1 7002")
    assert [e[0] for e in ev[1:]] == ["+slave", "+slave"]


def test_tick_notices_a_commit_without_the_hook():
    server, svc = make()
    sub = Sub(svc)
    server.router.set_topology(Topology(7, R2, (M, R1)))
    svc._tick()
    assert sub.events()[0] == ("+switch-master", "mymaster 127.0.0.1 7000 127.0.0.1 7002")


def test_odown_needs_a_quorum_of_proxies():
    server, svc = make()
    sub = Sub(svc)
    go_down(server, M)
    svc._tick()
    assert sub.events() == [("+sdown", "master mymaster 127.0.0.1 7000")]
    peer = svc.peers["proxy-2"] = PeerInfo("proxy-2", URLS["proxy-2"], "127.0.0.1")
    svc.apply_peer_status(peer, {"sentinel": {"port": 26380}, "topology": {"master": M, "master_up": False},
                                 "lease": {"held": True}})
    svc._tick()
    assert sub.events() == [("+odown", "master mymaster 127.0.0.1 7000 #quorum 2/2")]
    assert b"status=odown" in call(connect(svc), "INFO", "sentinel")
    server.health.nodes[M].last_ok = time.monotonic()
    svc._tick()
    assert sub.events() == [("-sdown", "master mymaster 127.0.0.1 7000"), ("-odown", "master mymaster 127.0.0.1 7000")]


def test_replica_sdown_events():
    server, svc = make()
    sub = Sub(svc)
    go_down(server, R2)
    svc._tick()
    assert sub.events() == [("+sdown", "slave 127.0.0.1:7002 127.0.0.1 7002 @ mymaster 127.0.0.1 7000")]


def test_slow_subscriber_is_dropped():
    server, svc = make()
    sub = Sub(svc)
    sub.s.transport.get_write_buffer_size = lambda: 10**9
    svc.publish("+sdown", "master mymaster 127.0.0.1 7000")
    assert sub.s.closed and sub.s not in svc.sessions


# ---------------------------------------------------------------------------
# redis-py's Sentinel client against the endpoint listening on a real socket
# ---------------------------------------------------------------------------

@pytest.fixture
async def live():
    server = make_server()
    server.controller.peer_url = lambda _n: None      # no peers to poll in this test
    server.down = set()

    async def probe():                                # the nodes not marked down keep answering
        while True:
            for addr, st in server.health.nodes.items():
                if addr not in server.down:
                    st.last_ok = time.monotonic()
            await asyncio.sleep(0.02)

    prober = asyncio.get_running_loop().create_task(probe())
    svc = SentinelService(server, 0, "mymaster", bind="127.0.0.1")
    await svc.start()
    assert svc.port and svc.status_doc()["port"] == svc.port
    try:
        yield server, svc
    finally:
        prober.cancel()
        await svc.stop()


@pytest.mark.parametrize("protocol", [2, 3])
async def test_redis_py_sentinel_client(live, protocol):
    server, svc = live
    sentinel = Sentinel([("127.0.0.1", svc.port)], socket_timeout=2, protocol=protocol,
                        sentinel_kwargs={"protocol": protocol, "socket_timeout": 2})
    assert await sentinel.discover_master("mymaster") == ("127.0.0.1", 7000)
    assert sorted(await sentinel.discover_slaves("mymaster")) == [("127.0.0.1", 7001), ("127.0.0.1", 7002)]
    s = sentinel.sentinels[0]
    state = await s.sentinel_master("mymaster")
    assert state["is_master"] and not state["is_sdown"] and state["num-slaves"] == 2 and state["quorum"] == 2
    host, port = await s.sentinel_get_master_addr_by_name("mymaster")
    assert (host if isinstance(host, str) else host.decode(), port) == ("127.0.0.1", 7000)
    assert await s.sentinel_get_master_addr_by_name("nope") is None
    with pytest.raises(aioredis.ResponseError, match="No such master with that name"):
        await s.sentinel_master("nope")
    # redis-py maps this reply to False (it compares with "OK"), as it does with a real Sentinel
    ok = await s.execute_command("SENTINEL", "CKQUORUM", "mymaster")
    assert (ok if isinstance(ok, str) else ok.decode()).startswith("OK 2 usable Sentinels")
    assert await s.execute_command("SENTINEL MYID") in (sentinel_id("proxy-1"), sentinel_id("proxy-1").encode())
    # a master that is down is not handed out (redis-py checks the flags)
    go_down(server, M)
    svc._tick()
    from redis.asyncio.sentinel import MasterNotFoundError
    with pytest.raises(MasterNotFoundError):
        await sentinel.discover_master("mymaster")
    # a replica that is down is filtered out
    server.down.discard(M)
    server.health.nodes[M].last_ok = time.monotonic()
    go_down(server, R2)
    assert await sentinel.discover_slaves("mymaster") == [("127.0.0.1", 7001)]
    for c in sentinel.sentinels:
        await c.aclose()


async def test_redis_py_pubsub_receives_switch_master(live):
    server, svc = live
    client = aioredis.Redis(host="127.0.0.1", port=svc.port, socket_timeout=2)
    ps = client.pubsub()
    await ps.subscribe("+switch-master")
    msg = await ps.get_message(timeout=2)
    assert msg["type"] == "subscribe"
    new = Topology(5, R1, (M, R2))
    server.router.set_topology(new)
    svc.on_topology(new, None, "switchover")
    msg = None
    deadline = time.monotonic() + 3
    while msg is None and time.monotonic() < deadline:
        msg = await ps.get_message(ignore_subscribe_messages=True, timeout=1)
    assert msg is not None and msg["channel"] == b"+switch-master"
    assert msg["data"] == b"mymaster 127.0.0.1 7000 127.0.0.1 7001"
    await ps.aclose()
    await client.aclose()
    await asyncio.sleep(0)


async def serve_peer(routes: dict):
    """A stand-in for another proxy's admin port answering GET `routes` (path -> handler):
    its runner (to clean up) and its URL."""
    from aiohttp import web

    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def test_peers_are_read_at_status_sentinel_and_an_older_peer_at_status():
    """Issue 16: the Sentinel port reads its peers every 2 s: /status/sentinel, the few
    fields it uses, not the whole /status (a millisecond to build); a peer of a version
    without that route answers 404 and is read at /status from then on."""
    from types import SimpleNamespace

    from aiohttp import web

    from proxy.sentinel import SENTINEL_PEER_PATH, peer_status
    from raft.transport import http_session

    server, svc = make()
    server.sentinel = svc
    new_doc = peer_status(server)
    assert new_doc["topology"] == {"master": M, "master_up": True} and new_doc["sentinel"]["port"] == 26379
    seen: list[str] = []

    async def answer(request):
        seen.append(request.path)
        return web.json_response(new_doc)

    apps = {"proxy-2": [SENTINEL_PEER_PATH, "/status"], "proxy-3": ["/status"]}     # proxy-3: older
    runners, urls = [], {}
    for name, paths in apps.items():
        runner, urls[name] = await serve_peer({path: answer for path in paths})
        runners.append(runner)
    server.controller = SimpleNamespace(peer_url=urls.get)
    svc._http = http_session(1.0, None)
    try:
        for _ in range(2):
            for name in apps:
                await svc._poll_one(name)
        # proxy-3's first answer was a 404 (no handler ran): read at /status from the 2nd poll
        assert seen == [SENTINEL_PEER_PATH, SENTINEL_PEER_PATH, "/status"]
        assert svc.peers["proxy-2"].last_ok > 0 and not svc.peers["proxy-2"].full_status
        assert svc.peers["proxy-3"].full_status and svc.peers["proxy-3"].last_ok > 0   # the 2nd poll
        assert svc.peers["proxy-2"].master == M and svc.peers["proxy-2"].port == 26379
    finally:
        await svc._http.close()
        for runner in runners:
            await runner.cleanup()



async def _stops_growing(seen: list, quiet_s: float = 0.15, timeout: float = 5.0) -> int:
    """How many reads `seen` holds once none came for `quiet_s` (a read answers in 0.05 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = -1
    while len(seen) != last:
        assert loop.time() < deadline, "the peers were still being read"
        last = len(seen)
        await asyncio.sleep(quiet_s)
    return last


async def test_peers_are_read_only_while_clients_are_around(monkeypatch):
    """Issue 16: an idle Sentinel port reads the other proxies not at all (it used to every
    2 s: a request out and one in per peer). A client arriving at an idle port has its first
    command answered once they have been read, so SENTINEL SENTINELS and CKQUORUM never
    answer from a stale view; reading stops `PEER_LINGER_S` after the last client left."""
    from types import SimpleNamespace

    from aiohttp import web

    import proxy.sentinel.service as sentinel_mod
    from proxy.sentinel import SENTINEL_PEER_PATH, peer_status

    monkeypatch.setattr(sentinel_mod, "PEER_POLL_S", 0.05)
    monkeypatch.setattr(sentinel_mod, "PEER_LINGER_S", 0.3)
    server = make_server()
    server.down = set()
    seen: list[str] = []
    runners, urls = [], {}
    for i, name in enumerate(("proxy-2", "proxy-3")):
        doc = peer_status(SimpleNamespace(**{**vars(server), "cfg": SimpleNamespace(node=name),
                                             "sentinel": SimpleNamespace(status_doc=lambda p=26380 + i: {"port": p})}))

        async def answer(request, name=name, doc=doc):
            seen.append(name)
            await asyncio.sleep(0.05)       # the first command waits for this
            return web.json_response(doc)

        runner, urls[name] = await serve_peer({SENTINEL_PEER_PATH: answer})
        runners.append(runner)
    server.controller = SimpleNamespace(peer_url=urls.get)
    svc = SentinelService(server, 0, "mymaster", bind="127.0.0.1")
    await svc.start()
    try:
        await asyncio.sleep(0.3)
        assert seen == []                                   # idle: nobody is asked
        client = aioredis.Redis(host="127.0.0.1", port=svc.port, socket_timeout=2)
        sentinels = await client.execute_command("SENTINEL", "SENTINELS", "mymaster")
        assert sorted(seen[:2]) == ["proxy-2", "proxy-3"]
        assert len(sentinels) == 2                          # the first command saw both proxies
        ok = await client.execute_command("SENTINEL", "CKQUORUM", "mymaster")
        assert (ok if isinstance(ok, str) else ok.decode()).startswith("OK 3 usable Sentinels")
        await eventually(lambda: len(seen) >= 6)            # read again while it stays
        await client.aclose()
        await eventually(lambda: not svc.sessions)
        await eventually(lambda: not svc._peers_wanted())   # the linger is over
        settled = await _stops_growing(seen)                # (a poll in flight ends)
        await asyncio.sleep(0.3)
        assert len(seen) == settled                          # idle again: no more reads
        # a client arriving while the poller pauses between reads (the last client left
        # during the pause) does not wait for the pause to end
        monkeypatch.setattr(sentinel_mod, "PEER_POLL_S", 30.0)
        monkeypatch.setattr(sentinel_mod, "PEER_POLL_FAST_S", 30.0)     # (no probes here: the master looks down)
        client = aioredis.Redis(host="127.0.0.1", port=svc.port, socket_timeout=5)
        await client.ping()
        await eventually(lambda: len(seen) >= settled + 2)     # read once, then a 30 s pause
        await client.aclose()
        await eventually(lambda: not svc.sessions and not svc._peers_wanted())     # the linger is over
        client = aioredis.Redis(host="127.0.0.1", port=svc.port, socket_timeout=5)
        started = time.monotonic()
        assert len(await client.execute_command("SENTINEL", "SENTINELS", "mymaster")) == 2
        assert time.monotonic() - started < 3.0 and len(seen) >= settled + 4
        await client.aclose()
    finally:
        await svc.stop()
        for runner in runners:
            await runner.cleanup()
