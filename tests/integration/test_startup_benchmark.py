"""benchmarks/startup runs end to end: one real start per tree, timed and measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_one_start_per_tree_is_timed_and_its_cpu_and_memory_read(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_RAFT_PROXY_")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.startup", "--starts", "1", "--compare-tree", str(REPO),
                           "--results-dir", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "load average at start" in proc.stdout and "this tree / " in proc.stdout
    (saved,) = tmp_path.glob("startup-*.json")
    result = json.loads(saved.read_text())
    assert sorted(result["trees"]) == ["compare", "this"]      # the same tree twice: two sets of starts
    assert [len(r["samples"]) for r in result["trees"].values()] == [1, 1]
    for s in (s for r in result["trees"].values() for s in r["samples"]):
        assert 0 < s["cpu_s"] < s["ready_s"] + 5 and s["ready_s"] < 60 and s["rss_mb"] > 10
