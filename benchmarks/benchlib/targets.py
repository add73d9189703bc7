"""The servers under test: redis-server (direct), our proxy (and variants), haproxy, twemproxy,
and the bare Python relay (`benchmarks/relay_floor.py`).

Each `start_*` function writes whatever config file it needs into its own
work directory, starts the server through the ProcessRegistry, waits until
it answers PING and SET, and returns a `Target`. Failures raise StartError
(or OSError when the binary is missing); the caller decides whether that
is fatal (redis-server) or means skipping the target (everything else).

With `certs` (proxy.process.devcerts.ClusterCerts) redis-server and our proxy serve
only TLS, with client certificates required, and the proxy reaches Redis over
TLS; the Target then carries the redis-benchmark flags for TLS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .procs import HOST, ProcessRegistry, StartError, free_ports, wait_ready

if TYPE_CHECKING:
    from proxy.process.devcerts import ClusterCerts

DIRECT = "direct"
PROXY = "proxy"
REPLICA = "replica"     # (--replica: not a target, the direct one's replica)
HAPROXY = "haproxy"
TWEMPROXY = "twemproxy"
FLOOR = "floor"
REFERENCE_KINDS = (PROXY, HAPROXY, TWEMPROXY, FLOOR)
RELAY_FLOOR = Path(__file__).resolve().parent.parent / "relay_floor.py"


@dataclass
class Target:
    """One endpoint redis-benchmark is pointed at."""

    name: str
    kind: str
    port: int
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    startup_s: float = 0.0
    client_args: list[str] = field(default_factory=list)   # extra redis-benchmark flags (--tls ...)
    pid: int = 0            # the server's process, whose own CPU accounting each run reads
    backend_pid: int = 0    # the redis-server behind a proxy (0: none, or direct)


@dataclass
class ProxySpec:
    """How to run one instance of our proxy: a name plus extra flags and env vars."""

    name: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def parse_env_pair(text: str) -> tuple[str, str]:
    """Split "KEY=VAL" into (KEY, VAL); raises ValueError when there is no '=' or no key."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VAL, got {text!r}")
    return key, value


def parse_variant(text: str, base: ProxySpec) -> ProxySpec:
    """Parse "name:ITEM,ITEM,..." into a ProxySpec layered on top of `base`.

    An ITEM starting with "--" is an extra proxy flag (e.g. --log-level=warning);
    any other ITEM is an environment variable KEY=VAL. The target is named
    "proxy/<name>".
    """
    name, sep, rest = text.partition(":")
    if not sep or not name:
        raise ValueError(f"expected name:KEY=VAL,--flag=value,..., got {text!r}")
    spec = ProxySpec(f"{PROXY}/{name}", list(base.args), dict(base.env))
    for item in filter(None, (part.strip() for part in rest.split(","))):
        if item.startswith("--"):
            spec.args.append(item)
        else:
            key, value = parse_env_pair(item)
            spec.env[key] = value
    return spec


def tool_version(argv: Sequence[str]) -> str:
    """First line a tool prints about its version, or "" when it cannot run."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else ""


def require_binary(name: str) -> str:
    """Absolute path of `name` on PATH; raises FileNotFoundError when missing."""
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found on PATH")
    return path


def tls_client_args(certs: "ClusterCerts | None") -> list[str]:
    """redis-benchmark flags for a TLS target (none without `certs`)."""
    return ["--tls", *certs.cli_args()] if certs else []


def start_redis(reg: ProcessRegistry, workdir: Path, timeout_s: float,
                certs: "ClusterCerts | None" = None) -> Target:
    """Start a throwaway redis-server (no RDB, no AOF) in `workdir`; TLS only with `certs`."""
    workdir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    listen = [*certs.redis_args(port), "--port", "0"] if certs else ["--port", str(port)]
    argv = [require_binary("redis-server"), *listen, "--bind", HOST,
            "--save", "", "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"]
    managed = reg.start(DIRECT, argv, workdir / "redis.log", cwd=workdir)
    startup = wait_ready(managed, port, timeout_s, certs.client_context() if certs else None)
    return Target(DIRECT, DIRECT, port, argv, startup_s=startup, client_args=tls_client_args(certs),
                  pid=managed.proc.pid)


def start_replica(reg: ProcessRegistry, workdir: Path, master_port: int, timeout_s: float) -> Target:
    """A throwaway redis-server replicating the one on `master_port`, once the master counts
    it as an online replica (what `WAIT 1` needs: `--replica`, for ack = replica)."""
    import redis as redis_py

    workdir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    argv = [require_binary("redis-server"), "--port", str(port), "--bind", HOST, "--replicaof", HOST,
            str(master_port), "--save", "", "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"]
    managed = reg.start(REPLICA, argv, workdir / "redis.log", cwd=workdir)
    start = time.monotonic()
    with redis_py.Redis(host=HOST, port=master_port, socket_timeout=2) as master:
        while (master.info("replication").get("slave0") or {}).get("state") != "online":
            if not managed.alive() or time.monotonic() - start > timeout_s:
                raise StartError(f"the replica on port {port} did not come online within {timeout_s:.0f}s"
                                 f"\n{managed.log_tail()}")
            time.sleep(0.05)
    return Target(REPLICA, REPLICA, port, argv, startup_s=time.monotonic() - start, pid=managed.proc.pid)


def haproxy_config(port: int, redis_port: int, threads: int) -> str:
    """A minimal TCP-mode haproxy config forwarding `port` to redis."""
    return f"""\
global
    maxconn 4096
    nbthread {threads}

defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 5m

frontend bench
    bind {HOST}:{port}
    default_backend redis

backend redis
    server redis1 {HOST}:{redis_port}
"""


def start_haproxy(reg: ProcessRegistry, workdir: Path, redis_port: int,
                  threads: int, timeout_s: float) -> Target:
    """Start haproxy in TCP mode (foreground, -db) in front of redis."""
    workdir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    config = workdir / "haproxy.cfg"
    config.write_text(haproxy_config(port, redis_port, threads))
    argv = [require_binary("haproxy"), "-db", "-f", str(config)]
    managed = reg.start(HAPROXY, argv, workdir / "haproxy.log", cwd=workdir)
    startup = wait_ready(managed, port, timeout_s)
    return Target(HAPROXY, HAPROXY, port, argv, startup_s=startup, pid=managed.proc.pid)


def twemproxy_config(port: int, redis_port: int) -> str:
    """A one-pool nutcracker config (redis: true) with redis as its only server."""
    return f"""\
bench:
  listen: {HOST}:{port}
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  preconnect: true
  timeout: 5000
  servers:
   - {HOST}:{redis_port}:1
"""


def start_twemproxy(reg: ProcessRegistry, workdir: Path, redis_port: int,
                    timeout_s: float) -> Target:
    """Start nutcracker (twemproxy) in front of redis, stats on its own free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, stats_port = free_ports(2)
    config = workdir / "nutcracker.yml"
    config.write_text(twemproxy_config(port, redis_port))
    argv = [require_binary("nutcracker"), "-c", str(config), "-a", HOST, "-s", str(stats_port),
            "-p", str(workdir / "nutcracker.pid"), "-o", str(workdir / "nutcracker.log")]
    managed = reg.start(TWEMPROXY, argv, workdir / "nutcracker.out", cwd=workdir)
    startup = wait_ready(managed, port, timeout_s)
    return Target(TWEMPROXY, TWEMPROXY, port, argv, startup_s=startup, pid=managed.proc.pid)


def start_floor(reg: ProcessRegistry, workdir: Path, redis_port: int, timeout_s: float) -> Target:
    """Start the bare Python relay (benchmarks/relay_floor.py) in front of redis."""
    workdir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    argv = [sys.executable, str(RELAY_FLOOR), str(port), str(redis_port)]
    managed = reg.start(FLOOR, argv, workdir / "relay.log", cwd=workdir)
    startup = wait_ready(managed, port, timeout_s)
    return Target(FLOOR, FLOOR, port, argv, startup_s=startup, pid=managed.proc.pid)


def proxy_argv(binary: str, port: int, admin_port: int, redis_port: int,
               extra: Sequence[str], certs: "ClusterCerts | None" = None,
               replica_port: int | None = None) -> list[str]:
    """Command line of our proxy as a single node in front of one redis (and its replica on
    `replica_port`, if any); with `certs` it serves only TLS on `port` and reaches redis
    over TLS."""
    if certs:
        from proxy.process.devcerts import config_flags

        listen = ["--port", "0", "--tls-port", str(port), *config_flags(certs.proxy_options(admin=False))]
    else:
        listen = ["--port", str(port)]
    nodes = f"{HOST}:{redis_port}" + (f",{HOST}:{replica_port}" if replica_port else "")
    return [binary, "run", "--node", "bench", *listen, "--admin-port", str(admin_port),
            "--redis-nodes", nodes, "--master", f"{HOST}:{redis_port}", "--read-policy", "master", *extra]


def start_proxy(reg: ProcessRegistry, workdir: Path, binary: str, redis_port: int,
                spec: ProxySpec, timeout_s: float, certs: "ClusterCerts | None" = None,
                replica_port: int | None = None) -> Target:
    """Start our proxy (one instance per ProxySpec) in front of redis (TLS everywhere with `certs`)."""
    if not os.access(binary, os.X_OK):
        raise FileNotFoundError(f"{binary} is missing or not executable "
                                "(is the proxy installed in the venv?)")
    workdir.mkdir(parents=True, exist_ok=True)
    port, admin_port = free_ports(2)
    argv = proxy_argv(binary, port, admin_port, redis_port, spec.args, certs, replica_port)
    env = {**os.environ, **spec.env}
    managed = reg.start(spec.name, argv, workdir / "proxy.log", env=env, cwd=workdir)
    startup = wait_ready(managed, port, timeout_s, certs.client_context() if certs else None)
    return Target(spec.name, PROXY, port, argv, dict(spec.env), startup_s=startup,
                  client_args=tls_client_args(certs), pid=managed.proc.pid)
