"""Idle cost: CPU and memory of the 3-proxy demo set-up next to 3 Redis Sentinels, nothing to do.

Starts, on 127.0.0.1 only, the demo's set-up (3 redis-server: 1 master + 2
replicas; 3 redis-raft-proxy processes running Raft, default settings) and, in
the same run, 3 Redis Sentinels (`redis-server --sentinel`, quorum 2) watching
the same 3 nodes (the proxies serve their Sentinel-compatible ports too, as in
the demo). No client sends anything. After a settle time (start-up,
first election, sentinels discovering each other), it samples every process's
CPU from the kernel's own accounting (utime + stime of /proc/PID/stat) over
the window (60 s by default) and its RSS (VmRSS) at the end, and prints:

* the load average at start (figures from a loaded machine are not idle figures);
* per process: % of one core over the window, wake-ups a second (voluntary context
  switches of all its threads), RSS;
* mean proxy / mean sentinel ratios of CPU and RSS;
* the Redis nodes' CPU too: what the probes of each kind cost the nodes;
* with --floor, a bare Python prober (`benchmarks/idle_floor.py`: INFO replication
  to the 3 nodes every 100 ms, parsed, nothing else) in the same window (kind floor):
  what a Python process spends on this machine before doing any of a proxy's work;
* with --compare-option KEY=VALUE, a second set-up (3 more redis-server, 3 more
  proxies with those keys on top of --proxy-option) sampled in the same window:
  its rows (kinds proxy-b, redis-b) and the ratio of its mean proxy CPU to the first's;
  --compare-tree DIR does the same with the proxies of another source tree, and
  --compare-venv DIR with the proxies run by another virtualenv's interpreter (the
  same code: what the Python build alone costs, e.g. pyenv's against Debian's);
* with --pooled N, N client connections to every proxy held open through the window,
  each having had one PING answered (an application's connection pool, idle): what an
  idle proxy costs with its clients connected, as it mostly runs;
* then (--clients, default 5,000) the memory of idle clients: that many
  connections to one proxy, each having had one PING answered; the RSS the
  proxy grew by, per client.

Writes benchmarks/results/idle-<timestamp>.json and idle-latest.json.

Examples (from the repository root):
    python -m benchmarks.idle                      # 60 s window
    python -m benchmarks.idle --duration 20
    python -m benchmarks.idle --quick              # a 2 s window: shows it works
    python -m benchmarks.idle --proxy-option probe_interval_ms=200
    python -m benchmarks.idle --pooled 50          # 50 idle pooled clients on every proxy
    python -m benchmarks.idle --compare-option probe_interval_ms=200   # two set-ups, one window
    git worktree add /tmp/before HEAD~1 && (cd /tmp/before && python setup.py -q build_ext --inplace)
    python -m benchmarks.idle --compare-tree /tmp/before                # before / after a change
    /usr/bin/python3 -m venv /tmp/deb && /tmp/deb/bin/pip install -e '.[bench]'
    python -m benchmarks.idle --compare-venv /tmp/deb                   # this venv's Python against Debian's
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

if __name__ == "__main__":
    from benchmarks.benchlib.venv import reexec_in_venv_if_needed

    reexec_in_venv_if_needed("benchmarks.idle")

sys.dont_write_bytecode = True  # keep benchmarks/ free of __pycache__

import argparse
import socket
import statistics
import subprocess
import tempfile
import time

from benchmarks import failover_lib as fl
from benchmarks.benchlib.proccpu import CpuWindow, rss_bytes
from benchmarks.benchlib.report import save_result
from tests.integration.harness import free_ports

RESULTS_DIR = REPO / "benchmarks" / "results"
SENTINEL_DOWN_AFTER_MS = 1000


def log(message: str) -> None:
    print(f"[idle] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.idle", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of CPU sampling")
    p.add_argument("--settle", type=float, default=5.0,
                   help="seconds to wait after everything is up before sampling starts")
    p.add_argument("--quick", action="store_true", help="a 2 s window after a 1 s settle (a smoke test)")
    p.add_argument("--no-sentinel", action="store_true", help="skip the Sentinels")
    p.add_argument("--no-proxy-sentinel-port", action="store_true",
                   help="the proxies without their Sentinel-compatible port (the demo has it)")
    p.add_argument("--clients", type=int, default=5000,
                   help="idle client connections opened to one proxy after the window, for RSS per client (0: none)")
    p.add_argument("--pooled", type=int, default=0,
                   help="idle client connections held open to every proxy through the window (a connection "
                        "pool), each having had one PING answered")
    p.add_argument("--proxy-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra proxy config key for every proxy (repeat), e.g. probe_interval_ms=200")
    p.add_argument("--compare-tree", type=Path, metavar="DIR",
                   help="the second set-up's proxies run the code of this source tree (e.g. a git worktree of "
                        "an older commit, its C extension built): before and after a change in one window")
    p.add_argument("--compare-option", action="append", default=[], metavar="KEY=VALUE",
                   help="run a second set-up with this proxy config key too (repeat), sampled in the same window")
    p.add_argument("--compare-venv", type=Path, metavar="DIR",
                   help="the second set-up's proxies run DIR/bin/redis-raft-proxy: a virtualenv of another "
                        "Python build with this project installed (pip install -e .)")
    p.add_argument("--floor", action="store_true",
                   help="also sample a bare Python prober of the same nodes (benchmarks/idle_floor.py)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.settle, args.clients = 2.0, 1.0, min(args.clients, 200)
    if args.duration <= 0 or args.settle < 0 or args.pooled < 0:
        p.error("--duration must be positive, --settle and --pooled not negative")
    if args.compare_tree is not None and not (args.compare_tree / "proxy" / "process" / "cli.py").is_file():
        p.error(f"--compare-tree {args.compare_tree}: not a redis-raft-proxy source tree (no proxy/process/cli.py)")
    if args.compare_venv is not None and not (args.compare_venv / "bin" / "redis-raft-proxy").is_file():
        p.error(f"--compare-venv {args.compare_venv}: no bin/redis-raft-proxy there (pip install -e . into it)")
    for item in args.proxy_option + args.compare_option:
        if "=" not in item:
            p.error(f"--proxy-option and --compare-option expect KEY=VALUE, got {item!r}")
    return args


def summarize(window: CpuWindow, rss: dict[str, int], kinds: dict[str, str]) -> dict:
    """Per-process rows and the proxy/sentinel ratios (None where a kind is missing)."""
    rows = [{"name": n, "kind": kinds[n], "cpu_s": round(window.cpu_s[n], 3), "sys_s": round(window.sys_s[n], 3),
             "cpu_pct_of_core": round(window.percent_of_core(n), 3),
             "sys_pct_of_core": round(window.percent_of_core(n, kernel=True), 3), "rss_mb": round(rss[n] / 2**20, 2),
             "wakeups_per_s": round(window.wakeups_per_s(n), 1)}
            for n in window.pids]

    def mean(kind: str, key: str) -> float | None:
        vals = [r[key] for r in rows if r["kind"] == kind]
        return statistics.mean(vals) if vals else None

    out: dict = {"processes": rows}
    for kind in ("proxy", "sentinel", "redis", "proxy-b", "redis-b", "floor"):
        out[f"mean_{kind}_cpu_pct"] = mean(kind, "cpu_pct_of_core")
        out[f"mean_{kind}_sys_pct"] = mean(kind, "sys_pct_of_core")
        out[f"mean_{kind}_rss_mb"] = mean(kind, "rss_mb")
    pb = out["mean_proxy-b_cpu_pct"]
    out["cpu_ratio_proxy_b_to_proxy"] = round(pb / out["mean_proxy_cpu_pct"], 2) \
        if pb is not None and out["mean_proxy_cpu_pct"] else None
    px, st = out["mean_proxy_cpu_pct"], out["mean_sentinel_cpu_pct"]
    out["cpu_ratio_proxy_to_sentinel"] = round(px / st, 2) if px is not None and st else None
    pr, sr = out["mean_proxy_rss_mb"], out["mean_sentinel_rss_mb"]
    out["rss_ratio_proxy_to_sentinel"] = round(pr / sr, 2) if pr is not None and sr else None
    return out


def print_table(result: dict) -> None:
    steal = result.get("steal_pct")
    pooled = result.get("pooled_clients")
    print(f"\nIdle {result['duration_s']:.0f} s{f' ({pooled} pooled clients on each proxy)' if pooled else ''}, "
          f"{os.cpu_count()} CPUs, load average at start "
          f"{' '.join(f'{x:.2f}' for x in result['loadavg_start'])}, CPU steal "
          f"{'unknown' if steal is None else f'{steal:.1f} %'} of the window\n")
    print("| process | kind | CPU s | of it kernel s | % of a core | wake-ups/s | RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in result["processes"]:
        print(f"| {r['name']} | {r['kind']} | {r['cpu_s']:.2f} | {r['sys_s']:.2f} | {r['cpu_pct_of_core']:.2f} | "
              f"{r['wakeups_per_s']:.1f} | {r['rss_mb']:.1f} |")
    s = result

    def fmt(v: float | None, unit: str = "") -> str:
        return "–" if v is None else f"{v:.2f}{unit}"

    print(f"\nmean proxy {fmt(s['mean_proxy_cpu_pct'], ' %')} of a core (of it kernel "
          f"{fmt(s['mean_proxy_sys_pct'], ' %')}), {fmt(s['mean_proxy_rss_mb'], ' MB')}; "
          f"mean sentinel {fmt(s['mean_sentinel_cpu_pct'], ' %')}, {fmt(s['mean_sentinel_rss_mb'], ' MB')}; "
          f"ratio proxy/sentinel CPU {fmt(s['cpu_ratio_proxy_to_sentinel'])}, "
          f"RSS {fmt(s['rss_ratio_proxy_to_sentinel'])}")
    if s.get("mean_floor_cpu_pct") is not None:
        print(f"bare Python prober (floor) {fmt(s['mean_floor_cpu_pct'], ' %')} of a core")
    if s.get("mean_proxy-b_cpu_pct") is not None:
        what = [f"{k}={v}" for k, v in s["compare_options"].items()]
        what += [f"code of {s['compare_tree']}"] if s.get("compare_tree") else []
        what += [f"Python {s['compare_python']}"] if s.get("compare_venv") else []
        print(f"mean proxy-b ({', '.join(what)}) "
              f"{fmt(s['mean_proxy-b_cpu_pct'], ' %')} of a core: {fmt(s['cpu_ratio_proxy_b_to_proxy'])} x proxy")
    c = result.get("idle_clients")
    if c:
        print(f"\n{c['clients']} idle clients on one proxy ({c['proxy_connected']} connected by its /status): RSS "
              f"{c['rss_before_mb']:.1f} -> {c['rss_after_mb']:.1f} MB, "
              f"{c['bytes_per_client'] / 1024:.1f} kB per client")


def open_clients(proxy: fl.ProxyProcess, count: int, socks: list[socket.socket]) -> None:
    """Open `count` client connections to `proxy` into `socks`, each with one PING answered
    (so each has a session, served where the proxy serves clients)."""
    for _ in range(count):
        s = socket.create_connection((proxy.addr.split(":")[0], proxy.port), timeout=5)
        socks.append(s)
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
    for s in socks[-count:] if count else ():
        if not s.recv(64).startswith(b"+PONG"):
            raise RuntimeError("a client got no +PONG")


def idle_clients_rss(cluster: fl.ProxyCluster, name: str, count: int) -> dict:
    """Open `count` client connections to proxy `name`, PING on each (so each has a
    session), and report how much the proxy's RSS grew, per client."""
    proxy = cluster.proxies[name]
    before = rss_bytes(proxy.pid)
    socks: list[socket.socket] = []
    try:
        open_clients(proxy, count, socks)
        time.sleep(1.0)     # let the proxy settle (a measurement, not a synchronisation)
        after = rss_bytes(proxy.pid)
        connected = cluster.status(name)["clients"]["connected"] if cluster.status(name) else None
    finally:
        for s in socks:
            s.close()
    return {"clients": count, "proxy_connected": connected, "rss_before_mb": round(before / 2**20, 2),
            "rss_after_mb": round(after / 2**20, 2), "bytes_per_client": round((after - before) / count)}


def proxy_cluster(args: argparse.Namespace, where: Path, options: dict, tree: Path | None = None,
                  venv: Path | None = None) -> fl.ProxyCluster:
    """The demo's set-up: as there, every proxy also serves its Sentinel-compatible port.
    With `tree`, the proxies import the packages of that source tree instead of this one;
    with `venv`, that virtualenv's `redis-raft-proxy` (its interpreter) runs them."""
    sentinel_ports = dict(zip(fl.PROXY_NAMES, free_ports(len(fl.PROXY_NAMES))))
    env = {n: {"PYTHONPATH": str(tree.resolve())} for n in fl.PROXY_NAMES} if tree else None
    cluster = fl.ProxyCluster(where, options=options, node_env=env,
                              node_options={} if args.no_proxy_sentinel_port else
                              {n: {"sentinel_port": p} for n, p in sentinel_ports.items()})
    if venv is not None:
        for proxy in cluster.proxies.values():
            proxy.program = str(venv.resolve() / "bin" / "redis-raft-proxy")
    return cluster


def python_version(python: Path | str) -> str:
    """The interpreter's version and where it is (what `--compare-venv` compares)."""
    code = "import os, platform, sys; print(platform.python_version(), os.path.realpath(sys.executable))"
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def run(args: argparse.Namespace, tmp: Path) -> dict:
    options = dict(item.split("=", 1) for item in args.proxy_option)
    compare = dict(item.split("=", 1) for item in args.compare_option)
    loadavg = os.getloadavg()
    log(f"load average at start: {' '.join(f'{x:.2f}' for x in loadavg)}")
    cluster = proxy_cluster(args, tmp / "proxies", options)
    cluster_b = (proxy_cluster(args, tmp / "proxies-b", {**options, **compare}, args.compare_tree, args.compare_venv)
                 if compare or args.compare_tree or args.compare_venv else None)
    sentinels = floor = None
    pooled: list[socket.socket] = []
    try:
        cluster.start()
        pids = {name: p.pid for name, p in cluster.proxies.items()}
        kinds = dict.fromkeys(pids, "proxy")
        if cluster_b is not None:
            cluster_b.start()
            for name, p in cluster_b.proxies.items():
                pids[f"b-{name}"], kinds[f"b-{name}"] = p.pid, "proxy-b"
            for server in cluster_b.rs.servers:
                pids[f"b-redis-{server.port}"], kinds[f"b-redis-{server.port}"] = server.pid, "redis-b"
        if not args.no_sentinel:
            sentinels = fl.SentinelCluster(tmp / "sentinels", SENTINEL_DOWN_AFTER_MS, rs=cluster.rs).start()
            for s in sentinels.sentinels:
                pids[s.name] = s.pid
                kinds[s.name] = "sentinel"
        for server in cluster.rs.servers:
            name = f"redis-{server.port}"
            pids[name], kinds[name] = server.pid, "redis"
        if args.floor:
            floor = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "idle_floor.py"),
                                      *(f"127.0.0.1:{server.port}" for server in cluster.rs.servers)])
            pids["floor"], kinds["floor"] = floor.pid, "floor"
        for c in (cluster, cluster_b):
            for proxy in c.proxies.values() if c is not None else ():
                open_clients(proxy, args.pooled, pooled)
        log(f"up{f', {args.pooled} pooled clients on each proxy' if args.pooled else ''}; "
            f"settling {args.settle:.0f} s, then sampling {args.duration:.0f} s")
        time.sleep(args.settle)   # a measurement window, not a synchronisation
        window = CpuWindow(pids).start()
        time.sleep(args.duration)
        window.stop()
        rss = {name: rss_bytes(pid) for name, pid in pids.items()}
        dead = [n for c in (cluster, cluster_b) if c is not None for n, p in c.proxies.items() if not p.alive()]
        if floor is not None and floor.poll() is not None:
            dead.append("floor")
        if dead:
            raise RuntimeError(f"proxies exited during the run: {dead}\n{cluster.logs()}")
        result = {"duration_s": round(window.wall_s, 2), "steal_pct": window.steal_pct, "settle_s": args.settle,
                  "loadavg_start": list(loadavg),
                  "loadavg_end": list(os.getloadavg()), "proxy_options": options, "compare_options": compare,
                  "compare_tree": str(args.compare_tree) if args.compare_tree else None,
                  "python": python_version(sys.executable),
                  "compare_venv": str(args.compare_venv) if args.compare_venv else None,
                  "compare_python": python_version(args.compare_venv / "bin" / "python") if args.compare_venv else None,
                  "sentinel_down_after_ms": None if args.no_sentinel else SENTINEL_DOWN_AFTER_MS,
                  "proxy_sentinel_port": not args.no_proxy_sentinel_port, "pooled_clients": args.pooled}
        result.update(summarize(window, rss, kinds))
        if args.clients > 0:
            result["idle_clients"] = idle_clients_rss(cluster, "proxy-1", args.clients)
        return result
    finally:
        for sock in pooled:
            sock.close()
        if floor is not None:
            floor.kill()
            floor.wait()
        if sentinels is not None:
            sentinels.cleanup()
        if cluster_b is not None:
            cluster_b.cleanup()
        cluster.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp:
        result = run(args, Path(tmp))
    print_table(result)
    log(f"saved {save_result('idle', result, args.results_dir, latest=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
