"""The pure parts of proxy/session/client_registry.py: CLIENT KILL's filters, MONITOR's line
format and redaction, the proxy's ACL LOG entries merged with the master's."""

from __future__ import annotations

import hiredis

from proxy.session.client_registry import (
    AclLogEntry,
    ClientRegistry,
    KillFilter,
    encode_acl_entry,
    monitor_line,
    parse_kill,
    redacted,
    repr_arg,
)


def test_parse_kill_old_form_and_filters():
    f = parse_kill([b"127.0.0.1:5000"])
    assert f == KillFilter(addr="127.0.0.1:5000", skipme=False, old_form=True)
    f = parse_kill([b"ID", b"7", b"type", b"SLAVE", b"SKIPME", b"no", b"maxage", b"30", b"user", b"u",
                    b"laddr", b"1.2.3.4:6380"])
    assert (f.ids, f.type, f.skipme, f.maxage, f.user, f.laddr) == ({7}, b"replica", False, 30, "u", "1.2.3.4:6380")


def test_parse_kill_errors_are_redis_own():
    assert parse_kill([]) == b"-ERR syntax error\r\n"
    assert parse_kill([b"id", b"1", b"skipme"]) == b"-ERR syntax error\r\n"
    assert parse_kill([b"id", b"x"]) == b"-ERR client-id should be greater than 0\r\n"
    assert parse_kill([b"type", b"foo"]) == b"-ERR Unknown client type 'foo'\r\n"
    assert parse_kill([b"skipme", b"maybe"]) == b"-ERR syntax error\r\n"
    assert parse_kill([b"maxage", b"0"]) == b"-ERR maxage should be greater than 0\r\n"
    assert parse_kill([b"nosuch", b"1"]) == b"-ERR syntax error\r\n"


def test_monitor_line_quotes_as_redis_does():
    assert repr_arg(b"plain") == b'"plain"'
    assert repr_arg(b'a "q" \\ \n\r\t\x07\x08\x00\xff') == b'"a \\"q\\" \\\\ \\n\\r\\t\\a\\b\\x00\\xff"'
    assert monitor_line(1700000000.5, 3, "127.0.0.1:5000", [b"SET", b"k", b"v"]) == \
        b'+1700000000.500000 [3 127.0.0.1:5000] "SET" "k" "v"\r\n'


def test_secrets_are_redacted():
    assert redacted(b"auth", [b"AUTH", b"user", b"pw"]) == [b"AUTH", b"(redacted)", b"(redacted)"]
    assert redacted(b"hello", [b"HELLO", b"3", b"AUTH", b"u", b"pw", b"SETNAME", b"n"]) == \
        [b"HELLO", b"3", b"AUTH", b"(redacted)", b"(redacted)", b"SETNAME", b"n"]
    assert redacted(b"get", [b"GET", b"k"]) == [b"GET", b"k"]


def _entry(age_from_now: float, obj: str, now: float) -> AclLogEntry:
    return AclLogEntry("auth", "toplevel", obj, "default", "id=1 addr=x", now - age_from_now,
                       now - age_from_now, 0)


def test_acl_log_merged_newest_first_and_cut_to_count():
    import time

    now = time.time()
    upstream_entries = [encode_acl_entry(_entry(a, f"up{a}", now), now, False, False) for a in (1.0, 5.0)]
    upstream = b"*2\r\n" + b"".join(upstream_entries)
    reg = ClientRegistry(server=None)
    reg.acl_log = [_entry(0.5, "mine-new", now), _entry(3.0, "mine-old", now)]
    r = hiredis.Reader()
    r.feed(reg.merged_acl_log(upstream, 10, False))
    merged = r.gets()
    objects = [dict(zip(e[::2], e[1::2]))[b"object"] for e in merged]
    assert objects == [b"mine-new", b"up1.0", b"mine-old", b"up5.0"]
    r.feed(reg.merged_acl_log(upstream, 2, False))
    assert len(r.gets()) == 2
    assert reg.merged_acl_log(b"-NOPERM no\r\n", 10, False) == b"-NOPERM no\r\n"


def test_acl_entry_resp3_is_a_map_with_a_double_age():
    import time

    now = time.time()
    data = encode_acl_entry(_entry(2.0, "auth", now), now, True, True)
    assert data.startswith(b"%10\r\n") and b"$11\r\nage-seconds\r\n,2" in data
