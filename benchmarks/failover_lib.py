"""Shared pieces of the failover tests and the failover benchmark.

Used by `tests/integration/test_failover*.py` and by `benchmarks/failover`.
It builds on the integration test harness (`tests/integration/harness.py`:
`RedisServer`, `ProxyProcess`, `FaultRelay`, `wait_until`, free ports) and
adds what failover scenarios need:

* `ProxyCluster`   3 redis-server (1 master + 2 replicas) + 3 Raft proxies; with
                   `relays=True` every proxy reaches each other proxy's admin port
                   through its own `FaultRelay`, so one proxy can be cut off
                   (`isolate`/`heal`)
* `StatusWatcher`  a thread polling every proxy's /status, recording
                   (time, proxy, epoch, master, leader) for agreement checks
* `Writer`         a thread writing unique keys every ~2 ms through one endpoint,
                   recording each write's send/ack time and outcome
* `read_back`      reads every acknowledged key back and returns the lost ones
* `SentinelCluster` the same 3 redis-server watched by 3 Redis Sentinels
* `connect_redirect_env`  an LD_PRELOAD shim that redirects one process's
                   connect() to 127.0.0.1:PORT to another port: the way to put a
                   `FaultRelay` on the link between ONE proxy and a Redis node
                   while the node keeps its address (its identity) for everyone

127.0.0.1 only; every wait is bounded (`wait_until`), nothing sleeps to
synchronise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import redis  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

from tests.integration.harness import (HOST, REDIS_SERVER, REGISTRY, FaultRelay, HarnessError, ManagedProcess,  # noqa: E402
                                       ProxyProcess, RedisServer, ReplicaSet, free_ports, ping_port,
                                       redis_client, release_ports, wait_until)

PROXY_NAMES = ("proxy-1", "proxy-2", "proxy-3")
RAFT_SECRET = "failover-test-secret"


# ---------------------------------------------------------------------------
# the proxy cluster
# ---------------------------------------------------------------------------

def _http_json(url: str, path: str, timeout: float, ssl_context=None) -> dict:
    with urllib.request.urlopen(f"{url}{path}", timeout=timeout, context=ssl_context) as resp:
        return json.loads(resp.read())


class ProxyCluster:
    """3 redis-server + 3 proxies running Raft, on free 127.0.0.1 ports.

    `options` go to every proxy as flags (e.g. ``{"ack": "replica"}``);
    `node_options` / `node_env` map a proxy name to extra flags / env for that
    proxy only.  With `relays`, proxy i's peer URL for proxy j points at a
    relay owned by the pair (i, j), so `isolate(name)` cuts that proxy off
    from the others in both directions (both its Raft RPCs and the health
    reports travel over these links).

    Every proxy named in `redis_link_relays` reaches each Redis node through
    its own `FaultRelay` (an LD_PRELOAD shim rewrites its connect() calls, so
    the node keeps its address, which is its identity in the topology):
    `redis_link(proxy, addr)` is the relay to cut that one link.

    With `tls` (tests.integration.tls_fixtures.TestTls) every hop but the
    proxies' plaintext client ports runs over TLS: Redis serves TLS only to the
    proxies and its replicas, the proxies reach Redis and each other over TLS
    (https:// peers), and also serve clients on `tls_ports`.
    """

    def __init__(self, workdir: Path, *, relays: bool = False, options: dict | None = None,
                 node_options: dict[str, dict] | None = None, node_env: dict[str, dict] | None = None,
                 read_policy: str = "replicas", redis_link_relays: Sequence[str] = (), tls=None,
                 replicas: int = 2) -> None:
        self.workdir = Path(workdir)
        self.tls = tls
        self.rs = ReplicaSet(self.workdir / "redis", replicas=replicas, tls=tls.redis_files() if tls else None)
        self.names = list(PROXY_NAMES)
        self.tls_ports = dict(zip(self.names, free_ports(len(self.names)))) if tls else {}
        self.admin_ssl = tls.client_context(tls.proxy) if tls else None
        scheme = "https" if tls else "http"
        ports = free_ports(2 * len(self.names))
        self.client_ports = dict(zip(self.names, ports[:3]))
        self.admin_ports = dict(zip(self.names, ports[3:]))
        self.relays: dict[tuple[str, str], FaultRelay] = {}
        if relays:
            for src in self.names:
                for dst in self.names:
                    if src != dst:
                        self.relays[(src, dst)] = FaultRelay(self.admin_ports[dst])
        self.redis_relays: dict[tuple[str, str], FaultRelay] = {}
        node_env = {k: dict(v) for k, v in (node_env or {}).items()}
        for name in redis_link_relays:
            for server in self.rs.servers:
                self.redis_relays[(name, server.addr)] = FaultRelay(server.port)
            node_env.setdefault(name, {}).update(connect_redirect_env(
                {server.port: self.redis_relays[(name, server.addr)].port for server in self.rs.servers}))
        self.proxies: dict[str, ProxyProcess] = {}
        for name in self.names:
            peers = []
            for other in self.names:
                port = self.admin_ports[other] if other == name or not relays else self.relays[(name, other)].port
                peers.append(f"{other}={scheme}://{HOST}:{port}")
            opts = {"peers": ",".join(peers), "data_dir": str(self.workdir / "raft" / name)}
            if tls:
                opts.update(tls.proxy_options(), tls_port=self.tls_ports[name])
            opts.update(options or {})
            opts.update((node_options or {}).get(name, {}))
            env = {"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET}
            env.update(node_env.get(name, {}))
            self.proxies[name] = ProxyProcess(self.workdir / "proxies", self.rs.addrs, self.rs.master.addr,
                                              node=name, port=self.client_ports[name],
                                              admin_port=self.admin_ports[name], read_policy=read_policy,
                                              options=opts, env=env, admin_ssl=self.admin_ssl)

    # -- life cycle ---------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "ProxyCluster":
        for relay in [*self.relays.values(), *self.redis_relays.values()]:
            relay.start()
        self.rs.start(timeout)
        for p in self.proxies.values():
            p.spawn()
        for p in self.proxies.values():
            p.wait_ready(timeout)
        self.wait_stable(timeout=timeout)
        return self

    def cleanup(self) -> None:
        for p in self.proxies.values():
            p.cleanup()
        self.rs.cleanup()
        for relay in [*self.relays.values(), *self.redis_relays.values()]:
            relay.close()
        release_ports(list(self.client_ports.values()) + list(self.admin_ports.values()))

    def __enter__(self) -> "ProxyCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -- views --------------------------------------------------------------------------
    def proxy(self, name: str) -> ProxyProcess:
        return self.proxies[name]

    def alive(self) -> list[ProxyProcess]:
        return [p for p in self.proxies.values() if p.alive()]

    def status(self, name: str, timeout: float = 1.0) -> dict | None:
        """One proxy's /status, or None when it does not answer."""
        try:
            return _http_json(self.proxies[name].admin_url, "/status", timeout, self.admin_ssl)
        except Exception:  # noqa: BLE001 - dead, stopped or cut off
            return None

    def statuses(self, names: Iterable[str] | None = None, timeout: float = 1.0) -> dict[str, dict | None]:
        names = list(names) if names is not None else [p.node for p in self.alive()]
        return {n: self.status(n, timeout) for n in names}

    def agreed(self, names: Iterable[str] | None = None) -> dict | None:
        """The common view when every named (default: live) proxy agrees on leader,
        epoch and master and holds a lease; else None."""
        sts = self.statuses(names)
        if not sts or any(s is None for s in sts.values()):
            return None
        leaders = {s["raft"]["leader"] for s in sts.values()}
        epochs = {s["topology"]["epoch"] for s in sts.values()}
        masters = {s["topology"]["master"] for s in sts.values()}
        if len(leaders) != 1 or None in leaders or len(epochs) != 1 or len(masters) != 1 or None in masters:
            return None
        leader = next(iter(leaders))
        # the leader must be one of them and say so itself: followers keep naming a
        # dead leader (with their follower lease) until the election timeout
        if leader not in sts or sts[leader]["raft"]["role"] != "leader":
            return None
        if not all(s["lease"]["held"] for s in sts.values()):
            return None
        return {"leader": leaders.pop(), "epoch": epochs.pop(), "master": masters.pop(), "statuses": sts}

    def wait_stable(self, names: Iterable[str] | None = None, timeout: float = 20.0) -> dict:
        names = list(names) if names is not None else None
        return wait_until(lambda: self.agreed(names), timeout,
                          message=lambda: f"proxies to agree on leader/epoch/master with a lease: "
                                          f"{self._brief(self.statuses(names))}")

    def wait_epoch(self, min_epoch: int, names: Iterable[str] | None = None, timeout: float = 20.0) -> dict:
        """Every named proxy at epoch >= min_epoch, all agreeing; returns the agreed view."""
        names = list(names) if names is not None else None

        def ok():
            view = self.agreed(names)
            return view if view and view["epoch"] >= min_epoch else None
        return wait_until(ok, timeout, message=lambda: f"proxies to agree on epoch >= {min_epoch}: "
                                                       f"{self._brief(self.statuses(names))}")

    def seen_linked(self, replica: str, master: str, names: Iterable[str] | None = None) -> bool:
        """Every named (default: live) proxy's latest probe found `replica` up, a replica of
        `master` with its link up: what a leader checks before a switchover to it.  Redis
        saying so is not enough: the proxies learn it at their next probe."""
        for st in self.statuses(names).values():
            node = st and next((n for n in st["nodes"] if n["addr"] == replica), None)
            if not (node and node["up"] and node["role"] == "slave" and node["link_up"]
                    and node["master"] == master):
                return False
        return True

    def wait_seen_linked(self, replica: str, master: str, timeout: float = 20.0) -> None:
        wait_until(lambda: self.seen_linked(replica, master), timeout,
                   message=lambda: f"every proxy to see {replica} linked to {master}: "
                                   f"{json.dumps({n: s and s['nodes'] for n, s in self.statuses().items()})}")

    def leader(self) -> ProxyProcess:
        view = self.wait_stable()
        return self.proxies[view["leader"]]

    @staticmethod
    def _brief(sts: dict[str, dict | None]) -> str:
        out = {}
        for n, s in sts.items():
            out[n] = None if s is None else {"role": s["raft"]["role"], "leader": s["raft"]["leader"],
                                             "term": s["raft"]["term"], "epoch": s["topology"]["epoch"],
                                             "master": s["topology"]["master"], "lease": s["lease"]["held"],
                                             "phase": s.get("failover", {}).get("phase")}
        return json.dumps(out)

    # -- faults ----------------------------------------------------------------------------
    def isolate(self, name: str) -> None:
        """Cut every link between proxy `name` and the other proxies (both directions)."""
        if not self.relays:
            raise HarnessError("this cluster was started without relays")
        for (src, dst), relay in self.relays.items():
            if name in (src, dst):
                relay.cut()

    def cont_all(self) -> None:
        """SIGCONT every live Redis node and proxy (after a test froze some)."""
        for p in [*self.rs.servers, *self.proxies.values()]:
            if p.alive():
                p.cont()

    def heal(self) -> None:
        """Heal every proxy-proxy link and every proxy-redis relay (cut first, so that a
        blackholed connection, which lost bytes, is never resumed)."""
        for relay in [*self.relays.values(), *self.redis_relays.values()]:
            if relay.mode != "pass" or relay.delay:
                relay.cut()
                relay.heal()

    def redis_link(self, proxy: str, addr: str) -> FaultRelay:
        """The relay carrying proxy `proxy`'s connections to Redis node `addr`."""
        return self.redis_relays[(proxy, addr)]

    def redis(self, addr: str) -> RedisServer:
        return self.rs.by_addr(addr)

    def logs(self, lines: int = 60) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(lines)}" for p in self.proxies.values())


def wait_replica_of(server: RedisServer, master: RedisServer, timeout: float = 20.0) -> dict:
    """`server` is a replica of `master` with its link up, and has caught up with the master's
    offset as it was once the link was up (so this ends under a steady write load too);
    returns its INFO replication."""
    deadline = time.monotonic() + timeout

    def linked():
        info = server.info("replication")
        return (info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port
                and info.get("master_link_status") == "up" and not int(info.get("master_sync_in_progress", 0)))
    msg = lambda: f"{server.addr} to be an in-sync replica of {master.addr}; its INFO: {_safe_info(server)}"  # noqa: E731
    wait_until(linked, max(0.1, deadline - time.monotonic()), message=msg)
    target = int(master.info("replication")["master_repl_offset"])

    def caught_up():
        info = server.info("replication")
        return info if linked() and int(info.get("slave_repl_offset", -1)) >= target else None
    return wait_until(caught_up, max(0.1, deadline - time.monotonic()), message=msg)


def _safe_info(server: RedisServer) -> Any:
    try:
        info = server.info("replication")
        return {k: info.get(k) for k in ("role", "master_host", "master_port", "master_link_status",
                                         "slave_repl_offset", "master_repl_offset", "master_sync_in_progress")}
    except Exception as exc:  # noqa: BLE001
        return repr(exc)


# ---------------------------------------------------------------------------
# /status watcher
# ---------------------------------------------------------------------------

@dataclass
class Observation:
    t: float
    proxy: str
    epoch: int
    master: str | None
    leader: str | None
    role: str
    lease: bool


class StatusWatcher(threading.Thread):
    """Polls every proxy's /status every `interval` s until stopped."""

    def __init__(self, cluster: ProxyCluster, interval: float = 0.03) -> None:
        super().__init__(name="status-watcher", daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.obs: list[Observation] = []
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._halt.is_set():
            for name in self.cluster.names:
                if not self.cluster.proxies[name].alive():
                    continue
                s = self.cluster.status(name, timeout=0.3)
                if s is None:
                    continue
                o = Observation(time.monotonic(), name, s["topology"]["epoch"], s["topology"]["master"],
                                s["raft"]["leader"], s["raft"]["role"], bool(s["lease"]["held"]))
                with self._lock:
                    self.obs.append(o)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def __enter__(self) -> "StatusWatcher":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def snapshot(self) -> list[Observation]:
        with self._lock:
            return list(self.obs)

    def masters_by_epoch(self) -> dict[int, set[str | None]]:
        out: dict[int, set[str | None]] = {}
        for o in self.snapshot():
            out.setdefault(o.epoch, set()).add(o.master)
        return out

    def epochs(self) -> set[int]:
        return {o.epoch for o in self.snapshot()}

    def first_seen(self, predicate: Callable[[Observation], bool]) -> float | None:
        for o in self.snapshot():
            if predicate(o):
                return o.t
        return None

    def wait_first_seen(self, predicate: Callable[[Observation], bool], timeout: float = 10.0) -> float | None:
        """first_seen, polled until the watcher has observed a match or `timeout` s pass.

        The watcher runs on its own thread, so a state another poller already saw may
        not be in its observations yet."""
        deadline = time.monotonic() + timeout
        while True:
            t = self.first_seen(predicate)
            if t is not None or time.monotonic() >= deadline:
                return t
            time.sleep(0.01)

    def leaders(self) -> set[str]:
        return {o.leader for o in self.snapshot() if o.leader}


# ---------------------------------------------------------------------------
# write load
# ---------------------------------------------------------------------------

@dataclass
class WriteResult:
    key: str
    value: str
    sent: float
    done: float
    ok: bool
    error: str | None = None
    kind: str = "ok"        # ok | reply (an error reply) | conn (connection error/timeout: outcome unknown)


class Writer(threading.Thread):
    """SET unique keys through one endpoint every ~`interval` s, recording every outcome.

    `client_factory` returns a redis-py client (default: a no-retry client of
    `port`), so the same writer measures a Sentinel-discovered master.  An
    acknowledged write is one whose reply was +OK; a connection error or a
    timeout leaves the write's fate unknown (it is neither acknowledged nor
    counted as lost).
    """

    def __init__(self, port: int | None = None, prefix: str = "w", interval: float = 0.002,
                 timeout: float = 10.0, client_factory: Callable[[], Any] | None = None) -> None:
        super().__init__(name=f"writer-{prefix}", daemon=True)
        self.prefix = prefix
        self.interval = interval
        self.client_factory = client_factory or (lambda: redis_client(port, timeout=timeout, decode=True))
        self.results: list[WriteResult] = []
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.client: Any = None
        self.crashed: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.crashed = exc

    def _run(self) -> None:
        i = 0
        client = None
        while not self._halt.is_set():
            key, value = f"{self.prefix}:{i}", f"{self.prefix}-v{i}"
            i += 1
            sent = time.monotonic()
            try:
                if client is None:
                    client = self.client = self.client_factory()
                reply = client.set(key, value)
                done = time.monotonic()
                if reply is True:
                    r = WriteResult(key, value, sent, done, True)
                else:
                    r = WriteResult(key, value, sent, done, False, f"unexpected reply {reply!r}", "reply")
            except redis.ResponseError as exc:
                r = WriteResult(key, value, sent, time.monotonic(), False, error_text(exc), "reply")
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                r = WriteResult(key, value, sent, time.monotonic(), False, f"{type(exc).__name__}: {exc}", "conn")
            with self._lock:
                self.results.append(r)
            left = self.interval - (time.monotonic() - sent)
            if left > 0:
                self._halt.wait(left)
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass

    def stop(self) -> "Writer":
        self._halt.set()
        self.join(30)
        if self.is_alive():
            raise HarnessError(f"writer {self.prefix} did not stop")
        return self

    def __enter__(self) -> "Writer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.is_alive():
            self.stop()

    # -- views ------------------------------------------------------------------------
    def snapshot(self) -> list[WriteResult]:
        with self._lock:
            return list(self.results)

    def acked(self) -> list[WriteResult]:
        return [r for r in self.snapshot() if r.ok]

    def errors(self) -> list[WriteResult]:
        return [r for r in self.snapshot() if not r.ok]

    def acked_count(self) -> int:
        with self._lock:
            return sum(1 for r in self.results if r.ok)

    def wait_acks(self, n: int, after: float | None = None, timeout: float = 30.0) -> WriteResult:
        """Wait until `n` writes sent after `after` (default: now) were acknowledged; returns the n-th."""
        after = time.monotonic() if after is None else after

        def ok():
            if self.crashed:
                raise HarnessError(f"writer crashed: {self.crashed!r}")
            got = [r for r in self.snapshot() if r.ok and r.sent >= after]
            return got[n - 1] if len(got) >= n else None
        return wait_until(ok, timeout, message=lambda: f"{n} acknowledged writes through writer {self.prefix}; "
                                                       f"last outcomes: {self.tail()}")

    def tail(self, n: int = 5) -> list[str]:
        return [f"{r.kind}:{r.error or 'OK'}" for r in self.snapshot()[-n:]]

    def first_ack_after(self, t: float) -> WriteResult | None:
        """The first write sent at or after `t` that was acknowledged."""
        for r in self.snapshot():
            if r.ok and r.sent >= t:
                return r
        return None


def _error_prefixes() -> dict[type, str]:
    try:
        from redis._parsers.base import BaseParser
    except ImportError:  # older redis-py
        return {}
    return {cls: code for code, cls in BaseParser.EXCEPTION_CLASSES.items() if isinstance(cls, type)}


_ERROR_PREFIXES = _error_prefixes()


def error_text(exc: Exception) -> str:
    """An error reply as Redis sent it: redis-py strips known codes (TRYAGAIN, READONLY, ...)
    into exception classes, which are mapped back here."""
    code = _ERROR_PREFIXES.get(type(exc))
    return f"{code} {exc}" if code and code != "ERR" else str(exc)


def read_back(client: Any, writes: Sequence[WriteResult], chunk: int = 500) -> list[WriteResult]:
    """Read every write's key with MGET; return the writes whose value is missing or different."""
    lost = []
    for i in range(0, len(writes), chunk):
        part = writes[i:i + chunk]
        values = client.mget([w.key for w in part])
        for w, v in zip(part, values):
            if isinstance(v, bytes):
                v = v.decode()
            if v != w.value:
                lost.append(w)
    return lost


def unavailability(writes: Sequence[WriteResult], t_fault: float) -> float | None:
    """Seconds from `t_fault` to the first acknowledgement of a write sent after it."""
    for r in writes:
        if r.ok and r.sent >= t_fault:
            return r.done - t_fault
    return None


# ---------------------------------------------------------------------------
# per-process connect() redirection (LD_PRELOAD)
# ---------------------------------------------------------------------------

_SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* FAULT_CONNECT_REDIRECT="7000:7100,7001:7101": connect() to 127.0.0.1:7000 goes
   to 127.0.0.1:7100 instead.  Test-only: puts a relay on one process's link. */
static int from_port[32], to_port[32], n_ports;
static int (*real_connect)(int, const struct sockaddr *, socklen_t);

__attribute__((constructor)) static void init(void) {
    real_connect = dlsym(RTLD_NEXT, "connect");
    const char *spec = getenv("FAULT_CONNECT_REDIRECT");
    if (!spec) return;
    char buf[1024];
    strncpy(buf, spec, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && n_ports < 32;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        if (!colon) continue;
        *colon = 0;
        from_port[n_ports] = atoi(tok);
        to_port[n_ports] = atoi(colon + 1);
        n_ports++;
    }
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    if (!real_connect) real_connect = dlsym(RTLD_NEXT, "connect");
    if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        if (in->sin_addr.s_addr == htonl(INADDR_LOOPBACK)) {
            int port = ntohs(in->sin_port);
            for (int i = 0; i < n_ports; i++) {
                if (from_port[i] == port) {
                    struct sockaddr_in copy = *in;
                    copy.sin_port = htons((unsigned short)to_port[i]);
                    return real_connect(fd, (const struct sockaddr *)&copy, sizeof copy);
                }
            }
        }
    }
    return real_connect(fd, addr, len);
}
"""

_shim_lock = threading.Lock()


def connect_redirect_shim() -> str | None:
    """Build (once) the LD_PRELOAD shim; None when no C compiler is available."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out_dir = Path(tempfile.gettempdir()) / f"redis-raft-proxy-fault-shim-{os.getuid()}"
    lib = out_dir / "connect_redirect.so"
    with _shim_lock:
        if lib.exists():
            return str(lib)
        out_dir.mkdir(parents=True, exist_ok=True)
        src = out_dir / "connect_redirect.c"
        src.write_text(_SHIM_SOURCE)
        tmp = out_dir / f"connect_redirect.{os.getpid()}.so"
        r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(src), "-ldl"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None
        os.replace(tmp, lib)
        return str(lib)


def connect_redirect_env(redirects: dict[int, int]) -> dict[str, str]:
    """Env for a child whose connect() to 127.0.0.1:k must reach 127.0.0.1:v instead."""
    lib = connect_redirect_shim()
    if lib is None:
        raise HarnessError("no C compiler to build the connect() redirection shim")
    return {"LD_PRELOAD": lib, "FAULT_CONNECT_REDIRECT": ",".join(f"{k}:{v}" for k, v in redirects.items())}


# ---------------------------------------------------------------------------
# Redis Sentinel, for comparison
# ---------------------------------------------------------------------------

SENTINEL_MASTER_NAME = "mymaster"


class SentinelProcess(ManagedProcess):
    def __init__(self, workdir: Path, port: int, master: RedisServer, down_after_ms: int,
                 failover_timeout_ms: int = 10000) -> None:
        self.port = port
        self.name = f"sentinel-{port}"
        super().__init__(Path(workdir) / self.name)
        self.conf = self.workdir / "sentinel.conf"
        self.conf.write_text(
            f"port {port}\nbind {HOST}\nprotected-mode no\ndaemonize no\ndir {self.workdir}\n"
            f"sentinel resolve-hostnames no\n"
            f"sentinel monitor {SENTINEL_MASTER_NAME} {HOST} {master.port} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} {down_after_ms}\n"
            f"sentinel failover-timeout {SENTINEL_MASTER_NAME} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SENTINEL_MASTER_NAME} 1\n")

    def argv(self) -> list[str]:
        return [REDIS_SERVER, str(self.conf), "--sentinel"]

    def start(self, timeout: float = 10.0) -> "SentinelProcess":
        self.spawn()
        wait_until(lambda: ping_port(self.port), timeout, message=f"{self.name} to answer PING")
        return self

    def master_addr(self) -> str | None:
        try:
            with redis_client(self.port, timeout=0.5, decode=True) as c:
                host, port = c.execute_command("SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER_NAME)
                return f"{host}:{port}"
        except Exception:  # noqa: BLE001
            return None


class SentinelCluster:
    """3 redis-server (1 master + 2 replicas) watched by 3 sentinels (quorum 2).

    With `rs`, the sentinels watch that running replica set (started and
    cleaned up by its owner) instead of one of their own."""

    def __init__(self, workdir: Path, down_after_ms: int, rs: ReplicaSet | None = None) -> None:
        self.workdir = Path(workdir)
        self._own_rs = rs is None
        self.rs = rs if rs is not None else ReplicaSet(self.workdir / "redis")
        self.ports = free_ports(3)
        self.down_after_ms = down_after_ms
        self.sentinels = [SentinelProcess(self.workdir / "sentinels", p, self.rs.master, down_after_ms)
                          for p in self.ports]

    def start(self, timeout: float = 30.0) -> "SentinelCluster":
        if self._own_rs:
            self.rs.start()
        for s in self.sentinels:
            s.start()

        def discovered():
            # every sentinel sees the 2 replicas and the 2 other sentinels
            for s in self.sentinels:
                with redis_client(s.port, timeout=1, decode=True) as c:
                    m = c.execute_command("SENTINEL", "master", SENTINEL_MASTER_NAME)
                    m = dict(zip(m[::2], m[1::2])) if isinstance(m, list) else m
                    if int(m["num-slaves"]) < 2 or int(m["num-other-sentinels"]) < 2:
                        return False
            return True
        wait_until(discovered, timeout, interval=0.1, message="sentinels to discover replicas and each other")
        return self

    def master_addr(self) -> str | None:
        for s in self.sentinels:
            addr = s.master_addr()
            if addr:
                return addr
        return None

    def sentinel_client(self, socket_timeout: float = 0.5):
        from redis.sentinel import Sentinel
        return Sentinel([(HOST, p) for p in self.ports], socket_timeout=socket_timeout,
                        socket_connect_timeout=socket_timeout)

    def master_client(self, timeout: float = 10.0):
        """A redis-py Sentinel `master_for` client, no retries (every error is seen)."""
        return self.sentinel_client().master_for(SENTINEL_MASTER_NAME, socket_timeout=timeout,
                                                 socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0),
                                                 decode_responses=True)

    def cleanup(self) -> None:
        for s in self.sentinels:
            s.cleanup()
        if self._own_rs:
            self.rs.cleanup()
        release_ports(self.ports)

    def __enter__(self) -> "SentinelCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


__all__ = [
    "PROXY_NAMES", "RAFT_SECRET", "ProxyCluster", "StatusWatcher", "Observation", "Writer", "WriteResult",
    "read_back", "unavailability", "wait_replica_of", "connect_redirect_env", "connect_redirect_shim",
    "SentinelCluster", "SentinelProcess", "HarnessError", "wait_until", "redis_client", "REGISTRY", "error_text",
]
