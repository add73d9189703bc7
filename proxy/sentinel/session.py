"""One client connection to the Sentinel port: its commands, AUTH, and pub/sub of the events."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from raft.auth import secret_matches

from ..protocol import resp
from ..protocol.resp import ProtocolError
from ..upstream import set_nodelay
from .replies import array, bulk, error, fields_reply, integer, null_array, null_bulk, push, simple, verbatim
from .service import REDIS_VERSION, split_addr

if TYPE_CHECKING:
    from .service import SentinelService


log = logging.getLogger("proxy.sentinel")

MAX_BULK = 1024 * 1024            # Sentinel commands are tiny
MAX_ARGS = 1024
OUTPUT_LIMIT = 8 * 1024 * 1024    # a subscriber that stops reading is disconnected past this

REFUSED = {
    "failover": "the proxies fail over by themselves through Raft; for a graceful switchover run "
                "'redis-raft-proxy failover --to HOST:PORT'",
    "set": "settings come from the proxy configuration (redis-raft-proxy config set down_after_ms ...), not "
           "SENTINEL SET",
    "monitor": "the monitored Redis nodes come from the proxy configuration (redis_nodes, master_name)",
    "remove": "the monitored Redis nodes come from the proxy configuration (redis_nodes, master_name)",
    "reset": "the proxies keep their state in Raft; there is nothing to reset",
    "config": "settings come from the proxy configuration file, flags and REDIS_RAFT_PROXY_* variables",
    "flushconfig": "the proxies keep their state in Raft, not in a sentinel.conf",
    "is-master-down-by-addr": "the proxies vote through Raft, not through Sentinel votes",
    "simulate-failure": "not available",
    "debug": "not available",
}

HELP_LINES = [
    "SENTINEL <subcommand> [<arg> [value] [opt] ...]. Subcommands are (served by redis-raft-proxy):",
    "CKQUORUM <master-name>",
    "    Check if the current Sentinel configuration is able to reach the quorum needed to failover.",
    "GET-MASTER-ADDR-BY-NAME <master-name>",
    "    Return the ip and port number of the master with that name.",
    "MASTER <master-name>",
    "    Show the state and info of the specified master.",
    "MASTERS",
    "    Show a list of monitored masters and their state.",
    "MYID",
    "    Return the ID of the Sentinel instance.",
    "REPLICAS <master-name>",
    "    Show a list of replicas for this master and their state.",
    "SENTINELS <master-name>",
    "    Show a list of Sentinel instances for this master and their state.",
    "Refused: FAILOVER, SET, MONITOR, REMOVE, RESET, CONFIG (the proxies decide through Raft; "
    "use 'redis-raft-proxy failover --to HOST:PORT').",
]



def glob_match(pattern: bytes, text: bytes) -> bool:
    """Redis' stringmatchlen: *, ?, [abc], [^a-z], backslash escapes."""
    p, t = 0, 0
    np_, nt = len(pattern), len(text)
    star_p, star_t = -1, 0
    while t < nt:
        if p < np_:
            c = pattern[p]
            if c == 42:  # *
                star_p, star_t = p, t
                p += 1
                continue
            if c == 63:  # ?
                p += 1
                t += 1
                continue
            if c == 91:  # [
                q = p + 1
                neg = q < np_ and pattern[q] == 94
                if neg:
                    q += 1
                matched = False
                while q < np_ and pattern[q] != 93:
                    if pattern[q] == 92 and q + 1 < np_:
                        q += 1
                        if pattern[q] == text[t]:
                            matched = True
                    elif q + 2 < np_ and pattern[q + 1] == 45:  # a-z
                        lo, hi = sorted((pattern[q], pattern[q + 2]))
                        if lo <= text[t] <= hi:
                            matched = True
                        q += 2
                    elif pattern[q] == text[t]:
                        matched = True
                    q += 1
                if matched != neg:
                    p = q + 1
                    t += 1
                    continue
            else:
                if c == 92 and p + 1 < np_:  # backslash
                    p += 1
                    c = pattern[p]
                if c == text[t]:
                    p += 1
                    t += 1
                    continue
        if star_p < 0:
            return False
        p = star_p + 1
        star_t += 1
        t = star_t
    while p < np_ and pattern[p] == 42:
        p += 1
    return p == np_


_SUB_ALLOWED = frozenset((b"subscribe", b"psubscribe", b"unsubscribe", b"punsubscribe", b"ping", b"quit",
                          b"reset", b"ssubscribe", b"sunsubscribe"))


class SentinelSession(asyncio.Protocol):
    def __init__(self, svc: SentinelService) -> None:
        self.svc = svc
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.resp3 = False
        self.authed = not svc.password
        self.name: bytes | None = None
        self.id = svc.new_client_id()
        self.channels: dict[bytes, None] = {}     # insertion-ordered sets
        self.patterns: dict[bytes, None] = {}
        self.closed = False
        self._held = False          # reading paused until the service's first read of its peers

    # -- asyncio ---------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        svc = self.svc
        svc.total_connections += 1
        if len(svc.sessions) >= svc.cfg.maxclients:
            transport.write(b"-ERR max number of clients reached\r\n")
            transport.close()
            self.closed = True
            return
        set_nodelay(transport)
        svc.client_arrived()
        svc.sessions.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.svc.sessions.discard(self)
        self.svc.client_left()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buf += data
        refresh = self.svc.refresh
        if refresh is not None and not refresh.done():
            if not self._held:      # answered once the other proxies have been read (at most
                self._held = True   # PEER_TIMEOUT_S): never from a view of them gone stale
                self.transport.pause_reading()
                refresh.add_done_callback(self._resume)
            return
        self._serve()

    def _resume(self, _fut: asyncio.Future) -> None:
        self._held = False
        if self.closed:
            return
        self.transport.resume_reading()
        self._serve()

    def _serve(self) -> None:
        """Answer every whole command in the buffer."""
        buf = self.buf
        out: list[bytes] = []
        pos = 0
        close = False
        try:
            while pos < len(buf):
                if buf[pos] == 42:  # '*': multibulk
                    res = resp.parse_command(buf, pos, MAX_BULK, MAX_ARGS)
                    if res is None or res[0] is None:
                        break
                    end = res[0]
                    first = buf.find(b"\r\n", pos) + 2
                    args = resp.command_args(buf, first, end) if res[3] else []
                else:
                    res = resp.parse_inline(buf, pos)
                    if res is None:
                        break
                    end, args = res
                pos = end
                if not args:
                    continue
                reply, close = self.execute(args)
                out.append(reply)
                if close:
                    break
        except ProtocolError as exc:
            out.append(exc.reply)
            close = True
        del buf[:pos]
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.closed = True
            self.svc.sessions.discard(self)
            self.transport.close()

    # -- pub/sub ------------------------------------------------------------------
    def subscriptions(self) -> int:
        return len(self.channels) + len(self.patterns)

    def deliver(self, channel: bytes, message: bytes) -> int:
        if self.closed:
            return 0
        data = []
        if channel in self.channels:
            data.append(push(b"message", [bulk(channel), bulk(message)], self.resp3))
        for pat in self.patterns:
            if glob_match(pat, channel):
                data.append(push(b"pmessage", [bulk(pat), bulk(channel), bulk(message)], self.resp3))
        if not data:
            return 0
        self.transport.write(b"".join(data))
        if self.transport.get_write_buffer_size() > OUTPUT_LIMIT:
            log.warning("event=sentinel_client_dropped reason='output buffer over %d bytes'", OUTPUT_LIMIT)
            self.closed = True
            self.svc.sessions.discard(self)
            self.transport.abort()
        return len(data)

    def _subscribe(self, kind: bytes, targets: list[bytes], into: dict[bytes, None]) -> bytes:
        out = []
        for t in targets:
            into[t] = None
            out.append(push(kind, [bulk(t), integer(self.subscriptions())], self.resp3))
        return b"".join(out)

    def _unsubscribe(self, kind: bytes, targets: list[bytes], outof: dict[bytes, None]) -> bytes:
        if not targets:
            targets = list(outof)
            if not targets:
                return push(kind, [null_bulk(self.resp3), integer(self.subscriptions())], self.resp3)
        out = []
        for t in targets:
            outof.pop(t, None)
            out.append(push(kind, [bulk(t), integer(self.subscriptions())], self.resp3))
        return b"".join(out)

    # -- commands -------------------------------------------------------------------
    def execute(self, args: list[bytes]) -> tuple[bytes, bool]:
        """One command's reply, and whether to close the connection after it."""
        name = args[0].lower()
        if name == b"quit":
            return simple("OK"), True
        if not self.authed and name not in (b"auth", b"hello"):
            return error("NOAUTH Authentication required."), False
        if self.subscriptions() and not self.resp3 and name not in _SUB_ALLOWED:
            return error(f"ERR Can't execute '{_show(args[0]).lower()}': only (P|S)SUBSCRIBE / "
                         "(P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"), False
        handler = _COMMANDS.get(name)
        if handler is None:
            shown = "".join(f"'{_show(a)}' " for a in args[1:])
            return error(f"ERR unknown command '{_show(args[0])}', with args beginning with: {shown}"), False
        try:
            return handler(self, args), False
        except _Arity:
            return error(f"ERR wrong number of arguments for '{name.decode('latin-1')}' command"), False
        except Exception:  # a bug must not kill the connection or the proxy
            log.exception("sentinel command %r failed", args[:2])
            return error("ERR internal error in redis-raft-proxy's Sentinel endpoint"), False

    def cmd_ping(self, args):
        if len(args) > 2:
            raise _Arity
        if self.subscriptions() and not self.resp3:
            return push(b"pong", [bulk(args[1] if len(args) > 1 else b"")], False)
        return bulk(args[1]) if len(args) > 1 else simple("PONG")

    def _check_password(self, user: bytes | None, password: bytes) -> bool:
        if user is not None and user != b"default":
            return False
        if not self.svc.password:
            return True  # the default user has no password
        return secret_matches(password, self.svc.password)

    def cmd_auth(self, args):
        if len(args) not in (2, 3):
            return error("ERR syntax error")
        if len(args) == 2 and not self.svc.password:
            return error("ERR AUTH <password> called without any password configured for the default user. "
                         "Are you sure your configuration is correct?")
        user = args[1] if len(args) == 3 else None
        if not self._check_password(user, args[-1]):
            return error("WRONGPASS invalid username-password pair or user is disabled.")
        self.authed = True
        return simple("OK")

    def cmd_hello(self, args):
        proto = None
        i = 1
        if len(args) > 1:
            try:
                proto = int(args[1])
            except ValueError:
                return error("ERR Protocol version is not an integer or out of range")
            if proto not in (2, 3):
                return error("NOPROTO unsupported protocol version")
            i = 2
        authed = self.authed
        name = None
        while i < len(args):
            opt = args[i].lower()
            if opt == b"auth" and i + 2 < len(args):
                if not self._check_password(args[i + 1], args[i + 2]):
                    return error("WRONGPASS invalid username-password pair or user is disabled.")
                authed = True
                i += 3
            elif opt == b"setname" and i + 1 < len(args):
                name = args[i + 1]
                if not _valid_name(name):
                    return error("ERR Client names cannot contain spaces, newlines or special characters.")
                i += 2
            else:
                return error(f"ERR Syntax error in HELLO option '{_show(args[i])}'")
        if not authed:
            return error("NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                         "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
                         "select the RESP protocol version at the same time")
        self.authed = True
        if name is not None:
            self.name = name or None
        if proto is not None:
            self.resp3 = proto == 3
        pairs = [(b"server", bulk("redis")), (b"version", bulk(REDIS_VERSION)),
                 (b"proto", integer(3 if self.resp3 else 2)), (b"id", integer(self.id)),
                 (b"mode", bulk("sentinel")), (b"modules", array([]))]     # no "role" in sentinel mode
        body = b"".join(bulk(k) + v for k, v in pairs)
        return (b"%%%d\r\n" % len(pairs) if self.resp3 else b"*%d\r\n" % (2 * len(pairs))) + body

    def cmd_client(self, args):
        if len(args) < 2:
            raise _Arity
        sub = args[1].lower()
        if sub == b"setname" and len(args) == 3:
            if not _valid_name(args[2]):
                return error("ERR Client names cannot contain spaces, newlines or special characters.")
            self.name = args[2] or None
            return simple("OK")
        if sub == b"getname" and len(args) == 2:
            return bulk(self.name) if self.name else null_bulk(self.resp3)
        if sub == b"setinfo" and len(args) == 4:
            return simple("OK")
        if sub == b"id" and len(args) == 2:
            return integer(self.id)
        return error(f"ERR unknown subcommand or wrong number of arguments for '{_show(args[1])}'. "
                     "Try CLIENT HELP.")

    def cmd_info(self, args):
        section = args[1].decode("latin-1") if len(args) > 1 else ""
        return verbatim(self.svc.info_text(section, self), self.resp3)

    def cmd_role(self, args):
        if len(args) != 1:
            raise _Arity
        names = [bulk(self.svc.master_name)] if self.svc.topology.master else []
        return array([bulk("sentinel"), array(names)])

    def cmd_reset(self, args):
        self.channels.clear()
        self.patterns.clear()
        self.resp3 = False
        self.name = None
        self.authed = not self.svc.password
        return simple("RESET")

    def cmd_command(self, args):
        if len(args) > 1 and args[1].lower() == b"count":
            return integer(0)
        return array([])

    def cmd_subscribe(self, args):
        if len(args) < 2:
            raise _Arity
        return self._subscribe(b"subscribe", args[1:], self.channels)

    def cmd_psubscribe(self, args):
        if len(args) < 2:
            raise _Arity
        return self._subscribe(b"psubscribe", args[1:], self.patterns)

    def cmd_unsubscribe(self, args):
        return self._unsubscribe(b"unsubscribe", args[1:], self.channels)

    def cmd_punsubscribe(self, args):
        return self._unsubscribe(b"punsubscribe", args[1:], self.patterns)

    def cmd_sentinel(self, args):
        if len(args) < 2:
            raise _Arity
        svc = self.svc
        sub = args[1].lower()
        subname = sub.decode("latin-1")
        r3 = self.resp3

        def arity(n: int) -> bytes | None:
            if len(args) != n:
                return error(f"ERR wrong number of arguments for 'sentinel|{subname}' command")
            return None

        if subname in REFUSED:
            return error(f"ERR SENTINEL {subname.upper()} is not supported by redis-raft-proxy: "
                         f"{REFUSED[subname]}")
        if sub == b"get-master-addr-by-name":
            if (e := arity(3)) is not None:
                return e
            if not svc.known_master(args[2]):
                return null_array(r3)
            host, port = split_addr(svc.topology.master)
            return array([bulk(host), bulk(port)])
        if sub == b"master":
            if (e := arity(3)) is not None:
                return e
            if not svc.known_master(args[2]):
                return error("ERR No such master with that name")
            return fields_reply(svc.master_fields(), r3)
        if sub == b"masters":
            if (e := arity(2)) is not None:
                return e
            return array([fields_reply(svc.master_fields(), r3)] if svc.topology.master else [])
        if sub in (b"replicas", b"slaves"):
            if (e := arity(3)) is not None:
                return e
            if not svc.known_master(args[2]):
                return error("ERR No such master with that name")
            return array([fields_reply(svc.replica_fields(a), r3) for a in svc.topology.replicas])
        if sub == b"sentinels":
            if (e := arity(3)) is not None:
                return e
            if not svc.known_master(args[2]):
                return error("ERR No such master with that name")
            return array([fields_reply(svc.sentinel_fields(p), r3) for p in svc.other_sentinels()])
        if sub == b"ckquorum":
            if (e := arity(3)) is not None:
                return e
            if not svc.known_master(args[2]):
                return error("ERR No such master with that name")
            q = svc.quorum()
            usable = svc.usable_sentinels()
            if svc.lease_held():
                return simple(f"OK {max(usable, q)} usable Sentinels. Quorum and failover authorization "
                              "can be reached")
            return error(f"NOQUORUM {usable} usable Sentinels. Not enough available Sentinels to reach the "
                         "specified quorum for this master. Not enough available Sentinels to reach the "
                         "majority and authorize a failover")
        if sub == b"myid":
            if (e := arity(2)) is not None:
                return e
            return bulk(svc.myid)
        if sub == b"pending-scripts":
            return array([])
        if sub == b"help":
            return array([simple(line) for line in HELP_LINES])
        return error(f"ERR unknown subcommand '{_show(args[1])}'. Try SENTINEL HELP.")


class _Arity(Exception):
    pass


def _show(arg: bytes, limit: int = 128) -> str:
    return arg[:limit].decode("utf-8", "replace").replace("\r", " ").replace("\n", " ")


def _valid_name(name: bytes) -> bool:
    return all(33 <= c <= 126 for c in name)


_COMMANDS = {
    b"ping": SentinelSession.cmd_ping,
    b"auth": SentinelSession.cmd_auth,
    b"hello": SentinelSession.cmd_hello,
    b"client": SentinelSession.cmd_client,
    b"info": SentinelSession.cmd_info,
    b"role": SentinelSession.cmd_role,
    b"reset": SentinelSession.cmd_reset,
    b"command": SentinelSession.cmd_command,
    b"subscribe": SentinelSession.cmd_subscribe,
    b"psubscribe": SentinelSession.cmd_psubscribe,
    b"unsubscribe": SentinelSession.cmd_unsubscribe,
    b"punsubscribe": SentinelSession.cmd_punsubscribe,
    b"sentinel": SentinelSession.cmd_sentinel,
}
