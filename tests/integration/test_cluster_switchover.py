"""Cluster mode: `redis-raft-proxy failover --to NODE` switches over NODE's shard only,
with no write lost; the old master ends a replica of its shard, the other shard's
master is untouched; and a node that is in no shard is refused."""

from __future__ import annotations

import json
import subprocess

import pytest

from benchmarks.failover_lib import RAFT_SECRET

from .cluster_nodes import ClusterNodes
from .harness import PROXY_BIN, ProxyProcess, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path):
    c = ClusterNodes(tmp_path / "nodes", masters=2, replicas_per_master=1).start()
    nodes = [s.addr for s in c.servers]
    p = ProxyProcess(tmp_path / "proxy", nodes, options={"cluster_nodes": ",".join(nodes)},
                     env={"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET})
    try:
        p.start()
        wait_until(lambda: len(p.status()["shards"]) == 2 and all(s.get("history") for s in p.status()["shards"]),
                   20, message="both shards committed and their masters' history recorded")
        yield c, p
    finally:
        p.cleanup()
        c.cleanup()


def _failover(p: ProxyProcess, to: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROXY_BIN, "failover", "--to", to, "--endpoint", p.admin_url], capture_output=True,
                          check=False,
                          text=True, timeout=60, env={"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET})


def test_failover_to_switches_one_shard_over_without_loss(cluster):
    c, p = cluster
    before = {s["id"]: s for s in p.status()["shards"]}
    target_shard = sorted(before.values(), key=lambda s: s["slots"][0][0])[1]
    other = next(s for s in before.values() if s["id"] != target_shard["id"])
    to, old = target_shard["replicas"][0], target_shard["master"]
    r = p.client()
    r.mset({f"sw:{i}": i for i in range(500)})          # keys in both shards
    done = _failover(p, to)
    assert done.returncode == 0, done.stdout + done.stderr
    after = {s["id"]: s for s in p.status()["shards"]}
    assert after[target_shard["id"]]["master"] == to and after[target_shard["id"]]["replicas"] == [old]
    assert after[other["id"]]["master"] == other["master"] and after[other["id"]]["epoch"] == other["epoch"]
    old_server = next(s for s in c.servers if s.addr == old)
    wait_until(lambda: old_server.info("replication").get("role") == "slave", 10, message="old master a replica")
    assert r.mget([f"sw:{i}" for i in range(500)]) == [str(i).encode() for i in range(500)]
    assert r.set("sw:after", "x") is True


def test_failover_to_a_node_of_no_shard_is_refused(cluster):
    _, p = cluster
    done = _failover(p, "127.0.0.1:1")
    assert done.returncode != 0 and "not a node of any shard" in done.stdout + done.stderr
    assert json.dumps(p.status()["shards"]).count('"epoch": 1') == 2


def test_status_cli_shows_every_shard_and_its_health(cluster):
    c, p = cluster
    wait_until(lambda: all(r["healthy"] for t in p.status()["topology"]["shards"] for r in t["replicas"]), 20,
               message="every replica healthy")
    ok = subprocess.run([PROXY_BIN, "status", "--endpoint", p.admin_url], capture_output=True,
                        check=False, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("shard ") == 2 and all(s.addr in ok.stdout for s in c.servers)
    c.replicas[0].kill()
    wait_until(lambda: subprocess.run([PROXY_BIN, "status", "--endpoint", p.admin_url], capture_output=True,
                                      check=False,
                                      timeout=30).returncode == 1, 10, message="status exit 1 with a replica down")
    bad = subprocess.run([PROXY_BIN, "status", "--endpoint", p.admin_url], capture_output=True,
                         check=False, text=True, timeout=30)
    assert f"replica {c.replicas[0].addr} not healthy" in bad.stdout
