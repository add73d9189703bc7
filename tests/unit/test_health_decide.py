"""health.decide: the pure failover decisions (objectively down, whom to promote, reconcile).

Also the decision-level half of issue 5's case 7 ("the master's link to one
proxy only is cut: no failover"): one proxy's 'down' view never reaches the
quorum.  The integration test `test_master_cut_off_from_one_proxy_only_no_failover`
covers the same case with real processes.
"""

from __future__ import annotations

import itertools

import pytest

from health.decide import (NO_REPLID, Action, NodeView, choose_new_master, objectively_down, reconcile,
                           replica_with_lost_history)

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
           priorities=None, max_staleness_s: float = 10.0, down_for_s: float = 0.5, order=None):
    views = replicas if per_proxy else {p: {M: DOWN, **replicas} for p in PROXIES}
    names = tuple(order) if order is not None else tuple(sorted({a for v in views.values() for a in v} - {M}))
    return choose_new_master(M, names, views, priorities=priorities, max_staleness_s=max_staleness_s,
                             down_for_s=down_for_s)


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


def test_a_replica_seen_by_one_proxy_is_enough_and_its_best_view_counts():
    views = {
        "proxy-1": {M: DOWN, A: replica(100), B: replica(0, up=False)},
        "proxy-2": {M: DOWN, A: replica(120), B: replica(150)},
        "proxy-3": {M: DOWN, A: replica(110)},
    }
    assert choose(views, per_proxy=True) == B
    views["proxy-2"][A] = replica(200)
    assert choose(views, per_proxy=True) == A


def test_no_replicas_no_candidate():
    assert choose_new_master(M, (), {p: {M: DOWN} for p in PROXIES}, max_staleness_s=10, down_for_s=1) is None


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
    from health.decide import NodeView, choose_new_master

    views = {"p1": {"m:1": NodeView(False), "r:1": NodeView(True, "slave", 0, False, -1.0, "m:1")}}
    assert choose_new_master("m:1", ("r:1",), views, max_staleness_s=10, down_for_s=0.5) is None


# ---------------------------------------------------------------------------
# replica_with_lost_history: the master restarted without its data
# ---------------------------------------------------------------------------

OLD, NEW, OTHER = "a" * 40, "b" * 40, "c" * 40


def restarted_master(offset: int = 0, replid2: str = NO_REPLID) -> NodeView:
    return NodeView(True, "master", offset, True, 0.0, None, NEW, replid2)


def history_replica(offset: int, replid: str = OLD, *, link_up: bool = False, link_down_s: float = 0.2,
                    master: str | None = M, up: bool = True) -> NodeView:
    return NodeView(up, "slave", offset, link_up, link_down_s, master, replid, NO_REPLID)


def test_replica_ahead_of_a_master_with_a_new_history_is_the_one_to_keep():
    view = {M: restarted_master(), A: history_replica(5000), B: history_replica(7000)}
    assert replica_with_lost_history(M, (A, B), view) == B


@pytest.mark.parametrize("view,why", [
    ({M: restarted_master(), A: history_replica(5000, NEW)}, "already resynchronised: same history"),
    ({M: restarted_master(9000), A: history_replica(5000)}, "the master is ahead"),
    ({M: restarted_master(replid2=OLD), A: history_replica(5000)}, "a promoted replica continues a history"),
    ({M: restarted_master(), A: history_replica(5000, link_down_s=-1)}, "never synchronised"),
    ({M: restarted_master(), A: history_replica(5000, master=C)}, "follows another node"),
    ({M: restarted_master(), A: history_replica(5000, up=False)}, "unreachable"),
    ({M: DOWN, A: history_replica(5000)}, "the master is down: objective-down's business"),
    ({M: NodeView(True, "slave", 0, False, 0.0, C, NEW), A: history_replica(5000)}, "the master is a replica"),
    ({M: restarted_master(), A: history_replica(5000, ""), B: history_replica(0, OTHER)},
     "no replid reported (an older proxy's view), or nothing ahead"),
])
def test_no_lost_history(view, why):
    assert replica_with_lost_history(M, (A, B), view) is None, why


def test_node_view_round_trips_the_replication_ids():
    v = history_replica(5000, OTHER)
    assert NodeView.from_dict(v.to_dict()) == v
    # a view from a proxy that does not report them yet
    assert NodeView.from_dict({"up": True, "role": "slave", "offset": 3}).replid == ""
