"""Python's side of the C data plane: sessions go to the thread, a permit follows them,
and sessions come back.

A session goes (`offer`) when `rules.offloadable` says so and the command table came
from the upstream: its socket is duplicated and given to the thread with the bytes
already read, the uvloop transport is dropped.  The permit (`refresh`, on every Raft
tick and every applied topology) carries what the Python path would decide per batch:
`ProxyServer.can_write` for the master, `can_read`, the readable replicas, the read
policy, and a generation that changes with the committed roles (epoch, master, write
pause), trusted for two ticks.  A session comes back (`_taken_back`) as a new
`ClientSession` on the same socket, authenticated, reading the thread's unread bytes
first; a client that wrote through the thread reads from the master until a replica
has caught up with it (read-your-writes, as after any write).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from ..upstream import Slot
from ..write_gate import lease_lapsed_reply, master_replaced_reply, topology_changed_reply, writes_paused_reply
from .rules import RESUME_AFTER_S, forwarded_commands, offloadable

log = logging.getLogger("redis_raft_proxy.dataplane")


class DataPlane:
    """Owned by `ProxyServer` when `dataplane = "c"` (single-set mode)."""

    def __init__(self, server) -> None:
        self.server = server
        self.fp = None                  # the C FastPath, made once the command table is known
        self._key: tuple | None = None  # (epoch, master, writes_paused) of the last permit
        self.generation = 0
        self._retire = b""
        self._ticker: asyncio.Task | None = None
        self.draining = False           # the proxy is stopping: nothing goes, everything comes back

    # -- sessions going -------------------------------------------------------
    def offer(self, session) -> bool:
        """Give `session` to the thread if it may go now; True if it went."""
        if self.draining or not offloadable(session, time.monotonic()):
            return False
        t = session.transport
        if t is None or t.is_closing() or t.get_write_buffer_size() or t.get_extra_info("ssl_object") is not None:
            return False
        sock = t.get_extra_info("socket")
        if sock is None or not self._ready():
            return False
        fd = os.dup(sock.fileno())
        data = bytes(session.buf)
        session.buf = b""
        session.offloaded = True
        t.abort()                       # closes uvloop's descriptor only: the connection lives on in `fd`
        self.fp.adopt(fd, session.id, data)
        return True

    def _ready(self) -> bool:
        if self.fp is not None:
            return True
        server = self.server
        if not server.table.from_upstream:
            return False                # the table Python classifies by is not Redis's yet
        from ._fastpath import FastPath

        cfg = server.cfg
        handshake = server._base_handshake()
        self.fp = FastPath(forwarded_commands(server.table.fast), cfg.proto_max_bulk_len, cfg.max_args,
                           cfg.client_output_buffer_limit, b"".join(handshake), len(handshake))
        server.loop.add_reader(self.fp.fileno(), self._taken_back)
        if not hasattr(server.consensus, "on_tick"):
            self._ticker = server.loop.create_task(self._tick())
        self.refresh()
        log.info("event=dataplane_started kind=c commands=%d", len(forwarded_commands(server.table.fast)))
        return True

    async def _tick(self) -> None:
        """Without Raft ticks (a standalone proxy) the permit is renewed on a timer."""
        while True:
            await asyncio.sleep(self.server.cfg.tick_ms / 1000.0)
            self.refresh()

    # -- the permit -------------------------------------------------------------
    def refresh(self) -> None:
        """Push what the thread may do now, trusted for two Raft ticks."""
        if self.fp is None:
            return
        server = self.server
        cfg = server.cfg
        router = server.router
        topo = router.topology
        master = topo.master
        key = (topo.epoch, master, topo.writes_paused)
        if key != self._key:
            old, self._key = self._key, key
            self.generation += 1
            if old is not None and old[1] and old[1] != master:
                self._retire = master_replaced_reply(old[1], topo.epoch)
            elif master and topo.writes_paused:
                self._retire = writes_paused_reply(master, topo.epoch)
            else:
                self._retire = topology_changed_reply(master or "?", topo.epoch)
        stopped = self.draining or server.registry.intercept
        write_ok = bool(master) and not stopped and server.can_write(master)
        read_ok = not stopped and server.can_read()
        replicas = [] if router.read_policy == "master" else router.readable_replicas()
        self.fp.set_permit(self.generation, master or "", replicas, write_ok, read_ok,
                           time.monotonic() + 2 * cfg.tick_ms / 1000.0, router.read_policy == "master",
                           cfg.read_your_writes, self._retire, lease_lapsed_reply(master or "?"), server.hold_s)

    def drain(self) -> None:
        """The proxy is stopping: every session comes back once answered, and is drained
        there (`ClientSession.drain`); none goes again."""
        self.draining = True
        if self.fp is not None:
            self.refresh()
            self.fp.recall()

    def intercept_changed(self) -> None:
        """MONITOR or CLIENT PAUSE began or ended (`ClientRegistry`)."""
        if self.server.registry.intercept:
            if self.fp is not None:
                self.refresh()      # stop the thread's writes and reads at once ...
                self.fp.recall()    # ... and bring its clients back
        else:
            self.refresh()

    # -- sessions coming back --------------------------------------------------------
    def _taken_back(self) -> None:
        for fd, _client_id, data, wrote in self.fp.take_back():
            sock = socket.socket(fileno=fd)
            self.server.loop.create_task(self._resume(sock, data, wrote))

    async def _resume(self, sock: socket.socket, data: bytes, wrote: bool) -> None:
        server = self.server

        def session():
            s = server.session_class(server)
            s.authenticated = True      # it was, before it went to the thread
            s.resume_at = time.monotonic() + RESUME_AFTER_S    # not straight back (see rules)
            return s

        try:
            _, s = await server.loop.connect_accepted_socket(session, sock)
        except OSError:
            sock.close()
            return
        if wrote and s.rw_enabled:
            s.rw_slot = written_slot()
        if self.draining:
            s.drain()                   # what the thread had not forwarded stays unanswered, so not executed
        elif data and not s.closed:
            s.buf = data
            s._process()

    def stats(self) -> dict[str, int]:
        return self.fp.stats() if self.fp is not None else {}

    @property
    def clients(self) -> int:
        return self.fp.stats()["clients"] if self.fp is not None else 0

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self.fp is not None:
            try:
                self.server.loop.remove_reader(self.fp.fileno())
            except (RuntimeError, ValueError):
                pass
            self.fp.close()
            self.fp = None


def written_slot() -> Slot:
    """A finished slot standing for the writes a session made through the thread: its
    reads wait for a replica to catch up with them (ClientSession._caught_up)."""
    slot = Slot(None, 0)
    slot.done = True
    return slot
