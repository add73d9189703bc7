"""The one wire form of Raft messages: JSON-able dicts with a version field.

``encode(msg) -> dict`` and ``decode(dict) -> msg``; bytes travel as base64.
``dumps``/``loads`` wrap them for HTTP bodies. Anything malformed raises
:class:`CodecError`, so the transport can answer 400 at one place.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from typing import Any

from raft.messages import MESSAGE_TYPES, Entry, EntryKind, Message, Snapshot

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
