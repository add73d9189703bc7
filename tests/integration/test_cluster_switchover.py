"""Cluster mode: `redis-raft-proxy failover --to NODE` switches over NODE's shard only,
with no write lost; the old master ends a replica of its shard, the other shard's
master is untouched; and a node that is in no shard is refused."""

from __future__ import annotations

import json
import subprocess
import time

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


def _ops(p: ProxyProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROXY_BIN, *args, "--endpoint", p.admin_url], capture_output=True, check=False,
                          text=True, timeout=60, env={"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET})


def test_pause_holds_every_shards_failover_and_history_names_the_shard(cluster):
    """Maintenance mode covers every shard (issue 17): a switchover in one shard still
    works, a dead master of another is not replaced until `resume`; `history` lists both
    changes with their shard."""
    c, p = cluster
    a, b = sorted(p.status()["shards"], key=lambda s: s["slots"][0][0])
    paused = _ops(p, "pause", "--reason", "maintenance")
    assert paused.returncode == 0, paused.stderr
    assert p.status()["topology"]["paused"]["reason"] == "maintenance"
    switched = _failover(p, a["replicas"][0])
    assert switched.returncode == 0, switched.stdout + switched.stderr

    victim = next(s for s in c.servers if s.addr == b["master"])
    victim.kill()

    def phase_b() -> dict:
        return next(s for s in p.status()["shards"] if s["id"] == b["id"])
    wait_until(lambda: phase_b()["phase"] == "paused", 10, message=lambda: f"shard {b['id']} paused: {phase_b()}")
    deadline = time.monotonic() + 1.0       # twice down_after_ms past the point it would have failed over
    while time.monotonic() < deadline:
        assert phase_b()["master"] == victim.addr, "a shard failed over while paused"
        time.sleep(0.05)

    resumed = _ops(p, "resume")
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr
    wait_until(lambda: phase_b()["master"] == b["replicas"][0], 15, message="shard b failed over after resume")
    assert p.status()["topology"]["paused"] is None

    def records():
        h = _ops(p, "history", "--json")
        assert h.returncode == 0, h.stderr
        recs = json.loads(h.stdout)
        return recs if len(recs) == 2 else None
    manual, down = wait_until(records, 5, message="two records in the history")
    assert (manual["shard"], manual["cause"], manual["new_master"]) == (a["id"], "manual", a["replicas"][0])
    assert (down["shard"], down["cause"], down["old_master"]) == (b["id"], "objectively_down", victim.addr)
    table = _ops(p, "history").stdout
    assert "SHARD" in table and a["id"][:8] in table and b["id"][:8] in table, table
