"""Resharding (issue 15) under faults, on one cluster shared by the module: 2 shards of a
master and 2 replicas (Redis 7.0, legacy `SETSLOT` + `MIGRATE`), 3 proxies with
`ack = replica`, each proxy in a cgroup of its own (tests/chaos/netfaults.py) so that
nftables can cut one proxy from one node. Each test moves a few hundred slots of shard A
to shard B; the tests run in order and each leaves one owner per slot.

1. A Raft leader killed mid-batch, then `cluster cancel`: the nodes have moved slots that
   no leader committed (slots 0-9 moved, 10 moved but announced to the target only, 11
   half-moved). The test plays the dead leader's batch itself while the proxies' own
   batches cannot start (the target refuses them `CLUSTER MYID`), then cancels: the
   cancel commits what the nodes moved and finishes the half-moved slot.
2. The TARGET shard's master SIGKILLed while slots move under a write load: the shard
   fails over, the migration pauses, then continues (logged: `event=migration_resumed
   outcome=continue`) and finishes; every acknowledged write is present, once.
3. The driving proxy (the Raft leader) cut from the source master by nftables while slots
   move under a write load, healed once the leader sees that master down: the migration
   finishes; one owner per slot, every acknowledged write present once. The rule is
   removed on every exit path (and the table with the module).

After each: every live node's CLUSTER SHARDS agrees with the committed map, and every key
(the module's, all of them) is on exactly one master, the one serving its slot.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import pytest

from benchmarks.cluster_lib import ShardedProxyCluster
from benchmarks.failover_lib import WriteResult
from health.migration.plan import expand, to_ranges
from health.migration.reconcile import node_view
from proxy.routing.keyslot import key_slot
from tests.chaos.netfaults import ChaosNet

from .harness import redis_client, start_or_clean, wait_until
from .test_cluster_resharding import (
    Load,
    assert_keys_placed,
    assert_slot_map,
    cli,
    committed,
    finish,
    preload,
    start_plan,
    wait_progress,
)
from .test_failover import TIMING

pytestmark = pytest.mark.timeout(120)


@dataclass
class Shared:
    c: ShardedProxyCluster
    net: ChaosNet
    acked: list[WriteResult] = field(default_factory=list)      # every acknowledged write of the module
    attempted: set[str] = field(default_factory=set)            # every key any client tried to write
    ids: tuple[str, str] = ("", "")

    def shards(self):
        """Shards A (slots 0-8191 at the start) and B (8192-16383), as committed now."""
        views = {v.id: v for v in self.c.shards()}
        return views[self.ids[0]], views[self.ids[1]]

    def add(self, load: Load) -> None:
        self.acked += load.acked()
        self.attempted |= load.attempted_keys()

    def check(self, released=()) -> None:
        views = committed(self.c, 2)
        assert_slot_map(self.c, views)
        assert_keys_placed(self.c, views, self.acked, self.attempted, released)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    net = ChaosNet()
    c = None
    try:
        net.check_cgroup_match()
        c = ShardedProxyCluster(tmp_path_factory.mktemp("faults"), shards=2, replicas_per_master=2,
                                options={**TIMING, "ack": "replica"})
        for p in c.proxies.values():        # every proxy in a cgroup of its own, from its first socket on
            p.argv = (lambda argv=p.argv, pre=net.launcher(p.node): [*pre, *argv()])
        start_or_clean(c, 90)
        base = preload(c, "pre", 1000)
        yield Shared(c, net, list(base), {r.key for r in base}, tuple(v.id for v in c.ordered_shards()))
    finally:
        if c is not None:
            c.cleanup()
        net.close()


def _without(ranges, first: int, last: int) -> list[tuple[int, int]]:
    """A shard's ranges once slots first..last moved off it."""
    return list(to_ranges(set(expand(ranges)) - set(range(first, last + 1))))


def _waiting(c: ShardedProxyCluster, mid: str) -> str:
    return next((m.get("waiting", "") for m in c.migrations() if m["id"] == mid), "")


# -- 1 ---------------------------------------------------------------------------------------

def _keys_in_slots(slots: range, per_slot: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {s: [] for s in slots}
    i = 0
    while any(len(v) < per_slot for v in out.values()):
        k = f"rc:{i}"
        s = key_slot(k.encode())
        if s in out and len(out[s]) < per_slot:
            out[s].append(k)
        i += 1
    return out


def _move_by_hand(src, dst, slot: int, keys: int | None = None, announce: tuple[str, ...] = ("dst", "src")) -> None:
    """What a leader's batch does for one slot (`SETSLOT` + `MIGRATE`), stopped where asked:
    after `keys` of its keys, or with its owner announced to `announce` only."""
    with src.client(decode=True) as s, dst.client(decode=True) as d:
        src_id = node_view(s.execute_command("CLUSTER", "NODES")).id
        dst_id = node_view(d.execute_command("CLUSTER", "NODES")).id
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        names = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)[:keys]
        if names:
            s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "REPLACE", "KEYS", *names)
        if keys is not None:
            return
        if "dst" in announce:
            d.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        if "src" in announce:
            s.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)


def test_cancel_after_a_killed_leaders_uncommitted_batch_commits_what_the_nodes_moved(shared):
    c = shared.c
    a, b = shared.shards()
    assert a.ranges[0][0] == 0, a.ranges
    per_slot = _keys_in_slots(range(12), 4)
    with redis_client(c.proxy(c.names[0]).port, decode=True) as client:
        values = {k: f"{k}-v" for ks in per_slot.values() for k in ks}
        assert client.mset(values) is True
    now = time.monotonic()
    shared.acked += [WriteResult(k, v, now, now, True) for k, v in values.items()]
    shared.attempted |= set(values)
    with b.master.client() as cl:       # no batch of the proxies' can start: they ask the target its id first
        cl.execute_command("ACL", "SETUSER", "default", "-cluster|myid")
    try:
        (mid,) = start_plan(c, "move-slots", {"from": a.id, "to": b.id, "slots": "0-99"})
        wait_until(lambda: "cluster|myid" in _waiting(c, mid), 20,
                   message=lambda: f"the migration's batches to fail on CLUSTER MYID: {c.migrations()}")
        # the dead leader's batch: 0-9 moved, 10 moved and announced to the target only, 11 half-moved
        for slot in range(10):
            _move_by_hand(a.master, b.master, slot)
        _move_by_hand(a.master, b.master, 10, announce=("dst",))
        _move_by_hand(a.master, b.master, 11, keys=2)
        done = cli(c, "cancel")
        assert done.returncode == 0 and "1 migration(s) cancelled" in done.stdout, (done.stdout, done.stderr)
    finally:
        with b.master.client() as cl:
            cl.execute_command("ACL", "SETUSER", "default", "+cluster|myid")
    (m,) = c.wait_migrations([mid], 10)
    assert (m["state"], m["done"], m["keys_moved"]) == ("cancelled", 12, 2), m
    views = {v.id: v.ranges for v in committed(c, 2)}
    assert views[a.id] == _without(a.ranges, 0, 11) and views[b.id] == [(0, 11), *b.ranges], views
    assert re.search(r"event=migration_reconciled id=\S+ moved=11 finished=1 lost=0 keys=2", c.logs(100_000))
    shared.check()


# -- 2 ---------------------------------------------------------------------------------------

def test_target_master_killed_mid_migration_the_shard_fails_over_and_the_migration_continues(shared):
    c = shared.c
    a, b = shared.shards()
    load = Load(c, "tk", readers=False).start()
    try:
        (mid,) = start_plan(c, "move-slots", {"from": a.id, "to": b.id, "slots": "100-499"})
        at_kill = wait_progress(c, mid, 32)
        killed = c.kill_master(b)
        t_kill = time.monotonic()
        (m,) = finish(c, [mid], timeout=60)
        took = time.monotonic() - t_kill
        views = committed(c, 2)
        left = _without(a.ranges, 100, 499)
        wait_until(lambda: all(next(v for v in c.shards(p.node) if v.id == a.id).ranges == left
                               for p in c.alive()), 10,
                   message=lambda: f"every proxy to apply the last batch: {[c.shards(p.node) for p in c.alive()]}")
        dst = next(v for v in views if v.id == b.id)
        assert dst.master is not None and dst.master is not killed
        load.stop()
        for t in load.threads:
            assert t.crashed is None, t.crashed
        # writes to the target's slots may fail while it fails over (hold_ms); none acknowledged may be lost
        failed = [r for w in [*load.writers, *load.msets] for r in w.errors()]
        logs = c.logs(100_000)
        resumed = re.findall(r"event=migration_resumed id=" + re.escape(mid) + r" outcome=continue .*", logs)
        print(f"killed {killed.addr} at {at_kill['done']}/{at_kill['total']} slots; finished {took:.1f}s later "
              f"with {m['keys_moved']} keys; {len(failed)} writes failed meanwhile; {load.summary()}; {resumed}")
        # paused (held for the shard, or its batch failed), then went on with the new master: and said so
        assert re.search(r"event=migration_(waiting|batch_failed) id=" + re.escape(mid), logs)
        assert resumed and f"target_master={dst.master.addr}" in resumed[-1], resumed
    finally:
        load.stop()
        shared.add(load)
    shared.check()


# -- 3 ---------------------------------------------------------------------------------------

def test_driving_proxy_cut_from_the_source_mid_migration_one_owner_per_slot_after_healing(shared):
    c, net = shared.c, shared.net
    a, b = shared.shards()
    leader = c.leader()
    cg = net.cgroup(leader.node)
    port = a.master.port
    load = Load(c, "pc", readers=False).start()
    fault = None
    try:
        (mid,) = start_plan(c, "move-slots", {"from": a.id, "to": b.id, "slots": "500-899"})
        at_cut = wait_progress(c, mid, 32)
        fault = net._add([("out", f'socket cgroupv2 level 2 "{cg}" tcp dport {port} counter drop'),
                          ("in", f'socket cgroupv2 level 2 "{cg}" tcp sport {port} counter drop')])

        def leader_sees_it_down() -> bool:
            s = c.status(leader.node) or {}
            return any(d.get("master") == a.master.addr and d.get("master_up") is False
                       for d in s.get("topology", {}).get("shards", []))
        wait_until(leader_sees_it_down, 15, message=lambda: f"{leader.node} to see {a.master.addr} down")
        # the migration pauses: held for the source's master, or its batch failed (a command in
        # flight to the source fails once the control connection's timeout, 15 s, runs out)
        waiting = wait_until(lambda: _waiting(c, mid), 25, message=lambda: f"the migration to wait: {c.migrations()}")
        net.heal(fault)
        fault = None
        (m,) = finish(c, [mid], timeout=60)
        assert c.leader().node == leader.node
        seen = [ln.split("msg=", 1)[-1] for ln in leader.log_text().splitlines()
                if re.search(r"event=(migration_(waiting|batch_failed|resumed)|node_\w+) ", ln)
                and (mid in ln or a.master.addr in ln)]
        print(f"cut {leader.node} from {a.master.addr} at {at_cut['done']}/{at_cut['total']} slots; "
              f"waited ({waiting}); {m['keys_moved']} keys moved; {load.summary()}; the leader logged: {seen}")
        assert any("event=migration_resumed" in ln and "outcome=continue" in ln and mid in ln for ln in seen), seen
        load.stop()
        for t in load.threads:
            assert t.crashed is None, t.crashed
    finally:
        if fault is not None:
            net.heal(fault)
        load.stop()
        shared.add(load)
    views = {v.id: v.ranges for v in committed(c, 2)}
    assert views[a.id] == _without(a.ranges, 500, 899), views
    shared.check()


# -- 4 ---------------------------------------------------------------------------------------

def test_rebalance_by_keys_evens_out_the_keys_of_hot_slots(shared):
    c = shared.c
    a, b = shared.shards()
    tags: list[str] = []        # 16 hash tags in B's highest slots, 100 keys each
    i = 0
    while len(tags) < 16:
        t = f"hot{i}"
        if key_slot(t.encode()) >= 16000 and b.serves(key_slot(t.encode())):
            tags.append(t)
        i += 1
    values = {f"{{{t}}}:{n}": f"{t}-{n}" for t in tags for n in range(100)}
    with redis_client(c.proxy(c.names[1]).port, decode=True) as client:
        for t in tags:
            assert client.mset({k: v for k, v in values.items() if k.startswith(f"{{{t}}}")}) is True
    now = time.monotonic()
    shared.acked += [WriteResult(k, v, now, now, True) for k, v in values.items()]
    shared.attempted |= set(values)

    def dbsize(v) -> int:
        with v.master.client() as cl:
            return cl.dbsize()
    before = {v.id: dbsize(v) for v in (a, b)}
    done = cli(c, "rebalance", "--by", "keys")
    assert done.returncode == 0, (done.stdout, done.stderr)
    (m,) = [m for m in c.migrations() if m["state"] == "done"][-1:]
    assert (m["source"], m["target"]) == (b.id, a.id) and m["keys_moved"] > 0, m
    a, b = shared.shards()
    after = {v.id: dbsize(v) for v in (a, b)}
    mean = sum(after.values()) / 2
    print(f"keys per shard before {before}, after {after}; {m['total']} slots, {m['keys_moved']} keys moved")
    assert abs(after[a.id] - after[b.id]) <= 0.1 * mean + 100, (before, after)     # ±5 % each, or one hot slot
    shared.check()
    done = cli(c, "rebalance", "--by", "keys")
    assert done.returncode == 0 and "already balanced by keys" in done.stdout, (done.stdout, done.stderr)
