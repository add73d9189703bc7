"""Cluster mode with a least-privilege control user: the permissions README lists for
cluster mode ("Least-privilege Redis users") are enough for discovery, the node settings
check, a slot move (legacy, Redis 7.0), a switchover and a failover, and Redis logs no
denial for the control user."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from benchmarks.failover_lib import RAFT_SECRET

from .cluster_nodes import ClusterNodes
from .harness import ENV_PREFIX, PROXY_BIN, ProxyProcess, wait_until
from .test_redis_acl import CONTROL_ACL, CONTROL_PASSWORD

pytestmark = pytest.mark.timeout(150)
README = Path(__file__).parents[2] / "README.md"


def cluster_permissions() -> list[str]:
    """The control user's cluster-mode additions, as README lists them (Valkey's atomic ones aside)."""
    text = README.read_text()
    part = text[text.index("* **Cluster mode** adds, for the control user:"):]
    part = part[:part.index("(and, for Valkey")]
    return re.findall(r"\+[a-z|-]+|~\*", part)


@pytest.fixture
def cluster(tmp_path, request):
    """Cluster mode with the documented control user; an indirect parameter names
    permissions to leave out of it."""
    c = ClusterNodes(tmp_path / "nodes", masters=2, replicas_per_master=1).start()
    left_out = set(getattr(request, "param", ()))
    rules = CONTROL_ACL.replace("CONTROL_PASSWORD", CONTROL_PASSWORD).split()[2:] + \
        [rule for rule in cluster_permissions() if rule not in left_out]
    for s in c.servers:
        with s.client() as r:
            r.execute_command("ACL", "SETUSER", "rrp-control", "reset", *rules)
            r.execute_command("ACL", "LOG", "RESET")
    nodes = [s.addr for s in c.servers]
    p = ProxyProcess(tmp_path / "proxy", nodes,
                     options={"cluster_nodes": ",".join(nodes), "redis_control_username": "rrp-control",
                              "down_after_ms": 500},
                     env={"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET,
                          ENV_PREFIX + "REDIS_CONTROL_PASSWORD": CONTROL_PASSWORD})
    try:
        p.start()
        wait_until(lambda: len(p.status()["shards"]) == 2 and all(s.get("history") for s in p.status()["shards"]),
                   20, message="both shards committed, their masters' history recorded")
        yield c, p
    finally:
        p.cleanup()
        c.cleanup()


def _ops(p, *args) -> subprocess.CompletedProcess:
    return subprocess.run([PROXY_BIN, *args, "--endpoint", p.admin_url], capture_output=True,
                          check=False, text=True, timeout=90,
                          env={"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET})


def test_the_documented_control_user_runs_cluster_mode(cluster):
    c, p = cluster
    assert {"+cluster|setslot", "+migrate", "~*"} <= set(cluster_permissions())
    r = p.client()
    r.mset({f"acl:{i}": i for i in range(300)})
    shards = sorted(p.status()["shards"], key=lambda s: s["slots"][0][0])
    moved = _ops(p, "cluster", "move-slots", "--from", shards[0]["id"], "--to", shards[1]["id"], "--slots", "0-199")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    switched = _ops(p, "failover", "--to", shards[1]["replicas"][0])
    assert switched.returncode == 0, switched.stdout + switched.stderr
    victim = next(s for s in c.servers if s.addr == shards[0]["master"])
    victim.kill()
    wait_until(lambda: next(s for s in p.status()["shards"] if s["id"] == shards[0]["id"])["master"] != victim.addr,
               20, message="the shard of the killed master to fail over")
    assert p.status()["cluster_config_problems"] == []
    assert r.mget([f"acl:{i}" for i in range(300)]) == [str(i).encode() for i in range(300)]
    for s in c.servers:
        if s is victim:
            continue
        with s.client(decode=True) as x:
            denials = [e for e in x.acl_log() if e.get("username") == "rrp-control"]
        assert denials == [], f"{s.addr}: {denials}"


@pytest.mark.parametrize("cluster", [("+cluster|info",)], indirect=True)
def test_a_control_user_from_before_cluster_info_was_listed_still_moves_slots(cluster):
    """Without `+cluster|info` the driver cannot ask a target its cluster_state before a
    batch: it says so once per node and moves the slots unchecked, as before."""
    c, p = cluster
    r = p.client()
    r.mset({f"acl-old:{i}": i for i in range(200)})
    shards = sorted(p.status()["shards"], key=lambda s: s["slots"][0][0])
    moved = _ops(p, "cluster", "move-slots", "--from", shards[0]["id"], "--to", shards[1]["id"], "--slots", "0-99")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert p.log_text().count(f"event=cluster_state_unchecked node={shards[1]['master']}") == 1
    # (the moved keys reach the target's replicas asynchronously: a read there may lag)
    wait_until(lambda: r.mget([f"acl-old:{i}" for i in range(200)]) == [str(i).encode() for i in range(200)],
               10, message="every key, moved or not, through the proxy")
