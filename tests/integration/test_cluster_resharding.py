"""Resharding (issue 15) with real processes: a cluster-enabled Redis 7.0 cluster behind 3
proxies running Raft, slots moved by the Raft leader (`CLUSTER SETSLOT` + `MIGRATE`)
while clients write and read through every proxy.

1. Under a write + read load through all 3 proxies (`ack = replica`): move a third of the
   slots (5461, all but one of a shard's) to another shard, remove that shard, add a shard
   (a new master and replica the test starts; slots rebalanced onto it).  Afterwards every
   acknowledged write is present (key by key, through a proxy), every key lives on exactly
   one master and on the master that owns its slot, released nodes hold no key, every live
   node's CLUSTER SHARDS gives every slot exactly one owner (the one the proxies
   committed), no reader saw a wrong value, and the only errors clients saw are a few
   -TRYAGAIN (retried, as cluster clients do, and counted).
2. Bad input is refused with a clear message and changes nothing: an unknown shard, slots
   the source does not serve, a bad range, a node already in a shard, a second plan while
   one runs; `cluster cancel` stops the running one and leaves a consistent slot map.
3. The Raft leader proxy SIGKILLed mid-migration: a new leader finishes the migration.
4. The source shard's master SIGKILLed mid-migration: the shard fails over, the migration
   waits and then finishes; no acknowledged write is lost.
5. Every slot moved off a shard (`move-slots`): the emptied shard's master stays where the
   proxies committed it (Redis 7 would make it a replica of the slots' new owner), every
   other shard keeps its master, and `remove-shard` then releases the empty shard.

Timings as in test_failover.py (TIMING).  Every wait is a bounded poll.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from benchmarks.cluster_lib import (
    Reader,
    RetryingWriter,
    ShardedProxyCluster,
    ShardView,
    node_keys,
    slot_owners,
)
from benchmarks.failover_lib import RAFT_SECRET, WriteResult, read_back
from proxy.routing.keyslot import SLOTS, key_slot

from .harness import redis_client, start_or_clean, wait_until
from .test_failover import TIMING

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
WRITE_INTERVAL_S = 0.02     # each of the 9 client threads (3 per proxy) sends a command every this often
MAX_TRYAGAIN = 20            # retried -TRYAGAIN answers over a whole test: "at most a few" ...
MAX_TRYAGAIN_SHARE = 0.01    # ... or 1 % of the commands, whichever is more
ELECTION_S = 3.0             # bound on a new Raft leader's election after the leader proxy is killed


# -- load ------------------------------------------------------------------------------------

class Load:
    """Per proxy: a RetryingWriter of unique keys (SET), one of MSETs (two keys of one
    hash tag), and a Reader of keys another proxy's writer had acknowledged."""

    def __init__(self, c: ShardedProxyCluster, prefix: str, names: Sequence[str] | None = None,
                 readers: bool = True, msets: bool = True) -> None:
        names = list(names or c.names)
        self.writers = [RetryingWriter(c.proxy(n).port, prefix=f"{prefix}-{n}", interval=WRITE_INTERVAL_S)
                        for n in names]
        self.msets = [RetryingWriter(c.proxy(n).port, prefix=f"{prefix}m-{n}", tags=8, interval=WRITE_INTERVAL_S)
                      for n in names] if msets else []
        self.readers = [Reader(c.proxy(n).port, [self.writers[(i + 1) % len(names)]], prefix=f"{prefix}-{n}",
                               interval=WRITE_INTERVAL_S, seed=i) for i, n in enumerate(names)] if readers else []

    @property
    def threads(self) -> list:
        return [*self.writers, *self.msets, *self.readers]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        for w in [*self.writers, *self.msets]:
            w.wait_acks(20, timeout=30)
        return self

    def stop(self) -> Load:
        for t in self.threads:
            if t.is_alive():
                t.stop()
        return self

    def acked(self) -> list[WriteResult]:
        return [r for w in [*self.writers, *self.msets] for r in w.acked()]

    def attempted_keys(self) -> set[str]:
        keys = {r.key for w in [*self.writers, *self.msets] for r in w.snapshot()}
        return keys | {f"{tag}:last" for m in self.msets for tag in m.tags}

    def summary(self) -> str:
        writes = [r for w in [*self.writers, *self.msets] for r in w.snapshot()]
        reads = [r for rd in self.readers for r in rd.snapshot()]
        return (f"writes {len(writes)} ({sum(r.ok for r in writes)} acknowledged), reads {len(reads)} "
                f"({sum(r.kind == 'ok' for r in reads)} right), "
                f"-TRYAGAIN retried {self.tryagain()}: {self.tryagain_kinds()}")

    def tryagain(self) -> int:
        return sum(w.tryagain for w in self.threads)

    def tryagain_kinds(self) -> dict[str, int]:
        """The retried -TRYAGAIN answers by their text (numbers left out)."""
        out: dict[str, int] = {}
        for w in self.threads:
            for text in list(w.tryagain_texts):
                kind = re.sub(r"\d[\d.:,]*", "N", text)[:110]
                out[kind] = out.get(kind, 0) + 1
        return out

    def check_clients(self, max_tryagain: int = MAX_TRYAGAIN) -> None:
        """Clients saw no error (a few -TRYAGAIN retried aside) and no wrong read."""
        for t in self.threads:
            assert t.crashed is None, f"{t.name} crashed: {t.crashed!r}"
        failed = [r for w in [*self.writers, *self.msets] for r in w.errors()]
        assert not failed, f"{len(failed)} writes failed: " + "; ".join(f"{r.key} {r.kind}: {r.error}"
                                                                        for r in failed[:8])
        bad_reads = [r for rd in self.readers for r in rd.snapshot() if r.kind != "ok"]
        assert not bad_reads, f"{len(bad_reads)} reads of acknowledged keys went wrong: " + "; ".join(
            f"{r.key} {r.kind}: got {r.got!r} want {r.expected!r} {r.error or ''}" for r in bad_reads[:8])
        ops = sum(len(t.snapshot()) for t in self.threads)
        assert self.tryagain() <= max(max_tryagain, ops * MAX_TRYAGAIN_SHARE), \
            f"{self.tryagain()} -TRYAGAIN answers to {ops} commands (at most a few expected): {self.tryagain_kinds()}"


def preload(c: ShardedProxyCluster, prefix: str, n: int) -> list[WriteResult]:
    """`n` keys spread over every slot, written through proxy-1 (acknowledged MSETs)."""
    now = time.monotonic()
    out = [WriteResult(f"{prefix}:{i}", f"{prefix}-v{i}", now, now, True) for i in range(n)]
    with redis_client(c.proxy(c.names[0]).port, decode=True) as client:
        for i in range(0, n, 500):
            assert client.mset({r.key: r.value for r in out[i:i + 500]}) is True
    return out


# -- checks ------------------------------------------------------------------------------------

def committed(c: ShardedProxyCluster, shards: int) -> list[ShardView]:
    c.shard_count = shards
    return c.wait_ready(timeout=30)


def assert_slot_map(c: ShardedProxyCluster, views: Sequence[ShardView]) -> None:
    """Every live node of every committed shard: CLUSTER SHARDS gives each slot exactly one
    owner, the master the proxies committed for it, and no slot is left migrating/importing.
    Polled: the nodes' own gossip may need a moment to agree."""
    owner_of = [None] * SLOTS
    for v in views:
        with v.master.client(decode=True) as cl:
            mid = cl.execute_command("CLUSTER", "MYID")
        for a, b in v.ranges:
            for s in range(a, b + 1):
                assert owner_of[s] is None, f"slot {s} committed to two shards"
                owner_of[s] = mid
    assert None not in owner_of, f"slots {owner_of.index(None)}.. are committed to no shard"
    nodes = [s for v in views for s in v.servers if s.alive()]

    def problems() -> list[str]:
        out = []
        for s in nodes:
            owners, doubles = slot_owners(s)
            if doubles:
                out.append(f"{s.addr}: slots with two owners {doubles[:5]}")
            wrong = [i for i in range(SLOTS) if owners[i] != owner_of[i]]
            if wrong:
                out.append(f"{s.addr}: {len(wrong)} slots (e.g. {wrong[0]}: {owners[wrong[0]]}) not owned as "
                           f"committed ({owner_of[wrong[0]]})")
            with s.client(decode=True) as cl:
                open_slots = [ln for ln in cl.execute_command("CLUSTER", "NODES").splitlines()
                              if "myself" in ln and "[" in ln]
            if open_slots:
                out.append(f"{s.addr}: slots still migrating/importing: {open_slots}")
        return out
    wait_until(lambda: not problems(), 20, message=lambda: f"a consistent slot map: {problems()}")


def assert_keys_placed(c: ShardedProxyCluster, views: Sequence[ShardView], acked: Iterable[WriteResult],
                       attempted: set[str], released: Sequence = ()) -> int:
    """Every acknowledged write readable through a proxy with its value; every key on exactly
    one master, the one owning its slot; no key on a released node. Returns the key count."""
    acked = list(acked)
    with redis_client(c.alive()[0].port, decode=True) as client:      # (a killed proxy is not alive)
        lost = read_back(client, acked)
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes missing or wrong, e.g. " + \
        "; ".join(f"{w.key}={w.value}" for w in lost[:5])
    where: dict[str, list[str]] = {}
    misplaced = []
    for v in views:
        for key in node_keys(v.master):
            where.setdefault(key, []).append(v.master.addr)
            if not v.serves(key_slot(key.encode())):
                misplaced.append(f"{key} (slot {key_slot(key.encode())}) on {v.master.addr}")
    for s in released:
        if s.alive():
            with s.client() as cl:
                assert cl.dbsize() == 0, f"released node {s.addr} still holds {cl.dbsize()} keys"
    twice = {k: a for k, a in where.items() if len(a) > 1}
    assert not twice, f"{len(twice)} keys on two masters, e.g. {list(twice.items())[:5]}"
    assert not misplaced, f"{len(misplaced)} keys on a master that does not own their slot: {misplaced[:5]}"
    unknown = set(where) - attempted
    assert not unknown, f"keys nobody wrote: {sorted(unknown)[:5]}"
    assert {w.key for w in acked} <= set(where)
    total = 0
    for v in views:
        with v.master.client() as cl:
            total += cl.dbsize()
    assert total == len(where), f"the masters' DBSIZE add up to {total}, {len(where)} distinct keys"
    return total


def start_plan(c: ShardedProxyCluster, action: str, body: dict) -> list[str]:
    status, doc = c.admin(action, body)
    assert status == 200 and doc.get("ok"), f"{action} {body}: HTTP {status} {doc}"
    return [m["id"] for m in doc["migrations"]]


def finish(c: ShardedProxyCluster, ids: Sequence[str], timeout: float = 90.0) -> list[dict]:
    ms = c.wait_migrations(ids, timeout)
    for m in ms:
        assert m["state"] == "done" and m["done"] == m["total"], f"migration did not finish: {m}\n{c.logs(30)}"
    return ms


def wait_progress(c: ShardedProxyCluster, mid: str, at_least: int, timeout: float = 30.0) -> dict:
    """The running migration `mid` has moved at least `at_least` slots and is not done."""
    def ok():
        m = next((m for m in c.migrations() if m["id"] == mid), None)
        assert m is None or m["state"] in ("running", "queued"), f"migration ended before the fault: {m}"
        return m if m and m["done"] >= at_least else None
    return wait_until(ok, timeout, message=lambda: f"migration {mid} to move {at_least} slots: {c.migrations()}")


def cli(c: ShardedProxyCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`redis-raft-proxy cluster ARGS --endpoint <proxy-1> --secret ...` (the real CLI)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_RAFT_PROXY_")}
    argv = [str(Path(sys.executable).parent / "redis-raft-proxy"), "cluster", *args,
            "--endpoint", c.proxy(c.names[0]).admin_url, "--secret", RAFT_SECRET]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)


def counted(ms: Sequence[dict]) -> str:
    return ", ".join(f"{m['source'][:8]}->{m['target'][:8]} {m['total']} slots {m['keys_moved']} keys" for m in ms)


# -- 1 ---------------------------------------------------------------------------------------

def test_move_add_remove_under_load_keep_every_acknowledged_write_once(tmp_path):
    c = ShardedProxyCluster(tmp_path / "c", shards=3, replicas_per_master=1, options={**TIMING, "ack": "replica"})
    load = None
    try:
        start_or_clean(c, 90)
        base = preload(c, "pre", 2000)
        load = Load(c, "l").start()
        a, _, third = c.ordered_shards()
        assert third.ranges == [(10922, 16383)], third.ranges

        t0 = time.monotonic()       # 1. a third of the slots, from the last shard (named by its master) to the first
        ms = finish(c, start_plan(c, "move-slots", {"from": third.master.addr, "to": a.id, "slots": "10922-16382"}),
                    timeout=150)
        views = committed(c, 3)
        assert next(v for v in views if v.id == third.id).ranges == [(16383, 16383)]
        assert next(v for v in views if v.id == a.id).ranges == [(0, 5460), (10922, 16382)]
        print(f"move: {counted(ms)} in {time.monotonic() - t0:.1f}s; {load.summary()}")

        t0 = time.monotonic()       # 2. remove that shard (its last slot and keys go elsewhere, its nodes leave)
        ms = finish(c, start_plan(c, "remove-shard", {"shard": third.id}), timeout=60)
        views = committed(c, 2)
        assert third.id not in {v.id for v in views}
        released = third.servers
        print(f"remove-shard: {counted(ms)} in {time.monotonic() - t0:.1f}s; {load.summary()}")

        t0 = time.monotonic()       # 3. a new shard: a master and its replica, not in the cluster yet
        master, replica = c.spare_nodes(2)
        status, doc = c.admin("add-shard", {"master": master.addr, "replicas": [replica.addr]})
        assert status == 200 and doc.get("ok"), f"add-shard: HTTP {status} {doc}"
        new_id = doc["shard"]
        ms = finish(c, [m["id"] for m in doc["migrations"]], timeout=150)
        views = committed(c, 3)
        sizes = {v.id: sum(e - s + 1 for s, e in v.ranges) for v in views}
        assert sorted(sizes.values()) == [5461, 5461, 5462], sizes
        new = next(v for v in views if v.id == new_id)
        assert new.master is master and new.replicas == [replica]
        print(f"add-shard: {counted(ms)} in {time.monotonic() - t0:.1f}s; {load.summary()}")

        load.stop()
        load.check_clients()
        assert_slot_map(c, views)
        total = assert_keys_placed(c, views, [*base, *load.acked()], load.attempted_keys() | {r.key for r in base},
                                   released)
        with redis_client(c.proxy(c.names[1]).port, decode=True) as client:
            for m in load.msets:
                assert not m.last_values_ok(client)
        print(f"{total} keys, each once; {load.summary()}")
    finally:
        if load is not None:
            load.stop()
        c.cleanup()


# -- 2 ---------------------------------------------------------------------------------------

def test_bad_input_is_refused_and_changes_nothing_and_cancel_leaves_a_consistent_map(tmp_path):
    c = ShardedProxyCluster(tmp_path / "c", shards=3, replicas_per_master=1, options=TIMING)
    try:
        start_or_clean(c, 90)
        base = preload(c, "pre", 4000)
        a, b, third = c.ordered_shards()

        def state():
            s = c.status(c.leader().node)
            return [(d["id"], d["slots"], d["epoch"]) for d in s["shards"]], s.get("migrations")
        before = state()

        refusals = [
            (("move-slots", "--from", a.id, "--to", "nosuchshard", "--slots", "0-10"), "no shard 'nosuchshard'"),
            (("move-slots", "--from", a.id, "--to", b.id, "--slots", "6000-6010"),
             f"shard {a.id} does not serve slots 6000-6010"),
            (("move-slots", "--from", a.id, "--to", a.master.addr, "--slots", "0-10"), "the same shard"),
            (("move-slots", "--from", a.id, "--to", b.id, "--slots", "0-16384"), "bad slot range"),
            (("remove-shard", "--shard", "127.0.0.1:1"), "no shard '127.0.0.1:1'"),
            (("add-shard", "--master", b.replicas[0].addr), "already a node of a shard"),
        ]
        for args, expected in refusals:
            done = cli(c, *args)
            assert done.returncode == 1 and expected in done.stderr, (args, done.returncode, done.stdout, done.stderr)
        assert state() == before, "a refused request changed the committed state"

        done = cli(c, "move-slots", "--from", a.id, "--to", b.id, "--slots", "0-5460", "--no-wait")
        assert done.returncode == 0, done.stderr
        running = c.migrations()
        assert [m["state"] for m in running] == ["running"], running
        during = state()
        for args in [("move-slots", "--from", third.id, "--to", b.id, "--slots", "11000-11010"),
                     ("rebalance",), ("remove-shard", "--shard", third.id)]:
            done = cli(c, *args)
            assert done.returncode == 1 and f"migration {running[0]['id']}" in done.stderr \
                and "cancel it or let it finish first" in done.stderr, (args, done.stderr)
        assert [m["id"] for m in c.migrations()] == [running[0]["id"]], "a refused plan was committed"
        assert [d[0] for d in state()[0]] == [d[0] for d in during[0]]

        done = cli(c, "cancel")
        assert done.returncode == 0 and "1 migration(s) cancelled" in done.stdout, (done.stdout, done.stderr)
        (m,) = c.wait_migrations([running[0]["id"]], 10)
        assert m["state"] == "cancelled" and m["done"] < m["total"], m
        views = committed(c, 3)
        moved = next(v for v in views if v.id == b.id).ranges
        left = next(v for v in views if v.id == a.id).ranges
        assert sum(e - s + 1 for s, e in left) == 5461 - m["done"], (left, m)
        print(f"cancelled after {m['done']} of {m['total']} slots ({m['keys_moved']} keys): a {left}, b {moved}")
        assert_slot_map(c, views)
        assert_keys_placed(c, views, base, {r.key for r in base})
        listed = cli(c, "migrations")
        assert running[0]["id"] in listed.stdout and "cancelled" in listed.stdout, listed.stdout
    finally:
        c.cleanup()


# -- 3 ---------------------------------------------------------------------------------------

def test_leader_proxy_killed_mid_migration_another_leader_finishes_it(tmp_path):
    c = ShardedProxyCluster(tmp_path / "c", shards=3, replicas_per_master=1, options={**TIMING, "ack": "replica"})
    load = None
    try:
        start_or_clean(c, 90)
        base = preload(c, "pre", 3000)
        leader = c.leader()
        survivors = [n for n in c.names if n != leader.node]
        load = Load(c, "l", names=survivors).start()
        a, b, _ = c.ordered_shards()
        (mid,) = start_plan(c, "move-slots", {"from": a.id, "to": b.id, "slots": "0-999"})
        at_kill = wait_progress(c, mid, 200)
        leader.kill()
        (m,) = finish(c, [mid], timeout=90)
        new_leader = c.leader()
        assert new_leader.node != leader.node
        print(f"killed {leader.node} at {at_kill['done']}/{at_kill['total']} slots; {new_leader.node} finished: "
              f"{m['keys_moved']} keys; {load.summary()}")
        views = c.wait_ready(survivors, timeout=30)
        # (the migration is done on the leader; a follower may still be one entry behind)
        wait_until(lambda: all(next(v for v in c.shards(n) if v.id == a.id).ranges == [(1000, 5460)]
                               for n in survivors), 10,
                   message=lambda: f"every proxy to apply the last batch: {[(n, c.shards(n)) for n in survivors]}")
        views = c.wait_ready(survivors, timeout=30)
        load.stop()
        # no proxy holds a lease until a new leader is elected (no write, no read then): the
        # clients retry the -TRYAGAIN they get every 50 ms, up to ELECTION_S long each
        load.check_clients(max_tryagain=int(len(load.threads) * ELECTION_S / 0.05))
        assert_slot_map(c, views)
        assert_keys_placed(c, views, [*base, *load.acked()], load.attempted_keys() | {r.key for r in base})
    finally:
        if load is not None:
            load.stop()
        c.cleanup()


# -- 4 ---------------------------------------------------------------------------------------

def test_source_master_killed_mid_migration_the_shard_fails_over_and_the_migration_finishes(tmp_path):
    c = ShardedProxyCluster(tmp_path / "c", shards=3, replicas_per_master=2, options={**TIMING, "ack": "replica"})
    load = None
    try:
        start_or_clean(c, 90)
        base = preload(c, "pre", 3000)
        load = Load(c, "l", readers=False).start()
        a, b, _ = c.ordered_shards()
        (mid,) = start_plan(c, "move-slots", {"from": a.id, "to": b.id, "slots": "0-999"})
        at_kill = wait_progress(c, mid, 100)
        killed = c.kill_master(a)
        t_kill = time.monotonic()
        waiting = wait_until(lambda: next((m.get("waiting") for m in c.migrations() if m["id"] == mid), None),
                             15, message=lambda: f"the migration to wait for shard {a.id}: {c.migrations()}")
        (m,) = finish(c, [mid], timeout=90)
        views = committed(c, 3)     # (every proxy agrees on the masters; the last batch may still be applying)
        wait_until(lambda: all(next(v for v in c.shards(p.node) if v.id == a.id).ranges == [(1000, 5460)]
                               for p in c.alive()), 10,
                   message=lambda: "every proxy to apply the last batch: "
                                   f"{[(p.node, c.shards(p.node)) for p in c.alive()]}")
        src = next(v for v in c.shards(c.leader().node) if v.id == a.id)
        assert src.master is not None and src.master is not killed and src.ranges == [(1000, 5460)]
        print(f"killed {killed.addr} at {at_kill['done']}/{at_kill['total']} slots; waited ({waiting}); "
              f"finished {time.monotonic() - t_kill:.1f}s after the kill with {m['keys_moved']} keys; "
              f"{load.summary()}")
        load.stop()
        for t in load.threads:
            assert t.crashed is None, t.crashed
        # writes to the failed shard may fail while it fails over (hold_ms); none acknowledged may be lost
        failed = [r for w in [*load.writers, *load.msets] for r in w.errors()]
        print(f"{len(failed)} writes failed during the failover: " + "; ".join(f"{r.kind}: {r.error}"
                                                                               for r in failed[:5]))
        assert_slot_map(c, views)
        assert_keys_placed(c, views, [*base, *load.acked()], load.attempted_keys() | {r.key for r in base})
        # held (waiting for the shard, or a failed batch to retry), then finished (above)
        assert re.search("event=migration_(waiting|batch_failed)", c.logs(100_000))
    finally:
        if load is not None:
            load.stop()
        c.cleanup()


# -- 5 ---------------------------------------------------------------------------------------

STABLE_S = 3.0      # how long the roles are watched after a shard was emptied


def test_a_shard_emptied_by_move_slots_keeps_the_map_and_can_then_be_removed(tmp_path):
    c = ShardedProxyCluster(tmp_path / "c", shards=3, replicas_per_master=1, options={**TIMING, "ack": "replica"},
                            slot_ranges=[(0, 63), (64, 8191), (8192, 16383)])
    load = None
    try:
        start_or_clean(c, 90)
        base = preload(c, "pre", 1000)
        load = Load(c, "e", readers=False).start()
        a, b, third = c.ordered_shards()
        ms = finish(c, start_plan(c, "move-slots", {"from": a.id, "to": b.id, "slots": "0-63"}), timeout=20)
        print(f"move: {counted(ms)}; {load.summary()}")
        before = {v.id: (v.master.addr, v.ranges) for v in c.shards(c.leader().node)}   # (a follower may lag)
        assert before[a.id] == (a.master.addr, []) and before[b.id] == (b.master.addr, [(0, 8191)]), before

        def roles_as_committed() -> list[str]:
            out = []
            now = {v.id: (v.master.addr if v.master else None, v.ranges) for v in c.shards(c.leader().node)}
            if now != before:
                out.append(f"committed shards changed: {now} (were {before})")
            for v in (a, b, third):
                role = v.master.info("replication").get("role")
                if role != "master":
                    out.append(f"{v.master.addr} (master of shard {v.id}) is a {role} now")
            return out
        deadline = time.monotonic() + STABLE_S     # a bounded watch: nothing may change in it
        while time.monotonic() < deadline:
            problems = roles_as_committed()
            assert not problems, f"{problems}\n{c.logs(40)}"
            time.sleep(0.1)
        views = c.wait_ready(timeout=10)
        assert_slot_map(c, [v for v in views if v.ranges])

        # b's master imports a slot before it heard who serves it (as a node add-shard just brought
        # in may): Redis then ignores the cluster bus about that slot, so MIGRATE's keys would be
        # refused (-CLUSTERDOWN Hash slot not served) for ever unless the target is told the owner
        slot, keys = stuck_import(c, b, third)
        ms = finish(c, start_plan(c, "move-slots", {"from": third.id, "to": b.id, "slots": f"{slot}-{slot}"}),
                    timeout=20)
        assert ms[0]["keys_moved"] >= len(keys), ms        # (the load may have written to the slot too)
        with b.master.client(decode=True) as cl:
            assert {r.key for r in keys} <= set(cl.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000))
        # (event=slot_owner_taught is usually logged; not asserted: one clean-clone run moved the
        # slot with the target knowing an owner by then, how is not known - the move is what counts)

        # a slot whose keys went to b's master and whose owner the source was told, but which b's
        # master never took (as when a target master dies right after the announcement): the
        # source refuses MIGRATING ("not the owner"); it must not wait for ever either
        slot, more = left_source(c, b, third)
        ms = finish(c, start_plan(c, "move-slots", {"from": third.id, "to": b.id, "slots": f"{slot}-{slot}"}),
                    timeout=20)
        assert "event=slot_owner_announced" in c.logs(100_000)
        keys += more

        status, doc = c.admin("remove-shard", {"shard": a.id})
        assert status == 200 and doc.get("ok"), f"remove-shard of the empty shard {a.id}: HTTP {status} {doc}"
        released = a.servers
        views = committed(c, 2)
        assert a.id not in {v.id for v in views}
        load.stop()
        load.check_clients()
        assert_slot_map(c, views)
        acked = [*base, *load.acked(), *keys]
        assert_keys_placed(c, views, acked, load.attempted_keys() | {r.key for r in acked}, released)
    finally:
        if load is not None:
            load.stop()
        c.cleanup()


def keys_in_a_slot(c: ShardedProxyCluster, source: ShardView, start: int) -> tuple[int, list[WriteResult]]:
    """3 keys of one slot `source` serves (hash tags from `t<start>` on), written through a proxy."""
    tag = next(f"t{i}" for i in range(start, start + 10_000) if source.serves(key_slot(f"t{i}".encode())))
    now = time.monotonic()
    keys = [WriteResult(f"{{{tag}}}:{i}", f"v{i}", now, now, True) for i in range(3)]
    with redis_client(c.proxy(c.names[0]).port, decode=True) as client:
        assert client.mset({r.key: r.value for r in keys}) is True
    return key_slot(tag.encode()), keys


def stuck_import(c: ShardedProxyCluster, target: ShardView, source: ShardView) -> tuple[int, list[WriteResult]]:
    """A slot of `source` with 3 keys that `target`'s master has IMPORTING while it knows no
    owner of it (CLUSTER DELSLOTS in its own view)."""
    slot, keys = keys_in_a_slot(c, source, 0)
    with source.master.client(decode=True) as cl:
        source_id = cl.execute_command("CLUSTER", "MYID")
    with target.master.client(decode=True) as cl:
        cl.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        cl.execute_command("CLUSTER", "DELSLOTS", slot)
        owners, _ = slot_owners(target.master)
        assert owners[slot] is None, f"{target.master.addr} still knows an owner of slot {slot}: {owners[slot]}"
    return slot, keys


def left_source(c: ShardedProxyCluster, target: ShardView, source: ShardView) -> tuple[int, list[WriteResult]]:
    """A slot of `source` with 3 keys moved by hand to `target`'s master (IMPORTING there,
    MIGRATING + MIGRATE on the source), then announced to the source only: the source says
    the target serves it, the target (still importing) does not take it."""
    slot, keys = keys_in_a_slot(c, source, 20_000)
    with source.master.client(decode=True) as s, target.master.client(decode=True) as t:
        source_id, target_id = s.execute_command("CLUSTER", "MYID"), t.execute_command("CLUSTER", "MYID")
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while batch := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            host, port = target.master.addr.rsplit(":", 1)
            s.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *batch)
        s.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    owners, _ = slot_owners(target.master)
    assert owners[slot] == source_id, f"{target.master.addr} took slot {slot} already: {owners[slot]}"
    return slot, keys
