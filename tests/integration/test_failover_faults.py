"""Control-plane safety under faults (issue 12 items 5, 6, 7) with real processes.

Each test starts its own cluster (3 redis-server + 3 proxies running Raft) because
the faults leave nodes in states the shared cluster of test_failover.py does not
restore (empty restarts, a renamed REPLICAOF, replica-priority 0).

Redis nodes run without persistence (`--save "" --appendonly no`, as the harness
starts them) and, where a test says so, with Redis' default 5 s
`repl-diskless-sync-delay`: a replica that must resynchronise in full keeps its
old data (or none) for those 5 s, the window in which the leader must not make an
empty node the master.
"""

from __future__ import annotations

import socket
import time

import pytest
import redis

from benchmarks.failover_lib import PROXY_NAMES, RAFT_SECRET, ProxyCluster, Writer, read_back, wait_replica_of
from benchmarks.raft_cluster_lib import run_ops
from proxy.process.config import ENV_PREFIX
from proxy.protocol.resp import encode_command

from .harness import RedisServer, redis_client, wait_until

pytestmark = pytest.mark.timeout(240)

TIMING = {"down_after_ms": 500, "hold_ms": 5000, "lease_ms": 1000}
SYNC_DELAY = ["--repl-diskless-sync-delay", "5"]     # Redis' default; the harness otherwise uses 0


def start_cluster(tmp_path, *, options: dict | None = None, redis_args: list[str] | None = None,
                  replicas: int = 2) -> ProxyCluster:
    c = ProxyCluster(tmp_path, options={**TIMING, **(options or {})}, replicas=replicas)
    for s in c.rs.servers:
        s.extra_args = list(redis_args or [])
    try:
        c.start(timeout=60)
        c.wait_stable(timeout=30)
    except BaseException:
        c.cleanup()
        raise
    return c


def synced_replica_of(c: ProxyCluster, master: RedisServer, timeout: float = 30.0) -> RedisServer:
    """Some other node is an in-sync replica of `master` (so one more fault loses nothing)."""
    def one():
        for s in c.rs.servers:
            if s is master or not s.alive():
                continue
            try:
                info = s.info("replication")
                m = int(master.info("replication").get("master_repl_offset", 0))
            except redis.RedisError:
                continue
            if (info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port
                    and info.get("master_link_status") == "up"
                    and int(info.get("slave_repl_offset", -1)) >= m - 10_000):
                return s
        return None
    return wait_until(one, timeout, message=lambda: f"an in-sync replica of {master.addr}; {c.logs(15)}")


def wait_every_proxy_sees_priority_zero(c: ProxyCluster, nodes) -> None:
    """Every proxy's probe has seen replica-priority 0 on `nodes` (/status `nodes[].priority`)."""
    addrs = {s.addr for s in nodes}

    def seen() -> bool:
        sts = c.statuses()
        return all(st and all(n["priority"] == 0 for n in st["nodes"] if n["addr"] in addrs)
                   for st in sts.values())
    wait_until(seen, 10, message=lambda: f"every proxy to see replica-priority 0 on {sorted(addrs)}")


def restart_empty_and_wait_no_safe_master(c: ProxyCluster, master: RedisServer) -> dict:
    """Restart the master without its data (no --replicaof) and wait for the leader to
    hold writes in no_safe_master; its /status. First the leader must have committed the
    master's history: a master restarted empty before any was recorded is a master never
    seen, not one that lost its data (a CI run restarted it 0.1 s after the election). And
    past offset 0: a history at offset 0 holds nothing (`health.shard.decide.contains`), so an
    emptied master still covers it; the leader records the first growth at its next step,
    and another CI run restarted the master 0.2 s after the election, before that."""
    def history_offset() -> int:
        h = ((leader_status(c) or {}).get("topology") or {}).get("history")
        return h["offset"] if h else -1
    wait_until(lambda: history_offset() > 0, 15,
               message=lambda: f"the leader to commit the master's history past offset 0: {leader_status(c)}")
    master.kill()
    master.replicaof = None
    master.start()

    def held():
        st = leader_status(c)
        return st if st and st["failover"]["phase"] == "no_safe_master" else None
    return wait_until(held, 15, message=lambda: f"the leader to report no_safe_master; {c.logs(20)}")


def leader_status(c: ProxyCluster) -> dict | None:
    for st in c.statuses().values():
        if st and st["raft"]["role"] == "leader":
            return st
    return None


# ---------------------------------------------------------------------------
# item 6: masters killed in quick succession, restarted empty
# ---------------------------------------------------------------------------

def test_quick_master_kills_with_empty_restarts_lose_no_acknowledged_write(tmp_path):
    """ack=replica; the master is SIGKILLed and restarted at once without its data, again
    and again (the next kill as soon as one replica of the new master is in sync). Every
    other restart uses a stale `--replicaof`, as the demo used to print: the restarted
    node answers as a replica while the committed topology names it master. Before the
    fix the reconciler ran REPLICAOF NO ONE on it ("promote: role is slave") and the
    other nodes resynchronised from it, discarding writes ack=replica had acknowledged."""
    kills = 4
    c = start_cluster(tmp_path / "kills", options={"ack": "replica"}, redis_args=SYNC_DELAY)
    writers = [Writer(c.proxy(n).port, prefix=f"quick-{n}") for n in ("proxy-1", "proxy-2")]
    try:
        for w in writers:
            w.start()
        for w in writers:
            w.wait_acks(100)
        kept_empty = 0      # kills after which the emptied node was still (or again) the master
        for i in range(kills):
            view = c.wait_stable(timeout=30)
            master = c.redis(view["master"])
            synced_replica_of(c, master)
            for w in writers:
                w.wait_acks(20, after=time.monotonic(), timeout=30)
            stale = next(s for s in c.rs.servers if s is not master)
            t_kill = time.monotonic()
            master.kill()
            master.replicaof = stale.addr if i % 2 == 0 else None
            master.start()
            # the cluster moves on (a node that kept the data should be master) and writes flow
            wait_until(lambda: (v := c.agreed()) and v["epoch"] > view["epoch"] or
                       time.monotonic() - t_kill > 10, 30, message="a failover")
            for w in writers:
                w.wait_acks(20, after=time.monotonic(), timeout=30)
            kept_empty += c.wait_stable(timeout=30)["master"] == master.addr
        for w in writers:
            w.stop()
        final = c.wait_stable(timeout=30)
        new_master = c.redis(final["master"])
        for s in c.rs.servers:
            if s is not new_master:
                wait_replica_of(s, new_master, timeout=60)
        acked = [r for w in writers for r in w.acked()]
        with redis_client(c.proxy("proxy-3").port, decode=True) as cl:
            lost = read_back(cl, acked)
        assert not lost, (f"{len(lost)} of {len(acked)} acknowledged writes lost in {kills} kills with empty "
                          f"restarts, e.g. {[r.key for r in lost[:5]]}")
        assert not kept_empty, f"the emptied node stayed master after {kept_empty} of {kills} kills"
        assert any("event=master_restarted_empty" in p.log_text() for p in c.proxies.values())
    finally:
        for w in writers:
            if w.is_alive():
                w.stop()
        c.cleanup()


def test_no_node_with_the_data_holds_writes_and_tells_the_operator(tmp_path):
    """Both replicas restart empty (the leader demotes them; their full sync waits 5 s),
    then the master is killed and restarted empty inside that window: no node holds
    the committed data. Writes are held and refused with the reason, /status says
    `no_safe_master`, no empty node is made master behind the operator's back; the
    operator accepts the loss with `failover --to`, and writes flow again."""
    c = start_cluster(tmp_path / "nosafe", redis_args=SYNC_DELAY)
    try:
        view = c.wait_stable()
        master = c.redis(view["master"])
        endpoint = c.proxy(view["leader"])
        with redis_client(endpoint.port, decode=True) as cl:
            for i in range(50):
                assert cl.set(f"nosafe:{i}", i)
        replicas = [s for s in c.rs.servers if s is not master]
        for s in replicas:
            s.kill()
            s.replicaof = None
            s.start()
        for s in replicas:   # demoted by the leader: a full sync from the master, 5 s away
            wait_until(lambda s=s: s.info("replication")["role"] == "slave", 10, message=f"{s.addr} demoted")
        st = restart_empty_and_wait_no_safe_master(c, master)
        assert master.addr in st["failover"]["reason"]

        def all_held():     # the leader sets its phase, then commits the paused topology
            sts = c.statuses()
            return all(x and "no_safe_master" in (x["topology"]["writes_held"] or "") for x in sts.values()) and sts
        for name, s in wait_until(all_held, 10, message=lambda: f"every proxy to hold writes: {c.statuses()}").items():
            assert s["topology"]["master"] == master.addr, name
        assert any("event=no_safe_master" in p.log_text() for p in c.proxies.values())
        with redis_client(endpoint.port, decode=True, timeout=10) as cl:
            with pytest.raises(redis.RedisError, match="no_safe_master"):
                cl.set("nosafe:during", "x")
        # no emptied node is made master of the others: the replicas are detached (masters of
        # their own, keeping what they hold: nothing here) rather than resynchronised from it
        for s in replicas:
            wait_until(lambda s=s: s.info("replication")["role"] == "master", 10, message=f"{s.addr} detached")
        # (logged once Redis answered REPLICAOF NO ONE: the role may show first)
        wait_until(lambda: any("event=node_detached" in p.log_text() for p in c.proxies.values()), 10,
                   message="event=node_detached")
        # the operator accepts the loss
        r = run_ops("failover", "--to", master.addr, endpoint=f"http://127.0.0.1:{endpoint.admin_port}",
                    secret=RAFT_SECRET)
        assert r.returncode == 0, r.stdout + r.stderr
        c.wait_epoch(st["topology"]["epoch"] + 1, timeout=20)

        def writable():
            try:
                with redis_client(endpoint.port, decode=True, timeout=6) as cl:
                    return cl.set("nosafe:after", "y") is True
            except redis.RedisError:
                return False
        wait_until(writable, 20, message="writes to flow after the operator accepted the loss")
        assert any("event=data_loss_accepted" in p.log_text() for p in c.proxies.values())
    finally:
        c.cleanup()


def test_replicas_keep_their_data_while_writes_are_held_for_the_operator(tmp_path):
    """The chaos run of README (ack = async, seed 5): the master restarted empty and no
    replica was a safe candidate (there, the last one held an older lineage: a deposed
    master whose full sync had not finished; here, replica-priority 0 says the same: the
    proxies may not promote them on their own). Writes are held in `no_safe_master` for
    the operator's `failover --to`, but the replicas still followed the emptied master
    and resynchronised from it once Redis' 5 s diskless-sync delay was over, discarding
    every acknowledged write before the operator could choose. They must be detached
    and keep what they hold, so that `failover --to` one of them loses nothing."""
    c = start_cluster(tmp_path / "keep", redis_args=SYNC_DELAY)
    try:
        view = c.wait_stable()
        master = c.redis(view["master"])
        replicas = sorted((s for s in c.rs.servers if s is not master), key=lambda s: s.addr)
        for s in replicas:
            with s.client(timeout=5) as cl:
                cl.config_set("replica-priority", 0)
        endpoint = c.proxy(view["leader"])
        keys = 200
        with redis_client(endpoint.port, decode=True) as cl:
            for i in range(keys):
                assert cl.set(f"keep:{i}", i)
        for s in replicas:
            wait_replica_of(s, master)
        wait_every_proxy_sees_priority_zero(c, replicas)
        st = restart_empty_and_wait_no_safe_master(c, master)

        def settled(s: RedisServer) -> bool:
            """Detached (a master of its own), or done resynchronising from the emptied node."""
            info = s.info("replication")
            return info["role"] == "master" or (info.get("master_link_status") == "up"
                                                and not int(info.get("master_sync_in_progress", 0)))
        for s in replicas:
            wait_until(lambda s=s: settled(s), 20, message=lambda s=s: f"{s.addr} to settle; {c.logs(20)}")
        for s in replicas:
            with s.client(decode=True) as cl:
                assert cl.dbsize() >= keys, f"{s.addr} resynchronised from the emptied master while writes were held"
        keeper = replicas[0]
        r = run_ops("failover", "--to", keeper.addr, endpoint=f"http://127.0.0.1:{endpoint.admin_port}",
                    secret=RAFT_SECRET)
        assert r.returncode == 0, r.stdout + r.stderr
        assert c.wait_epoch(st["topology"]["epoch"] + 1, timeout=20)["master"] == keeper.addr
        with keeper.client(decode=True) as cl:
            missing = [i for i in range(keys) if cl.get(f"keep:{i}") != str(i)]
        assert not missing, f"{len(missing)} of {keys} acknowledged writes lost, e.g. {missing[:5]}"
    finally:
        c.cleanup()


def test_a_deposed_master_holding_the_history_is_promoted_when_its_successor_comes_back_empty(tmp_path):
    """benchmarks/cluster_chaos, seed 1: the master M was frozen and failed over to B; back,
    M had bytes B never got (here a write sent to M while it was frozen), so B refused it a
    partial resync and its full one waited for Redis' 5 s diskless-sync delay. B was then
    killed and came back empty; what it had applied on its own stream no replica ever got, so
    none of it was acknowledged. M held every acknowledged write but continued no recorded
    stream (only the one B's started from),
    so the proxies held writes for the operator while M resynchronised from the emptied B
    and lost them all. M must be promoted instead (`health.shard.decide.parent_keeper`)."""
    c = start_cluster(tmp_path / "parent", redis_args=SYNC_DELAY, replicas=1)
    try:
        view = c.wait_stable()
        m = c.redis(view["master"])
        b = next(s for s in c.rs.servers if s is not m)
        endpoint = c.proxy(view["leader"])
        keys = 200
        with redis_client(endpoint.port, decode=True) as cl:
            for i in range(keys):
                assert cl.set(f"keep:{i}", i)
        wait_replica_of(b, m)
        wait_until(lambda: b.info("replication").get("master_repl_offset") == m.info("replication")
                   .get("master_repl_offset"), 10, message="the replica to catch up")
        with socket.create_connection(("127.0.0.1", m.port), timeout=10) as direct:
            m.stop()
            # queued on M's socket: M applies it as a master the moment it runs again
            direct.sendall(encode_command([b"SET", b"stray", b"never replicated"]))
            moved = c.wait_epoch(view["epoch"] + 1, timeout=20)
            assert moved["master"] == b.addr, moved

            def recorded_from_parent() -> dict | None:
                h = ((leader_status(c) or {}).get("topology") or {}).get("history") or {}
                return h if h.get("parent") and h.get("replid") == b.info("replication")["master_replid"] else None
            h = wait_until(recorded_from_parent, 10, message=lambda: f"B's history recorded: {leader_status(c)}")
            with b.client() as cl:      # B's stream grows past where it left M's (nothing acknowledged:
                cl.set("applied on B", "no replica had it")     # in the chaos run, writes WAIT did not confirm)
            m.cont()
            assert direct.recv(64) == b"+OK\r\n"

        def waiting_for_full_sync() -> bool:
            info = m.info("replication")
            return (info["role"] == "slave" and int(info["master_port"]) == b.port
                    and info.get("master_link_status") == "down" and int(info["master_repl_offset"]) > h["offset"])
        wait_until(waiting_for_full_sync, 10, message=lambda: f"M demoted, ahead of B: {m.info('replication')}")
        b.kill()
        b.replicaof = None
        b.start()
        back = c.wait_epoch(moved["epoch"] + 1, timeout=4)     # within B's 5 s diskless-sync delay
        assert back["master"] == m.addr, back
        with redis_client(c.proxy(back["leader"]).port, decode=True) as cl:
            missing = [i for i in range(keys) if cl.get(f"keep:{i}") != str(i)]
        assert not missing, f"{len(missing)} of {keys} acknowledged writes lost, e.g. {missing[:5]}"
        assert "through_parent=" in c.logs(200)
    finally:
        c.cleanup()


# ---------------------------------------------------------------------------
# item 7: replica-priority, and a switchover that cannot demote the old master
# ---------------------------------------------------------------------------

def test_replica_priority_zero_is_never_promoted(tmp_path):
    """Redis' own replica-priority, as Sentinel reads it: 0 means never promote. The
    replica that would win the tie (equal offsets: the name decides) has priority 0."""
    c = start_cluster(tmp_path / "prio")
    try:
        view = c.wait_stable()
        master = c.redis(view["master"])
        replicas = sorted((s for s in c.rs.servers if s is not master), key=lambda s: s.addr)
        never, other = replicas
        with never.client(timeout=5) as cl:
            cl.config_set("replica-priority", 0)
        for s in replicas:
            wait_replica_of(s, master)
        wait_every_proxy_sees_priority_zero(c, [never])
        master.kill()
        new = c.wait_epoch(view["epoch"] + 1, timeout=20)
        assert new["master"] == other.addr, f"promoted {new['master']}, whose replica-priority is 0"
    finally:
        c.cleanup()


def test_switchover_keeps_an_old_master_it_could_not_demote_paused(tmp_path):
    """The old master refuses REPLICAOF (the command is renamed away), so the switchover
    cannot demote it. It must not be unpaused while it is still a master that accepts
    writes; the reconciler keeps it paused."""
    c = ProxyCluster(tmp_path / "switch", options=TIMING)
    c.rs.master.extra_args = ["--rename-command", "REPLICAOF", "replicaof-disabled-by-the-test"]
    try:
        c.start(timeout=60)
        view = c.wait_stable(timeout=30)
        old = c.redis(view["master"])
        target = next(s for s in c.rs.servers if s is not old)
        wait_replica_of(target, old)
        c.wait_seen_linked(target.addr, old.addr)
        r = run_ops("failover", "--to", target.addr,
                    endpoint=f"http://127.0.0.1:{c.proxy(view['leader']).admin_port}", secret=RAFT_SECRET)
        assert r.returncode == 0, r.stdout + r.stderr
        new = c.wait_epoch(view["epoch"] + 1, timeout=20)
        assert new["master"] == target.addr
        assert old.info("replication")["role"] == "master", "the test lost its point: the old master was demoted"
        with old.client(timeout=1.5) as cl:
            try:
                cl.set("written-to-the-old-master", "x")
                wrote = True
            except (redis.TimeoutError, redis.ConnectionError):
                wrote = False
        assert not wrote, "the old master, still a master after a failed demotion, was unpaused and took a write"
        assert any("event=switchover_demotion_pending" in p.log_text() for p in c.proxies.values())
    finally:
        c.cleanup()


def test_a_master_never_seen_is_not_failed_over(tmp_path):
    """The proxies' control user exists on the replicas but not on the master, so no
    proxy's probe ever sees the master answer, while its replicas synchronise with it
    and answer. Nothing is known of what the master holds: no replica is promoted over
    it (phase never_seen) until the operator asks. (Before the fix the leader promoted
    a replica as soon as the master was 'objectively down': a proxy started together
    with its nodes did so whenever a replica answered a probe before the master.)"""
    env = {ENV_PREFIX + "REDIS_CONTROL_PASSWORD": "prober-password"}
    c = ProxyCluster(tmp_path / "neverseen", options={**TIMING, "redis_control_username": "prober"},
                     node_env={n: dict(env) for n in PROXY_NAMES})
    for s in c.rs.replicas:
        s.extra_args = ["--user", "prober", "on", ">prober-password", "~*", "&*", "+@all"]
    master = c.rs.master
    try:
        c.start(timeout=60)
        view = c.wait_stable(timeout=30)
        assert view["master"] == master.addr and view["epoch"] == 1

        def blocked():
            st = leader_status(c)
            return st if st and st["failover"]["phase"] == "never_seen" else None
        st = wait_until(blocked, 15, message=lambda: f"the leader to report never_seen; {c.logs(20)}")
        assert st["topology"]["epoch"] == 1 and st["topology"]["master"] == master.addr
        assert st["topology"]["history"] is None
        assert master.addr in st["failover"]["reason"]
        for s in c.rs.replicas:
            assert s.info("replication")["role"] == "slave", f"{s.addr} was promoted over an unseen master"
        target = c.rs.replicas[0]
        r = run_ops("failover", "--to", target.addr, endpoint=f"http://127.0.0.1:{c.proxy(st['node']).admin_port}",
                    secret=RAFT_SECRET)
        assert r.returncode == 0, r.stdout + r.stderr
        new = c.wait_epoch(2, timeout=20)
        assert new["master"] == target.addr
        assert any("event=data_loss_accepted" in p.log_text() for p in c.proxies.values())

        def writable():
            try:
                with redis_client(c.proxy(st["node"]).port, decode=True, timeout=6) as cl:
                    return cl.set("neverseen:after", "y") is True
            except redis.RedisError:
                return False
        wait_until(writable, 20, message="writes to flow to the replica the operator chose")
    finally:
        c.cleanup()


# ---------------------------------------------------------------------------
# item 5: the candidate must be reachable by the leader
# ---------------------------------------------------------------------------

def test_a_replica_the_leader_cannot_reach_is_not_promoted(tmp_path):
    """The leader's link to replica A is cut (the other proxies reach it). The master
    dies with both replicas at the same offset; A would win the tie by name. The
    leader's reconciler could not promote A (writes held until hold_ms, then refused):
    it must promote B, which it reaches."""
    from benchmarks.failover_lib import connect_redirect_shim
    if not connect_redirect_shim():
        pytest.skip("no C compiler for the connect() redirection shim")
    leader = "proxy-1"
    c = ProxyCluster(tmp_path / "reach", options=TIMING, redis_link_relays=(leader,))
    try:
        c.start(timeout=60)
        view = c.wait_stable(timeout=30)
        if view["leader"] != leader:
            r = run_ops("transfer-leadership", "--to", leader,
                        endpoint=f"http://127.0.0.1:{c.proxy(view['leader']).admin_port}", secret=RAFT_SECRET)
            assert r.returncode == 0, r.stdout + r.stderr
            view = wait_until(lambda: (v := c.agreed()) and v["leader"] == leader and v, 20,
                              message=f"leadership to move to {leader}")
        master = c.redis(view["master"])
        a, b = sorted((s for s in c.rs.servers if s is not master), key=lambda s: s.addr)
        for s in (a, b):
            wait_replica_of(s, master)
        c.redis_link(leader, a.addr).blackhole()

        def leader_sees_a_down():
            st = c.status(leader)
            return st and not next(n for n in st["nodes"] if n["addr"] == a.addr)["up"]
        wait_until(leader_sees_a_down, 10, message=f"{leader} to see {a.addr} down")
        master.kill()
        new = c.wait_epoch(view["epoch"] + 1, timeout=20)
        assert new["master"] == b.addr, f"promoted {new['master']}, which the leader {leader} cannot reach"
        with redis_client(c.proxy("proxy-2").port, decode=True, timeout=10) as cl:
            assert cl.set("reach:after", "1") is True
    finally:
        c.cleanup()


def test_the_committed_history_survives_a_leader_change(tmp_path):
    """The master's history is replicated state: a new leader, elected after the old one
    was SIGKILLed, still knows it. It does not take the master that came back empty
    (with a stale --replicaof) for the master, never runs REPLICAOF NO ONE on it, and
    fails over to the replica that kept the data. down_after_ms is 3 s here, so that the
    restart is seen before the master could be objectively down: only the recorded
    history tells. (The code before the fix promoted the empty node first, and was
    rescued here only because the replicas' full resync waited 5 s.)"""
    c = start_cluster(tmp_path / "newleader", options={"ack": "replica", "down_after_ms": 3000},
                      redis_args=SYNC_DELAY)
    try:
        view = c.wait_stable()
        master = c.redis(view["master"])
        survivors = [n for n in c.names if n != view["leader"]]
        keys = [f"newleader:{i}" for i in range(200)]
        with redis_client(c.proxy(survivors[0]).port, decode=True) as cl:
            for k in keys:
                assert cl.set(k, k)
        # the old leader has committed a history covering the writes (offset growth is
        # recorded at most every 10 s), and the survivors applied it: the test is about
        # a recorded history outliving its recorder, not about a leader killed first
        written = int(master.info("replication")["master_repl_offset"])

        def recorded():
            hs = [(st or {}).get("topology", {}).get("history") for st in c.statuses(survivors).values()]
            return all(h and h["offset"] >= written for h in hs) and hs
        wait_until(recorded, 25, message=lambda: f"the survivors to apply a history at offset >= {written}: " + str(
            [(st or {}).get('topology') for st in c.statuses(survivors).values()]))
        c.proxy(view["leader"]).kill()
        after = c.wait_stable(names=survivors, timeout=20)
        assert after["leader"] in survivors and after["epoch"] == view["epoch"]
        stale = next(s for s in c.rs.servers if s is not master)
        master.kill()
        master.replicaof = stale.addr
        master.start()
        new = c.wait_epoch(view["epoch"] + 1, names=survivors, timeout=20)
        assert new["master"] != master.addr, "the new leader made the emptied node master again"
        promoted = [n for n in survivors if f"event=node_promoted node={master.addr} " in c.proxy(n).log_text()]
        assert not promoted, f"{promoted} ran REPLICAOF NO ONE on the emptied {master.addr}"
        assert any("event=master_restarted_empty" in c.proxy(n).log_text() for n in survivors)
        with c.redis(new["master"]).client(decode=True, timeout=5) as nm:
            missing = [k for k, v in zip(keys, nm.mget(keys)) if v != k]
        assert not missing, f"{len(missing)} of {len(keys)} acknowledged keys lost, e.g. {missing[:3]}"
    finally:
        c.cleanup()
