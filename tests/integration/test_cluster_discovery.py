"""Cluster mode: proxies started beside a cluster that is still forming (the Kubernetes Job
`create-cluster` and the proxies start together) commit no first topology from one node's
part of it. They wait, saying why in /status, until every seed sees the same cluster, then
commit all of it."""

from __future__ import annotations

import pytest

from proxy.process.cluster_create import create_cluster

from .cluster_nodes import ClusterNodes, even_ranges
from .harness import ProxyProcess, wait_until

pytestmark = pytest.mark.timeout(120)


def test_a_cluster_still_forming_is_waited_for_then_discovered_whole(tmp_path):
    c = ClusterNodes(tmp_path / "nodes", masters=3, replicas_per_master=0)
    p = None
    try:
        for s in c.servers:
            s.spawn()
        for s in c.servers:
            s.wait_ready(30)
        # each master serves its share of the slots but has met no other node yet: what the
        # proxies could see while the Job is between CLUSTER ADDSLOTSRANGE and CLUSTER MEET
        for (start, end), m in zip(even_ranges(3), c.masters):
            with m.client() as cl:
                cl.execute_command("CLUSTER", "ADDSLOTSRANGE", start, end)
        nodes = [s.addr for s in c.servers]
        p = ProxyProcess(tmp_path / "proxy", nodes, options={"cluster_nodes": ",".join(nodes)}).start()
        wait_until(lambda: "do not agree" in p.status().get("cluster_discovery_error", ""), 20,
                   message=lambda: f"the proxy to wait for the seeds to agree: {p.status()}")
        doc = p.status()
        assert doc.get("shards", []) == [] and "1 masters, " in doc["cluster_discovery_error"], doc
        create_cluster(nodes)
        wait_until(lambda: len(p.status().get("shards", [])) == 3, 30,
                   message=lambda: f"all three shards committed: {p.status()}")
        doc = p.status()
        slots = sorted(tuple(r) for s in doc["topology"]["shards"] for r in s["slots"])
        assert slots == sorted(even_ranges(3)) and "cluster_discovery_error" not in doc, doc
        assert sorted(s["master"] for s in doc["topology"]["shards"]) == sorted(nodes)
        assert "event=cluster_discovered shards=3" in p.log_text()
    finally:
        if p is not None:
            p.cleanup()
        c.cleanup()
