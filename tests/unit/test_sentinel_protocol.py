"""proxy/sentinel.py: reply formats of the Sentinel endpoint (issue 8), no sockets.

Every reply is decoded with hiredis, as a client would, and compared with what
Redis Sentinel 7.0 sends: field names and order of `SENTINEL master`, flat
name/value arrays in RESP2 and maps in RESP3, nil for an unknown master in
get-master-addr-by-name, `-ERR No such master with that name`, `-NOQUORUM`.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import hiredis
import pytest

from health.probes.probe import Health
from proxy.process.config import load_config
from proxy.routing.router import Router
from proxy.routing.topology import Topology
from proxy.sentinel import (
    PeerInfo,
    SentinelService,
    SentinelSession,
    attach_sentinel,
    sentinel_id,
    sentinel_status,
)
from proxy.sentinel.service import _Disabled
from proxy.sentinel.session import glob_match
from proxy.tls import ProxyTls

M, R1, R2 = "127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"
NAMES = ["proxy-1", "proxy-2", "proxy-3"]
URLS = {n: f"http://127.0.0.1:{8000 + i}" for i, n in enumerate(NAMES)}


class FakeConsensus:
    role = "leader"
    term = 3
    leader_id = "proxy-1"

    def __init__(self) -> None:
        self.members = list(NAMES)
        self.lease = True

    def lease_held(self) -> bool:
        return self.lease

    def lease_waits_for_apply(self) -> bool:
        return False


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def get_extra_info(self, _name):
        return None

    def get_write_buffer_size(self) -> int:
        return 0


def make_server(master=M, replicas=(R1, R2), epoch=4, **flags):
    cfg = load_config(env={}, flags={"redis_nodes": f"{M},{R1},{R2}", "down_after_ms": "500", **flags})
    health = Health([M, R1, R2], cfg.down_after_ms)
    now = time.monotonic()
    for addr in (M, R1, R2):
        st = health.nodes[addr]
        st.ever_ok, st.last_ok = True, now
        if addr == master:
            st.role, st.offset = "master", 1000
        else:
            st.role, st.offset, st.link_up, st.master_addr = "slave", 990, True, master
    topo = Topology(epoch, master, tuple(replicas))
    return SimpleNamespace(cfg=cfg, health=health, router=Router(topo, health, "replicas"),
                           consensus=FakeConsensus(), controller=SimpleNamespace(peer_url=URLS.get), tls=ProxyTls())


def make(**kw):
    server = make_server(**kw)
    svc = SentinelService(server, 26379, "mymaster")
    svc._running = True
    return server, svc


def connect(svc):
    s = SentinelSession(svc)
    s.connection_made(FakeTransport())
    return s


def cmd(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def replies(session, data: bytes, n: int = 1):
    start = len(session.transport.data)
    session.data_received(data)
    reader = hiredis.Reader()
    reader.feed(bytes(session.transport.data[start:]))
    out = []
    while (r := reader.gets()) is not False:
        out.append(r)
    assert len(out) == n, out
    return out if n > 1 else out[0]


def call(session, *args):
    return replies(session, cmd(*args))


def pairs(flat: list) -> dict:
    assert len(flat) % 2 == 0
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


MASTER_FIELDS = ["name", "ip", "port", "runid", "flags", "link-pending-commands", "link-refcount",
                 "last-ping-sent", "last-ok-ping-reply", "last-ping-reply", "down-after-milliseconds",
                 "info-refresh", "role-reported", "role-reported-time", "config-epoch", "num-slaves",
                 "num-other-sentinels", "quorum", "failover-timeout", "parallel-syncs"]
REPLICA_FIELDS = ["name", "ip", "port", "runid", "flags", "link-pending-commands", "link-refcount",
                  "last-ping-sent", "last-ok-ping-reply", "last-ping-reply", "down-after-milliseconds",
                  "info-refresh", "role-reported", "role-reported-time", "master-link-down-time",
                  "master-link-status", "master-host", "master-port", "slave-priority", "slave-repl-offset",
                  "replica-announced"]
SENTINEL_FIELDS = ["name", "ip", "port", "runid", "flags", "link-pending-commands", "link-refcount",
                   "last-ping-sent", "last-ok-ping-reply", "last-ping-reply", "down-after-milliseconds",
                   "last-hello-message", "voted-leader", "voted-leader-epoch"]


# ---------------------------------------------------------------------------
# SENTINEL subcommands
# ---------------------------------------------------------------------------

def test_get_master_addr_by_name():
    _, svc = make()
    s = connect(svc)
    assert call(s, "SENTINEL", "get-master-addr-by-name", "mymaster") == [b"127.0.0.1", b"7000"]
    assert call(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "other") is None
    assert s.transport.data.endswith(b"*-1\r\n")          # RESP2 null array, like Sentinel
    err = call(s, "SENTINEL", "get-master-addr-by-name")
    assert isinstance(err, hiredis.ReplyError)
    assert str(err) == "ERR wrong number of arguments for 'sentinel|get-master-addr-by-name' command"


def test_master_fields_resp2_flat_array_in_sentinel_order():
    _, svc = make()
    s = connect(svc)
    flat = call(s, "SENTINEL", "master", "mymaster")
    assert isinstance(flat, list)
    assert [flat[i].decode() for i in range(0, len(flat), 2)] == MASTER_FIELDS
    d = pairs(flat)
    assert d["name"] == b"mymaster" and d["ip"] == b"127.0.0.1" and d["port"] == b"7000"
    assert d["flags"] == b"master"
    assert d["num-slaves"] == b"2" and d["num-other-sentinels"] == b"2" and d["quorum"] == b"2"
    assert d["config-epoch"] == b"4" and d["down-after-milliseconds"] == b"500"
    assert d["role-reported"] == b"master"
    # every value is a bulk string, numbers included (as Sentinel's addReplyBulkLongLong)
    assert all(isinstance(v, bytes) for v in flat)


def test_master_fields_resp3_map():
    _, svc = make()
    s = connect(svc)
    hello = call(s, "HELLO", "3")
    assert hello[b"proto"] == 3 and hello[b"mode"] == b"sentinel"
    m = call(s, "SENTINEL", "master", "mymaster")
    assert isinstance(m, dict) and [k.decode() for k in m] == MASTER_FIELDS
    masters = call(s, "SENTINEL", "masters")
    assert isinstance(masters, list) and len(masters) == 1 and masters[0][b"name"] == b"mymaster"
    assert call(s, "SENTINEL", "get-master-addr-by-name", "nope") is None
    assert s.transport.data.endswith(b"_\r\n")


def test_unknown_master_errors():
    _, svc = make()
    s = connect(svc)
    for sub in ("master", "replicas", "slaves", "sentinels", "ckquorum"):
        err = call(s, "SENTINEL", sub, "nope")
        assert isinstance(err, hiredis.ReplyError) and str(err) == "ERR No such master with that name", sub


def test_no_committed_topology_means_no_master():
    _, svc = make(master=None, replicas=(), epoch=0)
    s = connect(svc)
    assert call(s, "SENTINEL", "masters") == []
    assert call(s, "SENTINEL", "get-master-addr-by-name", "mymaster") is None
    assert call(s, "ROLE") == [b"sentinel", []]


def test_sdown_master_flags():
    server, svc = make()
    server.health.nodes[M].last_ok = time.monotonic() - 5
    svc._sdown[M] = time.monotonic() - 4
    d = pairs(call(connect(svc), "SENTINEL", "master", "mymaster"))
    assert d["flags"] == b"s_down,master,disconnected"
    assert int(d["s-down-time"]) >= 3900 and int(d["last-ok-ping-reply"]) >= 4900
    svc._odown_since = time.monotonic() - 1
    d = pairs(call(connect(svc), "SENTINEL", "master", "mymaster"))
    assert d["flags"] == b"s_down,o_down,master,disconnected" and int(d["o-down-time"]) >= 900


def test_replicas_entries():
    server, svc = make()
    server.health.nodes[R2].link_up = False
    server.health.nodes[R2].link_down_since_s = 2.5
    s = connect(svc)
    for sub in ("replicas", "slaves"):
        reps = call(s, "SENTINEL", sub, "mymaster")
        assert len(reps) == 2
        first, second = pairs(reps[0]), pairs(reps[1])
        assert [reps[0][i].decode() for i in range(0, len(reps[0]), 2)] == REPLICA_FIELDS
        assert first["name"] == R1.encode() and first["ip"] == b"127.0.0.1" and first["port"] == b"7001"
        assert first["flags"] == b"slave" and first["master-link-status"] == b"ok"
        assert first["master-host"] == b"127.0.0.1" and first["master-port"] == b"7000"
        assert first["slave-repl-offset"] == b"990" and first["slave-priority"] == b"100"
        assert first["role-reported"] == b"slave"
        assert second["master-link-status"] == b"err" and second["master-link-down-time"] == b"2500"


def test_sentinels_from_peer_status():
    _, svc = make()
    s = connect(svc)
    assert call(s, "SENTINEL", "sentinels", "mymaster") == []      # nothing learned yet
    for i, name in enumerate(NAMES[1:], start=1):
        peer = svc.peers[name] = PeerInfo(name, URLS[name], "127.0.0.1")
        svc.apply_peer_status(peer, {"sentinel": {"port": 26379 + i, "myid": sentinel_id(name)},
                                     "topology": {"master": M, "master_up": True}, "lease": {"held": True}})
    svc.peers["proxy-3"].last_ok = time.monotonic() - 60              # went away: still listed, s_down
    sen = call(s, "SENTINEL", "sentinels", "mymaster")
    assert len(sen) == 2
    a, b = pairs(sen[0]), pairs(sen[1])
    assert [sen[0][i].decode() for i in range(0, len(sen[0]), 2)] == SENTINEL_FIELDS
    assert a["name"] == a["runid"] == sentinel_id("proxy-2").encode()
    assert (a["ip"], a["port"], a["flags"]) == (b"127.0.0.1", b"26380", b"sentinel")
    assert b["port"] == b"26381" and b["flags"] == b"s_down,sentinel,disconnected"
    assert pairs(call(s, "SENTINEL", "master", "mymaster"))["num-other-sentinels"] == b"2"


def test_learners_are_not_sentinels():
    """A Raft learner (issue 16) routes clients but has no say in failover: not a sentinel."""
    server, svc = make()
    server.consensus.learners = ["learner-1"]
    s = connect(svc)
    for i, name in enumerate([*NAMES[1:], "learner-1"], start=1):
        peer = svc.peers[name] = PeerInfo(name, f"http://127.0.0.1:{9000 + i}", "127.0.0.1")
        svc.apply_peer_status(peer, {"sentinel": {"port": 26379 + i, "myid": sentinel_id(name)},
                                     "topology": {"master": M, "master_up": True}, "lease": {"held": True}})
    names = [pairs(x)["name"] for x in call(s, "SENTINEL", "sentinels", "mymaster")]
    assert names == [sentinel_id("proxy-2").encode(), sentinel_id("proxy-3").encode()]
    assert pairs(call(s, "SENTINEL", "master", "mymaster"))["num-other-sentinels"] == b"2"
    assert call(s, "SENTINEL", "ckquorum", "mymaster").startswith(b"OK 3 usable Sentinels")


def test_ckquorum_and_lease():
    server, svc = make()
    s = connect(svc)
    assert call(s, "SENTINEL", "ckquorum", "mymaster") == \
        b"OK 2 usable Sentinels. Quorum and failover authorization can be reached"
    server.consensus.lease = False
    err = call(s, "SENTINEL", "ckquorum", "mymaster")
    assert isinstance(err, hiredis.ReplyError)
    assert str(err).startswith("NOQUORUM 1 usable Sentinels. Not enough available Sentinels to reach the "
                               "specified quorum for this master")
    # without a lease the last committed master is still answered
    assert call(s, "SENTINEL", "get-master-addr-by-name", "mymaster") == [b"127.0.0.1", b"7000"]


def test_myid_is_stable_per_node():
    _, svc = make()
    myid = call(connect(svc), "SENTINEL", "myid")
    assert myid == sentinel_id("proxy-1").encode() and len(myid) == 40
    int(myid, 16)
    assert sentinel_id("proxy-1") == sentinel_id("proxy-1") != sentinel_id("proxy-2")


@pytest.mark.parametrize("sub", ["failover", "set", "remove", "monitor", "reset", "config", "flushconfig",
                                 "is-master-down-by-addr"])
def test_refused_subcommands(sub):
    _, svc = make()
    err = call(connect(svc), "SENTINEL", sub, "mymaster", "x", "y")
    assert isinstance(err, hiredis.ReplyError)
    assert "redis-raft-proxy" in str(err) and str(err).startswith("ERR SENTINEL " + sub.upper())
    if sub == "failover":
        assert "redis-raft-proxy failover --to" in str(err)


def test_unknown_subcommand_and_command():
    _, svc = make()
    s = connect(svc)
    assert str(call(s, "SENTINEL", "frob")) == "ERR unknown subcommand 'frob'. Try SENTINEL HELP."
    assert str(call(s, "GET", "k")) == "ERR unknown command 'GET', with args beginning with: 'k' "
    assert str(call(s, "SENTINEL")) == "ERR wrong number of arguments for 'sentinel' command"
    assert isinstance(call(s, "SENTINEL", "help"), list)


# ---------------------------------------------------------------------------
# connection commands
# ---------------------------------------------------------------------------

def test_ping_info_role_client():
    _, svc = make()
    s = connect(svc)
    assert call(s, "PING") == b"PONG"
    assert call(s, "PING", "hi") == b"hi"
    info = call(s, "INFO").decode()
    assert "redis_mode:sentinel" in info and "# Sentinel" in info
    assert "master0:name=mymaster,status=ok,address=127.0.0.1:7000,slaves=2,sentinels=3\r\n" in info
    only = call(s, "INFO", "sentinel").decode()
    assert only.startswith("# Sentinel\r\nsentinel_masters:1\r\n") and "# Server" not in only
    assert call(s, "ROLE") == [b"sentinel", [b"mymaster"]]
    assert call(s, "CLIENT", "SETNAME", "app") == b"OK"
    assert call(s, "CLIENT", "GETNAME") == b"app"
    assert call(s, "CLIENT", "SETINFO", "LIB-NAME", "redis-py") == b"OK"
    assert call(s, "CLIENT", "SETINFO", "LIB-VER", "5.0") == b"OK"
    assert isinstance(call(s, "CLIENT", "ID"), int)


def test_hello_2_and_errors():
    _, svc = make()
    s = connect(svc)
    flat = call(s, "HELLO", "2")
    d = pairs(flat)
    assert list(d) == ["server", "version", "proto", "id", "mode", "modules"]     # as Sentinel 7.0
    assert d["server"] == b"redis" and d["proto"] == 2 and d["mode"] == b"sentinel" and d["modules"] == []
    assert str(call(s, "HELLO", "4")) == "NOPROTO unsupported protocol version"
    assert call(s, "HELLO", "3", "SETNAME", "x")[b"proto"] == 3
    assert call(s, "CLIENT", "GETNAME") == b"x"


def test_auth_without_password():
    _, svc = make()
    s = connect(svc)
    err = call(s, "AUTH", "pw")
    assert str(err).startswith("ERR AUTH <password> called without any password configured")
    assert call(s, "AUTH", "default", "anything") == b"OK"


def test_auth_with_requirepass():
    _, svc = make(requirepass="s3cret")
    s = connect(svc)
    assert str(call(s, "SENTINEL", "masters")) == "NOAUTH Authentication required."
    assert str(call(s, "AUTH", "wrong")).startswith("WRONGPASS")
    assert call(s, "AUTH", "s3cret") == b"OK"
    assert len(call(s, "SENTINEL", "masters")) == 1
    s2 = connect(svc)
    assert str(call(s2, "HELLO", "3")).startswith("NOAUTH HELLO must be called")
    assert call(s2, "HELLO", "3", "AUTH", "default", "s3cret")[b"proto"] == 3
    assert call(s2, "PING") == b"PONG"


def test_inline_and_pipelined_commands():
    _, svc = make()
    s = connect(svc)
    out = replies(s, b"PING\r\nSENTINEL get-master-addr-by-name mymaster\r\n" + cmd("SENTINEL", "myid")
                  + b"ping\n", 4)
    assert out == [b"PONG", [b"127.0.0.1", b"7000"], sentinel_id("proxy-1").encode(), b"PONG"]
    # a command split over several packets
    whole = cmd("SENTINEL", "get-master-addr-by-name", "mymaster")
    s.data_received(whole[:7])
    s.data_received(whole[7:20])
    assert replies(s, whole[20:]) == [b"127.0.0.1", b"7000"]


def test_protocol_error_closes():
    _, svc = make()
    s = connect(svc)
    s.data_received(b"*1\r\n+PING\r\n")
    assert s.transport.data.startswith(b"-ERR Protocol error: expected '$', got '+'")
    assert s.transport.closed and s not in svc.sessions


def test_quit():
    _, svc = make()
    s = connect(svc)
    assert call(s, "QUIT") == b"OK"
    assert s.transport.closed


# ---------------------------------------------------------------------------
# pub/sub
# ---------------------------------------------------------------------------

def test_subscribe_and_messages_resp2():
    _, svc = make()
    s = connect(svc)
    assert replies(s, cmd("SUBSCRIBE", "+switch-master", "+sdown"), 2) == [
        [b"subscribe", b"+switch-master", 1], [b"subscribe", b"+sdown", 2]]
    assert call(s, "PSUBSCRIBE", "*odown") == [b"psubscribe", b"*odown", 3]
    assert call(s, "PING") == [b"pong", b""]
    assert str(call(s, "SENTINEL", "masters")).startswith("ERR Can't execute 'sentinel'")
    start = len(s.transport.data)
    assert svc.publish("+switch-master", "mymaster 127.0.0.1 7000 127.0.0.1 7001") == 1
    svc.publish("+odown", "master mymaster 127.0.0.1 7000 #quorum 2/2")
    svc.publish("+new-epoch", "5")
    r = hiredis.Reader()
    r.feed(bytes(s.transport.data[start:]))
    assert r.gets() == [b"message", b"+switch-master", b"mymaster 127.0.0.1 7000 127.0.0.1 7001"]
    assert r.gets() == [b"pmessage", b"*odown", b"+odown", b"master mymaster 127.0.0.1 7000 #quorum 2/2"]
    assert r.gets() is False
    assert replies(s, cmd("UNSUBSCRIBE"), 2) == [[b"unsubscribe", b"+switch-master", 2],
                                                   [b"unsubscribe", b"+sdown", 1]]
    assert call(s, "PUNSUBSCRIBE") == [b"punsubscribe", b"*odown", 0]
    assert call(s, "PUNSUBSCRIBE") == [b"punsubscribe", None, 0]
    assert call(s, "PING") == b"PONG"


def test_subscribe_resp3_pushes():
    _, svc = make()
    s = connect(svc)
    call(s, "HELLO", "3")
    call(s, "SUBSCRIBE", "+switch-master")
    assert s.transport.data.endswith(b">3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n")
    assert call(s, "SENTINEL", "myid") == sentinel_id("proxy-1").encode()   # allowed in RESP3
    svc.publish("+switch-master", "mymaster 127.0.0.1 7000 127.0.0.1 7001")
    assert s.transport.data.endswith(b">3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n"
                                     b"$38\r\nmymaster 127.0.0.1 7000 127.0.0.1 7001\r\n")


@pytest.mark.parametrize("pattern, text, ok", [
    (b"*", b"+switch-master", True), (b"+s*", b"+sdown", True), (b"+s*", b"-sdown", False),
    (b"?sdown", b"-sdown", True), (b"[-+]sdown", b"-sdown", True), (b"[^+]sdown", b"+sdown", False),
    (b"+switch\\-master", b"+switch-master", True), (b"*down", b"+odown", True), (b"a*b*c", b"axxbyyc", True),
    (b"a*b*c", b"axxbyy", False), (b"[a-c]x", b"bx", True),
])
def test_glob_match(pattern, text, ok):
    assert glob_match(pattern, text) is ok


# ---------------------------------------------------------------------------
# attaching
# ---------------------------------------------------------------------------

def test_attach_disabled_when_port_zero():
    server = make_server()
    svc = attach_sentinel(server, port=0)
    assert isinstance(svc, _Disabled) and svc.status_doc() == {"port": 0}
    svc.on_topology(Topology(9, R1, (M, R2)), None, "")
    server.sentinel = svc
    assert sentinel_status(server) == {"port": 0}
    assert sentinel_status(SimpleNamespace()) == {"port": 0}
    on = attach_sentinel(server, port=26390, master_name="cache")
    assert isinstance(on, SentinelService) and on.master_name == "cache" and on.port == 26390
