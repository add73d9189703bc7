"""How Raft messages travel between nodes.

``Transport.send(to, msg)`` never blocks and never raises: Raft tolerates
loss, so a message that cannot be delivered quickly is dropped. Two
implementations: :class:`InMemoryNetwork` for tests (with cut links) and
:class:`HttpTransport` over aiohttp, whose server side is
:func:`add_raft_routes` (POST /raft/message on the admin app).

Both carry the sender's cluster id and seeded set with every message (HTTP:
headers) and answer ``cluster_info`` (HTTP: GET /raft/cluster); see raft.cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
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


class HttpTransport:
    """POSTs each message to ``{peer_url}/raft/message``.

    One sender task per peer drains a bounded queue in order; a full queue or
    a failed POST drops the message (after ``timeout`` seconds at most), so a
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
        self._queues: dict[str, asyncio.Queue[Message]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._meta: Callable[[], ClusterMeta] = ClusterMeta

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
                    return ClusterMeta()
                if resp.status != 200:
                    return None
                return ClusterMeta.from_dict(await resp.json())
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.debug("cluster info from %s: %r", peer, exc)
            return None

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

    async def _worker(self, to: str, q: asyncio.Queue[Message]) -> None:
        while True:
            msgs = [await q.get()]
            # Everything queued meanwhile goes in the same POST: when a round
            # trip takes longer than a tick (a loaded machine), messages must
            # not pile up and arrive seconds late (the lease would lapse).
            while not q.empty():
                msgs.append(q.get_nowait())
            url = self.peers.get(to)
            if not url or self._session is None:
                self.dropped += len(msgs)
                continue
            body = codec.dumps(msgs[0]) if len(msgs) == 1 else json.dumps([codec.encode(m) for m in msgs]).encode()
            started = time.monotonic()
            try:
                async with self._session.post(
                    url.rstrip("/") + MESSAGE_PATH,
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


def add_raft_routes(app: web.Application, node: Receiver) -> None:
    """Serve POST /raft/message: 403 without the shared secret (or when none is set), 400 on a bad body,
    409 from another cluster (raft.cluster), else 204. GET /raft/cluster: our
    cluster id and seeded set, 503 until the data dir is loaded."""

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

    app.router.add_post(MESSAGE_PATH, handle)
    app.router.add_get(INFO_PATH, info)
