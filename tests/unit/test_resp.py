"""proxy/resp.py: command framing and reply boundaries, byte by byte."""

import pytest

from proxy.protocol import resp


def parse(buf, max_bulk=1 << 20, max_args=1000):
    return resp.parse_command(buf, 0, max_bulk, max_args)


def test_command_complete():
    buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n"
    end, name, args_at, argc = parse(buf)
    assert (end, name, argc) == (len(buf), b"set", 3)
    assert resp.command_args(buf, args_at, end) == [b"k", b"value"]


def test_command_every_prefix_needs_data():
    buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n"
    for i in range(len(buf)):
        res = parse(buf[:i])
        assert res is None or res[0] is None, i
        if res is not None:
            assert res[1] > i  # it asks for more than it has


def test_partial_bulk_reports_bytes_needed():
    buf = b"*2\r\n$3\r\nGET\r\n$10\r\n01234"
    assert parse(buf) == (None, len(buf) + 7)


def test_empty_and_null_multibulk_are_ignored():
    assert parse(b"*0\r\n")[1] == b""
    assert parse(b"*-1\r\n")[1] == b""


@pytest.mark.parametrize("bad, text", [
    (b"*abc\r\n", b"invalid multibulk length"),
    (b"*2\r\n$3\r\nGET\r\n:1\r\n", b"expected '$', got ':'"),
    (b"*1\r\n$x\r\n", b"invalid bulk length"),
    (b"*1\r\n$3\r\nGETXX", b"not terminated by CRLF"),
])
def test_malformed(bad, text):
    with pytest.raises(resp.ProtocolError) as exc:
        parse(bad)
    assert exc.value.reply.startswith(b"-ERR Protocol error: ")
    assert text in exc.value.reply


def test_limits():
    with pytest.raises(resp.ProtocolError):
        parse(b"*1\r\n$2000000\r\n", max_bulk=1 << 20)
    with pytest.raises(resp.ProtocolError):
        parse(b"*1001\r\n", max_args=1000)


def test_inline():
    end, args = resp.parse_inline(b"set \"a b\" 'c d' \"\\x41\\n\"\r\nPING\r\n", 0)
    assert args == [b"set", b"a b", b"c d", b"A\n"]
    assert resp.parse_inline(b"PING", 0) is None
    with pytest.raises(resp.ProtocolError):
        resp.split_inline(b'get "abc')


@pytest.mark.parametrize("reply", [
    b"+OK\r\n", b"-ERR x\r\n", b":12\r\n", b"$-1\r\n", b"$3\r\nabc\r\n", b"*-1\r\n", b"*0\r\n",
    b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", b"%1\r\n+k\r\n~2\r\n:1\r\n:2\r\n", b"_\r\n", b",1.5\r\n",
    b"(123\r\n", b"#t\r\n", b"=8\r\ntxt:abcd\r\n", b"|1\r\n+a\r\n:1\r\n$1\r\nx\r\n", b">2\r\n+a\r\n+b\r\n",
    b"$4\r\n\r\n\r\n\r\n",
])
def test_reply_boundaries(reply):
    two = reply + reply
    assert resp.scan_replies(two, 0, 2) == (len(two), 0)
    assert resp.scan_replies(two, 0, 1) == (len(reply), 0)
    for i in range(len(reply)):
        pos, rem = resp.scan_replies(reply[:i], 0, 1)
        assert rem > 0 and pos <= i


def test_reply_scan_resumes():
    reply = b"*3\r\n$3\r\nabc\r\n$3\r\ndef\r\n:7\r\n"
    pos, rem = resp.scan_replies(reply[:20], 0, 1)
    assert rem > 0
    pos2, rem2 = resp.scan_replies(reply, pos, rem)
    assert (pos2, rem2) == (len(reply), 0)


def test_reply_garbage():
    with pytest.raises(resp.ReplyError):
        resp.scan_replies(b"?what\r\n", 0, 1)
