"""raft/codec.py: every message type survives the wire form; bad input is refused."""

from __future__ import annotations

import json

import pytest

from raft import codec
from raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)

SAMPLES = [
    PreVote(3, "a", "b", 10, 2),
    PreVoteResponse(3, "b", "a", True),
    RequestVote(3, "a", "b", 10, 2, transfer=True),
    RequestVoteResponse(3, "b", "a", False),
    AppendEntries(
        4,
        "a",
        "b",
        9,
        2,
        (Entry(4, 10, EntryKind.NOOP), Entry(4, 11, EntryKind.NORMAL, bytes(range(256)))),
        8,
        ctx=77,
        lease_ticks=5,
    ),
    AppendEntriesResponse(4, "b", "a", False, 0, reject_index=9, reject_hint=7, ctx=77),
    InstallSnapshot(4, "a", "b", Snapshot(100, 3, {"a": "http://x:1", "b": "http://y:2"}, b"\x00state"), ctx=1),
    InstallSnapshotResponse(4, "b", "a", 100, ctx=1),
    TimeoutNow(4, "a", "b"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg) -> None:
    wire = codec.dumps(msg)
    assert json.loads(wire)["v"] == codec.VERSION
    assert codec.loads(wire) == msg


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(v=2),
        lambda d: d.update(type="Nope"),
        lambda d: d.pop("term"),
        lambda d: d.update(term="3"),
        lambda d: d.update(granted=1),
        lambda d: d.update(src=5),
    ],
)
def test_bad_messages_raise_codec_error(mutate) -> None:
    d = codec.encode(RequestVoteResponse(3, "b", "a", True))
    mutate(d)
    with pytest.raises(codec.CodecError):
        codec.decode(d)


def test_bad_entry_payloads() -> None:
    d = codec.encode(SAMPLES[4])
    d["entries"][1]["data"] = "***"
    with pytest.raises(codec.CodecError):
        codec.decode(d)
    d = codec.encode(SAMPLES[4])
    d["entries"][0]["kind"] = 9
    with pytest.raises(codec.CodecError):
        codec.decode(d)
    with pytest.raises(codec.CodecError):
        codec.loads(b"\xff\xfe")


HEARTBEATS = [
    AppendEntries(7, "proxy-1", "proxy-2", 40, 7, (), 40, ctx=123, lease_ticks=8, echo=5, echo_boot=2**62),
    AppendEntries(7, "proxy-1", "proxy-3", 0, 0, (), 0, echo=-1, echo_boot=-1),
    AppendEntriesResponse(7, "proxy-2", "proxy-1", True, 40, ctx=123, fctx=99, fboot=2**62, commit_seen=40),
    AppendEntriesResponse(7, "pröxy-3", "proxy-1", False, 0, reject_index=3, reject_hint=2, fctx=-1, fboot=0),
]


def test_heartbeats_round_trip_in_a_compact_frame() -> None:
    """Issue 16: heartbeats and their answers (20 a second each way) skip JSON on the stream."""
    frame = codec.compact_frame(HEARTBEATS)
    assert frame is not None and frame[:1] == codec.COMPACT_MAGIC
    assert codec.decode_compact_frame(frame) == HEARTBEATS
    assert len(codec.compact_frame(HEARTBEATS[:1])) < len(codec.dumps(HEARTBEATS[0])) / 2


@pytest.mark.parametrize("msgs", [
    [HEARTBEATS[0], TimeoutNow(7, "a", "b")],                               # another type
    [AppendEntries(7, "a", "b", 1, 1, (Entry(7, 2, EntryKind.NORMAL, b"x"),), 1)],   # entries
    [AppendEntriesResponse(7, "b", "a", True, 1, fboot=2**64)],            # beyond 64 bits
    [AppendEntriesResponse(7, "b" * 256, "a", True, 1)],                   # a name over 255 bytes
])
def test_what_has_no_compact_form_stays_json(msgs) -> None:
    assert codec.compact_frame(msgs) is None


@pytest.mark.parametrize("data", [b"{}", b"\x01\x00", b"\x01\x07" + bytes(80), codec.compact_frame(HEARTBEATS)[:-1],
                                  codec.compact_frame(HEARTBEATS[:1])[:-9] + b"\x07\xff\xfe\xfd\xfc\xfb\xfa\xf9"])
def test_a_bad_compact_frame_raises_codec_error(data) -> None:
    with pytest.raises(codec.CodecError):
        codec.decode_compact_frame(data)


def test_the_compact_form_knows_every_field_of_a_heartbeat_and_its_answer() -> None:
    """A field added to either message must be added to the compact form too (it would be
    dropped on the wire otherwise): this list is what codec.compact_frame packs."""
    import dataclasses

    assert [f.name for f in dataclasses.fields(AppendEntries)] == [
        "term", "src", "dst", "prev_index", "prev_term", "entries", "commit", "ctx", "lease_ticks", "echo", "echo_boot"]
    assert [f.name for f in dataclasses.fields(AppendEntriesResponse)] == [
        "term", "src", "dst", "success", "match_index", "reject_index", "reject_hint", "ctx", "fctx", "fboot",
        "commit_seen"]
