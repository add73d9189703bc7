"""CPU per forwarded command of this tree's proxy against another tree's, loaded at the
same time (`--compare-tree`, e.g. a `git worktree` of an older commit with its C extension
copied in).

`benchmarks/throughput` runs its targets one after the other; this VM's speed drifts by
a fifth from one minute to the next, more than a change of a few Python calls per command
moves a proxy's CPU. Here both proxies stand in front of one throwaway redis-server (as
`benchmarks/throughput` runs the proxy: one node, reads to the master) and two
redis-benchmark processes (`-t set,get`, `--clients` each, `-P` as given) load them at
once, so both meet the same phase of the machine; each round reads each proxy's own CPU
(utime + stime in /proc) over its run. Prints the load average at the start, each round,
the medians, the median of the per-round ratios, and writes
benchmarks/results/sidebyside-<timestamp>.json. A tree compared with itself shows the noise.

    python -m benchmarks.sidebyside --compare-tree DIR [--pipeline 1] [--rounds 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.benchlib.venv import reexec_in_venv_if_needed  # noqa: E402

reexec_in_venv_if_needed("benchmarks.sidebyside")

from benchmarks.benchlib.proccpu import cpu_seconds  # noqa: E402
from benchmarks.benchlib.procs import HOST, ProcessRegistry, wait_ready  # noqa: E402
from benchmarks.benchlib.targets import start_redis  # noqa: E402
from benchmarks.benchlib.trees import run_and_save, spawn_tree_proxy  # noqa: E402

TESTS = ("set", "get")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sidebyside", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--compare-tree", type=Path, required=True, help="the other source tree")
    p.add_argument("--pipeline", type=int, default=1, help="redis-benchmark -P")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("-n", "--requests", type=int, default=None,
                   help="requests per test per proxy and round (default 20000, x 15 pipelined)")
    p.add_argument("--clients", type=int, default=25, help="redis-benchmark -c, per proxy")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one round may take")
    p.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    if not (args.compare_tree / "proxy" / "process" / "cli.py").is_file():
        p.error(f"--compare-tree {args.compare_tree}: not a redis-raft-proxy source tree (no proxy/process/cli.py)")
    if args.rounds < 1 or args.pipeline < 1 or args.clients < 1:
        p.error("--rounds, --pipeline and --clients must be at least 1")
    if args.requests is None:
        args.requests = 20_000 if args.pipeline == 1 else 300_000
    return args


def start_proxy(reg: ProcessRegistry, label: str, tree: Path, redis_port: int, workdir: Path,
                timeout_s: float) -> tuple[int, int]:
    """The proxy of `tree` in front of redis, answering: (its port, its pid)."""
    managed, port = spawn_tree_proxy(reg, label, tree, redis_port, workdir)
    wait_ready(managed, port, timeout_s)
    return port, managed.proc.pid


def one_round(proxies: dict[str, tuple[int, int]], args: argparse.Namespace) -> dict[str, float]:
    """Both redis-benchmarks at once; each proxy's CPU per command (µs) over the round."""
    before = {label: cpu_seconds(pid) for label, (_, pid) in proxies.items()}
    benches = [subprocess.Popen(["redis-benchmark", "-h", HOST, "-p", str(port), "-t", ",".join(TESTS),
                                 "-c", str(args.clients), "-P", str(args.pipeline), "-n", str(args.requests), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for port, _ in proxies.values()]
    for b in benches:
        _, err = b.communicate(timeout=args.timeout)
        if b.returncode != 0:
            raise RuntimeError(f"redis-benchmark exited {b.returncode}: {err.strip()[-500:]}")
    commands = args.requests * len(TESTS)
    return {label: round((cpu_seconds(pid) - before[label]) / commands * 1e6, 3)
            for label, (_, pid) in proxies.items()}


def run(args: argparse.Namespace, tmp: Path) -> dict:
    trees = {"this": REPO, "compare": args.compare_tree.resolve()}
    loadavg = os.getloadavg()
    print(f"[sidebyside] load average at start: {' '.join(f'{x:.2f}' for x in loadavg)}", flush=True)
    reg = ProcessRegistry()
    rounds: list[dict[str, float]] = []
    try:
        redis = start_redis(reg, tmp / "redis", 30.0)
        proxies = {label: start_proxy(reg, label, tree, redis.port, tmp / f"proxy-{label}", 30.0)
                   for label, tree in trees.items()}
        for i in range(args.rounds):
            rounds.append(one_round(proxies, args))
            print(f"[sidebyside] round {i + 1}/{args.rounds}: CPU µs per command " +
                  ", ".join(f"{label} {v:.2f}" for label, v in rounds[-1].items()), flush=True)
    finally:
        reg.close()
    ratios = [r["this"] / r["compare"] for r in rounds if r["compare"] > 0]
    return {"loadavg_start": list(loadavg), "loadavg_end": list(os.getloadavg()), "pipeline": args.pipeline,
            "clients_per_proxy": args.clients, "requests": args.requests, "tests": list(TESTS),
            "trees": {label: str(tree) for label, tree in trees.items()}, "rounds": rounds,
            "median_us_per_cmd": {label: statistics.median(r[label] for r in rounds) for label in trees},
            "median_ratio_this_to_compare": round(statistics.median(ratios), 3) if ratios else None}


def print_summary(result: dict) -> None:
    med = result["median_us_per_cmd"]
    print(f"\nCPU per command, -P {result['pipeline']}, {len(result['rounds'])} rounds, both proxies loaded at "
          f"once, load average at start {' '.join(f'{x:.2f}' for x in result['loadavg_start'])}: this tree "
          f"{med['this']:.2f} µs, {result['trees']['compare']} {med['compare']:.2f} µs; median of the "
          f"per-round ratios {result['median_ratio_this_to_compare']} x")


def main(argv: list[str] | None = None) -> int:
    return run_and_save("sidebyside", parse_args(argv), run, print_summary)


if __name__ == "__main__":
    sys.exit(main())
