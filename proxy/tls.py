"""TLS contexts for every hop, built from the `tls_*` keys, and their reloading.

Three roles, each one `ssl.SSLContext` made once at start and reloaded in place:

* the client-facing server (`tls_port`, and the Sentinel port with
  `tls_sentinel`): `tls_cert_file` / `tls_key_file`, clients verified against
  `tls_ca_cert_file` as `tls_auth_clients` says (Redis' names and meanings);
* the admin/Raft HTTPS server (`tls_admin`): the same certificate; a client
  certificate signed by the CA authenticates `/admin` and `/raft` requests;
* the client side of the proxy's own connections: to Redis (`tls_upstream`,
  with `tls_upstream_*` files) and to the other proxies (`tls_admin`, with the
  proxy's own certificate as its client certificate).

Reloading: `CertReloader` polls the files' identity (inode, size, mtime; a
Kubernetes Secret mount swaps a symlink) and calls `load_cert_chain` /
`load_verify_locations` on the live context, so new handshakes use the new
certificate while established connections keep theirs.  A half-written pair
(new certificate, old key) fails to load: the old pair stays in use and the
load is retried on the next poll.  A replaced CA is added to the trusted set;
the old CA stays trusted until the process restarts (OpenSSL cannot remove a
CA from a live context).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass, field

from .log_budget import LogBudget
from .protocol.resp import ProtocolError, parse_command, parse_inline

log = logging.getLogger(__name__)

PROTOCOLS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
AUTH_CLIENTS = ("yes", "no", "optional")


class TlsConfigError(ValueError):
    """A certificate, key or CA cannot be loaded; names the file, never a secret.
    `which`: "cert" (the certificate or its key) or "ca"."""

    def __init__(self, message: str, which: str = "cert") -> None:
        super().__init__(message)
        self.which = which


def protocol_range(protocols: str) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """'TLSv1.2 TLSv1.3' (Redis' tls-protocols) -> (minimum, maximum); '' = TLSv1.2 and up."""
    names = protocols.split()
    if not names:
        return ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocol {unknown[0]!r} (known: {', '.join(PROTOCOLS)})")
    versions = sorted(PROTOCOLS[n] for n in names)
    return versions[0], versions[-1]


@dataclass(frozen=True)
class TlsFiles:
    """The files of one context: its own certificate and key, and the CA it trusts."""

    cert: str = ""
    key: str = ""
    ca: str = ""

    def paths(self) -> list[str]:
        return [p for p in (self.cert, self.key, self.ca) if p]


def _load(ctx: ssl.SSLContext, files: TlsFiles) -> None:
    try:
        if files.cert:
            ctx.load_cert_chain(files.cert, files.key or None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load the certificate {files.cert} with key {files.key or files.cert}: "
                             f"{_reason(exc)}") from None
    try:
        if files.ca:
            ctx.load_verify_locations(cafile=files.ca)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load the CA certificate {files.ca}: {_reason(exc)}", "ca") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _common(ctx: ssl.SSLContext, protocols: str, ciphers: str) -> None:
    ctx.minimum_version, ctx.maximum_version = protocol_range(protocols)
    if ciphers:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError:
            raise TlsConfigError(f"no usable cipher in {ciphers!r}") from None


def server_context(files: TlsFiles, *, auth_clients: str = "yes", protocols: str = "",
                   ciphers: str = "") -> ssl.SSLContext:
    """A server context; `auth_clients` as Redis' tls-auth-clients (yes: a client
    certificate signed by the CA is required; optional: verified if sent)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common(ctx, protocols, ciphers)
    ctx.verify_mode = {"yes": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "no": ssl.CERT_NONE}[auth_clients]
    _load(ctx, files)
    return ctx


def client_context(files: TlsFiles, *, check_hostname: bool = True, protocols: str = "",
                   ciphers: str = "") -> ssl.SSLContext:
    """A client context that verifies the server against `files.ca` (the system CAs
    when empty) and presents `files.cert` when set."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _common(ctx, protocols, ciphers)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not files.ca:
        ctx.load_default_certs()
    _load(ctx, files)
    return ctx


def _identity(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def not_after(cert_file: str) -> float | None:
    """The certificate's expiry (Unix time), or None when it cannot be read."""
    try:
        decoded = ssl._ssl._test_decode_cert(cert_file)     # CPython's own PEM decoder
        return float(ssl.cert_time_to_seconds(decoded["notAfter"]))
    except (OSError, ssl.SSLError, KeyError, ValueError, AttributeError):
        return None


@dataclass
class _Watched:
    name: str
    ctx: ssl.SSLContext
    files: TlsFiles
    seen: dict[str, tuple | None] = field(default_factory=dict)
    last_error: str = ""
    expires: float | None = None    # of the certificate in use


class CertReloader:
    """Reloads watched contexts in place when their files change (see the module doc)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._watched: list[_Watched] = []
        self.reloads = 0
        self.failures = 0

    def watch(self, name: str, ctx: ssl.SSLContext, files: TlsFiles) -> None:
        self._watched.append(_Watched(name, ctx, files, {p: _identity(p) for p in files.paths()},
                                      expires=not_after(files.cert) if files.cert else None))

    def expiries(self) -> dict[str, float]:
        """Context name -> expiry (Unix time) of the certificate it presents."""
        return {w.name: w.expires for w in self._watched if w.expires is not None}

    def check(self) -> list[str]:
        """Reload every context whose files changed; the names of those reloaded."""
        done = []
        for w in self._watched:
            now = {p: _identity(p) for p in w.files.paths()}
            if now == w.seen:
                continue
            try:
                _load(w.ctx, w.files)
            except TlsConfigError as exc:
                if str(exc) != w.last_error:
                    self.failures += 1
                    log.error("event=tls_reload_failed context=%s error=%r the previous certificate stays in use",
                              w.name, str(exc))
                w.last_error = str(exc)
                continue
            w.seen, w.last_error = now, ""
            w.expires = not_after(w.files.cert) if w.files.cert else None
            self.reloads += 1
            done.append(w.name)
            log.warning("event=tls_reloaded context=%s cert=%s", w.name, w.files.cert or w.files.ca)
        return done

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.check()


HANDSHAKE_GRACE_S = 1.0
_handshakes: set[asyncio.Task] = set()     # handshakes in progress (strong references)
_failure_lines = LogBudget(lines=10, window_s=10.0)   # per listener


class TlsAcceptor(asyncio.Protocol):
    """One accepted TCP connection whose TLS handshake the proxy runs itself
    (`loop.start_tls`), so that a failed or stalled handshake (a plaintext client,
    an untrusted or expired certificate) closes that connection with a log line
    naming the client; asyncio's own TLS server drops such connections silently.

    uvloop starts reading only after connection_made returns, so pausing there does
    nothing and a client's ClientHello, when it comes quickly, reaches this
    protocol before start_tls has taken the transport over: those bytes are kept
    and handed to the TLS layer (dropping them stalled the handshake until it timed
    out, for most of redis-benchmark's connections)."""

    def __init__(self, make_protocol, ctx: ssl.SSLContext, timeout_s: float, listener: str,
                 failures: dict[str, int], require_cert: bool = False) -> None:
        self._make = make_protocol
        self._ctx = ctx
        self._require_cert = require_cert   # `ctx` verifies a certificate if sent; this requires one
        self._timeout = timeout_s
        self._listener = listener
        self._failures = failures      # listener -> handshakes failed (for /metrics)
        self._transport: asyncio.Transport | None = None
        self._early: list[bytes] = []       # bytes that came before start_tls took the transport
        self._peer = "?"

    def connection_made(self, transport) -> None:
        self._transport = transport
        peer = transport.get_extra_info("peername")     # (uvloop: not to be asked once closed)
        if peer:
            self._peer = f"{peer[0]}:{peer[1]}"
        transport.pause_reading()       # the ClientHello is for the TLS layer, not for us
        task = asyncio.get_running_loop().create_task(self._handshake())
        _handshakes.add(task)           # the loop keeps only a weak reference
        task.add_done_callback(_handshakes.discard)

    async def _handshake(self) -> None:
        transport, loop = self._transport, asyncio.get_running_loop()
        held = _HeldUntilConnected()

        async def upgrade() -> None:
            tls_transport = await loop.start_tls(transport, held, self._ctx, server_side=True,
                                                 ssl_handshake_timeout=self._timeout)
            if self._require_cert and not _sent_certificate(tls_transport):
                held.connect(_RefusedWithoutCertificate(), tls_transport)
                raise _NoCertificate(NO_CERTIFICATE)
            held.connect(self._make(), tls_transport)

        handshake = loop.create_task(upgrade())
        # One step: start_tls has paused the transport and swapped in its TLS protocol,
        # whose connection_made and resume_reading are queued; the kept bytes go after
        # connection_made and before anything the resumed transport reads.
        await asyncio.sleep(0)
        if self._early:
            loop.call_soon(_replay_early, transport, b"".join(self._early))
            self._early = []
        try:
            # uvloop leaves start_tls waiting for good when the client goes away at some
            # points of the handshake (its timeout never fires then): bounded here too
            async with asyncio.timeout(self._timeout + HANDSHAKE_GRACE_S):
                await handshake
        except (TimeoutError, ssl.SSLError, OSError, ConnectionError, _NoCertificate) as exc:
            handshake.cancel()
            refused = isinstance(exc, _NoCertificate)
            self._failures[self._listener] = self._failures.get(self._listener, 0) + 1
            reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else (str(exc) or type(exc).__name__)
            left_out = _failure_lines.take(self._listener)
            if left_out is not None:
                log.warning("event=tls_handshake_failed listener=%s client=%s error=%r not_logged=%d",
                            self._listener, self._peer, reason, left_out)
            if not refused:         # (refused: the client is told, then the connection closed)
                transport.abort()

    def data_received(self, data: bytes) -> None:     # only before start_tls took over (uvloop)
        self._early.append(data)

    def connection_lost(self, exc) -> None:
        pass


NO_CERTIFICATE = "PEER_DID_NOT_RETURN_A_CERTIFICATE"      # OpenSSL's reason, as CERT_REQUIRED logs it
REFUSAL = (b"-ERR TLS client certificate required (tls_auth_clients yes): connect with a certificate "
           b"signed by the proxy's CA\r\n")
REFUSAL_WAIT_S = 2.0
REFUSAL_MAX_BYTES = 65536       # a command longer than this, unanswered, closes the connection at once
REFUSAL_MAX_ANSWERS = 16        # and so does the 16th (the answers are not a flood's amplifier)


class _NoCertificate(Exception):
    """The handshake went through without the client certificate this listener requires."""


def _sent_certificate(tls_transport: asyncio.BaseTransport) -> bool:
    sslobj = tls_transport.get_extra_info("ssl_object")
    return sslobj is not None and sslobj.getpeercert(binary_form=True) is not None


class _RefusedWithoutCertificate(asyncio.Protocol):
    """A client that completed the handshake without a certificate where one is required.

    OpenSSL would fail such a handshake itself (CERT_REQUIRED) with an alert, but the event
    loop's TLS layer closes the connection without sending it: the client saw the server
    hang up (`redis-cli` died of SIGPIPE writing its command, silently). So the handshake
    lets it through (CERT_OPTIONAL: a certificate sent is still verified) and this protocol
    answers every command with an error that says what is missing, runs none, and closes
    REFUSAL_WAIT_S after the handshake (at once on a protocol error, too many bytes or
    REFUSAL_MAX_ANSWERS commands).
    Every command is answered because clients send some of their own first and may
    ignore those errors (redis-py's CLIENT SETINFO), and the close waits so that it does
    not reset a connection whose commands are still unread. A client that sent nothing
    reads the error once at the close."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._buf = b""
        self._answered = 0      # commands answered

    def connection_made(self, transport) -> None:
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_WAIT_S, self._close)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        self._buf += data
        try:
            commands, used = _complete_commands(self._buf)
        except ProtocolError:
            self._close()
            return
        self._buf = self._buf[used:]
        commands = min(commands, REFUSAL_MAX_ANSWERS - self._answered)
        if commands:
            self._answered += commands
            self._transport.write(REFUSAL * commands)
        if len(self._buf) > REFUSAL_MAX_BYTES or self._answered >= REFUSAL_MAX_ANSWERS:
            self._close()

    def eof_received(self) -> bool:
        self._close()
        return False

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        transport, self._transport = self._transport, None
        if transport is not None and not transport.is_closing():
            if not self._answered:
                transport.write(REFUSAL)
            transport.close()


def _complete_commands(buf: bytes) -> tuple[int, int]:
    """How many complete commands (RESP or inline) `buf` starts with, and their bytes."""
    pos = count = 0
    while pos < len(buf):
        if buf[pos] == 42:      # '*'
            res = parse_command(buf, pos, REFUSAL_MAX_BYTES, 1024)
            if res is None or res[0] is None:
                break
            empty = res[3] == 0
        else:
            res = parse_inline(buf, pos)
            if res is None:
                break
            empty = not res[1]
        pos = res[0]
        count += not empty      # (an empty command or line, which Redis ignores, gets no answer)
    return count, pos


class _HeldUntilConnected(asyncio.Protocol):
    """The application protocol start_tls is given. The TLS layer may deliver the
    client's first command in the same step that completes the handshake, before
    start_tls has returned the transport for connection_made: such data (and an EOF
    or a loss) is held here, then handed to the session after its connection_made,
    and the transport talks to the session directly from then on."""

    def __init__(self) -> None:
        self._held: list[bytes] = []
        self._eof = False
        self._lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self._held.append(bytes(data))

    def eof_received(self) -> bool:
        self._eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = (exc,)

    def connect(self, proto: asyncio.Protocol, transport: asyncio.Transport) -> None:
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if self._held:
            _replay(proto, b"".join(self._held))
            self._held = []
        if self._eof and not proto.eof_received():
            transport.close()
        if self._lost is not None:
            proto.connection_lost(self._lost[0])


def _replay_early(transport: asyncio.Transport, data: bytes) -> None:
    """The bytes that came before start_tls, to its TLS layer; not to a connection the
    client has closed meanwhile (uvloop's TLS layer raises writing its answer there)."""
    if transport.is_closing():
        return
    try:
        _replay(transport.get_protocol(), data)
    except (RuntimeError, OSError, ssl.SSLError):
        transport.abort()       # the handshake then fails and is logged as such


def _replay(proto: asyncio.BaseProtocol, data: bytes) -> None:
    """Hand `data` to `proto` as if the transport had just read it."""
    if isinstance(proto, asyncio.BufferedProtocol) or hasattr(proto, "get_buffer"):
        view = memoryview(data)
        while view:
            buf = memoryview(proto.get_buffer(len(view)))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            proto.buffer_updated(n)
            view = view[n:]
    else:
        proto.data_received(data)


def tls_protocol_factory(make_protocol, tls: ProxyTls, listener: str):
    """A protocol factory for `loop.create_server` (without ssl=) serving `tls.clients`
    through TlsAcceptor."""
    return lambda: TlsAcceptor(make_protocol, tls.clients, tls.handshake_timeout_s, listener,
                               tls.handshake_failures, tls.clients_require_cert)


@dataclass
class ProxyTls:
    """The contexts one proxy uses (None where that hop is plaintext)."""

    clients: ssl.SSLContext | None = None        # tls_port, and the Sentinel port with tls_sentinel
    clients_require_cert: bool = False           # tls_auth_clients yes: checked after `clients`' handshake
    sentinel: bool = False
    admin_server: ssl.SSLContext | None = None   # the admin/Raft app (tls_admin)
    admin_client: ssl.SSLContext | None = None   # to the other proxies (tls_admin)
    upstream: ssl.SSLContext | None = None       # to Redis (tls_upstream)
    upstream_check_hostname: bool = True
    handshake_timeout_s: float = 5.0
    reloader: CertReloader = field(default_factory=CertReloader)
    handshake_failures: dict[str, int] = field(default_factory=dict)   # listener -> count


def tls_from_config(cfg) -> ProxyTls:
    """Build every context `cfg` asks for; raises TlsConfigError naming the key and file."""
    out = ProxyTls(sentinel=cfg.tls_sentinel, upstream_check_hostname=cfg.tls_upstream_check_hostname,
                   handshake_timeout_s=cfg.tls_handshake_timeout_ms / 1000.0)
    own = TlsFiles(cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_ca_cert_file)
    own_keys = ("tls_cert_file", "tls_ca_cert_file")
    common = {"protocols": cfg.tls_protocols, "ciphers": cfg.tls_ciphers}

    def build(keys: tuple[str, str], name: str, make, files: TlsFiles, **kw) -> ssl.SSLContext:
        """`keys`: the config keys of the certificate and of the CA, for the error."""
        try:
            ctx = make(files, **kw, **common)
        except TlsConfigError as exc:
            key = keys[0] if exc.which == "cert" else keys[1]
            raise TlsConfigError(f"config key {key!r}: {exc}", exc.which) from None
        out.reloader.watch(name, ctx, files)
        return ctx

    if cfg.tls_port or cfg.tls_sentinel:
        # `yes`: the handshake verifies a certificate if sent and TlsAcceptor refuses a client
        # that sent none, with an error it can read (see _RefusedWithoutCertificate)
        out.clients_require_cert = cfg.tls_auth_clients == "yes"
        out.clients = build(own_keys, "clients", server_context, own,
                            auth_clients="optional" if out.clients_require_cert else cfg.tls_auth_clients)
    if cfg.tls_admin:
        out.admin_server = build(own_keys, "admin", server_context, own, auth_clients="optional")
        out.admin_client = build(own_keys, "peers", client_context, own, check_hostname=False)
    if cfg.tls_upstream:
        files = TlsFiles(cfg.tls_upstream_cert_file, cfg.tls_upstream_key_file, cfg.tls_upstream_ca_cert_file)
        out.upstream = build(("tls_upstream_cert_file", "tls_upstream_ca_cert_file"), "upstream", client_context,
                             files,
                             check_hostname=cfg.tls_upstream_check_hostname)
    return out
