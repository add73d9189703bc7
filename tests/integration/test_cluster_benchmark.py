"""Smoke test of `python -m benchmarks.cluster --quick` (issue 14): a 3-shard cluster and
3 proxies in cluster mode; every part of the benchmark measures something.

It asserts that the figures exist and that replies were right (no wrong MGET reply,
the killed shard acknowledged writes again), not how fast anything was: timing on
a shared 2-core machine is the benchmark's to report, not a test's to assert.
"""

from __future__ import annotations

import json

import pytest

from .benchmark_smoke import RUN_LIMIT_S, run_quick

pytestmark = pytest.mark.timeout(RUN_LIMIT_S + 20)


def test_quick_cluster_benchmark_measures_every_part(tmp_path):
    done = run_quick("benchmarks.cluster", tmp_path)
    print(done.stdout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-6000:]}"
    payload = json.loads((tmp_path / "cluster-latest.json").read_text())

    rows = {(s["target"], s["test"], s["pipeline"]): s for s in payload["throughput"]["summary"]}
    for test in ("SET", "GET"):
        for pipeline in (1, 16):
            assert rows[("direct", test, pipeline)]["rps"] > 0
            assert rows[("proxy", test, pipeline)]["ratio"] > 0

    mget = payload["mget"]
    assert all(n > 0 for n in mget["keys_per_shard"]) and sum(mget["keys_per_shard"]) == 100
    for name, m in mget["medians"].items():
        assert m["ops_per_s"] > 0 and m["wrong"] == 0, (name, m)
    assert mget["medians"]["proxy MGET"]["ratio"] > 0
    assert mget["redis_benchmark_proxy"]["rps"] > 0

    (trial,) = payload["failover"]["trials"]
    assert not trial["problem"] and trial["new_master"] and trial["new_master"] != trial["killed_node"]
    killed = [s for s in trial["shards"] if s["killed"]]
    others = [s for s in trial["shards"] if not s["killed"]]
    assert len(killed) == 1 and len(others) == 2
    assert killed[0]["unavailable_s"] is not None and killed[0]["acked_after_fault"] > 0
    for s in others:
        assert s["longest_gap_s"] is not None and s["acked_after_fault"] > 0, s
    assert "Failover window per shard" in done.stdout and "load average at start" in done.stdout
