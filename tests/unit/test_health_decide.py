"""health.shard.decide: the pure failover decisions (objectively down, whom to promote, reconcile).

Also the decision-level half of issue 5's case 7 ("the master's link to one
proxy only is cut: no failover"): one proxy's 'down' view never reaches the
quorum.  The integration test `test_master_cut_off_from_one_proxy_only_no_failover`
covers the same case with real processes.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from health.shard.decide import (
    NO_REPLID,
    Action,
    LeaderState,
    NodeView,
    choose_new_master,
    contains,
    history_due,
    holds_parent,
    master_lost_history,
    may_take_writes,
    next_history,
    objectively_down,
    parent_keeper,
    reconcile,
    refuse_to_act,
)
from proxy.routing.topology import History, Topology

M, A, B, C = "10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379", "10.0.0.4:6379"
PROXIES = ("proxy-1", "proxy-2", "proxy-3")

UP_MASTER = NodeView(True, "master", 1000, True)
DOWN = NodeView(False)


def replica(offset: int, *, master: str | None = M, link_up: bool = False, link_down_s: float = 0.0,
            up: bool = True) -> NodeView:
    return NodeView(up, "slave", offset, link_up, link_down_s, master)


def views_where_master(*down_in: str, proxies=PROXIES) -> dict:
    return {p: {M: DOWN if p in down_in else UP_MASTER} for p in proxies}


# ---------------------------------------------------------------------------
# objectively_down
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("down_in,expected", [
    ((), False),
    (("proxy-1",), False),                     # issue 5 case 7: one proxy's link to the master is cut
    (("proxy-3",), False),
    (("proxy-1", "proxy-2"), True),
    (("proxy-1", "proxy-2", "proxy-3"), True),
])
def test_objectively_down_needs_a_quorum_of_views(down_in, expected):
    assert objectively_down(M, views_where_master(*down_in), quorum=2) is expected


def test_one_cut_link_never_fails_over_whoever_has_it_and_whatever_the_quorum():
    for p in PROXIES:
        assert not objectively_down(M, views_where_master(p), quorum=2)
    five = tuple(f"proxy-{i}" for i in range(1, 6))
    assert not objectively_down(M, views_where_master("proxy-1", "proxy-2", proxies=five), quorum=3)
    assert objectively_down(M, views_where_master("proxy-1", "proxy-2", "proxy-5", proxies=five), quorum=3)


def test_views_without_the_master_and_missing_proxies_do_not_vote():
    views = {"proxy-1": {M: DOWN}, "proxy-2": {A: DOWN}}       # proxy-2 says nothing about M; proxy-3 is stale
    assert not objectively_down(M, views, quorum=2)
    assert not objectively_down(M, {}, quorum=2)
    assert objectively_down(M, {"proxy-1": {M: DOWN}}, quorum=1)


def test_other_nodes_being_down_does_not_make_the_master_down():
    views = {p: {M: UP_MASTER, A: DOWN, B: DOWN} for p in PROXIES}
    assert not objectively_down(M, views, quorum=2)


# ---------------------------------------------------------------------------
# choose_new_master
# ---------------------------------------------------------------------------

def choose(replicas: dict[str, NodeView] | dict[str, dict[str, NodeView]], *, per_proxy: bool = False,
           priorities=None, max_staleness_s: float = 10.0, down_for_s: float = 0.5, order=None,
           leader: str = "proxy-1", history: History | None = None, max_age_s: float = 0.3):
    if priorities:      # replica-priority as each proxy's probe reports it (INFO's slave_priority)
        replicas = {a: replace(v, priority=priorities.get(a, v.priority)) for a, v in replicas.items()}
    views = replicas if per_proxy else {p: {M: DOWN, **replicas} for p in PROXIES}
    names = tuple(order) if order is not None else tuple(sorted({a for v in views.values() for a in v} - {M}))
    return choose_new_master(M, names, views, leader=leader, history=history, max_age_s=max_age_s,
                             max_staleness_s=max_staleness_s, down_for_s=down_for_s)


def test_highest_offset_wins():
    assert choose({A: replica(100), B: replica(300), C: replica(200)}) == B


def test_highest_offset_wins_over_priority_and_name():
    assert choose({A: replica(100), B: replica(101)}, priorities={A: 1, B: 100}) == B


def test_priority_zero_is_never_promoted_even_with_the_highest_offset():
    assert choose({A: replica(100), B: replica(900)}, priorities={B: 0}) == A
    assert choose({B: replica(900)}, priorities={B: 0}) is None


def test_ties_go_to_the_lower_priority_number_then_to_the_name():
    assert choose({A: replica(500), B: replica(500)}, priorities={A: 50, B: 10}) == B
    assert choose({A: replica(500), B: replica(500)}) == A
    assert choose({A: replica(500), B: replica(500)}, order=(B, A)) == A, "the order of replicas must not matter"
    assert choose({A: replica(500), B: replica(500), C: replica(500)}, priorities={A: 20, B: 10, C: 10}) == B


def test_stale_replica_is_never_promoted():
    # B's link to the master was down 30 s, 29.5 s of them while the master was still up
    stale = replica(900, link_down_s=30.0)
    assert choose({A: replica(100, link_down_s=0.6), B: stale}, down_for_s=0.5, max_staleness_s=10.0) == A
    assert choose({B: stale}, down_for_s=0.5, max_staleness_s=10.0) is None


def test_link_down_only_since_the_master_died_is_not_staleness():
    # the link went down with the master: link_down_s ~ down_for_s, far beyond max_staleness_s
    assert choose({B: replica(900, link_down_s=60.0)}, down_for_s=59.5, max_staleness_s=1.0) == B


def test_staleness_bound_is_inclusive_and_measured_before_the_master_went_down():
    assert choose({B: replica(1, link_down_s=10.5)}, down_for_s=0.5, max_staleness_s=10.0) == B
    assert choose({B: replica(1, link_down_s=10.6)}, down_for_s=0.5, max_staleness_s=10.0) is None


def test_only_reachable_replicas_of_this_master_are_candidates():
    assert choose({A: replica(900, up=False), B: replica(100)}) == B
    assert choose({A: NodeView(True, "master", 900, True), B: replica(100)}) == B      # not a replica
    assert choose({A: replica(900, master=C), B: replica(100)}) == B                  # follows someone else
    assert choose({A: NodeView(True, "unknown", 900), B: replica(100)}) == B
    assert choose({A: replica(900, up=False), B: replica(800, up=False)}) is None


def aged(v: NodeView, age_s: float) -> NodeView:
    return replace(v, age_s=age_s)


def test_a_replica_the_leader_cannot_reach_is_never_chosen():
    """Issue 12 item 5: B has the highest offset in other proxies' views, but the leader
    (proxy-1) cannot reach it: its reconciler could not promote it, and writes would be
    held until hold_ms. Choose A, which the leader reaches."""
    views = {
        "proxy-1": {M: DOWN, A: replica(100), B: replica(0, up=False)},
        "proxy-2": {M: DOWN, A: replica(120), B: replica(150)},
        "proxy-3": {M: DOWN, A: replica(110)},
    }
    assert choose(views, per_proxy=True) == A
    assert choose(views, per_proxy=True, leader="proxy-2") == B
    views["proxy-1"][B] = replica(150)
    assert choose(views, per_proxy=True) == B
    # "up" in the leader's view, but its last reply is older than the other proxies' views
    views["proxy-1"][B] = aged(replica(150), 0.45)
    assert choose(views, per_proxy=True) == A


def test_each_replica_is_judged_by_its_freshest_observation():
    """Issue 12 item 5: an older view's higher offset is old news (B has resynchronised
    since, say, and now holds less than A): the freshest observation of each replica counts."""
    views = {
        "proxy-1": {M: DOWN, A: aged(replica(500), 0.05), B: aged(replica(300), 0.05)},
        "proxy-2": {M: DOWN, A: aged(replica(480), 0.20), B: aged(replica(900), 0.25)},
    }
    assert choose(views, per_proxy=True) == A
    # the leader's own observation is not special: a fresher one from another proxy wins
    views["proxy-2"][B] = aged(replica(900), 0.01)
    assert choose(views, per_proxy=True) == B


def test_a_replica_observed_too_long_ago_is_not_a_candidate():
    views = {"proxy-1": {M: DOWN, A: aged(replica(900), 0.5), B: aged(replica(100), 0.1)}}
    assert choose(views, per_proxy=True, max_age_s=0.3) == B
    assert choose(views, per_proxy=True, max_age_s=1.0) == A
    assert choose({"proxy-1": {M: DOWN, A: aged(replica(900), 0.5)}}, per_proxy=True, max_age_s=0.3) is None


def test_node_view_ages_round_trip_and_an_unaged_view_is_never_fresh():
    v = aged(replica(5), 0.125)
    assert NodeView.from_dict(v.to_dict()) == v
    old = NodeView.from_dict({"up": True, "role": "slave", "offset": 3, "master": M})
    assert old.age_s > 1e6
    assert choose({"proxy-1": {M: DOWN, A: old}}, per_proxy=True) is None


def test_no_replicas_no_candidate():
    assert choose_new_master(M, (), {p: {M: DOWN} for p in PROXIES}, leader="proxy-1", max_age_s=1,
                             max_staleness_s=10, down_for_s=1) is None


# ---------------------------------------------------------------------------
# reconcile
# ---------------------------------------------------------------------------

def apply(view: dict[str, NodeView], actions: list[Action]) -> dict[str, NodeView]:
    """What Redis looks like after REPLICAOF NO ONE / REPLICAOF host port (as the next probe sees it)."""
    out = dict(view)
    for a in actions:
        old = out[a.node]
        if a.replicaof is None:
            out[a.node] = NodeView(True, "master", old.offset, True, 0.0, None)
        else:
            out[a.node] = NodeView(True, "slave", old.offset, False, 0.0, a.replicaof)
    return out


def test_reconcile_after_a_failover_promotes_and_repoints():
    view = {A: replica(500, master=M), B: replica(480, master=M), M: DOWN}
    actions = reconcile(A, (A, B, M), view)
    assert Action(A, None, actions[0].reason) == actions[0]
    assert {(a.node, a.replicaof) for a in actions} == {(A, None), (B, A)}


def test_reconcile_demotes_a_returning_old_master():
    view = {A: NodeView(True, "master", 500, True), B: replica(500, master=A, link_up=True),
            M: NodeView(True, "master", 10, True)}
    actions = reconcile(A, (A, B, M), view)
    assert [(a.node, a.replicaof) for a in actions] == [(M, A)]
    assert "demote" in actions[0].reason


def test_reconcile_leaves_unreachable_nodes_and_correct_roles_alone():
    view = {A: NodeView(True, "master", 500, True), B: replica(500, master=A, link_up=True), M: DOWN}
    assert reconcile(A, (A, B, M), view) == []
    assert reconcile(A, (A, B, M), {A: DOWN, B: DOWN}) == []
    assert reconcile(None, (A, B), view) == []


@pytest.mark.parametrize("roles", list(itertools.product(["master", "slave:M", "slave:A", "slave:B", "down"],
                                                         repeat=3)))
def test_reconcile_converges_in_one_round_and_is_idempotent(roles):
    def node(role: str) -> NodeView:
        if role == "down":
            return DOWN
        if role == "master":
            return NodeView(True, "master", 7, True)
        return replica(7, master={"M": M, "A": A, "B": B}[role.split(":")[1]])

    view = {addr: node(r) for addr, r in zip((A, B, M), roles)}
    first = reconcile(A, (A, B, M), view)
    assert first == reconcile(A, (A, B, M), view), "reconcile must be deterministic"
    assert len({a.node for a in first}) == len(first), "at most one action per node"
    assert all(view[a.node].up for a in first), "only nodes that answer are touched"
    after = apply(view, first)
    assert reconcile(A, (A, B, M), after) == [], f"not converged after one round: {after}"
    if view[A].up:
        assert after[A].role == "master"
    for addr in (B, M):
        if view[addr].up:
            assert after[addr].role == "slave" and after[addr].master == A


def test_replica_that_never_synced_is_never_promoted():
    views = {"p1": {"m:1": NodeView(False), "r:1": NodeView(True, "slave", 0, False, -1.0, "m:1")}}
    assert choose_new_master("m:1", ("r:1",), views, leader="p1", max_age_s=1, max_staleness_s=10,
                             down_for_s=0.5) is None


# ---------------------------------------------------------------------------
# replication histories: a node that came back empty is never made master again
# (issue 12 item 6)
# ---------------------------------------------------------------------------

OLD, NEW, OTHER = "a" * 40, "b" * 40, "c" * 40
H = History(OLD, 5000)


def node(role: str, offset: int, replid: str, replid2: str = NO_REPLID, offset2: int = -1, *,
         master: str | None = None, link_up: bool = True, link_down_s: float = 0.0, up: bool = True) -> NodeView:
    return NodeView(up, role, offset, link_up, link_down_s, master, replid, replid2, offset2)


def test_contains_follows_redis_replication_ids():
    assert contains(node("master", 5000, OLD), H)
    assert contains(node("master", 9000, OLD), H)
    assert not contains(node("master", 4999, OLD), H), "restarted from an older dump"
    assert contains(node("slave", 7000, OLD, master=M), H)
    # promoted at 6000: replid2 continues OLD up to second_repl_offset - 1
    assert contains(node("master", 6500, NEW, OLD, 6001), H)
    assert contains(node("master", 5001, NEW, OLD, 5001), H)
    assert not contains(node("master", 9000, NEW, OLD, 4001), H), "forked before the committed offset"
    assert not contains(node("master", 0, NEW), H), "restarted without its data"
    assert not contains(node("master", 9000, ""), H), "no replid reported"


def test_a_history_at_offset_zero_is_covered_by_any_node():
    """Redis starts a new replication id when it creates its backlog for the first
    replica: a master recorded before any replica attached (offset 0) changes its id
    with nothing lost. It must not be taken for a master that lost its data (the k8s
    start-up test was held in no_safe_master before)."""
    before_replicas = History(OLD, 0)
    first_sync = node("master", 0, NEW)
    assert contains(first_sync, before_replicas)
    assert not master_lost_history(first_sync, before_replicas)
    assert next_history(node("master", 42, NEW), before_replicas) == History(NEW, 42)
    # a history at offset 0 protects nothing, so its first growth is committed at once,
    # not HISTORY_INTERVAL_S later (an empty restart in between would go unseen)
    assert history_due(History(NEW, 42), History(NEW, 0), since_last_s=0.1, interval_s=10)
    assert history_due(History(OTHER, 42), History(NEW, 40), since_last_s=0.1, interval_s=10)
    assert not history_due(History(NEW, 42), History(NEW, 40), since_last_s=0.1, interval_s=10)
    assert history_due(History(NEW, 42), History(NEW, 40), since_last_s=10, interval_s=10)


def test_next_history_grows_with_the_master_and_never_adopts_an_empty_one():
    assert next_history(node("master", 10, OLD), None) == History(OLD, 10)
    assert next_history(node("master", 6000, OLD), H) == History(OLD, 6000)
    assert next_history(node("master", 5000, OLD), H) is None, "nothing new"
    assert next_history(node("master", 6100, NEW, OLD, 6001), H) == History(NEW, 6100, OLD, 6000), \
        "after a promotion: the new stream, and where it left the old one"
    assert next_history(node("master", 0, NEW), H) is None, "restarted empty"
    assert next_history(node("slave", 9000, OLD, master=A), H) is None
    assert next_history(DOWN, H) is None and next_history(None, H) is None


def test_a_restarted_empty_master_is_never_promoted_nor_given_replicas():
    """The measured loss: B, the committed master, came back empty with the demo's stale
    `--replicaof` of the original master M; the reconciler ran REPLICAOF NO ONE on it
    ("promote: role is slave") and the others resynchronised from it, emptying themselves."""
    view = {B: node("slave", 0, NEW, master=M, link_up=False, link_down_s=-1),
            M: node("slave", 5200, OLD, master=B, link_up=False, link_down_s=1),
            A: node("slave", 5100, OLD, master=B, link_up=False, link_down_s=1)}
    assert reconcile(B, (B, M, A), view) != [], "without the history the old rule promotes it"
    assert master_lost_history(view[B], H)
    assert reconcile(B, (B, M, A), view, H) == []
    # as a master (restarted without --replicaof): no replica is pointed at it either
    view[B] = node("master", 0, NEW)
    view[C] = node("master", 0, OTHER)
    assert reconcile(B, (B, M, A, C), view, H) == []


def test_once_writes_are_held_the_replicas_of_an_emptied_master_are_detached():
    """no_safe_master (README's chaos run, ack = async, seed 5): B, the committed master, came
    back empty and no replica was a safe candidate (M held an older lineage). Left following B,
    M and A resynchronised from it 5 s later and discarded every acknowledged write before the
    operator could choose one of them. Once the held topology is committed they are detached;
    a node that already carries B's own replication id, a master and a node that does not
    answer are left alone, and nothing is detached before writes are held."""
    view = {B: node("master", 0, NEW),
            M: node("slave", 5200, OTHER, master=B, link_up=False, link_down_s=1),
            A: node("slave", 0, OLD, master=B, link_up=False, link_down_s=1),
            C: node("slave", 0, NEW, master=B, link_up=True)}
    assert reconcile(B, (B, M, A, C), view, H) == [], "before writes are held: a keeper may still be promoted"
    acts = reconcile(B, (B, M, A, C), view, H, writes_held=True)
    assert [(a.node, a.replicaof) for a in acts] == [(M, None), (A, None)]
    assert all(a.reason.startswith("detach") for a in acts)
    # detached, they are masters: nothing more to do (idempotent), and none is given to B
    view[M], view[A] = node("master", 5200, "d" * 40, OTHER, 5201), node("master", 0, "e" * 40, OLD, 1)
    view[C] = node("slave", 0, NEW, master=B, up=False)
    assert reconcile(B, (B, M, A, C), view, H, writes_held=True) == []
    # a master that holds the history: writes_held changes nothing
    view = {M: node("master", 6000, OLD), A: node("slave", 5000, OLD, master=M)}
    assert reconcile(M, (M, A), view, H, writes_held=True) == []


def test_a_cluster_node_is_not_detached_its_emptied_master_holds_its_full_syncs_instead():
    """Cluster mode refuses REPLICAOF, so the replicas of an emptied master cannot be detached:
    while any still follows it (and holds more than it), the one action is to hold that
    master's full syncs (health/cluster/sync_hold.py); with none left to keep, nothing."""
    view = {B: node("master", 0, NEW),
            M: node("slave", 5200, OTHER, master=B, link_up=False, link_down_s=1),
            C: node("slave", 0, NEW, master=B, link_up=True)}
    acts = reconcile(B, (B, M, C), view, H, writes_held=True, cluster=True)
    assert acts == [Action(B, None, acts[0].reason, hold_syncs=True)]
    assert reconcile(B, (B, M, C), view, H, cluster=True) == [], "before writes are held: nothing"
    view[M] = node("slave", 0, NEW, master=B, link_up=True)     # resynchronised already
    assert reconcile(B, (B, M, C), view, H, writes_held=True, cluster=True) == []
    assert not any(a.hold_syncs for a in reconcile(B, (B, M, C), view, None, cluster=True)), \
        "a master with the history: the usual actions, no hold"


def test_while_writes_are_held_no_node_is_pointed_at_the_emptied_master_when_it_is_down():
    """Chaos (seed 6, 8 min): after the detach, B (emptied, writes held) was killed again;
    with B not answering, the reconciler took the detached M and A for masters the topology
    calls replicas and pointed them at B, so they would resynchronise from it, empty, once
    it was back (the next step after B answered detached them again: a race with Redis'
    diskless-sync delay). While writes are held, nothing is pointed at B unless it answers
    with the history."""
    detached = {M: node("master", 5200, "d" * 40, OTHER, 5201), A: node("master", 0, "e" * 40, OLD, 1)}
    for b in (DOWN, None, node("unknown", 0, "", up=True)):
        view = dict(detached) if b is None else {**detached, B: b}
        assert reconcile(B, (B, M, A), view, H) != [], "without the hold the roles are made to match"
        assert reconcile(B, (B, M, A), view, H, writes_held=True) == [], b


def test_the_replica_that_kept_the_history_is_the_one_to_promote():
    views = {p: {B: node("master", 0, NEW),
                 M: node("slave", 5200, OLD, master=B, link_up=False, link_down_s=0.4),
                 A: node("slave", 5100, OLD, master=B, link_up=False, link_down_s=0.4),
                 C: node("slave", 0, NEW, master=B, link_up=True)} for p in PROXIES}
    pick = choose_new_master(B, (M, A, C), views, leader="proxy-1", history=H, max_age_s=1, max_staleness_s=10,
                             down_for_s=0)
    assert pick == M
    # C resynchronised from the empty node: whatever its offset, it holds nothing of H
    for p in PROXIES:
        views[p][C] = node("slave", 99999, NEW, master=B, link_up=True)
    assert choose_new_master(B, (M, A, C), views, leader="proxy-1", history=H, max_age_s=1, max_staleness_s=10,
                             down_for_s=0) == M
    # nobody holds H: no candidate (writes are held, the operator is told)
    for p in PROXIES:
        views[p][M] = node("slave", 0, OTHER, master=B, link_up=True)
        views[p][A] = node("slave", 10, NEW, master=B, link_up=True)
    assert choose_new_master(B, (M, A, C), views, leader="proxy-1", history=H, max_age_s=1, max_staleness_s=10,
                             down_for_s=0) is None


def test_a_chosen_replica_is_promoted_and_given_replicas_while_it_holds_what_it_was_chosen_for():
    chosen = History(OLD, 5100)          # A's history when it was chosen
    view = {A: node("slave", 5100, OLD, master=M, link_up=False, link_down_s=1),
            B: node("slave", 5000, OLD, master=M, link_up=False, link_down_s=1), M: DOWN}
    assert {(a.node, a.replicaof) for a in reconcile(A, (A, B, M), view, chosen)} == {(A, None), (B, A)}
    # promoted: a new replid continuing OLD up to 5100
    view[A] = node("master", 5100, NEW, OLD, 5101)
    assert [(a.node, a.replicaof) for a in reconcile(A, (A, B, M), view, chosen)] == [(B, A)]
    # A resynchronised from some empty node before its promotion: leave it alone
    view[A] = node("slave", 0, OTHER, master=C, link_up=True)
    assert reconcile(A, (A, B, M), view, chosen) == []


# ---------------------------------------------------------------------------
# the leader's right to act (issue 12 item 3)
# ---------------------------------------------------------------------------

READY = LeaderState(role="leader", term=7, commit_index=40, applied_index=40, commit_term=7, lease_held=True,
                    epoch=3)


def test_a_ready_leader_acts_for_its_term_and_epoch():
    assert refuse_to_act(READY, term=7, epoch=3) is None


@pytest.mark.parametrize("change,why", [
    ({"role": "follower"}, "not the leader"),
    ({"term": 8}, "term changed"),
    ({"commit_term": 6}, "no entry of this term"),              # a new leader before its no-op committed
    ({"applied_index": 39}, "applied 39 < committed 40"),     # its topology may be an epoch behind
    ({"lease_held": False}, "no lease"),
    ({"epoch": 4}, "epoch changed"),                           # a new topology was committed meanwhile
])
def test_the_leader_does_not_act_when(change, why):
    assert why in (refuse_to_act(replace(READY, **change), term=7, epoch=3) or "")


def test_a_stale_epoch_after_a_wait_is_refused_even_when_all_else_holds():
    """A reconciler that captured epoch 3, then waited on the fence while epoch 4 was
    committed and applied, must not run epoch 3's REPLICAOFs."""
    assert refuse_to_act(replace(READY, epoch=4, commit_index=41, applied_index=41), term=7, epoch=3)


# ---------------------------------------------------------------------------
# a deposed master that holds the history its successor started from (cluster chaos,
# seed 1): M, SIGSTOPped, was failed over to B, whose stream NEW left OLD at offset 5000;
# back, M had 133 bytes B never got, so B refused it a partial resync and its full one
# waited out Redis' 5 s delay. B took writes it could not get acknowledged (WAIT had no
# replica: M was still on OLD), then was killed and came back empty. M held every
# acknowledged write, but continued no recorded stream.
# ---------------------------------------------------------------------------

PROMOTED = History(NEW, 5818, OLD, 5000)     # B's record: NEW since OLD's 5000, 818 unacknowledged bytes on it


def test_a_node_on_the_parent_holds_what_the_new_stream_took_from_it():
    deposed = node("slave", 5133, OLD, master=B, link_up=False, link_down_s=2)
    assert holds_parent(deposed, PROMOTED) and not contains(deposed, PROMOTED)
    assert holds_parent(node("master", 5000, OLD), PROMOTED)
    assert holds_parent(node("master", 5400, "d" * 40, OLD, 5134), PROMOTED), "promoted out of the parent since"
    assert not holds_parent(node("slave", 4999, OLD, master=B), PROMOTED), "behind the switch point"
    assert not holds_parent(deposed, History(NEW, 5818)), "where it came from is not known"
    assert not holds_parent(node("slave", 9000, OTHER, master=B), PROMOTED)


def _set_of_three(*, deposed_offset: int = 5133) -> dict:
    return {B: node("master", 0, OTHER),                                  # B, back empty
            M: node("slave", deposed_offset, OLD, master=B, link_up=False, link_down_s=2),
            A: node("slave", 4990, OLD, master=B, link_up=False, link_down_s=2)}   # A: behind M, also on OLD


def test_the_parent_keeper_is_promoted_only_when_no_replica_can_have_had_the_new_stream():
    own = _set_of_three()
    nodes = (B, M, A)
    assert parent_keeper(B, nodes, own, PROMOTED, max_age_s=1) == M
    # choose_new_master alone finds no one: M continues no recorded stream
    assert choose_new_master(B, (M, A), {"p1": own}, leader="p1", history=PROMOTED, max_age_s=1,
                             max_staleness_s=10, down_for_s=0) is None
    # a replica on B's stream may hold writes acknowledged there that M lacks: hold instead
    assert parent_keeper(B, nodes, {**own, A: node("slave", 5040, NEW, OLD, 5001, master=B)}, PROMOTED,
                         max_age_s=1) is None
    # so may one emptied since (on a stream of its own), or one the leader does not see
    assert parent_keeper(B, nodes, {**own, A: node("slave", 0, "e" * 40, master=B)}, PROMOTED, max_age_s=1) is None
    assert parent_keeper(B, nodes, {**own, A: replace(own[A], up=False)}, PROMOTED, max_age_s=1) is None
    assert parent_keeper(B, nodes, {**own, A: replace(own[A], age_s=2.0)}, PROMOTED, max_age_s=1) is None
    assert parent_keeper(B, nodes, {k: v for k, v in own.items() if k != A}, PROMOTED, max_age_s=1) is None
    # the master back from an old dump of B's stream: not an emptied one, hold
    assert parent_keeper(B, nodes, {**own, B: node("master", 5500, NEW, OLD, 5001)}, PROMOTED, max_age_s=1) is None
    # where B's stream came from is not recorded (a record of an older version): nothing to go on
    assert parent_keeper(B, nodes, own, History(NEW, 5818), max_age_s=1) is None
    # priority 0 and nofailover are obeyed; behind the switch point is no keeper
    assert parent_keeper(B, nodes, {**own, M: replace(own[M], priority=0)}, PROMOTED, max_age_s=1) is None
    two = {B: own[B], M: own[M]}
    assert parent_keeper(B, (B, M), {**two, M: replace(own[M], offset=4990)}, PROMOTED, max_age_s=1) is None


def test_among_parent_keepers_the_most_data_wins():
    own = {**_set_of_three(), A: node("slave", 5090, OLD, master=B, link_up=False, link_down_s=2)}
    assert parent_keeper(B, (B, M, A), own, PROMOTED, max_age_s=1) == M
    own[A] = node("slave", 5200, OLD, master=B, link_up=False, link_down_s=2)
    assert parent_keeper(B, (B, M, A), own, PROMOTED, max_age_s=1) == A


def test_history_round_trips_its_parent_and_reads_records_without_one():
    assert History.from_dict(PROMOTED.to_dict()) == PROMOTED
    assert "parent" not in H.to_dict(), "a record without a parent is written as before"
    assert History.from_dict({"replid": NEW, "offset": 7}) == History(NEW, 7)


# ---------------------------------------------------------------------------
# the committed topology carries the history (and survives leader change with the log)
# ---------------------------------------------------------------------------

def test_topology_round_trips_history_and_hold_reason():
    t = Topology(4, A, (B, M), history=H)
    assert Topology.from_dict(t.to_dict()).history == H
    p = t.paused("no_safe_master: ...")
    back = Topology.from_dict(p.to_dict())
    assert back.writes_paused and back.hold_reason.startswith("no_safe_master") and back.history == H
    r = back.resumed()
    assert not r.writes_paused and not r.hold_reason and r.history == H
    n = t.with_master(B, History(OTHER, 1))
    assert n.epoch == 5 and n.history == History(OTHER, 1) and not n.hold_reason
    assert Topology.from_dict({"epoch": 1, "master": A, "replicas": [B]}).history is None


def test_state_machine_applies_history_for_the_current_epoch_only():
    from health.shard.controller import TopologyStateMachine

    changes = []
    sm = TopologyStateMachine(lambda new, old, why: changes.append(new.epoch))
    t = Topology(2, A, (B,), history=History(OLD, 1))
    sm.apply(TopologyStateMachine.entry(t))
    sm.apply(TopologyStateMachine.history_entry(t, History(OLD, 900)))
    assert sm.topology.history == History(OLD, 900) and changes == [2], "a history update changes no roles"
    sm.apply(TopologyStateMachine.history_entry(Topology(1, A, (B,)), History(NEW, 5)))
    assert sm.topology.history == History(OLD, 900), "an update for an older epoch is ignored"
    sm2 = TopologyStateMachine(lambda *a: None)
    sm2.restore(sm.snapshot())
    assert sm2.topology.history == History(OLD, 900)


# ---------------------------------------------------------------------------
# replica-priority comes from Redis (issue 12 item 7)
# ---------------------------------------------------------------------------

def test_probe_reads_replica_priority_and_second_offset():
    from health.probes.probe import NodeStatus, parse_replication_info

    st = NodeStatus("x:1")
    parse_replication_info({"role": "slave", "master_host": "m", "master_port": 1, "master_link_status": "up",
                            "slave_repl_offset": 10, "slave_priority": 0, "master_replid": OLD,
                            "master_replid2": 0, "second_repl_offset": -1}, st)
    assert st.priority == 0 and st.offset2 == -1 and st.replid2 == NO_REPLID
    parse_replication_info({"role": "master", "master_replid": NEW, "master_replid2": OLD,
                            "second_repl_offset": 5101, "master_repl_offset": 6000}, st)
    assert st.offset2 == 5101


def test_a_replica_with_priority_zero_in_its_own_view_is_never_chosen():
    v = {A: replace(replica(900), priority=0), B: replica(100)}
    assert choose(v) == B


def test_a_follower_reports_a_change_at_once_and_an_unchanged_view_only_to_refresh_it():
    """Issue 16: a follower used to POST its view every probe interval even when nothing
    changed. Now: at once on news (a node down, a new offset, a new leader), else every refresh_s."""
    from health.shard.decide import report_due, report_key

    up = {"a:1": NodeView(True, "master", 100, age_s=0.01), "b:2": NodeView(True, "slave", 100, True, age_s=0.02)}
    key = report_key(up, "proxy-1")
    older = {a: replace(nv, age_s=nv.age_s + 0.09) for a, nv in up.items()}
    assert report_key(older, "proxy-1") == key                  # only the ages moved
    assert not report_due(report_key(older, "proxy-1"), key, 0.1, refresh_s=0.2)
    assert report_due(report_key(older, "proxy-1"), key, 0.2, refresh_s=0.2)
    down = {**up, "a:1": replace(up["a:1"], up=False)}
    assert report_due(report_key(down, "proxy-1"), key, 0.0, refresh_s=0.2)
    moved = {**up, "b:2": replace(up["b:2"], offset=101)}
    assert report_due(report_key(moved, "proxy-1"), key, 0.0, refresh_s=0.2)
    assert report_due(report_key(up, "proxy-2"), key, 0.0, refresh_s=0.2)   # a new leader
    assert report_due(key, None, 0.0, refresh_s=0.2)                        # never sent (or not delivered)


def test_periodic_tasks_wait_for_the_same_grid_point():
    """Issue 16: probes, controller, Sentinel watch and Raft ticks wake up together."""
    from health.probes.probe import until_next

    assert until_next(0.1, now=12.34) == pytest.approx(0.06)
    assert until_next(0.1, now=12.3999) == pytest.approx(0.1001)   # just early: the next point, not twice
    assert until_next(0.1, now=12.301) == pytest.approx(0.099)
    for now in (5.0, 5.02, 5.049):      # tasks asleep at different moments meet at 5.1
        assert now + until_next(0.1, now=now) == pytest.approx(5.1)
    assert 5.02 + until_next(0.1, now=5.02, offset=0.05) == pytest.approx(5.05)   # half an interval later
    assert 5.06 + until_next(0.1, now=5.06, offset=0.05) == pytest.approx(5.15)


def test_an_aged_view_is_the_same_view_older() -> None:
    nv = NodeView(True, "slave", 100, True, 0.5, "10.0.0.1:6379", "a" * 40, "b" * 40, 7, 10, 0.25)
    old = nv.aged(1.5)
    assert old == replace(nv, age_s=1.75) and old is not nv and nv.age_s == 0.25
    assert hash(old) == hash(replace(nv, age_s=1.75))


# ---------------------------------------------------------------------------
# may_take_writes (ProxyServer.can_write; the C data plane's permit follows it)
# ---------------------------------------------------------------------------

def test_a_master_restarted_empty_takes_no_write_until_the_leader_fails_over():
    h = History("a" * 40, 5000)
    on_it = NodeView(True, "master", 4000, replid="a" * 40)       # an older probe: less offset, same stream
    promoted = NodeView(True, "master", 6000, replid="b" * 40, replid2="a" * 40, offset2=5001)
    emptied = NodeView(True, "master", 0, replid="c" * 40, replid2=NO_REPLID)
    assert may_take_writes(on_it, h) and may_take_writes(promoted, h)
    assert not may_take_writes(emptied, h)
    # nothing to protect, or nothing known of the node's stream: as before
    assert may_take_writes(emptied, None) and may_take_writes(emptied, History("a" * 40, 0))
    assert may_take_writes(NodeView(True, "master", 10), h)


def test_a_master_that_freed_its_backlog_keeps_its_history_by_its_run_id():
    """Without replicas for repl-backlog-ttl a master takes a new replication id, no
    replid2, the same offset: the same process (run_id) still holds what was recorded, so
    it takes writes, is not failed over, and the record moves to its new id. Another
    process (a restart), or one that was a replica meanwhile (replid2 set), does not."""
    h = History(OLD, 5000, run_id="r1")
    freed = NodeView(True, "master", 5000, replid=NEW, replid2=NO_REPLID, run_id="r1")
    assert contains(freed, h) and may_take_writes(freed, h) and not master_lost_history(freed, h)
    assert next_history(freed, h) == History(NEW, 5000, run_id="r1")
    restarted = replace(freed, offset=0, run_id="r2")
    assert not contains(restarted, h) and not may_take_writes(restarted, h) and master_lost_history(restarted, h)
    resynced = replace(freed, replid2=OTHER, offset2=7001, offset=9000)   # a replica of another node, promoted
    assert not contains(resynced, h) and master_lost_history(resynced, h)
    as_replica = replace(freed, role="slave")
    assert not contains(as_replica, h)
    # a record without a run_id (an older version's) proves nothing
    assert master_lost_history(freed, History(OLD, 5000))
    # the record carries it through Raft
    assert History.from_dict(h.to_dict()) == h and "run_id" not in History(OLD, 1).to_dict()
