"""CLIENT, MONITOR, ACL LOG/WHOAMI and DEBUG, answered for this proxy's own clients.

A client of the proxy sees the proxy as its server: CLIENT LIST, INFO, KILL, PAUSE
describe and act on the proxy's client connections (never on its upstream
connections, never on another proxy's clients); MONITOR shows every command the
proxy's sessions run, those it answers itself too; ACL LOG adds the failed
authentications the proxy rejected itself to the master's log.  The shared state
(monitors, the pause, the proxy's ACL LOG) is in `client_registry.py`.
"""

from __future__ import annotations

import asyncio
import time

from ..protocol import resp
from ..upstream import Upstream
from ..write_gate import STOP
from .client_registry import (
    CLIENT_TYPES,
    PAUSE_ALL,
    PAUSE_WRITE,
    client_user,
    info_line,
    parse_kill,
)
from .common import LOCAL, NO_SUCH_CLIENT, NOAUTH, OK, SHARED, bulk

DEBUG_ALLOWED = "DEBUG ERROR, DEBUG SLEEP 0 and DEBUG OBJECT pass through"


# The harmless forms of the admin commands the proxy answers itself, that the master is asked
# first (see `ClientCommands._admin`; Redis checks ACLs before a command's own arguments): the
# same command where one changes nothing (CLIENT PAUSE -1 only gets an error), else the nearest
# (UNPAUSE: PAUSE; MONITOR: CLIENT KILL, both @admin @dangerous as it is).
_NO_ONE = str(NO_SUCH_CLIENT).encode()
_PAUSE_NOTHING = resp.encode_command([b"CLIENT", b"PAUSE", b"-1"])
_NOT_CHECKED = (b"-NOPERM", b"-ERR proxy:", b"-TRYAGAIN", b"-CLUSTERDOWN")
ADMIN_PROBES = {
    b"list": resp.encode_command([b"CLIENT", b"LIST", b"ID", _NO_ONE]),
    b"kill": resp.encode_command([b"CLIENT", b"KILL", b"ID", _NO_ONE]),
    b"pause": _PAUSE_NOTHING,
    b"unpause": _PAUSE_NOTHING,
    b"no-evict": resp.encode_command([b"CLIENT", b"NO-EVICT", b"off"]),
    b"monitor": resp.encode_command([b"CLIENT", b"KILL", b"ID", _NO_ONE]),
}


# CLIENT subcommands the proxy answers from its own state alone, and those it answers once the
# master let the user run them (ADMIN_PROBES; MONITOR is a command of its own, not a subcommand)
CLIENT_LOCAL = frozenset((b"setinfo", b"setname", b"getname", b"id", b"info"))
CLIENT_ADMIN = frozenset(ADMIN_PROBES) - {b"monitor"}
# What a CLIENT subcommand answered from the proxy's state queues on the master inside MULTI:
# a harmless command of the same ACL category (@connection) that every Redis version has;
# EXEC's element for it is replaced by the proxy's answer.
_TX_PLACEHOLDER = resp.encode_command([b"CLIENT", b"ID"])


def _wrong_args(sub: bytes) -> bytes:
    return b"-ERR wrong number of arguments for 'client|%s' command\r\n" % sub


class ClientCommands:
    """Mixed into ClientSession (proxy/session/client.py): it uses the session's state."""

    def _verbatim(self, text: bytes) -> bytes:
        """CLIENT LIST/INFO's reply: a verbatim string in RESP3, a bulk string in RESP2 (as Redis)."""
        if self.resp3:
            return b"=%d\r\ntxt:%s\r\n" % (len(text) + 4, text)
        return bulk(text)

    def _client_info(self) -> bytes:
        return (info_line(self, time.monotonic()) + "\n").encode()

    def _cmd_client(self, args):
        if not args:
            return self._local(b"-ERR wrong number of arguments for 'client' command\r\n")
        sub = args[0].lower()
        self.last_cmd = b"client|" + sub
        if self.multi and self.authenticated and (sub in CLIENT_LOCAL or sub in CLIENT_ADMIN):
            return self._client_queued(sub, args)
        if sub in CLIENT_LOCAL:
            if not self.authenticated and sub != b"setinfo":
                return self._local(NOAUTH)
            return self._local(self._client_local_reply(sub, args))
        if not self.authenticated:
            return self._local(NOAUTH)
        if sub == b"reply":
            mode = args[1].lower() if len(args) == 2 else b""
            if mode not in (b"on", b"off", b"skip"):
                return self._local(b"-ERR syntax error\r\n")
            self.reply_mode = b"on"
            if mode == b"on":
                return self._local(OK)
            self.reply_mode = mode
            return LOCAL
        if sub in CLIENT_ADMIN:
            return self._admin(ADMIN_PROBES[sub], lambda: self._client_admin(sub, args))
        if sub == b"no-touch":
            return self._client_no_touch(args)
        if sub == b"unblock" and len(args) >= 2:
            return self._client_with_id(args, 1)
        if sub in (b"tracking", b"caching"):
            if self.mode == SHARED and self._go_dedicated() is STOP:
                return STOP
            if sub == b"tracking":
                lowered = [a.lower() for a in args]
                if b"redirect" in lowered[2:-1]:
                    routed = self._client_with_id(args, lowered.index(b"redirect", 2) + 1)
                    if routed is not STOP and len(args) > 1:
                        self.tracking = args[1].lower() == b"on"
                    return routed
            if sub == b"tracking" and len(args) > 1:
                # Invalidations come from the node that served the read: a
                # tracking client reads from the master only.
                self.tracking = args[1].lower() == b"on"
        return self._master()

    def _client_local_reply(self, sub: bytes, args: list[bytes]) -> bytes:
        """CLIENT SETINFO / SETNAME / GETNAME / ID / INFO (CLIENT_LOCAL): the reply, from and to
        this session's own state."""
        if sub == b"setinfo":
            if len(args) != 3:
                return _wrong_args(b"setinfo")
            attr = args[1].lower()
            if attr == b"lib-name":
                self.lib_name = args[2]
            elif attr == b"lib-ver":
                self.lib_ver = args[2]
            return OK
        if sub == b"setname":
            if len(args) != 2:
                return _wrong_args(b"setname")
            if any(c <= 32 or c > 126 for c in args[1]):
                return b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
            self.name = args[1] or None
            self._broadcast(resp.encode_command([b"CLIENT", b"SETNAME", args[1]]), None)
            return OK
        if sub == b"getname":
            return bulk(self.name, self.resp3)
        if sub == b"id":
            return b":%d\r\n" % self.id
        return self._verbatim(self._client_info())

    def _client_queued(self, sub: bytes, args: list[bytes]):
        """CLIENT ... inside MULTI: Redis queues it and answers at EXEC, for this client.  The
        master queues a stand-in (the admin subcommands' probe, so the user's rights are checked
        when EXEC runs, as Redis checks them; else `_TX_PLACEHOLDER`), and EXEC's element for it
        becomes the proxy's answer, computed when EXEC's reply is delivered
        (transactions.QueuedHere)."""
        if self.tx_lost is not None:
            return self._local(self.tx_lost)    # queued in a transaction that can only fail
        up = self._master()
        if type(up) is not Upstream:
            return up
        if sub in CLIENT_ADMIN:
            probe = ADMIN_PROBES[sub]

            def answer(reply: bytes) -> bytes:
                return reply if reply.startswith(_NOT_CHECKED) else self._client_admin(sub, args)
        else:
            probe = _TX_PLACEHOLDER

            def answer(reply: bytes) -> bytes:
                return reply if reply.startswith(b"-") else self._client_local_reply(sub, args)
        self.tx_here.answers[self.tx_queued] = answer
        return self._send_one(up, probe)

    def _client_raw(self, args: list[bytes]):
        """CLIENT ... on a subscribed RESP3 connection (RAW mode), where Redis runs any command:
        the subcommands the proxy answers elsewhere are answered here too, in their place in
        the stream (Upstream.raw_answer); the rest go down the stream to the master as before."""
        sub = args[0].lower() if args else b""
        self.last_cmd = b"client|" + sub if sub else b"client"
        raw = self.raw
        if sub in CLIENT_LOCAL:
            raw.raw_answer(None, lambda _reply: self._client_local_reply(sub, args))
            return LOCAL
        if sub in CLIENT_ADMIN:
            def answer(reply: bytes | None) -> bytes:
                if reply.startswith(_NOT_CHECKED):
                    return reply
                out = self._client_admin(sub, args)
                if self.closing:        # CLIENT KILL of itself: closed once the reply is out
                    asyncio.get_running_loop().call_soon(self.transport.close)
                return out
            raw.raw_answer(ADMIN_PROBES[sub], answer)
            return LOCAL
        return raw

    # -- CLIENT LIST / KILL / PAUSE / NO-TOUCH ----------------------------------
    def _admin(self, probe: bytes, answer):
        """An admin command the proxy answers itself (`answer()`: its reply), once the master says
        the user that carries this client's commands may run it: `probe` is a harmless form of
        it, sent on the client's own path to the master; its -NOPERM is the client's answer."""
        up = self._master()
        if type(up) is not Upstream:
            return up

        def checked(reply: bytes) -> bytes:
            # refused, or no answer from Redis (the connection failed): never answered unchecked;
            # another error (an older Redis without the subcommand) is no refusal
            if reply.startswith(_NOT_CHECKED):
                return reply
            self._swallow(reply)        # (not owed to the client: CLIENT LIST's omem must not count it)
            return answer()
        return self._send_one(up, probe, checked)

    def _client_admin(self, sub: bytes, args: list[bytes]) -> bytes:
        if sub == b"list":
            return self._client_list(args[1:])
        if sub == b"kill":
            return self._client_kill(args[1:])
        if sub == b"pause":
            return self._client_pause(args)
        if sub == b"unpause":
            if len(args) != 1:
                return _wrong_args(b"unpause")
            self.registry.unpause()
            return OK
        # NO-EVICT: the proxy evicts no client for memory: the flag is kept and shown, as Redis does.
        mode = args[1].lower() if len(args) == 2 else b""
        if mode not in (b"on", b"off"):
            return b"-ERR syntax error\r\n"
        self.no_evict = mode == b"on"
        return OK

    def _client_list(self, args: list[bytes]) -> bytes:
        """CLIENT LIST [TYPE type] [ID id ...]: this proxy's clients."""
        ctype, ids = None, None
        i = 0
        while i < len(args):
            opt = args[i].lower()
            if opt == b"type" and i + 1 < len(args):
                ctype = args[i + 1].lower()
                if ctype not in CLIENT_TYPES:
                    return b"-ERR Unknown client type '%s'\r\n" % args[i + 1]
                ctype = b"replica" if ctype == b"slave" else ctype
                i += 2
            elif opt == b"id" and i + 1 < len(args):
                ids = set()
                for a in args[i + 1:]:
                    try:
                        ids.add(int(a))
                    except ValueError:
                        return b"-ERR Invalid client ID\r\n"
                i = len(args)
            else:
                return b"-ERR syntax error\r\n"
        from .client_registry import client_type

        now = time.monotonic()
        lines = [info_line(s, now) + "\n" for s in self.registry.clients()
                 if (ids is None or s.id in ids) and (ctype is None or client_type(s) == ctype)]
        return self._verbatim("".join(lines).encode())

    def _client_kill(self, args: list[bytes]) -> bytes:
        """CLIENT KILL addr:port | filters: closes this proxy's matching clients (and, with them,
        their own upstream connections: see `ClientSession.connection_lost`)."""
        f = parse_kill(args)
        if type(f) is bytes:
            return f
        now = time.monotonic()
        victims = [s for s in self.registry.clients() if f.matches(s, self, now)]
        if f.old_form:
            victims = victims[:1]
            if not victims:
                return b"-ERR No such client\r\n"
        for s in victims:
            if s is self:
                self.closing = True     # once the reply is out, as Redis closes after the reply
            else:
                s.kill()
        return OK if f.old_form else b":%d\r\n" % len(victims)

    def kill(self) -> None:
        """Closed by another client's CLIENT KILL: at once, replies still owed are dropped (as Redis
        frees the client); `connection_lost` then closes its upstream connections."""
        if self.offloaded:
            if not self.killed:
                self.server.dataplane.kill(self)    # served by the C thread (proxy/dataplane)
            return
        if self.closed or self.killed:
            return
        self.killed = True
        self.closed = True          # nothing more is written to it, nothing more is kept for it
        self.transport.abort()

    def _client_pause(self, args: list[bytes]) -> bytes:
        if len(args) not in (2, 3):
            return _wrong_args(b"pause")
        try:
            ms = int(args[1])
        except ValueError:
            return b"-ERR timeout is not an integer or out of range\r\n"
        if ms < 0:
            return b"-ERR timeout is negative\r\n"
        mode = PAUSE_ALL
        if len(args) == 3:
            m = args[2].lower()
            if m not in (b"write", b"all"):
                return b"-ERR CLIENT PAUSE mode must be WRITE or ALL\r\n"
            mode = PAUSE_WRITE if m == b"write" else PAUSE_ALL
        self.registry.pause(ms, mode)
        return OK

    def _client_no_touch(self, args: list[bytes]):
        """CLIENT NO-TOUCH: the reads touch keys on the Redis nodes, so it needs connections of
        the client's own that all carry it; the flag is set once the master accepted it (Redis 7.2+)."""
        mode = args[1].lower() if len(args) == 2 else b""
        if mode not in (b"on", b"off"):
            return self._local(b"-ERR syntax error\r\n")
        if self.mode == SHARED and self._go_dedicated() is STOP:
            return STOP
        up = self._master()
        if type(up) is not Upstream:
            return up
        cmd = resp.encode_command([b"CLIENT", b"NO-TOUCH", mode])

        def accepted(reply: bytes) -> None:
            if not reply.startswith(b"-"):
                self.no_touch = mode == b"on"
                self._broadcast(cmd, up)
        return self._send_one(up, cmd, accepted)

    def _client_with_id(self, args: list[bytes], i: int):
        """CLIENT UNBLOCK <id>, CLIENT TRACKING ... REDIRECT <id>: `args[i]` is a
        client id as this proxy hands them out (CLIENT ID); the master knows the
        connections, so send it the id of that client's own master connection.
        An id with no such connection becomes one no connection has, and Redis
        answers as for any unknown id (never some other connection's id)."""
        up = self._master()
        if type(up) is not Upstream:
            return up
        try:
            pid = int(args[i])
        except ValueError:
            pid = None                        # Redis' own error for a non-integer id
        if pid is not None:
            target = self if pid == self.id else next((s for s in self.server.clients if s.id == pid), None)
            conn = None
            if target is not None and not target.closed:
                raw = target.raw
                conn = raw if raw is not None and not raw.closed and raw.addr == up.addr \
                    else target.dedicated.get(up.addr)
            if conn is up and not conn.closed and conn.redis_id is None and not self.multi:
                # our own connection, just opened: its CLIENT ID (set-up) comes before this PING's reply
                self._send_one(up, resp.encode_command([b"PING"]), self._swallow)
                self.waiting = True
                self.wait_slot = None
                return STOP
            redis_id = conn.redis_id if conn is not None and not conn.closed else None
            args = list(args)
            args[i] = str(redis_id if redis_id is not None else NO_SUCH_CLIENT).encode()
        return self._send_one(up, resp.encode_command([b"CLIENT", *args]))

    def _swallow(self, reply: bytes) -> bytes:
        self.queued = max(0, self.queued - len(reply))
        return b""

    # -- MONITOR ----------------------------------------------------------------------
    def _cmd_monitor(self, args):
        """MONITOR: from now on this client gets a line for every command this proxy's clients
        run (`ClientRegistry.feed`), those the proxy answers itself too."""
        if not self.authenticated:
            return self._local(NOAUTH)
        if self.multi:
            return self._master()       # Redis refuses it inside MULTI: EXEC then aborts

        def start() -> bytes:
            self.registry.add_monitor(self)
            return OK
        return self._admin(ADMIN_PROBES[b"monitor"], start)

    # -- ACL ------------------------------------------------------------------------------
    def _cmd_acl(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if self.multi:
            return self._master()
        sub = args[0].lower() if args else b""
        if args:
            self.last_cmd = b"acl|" + sub
        if sub == b"whoami" and len(args) == 1:
            return self._local(bulk(client_user(self).encode()))
        self._write_flag = True         # (as every command that is not a read)
        if sub != b"log":
            return self._master()
        count = 10
        if len(args) == 2:
            if args[1].lower() == b"reset":
                self.registry.acl_log.clear()       # and the master's, below
                count = -1
            else:
                try:
                    count = int(args[1])
                except ValueError:
                    count = -1              # the master's own error
        up = self._master()
        if type(up) is not Upstream:
            return up
        data = resp.encode_command([b"ACL", *args])
        if count < 0:
            return self._send_one(up, data)
        registry, resp3 = self.registry, self.resp3
        return self._send_one(up, data, lambda reply: registry.merged_acl_log(reply, count, resp3))

    # -- DEBUG ------------------------------------------------------------------------------
    def _cmd_debug(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        sub = args[0].lower() if args else b""
        if sub in (b"error", b"object") or (sub == b"sleep" and len(args) == 2 and args[1] in (b"0", b"0.0")):
            return self._debug_target(args)
        what = "DEBUG " + (sub.decode(errors="replace").upper() + (" " + args[1].decode(errors="replace")
                                                                   if sub == b"sleep" and len(args) > 1 else ""))
        return self._cmd_refused(b"debug", f"{what.strip()} is not allowed through redis-raft-proxy: it could stall "
                                           f"or change a Redis node under every client ({DEBUG_ALLOWED})")

    def _debug_target(self, args):
        return self._master()

    # -- PING while the master is stuck -------------------------------------------------------
    def _ping_master(self) -> str | None:
        return self.router.master

    def _master_busy(self) -> bytes | None:
        """`-BUSY ...` while the probes see the master stuck in a script or function: what Redis
        itself answers a PING then."""
        addr = self._ping_master()
        st = self.server.health.nodes.get(addr) if addr else None
        err = st.error if st is not None else None
        if err and err.startswith("BUSY"):
            return resp.error_reply(err)
        return None
