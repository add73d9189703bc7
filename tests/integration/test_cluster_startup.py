"""A proxy in cluster mode that does not know the shard map yet (starting, or wiped and
rejoining) holds keyed commands until the proxies agree on it, as single mode holds
writes before the first topology, instead of answering CLUSTERDOWN: the cluster is not
down, this proxy only has not learned it yet.

Real parts: a cluster-enabled Redis 7.0 of 2 shards and the proxies' own processes. Only
proxy-1 is started first, so no Raft quorum exists and no topology can be committed;
a client's SET and GET through it must be held (the proxy's `held_clients` gauge says
so), then answered once the other two proxies start and a topology is committed.
"""

from __future__ import annotations

import re
import threading

import pytest
import redis

from benchmarks.cluster_lib import ShardedProxyCluster

from .harness import redis_client, wait_until

pytestmark = pytest.mark.timeout(90)


def held_clients(proxy) -> int:
    code, body = proxy.http_get("/metrics")
    m = re.search(rb"^redis_raft_proxy_held_clients (\S+)$", body, re.M) if code == 200 else None
    return int(float(m.group(1))) if m else -1


def test_keyed_commands_before_the_shard_map_is_known_are_held_then_served(tmp_path):
    c = ShardedProxyCluster(tmp_path, shards=2, options={"hold_ms": 30000})
    try:
        c.cluster.start(60)
        first = c.proxy("proxy-1")
        first.spawn()
        first.wait_ready(30)
        results: dict[str, object] = {}

        def use() -> None:
            try:
                with redis_client(first.port, decode=True, timeout=40) as r:
                    results["set"] = r.set("startup:k", "v1")
                    results["get"] = r.get("startup:k")
            except redis.RedisError as exc:     # before the fix: CLUSTERDOWN ... not served by any shard
                results["error"] = exc

        t = threading.Thread(target=use, daemon=True)
        t.start()
        wait_until(lambda: held_clients(first) == 1 or "error" in results, 15,
                   message="the SET to be held by the proxy that knows no shard yet")
        assert "error" not in results, f"answered before the shard map was known: {results['error']!r}"
        assert "set" not in results, "the SET was answered while no topology could be committed"
        for name in ("proxy-2", "proxy-3"):
            c.proxy(name).spawn()
        t.join(45)
        assert not t.is_alive(), "the held SET was never answered"
        assert results.get("error") is None, f"the held command failed: {results.get('error')!r}"
        assert results["set"] is True and results["get"] == "v1", results
        owner = c.shard_of_key("startup:k")
        assert owner.master is not None and owner.master.client().get("startup:k") == b"v1"
    finally:
        c.cleanup()
