"""Failover decisions as pure functions: no clock, no I/O, easy to test.

The leader feeds them the latest view of every proxy (its own included) and
gets back whether the master is objectively down, which replica to promote,
whether the master still holds its known replication history, and what the
reconciler must change.  Everything here follows docs/design.md's safety rules 2
and 3.

Replication histories (Redis' `master_replid`, `master_replid2`,
`second_repl_offset`): a node's dataset is the stream `replid` up to its
offset; a promoted node also continues the stream `replid2` up to
`second_repl_offset - 1`.  A node restarted without its data starts a new
stream at offset 0, so it never `contains` the history the cluster committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from operator import attrgetter

from proxy.routing.topology import History

NO_REPLID = "0" * 40    # the replication id that is none (INFO's master_replid2 without a history)
DEFAULT_PRIORITY = 100  # Redis' default replica-priority


@dataclass(frozen=True)
class NodeView:
    """One proxy's view of one Redis node.

    `age_s`: how long before the view was taken (sent, or decided on) the node
    last answered a probe.  A proxy sends ages relative to its own monotonic
    clock; the leader turns them into ages by its own (clocks of proxies are
    not comparable, durations are)."""

    up: bool
    role: str = "unknown"
    offset: int = 0
    link_up: bool = False
    link_down_s: float = 0.0
    master: str | None = None
    replid: str = ""
    replid2: str = ""
    offset2: int = -1               # second_repl_offset: replid2 is valid up to offset2 - 1 (-1: none)
    priority: int = DEFAULT_PRIORITY   # replica-priority (INFO's slave_priority); 0 = never promote
    age_s: float = 0.0
    run_id: str = ""                # the Redis process (INFO server's run_id; "" not known)

    @classmethod
    def from_dict(cls, d: dict) -> "NodeView":
        prio = d.get("priority")
        return cls(bool(d.get("up")), str(d.get("role", "unknown")), int(d.get("offset") or 0),
                   bool(d.get("link_up")), float(d.get("link_down_s") or 0.0), d.get("master"),
                   str(d.get("replid") or ""), str(d.get("replid2") or ""), int(d.get("offset2", -1)),
                   DEFAULT_PRIORITY if prio is None else int(prio),
                   # a view without an age (an older proxy's) is as old as it can be and still count
                   float(d["age_s"]) if d.get("age_s") is not None else float("inf"),
                   str(d.get("run_id") or ""))

    def aged(self, more_s: float) -> "NodeView":
        """The same view `more_s` seconds older. (A copy of the fields rather than
        `dataclasses.replace`, six times slower: the leader ages every fresh view at each
        step, ten times a second: issue 16.)"""
        view = object.__new__(NodeView)
        view.__dict__.update(self.__dict__)
        view.__dict__["age_s"] = self.age_s + more_s
        return view

    def to_dict(self) -> dict:
        return {"up": self.up, "role": self.role, "offset": self.offset, "link_up": self.link_up,
                "link_down_s": self.link_down_s, "master": self.master, "replid": self.replid,
                "replid2": self.replid2, "offset2": self.offset2, "priority": self.priority, "age_s": self.age_s,
                "run_id": self.run_id}


@dataclass(frozen=True)
class NodeTags:
    """An operator's tags on one Redis node (set through the dynamic configuration, like
    Patroni's tags): `nofailover` never promotes it automatically (`failover --to` still
    can); `priority`, lower wins, 0 never (as Redis' replica-priority, which it replaces
    for this node); `noloadbalance` never sends it reads; `max_lag_on_failover` (bytes):
    a replica further behind is not promoted automatically."""

    nofailover: bool = False
    priority: int | None = None
    noloadbalance: bool = False
    max_lag_on_failover: int | None = None


NO_TAGS = NodeTags()


def serves_reads(addr: str, tags: Mapping[str, NodeTags]) -> bool:
    """May reads be load-balanced to `addr`? (not when tagged `noloadbalance`)"""
    return not tags.get(addr, NO_TAGS).noloadbalance


def failover_refusal(addr: str, tags: Mapping[str, NodeTags]) -> str | None:
    """Why an automatic failover must not promote `addr` whatever its state, or None."""
    t = tags.get(addr, NO_TAGS)
    if t.nofailover:
        return "tagged nofailover"
    if t.priority == 0:
        return "tagged priority 0"
    return None


# ---------------------------------------------------------------------------
# replication histories
# ---------------------------------------------------------------------------

def contains(v: NodeView, h: History) -> bool:
    """True when node `v`'s dataset holds the stream `h.replid` up to `h.offset`.

    A history at offset 0 holds nothing replicated, so every node covers it:
    Redis itself starts a new replication id (and no replid2) when it creates
    its backlog for the first replica, so a master seen before any replica
    attached changes its id without losing anything."""
    if h.offset <= 0:
        return True
    if not v.replid:
        return False
    if v.replid == h.replid:
        return v.offset >= h.offset
    if same_process(v, h):
        return v.offset >= h.offset
    return v.replid2 == h.replid and v.offset2 - 1 >= h.offset


def same_process(v, h: History) -> bool:
    """`v` (a view or a probe's status) is the very Redis process `h` was recorded from,
    still a master, and continues no other stream: it kept its data, whatever its
    replication id says. A master left without replicas for `repl-backlog-ttl` (an hour
    by default) frees its backlog and takes a new id, with no replid2 and its offset
    unchanged, and again when a replica next attaches; a restart changes the run_id, and a
    master that was a replica meanwhile continues that stream as its replid2."""
    return bool(h.run_id) and v.run_id == h.run_id and v.role == "master" and v.replid2 in ("", NO_REPLID)


def same_lineage(v: NodeView, h: History) -> bool:
    """True when `v` holds (a prefix of) the stream `h.replid`: it replicated
    from the node whose history `h` is, or from one promoted out of it."""
    return bool(v.replid) and h.replid in (v.replid, v.replid2)


def may_take_writes(v, h: History | None) -> bool:
    """The committed master `v` (a probe's view of it) may be written to: it is on the
    stream of the committed history `h` (its replication id, or the one it continues),
    or nothing is known to protect. A master restarted without its data answers with a
    new replication id: a write acknowledged there would be discarded by the failover
    the leader starts at its next step (`_master_lost_history`), so none goes there."""
    return h is None or h.offset <= 0 or not v.replid or same_lineage(v, h) or same_process(v, h)


def history_of(v: NodeView) -> History:
    """`v`'s stream, with the one it continues when it was promoted (replid2)."""
    if v.replid2 and v.replid2 != NO_REPLID and v.offset2 > 0:
        return History(v.replid, v.offset, v.replid2, v.offset2 - 1, v.run_id)
    return History(v.replid, v.offset, run_id=v.run_id)


def holds_parent(v: NodeView, h: History) -> bool:
    """True when `v` holds the stream `h` was started from (`h.parent`) up to the point
    where `h` left it: everything `h` holds from before it became a stream of its own."""
    if not h.parent or not v.replid:
        return False
    if v.replid == h.parent:
        return v.offset >= h.parent_offset
    return v.replid2 == h.parent and v.offset2 - 1 >= h.parent_offset


def next_history(mview: NodeView | None, history: History | None) -> History | None:
    """The record to commit for the master seen as `mview`, or None to keep `history`.

    Only a master whose dataset contains the committed history continues it
    (a promoted replica shows it as replid2); one restarted without its data
    never replaces the record, whatever its offset."""
    if mview is None or not mview.up or mview.role != "master" or not mview.replid:
        return None
    if history is None:
        return history_of(mview)
    if not contains(mview, history):
        return None
    if mview.replid != history.replid or mview.offset > history.offset:
        return history_of(mview)
    return None


def history_due(new: History, recorded: History | None, since_last_s: float, interval_s: float) -> bool:
    """Commit `new` now? At once for a new replication id, or while the recorded
    history is still at offset 0 (it protects nothing yet: see `contains`);
    offset growth within one id at most every `interval_s` (each entry costs
    every proxy an fsync)."""
    if recorded is None or new.replid != recorded.replid or recorded.offset <= 0:
        return True
    return since_last_s >= interval_s


def master_lost_history(mview: NodeView | None, history: History | None) -> bool:
    """The committed master answers but no longer holds the committed history
    (restarted without its data, or from an old dump)."""
    return (history is not None and mview is not None and mview.up and mview.role in ("master", "slave")
            and bool(mview.replid) and not contains(mview, history))


# ---------------------------------------------------------------------------
# failure detection and the choice of a new master
# ---------------------------------------------------------------------------

def never_seen(history: History | None) -> bool:
    """No history was ever recorded for the committed master: no leader has seen it
    answer since the topology named it (say, every node started at once and its
    replicas answered first, or it was down when the proxies first started).
    Nothing is known of what it holds (it may be loading a large dataset), so no
    replica is promoted over it automatically: Sentinel, too, fails over only a
    master it has seen."""
    return history is None


# every field of a NodeView but its age (C-level getter: a follower builds a key every step)
_BUT_AGE = attrgetter(*(f.name for f in fields(NodeView) if f.name != "age_s"))


def report_key(view: dict[str, NodeView], leader: str | None) -> tuple:
    """What a report says apart from the ages: a report that says the same again to the
    same leader only refreshes the ages, which the leader also counts on its own clock."""
    return leader, tuple(sorted((addr, _BUT_AGE(nv)) for addr, nv in view.items()))


def node_states(view: dict[str, NodeView]) -> tuple:
    """What a view says of the nodes' states (up, role, link, master), without offsets and ages."""
    return tuple(sorted((a, nv.up, nv.role, nv.link_up, nv.master) for a, nv in view.items()))


def report_due(key: tuple, last_key: tuple | None, since_last_s: float, refresh_s: float) -> bool:
    """Send a follower's view to the leader now? At once when it says something new (a
    node went down, a new leader that has no view of ours), else every `refresh_s`, so
    that it stays fresh at the leader (issue 16: not every probe interval when idle)."""
    return key != last_key or since_last_s >= refresh_s


def objectively_down(master: str, views: dict[str, dict[str, NodeView]], quorum: int) -> bool:
    """True when at least `quorum` proxies' fresh views say `master` is down.

    `views` maps proxy name -> (node address -> NodeView); stale views must
    already be left out by the caller.  One proxy's broken link never counts
    for more than one vote.
    """
    down = sum(1 for per_node in views.values() if master in per_node and not per_node[master].up)
    return down >= quorum


def choose_new_master(master: str, replicas: tuple[str, ...], views: dict[str, dict[str, NodeView]],
                      *, leader: str, history: History | None = None, max_age_s: float,
                      max_staleness_s: float, down_for_s: float,
                      tags: Mapping[str, NodeTags] | None = None) -> str | None:
    """The replica to promote, or None when no replica is safe to promote.

    A candidate must be up in the leader's own view, observed at most
    `max_age_s` ago (its reconciler sends the REPLICAOF NO ONE; "up" alone
    lasts `down_after_ms` past the last reply), and is judged by its freshest
    observation among the
    views, which must be at most `max_age_s` old: an older, higher offset is
    old news (the node may have resynchronised since).  That observation must
    show a replica of `master` that has synchronised once, continues the
    committed `history` (a node that resynchronised from an empty one does
    not), has `replica-priority` other than 0, and was not cut off from the
    master longer than `max_staleness_s` before the master went down
    (`link_down_s - down_for_s`).  The operator's `tags` exclude a node tagged
    `nofailover` (or priority 0) and one whose offset is more than its
    `max_lag_on_failover` bytes behind the highest offset seen of the master or
    any replica.  Best: highest replication offset, then lowest priority number
    (the tag's, else Redis' replica-priority), then name.
    """
    tags = tags or {}
    own = views.get(leader, {})
    newest = max((pv[a].offset for pv in views.values() for a in (master, *replicas) if a in pv), default=0)
    best: tuple | None = None
    best_addr = None
    for addr in replicas:
        if failover_refusal(addr, tags) is not None:
            continue
        mine = own.get(addr)
        if mine is None or not mine.up or mine.age_s > max_age_s:
            continue    # the leader has not reached it lately
        seen = [pv[addr] for pv in views.values() if addr in pv and pv[addr].up and pv[addr].age_s <= max_age_s]
        if not seen:
            continue
        view = min(seen, key=lambda v: (v.age_s, -v.offset))
        if view.priority == 0 or view.role != "slave" or view.master not in (master, None):
            continue
        if not view.link_up and view.link_down_s < 0:
            continue  # never synced with the master (Redis says -1): it has nothing to offer
        if not view.link_up and view.link_down_s - down_for_s > max_staleness_s:
            continue
        if history is not None and not same_lineage(view, history):
            continue
        tag = tags.get(addr, NO_TAGS)
        if tag.max_lag_on_failover is not None and newest - view.offset > tag.max_lag_on_failover:
            continue
        key = (-view.offset, view.priority if tag.priority is None else tag.priority, view.priority, addr)
        if best is None or key < best:
            best, best_addr = key, addr
    return best_addr


def parent_keeper(master: str, nodes: tuple[str, ...], own: Mapping[str, NodeView], history: History | None,
                  *, max_age_s: float, tags: Mapping[str, NodeTags] | None = None) -> str | None:
    """The node to promote when the master lost the committed `history` and no replica
    continues it (`choose_new_master` found none), but one holds the stream `history` was
    started from up to where it left it (`holds_parent`), or None.

    A deposed master whose extra bytes its successor never got cannot resynchronise
    partially, and waits for a full sync: while it waits, it and every other replica of
    the successor are still on the parent stream, so none of them ever received a byte of
    the successor's own, and with `ack = replica` nothing written there was acknowledged
    (`WAIT` needs a replica with it; with `ack = async` it was lost with the successor
    either way). That is what is checked: the leader's own view (`own`) shows every node of
    the set, each observed at most `max_age_s` ago, and every one but `master` on the parent
    stream and none on the stream of `history` (nor on one that continues it). A node it
    cannot see, or one on any other stream (emptied since: it may have held acknowledged
    writes of the successor's stream before), leaves writes held for the operator as
    before. Highest offset on the parent first (one stream: comparable), then priority,
    then name; `nofailover`, priority 0 and the master itself are never chosen."""
    if history is None or not history.parent:
        return None
    tags = tags or {}
    seen = {a: own.get(a) for a in nodes}
    for addr, v in seen.items():
        if v is None or not v.up or v.age_s > max_age_s or same_lineage(v, history):
            return None
        if addr != master and history.parent not in (v.replid, v.replid2):
            return None
    best: tuple | None = None
    for addr, v in seen.items():
        assert v is not None
        if addr == master or failover_refusal(addr, tags) is not None or v.priority == 0:
            continue
        if not holds_parent(v, history):
            continue
        offset = v.offset if v.replid == history.parent else v.offset2 - 1
        tag = tags.get(addr, NO_TAGS)
        key = (-offset, v.priority if tag.priority is None else tag.priority, addr)
        if best is None or key < best:
            best = key
    return best[-1] if best is not None else None


def freshest(addr: str, views: dict[str, dict[str, NodeView]]) -> NodeView | None:
    """The most recent up observation of `addr` among the views."""
    seen = [pv[addr] for pv in views.values() if addr in pv and pv[addr].up]
    return min(seen, key=lambda v: v.age_s) if seen else None


# ---------------------------------------------------------------------------
# the leader's right to act
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LeaderState:
    """What the reconciler must know about its own consensus before each action."""

    role: str
    term: int
    commit_index: int
    applied_index: int
    commit_term: int | None     # the term of the entry at commit_index (None: unknown)
    lease_held: bool
    epoch: int | None           # the applied topology's epoch


def refuse_to_act(state: LeaderState, *, term: int, epoch: int) -> str | None:
    """Why the reconciler must not act now for (`term`, `epoch`), or None.

    It acts only as the leader of the term it decided in, holding its lease
    (so no other leader can exist), having committed an entry of its own term
    (its no-op: until then entries of earlier terms it holds may be committed
    without its knowing) and applied all it committed (its topology is the
    latest), and only for the epoch it decided on."""
    if state.role != "leader":
        return f"not the leader ({state.role})"
    if state.term != term:
        return f"term changed ({term} -> {state.term})"
    if state.commit_term is not None and state.commit_term != state.term:
        return "no entry of this term committed yet"
    if state.applied_index < state.commit_index:
        return f"applied {state.applied_index} < committed {state.commit_index}"
    if not state.lease_held:
        return "no lease"
    if state.epoch != epoch:
        return f"epoch changed ({epoch} -> {state.epoch})"
    return None


# ---------------------------------------------------------------------------
# reconciliation
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    """One reconciler step: make `node` a master (`replicaof` None) or a replica; or, with
    `hold_syncs`, hold the full syncs master `node` would serve (health/cluster/sync_hold.py)."""

    node: str
    replicaof: str | None
    reason: str
    hold_syncs: bool = False


def reconcile(master: str | None, nodes: tuple[str, ...], view: dict[str, NodeView],
              history: History | None = None, *, writes_held: bool = False, cluster: bool = False) -> list[Action]:
    """What to change so that Redis roles match the committed topology.

    Only nodes that answer are touched; a node already in the right role is
    left alone (so every action is idempotent and runs once per change).
    A master that answers without the committed `history` is neither promoted
    nor given replicas: they would resynchronise from it and discard what
    they hold (the controller fails over to a node that has the history, or
    holds writes). Once writes are held for that reason (`writes_held`: the
    committed topology says no_safe_master), the replicas still following it
    are detached (see `detach_from_lost_master`), and while that master does
    not answer with the history no node is pointed at it: a replica detached
    to keep what it holds would resynchronise from it, emptied, once it is back.
    A `cluster` node cannot be detached (REPLICAOF is refused in cluster mode): while
    replicas still follow such a master, the one action is to hold its full syncs.
    """
    actions = []
    if master is None:
        return actions
    mview = view.get(master)
    if master_lost_history(mview, history):
        if not writes_held:
            return actions
        detach = detach_from_lost_master(master, nodes, view, mview)
        if cluster and detach:
            return [Action(master, None, "hold full syncs: its replicas keep what it lost", hold_syncs=True)]
        return detach
    if writes_held and not (mview is not None and mview.up and (history is None or contains(mview, history))):
        return actions
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


def detach_from_lost_master(master: str, nodes: tuple[str, ...], view: dict[str, NodeView],
                            mview: NodeView | None) -> list[Action]:
    """REPLICAOF NO ONE for every replica still following `master`, which lost the
    committed data while no replica was safe to promote (writes are held for the
    operator's `failover --to`).

    Left alone, such a replica resynchronises from the emptied master as soon as
    Redis' diskless-sync delay (5 s by default) is over and discards what it holds:
    acknowledged writes the operator could still keep by choosing it. Detached, it
    keeps its data and answers as a master of its own, which no proxy writes to
    while writes are held; the operator's choice then demotes the others. A replica
    already carrying the emptied master's own replication id holds nothing more."""
    actions = []
    for node in nodes:
        v = view.get(node)
        if node == master or v is None or not v.up or v.role != "slave" or v.master != master:
            continue
        if mview is not None and v.replid and v.replid == mview.replid:
            continue
        actions.append(Action(node, None, f"detach: keep what it holds; {master} lost the committed data"))
    return actions
