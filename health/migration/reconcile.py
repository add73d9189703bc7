"""Where a migration's slots really are, from the nodes (issue 15): the pure decision.

The Raft state says which slots a migration has moved (`Migration.done`, each batch
committed with the shards' new ranges), but the nodes move first and the commit comes
after: a leader killed in between leaves up to one batch moved on the nodes and not in
the committed map (and, the legacy way, maybe one slot half-moved: MIGRATING on the
source, IMPORTING on the target, some of its keys on each). A new leader that goes on
re-runs that batch (every step is idempotent), but one told to cancel must first make
the committed map agree with the nodes. It looks at each pending slot on the source and
target masters (`CLUSTER NODES`: who serves it, migration marks; `COUNTKEYSINSLOT`) and
`reconcile` decides, slot by slot:

* `moved`:  the target serves it and the source holds none of its keys: it moved; only
            its owner is announced again (the source may not know yet) and committed;
* `finish`: half-moved (a migration mark on either node, keys of it on the target, or
            the target serving it while the source still holds keys): the rest of its keys
            are moved and the slot handed to the target, then committed. Finishing is the
            direction that is always safe: keys written meanwhile followed `ASK` to the
            target, and moving them back would race the clients;
* `stay`:   on the source, untouched: nothing to do;
* `lost`:   neither node serves it (moved elsewhere by hand?): left as committed and
            reported; the data path follows the nodes' `MOVED`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MOVED, FINISH, STAY, LOST = "moved", "finish", "stay", "lost"


@dataclass(frozen=True)
class NodeView:
    """A master's own line of `CLUSTER NODES`: its id, the slots it serves, and its
    legacy migration marks (`[slot->-id]` migrating to id, `[slot-<-id]` importing from id)."""
    id: str
    slots: frozenset[int]
    migrating: Mapping[int, str] = field(default_factory=dict)
    importing: Mapping[int, str] = field(default_factory=dict)


def node_view(cluster_nodes: str) -> NodeView:
    """Parse the `myself` line of a `CLUSTER NODES` reply; ValueError if there is none."""
    for line in cluster_nodes.splitlines():
        fields = line.split()
        if len(fields) >= 8 and "myself" in fields[2].split(","):
            migrating: dict[int, str] = {}
            importing: dict[int, str] = {}
            for f in fields[8:]:
                if f.startswith("["):
                    body = f.strip("[]")
                    if "->-" in body:
                        slot, _, peer = body.partition("->-")
                        migrating[int(slot)] = peer
                    elif "-<-" in body:
                        slot, _, peer = body.partition("-<-")
                        importing[int(slot)] = peer
            return NodeView(fields[0], frozenset(_line_slots(fields)), migrating, importing)
    raise ValueError("no line of its own in CLUSTER NODES")


def cluster_state(cluster_info: str) -> str:
    """`cluster_state` of a `CLUSTER INFO` reply: "ok", "fail", or "" when absent. A node
    says fail when it counts too few masters reachable: one that joined moments ago
    counts those it has not shaken hands with yet. It then answers every key with
    `-CLUSTERDOWN The cluster is down`, the keys `MIGRATE` and the clients' `ASK`s send."""
    for line in cluster_info.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "cluster_state":
            return value
    return ""


def served_slots(cluster_nodes: str) -> frozenset[int]:
    """The slots some node serves in the view of the node that gave this `CLUSTER NODES`.

    A node that has a slot IMPORTING ignores what gossip says about that slot's owner
    (Redis' `clusterUpdateSlotsConfigWith` skips importing slots): one that was told to
    import before it had heard who serves the slot - a shard just added - never learns
    it, and answers the source's `MIGRATE` with `-CLUSTERDOWN Hash slot not served`."""
    out: set[int] = set()
    for line in cluster_nodes.splitlines():
        out.update(_line_slots(line.split()))
    return frozenset(out)


def slot_owner(cluster_nodes: str, slot: int) -> str | None:
    """The id of the node that serves `slot` in this `CLUSTER NODES` view, None if none."""
    for line in cluster_nodes.splitlines():
        fields = line.split()
        if slot in _line_slots(fields):
            return fields[0]
    return None


def not_owned_by(cluster_nodes: str, owner_id: str, slots: list[int]) -> list[int]:
    """The slots of `slots` that this `CLUSTER NODES` view does not give to `owner_id`
    (another node serves them, or none does)."""
    owned: set[int] = set()
    for line in cluster_nodes.splitlines():
        fields = line.split()
        if fields and fields[0] == owner_id:
            owned |= _line_slots(fields)
    return [s for s in slots if s not in owned]


def _line_slots(fields: list[str]) -> set[int]:
    """The slots a `CLUSTER NODES` line (split) serves, migration marks left out."""
    slots: set[int] = set()
    for f in fields[8:]:
        if not f.startswith("["):
            a, _, b = f.partition("-")
            slots.update(range(int(a), int(b or a) + 1))
    return slots


@dataclass(frozen=True)
class SlotFacts:
    """One slot as the source and target masters see it."""
    source_owns: bool
    target_owns: bool
    migrating: bool = False         # the source has it MIGRATING
    importing: bool = False         # the target has it IMPORTING
    source_keys: int = 0
    target_keys: int = 0


def slot_facts(source: NodeView, target: NodeView, slot: int, source_keys: int, target_keys: int) -> SlotFacts:
    return SlotFacts(slot in source.slots, slot in target.slots, slot in source.migrating, slot in target.importing,
                     source_keys, target_keys)


def slot_decision(f: SlotFacts) -> str:
    if f.target_owns:
        return FINISH if f.source_owns and f.source_keys else MOVED
    if not f.source_owns:
        return LOST
    if f.migrating or f.importing or f.target_keys:
        return FINISH
    return STAY


@dataclass(frozen=True)
class Reconciliation:
    moved: tuple[int, ...] = ()
    finish: tuple[int, ...] = ()
    lost: tuple[int, ...] = ()

    @property
    def to_commit(self) -> list[int]:
        """The slots to commit as moved (once the `finish` ones are finished)."""
        return sorted((*self.moved, *self.finish))


def reconcile(pending: Iterable[int], facts: Mapping[int, SlotFacts]) -> Reconciliation:
    """Each of a migration's pending slots (not yet committed as moved) decided from the
    nodes' facts; a slot without facts is taken as untouched (`stay`)."""
    out: dict[str, list[int]] = {MOVED: [], FINISH: [], STAY: [], LOST: []}
    for s in pending:
        f = facts.get(s)
        out[STAY if f is None else slot_decision(f)].append(s)
    return Reconciliation(tuple(out[MOVED]), tuple(out[FINISH]), tuple(out[LOST]))
