"""Smoke test of `python -m benchmarks.resharding --quick` (issue 15): a 3-shard cluster
and 3 proxies in cluster mode, a steady GET/SET load through all 3, and one migration of
1000 slots; every figure the benchmark reports exists.

It asserts that the figures exist and that nothing was lost (the masters hold every
preloaded key once, no client error), not how fast anything was: timing on a shared
2-core machine is the benchmark's to report, not a test's to assert.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_LIMIT_S = 100.0

pytestmark = pytest.mark.timeout(RUN_LIMIT_S + 20)


def run_quick(results: Path) -> subprocess.CompletedProcess[str]:
    """Run the benchmark; on overrun SIGTERM it (it then stops the servers it started)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_RAFT_PROXY_")}
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.resharding", "--quick", "--results-dir", str(results)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        pytest.fail(f"benchmarks.resharding --quick ran over {RUN_LIMIT_S:.0f}s\n{out}\n{err[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_quick_resharding_benchmark_reports_rate_and_latency_side_by_side(tmp_path):
    done = run_quick(tmp_path)
    print(done.stdout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-6000:]}"
    assert done.stdout.startswith("load average at start:"), done.stdout[:200]
    doc = json.loads((tmp_path / "resharding-latest.json").read_text())
    (r,) = doc["rounds"]
    m = r["migration"]
    assert m["state"] == "done" and m["done"] == m["total"] == 1000
    assert m["keys_moved"] > 0 and m["keys_per_s"] > 0 and m["slots_per_s"] > 0
    for phase in ("baseline", "during"):
        s = r[phase]
        assert s["ops"] > 0 and s["p50_ms"] > 0 and s["p99_ms"] >= s["p50_ms"] and s["errors"] == 0, (phase, s)
    assert doc["keys_on_masters"] == doc["keys_preloaded"] == 5000
    assert "migration / baseline" in done.stdout and "keys/s" in done.stdout
