"""Failover decisions as pure functions: no clock, no I/O, easy to test.

The leader feeds them the latest view of every proxy (its own included) and
gets back whether the master is objectively down and which replica to
promote.  Everything here follows DESIGN.md's safety rules 2 and 3.
"""

from __future__ import annotations

from dataclasses import dataclass

NO_REPLID = "0" * 40    # the replication id that is none (INFO's master_replid2 without a history)


@dataclass(frozen=True)
class NodeView:
    """One proxy's view of one Redis node at one moment."""

    up: bool
    role: str = "unknown"
    offset: int = 0
    link_up: bool = False
    link_down_s: float = 0.0
    master: str | None = None
    replid: str = ""
    replid2: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> "NodeView":
        return cls(bool(d.get("up")), str(d.get("role", "unknown")), int(d.get("offset") or 0),
                   bool(d.get("link_up")), float(d.get("link_down_s") or 0.0), d.get("master"),
                   str(d.get("replid") or ""), str(d.get("replid2") or ""))

    def to_dict(self) -> dict:
        return {"up": self.up, "role": self.role, "offset": self.offset, "link_up": self.link_up,
                "link_down_s": self.link_down_s, "master": self.master, "replid": self.replid,
                "replid2": self.replid2}


def replica_with_lost_history(master: str, replicas: tuple[str, ...], view: dict[str, NodeView]) -> str | None:
    """A replica holding data the master no longer has, or None.

    The master restarted without its data (no persistence, restarted before
    `down_after_ms`): it answers as a master with a brand-new replication
    history (no `master_replid2`) and a lower offset than a replica that has
    not yet resynchronised from it. Left alone, that replica's full resync
    would empty it too; promoting it keeps the data. A promoted replica
    always carries its predecessor's history as `replid2`, and a replica that
    never synchronised has nothing to keep, so neither counts.
    """
    m = view.get(master)
    if m is None or not m.up or m.role != "master" or not m.replid or m.replid2 not in ("", NO_REPLID):
        return None
    best = None
    for addr in replicas:
        v = view.get(addr)
        if v is None or not v.up or v.role != "slave" or v.master != master:
            continue
        if not v.replid or v.replid == m.replid or (not v.link_up and v.link_down_s < 0):
            continue
        if v.offset > m.offset and (best is None or v.offset > view[best].offset):
            best = addr
    return best


def objectively_down(master: str, views: dict[str, dict[str, NodeView]], quorum: int) -> bool:
    """True when at least `quorum` proxies' fresh views say `master` is down.

    `views` maps proxy name -> (node address -> NodeView); stale views must
    already be left out by the caller.  One proxy's broken link never counts
    for more than one vote.
    """
    down = sum(1 for per_node in views.values() if master in per_node and not per_node[master].up)
    return down >= quorum


def choose_new_master(master: str, replicas: tuple[str, ...], views: dict[str, dict[str, NodeView]],
                      *, priorities: dict[str, int] | None = None,
                      max_staleness_s: float, down_for_s: float) -> str | None:
    """The replica to promote, or None when no replica is safe to promote.

    A candidate must be up in the leader's merged view, a replica, and must not
    have been cut off from the master longer than `max_staleness_s` before the
    master went down (`link_down_s - down_for_s`: the time its link was down
    while the master was still up).  Priority 0 means never.  Best: highest
    replication offset, then lowest priority number, then name.
    """
    priorities = priorities or {}
    best: tuple | None = None
    best_addr = None
    for addr in replicas:
        if priorities.get(addr, 100) == 0:
            continue
        seen = [per_node[addr] for per_node in views.values() if addr in per_node and per_node[addr].up]
        if not seen:
            continue
        view = max(seen, key=lambda v: v.offset)
        if view.role != "slave":
            continue
        if view.master not in (master, None):
            continue
        if not view.link_up and view.link_down_s < 0:
            continue  # never synced with the master (Redis says -1): it has nothing to offer
        if not view.link_up and view.link_down_s - down_for_s > max_staleness_s:
            continue
        key = (-view.offset, priorities.get(addr, 100), addr)
        if best is None or key < best:
            best, best_addr = key, addr
    return best_addr


@dataclass(frozen=True)
class Action:
    """One reconciler step: make `node` a master (`replicaof` None) or a replica."""

    node: str
    replicaof: str | None
    reason: str


def reconcile(master: str | None, nodes: tuple[str, ...], view: dict[str, NodeView]) -> list[Action]:
    """What to change so that Redis roles match the committed topology.

    Only nodes that answer are touched; a node already in the right role is
    left alone (so every action is idempotent and runs once per change).
    """
    actions = []
    if master is None:
        return actions
    mview = view.get(master)
    if mview is not None and mview.up and mview.role == "slave":
        actions.append(Action(master, None, f"promote: role is {mview.role}"))
    for node in nodes:
        if node == master:
            continue
        v = view.get(node)
        if v is None or not v.up or v.role == "unknown":
            continue
        if v.role == "master":
            actions.append(Action(node, master, "demote: a master that the topology says is a replica"))
        elif v.master != master:
            actions.append(Action(node, master, f"re-point: follows {v.master}"))
    return actions
