"""benchmarks/sidebyside runs end to end: two proxies loaded at once, each one's CPU per command read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_both_proxies_are_loaded_and_each_one_s_cpu_per_command_is_read(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_RAFT_PROXY_")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.sidebyside", "--compare-tree", str(REPO), "--rounds", "2",
                           "-n", "3000", "--clients", "5", "--results-dir", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "load average at start" in proc.stdout and "median of the per-round ratios" in proc.stdout
    (saved,) = tmp_path.glob("sidebyside-*.json")
    result = json.loads(saved.read_text())
    assert len(result["rounds"]) == 2
    for r in result["rounds"]:
        # 6,000 commands through each proxy: its CPU per command is a real reading, not 0
        assert sorted(r) == ["compare", "this"] and all(1 < v < 1000 for v in r.values()), r
    assert 0.2 < result["median_ratio_this_to_compare"] < 5
