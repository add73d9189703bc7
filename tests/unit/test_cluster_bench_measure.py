"""The pure parts of benchmarks/cluster.py: gaps between acknowledged writes, key spread,
alternating rounds, timing a call loop."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from benchmarks.cluster_measure import (
    ack_gaps,
    alternate,
    median_by_target,
    percentile,
    spread,
    time_calls,
)
from proxy.routing.keyslot import key_slot


@dataclass
class W:
    sent: float
    done: float
    ok: bool


def steady(start: float, end: float, step: float = 0.002, ok: bool = True) -> list[W]:
    out, t = [], start
    while t < end:
        out.append(W(t, t + 0.001, ok))
        t += step
    return out


def test_a_pause_spanning_the_fault_counts_from_the_last_ack_before_it():
    writes = steady(0.0, 10.0) + [W(10.0, 11.5, False)] + steady(11.5, 13.0)
    gaps = ack_gaps(writes, t_fault=10.2, t_end=13.0)
    # last ack before the fault at ~9.999, next at 11.501
    assert gaps.longest_gap_s == pytest.approx(1.502, abs=0.003)
    assert gaps.longest_gap_at_s == pytest.approx(-0.2, abs=0.003)
    assert gaps.unavailable_s == pytest.approx(1.301, abs=0.003)
    assert gaps.failed_after_fault == 0          # the failed write was sent before the fault
    assert gaps.acked_after_fault == len(steady(11.5, 13.0))


def test_a_writer_that_never_recovers_has_its_gap_measured_to_the_end():
    writes = steady(0.0, 5.0) + steady(5.0, 8.0, step=0.5, ok=False)
    gaps = ack_gaps(writes, t_fault=5.0, t_end=8.0)
    assert gaps.unavailable_s is None
    assert gaps.acked_after_fault == 0 and gaps.failed_after_fault == 6
    assert gaps.longest_gap_s == pytest.approx(3.0, abs=0.005)


def test_an_undisturbed_writer_has_gaps_of_its_interval():
    gaps = ack_gaps(steady(0.0, 4.0), t_fault=2.0, t_end=4.0)
    assert gaps.longest_gap_s == pytest.approx(0.002, abs=0.001)
    assert gaps.unavailable_s == pytest.approx(0.001, abs=0.001)


def test_acks_after_the_end_are_not_counted():
    writes = steady(0.0, 1.0) + [W(1.0, 9.0, True)]
    gaps = ack_gaps(writes, t_fault=0.5, t_end=2.0)
    assert gaps.longest_gap_s == pytest.approx(1.001, abs=0.003)


@dataclass
class Shard:
    ranges: list[tuple[int, int]]

    def serves(self, slot: int) -> bool:
        return any(a <= slot <= b for a, b in self.ranges)


def test_spread_counts_keys_by_slot_and_honours_hash_tags():
    shards = [Shard([(0, 5460)]), Shard([(5461, 10921)]), Shard([(10922, 16383)])]
    keys = [f"mget:{i}" for i in range(100)]
    counts = spread(keys, shards)
    assert sum(counts) == 100
    assert counts == [sum(1 for k in keys if s.serves(key_slot(k.encode()))) for s in shards]
    assert spread(["{mget:0}a", "{mget:0}b"], shards).count(2) == 1


def test_alternate_rotates_the_target_order_each_round():
    assert alternate(["a", "b", "c"], 3) == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"),
                                             (2, "c"), (2, "a"), (2, "b")]


def test_time_calls_counts_wrong_replies_and_medians_are_per_target():
    replies = iter([1, 2, 1, 1])
    run = time_calls("x", 0, lambda: next(replies), 4, expected=1)
    assert run.calls == 4 and run.wrong == 1 and run.ops_per_s > 0
    med = median_by_target([run, time_calls("x", 1, lambda: 1, 3, 1), time_calls("y", 0, lambda: 0, 2, 1)])
    assert med["x"]["rounds"] == 2 and med["x"]["wrong"] == 1 and med["y"]["wrong"] == 2
    assert percentile([1.0, 2.0, 3.0], 0.5) == 2.0


def test_redis_benchmark_csv_after_the_cluster_preamble_is_parsed():
    from benchmarks.benchlib.runner import parse_csv

    out = ('Cluster has 3 master nodes:\n\nMaster 0: f101 127.0.0.1:40055\nMaster 1: d8cd 127.0.0.1:55531\n\n'
           '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",'
           '"max_latency_ms"\n"SET","79365.08","0.368","0.048","0.327","0.655","0.919","4.991"\n'
           '"GET","79051.38","0.302","0.032","0.207","0.903","1.775","7.431"\n')
    parsed = parse_csv(out)
    assert set(parsed) == {"SET", "GET"}
    assert parsed["SET"]["rps"] == 79365.08 and parsed["GET"]["p50_ms"] == 0.207
    assert parse_csv('"SET","12345.67"\n') == {"SET": {"rps": 12345.67}}   # the headerless 6.x form
