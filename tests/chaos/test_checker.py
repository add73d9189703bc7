"""The checker's and the scheduler's pure parts, without processes."""

from __future__ import annotations

from collections import Counter

from .checker import MasterSampler, State, evaluate, longest_gap
from .faults import KINDS, make_schedule, short_schedule
from .workloads import Ledger


def ledger(**kw) -> Ledger:
    led = Ledger(kw.pop("name", "w"), "test")
    for k, v in kw.items():
        setattr(led, k, v)
    return led


def test_nothing_lost_when_the_state_has_every_acknowledged_effect():
    led = ledger(values={"a": "1", "b": "2"}, increments=Counter({"c": 3}), members={"l": ["x", "y"]},
                 pushed=["q1", "q2"], delivered=["q1"], messages=[("ch", "m1")], published={"ch": {"m1"}})
    f = evaluate([led], State(values={"a": "1", "b": "2"}, counters={"c": 5}, lists={"l": ["y", "x"]},
                              queue=["q2"]))
    assert f.problems() == [] and f.data_loss() == 0
    assert (f.acked_writes, f.acked_increments, f.queue_pushed, f.pubsub_received) == (2, 3, 2, 1)


def test_every_kind_of_loss_is_counted():
    led = ledger(values={"a": "1", "b": "2"}, acked_at={"a": 10.5, "b": 12.0}, increments=Counter({"c": 3}),
                 members={"l": ["x", "y"]}, pushed=["q1", "q2", "q3"], delivered=["q1", "q1"],
                 messages=[("ch", "other")], published={"ch": {"m1"}})
    f = evaluate([led], State(values={"a": None, "b": "2"}, counters={"c": 1}, lists={"l": ["x"]}, queue=[]),
                 t0=10.0)
    assert f.lost_writes == 1 and f.lost_by_ack_second == {0: 1}
    assert f.counters_below == {"c": (1, 3)} and f.increments_lost == 2
    assert f.list_members_lost == 1
    assert f.queue_duplicates == {"q1": 2} and f.queue_lost == 2
    assert f.pubsub_misdelivered == [("ch", "other")]
    assert len(f.problems()) == 6


def test_a_pop_whose_reply_was_lost_excuses_one_missing_queue_item():
    led = ledger(pushed=["q1", "q2"], delivered=[], inflight_pops=1)
    assert evaluate([led], State(queue=[])).queue_lost == 1


def test_longest_gap_counts_the_edges():
    assert longest_gap([2.0, 3.0], 0.0, 10.0) == (7.0, 3.0)
    assert longest_gap([], 0.0, 4.0) == (4.0, 0.0)


def test_split_brain_windows_merge_consecutive_samples():
    s = MasterSampler(cluster=None)
    s.samples = [(0.0, ("a",)), (0.2, ("a", "b")), (0.4, ("a", "b")), (0.6, ("b",)), (0.8, ("b", "c"))]
    assert s.windows() == [(0.2, 0.4, ("a", "b")), (0.8, 0.8, ("b", "c"))]


def test_schedules_replay_from_their_seed():
    a = make_schedule(7, 120.0, KINDS)
    assert a == make_schedule(7, 120.0, KINDS) and a != make_schedule(8, 120.0, KINDS)
    assert {s.kind for s in short_schedule(12)} == set(KINDS)
    assert short_schedule(12) == short_schedule(12)
    last = max(s.at + s.duration for s in short_schedule(12))
    assert last < 45, "the CI schedule must stay short"
