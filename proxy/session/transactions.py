"""MULTI/EXEC/DISCARD and WATCH/UNWATCH: they move the client to connections of its
own (DEDICATED mode), whose EXEC the proxy checks against what it lost meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..protocol import resp
from ..upstream import Upstream
from ..write_gate import STOP
from .common import NOAUTH, OK, SHARED


@dataclass
class QueuedHere:
    """What one MULTI holds besides the master's queue, for EXEC's reply.

    `answers`: index in EXEC's reply -> the proxy's answer for a command it serves itself
    (CLIENT ID, CLIENT LIST, ...), given the element the master's stand-in got;
    `monitor`: the (name, argv) of the queued commands, shown to MONITOR when EXEC runs them,
    then `exec_argv` (Redis shows queued commands at EXEC, not when queued, then EXEC)."""

    answers: dict[int, Callable[[bytes], bytes]] = field(default_factory=dict)
    monitor: list[tuple[bytes, list[bytes]]] = field(default_factory=list)
    exec_argv: list[bytes] | None = None
    count: int = 0          # the commands queued in the MULTI (CLIENT LIST's multi= while EXEC runs)

    def __bool__(self) -> bool:
        return bool(self.answers or self.monitor)


# run at once inside MULTI, never queued (as Redis: a nested MULTI and a WATCH get an error)
NOT_QUEUED = frozenset((b"multi", b"exec", b"discard", b"watch", b"quit", b"reset"))


def array_elements(reply: bytes) -> list[bytes] | None:
    """The elements of a complete RESP array reply (EXEC's), each as its bytes; None for
    anything else (an error, a nil)."""
    if not reply.startswith(b"*"):
        return None
    head = reply.index(b"\r\n") + 2
    n = int(reply[1:head - 2])
    if n < 0:
        return None
    return resp.split_replies(reply, n, head)


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
        here, self.tx_here = self.tx_here, QueuedHere()
        here.count = self.tx_count
        self.tx_exec_here = None
        up = self._master()
        if type(up) is Upstream:
            up.in_tx = False
            if self.tx_db is not None or here:
                db, self.tx_db = self.tx_db, None
                self.tx_exec_here = here

                def done(reply: bytes) -> bytes | None:
                    if db is not None:
                        self._exec_selected(reply, db, up)
                    return self._exec_answered(reply, here)
                return self._send_one(up, resp.encode_command([b"EXEC", *args]), done, write=True)
        return up

    def _exec_answered(self, reply: bytes, here: QueuedHere) -> bytes | None:
        """EXEC's reply is delivered: the commands the proxy serves itself get its answers
        (computed now, when Redis runs them), and MONITOR sees what ran, as Redis shows it."""
        elements = array_elements(reply) if here.answers or here.monitor else None
        if here.monitor and (elements is not None or reply in (b"*-1\r\n", b"_\r\n")):
            feed = self.registry.feed
            if elements is not None:            # (WATCH failed: nothing ran, EXEC did)
                for name, argv in here.monitor:
                    feed(self, name, argv)
            if here.exec_argv is not None:
                feed(self, b"exec", here.exec_argv)
        if not here.answers or elements is None:
            return None
        # as Redis shows a client while its EXEC runs: flags x, multi=<queued>, cmd=exec
        self.tx_running, last_cmd, self.last_cmd = here.count, self.last_cmd, b"exec"
        try:
            for i, answer in here.answers.items():
                if i < len(elements):
                    elements[i] = answer(elements[i])
        finally:
            self.tx_running, self.last_cmd = None, last_cmd
        return b"*%d\r\n" % len(elements) + b"".join(elements)

    def _exec_selected(self, reply: bytes, db: int, up: Upstream) -> None:
        """EXEC ran a SELECT: the connection's db changed; follow it everywhere."""
        if reply.startswith(b"*") and not reply.startswith(b"*-1"):
            self.db = db
            self._broadcast(resp.encode_command([b"SELECT", str(db).encode()]), up)

    def _cmd_discard(self, args):
        self.tx_db = None
        self.tx_here = QueuedHere()         # nothing queued runs: MONITOR shows none of it
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
