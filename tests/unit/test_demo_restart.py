"""proxy.process.demo: the command printed to start a dead redis-server again carries no stale REPLICAOF;
port ranges that overlap are refused before anything starts.

Issue 12 item 6: the demo printed each node's first-start command, so a restarted node
came back as a replica of the *original* master, which by then may be a replica itself or
an empty node; the proxies' leader points a restarted node at the current master.
"""

from __future__ import annotations

import argparse
import shutil

import pytest

from proxy.process import demo
from proxy.process.cli import main


def children(tmp_path):
    args = argparse.Namespace(redis_server=shutil.which("redis-server") or "/usr/bin/redis-server", redis_port=7100)
    return demo.redis_children(args, str(tmp_path))


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_restart_commands_carry_no_replicaof(tmp_path):
    kids = children(tmp_path)
    assert ["--replicaof", "127.0.0.1", "7100"] == kids[1].argv[-3:], "the first start still follows the master"
    for child in kids:
        message = demo.exit_message(child)
        assert "--replicaof" not in message, message
        assert f"--port {child.name.split('-')[1]}" in message and "--save ''" in message, message


@pytest.mark.parametrize("argv, overlap", [
    (["--proxy-port", "46380", "--sentinel-port", "46379"], "46380, 46381"),    # a proxy on another's Sentinel port
    (["--admin-port", "46700", "--redis-port", "46702"], "46702"),
    (["--shards", "2", "--redis-port", "46700", "--proxy-port", "46706"], "46706, 46707")])  # a bus port
def test_overlapping_port_ranges_are_refused_before_anything_starts(argv, overlap, capsys, tmp_path):
    assert main(["demo", *argv, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"the port ranges overlap at {overlap}" in err, err
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "nothing started (no log, no data)"
