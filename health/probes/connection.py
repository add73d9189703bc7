"""The probes' own connection to one Redis node: bare RESP requests and replies.

Each proxy probes every node `INFO replication` each `probe_interval_ms` (30 probes
a second for 3 nodes by default). Through redis-py each probe cost about three
times the bytes' own round trip in Python (its retry wrapper, per-command packing,
a task per send, INFO parsed into typed values), the largest share of an idle
proxy's CPU (issue 16). Here a request is a prepacked byte string written on an
asyncio Protocol, and hiredis finds the reply: one write, one read, one wake-up.

It logs in as redis-py did for the control user (`AUTH [user] password`, nothing
else: no `CLIENT SETINFO`, db 0) and speaks TLS with the same options
(`redis_control.control_tls`, files read per connection so a rotated client
certificate is picked up at the next reconnect). Error replies (`-BUSY`,
`-LOADING`, `-NOAUTH` ...) raise redis-py's `ResponseError` with the whole message;
a refused, lost or garbled connection raises redis-py's `ConnectionError`, so the
prober's handling is the same as with redis-py. One request at a time; after a
timeout the caller closes the connection (`aclose`) and the next request reconnects.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from proxy.protocol.resp import encode_command

INFO_REPLICATION = encode_command([b"INFO", b"replication"])
INFO_SERVER = encode_command([b"INFO", b"server"])


def parse_info_text(text: str) -> dict[str, str]:
    """`INFO`'s reply as {field: value} (strings; section headers and blank lines left out)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and line[0] != "#":
            key, sep, value = line.partition(":")
            if sep:
                out[key] = value
    return out


def ssl_context(tls: dict) -> ssl.SSLContext:
    """An SSL context from redis-py's TLS arguments (`redis_control.control_tls`)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = bool(tls.get("ssl_check_hostname", False))
    reqs = tls.get("ssl_cert_reqs", "required")
    ctx.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(reqs, ssl.CERT_REQUIRED) \
        if isinstance(reqs, str) else reqs
    if tls.get("ssl_certfile"):
        ctx.load_cert_chain(tls["ssl_certfile"], tls.get("ssl_keyfile"))
    if tls.get("ssl_ca_certs"):
        ctx.load_verify_locations(cafile=tls["ssl_ca_certs"])
    return ctx


class _Resp(asyncio.Protocol):
    """Replies, in order, to the futures of the requests written."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[asyncio.Future] = deque()
        self.lost: str | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(f"protocol error: {exc}")
                if self.transport is not None:
                    self.transport.abort()
                return
            if reply is False:
                return
            if not self.waiting:        # a reply to nothing asked: not a Redis we can follow
                self._fail("unexpected reply")
                if self.transport is not None:
                    self.transport.abort()
                return
            fut = self.waiting.popleft()
            if not fut.done():          # (a request given up on by its caller's timeout)
                fut.set_result(reply)

    def connection_lost(self, exc) -> None:
        self._fail(f"connection lost: {exc}" if exc else "connection closed by the server")

    def _fail(self, reason: str) -> None:
        self.lost = self.lost or reason
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(RedisConnectionError(reason))


def _time_out(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class ProbeClient:
    """One connection to `addr` (host:port), opened on first use and after `aclose`."""

    def __init__(self, addr: str, *, username: str = "", password: str = "", tls: dict | None = None) -> None:
        self.addr = addr
        self.host, _, port = addr.rpartition(":")
        self.port = int(port)
        self._tls = dict(tls or {})
        self._auth = None
        if password:
            args = [b"AUTH", username.encode(), password.encode()] if username else [b"AUTH", password.encode()]
            self._auth = encode_command(args)
        self._conn: _Resp | None = None
        self.peer = ""      # the numeric address the last connection reached ("ip:port", "[v6]:port")
        self.run_id = ""    # the node's run_id, read once per connection ("": not known)
        self._info_raw: bytes | None = None         # the last INFO reply, and what it parsed to
        self._info: dict[str, str] = {}

    async def _connect(self) -> _Resp:
        loop = asyncio.get_running_loop()
        ctx = ssl_context(self._tls) if self._tls.get("ssl") else None
        try:
            _, conn = await loop.create_connection(_Resp, self.host, self.port, ssl=ctx,
                                                   server_hostname=self.host if ctx is not None else None)
        except OSError as exc:      # refused, unreachable, TLS handshake
            raise RedisConnectionError(f"Error connecting to {self.addr}: {exc}") from exc
        peer = conn.transport.get_extra_info("peername")
        if peer:
            self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        if self._auth is not None:
            try:
                reply = await self._request(conn, self._auth)
            except BaseException:       # timed out or cancelled while logging in
                conn.transport.close()
                raise
            if isinstance(reply, ResponseError):
                conn.transport.close()
                raise reply
        # The process behind the connection: a restart is a new connection, so once per
        # connection is enough (health.shard.decide.same_process).
        try:
            reply = await self._request(conn, INFO_SERVER)
        except BaseException:
            conn.transport.close()
            raise
        self.run_id = "" if isinstance(reply, ResponseError) else \
            parse_info_text(reply.decode(errors="replace")).get("run_id", "")
        return conn

    @staticmethod
    def _request(conn: _Resp, packed: bytes) -> asyncio.Future:
        if conn.lost is not None or conn.transport is None or conn.transport.is_closing():
            raise RedisConnectionError(conn.lost or "connection closed")
        fut = asyncio.get_running_loop().create_future()
        conn.waiting.append(fut)
        conn.transport.write(packed)
        return fut

    async def request(self, packed: bytes, timeout: float | None = None):
        """Send one prepacked command, return its decoded reply (bytes, int, list ...);
        an error reply raises `ResponseError`, a failed connection `ConnectionError`, no
        reply within `timeout` seconds (connecting included) `TimeoutError`: the caller
        then closes the connection (`aclose`), whose next reply would be this one's.

        The reply's deadline is a timer that fails its future, not `asyncio.timeout`: that
        one cancels the task and unwinds the cancellation through it when it fires, and costs
        a Timeout object every probe (issue 16: ten probes a second per proxy, idle)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        conn = self._conn
        if conn is None or conn.lost is not None:
            self._conn = None
            async with asyncio.timeout_at(deadline):
                conn = self._conn = await self._connect()
        fut = self._request(conn, packed)
        timer = None if deadline is None else loop.call_at(deadline, _time_out, fut)
        try:
            reply = await fut
        finally:
            if timer is not None:
                timer.cancel()
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def execute_command(self, *args, timeout: float | None = None):
        """Any command (the prober's `SCRIPT KILL`), its reply decoded as UTF-8 strings."""
        packed = encode_command([a if isinstance(a, bytes) else str(a).encode() for a in args])
        reply = await self.request(packed, timeout)
        return reply.decode() if isinstance(reply, bytes) else reply

    async def info_replication(self, timeout: float | None = None) -> dict[str, str]:
        """`INFO replication` as {field: value}. A reply the same as the last one is not
        parsed again: the same dict comes back (read it, do not change it). An idle node's
        reply changes about once a second (`lag=`, `master_last_io_seconds_ago:`), so nine
        probes in ten are parsed for nothing otherwise (issue 16)."""
        raw = await self.request(INFO_REPLICATION, timeout)
        if raw != self._info_raw:
            self._info = parse_info_text(raw.decode())
            self._info_raw = raw
        return self._info

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()
