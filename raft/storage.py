"""Durable Raft state in a data directory.

Layout::

    hardstate.json   {"term", "vote", "commit", "crc"}      replaced atomically
    snapshot.bin     [crc32][JSON snapshot]                   replaced atomically
    log.bin          records: [u32 length][u32 crc32][payload] appended, fsynced
    cluster.json     {"cluster_id", "seeded"} (raft.cluster)            replaced atomically

A payload is ``>QQB`` (term, index, kind) followed by the entry data. On load a
bad record (length or checksum does not hold) that no intact record follows is a
torn append from a crash: the file is truncated there. A bad record with intact
records after it is damage in the middle: loading fails with a StorageError that
names the file and the byte offset (see ``_scan_log``). "Atomically" means
write a temp file, fsync it, rename it over the old one, fsync the directory,
for every state file and every write (``_atomic_write``).

Every ``OSError`` (disk full, read-only file system, I/O error) surfaces as a
:class:`StorageError` from :meth:`Storage.save` / :meth:`Storage.load`; the
driver must then stop voting and acknowledging (it cannot make them durable).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from raft.cluster import ClusterMeta
from raft.codec import CodecError, snapshot_from_dict, snapshot_to_dict
from raft.core import Ready, StorageState
from raft.messages import Entry, EntryKind, HardState, Snapshot

_HEADER = struct.Struct(">II")
_ENTRY = struct.Struct(">QQB")
MAX_RECORD = 64 * 1024 * 1024


class StorageError(Exception):
    """The data dir cannot be read or written; the node must stop voting and acking."""


@contextlib.contextmanager
def _io(what: str) -> Iterator[None]:
    """The one place where OS errors become StorageError."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"{what}: {exc}") from exc


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(dir_path: str, name: str, data: bytes) -> None:
    """Replace ``name`` by ``data``: always fsync the new file before the rename and
    the directory after it. Without the first, a crash can leave the new name on an
    empty file (the rename reached the disk, the data not); without the second, the
    rename itself may be lost. No caller may skip it, not even for a hard state
    whose only change is the commit index."""
    final = os.path.join(dir_path, name)
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(dir_path)


def encode_record(e: Entry) -> bytes:
    payload = _ENTRY.pack(e.term, e.index, int(e.kind)) + e.data
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> Entry:
    term, index, kind = _ENTRY.unpack_from(payload)
    return Entry(term=term, index=index, kind=EntryKind(kind), data=payload[_ENTRY.size :])


_REFUSE = (
    "refusing to start rather than silently drop entries this node may have acknowledged. "
    "Restore the data dir from a backup, or move it away and re-add this proxy with --join"
)


def _record_at(data: bytes, pos: int) -> tuple[Entry | None, int, str]:
    """Parse the record at ``pos``: (entry or None, end offset, what is wrong)."""
    if pos + _HEADER.size > len(data):
        return None, len(data), "incomplete header"
    length, crc = _HEADER.unpack_from(data, pos)
    start = pos + _HEADER.size
    if length < _ENTRY.size or length > MAX_RECORD:
        return None, start, f"impossible length {length}"
    if start + length > len(data):
        return None, len(data), f"length {length} runs past the end of the file"
    payload = data[start : start + length]
    if zlib.crc32(payload) != crc:
        return None, start + length, "checksum mismatch"
    try:
        return _decode_payload(payload), start + length, ""
    except ValueError as exc:
        return None, start + length, f"undecodable payload: {exc}"


def _intact_record_after(data: bytes, pos: int) -> int | None:
    """Offset of the first record after ``pos`` that parses with a good checksum, if any."""
    for p in range(pos + 1, len(data) - _HEADER.size - _ENTRY.size + 1):
        e, _, _ = _record_at(data, p)
        if e is not None:
            return p
    return None


def _scan_log(data: bytes, path: str) -> tuple[list[Entry], list[tuple[int, int]], int]:
    """The entries of log.bin, their offsets, and where the intact log ends.

    A bad record followed by no intact record is a torn append (the node crashed
    while writing its last batch, which was therefore never fsynced nor
    acknowledged): the log ends there and the caller truncates the rest. A bad
    record followed by an intact one is damage in the middle of the log: dropping
    everything after it could drop entries this node acknowledged, so loading
    fails instead, naming the file and the byte offset. So does an intact record
    whose index does not follow its predecessor's (no crash produces that)."""
    entries: list[Entry] = []
    offsets: list[tuple[int, int]] = []
    pos = 0
    while pos < len(data):
        e, end, problem = _record_at(data, pos)
        if e is not None and entries and e.index != entries[-1].index + 1:
            raise StorageError(
                f"corrupt raft log {path}: record at byte offset {pos} has index {e.index} after "
                f"{entries[-1].index}; {_REFUSE}"
            )
        if e is None:
            after = _intact_record_after(data, pos)
            if after is None:
                return entries, offsets, pos  # a torn tail
            raise StorageError(
                f"corrupt raft log {path}: bad record at byte offset {pos} ({problem}) with intact records "
                f"after it (the first at byte offset {after}); {_REFUSE}"
            )
        entries.append(e)
        offsets.append((e.index, pos))
        pos = end
    return entries, offsets, pos


class Storage:
    """Hard state, log and snapshot of one node. Not thread-safe: the driver
    calls it from one executor thread at a time."""

    def __init__(self, data_dir: str) -> None:
        self.dir = data_dir
        self._log_path = os.path.join(data_dir, "log.bin")
        self._offsets: list[tuple[int, int]] = []  # (entry index, byte offset) per record in log.bin
        self._entries_terms: dict[int, int] = {}
        self._snapshot: Snapshot | None = None
        self._file: BinaryIO | None = None
        self.torn_tail_truncated = 0  # bytes dropped from a torn/corrupt tail on load

    # ------------------------------------------------------------------ load

    def load(self) -> StorageState:
        with _io(f"loading {self.dir}"):
            os.makedirs(self.dir, exist_ok=True)
            hs = self._load_hard_state()
            self._snapshot = self._load_snapshot()
            entries = self._load_log()
            self._make_durable()
        return StorageState(hard_state=hs, snapshot=self._snapshot, entries=tuple(entries))

    def _make_durable(self) -> None:
        """fsync every state file and the directory before anything read is used.

        After a failed write or fsync (a full disk, say) and a restart, what was
        read may sit only in the page cache: acking it as stored would be a lie
        if the machine then crashed. A failure here stops the start instead."""
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            if name.endswith(".tmp") or not os.path.isfile(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(self.dir)

    def _load_hard_state(self) -> HardState:
        path = os.path.join(self.dir, "hardstate.json")
        if not os.path.exists(path):
            return HardState()
        with open(path, "rb") as f:
            raw = f.read()
        try:
            d = json.loads(raw)
            body = json.dumps([d["term"], d["vote"], d["commit"]]).encode()
            if zlib.crc32(body) != d["crc"]:
                raise ValueError("checksum mismatch")
            return HardState(term=int(d["term"]), vote=d["vote"], commit=int(d["commit"]))
        except (ValueError, KeyError, TypeError) as exc:
            # Written atomically, so this is real corruption: refuse rather than forget a vote.
            raise StorageError(f"corrupt hard state {path}: {exc}") from None

    def _load_snapshot(self) -> Snapshot | None:
        path = os.path.join(self.dir, "snapshot.bin")
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            raw = f.read()
        if len(raw) < 4 or zlib.crc32(raw[4:]) != struct.unpack(">I", raw[:4])[0]:
            raise StorageError(f"corrupt snapshot {path}")
        try:
            return snapshot_from_dict(json.loads(raw[4:]))
        except (ValueError, CodecError) as exc:
            raise StorageError(f"corrupt snapshot {path}: {exc}") from None

    def _load_log(self) -> list[Entry]:
        entries: list[Entry] = []
        offsets: list[tuple[int, int]] = []
        if os.path.exists(self._log_path):
            with open(self._log_path, "rb") as f:
                data = f.read()
            entries, offsets, good_end = _scan_log(data, self._log_path)
            if good_end < len(data):
                self.torn_tail_truncated = len(data) - good_end
                with open(self._log_path, "r+b") as f:
                    f.truncate(good_end)
                    f.flush()
                    os.fsync(f.fileno())
        snap = self._snapshot
        if snap is not None:
            # Same rule as Ready.snapshot_to_persist: what follows the snapshot is
            # kept only if the log agrees with it at the snapshot index (or already
            # starts right after it); a crash between writing a snapshot and
            # rewriting the log is therefore harmless.
            terms = {e.index: e.term for e in entries}
            if terms.get(snap.index) == snap.term or (entries and entries[0].index == snap.index + 1):
                kept = [e for e in entries if e.index > snap.index]
            else:
                kept = []
            if len(kept) != len(entries):
                self._rewrite_log(kept)
                return kept
        elif entries and entries[0].index != 1:
            self._rewrite_log([])
            return []
        self._offsets = offsets
        self._open_append()
        return entries

    def load_cluster(self) -> ClusterMeta:
        """The cluster id and seeded set; empty when none was stored yet."""
        path = os.path.join(self.dir, "cluster.json")
        with _io(f"loading {path}"):
            if not os.path.exists(path):
                return ClusterMeta()
            with open(path, "rb") as f:
                raw = f.read()
        try:
            return ClusterMeta.from_dict(json.loads(raw))
        except ValueError as exc:
            raise StorageError(f"corrupt cluster id file {path}: {exc}") from None

    def save_cluster(self, meta: ClusterMeta) -> None:
        with _io(f"writing {self.dir}"):
            os.makedirs(self.dir, exist_ok=True)
            _atomic_write(self.dir, "cluster.json", json.dumps(meta.to_dict()).encode())

    # ------------------------------------------------------------------ save

    def save(self, rd: Ready) -> None:
        """Make ``rd``'s snapshot, entries and hard state durable, in that order."""
        with _io(f"writing {self.dir}"):
            if rd.snapshot_to_persist is not None:
                self._save_snapshot(rd.snapshot_to_persist)
            if rd.entries_to_persist:
                self._append(rd.entries_to_persist)
            if rd.hard_state is not None:
                self._save_hard_state(rd.hard_state)

    def _save_hard_state(self, hs: HardState) -> None:
        body = json.dumps([hs.term, hs.vote, hs.commit]).encode()
        doc = {"term": hs.term, "vote": hs.vote, "commit": hs.commit, "crc": zlib.crc32(body)}
        _atomic_write(self.dir, "hardstate.json", json.dumps(doc).encode())

    def _save_snapshot(self, s: Snapshot) -> None:
        body = json.dumps(snapshot_to_dict(s)).encode()
        _atomic_write(self.dir, "snapshot.bin", struct.pack(">I", zlib.crc32(body)) + body)
        keep = self._term_at(s.index) == s.term
        kept = [e for e in self._read_entries() if e.index > s.index] if keep else []
        self._snapshot = s
        self._rewrite_log(kept)

    def _term_at(self, index: int) -> int | None:
        return self._entries_terms.get(index)

    def _read_entries(self) -> list[Entry]:
        out: list[Entry] = []
        with open(self._log_path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, _ = _HEADER.unpack_from(data, pos)
            start = pos + _HEADER.size
            out.append(_decode_payload(data[start : start + length]))
            pos = start + length
        return out

    def _rewrite_log(self, entries: list[Entry]) -> None:
        self._close()
        blob = b"".join(encode_record(e) for e in entries)
        _atomic_write(self.dir, "log.bin", blob)
        self._offsets = []
        pos = 0
        for e in entries:
            self._offsets.append((e.index, pos))
            pos += _HEADER.size + _ENTRY.size + len(e.data)
        self._entries_terms = {e.index: e.term for e in entries}
        self._open_append()

    def _open_append(self) -> None:
        if self._file is None:
            self._file = open(self._log_path, "ab")
        if not self._entries_terms and self._offsets:
            self._entries_terms = {e.index: e.term for e in self._read_entries()}

    def _append(self, entries: tuple[Entry, ...]) -> None:
        f = self._file
        assert f is not None
        first = entries[0].index
        if self._offsets and first <= self._offsets[-1][0]:
            # Overwrite a suffix: cut the file at the first replaced record.
            cut = next(i for i, (idx, _) in enumerate(self._offsets) if idx >= first)
            os.ftruncate(f.fileno(), self._offsets[cut][1])
            for idx, _ in self._offsets[cut:]:
                self._entries_terms.pop(idx, None)
            del self._offsets[cut:]
        pos = os.fstat(f.fileno()).st_size
        chunks = []
        for e in entries:
            rec = encode_record(e)
            self._offsets.append((e.index, pos))
            self._entries_terms[e.index] = e.term
            pos += len(rec)
            chunks.append(rec)
        f.write(b"".join(chunks))
        f.flush()
        os.fsync(f.fileno())

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        with _io("closing log"):
            self._close()
