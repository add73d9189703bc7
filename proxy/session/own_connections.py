"""A client's upstream connections of its own (DEDICATED and RAW mode) and the writes
in flight on them: a master that is replaced, or a lease that lapses, retires or
suspends them (write_gate.py), and a MULTI/WATCH they held fails at EXEC."""

from __future__ import annotations

from ..protocol import resp
from ..upstream import DiscardSlot, Upstream
from ..write_gate import STOP
from .common import DEDICATED, SHARED


class OwnConnections:
    """Mixed into ClientSession (proxy/session/client.py): it uses the session's
    `dedicated`, `raw`, `mode`, the connection state it replays and the server."""

    def node_retired(self, addr: str, reply: bytes) -> None:
        """`addr` stopped being the master: drop this client's connections to
        it; every reply they still owe becomes `reply`."""
        up = self.dedicated.pop(addr, None)
        if up is not None:
            up.retire(reply)
            self._tx_lost(reply)
        if self.raw is not None and self.raw.addr == addr:
            self.raw.retire(reply)

    def retire_writes(self, addr: str, reply: bytes) -> None:
        """Writes this client has in flight to `addr` may not be acknowledged
        any more (lease lapsed, switchover): its connections that owe one
        answer `reply` instead."""
        up = self.dedicated.get(addr)
        if up is not None and not up.closed and up.writes_owed():
            del self.dedicated[addr]
            up.retire(reply)
            self._tx_lost(reply)
        raw = self.raw
        if raw is not None and raw.addr == addr and not raw.closed and raw.writes_owed():
            raw.retire(reply)

    def suspend_writes(self, addr: str) -> None:
        """The lease lapsed: this client's connections to `addr` that owe a
        write are suspended (see write_gate.py)."""
        for up in (self.dedicated.get(addr), self.raw):
            if up is not None and up.addr == addr and not up.closed and up.writes_owed():
                up.suspend()

    def _tx_lost(self, reply: bytes) -> None:
        """The master connection holding this client's MULTI or WATCH is gone:
        the transaction must fail at EXEC (a new connection knows neither)."""
        if self.multi or self.watching:
            why = reply[1:].rstrip(b"\r\n")
            self.tx_lost = b"-EXECABORT Transaction discarded: redis-raft-proxy dropped the master connection " \
                           b"that held its MULTI/WATCH state (" + why + b")\r\n"

    def _go_dedicated(self):
        """Move to DEDICATED mode; returns STOP while replies are owed."""
        if not self._drained():
            return STOP
        self.mode = DEDICATED
        return None

    def handshake(self) -> list[bytes]:
        """Commands that give a new dedicated upstream this client's state."""
        cmds = []
        cfg = self.server.cfg
        if self.auth is not None:
            cmds.append(resp.encode_command([b"AUTH", *self.auth]))
        elif cfg.redis_password:
            cmds.append(self.server.upstream_auth_command())
        if self.resp3:
            cmds.append(resp.encode_command([b"HELLO", b"3"]))
        if self.db:
            cmds.append(resp.encode_command([b"SELECT", str(self.db).encode()]))
        if self.name:
            cmds.append(resp.encode_command([b"CLIENT", b"SETNAME", self.name]))
        if self.no_touch:
            cmds.append(resp.encode_command([b"CLIENT", b"NO-TOUCH", b"on"]))
        return cmds

    def _broadcast(self, cmd: bytes, skip: Upstream | None) -> None:
        """Replay a state change on every other dedicated upstream."""
        for up in self.dedicated.values():
            if up is not skip and not up.closed:
                up.send(cmd, DiscardSlot(1))

    def _upstream(self, addr: str) -> Upstream:
        if self.mode == SHARED:
            return self.server.shared_upstream(addr, self.id)
        up = self.dedicated.get(addr)
        if up is None or up.closed:
            up = self.server.dedicated_upstream(addr, self)
            self.dedicated[addr] = up
        return up
