"""One client connection: split its bytes into commands, route, reply in order.

Every client starts in SHARED mode: its commands ride the proxy's shared,
pipelined upstream connections, batched (consecutive commands to the same
node travel as one slice of the client's own bytes and one reply slot).
A client that creates connection state (MULTI/WATCH, blocking commands,
SELECT, AUTH, HELLO, CLIENT TRACKING) moves for good to DEDICATED mode:
upstream connections of its own, whose handshake replays that state.
Pub/sub puts it in RAW mode: one master connection, bytes forwarded both
ways (MONITOR is the proxy's own: see client_commands.py).  A mode change
first waits until every reply already owed to the client has arrived, so
order is kept across connections.

Every write, whatever the mode, passes the one write gate (write_gate.py):
when it is routed, and again when its bytes leave and its reply returns.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from ..log_budget import LogBudget
from ..protocol import resp
from ..protocol.commands import BLOCK_OPTION, CONTAINERS, RAW_MODE, REFUSED, Kind
from ..upstream import DiscardSlot, Slot, Upstream
from ..write_gate import STOP, Refusal
from .client_commands import ClientCommands
from .client_registry import AFTER_RUN, SUBSCRIBE
from .common import (
    ADMIN,
    DEDICATED,
    LOCAL,
    MAX_PENDING_SLOTS,
    NOAUTH,
    RAW,
    READ,
    SHARED,
    WAIT_MARK,
    WRITE,
    HookSlot,
    LocalSlot,
    Sink,
    client_ids,
    log,
)
from .connection_commands import ConnectionCommands
from .local_commands import LocalCommands
from .output import OutputControl
from .own_connections import OwnConnections
from .raw_mode import RawMode
from .transactions import NOT_QUEUED, QueuedHere, Transactions

# clients' protocol errors logged (info) at most this often, all counted in /metrics
_protocol_error_lines = LogBudget(lines=10, window_s=10.0)


class ClientSession(LocalCommands, Transactions, ConnectionCommands, ClientCommands, RawMode, OwnConnections,
                    OutputControl, asyncio.Protocol):
    def __init__(self, server) -> None:
        self.server = server
        cfg = server.cfg
        self.max_bulk = cfg.proto_max_bulk_len
        self.max_args = cfg.max_args
        self.table = server.table
        self.router = server.router
        self.gate = server.gate
        self.id = next(client_ids)
        self.transport: asyncio.Transport | None = None
        self.buf: bytes | bytearray = b""
        self.need = 0
        self._buf = None                # the buffer being processed, for batches
        self._cur: Upstream | None = None
        self._cur_slot: Slot | None = None
        self._seg = self._seg_end = 0
        self.pending: deque[Slot] = deque()
        self.mode = SHARED
        self.dedicated: dict[str, Upstream] = {}
        self.raw: Upstream | None = None
        self.closed = False
        self.closing = False           # QUIT or protocol error: close once replies are out
        self.eof_sent = False          # half-closed or closing (`_half_close`): nothing more is written
        self.client_eof = False        # the client closed its side
        self.last_raw_answer = False   # RAW mode: the closing answer is on its way through `raw`
        self.draining = False          # the proxy is stopping: half-close once replies are out
        self.waiting = False           # stopped until `pending` drains
        self.wait_slot: Slot | None = None  # if set, `waiting` ends when this slot is done
        self.held = False              # stopped until a master takes writes (or hold_ms passed)
        self.hold_since: float | None = None
        self.hold_reported = False
        self.reading_paused = False
        self.blocked_on: Upstream | None = None
        # connection state that dedicated upstreams replay
        self.db = 0
        self.name: bytes | None = None
        self.resp3 = False
        self.auth: list[bytes] | None = None
        self.authenticated = not cfg.requirepass
        self.multi = False
        self.watching = False
        self.reply_mode = b"on"
        self.quitting = False
        self.tx_db: int | None = None    # SELECT queued inside MULTI: applies at EXEC
        self.tx_lost: bytes | None = None  # the connection with this client's MULTI/WATCH was retired: EXEC's error
        self.tracking = False            # CLIENT TRACKING: reads stay on the master
        self.read_pick_at = 0.0
        # reads
        self.read_node: str | None = None
        self.rw_slot: Slot | None = None       # last write, for read-your-writes
        self.replica_slot: Slot | None = None  # last batch of reads sent to a replica
        self.rw_done_at: float | None = None
        self.rw_offset: int | None = None
        # tracked under read_policy master too: `config set read_policy` may send reads to
        # replicas while this client is connected
        self.rw_enabled = cfg.read_your_writes
        self.soft_since: float | None = None
        self.queued = 0                 # reply bytes received for this client, not yet written
        self.output_limit = cfg.client_output_buffer_limit
        self.stats = server.stats
        self._commands = server.stats.commands
        self._metrics = cfg.command_metrics
        self._latency = server.stats.latency
        self._now = 0.0                 # the last read's time (idle counts from it)
        self.created = time.monotonic()
        # what CLIENT LIST shows (client_registry.py)
        self.registry = server.registry
        self.peer_addr = self.local_addr = "?:0"
        self.last_cmd = b"NULL"
        self.lib_name: bytes | None = None
        self.lib_ver: bytes | None = None
        self.no_evict = self.no_touch = False
        self.monitoring = False
        self.killed = False
        self.tx_count = 0               # commands queued in this MULTI
        self.tx_queued = 0              # ... of them, those queued on the master (EXEC's elements)
        self.tx_here = QueuedHere()     # ... and what the proxy adds to EXEC's reply
        self.tx_exec_here: QueuedHere | None = None   # the EXEC just routed: its MONITOR line goes there
        self.tx_running: int | None = None  # while EXEC's answers are made: how many commands it runs
        self.channels: set[bytes] = set()
        self.offloaded = False          # given to the C data plane (proxy/dataplane)
        self.thread_fd = -1             # ... its socket there (CLIENT LIST's fd)
        self.thread_buffers = [0, 0, 0]  # ... its qbuf, omem, oll there, as last listed (CLIENT LIST)
        self.resume_at = 0.0            # ... not before this (handed back from it: see dataplane.rules)
        self.bounces = 0                # ... times it was handed back
        self.offer_due = False          # ... and offered again when resume_at comes
        self.patterns: set[bytes] = set()
        self.schannels: set[bytes] = set()

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if peer:
            self.peer_addr = f"{peer[0]}:{peer[1]}"
        if local:
            self.local_addr = f"{local[0]}:{local[1]}"
        self.server.client_connected(self)
        if self.server.dataplane is not None:
            self.server.dataplane.offer(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pending.clear()
        for up in self.dedicated.values():
            up.close()
        self.dedicated.clear()
        if self.raw is not None:
            self.raw.close()
        if self.blocked_on is not None:
            self.blocked_on.blocked_sessions.discard(self)
        self.registry.forget(self)
        self.server.client_disconnected(self)

    def data_received(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        if self.buf:
            if type(self.buf) is bytes:
                self.buf = bytearray(self.buf)
            self.buf += data
        else:
            self.buf = data
        if len(self.buf) < self.need or self.waiting or self.closing or self.held:
            if self.draining:           # never read: dropped unanswered, so never executed
                self.buf = b""
                return
            if self.waiting or self.closing or self.held:
                self._pause_reading()
            return
        self._process()

    def eof_received(self):
        self.client_eof = True      # what the RAW stream still brings is dropped, as Redis frees it
        return None

    # -- the command loop -----------------------------------------------------
    def _process(self) -> None:
        """Route every complete command in the buffer; see the module doc.

        The C splitter hands back groups of consecutive commands of one kind;
        plain reads and writes are routed a whole group at a time, anything
        else command by command (`_dispatch`).  A batch (`_cur`) collects
        consecutive bytes for one upstream and goes out as one send.
        """
        buf = self.buf
        n = len(buf)
        self.need = 0
        pos = 0
        self._cur = None
        self._buf = buf
        split = resp.split_commands
        kinds = self.table.fast
        self._now = time.monotonic()
        intercept = self.registry.intercept     # MONITOR or CLIENT PAUSE: every command through _dispatch
        # whole groups may be routed at once: only `_dispatch` changes this (it is re-read after one)
        grouped = self.plain and not intercept
        route_group = self._route_group
        try:
            while pos < n:
                groups, next_pos, need, err = split(buf, pos, self.max_bulk, self.max_args, kinds, WRITE)
                stopped = False
                for kind, count, start, end, name, args_at in groups:
                    if grouped and (kind == READ or kind == WRITE or kind == ADMIN):
                        self.last_cmd = name
                        # ADMIN counts as a write: EVAL and FCALL carry no write flag in Redis 7.0
                        if kind != READ and self.replica_slot is not None and self._reads_in_flight():
                            pos = start
                            stopped = True
                            break
                        target = self._reader() if kind == READ else self._master()
                        if type(target) is Upstream:
                            self._add(target, start, end, count, kind != READ, kind)
                            continue
                        if target is STOP:
                            pos = start
                            stopped = True
                            break
                        self._close_batch()
                        self._local(target.reply * count)
                        continue
                    # every other case: one command at a time (in cluster mode a run of
                    # single-key reads or writes may go as one batch per shard)
                    if route_group is not None and (kind == READ or kind == WRITE) \
                            and route_group(kind, count, start, end, name):
                        continue
                    p = start
                    while p < end:
                        res = resp.parse_command(buf, p, self.max_bulk, self.max_args)
                        cend, cname, cargs = res[0], res[1], res[2]
                        if res[3] == 0:
                            p = cend
                            continue
                        if not self._dispatch(cname, p, cend, cargs, None):
                            stopped = True
                            break
                        p = cend
                        if self.closing:
                            break
                    pos = p
                    grouped = self.plain and not intercept
                    if stopped or self.closing:
                        break
                if stopped or self.closing:
                    break
                pos = next_pos
                if err is not None:
                    raise resp.ProtocolError(err)
                if need:
                    self.need = need - pos
                    break
                if pos < n and buf[pos] != 42:  # an inline command
                    res = resp.parse_inline(buf, pos)
                    if res is None:
                        break
                    end, inline = res
                    if inline and not self._dispatch(inline[0].lower(), pos, end, 0, inline):
                        break
                    pos = end
                    if self.closing:
                        break
                    continue
                break
            self._close_batch()
        except resp.ProtocolError as exc:
            self._close_batch()
            self._last_answer(exc.reply)
            self.closing = True
            pos = n
            self.server.count_rejected("protocol_error")
            left_out = _protocol_error_lines.take("clients")
            if left_out is not None:
                log.info("client %s protocol error: %s%s", self._peer(), exc,
                         f" ({left_out} more not logged)" if left_out else "")
        self._buf = None
        self.buf = buf[pos:] if pos < n else b""
        if self.buf and type(self.buf) is bytearray and len(self.buf) < 4096:
            self.buf = bytes(self.buf)
        pending = self.pending
        if self.waiting or len(pending) > MAX_PENDING_SLOTS:
            self._pause_reading()
        # `slots_done` has nothing to do when the oldest reply is still owed and nothing
        # waits to resume (its own first checks, inlined: the common case, once per batch)
        if not self.closed and (not pending or pending[0].done or self.waiting or self.reading_paused):
            self.slots_done()

    _route_group = None     # cluster mode: a pipelined run of single-key commands per shard

    @property
    def plain(self) -> bool:
        """No state that makes routing depend on more than the command's kind."""
        return (self.mode == SHARED or self.mode == DEDICATED) and self.authenticated \
            and not self.multi and not self.watching and self.reply_mode == b"on"

    def _add(self, target: Upstream, start: int, end: int, count: int, is_write: bool, kind: int = 0) -> None:
        """Add `count` commands in `buf[start:end]` to the batch for `target`."""
        if self._metrics:
            self._commands[target.addr][kind] += count
        cur = self._cur
        if cur is target and self._seg_end == start:
            slot = self._cur_slot
            slot.remaining += count
        else:
            if cur is not None:
                self._close_batch()
            slot = self._cur_slot = Slot(self, count, self._now if self._metrics else 0.0, kind)
            self.pending.append(slot)
            self._cur = target
            self._seg = start
            self._cur_write = False
        self._seg_end = end
        if is_write:
            self._cur_write = True
            if self.rw_enabled:         # `_note_write`, inlined (once per batch)
                self.rw_slot = slot
                self.rw_done_at = None
                self.rw_offset = None
        elif target.addr != self.router.topology.master:
            self.replica_slot = slot

    def _reads_in_flight(self) -> bool:
        """True (and wait) while this client's reads on a replica are unanswered.

        A write must not overtake them: they would see it through replication,
        i.e. read a value the client wrote after asking.
        """
        slot = self.replica_slot
        if slot is None or slot.done:
            self.replica_slot = None
            return False
        self.waiting = True
        self.wait_slot = slot
        return True

    def _note_write(self, slot: Slot) -> None:
        """Read-your-writes: remember the client's last write."""
        if self.rw_enabled:
            self.rw_slot = slot
            self.rw_done_at = None
            self.rw_offset = None

    def _close_batch(self) -> None:
        cur = self._cur
        if cur is not None:
            self._cur = None
            buf = self._buf
            seg, end = self._seg, self._seg_end
            cur.send(buf if (seg == 0 and end == len(buf) and type(buf) is bytes) else buf[seg:end],
                     self._cur_slot, self._cur_write)

    def _dispatch(self, name: bytes, start: int, end: int, args_at: int, inline) -> bool:
        """Route one command; False when processing must stop before it."""
        buf = self._buf
        self.last_cmd = name
        registry = self.registry
        if registry.intercept and self._paused(name, end, args_at, inline):
            return False
        if name in _HANDLERS or self.mode == RAW:
            self._close_batch()   # a handler may send on its own: the batch goes first
        in_tx = self.multi
        if self.mode == RAW:
            if name == b"client" and self.resp3 and self.authenticated:
                target = self._client_raw(self._args(buf, args_at, end, inline))
            else:
                target = self._route_raw(name)
            if type(target) is Refusal:
                target = self._refuse_in_stream(target.reply)
        else:
            self._write_flag = False
            target = self._route(name, buf, args_at, end, inline)
            if type(target) is Refusal:
                target = self._local(target.reply)
        if target is STOP:
            return False
        if registry.monitors or self.multi or name in AFTER_RUN:
            self._ran(name, start, end, args_at, inline, target, in_tx)
        if target is LOCAL:
            self._close_batch()
            return True
        if target is self.raw:
            data = buf[start:end] if inline is None else resp.encode_command(inline)
            if self._write_flag:
                target.raw_write(data)      # its reply passes the gate again, and ack = replica's WAIT
            else:
                target.send(data, None)
            return True
        is_write = self._write_flag
        if inline is not None or self.reply_mode != b"on":
            self._close_batch()
            slot = self._new_slot()
            target.send(resp.encode_command(inline) if inline is not None else buf[start:end], slot, is_write)
            if is_write:
                self._note_write(slot)
            return True
        self._add(target, start, end, 1, is_write, WRITE if is_write else 0)
        return True

    _write_flag = False

    def _paused(self, name: bytes, end: int, args_at: int, inline) -> bool:
        """True if the CLIENT PAUSE in force stops this command (the session is then held)."""
        registry = self.registry
        if registry.pause_mode and registry.pauses(self, name, self._args(self._buf, args_at, end, inline)):
            self._close_batch()
            return True
        return False

    # MONITOR shows the commands queued in MULTI when EXEC runs them (Transactions._exec_answered)
    _monitor_at_exec = True

    def _ran(self, name: bytes, start: int, end: int, args_at: int, inline, target=None,
             in_tx: bool | None = None) -> None:
        """A command was routed (not stopped): MONITOR's feed, MULTI's count, pub/sub's channels
        (called when there are monitors, in MULTI, or for a name in AFTER_RUN).  `target`: where
        it went (LOCAL: answered here, or sent by its handler, which counted it then); `in_tx`:
        the client was in MULTI before it (None: as far as `self.multi` tells)."""
        if in_tx is None:
            in_tx = self.multi and name != b"multi"
        queued = in_tx and self.multi and name not in NOT_QUEUED
        if queued:
            self.tx_count += 1
            if target is not LOCAL and target is not None:
                self.tx_queued += 1
        elif name == b"multi" and not in_tx:
            self.tx_count = self.tx_queued = 0
            self.tx_here = QueuedHere()
        if self.registry.monitors and (self.authenticated or name == b"auth" or name == b"hello"):
            # (a command refused with -NOAUTH never ran: Redis does not show it)
            args = self._args(self._buf, args_at, end, inline)
            argv = [self._name_as_sent(start, inline, name), *args]
            if self._monitor_at_exec and queued:
                self.tx_here.monitor.append((name, argv))      # shown when EXEC runs it
            elif name == b"exec" and self.tx_exec_here is not None:
                self.tx_exec_here.exec_argv = argv                 # shown after what it ran
            else:
                self.registry.feed(self, name, argv)
        self.tx_exec_here = None
        if name in SUBSCRIBE:
            self._track_subscriptions(name, self._args(self._buf, args_at, end, inline))

    def _name_as_sent(self, start: int, inline, name: bytes) -> bytes:
        if inline is not None:
            return inline[0]
        buf = self._buf
        p = buf.index(b"\r\n", start) + 2      # after *N: the name's $len line
        p = buf.index(b"\r\n", p) + 2
        return bytes(buf[p:p + len(name)])

    def _track_subscriptions(self, name: bytes, args: list[bytes]) -> None:
        """The channels and patterns the client subscribed to (CLIENT LIST's sub, psub, ssub)."""
        subs = getattr(self, SUBSCRIBE[name])
        if name.startswith((b"unsub", b"punsub", b"sunsub")):
            if args:
                subs.difference_update(args)
            else:
                subs.clear()
        else:
            subs.update(args)

    def _new_slot(self, hook=None) -> Slot:
        """A reply slot for one command, queued; honours CLIENT REPLY OFF/SKIP."""
        slot = Slot(self, 1) if hook is None else HookSlot(self, hook)
        if self.reply_mode != b"on":
            slot.parts = Sink()
            if self.reply_mode == b"skip":
                self.reply_mode = b"on"
        self.pending.append(slot)
        return slot

    def _send_one(self, up: Upstream, data: bytes, hook=None, write: bool = False):
        """Send one command the proxy rewrote or watches the reply of."""
        if self.multi:
            self.tx_queued += 1             # queued on the master: one more element of EXEC's reply
        slot = self._new_slot(hook)
        up.send(data, slot, write)
        if write:
            self._note_write(slot)
        return LOCAL

    def _args(self, buf, args_at: int, end: int, inline) -> list[bytes]:
        if inline is not None:
            return inline[1:]
        return resp.command_args(buf, args_at, end)

    def _route(self, name: bytes, buf, args_at: int, end: int, inline):
        """Decide where one command goes: an Upstream, LOCAL or STOP."""
        handler = _HANDLERS.get(name)
        if handler is not None:
            return handler(self, self._args(buf, args_at, end, inline))
        if not self.authenticated:
            return self._local(NOAUTH)
        if self.multi and self.tx_lost is not None:
            return self._local(self.tx_lost)    # queued in a transaction that can only fail
        if self.multi or self.watching:
            # Inside MULTI commands are only queued (EXEC is the write); while
            # WATCHing they run at once, so a write is a write.
            if not self.multi and self.table.kind(name) != Kind.READ:
                self._write_flag = True
            return self._master()
        kind = self.table.kind(name)
        if name in CONTAINERS:
            args = self._args(buf, args_at, end, inline)
            if args:
                kind = self.table.kind_sub(name, args[0])
                if name == b"script" and args[0].lower() in (b"load", b"flush"):
                    self._close_batch()
                    self.server.script_command(args)   # every node, and every node later
        elif name in BLOCK_OPTION:
            if any(a.lower() == b"block" for a in self._args(buf, args_at, end, inline)):
                kind = Kind.BLOCKING if kind == Kind.READ else kind
                if self.mode == SHARED:
                    return self._go_dedicated() or self._route(name, buf, args_at, end, inline)
        if kind == Kind.READ:
            return self._target(self._reader())
        if kind == Kind.BLOCKING and self.mode == SHARED:
            return self._go_dedicated() or self._route(name, buf, args_at, end, inline)
        if name == b"wait" or name == b"waitaof":
            up = self._master()
            if type(up) is Upstream:
                # WAIT counts replicas that acked this connection's last write;
                # the client's earlier writes may have used another connection,
                # so make one here (PUBLISH is replicated, and harmless).
                self._close_batch()
                up.send(WAIT_MARK, DiscardSlot(1))
            return self._target(up)
        if kind != Kind.READ:
            if self.replica_slot is not None and self._reads_in_flight():
                return STOP
            self._write_flag = True
        return self._target(self._master())

    def _target(self, target):
        """Turn a Refusal into a queued error reply (LOCAL)."""
        if type(target) is Refusal:
            return self._local(target.reply)
        return target

    # -- targets --------------------------------------------------------------
    def _master(self):
        """The master's upstream once the write gate admits; else STOP (held) or a Refusal.

        Asked for every batch of writes: when the session is not held and the master can
        take writes (`ProxyServer.can_write`, the check `WriteGate.admit` makes), the gate
        has nothing else to do and is not called, nor `_upstream` for a shared connection
        (issue 16: two Python calls fewer per batch)."""
        addr = self.router.master
        if addr is None or self.hold_since is not None or not self.server.can_write(addr):
            refused = self.gate.admit(self, addr)
            if refused is not None:
                return refused
        if self.mode == SHARED:
            return self.server.shared_upstream(addr, self.id)
        return self._upstream(addr)

    def wake(self) -> None:
        """Called by the server when writes may flow again or the hold expired."""
        if self.held and not self.closed:
            self.held = False
            if not self.waiting:
                self._resume_reading()
            if self.buf:
                asyncio.get_running_loop().call_soon(self._resume_process)

    def _reader(self):
        router = self.router
        if router.read_policy == "master":
            return self._master()
        refused = self.gate.admit_read(self)
        if refused is not None:
            return refused
        node = self.read_node
        if self.tracking:
            return self._master()
        if node is None or not router.replica_fit(node) and (
                node != router.master or self._now - self.read_pick_at > 0.5):
            # (re)pick: first read, replica gone, or on the master for a while
            # (replicas may be back)
            node = self.read_node = router.pick_read_node()
            self.read_pick_at = self._now
        if node is None:
            return self._master()
        if node != router.master and self.rw_slot is not None and not self._caught_up(node):
            return self._master()
        return self._upstream(node)

    def _caught_up(self, node: str) -> bool:
        """Read-your-writes: has replica `node` applied this client's last write?

        The write's reply arrived at `rw_done_at`; the master's offset from
        the first probe sent after that covers the write; the replica must
        have reached it.  Until all of that is known, reads go to the master.
        """
        slot = self.rw_slot
        if not slot.done:
            return False
        if self.rw_offset is None:
            if self.rw_done_at is None:
                self.rw_done_at = time.monotonic()
                return False
            self.rw_offset = self.server.health.master_offset_after(self.router.master, self.rw_done_at)
            if self.rw_offset is None:
                return False
        if self.server.health.offset(node) >= self.rw_offset:
            self.rw_slot = None
            return True
        return False

    def _local(self, data: bytes):
        if self.reply_mode == b"on":
            self.pending.append(LocalSlot(data))
        elif self.reply_mode == b"skip":
            self.reply_mode = b"on"
        return LOCAL

    # -- mode changes ---------------------------------------------------------
    def _drained(self) -> bool:
        """True when no reply is owed; else stop and resume once drained."""
        if any(not s.done for s in self.pending):
            self.waiting = True
            self.wait_slot = None
            return False
        return True

    # -- replies ----------------------------------------------------------------
    def slots_done(self) -> None:
        """Write every reply at the head of the queue that is complete."""
        if self.closed:
            return
        pending = self.pending
        # (`_process` makes this check itself before calling: keep the two alike)
        if pending and not pending[0].done and not self.waiting and not self.reading_paused:
            return      # nothing to write or resume (the common case after routing commands)
        out = []
        now = 0.0
        while pending and pending[0].done:
            slot = pending.popleft()
            if slot.t0:
                if not now:
                    now = time.monotonic()
                self._latency[slot.kind].observe(now - slot.t0)
            if type(slot) is HookSlot:
                replaced = slot.hook(b"".join(slot.parts))
                if replaced is not None:
                    slot.parts = [replaced]
            out.extend(slot.parts)
        t = self.transport
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            size = len(data)
            self.stats.bytes_out += size
            queued = self.queued - size
            # once nothing is owed, nothing is queued: reply bytes counted as they came but
            # never written (a redirect followed, ASKING's +OK, a fan-out's replies combined
            # into one) must not add up over a connection's life towards its output limit
            self.queued = queued if queued > 0 and pending else 0
            t.write(data)
            if t.get_write_buffer_size() or self.soft_since is not None:
                self._check_output()    # (not all written: the common case needs no check)
        if self.waiting and self.wait_slot is not None and self.wait_slot.done:
            self.waiting = False        # the replica reads a write waited for are answered
            self.wait_slot = None
            self._resume_reading()
            if self.buf:
                asyncio.get_running_loop().call_soon(self._resume_process)
        if not pending:
            if self.closing:        # QUIT, a protocol error, a stopping proxy: what still comes is dropped
                if self.last_raw_answer:
                    return          # not before the stream's replies (`raw_reply` half-closes)
                self.draining = True
                self._half_close()
                return
            if self.server.dataplane is not None:
                # after the caller is done with this session (it may still use the transport)
                asyncio.get_running_loop().call_soon(self.server.dataplane.offer, self)
            if self.waiting:
                self.waiting = False
                self.wait_slot = None
                self._resume_reading()
                if self.buf:
                    asyncio.get_running_loop().call_soon(self._resume_process)
        elif self.reading_paused and not self.waiting and len(pending) < MAX_PENDING_SLOTS // 2 \
                and self.blocked_on is None:
            self._resume_reading()

    def _resume_process(self) -> None:
        if not self.closed and not self.closing and not self.waiting and not self.held and self.buf:
            self._process()



def _refuser(name: bytes):
    return lambda self, args: self._cmd_refused(name)


_HANDLERS = {
    b"ping": ClientSession._cmd_ping,
    b"echo": ClientSession._cmd_echo,
    b"quit": ClientSession._cmd_quit,
    b"select": ClientSession._cmd_select,
    b"multi": ClientSession._cmd_multi,
    b"watch": ClientSession._cmd_watch,
    b"exec": ClientSession._cmd_exec,
    b"discard": ClientSession._cmd_discard,
    b"unwatch": ClientSession._cmd_unwatch,
    b"auth": ClientSession._cmd_auth,
    b"hello": ClientSession._cmd_hello,
    b"reset": ClientSession._cmd_reset,
    b"client": ClientSession._cmd_client,
}
for _name in RAW_MODE:
    _HANDLERS[_name] = ClientSession._cmd_raw
for _name in REFUSED:
    _HANDLERS[_name] = _refuser(_name)
_HANDLERS.update({
    b"monitor": ClientSession._cmd_monitor,     # answered by the proxy for its own clients
    b"acl": ClientSession._cmd_acl,
    b"debug": ClientSession._cmd_debug,
})
