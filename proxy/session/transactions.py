"""MULTI/EXEC/DISCARD and WATCH/UNWATCH: they move the client to connections of its
own (DEDICATED mode), whose EXEC the proxy checks against what it lost meanwhile."""

from __future__ import annotations

from .. import resp
from ..upstream import Upstream
from ..write_gate import STOP
from .common import NOAUTH, OK, SHARED


class Transactions:
    """Mixed into ClientSession (proxy/session/client.py): it uses the session's state."""

    def _cmd_multi(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if self.tx_lost is not None and not self.multi:
            self.multi = True                   # answered here; EXEC fails
            return self._local(OK)
        if self.mode == SHARED and self._go_dedicated() is STOP:
            return STOP
        up = self._master()
        if type(up) is Upstream:
            up.barrier()        # ack = replica: the WAIT for earlier writes goes before MULTI
            up.in_tx = True
            self.multi = True
        return up

    def _cmd_watch(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if self.mode == SHARED and self._go_dedicated() is STOP:
            return STOP
        if not self.multi:
            self.watching = True
        return self._master()

    def _cmd_exec(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if self.tx_lost is not None:
            reply, self.tx_lost = self.tx_lost, None
            self.multi = self.watching = False
            self.tx_db = None
            return self._local(reply)
        if self.replica_slot is not None and self._reads_in_flight():
            return STOP
        self.multi = False
        self.watching = False
        self._write_flag = True
        up = self._master()
        if type(up) is Upstream:
            up.in_tx = False
            if self.tx_db is not None:
                db, self.tx_db = self.tx_db, None
                return self._send_one(up, resp.encode_command([b"EXEC", *args]),
                                      lambda reply: self._exec_selected(reply, db, up), write=True)
        return up

    def _exec_selected(self, reply: bytes, db: int, up: Upstream) -> None:
        """EXEC ran a SELECT: the connection's db changed; follow it everywhere."""
        if reply.startswith(b"*") and not reply.startswith(b"*-1"):
            self.db = db
            self._broadcast(resp.encode_command([b"SELECT", str(db).encode()]), up)

    def _cmd_discard(self, args):
        self.tx_db = None
        if self.tx_lost is not None and self.multi:
            self.tx_lost = None
            self.multi = self.watching = False
            return self._local(OK)
        return self._cmd_exec(args)

    def _cmd_unwatch(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if not self.multi:
            self.watching = False
            self.tx_lost = None
        return self._master()
