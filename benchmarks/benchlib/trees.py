"""Benchmarks that run this tree's proxy against another source tree's (`--compare-tree`):
starting a tree's proxy, and the run-print-save frame they share."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

from .procs import Managed, ProcessRegistry, free_ports
from .report import save_result
from .targets import proxy_argv

# a throwaway secret for the throwaway single-node Raft (the proxy requires one)
SECRET = "tree-benchmark-" + "0" * 32


def spawn_tree_proxy(reg: ProcessRegistry, label: str, tree: Path, redis_port: int,
                     workdir: Path) -> tuple[Managed, int]:
    """The proxy of source tree `tree` (on PYTHONPATH, its C extension built) as one node in
    front of redis, as `benchmarks/throughput` runs it: (the process, not yet waited for;
    its client port)."""
    port, admin_port = free_ports(2)
    argv = proxy_argv(sys.executable, port, admin_port, redis_port, ["--log-level", "warning"])
    argv[1:1] = ["-m", "proxy.process.cli"]     # (proxy_argv puts `run` right after the binary)
    env = {**os.environ, "PYTHONPATH": str(tree), "REDIS_RAFT_PROXY_RAFT_SECRET": SECRET}
    workdir.mkdir(parents=True, exist_ok=True)
    return reg.start(label, argv, workdir / "proxy.log", env=env, cwd=tree), port


def run_and_save(benchmark: str, args: argparse.Namespace, run: Callable[[argparse.Namespace, Path], dict],
                 show: Callable[[dict], None]) -> int:
    """`run(args, a temp dir)`, `show` its result, save it as JSON in `args.results_dir`."""
    with tempfile.TemporaryDirectory(prefix=f"{benchmark}-bench-") as tmp:
        result = run(args, Path(tmp))
    show(result)
    print(f"[{benchmark}] saved {save_result(benchmark, result, args.results_dir)}", flush=True)
    return 0
