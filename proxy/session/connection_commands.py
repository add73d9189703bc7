"""Commands about the connection itself: AUTH, HELLO and RESET (the state that dedicated
upstream connections replay), answered as the proxy sees the client; CLIENT is in
`client_commands.py`."""

from __future__ import annotations

import re

from raft.auth import secret_matches

from ..protocol import resp
from ..upstream import Upstream
from ..write_gate import STOP
from .common import NOAUTH, OK, SHARED, WRONGPASS

_HELLO_ID = re.compile(rb"\$2\r\nid\r\n:\d+\r\n")


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
            user = (args[0] if len(args) == 2 else b"default").decode(errors="replace")
            self.registry.auth_failed(self, "auth", user)
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
                self.registry.auth_failed(self, "hello", rest[i + 1].decode(errors="replace"))
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
                              lambda reply: self._hello_result(reply, auth))

    def _hello_result(self, reply: bytes, auth: list[bytes] | None) -> bytes | None:
        """HELLO's reply names the client's id: the proxy's (as CLIENT ID and CLIENT LIST), not
        the id of the proxy's connection to the master."""
        if auth:
            self._auth_result(reply, auth)
        if reply.startswith(b"-"):
            return None
        return _HELLO_ID.sub(b"$2\r\nid\r\n:%d\r\n" % self.id, reply, count=1)

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
        self.registry.forget(self)          # out of MONITOR
        self.no_evict = self.no_touch = False
        self.channels, self.patterns, self.schannels = set(), set(), set()
        return self._local(b"+RESET\r\n")
