"""Cluster mode (issue 14): the proxy in front of a Redis Cluster against a cluster-aware client.

Starts, on 127.0.0.1 only, a cluster-enabled Redis 7 cluster of 3 shards (3 masters
+ 3 replicas, slots split evenly) and 3 redis-raft-proxy processes in cluster mode
(`benchmarks/cluster_lib.py`: ShardedProxyCluster), then, in one run:

1. throughput: `redis-benchmark -t set,get -c 50 -r 100000 --threads 3` at -P 1
   and -P 16 against one proxy's client port, and `redis-benchmark --cluster` (a
   cluster-aware client: a thread per master, each client on one node, keys
   hash-tagged for it) against the nodes directly, alternating in rounds; median
   ops/s, ratio to direct, p50/p99 at -P 1, the proxy's own CPU per command (its
   /proc accounting; benchmarks/benchlib runs them and prints the table). With threads (and so with --cluster) redis-benchmark notices
   the end of a run on a 250 ms tick, so ops/s = requests / (a multiple of
   0.25 s), which understates the shorter runs most (the direct ones, so ratios
   lean towards the proxy): the full sizes make a direct run last 3-5 s (at most
   5-8 % understated); --quick's figures only show that the benchmark works;
2. MGET of 100 keys spread over the 3 shards (about a third each): one redis-py
   client in a loop through the proxy (one MGET, split and merged by the proxy)
   next to redis-py's RedisCluster `mget_nonatomic` against the nodes (the best a
   cluster client can do: one pipeline of per-slot MGETs per master), alternating
   in rounds, every reply checked; plus `redis-benchmark -c 50` sending the same
   MGET to the proxy (no direct counterpart: a cluster node answers -CROSSSLOT);
3. failover window per shard: a writer per shard (keys hash-tagged into that
   shard, a SET every ~2 ms, all through one proxy), then one shard's master is
   SIGKILLed; for every shard: the longest time between two acknowledged writes
   from the last one before the kill to the end of the window, the time to the
   first acknowledged write sent after the kill, failed writes, acknowledged
   writes lost (read back); for the killed shard also the time until the proxy's
   /status names a new master and the `failover_committed` log lines. The killed
   node is restarted (it rejoins as a replica) before the next trial, which kills
   the next shard's master; with --ack replica it is restarted as soon as the new
   master is named, since with one replica per shard no write can be acknowledged
   until a replica is back (the killed shard's window then includes the restart
   and the full resynchronisation).

The nodes run with `cluster-replica-no-failover yes` (the proxies fail over, not
the cluster bus), so the direct cluster client has no failover to compare with.

Prints Markdown tables with the load average at the start; writes
benchmarks/results/cluster-<timestamp>.json and cluster-latest.json.

Examples (from the repository root):
    python -m benchmarks.cluster --quick          # ~15 s, what tests/ smoke-tests
    python -m benchmarks.cluster                  # ~10 minutes on 2 cores
    python -m benchmarks.cluster --parts failover --trials 6
    python -m benchmarks.cluster --trials 6 --ack replica
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

    reexec_in_venv_if_needed("benchmarks.cluster")

sys.dont_write_bytecode = True  # keep benchmarks/ free of __pycache__

import argparse
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import FrameType

import redis
from redis.cluster import RedisCluster

from benchmarks.benchlib.report import Summary, markdown_table, summarize, write_json
from benchmarks.benchlib.runner import BenchSettings, Sample, parse_csv, run_rounds
from benchmarks.benchlib.targets import Target, tool_version
from benchmarks.cluster_lib import HOST, ShardedProxyCluster, ShardView, key_in_shard
from benchmarks.cluster_measure import (
    AckGaps,
    CallRun,
    ack_gaps,
    alternate,
    median_by_target,
    spread,
    time_calls,
)
from benchmarks.failover_lib import PROXY_NAMES, Writer, read_back, wait_replica_of
from tests.integration.harness import HarnessError, redis_client, wait_until

SHARDS = 3
# the failover tests' timing (benchmarks/failover's defaults too)
TIMING = {"down_after_ms": 500, "hold_ms": 5000, "lease_ms": 1000}
MGET_KEYS = 100
KEYSPACE = 100_000          # redis-benchmark -r: keys spread over every slot
PROXY_TARGET, DIRECT_TARGET = "proxy", "direct"      # benchlib's baseline is named "direct"
PARTS = ("throughput", "mget", "failover")
MGET_PROXY, MGET_DIRECT = "proxy MGET", "RedisCluster mget_nonatomic"


@dataclass
class Sizes:
    """How much work each part does (--quick makes everything small)."""

    requests: int            # redis-benchmark -n at -P 1
    pipelined: int           # redis-benchmark -n at -P > 1
    rounds: int
    mget_calls: int          # per MGET loop
    mget_bench: int          # redis-benchmark -n for MGET through the proxy
    trials: int              # failover trials (each kills the next shard's master)
    window_s: float          # every writer runs at least this long after the kill


FULL = Sizes(requests=400_000, pipelined=1_500_000, rounds=3, mget_calls=2_000, mget_bench=20_000,
             trials=3, window_s=6.0)
QUICK = Sizes(requests=2_000, pipelined=16_000, rounds=1, mget_calls=200, mget_bench=2_000,
              trials=1, window_s=3.0)


@dataclass
class FailoverTrial:
    """One SIGKILL of one shard's master, as every shard's writer saw it."""

    trial: int
    killed_shard: int
    killed_node: str
    new_master: str | None
    new_master_s: float | None          # kill -> the writing proxy's /status names another master
    shards: list[dict] = field(default_factory=list)     # one per shard: AckGaps + slots, lost, errors
    log_lines: list[str] = field(default_factory=list)   # failover_committed lines of the trial
    restarted_s: float | None = None    # kill -> the killed node restarted (ack = replica: at once)
    restored_s: float | None = None     # after the window: the wait until it is a synced replica again
    problem: str = ""


def log(message: str) -> None:
    """Progress output (stderr, so stdout carries only the tables)."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# 1. throughput
# ---------------------------------------------------------------------------

def throughput(cluster: ShardedProxyCluster, proxy_port: int, args: argparse.Namespace,
               sizes: Sizes) -> tuple[list[Sample], dict[str, str]]:
    """redis-benchmark against the proxy and, with --cluster, against the nodes; alternating."""
    spread_keys = ["-r", str(KEYSPACE)]     # without -r every request uses one key, so one shard
    # --cluster runs one client thread per master: --threads gives the proxy's client the same
    threads = ["--threads", str(args.client_threads)] if args.client_threads else []
    node = cluster.cluster.masters[0]
    targets = [Target(DIRECT_TARGET, DIRECT_TARGET, node.port, [], client_args=["--cluster", *spread_keys]),
               Target(PROXY_TARGET, PROXY_TARGET, proxy_port, [], client_args=[*threads, *spread_keys],
                      pid=cluster.proxy(args.proxy).pid or 0)]     # its CPU per command, from /proc
    requests = {p: sizes.requests if p == 1 else sizes.pipelined for p in args.pipelines}
    settings = BenchSettings(args.tests, args.clients, requests, args.run_timeout)

    def alive(t: Target) -> bool:
        procs = cluster.cluster.masters if t.name == DIRECT_TARGET else [cluster.proxy(args.proxy)]
        return all(p.alive() for p in procs)

    def progress(round_no: int, pipeline: int, t: Target, samples: list[Sample] | None, error: str) -> None:
        head = f"[round {round_no + 1}/{sizes.rounds}] -P {pipeline:<3} {t.name:<8}"
        log(f"{head} FAILED: {error}" if samples is None else
            head + " " + "  ".join(f"{s.test} {s.rps:>10,.0f} ops/s" for s in samples))
    return run_rounds(targets, settings, sizes.rounds, args.pipelines, alive, progress)


# ---------------------------------------------------------------------------
# 2. MGET over every shard
# ---------------------------------------------------------------------------

def mget(cluster: ShardedProxyCluster, proxy_port: int, args: argparse.Namespace,
         sizes: Sizes) -> dict:
    """MGET of 100 keys over the 3 shards through the proxy against RedisCluster.mget_nonatomic."""
    keys = [f"mget:{i}" for i in range(MGET_KEYS)]
    values = [f"value-{i}" for i in range(MGET_KEYS)]
    node = cluster.cluster.masters[0]
    direct = RedisCluster(host=HOST, port=node.port, decode_responses=True)
    through = redis_client(proxy_port, decode=True, timeout=10)
    try:
        direct.mset_nonatomic(dict(zip(keys, values)))
        counts = spread(keys, cluster.ordered_shards())
        calls = {MGET_PROXY: lambda: through.mget(keys), MGET_DIRECT: lambda: direct.mget_nonatomic(keys)}
        for call in calls.values():      # connections and the slot map in place before timing
            call()
        runs: list[CallRun] = []
        for round_no, target in alternate(list(calls), sizes.rounds):
            run = time_calls(target, round_no, calls[target], sizes.mget_calls, values)
            log(f"[round {round_no + 1}/{sizes.rounds}] MGET x{MGET_KEYS} {target:<28} "
                f"{run.ops_per_s:>9,.0f} ops/s  p50 {run.p50_ms:.2f} ms  wrong {run.wrong}")
            runs.append(run)
    finally:
        direct.close()
        through.close()
    medians = median_by_target(runs)
    if medians[MGET_DIRECT]["ops_per_s"]:
        medians[MGET_PROXY]["ratio"] = medians[MGET_PROXY]["ops_per_s"] / medians[MGET_DIRECT]["ops_per_s"]
    bench = mget_benchmark(proxy_port, keys, args, sizes)
    return {"keys": MGET_KEYS, "keys_per_shard": counts, "calls_per_run": sizes.mget_calls,
            "medians": medians, "runs": [r.to_dict() for r in runs], "redis_benchmark_proxy": bench}


def mget_benchmark(proxy_port: int, keys: list[str], args: argparse.Namespace, sizes: Sizes) -> dict:
    """redis-benchmark -c N sending the 100-key MGET to the proxy: its capacity, not a ratio."""
    argv = ["redis-benchmark", "-h", HOST, "-p", str(proxy_port), "-c", str(args.clients),
            "-n", str(sizes.mget_bench), "--csv", "MGET", *keys]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=args.run_timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"redis-benchmark timed out after {args.run_timeout:.0f}s"}
    rows = list(parse_csv(done.stdout).values())
    if done.returncode != 0 or len(rows) != 1:
        return {"error": f"exit {done.returncode}: " + (done.stderr or done.stdout).strip()[-300:]}
    row = rows[0]
    log(f"redis-benchmark -c {args.clients} MGET x{MGET_KEYS} through the proxy: {row['rps']:,.0f} ops/s")
    return {"clients": args.clients, "requests": sizes.mget_bench, **row}


# ---------------------------------------------------------------------------
# 3. failover window per shard
# ---------------------------------------------------------------------------

FAILOVER_LOG = re.compile(r'event=failover_committed\b[^"\n]*')


def committed_lines(cluster: ShardedProxyCluster) -> list[str]:
    """Every proxy's `event=failover_committed ...` log lines so far, prefixed by the proxy."""
    return [f"{name}: {m.group(0)}" for name, p in cluster.proxies.items()
            for m in FAILOVER_LOG.finditer(p.log_text())]


def shard_like(cluster: ShardedProxyCluster, proxy: str, ranges: list[tuple[int, int]]) -> ShardView | None:
    """The shard with these slot ranges as `proxy` committed it (its id may change on failover)."""
    try:
        return next((v for v in cluster.shards(proxy) if v.ranges == ranges), None)
    except HarnessError:
        return None


def failover_trial(cluster: ShardedProxyCluster, proxy: str, trial: int, args: argparse.Namespace,
                   sizes: Sizes) -> FailoverTrial:
    """Writers on every shard through `proxy`; SIGKILL one shard's master; measure every writer."""
    views = cluster.ordered_shards()
    killed_index = trial % len(views)
    port = cluster.proxy(proxy).port
    writers = [Writer(port, prefix="{" + key_in_shard(v, prefix=f"f{trial}s{i}t") + "}:w",
                      interval=args.write_interval, timeout=args.write_timeout)
               for i, v in enumerate(views)]
    lines_before = len(committed_lines(cluster))
    for w in writers:
        w.start()
    try:
        for w in writers:
            w.wait_acks(20, timeout=20)
        target = views[killed_index]
        t_kill = time.monotonic()
        killed = cluster.kill_master(target)
        out = FailoverTrial(trial, killed_index, killed.addr, None, None)
        log(f"[trial {trial + 1}] SIGKILL {killed.addr}, master of shard {killed_index} {target.ranges}")

        def promoted() -> ShardView | None:
            v = shard_like(cluster, proxy, target.ranges)
            return v if v and v.master and v.master.addr != killed.addr else None
        try:
            view = wait_until(promoted, args.failover_timeout, interval=0.01,
                              message=f"proxy {proxy} to name a new master for shard {killed_index}")
            out.new_master_s, out.new_master = time.monotonic() - t_kill, view.master.addr
            if args.ack == "replica":
                # one replica per shard: the new master has none until the old one is back
                killed.start()
                out.restarted_s = time.monotonic() - t_kill
            writers[killed_index].wait_acks(50, after=time.monotonic(), timeout=args.failover_timeout)
        except HarnessError as exc:
            out.problem = str(exc)
            log(f"[trial {trial + 1}] {exc}")
        left = t_kill + sizes.window_s - time.monotonic()
        if left > 0:
            time.sleep(left)      # the measured window: every writer keeps writing this long
        t_end = time.monotonic()
    finally:
        for w in writers:
            w.stop()
    out.log_lines = committed_lines(cluster)[lines_before:]
    out.shards = shard_reports(cluster, proxy, views, writers, t_kill, t_end, killed_index)
    return out


def shard_reports(cluster: ShardedProxyCluster, proxy: str, views: list[ShardView], writers: list[Writer],
                  t_kill: float, t_end: float, killed_index: int) -> list[dict]:
    """Per shard: the gaps around the kill, the failed writes by error, the acknowledged writes lost."""
    reports = []
    with redis_client(cluster.proxy(proxy).port, decode=True, timeout=10) as client:
        for i, (v, w) in enumerate(zip(views, writers)):
            gaps: AckGaps = ack_gaps(w.snapshot(), t_kill, t_end)
            errors: dict[str, int] = {}
            samples: list[str] = []         # the first few error texts, in full
            for r in w.errors():
                if r.sent >= t_kill:
                    text = (r.error or "").split(" ")[0] if r.kind == "reply" else r.kind
                    errors[text] = errors.get(text, 0) + 1
                    if len(samples) < 3:
                        samples.append(f"+{r.sent - t_kill:.3f}s {r.kind}: {r.error}")
            try:
                lost: int | str = len(read_back(client, w.acked()))
            except redis.RedisError as exc:
                lost = f"not read back: {exc}"
            reports.append({"shard": i, "slots": v.ranges, "killed": i == killed_index,
                            "acked_total": len(w.acked()), "errors_after_kill": errors, "error_samples": samples,
                            "lost": lost,
                            **asdict(gaps)})
    return reports


def restore(cluster: ShardedProxyCluster, trial: FailoverTrial, timeout: float) -> None:
    """Restart the killed node; wait until it is an in-sync replica of its shard's new master
    and every proxy shows every shard with a master again."""
    t0 = time.monotonic()
    node = cluster.node(trial.killed_node)
    if not node.alive():
        node.start()
    if trial.new_master:
        wait_replica_of(node, cluster.node(trial.new_master), timeout=timeout)
    cluster.wait_ready(timeout=timeout)
    trial.restored_s = time.monotonic() - t0


def failovers(cluster: ShardedProxyCluster, args: argparse.Namespace, sizes: Sizes) -> list[FailoverTrial]:
    trials = []
    for n in range(sizes.trials):
        trial = failover_trial(cluster, args.proxy, n, args, sizes)
        trials.append(trial)
        for s in trial.shards:
            log(f"[trial {n + 1}] shard {s['shard']}{' (killed)' if s['killed'] else ''}: longest gap "
                f"{fmt_s(s['longest_gap_s'])} s, first ack after kill {fmt_s(s['unavailable_s'])} s, "
                f"errors {s['errors_after_kill']} {s['error_samples']}, lost {s['lost']}")
        if trial.problem:
            break
        if n + 1 < sizes.trials:
            try:
                restore(cluster, trial, args.failover_timeout)
                log(f"[trial {n + 1}] {trial.killed_node} back as a synced replica in {trial.restored_s:.2f} s")
            except HarnessError as exc:
                trial.problem = f"restore failed: {exc}"
                log(f"[trial {n + 1}] {trial.problem}")
                break
    return trials


# ---------------------------------------------------------------------------
# the run and its report
# ---------------------------------------------------------------------------

def fmt_s(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def mget_table(result: dict) -> str:
    med = result["medians"]
    rows = ["| client | ops/s | vs direct | p50 ms | p99 ms | wrong replies |",
            "| --- | -: | -: | -: | -: | -: |"]
    for name in (MGET_DIRECT, MGET_PROXY):
        m = med[name]
        ratio = f"{m['ratio']:.2f}×" if "ratio" in m else "–"
        rows.append(f"| {name} (1 client, loop) | {m['ops_per_s']:,.0f} | {ratio} | {m['p50_ms']:.2f} | "
                    f"{m['p99_ms']:.2f} | {m['wrong']} |")
    bench = result["redis_benchmark_proxy"]
    if "rps" in bench:
        rows.append(f"| proxy MGET (redis-benchmark -c {bench['clients']}) | {bench['rps']:,.0f} | – | "
                    f"{bench.get('p50_ms', 0):.2f} | {bench.get('p99_ms', 0):.2f} | – |")
    else:
        rows.append(f"| proxy MGET (redis-benchmark) | failed: {bench.get('error', '?')} | | | | |")
    return "\n".join(rows)


def failover_table(trials: list[FailoverTrial]) -> str:
    rows = [("| trial | shard | slots | longest gap s | first ack after kill s | new master s | "
             "acked | failed after kill | lost |"),
            "| -: | --- | --- | -: | -: | -: | -: | --- | -: |"]
    for t in trials:
        for s in t.shards:
            slots = ",".join(f"{a}-{b}" for a, b in s["slots"])
            errors = ", ".join(f"{k} {v}" for k, v in s["errors_after_kill"].items()) or "0"
            rows.append(f"| {t.trial + 1} | {s['shard']}{' killed' if s['killed'] else ''} | {slots} | "
                        f"{fmt_s(s['longest_gap_s'])} | {fmt_s(s['unavailable_s'])} | "
                        f"{fmt_s(t.new_master_s) if s['killed'] else '–'} | {s['acked_total']} | {errors} | "
                        f"{s['lost']} |")
    return "\n".join(rows)


def git_head() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def run(args: argparse.Namespace, sizes: Sizes, workdir: Path) -> dict:
    """Start the cluster, run the three parts, return everything measured.

    A part that fails (the product answering otherwise than the contract says, a
    wait that times out) is recorded as {"error": ...} and the next part still runs."""
    loadavg = os.getloadavg()
    log(f"load average at start: {' '.join(f'{x:.2f}' for x in loadavg)}")
    t0 = time.monotonic()
    options = {**TIMING, "ack": args.ack}
    cluster = ShardedProxyCluster(workdir, shards=SHARDS, options=options, read_policy=args.read_policy)
    payload: dict = {"loadavg_start": list(loadavg)}
    try:
        cluster.start(timeout=args.start_timeout)
        payload["startup_s"] = round(time.monotonic() - t0, 2)
        log(f"cluster of {SHARDS} shards and {len(cluster.proxies)} proxies ready in {payload['startup_s']} s")
        proxy_port = cluster.proxy(args.proxy).port
        tests = [t.upper() for t in args.tests]

        def throughput_part() -> dict:
            samples, errors = throughput(cluster, proxy_port, args, sizes)
            summaries = summarize(samples, [DIRECT_TARGET, PROXY_TARGET], args.pipelines, tests)
            return {"summary": [s.to_dict() for s in summaries], "samples": [s.to_dict() for s in samples],
                    "errors": errors}
        parts = {"throughput": throughput_part, "mget": lambda: mget(cluster, proxy_port, args, sizes),
                 "failover": lambda: {"trials": [asdict(t) for t in failovers(cluster, args, sizes)]}}
        for name, part in parts.items():
            if name not in args.parts:
                continue
            try:
                payload[name] = part()
            except (HarnessError, redis.RedisError, OSError, subprocess.SubprocessError) as exc:
                payload[name] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"{name} FAILED: {payload[name]['error']}\n{cluster.logs(30)}")
    except HarnessError as exc:
        payload["error"] = f"the cluster did not start: {exc}"
        log(f"{payload['error']}\n{cluster.logs(40)}")
    finally:
        cluster.cleanup()
    payload["elapsed_s"] = round(time.monotonic() - t0, 1)
    return payload


def problems(payload: dict, sizes: Sizes) -> list[str]:
    """What went wrong in the run, one line each (empty when every part measured)."""
    out = [f"{k}: {v['error']}" for k, v in payload.items() if isinstance(v, dict) and "error" in v]
    if "error" in payload:
        out.append(payload["error"])
    out += [f"throughput {k}: {v}" for k, v in payload.get("throughput", {}).get("errors", {}).items()]
    bench = payload.get("mget", {}).get("redis_benchmark_proxy", {})
    if "error" in bench:
        out.append(f"redis-benchmark MGET: {bench['error']}")
    trials = payload.get("failover", {}).get("trials")
    if trials is not None:
        out += [f"failover trial {t['trial'] + 1}: {t['problem']}" for t in trials if t["problem"]]
        if len(trials) < sizes.trials:
            out.append(f"failover: {len(trials)} of {sizes.trials} trials ran")
    return out


def report(args: argparse.Namespace, sizes: Sizes, payload: dict) -> None:
    stamp = datetime.now(UTC)
    payload.update(schema=1, timestamp=stamp.isoformat(timespec="seconds"), argv=sys.argv[1:],
                   settings={**asdict(sizes), "quick": args.quick, "clients": args.clients,
                             "pipelines": args.pipelines, "tests": args.tests, "ack": args.ack,
                             "read_policy": args.read_policy, "proxy": args.proxy, **TIMING},
                   environment={"platform": platform.platform(), "cpus": os.cpu_count(),
                                "python": platform.python_version(), "git_head": git_head(),
                                "redis-server": tool_version(["redis-server", "--version"]),
                                "redis-py": redis.__version__})
    dated = args.results_dir / f"cluster-{stamp:%Y%m%d-%H%M%S}.json"
    write_json(payload, dated, args.results_dir / "cluster-latest.json")
    log(f"wrote {dated} and {args.results_dir / 'cluster-latest.json'}")
    load = " ".join(f"{x:.2f}" for x in payload["loadavg_start"])
    print(f"\nCluster mode, {SHARDS} shards (master + replica each), {len(PROXY_NAMES)} proxies, "
          f"{os.cpu_count()} CPUs, load average at start {load}, {stamp:%Y-%m-%d %H:%M} UTC\n")
    if "throughput" in payload and "summary" in payload["throughput"]:
        summaries = [Summary(**s) for s in payload["throughput"]["summary"]]
        print(f"Throughput through one proxy (`{PROXY_TARGET}`) vs redis-benchmark --cluster against the "
              f"nodes (`{DIRECT_TARGET}`): -c {args.clients}, -r {KEYSPACE}, median of {sizes.rounds} rounds:\n")
        print(markdown_table(summaries))
    if "medians" in payload.get("mget", {}):
        m = payload["mget"]
        print(f"\nMGET of {m['keys']} keys (per shard: {m['keys_per_shard']}), {m['calls_per_run']} calls per "
              f"run, median of {sizes.rounds} rounds:\n")
        print(mget_table(m))
    if "trials" in payload.get("failover", {}):
        trials = [FailoverTrial(**t) for t in payload["failover"]["trials"]]
        print(f"\nFailover window per shard (ack={args.ack}, a SET every {args.write_interval * 1000:.0f} ms per "
              f"shard through {args.proxy}, window {sizes.window_s:.0f} s from the kill):\n")
        print(failover_table(trials))
        for t in trials:
            restart = f", restarted at +{t.restarted_s:.3f} s" if t.restarted_s is not None else ""
            back = ", back as a synced replica before the next trial" if t.restored_s is not None else ""
            print(f"  trial {t.trial + 1}: killed {t.killed_node} (shard {t.killed_shard}), new master "
                  f"{t.new_master} at +{fmt_s(t.new_master_s)} s{restart}{back}")
            for line in t.log_lines:
                print(f"  trial {t.trial + 1}: {line}")
    for line in problems(payload, sizes):
        print(f"PROBLEM: {line}")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Sizes]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__.split("\n\n")[0],
                                epilog="Full description: see the top of benchmarks/cluster.py.")
    p.add_argument("--quick", action="store_true", help="small sizes (~15 s), for the smoke test")
    p.add_argument("-n", "--requests", type=int, help="redis-benchmark -n at -P 1")
    p.add_argument("--pipelined-requests", type=int, help="redis-benchmark -n at -P > 1")
    p.add_argument("--rounds", type=int, help="rounds over the targets (throughput, MGET)")
    p.add_argument("--mget-calls", type=int, help="MGET calls per loop")
    p.add_argument("--trials", type=int, help="failover trials (trial i kills shard i mod 3's master)")
    p.add_argument("--window", type=float, help="seconds every writer runs after the kill")
    p.add_argument("--parts", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   default=list(PARTS), help="comma-separated parts to run: " + ",".join(PARTS))
    p.add_argument("-c", "--clients", type=int, default=50, help="redis-benchmark -c")
    p.add_argument("--client-threads", type=int, default=SHARDS,
                   help="redis-benchmark --threads against the proxy (0: single-threaded); --cluster "
                        "runs one thread per master, so the default gives both targets the same client")
    p.add_argument("--pipelines", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16],
                   help="comma-separated redis-benchmark -P values")
    p.add_argument("--tests", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   default=["set", "get"], help="comma-separated redis-benchmark -t tests")
    p.add_argument("--ack", choices=("async", "replica"), default="async", help="the proxies' ack mode")
    p.add_argument("--read-policy", default="master",
                   help="the proxies' read_policy (master: GETs go where redis-benchmark --cluster sends them)")
    p.add_argument("--proxy", choices=PROXY_NAMES, default=PROXY_NAMES[0], help="the proxy measured")
    p.add_argument("--write-interval", type=float, default=0.002, help="seconds between a writer's SETs")
    p.add_argument("--write-timeout", type=float, default=10.0, help="a writer's socket timeout")
    p.add_argument("--failover-timeout", type=float, default=30.0,
                   help="seconds to wait for a new master, and for the killed node to rejoin")
    p.add_argument("--start-timeout", type=float, default=60.0)
    p.add_argument("--run-timeout", type=float, default=300.0,
                   help="seconds one redis-benchmark run (SET and GET) may take")
    p.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir with the logs")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    sizes = Sizes(requests=args.requests or base.requests,
                  pipelined=args.pipelined_requests or (args.requests * 8 if args.requests else base.pipelined),
                  rounds=args.rounds or base.rounds, mget_calls=args.mget_calls or base.mget_calls,
                  mget_bench=base.mget_bench, trials=base.trials if args.trials is None else args.trials,
                  window_s=args.window or base.window_s)
    if min(sizes.requests, sizes.pipelined, sizes.rounds, sizes.mget_calls, args.clients) < 1 or sizes.trials < 0:
        p.error("sizes and --clients must be >= 1 (--trials >= 0)")
    if set(args.parts) - set(PARTS):
        p.error(f"unknown --parts {sorted(set(args.parts) - set(PARTS))}; choose from {PARTS}")
    if not args.pipelines or min(args.pipelines) < 1:
        p.error("--pipelines must list numbers >= 1")
    return args, sizes


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every process started is killed."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """0 when every part measured something; 1 when a part failed (the report says which)."""
    args, sizes = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    workdir = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    try:
        payload = run(args, sizes, workdir)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if args.keep_tmp:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(args, sizes, payload)
    return 1 if problems(payload, sizes) else 0


if __name__ == "__main__":
    sys.exit(main())
