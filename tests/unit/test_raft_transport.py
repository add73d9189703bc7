"""raft/transport.py: the aiohttp route and client on real localhost sockets."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from raft import codec
from raft.cluster import ClusterMeta
from raft.messages import AppendEntries, Entry, EntryKind, Message, TimeoutNow
from raft.node import RaftNode
from raft.transport import SECRET_HEADER, HttpTransport, add_raft_routes


class Sink:
    secret = "s3cret"

    def __init__(self) -> None:
        self.got: list[Message] = []

    def receive(self, msg: Message) -> None:
        self.got.append(msg)


async def eventually(pred, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def serve_app(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def serve(node) -> TestServer:
    app = web.Application()
    add_raft_routes(app, node)
    return await serve_app(app)


def transport_to(server: TestServer, **kw) -> HttpTransport:
    """Node "a"'s transport, its peer "b" being `server`."""
    return HttpTransport("a", {"b": str(server.make_url("")).rstrip("/")}, "s3cret", **{"timeout": 0.3, **kw})


async def test_route_without_a_secret_refuses_everything() -> None:
    """A node with an empty secret: an empty or missing header is no match (before, the
    empty header matched the empty secret and Raft messages could be injected)."""
    sink = Sink()
    sink.secret = ""
    server = await serve(sink)
    msg = TimeoutNow(3, "a", "b")
    try:
        async with aiohttp.ClientSession() as s:
            for headers in ({}, {SECRET_HEADER: ""}):
                async with s.post(server.make_url("/raft/message"), data=codec.dumps(msg), headers=headers) as r:
                    assert r.status == 403
                async with s.get(server.make_url("/raft/cluster"), headers=headers) as r:
                    assert r.status == 403
        assert sink.got == []
    finally:
        await server.close()


async def test_route_checks_secret_and_body() -> None:
    sink = Sink()
    server = await serve(sink)
    url = str(server.make_url("/raft/message"))
    msg = TimeoutNow(3, "a", "b")
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(url, data=codec.dumps(msg)) as r:
                assert r.status == 403
            async with s.post(url, data=codec.dumps(msg), headers={SECRET_HEADER: "wrong"}) as r:
                assert r.status == 403
            async with s.post(url, data=b"{not json", headers={SECRET_HEADER: "s3cret"}) as r:
                assert r.status == 400
            bad_version = json.dumps({**codec.encode(msg), "v": 99}).encode()
            async with s.post(url, data=bad_version, headers={SECRET_HEADER: "s3cret"}) as r:
                assert r.status == 400
            assert sink.got == []
            async with s.post(url, data=codec.dumps(msg), headers={SECRET_HEADER: "s3cret"}) as r:
                assert r.status == 204
        assert sink.got == [msg]
    finally:
        await server.close()


async def test_client_delivers_in_order_and_drops_unreachable() -> None:
    sink = Sink()
    server = await serve(sink)
    base = str(server.make_url("")).rstrip("/")
    t = HttpTransport("a", {"b": base, "dead": "http://127.0.0.1:9"}, "s3cret", timeout=0.3)
    await t.start()
    try:
        msgs = [
            AppendEntries(1, "a", "b", i, 1, (Entry(1, i + 1, EntryKind.NORMAL, b"\x00\xff"),), i) for i in range(5)
        ]
        for m in msgs:
            t.send("b", m)
        t.send("dead", msgs[0])
        t.send("unknown", msgs[0])
        await eventually(lambda: len(sink.got) == 5 and t.dropped >= 2)
        assert sink.got == msgs
    finally:
        await t.close()
        await server.close()


async def test_three_nodes_over_http(tmp_path) -> None:
    """The real wiring: RaftNodes behind aiohttp admin apps on localhost ports."""
    apps: dict[str, web.Application] = {}
    servers: dict[str, TestServer] = {}
    ids = ["p1", "p2", "p3"]
    for nid in ids:
        apps[nid] = web.Application()
        servers[nid] = TestServer(apps[nid], host="127.0.0.1")
    # Bind ports first so every node knows every URL.
    nodes: dict[str, RaftNode] = {}
    applied: dict[str, list[bytes]] = {nid: [] for nid in ids}
    ports = {}
    for nid in ids:
        srv = servers[nid]

        class Proxy:
            secret = "s3cret"

            def __init__(self, key: str) -> None:
                self.key = key

            def receive(self, msg: Message) -> None:
                nodes[self.key].receive(msg)

            def cluster_info(self) -> ClusterMeta | None:
                node = nodes.get(self.key)
                return node.cluster_info() if node is not None else None

            def peer_meta(self, src: str, meta: ClusterMeta | None) -> str | None:
                node = nodes.get(self.key)
                return node.peer_meta(src, meta) if node is not None else None

        add_raft_routes(apps[nid], Proxy(nid))
        await srv.start_server()
        ports[nid] = srv.port
    peers = {nid: f"http://127.0.0.1:{ports[nid]}" for nid in ids}
    try:
        for i, nid in enumerate(ids):
            nodes[nid] = RaftNode(
                nid, peers, str(tmp_path / nid), "s3cret",
                applied[nid].append, lambda: b"[]", lambda _d: None,
                tick_ms=20, election_ticks=10, rng=random.Random(i),
            )
            await nodes[nid].start()
        await eventually(lambda: sum(n.role == "leader" and n.lease_held() for n in nodes.values()) == 1)
        leader = next(n for n in nodes.values() if n.role == "leader")
        await leader.propose(b"hello", timeout=5)
        await eventually(lambda: all(applied[n] == [b"hello"] for n in ids))
        assert all(n.leader_id == leader.node_id for n in nodes.values())
        # The cluster id went out with the messages (headers): every node knows every other has it.
        await eventually(lambda: all(n.cluster.seeded == set(ids) for n in nodes.values()))
        assert len({n.cluster.cluster_id for n in nodes.values()}) == 1
    finally:
        for n in nodes.values():
            await n.stop()
        for srv in servers.values():
            await srv.close()


async def counting_server(sink: Sink, **routes) -> tuple[TestServer, list[str]]:
    """A peer serving the Raft routes (with `routes`, e.g. on_app) that lists every HTTP request."""
    requests: list[str] = []

    @web.middleware
    async def count(request: web.Request, handler):
        requests.append(f"{request.method} {request.path}")
        return await handler(request)

    app = web.Application(middlewares=[count])
    add_raft_routes(app, sink, **routes)
    return await serve_app(app), requests


async def test_messages_share_one_stream_not_a_request_each() -> None:
    """Issue 16: a heartbeat used to be an HTTP POST (request + response, both sides); now every
    message to a peer travels on one WebSocket held open, longer than the request timeout."""
    sink = Sink()
    server, requests = await counting_server(sink)
    t = transport_to(server)
    await t.start()
    try:
        msgs = [TimeoutNow(i, "a", "b") for i in range(12)]
        for m in msgs:   # spread over more than the 0.3 s timeout: the stream outlives it
            t.send("b", m)
            await asyncio.sleep(0.05)
        await eventually(lambda: len(sink.got) == len(msgs))
        assert sink.got == msgs
        assert requests == ["GET /raft/stream"]
        assert t.dropped == 0
    finally:
        await t.close()
        await server.close()


async def test_stream_refused_without_secret_and_falls_back_to_post_for_an_older_peer() -> None:
    """The upgrade needs the secret like any /raft/ request; a peer without the route (an older
    version) still gets every message, by POST."""
    sink = Sink()
    server = await serve(sink)
    try:
        async with aiohttp.ClientSession() as s:
            for headers in ({}, {SECRET_HEADER: "wrong"}):
                async with s.get(server.make_url("/raft/stream"), headers=headers) as r:
                    assert r.status == 403
        app = web.Application()     # an older peer: POST /raft/message only

        async def post_only(request: web.Request) -> web.Response:
            assert request.headers.get(SECRET_HEADER) == "s3cret"
            sink.receive(codec.loads(await request.read()))
            return web.Response(status=204)

        app.router.add_post("/raft/message", post_only)
        old = await serve_app(app)
        t = transport_to(old)
        await t.start()
        try:
            msgs = [TimeoutNow(i, "a", "b") for i in range(3)]
            for m in msgs:
                t.send("b", m)
                await eventually(lambda m=m: sink.got and sink.got[-1] == m)
            assert sink.got == msgs
        finally:
            await t.close()
            await old.close()
    finally:
        await server.close()


async def test_application_payloads_ride_the_stream_not_a_request_each() -> None:
    """Issue 16: a follower's report to the leader was an HTTP POST (request + response, both
    sides) several times a second; on a stream both sides agreed on, it goes in a frame."""
    sink, got = Sink(), []
    server, requests = await counting_server(sink, on_app=got.append)
    t = transport_to(server)
    await t.start()
    try:
        assert not t.send_app("b", {"report": 0}), "no stream open yet: the caller sends it its own way"
        t.send("b", TimeoutNow(1, "a", "b"))           # Raft traffic opens the stream
        await eventually(lambda: len(sink.got) == 1)
        payloads = [{"report": {"node": "a", "n": i}} for i in range(5)]
        for p in payloads:
            assert t.send_app("b", p)
        t.send("b", TimeoutNow(2, "a", "b"))
        await eventually(lambda: len(got) == len(payloads) and len(sink.got) == 2)
        assert got == payloads
        assert requests == ["GET /raft/stream"]
        assert not t.send_app("c", {"report": 0})       # no such peer
    finally:
        await t.close()
        await server.close()


async def test_a_stream_without_application_payloads_is_not_given_any() -> None:
    """A peer whose stream did not agree on them (a version before them: a rolling upgrade)
    would drop them unread, so send_app declines and the caller uses its own route."""
    sink = Sink()
    server = await serve(sink)      # add_raft_routes without on_app: the stream as it was
    t = transport_to(server)
    await t.start()
    try:
        t.send("b", TimeoutNow(1, "a", "b"))
        await eventually(lambda: len(sink.got) == 1)
        assert not t.send_app("b", {"report": {}})
    finally:
        await t.close()
        await server.close()


async def test_heartbeats_go_compact_on_a_stream_both_sides_agreed_on() -> None:
    """Issue 16: after the first frame (JSON, with the cluster headers), heartbeats and their
    answers travel as compact binary frames, which the route reads as it reads JSON ones."""
    sink, frames = Sink(), []
    app = web.Application()
    add_raft_routes(app, sink, on_app=lambda body: None)
    server = await serve_app(app)
    t = transport_to(server)
    real_send = aiohttp.ClientWebSocketResponse.send_bytes

    async def spy(self, data, *args, **kw):
        frames.append(bytes(data))
        return await real_send(self, data, *args, **kw)

    aiohttp.ClientWebSocketResponse.send_bytes = spy
    await t.start()
    try:
        beats = [AppendEntries(2, "a", "b", i, 2, (), i, ctx=i, lease_ticks=8, echo=i - 1, echo_boot=9)
                 for i in range(1, 6)]
        for m in beats:
            t.send("b", m)
            await eventually(lambda m=m: sink.got and sink.got[-1] == m)
        assert sink.got == beats
        assert frames[0][:1] == b"{" and all(f[:1] == codec.COMPACT_MAGIC for f in frames[1:]), frames
    finally:
        aiohttp.ClientWebSocketResponse.send_bytes = real_send
        await t.close()
        await server.close()


async def test_a_peer_gone_before_the_stream_upgrade_is_answered_logs_one_line_not_a_traceback(caplog) -> None:
    """A proxy killed while it opened its stream (its upgrade request sent, then its side
    closed): the upgrade's reply cannot be written. That is routine when peers restart,
    so it is one info line, not aiohttp's error-level traceback."""
    import logging
    import socket

    server = await serve(Sink())
    request = (f"GET /raft/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               f"{SECRET_HEADER}: {Sink.secret}\r\n\r\n").encode()
    caplog.set_level(logging.INFO)
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.sendall(request)
                s.shutdown(socket.SHUT_WR)     # gone before the server could answer
            await eventually(lambda: any("raft_stream_peer_gone" in r.getMessage() for r in caplog.records))
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert not errors, errors
            caplog.clear()
    finally:
        await server.close()


async def test_shutdown_closes_the_peers_streams_instead_of_waiting_for_them() -> None:
    """A peer's stream is a request that never ends by itself: aiohttp's shutdown waited until
    the stream's heartbeat gave up on it (about 1.5 s, then the connection cut without a close
    frame) before a stopping proxy could exit. Shutdown now closes each stream with 1001 (going
    away) at once."""
    app = web.Application()
    add_raft_routes(app, Sink())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/raft/stream", headers={SECRET_HEADER: Sink.secret})
        got = asyncio.get_running_loop().create_task(ws.receive())
        async with asyncio.timeout(10):
            await runner.cleanup()
        msg = await got
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.GOING_AWAY, msg
        assert msg.extra == "shutting down"


async def test_a_stream_that_carries_nothing_is_closed_and_reopened_by_the_next_message(monkeypatch) -> None:
    """Issue 16: once a leader is elected nothing flows between two followers, and an open
    stream costs both ends a ping and a pong a second: one idle for STREAM_IDLE_S is
    closed (the peer's end sees it end), one in use is not, and the next message opens
    another."""
    import raft.transport as transport_mod

    # (an idle time ten sends long: a loaded machine's late wake-up between two sends
    # must not look like an idle stream)
    monkeypatch.setattr(transport_mod, "STREAM_IDLE_S", 1.0)
    sink = Sink()
    server, requests = await counting_server(sink)
    t = transport_to(server)
    await t.start()
    try:
        for i in range(12):      # in use for longer than the idle time: stays open
            t.send("b", TimeoutNow(i, "a", "b"))
            await asyncio.sleep(0.1)
        await eventually(lambda: len(sink.got) == 12)
        assert requests == ["GET /raft/stream"] and t._links["b"].ws is not None
        ws = t._links["b"].ws
        await eventually(lambda: ws.closed)                     # then idle: closed
        assert t._links["b"].ws is None and requests == ["GET /raft/stream"]
        t.send("b", TimeoutNow(13, "a", "b"))
        await eventually(lambda: len(sink.got) == 13)
        assert requests == ["GET /raft/stream", "GET /raft/stream"] and t.dropped == 0
    finally:
        await t.close()
        await server.close()


async def test_our_stream_sends_no_pings_and_bounds_unacknowledged_writes() -> None:
    """Issue 16: a WebSocket ping a second on each of our streams cost both ends two
    wake-ups a second, idle. Instead the socket carries TCP_USER_TIMEOUT (the kernel ends
    a stream whose writes the peer's host does not acknowledge: see
    tests/integration/test_raft_stream_liveness.py), and the peer sees no ping."""
    import socket

    from raft.transport import STREAM_PROTOCOL, STREAM_UNACKED_S

    seen: list[aiohttp.WSMsgType] = []

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False, protocols=(STREAM_PROTOCOL,))
        await ws.prepare(request)
        async for m in ws:
            seen.append(m.type)
        return ws

    app = web.Application()
    app.router.add_get("/raft/stream", stream)
    server = await serve_app(app)
    t = transport_to(server)
    await t.start()
    try:
        t.send("b", TimeoutNow(1, "a", "b"))
        await eventually(lambda: seen == [aiohttp.WSMsgType.BINARY])
        sock = t._links["b"].ws.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == int(STREAM_UNACKED_S * 1000)
        await asyncio.sleep(1.6)        # an absence: aiohttp's heartbeat would have pinged at 1 s
        assert seen == [aiohttp.WSMsgType.BINARY]
    finally:
        await t.close()
        await server.close()
