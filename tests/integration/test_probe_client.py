"""The probes' own RESP connection (health.probes.connection) against a real redis-server.

An idle proxy probes every node 10 times a second; through redis-py a probe
cost several times its bytes' round trip (issue 16: idle cost). These check that
the bare connection reads what redis-py read, logs in as the control user,
reports errors as redis-py did, comes back after a lost connection, and that a
probe stays cheap: counted in Python function calls, which unlike CPU time does
not depend on the machine's load.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from health.probes.connection import ProbeClient
from health.probes.probe import Health, NodeStatus, Prober, parse_replication_info

from .harness import RedisServer, ReplicaSet

USER, PASSWORD = "probe-test", "probe-secret"


@pytest.fixture(scope="module")
def rs(replica_set: ReplicaSet) -> ReplicaSet:
    with replica_set.master.client() as c:
        c.execute_command("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "+info", "+script|kill", "+client|id")
    return replica_set


def _status_from_redis_py(server) -> NodeStatus:
    st = NodeStatus(server.addr)
    parse_replication_info(server.info("replication"), st)
    return st


def _fields(st: NodeStatus) -> tuple:
    return (st.role, st.master_addr, st.link_up, st.replid, st.replid2, st.offset2, st.priority,
            st.connected_replicas)


def test_info_replication_reads_what_redis_py_read(rs: ReplicaSet):
    async def probe(addr: str) -> NodeStatus:
        c = ProbeClient(addr)
        try:
            st = NodeStatus(addr)
            parse_replication_info(await c.info_replication(), st)
            return st
        finally:
            await c.aclose()

    for server in rs.servers:
        mine = asyncio.run(probe(server.addr))
        theirs = _status_from_redis_py(server)
        assert _fields(mine) == _fields(theirs), server.addr
        assert mine.offset >= theirs.offset - 1000 and mine.role in ("master", "slave")
    assert asyncio.run(probe(rs.replicas[0].addr)).master_addr == rs.master.addr


def test_logs_in_as_the_control_user_and_reports_error_replies(rs: ReplicaSet):
    async def scenario() -> tuple[dict, str, str]:
        good = ProbeClient(rs.master.addr, username=USER, password=PASSWORD)
        bad = ProbeClient(rs.master.addr, username=USER, password="wrong")
        try:
            info = await good.info_replication()
            try:
                await good.execute_command("SCRIPT", "KILL")
                notbusy = "answered"
            except ResponseError as exc:
                notbusy = str(exc)
            try:
                await bad.info_replication()
                refused = "answered"
            except ResponseError as exc:
                refused = str(exc)
            return info, notbusy, refused
        finally:
            await good.aclose()
            await bad.aclose()

    info, notbusy, refused = asyncio.run(scenario())
    assert info["role"] == "master"
    assert notbusy.startswith("NOTBUSY"), notbusy        # the whole message, code included
    assert refused.startswith("WRONGPASS"), refused


def test_a_lost_connection_fails_one_request_and_the_next_reconnects(rs: ReplicaSet):
    async def scenario() -> tuple[str, str]:
        c = ProbeClient(rs.master.addr, username=USER, password=PASSWORD)
        try:
            await c.info_replication()
            with rs.master.client() as admin:
                admin.execute_command("CLIENT", "KILL", "USER", USER)
            try:
                async with asyncio.timeout(2):
                    await c.info_replication()
                first = "answered"
            except RedisConnectionError:
                first = "connection error"
            return first, (await c.info_replication())["role"]
        finally:
            await c.aclose()

    first, role = asyncio.run(scenario())
    assert first == "connection error"
    assert role == "master"


def test_a_frozen_node_times_the_probe_out_and_the_next_one_reconnects(tmp_path):
    """The reply's deadline is a timer on its future (no `asyncio.timeout`): a node that
    stopped answering (SIGSTOP) fails the request with TimeoutError at the deadline; the
    connection is then closed, and once the node is back a probe gets its own reply."""
    node = RedisServer(tmp_path).start()

    async def scenario() -> tuple[float, str, str]:
        loop = asyncio.get_running_loop()
        c = ProbeClient(node.addr)
        try:
            await c.info_replication(timeout=2.0)
            node.stop()
            started = loop.time()
            try:
                await c.info_replication(timeout=0.2)
                outcome = "answered"
            except TimeoutError:
                outcome = "timed out"
            took = loop.time() - started
            await c.aclose()
            node.cont()
            return took, outcome, (await c.info_replication(timeout=5.0))["role"]
        finally:
            await c.aclose()

    try:
        took, outcome, role = asyncio.run(scenario())
    finally:
        node.cont()
        node.kill()
    assert outcome == "timed out"
    assert 0.19 <= took < 2.0, took
    assert role == "master"


def _python_calls_per_probe(addr: str, probes: int = 20) -> float:
    """Python function calls the event loop's thread makes per probe of a running Prober."""
    calls = {"n": 0, "probes": 0}

    def count(frame, event, _arg):
        if event == "call":
            calls["n"] += 1
            if frame.f_code.co_name == "probe_done":
                calls["probes"] += 1

    async def scenario() -> None:
        health = Health([addr], down_after_ms=1000)
        prober = Prober(health, addr, interval_ms=5, timeout_ms=1000)
        task = asyncio.get_running_loop().create_task(prober.run())
        try:
            await asyncio.sleep(0)
            async with asyncio.timeout(5):
                while not health.nodes[addr].ever_ok:      # connected: count steady-state probes only
                    await asyncio.sleep(0.005)
            sys.setprofile(count)
            try:
                async with asyncio.timeout(10):
                    while calls["probes"] < probes:
                        await asyncio.sleep(0.005)
            finally:
                sys.setprofile(None)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    uvloop.run(scenario())      # on the proxy's own event loop, whose internals are not Python
    return calls["n"] / max(1, calls["probes"])


def test_a_probe_costs_few_python_calls(rs: ReplicaSet):
    per_probe = _python_calls_per_probe(rs.replicas[0].addr)
    # 38 here; through redis-py 8.1's command path 135
    assert per_probe < 70, f"{per_probe:.0f} Python calls per probe"
