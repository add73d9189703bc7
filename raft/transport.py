"""How Raft messages travel between nodes.

``Transport.send(to, msg)`` never blocks and never raises: Raft tolerates
loss, so a message that cannot be delivered quickly is dropped. Two
implementations: :class:`InMemoryNetwork` for tests (with cut links) and
:class:`HttpTransport` over aiohttp, whose server side is
:func:`add_raft_routes` (POST /raft/message on the admin app).
"""

from __future__ import annotations

import asyncio
import json
import hmac
import logging
from collections.abc import Callable
from typing import Protocol

import aiohttp
from aiohttp import web

from raft import codec
from raft.messages import Message

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Raft-Secret"
MESSAGE_PATH = "/raft/message"


class Transport(Protocol):
    def send(self, to: str, msg: Message) -> None:
        """Queue ``msg`` for node ``to``; drop it if that is not possible now."""

    def set_peers(self, peers: dict[str, str]) -> None:
        """Replace the id -> address map (membership changed)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Receiver(Protocol):
    """What a transport delivers to (a RaftNode)."""

    secret: str

    def receive(self, msg: Message) -> None: ...


# --------------------------------------------------------------------------- in-memory


class InMemoryNetwork:
    """Connects transports in one event loop; tests cut links or take nodes down."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[Message], None]] = {}
        self.cut: set[tuple[str, str]] = set()
        self.delivered = 0

    def transport(self, node_id: str) -> InMemoryTransport:
        return InMemoryTransport(self, node_id)

    def register(self, node_id: str, handler: Callable[[Message], None]) -> None:
        self.handlers[node_id] = handler

    def unregister(self, node_id: str) -> None:
        self.handlers.pop(node_id, None)

    def isolate(self, node_id: str) -> None:
        for other in list(self.handlers) + [node_id]:
            if other != node_id:
                self.cut |= {(node_id, other), (other, node_id)}

    def heal(self) -> None:
        self.cut.clear()

    def deliver(self, src: str, to: str, msg: Message) -> None:
        handler = self.handlers.get(to)
        if handler is None or (src, to) in self.cut:
            return
        self.delivered += 1
        asyncio.get_running_loop().call_soon(handler, msg)


class InMemoryTransport:
    def __init__(self, network: InMemoryNetwork, node_id: str) -> None:
        self.network = network
        self.node_id = node_id

    def send(self, to: str, msg: Message) -> None:
        self.network.deliver(self.node_id, to, msg)

    def set_peers(self, peers: dict[str, str]) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


# --------------------------------------------------------------------------- HTTP


class HttpTransport:
    """POSTs each message to ``{peer_url}/raft/message``.

    One sender task per peer drains a bounded queue in order; a full queue or
    a failed POST drops the message (after ``timeout`` seconds at most), so a
    dead peer costs one bounded queue and never slows the others.
    """

    def __init__(self, node_id: str, peers: dict[str, str], secret: str, timeout: float = 0.5, queue_size: int = 256) -> None:
        self.node_id = node_id
        self.peers = dict(peers)
        self.secret = secret
        self.timeout = timeout
        self.queue_size = queue_size
        self.dropped = 0
        self._queues: dict[str, asyncio.Queue[Message]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

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
            try:
                async with self._session.post(
                    url.rstrip("/") + MESSAGE_PATH,
                    data=body,
                    headers={SECRET_HEADER: self.secret, "Content-Type": "application/json"},
                ) as resp:
                    if resp.status >= 300:
                        self.dropped += 1
                        log.debug("raft message to %s refused: HTTP %s", to, resp.status)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.dropped += 1
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
    """Serve POST /raft/message: 403 without the shared secret, 400 on a bad body, else 204."""

    async def handle(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), node.secret.encode()):
            return web.Response(status=403, text="bad raft secret\n")
        body = await request.read()
        try:
            if body[:1] == b"[":  # a batch: everything a peer had queued for us
                msgs = [codec.decode(d) for d in json.loads(body)]
            else:
                msgs = [codec.loads(body)]
        except (codec.CodecError, ValueError) as exc:
            return web.Response(status=400, text=f"{exc}\n")
        for msg in msgs:
            node.receive(msg)
        return web.Response(status=204)

    app.router.add_post(MESSAGE_PATH, handle)
