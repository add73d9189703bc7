"""The proxy process: client listener, upstream pools, probes, admin HTTP.

`ProxyServer` owns everything one proxy shares between its clients: the
command table, the router (committed topology + health), the shared
upstream connections and the set of client sessions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import hiredis

from health.probe import Health, Prober

from . import resp
from .commands import CommandTable
from .config import Config
from .router import Router
from .session import ClientSession
from .topology import Topology
from .upstream import Upstream

log = logging.getLogger("proxy.server")

RECONNECT_BACKOFF = 0.1   # seconds a failed node is answered from memory before the next attempt


class ProxyServer:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.table = CommandTable()
        self.health = Health(list(cfg.redis_nodes), cfg.down_after_ms)
        self.router = Router(Topology.initial(list(cfg.redis_nodes), cfg.initial_master), self.health,
                             cfg.read_policy)
        self.clients: set[ClientSession] = set()
        self.total_connections = 0
        self.rejected: dict[str, int] = {}
        self.started = time.time()
        self._shared: dict[str, list[Upstream | None]] = {}
        self._dead: dict[str, tuple[float, Upstream]] = {}
        self._soft: set[ClientSession] = set()
        self._tasks: list[asyncio.Task] = []
        self._server: asyncio.AbstractServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- upstreams --------------------------------------------------------------
    def upstream_auth_command(self) -> bytes:
        cfg = self.cfg
        args = [b"AUTH"] + ([cfg.redis_username.encode()] if cfg.redis_username else []) + [cfg.redis_password.encode()]
        return resp.encode_command(args)

    def _base_handshake(self) -> list[bytes]:
        return [self.upstream_auth_command()] if self.cfg.redis_password else []

    def _make(self, addr: str, **kw) -> Upstream:
        """A new upstream, or the last failed one while the node is backing off."""
        dead = self._dead.get(addr)
        if dead is not None and time.monotonic() < dead[0]:
            return dead[1]
        up = Upstream(addr, connect_timeout=self.cfg.connect_timeout_ms / 1000.0,
                      on_close=self._upstream_closed, **kw)
        up.start(self.loop)
        return up

    def _upstream_closed(self, up: Upstream) -> None:
        if up.error and "unreachable" in up.error:
            self._dead[up.addr] = (time.monotonic() + RECONNECT_BACKOFF, up)
        if up.raw_sink is not None:
            up.raw_sink.raw_closed(up)

    def shared_upstream(self, addr: str, client_id: int) -> Upstream:
        conns = self._shared.get(addr)
        if conns is None:
            conns = self._shared[addr] = [None] * self.cfg.shared_connections
        i = client_id % len(conns)
        up = conns[i]
        if up is None or up.closed:
            up = conns[i] = self._make(addr, handshake=self._base_handshake())
        return up

    def dedicated_upstream(self, addr: str, session: ClientSession) -> Upstream:
        return self._make(addr, handshake=session.handshake(), push_sink=session, resp3=session.resp3)

    def raw_upstream(self, addr: str, session: ClientSession) -> Upstream:
        return self._make(addr, handshake=session.handshake(), raw_sink=session, resp3=session.resp3)

    # -- clients ----------------------------------------------------------------
    def client_connected(self, session: ClientSession) -> None:
        self.total_connections += 1
        if len(self.clients) >= self.cfg.maxclients:
            self.count_rejected("maxclients")
            session.transport.write(b"-ERR max number of clients reached\r\n")
            session.transport.close()
            return
        sock = session.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.clients.add(session)

    def client_disconnected(self, session: ClientSession) -> None:
        self.clients.discard(session)
        self._soft.discard(session)

    def count_rejected(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def watch_soft_limit(self, session: ClientSession) -> None:
        self._soft.add(session)

    async def _soft_limit_sweeper(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for s in list(self._soft):
                if s.closed or s.soft_since is None:
                    self._soft.discard(s)
                else:
                    s._check_output()

    # -- command table ------------------------------------------------------------
    async def _load_command_table(self) -> None:
        """Fetch `COMMAND` from the master (or any node) until one answers."""
        while not self.table.from_upstream:
            for addr in [self.router.master] + list(self.cfg.redis_nodes):
                if addr is None:
                    continue
                try:
                    reply = await asyncio.wait_for(self._fetch_commands(addr), 5.0)
                    self.table.load_command_reply(reply)
                    log.info("command table loaded from %s (%d commands)", addr, len(reply))
                    return
                except (OSError, asyncio.TimeoutError, hiredis.ProtocolError, ValueError) as exc:
                    log.debug("COMMAND from %s failed: %s", addr, exc)
            await asyncio.sleep(1.0)

    async def _fetch_commands(self, addr: str) -> list:
        host, _, port = addr.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            msgs = self._base_handshake() + [resp.encode_command([b"COMMAND"])]
            writer.write(b"".join(msgs))
            parser = hiredis.Reader()
            replies = []
            while len(replies) < len(msgs):
                data = await reader.read(1 << 16)
                if not data:
                    raise ConnectionError("closed")
                parser.feed(data)
                while (r := parser.gets()) is not False:
                    replies.append(r)
            if isinstance(replies[-1], Exception) or not isinstance(replies[-1], list):
                raise ValueError(f"COMMAND failed: {replies[-1]}")
            return replies[-1]
        finally:
            writer.close()

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        cfg = self.cfg
        self._server = await self.loop.create_server(lambda: ClientSession(self), cfg.bind, cfg.port,
                                                     backlog=4096, reuse_address=True)
        for addr in cfg.redis_nodes:
            prober = Prober(self.health, addr, interval_ms=cfg.probe_interval_ms, timeout_ms=cfg.down_after_ms,
                            username=cfg.redis_username, password=cfg.redis_password,
                            on_change=self._node_changed)
            self._tasks.append(self.loop.create_task(prober.run()))
        self._tasks.append(self.loop.create_task(self._load_command_table()))
        self._tasks.append(self.loop.create_task(self._soft_limit_sweeper()))
        log.info("proxy %s listening on %s:%d (pid %d)", cfg.node, cfg.bind, cfg.port, os.getpid())

    def _node_changed(self, addr: str, up: bool) -> None:
        log.info("event=%s node=%s", "node_up" if up else "node_subjectively_down", addr)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in self._tasks:
            t.cancel()
        for s in list(self.clients):
            s.transport.close()
        for conns in self._shared.values():
            for up in conns:
                if up is not None:
                    up.close()
