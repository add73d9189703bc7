"""Log lines as logfmt (`kv`) or JSON, selected by `log_format`.

Call sites log events as one format string, `log.info("event=x k=%s ...")`.
The formatters parse that message once (`parse_fields`) and write every
`k=v` pair as a top-level key of the line, so `event`, `epoch`, `node`,
`master` ... can be filtered on in Loki, Elasticsearch or `jq` without
parsing a `msg` string.  Each line also carries `ts`, `level`, `logger` and,
when the process has a node name, `proxy`; prose that is not a `k=v` pair
(a message that is no event, or text after an event's fields) is `msg`.

Values are written as the call site formatted them (`%r` of a string is
unquoted first); JSON turns integers, floats, booleans, `None` and Python
literals (lists, dicts) into JSON values.  A key that names a secret is
masked (`***`) whatever the call site passed: secrets are never logged.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
import time
from typing import Any

from ..log_budget import LogBudget

MASK = "***"
SECRET_KEY = re.compile(r"(password|passwd|secret|requirepass|token|auth_?key)", re.IGNORECASE)
RESERVED = ("ts", "level", "logger", "proxy", "msg", "exc")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)=")
_OPEN = {"(": ")", "[": "]", "{": "}"}
_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?\d+\.\d+([eE][-+]?\d+)?")


def _value_end(text: str, i: int) -> int:
    """Index just past the value that starts at `i`: up to the first blank
    outside quotes and brackets, so `error=ConnectionError('a b')` and
    `replicas=['a', 'b']` are one value each."""
    depth, quote, n = 0, "", len(text)
    while i < n:
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch.isspace() and depth == 0:
            break
        i += 1
    return i


def _unquote(raw: str) -> str:
    """`'a b'` or `"a b"` (a Python repr or a quoted literal) -> `a b`; anything else as is."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw[1:-1]
        return value if isinstance(value, str) else raw
    return raw


def parse_fields(message: str) -> tuple[dict[str, str], str]:
    """(`k=v` fields in order, the remaining prose) of an `event=...` message.

    A message that does not start with `event=` has no fields: all of it is
    prose.  In an event, words that are not `k=v` are prose, wherever they are
    (a shard's controller appends `shard=ID` after them)."""
    if not message.startswith("event="):
        return {}, message
    fields: dict[str, str] = {}
    prose: list[str] = []
    i, n = 0, len(message)
    while i < n:
        m = _KEY.match(message, i)
        if m:
            end = _value_end(message, m.end())
            key = m.group(1)
            if key in RESERVED:
                key += "_"
            fields[key] = _unquote(message[m.end():end])
        else:       # a word of prose: up to the next blank (an apostrophe opens no quote)
            end = i
            while end < n and not message[end].isspace():
                end += 1
            prose.append(message[i:end])
        i = end
        while i < n and message[i].isspace():
            i += 1
    return fields, " ".join(prose)


def mask_secrets(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: (MASK if SECRET_KEY.search(k) and v not in ("", "None", None) else v) for k, v in fields.items()}


def typed(value: str) -> Any:
    """A field value as a JSON value: numbers, booleans, null and Python literals typed, the rest a string."""
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    if value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[value]
    if value[:1] in "[{(" and value[-1:] in "]})":
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, RecursionError):
            return value
        return list(parsed) if isinstance(parsed, tuple) else parsed
    return value


def _logfmt_value(value: str) -> str:
    if value and not any(c.isspace() or c in '="\\' for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _StructuredFormatter(logging.Formatter):
    def __init__(self, node: str = "") -> None:
        super().__init__()
        self.node = node

    def record_fields(self, record: logging.LogRecord) -> tuple[dict[str, Any], dict[str, str], str]:
        """(the line's standard keys, the event's fields, the prose)."""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        head: dict[str, Any] = {"ts": ts, "level": record.levelname.lower(), "logger": record.name}
        if self.node:
            head["proxy"] = self.node
        fields, prose = parse_fields(record.getMessage())
        return head, mask_secrets(fields), prose


class KeyValueFormatter(_StructuredFormatter):
    """logfmt: `ts=... level=... logger=... [proxy=...] event=... k=v ... [msg="..."] [exc="..."]`."""

    def format(self, record: logging.LogRecord) -> str:
        head, fields, prose = self.record_fields(record)
        parts = [f"{k}={_logfmt_value(str(v))}" for k, v in (*head.items(), *fields.items())]
        if prose:
            parts.append("msg=" + _logfmt_value(prose))
        if record.exc_info:
            parts.append("exc=" + _logfmt_value(self.formatException(record.exc_info)))
        return " ".join(parts)


class JsonFormatter(_StructuredFormatter):
    """One JSON object per line, every event field a top-level key."""

    def format(self, record: logging.LogRecord) -> str:
        head, fields, prose = self.record_fields(record)
        doc = {**head, **{k: typed(v) if isinstance(v, str) else v for k, v in fields.items()}}
        if prose:
            doc["msg"] = prose
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


# What the event loop says each time something is written to a connection its client has
# already closed (after the first few): any client can cause it as often as it likes
LOOP_WRITE_NOTICES = ("SSL connection is closed", "socket.send() raised exception.")


class LoopWriteNotices(logging.Filter):
    """The event loop's notices of writes to a closed connection, within a log budget."""

    def __init__(self, budget: LogBudget | None = None) -> None:
        super().__init__()
        self.budget = budget or LogBudget(lines=10, window_s=10.0)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in LOOP_WRITE_NOTICES:
            return True
        left_out = self.budget.take(record.msg)
        if left_out:
            record.msg = f"{record.msg} ({left_out} more not logged)"
        return left_out is not None


def setup_logging(fmt: str = "kv", level: str = "info", node: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node) if fmt == "json" else KeyValueFormatter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    loop_log = logging.getLogger("asyncio")
    loop_log.filters[:] = [f for f in loop_log.filters if not isinstance(f, LoopWriteNotices)]
    loop_log.addFilter(LoopWriteNotices())
