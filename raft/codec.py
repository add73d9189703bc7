"""The one wire form of Raft messages: JSON-able dicts with a version field.

``encode(msg) -> dict`` and ``decode(dict) -> msg``; bytes travel as base64.
``dumps``/``loads`` wrap them for HTTP bodies. Anything malformed raises
:class:`CodecError`, so the transport can answer 400 at one place.

Heartbeats and their answers (``AppendEntries`` without entries,
``AppendEntriesResponse``), 20 a second each way on an idle cluster, also have a
compact binary form for the stream (``compact_frame``/``decode_compact_frame``):
building and parsing JSON was the largest part of their cost (issue 16).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import struct
from typing import Any

from raft.messages import MESSAGE_TYPES, AppendEntries, AppendEntriesResponse, Entry, EntryKind, Message, Snapshot

VERSION = 1

_BY_NAME: dict[str, type] = {cls.__name__: cls for cls in MESSAGE_TYPES}

# Per message type, its fields as (name, how to check it, required), looked up once:
# dataclasses.fields() on every message was a good part of a heartbeat's cost (issue 16).
_ENTRIES, _SNAPSHOT, _STR, _BOOL, _INT = range(5)


def _field_kind(f: dataclasses.Field) -> int:
    if f.name == "entries":
        return _ENTRIES
    if f.name == "snapshot":
        return _SNAPSHOT
    if f.name in ("src", "dst"):
        return _STR
    return _BOOL if f.type in ("bool", bool) else _INT


_FIELDS: dict[type, tuple[tuple[str, int, bool], ...]] = {
    cls: tuple((f.name, _field_kind(f), f.default is dataclasses.MISSING) for f in dataclasses.fields(cls))
    for cls in MESSAGE_TYPES}


class CodecError(ValueError):
    """The input is not a valid encoded Raft message."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise CodecError("expected base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise CodecError(f"bad base64: {exc}") from None


def entry_to_dict(e: Entry) -> dict[str, Any]:
    return {"term": e.term, "index": e.index, "kind": int(e.kind), "data": _b64(e.data)}


def entry_from_dict(d: Any) -> Entry:
    try:
        return Entry(
            term=_int(d["term"]), index=_int(d["index"]), kind=EntryKind(d["kind"]), data=_unb64(d["data"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad entry: {exc}") from None


def snapshot_to_dict(s: Snapshot) -> dict[str, Any]:
    """``learners`` only when there are some: a snapshot without learners encodes as
    before they existed (an older node reads it)."""
    out: dict[str, Any] = {"index": s.index, "term": s.term, "members": dict(s.members), "data": _b64(s.data)}
    if s.learners:
        out["learners"] = dict(s.learners)
    return out


def _str_map(v: Any, what: str) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(a, str) for k, a in v.items()):
        raise CodecError(f"bad {what}")
    return dict(v)


def snapshot_from_dict(d: Any) -> Snapshot:
    try:
        return Snapshot(index=_int(d["index"]), term=_int(d["term"]), members=_str_map(d["members"], "members"),
                        data=_unb64(d["data"]), learners=_str_map(d.get("learners", {}), "learners"))
    except (KeyError, TypeError) as exc:
        raise CodecError(f"bad snapshot: {exc}") from None


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise CodecError(f"expected int, got {v!r}")
    return v


def encode(msg: Message) -> dict[str, Any]:
    """Message -> JSON-able dict."""
    cls = type(msg)
    out: dict[str, Any] = {"v": VERSION, "type": cls.__name__}
    for name, kind, _ in _FIELDS[cls]:
        value = getattr(msg, name)
        if kind == _ENTRIES:
            value = [entry_to_dict(e) for e in value]
        elif kind == _SNAPSHOT:
            value = snapshot_to_dict(value)
        out[name] = value
    return out


def decode(d: Any) -> Message:
    """JSON-able dict -> Message; raises CodecError on anything unexpected."""
    if not isinstance(d, dict):
        raise CodecError("message must be an object")
    if d.get("v") != VERSION:
        raise CodecError(f"unsupported version {d.get('v')!r}")
    cls = _BY_NAME.get(d.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise CodecError(f"unknown message type {d.get('type')!r}")
    kwargs: dict[str, Any] = {}
    for name, kind, required in _FIELDS[cls]:
        if name not in d:
            if not required:
                continue
            raise CodecError(f"{cls.__name__}: missing field {name}")
        value = d[name]
        if kind == _ENTRIES:
            if not isinstance(value, list):
                raise CodecError("entries must be a list")
            value = tuple(entry_from_dict(e) for e in value)
        elif kind == _SNAPSHOT:
            value = snapshot_from_dict(value)
        elif kind == _STR:
            if not isinstance(value, str):
                raise CodecError(f"{name} must be a string")
        elif kind == _BOOL:
            if not isinstance(value, bool):
                raise CodecError(f"{name} must be a bool")
        else:
            value = _int(value)
        kwargs[name] = value
    return cls(**kwargs)


def dumps(msg: Message) -> bytes:
    return json.dumps(encode(msg), separators=(",", ":")).encode()


def loads(body: bytes) -> Message:
    try:
        d = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"bad JSON: {exc}") from None
    return decode(d)


# ------------------------------------------------------------------ compact frames

COMPACT_MAGIC = b"\x01"     # a compact frame's first byte (a JSON frame's is "{")
# 0, term, prev_index, prev_term, commit, ctx, lease_ticks, echo, echo_boot
_COMPACT_AE = struct.Struct("<Bqqqqqqqq")
_COMPACT_AER = struct.Struct("<Bq?qqqqqqq")   # 1, term, success, match_index, reject_index, reject_hint, ctx, fctx,
#                                              fboot, commit_seen
_KIND = struct.Struct("<B")


def compact_frame(msgs: list[Message]) -> bytes | None:
    """``msgs`` as one compact frame: each message its fixed fields, then src and dst
    (a length byte, UTF-8). None when one of them has no compact form (entries, other
    types, a number beyond 64 bits, a name over 255 bytes): send them as JSON."""
    parts = [COMPACT_MAGIC]
    try:
        for m in msgs:
            t = type(m)
            if t is AppendEntries and not m.entries:
                parts.append(_COMPACT_AE.pack(0, m.term, m.prev_index, m.prev_term, m.commit, m.ctx, m.lease_ticks,
                                              m.echo, m.echo_boot))
            elif t is AppendEntriesResponse:
                parts.append(_COMPACT_AER.pack(1, m.term, m.success, m.match_index, m.reject_index, m.reject_hint,
                                               m.ctx, m.fctx, m.fboot, m.commit_seen))
            else:
                return None
            for name in (m.src.encode(), m.dst.encode()):
                parts.append(bytes((len(name),)))
                parts.append(name)
    except (struct.error, ValueError):       # out of range: a byte > 255, an int beyond 64 bits
        return None
    return b"".join(parts)


def decode_compact_frame(data: bytes) -> list[Message]:
    """The messages of a compact frame; CodecError when it is not one."""
    if data[:1] != COMPACT_MAGIC:
        raise CodecError("not a compact frame")
    out: list[Message] = []
    pos, end = 1, len(data)
    try:
        while pos < end:
            kind = _KIND.unpack_from(data, pos)[0]
            if kind == 0:
                _, term, prev_index, prev_term, commit, ctx, lease, echo, echo_boot = _COMPACT_AE.unpack_from(data, pos)
                pos += _COMPACT_AE.size
            elif kind == 1:
                fields = _COMPACT_AER.unpack_from(data, pos)
                pos += _COMPACT_AER.size
            else:
                raise CodecError(f"unknown compact message kind {kind}")
            names = []
            for _ in range(2):
                n = data[pos]
                name = data[pos + 1:pos + 1 + n]
                if len(name) != n:
                    raise CodecError("truncated compact frame")
                names.append(name.decode())
                pos += 1 + n
            if kind == 0:
                out.append(AppendEntries(term, names[0], names[1], prev_index, prev_term, (), commit, ctx, lease,
                                         echo, echo_boot))
            else:
                out.append(AppendEntriesResponse(fields[1], names[0], names[1], *fields[2:]))
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise CodecError(f"bad compact frame: {exc}") from None
    return out
