"""The system under test, with every process in its own cgroup: 3 redis-server + 3 proxies
(`ProxyCluster` from benchmarks/failover_lib.py) or + 3 Redis Sentinels (`SentinelCluster`).

Both kinds expose the same small interface to the fault injector and the checker:
`redis` (name -> RedisServer), `controllers` (name -> the proxy or sentinel
process), `endpoint(name)` (for nftables), `current_master()`, `heal()` and
`converged()`.  Names: redis-1..3, proxy-1..3 or sentinel-1..3, and "clients"
(this process, which runs every client and is moved into a cgroup of its own).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from collections.abc import Iterable
from typing import Any, Callable

from redis.backoff import NoBackoff
from redis.retry import Retry

from benchmarks.failover_lib import RAFT_SECRET, SENTINEL_MASTER_NAME, ProxyCluster, SentinelCluster, wait_replica_of
from benchmarks.raft_cluster_lib import run_ops
from tests.integration.harness import HarnessError, ManagedProcess, RedisServer, redis_client, wait_until

from .disk import SmallFs
from .netfaults import ChaosNet, Endpoint

CLIENTS = "clients"
# Redis as a user runs it: the default diskless-sync delay (the harness sets 0 for speed)
REDIS_DEFAULTS = ["--repl-diskless-sync-delay", "5"]
PERSISTENCE = ["--appendonly", "yes", "--appendfsync", "always"]


def put_in_cgroup(proc: ManagedProcess, net: ChaosNet, name: str) -> None:
    """Start `proc` (now and on every restart) inside cgroup `name`: its argv gets a launcher
    prefix that moves the shell into the cgroup and then execs the real program."""
    original = proc.argv
    prefix = net.launcher(name)
    proc.argv = lambda: [*prefix, *original()]  # type: ignore[method-assign]


class ClientsCgroup:
    """Moves this process (all its threads: every client) into the `clients` cgroup, and back."""

    def __init__(self, net: ChaosNet) -> None:
        self.net = net
        self.home = _own_cgroup()
        (net.cg_root / net.cgroup(CLIENTS) / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> None:
        try:
            (self.net.cg_root / self.home.lstrip("/") / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            (self.net.cg_root / "cgroup.procs").write_text(str(os.getpid()))


def _own_cgroup() -> str:
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            if line.startswith("0::"):
                return line.strip()[3:] or "/"
    return "/"


def fail_over_to_fullest(servers: Iterable[RedisServer],
                         admin_port: int) -> tuple[RedisServer, int, int, str] | None:
    """The operator accepting a loss: `failover --to` the node of `servers` with the most keys
    (then the highest replication offset) of those that answer, through the proxy whose admin
    port is `admin_port`. (node, its keys, its offset, "exit N <what the command said>"), or
    None when no node answers."""
    best: tuple[tuple[int, int], RedisServer] | None = None
    for server in servers:
        try:
            with redis_client(server.port, timeout=2, decode=True) as c:
                rank = (int(c.dbsize()), int(c.info("replication").get("master_repl_offset", 0)))
        except Exception:  # noqa: BLE001 - a node that does not answer is not a candidate
            continue
        if best is None or rank > best[0]:
            best = (rank, server)
    if best is None:
        return None
    (keys, offset), target = best
    done = run_ops("failover", "--to", target.addr, endpoint=f"http://127.0.0.1:{admin_port}", secret=RAFT_SECRET)
    said = (done.stdout + done.stderr).strip().replace("\n", " ")
    return target, keys, offset, f"exit {done.returncode} {said[:200]}"


class ChaosCluster:
    """Common part: Redis nodes with persistence on or off, the clients' cgroup, endpoints."""

    kind = "?"

    def __init__(self, workdir: Path, net: ChaosNet, redis_servers: list[RedisServer], persistence: bool) -> None:
        self.workdir = Path(workdir)
        self.net = net
        self.persistence = persistence
        self.redis: dict[str, RedisServer] = {f"redis-{i + 1}": s for i, s in enumerate(redis_servers)}
        for name, s in self.redis.items():
            s.extra_args = [*s.extra_args, *REDIS_DEFAULTS, *(PERSISTENCE if persistence else [])]
            put_in_cgroup(s, net, name)
        self.controllers: dict[str, ManagedProcess] = {}
        self.clients_cg: ClientsCgroup | None = None

    # -- names -----------------------------------------------------------------------------
    def redis_name(self, addr: str) -> str:
        for name, s in self.redis.items():
            if s.addr == addr:
                return name
        raise KeyError(addr)

    def process(self, name: str) -> ManagedProcess:
        return self.redis.get(name) or self.controllers[name]

    def endpoint(self, name: str, for_clients: bool = False) -> Endpoint:
        if name == CLIENTS:
            return Endpoint(CLIENTS, (), f"{self.net.table}/{CLIENTS}")
        if name in self.redis:
            return Endpoint(name, (self.redis[name].port,), f"{self.net.table}/{name}")
        return Endpoint(name, self.controller_ports(name, for_clients), f"{self.net.table}/{name}")

    def controller_ports(self, name: str, for_clients: bool) -> tuple[int, ...]:
        raise NotImplementedError

    def link(self, a: str, b: str) -> tuple[Endpoint, Endpoint]:
        clients = CLIENTS in (a, b)
        return self.endpoint(a, clients), self.endpoint(b, clients)

    # -- Redis -----------------------------------------------------------------------------
    def wipe_redis(self, name: str) -> None:
        """Delete a (dead) node's RDB and AOF: it comes back empty."""
        s = self.redis[name]
        for p in s.workdir.iterdir():
            if p.name.startswith(("dump", "appendonly", "temp-")) or p.name.endswith((".rdb", ".aof")):
                if p.is_dir():
                    for q in p.iterdir():
                        q.unlink(missing_ok=True)
                    p.rmdir()
                else:
                    p.unlink(missing_ok=True)

    def restart_redis(self, name: str, keep_data: bool) -> None:
        """Start a killed node again as a master of its own (as a restarted pod would): the
        proxies (or sentinels) must demote it.  Without `keep_data` (or without persistence)
        it comes back empty."""
        s = self.redis[name]
        if s.alive():
            return
        if not keep_data:
            self.wipe_redis(name)
        s.replicaof = None
        s.spawn()

    def roles(self, timeout: float = 0.5) -> dict[str, dict | None]:
        """INFO replication of every node (None when it does not answer)."""
        out: dict[str, dict | None] = {}
        for name, s in self.redis.items():
            try:
                with redis_client(s.port, timeout=timeout, decode=True) as c:
                    out[name] = c.info("replication")
            except Exception:  # noqa: BLE001 - dead, stopped or cut off
                out[name] = None
        return out

    # -- life cycle ------------------------------------------------------------------------
    def enter_clients_cgroup(self) -> None:
        self.clients_cg = ClientsCgroup(self.net)

    def revive_all(self) -> None:
        """SIGCONT every process; start every dead one (Redis nodes as masters, with their data)."""
        for p in [*self.redis.values(), *self.controllers.values()]:
            if p.alive():
                p.cont()
        for name, s in self.redis.items():
            if not s.alive():
                self.restart_redis(name, keep_data=True)
        for p in self.controllers.values():
            if not p.alive():
                p.spawn()

    def converged(self) -> str | None:
        """None when exactly one node is master, every other one a replica of it, and every
        controller (proxy / sentinel) names it; else what is still wrong."""
        roles = self.roles()
        down = [n for n, r in roles.items() if r is None]
        if down:
            return f"not answering: {down}"
        masters = [n for n, r in roles.items() if r["role"] == "master"]
        if len(masters) != 1:
            return f"masters: {masters}"
        m = self.redis[masters[0]]
        bad = [n for n, r in roles.items() if n != masters[0] and int(r.get("master_port", 0)) != m.port]
        if bad:
            return f"not replicas of {masters[0]}: {bad}"
        return self.controllers_agree(m.addr)

    def controllers_agree(self, master_addr: str) -> str | None:
        raise NotImplementedError

    def operator_asked(self) -> str | None:
        """The controller that holds writes for the operator, if one does."""
        return None

    def operator_step(self, asking: str) -> str:
        """Do what `asking` asks of the operator; what was run and its outcome."""
        raise NotImplementedError

    def wait_converged(self, timeout: float) -> float:
        """Seconds until `converged()`; raises HarnessError with the last complaint after `timeout`."""
        t0 = time.monotonic()
        last: list[str | None] = [None]

        def ok() -> bool:
            last[0] = self.converged()
            return last[0] is None
        wait_until(ok, timeout, interval=0.1, message=lambda: f"convergence ({last[0]})")
        return time.monotonic() - t0

    def wait_synced(self, timeout: float) -> None:
        """Every replica's link is up and caught up with the master (before reading data back)."""
        master = self.redis[self.master_by_roles()]
        for s in self.redis.values():
            if s is not master:
                wait_replica_of(s, master, timeout=timeout)

    def master_by_roles(self) -> str:
        masters = [n for n, r in self.roles().items() if r and r["role"] == "master"]
        if len(masters) != 1:
            raise HarnessError(f"expected one master, got {masters}")
        return masters[0]

    def client_factories(self, timeout: float) -> list[Callable[[], Any]]:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def logs(self, lines: int = 80) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(lines)}"
                         for p in [*self.controllers.values(), *self.redis.values()])


class ChaosProxyCluster(ChaosCluster):
    """3 redis-server + 3 proxies; each proxy's Raft data dir on its own small tmpfs."""

    kind = "proxy"

    def __init__(self, workdir: Path, net: ChaosNet, *, ack: str = "replica", persistence: bool = False,
                 options: dict | None = None, disk_mb: int = 8) -> None:
        workdir = Path(workdir)
        self.disks = {name: SmallFs(workdir / "disks", name, disk_mb) for name in ("proxy-1", "proxy-2", "proxy-3")}
        node_options = {name: {"data_dir": str(fs.path / "raft")} for name, fs in self.disks.items()}
        self.pc = ProxyCluster(workdir, options={**(options or {}), "ack": ack}, node_options=node_options)
        super().__init__(workdir, net, self.pc.rs.servers, persistence)
        self.controllers = dict(self.pc.proxies)
        for name, p in self.controllers.items():
            put_in_cgroup(p, net, name)

    def start(self, timeout: float = 90.0) -> "ChaosProxyCluster":
        self.pc.start(timeout)
        return self

    def rejoin(self, name: str) -> None:
        """What an operator does for a proxy that lost its data dir: start it with `--join`
        (through another proxy); without it, the proxy refuses to start."""
        p = self.pc.proxies[name]
        p.options["join"] = next(f"http://127.0.0.1:{q.admin_port}" for n, q in self.pc.proxies.items()
                                 if n != name)
        if not p.alive():
            p.spawn()

    def controller_ports(self, name: str, for_clients: bool) -> tuple[int, ...]:
        p = self.pc.proxies[name]
        return (p.port,) if for_clients else (p.port, p.admin_port)

    def current_master(self) -> str | None:
        """The master in the newest topology any proxy shows (None if none answers): a proxy
        left behind at an old epoch must not pick the fault's victim."""
        best: tuple[int, str] | None = None
        for st in self.pc.statuses(self.pc.names, timeout=0.5).values():
            if st and st["topology"]["master"] and (best is None or st["topology"]["epoch"] > best[0]):
                best = (st["topology"]["epoch"], st["topology"]["master"])
        if best is None:
            return None
        try:
            return self.redis_name(best[1])
        except KeyError:
            return None

    def leader(self) -> str | None:
        for name in self.pc.names:
            st = self.pc.status(name, timeout=0.5)
            if st and st["raft"]["role"] == "leader":
                return name
        return None

    def controllers_agree(self, master_addr: str) -> str | None:
        sts = self.pc.statuses(self.pc.names, timeout=1.0)
        if any(s is None for s in sts.values()):
            return f"proxies not answering /status: {[n for n, s in sts.items() if s is None]}"
        epochs = {n: s["topology"]["epoch"] for n, s in sts.items()}
        masters = {n: s["topology"]["master"] for n, s in sts.items()}
        if len(set(epochs.values())) != 1 or set(masters.values()) != {master_addr}:
            return f"proxies disagree: epochs {epochs}, masters {masters} (Redis master {master_addr})"
        return None

    def epochs(self) -> dict[str, int | None]:
        return {n: (s["topology"]["epoch"] if s else None) for n, s in self.pc.statuses(self.pc.names).items()}

    def operator_asked(self) -> str | None:
        """A proxy holding writes for the operator (`no_safe_master`: every copy of the last
        writes was destroyed)."""
        sts = self.pc.statuses(self.pc.names, timeout=1.0)
        return next((n for n, st in sts.items()
                     if st and (st.get("failover") or {}).get("phase") == "no_safe_master"), None)

    def operator_step(self, asking: str) -> str:
        """Accept the loss as the proxies' message says: `failover --to` the node with the
        most keys (then the highest replication offset) of those that answer."""
        step = fail_over_to_fullest(self.redis.values(), self.pc.proxies[asking].admin_port)
        if step is None:
            return f"{asking} holds writes for the operator (no_safe_master), but no node answers"
        target, keys, offset, outcome = step
        return f"failover --to {target.addr} ({keys:,} keys, offset {offset:,}) through {asking}: {outcome}"

    def revive_all(self) -> None:
        for fs in self.disks.values():
            fs.unfill()
        super().revive_all()

    def client_factories(self, timeout: float) -> list[Callable[[], Any]]:
        return [(lambda port=p.port: redis_client(port, timeout=timeout, decode=True))
                for p in self.pc.proxies.values()]

    def cleanup(self) -> None:
        self.pc.cleanup()
        for fs in self.disks.values():
            fs.close()


class ChaosSentinelCluster(ChaosCluster):
    """The same 3 redis-server watched by 3 Redis Sentinels; clients use redis-py's Sentinel."""

    kind = "sentinel"

    def __init__(self, workdir: Path, net: ChaosNet, *, persistence: bool = False, down_after_ms: int = 1000) -> None:
        self.sc = SentinelCluster(Path(workdir), down_after_ms)
        super().__init__(workdir, net, self.sc.rs.servers, persistence)
        self.controllers = {f"sentinel-{i + 1}": s for i, s in enumerate(self.sc.sentinels)}
        for name, s in self.controllers.items():
            put_in_cgroup(s, net, name)

    def start(self, timeout: float = 60.0) -> "ChaosSentinelCluster":
        self.sc.start(timeout)
        return self

    def controller_ports(self, name: str, for_clients: bool) -> tuple[int, ...]:
        return (self.controllers[name].port,)  # type: ignore[attr-defined]

    def current_master(self) -> str | None:
        addr = self.sc.master_addr()
        try:
            return self.redis_name(addr) if addr else None
        except KeyError:
            return None

    def leader(self) -> str | None:
        return None

    def controllers_agree(self, master_addr: str) -> str | None:
        seen = {n: s.master_addr() for n, s in self.controllers.items()}  # type: ignore[attr-defined]
        if set(seen.values()) != {master_addr}:
            return f"sentinels disagree: {seen} (Redis master {master_addr})"
        return None

    def epochs(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for n, s in self.controllers.items():
            try:
                with redis_client(s.port, timeout=0.5, decode=True) as c:  # type: ignore[attr-defined]
                    m = c.execute_command("SENTINEL", "master", SENTINEL_MASTER_NAME)
                    m = dict(zip(m[::2], m[1::2])) if isinstance(m, list) else m
                    out[n] = int(m.get("config-epoch", 0))
            except Exception:  # noqa: BLE001
                out[n] = None
        return out

    def client_factories(self, timeout: float) -> list[Callable[[], Any]]:
        """redis-py Sentinel `master_for` clients, RESP2 and no retries, as the proxies' clients."""
        def make() -> Any:
            return self.sc.sentinel_client().master_for(
                SENTINEL_MASTER_NAME, socket_timeout=timeout, socket_connect_timeout=1.0,
                retry=Retry(NoBackoff(), 0), decode_responses=True, protocol=2)
        return [make for _ in range(3)]

    def cleanup(self) -> None:
        self.sc.cleanup()


__all__ = ["CLIENTS", "ChaosCluster", "ChaosProxyCluster", "ChaosSentinelCluster", "put_in_cgroup"]
