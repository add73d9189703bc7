"""Running redis-benchmark against the targets, in alternating rounds, and parsing its CSV."""

from __future__ import annotations

import csv
import io
import os
import resource
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

from .proccpu import cpu_and_sys_seconds, machine_ticks, steal_percent
from .procs import HOST
from .targets import Target

# Columns of `redis-benchmark --csv` (7.x) kept in a Sample, CSV name -> field name.
CSV_FIELDS = {
    "rps": "rps",
    "avg_latency_ms": "avg_ms",
    "min_latency_ms": "min_ms",
    "p50_latency_ms": "p50_ms",
    "p95_latency_ms": "p95_ms",
    "p99_latency_ms": "p99_ms",
    "max_latency_ms": "max_ms",
}


class BenchmarkError(RuntimeError):
    """redis-benchmark failed, timed out, or printed no usable CSV."""


@dataclass
class Sample:
    """One test (SET or GET) of one redis-benchmark run against one target."""

    target: str
    round: int
    pipeline: int
    test: str
    requests: int
    rps: float
    avg_ms: float | None = None
    min_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    # CPU the target's process (and the redis-server behind it) used in the run, by the
    # kernel's accounting, per command of the run (its tests together: SET and GET)
    cpu_us_per_cmd: float | None = None
    backend_cpu_us_per_cmd: float | None = None
    # the part of cpu_us_per_cmd the kernel spent on the target's behalf (system time: its
    # socket reads, writes and waits, whatever language it is written in)
    sys_us_per_cmd: float | None = None
    # CPU redis-benchmark itself used per command: on a machine whose cores the client, the
    # target and Redis share, what all three spend decides the ops/s (report.cpu_budget)
    client_cpu_us_per_cmd: float | None = None
    # the machine's steal time during the run, % of all CPU time (proccpu.machine_ticks)
    steal_pct: float | None = None

    def to_dict(self) -> dict[str, object]:
        """Plain dict for the JSON report."""
        return asdict(self)


@dataclass
class BenchSettings:
    """What every redis-benchmark run is asked to do."""

    tests: list[str]
    clients: int
    requests: dict[int, int]  # pipeline depth -> requests per test
    timeout_s: float


def bench_argv(port: int, settings: BenchSettings, pipeline: int,
               client_args: Sequence[str] = ()) -> list[str]:
    """The redis-benchmark command line for one run (`client_args`: e.g. --tls --cacert ...)."""
    return ["redis-benchmark", "-h", HOST, "-p", str(port), *client_args, "-t", ",".join(settings.tests),
            "-c", str(settings.clients), "-n", str(settings.requests[pipeline]),
            "-P", str(pipeline), "--csv"]


def parse_csv(text: str) -> dict[str, dict[str, float]]:
    """Parse `redis-benchmark --csv` output into {TEST: {field: value}}.

    Understands both the 7.x header ("test","rps","avg_latency_ms",...,
    "p50_latency_ms",...) and the headerless 6.x form ("SET","12345.67").
    Lines before the 7.x header are skipped: with --cluster, redis-benchmark
    first lists the masters it found ("Cluster has 3 master nodes: ...").
    """
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    start = next((i for i, row in enumerate(rows) if row[0] == "test"), None)
    if start is not None:
        header, body = rows[start], rows[start + 1:]
    else:
        header, body = ["test", "rps"], rows
    results: dict[str, dict[str, float]] = {}
    for row in body:
        values = dict(zip(header, row))
        test = values.pop("test", "").upper()
        try:
            results[test] = {CSV_FIELDS[k]: float(v) for k, v in values.items() if k in CSV_FIELDS}
        except ValueError:
            continue
    return results


class TargetDied(BenchmarkError):
    """The target's process exited while redis-benchmark was running against it."""


WATCH_INTERVAL_S = 0.5


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a child's whole process group and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def children_cpu_seconds() -> float:
    """User + system CPU of this process's children that ended and were waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: Sequence[str], timeout_s: float,
         still_ok: Callable[[], bool]) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group, watching `still_ok` while it runs.

    The group is killed on timeout, on Ctrl-C, or as soon as `still_ok()`
    turns false (redis-benchmark waits forever when its server dies).
    """
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=WATCH_INTERVAL_S)
                break
            except subprocess.TimeoutExpired:
                if not still_ok():
                    raise TargetDied("target process exited during the run") from None
                if time.monotonic() > deadline:
                    raise BenchmarkError(f"redis-benchmark timed out after {timeout_s:.0f}s") \
                        from None
    except BaseException:
        _kill_group(proc)
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)


def run_once(target: Target, settings: BenchSettings, pipeline: int, round_no: int,
             is_alive: Callable[[Target], bool]) -> list[Sample]:
    """Run redis-benchmark once against `target`; one Sample per test."""
    argv = bench_argv(target.port, settings, pipeline, target.client_args)
    pids = [p for p in (target.pid, target.backend_pid) if p]
    cpu_before, machine_before, client_before = _cpu(pids), machine_ticks(), children_cpu_seconds()
    done = _run(argv, settings.timeout_s, lambda: is_alive(target))
    client_cpu = children_cpu_seconds() - client_before     # (redis-benchmark, reaped by `_run`)
    steal = steal_percent(machine_before, machine_ticks())
    cpu_used = {pid: (after[0] - cpu_before[pid][0], after[1] - cpu_before[pid][1])
                for pid, after in _cpu(pids).items() if pid in cpu_before}
    commands = settings.requests[pipeline] * len(settings.tests)

    def per_cmd(pid: int, part: int = 0) -> float | None:
        return round(cpu_used[pid][part] / commands * 1e6, 2) if pid in cpu_used else None
    parsed = parse_csv(done.stdout)
    missing = [t for t in settings.tests if t.upper() not in parsed]
    if done.returncode != 0 or missing:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BenchmarkError(f"redis-benchmark exit {done.returncode}, missing {missing}: "
                             + " | ".join(detail))
    return [Sample(target.name, round_no, pipeline, test.upper(), settings.requests[pipeline],
                   **parsed[test.upper()], cpu_us_per_cmd=per_cmd(target.pid),
                   backend_cpu_us_per_cmd=per_cmd(target.backend_pid), sys_us_per_cmd=per_cmd(target.pid, 1),
                   client_cpu_us_per_cmd=round(client_cpu / commands * 1e6, 2), steal_pct=steal)
            for test in settings.tests]


def _cpu(pids: Sequence[int]) -> dict[int, tuple[float, float]]:
    """(CPU, of it system) seconds used so far by each of `pids` still running (see proccpu)."""
    out = {}
    for pid in pids:
        try:
            out[pid] = cpu_and_sys_seconds(pid)
        except OSError:
            pass
    return out


def schedule(targets: Sequence[Target], rounds: int,
             pipelines: Sequence[int]) -> Iterator[tuple[int, int, Target]]:
    """Yield (round, pipeline, target) so that targets alternate.

    Every round runs every (pipeline, target) pair once; the target order is
    rotated by one each round so no target always runs first or right after
    the same neighbour.
    """
    for round_no in range(rounds):
        shift = round_no % len(targets) if targets else 0
        order = list(targets[shift:]) + list(targets[:shift])
        for pipeline in pipelines:
            for target in order:
                yield round_no, pipeline, target


ProgressFn = Callable[[int, int, Target, list[Sample] | None, str], None]


def run_rounds(targets: Sequence[Target], settings: BenchSettings, rounds: int,
               pipelines: Sequence[int], is_alive: Callable[[Target], bool],
               progress: ProgressFn) -> tuple[list[Sample], dict[str, str]]:
    """Run the whole schedule; return the samples and {target: error} for failed targets.

    A target whose run fails is dropped from the later rounds when its
    process has died; otherwise the failure is recorded and it goes on.
    """
    samples: list[Sample] = []
    errors: dict[str, str] = {}
    dead: set[str] = set()
    for round_no, pipeline, target in schedule(targets, rounds, pipelines):
        if target.name in dead:
            continue
        try:
            got = run_once(target, settings, pipeline, round_no, is_alive)
        except BenchmarkError as exc:
            errors[target.name] = str(exc)
            if not is_alive(target):
                dead.add(target.name)
                errors[target.name] += " (process died; dropped from later rounds)"
            progress(round_no, pipeline, target, None, str(exc))
            continue
        samples.extend(got)
        progress(round_no, pipeline, target, got, "")
    return samples, errors
