"""health/cluster/takeover_epoch.py's decision: which nodes will refuse a TAKEOVER's claim to its
slots (they give them to another node at an epoch not below the new master's), from
CLUSTER NODES texts, without sockets."""

from __future__ import annotations

from health.cluster.takeover_epoch import blocking_views
from proxy.routing.cluster_nodes import parse_cluster_nodes

OLD, NEW, OTHER = "a" * 40, "b" * 40, "c" * 40


def view(old_epoch: int, new_epoch: int, *, old_slots: str = "0-8191", new_slots: str = "",
         old_flags: str = "master,fail") -> list:
    return parse_cluster_nodes("\n".join([
        f"{OLD} 127.0.0.1:7001@17001 {old_flags} - 0 0 {old_epoch} disconnected {old_slots}",
        f"{NEW} 127.0.0.1:7002@17002 master - 0 0 {new_epoch} connected {new_slots}",
        f"{OTHER} 127.0.0.1:7003@17003 myself,master - 0 0 1 connected 8192-16383",
    ]))


CLAIM = ((0, 8191),)


def test_a_node_that_knows_the_dead_master_at_the_same_epoch_blocks():
    assert blocking_views(NEW, 4, CLAIM, {"x:1": view(4, 4)}) == {"x:1": (OLD, 4)}


def test_a_node_that_knows_the_dead_master_at_a_greater_epoch_blocks():
    """The replica had not heard of its master's last bump: its TAKEOVER epoch is lower."""
    assert blocking_views(NEW, 4, CLAIM, {"x:1": view(5, 3)}) == {"x:1": (OLD, 5)}


def test_a_lower_epoch_or_the_new_master_already_named_blocks_nothing():
    assert blocking_views(NEW, 5, CLAIM, {"x:1": view(4, 5)}) == {}
    took = view(4, 4, old_slots="", new_slots="0-8191")
    assert blocking_views(NEW, 4, CLAIM, {"x:1": took}) == {}


def test_only_an_owner_of_the_claimed_slots_counts():
    """Another master at a greater epoch that owns other slots is no rival."""
    assert blocking_views(NEW, 1, ((0, 99),), {"x:1": view(0, 1, old_slots="100-8191")}) == {}
    assert blocking_views(NEW, 1, ((0, 100),), {"x:1": view(1, 1, old_slots="100-8191")}) == {"x:1": (OLD, 1)}


def test_a_replica_line_is_no_owner():
    """A replica's line shows its master's epoch and no slots: never a rival."""
    demoted = view(9, 4, old_slots="", old_flags="slave")
    assert blocking_views(NEW, 4, CLAIM, {"x:1": demoted}) == {}


def test_each_view_is_judged_on_its_own():
    views = {"x:1": view(4, 4), "y:1": view(3, 4), "z:1": view(4, 4, old_slots="", new_slots="0-8191")}
    assert blocking_views(NEW, 4, CLAIM, views) == {"x:1": (OLD, 4)}
