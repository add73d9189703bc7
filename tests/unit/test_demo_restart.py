"""proxy.process.demo: the command printed to start a dead redis-server again carries no stale REPLICAOF.

Issue 12 item 6: the demo printed each node's first-start command, so a restarted node
came back as a replica of the *original* master, which by then may be a replica itself or
an empty node; the proxies' leader points a restarted node at the current master.
"""

from __future__ import annotations

import argparse
import shutil

import pytest

from proxy.process import demo


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
