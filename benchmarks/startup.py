"""How long a proxy takes to start, and what the start costs: the code of this tree
against another's (`--compare-tree`, e.g. a `git worktree` of an older commit with
its C extension copied in), side by side.

Starts one throwaway redis-server, then a single proxy in front of it (as
`benchmarks/throughput` runs it: one node, reads to the master) `--starts` times
for each tree, alternating the trees so that drift hits both alike. Each start
is timed from the spawn to the first answer to PING and SET (`answers()`: a
proxy may answer PING before it knows where writes go), polled every 10 ms; the
CPU is the proxy process's own (utime + stime in /proc) at that moment, its RSS
too. Prints the load average at the start, the medians per tree and their ratio,
and writes benchmarks/results/startup-<timestamp>.json.

    python -m benchmarks.startup [--starts 12] [--compare-tree DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.benchlib.venv import reexec_in_venv_if_needed  # noqa: E402

reexec_in_venv_if_needed("benchmarks.startup")

from benchmarks.benchlib.proccpu import cpu_seconds, rss_bytes  # noqa: E402
from benchmarks.benchlib.procs import ProcessRegistry, wait_ready  # noqa: E402
from benchmarks.benchlib.targets import start_redis  # noqa: E402
from benchmarks.benchlib.trees import run_and_save, spawn_tree_proxy  # noqa: E402

POLL_S = 0.01


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--starts", type=int, default=12, help="starts per tree")
    p.add_argument("--compare-tree", type=Path, default=None, help="a second source tree whose proxy "
                   "starts alternate with this one's")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds one start may take")
    p.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.compare_tree is not None and not (args.compare_tree / "proxy" / "process" / "cli.py").is_file():
        p.error(f"--compare-tree {args.compare_tree}: not a redis-raft-proxy source tree (no proxy/process/cli.py)")
    if args.starts < 1:
        p.error("--starts must be at least 1")
    return args


def one_start(reg: ProcessRegistry, tree: Path, redis_port: int, workdir: Path, timeout_s: float) -> dict:
    """Start the proxy of `tree`, time it to its first answer, read its CPU and RSS, stop it."""
    t0 = time.monotonic()
    managed, port = spawn_tree_proxy(reg, str(tree), tree, redis_port, workdir)
    try:
        wait_ready(managed, port, timeout_s, poll_s=POLL_S)
        ready_s = time.monotonic() - t0         # (from before the spawn, which wait_ready does not see)
        return {"ready_s": round(ready_s, 4), "cpu_s": round(cpu_seconds(managed.proc.pid), 3),
                "rss_mb": round(rss_bytes(managed.proc.pid) / 2**20, 1)}
    finally:
        reg.stop(managed)


def summarize(samples: list[dict]) -> dict:
    return {key: statistics.median(s[key] for s in samples) for key in ("ready_s", "cpu_s", "rss_mb")}


def run(args: argparse.Namespace, tmp: Path) -> dict:
    # (labelled, not keyed by path: a tree compared with itself shows the noise)
    trees = {"this": REPO, **({"compare": args.compare_tree.resolve()} if args.compare_tree else {})}
    loadavg = os.getloadavg()
    print(f"[startup] load average at start: {' '.join(f'{x:.2f}' for x in loadavg)}", flush=True)
    reg = ProcessRegistry()
    samples: dict[str, list[dict]] = {label: [] for label in trees}
    try:
        redis = start_redis(reg, tmp / "redis", args.timeout)
        for i in range(args.starts):
            for label, tree in trees.items():
                samples[label].append(one_start(reg, tree, redis.port, tmp / f"proxy-{label}-{i}", args.timeout))
    finally:
        reg.close()
    return {"loadavg_start": list(loadavg), "loadavg_end": list(os.getloadavg()), "starts": args.starts,
            "trees": {label: {"path": str(trees[label]), "median": summarize(s), "samples": s}
                      for label, s in samples.items()}}


def print_table(result: dict) -> None:
    print(f"\nProxy start to first PING and SET answered, {result['starts']} starts per tree, load average "
          f"at start {' '.join(f'{x:.2f}' for x in result['loadavg_start'])}\n")
    print("| tree | to ready, s | CPU, s | RSS, MB |\n|---|---|---|---|")
    trees = result["trees"]
    for r in trees.values():
        m = r["median"]
        print(f"| {r['path']} | {m['ready_s']:.3f} | {m['cpu_s']:.3f} | {m['rss_mb']:.1f} |")
    if "compare" in trees:
        a, b = trees["this"]["median"], trees["compare"]["median"]
        print(f"\nthis tree / {trees['compare']['path']}: to ready {a['ready_s'] / b['ready_s']:.2f} x, "
              f"CPU {a['cpu_s'] / b['cpu_s']:.2f} x (medians)")


def main(argv: list[str] | None = None) -> int:
    return run_and_save("startup", parse_args(argv), run, print_table)


if __name__ == "__main__":
    sys.exit(main())
