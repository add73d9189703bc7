"""RESP framing without building objects: bytes in, boundaries out.

Two directions, both sans-I/O (no sockets here, in the spirit of h11):

* `parse_command` finds one client command in a buffer: its end offset, its
  lower-cased name and where its arguments start.  The proxy forwards the
  client's own bytes unchanged; only commands it must inspect get their
  arguments decoded (`command_args`).  Inline commands (`PING\\r\\n` typed in
  telnet) are decoded and re-encoded as RESP.
* `scan_replies` walks upstream replies (RESP2 and RESP3) and tells where a
  given number of complete replies end.  It is resumable: it returns how many
  elements are still missing, so a 10 MB reply arriving in 64 KB pieces is
  never rescanned from its start.

Errors carry the exact text the client should see (`ProtocolError.reply`).
"""

from __future__ import annotations

NEED_DATA = None

INLINE_MAX = 64 * 1024
MBULK_HEADER_MAX = 64 * 1024


class ProtocolError(Exception):
    """The client sent something that is not RESP; the connection must close."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        # the client's own byte where the message quotes one (latin-1: one byte a character),
        # and no CR or LF inside the error line, as Redis does (addReplyErrorFormat)
        text = message.encode("latin-1", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
        self.reply = b"-ERR Protocol error: " + text + b"\r\n"


def _digits(raw: bytes | bytearray) -> bool:
    return raw.isdigit()


def parse_command(buf: bytes | bytearray, pos: int, max_bulk: int, max_args: int):
    """Parse one RESP multibulk command starting at `buf[pos]` (which is `*`).

    Returns NEED_DATA when the command is incomplete, else a tuple
    `(end, name, args_at, argc, need)` where `name` is the lower-cased command
    name (b"" for an empty `*0` command, which Redis ignores), `args_at` the
    offset of the second argument's header and `argc` the argument count.
    When incomplete and the remaining size is known, returns
    `(None, total_needed)` so the caller can wait for that many bytes
    instead of re-parsing on every packet.
    """
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        if len(buf) - pos > MBULK_HEADER_MAX:
            raise ProtocolError("too big mbulk count string")
        return NEED_DATA
    raw = buf[pos + 1:nl]
    if not _digits(raw):
        if raw[:1] == b"-" and raw[1:].isdigit():  # *-1: ignored like Redis does
            return (nl + 2, b"", nl + 2, 0)
        raise ProtocolError("invalid multibulk length")
    argc = int(raw)
    if argc > max_args:
        raise ProtocolError("invalid multibulk length")
    p = nl + 2
    name = b""
    args_at = p
    n = len(buf)
    for i in range(argc):
        if p >= n:
            return NEED_DATA
        if buf[p] != 36:  # '$'
            got = chr(buf[p])
            raise ProtocolError(f"expected '$', got '{got}'")
        nl = buf.find(b"\r\n", p)
        if nl < 0:
            if n - p > MBULK_HEADER_MAX:
                raise ProtocolError("too big bulk count string")
            return NEED_DATA
        raw = buf[p + 1:nl]
        if not _digits(raw):
            raise ProtocolError("invalid bulk length")
        blen = int(raw)
        if blen > max_bulk:
            raise ProtocolError("invalid bulk length")
        start = nl + 2
        p = start + blen + 2
        if p > n:
            # The rest of this bulk and the other headers are still missing.
            return (None, p)
        if buf[p - 2] != 13 or buf[p - 1] != 10:
            raise ProtocolError("bulk string not terminated by CRLF")
        if i == 0:
            name = bytes(buf[start:start + blen]).lower()
            args_at = p
    if argc == 0:
        args_at = p
    return (p, name, args_at, argc)


def split_commands_py(buf: bytes | bytearray, pos: int, max_bulk: int, max_args: int,
                      kinds: dict, default_kind: int):
    """Split complete multibulk commands into groups of the same kind.

    Returns `(groups, pos, need, error)`; each group is
    `(kind, count, start, end, name, args_at)` for `count` consecutive
    commands of one kind in `buf[start:end]` (`name`, `args_at`: the first
    command's).  Kind 0 marks commands the caller must inspect: each is a
    group of its own.  Stops before an inline command, an incomplete command
    (`need`: total buffer size wanted, when known) or a protocol error
    (`error`: the message; `pos`: where the bad command starts).  This is the
    reference for the C version in `_speedups.c`.
    """
    groups: list = []
    need = 0
    n = len(buf)
    g = None
    while pos < n and buf[pos] == 42:
        try:
            res = parse_command(buf, pos, max_bulk, max_args)
        except ProtocolError as exc:
            if g:
                groups.append(tuple(g))
            return groups, pos, 0, str(exc)
        if res is None:
            break
        if res[0] is None:
            need = res[1]
            break
        end, name, args_at, argc = res
        if argc == 0:
            pos = end
            continue
        kind = kinds.get(name, default_kind) if len(name) <= 64 else default_kind
        if g is None or kind == 0 or g[0] != kind or g[0] == 0:
            if g:
                groups.append(tuple(g))
            g = [kind, 0, pos, end, name[:64], args_at]
        g[1] += 1
        g[3] = end
        pos = end
    if g:
        groups.append(tuple(g))
    return groups, pos, need, None


def command_args(buf: bytes | bytearray, args_at: int, end: int) -> list[bytes]:
    """Decode the (already validated) bulk arguments in `buf[args_at:end]`."""
    out = []
    p = args_at
    while p < end:
        nl = buf.find(b"\r\n", p)
        blen = int(buf[p + 1:nl])
        start = nl + 2
        out.append(bytes(buf[start:start + blen]))
        p = start + blen + 2
    return out


def encode_command(args: list[bytes]) -> bytes:
    """Encode arguments as a RESP multibulk command."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command line like Redis' sdssplitargs (quotes, \\xHH)."""
    text = line.decode("latin-1")
    args: list[bytes] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n\v\f":
            i += 1
        if i >= n:
            return args
        cur: list[str] = []
        quote = ""
        while i < n:
            c = text[i]
            if quote == '"':
                if c == "\\" and i + 3 < n and text[i + 1] == "x" and _ishex(text[i + 2:i + 4]):
                    cur.append(chr(int(text[i + 2:i + 4], 16)))
                    i += 3
                elif c == "\\" and i + 1 < n:
                    i += 1
                    cur.append(_ESCAPES.get(text[i], text[i]))
                elif c == '"':
                    if i + 1 < n and text[i + 1] not in " \t\r\n\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    quote = ""
                    i += 1
                    break
                else:
                    cur.append(c)
            elif quote == "'":
                if c == "\\" and i + 1 < n and text[i + 1] == "'":
                    i += 1
                    cur.append("'")
                elif c == "'":
                    if i + 1 < n and text[i + 1] not in " \t\r\n\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    quote = ""
                    i += 1
                    break
                else:
                    cur.append(c)
            else:
                if c in " \t\r\n\v\f":
                    break
                if c in "\"'" and not cur:
                    quote = c
                else:
                    cur.append(c)
            i += 1
        if quote:
            raise ProtocolError("unbalanced quotes in request")
        args.append("".join(cur).encode("latin-1"))


def _ishex(s: str) -> bool:
    return len(s) == 2 and all(c in "0123456789abcdefABCDEF" for c in s)


def parse_inline(buf: bytes | bytearray, pos: int):
    """Parse one inline command line; returns NEED_DATA or (end, args)."""
    nl = buf.find(b"\n", pos)
    if nl < 0:
        if len(buf) - pos > INLINE_MAX:
            raise ProtocolError("too big inline request")
        return NEED_DATA
    return (nl + 1, split_inline(bytes(buf[pos:nl])))


# -- replies ------------------------------------------------------------------

_LINE_TYPES = frozenset(b"+-:_#,(")
_BULK_TYPES = frozenset(b"$!=")
_AGG_TYPES = frozenset(b"*~>")
_PAIR_TYPES = frozenset(b"%|")


class ReplyError(Exception):
    """The upstream sent bytes that are not RESP: the connection is unusable."""


def scan_replies(buf: bytes | bytearray, pos: int, remaining: int) -> tuple[int, int]:
    """Skip up to `remaining` RESP elements starting at `buf[pos]`.

    Returns `(pos, remaining)`: the offset after the last complete element
    and how many elements are still missing (0 when all replies are
    complete).  Aggregates add their children to `remaining`, so the count
    can be carried across calls while a large reply streams in.
    """
    n = len(buf)
    find = buf.find
    while remaining and pos < n:
        t = buf[pos]
        nl = find(b"\r\n", pos)
        if nl < 0:
            break
        if t == 36 or t in _BULK_TYPES:  # $ first: the common case
            size = int(buf[pos + 1:nl])
            if size < 0:
                pos = nl + 2
            else:
                end = nl + 4 + size
                if end > n:
                    break
                pos = end
            remaining -= 1
        elif t in _LINE_TYPES:
            pos = nl + 2
            remaining -= 1
        elif t in _AGG_TYPES:
            count = int(buf[pos + 1:nl])
            pos = nl + 2
            remaining += count - 1 if count > 0 else -1
        elif t in _PAIR_TYPES:
            count = int(buf[pos + 1:nl])
            pos = nl + 2
            # An attribute (|) is followed by the reply it annotates.
            remaining += 2 * count - (1 if t == 37 else 0)
        else:
            raise ReplyError(f"unexpected reply type byte {t!r}")
    return pos, remaining


def split_replies(raw: bytes, count: int, start: int = 0) -> list[bytes]:
    """The first `count` replies in `raw` from `start`, one bytes each; ReplyError when
    fewer are there."""
    out, pos = [], start
    for _ in range(count):
        end, left = scan_replies(raw, pos, 1)
        if left:
            raise ReplyError("fewer replies than commands")
        out.append(raw[pos:end])
        pos = end
    return out


def speedup(name: str, reference):
    """The C version of `reference` from `_speedups.c` when it is built (pip install
    compiles it), else `reference` itself: same contract, and the unit tests compare them."""
    try:
        from . import _speedups
    except ImportError:  # pragma: no cover - pure Python fallback
        return reference
    return getattr(_speedups, name)


def error_reply(message: str) -> bytes:
    """A RESP error line; `message` should start with an upper-case code."""
    return b"-" + message.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


split_commands = speedup("split_commands", split_commands_py)
scan_replies_py = scan_replies
try:  # the C scanner, when built (pip install compiles it)
    from ._speedups import scan_replies as _scan_c
    from ._speedups import set_reply_error as _set_reply_error
except ImportError:  # pragma: no cover - pure Python fallback
    pass
else:
    # the C scanner raises ReplyError itself, so it is called directly (no wrapper frame)
    _set_reply_error(ReplyError)
    scan_replies = _scan_c  # noqa: F811 - C version, same contract
