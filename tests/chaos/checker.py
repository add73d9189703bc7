"""What must hold after the faults: the data every client was told is written, and one agreed master.

`read_state` reads, from the one Redis master left after healing, every key the
workloads' ledgers name; `evaluate` (pure: ledgers + state in, findings out)
compares them.  `MasterSampler` samples every node's role while the faults run
(split-brain windows: two nodes answering `role:master` at once);
`longest_gap` is the unavailability (the longest time without any
acknowledged write).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from .workloads import QUEUE_KEY, Ledger

SHOW = 10        # examples kept per finding


@dataclass
class State:
    """The data as the final master holds it."""

    values: dict[str, str | None] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)


@dataclass
class Findings:
    acked_writes: int = 0                     # keys written with an acknowledgement
    lost_writes: int = 0                      # ... missing or different on the final master
    lost_examples: list[str] = field(default_factory=list)
    lost_by_workload: dict[str, int] = field(default_factory=dict)
    lost_by_ack_second: dict[int, int] = field(default_factory=dict)   # when the lost writes were acked (s, relative)
    acked_increments: int = 0
    counters_below: dict[str, tuple[int, int]] = field(default_factory=dict)   # key -> (final, acked)
    increments_lost: int = 0                  # sum of (acked - final) over those counters
    list_members_lost: int = 0
    queue_pushed: int = 0
    queue_delivered: int = 0
    queue_duplicates: dict[str, int] = field(default_factory=dict)             # item -> times delivered
    queue_lost: int = 0                       # acked, never delivered, not in the queue (minus in-flight pops)
    queue_inflight_pops: int = 0
    pubsub_misdelivered: list[tuple[str, str]] = field(default_factory=list)
    pubsub_received: int = 0
    refused: int = 0
    unknown: int = 0
    crashed: list[str] = field(default_factory=list)

    def data_loss(self) -> int:
        """Every acknowledged effect that is gone."""
        return self.lost_writes + self.increments_lost + self.list_members_lost + self.queue_lost

    def problems(self) -> list[str]:
        """What `ack = replica` forbids, one sentence each (empty: all good)."""
        out = []
        if self.lost_writes:
            out.append(f"{self.lost_writes} of {self.acked_writes} acknowledged writes are missing on the final "
                       f"master ({self.lost_by_workload}); e.g. {self.lost_examples[:5]}")
        if self.counters_below:
            out.append(f"{len(self.counters_below)} counters are below their acknowledged increments "
                       f"({self.increments_lost} increments lost): {dict(list(self.counters_below.items())[:5])}")
        if self.list_members_lost:
            out.append(f"{self.list_members_lost} acknowledged Lua RPUSH members are missing")
        if self.queue_duplicates:
            out.append(f"{len(self.queue_duplicates)} queue items were delivered more than once: "
                       f"{dict(list(self.queue_duplicates.items())[:5])}")
        if self.queue_lost:
            out.append(f"{self.queue_lost} acknowledged queue items were never delivered and are not in the queue "
                       f"(after allowing {self.queue_inflight_pops} BRPOPs whose reply was lost)")
        if self.pubsub_misdelivered:
            out.append(f"pub/sub messages delivered that were not published to that channel: "
                       f"{self.pubsub_misdelivered[:5]}")
        if self.crashed:
            out.append(f"workload threads crashed: {self.crashed}")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["counters_below"] = {k: list(v) for k, v in list(self.counters_below.items())[:SHOW]}
        d["queue_duplicates"] = dict(list(self.queue_duplicates.items())[:SHOW])
        d["pubsub_misdelivered"] = self.pubsub_misdelivered[:SHOW]
        d["data_loss"] = self.data_loss()
        return d


def read_state(client: Any, ledgers: Sequence[Ledger], chunk: int = 500) -> State:
    """Read every key the ledgers name from `client` (a decode_responses client of the master)."""
    st = State()
    keys = [k for led in ledgers for k in led.values]
    for i in range(0, len(keys), chunk):
        part = keys[i:i + chunk]
        st.values.update(zip(part, client.mget(part)))
    counters = sorted({k for led in ledgers for k in led.increments})
    for i in range(0, len(counters), chunk):
        part = counters[i:i + chunk]
        st.counters.update((k, int(v or 0)) for k, v in zip(part, client.mget(part)))
    for key in sorted({k for led in ledgers for k in led.members}):
        st.lists[key] = client.lrange(key, 0, -1)
    st.queue = client.lrange(QUEUE_KEY, 0, -1)
    return st


def evaluate(ledgers: Sequence[Ledger], state: State, crashed: Iterable[str] = (), t0: float = 0.0) -> Findings:
    """Compare what the ledgers say was acknowledged with `state`; `t0` is the time the fault
    schedule started (lost writes are counted per second of their acknowledgement after it)."""
    f = Findings(crashed=list(crashed))
    lost_by: Counter = Counter()
    lost_when: Counter = Counter()
    for led in ledgers:
        f.refused += led.refused
        f.unknown += led.unknown
        for key, value in led.values.items():
            f.acked_writes += 1
            if state.values.get(key) != value:
                f.lost_writes += 1
                lost_by[led.name] += 1
                if key in led.acked_at:
                    lost_when[int((led.acked_at[key] - t0) // 1)] += 1
                if len(f.lost_examples) < SHOW:
                    f.lost_examples.append(f"{key}={value!r} (found {state.values.get(key)!r})")
        for key, n in led.increments.items():
            f.acked_increments += n
            final = state.counters.get(key, 0)
            if final < n:
                f.counters_below[key] = (final, n)
                f.increments_lost += n - final
        for key, vals in led.members.items():
            have = Counter(state.lists.get(key, []))
            f.list_members_lost += sum(1 for v in vals if have[v] == 0)
    f.lost_by_workload = dict(lost_by)
    f.lost_by_ack_second = dict(sorted(lost_when.items()))
    # the queue: shared by every producer and consumer
    pushed = [it for led in ledgers for it in led.pushed]
    delivered = Counter(it for led in ledgers for it in led.delivered)
    f.queue_pushed, f.queue_delivered = len(pushed), sum(delivered.values())
    f.queue_duplicates = {it: n for it, n in delivered.items() if n > 1}
    f.queue_inflight_pops = sum(led.inflight_pops for led in ledgers)
    remaining = set(state.queue)
    missing = sum(1 for it in pushed if it not in delivered and it not in remaining)
    f.queue_lost = max(0, missing - f.queue_inflight_pops)
    # pub/sub: every message received was published to that channel
    for led in ledgers:
        for channel, payload in led.messages:
            f.pubsub_received += 1
            if payload not in led.published.get(channel, set()):
                f.pubsub_misdelivered.append((channel, payload))
    return f


def longest_gap(ack_times: Iterable[float], start: float, end: float) -> tuple[float, float]:
    """The longest interval in [start, end] without an acknowledged write: (seconds, its start)."""
    ts = sorted(t for t in ack_times if start <= t <= end)
    points = [start, *ts, end]
    best, at = 0.0, start
    for a, b in zip(points, points[1:]):
        if b - a > best:
            best, at = b - a, a
    return best, at


class MasterSampler(threading.Thread):
    """Every `interval` s, which nodes answer INFO with role:master."""

    def __init__(self, cluster: Any, interval: float = 0.2) -> None:
        super().__init__(name="master-sampler", daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.monotonic()
            try:
                self.samples.append((t, self.observe(self.cluster.roles(timeout=0.3))))
            except Exception:  # noqa: BLE001 - a sample lost is not a finding
                pass
            self._halt.wait(max(0.0, self.interval - (time.monotonic() - t)))

    @staticmethod
    def observe(roles: dict[str, dict | None]) -> Any:
        """What a sample keeps of every node's INFO: the nodes answering role:master."""
        return masters_of(roles)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def windows(self) -> list[tuple[float, float, tuple[str, ...]]]:
        """(start, end, masters) of each run of consecutive samples with two or more masters
        (end is the last such sample: a window seen once has length 0)."""
        return master_windows(self.samples)


def masters_of(roles: dict[str, dict | None]) -> tuple[str, ...]:
    return tuple(sorted(n for n, r in roles.items() if r and r.get("role") == "master"))


def master_windows(samples: Iterable[tuple[float, tuple[str, ...]]]) -> list[tuple[float, float, tuple[str, ...]]]:
    """(start, end, masters) of each run of consecutive `samples` (time, masters) with two or
    more masters."""
    out: list[tuple[float, float, tuple[str, ...]]] = []
    cur: list[Any] | None = None
    for t, masters in samples:
        if len(masters) >= 2:
            if cur is None:
                cur = [t, t, set(masters)]
            else:
                cur[1] = t
                cur[2] |= set(masters)
        elif cur is not None:
            out.append((cur[0], cur[1], tuple(sorted(cur[2]))))
            cur = None
    if cur is not None:
        out.append((cur[0], cur[1], tuple(sorted(cur[2]))))
    return out
