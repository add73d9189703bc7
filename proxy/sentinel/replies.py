"""Sentinel replies in RESP2 and RESP3 (built as bytes: the replies are small and few)."""

from __future__ import annotations

from ..protocol import resp


def _b(v) -> bytes:
    if isinstance(v, bytes):
        return v
    return str(v).encode()


def bulk(v) -> bytes:
    v = _b(v)
    return b"$%d\r\n%s\r\n" % (len(v), v)


def simple(s: str) -> bytes:
    return b"+" + s.encode() + b"\r\n"


def error(s: str) -> bytes:
    return resp.error_reply(s)


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def array(items: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


def null_bulk(resp3: bool) -> bytes:
    return b"_\r\n" if resp3 else b"$-1\r\n"


def null_array(resp3: bool) -> bytes:
    return b"_\r\n" if resp3 else b"*-1\r\n"


def fields_reply(pairs: list[tuple[str, object]], resp3: bool) -> bytes:
    """An instance's state: a map in RESP3, a flat name/value array in RESP2.

    Every value is a bulk string, numbers too, as Sentinel sends them."""
    body = b"".join(bulk(k) + bulk(v) for k, v in pairs)
    return (b"%%%d\r\n" % len(pairs) if resp3 else b"*%d\r\n" % (2 * len(pairs))) + body


def push(kind: bytes, parts: list[bytes], resp3: bool) -> bytes:
    """A pub/sub message or (un)subscribe confirmation; parts are already encoded."""
    return (b">%d\r\n" if resp3 else b"*%d\r\n") % (len(parts) + 1) + bulk(kind) + b"".join(parts)


def verbatim(text: str, resp3: bool) -> bytes:
    data = text.encode()
    if resp3:
        return b"=%d\r\ntxt:%s\r\n" % (len(data) + 4, data)
    return bulk(data)
