"""How a command is served over a sharded cluster: a pure plan from its keys' slots.

Redis Cluster itself runs a multi-key command only when all its keys hash to one slot
(else `-CROSSSLOT`). The proxy does the same, except for the commands that mean the
same thing when cut into one command per slot and the replies merged: MGET, MSET, DEL,
UNLINK, EXISTS, TOUCH (Envoy's command splitter is the model). A cut is per slot, not
per shard, because a node refuses keys of two slots in one command too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.keyspecs import Keys
from .keyslot import key_slot
from .slotmap import SlotMap

CROSSSLOT = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"

# name -> (arguments per key, how the replies merge)
SPLITTABLE: dict[bytes, tuple[int, str]] = {
    b"mget": (1, "values"), b"mset": (2, "ok"), b"del": (1, "sum"), b"unlink": (1, "sum"),
    b"exists": (1, "sum"), b"touch": (1, "sum"),
}


@dataclass(frozen=True)
class Part:
    """One command of a split: for `shard`, keys from `slot`; `order` are the positions
    (among the original keys) of its keys, for putting MGET's values back in place."""

    shard: str | None
    slot: int
    argv: tuple[bytes, ...]
    order: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    kind: str                   # "keyless" | "one" | "split" | "error"
    shard: str | None = None    # kind "one": where it goes (None: no shard serves the slot)
    slot: int | None = None
    parts: tuple[Part, ...] = ()
    merge: str = ""             # kind "split": "values" | "ok" | "sum"
    error: bytes = b""          # kind "error": the reply
    nkeys: int = 0


def plan(argv: list[bytes], keys: Keys | None, slots: SlotMap) -> Plan:
    """Where `argv` goes, from its key positions (proxy/protocol/keyspecs)."""
    if keys is None or not keys.positions:
        return Plan("keyless")
    key_slots = [key_slot(argv[i]) for i in keys.positions]
    first = key_slots[0]
    if all(s == first for s in key_slots):
        owner = slots.owner(first)
        return Plan("one", shard=owner.id if owner else None, slot=first, nkeys=len(key_slots))
    name = argv[0].lower()
    how = SPLITTABLE.get(name)
    if how is None:
        return Plan("error", error=CROSSSLOT)
    per_key, merge = how
    by_slot: dict[int, list[int]] = {}
    for n, s in enumerate(key_slots):
        by_slot.setdefault(s, []).append(n)
    parts = []
    for s, members in by_slot.items():
        args: list[bytes] = [argv[0]]
        for n in members:
            at = keys.positions[n]
            args.extend(argv[at:at + per_key])
        owner = slots.owner(s)
        parts.append(Part(owner.id if owner else None, s, tuple(args), tuple(members)))
    return Plan("split", parts=tuple(parts), merge=merge, nkeys=len(key_slots))


def merge_replies(p: Plan, replies: list) -> object:
    """The client's reply from the parts' replies (in `p.parts` order). An error reply
    from any part is the answer (the first one), as Redis would give for the whole."""
    for r in replies:
        if isinstance(r, Exception):
            return r
    if p.merge == "sum":
        return sum(int(r) for r in replies)
    if p.merge == "ok":
        return replies[0]
    out: list = [None] * p.nkeys
    for part, values in zip(p.parts, replies):
        for n, v in zip(part.order, values):
            out[n] = v
    return out
