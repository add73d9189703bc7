"""What `benchmarks/cluster.py` measures, apart from starting the cluster and printing.

* `spread`: how a key list spreads over the shards (`proxy.routing.keyslot`, the
  same CRC16 as Redis)
* `time_calls`: ops/s and per-call latency of one client calling one command in
  a loop (MGET through the proxy, `mget_nonatomic` of redis-py's RedisCluster)
* `ack_gaps`: the longest time between two acknowledged writes of a `Writer`
  (benchmarks/failover_lib.py) across a fault, and the time from the fault to
  the first acknowledged write sent after it

No process is started here; the functions take callables and write records.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Protocol

from proxy.routing.keyslot import key_slot


class Shard(Protocol):
    """What `spread` needs of a cluster_lib.ShardView."""

    def serves(self, slot: int) -> bool: ...


def spread(keys: Sequence[str], shards: Sequence[Shard]) -> list[int]:
    """How many of `keys` each shard owns (by CRC16 slot, hash tags honoured)."""
    counts = [0] * len(shards)
    for key in keys:
        slot = key_slot(key.encode())
        for i, shard in enumerate(shards):
            if shard.serves(slot):
                counts[i] += 1
                break
    return counts


# ---------------------------------------------------------------------------
# a command in a loop
# ---------------------------------------------------------------------------

@dataclass
class CallRun:
    """One loop of `calls` calls of one command by one client."""

    target: str
    round: int
    calls: int
    seconds: float
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    wrong: int          # replies that differed from the expected one

    def to_dict(self) -> dict[str, object]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        raise ValueError("no values")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def time_calls(target: str, round_no: int, call: Callable[[], object], calls: int,
               expected: object) -> CallRun:
    """Call `call` `calls` times in a row; every reply is compared with `expected`."""
    latencies = []
    wrong = 0
    start = time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        reply = call()
        latencies.append(time.perf_counter() - t0)
        if reply != expected:
            wrong += 1
    seconds = time.perf_counter() - start
    latencies.sort()
    return CallRun(target, round_no, calls, seconds, calls / seconds if seconds > 0 else 0.0,
                   percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000, wrong)


def alternate(targets: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, target) pairs, the target order rotated each round so drift hits all alike."""
    out = []
    for r in range(rounds):
        shift = r % len(targets)
        out += [(r, t) for t in [*targets[shift:], *targets[:shift]]]
    return out


def median_by_target(runs: Sequence[CallRun]) -> dict[str, dict[str, float]]:
    """Per target: the median ops/s, p50 and p99 over its rounds, and the wrong replies in all."""
    out: dict[str, dict[str, float]] = {}
    for target in dict.fromkeys(r.target for r in runs):
        mine = [r for r in runs if r.target == target]
        out[target] = {"ops_per_s": statistics.median(r.ops_per_s for r in mine),
                       "p50_ms": statistics.median(r.p50_ms for r in mine),
                       "p99_ms": statistics.median(r.p99_ms for r in mine),
                       "wrong": sum(r.wrong for r in mine), "rounds": len(mine)}
    return out


# ---------------------------------------------------------------------------
# gaps in acknowledged writes
# ---------------------------------------------------------------------------

class Write(Protocol):
    """What `ack_gaps` reads of a failover_lib.WriteResult."""

    sent: float
    done: float
    ok: bool


@dataclass
class AckGaps:
    """One writer's view of a fault at `t_fault` (monotonic seconds)."""

    acked_after_fault: int
    failed_after_fault: int
    longest_gap_s: float | None        # longest time between two consecutive acknowledgements
    longest_gap_at_s: float | None     # when that gap began, relative to the fault
    unavailable_s: float | None        # fault -> first ack of a write sent after it


def ack_gaps(writes: Sequence[Write], t_fault: float, t_end: float) -> AckGaps:
    """Gaps between acknowledged writes from the last ack before `t_fault` to `t_end`.

    The last acknowledgement before the fault is the start point, so a pause that
    spans the fault counts in full; `t_end` (when the writers were told to stop) is
    the end point, so a writer still waiting then has its gap measured up to it (a
    lower bound), and one with no acknowledgement after the fault has no `unavailable_s`.
    """
    acks = sorted(w.done for w in writes if w.ok and w.done <= t_end)
    before = [t for t in acks if t < t_fault]
    points = ([before[-1]] if before else [t_fault]) + [t for t in acks if t >= t_fault] + [t_end]
    after = [w for w in writes if w.sent >= t_fault and w.done <= t_end]
    gaps = [(b - a, a) for a, b in pairwise(points)]
    longest, at = max(gaps) if gaps else (None, None)
    first = min((w.done for w in after if w.ok), default=None)
    return AckGaps(sum(1 for w in after if w.ok), sum(1 for w in after if not w.ok),
                   longest, None if at is None else at - t_fault,
                   None if first is None else first - t_fault)
