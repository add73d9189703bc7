"""This proxy's own client connections, described as Redis describes its clients.

One `ClientRegistry` per `ProxyServer` (`server.registry`) keeps what is shared
between sessions: the clients MONITOR feeds, the CLIENT PAUSE in force, and the
proxy's own ACL LOG (authentications it rejected itself).  The pure helpers here
build Redis's formats: the CLIENT LIST / CLIENT INFO line, CLIENT KILL's filters,
MONITOR lines, ACL LOG entries.

A session records only what costs nothing on the hot path: the last command's
name (one attribute store per batch) and `_now` (set once per read anyway: the
last interaction).  Everything else is read from the session when a line is
asked for.  Everything here describes this proxy's clients only: a CLIENT KILL or
CLIENT PAUSE on one proxy never touches the clients of another proxy.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from ..protocol.commands import BLOCKING, CONTAINERS, Kind

PAUSE_NONE, PAUSE_WRITE, PAUSE_ALL = 0, 1, 2
ACL_LOG_MAX = 128                   # Redis' acllog-max-len default
ACL_LOG_GROUP_S = 60.0              # Redis groups a repeated failure into one entry for 60 s
CLIENT_TYPES = frozenset({b"normal", b"pubsub", b"master", b"replica", b"slave"})
SUBSCRIBE = {b"subscribe": "channels", b"unsubscribe": "channels", b"psubscribe": "patterns",
             b"punsubscribe": "patterns", b"ssubscribe": "schannels", b"sunsubscribe": "schannels"}
# the commands a session looks at once routed, besides every command while in MULTI or monitored
AFTER_RUN = frozenset(SUBSCRIBE) | {b"multi"}
# never paused: the pause must stay liftable from any client
UNPAUSABLE = frozenset({b"client|unpause", b"client|pause"})


# -- CLIENT LIST / CLIENT INFO ----------------------------------------------------------------
def client_user(s) -> str:
    """The user the client authenticated as (`AUTH user pass` through to Redis ACLs), else default."""
    auth = s.auth
    if auth is not None and len(auth) == 2:
        return auth[0].decode(errors="replace")
    return "default"


def client_type(s) -> bytes:
    """Redis' client type: a proxy client is never a master or a replica (SYNC is refused)."""
    return b"pubsub" if (s.channels or s.patterns or s.schannels) else b"normal"


def client_flags(s) -> str:
    """Redis' flags letters, in Redis' order (O monitor, P pub/sub, x MULTI, b blocked, t tracking,
    c closing after the reply, e no-evict, T no-touch; N when none)."""
    f = ""
    if s.monitoring:
        f += "O"
    if s.channels or s.patterns or s.schannels:
        f += "P"
    if s.multi or s.tx_running is not None:
        f += "x"
    if s.last_cmd in BLOCKING and any(not slot.done for slot in s.pending):
        f += "b"
    if s.tracking:
        f += "t"
    if s.closing:
        f += "c"
    if s.no_evict:
        f += "e"
    if s.no_touch:
        f += "T"
    return f or "N"


def info_line(s, now: float) -> str:
    """One CLIENT LIST line (without its newline) for session `s`, fields as Redis 7 means them."""
    t = s.transport
    wbuf = t.get_write_buffer_size() if t is not None and not s.closed else 0
    sock = t.get_extra_info("socket") if t is not None and not s.offloaded else None
    fd = sock.fileno() if sock is not None else s.thread_fd
    qbuf, omem, oll = s.thread_buffers if s.offloaded else (len(s.buf), s.queued + wbuf, len(s.pending))
    age = int(now - s.created)
    idle = int(now - s._now) if s._now else age
    name = (s.name or b"").decode(errors="replace")
    events = ("r" if not s.reading_paused else "") + ("w" if wbuf else "")
    line = (f"id={s.id} addr={s.peer_addr} laddr={s.local_addr} fd={fd} name={name} age={age} idle={idle} "
            f"flags={client_flags(s)} db={s.db} sub={len(s.channels)} psub={len(s.patterns)} "
            f"ssub={len(s.schannels)} multi={s.tx_count if s.multi else -1 if s.tx_running is None else s.tx_running} "
            f"qbuf={qbuf} qbuf-free=0 argv-mem=0 "
            f"multi-mem=0 rbs={qbuf} rbp={qbuf} obl=0 oll={oll} omem={omem} tot-mem={qbuf + omem} "
            f"events={events} cmd={s.last_cmd.decode(errors='replace')} user={client_user(s)} redir=-1 "
            f"resp={3 if s.resp3 else 2}")
    if s.lib_name is not None or s.lib_ver is not None:
        line += f" lib-name={(s.lib_name or b'').decode(errors='replace')} " \
                f"lib-ver={(s.lib_ver or b'').decode(errors='replace')}"
    return line


# -- CLIENT KILL ----------------------------------------------------------------------------------
@dataclass
class KillFilter:
    """CLIENT KILL's filters (Redis 7.4: ID, TYPE, ADDR, LADDR, USER, SKIPME, MAXAGE)."""

    ids: set[int] = field(default_factory=set)
    type: bytes | None = None
    addr: str | None = None
    laddr: str | None = None
    user: str | None = None
    skipme: bool = True
    maxage: int = 0
    old_form: bool = False          # `CLIENT KILL addr:port`: +OK or -ERR No such client

    def matches(self, s, me, now: float) -> bool:
        if s is me and self.skipme:
            return False
        if self.ids and s.id not in self.ids:
            return False
        if self.type is not None and client_type(s) != self.type:
            return False
        if self.addr is not None and s.peer_addr != self.addr:
            return False
        if self.laddr is not None and s.local_addr != self.laddr:
            return False
        if self.user is not None and client_user(s) != self.user:
            return False
        return not self.maxage or now - s.created > self.maxage


def parse_kill(args: list[bytes]) -> KillFilter | bytes:
    """`CLIENT KILL` arguments (after KILL) -> a filter, or the error reply Redis gives."""
    if len(args) == 1:
        return KillFilter(addr=args[0].decode(errors="replace"), skipme=False, old_form=True)
    if not args or len(args) % 2:
        return b"-ERR syntax error\r\n"
    f = KillFilter()
    for i in range(0, len(args), 2):
        opt, val = args[i].lower(), args[i + 1]
        if opt == b"id":
            try:
                cid = int(val)
            except ValueError:
                cid = 0
            if cid <= 0:
                return b"-ERR client-id should be greater than 0\r\n"
            f.ids.add(cid)
        elif opt == b"type":
            t = val.lower()
            if t not in CLIENT_TYPES:
                return b"-ERR Unknown client type '%s'\r\n" % val
            f.type = b"replica" if t == b"slave" else t
        elif opt == b"addr":
            f.addr = val.decode(errors="replace")
        elif opt == b"laddr":
            f.laddr = val.decode(errors="replace")
        elif opt == b"user":
            f.user = val.decode(errors="replace")
        elif opt == b"skipme":
            if val.lower() not in (b"yes", b"no"):
                return b"-ERR syntax error\r\n"
            f.skipme = val.lower() == b"yes"
        elif opt == b"maxage":
            try:
                f.maxage = int(val)
            except ValueError:
                return b"-ERR maxage is not an integer or out of range\r\n"
            if f.maxage <= 0:
                return b"-ERR maxage should be greater than 0\r\n"
        else:
            return b"-ERR syntax error\r\n"
    return f


# -- MONITOR ------------------------------------------------------------------------------------------
_REPR_ESC = {ord("\\"): b"\\\\", ord('"'): b'\\"', ord("\n"): b"\\n", ord("\r"): b"\\r", ord("\t"): b"\\t",
             7: b"\\a", 8: b"\\b"}
_PLAIN = re.compile(rb'^[\x20-\x21\x23-\x5b\x5d-\x7e]*$')     # printable, no quote or backslash


def repr_arg(arg: bytes) -> bytes:
    """An argument quoted as Redis' sdscatrepr does it (MONITOR lines)."""
    if _PLAIN.match(arg):
        return b'"' + arg + b'"'
    out = [b'"']
    for c in arg:
        esc = _REPR_ESC.get(c)
        if esc is not None:
            out.append(esc)
        elif 32 <= c < 127:
            out.append(bytes((c,)))
        else:
            out.append(b"\\x%02x" % c)
    out.append(b'"')
    return b"".join(out)


def redacted(name: bytes, argv: list[bytes]) -> list[bytes]:
    """Secrets never reach a MONITOR line: AUTH's arguments and HELLO's AUTH pair, as in Redis."""
    if name == b"auth":
        return argv[:1] + [b"(redacted)"] * (len(argv) - 1)
    if name == b"hello":
        out = list(argv)
        for i, a in enumerate(argv):
            if a.lower() == b"auth":
                for j in (i + 1, i + 2):
                    if j < len(out):
                        out[j] = b"(redacted)"
        return out
    return argv


def monitor_line(ts: float, db: int, addr: str, argv: list[bytes]) -> bytes:
    return b"+%.6f [%d %s] %s\r\n" % (ts, db, addr.encode(), b" ".join(repr_arg(a) for a in argv))


# -- ACL LOG ---------------------------------------------------------------------------------------------
@dataclass
class AclLogEntry:
    reason: str
    context: str
    object: str
    username: str
    client_info: str
    created: float                      # wall-clock time of the first failure
    updated: float                      # of the last one (age-seconds counts from it)
    entry_id: int
    count: int = 1


def _float(x: float) -> bytes:
    return b"%.17g" % x


def encode_acl_entry(e: AclLogEntry, now: float, resp3: bool, with_ids: bool) -> bytes:
    """One ACL LOG entry in Redis' own format (a flat array in RESP2, a map in RESP3; `with_ids`:
    the Redis 7.2 fields too)."""
    def bulk(v: bytes) -> bytes:
        return b"$%d\r\n%s\r\n" % (len(v), v)
    age = max(0.0, now - e.updated)
    pairs = [(b"count", b":%d\r\n" % e.count), (b"reason", bulk(e.reason.encode())),
             (b"context", bulk(e.context.encode())), (b"object", bulk(e.object.encode())),
             (b"username", bulk(e.username.encode())),
             (b"age-seconds", b",%s\r\n" % _float(age) if resp3 else bulk(_float(age))),
             (b"client-info", bulk(e.client_info.encode()))]
    if with_ids:
        pairs += [(b"entry-id", b":%d\r\n" % e.entry_id),
                  (b"timestamp-created", b":%d\r\n" % int(e.created * 1000)),
                  (b"timestamp-last-updated", b":%d\r\n" % int(e.updated * 1000))]
    head = b"%%%d\r\n" % len(pairs) if resp3 else b"*%d\r\n" % (2 * len(pairs))
    return head + b"".join(bulk(k) + v for k, v in pairs)


_AGE = re.compile(rb"\$11\r\nage-seconds\r\n(?:\$\d+\r\n|,)([^\r]*)\r\n")


def entry_age(entry: bytes) -> float:
    """age-seconds of one upstream ACL LOG entry (as bytes)."""
    m = _AGE.search(entry)
    try:
        return float(m.group(1)) if m else 0.0
    except ValueError:
        return 0.0


# -- the registry ----------------------------------------------------------------------------------------
class ClientRegistry:
    """Owned by `ProxyServer`; see the module doc."""

    def __init__(self, server) -> None:
        self.server = server
        self.monitors: set = set()
        self.pause_mode = PAUSE_NONE
        self.pause_end = 0.0
        self._pause_timer: asyncio.TimerHandle | None = None
        self.paused: set = set()            # sessions stopped by the pause
        self.intercept = False              # monitors or a pause: commands are looked at one by one
        self.acl_log: list[AclLogEntry] = []    # newest first
        self._acl_ids = 0

    def _update(self) -> None:
        was = self.intercept
        self.intercept = bool(self.monitors) or self.pause_mode != PAUSE_NONE
        dp = getattr(self.server, "dataplane", None)
        if dp is not None and was != self.intercept:
            dp.intercept_changed()      # the C thread's clients come back: every command is looked at

    def clients(self) -> list:
        """This proxy's clients by id: the event loop's and the C data plane's."""
        here = [s for s in self.server.clients if not s.closed and not s.killed]
        dp = getattr(self.server, "dataplane", None)
        if dp is not None:
            ids = {s.id for s in here}      # (one coming back from the thread is in both a moment)
            here += [s for s in dp.listed() if s.id not in ids]
        return sorted(here, key=lambda s: s.id)

    # -- MONITOR --------------------------------------------------------------
    def add_monitor(self, s) -> None:
        self.monitors.add(s)
        s.monitoring = True
        self._update()

    def forget(self, s) -> None:
        """`s` closed (or RESET): no longer fed, no longer paused."""
        if s.monitoring:
            s.monitoring = False
            self.monitors.discard(s)
            self._update()
        self.paused.discard(s)

    def feed(self, s, name: bytes, argv: list[bytes]) -> None:
        """`s` runs `argv`: every MONITOR client gets the line (not admin commands, as in Redis; the
        commands a script runs on the node, Redis' `[0 lua]` lines, are not seen by the proxy)."""
        table = self.server.table
        if name in table.unmonitored or (name in CONTAINERS and len(argv) > 1
                                         and name + b"|" + argv[1].lower() in table.unmonitored):
            return
        line = monitor_line(time.time(), s.db, s.peer_addr, redacted(name, argv))
        for m in list(self.monitors):
            if not m.closed:
                m.raw_reply(line)

    # -- CLIENT PAUSE ---------------------------------------------------------
    def pause(self, ms: int, mode: int) -> None:
        """Redis' rule: a pause never gets shorter or less strict by a later one."""
        loop = asyncio.get_running_loop()
        end = loop.time() + ms / 1000.0
        self.pause_mode = max(self.pause_mode, mode)
        if end > self.pause_end:
            self.pause_end = end
            if self._pause_timer is not None:
                self._pause_timer.cancel()
            self._pause_timer = loop.call_at(end, self.unpause)
        self._update()

    def unpause(self) -> None:
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        self.pause_mode = PAUSE_NONE
        self.pause_end = 0.0
        self._update()
        paused, self.paused = self.paused, set()
        for s in paused:
            s.wake()

    def pauses(self, s, name: bytes, args) -> bool:
        """Does the pause in force stop this command of `s`?  ALL: every command; WRITE: the
        commands that write or may replicate (EVAL, PUBLISH, PFCOUNT ...) and EXEC; commands queued
        in MULTI are not run yet, so not paused (as in Redis)."""
        mode = self.pause_mode
        if mode == PAUSE_NONE:
            return False
        if name == b"client" and args and b"client|" + args[0].lower() in UNPAUSABLE:
            return False
        if mode == PAUSE_WRITE:
            if s.multi:
                return name == b"exec"
            if name == b"exec":
                return True
            table = self.server.table
            kind = table.kind_sub(name, args[0]) if name in CONTAINERS and args else table.kind(name)
            if kind != Kind.WRITE and kind != Kind.BLOCKING:
                return False
        s.held = True
        self.paused.add(s)
        return True

    # -- ACL LOG ---------------------------------------------------------------
    def auth_failed(self, s, obj: str, username: str) -> None:
        """The proxy rejected `s`'s password (AUTH or HELLO ... AUTH): logged as Redis logs it."""
        now = time.time()
        context = "multi" if s.multi else "toplevel"
        info = info_line(s, time.monotonic())
        for e in self.acl_log:
            if (e.reason, e.context, e.object, e.username) == ("auth", context, obj, username) \
                    and now - e.updated < ACL_LOG_GROUP_S:
                e.count += 1
                e.updated = now
                e.client_info = info
                self.acl_log.remove(e)          # the newest first, as Redis moves it to the head
                self.acl_log.insert(0, e)
                return
        self.acl_log.insert(0, AclLogEntry("auth", context, obj, username, info, now, now, self._acl_ids))
        self._acl_ids += 1
        del self.acl_log[ACL_LOG_MAX:]

    def merged_acl_log(self, upstream: bytes, count: int, resp3: bool) -> bytes:
        """The master's ACL LOG reply with this proxy's entries merged in, newest first, at most `count`."""
        from ..protocol import resp

        if not upstream.startswith((b"*", b"%")) or upstream.startswith(b"*-"):
            return upstream
        nl = upstream.index(b"\r\n")
        n = int(upstream[1:nl])
        entries: list[tuple[float, bytes]] = []
        pos = nl + 2
        for _ in range(n):
            end, rem = resp.scan_replies(upstream, pos, 1)
            if rem:
                return upstream
            entries.append((entry_age(upstream[pos:end]), upstream[pos:end]))
            pos = end
        now = time.time()
        with_ids = b"timestamp-created" in upstream
        entries += [(now - e.updated, encode_acl_entry(e, now, resp3, with_ids)) for e in self.acl_log]
        entries.sort(key=lambda x: x[0])
        entries = entries[:count]
        return b"*%d\r\n" % len(entries) + b"".join(e for _, e in entries)
