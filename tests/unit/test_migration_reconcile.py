"""The pure decision of where a migration's slots really are (issue 15): what a new leader
commits, finishes or leaves when it cancels a migration whose last batch an earlier,
killed, leader moved on the nodes but did not commit."""

from __future__ import annotations

import pytest

from health.migration.reconcile import (
    FINISH,
    LOST,
    MOVED,
    STAY,
    Reconciliation,
    SlotFacts,
    node_view,
    reconcile,
    slot_decision,
    slot_facts,
)

# slots 0-3 moved, 4 announced to the target only (the source still has it MIGRATING), 5 half-moved
SRC = ("a1b2 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 4-99 [4->-e5f1] [5->-e5f1]\n"
       "e5f1 127.0.0.1:7001@17001 master - 0 1 2 connected 0-3 100-200\n")
DST = ("a1b2 127.0.0.1:7000@17000 master - 0 0 1 connected 5-99\n"
       "e5f1 127.0.0.1:7001@17001 myself,master - 0 1 2 connected 0-4 100-200 [5-<-a1b2]\n")


def test_node_view_reads_the_own_line_with_its_marks():
    src, dst = node_view(SRC), node_view(DST)
    assert (src.id, min(src.slots), max(src.slots), len(src.slots)) == ("a1b2", 4, 99, 96)
    assert src.migrating == {4: "e5f1", 5: "e5f1"} and src.importing == {}
    assert dst.id == "e5f1" and dst.slots == frozenset({0, 1, 2, 3, 4, *range(100, 201)})
    assert dst.importing == {5: "a1b2"} and dst.migrating == {}
    with pytest.raises(ValueError):
        node_view(SRC.replace("myself,", ""))


def test_each_slot_is_decided_from_the_two_masters_facts():
    # untouched: on the source, no marks, no key on the target
    assert slot_decision(SlotFacts(True, False, source_keys=5)) == STAY
    # moved and announced to both, or to the target only (the source has no key left)
    assert slot_decision(SlotFacts(False, True, target_keys=5)) == MOVED
    assert slot_decision(SlotFacts(True, True, migrating=True, target_keys=5)) == MOVED
    # half-moved: marks on either node, or keys already on the target
    assert slot_decision(SlotFacts(True, False, migrating=True, importing=True, source_keys=3, target_keys=2)) == FINISH
    assert slot_decision(SlotFacts(True, False, importing=True, source_keys=3)) == FINISH
    assert slot_decision(SlotFacts(True, False, migrating=True)) == FINISH
    # the target's master failed over mid-slot: its replica has the keys but no IMPORTING mark
    assert slot_decision(SlotFacts(True, False, migrating=True, source_keys=1, target_keys=4)) == FINISH
    assert slot_decision(SlotFacts(True, False, target_keys=4)) == FINISH
    # both serve it and the source still holds keys: they go along before the target is announced
    assert slot_decision(SlotFacts(True, True, source_keys=2, target_keys=1)) == FINISH
    # neither serves it
    assert slot_decision(SlotFacts(False, False)) == LOST


def test_a_killed_leaders_batch_is_committed_and_its_half_moved_slot_finished():
    """Slots 0-3 moved (announced everywhere), 4 moved but only the target announced it,
    5 half-moved, 6-99 untouched: 0-5 are the target's once 5 is finished."""
    src, dst = node_view(SRC), node_view(DST)
    src_keys = {5: 3, **{s: 10 for s in range(6, 100)}}
    dst_keys = {**{s: 10 for s in range(5)}, 5: 7}
    pending = list(range(100))
    facts = {s: slot_facts(src, dst, s, src_keys.get(s, 0), dst_keys.get(s, 0)) for s in pending}
    r = reconcile(pending, facts)
    assert r == Reconciliation(moved=(0, 1, 2, 3, 4), finish=(5,), lost=())
    assert r.to_commit == [0, 1, 2, 3, 4, 5]


def test_nothing_moved_nothing_to_commit_and_missing_facts_mean_untouched():
    src, dst = node_view(SRC), node_view(DST)
    pending = list(range(50, 60))
    facts = {s: slot_facts(src, dst, s, 1, 0) for s in pending[:5]}
    assert reconcile(pending, facts) == Reconciliation()
    assert reconcile([], {}).to_commit == []


def test_slots_neither_master_serves_are_reported_not_committed():
    src, dst = node_view(SRC), node_view(DST)
    facts = {s: slot_facts(src, dst, s, 0, 0) for s in (300, 301)}
    r = reconcile([300, 301], facts)
    assert r.lost == (300, 301) and r.to_commit == []


def test_served_slots_are_every_node_s_slots_in_one_node_s_view_marks_left_out():
    from health.migration.reconcile import served_slots
    assert served_slots(SRC) == frozenset({*range(0, 100), *range(100, 201)})
    # a node that imports slot 5 and never heard who serves 6 (a node just added)
    view = DST.replace(" 5-99", " 7-99")
    assert served_slots(view) == frozenset({*range(0, 5), *range(7, 201)})
    assert served_slots("") == frozenset()


def test_a_replica_that_has_not_heard_of_the_move_still_gives_the_slots_to_the_source():
    """What a batch waits for before its commit (MigrationDriver._replicas_learned): the
    target's replica names the target as the owner of every moved slot."""
    from health.migration.reconcile import not_owned_by
    # the target's replica, before the cluster bus brought it slots 0-4: still the source's
    replica = ("a1b2 127.0.0.1:7000@17000 master - 0 0 1 connected 0-99\n"
               "e5f1 127.0.0.1:7001@17001 master - 0 1 2 connected 100-200\n"
               "77aa 127.0.0.1:7002@17002 myself,slave e5f1 0 1 2 connected\n")
    assert not_owned_by(replica, "e5f1", [0, 1, 2, 3, 4]) == [0, 1, 2, 3, 4]
    heard = replica.replace("connected 0-99", "connected 5-99").replace("connected 100-200", "connected 0-4 100-200")
    assert not_owned_by(heard, "e5f1", [0, 1, 2, 3, 4]) == []
    assert not_owned_by(heard, "e5f1", [4, 5]) == [5]
    # a slot marked [5-<-a1b2] on the target is not owned yet; a view that lost the target: nothing is
    assert not_owned_by(DST, "e5f1", [4, 5]) == [5]
    assert not_owned_by(heard.replace("e5f1 127", "9999 127"), "e5f1", [100]) == [100]


def test_cluster_state_is_read_from_cluster_info():
    from health.migration.reconcile import cluster_state
    info = "cluster_state:fail\r\ncluster_slots_assigned:16384\r\ncluster_known_nodes:7\r\n"
    assert cluster_state(info) == "fail"
    assert cluster_state(info.replace("fail", "ok")) == "ok"
    assert cluster_state("cluster_slots_assigned:16384\r\n") == ""


def test_slot_owner_is_the_node_serving_it_in_that_view():
    from health.migration.reconcile import slot_owner
    assert (slot_owner(SRC, 4), slot_owner(SRC, 0), slot_owner(SRC, 150)) == ("a1b2", "e5f1", "e5f1")
    assert slot_owner(SRC, 201) is None and slot_owner(DST, 5) == "a1b2"
