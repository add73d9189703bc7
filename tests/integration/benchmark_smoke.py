"""Running a benchmark's `--quick` mode from a test, bounded: the cluster benchmarks'
smoke tests share it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_LIMIT_S = 100.0


def run_quick(module: str, results: Path, limit_s: float = RUN_LIMIT_S) -> subprocess.CompletedProcess[str]:
    """`python -m <module> --quick`; on overrun SIGTERM it (it then stops the servers it started)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_RAFT_PROXY_")}
    proc = subprocess.Popen([sys.executable, "-m", module, "--quick", "--results-dir", str(results)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        pytest.fail(f"{module} --quick ran over {limit_s:.0f}s\n{out}\n{err[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
