"""benchmarks.idle runs end to end (`--quick`): the demo set-up's processes sampled, each one's CPU
with the kernel's part of it, and a second set-up run by another virtualenv's interpreter
(`--compare-venv`, here this one's) in the same window."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_quick_window_samples_every_proxy_with_its_kernel_share_and_a_second_venvs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_RAFT_PROXY_")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.idle", "--quick", "--clients", "0", "--no-sentinel",
                           "--compare-venv", sys.prefix, "--results-dir", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "| process | kind | CPU s | of it kernel s |" in proc.stdout and "of it kernel" in proc.stdout
    result = json.loads((tmp_path / "idle-latest.json").read_text())
    proxies = [r for r in result["processes"] if r["kind"] == "proxy"]
    assert len(proxies) == 3
    for r in result["processes"]:
        assert 0 <= r["sys_s"] <= r["cpu_s"] and 0 <= r["sys_pct_of_core"] <= r["cpu_pct_of_core"], r
    assert result["mean_proxy_sys_pct"] is not None
    second = [r for r in result["processes"] if r["kind"] == "proxy-b"]
    assert len(second) == 3 and result["cpu_ratio_proxy_b_to_proxy"] is not None
    version = ".".join(map(str, sys.version_info[:3]))
    assert result["python"].startswith(version) and result["compare_python"].startswith(version), result
    assert f"mean proxy-b (Python {version}" in proc.stdout
