"""Which shard owns each of the 16384 hash slots: pure, built from `CLUSTER SHARDS`
(or from the committed topology), asked once per command."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass

from ..protocol.reply_maps import as_map
from .keyslot import SLOTS


@dataclass(frozen=True)
class Shard:
    """One master and its replicas, serving `ranges` (inclusive slot ranges)."""

    id: str
    ranges: tuple[tuple[int, int], ...]
    master: str | None
    replicas: tuple[str, ...] = ()


class SlotMapError(ValueError):
    pass


class SlotMap:
    """slot -> shard. Overlapping ranges are an error (two owners of one slot)."""

    def __init__(self, shards: Iterable[Shard]) -> None:
        self.shards = tuple(shards)
        self._owner = array("h", [-1]) * SLOTS
        for i, shard in enumerate(self.shards):
            for start, end in shard.ranges:
                if not 0 <= start <= end < SLOTS:
                    raise SlotMapError(f"shard {shard.id}: bad slot range {start}-{end}")
                for slot in range(start, end + 1):
                    if self._owner[slot] != -1:
                        other = self.shards[self._owner[slot]].id
                        raise SlotMapError(f"slot {slot} is served by both {other} and {shard.id}")
                    self._owner[slot] = i

    @property
    def owners(self) -> array:
        """slot -> index in `shards`, -1 where no shard serves it: a pipeline is routed by
        these without a call per command (`ClusterSession._route_group`)."""
        return self._owner

    def owner(self, slot: int) -> Shard | None:
        i = self._owner[slot]
        return None if i < 0 else self.shards[i]

    def reassign(self, slot: int, index: int) -> None:
        """Slot `slot` is served by `self.shards[index]` from now on (a MOVED followed)."""
        self._owner[slot] = index

    def uncovered(self) -> list[tuple[int, int]]:
        """The slot ranges no shard serves."""
        out: list[tuple[int, int]] = []
        start = None
        for slot in range(SLOTS + 1):
            free = slot < SLOTS and self._owner[slot] == -1
            if free and start is None:
                start = slot
            elif not free and start is not None:
                out.append((start, slot - 1))
                start = None
        return out

    def group_by_shard(self, slots: Iterable[int]) -> dict[str | None, list[int]]:
        """Positions of `slots` grouped by owning shard id (None: unowned), in order."""
        out: dict[str | None, list[int]] = {}
        for pos, slot in enumerate(slots):
            shard = self.owner(slot)
            out.setdefault(shard.id if shard else None, []).append(pos)
        return out


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def shards_from_cluster_shards(reply: list) -> list[Shard]:
    """`CLUSTER SHARDS` (Redis 7+) -> shards, named by their master's node id. A node's
    address is its `ip` (or `endpoint`) and `port` (or `tls-port`)."""
    out = []
    for entry in reply:
        d = as_map(entry)
        flat = [int(x) for x in d.get("slots", [])]
        ranges = tuple(zip(flat[0::2], flat[1::2]))
        master, master_id, replicas = None, "", []
        for node in d.get("nodes", []):
            n = as_map(node)
            host = _text(n.get("ip") or n.get("endpoint") or "")
            port = n.get("port") or n.get("tls-port")
            addr = f"{host}:{int(port)}"
            if _text(n.get("role")) == "master":
                master, master_id = addr, _text(n.get("id"))
            else:
                replicas.append(addr)
        out.append(Shard(master_id or (master or ""), ranges, master, tuple(sorted(replicas))))
    return out
