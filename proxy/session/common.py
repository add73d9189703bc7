"""What every part of a client session shares: its modes, canned replies and reply slots."""

from __future__ import annotations

import itertools
import logging

from ..protocol import resp
from ..protocol.commands import RAW_MODE, Kind
from ..upstream import Slot

READ, WRITE, ADMIN = int(Kind.READ), int(Kind.WRITE), int(Kind.ADMIN)

log = logging.getLogger("proxy.session")

SHARED, DEDICATED, RAW = 0, 1, 2
LOCAL = object()    # answered (or swallowed) by the proxy itself
# STOP (write_gate): stop reading commands until owed replies arrived or a hold ends

# RAW mode: commands that only manage the pub/sub or MONITOR stream itself;
# every other command passes the write gate (or, for reads, the read gate).
RAW_STREAM_COMMANDS = RAW_MODE | {b"ping", b"echo", b"quit", b"reset"}

MAX_PENDING_SLOTS = 10_000
NO_SUCH_CLIENT = 2**63 - 1   # a client id no Redis connection has
client_ids = itertools.count(1)

PONG = b"+PONG\r\n"
OK = b"+OK\r\n"
NOAUTH = b"-NOAUTH Authentication required.\r\n"
WAIT_MARK = resp.encode_command([b"PUBLISH", b"__redis-raft-proxy:wait__", b""])
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"


def bulk(value: bytes | None, resp3: bool = False) -> bytes:
    if value is None:
        return b"_\r\n" if resp3 else b"$-1\r\n"
    return b"$%d\r\n%s\r\n" % (len(value), value)


class LocalSlot(Slot):
    """A reply the proxy wrote itself, already complete."""

    __slots__ = ()

    def __init__(self, data: bytes) -> None:
        super().__init__(None, 0)
        self.parts.append(data)
        self.done = True


class HookSlot(Slot):
    """A slot whose complete reply the session inspects (AUTH, SELECT)."""

    __slots__ = ("hook",)

    def __init__(self, owner, hook) -> None:
        super().__init__(owner, 1)
        self.hook = hook


class Sink(list):
    """Parts of a reply the client asked not to get (CLIENT REPLY OFF/SKIP)."""

    def append(self, _item) -> None:
        pass

    def extend(self, _items) -> None:
        pass
