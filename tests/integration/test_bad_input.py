"""Bad input never harms others (docs/design.md, safety rule 5).

Each test has a bystander: a second client connected to the same proxy
before the bad thing happens, which must keep working afterwards.

Most tests share one replica set and one proxy started with small limits
(proto_max_bulk_len=1mb, max_args=1000, client_output_buffer_limit=8mb).
Tests that kill or withhold Redis nodes get their own.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import threading
import uuid

import hiredis
import pytest
import redis

from .fuzz import fuzz_clients, log_problems
from .harness import (HOST, PROXY_BIN, ProxyProcess, RawClient, ReplicaSet, commandstats_calls, encode_command,
                      free_ports, tcp_connection_state, tcp_unread_bytes, wait_until)

pytestmark = pytest.mark.timeout(60)

LIMITS = dict(proto_max_bulk_len="1mb", max_args=1000, client_output_buffer_limit="8mb")
# Failure detection is not under test here: a generous bound keeps a loaded
# machine (or a busy replica) from starting a failover in the middle of a test.
QUIET = dict(down_after_ms=10_000)


@pytest.fixture(scope="module")
def limited_proxy(replica_set: ReplicaSet, module_proxy_factory) -> ProxyProcess:
    return module_proxy_factory(replica_set, node="bad-input", **LIMITS, **QUIET)


@pytest.fixture
def bystander(limited_proxy):
    """A second client, connected before the test's bad input."""
    c = limited_proxy.client(timeout=10)
    assert c.ping() is True
    yield c
    c.close()


def assert_serves(client: redis.Redis, tag: str = "", reads: bool = True) -> None:
    """The client still gets correct answers for writes (and a read of its own write).

    `reads=False` for proxies with read_your_writes=false, where a read may
    legitimately lag behind the client's own write.
    """
    key = f"bystander:{tag}:{uuid.uuid4().hex}"
    assert client.ping() is True
    assert client.set(key, "alive") is True
    if reads:
        assert client.get(key) == b"alive"
    assert client.incr(key + ":n") == 1
    assert client.incr(key + ":n") == 2


def expect_protocol_error_and_close(raw: RawClient, timeout: float = 10.0) -> bytes:
    data = raw.read_until_closed(timeout)
    assert data.startswith(b"-ERR Protocol error"), f"expected a protocol error, got {data[:200]!r}"
    assert data.endswith(b"\r\n") and data.count(b"\r\n") == 1, f"more than one reply: {data[:300]!r}"
    return data


# ---------------------------------------------------------------------------
# malformed RESP
# ---------------------------------------------------------------------------

MALFORMED = {
    "integer-instead-of-bulk": b"*2\r\n$3\r\nGET\r\n:1\r\n",
    "non-numeric-multibulk-count": b"*abc\r\n",
    "non-numeric-bulk-length": b"*2\r\n$3\r\nGET\r\n$abc\r\n",
    "negative-bulk-length": b"*2\r\n$3\r\nGET\r\n$-1\r\n",
    "bulk-not-terminated-by-crlf": b"*1\r\n$4\r\nPINGxx",
    "unbalanced-quotes-inline": b'SET "abc def\r\n',
    "huge-multibulk-count-line": b"*" + b"1" * (70 * 1024),
    "huge-inline-line": b"a" * (70 * 1024),
}


@pytest.mark.parametrize("payload", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_resp_gets_protocol_error_and_close(limited_proxy, bystander, payload):
    with RawClient(limited_proxy.port) as raw:
        raw.send(payload)
        expect_protocol_error_and_close(raw)
    assert_serves(bystander, "malformed")


def test_protocol_error_on_a_dedicated_connection(limited_proxy, bystander):
    """A client that moved to dedicated upstreams (HELLO 3, MULTI) is also closed cleanly."""
    with RawClient(limited_proxy.port) as raw:
        hello = raw.command("HELLO", "3")
        assert isinstance(hello, (dict, list)) and b"proto" in (hello if isinstance(hello, list) else list(hello))
        assert raw.command("MULTI") == b"OK"
        raw.send(b"*2\r\n$3\r\nGET\r\n:1\r\n")
        expect_protocol_error_and_close(raw)
    assert_serves(bystander, "dedicated")


def test_protocol_error_on_a_subscribed_connection_comes_after_its_replies_and_logs_no_traceback(
        limited_proxy, bystander, replica_set):
    """Found by fuzzing the demo: a subscribed client (RAW mode) whose SUBSCRIBE and a
    malformed command arrived together got the protocol error at once and a half-close,
    then the SUBSCRIBE's confirmation (and every message published meanwhile) was written
    after it: uvloop refused the write after write_eof(), and the proxy logged a traceback
    at error level for each, 964 in a minute of fuzzing. Now the error comes after the
    replies owed on the stream, as from Redis, and the connection closes after it."""
    channel = f"pe-sub-{uuid.uuid4().hex}"
    master = replica_set.by_addr(limited_proxy.status()["topology"]["master"]).client()
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            master.publish(channel, "m")

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        for _ in range(20):
            with RawClient(limited_proxy.port) as raw:
                raw.send(encode_command("SUBSCRIBE", channel) + b"*2\r\n$3\r\nGET\r\n:1\r\n")
                data = raw.read_until_closed(10)
            confirm = b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(channel), channel.encode())
            assert data.startswith(confirm), f"the SUBSCRIBE's confirmation first: {data[:200]!r}"
            assert data.endswith(b"-ERR Protocol error: expected '$', got ':'\r\n"), data[-200:]
    finally:
        stop.set()
        publisher.join(5)
    log = limited_proxy.log_text()
    assert "write_eof" not in log and "Fatal error on transport" not in log, \
        [line for line in log.splitlines() if "write_eof" in line or "Fatal error" in line][:3]
    assert_serves(bystander, "subscribed")


def test_many_clients_sending_random_garbage_harm_no_one_and_log_no_traceback(limited_proxy, bystander):
    """A fixed-seed fuzz, 8 s: four clients send random strings of RESP pieces, commands
    and random bytes (sometimes reading, closing at random points) while the bystander
    writes and reads its own keys. The three bugs fuzzing found (a subscribed client's
    protocol error, a non-ASCII byte where a bulk was expected, a client gone before its
    fanned-out replies) each showed as a traceback in the log."""
    made = fuzz_clients(limited_proxy.port, 8.0, lambda i: assert_serves(bystander, f"fuzz{i}"))
    assert made > 100, made
    code, metrics = limited_proxy.http_get("/metrics")
    counted = re.search(rb'^redis_raft_proxy_client_connections_rejected_total\{reason="protocol_error"\} (\S+)$',
                        metrics, re.M) if code == 200 else None
    assert counted and float(counted.group(1)) > 10, "protocol errors are counted in /metrics"
    bad = log_problems(limited_proxy.log_text())
    assert not bad, bad[:3]


def test_empty_multibulk_is_ignored(limited_proxy, bystander):
    """`*0` and `*-1` are not errors for Redis: they are skipped."""
    with RawClient(limited_proxy.port) as raw:
        raw.send(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n")
        assert raw.read_reply() == b"PONG"
        assert raw.command("ECHO", "still here") == b"still here"
    assert_serves(bystander, "empty")


def test_replies_before_a_protocol_error_are_delivered_in_order(limited_proxy, bystander, replica_set):
    key = f"pe:{uuid.uuid4().hex}"
    with RawClient(limited_proxy.port) as raw:
        raw.send(encode_command("SET", key, "1") + encode_command("INCR", key) + b"PING\r\n"
                 + encode_command("GET", key) + b"*abc\r\n" + encode_command("SET", key, "never"))
        data = raw.read_until_closed(10)
    prefix = b"+OK\r\n:2\r\n+PONG\r\n$1\r\n2\r\n"
    assert data.startswith(prefix + b"-ERR Protocol error"), data[:300]
    # Read from the master itself: a replica may not have the raw client's writes yet.
    master = replica_set.by_addr(limited_proxy.status()["topology"]["master"])
    assert master.client().get(key) == b"2", "a command after the protocol error was executed"
    assert_serves(bystander, "order")


def test_client_vanishing_mid_pipeline_does_not_disturb_others(limited_proxy, bystander):
    """A client sends thousands of commands and resets the connection without reading.

    The replies still owed to it must not leak to anyone else sharing the
    proxy's upstream connections: a second client's pipelined replies stay
    exactly its own, in order.
    """
    tag = uuid.uuid4().hex
    with RawClient(limited_proxy.port) as writer:
        assert writer.command("SET", f"v:{tag}", "x" * 2000) == b"OK"
    payload = (encode_command("INCR", f"gone:{tag}") + encode_command("GET", f"v:{tag}")) * 5000
    for round_ in range(3):
        gone = RawClient(limited_proxy.port)
        gone.send(payload)
        gone.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()                                     # RST, replies unread
        pipe = bystander.pipeline(transaction=False)
        for i in range(300):
            pipe.incr(f"mine:{tag}")
            pipe.set(f"mine:{tag}:{i}", i)
            pipe.get(f"mine:{tag}:{i}")
        got = pipe.execute()
        want = []
        base = 300 * round_ + 1
        for i in range(300):
            want += [base + i, True, str(i).encode()]
        assert got == want
    assert_serves(bystander, "vanishing")


# ---------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------

def test_bulk_over_proto_max_bulk_len(limited_proxy, bystander):
    with RawClient(limited_proxy.port) as raw:
        # The header alone is enough to refuse: the proxy must not wait for (or buffer) 2 MB.
        raw.send(b"*3\r\n$3\r\nSET\r\n$2\r\nbk\r\n$2000000\r\n")
        expect_protocol_error_and_close(raw)
    # Exactly at the limit is still fine (like Redis: only longer is refused).
    key = f"at-limit:{uuid.uuid4().hex}"
    value = os.urandom(1024 * 1024)
    assert bystander.set(key, value) is True
    assert bystander.get(key) == value
    assert_serves(bystander, "bulk")


def test_bulk_over_limit_with_payload_sent(limited_proxy, bystander):
    """The client streams the whole oversized value: error, close, nothing stored."""
    key = f"over:{uuid.uuid4().hex}"
    with RawClient(limited_proxy.port) as raw:
        sender = threading.Thread(target=_send_quietly, args=(raw, encode_command("SET", key, b"x" * 1_100_000)),
                                  daemon=True)
        sender.start()
        expect_protocol_error_and_close(raw)
        sender.join(10)
    assert bystander.exists(key) == 0
    assert_serves(bystander, "bulk2")


def _send_quietly(raw: RawClient, data: bytes) -> None:
    try:
        raw.send(data)
    except OSError:
        pass     # the proxy closed the connection while we were still sending: expected


def test_more_args_than_max_args(limited_proxy, bystander):
    with RawClient(limited_proxy.port) as raw:
        raw.send(b"*1001\r\n")
        expect_protocol_error_and_close(raw)
    # 1000 arguments (the command name counts) are accepted.
    key = f"args:{uuid.uuid4().hex}"
    values = [str(i) for i in range(998)]
    assert bystander.rpush(key, *values) == 998
    assert bystander.lrange(key, -1, -1) == [b"997"]
    assert_serves(bystander, "args")


@pytest.mark.timeout(90)
def test_client_that_never_reads_is_disconnected_and_memory_stays_bounded(limited_proxy, replica_set, bystander):
    """Many GETs of a 1 MB value, never read: the proxy drops the client at its 8 MB limit."""
    key = f"big:{uuid.uuid4().hex}"
    value = b"v" * 1_000_000
    assert bystander.set(key, value) is True
    replica_set.wait_synced()
    n_gets = 300                      # 300 MB of replies if nothing stopped them
    baseline = limited_proxy.rss_kb()
    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], limited_proxy.rss_kb())
            except Exception:  # noqa: BLE001
                pass
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    slow = RawClient(limited_proxy.port, rcvbuf=4096)
    try:
        slow.send(encode_command("GET", key) * n_gets)
        client_port = slow.sock.getsockname()[1]
        # The proxy's side of the connection leaves ESTABLISHED when it closes it (its FIN
        # waits behind unread data, so the client itself cannot see it without reading).
        wait_until(lambda: tcp_connection_state(limited_proxy.port, client_port) != "ESTABLISHED", 45,
                   interval=0.05, message="the proxy to disconnect the client that never reads")
        # The replies already requested for the dropped client still flow through the
        # proxy: keep sampling until they are behind us (FIFO upstreams: a later GET
        # on every replica's connection answers only after them).
        _drain_barrier(limited_proxy)
    finally:
        stop.set()
        sampler.join(5)
    try:
        received = len(slow.read_until_closed(30))     # what the kernel still held, then EOF or reset
    finally:
        slow.close()
    growth_mb = (peak[0] - baseline) / 1024
    print(f"proxy RSS baseline {baseline / 1024:.1f} MB, peak {peak[0] / 1024:.1f} MB "
          f"(+{growth_mb:.1f} MB) while a client left {n_gets} MB of replies unread; "
          f"the client received {received} bytes before the close")
    assert received < n_gets * len(value) // 2, "the client was not cut off"
    assert growth_mb < 100, f"proxy RSS grew by {growth_mb:.1f} MB for one client that never reads"
    assert_serves(bystander, "slow-reader")


def _drain_barrier(proxy: ProxyProcess) -> None:
    """GETs from fresh clients (round-robin over the replicas) that queue behind any backlog."""
    for _ in range(4):
        with RawClient(proxy.port, timeout=30) as raw:
            assert raw.command("GET", "barrier:none") is None


# ---------------------------------------------------------------------------
# upstream failures
# ---------------------------------------------------------------------------

def _get_calls(server) -> int:
    return commandstats_calls(server, "get")


def _topology_settled(proxy) -> bool:
    """No failover under way and every replica of the committed master in sync."""
    st = proxy.status()
    replicas = st["topology"]["replicas"]
    return st["failover"]["phase"] == "idle" and len(replicas) == 2 and all(r["healthy"] for r in replicas)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("victim", ["master", "replica"])
def test_upstream_killed_mid_pipeline(fresh_replica_set, proxy_factory, victim):
    """SIGKILL a node while a pipeline's commands are in flight to it.

    The node is first SIGSTOPped so that the commands sent after that point
    are provably in flight (they sit unread in its socket, see
    tcp_unread_bytes), then killed.  Every command that went to it must get
    an error naming it; commands that went elsewhere keep their own correct
    replies, in order.  down_after_ms is large so that no failover changes
    the picture.  Then the node is restarted and the same connection works.
    """
    rs = fresh_replica_set
    p = proxy_factory(rs, node=f"kill-{victim}", read_your_writes=False, down_after_ms=60_000)
    with rs.master.client() as m:
        m.mset({f"pre{j}": f"pre-{j}" for j in range(50)})
    rs.wait_synced()
    bystander = p.client()
    assert_serves(bystander, "before", reads=False)

    cmds: list[tuple[bytes, object, bool]] = []     # (encoded, expected reply, is a write)
    for i in range(2000):
        kind = i % 3
        if kind == 0:
            cmds.append((encode_command("SET", f"k{i}", f"v{i}"), b"OK", True))
        elif kind == 1:
            cmds.append((encode_command("INCRBY", f"c{i}", i), i, True))
        else:
            cmds.append((encode_command("GET", f"pre{i % 50}"), f"pre-{i % 50}".encode(), False))
    split = 200
    phase1, phase2 = cmds[:split], cmds[split:]

    with RawClient(p.port, timeout=30) as raw:
        gets_before = {s.addr: _get_calls(s) for s in rs.replicas}
        raw.send(b"".join(c[0] for c in phase1))
        first = raw.read_replies(split)
        assert first == [c[1] for c in phase1], "replies before the kill are wrong"
        if victim == "master":
            node = rs.master
            routed_to_victim = [c[2] for c in phase2]
        else:
            # the replica this client's reads went to
            node = max(rs.replicas, key=lambda s: _get_calls(s) - gets_before[s.addr])
            assert _get_calls(node) > gets_before[node.addr], "no GET reached a replica"
            routed_to_victim = [not c[2] for c in phase2]
        addr = node.addr

        node.stop()
        unread_before = tcp_unread_bytes(node.port)
        if victim == "master":
            in_flight = sum(len(c[0]) for c, hit in zip(phase2, routed_to_victim) if hit)
        else:
            # A write never overtakes the client's reads on a replica (it would
            # be visible to them through replication), so only the reads before
            # the first write of phase 2 reach the stopped replica for now.
            in_flight = 0
            for c in phase2:
                if c[2]:
                    break
                in_flight += len(c[0])
        sender = threading.Thread(target=raw.send, args=(b"".join(c[0] for c in phase2),), daemon=True)
        sender.start()
        wait_until(lambda: tcp_unread_bytes(node.port) - unread_before >= in_flight, 15,
                   message=f"the proxy to forward {in_flight} bytes of commands to the stopped {victim}")
        node.kill()
        rest = raw.read_replies(len(phase2))
        sender.join(10)

        wrong, errors = [], 0
        for i, ((_, expected, _w), hit, got) in enumerate(zip(phase2, routed_to_victim, rest), start=split):
            if isinstance(got, hiredis.ReplyError):
                errors += 1
                if hit and addr not in str(got):
                    wrong.append((i, f"an error naming {addr}", got))
                elif not hit and not any(a in str(got) for a in rs.addrs):
                    wrong.append((i, expected, got))
            elif hit and victim == "master":
                wrong.append((i, f"an error naming {addr} (the master is dead)", got))
            elif got != expected:
                wrong.append((i, expected, got))
        assert not wrong, f"{len(wrong)} wrong replies after the kill, first (index, expected, got): {wrong[:5]}"
        # (A read in flight to a dead replica may be retried elsewhere and succeed; one
        # that was not retried must have failed naming the replica, as checked above.)
        print(f"{victim} {addr} killed with {sum(routed_to_victim)} commands in flight: {errors} errors")
        if victim == "master":
            assert errors >= sum(routed_to_victim)

        # The same client connection works again once the node is back.
        node.restart()
        if victim == "master":
            # It comes back empty, with a new replication history: the proxy may replace
            # it by the replica that kept the data (a failover that closes the connection
            # a write is in flight on). Check the connection once that has settled.
            wait_until(lambda: _topology_settled(p), 30, interval=0.1,
                       message="the topology to settle after the master's restart")
            wait_until(lambda: raw.command("SET", "after-restart", "1") == b"OK", 20, interval=0.1,
                       message="the same connection to write after the master's restart")
            assert raw.command("INCR", "after-restart") == 2
        else:
            rs.wait_synced()
            wait_until(lambda: raw.command("GET", "pre7") == b"pre-7", 20, interval=0.1,
                       message="the same connection to read after the replica's restart")
            assert raw.command("INCR", "after-restart") == 1
        assert raw.command("PING") == b"PONG"
    assert_serves(bystander, "after", reads=False)
    bystander.close()


@pytest.mark.timeout(90)
def test_redis_unreachable_at_proxy_start(tmp_path, proxy_factory):
    ports = free_ports(3)
    addrs = [f"{HOST}:{p}" for p in ports]
    p = proxy_factory(redis_nodes=addrs, master=addrs[0], node="unreachable-start")
    raw = RawClient(p.port, timeout=15)
    bystander = p.client()
    try:
        for cmd, must_name in ((("SET", "u:k", "v"), addrs[0]), (("INCR", "u:n"), addrs[0]),
                               (("LPUSH", "u:l", "x"), addrs[0]), (("GET", "u:k"), None),
                               (("HGETALL", "u:h"), None)):
            reply = raw.command(*cmd)
            assert isinstance(reply, hiredis.ReplyError), f"{cmd}: expected an error, got {reply!r}"
            text = str(reply)
            if must_name:
                assert must_name in text, f"{cmd}: the error does not name {must_name}: {text!r}"
            else:
                assert any(a in text for a in addrs), f"{cmd}: the error names no node: {text!r}"
        assert raw.command("PING") == b"PONG"

        rs = ReplicaSet(tmp_path / "late-rs", ports=ports)
        try:
            rs.start()
            wait_until(lambda: raw.command("SET", "u:k", "v") == b"OK", 20, interval=0.1,
                       message="the proxy to serve the late redis-server on the same connection")
            assert raw.command("GET", "u:k") == b"v"
            assert raw.command("INCR", "u:n") == 1
            assert_serves(bystander, "late")
        finally:
            rs.cleanup()
    finally:
        raw.close()
        bystander.close()


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------

BAD_CONFIGS = [
    (["--read-policy", "sometimes"], {}, "read_policy"),
    (["--proto-max-bulk-len", "12xb"], {}, "proto_max_bulk_len"),
    (["--max-args", "0"], {}, "max_args"),
    (["--client-output-buffer-limit", "lots"], {}, "client_output_buffer_limit"),
    (["--read-your-writes", "perhaps"], {}, "read_your_writes"),
    (["--maxclients", "-5"], {}, "maxclients"),
    (["--connect-timeout-ms", "abc"], {}, "connect_timeout_ms"),
    ([], {"REDIS_RAFT_PROXY_DOWN_AFTER_MS": "soon"}, "down_after_ms"),
    ([], {"REDIS_RAFT_PROXY_READ_POLICY": "nowhere"}, "read_policy"),
]


@pytest.mark.parametrize("flags,env,key", BAD_CONFIGS, ids=[c[2] + ("-env" if c[1] else "") for c in BAD_CONFIGS])
def test_bad_config_value_exits_2_naming_the_key(tmp_path, flags, env, key):
    port, admin, r1, r2, r3 = free_ports(5)
    argv = [PROXY_BIN, "run", "--node", "badcfg", "--port", str(port), "--admin-port", str(admin),
            "--redis-nodes", f"{HOST}:{r1},{HOST}:{r2},{HOST}:{r3}", *flags]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_RAFT_PROXY_")}
    full_env.update(env)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=full_env, cwd=tmp_path, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"redis-raft-proxy kept running with a bad value for {key}")
    text = (out + err).decode(errors="replace")
    assert proc.returncode == 2, f"exit status {proc.returncode}, output: {text}"
    names = (key, "--" + key.replace("_", "-"), "REDIS_RAFT_PROXY_" + key.upper())
    assert any(n in text for n in names), f"the message does not name {key}: {text}"


def test_a_client_still_sending_after_a_protocol_error_gets_the_error_not_a_reset(limited_proxy, bystander):
    """A bulk over proto_max_bulk_len sent whole before the client reads (as redis-py does):
    the proxy answers the protocol error, closes with a FIN and drops what still comes;
    closing with the unread bytes in its socket sent a RST, so the client's send failed
    (broken pipe, reset) and it never read the error (a CI run saw that)."""
    for _ in range(5):
        with RawClient(limited_proxy.port) as raw:
            raw.sock.settimeout(10)
            try:
                raw.sock.sendall(b"*3\r\n$3\r\nSET\r\n$8\r\nbad:big1\r\n$" + str(2 << 20).encode() + b"\r\n"
                                 + b"x" * (2 << 20) + b"\r\n")
            except OSError as exc:
                pytest.fail(f"the proxy reset the connection while the client was still sending: {exc!r}")
            got = raw.read_until_closed(10)
        assert got.startswith(b"-ERR Protocol error") and b"bulk" in got, got[:200]
    assert_serves(bystander, "still-sending")
