"""How Raft messages travel between nodes.

``Transport.send(to, msg)`` never blocks and never raises: Raft tolerates
loss, so a message that cannot be delivered quickly is dropped. Two
implementations: :class:`InMemoryNetwork` for tests (with cut links) and
:class:`HttpTransport` over aiohttp, whose server side is
:func:`add_raft_routes` (POST /raft/message on the admin app).

Both carry the sender's cluster id and seeded set with every message (HTTP:
headers) and answer ``cluster_info`` (HTTP: GET /raft/cluster); see raft.cluster.

Over HTTP each node keeps one WebSocket open to each peer (GET /raft/stream,
authenticated like every /raft/ request at the upgrade) and sends every batch
as one binary frame: a heartbeat costs one small write instead of an HTTP
request and response on both sides (the idle cost of a proxy; issue 16). A
frame is ``{"msgs": [...]}`` plus ``"meta"`` (the cluster headers) whenever
those changed on this connection; the receiver checks the sender's cluster id
on every frame as it did on every POST. A peer without the route (a version
before it, during a rolling upgrade) gets POST /raft/message as before, and
is asked again every ``STREAM_RETRY_S``.

A stream opened with the WebSocket subprotocol ``STREAM_PROTOCOL`` (both sides
of this version offer it) sends heartbeats and their answers as compact binary
frames (``codec.compact_frame``) rather than JSON when nothing else goes with
them, and also carries the application's own small payloads (``send_app``: a
follower's view of the Redis nodes for the leader) in the same frames as the
Raft messages under ``"app"``, instead of an HTTP request and response each
(issue 16). To a peer whose stream did not agree on it, frames stay JSON and
``send_app`` answers False: the application uses its own route.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import weakref
from collections.abc import Callable
from typing import Protocol

import aiohttp
from aiohttp import web

from raft import codec
from raft.auth import SECRET_HEADER, request_authorized
from raft.cluster import INFO_PATH, ClusterMeta
from raft.messages import Message

log = logging.getLogger(__name__)

MESSAGE_PATH = "/raft/message"
STREAM_PATH = "/raft/stream"
STREAM_RETRY_S = 60.0       # a peer without the stream route is asked again this often
# WebSocket ping interval of a peer's stream to us when nothing arrives on it: such a
# connection (its sender partitioned away, or gone) is closed after 1.5 x this without
# a pong. Our own streams send no pings (two wake-ups a second at each end of every
# stream, idle: issue 16): what we write there must be acknowledged by the peer's host
# within STREAM_UNACKED_S (TCP_USER_TIMEOUT), or the kernel closes the connection and
# the next batch reconnects. A frozen peer process still acknowledges (its kernel does):
# our frames wait for it, as they did for its pong; a relay that drops whole frames
# passes the next ones once it does again, and one that cut a frame makes the peer
# close the stream.
STREAM_HEARTBEAT_S = 1.0
STREAM_UNACKED_S = 1.5
# A stream of ours that carried nothing for this long is closed (the next message opens
# another): between two followers nothing flows once a leader is elected, and an open stream
# costs both ends a ping and a pong every STREAM_HEARTBEAT_S (issue 16).
STREAM_IDLE_S = 30.0
STREAM_MAX_FRAME = 4 * 1024 * 1024
STREAM_CLOSE_S = 0.5        # how long a closing side waits for the peer's answer to its close
# The subprotocol of a stream whose frames may be compact and carry application payloads ("app").
STREAM_PROTOCOL = "raft-stream.2"


class _AppPayload:
    """An application payload queued for a peer (``HttpTransport.send_app``)."""

    __slots__ = ("body", "on_failed")

    def __init__(self, body: dict, on_failed: Callable[[], None] | None) -> None:
        self.body, self.on_failed = body, on_failed

    def failed(self) -> None:
        if self.on_failed is not None:
            self.on_failed()


class Transport(Protocol):
    def send(self, to: str, msg: Message) -> None:
        """Queue ``msg`` for node ``to``; drop it if that is not possible now."""

    def set_peers(self, peers: dict[str, str]) -> None:
        """Replace the id -> address map (membership changed)."""

    def set_meta_source(self, source: Callable[[], ClusterMeta]) -> None:
        """Where to read the cluster id and seeded set that go with every message."""

    async def cluster_info(self, peer: str) -> ClusterMeta | None:
        """Ask ``peer`` for its cluster id and seeded set; None if it cannot answer now."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Receiver(Protocol):
    """What a transport delivers to (a RaftNode)."""

    secret: str

    def receive(self, msg: Message) -> None: ...

    def cluster_info(self) -> ClusterMeta | None:
        """Our cluster id and seeded set; None until the data dir is loaded."""

    def peer_meta(self, src: str, meta: ClusterMeta | None) -> str | None:
        """Note the sender's cluster id; a reason to refuse its messages, or None."""


# --------------------------------------------------------------------------- in-memory


class InMemoryNetwork:
    """Connects transports in one event loop; tests cut links or take nodes down."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[Message], None]] = {}
        self.clusters: dict[str, Receiver] = {}  # for cluster ids; absent: no check
        self.cut: set[tuple[str, str]] = set()
        self.delivered = 0

    def transport(self, node_id: str) -> InMemoryTransport:
        return InMemoryTransport(self, node_id)

    def register(self, node_id: str, handler: Callable[[Message], None], node: Receiver | None = None) -> None:
        """``node`` (a RaftNode) also answers cluster_info and checks senders' cluster ids."""
        self.handlers[node_id] = handler
        if node is not None:
            self.clusters[node_id] = node

    def unregister(self, node_id: str) -> None:
        self.handlers.pop(node_id, None)
        self.clusters.pop(node_id, None)

    def isolate(self, node_id: str) -> None:
        for other in list(self.handlers) + [node_id]:
            if other != node_id:
                self.cut |= {(node_id, other), (other, node_id)}

    def heal(self) -> None:
        self.cut.clear()

    def deliver(self, src: str, to: str, msg: Message, meta: ClusterMeta | None = None) -> None:
        handler = self.handlers.get(to)
        if handler is None or (src, to) in self.cut:
            return
        node = self.clusters.get(to)
        if node is not None and node.peer_meta(src, meta) is not None:
            return
        self.delivered += 1
        asyncio.get_running_loop().call_soon(handler, msg)


class InMemoryTransport:
    def __init__(self, network: InMemoryNetwork, node_id: str) -> None:
        self.network = network
        self.node_id = node_id
        self._meta: Callable[[], ClusterMeta] | None = None

    def send(self, to: str, msg: Message) -> None:
        meta = self._meta() if self._meta is not None else None
        self.network.deliver(self.node_id, to, msg, meta if meta is not None and meta.cluster_id else None)

    def set_peers(self, peers: dict[str, str]) -> None:
        pass

    def set_meta_source(self, source: Callable[[], ClusterMeta]) -> None:
        self._meta = source

    async def cluster_info(self, peer: str) -> ClusterMeta | None:
        node = self.network.clusters.get(peer)
        if node is None or (self.node_id, peer) in self.network.cut:
            return None
        return node.cluster_info()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


# --------------------------------------------------------------------------- HTTP


def http_session(timeout: float, ssl_context=None) -> aiohttp.ClientSession:
    """A client session for the proxies' admin URLs (https ones verified with `ssl_context`)."""
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), connector=connector)


_unacked_bound_failed = False


def _bound_unacknowledged(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The kernel closes this stream once what we wrote on it stays unacknowledged for
    STREAM_UNACKED_S (see there)."""
    global _unacked_bound_failed
    sock = ws.get_extra_info("socket")
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(STREAM_UNACKED_S * 1000))
    except (AttributeError, OSError) as exc:    # no socket, or not Linux
        if not _unacked_bound_failed:
            _unacked_bound_failed = True
            log.warning("raft streams: TCP_USER_TIMEOUT not set (%r): a peer gone without closing its "
                        "connection is noticed only by TCP's own retransmission timeout", exc)


def _http_refusal(status: int) -> str:
    """What a peer's HTTP status refusing us means, for the log."""
    if status in (401, 403):
        return f"HTTP {status}: the peer refused our raft secret (or client certificate)"
    return f"HTTP {status}"


def _failed(apps) -> bool:
    """Report every payload of ``apps`` not delivered; False (for `return _failed(...)`)."""
    for a in apps:
        a.failed()
    return False


async def close_stream(ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, **why) -> None:
    """Close a stream (ours to a peer, or a peer's to us: `why` gives the code and message),
    waiting at most STREAM_CLOSE_S for the other side's answer."""
    try:
        async with asyncio.timeout(STREAM_CLOSE_S):
            await ws.close(**why)
    except (TimeoutError, OSError, aiohttp.ClientError):
        pass


class _Link:
    """One peer's outgoing stream: the WebSocket, the task reading it, what it was told."""

    __slots__ = ("closing", "idle_timer", "last_sent", "meta_sent", "post_until", "reader", "sending", "ws")

    def __init__(self) -> None:
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.meta_sent: dict[str, str] | None = None   # cluster headers last sent on ws
        self.post_until = 0.0                          # loop time until which the peer gets POSTs
        self.last_sent = 0.0                           # monotonic time of the last frame written
        self.sending = False                           # the sender task is using ws
        self.idle_timer: asyncio.TimerHandle | None = None
        self.closing: asyncio.Task[None] | None = None

    def open(self, ws: aiohttp.ClientWebSocketResponse, reader: asyncio.Task[None]) -> None:
        self.ws, self.reader, self.meta_sent = ws, reader, None
        self.last_sent = time.monotonic()
        self.idle_timer = asyncio.get_running_loop().call_later(STREAM_IDLE_S, self._close_if_idle)

    def _close_if_idle(self) -> None:
        """Close the stream once nothing was written on it for STREAM_IDLE_S (checked again
        that much after the last frame, so an active stream costs one timer every 30 s)."""
        self.idle_timer = None
        if self.ws is None:
            return
        left = self.last_sent + STREAM_IDLE_S - time.monotonic()
        loop = asyncio.get_running_loop()
        if left > 0 or self.sending:
            self.idle_timer = loop.call_later(max(left, 1.0), self._close_if_idle)
            return
        log.debug("raft stream idle for %.0f s: closed", STREAM_IDLE_S)
        self.closing = loop.create_task(self.close())

    def agreed(self) -> bool:
        """The stream is open and the peer agreed on STREAM_PROTOCOL (compact frames,
        application payloads)."""
        return self.ws is not None and not self.ws.closed and self.ws.protocol == STREAM_PROTOCOL

    async def close(self) -> None:
        ws, reader, self.ws, self.reader = self.ws, self.reader, None, None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if reader is not None:
            reader.cancel()
        if ws is not None and not ws.closed:
            await close_stream(ws)
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)


class HttpTransport:
    """Sends messages to ``{peer_url}/raft/stream`` (a WebSocket held open), or
    POSTs them to ``{peer_url}/raft/message`` for a peer without it.

    One sender task per peer drains a bounded queue in order; a full queue or
    a failed send drops the message (after ``timeout`` seconds at most), so a
    dead peer costs one bounded queue and never slows the others.
    """

    def __init__(self, node_id: str, peers: dict[str, str], secret: str, timeout: float = 0.5, queue_size: int = 256,
                 ssl_context=None) -> None:
        self.node_id = node_id
        self.ssl_context = ssl_context      # https peers (tls_admin): verifies them, presents our certificate
        self.peers = dict(peers)
        self.secret = secret
        self.timeout = timeout
        self.queue_size = queue_size
        self.dropped = 0
        # (peer, seconds, error kind or None) for every POST: the process' metrics
        # count errors and time round trips (no metrics types in raft/)
        self.on_rpc: Callable[[str, float | None, str | None], None] = lambda peer, seconds, error: None
        self._queues: dict[str, asyncio.Queue[Message | _AppPayload]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._links: dict[str, _Link] = {}
        self._session: aiohttp.ClientSession | None = None
        self._meta: Callable[[], ClusterMeta] = ClusterMeta
        # why each peer could not be reached, as last seen (gone once it answers): logged when
        # it changes, and named by a node that waits for its peers to bootstrap
        self.peer_errors: dict[str, str] = {}

    def _unreachable(self, peer: str, why: BaseException | str) -> None:
        """Note why `peer` could not be reached. Logged when the reason changes, so a lasting
        one (a certificate that does not verify, a refused secret, nobody listening) is in
        the log once with its cause instead of only counted in the metrics."""
        text = why if isinstance(why, str) else (str(why) or type(why).__name__)
        if self.peer_errors.get(peer) != text:
            self.peer_errors[peer] = text
            log.warning("event=raft_peer_unreachable peer=%s error=%r", peer, text)

    def _reachable(self, peer: str) -> None:
        if self.peer_errors.pop(peer, None) is not None:
            log.info("event=raft_peer_reachable peer=%s", peer)

    def set_meta_source(self, source: Callable[[], ClusterMeta]) -> None:
        self._meta = source

    async def cluster_info(self, peer: str) -> ClusterMeta | None:
        url = self.peers.get(peer)
        if not url or self._session is None:
            return None
        try:
            async with self._session.get(url.rstrip("/") + INFO_PATH, headers={SECRET_HEADER: self.secret}) as resp:
                if resp.status == 404:
                    # A version before cluster ids (a rolling upgrade): it has none to
                    # tell, so it counts as an answer without one rather than block.
                    log.info("event=raft_peer_without_cluster_id peer=%s", peer)
                    self._reachable(peer)
                    return ClusterMeta()
                if resp.status != 200:
                    self._unreachable(peer, _http_refusal(resp.status))
                    return None
                meta = ClusterMeta.from_dict(await resp.json())
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.debug("cluster info from %s: %r", peer, exc)
            self._unreachable(peer, exc)
            return None
        self._reachable(peer)
        return meta

    async def start(self) -> None:
        self._session = http_session(self.timeout, self.ssl_context)

    def set_peers(self, peers: dict[str, str]) -> None:
        self.peers = dict(peers)

    def send(self, to: str, msg: Message) -> None:
        if self._session is None or to == self.node_id or not self.peers.get(to):
            self.dropped += 1
            return
        q = self._queues.get(to)
        if q is None:
            q = self._queues[to] = asyncio.Queue(self.queue_size)
            self._workers[to] = asyncio.get_running_loop().create_task(self._worker(to, q))
        try:
            q.put_nowait(msg)
        except asyncio.QueueFull:
            self.dropped += 1
            self.on_rpc(to, None, "queue_full")

    def send_app(self, to: str, body: dict, on_failed: Callable[[], None] | None = None) -> bool:
        """Queue the application payload ``body`` (a JSON object) for ``to``'s stream, in the
        next frame. False, and nothing queued, when the stream to ``to`` is not open or
        does not carry payloads (a peer of an older version): send it another way.
        ``on_failed`` is called if it is queued but not delivered after all."""
        link = self._links.get(to)
        q = self._queues.get(to)
        if link is None or q is None or not link.agreed():
            return False
        try:
            q.put_nowait(_AppPayload(body, on_failed))
        except asyncio.QueueFull:
            return False
        return True

    async def _worker(self, to: str, q: asyncio.Queue[Message | _AppPayload]) -> None:
        link = self._links[to] = _Link()
        loop = asyncio.get_running_loop()
        try:
            while True:
                items = [await q.get()]
                # Everything queued meanwhile goes in the same frame (or POST): when a
                # round trip takes longer than a tick (a loaded machine), messages must
                # not pile up and arrive seconds late (the lease would lapse).
                while not q.empty():
                    items.append(q.get_nowait())
                msgs = [m for m in items if not isinstance(m, _AppPayload)]
                apps = [m for m in items if isinstance(m, _AppPayload)] if len(msgs) < len(items) else []
                url = self.peers.get(to)
                if not url or self._session is None:
                    self.dropped += len(msgs)
                    for a in apps:
                        a.failed()
                    continue
                url = url.rstrip("/")
                if link.post_until <= loop.time():
                    link.sending = True
                    try:
                        sent = await self._send_stream(to, url, link, msgs, apps)
                    finally:
                        link.sending = False
                    if sent is not None:
                        if not sent:
                            self.dropped += 1
                        continue
                    link.post_until = loop.time() + STREAM_RETRY_S
                    log.info("event=raft_peer_without_stream peer=%s: POST /raft/message instead", to)
                for a in apps:
                    a.failed()
                if msgs:
                    await self._post(to, url, msgs)
        finally:
            if self._links.get(to) is link:
                del self._links[to]
            await link.close()
            if link.closing is not None:        # an idle stream being closed meanwhile
                await asyncio.gather(link.closing, return_exceptions=True)

    async def _send_stream(self, to: str, url: str, link: _Link, msgs: list[Message],
                           apps: list[_AppPayload] = ()) -> bool | None:
        """Send ``msgs`` (and ``apps``, the application payloads) as one frame on
        ``to``'s stream, opened if need be: True when written, False when not (the
        stream is closed: the next batch opens another), None when the peer has no
        stream route (``apps`` are left to the caller). Payloads not written are
        reported failed."""
        assert self._session is not None
        ws = link.ws
        if ws is None or ws.closed:
            await link.close()
            try:
                ws = await self._session.ws_connect(url + STREAM_PATH, headers={SECRET_HEADER: self.secret},
                                                    max_msg_size=STREAM_MAX_FRAME, protocols=(STREAM_PROTOCOL,))
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (404, 405):
                    return None
                log.debug("raft stream to %s refused: HTTP %s", to, exc.status)
                self.on_rpc(to, None, "unauthorized" if exc.status in (401, 403) else "refused")
                self._unreachable(to, _http_refusal(exc.status))
                return _failed(apps)
            except TimeoutError:
                log.debug("raft stream to %s not opened: timed out", to)
                self.on_rpc(to, None, "timeout")
                self._unreachable(to, "timed out opening the raft stream")
                return _failed(apps)
            except (aiohttp.ClientError, OSError) as exc:
                log.debug("raft stream to %s not opened: %r", to, exc)
                self.on_rpc(to, None, "connection")
                self._unreachable(to, exc)
                return _failed(apps)
            self._reachable(to)
            _bound_unacknowledged(ws)
            link.open(ws, asyncio.get_running_loop().create_task(self._read_stream(to, ws)))
        meta = self._meta().headers()
        agreed = link.agreed()
        if apps and not agreed:      # reconnected to a peer without them
            apps = _failed(apps) or []
        if not msgs and not apps:
            return True
        data = codec.compact_frame(msgs) if agreed and not apps and meta == link.meta_sent else None
        if data is None:
            frame: dict[str, object] = {"msgs": [codec.encode(m) for m in msgs]}
            if meta != link.meta_sent:
                frame["meta"] = meta
            if apps:
                frame["app"] = [a.body for a in apps]
            data = json.dumps(frame, separators=(",", ":")).encode()
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                await ws.send_bytes(data)
        except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError) as exc:  # RuntimeError: closing
            log.debug("raft stream to %s failed: %r", to, exc)
            self.on_rpc(to, None, "timeout" if isinstance(exc, TimeoutError) else "connection")
            await link.close()
            return _failed(apps)
        link.meta_sent = meta
        link.last_sent = now = time.monotonic()
        self.on_rpc(to, now - started, None)     # a one-way frame: the time to hand it over
        return True

    async def _read_stream(self, to: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Read what the peer sends back on our stream: refusals (aiohttp answers pings)."""
        try:
            async for m in ws:
                if m.type == aiohttp.WSMsgType.TEXT:
                    self.dropped += 1
                    self.on_rpc(to, None, "refused")
                    log.debug("raft messages to %s refused: %s", to, m.data.strip())
        except (aiohttp.ClientError, OSError) as exc:
            log.debug("raft stream to %s ended: %r", to, exc)

    async def _post(self, to: str, url: str, msgs: list[Message]) -> None:
        assert self._session is not None
        body = codec.dumps(msgs[0]) if len(msgs) == 1 else json.dumps([codec.encode(m) for m in msgs]).encode()
        started = time.monotonic()
        try:
            async with self._session.post(
                url + MESSAGE_PATH,
                data=body,
                headers={SECRET_HEADER: self.secret, "Content-Type": "application/json", **self._meta().headers()},
            ) as resp:
                error = None
                if resp.status >= 300:
                    self.dropped += 1
                    error = "unauthorized" if resp.status in (401, 403) else "refused"
                    log.debug("raft message to %s refused: HTTP %s", to, resp.status)
            self.on_rpc(to, time.monotonic() - started, error)
        except TimeoutError:
            self.dropped += 1
            self.on_rpc(to, None, "timeout")
            log.debug("raft message to %s dropped: timed out", to)
        except (aiohttp.ClientError, OSError) as exc:
            self.dropped += 1
            self.on_rpc(to, None, "connection")
            log.debug("raft message to %s dropped: %r", to, exc)

    async def close(self) -> None:
        for t in self._workers.values():
            t.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
        self._queues.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None


def add_raft_routes(app: web.Application, node: Receiver,
                    on_app: Callable[[dict], None] | None = None) -> None:
    """Serve POST /raft/message: 403 without the shared secret (or when none is set), 400 on a bad body,
    409 from another cluster (raft.cluster), else 204. GET /raft/stream: the same
    as a WebSocket of frames (403 at the upgrade without the secret; a bad frame
    closes it; a refused frame is answered with a text frame saying why); with
    `on_app`, it agrees to ``STREAM_PROTOCOL`` and hands it each application payload
    of a frame (one it refuses with ValueError, KeyError or TypeError is dropped). GET
    /raft/cluster: our cluster id and seeded set, 503 until the data dir is loaded. The
    app's shutdown closes the open streams first (`close_streams`)."""

    def authorized(request: web.Request) -> bool:
        return request_authorized(request.headers.get(SECRET_HEADER), node.secret, request.transport)

    async def info(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.Response(status=403, text="bad raft secret\n")
        get_info = getattr(node, "cluster_info", None)
        meta = get_info() if get_info is not None else None
        if meta is None:
            return web.Response(status=503, text="not started\n")
        return web.json_response(meta.to_dict())

    async def handle(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.Response(status=403, text="bad raft secret\n")
        body = await request.read()
        try:
            if body[:1] == b"[":  # a batch: everything a peer had queued for us
                msgs = [codec.decode(d) for d in json.loads(body)]
            else:
                msgs = [codec.loads(body)]
        except (codec.CodecError, ValueError) as exc:
            return web.Response(status=400, text=f"{exc}\n")
        check = getattr(node, "peer_meta", None)
        if check is not None and msgs:
            problem = check(msgs[0].src, ClusterMeta.from_headers(request.headers))
            if problem is not None:
                return web.Response(status=409, text=f"{problem}\n")
        for msg in msgs:
            node.receive(msg)
        return web.Response(status=204)

    streams: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    async def close_streams(_app: web.Application) -> None:
        """On shutdown: a peer's stream is a request that never ends by itself, so aiohttp's
        shutdown waited until the stream's heartbeat gave up on it (about 1.5 s) before the
        process could exit. Close them first, saying why (1001, going away)."""
        await asyncio.gather(*(close_stream(ws, code=aiohttp.WSCloseCode.GOING_AWAY, message=b"shutting down")
                               for ws in list(streams)), return_exceptions=True)

    async def stream(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return web.Response(status=403, text="bad raft secret\n")
        ws = web.WebSocketResponse(heartbeat=STREAM_HEARTBEAT_S, max_msg_size=STREAM_MAX_FRAME,
                                   protocols=(STREAM_PROTOCOL,) if on_app is not None else ())
        try:
            await ws.prepare(request)
        except ConnectionResetError as exc:     # (aiohttp's ClientConnectionResetError is one)
            # the peer went away before the upgrade was answered (killed or restarted while it
            # connected): routine, and it reconnects; aiohttp would log a traceback as an error
            log.info("event=raft_stream_peer_gone remote=%s error=%r", request.remote, str(exc))
            return web.Response(status=503)     # not written: aiohttp drops it quietly
        streams.add(ws)
        meta: ClusterMeta | None = None     # the sender's cluster headers, as last sent on this stream
        check = getattr(node, "peer_meta", None)
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.BINARY:
                continue
            try:
                if frame.data[:1] == codec.COMPACT_MAGIC:
                    msgs, apps = codec.decode_compact_frame(frame.data), []
                else:
                    data = json.loads(frame.data)
                    msgs = [codec.decode(d) for d in data["msgs"]]
                    if "meta" in data:
                        meta = ClusterMeta.from_headers(data["meta"])
                    apps = data.get("app", [])
                    if not isinstance(apps, list):
                        raise TypeError("app must be a list")
            except (codec.CodecError, ValueError, TypeError, KeyError) as exc:
                await ws.close(code=aiohttp.WSCloseCode.UNSUPPORTED_DATA, message=str(exc)[:100].encode())
                break
            if check is not None and msgs:
                problem = check(msgs[0].src, meta)
                if problem is not None:
                    await ws.send_str(f"{problem}\n")
                    continue
            for msg in msgs:
                node.receive(msg)
            if on_app is not None:
                for body in apps:
                    try:
                        on_app(body)
                    except (ValueError, KeyError, TypeError) as exc:
                        log.debug("raft stream: application payload dropped: %r", exc)
        return ws

    app.on_shutdown.append(close_streams)
    app.router.add_post(MESSAGE_PATH, handle)
    app.router.add_get(STREAM_PATH, stream)
    app.router.add_get(INFO_PATH, info)
