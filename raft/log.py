"""The in-memory Raft log: a snapshot followed by the entries after it.

Invariant: ``entries[i].index == snapshot.index + 1 + i``. The core owns one
and changes it only through these methods, so the index arithmetic lives here;
``first_index`` and ``last_index`` are plain attributes those methods keep up to
date (they are read on every message, so they are not recomputed each time).
"""

from __future__ import annotations

from raft.messages import Entry, Snapshot


class RaftLog:
    __slots__ = ("entries", "snapshot", "first_index", "last_index")

    def __init__(self, snapshot: Snapshot, entries: list[Entry] | tuple[Entry, ...] = ()) -> None:
        self.snapshot = snapshot
        self.entries: list[Entry] = list(entries)
        for i, e in enumerate(self.entries):
            if e.index != snapshot.index + 1 + i:
                raise ValueError(f"log entry {e.index} is not contiguous with snapshot {snapshot.index}")
        self._reindex()

    def _reindex(self) -> None:
        self.first_index = self.snapshot.index + 1
        self.last_index = self.snapshot.index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away or beyond the end."""
        if index == self.snapshot.index:
            return self.snapshot.term
        if index < self.snapshot.index or index > self.last_index:
            return None
        return self.entries[index - self.first_index].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def entry(self, index: int) -> Entry:
        return self.entries[index - self.first_index]

    def slice(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries with lo <= index <= hi (clamped to what the log holds)."""
        lo = max(lo, self.first_index)
        hi = min(hi, self.last_index)
        if hi < lo:
            return ()
        base = self.first_index
        return tuple(self.entries[lo - base : hi - base + 1])

    def truncate_from(self, index: int) -> list[Entry]:
        """Drop entries with index >= ``index``; returns what was dropped."""
        cut = max(0, index - self.first_index)
        dropped = self.entries[cut:]
        del self.entries[cut:]
        self._reindex()
        return dropped

    def append(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        for e in entries:
            if e.index != self.last_index + 1:
                raise ValueError(f"append of {e.index} after {self.last_index}")
            self.entries.append(e)
            self.last_index = e.index

    def compact(self, snapshot: Snapshot) -> None:
        """Replace the prefix up to ``snapshot.index`` (which must be in the log) by the snapshot."""
        if self.term_at(snapshot.index) != snapshot.term:
            raise ValueError("compaction point is not in the log")
        self.entries = self.entries[snapshot.index - self.snapshot.index :]
        self.snapshot = snapshot
        self._reindex()

    def restore(self, snapshot: Snapshot) -> None:
        """Discard everything and start from a snapshot sent by the leader."""
        self.snapshot = snapshot
        self.entries = []
        self._reindex()
