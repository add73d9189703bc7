"""raft/storage.py against a real temp dir."""

from __future__ import annotations

import os

import pytest

from raft.core import Ready
from raft.messages import Entry, EntryKind, HardState, Snapshot
from raft.storage import Storage, StorageError


def rd(
    entries: tuple[Entry, ...] = (),
    hs: HardState | None = None,
    snap: Snapshot | None = None,
) -> Ready:
    return Ready(hs, entries, snap, (), (), must_sync=True)


def ents(lo: int, hi: int, term: int = 1) -> tuple[Entry, ...]:
    return tuple(Entry(term, i, EntryKind.NORMAL, f"v{i}".encode()) for i in range(lo, hi + 1))


def test_round_trip(tmp_path) -> None:
    s = Storage(str(tmp_path))
    assert s.load().entries == ()
    s.save(rd(ents(1, 5), HardState(3, "n2", 4)))
    s.close()
    st = Storage(str(tmp_path)).load()
    assert st.hard_state == HardState(3, "n2", 4)
    assert [e.index for e in st.entries] == [1, 2, 3, 4, 5]
    assert st.entries[2].data == b"v3"


def test_overwrite_suffix(tmp_path) -> None:
    s = Storage(str(tmp_path))
    s.load()
    s.save(rd(ents(1, 5, term=1)))
    s.save(rd(ents(3, 4, term=2)))
    s.save(rd(ents(5, 5, term=2)))
    s.close()
    st = Storage(str(tmp_path)).load()
    assert [(e.index, e.term) for e in st.entries] == [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]


@pytest.mark.parametrize("cut", [1, 5, 9])
def test_torn_tail_is_truncated_and_appends_continue(tmp_path, cut: int) -> None:
    s = Storage(str(tmp_path))
    s.load()
    s.save(rd(ents(1, 3)))
    s.close()
    log = tmp_path / "log.bin"
    size = log.stat().st_size
    with open(log, "ab") as f:  # a fourth record, torn part-way
        from raft.storage import encode_record

        f.write(encode_record(Entry(1, 4, EntryKind.NORMAL, b"torn-record"))[:cut])
    s2 = Storage(str(tmp_path))
    st = s2.load()
    assert [e.index for e in st.entries] == [1, 2, 3]
    assert s2.torn_tail_truncated == cut
    assert log.stat().st_size == size
    s2.save(rd(ents(4, 4)))
    s2.close()
    assert [e.index for e in Storage(str(tmp_path)).load().entries] == [1, 2, 3, 4]


def _log_with(tmp_path, n: int) -> tuple[bytearray, int]:
    """A log.bin of n equal-sized records; returns its bytes and the record size."""
    s = Storage(str(tmp_path))
    s.load()
    s.save(rd(ents(1, n)))
    s.close()
    data = bytearray((tmp_path / "log.bin").read_bytes())
    return data, len(data) // n


def test_corrupt_record_in_the_middle_refuses_to_load(tmp_path) -> None:
    """It used to end the log silently there, dropping records 3 and 4 (which the
    node may have acknowledged)."""
    data, rec = _log_with(tmp_path, 4)
    data[2 * rec + 12] ^= 0xFF  # flip a byte inside record 3's payload
    (tmp_path / "log.bin").write_bytes(bytes(data))
    with pytest.raises(StorageError, match=rf"log\.bin: bad record at byte offset {2 * rec} \(checksum mismatch\)"):
        Storage(str(tmp_path)).load()
    assert (tmp_path / "log.bin").read_bytes() == bytes(data)  # nothing truncated


def test_corrupt_length_in_the_middle_refuses_to_load(tmp_path) -> None:
    data, rec = _log_with(tmp_path, 4)
    data[rec : rec + 4] = (10**6).to_bytes(4, "big")  # record 2 claims to run past the end
    (tmp_path / "log.bin").write_bytes(bytes(data))
    with pytest.raises(StorageError, match=rf"byte offset {rec} .*intact records after it .*--join"):
        Storage(str(tmp_path)).load()


def test_record_with_an_out_of_order_index_refuses_to_load(tmp_path) -> None:
    from raft.storage import encode_record

    data, _ = _log_with(tmp_path, 2)
    (tmp_path / "log.bin").write_bytes(bytes(data) + encode_record(Entry(1, 7, EntryKind.NORMAL, b"x")))
    with pytest.raises(StorageError, match="index 7 after 2"):
        Storage(str(tmp_path)).load()


@pytest.mark.parametrize("damage", ["checksum", "zero-filled"])
def test_bad_last_record_is_a_torn_append_and_is_truncated(tmp_path, damage: str) -> None:
    """A crash while appending the last batch leaves a bad record (or zeros, where
    the file grew but the data never reached the disk) with nothing intact after
    it: that batch was never fsynced nor acknowledged, so it is cut off."""
    data, rec = _log_with(tmp_path, 4)
    if damage == "checksum":
        data[3 * rec + 12] ^= 0xFF
    else:
        data[3 * rec :] = bytes(rec) + bytes(4096)
    (tmp_path / "log.bin").write_bytes(bytes(data))
    s = Storage(str(tmp_path))
    assert [e.index for e in s.load().entries] == [1, 2, 3]
    assert s.torn_tail_truncated == len(data) - 3 * rec
    assert (tmp_path / "log.bin").stat().st_size == 3 * rec


def test_snapshot_replaces_prefix_and_keeps_suffix(tmp_path) -> None:
    s = Storage(str(tmp_path))
    s.load()
    s.save(rd(ents(1, 6)))
    s.save(rd(snap=Snapshot(4, 1, {"a": "u"}, b"state")))
    s.save(rd(ents(7, 7)))
    s.close()
    st = Storage(str(tmp_path)).load()
    assert st.snapshot == Snapshot(4, 1, {"a": "u"}, b"state")
    assert [e.index for e in st.entries] == [5, 6, 7]


def test_conflicting_snapshot_discards_whole_log(tmp_path) -> None:
    s = Storage(str(tmp_path))
    s.load()
    s.save(rd(ents(1, 6, term=1)))
    s.save(rd(snap=Snapshot(4, 2, {}, b"leader-state")))
    s.close()
    st = Storage(str(tmp_path)).load()
    assert st.snapshot is not None and st.snapshot.index == 4 and st.entries == ()


def test_crash_between_snapshot_and_log_rewrite(tmp_path) -> None:
    """snapshot.bin is new but log.bin still holds the old, conflicting entries."""
    s = Storage(str(tmp_path))
    s.load()
    s.save(rd(ents(1, 6, term=1)))
    s.close()
    old_log = (tmp_path / "log.bin").read_bytes()
    s = Storage(str(tmp_path))
    s.load()
    s.save(rd(snap=Snapshot(4, 2, {}, b"x")))
    s.close()
    (tmp_path / "log.bin").write_bytes(old_log)
    st = Storage(str(tmp_path)).load()
    assert st.entries == ()


def test_unwritable_path_raises_storage_error(tmp_path) -> None:
    """Works as root too: the temp file's path is occupied by a directory."""
    s = Storage(str(tmp_path))
    s.load()
    (tmp_path / "hardstate.json.tmp").mkdir()
    with pytest.raises(StorageError):
        s.save(rd(hs=HardState(1, "a", 0)))


def test_os_error_becomes_storage_error(tmp_path, monkeypatch) -> None:
    s = Storage(str(tmp_path))
    s.load()

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="No space left"):
        s.save(rd(ents(1, 1), HardState(1, None, 0)))


def test_corrupt_hard_state_is_refused(tmp_path) -> None:
    s = Storage(str(tmp_path))
    s.load()
    s.save(rd(hs=HardState(5, "n1", 0)))
    s.close()
    p = tmp_path / "hardstate.json"
    p.write_text(p.read_text().replace('"term": 5', '"term": 4'))
    with pytest.raises(StorageError, match="corrupt hard state"):
        Storage(str(tmp_path)).load()


def _record_syncs(monkeypatch) -> list[tuple[str, str]]:
    """Record fsync (by path) and rename calls, in order."""
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        calls.append(("rename", os.path.realpath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.parametrize("must_sync", [False, True])
def test_every_state_file_rename_is_fsynced_before_and_after(tmp_path, monkeypatch, must_sync: bool) -> None:
    """A hard state that changes only the commit index (must_sync False) used to be
    renamed over the old file without fsync: a crash could leave an empty
    hardstate.json and a node that refuses to start."""
    s = Storage(str(tmp_path))
    s.load()
    s.save(rd(ents(1, 3), HardState(1, "n1", 0)))
    calls = _record_syncs(monkeypatch)
    s.save(Ready(HardState(1, "n1", 3), (), None, (), (), must_sync=must_sync))
    s.save(rd(snap=Snapshot(2, 1, {"a": "u"}, b"state")))  # snapshot.bin and log.bin renamed too
    d = os.path.realpath(tmp_path)
    renames = [i for i, c in enumerate(calls) if c[0] == "rename"]
    assert {calls[i][1] for i in renames} == {os.path.join(d, n) for n in ("hardstate.json", "snapshot.bin", "log.bin")}
    for i in renames:
        final = calls[i][1]
        assert calls[i - 1] == ("fsync", final + ".tmp"), f"{final}: not fsynced before the rename: {calls}"
        assert calls[i + 1] == ("fsync", d), f"{final}: directory not fsynced after the rename: {calls}"


def test_load_makes_what_it_read_durable_before_use(tmp_path, monkeypatch) -> None:
    """After a failed write (a full disk) and a restart, what load() reads may sit
    only in the page cache; it is fsynced before the node counts it as stored."""
    s = Storage(str(tmp_path))
    s.load()
    s.save(rd(ents(1, 3), HardState(1, "n1", 2)))
    s.close()
    calls = _record_syncs(monkeypatch)
    Storage(str(tmp_path)).load()
    d = os.path.realpath(tmp_path)
    synced = {c[1] for c in calls if c[0] == "fsync"}
    assert {os.path.join(d, "log.bin"), os.path.join(d, "hardstate.json"), d} <= synced, calls


def test_load_fails_when_the_data_cannot_be_made_durable(tmp_path, monkeypatch) -> None:
    s = Storage(str(tmp_path))
    s.load()
    s.save(rd(ents(1, 2), HardState(1, "n1", 1)))
    s.close()

    def eio(_fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(StorageError, match="Input/output error"):
        Storage(str(tmp_path)).load()
