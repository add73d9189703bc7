"""The C splitter and reply scanner agree with the pure-Python reference."""

import random
from array import array

import pytest

from proxy.protocol import resp
from proxy.routing import keyslot
from proxy.session import cluster_fanout

speedups = pytest.importorskip("proxy.protocol._speedups", reason="C speedups not built")

KINDS = {b"get": 1, b"set": 2, b"multi": 0, b"info": 3}


def random_command(rng: random.Random) -> bytes:
    name = rng.choice([b"GET", b"get", b"SET", b"MULTI", b"INFO", b"XADD", b""])
    args = [name] + [bytes(rng.randrange(256) for _ in range(rng.randrange(6))) for _ in range(rng.randrange(3))]
    return resp.encode_command(args)


def corrupt(rng: random.Random, data: bytes) -> bytes:
    if not data or rng.random() < 0.6:
        return data
    i = rng.randrange(len(data))
    return data[:i] + bytes([rng.choice(b"*$:\r\n0-9ax")]) + data[i + 1:]


@pytest.mark.parametrize("seed", range(300))
def test_split_commands_matches_reference(seed):
    rng = random.Random(seed)
    buf = b"".join(corrupt(rng, random_command(rng)) for _ in range(rng.randrange(1, 12)))
    if rng.random() < 0.2:
        buf += b"*0\r\n*-1\r\nPING\r\n"
    cut = buf[:rng.randrange(len(buf) + 1)] if rng.random() < 0.5 else buf
    for b in (cut, bytearray(cut)):
        assert speedups.split_commands(b, 0, 1 << 20, 100, KINDS, 2) == \
            resp.split_commands_py(b, 0, 1 << 20, 100, KINDS, 2)


def test_any_byte_where_a_bulk_is_expected_is_a_protocol_error_of_one_line():
    """Fuzzing found it: a byte above 127 where '$' was expected made the C splitter raise
    UnicodeDecodeError (its message quoted the byte as UTF-8), so the client got a reset
    instead of the error and the proxy logged a traceback; CR or LF in the quoted byte
    split the error line. Every byte now gives the reference's message and a one-line
    reply quoting the client's byte, as Redis does (CR and LF as spaces)."""
    for byte in range(256):
        if byte == ord("$"):
            continue
        buf = b"*2\r\n$3\r\nGET\r\n" + bytes([byte]) + b"1\r\n"
        got = speedups.split_commands(buf, 0, 1 << 20, 100, KINDS, 2)
        assert got == resp.split_commands_py(buf, 0, 1 << 20, 100, KINDS, 2), byte
        reply = resp.ProtocolError(got[3]).reply
        quoted = b" " if byte in (10, 13) else bytes([byte])
        assert reply == b"-ERR Protocol error: expected '$', got '" + quoted + b"'\r\n", (byte, reply)


@pytest.mark.parametrize("seed", range(200))
def test_scan_replies_matches_reference(seed):
    rng = random.Random(seed)
    parts = [rng.choice([b"+OK\r\n", b"$3\r\nabc\r\n", b"*2\r\n:1\r\n$-1\r\n", b"%1\r\n+a\r\n_\r\n",
                         b">2\r\n+m\r\n+x\r\n", b"*-1\r\n", b"|1\r\n+a\r\n+b\r\n:5\r\n"])
             for _ in range(rng.randrange(1, 8))]
    buf = b"".join(parts)
    cut = buf[:rng.randrange(len(buf) + 1)]
    want = rng.randrange(1, len(parts) + 1)
    assert speedups.scan_replies(cut, 0, want) == resp.scan_replies_py(cut, 0, want)


def test_scan_replies_raises_reply_error_itself():
    """resp.scan_replies is the C function, called without a Python wrapper: it must raise
    resp.ReplyError (which Upstream turns into one error per waiting client) by itself."""
    assert resp.scan_replies is speedups.scan_replies
    for bad in (b"?x\r\n", b"+OK\r\n$x\r\n"):
        with pytest.raises(resp.ReplyError, match="unexpected reply at offset"):
            speedups.scan_replies(bad, 0, 2)
    with pytest.raises(resp.ReplyError):
        resp.scan_replies_py(b"?x\r\n", 0, 2)


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview])
def test_fastcall_arguments_take_any_bytes_like(make):
    cmds = resp.encode_command([b"GET", b"k"]) + resp.encode_command([b"SET", b"k", b"v"])
    assert speedups.split_commands(make(cmds), 0, 1 << 20, 100, KINDS, 2) == \
        resp.split_commands_py(cmds, 0, 1 << 20, 100, KINDS, 2)
    assert speedups.scan_replies(make(b"+OK\r\n:1\r\n"), 5, 1) == (9, 0)
    # a position past the end finds nothing, as in the reference
    assert speedups.split_commands(make(cmds), len(cmds) + 3, 1 << 20, 100, KINDS, 2) == \
        ([], len(cmds) + 3, 0, None)
    assert speedups.scan_replies(make(b"+OK\r\n"), 9, 1) == (9, 1)


def test_fastcall_arguments_are_checked():
    with pytest.raises(TypeError):
        speedups.split_commands(b"", 0, 1, 1, KINDS)            # one argument short
    with pytest.raises(TypeError):
        speedups.split_commands(b"", 0, 1, 1, [], 2)            # kinds not a dict
    with pytest.raises(TypeError):
        speedups.split_commands("*1\r\n", 0, 1, 1, KINDS, 2)    # str, not bytes
    with pytest.raises(TypeError):
        speedups.scan_replies(b"+OK\r\n", 0)
    with pytest.raises(TypeError):
        speedups.scan_replies(b"+OK\r\n", "0", 1)
    with pytest.raises(ValueError):
        speedups.scan_replies(b"+OK\r\n", -1, 1)



ONE_KEY = frozenset({b"get", b"set", b"incr"})


def random_keyed_command(rng: random.Random) -> bytes:
    name = rng.choice([b"GET", b"set", b"Incr", b"MGET", b"x" * 70])
    key = bytes(rng.choice(b"ab{}c\r\n\x00\xff") for _ in range(rng.randrange(9)))
    args = [name] + ([key] if rng.random() < 0.95 else []) + [b"v"] * rng.randrange(3)
    return resp.encode_command(args)


def random_owners(rng: random.Random):
    owners = array("h", [rng.randrange(-1, 4) for _ in range(16)]) * 1024    # slot -> shard, some unserved
    migrating = bytearray(rng.random() < 0.01 for _ in range(16384))
    return owners, migrating


@pytest.mark.parametrize("seed", range(300))
def test_shard_batches_matches_reference(seed):
    """Cluster mode sends a pipelined run as one batch per shard: the commands by the shard
    of their key's hash slot (hash tags included), positions in the run and bytes; anything
    but a well-formed run of the given one-key commands, all on served slots not being
    migrated, is None, in C as in the reference."""
    rng = random.Random(seed)
    cmds = [corrupt(rng, random_keyed_command(rng)) if rng.random() < 0.2 else random_keyed_command(rng)
            for _ in range(rng.randrange(1, 8))]
    buf = b"xy" + b"".join(cmds)
    end = len(buf) - (rng.randrange(1, 4) if rng.random() < 0.1 else 0)
    owners, migrating = random_owners(rng)
    for b in (buf, bytearray(buf)):
        assert speedups.shard_batches(b, 2, end, ONE_KEY, owners, migrating) == \
            keyslot.shard_batches_py(b, 2, end, ONE_KEY, owners, migrating)


def test_shard_batches_of_a_pipeline():
    cmds = [[b"SET", b"{user1}:a", b"1"], [b"get", b"user2"], [b"INCR", b"{user1}:b"]]
    encoded = [resp.encode_command(c) for c in cmds]
    buf = b"".join(encoded)
    owners = array("h", [0]) * 16384
    owners[keyslot.key_slot(b"user2")] = 1
    migrating = bytearray(16384)
    assert keyslot.shard_batches(buf, 0, len(buf), ONE_KEY, owners, migrating) == \
        [(0, [0, 2], encoded[0] + encoded[2]), (1, [1], encoded[1])]
    assert keyslot.shard_batches(buf, 0, len(buf), ONE_KEY - {b"get"}, owners, migrating) is None
    migrating[keyslot.key_slot(b"user2")] = 1
    assert keyslot.shard_batches(buf, 0, len(buf), ONE_KEY, owners, migrating) is None
    assert keyslot.shard_batches(b"*1\r\n$3\r\nGET\r\n", 0, 13, ONE_KEY, owners, bytearray(16384)) is None


REPLIES = [b"+OK\r\n", b"$3\r\nabc\r\n", b"*2\r\n:1\r\n$-1\r\n", b"-ERR x\r\n", b"%1\r\n+a\r\n_\r\n",
           b"-MOVED 3 127.0.0.1:7001\r\n", b"-ASK 3 127.0.0.1:7001\r\n", b"-MOVEDX\r\n"]


@pytest.mark.parametrize("seed", range(300))
def test_interleave_replies_matches_reference(seed):
    """A pipeline's per-shard replies go back into the run's order; None when one is a
    redirect; fewer replies than commands, or bytes that are not RESP, raise."""
    rng = random.Random(seed)
    count = rng.randrange(1, 10)
    order = list(range(count))
    rng.shuffle(order)
    cut = sorted(rng.sample(range(1, count), rng.randrange(min(3, count)))) if count > 1 else []
    positions = [order[a:b] for a, b in zip([0, *cut], [*cut, count], strict=True)]
    raws = [b"".join(rng.choice(REPLIES[:5] if rng.random() < 0.7 else REPLIES) for _ in p) for p in positions]
    if rng.random() < 0.2:
        raws[0] = corrupt(rng, raws[0])[:rng.randrange(len(raws[0]) + 1)]

    def outcome(fn):
        try:
            return fn(raws, positions, count)
        except (resp.ReplyError, ValueError) as exc:
            return type(exc)
    assert outcome(speedups.interleave_replies) == outcome(cluster_fanout.interleave_replies_py)


def test_interleave_replies_of_two_shards():
    got = cluster_fanout.interleave_replies([b"+a\r\n+c\r\n", b":2\r\n"], [[0, 2], [1]], 3)
    assert got == b"+a\r\n:2\r\n+c\r\n"
    assert cluster_fanout.interleave_replies([b"+a\r\n-ASK 1 h:1\r\n", b":2\r\n"], [[0, 2], [1]], 3) is None
    with pytest.raises(resp.ReplyError):
        cluster_fanout.interleave_replies([b"+a\r\n", b":2\r\n"], [[0, 2], [1]], 3)
