"""Cluster mode: a slot moved between shards behind the proxies' back (the way
`redis-cli --cluster reshard` moves one) is followed inside the proxy: an ASK while the
slot migrates, a MOVED once it has moved; the client never sees either. And a node set
up otherwise than the proxies need is reported in /status and the log."""

from __future__ import annotations

import pytest

from proxy.routing.keyslot import key_slot

from .cluster_nodes import ClusterNodes
from .harness import HOST, ProxyProcess, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = ClusterNodes(tmp_path_factory.mktemp("redirects"), masters=2, replicas_per_master=0).start()
    with c.masters[1].client() as m:
        m.config_set("cluster-replica-no-failover", "no")       # the misconfigured node
    nodes = [s.addr for s in c.servers]
    p = ProxyProcess(tmp_path_factory.mktemp("proxy"), nodes, options={"cluster_nodes": ",".join(nodes)})
    try:
        p.start()
        wait_until(lambda: len(p.status().get("shards", [])) == 2, 20, message="both shards committed")
        yield c, p
    finally:
        p.cleanup()
        c.cleanup()


def _myid(server) -> str:
    with server.client(decode=True) as c:
        return c.execute_command("CLUSTER", "MYID")


def test_status_shows_each_shard_in_the_single_set_form(cluster):
    c, p = cluster
    doc = p.status()
    assert doc["mode"] == "cluster"
    shards = doc["topology"]["shards"]
    assert sorted(s["master"] for s in shards) == sorted(m.addr for m in c.masters)
    assert sorted(tuple(r) for s in shards for r in s["slots"]) == [(0, 8191), (8192, 16383)]
    assert all(s["epoch"] == 1 and s["replicas"] == [] and s["master_up"] for s in shards)
    assert [s["id"] for s in shards] == [s["id"] for s in doc["shards"]]


def test_a_misconfigured_node_is_reported(cluster):
    c, p = cluster
    wait_until(lambda: p.status()["cluster_config_problems"], 20, message="a config problem in /status")
    problems = p.status()["cluster_config_problems"]
    assert len(problems) == 1 and c.masters[1].addr in problems[0] and "cluster-replica-no-failover" in problems[0]
    assert "event=cluster_config_problem" in p.log_text()


def test_ask_and_moved_are_followed_inside_the_proxy(cluster):
    c, p = cluster
    src, dst = c.masters
    tag = next(t for t in (f"t{i}" for i in range(1000)) if key_slot(t.encode()) < 100)   # served by src
    slot = key_slot(tag.encode())
    old, new = f"{{{tag}}}:old", f"{{{tag}}}:new"
    r = p.client()
    assert r.set(old, "before") is True
    with src.client() as s, dst.client() as d:
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _myid(src))
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _myid(dst))
        # migrating: a key src does not hold is asked of dst
        assert r.set(new, "during") is True
        assert d.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        assert r.get(new) == b"during" and r.get(old) == b"before"
        s.execute_command("MIGRATE", HOST, dst.port, "", 0, 5000,
                          "KEYS", old)
        assert r.get(old) == b"before"                  # ASK: src no longer has it
        for server in (dst, src):
            with server.client() as x:
                x.execute_command("CLUSTER", "SETSLOT", slot, "NODE", _myid(dst))
    # moved: every command for that slot is answered MOVED by src, and followed
    assert r.get(old) == b"before" and r.get(new) == b"during"
    assert r.mget(old, new) == [b"before", b"during"]
    assert r.delete(old, new) == 2
    metrics = p.http_get("/metrics")[1].decode()
    followed = [ln for ln in metrics.splitlines() if ln.startswith("redis_raft_proxy_cluster_redirects_followed")]
    assert followed and float(followed[0].split()[-1]) >= 1
    shard_slots = [ln for ln in metrics.splitlines() if ln.startswith("redis_raft_proxy_shard_slots{")]
    assert len(shard_slots) == 2 and sum(float(ln.split()[-1]) for ln in shard_slots) == 16384
    assert "redis_raft_proxy_migrations_active 0.0" in metrics


def _move(src, dst, slot: int, keys: list[str], *, finish: bool) -> None:
    """Migrate `slot` from src to dst with `keys` in it, behind the proxies' back; `finish`:
    assign it to dst too (MOVED from src), else leave it migrating (ASK for what moved)."""
    with src.client() as s, dst.client() as d:
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _myid(src))
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _myid(dst))
        s.execute_command("MIGRATE", HOST, dst.port, "", 0, 5000, "KEYS", *keys)
        if finish:
            for x in (d, s):
                x.execute_command("CLUSTER", "SETSLOT", slot, "NODE", _myid(dst))


def _followed(p) -> float:
    metrics = p.http_get("/metrics")[1].decode()
    return float(next(ln for ln in metrics.splitlines()
                      if ln.startswith("redis_raft_proxy_cluster_redirects_followed")).split()[-1])


def test_a_pipeline_over_both_shards_follows_each_redirect_in_its_place(cluster):
    """A client's pipeline goes to the shards as one batch per shard; a command a node
    answers ASK or MOVED for is sent on alone, and its reply still comes back in its
    place among the others'."""
    c, p = cluster
    src, dst = c.masters
    src_tags = [t for t in (f"pipe{i}" for i in range(5000)) if 100 <= key_slot(t.encode()) < 8192]
    ask_tag = src_tags[0]
    moved_tag = next(t for t in src_tags if key_slot(t.encode()) != key_slot(ask_tag.encode()))
    r = p.client()
    assert r.set(f"{{{ask_tag}}}:gone", "a0") is True and r.set(f"{{{moved_tag}}}:m", "m0") is True
    _move(src, dst, key_slot(moved_tag.encode()), [f"{{{moved_tag}}}:m"], finish=True)
    _move(src, dst, key_slot(ask_tag.encode()), [f"{{{ask_tag}}}:gone"], finish=False)
    before = _followed(p)
    try:
        keys = [f"plain:{i}" for i in range(30)]
        keys[7:7] = [f"{{{ask_tag}}}:gone", f"{{{moved_tag}}}:m"]
        keys[20:20] = [f"{{{ask_tag}}}:new", f"{{{moved_tag}}}:n"]
        assert len({key_slot(k.encode()) < 8192 for k in keys}) == 2     # both shards
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.get(k)
        assert pipe.execute() == [b"a0" if k.endswith(":gone") else b"m0" if k.endswith(":m") else None
                                  for k in keys]
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.set(k, "v-" + k)
        assert pipe.execute() == [True] * len(keys)
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.get(k)
        assert pipe.execute() == [("v-" + k).encode() for k in keys]
        with src.client() as s, dst.client() as d:     # the redirected ones are where the nodes sent them
            assert d.get(f"{{{moved_tag}}}:n") == f"v-{{{moved_tag}}}:n".encode()
            ask_slot = key_slot(ask_tag.encode())
            assert (s.execute_command("CLUSTER", "COUNTKEYSINSLOT", ask_slot),
                    d.execute_command("CLUSTER", "COUNTKEYSINSLOT", ask_slot)) == (0, 2)
        assert _followed(p) > before
    finally:
        slot = key_slot(ask_tag.encode())
        for server in (dst, src):
            with server.client() as x:
                x.execute_command("CLUSTER", "SETSLOT", slot, "NODE", _myid(dst))
