"""Moving hash slots between shards (issue 15): the plan and its progress as part of
the replicated state, and the pure decisions about it.

A `Migration` moves `slots` from shard `source` to shard `target`; `done` counts the
slots already moved, in order. It lives in the Raft state (any leader continues it
after the one driving it died), and every batch of slots that finished moving is
committed together with the two shards' new slot ranges, in one entry, so the
committed slot map and the plan's progress never disagree. The I/O that moves keys is
`health/migration/driver.py`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from proxy.routing.keyslot import SLOTS, ranges_text
from proxy.routing.topology import Topology

RUNNING, QUEUED, DONE, CANCELLED, FAILED = "running", "queued", "done", "cancelled", "failed"
ACTIVE = (RUNNING, QUEUED)


def parse_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """`0-999,2000,3000-3010` -> ((0, 999), (2000, 2000), (3000, 3010)); ValueError if bad."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        a, sep, b = part.partition("-")
        start, end = int(a), int(b) if sep else int(a)
        if not 0 <= start <= end < SLOTS:
            raise ValueError(f"bad slot range {part!r}: slots are 0-{SLOTS - 1}")
        out.append((start, end))
    if not out:
        raise ValueError("no slots given")
    return to_ranges(expand(out))


def expand(ranges: Iterable[tuple[int, int]]) -> list[int]:
    return sorted({s for a, b in ranges for s in range(a, b + 1)})


def to_ranges(slots: Iterable[int]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for s in sorted(set(slots)):
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return tuple((a, b) for a, b in out)


@dataclass(frozen=True)
class Migration:
    id: str
    source: str
    target: str
    slots: tuple[tuple[int, int], ...]
    done: int = 0                   # how many of the slots (in ascending order) have moved
    state: str = RUNNING
    keys_moved: int = 0
    mechanism: str = ""             # "legacy" (SETSLOT + MIGRATE) or "atomic" (CLUSTER MIGRATESLOTS)
    reason: str = ""                # why failed / cancelled
    started_at: float = 0.0         # wall clock (for the rate in `status`)
    updated_at: float = 0.0
    then_remove: bool = field(default=False)    # remove-shard: forget the source once it is empty

    @property
    def total(self) -> int:
        return sum(b - a + 1 for a, b in self.slots)

    def pending(self) -> list[int]:
        return expand(self.slots)[self.done:]

    def to_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "target": self.target,
                "slots": [list(r) for r in self.slots], "done": self.done, "total": self.total,
                "state": self.state, "keys_moved": self.keys_moved, "mechanism": self.mechanism,
                "reason": self.reason, "started_at": self.started_at, "updated_at": self.updated_at,
                "then_remove": self.then_remove}

    @classmethod
    def from_dict(cls, d: dict) -> Migration:
        return cls(str(d["id"]), str(d["source"]), str(d["target"]),
                   tuple((int(a), int(b)) for a, b in d["slots"]), int(d.get("done", 0)),
                   str(d.get("state", RUNNING)), int(d.get("keys_moved", 0)), str(d.get("mechanism", "")),
                   str(d.get("reason", "")), float(d.get("started_at", 0.0)), float(d.get("updated_at", 0.0)),
                   bool(d.get("then_remove", False)))

    def advanced(self, slots: int, keys: int, now: float) -> Migration:
        done = self.done + slots
        return replace(self, done=done, keys_moved=self.keys_moved + keys, updated_at=now,
                       state=DONE if done >= self.total else self.state)

    def with_state(self, state: str, reason: str = "", now: float = 0.0) -> Migration:
        return replace(self, state=state, reason=reason, updated_at=now or self.updated_at)


def merged(current: Migration | None, new: Migration) -> Migration:
    """A migration's record after entry `new` (decided, maybe, on an older record): progress
    never goes back, and an ended migration stays ended (a cancel and a batch's progress
    may be committed in either order)."""
    if current is None:
        return new
    state = current.state if current.state not in ACTIVE and new.state in ACTIVE else new.state
    if current.state == CANCELLED and new.state == DONE:
        state = DONE if new.done >= new.total else CANCELLED
    return replace(new, done=max(current.done, new.done), keys_moved=max(current.keys_moved, new.keys_moved),
                   state=state, reason=new.reason or current.reason)


def refuse_move(shards: dict[str, Topology], migrations: Iterable[Migration], source: str, target: str,
                slots: tuple[tuple[int, int], ...]) -> str | None:
    """Why moving `slots` from `source` to `target` must not start, or None."""
    if source not in shards:
        return f"no shard {source!r}"
    if target not in shards:
        return f"no shard {target!r}"
    if source == target:
        return "source and target are the same shard"
    for m in migrations:
        if m.state in ACTIVE:
            return f"migration {m.id} ({m.source} -> {m.target}) is {m.state}; cancel it or let it finish first"
    owned = set(expand(shards[source].slots))
    missing = [s for s in expand(slots) if s not in owned]
    if missing:
        return f"shard {source} does not serve slots {ranges_text(to_ranges(missing))}"
    if shards[target].master is None:
        return f"shard {target} has no master"
    return None


def resolve_shard(shards: dict[str, Topology], name: str) -> str | None:
    """A shard named by its id (or a unique prefix of it) or by a node's address."""
    if name in shards:
        return name
    for sid, t in shards.items():
        if name in t.nodes:
            return sid
    prefixed = [sid for sid in shards if sid.startswith(name)]
    return prefixed[0] if len(prefixed) == 1 and len(name) >= 6 else None


def moved_slots(shards: dict[str, Topology], source: str, target: str, slots: Iterable[int]) -> dict[str, Topology]:
    """The two shards' topologies once `slots` moved from `source` to `target`, applied to
    whatever they are when the entry applies. Roles and epochs are unchanged: an epoch
    counts changes of roles, and a failover committed meanwhile must neither be undone
    by this entry nor lose to it. (A write suspended across a slot move needs no epoch
    either: its master answers MOVED for a slot it no longer serves, and it is followed.)"""
    moving = set(slots)
    out = {}
    if source in shards:
        src = shards[source]
        out[source] = replace(src, slots=to_ranges(set(expand(src.slots)) - moving))
    if target in shards:
        dst = shards[target]
        out[target] = replace(dst, slots=to_ranges(set(expand(dst.slots)) | moving))
    return out


def even_plan(shards: dict[str, Topology]) -> list[tuple[str, str, tuple[tuple[int, int], ...]]]:
    """Moves (source, target, slots) that leave every shard with SLOTS/n slots (±1), taking
    the highest slots of the fullest shards first."""
    ids = sorted(shards)
    if not ids:
        return []
    n = len(ids)
    have = {sid: expand(shards[sid].slots) for sid in ids}
    fullest = sorted(ids, key=lambda sid: (-len(have[sid]), sid))      # the spare slots stay where they are
    want = {sid: SLOTS // n + (1 if i < SLOTS % n else 0) for i, sid in enumerate(fullest)}
    givers = [(sid, have[sid][want[sid]:]) for sid in ids if len(have[sid]) > want[sid]]
    takers = [(sid, want[sid] - len(have[sid])) for sid in ids if len(have[sid]) < want[sid]]
    moves = []
    for taker, need in takers:
        while need > 0 and givers:
            giver, spare = givers[0]
            take, rest = spare[:need], spare[need:]
            moves.append((giver, taker, to_ranges(take)))
            need -= len(take)
            givers[0] = (giver, rest)
            if not rest:
                givers.pop(0)
    return moves


def even_keys_plan(shards: dict[str, Topology], keys: dict[int, int],
                   tolerance: float = 0.05) -> list[tuple[str, str, tuple[tuple[int, int], ...]]]:
    """Moves (source, target, slots) that even out the shards' key counts (`keys`: slot ->
    its keys, from CLUSTER COUNTKEYSINSLOT) rather than their slot counts: each shard below
    the mean takes slots from the one furthest above it, highest slots first (the ranges
    stay compact), skipping empty slots (moving them evens nothing) and slots heavier than
    what is still needed (a slot cannot be split: one hot hash tag stays where it is), until
    every shard is within `tolerance` of the mean (at least one key) or no slot fits."""
    ids = sorted(shards)
    if len(ids) < 2:
        return []
    have = {sid: [s for s in expand(shards[sid].slots) if keys.get(s, 0) > 0] for sid in ids}
    count = {sid: sum(keys[s] for s in have[sid]) for sid in ids}
    mean = sum(count.values()) / len(ids)
    slack = max(1.0, tolerance * mean)
    moves: list[tuple[str, str, tuple[int, ...]]] = []
    for taker in sorted(ids, key=lambda sid: (count[sid], sid)):
        while mean - count[taker] > slack:
            giver = max(ids, key=lambda sid: (count[sid] - mean, sid))
            if count[giver] - mean <= slack:
                break
            need = min(mean - count[taker], count[giver] - mean)     # keys this move should carry (± slack)
            take: list[int] = []
            carried = 0
            for s in reversed(have[giver]):
                if carried + keys[s] <= need + slack:
                    take.append(s)
                    carried += keys[s]
                if carried >= need:
                    break
            if not take:
                break       # no whole slot fits: as even as whole slots make it
            taken = set(take)
            have[giver] = [s for s in have[giver] if s not in taken]
            have[taker] = sorted(have[taker] + take)
            count[giver] -= carried
            count[taker] += carried
            moves.append((giver, taker, tuple(take)))
    merged_moves: dict[tuple[str, str], list[int]] = {}     # one move per (source, target), in order
    for giver, taker, take in moves:
        merged_moves.setdefault((giver, taker), []).extend(take)
    return [(g, t, to_ranges(slots)) for (g, t), slots in merged_moves.items()]
