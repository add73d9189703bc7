"""Commands about the connection itself: AUTH, HELLO, RESET and CLIENT (the state
that dedicated upstream connections replay), answered as the proxy sees the client."""

from __future__ import annotations

import time

from raft.auth import secret_matches

from .. import resp
from ..upstream import Upstream
from ..write_gate import STOP
from .common import LOCAL, NO_SUCH_CLIENT, NOAUTH, OK, RAW, SHARED, WRONGPASS, bulk


class ConnectionCommands:
    """Mixed into ClientSession (proxy/session/client.py): it uses the session's state."""

    def _proxy_password(self, user: bytes | None, password: bytes) -> bool | None:
        """With `requirepass`, the proxy owns the default user's password.

        Returns True/False for the default user, None for other users (their
        credentials go to Redis ACLs).
        """
        cfg = self.server.cfg
        if not cfg.requirepass or (user is not None and user != b"default"):
            return None
        return secret_matches(password, cfg.requirepass)

    def _cmd_auth(self, args):
        if len(args) not in (1, 2):
            return self._local(b"-ERR wrong number of arguments for 'auth' command\r\n")
        verdict = self._proxy_password(args[0] if len(args) == 2 else None, args[-1])
        if verdict is True:
            self.authenticated = True
            return self._local(OK)
        if verdict is False:
            return self._local(WRONGPASS)
        if self.mode == SHARED and self._go_dedicated() is STOP:
            return STOP
        up = self._master()
        if type(up) is not Upstream:
            return up
        return self._send_one(up, resp.encode_command([b"AUTH", *args]),
                              lambda reply: self._auth_result(reply, list(args)))

    def _auth_result(self, reply: bytes, args: list[bytes]) -> None:
        if not reply.startswith(b"-"):
            self.authenticated = True
            self.auth = args
            cmd = resp.encode_command([b"AUTH", *args])
            self._broadcast(cmd, self.dedicated.get(self.router.master))

    def _cmd_hello(self, args):
        if args:
            try:
                proto = int(args[0])
            except ValueError:
                return self._local(b"-ERR Protocol version is not an integer or out of range\r\n")
            if proto not in (2, 3):
                return self._local(b"-NOPROTO unsupported protocol version\r\n")
        cfg = self.server.cfg
        rest = list(args[1:])
        # HELLO ... AUTH default <pass> with the proxy's own password: checked here.
        lowered = [a.lower() for a in rest]
        if cfg.requirepass and b"auth" in lowered:
            i = lowered.index(b"auth")
            if i + 2 >= len(rest):
                return self._local(b"-ERR Syntax error in HELLO option 'auth'\r\n")
            verdict = self._proxy_password(rest[i + 1], rest[i + 2])
            if verdict is False:
                return self._local(WRONGPASS)
            if verdict is True:
                self.authenticated = True
                rest = rest[:i] + rest[i + 3:]
                lowered = [a.lower() for a in rest]
        if not self.authenticated and b"auth" not in lowered:
            return self._local(NOAUTH)
        if self.mode == SHARED and self._go_dedicated() is STOP:
            return STOP
        up = self._master()
        if type(up) is not Upstream:
            return up
        if args:
            self.resp3 = int(args[0]) == 3
            hello = resp.encode_command([b"HELLO", args[0]])
            self._broadcast(hello, up)
            for u in self.dedicated.values():
                u.resp3 = self.resp3
        lowered = [a.lower() for a in rest]
        if b"setname" in lowered:
            i = lowered.index(b"setname")
            if i + 1 < len(rest):
                self.name = rest[i + 1]
        auth = None
        if b"auth" in lowered:
            i = lowered.index(b"auth")
            auth = rest[i + 1:i + 3]
        return self._send_one(up, resp.encode_command([b"HELLO", *args[:1], *rest]),
                              (lambda reply: self._auth_result(reply, auth)) if auth else None)

    def _cmd_reset(self, args):
        if not self._drained():
            return STOP
        for up in self.dedicated.values():
            up.close()
        self.dedicated.clear()
        if self.raw is not None:
            self.raw.close()
            self.raw = None
        self.mode = SHARED
        self.db = 0
        self.name = None
        self.resp3 = False
        self.auth = None
        self.authenticated = not self.server.cfg.requirepass
        self.multi = self.watching = False
        self.tx_lost = None
        self.reply_mode = b"on"
        self.read_node = None
        self.rw_slot = None
        return self._local(b"+RESET\r\n")

    def _cmd_client(self, args):
        if not args:
            return self._local(b"-ERR wrong number of arguments for 'client' command\r\n")
        sub = args[0].lower()
        if self.multi and self.authenticated and sub in (b"setinfo", b"setname", b"getname", b"id", b"info"):
            # Inside MULTI Redis queues them and EXEC answers for each: answered
            # here, EXEC's reply would lack their elements.
            return self._master()
        if sub == b"setinfo":
            return self._local(OK if len(args) == 3 else
                               b"-ERR wrong number of arguments for 'client|setinfo' command\r\n")
        if not self.authenticated:
            return self._local(NOAUTH)
        if sub == b"setname":
            if len(args) != 2:
                return self._local(b"-ERR wrong number of arguments for 'client|setname' command\r\n")
            if any(c <= 32 or c > 126 for c in args[1]):
                return self._local(b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n")
            self.name = args[1] or None
            self._broadcast(resp.encode_command([b"CLIENT", b"SETNAME", args[1]]), None)
            return self._local(OK)
        if sub == b"getname":
            return self._local(bulk(self.name, self.resp3))
        if sub == b"id":
            return self._local(b":%d\r\n" % self.id)
        if sub == b"reply":
            mode = args[1].lower() if len(args) == 2 else b""
            if mode not in (b"on", b"off", b"skip"):
                return self._local(b"-ERR syntax error\r\n")
            self.reply_mode = b"on"
            if mode == b"on":
                return self._local(OK)
            self.reply_mode = mode
            return LOCAL
        if sub == b"kill":
            return self._local(b"-ERR proxy: CLIENT KILL is not allowed through redis-raft-proxy "
                               b"(upstream connections are shared)\r\n")
        if sub == b"info":
            return self._local(bulk(self._client_info(), False) if not self.resp3 else
                               b"=%d\r\ntxt:%s\r\n" % (len(self._client_info()) + 4, self._client_info()))
        if sub == b"unblock" and len(args) >= 2:
            return self._client_with_id(args, 1)
        if sub in (b"tracking", b"caching", b"no-evict", b"no-touch"):
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

    def _client_info(self) -> bytes:
        """CLIENT INFO for this client as the proxy sees it (Redis' format)."""
        peer = self.transport.get_extra_info("peername") or ("?", 0)
        local = self.transport.get_extra_info("sockname") or ("?", 0)
        flags = ("x" if self.multi else "") + ("P" if self.mode == RAW else "") or "N"
        return (f"id={self.id} addr={peer[0]}:{peer[1]} laddr={local[0]}:{local[1]} fd=-1 "
                f"name={(self.name or b'').decode(errors='replace')} age={int(time.monotonic() - self.created)} "
                f"idle=0 flags={flags} db={self.db} sub=0 psub=0 ssub=0 multi={-1 if not self.multi else 0} "
                f"qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 obl=0 oll={len(self.pending)} omem={self.queued} "
                f"tot-mem=0 events=r cmd=client|info user=default redir=-1 "
                f"resp={3 if self.resp3 else 2}\n").encode()
