"""health/state_machine.py: shards in the replicated state, compatible with the
entries and snapshots of the versions before shards."""

from __future__ import annotations

import json

from health.state_machine import SINGLE, TopologyStateMachine
from proxy.routing.topology import History, Topology

A, B, C = "h:1", "h:2", "h:3"


def test_single_set_entries_keep_the_old_format():
    t = Topology(1, A, (B,))
    doc = json.loads(TopologyStateMachine.entry(t, "initial"))
    assert "shard" not in doc and doc["op"] == "topology"
    changes = []
    sm = TopologyStateMachine(lambda new, old, why: changes.append((new.epoch, old, why)))
    sm.apply(b'{"op": "topology", "topology": {"epoch": 1, "master": "h:1", "replicas": ["h:2"]}, "reason": "old"}')
    assert sm.topology == t and changes == [(1, None, "old")]


def test_shards_are_independent_and_only_the_single_set_reroutes():
    changes = []
    sm = TopologyStateMachine(lambda new, old, why: changes.append(new.epoch))
    sm.apply(TopologyStateMachine.entry(Topology(3, A, (B,)), shard="s1"))
    sm.apply(TopologyStateMachine.entry(Topology(1, C, ()), shard="s2"))
    sm.apply(TopologyStateMachine.entry(Topology(2, B, (A,)), shard="s1"))     # older epoch: ignored
    assert sm.shards["s1"].master == A and sm.shards["s2"].master == C
    assert sm.topology is None and changes == []
    sm.apply(TopologyStateMachine.history_entry(Topology(3, A, (B,)), History("r", 7), shard="s1"))
    assert sm.shards["s1"].history == History("r", 7) and sm.shards["s2"].history is None


def test_snapshots_carry_every_shard_and_read_the_old_form():
    sm = TopologyStateMachine(lambda *a: None)
    sm.apply(TopologyStateMachine.entry(Topology(2, A, (B,))))
    sm.apply(TopologyStateMachine.entry(Topology(5, C, (A,)), shard="s1"))
    snap = json.loads(sm.snapshot())
    assert snap["topology"]["master"] == A and snap["shards"]["s1"]["epoch"] == 5
    changes = []
    sm2 = TopologyStateMachine(lambda new, old, why: changes.append(why))
    sm2.restore(sm.snapshot())
    assert sm2.shards == sm.shards and changes == ["restored from snapshot"]
    sm3 = TopologyStateMachine(lambda *a: None)
    sm3.restore(json.dumps({"topology": {"epoch": 4, "master": B, "replicas": [A]}}).encode())   # before shards
    assert sm3.shards == {SINGLE: Topology(4, B, (A,))}
