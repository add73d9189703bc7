"""The log formatters (proxy/process/logging_setup.py): an `event=... k=v` message
becomes top-level keys in logfmt and JSON, secrets are masked, and README's
event list is the set of events the code emits. Real proxy processes' log lines
are parsed in tests/integration/test_observability.py."""

from __future__ import annotations

import json
import logging
import re
import shlex
import sys
from pathlib import Path

from proxy.process.logging_setup import JsonFormatter, KeyValueFormatter, parse_fields

ROOT = Path(__file__).resolve().parents[2]


def record(msg: str, *args, level: int = logging.WARNING, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("health.controller", level, __file__, 1, msg, args, exc_info)


def logfmt(line: str) -> dict[str, str]:
    return dict(token.partition("=")[::2] for token in shlex.split(line))


def test_fields_respect_quotes_brackets_and_trailing_prose():
    fields, prose = parse_fields("event=topology_applied epoch=3 master=10.0.0.7:6379 replicas=['a', 'b c'] "
                                 "reason='failover: 10.0.0.6:6379 objectively down' "
                                 "error=ConnectionError('Connection refused') note=\"it's x\" the rest is prose")
    assert fields == {"event": "topology_applied", "epoch": "3", "master": "10.0.0.7:6379",
                      "replicas": "['a', 'b c']", "reason": "failover: 10.0.0.6:6379 objectively down",
                      "error": "ConnectionError('Connection refused')", "note": "it's x"}
    assert prose == "the rest is prose"
    # a shard's controller appends its shard after the prose (health/shard/controller.py ShardLog)
    assert parse_fields("event=lease_lost master=m:1 writes in flight aren't sent shard=s1") == \
        ({"event": "lease_lost", "master": "m:1", "shard": "s1"}, "writes in flight aren't sent")
    line = "proxy proxy-1 listening on 127.0.0.1:6380"
    assert parse_fields(line) == ({}, line)
    # a standard key in an event is renamed, never overwrites the line's own
    assert parse_fields("event=x level=3 ts=4")[0] == {"event": "x", "level_": "3", "ts_": "4"}


def test_logfmt_line_has_the_event_fields_at_top_level():
    line = KeyValueFormatter("proxy-2").format(record("event=failover_blocked master=%s epoch=%d reason=%r",
                                                      "10.0.0.6:6379", 4, "no replica is safe to promote"))
    assert re.fullmatch(r'ts=\S+Z level=warning logger=health.controller proxy=proxy-2 event=failover_blocked '
                        r'master=10.0.0.6:6379 epoch=4 reason="no replica is safe to promote"', line), line
    assert "msg=" not in line
    assert logfmt(line)["reason"] == "no replica is safe to promote"
    plain = logfmt(KeyValueFormatter().format(record('client %s said "hi"', "1.2.3.4:5", level=logging.INFO)))
    assert plain["msg"] == 'client 1.2.3.4:5 said "hi"' and plain["level"] == "info" and "proxy" not in plain


def test_json_line_is_one_object_with_typed_values():
    fmt = JsonFormatter("proxy-1")
    doc = json.loads(fmt.format(record("event=failover_committed new_master=%s epoch=%d duration_ms=%.0f ok=%s x=%s",
                                       "10.0.0.7:6379", 5, 812.4, True, None)))
    assert doc == {"ts": doc["ts"], "level": "warning", "logger": "health.controller", "proxy": "proxy-1",
                   "event": "failover_committed", "new_master": "10.0.0.7:6379", "epoch": 5, "duration_ms": 812,
                   "ok": True, "x": None}
    start = json.loads(fmt.format(record("event=starting node=%s config=%s", "proxy-1",
                                         {"bind": "0.0.0.0", "peers": ["a", "b"], "raft_secret": "***"})))
    assert start["config"] == {"bind": "0.0.0.0", "peers": ["a", "b"], "raft_secret": "***"}
    failed = json.loads(fmt.format(record("event=storage_failed node=%s error=%r stops voting", "p", "disk full",
                                          exc=True)))
    assert failed["error"] == "disk full" and failed["msg"] == "stops voting"
    assert "ValueError: boom" in failed["exc"]
    kv = KeyValueFormatter().format(record("event=x", exc=True))
    assert "\n" not in kv and "ValueError: boom" in logfmt(kv)["exc"]


def test_a_field_named_like_a_secret_is_masked():
    msg = "event=x redis_password=%s raft_secret=%r auth_token=%s requirepass=%s node=%s"
    for fmt in (KeyValueFormatter(), JsonFormatter()):
        secrets = ("Hunter-2a", "S3cr3t-b", "T0ken-c", "Pw-d")
        line = fmt.format(record(msg, *secrets, "a"))
        assert not any(s in line for s in secrets), line
        assert line.count("***") == 4


def _emitted_events() -> set[str]:
    out = set()
    for pkg in ("proxy", "health", "raft"):
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text()
            assert not re.search(r"""["']event=%""", text), f"{path}: an event name built at run time"
            out |= set(re.findall(r"""["']event=([a-z_]+)""", text))
    return out - {"x"}      # the docstring's example in logging_setup.py


def test_readme_lists_exactly_the_events_the_code_emits():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- events -->", 1)[1].split("<!-- /events -->", 1)[0]
    listed = set(re.findall(r"`([a-z_]+)`", section))
    emitted = _emitted_events()
    assert len(emitted) > 40
    assert emitted - listed == set(), f"emitted but not in README: {sorted(emitted - listed)}"
    assert listed - emitted == set(), f"in README but never emitted: {sorted(listed - emitted)}"


def test_the_loops_notices_of_writes_to_closed_connections_are_kept_within_a_budget():
    """Fuzzing a --tls demo: uvloop logged "SSL connection is closed" for each write to a
    connection its client had closed (after the first five), 1,641 lines in 45 s."""
    from proxy.log_budget import LogBudget
    from proxy.process.logging_setup import LoopWriteNotices

    notices = LoopWriteNotices(LogBudget(lines=2, window_s=10.0))

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.WARNING, __file__, 1, msg, None, None)

    kept = [notices.filter(rec("SSL connection is closed")) for _ in range(5)]
    assert kept == [True, True, False, False, False]
    assert notices.filter(rec("Unclosed connection")), "other messages pass"
    assert notices.filter(rec("socket.send() raised exception.")), "a budget of its own"
