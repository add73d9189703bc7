"""`redis-raft-proxy create-cluster` (proxy/process/cluster_create.py, what the
Kubernetes Job of k8s/overlays/cluster runs) on real password-protected
cluster-enabled redis-servers: it forms the cluster, a second run changes
nothing, and a replica that came back empty (a pod without its volume) is made
a replica of its shard again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from proxy.routing.cluster_nodes import parse_cluster_nodes

from .cluster_nodes import ClusterNodes
from .harness import PROXY_BIN, wait_until

pytestmark = pytest.mark.timeout(120)
PASSWORD = "s3cretpw0rd"


def create(nodes: ClusterNodes, password_file: Path) -> subprocess.CompletedProcess:
    argv = [PROXY_BIN, "create-cluster", "--masters", ",".join(s.addr for s in nodes.masters),
            "--replicas", ",".join(s.addr for s in nodes.replicas), "--password-file", str(password_file),
            "--timeout", "60"]
    proc = subprocess.run(argv, capture_output=True, check=False, text=True, timeout=90)
    assert proc.returncode == 0, f"create-cluster failed:\n{proc.stdout}{proc.stderr}"
    assert PASSWORD not in proc.stdout + proc.stderr, "the password is never printed"
    return proc


def myself(server) -> tuple[str, str | None, tuple]:
    with server.client(decode=True, password=PASSWORD, timeout=5) as c:
        me = next(e for e in parse_cluster_nodes(c.execute_command("CLUSTER", "NODES")) if e.myself)
    return me.node_id, me.master_id, me.slots


def test_create_cluster_forms_is_idempotent_and_takes_back_an_emptied_replica(tmp_path):
    nodes = ClusterNodes(tmp_path, masters=3, replicas_per_master=1)
    for s in nodes.servers:
        s.extra_args += ["--requirepass", PASSWORD, "--masterauth", PASSWORD]
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    try:
        for s in nodes.servers:
            s.spawn()
        for s in nodes.servers:
            s.wait_ready(15)
        first = create(nodes, password_file)
        assert first.stdout.count("ADDSLOTSRANGE") == 3 and first.stdout.count("REPLICATE") == 3, first.stdout
        formed = {s.port: myself(s) for s in nodes.servers}
        master_ids = [formed[m.port][0] for m in nodes.masters]
        assert [formed[r.port][1] for r in nodes.replicas] == master_ids, "replica i follows master i"
        assert all(formed[m.port][2] for m in nodes.masters)

        again = create(nodes, password_file)
        assert not any(w in again.stdout for w in ("ADDSLOTSRANGE", "MEET", "REPLICATE")), again.stdout
        assert {s.port: myself(s) for s in nodes.servers} == formed

        # replica 2 loses its data and cluster identity (nodes.conf), as a pod without its volume
        lost = nodes.replicas[1]
        lost.kill()
        (lost.workdir / f"nodes-{lost.port}.conf").unlink()
        lost.start(15)
        assert myself(lost)[1] is None, "it came back as an empty master of its own"
        create(nodes, password_file)
        new_id, master_id, slots = myself(lost)
        assert new_id != formed[lost.port][0] and master_id == master_ids[1] and slots == ()
        wait_until(lambda: _link_up(lost), 15, message="the re-made replica to sync")
    finally:
        nodes.cleanup()


def _link_up(server) -> bool:
    with server.client(decode=True, password=PASSWORD, timeout=5) as c:
        return c.info("replication").get("master_link_status") == "up"
