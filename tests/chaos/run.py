"""One chaos run: workloads on every endpoint, a fault schedule, healing, then the checker.

Used by the short CI test (tests/chaos/test_chaos_short.py) and by the long run
(benchmarks/chaos).  The cluster must be started; this process moves itself into
the `clients` cgroup for the run (so client <-> proxy / Redis links can be cut)
and back at the end.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from tests.integration.harness import HarnessError, redis_client, wait_until

from .checker import Findings, MasterSampler, evaluate, longest_gap, read_state
from .cluster import ChaosCluster
from .faults import FaultSpec, Injector, schedule_json
from .operator_watch import OperatorWatch
from .workloads import Workload, standard_workloads

CLIENT_TIMEOUT_S = 3.0
WARMUP_TIMEOUT_S = 30.0


class ResultRecord:
    """What a chaos run's result (single set: RunResult; cluster: benchmarks'
    ClusterRunResult) says alike: split-brain time and the JSON record."""

    def split_brain_s(self) -> float:
        return sum(w[1] - w[0] for w in self.split_brain_windows)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["findings"] = self.findings.to_dict()
        d["split_brain_s"] = round(self.split_brain_s(), 3)
        return d


@dataclass
class RunResult(ResultRecord):
    target: str
    seed: int
    ack: str
    persistence: bool
    schedule: list[dict]
    fault_log: list[str]
    findings: Findings
    converged_s: float | None            # heal -> one master, replicas following it, controllers agreeing
    convergence_error: str | None
    synced_error: str | None
    split_brain_windows: list[tuple[float, float, tuple[str, ...]]]   # relative to the schedule's start
    split_brain_samples: int
    samples: int
    unavailable_s: float                 # longest time without any acknowledged write (faults -> healed)
    unavailable_at: float                # when that gap began (relative)
    acks_by_kind: dict[str, int]
    faults_s: float                      # how long the schedule ran
    epochs_end: dict[str, Any] = field(default_factory=dict)
    injector_error: str | None = None
    operator_steps: list[str] = field(default_factory=list)   # what the run did as the operator, when asked

    def summary(self) -> str:
        f = self.findings
        windows = [(round(a, 1), round(b, 1), m) for a, b, m in self.split_brain_windows][:8]
        lines = [f"target={self.target} ack={self.ack} seed={self.seed} persistence={self.persistence}",
                 f"acknowledged: {self.acks_by_kind}; refused {f.refused}, unknown outcome {f.unknown}",
                 f"lost: writes {f.lost_writes}/{f.acked_writes}, increments {f.increments_lost}/"
                 f"{f.acked_increments}, Lua list members {f.list_members_lost}, queue items {f.queue_lost}/"
                 f"{f.queue_pushed} (duplicates {len(f.queue_duplicates)}, in-flight pops "
                 f"{f.queue_inflight_pops}), pub/sub misdelivered {len(f.pubsub_misdelivered)}",
                 f"lost writes by the second (from the schedule's start) they were acknowledged in: "
                 f"{f.lost_by_ack_second}",
                 f"split-brain windows: {len(self.split_brain_windows)} ({self.split_brain_samples} of "
                 f"{self.samples} samples) {windows}",
                 f"longest time without an acknowledged write: {self.unavailable_s:.2f}s from "
                 f"+{self.unavailable_at:.2f}s",
                 "converged after healing: " + (f"{self.converged_s:.2f}s" if self.converged_s is not None
                                                 else f"NO ({self.convergence_error})"),
                 f"epochs at the end: {self.epochs_end}"]
        if self.synced_error:
            lines.append(f"replicas not synced: {self.synced_error}")
        if self.injector_error:
            lines.append(f"injector: {self.injector_error}")
        for step in self.operator_steps:
            lines.append(f"operator step: {step}")
        return "\n".join(lines)


def wait_warm(workloads: list[Workload], timeout: float) -> None:
    """Every workload (consumers aside) has had at least one acknowledgement."""
    def warm() -> bool:
        for w in workloads:
            if w.crashed:
                raise HarnessError(f"{w.name} crashed: {w.crashed!r}")
        return all(w.ledger.acks for w in workloads if w.kind != "queue-pop")
    wait_until(warm, timeout, interval=0.1,
               message=lambda: "every workload to get an acknowledgement; none yet: "
                               f"{[w.ledger.name for w in workloads if not w.ledger.acks and w.kind != 'queue-pop']}"
                               f"; errors {[dict(w.ledger.errors) for w in workloads if not w.ledger.acks][:3]}")


def read_back_from(cluster: ChaosCluster) -> str:
    """The node whose data counts: the one master, or, when the cluster never came back
    to one master (a split brain left behind), the one its controllers name, which is
    where clients read and write."""
    try:
        return cluster.master_by_roles()
    except HarnessError:
        named = cluster.current_master()
        if named is None:
            raise
        return named


@dataclass
class Played:
    """The times and convergence of one played schedule (`play`)."""

    t0: float                           # the schedule's start
    t_heal: float                       # the schedule over, everything healed
    t_end: float                        # converged (or given up on)
    converged_s: float | None
    convergence_error: str | None
    operator_steps: list[str]


def play(cluster: Any, workloads: list[Workload], sampler: Any, injector: Injector, watch: OperatorWatch | None,
         schedule: list[FaultSpec], *, converge_timeout_s: float, post_heal_s: float,
         second_chance_s: float) -> Played:
    """The run itself, for any kind of cluster (this module's single set, the benchmark's
    sharded one): start the workloads and, once each has an acknowledgement, the sampler,
    the injector and the operator watch; wait for the schedule's end; heal everything; give
    convergence `converge_timeout_s`, and writes `post_heal_s` more; stop everything (the
    clients' cgroup last). When convergence failed: what the controllers ask of an operator
    is done, and it gets `second_chance_s` more (the checker needs a master to read from)."""
    converged_s = conv_err = None
    t0 = t_heal = t_end = time.monotonic()
    try:
        for w in workloads:
            w.start()
        wait_warm(workloads, WARMUP_TIMEOUT_S)
        sampler.start()
        injector.start()
        if watch is not None:
            watch.start()
        t0 = injector.t0
        last = max((s.at + s.duration for s in schedule), default=0.0)
        injector.join(last + 120.0)
        if injector.is_alive():
            injector.stop()
        t_heal = time.monotonic()
        injector.note("note", "heal", "schedule over: SIGCONT all, start what is dead, free disks")
        cluster.revive_all()
        try:
            converged_s = cluster.wait_converged(converge_timeout_s)
            injector.note("note", "converged", f"in {converged_s:.2f}s")
        except HarnessError as exc:
            conv_err = str(exc)
            injector.note("note", "converged", f"NOT within {converge_timeout_s}s: {exc}")
        t_end = time.monotonic()
        time.sleep(post_heal_s)     # writes go on for a moment after healing (observation window)
    finally:
        try:
            for w in workloads:
                w.stop_soon()
            for w in workloads:
                w.stop()
            if sampler.is_alive():
                sampler.stop()
            if watch is not None and watch.is_alive():
                watch.stop()
            if injector.is_alive():
                injector.stop()
        finally:
            if cluster.clients_cg is not None:
                cluster.clients_cg.close()
    if watch is not None and conv_err is not None:
        watch.act_if_asked()
    operator_steps = list(watch.steps) if watch is not None else []
    # a second, bounded chance to converge before reading back (the checker needs one master)
    if conv_err is not None:
        try:
            cluster.wait_converged(second_chance_s)
        except HarnessError as exc:
            conv_err += f"; still not converged {second_chance_s:.0f} s later: {exc}"
    return Played(t0, t_heal, t_end, converged_s, conv_err, operator_steps)


def run_chaos(cluster: ChaosCluster, schedule: list[FaultSpec], *, seed: int, ack: str,
              converge_timeout_s: float = 10.0, post_heal_s: float = 2.0, second_chance_s: float = 30.0,
              sync_timeout_s: float = 60.0, operator: bool = False,
              echo: Callable[[str], None] | None = print) -> RunResult:
    """Run `schedule` against the started `cluster` under the standard workloads; heal; check.

    After healing, convergence gets `converge_timeout_s` (the promise checked); when it
    fails, `second_chance_s` more (the checker needs one master to read from), then replicas
    get `sync_timeout_s` to catch up before the data is read back from the master. With
    `operator` (the long benchmark, whose schedules may destroy every copy of the last
    writes), an `OperatorWatch` does what controllers holding writes for the operator ask,
    during the run and once more after healing, so the checker counts what the operator's
    choice lost; without it (the short CI test, whose schedule is survivable) such a run
    fails to converge."""
    cluster.enter_clients_cgroup()
    workloads = standard_workloads(cluster.client_factories(CLIENT_TIMEOUT_S))
    sampler = MasterSampler(cluster)
    injector = Injector(cluster, schedule, seed, echo=echo)
    watch = OperatorWatch(cluster, lambda text: injector.note("note", "operator", text)) if operator else None
    played = play(cluster, workloads, sampler, injector, watch, schedule, converge_timeout_s=converge_timeout_s,
                  post_heal_s=post_heal_s, second_chance_s=second_chance_s)
    t0, t_heal, t_end, conv_err = played.t0, played.t_heal, played.t_end, played.convergence_error
    synced_err = None
    try:
        cluster.wait_synced(sync_timeout_s)
    except HarnessError as exc:
        synced_err = str(exc)
    master = cluster.redis[read_back_from(cluster)]
    with redis_client(master.port, timeout=30, decode=True) as c:
        state = read_state(c, [w.ledger for w in workloads])
    findings = evaluate([w.ledger for w in workloads], state,
                        crashed=[f"{w.name}: {w.crashed!r}" for w in workloads if w.crashed], t0=t0)
    acks = Counter()
    for w in workloads:
        acks[w.kind] += len(w.ledger.acks)
    write_acks = [t for w in workloads for t in w.ledger.acks]
    gap, gap_at = longest_gap(write_acks, t0, t_end)
    windows = [(a - t0, b - t0, m) for a, b, m in sampler.windows()]
    return RunResult(
        target=cluster.kind, seed=seed, ack=ack, persistence=cluster.persistence,
        schedule=schedule_json(schedule), fault_log=injector.log_lines(), findings=findings,
        converged_s=played.converged_s, convergence_error=conv_err, synced_error=synced_err,
        split_brain_windows=windows, split_brain_samples=sum(1 for _, m in sampler.samples if len(m) >= 2),
        samples=len(sampler.samples), unavailable_s=gap, unavailable_at=gap_at - t0, acks_by_kind=dict(acks),
        faults_s=t_heal - t0, epochs_end=cluster.epochs(),
        injector_error=repr(injector.crashed) if injector.crashed else None, operator_steps=played.operator_steps)
