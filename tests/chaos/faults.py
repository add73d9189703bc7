"""Seeded fault schedules and the injector that plays one against a ChaosCluster.

A schedule is a list of `FaultSpec`s: when (seconds from the start), what kind,
its parameters and how long it lasts.  It is a pure function of the seed, the
duration and the kinds allowed (`make_schedule`), so `--seed` replays it.  Roles
("master", "replica", "leader", "any") are resolved when the fault fires, with
an RNG seeded from the same seed, so a replay hits the same roles.

Kinds (each undone at the end of its duration):

| kind        | what                                                                  |
| ----------- | --------------------------------------------------------------------- |
| partition   | drop every packet both ways between two parties (no RST)              |
| oneway      | drop the packets from one party to another only                       |
| slow        | rate-limit the link between two parties (queueing latency)            |
| stop        | SIGSTOP a process, SIGCONT it                                          |
| kill_redis  | SIGKILL a Redis node; restart it with its data (persistence on) or empty |
| kill_proxy  | SIGKILL a proxy (or sentinel); restart it                             |
| wipe_proxy  | SIGKILL a proxy, delete its data dir, restart it with `--join`        |
| disk_full   | fill the tmpfs under a proxy's data dir, free it (restart the proxy   |
|             | if it exited on the storage failure, as its supervisor would)         |
| master_flap | `repeat` times: SIGKILL the master, restart it empty `down` s later,  |
|             | next kill `gap` s after that: faster than a full resync.  `chase`:   |
|             | each kill hits whatever is master now (at most 2 kills), else the    |
|             | same node every time (it may be master again, or an empty replica)   |

Survivable by construction: the promise of ack = replica is about ONE node
failing at a time, so a schedule never destroys the data of a node while
another node's data may still be the only other copy.  Data-destroying faults
(kill_redis restarting empty, master_flap) never overlap, are spaced
`RESYNC_S` apart (the diskless-sync delay alone is 5 s), and a chasing flap
kills at most two nodes (the third original node keeps everything).  A loss
the checker reports is therefore one a correct system avoids (as long as the
resyncs finish within RESYNC_S: a slow link on a replication link can delay
one; the fault log shows it).

Pairs for link faults are drawn from proxy<->proxy, proxy<->Redis, Redis<->Redis
and clients<->proxy (for Sentinel: sentinel<->sentinel, sentinel<->Redis,
Redis<->Redis and clients<->sentinel: clients then cannot discover the master).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from .cluster import CLIENTS, ChaosCluster

RESYNC_S = 10.0          # between the end of a data-destroying fault and the start of the next
KINDS = ("partition", "oneway", "slow", "stop", "kill_redis", "kill_proxy", "wipe_proxy", "disk_full",
         "master_flap")
LINK_KINDS = ("partition", "oneway", "slow")
LINK_CLASSES = ("controller-controller", "controller-redis", "redis-redis", "clients-controller")


@dataclass
class FaultSpec:
    at: float                                 # seconds from the start of the schedule
    kind: str
    duration: float
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        ps = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"+{self.at:6.2f}s {self.kind:<11} {self.duration:5.2f}s {ps}"


def make_schedule(seed: int, duration_s: float, kinds: tuple[str, ...] = KINDS, start_s: float = 1.0,
                  persistence: bool = False) -> list[FaultSpec]:
    """A random but reproducible sequence of faults filling `duration_s` seconds."""
    bad = set(kinds) - set(KINDS)
    if bad:
        raise ValueError(f"unknown fault kinds {sorted(bad)}; known: {', '.join(KINDS)}")
    rng = random.Random(seed)
    out: list[FaultSpec] = []
    t = start_s
    destroy_end = -RESYNC_S
    while t < duration_s:
        kind = rng.choice(kinds)
        spec = _spec(rng, kind, t, persistence)
        if destroys_data(spec, persistence):
            spec.at = t = round(max(t, destroy_end + RESYNC_S), 2)
            destroy_end = t + spec.duration
        out.append(spec)
        # mostly one fault at a time; sometimes the next one starts before this one ends
        overlap = rng.random() < 0.25
        t += (spec.duration * rng.uniform(0.3, 0.8) if overlap else spec.duration + rng.uniform(0.5, 2.5))
    return out


# The CI plan: every kind once, survivable (see the module docstring).  The first flap kills
# the master, brings it back empty faster than failure detection (its replicas, which hold
# everything, must not resync from it), then kills whatever is master 1.5-2 s later, before any
# resync could finish; the last one kills the same node three times in a row.
SHORT_PLAN = (   # (start s, kind, overrides)
    (1.0, "partition", {"link": "controller-redis", "a": "leader", "b": "master"}),
    (5.0, "master_flap", {"repeat": 2, "chase": True}),
    (10.0, "oneway", {"link": "controller-controller", "a": "leader", "b": "follower"}),
    (13.0, "stop", {"who": "replica"}),
    (16.0, "kill_proxy", {"who": "leader"}),
    (19.0, "disk_full", {"who": "follower"}),
    (20.0, "partition", {"link": "clients-controller", "a": "clients", "b": "any-controller"}),
    (23.0, "wipe_proxy", {"who": "follower"}),
    (26.0, "kill_redis", {"who": "master", "keep_data": False}),
    (30.0, "slow", {"link": "controller-redis", "a": "any-controller", "b": "master"}),
    (33.0, "partition", {"link": "redis-redis", "a": "master", "b": "replica"}),
    (37.0, "master_flap", {"repeat": 3, "chase": False}),
)


def short_schedule(seed: int, persistence: bool = False) -> list[FaultSpec]:
    """The CI schedule (about 43 s): SHORT_PLAN with durations and the flap's timing drawn
    from `seed` (each fault at most 3 s, so it is healed before the next one starts)."""
    rng = random.Random(seed)
    out = []
    for at, kind, over in SHORT_PLAN:
        spec = _spec(rng, kind, at, persistence)
        spec.params.update(over)
        if kind == "master_flap":
            spec.params.update(over)
            # back faster than down_after_ms (500 ms in the CI test): no failover may have happened yet
            spec.params.update(down=round(rng.uniform(0.05, 0.3), 2), gap=round(rng.uniform(1.5, 2.0), 2))
            spec.duration = round(spec.params["repeat"] * (spec.params["down"] + spec.params["gap"]), 2)
        else:
            spec.duration = min(spec.duration, 3.0)
        out.append(spec)
    return out


def destroys_data(spec: FaultSpec, persistence: bool) -> bool:
    """Does this fault restart a Redis node without its data?"""
    if spec.kind == "master_flap":
        return True
    return spec.kind == "kill_redis" and not (persistence and spec.params.get("keep_data"))


def _spec(rng: random.Random, kind: str, t: float, persistence: bool) -> FaultSpec:
    if kind in LINK_KINDS:
        cls = rng.choice(LINK_CLASSES)
        params: dict[str, Any] = {"link": cls, "a": _role(rng, cls.split("-")[0]), "b": _role(rng, cls.split("-")[1])}
        if kind == "slow":
            params["kbit"] = rng.choice((8, 16, 64))
        return FaultSpec(t, kind, round(rng.uniform(1.5, 6.0), 2), params)
    if kind == "stop":
        what = rng.choice(("redis", "controller"))
        return FaultSpec(t, kind, round(rng.uniform(0.3, 4.0), 2), {"who": _role(rng, what)})
    if kind == "kill_redis":
        keep = persistence and rng.random() < 0.5
        return FaultSpec(t, kind, round(rng.uniform(0.2, 4.0), 2), {"who": _role(rng, "redis"), "keep_data": keep})
    if kind in ("kill_proxy", "wipe_proxy", "disk_full"):
        return FaultSpec(t, kind, round(rng.uniform(0.5, 5.0), 2), {"who": _role(rng, "controller")})
    if kind == "master_flap":
        chase = rng.random() < 0.5
        repeat = 2 if chase else rng.randint(2, 4)
        down, gap = round(rng.uniform(0.05, 1.0), 2), round(rng.uniform(1.0, 3.0), 2)
        return FaultSpec(t, kind, round(repeat * (down + gap), 2),
                         {"repeat": repeat, "down": down, "gap": gap, "chase": chase})
    raise ValueError(kind)


def _role(rng: random.Random, what: str) -> str:
    if what == "redis":
        return rng.choice(("master", "master", "replica", "any-redis"))
    if what == "controller":
        return rng.choice(("leader", "follower", "any-controller"))
    return CLIENTS


# ---------------------------------------------------------------------------
# the injector
# ---------------------------------------------------------------------------

@dataclass
class LogEntry:
    t: float              # seconds since the schedule started
    action: str           # apply | heal | note | error
    kind: str
    detail: str

    def line(self) -> str:
        return f"+{self.t:7.3f}s {self.action:<5} {self.kind:<11} {self.detail}"


class Injector(threading.Thread):
    """Plays a schedule on its own thread; `stop()` ends it and heals whatever is active."""

    def __init__(self, cluster: ChaosCluster, schedule: list[FaultSpec], seed: int,
                 echo: Callable[[str], None] | None = None) -> None:
        super().__init__(name="chaos-injector", daemon=True)
        self.cluster = cluster
        self.schedule = sorted(schedule, key=lambda s: s.at)
        self.rng = random.Random(seed ^ 0x5EED)
        self.echo = echo
        self.log: list[LogEntry] = []
        self.t0 = time.monotonic()
        self._halt = threading.Event()
        self._lock = threading.Lock()
        # (due, seq, action, kind, what, log label): undos, and the later steps of a master_flap
        self._pending: list[tuple[float, int, Callable[[], None], str, str, str]] = []
        self._seq = 0
        self.crashed: BaseException | None = None

    # -- log ---------------------------------------------------------------------------------
    def note(self, action: str, kind: str, detail: str) -> None:
        e = LogEntry(round(time.monotonic() - self.t0, 3), action, kind, detail)
        with self._lock:
            self.log.append(e)
        if self.echo:
            self.echo(e.line())

    def log_lines(self) -> list[str]:
        with self._lock:
            return [e.line() for e in self.log]

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        self.t0 = time.monotonic()
        super().start()

    def run(self) -> None:
        try:
            queue = list(self.schedule)
            while not self._halt.is_set():
                now = time.monotonic() - self.t0
                self._run_due_undos(now)
                if queue and queue[0].at <= now:
                    spec = queue.pop(0)
                    try:
                        self._apply(spec)
                    except Exception as exc:  # noqa: BLE001 - logged; the schedule goes on
                        self.note("error", spec.kind, f"{type(exc).__name__}: {exc}")
                    continue
                if not queue and not self._pending:
                    break
                with self._lock:
                    dues = [p[0] for p in self._pending] + ([queue[0].at] if queue else [])
                self._halt.wait(max(0.0, min(0.05, min(dues) - now)))
        except BaseException as exc:  # noqa: BLE001
            self.crashed = exc
        finally:
            self.heal_all()

    def done(self) -> bool:
        return not self.is_alive()

    def stop(self, timeout: float = 60.0) -> None:
        self._halt.set()
        self.join(timeout)

    def _later(self, delay: float, undo: Callable[[], None], kind: str, what: str, label: str = "heal") -> None:
        with self._lock:
            self._seq += 1
            self._pending.append((time.monotonic() - self.t0 + delay, self._seq, undo, kind, what, label))

    def _run_due_undos(self, now: float) -> None:
        with self._lock:
            due = sorted(p for p in self._pending if p[0] <= now)
            self._pending = [p for p in self._pending if p[0] > now]
        for _, _, undo, kind, what, label in due:
            try:
                undo()
                if label:
                    self.note(label, kind, what)
            except Exception as exc:  # noqa: BLE001
                self.note("error", kind, f"undo of {what} failed: {type(exc).__name__}: {exc}")

    def heal_all(self) -> None:
        """Run every pending undo now (in due order)."""
        with self._lock:
            pending, self._pending = sorted(self._pending), []
        for _, _, undo, kind, what, label in pending:
            if not label:
                continue            # a step not yet taken (the rest of a master_flap): skip it
            try:
                undo()
                self.note(label, kind, what + " (early: schedule over)")
            except Exception as exc:  # noqa: BLE001
                self.note("error", kind, f"undo of {what} failed: {type(exc).__name__}: {exc}")

    # -- roles -------------------------------------------------------------------------------
    def resolve(self, role: str) -> str:
        c = self.cluster
        redis_names = sorted(c.redis)
        ctl_names = sorted(c.controllers)
        if role == CLIENTS:
            return CLIENTS
        if role in ("master", "replica"):
            master = c.current_master()
            if role == "master":
                return master or self.rng.choice(redis_names)
            return self.rng.choice([n for n in redis_names if n != master] or redis_names)
        if role == "any-redis":
            return self.rng.choice(redis_names)
        if role in ("leader", "follower"):
            leader = c.leader()
            if role == "leader" and leader:
                return leader
            return self.rng.choice([n for n in ctl_names if n != leader] or ctl_names)
        if role == "any-controller":
            return self.rng.choice(ctl_names)
        raise ValueError(f"unknown role {role!r}")

    def _pair(self, spec: FaultSpec) -> tuple[str, str]:
        a = self.resolve(spec.params["a"])
        b = self.resolve(spec.params["b"])
        if a == b:                           # e.g. master and any-redis hit the same node
            pool = sorted(self.cluster.redis) if a in self.cluster.redis else sorted(self.cluster.controllers)
            b = self.rng.choice([n for n in pool if n != a])
        return a, b

    # -- faults ------------------------------------------------------------------------------
    def _apply(self, spec: FaultSpec) -> None:
        c = self.cluster
        k, p, d = spec.kind, spec.params, spec.duration
        if k in LINK_KINDS:
            a, b = self._pair(spec)
            ea, eb = c.link(a, b)
            if k == "partition":
                fid = c.net.drop(ea, eb, both_ways=True)
                what = f"{a} <-/-> {b}"
            elif k == "oneway":
                fid = c.net.drop(ea, eb, both_ways=False)
                what = f"{a} --/-> {b}"
            else:
                fid = c.net.slow(ea, eb, p["kbit"])
                what = f"{a} <~{p['kbit']}kbit~> {b}"
            self.note("apply", k, f"{what} for {d}s ({p['link']})")
            self._later(d, lambda: c.net.heal(fid), k, what)
        elif k == "stop":
            who = self.resolve(p["who"])
            proc = c.process(who)
            proc.stop()
            self.note("apply", k, f"SIGSTOP {who} ({p['who']}) for {d}s")
            self._later(d, proc.cont, k, f"SIGCONT {who}")
        elif k == "kill_redis":
            who = self.resolve(p["who"])
            c.process(who).kill()
            keep = bool(p["keep_data"]) and c.persistence
            self.note("apply", k, f"SIGKILL {who} ({p['who']}); restart {'with its data' if keep else 'EMPTY'} "
                                  f"in {d}s")
            self._later(d, lambda: c.restart_redis(who, keep), k, f"restart {who} {'with data' if keep else 'empty'}")
        elif k in ("kill_proxy", "wipe_proxy"):
            who = self.resolve(p["who"])
            proc = c.process(who)
            proc.kill()
            if k == "wipe_proxy":
                disks = getattr(c, "disks", {})
                if who in disks:
                    disks[who].wipe()
                    detail = f"SIGKILL {who} ({p['who']}), its data dir deleted; restart in {d}s"
                else:
                    detail = f"SIGKILL {who} ({p['who']}) (no data dir to lose); restart in {d}s"
            else:
                detail = f"SIGKILL {who} ({p['who']}); restart in {d}s"
            self.note("apply", k, detail)
            if k == "wipe_proxy" and hasattr(c, "rejoin"):
                # a proxy without its data refuses to start on its own; the operator's step is --join
                self._later(d, lambda: c.rejoin(who), k, f"restart {who} with --join")
            else:
                self._later(d, lambda: None if proc.alive() else proc.spawn(), k, f"restart {who}")
        elif k == "disk_full":
            who = self.resolve(p["who"])
            disks = getattr(c, "disks", {})
            if who not in disks:
                self.note("note", k, f"{who} has no data dir on a small fs: skipped")
                return
            n = disks[who].fill()
            self.note("apply", k, f"{who} ({p['who']}) data dir full ({n} bytes of filler) for {d}s")
            proc = c.process(who)

            def free() -> None:
                disks[who].unfill()
                if not proc.alive():    # it exits when Raft storage fails; a supervisor starts it again
                    proc.spawn()
                else:
                    self._respawn_on_storage_exit(who, proc, k)
            self._later(d, free, k, f"free {who}'s data dir (restart it if it exited)")
        elif k == "master_flap":
            self._master_flap(spec)
        else:
            raise ValueError(k)

    def _respawn_on_storage_exit(self, who: str, proc, kind: str, checks: int = 100) -> None:
        """A proxy whose Raft storage failed exits with status 1 once it has shut down (1-2 s),
        which may end after its disk was freed: its supervisor starts it again whenever that
        happens (seed 7: not restarted, it left the cluster without a quorum for a minute).
        Watched for 10 s after the heal; a proxy killed by another fault (-9) is that fault's
        to restart, and one that never failed stays as it is."""
        if proc.alive():
            if checks > 0:
                self._later(0.1, lambda: self._respawn_on_storage_exit(who, proc, kind, checks - 1), kind, "",
                            label="")
        elif proc.returncode() == 1:
            proc.spawn()
            self.note("heal", kind, f"restart {who}: it exited on the storage failure after its disk was freed")

    def _flap_master(self) -> tuple[Callable[[], str], str]:
        """How a master flap finds its master (called at each kill), and what the log calls it."""
        return lambda: self.resolve("master"), "master"

    def _master_flap(self, spec: FaultSpec) -> None:
        """Kill the master, bring it back empty after `down` s, kill the (new) master `gap` s
        later, ...: each kill lands before the previous node could finish a full resync."""
        c = self.cluster
        p = spec.params
        master, called = self._flap_master()
        offset = 0.0
        chase = p.get("chase", True)
        first: list[str] = []
        for i in range(p["repeat"]):
            def kill(i=i):
                who = master() if chase or not first else first[0]
                first.append(who)
                if not c.process(who).alive():
                    self.note("note", "master_flap", f"#{i + 1}: {who} is not running: skipped")
                    return
                c.process(who).kill()
                role = called if i == 0 or chase else "the first flap victim"
                self.note("apply", "master_flap", f"#{i + 1}/{p['repeat']}: SIGKILL {role} {who}; "
                                                  f"back EMPTY in {p['down']}s")
                self._later(p["down"], lambda: c.restart_redis(who, keep_data=False), "master_flap",
                            f"#{i + 1}: restart {who} empty")
            if offset == 0:
                kill()
            else:
                self._later(offset, kill, "master_flap", f"#{i + 1}", label="")
            offset += p["down"] + p["gap"]


def schedule_json(schedule: list[FaultSpec]) -> list[dict]:
    return [asdict(s) for s in schedule]


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = set(kinds) - set(KINDS)
    if bad:
        raise ValueError(f"unknown fault kinds {sorted(bad)}; known: {', '.join(KINDS)}")
    return kinds


__all__ = ["KINDS", "FaultSpec", "Injector", "LogEntry", "make_schedule", "short_schedule", "parse_kinds",
           "schedule_json", "destroys_data"]
