"""Slot moves (issue 15), the pure part: plans, refusals, progress and the shards'
slot ranges after a move, and how the replicated state carries them."""

from __future__ import annotations

import pytest

from health.migration.plan import (
    CANCELLED,
    DONE,
    QUEUED,
    RUNNING,
    Migration,
    even_keys_plan,
    even_plan,
    expand,
    merged,
    moved_slots,
    parse_ranges,
    refuse_move,
    resolve_shard,
    to_ranges,
)
from health.state_machine import TopologyStateMachine
from proxy.routing.keyslot import SLOTS
from proxy.routing.topology import Topology

SHARDS = {"aaaaaaaa11": Topology(3, "h:1", ("h:4",), slots=((0, 5460),)),
          "bbbbbbbb22": Topology(1, "h:2", ("h:5",), slots=((5461, 10922),)),
          "cccccccc33": Topology(1, "h:3", (), slots=((10923, 16383),))}


def test_slot_ranges_parse_and_normalise():
    assert parse_ranges("0-9, 5 ,20,21-22") == ((0, 9), (20, 22))
    for bad in ("", "9-1", "16384", "x", "-1"):
        with pytest.raises(ValueError):
            parse_ranges(bad)
    assert to_ranges([3, 1, 2, 7]) == ((1, 3), (7, 7)) and expand(((1, 3),)) == [1, 2, 3]


@pytest.mark.parametrize("source,target,slots,why", [
    ("nope", "bbbbbbbb22", ((0, 1),), "no shard 'nope'"),
    ("aaaaaaaa11", "aaaaaaaa11", ((0, 1),), "the same shard"),
    ("aaaaaaaa11", "bbbbbbbb22", ((5460, 5461),), "does not serve slots 5461"),
])
def test_bad_moves_are_refused_with_a_reason(source, target, slots, why):
    assert why in refuse_move(SHARDS, [], source, target, slots)


def test_a_second_move_while_one_runs_is_refused():
    running = Migration("m1", "aaaaaaaa11", "bbbbbbbb22", ((0, 9),))
    assert "m1" in refuse_move(SHARDS, [running], "cccccccc33", "bbbbbbbb22", ((10923, 10923),))
    assert refuse_move(SHARDS, [running.with_state(DONE)], "cccccccc33", "bbbbbbbb22", ((10923, 10923),)) is None


def test_shards_are_named_by_id_prefix_or_node():
    assert resolve_shard(SHARDS, "h:5") == "bbbbbbbb22"
    assert resolve_shard(SHARDS, "cccccc") == "cccccccc33"
    assert resolve_shard(SHARDS, "c") is None and resolve_shard(SHARDS, "h:9") is None


def test_a_move_changes_both_shards_ranges_only():
    after = moved_slots(SHARDS, "aaaaaaaa11", "bbbbbbbb22", range(5400, 5461))
    assert after["aaaaaaaa11"].slots == ((0, 5399),) and after["aaaaaaaa11"].epoch == 3
    assert after["bbbbbbbb22"].slots == ((5400, 10922),) and after["bbbbbbbb22"].master == "h:2"
    assert set(after) == {"aaaaaaaa11", "bbbbbbbb22"}


def test_a_failover_committed_while_a_batch_moved_is_kept():
    """The failover and the batch were decided on the same state; whichever applies first,
    both take effect (a batch's entry carries slots, not whole topologies)."""
    for failover_first in (True, False):
        sm = TopologyStateMachine(lambda *a: None)
        sm.apply(TopologyStateMachine.shards_entry(SHARDS))
        m = Migration("m1", "aaaaaaaa11", "bbbbbbbb22", ((0, 99),))
        failover = TopologyStateMachine.entry(SHARDS["aaaaaaaa11"].with_master("h:4"), "failover", "aaaaaaaa11")
        batch = TopologyStateMachine.migration_entry(m.advanced(100, 1, 1.0), list(range(100)))
        for e in ((failover, batch) if failover_first else (batch, failover)):
            sm.apply(e)
        a = sm.cluster_shards["aaaaaaaa11"]
        assert (a.master, a.epoch, a.slots) == ("h:4", 4, ((100, 5460),)), failover_first
        assert sm.cluster_shards["bbbbbbbb22"].slots == ((0, 99), (5461, 10922))


def test_progress_ends_the_migration():
    m = Migration("m1", "a", "b", ((0, 9), (20, 21)))
    assert m.total == 12 and m.pending()[:3] == [0, 1, 2]
    m = m.advanced(10, 7, 1.0)
    assert m.pending() == [20, 21] and m.state == RUNNING and m.keys_moved == 7
    assert m.advanced(2, 0, 2.0).state == DONE
    assert m.with_state(CANCELLED).advanced(1, 0, 3.0).state == CANCELLED    # a cancel is not undone
    assert Migration.from_dict(m.to_dict()) == m


def test_even_plan_fills_a_new_empty_shard_and_balances():
    shards = dict(SHARDS, dddddddd44=Topology(1, "h:7", ()))
    moves = even_plan(shards)
    assert {t for _, t, _ in moves} == {"dddddddd44"}
    counts = {s: len(expand(t.slots)) for s, t in shards.items()}
    for source, target, slots in moves:
        counts[source] -= len(expand(slots))
        counts[target] += len(expand(slots))
    assert sum(counts.values()) == SLOTS and max(counts.values()) - min(counts.values()) <= 1
    assert even_plan(SHARDS) == []       # already as even as 16384 slots over 3 shards can be


def test_migrations_and_forgotten_shards_survive_a_snapshot():
    events = []
    sm = TopologyStateMachine(lambda *a: None, lambda s, new, old, why: events.append((s, new is None)))
    sm.apply(TopologyStateMachine.shards_entry(SHARDS))
    m = Migration("m1", "cccccccc33", "bbbbbbbb22", ((10923, 16383),), then_remove=True)
    done = m.advanced(m.total, 5, 1.0)
    sm.apply(TopologyStateMachine.migration_entry(done, expand(m.slots), forget="cccccccc33"))
    assert "cccccccc33" not in sm.cluster_shards and ("cccccccc33", True) in events
    assert sm.cluster_shards["bbbbbbbb22"].slots == ((5461, 16383),)
    restored = TopologyStateMachine(lambda *a: None)
    restored.restore(sm.snapshot())
    assert set(restored.cluster_shards) == {"aaaaaaaa11", "bbbbbbbb22"} and restored.migrations["m1"].state == DONE
    queued = Migration("m2", "aaaaaaaa11", "bbbbbbbb22", ((0, 0),), state=QUEUED)
    restored.apply(TopologyStateMachine.migration_entry(queued))
    assert restored.migrations["m2"].state == QUEUED


def test_a_cancel_and_a_batch_commit_in_either_order_keep_progress_and_the_cancel():
    m = Migration("m1", "a", "b", ((0, 99),))
    batch, cancel = m.advanced(32, 10, 1.0), m.with_state(CANCELLED, "operator")
    for first, second in ((batch, cancel), (cancel, batch)):
        rec = merged(merged(None, first), second)
        assert (rec.done, rec.keys_moved, rec.state) == (32, 10, CANCELLED)
    assert merged(m.with_state(CANCELLED), m.advanced(100, 1, 1.0)).state == DONE


def _after(shards: dict[str, Topology], keys: dict[int, int], moves) -> dict[str, int]:
    """Each shard's key count once `moves` ran (and a check that each move's slots were its source's)."""
    owned = {sid: set(expand(t.slots)) for sid, t in shards.items()}
    for source, target, slots in moves:
        moving = set(expand(slots))
        assert moving <= owned[source], (source, slots)
        owned[source] -= moving
        owned[target] |= moving
    return {sid: sum(keys.get(s, 0) for s in slots) for sid, slots in owned.items()}


def test_even_keys_plan_evens_out_keys_not_slots():
    # slots are even, keys are not: 4 keys in each of shard a's slots, 1 in b's, none in half of c's
    keys = {s: 4 for s in range(5461)} | {s: 1 for s in range(5461, 10923)} | \
        {s: 1 for s in range(10923, 16384, 2)}
    moves = even_keys_plan(SHARDS, keys)
    assert moves and {s for s, _, _ in moves} == {"aaaaaaaa11"}
    after = _after(SHARDS, keys, moves)
    mean = sum(keys.values()) / 3
    assert all(abs(n - mean) <= 0.05 * mean for n in after.values()), (after, mean)
    moved = [s for _, _, r in moves for s in expand(r)]
    assert len(moved) == len(set(moved)) and all(keys.get(s, 0) > 0 for s in moved)    # no empty slot moved
    assert [len(r) for _, _, r in moves] == [1, 1]      # the highest slots of a: one compact range per move
    assert even_keys_plan(SHARDS, {s: 1 for s in range(SLOTS)}) == []      # already even (±5 %)
    assert even_keys_plan(SHARDS, {}) == []                                  # no keys at all


def test_even_keys_plan_leaves_a_slot_heavier_than_the_gap_where_it_is():
    keys = {0: 9000, 1: 10, 5461: 10, 10923: 10}     # one hot hash tag on shard a
    moves = even_keys_plan(SHARDS, keys)
    assert all(0 not in expand(r) for _, _, r in moves), moves
    assert _after(SHARDS, keys, moves)["aaaaaaaa11"] >= 9000
    assert even_keys_plan({"only": SHARDS["aaaaaaaa11"]}, keys) == []
