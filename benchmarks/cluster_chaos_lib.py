"""Cluster mode under a long seeded fault schedule (used by benchmarks/cluster_chaos).

Adapters of the single-set chaos suite (tests/chaos/) to a sharded, cluster-enabled Redis
behind the proxies (`ShardedProxyCluster` from benchmarks/cluster_lib.py); the existing
files are reused unchanged:

* `ChaosShardedCluster`  N shards x (1 master + R replicas) + 3 proxies, every process in its
                         own cgroup (nftables cuts), Redis with the default
                         `repl-diskless-sync-delay 5`, each proxy's Raft dir on a small tmpfs;
                         node names `s<shard>-redis-<letter>` (letter a = the first master); a
                         Redis endpoint covers its data port AND its cluster bus port
* `ShardInjector`        the Injector with roles resolved per shard: "master" is the current
                         master of a shard drawn from the seeded RNG, "replica" a replica of one;
                         a Redis<->Redis link is drawn inside one shard unless a side is
                         "any-redis"; a master_flap stays on the shard it started on
* sharded workloads      the workloads of tests/chaos/workloads.py with hash-tagged keys, one
                         tag per shard, so MULTI/EXEC and EVAL keep their keys in one slot and
                         every shard gets traffic
* `ShardSampler`         split-brain samples: two nodes of ONE shard answering role:master
* `run_cluster_chaos`    workloads on all three proxies, the schedule, healing, convergence
                         (bounded), then every acknowledged key read back from its shard's master

A node killed "empty" keeps its nodes.conf (its cluster identity, as a pod with nodes.conf on
its volume and no data persistence): it comes back as the same cluster node, without data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from benchmarks.cluster_lib import ShardedProxyCluster, key_in_shard, slot_owners
from proxy.routing.keyslot import key_slot
from tests.chaos.checker import Findings, MasterSampler, State, evaluate, longest_gap, master_windows, masters_of
from tests.chaos.cluster import REDIS_DEFAULTS, ChaosCluster, fail_over_to_fullest, put_in_cgroup
from tests.chaos.disk import SmallFs
from tests.chaos.faults import FaultSpec, Injector, schedule_json
from tests.chaos.netfaults import ChaosNet, Endpoint
from tests.chaos.operator_watch import OperatorWatch
from tests.chaos.run import CLIENT_TIMEOUT_S, ResultRecord, play
from tests.chaos.workloads import (
    CounterWriter,
    Ledger,
    LuaWriter,
    MultiWriter,
    PipelineWriter,
    PubSubClient,
    QueueConsumer,
    QueueProducer,
    Workload,
)
from tests.integration.harness import HarnessError, RedisServer, redis_client

LETTERS = "abcdefghij"


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


# ---------------------------------------------------------------------------
# the system under test
# ---------------------------------------------------------------------------

class ChaosShardedCluster(ChaosCluster):
    """`shards` x (1 + `replicas`) cluster-enabled redis-servers and 3 proxies in cluster mode."""

    kind = "cluster"

    def __init__(self, workdir: Path, net: ChaosNet, *, shards: int = 3, replicas: int = 1, ack: str = "replica",
                 options: dict | None = None, disk_mb: int = 8) -> None:
        self.workdir = Path(workdir)
        self.net = net
        self.persistence = False
        self.disks = {name: SmallFs(self.workdir / "disks", name, disk_mb) for name in ("proxy-1", "proxy-2",
                                                                                       "proxy-3")}
        node_options = {name: {"data_dir": str(fs.path / "raft")} for name, fs in self.disks.items()}
        self.sc = ShardedProxyCluster(self.workdir, shards=shards, replicas_per_master=replicas,
                                      options={**(options or {}), "ack": ack}, node_options=node_options)
        self.shard_count, self.replicas_per_master = shards, replicas
        nodes = self.sc.cluster
        # create_cluster makes replica j follow master j // replicas
        self.groups: list[list[str]] = [[] for _ in range(shards)]
        self.redis: dict[str, RedisServer] = {}
        self.group_of: dict[str, int] = {}
        for i, s in enumerate(nodes.masters):
            self._add_node(f"s{i + 1}-redis-a", s, i)
        for j, s in enumerate(nodes.replicas):
            i = j // replicas
            self._add_node(f"s{i + 1}-redis-{LETTERS[1 + j % replicas]}", s, i)
        self.controllers = dict(self.sc.proxies)
        for name, p in self.controllers.items():
            put_in_cgroup(p, net, name)
        self.clients_cg = None
        self.shard_ids: list[str] = []        # committed shard id of group i (set by start)
        self.ranges: list[list[tuple[int, int]]] = []

    def _add_node(self, name: str, s: RedisServer, group: int) -> None:
        s.extra_args = [*s.extra_args, *REDIS_DEFAULTS]
        put_in_cgroup(s, self.net, name)
        self.redis[name] = s
        self.group_of[name] = group
        self.groups[group].append(name)

    def start(self, timeout: float = 90.0) -> ChaosShardedCluster:
        self.sc.start(timeout)
        views = sorted(self.sc.wait_ready(timeout=timeout), key=lambda v: min(v.ranges))
        self.shard_ids = [""] * self.shard_count
        self.ranges = [[] for _ in range(self.shard_count)]
        for v in views:
            names = {self.redis_name(s.addr) for s in v.servers}
            group = {self.group_of[n] for n in names}
            if len(group) != 1:
                raise HarnessError(f"shard {v.id} spans node groups {group}: {names}")
            g = group.pop()
            self.shard_ids[g] = v.id
            self.ranges[g] = list(v.ranges)
        return self

    def describe(self) -> str:
        out = []
        for g, names in enumerate(self.groups):
            nodes = ", ".join(f"{n}={self.redis[n].addr}" for n in names)
            out.append(f"shard {g + 1} ({self.shard_ids[g][:8] if self.shard_ids else '?'}, slots "
                       f"{self.ranges[g] if self.ranges else '?'}): {nodes}")
        out += [f"{n}: client port {p.port}, admin port {p.admin_port}" for n, p in self.controllers.items()]
        return "\n".join(out)

    # -- endpoints ---------------------------------------------------------------------------
    def endpoint(self, name: str, for_clients: bool = False) -> Endpoint:
        if name in self.redis:      # the data port and the cluster bus port
            s = self.redis[name]
            return Endpoint(name, (s.port, self.sc.cluster.bus_ports[s.port]), f"{self.net.table}/{name}")
        return super().endpoint(name, for_clients)

    def controller_ports(self, name: str, for_clients: bool) -> tuple[int, ...]:
        p = self.sc.proxies[name]
        return (p.port,) if for_clients else (p.port, p.admin_port)

    # -- what the proxies say ------------------------------------------------------------------
    def statuses(self, timeout: float = 0.5) -> dict[str, dict | None]:
        return {n: self.sc.status(n, timeout=timeout) for n in self.sc.names}

    def committed_masters(self) -> dict[int, str | None]:
        """Group -> the master in the newest topology of that shard any proxy shows (node name)."""
        best: dict[str, tuple[int, str]] = {}
        for st in self.statuses().values():
            for d in (st or {}).get("shards") or []:
                if d.get("master") and (d["id"] not in best or int(d.get("epoch") or 0) > best[d["id"]][0]):
                    best[d["id"]] = (int(d.get("epoch") or 0), str(d["master"]))
        out: dict[int, str | None] = {}
        for g, sid in enumerate(self.shard_ids):
            addr = best.get(sid, (0, None))[1]
            try:
                out[g] = self.redis_name(addr) if addr else None
            except KeyError:
                out[g] = None
        return out

    def master_of(self, group: int) -> str | None:
        return self.committed_masters().get(group)

    def current_master(self) -> str | None:     # the Injector's single-set role: not used here
        return None

    def leader(self) -> str | None:
        for name in self.sc.names:
            st = self.sc.status(name, timeout=0.5)
            if st and st["raft"]["role"] == "leader":
                return name
        return None

    def epochs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n, st in self.statuses(1.0).items():
            out[n] = None if st is None else {d["id"][:8]: d.get("epoch") for d in st.get("shards") or []}
        return out

    # -- convergence -------------------------------------------------------------------------------
    def converged(self) -> str | None:
        """None when every shard has exactly one node answering role:master, every other node of
        the shard is its replica with the link up, every proxy answers /status with the same
        (shard, master, epoch) set naming those masters and no writes paused, and every node's
        CLUSTER SHARDS gives each shard's committed slots to that master; else what is wrong."""
        roles = self.roles()
        down = [n for n, r in roles.items() if r is None]
        if down:
            return f"not answering: {down}"
        masters: dict[int, str] = {}
        for g, names in enumerate(self.groups):
            ms = [n for n in names if roles[n]["role"] == "master"]
            if len(ms) != 1:
                return f"shard {g + 1}: masters {ms}"
            masters[g] = ms[0]
            m = self.redis[ms[0]]
            bad = [n for n in names if n != ms[0] and (int(roles[n].get("master_port", 0)) != m.port
                                                       or roles[n].get("master_link_status") != "up")]
            if bad:
                return f"shard {g + 1}: not linked replicas of {ms[0]}: {bad}"
        sts = self.statuses(1.0)
        if any(s is None for s in sts.values()):
            return f"proxies not answering /status: {[n for n, s in sts.items() if s is None]}"
        views = {}
        for n, st in sts.items():
            shards = {d["id"]: d for d in st.get("shards") or []}
            views[n] = sorted((sid[:8], d.get("master"), d.get("epoch")) for sid, d in shards.items())
            for g, sid in enumerate(self.shard_ids):
                d = shards.get(sid)
                if d is None:
                    return f"{n} does not show shard {g + 1} ({sid[:8]})"
                if d.get("master") != self.redis[masters[g]].addr:
                    return f"{n}: shard {g + 1} master {d.get('master')}, Redis says {masters[g]}"
                if d.get("writes_paused"):
                    return f"{n}: shard {g + 1} writes paused ({d.get('hold_reason') or d.get('phase_reason')})"
        if len({repr(v) for v in views.values()}) != 1:
            return f"proxies disagree: {views}"
        ids = {}
        for g, name in masters.items():
            try:
                with redis_client(self.redis[name].port, timeout=0.5, decode=True) as c:
                    ids[g] = c.execute_command("CLUSTER", "MYID")
            except Exception as exc:  # noqa: BLE001
                return f"CLUSTER MYID of {name}: {exc}"
        for n, s in self.redis.items():
            try:
                owners, doubles = slot_owners(s)
            except Exception as exc:  # noqa: BLE001
                return f"CLUSTER SHARDS of {n}: {exc}"
            if doubles:
                return f"{n} lists slots in two shards: {doubles[:5]}"
            for g, ranges in enumerate(self.ranges):
                for a, b in ranges:
                    wrong = [i for i in (a, b) if owners[i] != ids[g]]
                    if wrong:
                        return f"{n}: slots {a}-{b} not owned by {masters[g]} ({owners[wrong[0]]})"
        return None

    def masters_by_roles(self) -> dict[int, str | None]:
        """Group -> the one node answering role:master (None when not exactly one)."""
        roles = self.roles()
        out: dict[int, str | None] = {}
        for g, names in enumerate(self.groups):
            ms = [n for n in names if roles[n] and roles[n]["role"] == "master"]
            out[g] = ms[0] if len(ms) == 1 else None
        return out

    # -- the operator ----------------------------------------------------------------------------
    def operator_asked(self) -> str | None:
        """A proxy holding a shard's writes for the operator (no_safe_master), as "proxy|shard id"."""
        for n, st in self.statuses(1.0).items():
            for d in (st or {}).get("shards") or []:
                if d.get("phase") == "no_safe_master" or "no_safe_master" in str(d.get("hold_reason") or ""):
                    return f"{n}|{d['id']}"
        return None

    def operator_step(self, asking: str) -> str:
        """`failover --to` the node of that shard with the most keys (then the highest offset)."""
        name, _, sid = asking.partition("|")
        g = self.shard_ids.index(sid) if sid in self.shard_ids else None
        if g is None:
            return f"{name} asks for shard {sid}, unknown here"
        step = fail_over_to_fullest((self.redis[n] for n in self.groups[g]), self.sc.proxies[name].admin_port)
        if step is None:
            return f"{name} holds shard {g + 1}'s writes for the operator, but none of its nodes answers"
        target, keys, offset, outcome = step
        return (f"shard {g + 1}: failover --to {self.redis_name(target.addr)} ({keys:,} keys, offset {offset:,}) "
                f"through {name}: {outcome}")

    # -- life cycle ---------------------------------------------------------------------------------
    def rejoin(self, name: str) -> None:
        p = self.sc.proxies[name]
        p.options["join"] = next(f"http://127.0.0.1:{q.admin_port}" for n, q in self.sc.proxies.items()
                                 if n != name)
        if not p.alive():
            p.spawn()

    def restart_redis(self, name: str, keep_data: bool) -> None:
        """Start a killed node again (without data unless `keep_data`), with its nodes.conf: the
        same cluster node, as it left (a master of its slots, or a replica)."""
        s = self.redis[name]
        if s.alive():
            return
        if not keep_data:
            self.wipe_redis(name)
        s.spawn()

    def revive_all(self) -> None:
        for fs in self.disks.values():
            fs.unfill()
        for p in [*self.redis.values(), *self.controllers.values()]:
            if p.alive():
                p.cont()
        for name, s in self.redis.items():
            if not s.alive():
                self.restart_redis(name, keep_data=False)
        for p in self.controllers.values():
            if not p.alive():
                p.spawn()

    def client_factories(self, timeout: float) -> list[Callable[[], Any]]:
        return [(lambda port=p.port: redis_client(port, timeout=timeout, decode=True))
                for p in self.sc.proxies.values()]

    def cleanup(self) -> None:
        try:
            self.sc.cleanup()
        finally:
            for fs in self.disks.values():
                fs.close()

    def logs(self, lines: int = 80) -> str:
        return "\n".join(f"--- {n} ---\n{p.log_tail(lines)}"
                         for n, p in [*self.controllers.items(), *self.redis.items()])


# ---------------------------------------------------------------------------
# roles per shard
# ---------------------------------------------------------------------------

REDIS_ROLES = ("master", "replica", "any-redis")


class ShardInjector(Injector):
    """The chaos Injector with Redis roles resolved in a shard drawn from the seeded RNG."""

    cluster: ChaosShardedCluster

    def _shard(self) -> int:
        return self.rng.randrange(self.cluster.shard_count)

    def _in_shard(self, role: str, g: int, masters: dict[int, str | None] | None = None) -> str:
        c = self.cluster
        names = sorted(c.groups[g])
        master = (masters if masters is not None else c.committed_masters()).get(g)
        if role == "master":
            return master or self.rng.choice(names)
        if role == "replica":
            return self.rng.choice([n for n in names if n != master] or names)
        return self.rng.choice(sorted(c.redis))          # any-redis: any node of any shard

    def resolve(self, role: str) -> str:
        if role in REDIS_ROLES:
            return self._in_shard(role, self._shard())
        return super().resolve(role)

    def _pair(self, spec: FaultSpec) -> tuple[str, str]:
        ra, rb = spec.params["a"], spec.params["b"]
        if ra in REDIS_ROLES and rb in REDIS_ROLES:
            g = self._shard()
            masters = self.cluster.committed_masters()
            a, b = self._in_shard(ra, g, masters), self._in_shard(rb, g, masters)
            if a == b:
                pool = [n for n in sorted(self.cluster.groups[g]) if n != a] or \
                       [n for n in sorted(self.cluster.redis) if n != a]
                b = self.rng.choice(pool)
            return a, b
        return super()._pair(spec)

    def _flap_master(self) -> tuple[Callable[[], str], str]:
        """Every kill of one flap in the shard drawn here."""
        g = self._shard()
        return lambda: self._in_shard("master", g), f"master of shard {g + 1}"


def adapt_schedule(schedule: list[FaultSpec], replicas: int) -> list[str]:
    """With one replica per shard a chasing flap (kill the master, then the node promoted in its
    place) destroys both copies of a shard's data by construction: such flaps keep hitting the
    first victim instead. Returns what was changed (for the log)."""
    notes = []
    if replicas >= 2:
        return notes
    for s in schedule:
        if s.kind == "master_flap" and s.params.get("chase"):
            s.params["chase"] = False
            notes.append(f"+{s.at:.2f}s master_flap: chase off (a shard of 2 nodes cannot survive two kills)")
    return notes


# ---------------------------------------------------------------------------
# workloads with keys in every shard
# ---------------------------------------------------------------------------

class ShardTags:
    """Hash tags landing in each shard (`tag(prefix, g)`: a tag of shard g for one workload)."""

    def __init__(self, cluster: ChaosShardedCluster) -> None:
        self.views = sorted(cluster.sc.wait_ready(timeout=30), key=lambda v: min(v.ranges))

    def tag(self, prefix: str, g: int) -> str:
        return key_in_shard(self.views[g], f"{prefix}-s{g + 1}-")

    def tags(self, prefix: str) -> list[str]:
        return [self.tag(prefix, g) for g in range(len(self.views))]


class _ShardTags:
    """A writer whose keys of write `seq` sit under one hash tag, the shards' tags in turn
    (mixed in before a tests/chaos writer, whose `prefix(seq)` it replaces)."""

    def __init__(self, name: str, factory: Any, tags: list[str]) -> None:
        super().__init__(name, factory)  # type: ignore[call-arg]
        self.tags = tags

    def prefix(self, seq: int) -> str:
        return f"{{{self.tags[seq % len(self.tags)]}}}"


class TaggedMultiWriter(_ShardTags, MultiWriter):
    """MULTI: SET a, SET b, INCR count, EXEC, the three keys under one tag; tags of every shard in turn."""


class TaggedLuaWriter(_ShardTags, LuaWriter):
    """EVAL: SET key, RPUSH log, both under one tag; tags of every shard in turn."""


class SpreadCounterWriter(CounterWriter):
    """INCR on one counter per shard in turn."""

    def __init__(self, name: str, factory: Any, tags: list[str]) -> None:
        super().__init__(name, factory)
        self.keys = [f"{{{t}}}:c" for t in tags]

    def op(self, client: Any) -> None:
        i = self.next_seq()
        key = self.keys[i % len(self.keys)]
        r = client.incr(key)
        if isinstance(r, int):
            self.ledger.increments[key] += 1
            self.ack(key)


class KeyedQueueProducer(QueueProducer):
    def __init__(self, name: str, factory: Any, queue_key: str) -> None:
        super().__init__(name, factory)
        self.queue_key = queue_key

    def op(self, client: Any) -> None:
        item = f"{self.ledger.name}:{self.next_seq()}"
        r = client.lpush(self.queue_key, item)
        if isinstance(r, int) and r > 0:
            self.ledger.pushed.append(item)
            self.ack()


class KeyedQueueConsumer(QueueConsumer):
    def __init__(self, name: str, factory: Any, queue_key: str) -> None:
        super().__init__(name, factory)
        self.queue_key = queue_key

    def op(self, client: Any) -> None:
        self._popping = True
        r = client.brpop(self.queue_key, timeout=self.block_s)
        self._popping = False
        if r:
            _, item = r
            self.ledger.delivered.append(item)


def sharded_workloads(factories: list[Any], tags: ShardTags) -> tuple[list[Workload], list[str]]:
    """One of each writer per endpoint (proxy): pipelined SETs (keys hash all over the slots),
    MULTI/EXEC and EVAL on tags of every shard in turn, INCR on a counter per shard, pub/sub then
    SET; a queue per endpoint (its producer and consumer on that proxy), queue i in shard i.
    Returns the workloads and the queue keys."""
    out: list[Workload] = []
    queues = []
    shards = len(tags.views)
    for i, f in enumerate(factories, 1):
        q = f"{{{tags.tag(f'q{i}', (i - 1) % shards)}}}:queue"
        queues.append(q)
        out += [PipelineWriter(f"pipe{i}", f), TaggedMultiWriter(f"multi{i}", f, tags.tags(f"multi{i}")),
                TaggedLuaWriter(f"lua{i}", f, tags.tags(f"lua{i}")),
                SpreadCounterWriter(f"incr{i}", f, tags.tags(f"incr{i}")),
                KeyedQueueProducer(f"qpush{i}", f, q), KeyedQueueConsumer(f"qpop{i}", f, q),
                PubSubClient(f"pubsub{i}", f)]
    return out, queues


# ---------------------------------------------------------------------------
# split brain per shard
# ---------------------------------------------------------------------------

class ShardSampler(MasterSampler):
    """Every `interval` s, which nodes of each shard answer INFO with role:master."""

    def __init__(self, cluster: ChaosShardedCluster, interval: float = 0.2) -> None:
        super().__init__(cluster, interval)
        self.name = "shard-sampler"

    def observe(self, roles: dict[str, dict | None]) -> dict[int, tuple[str, ...]]:
        return {g: masters_of({n: roles[n] for n in names}) for g, names in enumerate(self.cluster.groups)}

    def split_samples(self) -> int:
        return sum(1 for _, by in self.samples if any(len(m) >= 2 for m in by.values()))

    def windows(self) -> list[tuple[float, float, int, tuple[str, ...]]]:
        """(start, end, shard number, masters) of each run of consecutive samples in which one
        shard had two or more nodes answering role:master."""
        return sorted((a, b, g + 1, ms) for g in range(self.cluster.shard_count)
                      for a, b, ms in master_windows((t, by.get(g, ())) for t, by in self.samples))


# ---------------------------------------------------------------------------
# reading back
# ---------------------------------------------------------------------------

def read_back(cluster: ChaosShardedCluster, ledgers: list[Ledger], queues: list[str],
              masters: dict[int, str | None], chunk: int = 1000) -> tuple[State, dict[str, str]]:
    """Every key the ledgers name, read with pipelined GET/LRANGE from its shard's master
    (`masters`: group -> node name); returns the state and, per key, the node it was read from."""
    st = State()
    where: dict[str, str] = {}
    slot_group = {}
    for g, ranges in enumerate(cluster.ranges):
        for a, b in ranges:
            for slot in range(a, b + 1):
                slot_group[slot] = g
    by_group: dict[int, dict[str, list[str]]] = {g: {"get": [], "lists": []} for g in range(cluster.shard_count)}
    values = [k for led in ledgers for k in led.values]
    counters = sorted({k for led in ledgers for k in led.increments})
    lists = sorted({k for led in ledgers for k in led.members} | set(queues))
    for k in [*values, *counters]:
        by_group[slot_group[key_slot(k.encode())]]["get"].append(k)
    for k in lists:
        by_group[slot_group[key_slot(k.encode())]]["lists"].append(k)
    got: dict[str, Any] = {}
    for g, want in by_group.items():
        name = masters.get(g)
        if name is None:
            raise HarnessError(f"shard {g + 1} has no master to read from")
        with redis_client(cluster.redis[name].port, timeout=30, decode=True) as c:
            for i in range(0, len(want["get"]), chunk):
                part = want["get"][i:i + chunk]
                pipe = c.pipeline(transaction=False)
                for k in part:
                    pipe.get(k)
                got.update(zip(part, pipe.execute()))
                where.update((k, name) for k in part)
            for k in want["lists"]:
                got[k] = c.lrange(k, 0, -1)
                where[k] = name
    for k in values:
        st.values[k] = got.get(k)
    for k in counters:
        st.counters[k] = int(got.get(k) or 0)
    for k in lists:
        if k in queues:
            st.queue.extend(got.get(k) or [])
        else:
            st.lists[k] = got.get(k) or []
    return st, where


# ---------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------

@dataclass
class ClusterRunResult(ResultRecord):
    seed: int
    shards: int
    replicas: int
    schedule: list[dict]
    fault_log: list[str]
    findings: Findings
    lost_by_shard: dict[int, int]
    increments_lost_by_shard: dict[int, int]
    converged_s: float | None
    convergence_error: str | None
    read_from: dict[int, str | None]
    split_brain_windows: list[tuple[float, float, int, tuple[str, ...]]]
    split_brain_samples: int
    samples: int
    unavailable_s: float
    unavailable_at: float
    shard_unavailable: dict[int, tuple[float, float]]     # shard -> (longest gap of its keyed acks, from)
    acks_by_kind: dict[str, int]
    faults_s: float
    epochs_end: dict[str, Any] = field(default_factory=dict)
    injector_error: str | None = None
    operator_steps: list[str] = field(default_factory=list)
    lost_keys: list[dict] = field(default_factory=list)
    errors_top: list[tuple[str, int]] = field(default_factory=list)    # refusals / unknown outcomes, by text

    def summary(self) -> str:
        f = self.findings
        windows = [(round(a, 1), round(b, 1), g, m) for a, b, g, m in self.split_brain_windows][:10]
        lines = [f"seed={self.seed} shards={self.shards} replicas={self.replicas}",
                 f"acknowledged: {self.acks_by_kind}; refused {f.refused}, unknown outcome {f.unknown}",
                 f"lost: writes {f.lost_writes}/{f.acked_writes} (by shard {self.lost_by_shard}), increments "
                 f"{f.increments_lost}/{f.acked_increments} (by shard {self.increments_lost_by_shard}), Lua list "
                 f"members {f.list_members_lost}, queue items {f.queue_lost}/{f.queue_pushed} (duplicates "
                 f"{len(f.queue_duplicates)}, in-flight pops {f.queue_inflight_pops})",
                 f"lost writes by the second they were acknowledged in: {f.lost_by_ack_second}",
                 f"split-brain windows (one shard, two role:master): {len(self.split_brain_windows)} "
                 f"({self.split_brain_samples} of {self.samples} samples) {windows}",
                 f"longest time without an acknowledged write: {self.unavailable_s:.2f}s from "
                 f"+{self.unavailable_at:.2f}s; per shard (keyed writes) "
                 f"{ {g: (round(a, 1), round(b, 1)) for g, (a, b) in self.shard_unavailable.items()} }",
                 "converged after healing: " + (f"{self.converged_s:.2f}s" if self.converged_s is not None
                                                 else f"NO ({self.convergence_error})"),
                 f"read back from: {self.read_from}",
                 f"epochs at the end: {self.epochs_end}"]
        if self.injector_error:
            lines.append(f"injector: {self.injector_error}")
        if f.crashed:
            lines.append(f"crashed workloads: {f.crashed}")
        for step in self.operator_steps:
            lines.append(f"operator step: {step}")
        lines.append(f"most frequent errors: {self.errors_top[:8]}")
        for p in f.problems():
            lines.append(f"PROBLEM: {p}")
        return "\n".join(lines)


def run_cluster_chaos(cluster: ChaosShardedCluster, schedule: list[FaultSpec], *, seed: int,
                      converge_timeout_s: float = 30.0, post_heal_s: float = 2.0, second_chance_s: float = 30.0,
                      operator: bool = True, echo: Callable[[str], None] | None = print) -> ClusterRunResult:
    """The schedule against the started `cluster` under the sharded workloads; heal; check."""
    tags = ShardTags(cluster)
    cluster.enter_clients_cgroup()
    workloads, queues = sharded_workloads(cluster.client_factories(CLIENT_TIMEOUT_S), tags)
    sampler = ShardSampler(cluster)
    injector = ShardInjector(cluster, schedule, seed, echo=echo)
    watch = OperatorWatch(cluster, lambda text: injector.note("note", "operator", text)) if operator else None
    played = play(cluster, workloads, sampler, injector, watch, schedule, converge_timeout_s=converge_timeout_s,
                  post_heal_s=post_heal_s, second_chance_s=second_chance_s)
    t0, t_heal, t_end = played.t0, played.t_heal, played.t_end
    masters = cluster.masters_by_roles()
    named = cluster.committed_masters()
    read_from = {g: (masters.get(g) or named.get(g)) for g in range(cluster.shard_count)}
    ledgers = [w.ledger for w in workloads]
    state, where = read_back(cluster, ledgers, queues, read_from)
    findings = evaluate(ledgers, state, crashed=[f"{w.name}: {w.crashed!r}" for w in workloads if w.crashed], t0=t0)
    group_of_key = {}
    for g, ranges in enumerate(cluster.ranges):
        for a, b in ranges:
            group_of_key[(a, b)] = g

    def group(key: str) -> int:
        slot = key_slot(key.encode())
        return next(g for (a, b), g in group_of_key.items() if a <= slot <= b) + 1
    lost_by_shard: Counter = Counter()
    lost_keys = []
    for led in ledgers:
        for k, v in led.values.items():
            if state.values.get(k) != v:
                lost_by_shard[group(k)] += 1
                if len(lost_keys) < 200:
                    lost_keys.append({"key": k, "value": v, "found": state.values.get(k), "shard": group(k),
                                      "acked_at": round(led.acked_at.get(k, t0) - t0, 3), "read_from": where.get(k),
                                      "workload": led.name})
    inc_by_shard: Counter = Counter()
    for k, (final, n) in findings.counters_below.items():
        inc_by_shard[group(k)] += n - final
    acks = Counter()
    errors: Counter = Counter()
    for w in workloads:
        acks[w.kind] += len(w.ledger.acks)
        errors.update({f"{w.kind}: {k}": n for k, n in w.ledger.errors.items()})
    gap, gap_at = longest_gap([t for w in workloads for t in w.ledger.acks], t0, t_end)
    keyed: dict[int, list[float]] = {g + 1: [] for g in range(cluster.shard_count)}
    for led in ledgers:
        for k, t in led.acked_at.items():
            keyed[group(k)].append(t)
    shard_gap = {}
    for g, ts in keyed.items():
        a, at = longest_gap(ts, t0, t_end)
        shard_gap[g] = (round(a, 3), round(at - t0, 3))
    windows = [(a - t0, b - t0, g, m) for a, b, g, m in sampler.windows()]
    return ClusterRunResult(
        seed=seed, shards=cluster.shard_count, replicas=cluster.replicas_per_master,
        schedule=schedule_json(schedule), fault_log=injector.log_lines(), findings=findings,
        lost_by_shard=dict(lost_by_shard), increments_lost_by_shard=dict(inc_by_shard),
        converged_s=played.converged_s, convergence_error=played.convergence_error, read_from=read_from,
        split_brain_windows=windows, split_brain_samples=sampler.split_samples(), samples=len(sampler.samples),
        unavailable_s=gap, unavailable_at=gap_at - t0, shard_unavailable=shard_gap, acks_by_kind=dict(acks),
        faults_s=t_heal - t0, epochs_end=cluster.epochs(),
        injector_error=repr(injector.crashed) if injector.crashed else None, operator_steps=played.operator_steps,
        lost_keys=lost_keys, errors_top=errors.most_common(30))


__all__ = ["ChaosShardedCluster", "ClusterRunResult", "ShardInjector", "ShardSampler", "adapt_schedule",
           "read_back", "run_cluster_chaos", "sharded_workloads"]
