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
