"""Raft-level helpers shared by `tests/integration/test_raft_cluster.py`,
`benchmarks/raft_election` and `benchmarks/soak`.

Built on the integration harness (`tests/integration/harness.py`: `ReplicaSet`,
`ProxyProcess`, `wait_until`, free ports); adds what Raft scenarios need:

* `RaftCluster`     3 redis-server (1 master + 2 replicas) + N proxies running
                    Raft, started like `redis-raft-proxy demo` does; proxies can be
                    SIGKILLed / SIGSTOPped / restarted on their own data dirs, and a
                    new proxy can be started with `--join`
* `leader_view`     the leader as every named proxy reports it (or None)
* `RoleSampler`     one thread per proxy polling /status every ~20 ms, recording
                    (time, node, role, term, leader, epoch, master); checks that
                    no term ever had two different self-declared leaders
* `ElectionWatch`   one thread per survivor polling /status every few ms after a
                    fault, to time "new leader reported by every survivor"
* `ops(...)`        runs the `redis-raft-proxy` operator CLI
* `parse_metrics`   the Prometheus text of /metrics as {name: value}

127.0.0.1 only; every wait is bounded (`wait_until`); nothing sleeps to
synchronise.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.integration.harness import (HOST, PROXY_BIN, HarnessError, ProxyProcess, ReplicaSet,  # noqa: E402
                                       free_ports, release_ports, wait_until)

RAFT_SECRET = "raft-cluster-test-secret"
NAMES = ("proxy-1", "proxy-2", "proxy-3")


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

def get_json(port: int, path: str = "/status", timeout: float = 0.5) -> dict | None:
    """GET a JSON document from an admin port; None when it does not answer in time."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as resp:
            return json.loads(resp.read())
    except Exception:  # noqa: BLE001 - dead, stopped, starting
        return None


def get_text(port: int, path: str, timeout: float = 1.0) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as resp:
            return resp.read().decode()
    except Exception:  # noqa: BLE001
        return None


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {"name{labels}": value} (labels kept verbatim)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


# ---------------------------------------------------------------------------
# the cluster
# ---------------------------------------------------------------------------

class RaftCluster:
    """3 redis-server (R0 master, R1/R2 replicas) + proxies proxy-1..proxy-N running Raft.

    Each proxy: `redis-raft-proxy run --node proxy-i --port P_i --admin-port A_i
    --redis-nodes R0,R1,R2 --master R0 --peers proxy-1=http://127.0.0.1:A_1,...
    --data-dir D_i` with REDIS_RAFT_PROXY_RAFT_SECRET set.  `options` are extra
    config keys given to every proxy as flags.
    """

    def __init__(self, workdir: Path, names: Sequence[str] = NAMES, *, options: dict | None = None,
                 read_policy: str = "replicas", secret: str = RAFT_SECRET) -> None:
        self.workdir = Path(workdir)
        self.secret = secret
        self.options = dict(options or {})
        self.read_policy = read_policy
        self.rs = ReplicaSet(self.workdir / "redis")
        self.names: list[str] = list(names)       # every proxy ever created here, in order
        ports = free_ports(2 * len(self.names))
        self.client_ports = dict(zip(self.names, ports[:len(self.names)]))
        self.admin_ports = dict(zip(self.names, ports[len(self.names):]))
        self.initial = list(self.names)
        self.proxies: dict[str, ProxyProcess] = {}
        for name in self.names:
            self.proxies[name] = self._make(name, {"peers": self.bootstrap_peers()})

    def data_dir(self, name: str) -> Path:
        return self.workdir / "raft" / name

    def _make(self, name: str, extra: dict) -> ProxyProcess:
        opts = {"data_dir": str(self.data_dir(name))}
        opts.update(extra)
        opts.update(self.options)
        return ProxyProcess(self.workdir / "proxies", self.rs.addrs, self.rs.master.addr, node=name,
                            port=self.client_ports[name], admin_port=self.admin_ports[name],
                            read_policy=self.read_policy, options=opts,
                            env={"REDIS_RAFT_PROXY_RAFT_SECRET": self.secret})

    def bootstrap_peers(self) -> str:
        """The --peers value the initial proxies were started with."""
        return ",".join(f"{n}=http://{HOST}:{self.admin_ports[n]}" for n in self.initial)

    def admin_url(self, name: str) -> str:
        return f"http://{HOST}:{self.admin_ports[name]}"

    # -- life cycle -------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "RaftCluster":
        self.rs.start()
        for p in self.proxies.values():
            p.spawn()
        for p in self.proxies.values():
            p.wait_ready(timeout)
        self.wait_converged(timeout=timeout)
        return self

    def cleanup(self) -> None:
        for p in self.proxies.values():
            p.cleanup()
        self.rs.cleanup()
        release_ports(list(self.client_ports.values()) + list(self.admin_ports.values()))

    def __enter__(self) -> "RaftCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def add_joiner(self, name: str, via: str, peers: str | None = None) -> ProxyProcess:
        """A new proxy started with `--join via` on its own fresh data dir (not started yet).
        `peers` is given as --peers when set (by default the joiner knows no peer)."""
        if name in self.proxies:
            raise HarnessError(f"{name} exists already")
        cport, aport = free_ports(2)
        self.names.append(name)
        self.client_ports[name] = cport
        self.admin_ports[name] = aport
        extra: dict = {"join": via}
        if peers:
            extra["peers"] = peers
        self.proxies[name] = self._make(name, extra)
        return self.proxies[name]

    def kill(self, *names: str) -> None:
        """SIGKILL the named proxies as close together as possible, then reap them."""
        for n in names:
            self.proxies[n].signal(9)
        for n in names:
            self.proxies[n].kill()

    def restart(self, *names: str, timeout: float = 60.0) -> None:
        """Start the named (dead) proxies again on their data dirs and wait until they answer."""
        for n in names:
            self.proxies[n].spawn()
        for n in names:
            self.proxies[n].wait_ready(timeout)

    def live(self) -> list[str]:
        return [n for n, p in self.proxies.items() if p.alive()]

    # -- views ------------------------------------------------------------------------
    def status(self, name: str, timeout: float = 0.5) -> dict | None:
        return get_json(self.admin_ports[name], "/status", timeout)

    def statuses(self, names: Iterable[str] | None = None, timeout: float = 0.5) -> dict[str, dict | None]:
        """Every named proxy's /status, fetched concurrently (a stopped proxy costs one timeout)."""
        names = list(names) if names is not None else self.live()
        if len(names) <= 1:
            return {n: self.status(n, timeout) for n in names}
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            futs = {n: pool.submit(self.status, n, timeout) for n in names}
            return {n: f.result() for n, f in futs.items()}

    def metrics(self, name: str) -> dict[str, float] | None:
        text = get_text(self.admin_ports[name], "/metrics")
        return None if text is None else parse_metrics(text)

    def leader_view(self, names: Iterable[str] | None = None) -> dict | None:
        return leader_view(self.statuses(names))

    def converged(self, names: Iterable[str] | None = None, lease: bool = True) -> dict | None:
        """`leader_view` plus: every named proxy on the same topology epoch and master,
        the same members, and (unless `lease` is false) holding a lease."""
        sts = self.statuses(names)
        view = leader_view(sts)
        if view is None:
            return None
        epochs = {s["topology"]["epoch"] for s in sts.values()}
        masters = {s["topology"]["master"] for s in sts.values()}
        members = {tuple(sorted(s["raft"]["members"])) for s in sts.values()}
        if len(epochs) != 1 or len(masters) != 1 or None in masters or len(members) != 1:
            return None
        if lease and not all(s["lease"]["held"] for s in sts.values()):
            return None
        view.update(epoch=epochs.pop(), master=masters.pop(), members=list(members.pop()))
        return view

    def wait_leader(self, names: Iterable[str] | None = None, timeout: float = 20.0, *,
                    not_node: str | None = None, min_term: int = 0) -> dict:
        names = list(names) if names is not None else None

        def ok():
            v = self.leader_view(names)
            if v and v["leader"] != not_node and v["term"] >= min_term:
                return v
            return None
        return wait_until(ok, timeout, message=lambda: f"a leader (not {not_node}, term >= {min_term}) agreed "
                                                       f"by {names or 'all live proxies'}: {self.brief(names)}")

    def wait_converged(self, names: Iterable[str] | None = None, timeout: float = 20.0, *,
                       lease: bool = True) -> dict:
        names = list(names) if names is not None else None
        what = "with a lease each" if lease else "(leases not required)"
        return wait_until(lambda: self.converged(names, lease), timeout,
                          message=lambda: f"proxies to agree on leader/term/epoch/master/members {what}: "
                                          f"{self.brief(names)}")

    def brief(self, names: Iterable[str] | None = None) -> str:
        return json.dumps({n: brief(s) for n, s in self.statuses(names).items()})

    def logs(self, lines: int = 60) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path}) ---\n{p.log_tail(lines)}" for p in self.proxies.values())

    # -- operator CLI -----------------------------------------------------------------
    def ops(self, *args: str, endpoint: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """`redis-raft-proxy ARGS --endpoint URL --secret S` (endpoint: proxy-1's admin URL)."""
        endpoint = endpoint or self.admin_url(self.initial[0])
        return run_ops(*args, endpoint=endpoint, secret=self.secret, timeout=timeout)


def run_ops(*args: str, endpoint: str, secret: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    argv = [PROXY_BIN, *args, "--endpoint", endpoint, "--secret", secret]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_RAFT_PROXY_")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def brief(s: dict | None) -> dict | None:
    if s is None:
        return None
    r = s["raft"]
    return {"role": r["role"], "term": r["term"], "leader": r["leader"], "commit": r["commit_index"],
            "members": r["members"], "epoch": s["topology"]["epoch"], "master": s["topology"]["master"],
            "lease": s["lease"]["held"]}


def leader_view(sts: dict[str, dict | None]) -> dict | None:
    """The leader when every status is present, all name the same leader at the same
    term, and that leader is one of them and itself reports role leader; else None."""
    if not sts or any(s is None for s in sts.values()):
        return None
    leaders = {s["raft"]["leader"] for s in sts.values()}
    terms = {s["raft"]["term"] for s in sts.values()}
    if len(leaders) != 1 or len(terms) != 1:
        return None
    leader = leaders.pop()
    if leader is None or leader not in sts or sts[leader]["raft"]["role"] != "leader":
        return None
    return {"leader": leader, "term": terms.pop(), "statuses": sts}


# ---------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    t: float
    node: str
    role: str
    term: int
    leader: str | None
    epoch: int
    master: str | None
    commit: int
    lease: bool


class _Poller(threading.Thread):
    """Polls one proxy's /status every `interval` s until stopped; keeps every answer."""

    def __init__(self, name: str, port: int, interval: float, timeout: float, sink: list, lock) -> None:
        super().__init__(name=f"poll-{name}", daemon=True)
        self.node, self.port, self.interval, self.timeout = name, port, interval, timeout
        self.sink, self.lock = sink, lock
        self.halt = threading.Event()
        self.requests = 0

    def run(self) -> None:
        while not self.halt.is_set():
            t0 = time.monotonic()
            s = get_json(self.port, "/status", self.timeout)
            self.requests += 1
            if s is not None:
                r = s["raft"]
                sample = Sample(time.monotonic(), self.node, r["role"], r["term"], r["leader"],
                                s["topology"]["epoch"], s["topology"]["master"], r["commit_index"],
                                bool(s["lease"]["held"]))
                with self.lock:
                    self.sink.append(sample)
            left = self.interval - (time.monotonic() - t0)
            if left > 0:
                self.halt.wait(left)


class RoleSampler:
    """One poller thread per proxy (a stopped proxy delays only its own samples)."""

    def __init__(self, ports: dict[str, int], interval: float = 0.02, timeout: float = 0.3) -> None:
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self.pollers = [_Poller(n, p, interval, timeout, self.samples, self._lock) for n, p in ports.items()]

    def __enter__(self) -> "RoleSampler":
        for p in self.pollers:
            p.start()
        return self

    def wait_first(self, timeout: float = 5.0) -> None:
        """Wait until every proxy has answered at least once."""
        want = {p.node for p in self.pollers}
        wait_until(lambda: want <= set(self.per_node()), timeout,
                   message=lambda: f"a first /status from each of {sorted(want)}: {self.per_node()}")

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for p in self.pollers:
            p.halt.set()
        for p in self.pollers:
            p.join(5)

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return sorted(self.samples, key=lambda s: s.t)

    def leaders_by_term(self) -> dict[int, set[str]]:
        """term -> the nodes that reported themselves leader in that term."""
        out: dict[int, set[str]] = {}
        for s in self.snapshot():
            if s.role == "leader":
                out.setdefault(s.term, set()).add(s.node)
        return out

    def split_brains(self) -> dict[int, set[str]]:
        """Terms in which more than one node claimed leadership (must be empty), with the
        named leaders of that term as reported by leaders and followers alike."""
        bad = {t: set(ns) for t, ns in self.leaders_by_term().items() if len(ns) > 1}
        named: dict[int, set[str]] = {}
        for s in self.snapshot():
            if s.leader is not None:
                named.setdefault(s.term, set()).add(s.leader)
        bad.update({t: ns for t, ns in named.items() if len(ns) > 1})
        return bad

    def per_node(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.snapshot():
            out[s.node] = out.get(s.node, 0) + 1
        return out


class ElectionWatch(RoleSampler):
    """Times a leader election after a fault, from the survivors' point of view."""

    def first_agreement(self, survivors: Sequence[str], old_leader: str, old_term: int,
                        after: float) -> tuple[float, str, int] | None:
        """The earliest time T (>= after) by which every survivor has reported the same new
        leader L != old_leader at a term > old_term, L itself reporting role leader in that
        term.  Returns (T, L, term) or None."""
        firsts: dict[tuple[str, int], dict[str, float]] = {}
        leader_ok: dict[tuple[str, int], float] = {}
        for s in self.snapshot():
            if s.t < after or s.term <= old_term or s.leader in (None, old_leader):
                continue
            key = (s.leader, s.term)
            firsts.setdefault(key, {}).setdefault(s.node, s.t)
            if s.node == s.leader and s.role == "leader":
                leader_ok.setdefault(key, s.t)
        best = None
        for key, seen in firsts.items():
            if key in leader_ok and all(n in seen for n in survivors):
                t = max(max(seen[n] for n in survivors), leader_ok[key])
                if best is None or t < best[0]:
                    best = (t, key[0], key[1])
        return best


# ---------------------------------------------------------------------------
# reporting (benchmarks)
# ---------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def host_info() -> dict:
    import platform
    try:
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                                       timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        redis_version = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "loadavg_start": list(os.getloadavg()), "redis_server": redis_version}


def save_results(results_dir: Path, name: str, doc: dict) -> tuple[Path, Path]:
    """Write `name`-<UTC timestamp>.json and `name`-latest.json; returns both paths."""
    from datetime import datetime, timezone
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    text = json.dumps(doc, indent=2, default=str) + "\n"
    dated = results_dir / f"{name}-{stamp}.json"
    latest = results_dir / f"{name}-latest.json"
    dated.write_text(text)
    latest.write_text(text)
    return dated, latest
