"""Python's side of the C data plane: sessions go to the thread, a permit follows them,
and sessions come back.

A session goes (`offer`) when `rules.offloadable` says so and the command table came
from the upstream: its socket is duplicated and given to the thread with the bytes
already read, the uvloop transport is dropped.  The permit (`refresh`, on every Raft
tick and every applied topology) carries what the Python path would decide per batch:
`ProxyServer.can_write` for the master, `can_read`, the readable replicas, the read
policy, and a generation that changes with the committed roles (epoch, master, write
pause), trusted until the next refresh with a tick to spare and never past the lease
held now.  A session comes back (`_taken_back`) as a new
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

from ..upstream import Slot, no_replica_reply, wait_command
from ..write_gate import lease_lapsed_reply, master_replaced_reply, topology_changed_reply, writes_paused_reply
from .rules import caught_up_before, forwarded_commands, offloadable, resume_delay

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
        self.back_reasons: dict[str, int] = {}  # sessions handed back, by why (/metrics)
        # the sessions the thread serves now, by client id: what they set in Python (CLIENT
        # SETNAME, SETINFO, NO-EVICT) and their age come back with them (`carry_over`)
        self.away: dict[int, object] = {}

    # -- sessions going -------------------------------------------------------
    def offer(self, session) -> bool:
        """Give `session` to the thread if it may go now; True if it went."""
        now = time.monotonic()
        if self.draining or not offloadable(session, now):
            if not self.draining and now < session.resume_at and not session.offer_due \
                    and offloadable(session, session.resume_at):
                session.offer_due = True        # try again when its pause ends, even if it is idle then
                self.server.loop.call_later(session.resume_at - now, self._offer_due, session)
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
        session.thread_fd = fd
        first = not self.away
        self.away[session.id] = session
        t.abort()                       # closes uvloop's descriptor only: the connection lives on in `fd`
        # (its connections of its own, if any, close with the transport: `rules.offloadable`
        # let it go only if they held nothing but its protocol, which the thread matches)
        if first:
            self.refresh()              # (not pushed while the thread served no one)
        self.fp.adopt(fd, session.id, data, session.bounces, session.resp3, wrote_at(session, now))
        return True

    def _offer_due(self, session) -> None:
        session.offer_due = False
        self.offer(session)

    def _ready(self) -> bool:
        if self.fp is not None:
            return True
        server = self.server
        if not server.table.from_upstream:
            return False                # the table Python classifies by is not Redis's yet
        from ..process.metrics import LATENCY_BUCKETS
        from ._fastpath import FastPath

        cfg = server.cfg
        handshake = server._base_handshake()
        self.fp = FastPath(forwarded_commands(server.table.fast), cfg.proto_max_bulk_len, cfg.max_args,
                           cfg.client_output_buffer_limit, b"".join(handshake), len(handshake),
                           latency_bounds=LATENCY_BUCKETS)
        server.loop.add_reader(self.fp.fileno(), self._taken_back)
        if hasattr(server.consensus, "on_ready"):
            server.consensus.on_ready = self.refresh     # a lease renewed between ticks
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
        """Push what the thread may do now, trusted until `_trusted_until`.  While it
        serves no client, only a change of roles is pushed (a write left queued by a
        client that closed must not reach a replaced master), not the renewal every Raft
        tick brings, which would wake it 20 times a second for nothing (issue 16's idle
        cost): the first client to go pushes a fresh permit before it goes (`offer`), and
        what the thread was last given runs out at its deadline, never past the lease."""
        if self.fp is None:
            return
        server = self.server
        cfg = server.cfg
        router = server.router
        topo = router.topology
        master = topo.master
        key = (topo.epoch, master, topo.writes_paused)
        if key == self._key and not self.away:
            return
        if key != self._key:
            old, self._key = self._key, key
            self.generation += 1
            if old is not None and old[1] and old[1] != master:
                self._retire = master_replaced_reply(old[1], topo.epoch)
            elif master and topo.writes_paused:
                self._retire = writes_paused_reply(master, topo.epoch)
            else:
                self._retire = topology_changed_reply(master or "?", topo.epoch)
        # draining, MONITOR or CLIENT PAUSE: the thread takes no new command (its clients are
        # recalled), but the replies of what it sent still flow, as in Python
        stopped = self.draining or bool(server.registry.intercept)
        write_ok = bool(master) and server.can_write(master)
        read_ok = server.can_read()
        replicas = [] if router.read_policy == "master" else self._replicas(master)
        at = self._connect_to
        self.fp.set_permit(self.generation, master or "", at(master) if master else "", replicas, write_ok, read_ok,
                           self._trusted_until(),
                           router.read_policy == "master",
                           cfg.read_your_writes, self._retire, lease_lapsed_reply(master or "?"), server.hold_s,
                           stopped, *self._ack_replica(master))

    def _ack_replica(self, master: str | None) -> tuple[bytes, bytes]:
        """ack = replica (rule 4): the `WAIT 1 ack_timeout_ms` the thread sends after the
        writes of each flush to the master, as Python's connections do (`upstream.WaitGate`),
        and the error its writes become when no replica confirmed them; (b"", b"") for
        ack = async."""
        cfg = self.server.cfg
        if cfg.ack != "replica":
            return b"", b""
        return wait_command(cfg.ack_timeout_ms), no_replica_reply(True, master or "?", cfg.ack_timeout_ms)

    def _replicas(self, master: str | None) -> list[tuple[str, str, float, float]]:
        """The readable replicas, each with the time before which every write answered is
        on it (`rules.caught_up_before`: a client's reads go back to its replica once its
        last write is older than that) and the time it stops being readable unless a
        probe answers (`NodeStatus.up_until`, as `Health.readable` judges it)."""
        health = self.server.health
        st = health.nodes.get(master) if master else None
        samples = st.samples if st is not None else ()
        out = []
        for r in self.server.router.readable_replicas():
            rs = health.nodes[r]
            out.append((r, self._connect_to(r), caught_up_before(samples, rs.offset),
                        rs.up_until(health.down_after)))
        return out

    def _connect_to(self, addr: str) -> str:
        """The numeric address the thread connects to for node `addr`: where this proxy's
        probe connection to it connected ("" before it has: the node's commands are
        Python's meanwhile).  The thread never looks a name up: `getaddrinfo` blocks, and
        one slow DNS answer would stall every client on the thread (in Kubernetes the
        nodes are pod names); and a name with several addresses connects, as the probe
        found, to the one the node listens on."""
        prober = self.server.probers.get(addr)
        return prober.peer if prober is not None else ""

    def _trusted_until(self) -> float:
        """Until when the thread may act on this permit: the next refresh (a Raft wake-up,
        every heartbeat_ticks, or the standalone timer), with a tick to spare, and never
        past the end of the lease held now (`RaftNode.lease_seconds_left`)."""
        cfg = self.server.cfg
        now = time.monotonic()
        until = now + (cfg.heartbeat_ticks + 1) * cfg.tick_ms / 1000.0
        left = getattr(self.server.consensus, "lease_seconds_left", None)
        if left is not None:
            until = min(until, now + left())
        return until

    def limits_changed(self) -> None:
        """proto_max_bulk_len, max_args or client_output_buffer_limit reloaded (SIGHUP): the
        thread's clients are held to them from now on, as Python's new sessions are."""
        if self.fp is not None:
            cfg = self.server.cfg
            self.fp.set_limits(cfg.proto_max_bulk_len, cfg.max_args, cfg.client_output_buffer_limit)

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
        lost = self.fp.take_lost()
        for addr in lost:
            self.server.node_connection_failed(addr)
        if lost:
            self.refresh()              # writes stop at once: the node is suspect until a probe answers
        for fd, client_id, data, wrote, reason, bounces in self.fp.take_back():
            if fd < 0:                  # the thread closed it (reset, gone both ways, CLIENT KILL)
                self.away.pop(client_id, None)
                continue
            self.back_reasons[reason] = self.back_reasons.get(reason, 0) + 1
            sock = socket.socket(fileno=fd)
            self.server.loop.create_task(self._resume(sock, client_id, data, wrote, bounces + 1))

    async def _resume(self, sock: socket.socket, client_id: int, data: bytes, wrote: bool, bounces: int) -> None:
        server = self.server
        # (it stays in `away`, listed by CLIENT LIST and found by CLIENT KILL, until its new
        # session is one of the server's clients)
        before = self.away.get(client_id)
        if before is not None and before.killed:
            self._forget(client_id, before)
            sock.close()                # CLIENT KILL came as the thread handed it back
            return

        def session():
            s = server.session_class(server)
            s.id = client_id            # the same client to CLIENT ID and CLIENT LIST
            if before is not None:
                carry_over(before, s)
            s.authenticated = True      # it was, before it went to the thread
            s.bounces = bounces
            s.resume_at = time.monotonic() + resume_delay(bounces)
            if wrote and s.rw_enabled:
                s.rw_slot = written_slot()
            if self.draining:
                s.closing = s.draining = True   # what the thread had not forwarded stays unanswered
            else:
                s.buf = data    # first: what the socket brings next is appended (data_received)
            return s

        try:
            _, s = await server.loop.connect_accepted_socket(session, sock)
        except OSError:
            self._forget(client_id, before)
            sock.close()
            return
        self._forget(client_id, before)
        if before is not None and before.killed:
            s.kill()                    # CLIENT KILL came while it came back
            return
        if self.draining:
            s.closing = False
            s.drain()                   # so not executed
        else:
            s._resume_process()         # the unread bytes, unless data_received came first

    def _forget(self, client_id: int, session) -> None:
        """`session` is no longer the thread's: forget it, unless the client went to the
        thread again meanwhile (its new session then is the one kept)."""
        if self.away.get(client_id) is session:
            del self.away[client_id]

    # -- CLIENT LIST and CLIENT KILL ---------------------------------------------------
    def listed(self) -> list:
        """The sessions the thread serves now, for CLIENT LIST: their idle time, last
        command and buffers (`thread_buffers`: qbuf, omem, oll) as the thread saw them (what
        Python kept of each: name, age, addresses)."""
        if self.fp is None:
            return []
        live = self.fp.clients()
        out = []
        for client_id, s in self.away.items():
            if s.killed:
                continue
            seen = live.get(client_id)      # (None: on its way back, or closed and being reported)
            if seen is not None:
                s._now, cmd, *s.thread_buffers = seen
                if cmd is not None:
                    s.last_cmd = cmd
            out.append(s)
        return out

    def kill(self, session) -> None:
        """CLIENT KILL of a client the thread serves: the thread closes it at once."""
        session.killed = True
        if self.fp is not None:
            self.fp.kill([session.id])

    def stats(self) -> dict[str, int]:
        return self.fp.stats() if self.fp is not None else {}

    def node_stats(self) -> dict[str, tuple[int, int]]:
        """Reads and writes the thread sent to each node (redis_raft_proxy_commands)."""
        return self.fp.node_stats() if self.fp is not None else {}

    def latency(self) -> dict[int, tuple[list[int], float]]:
        """Its read (1) and write (2) batches' times, queued to answered, per LATENCY_BUCKETS
        bucket, and their sum (redis_raft_proxy_command_duration_seconds)."""
        return self.fp.latency() if self.fp is not None else {}

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


# what a session set about itself that the thread neither needs nor changes; `mode`: a
# session that had connections of its own makes them again (with HELLO 3 if `resp3`)
CARRIED = ("name", "lib_name", "lib_ver", "no_evict", "created", "mode", "resp3")


def carry_over(before, after) -> None:
    """The session that comes back from the thread is the client that went: its name,
    library, NO-EVICT flag, age, protocol and mode as they were (`rules.offloadable` lets
    nothing else that a session holds go)."""
    for attr in CARRIED:
        setattr(after, attr, getattr(before, attr))


def wrote_at(session, now: float) -> float:
    """When the last write of `session` that replicas may not have yet was answered (0.0:
    none): the thread's read-your-writes goes on from it.  `now` if Python had not looked
    at it yet (`ClientSession._caught_up` notes it at the first read: later than the
    reply, so never too early)."""
    if session.rw_slot is None or not session.rw_enabled:
        return 0.0
    return session.rw_done_at if session.rw_done_at is not None else now


def written_slot() -> Slot:
    """A finished slot standing for the writes a session made through the thread: its
    reads wait for a replica to catch up with them (ClientSession._caught_up)."""
    slot = Slot(None, 0)
    slot.done = True
    return slot
