"""A TAKEOVER whose config epoch ties with the dead master's (health/cluster/takeover_epoch.py), on
real Redis 7.0 nodes, no proxies.

The tie is made as a cluster formed by MEET can be left with it (nodes meet as masters
with epoch 0, and Redis separates equal epochs only between two masters: a node made a
replica first keeps its epoch): master M (slots 0-8191) and node R share config epoch 2,
master X (8192-16383) has 1, all written to `nodes.conf` files here; R is made M's replica
while M is frozen (SIGSTOP), so the two never meet as masters. CI met that state once, when
a shard's master was killed mid-migration and four of six nodes kept its slots on the dead
node.

M is SIGKILLed and R is sent `CLUSTER FAILOVER TAKEOVER`, as the leader does. R keeps
epoch 2 (already the greatest it knows), so X, which knows M at 2, refuses R's claim, and
would for good. `make_takeover_win` must end that: X names R as the owner of 0-8191.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from health.cluster.takeover_epoch import blocking_views, make_takeover_win
from health.redis_control import control_client
from proxy.routing.cluster_nodes import parse_cluster_nodes

from .cluster_nodes import CLUSTER_ARGS
from .harness import RedisServer, free_ports, wait_until

pytestmark = pytest.mark.timeout(60)

# Of two masters with equal epochs the one with the smaller id moves to a new epoch when it
# hears of the other: R's is smaller, and R hears nothing of M (frozen) until it is a replica;
# M never acts (its id is the greater), even on a PING R queued to it while still a master.
M_ID, R_ID, X_ID = "2" * 40, "1" * 40, "3" * 40


def _nodes_conf(me: str, ports: dict[str, tuple[int, int]]) -> str:
    """Redis 7.0's nodes.conf for the node `me` of M, R, X (`ports`: name -> (port, bus port))."""
    rows = {"M": (M_ID, "master", "-", 2, "0-8191"), "R": (R_ID, "master", "-", 2, ""),
            "X": (X_ID, "master", "-", 1, "8192-16383")}
    lines = []
    for name, (nid, role, master, epoch, slots) in rows.items():
        port, bus = ports[name]
        flags = f"myself,{role}" if name == me else role
        lines.append(f"{nid} 127.0.0.1:{port}@{bus} {flags} {master} 0 0 {epoch} connected {slots}".rstrip())
    return "\n".join([*lines, "vars currentEpoch 2 lastVoteEpoch 0", ""])


def _view(server: RedisServer) -> list:
    with server.client(decode=True) as c:
        return parse_cluster_nodes(c.execute_command("CLUSTER", "NODES"))


def _owner_of_slot_0(server: RedisServer) -> str | None:
    return next((e.node_id for e in _view(server) if e.master_id is None and any(a <= 0 <= b for a, b in e.slots)),
                None)


@pytest.fixture
def tied(tmp_path):
    ports = free_ports(6)
    named = {"M": (ports[0], ports[3]), "R": (ports[1], ports[4]), "X": (ports[2], ports[5])}
    servers = {}
    try:
        for name, (port, bus) in named.items():
            s = RedisServer(tmp_path, port)
            s.extra_args = list(CLUSTER_ARGS) + ["--cluster-config-file", f"nodes-{port}.conf",
                                                 "--cluster-port", str(bus)]
            s.workdir.mkdir(parents=True, exist_ok=True)
            (s.workdir / f"nodes-{port}.conf").write_text(_nodes_conf(name, named))
            servers[name] = s
        m, r, x = servers["M"], servers["R"], servers["X"]
        m.start()
        x.start()
        m.stop()        # M hears nothing of R while both are masters with epoch 2
        r.start()
        with r.client() as c:
            c.execute_command("CLUSTER", "REPLICATE", M_ID)
        m.cont()
        wait_until(lambda: all(s.client().execute_command("CLUSTER", "INFO").decode().startswith("cluster_state:ok")
                               for s in servers.values()), 20, message="cluster_state:ok on every node")
        wait_until(lambda: r.info().get("master_link_status") == "up", 20, message="R's first sync from M")
        yield m, r, x
    finally:
        for s in servers.values():
            s.cleanup()


def test_a_takeover_tied_with_the_dead_masters_epoch_is_made_to_win(tied, caplog):
    m, r, x = tied
    m.kill()
    with r.client() as c:
        assert c.execute_command("CLUSTER", "FAILOVER", "TAKEOVER") in (b"OK", "OK", True)
    me = next(e for e in _view(r) if e.myself)
    wait_until(lambda: (me := next(e for e in _view(r) if e.myself)).master_id is None and me.slots, 10,
               message="R to be a master with M's slots in its own view")
    me = next(e for e in _view(r) if e.myself)
    # the tie is real: R kept epoch 2 and X knows M, the owner of those slots, at 2
    assert me.config_epoch == 2, me
    assert blocking_views(R_ID, me.config_epoch, me.slots, {x.addr: _view(x)}) == {x.addr: (M_ID, 2)}

    async def run() -> bool:
        clients = {s.addr: control_client(s.addr, username="", password="", timeout=1.0) for s in (m, r, x)}

        async def command(addr, *args):
            return await clients[addr].execute_command(*args)
        try:
            return await make_takeover_win(command, r.addr, [x.addr, m.addr], logging.getLogger("test"), timeout=20)
        finally:
            for c in clients.values():
                await c.aclose()

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(run()) is True
    assert "event=config_epoch_tie" in caplog.text and "bumpepoch='STILL" in caplog.text, caplog.text
    assert "event=config_epoch_raised node=" + x.addr in caplog.text, caplog.text
    wait_until(lambda: _owner_of_slot_0(x) == R_ID, 10,
               message=lambda: f"X to give slot 0 to R: {[(e.node_id[:4], e.config_epoch, e.slots) for e in _view(x)]}")
    assert next(e for e in _view(r) if e.myself).config_epoch > 2
