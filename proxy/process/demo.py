"""`redis-raft-proxy demo`: a local cluster to try things on.

With --shards N, a Redis Cluster of N shards instead (proxy/process/demo_cluster.py).
By default three redis-server processes (the first the initial master, the others its
replicas) and three proxies, all on 127.0.0.1, data in a temp dir.  The demo
watches its children: when one dies (kill it to try a failure) it says so
and prints the command that starts it again; it never restarts anything
behind the user's back.  Ctrl-C or SIGTERM stops everything.

With --tls every hop speaks TLS (certificates from proxy/process/devcerts.py in the
data dir's tls/ folder): the redis-servers serve only TLS (replication too) and
require client certificates; the proxies serve TLS on the usual client ports,
HTTPS between each other and to the operator, TLS on their Sentinel ports, and
present a client certificate to Redis.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis, RedisError

from .devcerts import CertError, ClusterCerts, config_flags

PROXY_NAMES = ("proxy-1", "proxy-2", "proxy-3")


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: str
    env: dict
    proc: subprocess.Popen | None = None
    reported_dead: bool = False
    restart_argv: list[str] | None = None   # how to start it again, when not `argv`

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        log.close()
        self.reported_dead = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def exit_message(child: Child) -> str:
    """What the demo prints when `child` died: how to start it again."""
    return (f"demo: {child.name} (pid {child.proc.pid if child.proc else '?'}) exited with status "
            f"{child.proc.returncode if child.proc else '?'}; the demo keeps running. Start it again with:\n"
            f"  {shlex.join(child.restart_argv or child.argv)}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, child: Child, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port):
            return True
        if not child.alive():
            return False
        time.sleep(0.05)
    return False


def _replica_synced(port: int, client_kwargs: dict[str, Any]) -> bool:
    try:
        with Redis(port=port, socket_timeout=1, **client_kwargs) as r:
            return r.info("replication").get("master_link_status") == "up"
    except RedisError:
        return False


def _wait_replicas_synced(master_port: int, timeout: float, stopping: Callable[[], bool],
                          client_kwargs: dict[str, Any]) -> bool:
    """Both replicas finished their first sync: until then a replica holds no data and is
    rightly never promoted, so "try a failure" would find the failover blocked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping():
        if all(_replica_synced(master_port + i, client_kwargs) for i in (1, 2)):
            return True
        time.sleep(0.1)
    return False


# Every demo redis-server: no persistence, local only, and replicas synced at once. Redis
# waits repl-diskless-sync-delay (5 s by default) before a full sync, so that replicas that
# connect together share one transfer; the demo's data is small, and without the wait it is
# up (both replicas synced, which a failover needs) 5 s sooner.
DEMO_REDIS_ARGS = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no",
                   "--repl-diskless-sync-delay", "0"]


def redis_server_binary(args) -> str:
    server = shutil.which(args.redis_server)
    if server is None:
        raise SystemExit("redis-raft-proxy demo: redis-server not found. On Debian: "
                         "sudo apt-get install -y redis-server redis-tools")
    return server


def redis_children(args, datadir: str, certs: ClusterCerts | None = None) -> list[Child]:
    server = redis_server_binary(args)
    out = []
    for i in range(3):
        port = args.redis_port + i
        d = os.path.join(datadir, f"redis-{port}")
        os.makedirs(d, exist_ok=True)
        listen = certs.redis_args(port) + ["--port", "0"] if certs else ["--port", str(port)]
        argv = [server, *listen, "--dir", d, *DEMO_REDIS_ARGS]
        # The first start follows the initial master. A restart must not: by then the master
        # may be another node, and the proxies' leader points the node at the right one (a
        # stale REPLICAOF would make it follow an old master, or an empty node).
        restart = list(argv)
        if i > 0:
            argv += ["--replicaof", "127.0.0.1", str(args.redis_port)]
        out.append(Child(f"redis-{port}", argv, os.path.join(datadir, f"redis-{port}.log"), dict(os.environ),
                         restart_argv=restart))
    return out


def _proxy_tls_flags(certs: ClusterCerts, port: int) -> list[str]:
    """TLS only on the client port `port`; TLS to Redis, HTTPS admin/Raft, TLS Sentinel port."""
    return ["--port", "0", "--tls-port", str(port), *config_flags(certs.proxy_options(admin=True, sentinel=True))]


def single_set_flags(args) -> list[str]:
    """The proxies' view of the single-set demo: three nodes, the first the initial master,
    and a Sentinel-compatible port each (from --sentinel-port on)."""
    nodes = ",".join(f"127.0.0.1:{args.redis_port + i}" for i in range(3))
    return ["--redis-nodes", nodes, "--master", f"127.0.0.1:{args.redis_port}"]


SECRET_ENV = ("REDIS_RAFT_PROXY_RAFT_SECRET", "REDIS_RAFT_PROXY_RAFT_SECRET_FILE")


def operator_secret_given(env: Mapping[str, str], extra: list[str]) -> bool:
    """Whether the operator gave the proxies a Raft secret (or its file), in the environment
    or among the flags passed to every proxy; the demo makes one otherwise."""
    return (any(env.get(name) for name in SECRET_ENV)
            or any(flag.split("=")[0] in ("--raft-secret", "--raft-secret-file") for flag in extra))


def proxy_children(args, extra: list[str], datadir: str, certs: ClusterCerts | None = None,
                   upstream: list[str] | None = None) -> list[Child]:
    """The three proxies; `upstream`: the flags that name the Redis nodes (default: the
    single set's, with Sentinel ports)."""
    scheme = "https" if certs else "http"
    peers = ",".join(f"{name}={scheme}://127.0.0.1:{args.admin_port + i}" for i, name in enumerate(PROXY_NAMES))
    env = dict(os.environ)
    if not operator_secret_given(env, extra):
        env["REDIS_RAFT_PROXY_RAFT_SECRET"] = secrets.token_hex(32)   # as `openssl rand -hex 32`
    out = []
    for i, name in enumerate(PROXY_NAMES):
        port = args.proxy_port + i
        listen = _proxy_tls_flags(certs, port) if certs else ["--port", str(port)]
        argv = [sys.executable, "-m", "proxy.process.cli", "run", "--node", name, *listen,
                "--admin-port", str(args.admin_port + i)]
        if upstream is None:
            argv += ["--sentinel-port", str(args.sentinel_port + i), *single_set_flags(args)]
        else:
            argv += upstream
        argv += ["--peers", peers, "--data-dir", os.path.join(datadir, name)]
        argv += extra
        out.append(Child(name, argv, os.path.join(datadir, f"{name}.log"), env))
    return out


def write_secret_file(datadir: str, secret: str) -> str:
    """The demo's generated Raft secret in `datadir/raft-secret`, readable by its owner only.
    The banner names this file, not the secret: a demo's output ends up in terminal
    scrollback, screen recordings and CI logs, and secrets are never printed."""
    path = os.path.join(datadir, "raft-secret")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)   # a file left by an earlier run keeps its mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secret + "\n")
    return path


def forget_earlier_run(datadir: str, children: list[Child]) -> None:
    """The demo's redis-servers keep no data (DEMO_REDIS_ARGS): what an earlier run left in
    the same --dir describes data that is gone. The proxies' Raft state would make them
    rightly refuse every node as master (none holds the committed history), a cluster
    node's nodes.conf would claim slots it has no keys for. Start afresh."""
    dirs = [c.argv[c.argv.index(flag) + 1] for c in children for flag in ("--data-dir", "--dir") if flag in c.argv]
    stale = [d for d in dirs if os.path.isdir(d) and os.listdir(d)]
    if stale:
        print(f"demo: {datadir} holds the state of an earlier run, whose Redis data is gone (the demo's "
              "redis-servers keep none): starting afresh", flush=True)
        for d in stale:
            for entry in os.scandir(d):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)


def print_banner(args, datadir: str, secret_file: str | None, certs: ClusterCerts | None,
                 redis_lines: list[str] | None = None) -> None:
    """How to reach every part of the running demo; `secret_file`: where the demo wrote the
    Raft secret it made (None: the operator gave one); `redis_lines` describe the Redis
    nodes (default: the single set's nodes and Sentinel ports)."""
    tls = shlex.join(["--tls", *certs.cli_args()]) + " " if certs else ""
    cacert = f" --cacert {shlex.quote(str(certs.ca.cert))}" if certs else ""
    curl = f"curl -s{cacert} https" if certs else "curl -s http"
    scheme = "https" if certs else "http"
    print(f"redis-raft-proxy demo is up (data and logs in {datadir})")
    print(f"  endpoint:  redis-cli {tls}-p {args.proxy_port}     (also {args.proxy_port + 1}, {args.proxy_port + 2})")
    print(f"  status:    {curl}://127.0.0.1:{args.admin_port}/status")
    if redis_lines is None:
        redis_lines = [f"redis:     127.0.0.1:{args.redis_port} (master), {args.redis_port + 1}, {args.redis_port + 2}"
                       + (" (TLS only, client certificate required)" if certs else ""),
                       f"sentinel:  127.0.0.1:{args.sentinel_port}-{args.sentinel_port + 2} (master name mymaster"
                       + (", TLS)" if certs else ")")]
    for line in redis_lines:
        print(f"  {line}")
    status = f"redis-raft-proxy status --endpoint {scheme}://127.0.0.1:{args.admin_port}{cacert}"
    if secret_file is None:
        print(f"  operator:  {status}     (with the Raft secret you gave the demo)")
    else:
        print(f"  operator:  export REDIS_RAFT_PROXY_RAFT_SECRET_FILE={shlex.quote(secret_file)}; {status}")
    if certs:
        print(f"  certificates: {certs.ca.dir} (throwaway CA; --cert/--key {certs.client.cert.name} "
              "also authenticate operator commands)")
    print("  try a failure: kill -9 a redis-server or a proxy; Ctrl-C stops everything", flush=True)


def _status(url: str, context: ssl.SSLContext | None) -> dict:
    with urllib.request.urlopen(url, timeout=2, context=context) as r:
        return json.loads(r.read())


def wait_proxies_serving(args, count: int, certs: ClusterCerts | None, stopping: Callable[[], bool],
                         serving: Callable[[dict], bool], what: str, datadir: str, timeout: float = 60.0) -> None:
    """Wait until every proxy's /status satisfies `serving` (bounded; a warning, not an exit,
    when it does not): a proxy listens on its client port before its Raft data is loaded
    and a leader elected, and "up" in the banner means the endpoint serves writes."""
    scheme = "https" if certs else "http"
    context = certs.client_context() if certs else None
    urls = [f"{scheme}://127.0.0.1:{args.admin_port + i}/status" for i in range(count)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping():
        try:
            if all(serving(_status(u, context)) for u in urls):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    if not stopping():
        print(f"demo: the proxies do not show {what} after {timeout:.0f} s "
              f"(see {datadir}/proxy-*.log and their /status)", file=sys.stderr, flush=True)


def master_served(doc: dict) -> bool:
    """A proxy's /status (single set): its Raft data loaded, a committed master, a lease."""
    return bool((doc.get("raft") or {}).get("cluster_id") and (doc.get("topology") or {}).get("master")
                and (doc.get("lease") or {}).get("held"))


@dataclass
class Layout:
    """What one kind of demo runs: the single set (default) or a cluster (--shards)."""

    redis: list[Child]
    redis_ports: list[int]          # the redis-servers' client ports, in `redis` order
    proxies: list[Child]
    ports: list[int]                # every port the demo listens on (checked free first)
    # once the redis-servers answer: make them ready for the proxies; False = give up
    prepare: Callable[[Callable[[], bool]], bool]
    # once the proxies listen: wait until they serve (warn, do not give up)
    ready: Callable[[Callable[[], bool]], None] = lambda _stopping: None
    redis_lines: list[str] | None = None    # the banner's lines on Redis (None: the single set's)


def single_set_layout(args, extra: list[str], datadir: str, certs: ClusterCerts | None) -> Layout:
    client_kwargs = certs.redis_py_kwargs() if certs else {}

    def prepare(stopping: Callable[[], bool]) -> bool:
        if not _wait_replicas_synced(args.redis_port, 30, stopping, client_kwargs):
            print("demo: the replicas have not finished their first sync after 30 s; a failover is blocked until "
                  f"they do (see {datadir}/redis-*.log)", file=sys.stderr, flush=True)
        return True

    def ready(stopping: Callable[[], bool]) -> None:
        wait_proxies_serving(args, 3, certs, stopping, master_served, "a committed master and a write lease",
                             datadir)

    ports = [base + i for base in (args.redis_port, args.proxy_port, args.admin_port, args.sentinel_port)
             for i in range(3)]
    return Layout(redis_children(args, datadir, certs), [args.redis_port + i for i in range(3)],
                  proxy_children(args, extra, datadir, certs), ports, prepare, ready)


def run_demo(args, extra: list[str]) -> int:
    shards = getattr(args, "shards", 0)
    if shards:
        from .demo_cluster import check_options

        problem = check_options(args)
        if problem:
            print(f"demo: {problem}", file=sys.stderr)
            return 2
    datadir = args.dir or tempfile.mkdtemp(prefix="redis-raft-proxy-demo-")
    os.makedirs(datadir, exist_ok=True)
    try:
        certs = ClusterCerts.make(Path(datadir) / "tls") if args.tls else None
    except CertError as exc:
        print(f"demo: cannot make the TLS certificates: {exc}", file=sys.stderr)
        return 1
    if shards:
        from .demo_cluster import cluster_layout

        layout = cluster_layout(args, extra, datadir, certs)
    else:
        layout = single_set_layout(args, extra, datadir, certs)
    redis, proxies = layout.redis, layout.proxies
    children = redis + proxies
    overlap = sorted({p for p in layout.ports if layout.ports.count(p) > 1})
    if overlap:
        print(f"demo: the port ranges overlap at {', '.join(map(str, overlap))}: each of "
              "--proxy-port/--admin-port/--redis-port/--sentinel-port starts a range of its own "
              "(3 ports each, and the cluster bus ports in cluster mode)", file=sys.stderr)
        return 2
    busy = [p for p in layout.ports if _port_open(p)]
    if busy:
        print(f"demo: ports already in use: {', '.join(map(str, busy))} (another demo still running?); "
              "choose others with --proxy-port/--admin-port/--redis-port", file=sys.stderr)
        return 1
    forget_earlier_run(datadir, children)
    stopping = False

    def stop(_sig=None, _frm=None):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for child in redis:
            child.start()
        for port, child in zip(layout.redis_ports, redis):
            if not _wait_port(port, child):
                print(f"demo: {child.name} did not start; see {child.log_path}", file=sys.stderr)
                return 1
        if not layout.prepare(lambda: stopping):
            return 1
        for child in proxies:
            child.start()
        for i, child in enumerate(proxies):
            if not _wait_port(args.proxy_port + i, child, timeout=30):
                print(f"demo: {child.name} did not start; see {child.log_path}", file=sys.stderr)
                return 1
        layout.ready(lambda: stopping)
        secret_file = (None if operator_secret_given(os.environ, extra)
                       else write_secret_file(datadir, proxies[0].env["REDIS_RAFT_PROXY_RAFT_SECRET"]))
        print_banner(args, datadir, secret_file, certs, layout.redis_lines)
        while not stopping:
            for child in children:
                if child.proc is not None and not child.alive() and not child.reported_dead:
                    child.reported_dead = True
                    print(exit_message(child), flush=True)
            time.sleep(0.2)
        return 0
    finally:
        print("demo: stopping", flush=True)
        for child in reversed(children):
            child.stop()
