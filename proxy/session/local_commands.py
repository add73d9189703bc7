"""Commands the proxy answers itself, without Redis: PING, ECHO, QUIT, SELECT, and
the ones it refuses."""

from __future__ import annotations

from ..protocol import resp
from ..protocol.commands import REFUSED
from ..upstream import Upstream
from ..write_gate import STOP
from .common import DEDICATED, LOCAL, NOAUTH, OK, PONG, SHARED, bulk


class LocalCommands:
    """Mixed into ClientSession (proxy/session/client.py): it uses the session's state."""

    def _cmd_ping(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if self.multi:
            return self._master()   # queued: EXEC's reply has an element for it
        busy = self._master_busy()
        if busy is not None:
            return self._local(busy)
        if not args:
            return self._local(PONG)
        if len(args) == 1:
            return self._local(bulk(args[0]))
        return self._local(b"-ERR wrong number of arguments for 'ping' command\r\n")

    def _cmd_echo(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if self.multi:
            return self._master()
        if len(args) != 1:
            return self._local(b"-ERR wrong number of arguments for 'echo' command\r\n")
        return self._local(bulk(args[0]))

    def _cmd_quit(self, args):
        self.reply_mode = b"on"
        self._local(OK)
        self.closing = True
        return LOCAL

    def _cmd_refused(self, name: bytes, why: str | None = None):
        refusal = resp.error_reply("ERR proxy: " + (why or REFUSED[name]))
        if self.multi and self.mode == DEDICATED:
            # Inside MULTI the master must see an error too, so that EXEC
            # answers EXECABORT as for any command Redis rejects while queueing.
            up = self.dedicated.get(self.router.master)
            if up is not None and not up.closed:
                return self._send_one(up, resp.encode_command([b"redis-raft-proxy-refused"]),
                                      lambda _reply: refusal)
        return self._local(refusal)

    def _cmd_select(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if len(args) != 1:
            return self._local(b"-ERR wrong number of arguments for 'select' command\r\n")
        try:
            db = int(args[0])
        except ValueError:
            return self._local(b"-ERR value is not an integer or out of range\r\n")
        if self.mode == SHARED and db == 0:
            return self._local(OK)
        if self.multi:
            self.tx_db = db     # takes effect when EXEC runs the transaction
            return self._master()
        if self.mode == SHARED and self._go_dedicated() is STOP:
            return STOP
        up = self._master()
        if type(up) is not Upstream:
            return up
        old = self.db
        self.db = db
        cmd = resp.encode_command([b"SELECT", args[0]])
        self._broadcast(cmd, up)
        return self._send_one(up, cmd, lambda reply: self._undo_select(reply, old))

    def _undo_select(self, reply: bytes, old: int) -> None:
        if reply.startswith(b"-"):
            self.db = old
