"""A fixed-bucket histogram kept as plain lists (observe is one bisect): what the shard
controller times its failovers and switchovers with, and what `proxy/process/metrics.py`
keeps all its histograms in and turns into Prometheus families at a scrape."""

from __future__ import annotations

import bisect

# down detected -> committed (failover); pause -> new master committed and reconciled (switchover)
FAILOVER_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
SWITCHOVER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)


class Histogram:
    """Counts per bucket (`bounds`, ascending upper bounds, and one above the last), their sum
    and their number."""

    __slots__ = ("bounds", "counts", "total", "n")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.total += value * count
        self.n += count

    def family_buckets(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for bound, c in zip(self.bounds, self.counts):
            acc += c
            out.append((repr(bound), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out
