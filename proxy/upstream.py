"""Connections from the proxy to one Redis node.

An `Upstream` is an asyncio Protocol that carries batches of client commands
and hands each batch's replies back to the `Slot` that waits for them, in
order.  It never parses a reply into objects: it only finds reply
boundaries (`resp.scan_replies`).  Every failure of the node (refused, lost,
garbage) becomes one error reply per waiting slot, naming the node: this is
the single place where upstream errors are translated.

Shared upstreams multiplex many stateless clients (twemproxy style: fewer
syscalls and less work for redis-server).  Clients with session state get
dedicated upstreams whose handshake replays that state.  A raw upstream
forwards every byte to one client (pub/sub, MONITOR), framed so that a
write's reply can still be found (`raw_write`).

While a write is queued or owed, the write gate (write_gate.py) is asked once
per flush and once per batch of replies; when it says the lease lapsed, the
connection is suspended (`suspend`): unsent bytes stay unsent and replies that
arrive are kept, until the gate resumes it (`resume`) or retires it: then
unsent bytes are dropped and every reply still owed becomes an error (`retire`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import time
from collections import deque
from typing import Callable, Iterable

from .protocol import resp
from .write_gate import lease_lapsed_reply

# RAW mode: frames that answer no command (pub/sub messages and confirmations,
# RESP3 pushes, MONITOR lines); see `Upstream._raw_received`.
_PUBSUB_FRAMES = tuple(b"*%d\r\n$%d\r\n%s\r\n" % (n, len(kind), kind) for n, kind in (
    (3, b"message"), (4, b"pmessage"), (3, b"smessage"), (3, b"subscribe"), (3, b"unsubscribe"),
    (3, b"psubscribe"), (3, b"punsubscribe"), (3, b"ssubscribe"), (3, b"sunsubscribe")))
_MONITOR_LINE = re.compile(rb"\+\d+\.\d+ \[")
_PONG_ARRAY = b"*2\r\n$4\r\npong\r\n"


def _unsolicited(frame: bytes) -> bool:
    """A RAW-mode frame that is not the reply to a command."""
    t = frame[0]
    return t == 62 or (t == 42 and frame.startswith(_PUBSUB_FRAMES)) or \
        (t == 43 and _MONITOR_LINE.match(frame) is not None)


def _wait_confirmed(reply: bytes) -> bool:
    """A `WAIT 1 ...` reply that counts at least one replica."""
    return reply.startswith(b":") and int(reply[1:].strip() or 0) >= 1

log = logging.getLogger("proxy.upstream")

CLIENT_ID = resp.encode_command([b"CLIENT", b"ID"])


def set_nodelay(transport) -> None:
    """Replies must not wait for Nagle: set TCP_NODELAY where there is a socket."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class Slot:
    """A place in a client's reply queue, filled by `remaining` replies."""

    __slots__ = ("owner", "remaining", "parts", "done", "gate", "t0", "kind")

    def __init__(self, owner, remaining: int, t0: float = 0.0, kind: int = 0) -> None:
        self.owner = owner          # has .slot_done(slot); None for internal slots
        self.remaining = remaining
        self.parts: list[bytes] = []
        self.done = False
        self.gate = None            # ack = replica: released by this WAIT
        self.t0 = t0                # when the batch was queued (for the latency metric)
        self.kind = kind

    def fill_error(self, reply: bytes) -> None:
        """Complete the slot with one error per missing reply."""
        self.parts.append(reply * self.remaining)
        self.remaining = 0
        self.done = True


class DiscardSlot(Slot):
    """Handshake replies: kept for a check, never delivered to a client."""

    __slots__ = ("on_done",)

    def __init__(self, remaining: int, on_done: Callable[[bytes], None] | None = None) -> None:
        super().__init__(None, remaining)
        self.on_done = on_done


class WaitGate(Slot):
    """ack = replica: the `WAIT 1 timeout` sent after a flush with writes.

    The replies of every slot sent in that flush are held until WAIT answers;
    if no replica confirmed, they become errors, since an acknowledgement
    would promise a durability the write does not have.
    """

    __slots__ = ("held", "addr", "timeout_ms")

    def __init__(self, held: list[tuple[Slot, int]], addr: str, timeout_ms: int) -> None:
        super().__init__(None, 1)
        self.held = held
        self.addr = addr
        self.timeout_ms = timeout_ms
        for slot, _count in held:
            slot.gate = self

    def release(self, reply: bytes | None, err: bytes | None = None) -> set:
        """Deliver or fail the held slots; returns their owners to notify.

        `err`: the connection was retired; the held slots get this error.
        """
        ok = err is None and reply is not None and _wait_confirmed(reply)
        if not ok and err is None:
            err = no_replica_reply(reply is not None, self.addr, self.timeout_ms)
        owners = set()
        for slot, count in self.held:
            slot.gate = None
            if not ok:
                slot.parts = [err * count]
                slot.remaining = 0
            if slot.remaining == 0:
                slot.done = True
                if slot.owner is not None:
                    owners.add(slot.owner)
        self.held = []
        return owners


def wait_command(timeout_ms: int) -> bytes:
    """ack = replica: the `WAIT 1 timeout_ms` sent after writes (by Python's connections and
    by the C thread)."""
    return resp.encode_command([b"WAIT", b"1", str(timeout_ms).encode()])


def no_replica_reply(answered: bool, addr: str, timeout_ms: int) -> bytes:
    why = "no replica confirmed it" if answered else f"the connection to {addr} was lost"
    return resp.error_reply(f"NOREPLICAS proxy: write not acknowledged: {why} within {timeout_ms} ms "
                            "(ack = replica)")


class Upstream(asyncio.Protocol):
    """One TCP connection to a Redis node; replies matched to slots FIFO."""

    def __init__(self, addr: str, *, handshake: Iterable[bytes] = (), raw_sink=None,
                 on_close: Callable[["Upstream"], None] | None = None, connect_timeout: float = 1.0,
                 resp3: bool = False, push_sink=None, best_effort: Iterable[bytes] = (),
                 want_id: bool = False, tls: dict | None = None) -> None:
        self.addr = addr
        self._tls = tls or {}           # create_connection's ssl arguments (tls_upstream)
        host, _, port = addr.rpartition(":")
        self.host, self.port = host, int(port)
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[Slot] = deque()
        self.buf = b""
        self.closed = False
        self.ready = False
        self.raw_sink = raw_sink        # a session in raw mode: gets every byte
        self.resp3 = resp3
        self.push_sink = push_sink      # a dedicated connection's client, for RESP3 pushes
        self._inner = 0                 # elements left of a partly received RESP3 reply
        self._pending_out: list[bytes] = []
        self._handshake = list(handshake)
        self._best_effort = list(best_effort)   # set-up whose errors are ignored (SCRIPT LOAD replays)
        self._want_id = want_id
        self.redis_id: int | None = None        # this connection's CLIENT ID on the node (want_id)
        self._on_close = on_close
        self._connect_timeout = connect_timeout
        self._touched: set = set()
        self.error: str | None = None
        self.retired: bytes | None = None    # the error reply this connection was retired with
        self.wait_cmd: bytes | None = None   # ack = replica: the WAIT to send after writes
        self.wait_timeout_ms = 0
        self._window: list[tuple[Slot, int]] = []
        self._window_write = False
        self.in_tx = False                   # inside MULTI: no WAIT may be queued
        self.paused = False
        self.blocked_sessions: set = set()
        # The write gate (proxy/write_gate.py), asked before bytes with a write
        # leave and before the replies owed after a write are delivered.
        self.gate = None
        self._out_write = False             # bytes not sent yet include a write
        self.suspended = False              # the lease lapsed with a write owed: see `suspend`
        self._held_in: list[bytes] = []     # replies received while suspended, not looked at yet
        self._owed_write: Slot | None = None  # the last slot with a write, until it is answered
        # RAW mode: the stream is framed so that a write's reply can be found
        # (`raw_write`): the write is followed by [WAIT and] a marker PING.
        self._raw_need = 0                  # elements missing from a frame partly forwarded
        self._raw_buf = b""                 # a partial frame, held
        self._raw_markers: deque[bytes] = deque()  # the ends of the marker replies expected
        self._raw_held: list[bytes] = []    # complete frames held until the next marker
        self._raw_seq = 0
        # markers of replies the proxy makes itself (`raw_answer`): marker -> (probe sent?, answer)
        self._raw_answers: dict[bytes, tuple[bool, Callable[[bytes | None], bytes]]] = {}

    # -- life cycle -------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin connecting; commands sent meanwhile are queued."""
        self._loop = loop
        for cmd in self._handshake:
            self.send(cmd, DiscardSlot(1, self._check_handshake))
        for cmd in self._best_effort:
            # e.g. NOAUTH: a client's own AUTH comes after the set-up, and
            # must not fail because a replayed script could not be loaded.
            self.send(cmd, DiscardSlot(1))
        if self._want_id:
            self.send(CLIENT_ID, DiscardSlot(1, self._got_id))
        loop.create_task(self._connect(loop))

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(lambda: self, self.host, self.port, **self._tls)
        except asyncio.TimeoutError:
            self._fail(f"Redis node {self.addr} is unreachable (connect timeout)")
        except ssl.SSLError as exc:
            self._fail(f"Redis node {self.addr} is unreachable (TLS: {exc.reason or exc})")
        except OSError as exc:
            self._fail(f"Redis node {self.addr} is unreachable ({exc.strerror or exc})")

    def connection_made(self, transport) -> None:
        if self.closed:
            transport.close()
            return
        self.transport = transport
        set_nodelay(transport)
        transport.set_write_buffer_limits(high=4 * 1024 * 1024)
        if self.suspended:
            transport.pause_reading()
            return
        self.ready = True
        self._flush()

    def _check_handshake(self, reply: bytes) -> None:
        if reply.startswith(b"-"):
            text = reply[1:].decode(errors="replace").strip()
            self._fail(f"Redis node {self.addr} refused the connection set-up: {text}")

    def _got_id(self, reply: bytes) -> None:
        if reply.startswith(b":"):
            self.redis_id = int(reply[1:])

    def connection_lost(self, exc) -> None:
        self._fail(f"connection to Redis node {self.addr} lost" + (f" ({exc})" if exc else ""))

    def close(self) -> None:
        self._fail(None)

    def retire(self, reply: bytes) -> None:
        """Stop using this connection for good: bytes not sent yet are dropped
        (never sent), and every reply still owed becomes `reply`."""
        self.retired = reply
        self._fail(None, reply)

    def writes_owed(self) -> bool:
        """A write was queued or sent here and its reply not delivered yet."""
        slot = self._owed_write
        return self.suspended or self._out_write or (slot is not None and not slot.done) or self._raw_writes_owed()

    def _raw_writes_owed(self) -> bool:
        """RAW mode: a write's marker is still expected (not only `raw_answer` markers)."""
        return len(self._raw_markers) > len(self._raw_answers)

    def suspend(self, data: bytes = b"") -> None:
        """The lease lapsed with a write owed: send nothing more and deliver no
        reply (`data`: replies just received) until the write gate resumes
        this connection or retires it (write_gate.WriteGate.settle)."""
        if data:
            self._held_in.append(data)
        if self.suspended or self.closed:
            return
        self.suspended = True
        self.ready = False                  # `_flush` sends nothing
        if self.transport is not None:
            self.transport.pause_reading()  # replies wait in the kernel, not in memory here
        log.debug("event=writes_suspended master=%s", self.addr)
        self.gate.suspend(self)

    def resume(self) -> None:
        """The lease is back under the same topology: deliver the replies kept
        (in order, before any newer one) and send what was held."""
        if not self.suspended or self.closed:
            return
        self.suspended = False
        held, self._held_in = self._held_in, []
        if self.transport is None:
            return                          # still connecting: `connection_made` flushes
        self.ready = True
        self.transport.resume_reading()     # (never delivers data before this method returns)
        if held:
            self.data_received(b"".join(held))
        self._flush()

    def _fail(self, reason: str | None, reply: bytes | None = None) -> None:
        """Close and answer every waiting slot with an error naming the node.

        With `reply` (a retirement), the connection is aborted so that bytes
        still buffered are never sent, and `reply` is every slot's answer.
        """
        if self.closed:
            return
        self.closed = True
        self.ready = False
        self.suspended = False
        self._held_in = []
        self.error = reason
        if reason:
            log.debug("upstream %s failed: %s", self.addr, reason)
        if self.transport is not None:
            if reply is not None:
                self.transport.abort()
            else:
                self.transport.close()
        retired = reply
        if reply is None:
            reply = resp.error_reply("ERR proxy: " + (reason or f"connection to {self.addr} closed"))
        touched = set()
        while self.waiters:
            slot = self.waiters.popleft()
            if type(slot) is WaitGate:
                touched |= slot.release(None, retired)
                continue
            slot.gate = None
            slot.fill_error(reply)
            if slot.owner is not None:
                touched.add(slot.owner)
        for owner in touched:
            owner.slots_done()
        self._pending_out = []
        for s in list(self.blocked_sessions):
            s.upstream_resumed(self)
        self.blocked_sessions.clear()
        if self._on_close is not None:
            self._on_close(self)

    # -- sending ----------------------------------------------------------
    def send(self, data: bytes, slot: Slot | None, write: bool = False) -> None:
        """Send commands whose replies fill `slot` (None: raw mode, or nothing owed); all
        sent in one loop iteration go out in one write. On a closed connection the slot
        gets an error per reply instead.

        `write`: the commands include writes (ack = replica gates them).
        """
        if self.closed:
            if slot is not None:
                why = self.error or f"Redis node {self.addr} is unavailable"
                slot.fill_error(resp.error_reply("ERR proxy: " + why))
            return
        if slot is not None:
            self.waiters.append(slot)
            if self.wait_cmd is not None and slot.owner is not None:
                # (the proxy's own set-up replies are never delivered: no WAIT
                # holds them, so their checks run as soon as they arrive)
                self._window.append((slot, slot.remaining))
                self._window_write = self._window_write or write
        if write:
            self._out_write = True
            if slot is not None:
                self._owed_write = slot
        out = self._pending_out
        out.append(data)
        if self.ready and len(out) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        out = self._pending_out
        if not out or not self.ready:
            return
        if self._out_write:
            # A write dispatched under the lease must not leave after it lapsed
            # (e.g. this connection was still being made).
            if self.gate is not None and not self.gate.in_flight_ok():
                self.suspend()
                return
            self._out_write = False
        if self._window and not self.in_tx:
            if self._window_write:
                gate = WaitGate(self._window, self.addr, self.wait_timeout_ms)
                self.waiters.append(gate)
                out.append(self.wait_cmd)
            self._window = []
            self._window_write = False
        self._pending_out = []
        if len(out) == 1:
            self.transport.write(out[0])
        else:
            self.transport.write(b"".join(out))

    def raw_write(self, data: bytes) -> None:
        """RAW mode: send a write whose reply must pass the write gate (and,
        with ack = replica, a WAIT) before the client sees it.

        The stream carries unsolicited frames the proxy does not parse, so the
        write is followed by [WAIT and] `PING <marker>`: when the marker's
        reply arrives, the last replies before it are the WAIT's and the
        write's, and every frame received since the write is released.
        """
        if self.closed:
            return
        self._raw_seq += 1
        token = b"__redis-raft-proxy:%d__" % self._raw_seq
        self._raw_markers.append(b"$%d\r\n%s\r\n" % (len(token), token))
        self.send(data + (self.wait_cmd or b"") + resp.encode_command([b"PING", token]), None, True)

    def raw_answer(self, probe: bytes | None, answer: Callable[[bytes | None], bytes]) -> None:
        """RAW mode: a reply the proxy makes itself (CLIENT ... on a subscribed RESP3
        connection), delivered in its place among the stream's replies.

        `probe` (a harmless command, e.g. to let the master check the user's rights) and a
        marker `PING` are sent; when the marker's reply arrives, `answer(probe's reply)`
        (`answer(None)` without a probe) takes the place of the probe's reply (or of the
        marker's), so every reply before it and after it keeps its order.
        """
        if self.closed:
            return
        self._raw_seq += 1
        token = b"__redis-raft-proxy:%d__" % self._raw_seq
        marker = b"$%d\r\n%s\r\n" % (len(token), token)
        self._raw_markers.append(marker)
        self._raw_answers[marker] = (probe is not None, answer)
        self.send((probe or b"") + resp.encode_command([b"PING", token]), None, False)

    def barrier(self) -> None:
        """Write what is queued now (with its WAIT): used before MULTI."""
        self._flush()

    def write_buffer_full(self) -> bool:
        return self.paused

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        blocked, self.blocked_sessions = self.blocked_sessions, set()
        for s in blocked:
            s.upstream_resumed(self)

    # -- receiving --------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.suspended:
            self._held_in.append(data)      # (reading is paused: at most what was already read)
            return
        owed = self._owed_write
        if owed is not None:
            # A write's reply may be in this batch: deliver it only under the lease.
            if owed.done:
                self._owed_write = None
            elif self.gate is not None and not self.gate.in_flight_ok():
                self.suspend(data)
                return
        if self.raw_sink is not None:
            if self._raw_writes_owed() and self.gate is not None and not self.gate.in_flight_ok():
                self.suspend(data)          # RAW: a write's reply may be in this batch
                return
            if not self.waiters:
                self._raw_received(data)
                return
        buf = self.buf + data if self.buf else data
        pos = 0
        n = len(buf)
        waiters = self.waiters
        touched = self._touched
        scan = resp.scan_replies
        try:
            while pos < n:
                if not waiters:
                    if self.raw_sink is not None:
                        self._raw_received(buf[pos:])
                        pos = n
                        break
                    if self.resp3 and buf[pos] == 62:  # '>' push outside any reply
                        end, rem = resp.scan_replies(buf, pos, 1)
                        if rem:
                            break
                        self._push(buf[pos:end])
                        pos = end
                        continue
                    raise resp.ReplyError("reply without a request")
                slot = waiters[0]
                if self.resp3:
                    # One top-level reply at a time, so a push between two
                    # replies is recognised and not counted as a reply.
                    if self._inner == 0:
                        if buf[pos] == 62:
                            end, rem = resp.scan_replies(buf, pos, 1)
                            if rem:
                                break
                            self._push(buf[pos:end])
                            pos = end
                            continue
                        self._inner = 1
                    end, rem = resp.scan_replies(buf, pos, self._inner)
                    if end > pos:
                        self._deliver(slot, buf[pos:end])
                        pos = end
                    self._inner = rem
                    if rem:
                        break
                    slot.remaining -= 1
                    if slot.remaining:
                        continue
                    waiters.popleft()
                    self._slot_finished(slot)
                    continue
                end, rem = scan(buf, pos, slot.remaining)
                owner = slot.owner
                if end > pos:
                    part = buf if (pos == 0 and end == n and type(buf) is bytes) else buf[pos:end]
                    if owner is None:           # `_deliver`, inlined: once per reply batch per slot
                        slot.parts.append(part)
                    elif not owner.closed:
                        slot.parts.append(part)
                        owner.queued += len(part)
                        if owner.queued > owner.output_limit:
                            owner.output_overflow()
                    pos = end
                slot.remaining = rem
                if rem:
                    break
                waiters.popleft()
                if owner is not None and slot.gate is None:
                    slot.done = True
                    touched.add(owner)
                else:
                    self._slot_finished(slot)
        except (resp.ReplyError, ValueError) as exc:
            self.buf = b""
            self._flush_touched()
            self._fail(f"Redis node {self.addr} sent an invalid reply ({exc})")
            return
        self.buf = buf[pos:] if pos < n else b""
        self._flush_touched()

    def _raw_received(self, data: bytes) -> None:
        """RAW mode: forward the stream, framed; held while a write's marker is owed."""
        if self._raw_buf:
            data = self._raw_buf + data
            self._raw_buf = b""
        sink = self.raw_sink
        n = len(data)
        pos = out = 0           # data[out:pos] goes to the client as it is
        scan = resp.scan_replies
        try:
            if self._raw_need:  # the rest of a frame partly forwarded already
                pos, self._raw_need = scan(data, 0, self._raw_need)
                if self._raw_need:
                    if pos:
                        sink.raw_reply(data[:pos])
                    self._raw_buf = data[pos:]  # an element not complete yet
                    return
            markers = self._raw_markers
            while pos < n:
                end, rem = scan(data, pos, 1)
                if not markers:
                    if rem:     # forward the complete elements of this frame, keep the rest
                        self._raw_need = rem
                        self._raw_buf = data[end:]
                        pos = end
                        break
                    pos = end
                    continue
                if rem:         # held: complete frames only
                    self._raw_buf = data[pos:]
                    break
                if out < pos:
                    sink.raw_reply(data[out:pos])
                frame = data[pos:end]
                pos = out = end
                self._raw_held.append(frame)
                if frame.endswith(markers[0]) and (frame[0] == 36 or frame.startswith(_PONG_ARRAY)):
                    marker = markers.popleft()
                    local = self._raw_answers.pop(marker, None)
                    if not (self._raw_release() if local is None else self._raw_answered(*local)):
                        return
        except (resp.ReplyError, ValueError) as exc:
            self._fail(f"Redis node {self.addr} sent an invalid reply ({exc})")
            return
        if out < pos and not self.closed:
            sink.raw_reply(data[out:pos])

    def _raw_answered(self, probed: bool, answer: Callable[[bytes | None], bytes]) -> bool:
        """The marker after a `raw_answer` arrived: deliver what was held, with the proxy's
        answer in place of the probe's reply (or of the marker's).  False if the connection
        ended."""
        held, self._raw_held = self._raw_held, []
        held.pop()                              # the marker's reply
        if not probed:
            held.append(answer(None))
        else:
            i = next((i for i in range(len(held) - 1, -1, -1) if not _unsolicited(held[i])), None)
            if i is None:
                self._fail(f"Redis node {self.addr}: a reply on a pub/sub connection could not be told apart")
                return False
            held[i] = answer(held[i])
        self.raw_sink.raw_reply(b"".join(held))
        return not self.closed

    def _raw_release(self) -> bool:
        """The marker after a RAW write arrived: deliver what was held, the
        write's reply replaced by an error if the lease lapsed within this batch or no
        replica confirmed it (ack = replica).  False if the connection ended."""
        held, self._raw_held = self._raw_held, []
        held.pop()                              # the marker's reply
        want = 2 if self.wait_cmd else 1        # the write's reply [and the WAIT's], last before the marker
        found = []
        for i in range(len(held) - 1, -1, -1):
            if not _unsolicited(held[i]):
                found.append(i)
                if len(found) == want:
                    break
        if len(found) < want:
            self._fail(f"Redis node {self.addr}: the replies to a write on a pub/sub connection "
                       "could not be told apart")
            return False
        wi = found[0] if self.wait_cmd else None
        ri = found[-1]
        if held[ri][:1] != b"-":                # an error is no acknowledgement: delivered as it is
            # (the gate was asked when this batch arrived, see `data_received`;
            # this catches only a lease lost while the batch was being read)
            if self.gate is not None and not self.gate.in_flight_ok():
                log.warning("event=write_outcome_unknown master=%s reason=lease_lapsed", self.addr)
                held[ri] = lease_lapsed_reply(self.addr)
            elif wi is not None and not _wait_confirmed(held[wi]):
                held[ri] = no_replica_reply(True, self.addr, self.wait_timeout_ms)
        if wi is not None:
            del held[wi]
        if held:
            self.raw_sink.raw_reply(b"".join(held))
        return True

    @staticmethod
    def _deliver(slot: Slot, part: bytes) -> None:
        """Keep reply bytes for a slot, counted against its client's output limit."""
        owner = slot.owner
        if owner is None:
            slot.parts.append(part)
            return
        if owner.closed:
            return          # nobody will read it: do not keep it
        slot.parts.append(part)
        owner.queued += len(part)
        if owner.queued > owner.output_limit:
            owner.output_overflow()

    def _slot_finished(self, slot: Slot) -> None:
        """A slot has all its replies: deliver it, or hold it for its WAIT."""
        if slot.gate is not None:
            return
        slot.done = True
        if slot.owner is not None:
            self._touched.add(slot.owner)
        elif type(slot) is WaitGate:
            self._touched |= slot.release(b"".join(slot.parts))
        elif isinstance(slot, DiscardSlot) and slot.on_done is not None:
            slot.on_done(b"".join(slot.parts))

    def _flush_touched(self) -> None:
        touched = self._touched
        if touched:
            for owner in touched:
                owner.slots_done()
            touched.clear()

    def _push(self, data: bytes) -> None:
        """A RESP3 push (e.g. a tracking invalidation) for the owning client."""
        if self.push_sink is not None:
            self.push_sink.push_reply(data)


def now() -> float:
    return time.monotonic()
