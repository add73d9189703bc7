"""proxy.process.demo_cluster: what `demo --shards N` starts (ports, node and proxy
command lines) and the options it refuses, without starting anything."""

from __future__ import annotations

import argparse
import shutil

import pytest

from proxy.process import demo_cluster
from proxy.process.cli import main
from proxy.process.cluster_create import CLUSTER_SERVER_ARGS


def args(**kw) -> argparse.Namespace:
    base = {"shards": 3, "redis_port": 7000, "proxy_port": 6380, "admin_port": 8000, "sentinel_port": 26379,
            "redis_server": shutil.which("redis-server") or "/usr/bin/redis-server", "tls": False, "dir": None}
    return argparse.Namespace(**{**base, **kw})


def test_node_and_bus_ports_follow_each_other():
    assert demo_cluster.node_ports(args()) == (list(range(7000, 7006)), list(range(7006, 7012)))
    assert demo_cluster.node_ports(args(shards=1, redis_port=100)) == ([100, 101], [102, 103])


@pytest.mark.parametrize("shards, port, problem", [(-1, 7000, "--shards must be 1 to 16"),
                                                   (17, 7000, "--shards must be 1 to 16"),
                                                   (3, 65530, "no room")])
def test_bad_options_are_refused(shards, port, problem, capsys, tmp_path):
    assert problem in demo_cluster.check_options(args(shards=shards, redis_port=port))
    assert main(["demo", "--shards", str(shards), "--redis-port", str(port), "--dir", str(tmp_path)]) == 2
    assert problem in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing started or written"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_nodes_are_cluster_enabled_with_explicit_bus_ports(tmp_path):
    kids = demo_cluster.cluster_redis_children(args(), str(tmp_path))
    assert [k.name for k in kids] == [f"redis-{p}" for p in range(7000, 7006)]
    for i, k in enumerate(kids):
        text = " ".join(k.argv)
        assert " ".join(CLUSTER_SERVER_ARGS) in text
        assert f"--port {7000 + i}" in text and f"--cluster-port {7006 + i}" in text
        assert "--replicaof" not in text and k.restart_argv is None, "a restart rejoins with its nodes.conf"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_proxies_get_every_node_and_no_sentinel_port(tmp_path):
    layout = demo_cluster.cluster_layout(args(), ["--read-policy", "master"], str(tmp_path), None)
    nodes = ",".join(f"127.0.0.1:{p}" for p in range(7000, 7006))
    for i, p in enumerate(layout.proxies):
        assert p.argv[p.argv.index("--cluster-nodes") + 1] == nodes
        assert p.argv[p.argv.index("--sentinel-port") + 1] == "0"
        assert "--redis-nodes" not in p.argv and "--master" not in p.argv
        assert p.argv[-2:] == ["--read-policy", "master"] and f"--admin-port {8000 + i}" in " ".join(p.argv)
    assert set(layout.ports) >= set(range(7000, 7012)) | {6380, 6381, 6382, 8000, 8001, 8002}
    assert not set(layout.ports) & {26379, 26380, 26381}
    assert any("slots 0-5460: 127.0.0.1:7000 (master), 127.0.0.1:7003" in line for line in layout.redis_lines)


def test_shards_status_check():
    ok = {"mode": "cluster", "shards": [{"master": "a:1"}, {"master": "b:1"}]}
    assert demo_cluster.shards_served(ok, 2)
    assert not demo_cluster.shards_served(ok, 3)
    assert not demo_cluster.shards_served({**ok, "shards": [{"master": "a:1"}, {"master": None}]}, 2)
    assert not demo_cluster.shards_served({**ok, "mode": "single"}, 2)
