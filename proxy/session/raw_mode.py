"""RAW mode: pub/sub (and the proxy's MONITOR) on one master connection, bytes forwarded
both ways (see client.py's module doc). Every command on the stream still passes the
write gate; the proxy's own answers (refusals, a protocol error's last answer) take
their place after the replies the stream still owes, as Redis orders them."""

from __future__ import annotations

from ..protocol import resp
from ..protocol.commands import REFUSED, Kind
from ..upstream import Upstream
from ..write_gate import STOP, Refusal
from .common import LOCAL, NOAUTH, RAW, RAW_STREAM_COMMANDS, LocalSlot


class RawMode:
    """Mixed into ClientSession (proxy/session/client.py): it uses the session's state
    (`raw`, `mode`, `pending`, `transport`, the gate and the router)."""

    def _route_raw(self, name: bytes):
        """RAW mode: everything goes to the one master connection as is, once
        it passed the same gate as in every other mode."""
        self._write_flag = False
        if name in REFUSED:
            return Refusal(resp.error_reply("ERR proxy: " + REFUSED[name]))
        if name == b"quit":
            self.quitting = True    # the master closes after +OK: not an error
        if name == b"multi":
            # A write's reply is found by the PING sent after it, which MULTI would queue.
            return Refusal(b"-ERR proxy: MULTI is not supported on a pub/sub or MONITOR connection "
                           b"through redis-raft-proxy (use another connection)\r\n")
        if name not in RAW_STREAM_COMMANDS:
            if self.table.kind(name) == Kind.READ:
                refused = self.gate.admit_read(self)
            else:
                refused = self.gate.admit(self, self._raw_master())
                self._write_flag = True
            if refused is not None:
                return refused
        return self.raw

    def _raw_master(self) -> str | None:
        """The master a RAW-mode write goes to."""
        return self.router.master

    def _refuse_in_stream(self, data: bytes):
        """RAW mode: the proxy's own refusal takes its place after the replies the stream
        still owes (a SUBSCRIBE's confirmation sent just before it), as from Redis."""
        if self.raw is None or self.raw.closed or self.reply_mode != b"on":
            return self._local(data)
        self.raw.raw_answer(None, lambda _reply: data)
        return LOCAL

    def _last_answer(self, data: bytes) -> None:
        """The answer the connection closes after (a protocol error): in RAW mode after
        every reply still owed on the stream, as Redis orders them (a SUBSCRIBE's
        confirmations, then the error), then the half-close (`raw_reply`)."""
        if self.mode == RAW and self.raw is not None and not self.raw.closed:
            self.last_raw_answer = True
            self.raw.raw_answer(None, lambda _reply: self._raw_last(data))
        else:
            self.pending.append(LocalSlot(data))

    def _raw_last(self, data: bytes) -> bytes:
        self.last_raw_answer = False    # in the bytes `raw_reply` writes now
        return data

    def raw_reply(self, data: bytes) -> None:
        """Bytes of the RAW stream (pushes, replies). After the closing answer the stream
        is dropped, as Redis closes the connection after a protocol error."""
        if self.closed or self.eof_sent or self.client_eof or self.transport.is_closing():
            return      # (the client closed: its TLS layer tells before connection_lost does)
        self.transport.write(data)
        self._check_output()
        if self.closing and not self.last_raw_answer and not self.pending:
            self.draining = True
            self._half_close()

    push_reply = raw_reply

    def raw_closed(self, up: Upstream) -> None:
        """The pub/sub connection went away: the client must reconnect."""
        if not self.closed and up is self.raw:
            if not self.eof_sent:   # (after the last answer nothing more: closing already)
                if up.retired is not None:
                    self.transport.write(up.retired)
                elif up.error and not self.quitting:
                    self.transport.write(resp.error_reply("ERR proxy: " + up.error))
            self.transport.close()

    def _cmd_raw(self, args):
        """SUBSCRIBE & co, MONITOR: switch to RAW mode on the master."""
        if not self.authenticated:
            return self._local(NOAUTH)
        if self.multi:
            return self._master()
        if not self._drained():
            return STOP
        return self._go_raw(self.router.master)

    def _go_raw(self, addr: str | None):
        """RAW mode on master `addr` once the write gate admits (its connections of its own
        are closed: from now on every command goes down the raw stream)."""
        refused = self.gate.admit(self, addr)
        if refused is not None:
            return refused if refused is STOP else self._local(refused.reply)
        for up in self.dedicated.values():
            up.close()
        self.dedicated.clear()
        self.mode = RAW
        self.raw = self.server.raw_upstream(addr, self)
        return self.raw
