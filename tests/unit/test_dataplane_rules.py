"""The C data plane's pure decisions (proxy/dataplane/rules.py): what it forwards, who
goes to it, and how long a client handed back stays in Python."""

from __future__ import annotations

from types import SimpleNamespace

from proxy.dataplane.rules import RESUME_AFTER_MAX_S, caught_up_before, forwarded_commands, offloadable, resume_delay
from proxy.protocol.commands import CommandTable, Kind
from proxy.session.common import DEDICATED, RAW, SHARED


def test_only_plain_reads_and_writes_are_forwarded():
    fast = {b"get": int(Kind.READ), b"set": int(Kind.WRITE), b"eval": int(Kind.ADMIN), b"blpop": int(Kind.BLOCKING),
            b"ping": int(Kind.SPECIAL), b"wait": int(Kind.WRITE), b"client": int(Kind.SPECIAL),
            b"multi": int(Kind.WRITE), b"subscribe": int(Kind.READ), b"xread": int(Kind.READ), b"x" * 33: 1}
    assert forwarded_commands(fast) == {b"get": 1, b"set": 2}


def test_a_loaded_table_forwards_the_common_commands_and_none_the_session_handles():
    ct = CommandTable()
    entries = [[b"get", 2, [b"readonly", b"fast"]], [b"mget", -2, [b"readonly", b"fast"]],
               [b"set", -3, [b"write", b"denyoom"]], [b"incr", 2, [b"write", b"fast"]],
               [b"hset", -4, [b"write", b"fast"]], [b"lrange", 4, [b"readonly"]],
               [b"publish", 3, [b"pubsub", b"loading", b"fast", b"may_replicate"]]]
    # every name the session handles, whatever Redis says of it
    for name in (b"select", b"auth", b"hello", b"multi", b"exec", b"watch", b"subscribe", b"monitor", b"wait",
                 b"client", b"config", b"script", b"eval", b"blpop", b"xread", b"quit", b"reset", b"replicaof",
                 b"readonly", b"asking"):
        entries.append([name, -1, [b"write", b"readonly"][len(name) % 2:][:1]])
    ct.load_command_reply(entries)
    table = forwarded_commands(ct.fast)
    assert table.get(b"publish") == 2
    for name, kind in ((b"get", 1), (b"mget", 1), (b"set", 2), (b"incr", 2), (b"hset", 2), (b"lrange", 1)):
        assert table.get(name) == kind, name
    for name in (b"select", b"auth", b"hello", b"multi", b"exec", b"watch", b"subscribe", b"monitor", b"wait",
                 b"client", b"config", b"script", b"eval", b"blpop", b"xread", b"quit", b"reset", b"replicaof"):
        assert name not in table, name


def session(**kw):
    s = SimpleNamespace(mode=SHARED, authenticated=True, multi=False, watching=False, reply_mode=b"on", db=0,
                        resp3=False, tracking=False, monitoring=False, channels=set(), patterns=set(),
                        schannels=set(), closing=False, closed=False, draining=False, client_eof=False, held=False,
                        hold_since=None, waiting=False, pending=[], killed=False, blocked_on=None,
                        registry=SimpleNamespace(intercept=False), resume_at=0.0, auth=None, no_touch=False,
                        raw=None)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def test_a_plain_session_goes_and_any_connection_state_keeps_it():
    assert offloadable(session(), 1.0)
    for change in ({"authenticated": False}, {"multi": True}, {"watching": True},
                   {"reply_mode": b"off"}, {"db": 1}, {"tracking": True}, {"monitoring": True},
                   {"channels": {b"c"}}, {"closing": True}, {"held": True}, {"hold_since": 0.5},
                   {"waiting": True}, {"pending": [object()]}, {"blocked_on": object()}, {"raw": object()},
                   {"registry": SimpleNamespace(intercept=True)}, {"resume_at": 2.0}):
        assert not offloadable(session(**change), 1.0), change


def test_connections_of_its_own_keep_a_session_only_if_they_hold_more_than_its_protocol():
    """After HELLO 3 (or a blocking command) a session has connections of its own: it goes
    (the thread has RESP3 connections too) unless they carry its own ACL user or NO-TOUCH."""
    assert offloadable(session(mode=DEDICATED, resp3=True), 1.0)
    assert offloadable(session(mode=DEDICATED), 1.0)
    assert offloadable(session(resp3=True), 1.0)
    for change in ({"auth": [b"alice", b"secret"]}, {"no_touch": True}, {"db": 2}):
        assert not offloadable(session(mode=DEDICATED, resp3=True, **change), 1.0), change
    assert not offloadable(session(mode=RAW), 1.0)


def test_a_client_handed_back_often_stays_in_python_longer():
    assert resume_delay(0) == 0.0
    delays = [resume_delay(n) for n in range(1, 30)]
    assert delays[0] == 0.001
    assert all(a <= b for a, b in zip(delays, delays[1:]))
    assert delays[-1] == RESUME_AFTER_MAX_S


def test_a_replica_is_caught_up_to_the_last_master_probe_whose_offset_it_reached():
    samples = [(10.0, 100), (10.1, 150), (10.2, 150), (10.3, 400)]
    assert caught_up_before(samples, 99) == 0.0         # behind every probe: no write is known on it
    assert caught_up_before(samples, 100) == 10.0
    assert caught_up_before(samples, 399) == 10.2       # a write answered before 10.2 is on it ...
    assert caught_up_before(samples, 400) == 10.3       # ... and one answered at 10.25 only now
    assert caught_up_before([], 1000) == 0.0
    assert caught_up_before(samples, -1) == 0.0         # never probed
