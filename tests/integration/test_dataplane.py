"""The C data plane (`dataplane = "c"`, issue 16) with real processes: 3 redis-server and
3 proxies running Raft, every proxy forwarding plain clients from its C thread.

What the Python path guarantees must hold here too: replies in each client's order,
commands the thread does not forward answered by Python as before (the client is
handed back), a protocol error ends only that client, MONITOR sees every command,
and the write gate's rules: a write whose reply comes while the lease is lapsed is
an error unless the lease returns under the same topology, and after a SIGKILL of
the master writes flow again through the thread to the new master.  /metrics shows
that the thread, not Python, carried the commands.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import urllib.request

import hiredis
import pytest

from benchmarks.failover_lib import ProxyCluster, Writer, read_back, wait_replica_of

from .harness import (RawClient, commandstats_calls, encode_command, redis_client, start_or_clean,
                      tcp_unread_bytes, wait_until, yield_then_clean)
from .test_observability import Metrics
from .test_sessions import uniq
from .test_write_gate import GATED, HOLD_S, write_then_lose_the_lease
from .test_write_gate import Keeper as GateKeeper

pytestmark = pytest.mark.timeout(120)

OPTIONS = {"dataplane": "c", "hold_ms": int(HOLD_S * 1000), "lease_ms": 1000, "down_after_ms": 3000,
           "connect_timeout_ms": 15_000}


class Keeper(GateKeeper):
    """test_write_gate's cluster (restored the same way), every proxy with the thread."""

    def make(self, workdir):
        return start_or_clean(ProxyCluster(workdir, options=OPTIONS), 60)


@pytest.fixture(scope="module")
def keeper(tmp_path_factory):
    yield from yield_then_clean(Keeper(tmp_path_factory.mktemp("dataplane")))


def metrics(c: ProxyCluster, name: str = GATED) -> Metrics:
    with urllib.request.urlopen(c.proxy(name).admin_url + "/metrics", timeout=5) as r:
        return Metrics(r.read().decode())


def forwarded(c: ProxyCluster, name: str = GATED) -> float:
    m = metrics(c, name)
    return sum(v for _, v in m.select("redis_raft_proxy_dataplane_commands_total"))


def handed_back(c: ProxyCluster, name: str = GATED) -> float:
    return sum(v for _, v in metrics(c, name).select("redis_raft_proxy_dataplane_handed_back_total"))


def handed_back_why(c: ProxyCluster, name: str = GATED) -> dict[str, float]:
    """Clients the thread gave back to Python, by why."""
    back = metrics(c, name).select("redis_raft_proxy_dataplane_handed_back_total")
    return {labels["reason"]: v for labels, v in back}


def in_thread(c: ProxyCluster, n: int = 1, name: str = GATED) -> None:
    """Wait until the thread serves at least `n` clients (a fresh connection goes at once,
    once the proxy loaded Redis's command table)."""
    wait_until(lambda: metrics(c, name).value("redis_raft_proxy_dataplane_clients") >= n, 10,
               message=f"{n} client(s) served by the C data plane")


def test_reads_and_writes_go_through_the_thread_in_each_clients_order(keeper):
    """8 clients pipeline INCRs, GETs of their own counter and 100 kB SETs at once: every
    reply is the one its command asked for, and the thread forwarded them."""
    c = keeper.healthy()
    port = c.proxy(GATED).port
    before = forwarded(c)
    big = b"x" * 100_000
    failures: list[str] = []

    def client(i: int) -> None:
        key = uniq(f"ctr{i}")
        try:
            with redis_client(port) as r:
                for round_ in range(5):
                    p = r.pipeline(transaction=False)
                    for j in range(40):
                        p.incr(key)
                        p.get(key)
                        if j % 10 == 0:
                            p.set(f"{key}:big", big + str(j).encode())
                    replies = p.execute()
                    n = round_ * 40
                    k = 0
                    for j in range(40):
                        n += 1
                        if replies[k] != n or replies[k + 1] != str(n).encode():
                            failures.append(f"client {i}: {replies[k:k + 2]} for counter {n}")
                        k += 2
                        if j % 10 == 0:
                            assert replies[k] is True
                            k += 1
                assert r.get(f"{key}:big") == big + b"30"
        except Exception as exc:  # noqa: BLE001 -- reported below
            failures.append(f"client {i}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:5]
    # (a client's first commands may be answered in Python: CLIENT SETINFO at connect hands it back)
    assert forwarded(c) - before >= 8 * 5 * 84 // 2, "the commands did not go through the C data plane"


def test_resp3_clients_go_through_the_thread_on_resp3_connections(keeper):
    """A RESP3 client (HELLO 3, redis-py 8's default) beside a RESP2 one: each gets its
    replies in its own protocol (maps, nulls) from the thread, and after a command
    Python answers (the client handed back) it goes on in RESP3."""
    c = keeper.healthy()
    port = c.proxy(GATED).port
    key = uniq("resp3")
    with redis_client(port, protocol=3) as r3, redis_client(port) as r2:
        before = forwarded(c)
        for i in range(1, 51):
            p = r3.pipeline(transaction=False)
            p.incr(f"{key}:n")
            p.hset(f"{key}:h", mapping={"a": str(i), "b": "x"})
            p.hgetall(f"{key}:h")
            p.get(f"{key}:missing")
            assert p.execute() == [i, 0 if i > 1 else 2, {b"a": str(i).encode(), b"b": b"x"}, None]
            if i == 1:      # r2 wrote nothing yet: a replica may not have the hash at all
                wait_until(lambda: r2.hgetall(f"{key}:h") == {b"a": b"1", b"b": b"x"}, 10,
                           message="the hash through a replica")
            else:           # r2's own INCR below came after the previous HSET: at most one behind
                assert r2.hgetall(f"{key}:h") in ({b"a": str(i).encode(), b"b": b"x"},
                                                  {b"a": str(i - 1).encode(), b"b": b"x"})
            assert r2.incr(f"{key}:m") == i
        # 300 commands, 100 of them RESP2: most of the RESP3 client's went through the thread
        assert forwarded(c) - before >= 250, "the RESP3 commands did not go through the C data plane"
        assert r3.ping() is True                        # Python answers it (hand-back) ...
        info = r3.client_info()
        assert info["resp"] == "3", info
        assert r3.hgetall(f"{key}:h") == {b"a": b"50", b"b": b"x"}   # ... and RESP3 goes on
        assert r3.get(f"{key}:missing") is None


def test_commands_it_does_not_forward_are_answered_by_python_and_the_client_goes_on(keeper):
    """MULTI/EXEC, SELECT, PING, CLIENT SETNAME and EVAL on a connection the thread
    serves: each hands the client back between two replies, answered as before."""
    c = keeper.healthy()
    key = uniq("handback")
    with redis_client(c.proxy(GATED).port, decode=True) as r:
        r.set(key, "0")
        in_thread(c)
        back0 = handed_back(c)
        assert r.ping() is True
        assert r.pipeline(transaction=True).incr(key).incr(key).execute() == [1, 2]
        assert r.get(key) == "2"
        assert r.client_setname("dp-test") is True and r.client_getname() == "dp-test"
        assert r.eval("return redis.call('incr', KEYS[1])", 1, key) == 3
        assert r.incr(key) == 4
        assert handed_back(c) > back0
    with redis_client(c.proxy(GATED).port, decode=True, db=1) as r1:   # SELECT 1 at connect
        r1.set(key, "db1")
        assert r1.get(key) == "db1"
    with redis_client(c.proxy(GATED).port, decode=True) as r0:
        wait_until(lambda: r0.get(key) == "4", 5, message="db 0 to keep its own value")


def test_a_client_keeps_its_name_library_and_age_across_the_thread(keeper):
    """What a client set in Python (CLIENT SETNAME, CLIENT SETINFO at connect, NO-EVICT)
    is still its own when the thread gives it back: the thread served it in between."""
    c = keeper.healthy()
    key = uniq("named")
    port = c.proxy(GATED).port
    with redis_client(port, decode=True, client_name="dp-named", lib_name="dp-lib", lib_version="1.2") as r:
        connected_at = time.monotonic()
        assert r.execute_command("CLIENT", "NO-EVICT", "on") == "OK"
        before = forwarded(c)

        def served_by_thread() -> bool:
            r.incr(key)
            return forwarded(c) > before

        wait_until(served_by_thread, 10, message="the client to be served by the C data plane")
        # CLIENT LIST's age is in whole seconds: let one pass in the thread (time, not a wait
        # for a condition), so an age counted from the hand-back would read 0
        time.sleep(max(0.0, connected_at + 1.2 - time.monotonic()))
        assert r.client_getname() == "dp-named"     # handed back for CLIENT GETNAME
        info = r.client_info()
        assert (info["name"], info["lib-name"], info["lib-ver"]) == ("dp-named", "dp-lib", "1.2"), info
        assert "e" in info["flags"], info
        assert int(info["age"]) >= 1, info
        listed = [line for line in r.execute_command("CLIENT", "LIST").splitlines() if "name=dp-named" in line]
        assert len(listed) == 1 and f"id={r.client_id()}" in listed[0], listed


def test_client_list_and_client_kill_see_the_clients_the_thread_serves(keeper):
    """CLIENT LIST shows a client the thread serves (its name, socket, last command as the
    thread saw it); CLIENT KILL ID closes it at once, and it is listed no more."""
    c = keeper.healthy()
    key = uniq("listed")
    port = c.proxy(GATED).port
    with RawClient(port) as raw, redis_client(port, decode=True) as admin:
        assert raw.command("CLIENT", "SETNAME", "dp-listed") == b"OK"
        before = forwarded(c)

        def served_by_thread() -> bool:
            raw.command("INCR", key)
            return forwarded(c) > before

        wait_until(served_by_thread, 10, message="the client to be served by the C data plane")

        def listed() -> list[dict]:
            return [e for e in admin.client_list() if e["name"] == "dp-listed"]

        [entry] = listed()
        assert entry["cmd"] == "incr" and int(entry["fd"]) > 0 and entry["flags"] == "N", entry
        assert admin.client_kill_filter(_id=entry["id"]) == 1
        assert listed() == []
        raw.sock.settimeout(5)
        assert raw.sock.recv(100) == b"", "the killed client's connection stays open"


def test_client_list_shows_the_buffers_of_the_clients_the_thread_serves(keeper):
    """CLIENT LIST's qbuf, omem and oll for clients the thread serves are the thread's, as
    Redis's are its own: a client that stopped reading its replies shows the bytes it is
    owed (how an operator finds a slow consumer), one that sent half a command shows it."""
    c = keeper.healthy()
    port = c.proxy(GATED).port
    key = uniq("big")
    with RawClient(port, rcvbuf=4096) as slow, RawClient(port) as half, redis_client(port, decode=True) as admin:
        assert slow.command("SET", key, "x" * 1_000_000) == b"OK"
        assert slow.command("CLIENT", "SETNAME", "dp-slow") == b"OK"
        assert half.command("CLIENT", "SETNAME", "dp-half") == b"OK"
        assert half.command("PING") == b"PONG"
        assert slow.command("GET", key) == b"x" * 1_000_000
        in_thread(c, 2)
        slow.send(b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key.encode()) for _ in range(20)))
        half.send(b"*2\r\n$3\r\nGET\r\n$10\r\nhalf-")

        def entry(name: str) -> dict:
            [e] = [e for e in admin.client_list() if e["name"] == name]
            return e

        wait_until(lambda: int(entry("dp-slow")["omem"]) >= 1_000_000, 10,
                   message="the slow reader's unwritten replies in its omem")
        slow_entry = entry("dp-slow")
        assert int(slow_entry["tot-mem"]) >= int(slow_entry["omem"]), slow_entry
        wait_until(lambda: entry("dp-half")["qbuf"] == str(len(b"*2\r\n$3\r\nGET\r\n$10\r\nhalf-")), 10,
                   message="the half-sent command in qbuf")
        assert entry("dp-half")["oll"] == "0"


def test_a_protocol_error_ends_only_that_client(keeper):
    """Bytes that are not RESP on a connection the thread serves: Python answers
    `-ERR Protocol error` and closes it; a client beside it goes on."""
    c = keeper.healthy()
    port = c.proxy(GATED).port
    key = uniq("proto")
    with redis_client(port) as other, RawClient(port) as bad:
        other.set(key, "1")
        assert bad.command("SET", key, "2") == b"OK"
        in_thread(c, 2)
        bad.send(b"*1\r\n$x\r\n")
        reply = bad.read_reply()
        assert isinstance(reply, hiredis.ReplyError) and "Protocol error" in str(reply), reply
        bad.sock.settimeout(5)
        assert bad.sock.recv(100) == b"", "the connection stays open after a protocol error"
        assert other.incr(key) == 3


def test_monitor_sees_the_commands_of_clients_the_thread_served(keeper):
    c = keeper.healthy()
    port = c.proxy(GATED).port
    key = uniq("monitored")
    with redis_client(port) as r, RawClient(port) as mon:
        r.set(key, "a")
        in_thread(c)
        assert mon.command("MONITOR") == b"OK"

        def shown() -> bool:
            r.set(key, "b")
            return _monitor_saw(mon, key)

        wait_until(shown, 10, message="MONITOR to show a command of a client the thread had")


def _monitor_saw(mon: RawClient, key: str) -> bool:
    mon.sock.settimeout(0.2)
    try:
        while True:
            line = mon.read_reply()
            if isinstance(line, bytes) and key.encode() in line:
                return True
    except socket.timeout:
        return False


def healthy_view(keeper):
    c = keeper.healthy()
    view = c.wait_stable()
    return c, view, c.redis(view["master"])


def warm_client(c: ProxyCluster) -> RawClient:
    """A client of GATED that wrote once and is served by the thread."""
    cl = RawClient(c.proxy(GATED).port, timeout=20)
    try:
        assert cl.command("SET", uniq("warm"), "x") == b"OK"
        in_thread(c)
    except BaseException:
        cl.__exit__(None, None, None)
        raise
    return cl


def test_write_in_flight_when_the_lease_lapses_is_not_acknowledged(keeper):
    """As test_write_gate's test of the same name, for a client the thread serves: the
    late +OK of a frozen master is kept back while the lease is lapsed and becomes an
    error after hold_ms."""
    c, view, master = healthy_view(keeper)
    key = uniq("inflight")
    with warm_client(c) as cl:
        others, t_sent, _ = write_then_lose_the_lease(c, cl, master, key)
        try:
            reply = cl.read_reply()
            t_reply = time.monotonic()
        finally:
            for p in others:
                p.cont()
    assert isinstance(reply, hiredis.ReplyError), f"a write answered after the lease lapsed: {reply!r}"
    assert t_reply - t_sent >= HOLD_S * 0.9, f"failed {t_reply - t_sent:.2f}s after the send (hold {HOLD_S}s)"
    assert str(reply).startswith("TRYAGAIN") and "outcome unknown" in str(reply) and "lease" in str(reply), reply


def test_write_in_flight_when_the_lease_returns_under_the_same_topology_is_acknowledged(keeper):
    c, view, master = healthy_view(keeper)
    key = uniq("resumed")
    with warm_client(c) as cl:
        others, _, _ = write_then_lose_the_lease(c, cl, master, key, for_good=False)
        for p in others:
            p.cont()
        reply = cl.read_reply()
        assert cl.command("SET", key + ":after", "v") == b"OK"
    after = c.status(GATED)["topology"]
    if (after["epoch"], after["master"]) == (view["epoch"], master.addr):
        assert reply == b"OK", f"a write whose lease came back under the same topology was refused: {reply!r}"
        with master.client(timeout=5) as m:
            assert m.get(key) == b"v"
    else:   # the frozen master was failed over meanwhile: then the reply must be an error
        assert isinstance(reply, hiredis.ReplyError), reply


def test_master_sigkill_writes_flow_again_through_the_thread_and_none_after_it_is_lost(keeper):
    c = keeper.healthy()
    view = c.wait_stable()
    e0 = view["epoch"]
    old = c.redis(view["master"])
    endpoint = c.proxy(GATED)
    with Writer(endpoint.port, prefix=uniq("dpk")) as w:
        w.wait_acks(50)
        in_thread(c)
        old.kill()
        new = c.wait_epoch(e0 + 1, timeout=30)
        t_epoch = time.monotonic()
        before = metrics(c).value("redis_raft_proxy_dataplane_commands_total", **{"class": "write"})
        w.wait_acks(100, after=t_epoch, timeout=30)
    results = w.snapshot()
    after = metrics(c).value("redis_raft_proxy_dataplane_commands_total", **{"class": "write"})
    assert after > before, "writes after the failover did not go through the C data plane"
    acked_after = [r for r in results if r.ok and r.done > t_epoch]
    assert acked_after
    with c.redis(new["master"]).client(decode=True) as nm:
        lost = read_back(nm, acked_after)
    assert not lost, f"{len(lost)} writes acknowledged after the failover are missing"
    old.replicaof = None
    old.start()     # restore() re-points it; the keeper checks the set is whole again
    wait_replica_of(old, c.redis(new["master"]), timeout=30)


def test_an_unauthenticated_client_never_reaches_the_thread(proxy_factory, replica_set):
    """With requirepass, a client goes to the thread only after AUTH; before it, every
    command is refused by Python (NOAUTH)."""
    p = proxy_factory(replica_set, dataplane="c", requirepass="dp-secret-1")
    key = uniq("auth")
    with RawClient(p.port) as cl:
        reply = cl.command("SET", key, "1")
        assert isinstance(reply, hiredis.ReplyError) and "NOAUTH" in str(reply), reply
        assert cl.command("AUTH", "dp-secret-1") == b"OK"
        wait_until(lambda: cl.command("SET", key, "2") == b"OK" and _clients(p) >= 1, 10,
                   message="the authenticated client to go to the thread")
        assert cl.command("GET", key) == b"2"       # its own write: read on the master
    with RawClient(p.port) as cl2:
        reply = cl2.command("GET", key)
        assert isinstance(reply, hiredis.ReplyError) and "NOAUTH" in str(reply), reply


def _metrics(p) -> Metrics:
    """/metrics of a single proxy (`proxy_factory`'s)."""
    with urllib.request.urlopen(p.admin_url + "/metrics", timeout=5) as r:
        return Metrics(r.read().decode())


def _clients(p) -> float:
    return _metrics(p).value("redis_raft_proxy_dataplane_clients")


def _forwarded(p) -> float:
    return _metrics(p).sum("redis_raft_proxy_dataplane_commands_total")



def test_nodes_named_by_host_name_are_served_by_the_thread_without_a_lookup_of_its_own(proxy_factory,
                                                                                      replica_set):
    """Nodes configured by name (`localhost:PORT`, as pod names are in Kubernetes): the
    thread connects to the address the proxy's probe connection reached (it never calls
    `getaddrinfo`, which would block every client it serves), carries the commands, and
    counts them under the configured name."""
    named = [a.replace("127.0.0.1", "localhost") for a in replica_set.addrs]
    master = replica_set.master.addr.replace("127.0.0.1", "localhost")
    p = proxy_factory(replica_set, redis_nodes=named, master=master, dataplane="c", read_policy="replicas",
                      down_after_ms=10_000)
    key = uniq("named")
    with RawClient(p.port) as cl:
        assert cl.command("SET", key, "v") == b"OK"
        wait_until(lambda: _clients(p) >= 1, 10, message="the client to go to the thread")
        for i in range(200):
            assert cl.command("SET", key, str(i)) == b"OK"
            assert cl.command("GET", key) == str(i).encode()   # its own write: the master's

    m = _metrics(p)
    thread_n = m.sum("redis_raft_proxy_dataplane_commands_total")
    on_master = m.sum("redis_raft_proxy_commands_total", node=master)
    assert thread_n >= 400, f"the thread forwarded {thread_n} commands of 400"
    assert on_master >= 400, f"{on_master} commands counted under {master}"


def test_sigterm_with_writes_in_flight_answers_them_as_soon_as_the_master_does(proxy_factory, fresh_replica_set):
    """Writes the thread sent are owed to the client when SIGTERM comes: draining stops
    new commands but lets those replies through (it once made them wait as if the lease
    had lapsed, up to hold_ms, and the drain its whole drain_timeout_ms). The master is
    SIGSTOPped so that the replies are provably owed at SIGTERM."""
    rs = fresh_replica_set
    p = proxy_factory(rs, dataplane="c", down_after_ms=10_000, hold_ms=5000, drain_timeout_ms=5000)
    key = uniq("drain")
    with RawClient(p.port, timeout=10) as cl:
        assert cl.command("SET", key, "0") == b"OK"
        wait_until(lambda: _clients(p) >= 1, 10, message="the client to go to the thread")
        rs.master.stop()
        try:
            cl.send(b"".join(b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(key), key.encode()) for _ in range(20)))
            wait_until(lambda: tcp_unread_bytes(rs.master.port) > 0, 10,
                       message="the INCRs to reach the stopped master")
            p.signal(signal.SIGTERM)
            wait_until(lambda: "shutting down" in p.log_text(), 10, message="the proxy to start draining")
            t_cont = time.monotonic()
        finally:
            rs.master.cont()
        assert cl.read_replies(20) == list(range(1, 21))
    p.proc.wait(timeout=10)
    took = time.monotonic() - t_cont
    assert p.proc.returncode == 0
    assert took < 2.0, f"the proxy stopped {took:.1f}s after the master answered (drain_timeout_ms 5 s)"
    assert "cut=0" in p.log_text()


def _thread_wakeups(pid: int) -> int:
    """Voluntary context switches of the proxy's data plane thread (named rrp-dataplane):
    how often it went to sleep, so was woken."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() != "rrp-dataplane":
                continue
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            return int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", f.read(), re.M).group(1))
    raise AssertionError(f"process {pid} has no rrp-dataplane thread")


def test_lease_renewals_leave_the_thread_of_idle_clients_asleep_and_their_next_command_goes_on(keeper):
    """An application's idle connection pool on the thread: the lease renewed at every
    Raft heartbeat is not pushed into the thread by waking it (it was, 10-20 times a
    second: issue 16's idle cost), and a command after an idle spell, when the permit the
    thread last applied has long run out, goes on under the renewal pushed last (applied
    as the command wakes the thread) instead of sending the client back to Python."""
    c = keeper.healthy()
    c.wait_stable()
    pid = c.proxy(GATED).pid
    key = uniq("pool")
    with warm_client(c) as cl:
        pool = [RawClient(c.proxy(GATED).port, timeout=20) for _ in range(19)]
        try:
            for p in pool:
                assert p.command("PING") == b"PONG"
            in_thread(c, 20)
            back = handed_back_why(c)
            before = _thread_wakeups(pid)
            time.sleep(3.0)     # a window measured, not a synchronisation
            woken = _thread_wakeups(pid) - before
            for i in range(5):
                time.sleep(0.5)     # longer than a permit is trusted for (a heartbeat and a tick)
                assert cl.command("SET", key, str(i)) == b"OK"
                assert pool[i].command("SET", f"{key}:{i}", "v") == b"OK"
            sent_back = handed_back_why(c)
        finally:
            for p in pool:
                p.__exit__(None, None, None)
    # (a loaded machine may shorten a lease's renewal now and then, and a shorter one wakes
    # the thread: 5 a second at most here, against 34 when every renewal woke it)
    assert woken <= 3 * 5, f"the thread of 20 idle clients was woken {woken} times in 3 s"
    # of the 10 commands after an idle spell, at most one may meet an expired permit (a
    # stall of the event loop longer than a permit is trusted for: the renewal pushed last
    # ran out too); when the renewals pushed while it slept were not applied, all did
    expired = sent_back.get("permit_expired", 0) - back.get("permit_expired", 0)
    others = {k: v - back.get(k, 0) for k, v in sent_back.items() if k != "permit_expired" and v != back.get(k, 0)}
    assert expired <= 1 and not others, f"commands after an idle spell sent back to Python: {back} then {sent_back}"


def test_ack_replica_writes_go_through_the_thread_and_none_is_acknowledged_unconfirmed(proxy_factory,
                                                                                      fresh_replica_set):
    """ack = replica (rule 4) with the thread: 10 clients' pipelined SET, GET, INCR are
    answered in order while the replicas run, the thread sending them and the master
    getting WAITs; with the replicas frozen every write, and the read pipelined with it, is
    answered NOREPLICAS after ack_timeout_ms, never +OK; the clients stay with the thread
    throughout. (Before, ack = replica kept every client in Python.)"""
    rs = fresh_replica_set
    p = proxy_factory(rs, dataplane="c", read_policy="master", ack="replica", ack_timeout_ms=1000,
                      down_after_ms=30_000)
    clients = [RawClient(p.port, timeout=10) for _ in range(10)]
    frozen = []
    try:
        keys = [uniq(f"ackr-{i}") for i in range(len(clients))]
        for cl, key in zip(clients, keys):
            assert cl.command("SET", key, "0") == b"OK"
        wait_until(lambda: _clients(p) >= len(clients), 10, message="the clients to go to the thread")
        waits_before, thread_before = commandstats_calls(rs.master, "wait"), _forwarded(p)
        for rnd in range(20):
            for cl, key in zip(clients, keys):
                cl.send(encode_command("SET", key, str(rnd)) + encode_command("GET", key)
                        + encode_command("INCR", key))
            for cl in clients:
                assert [cl.read_reply() for _ in range(3)] == [b"OK", str(rnd).encode(), rnd + 1]
        waits = commandstats_calls(rs.master, "wait") - waits_before
        by_thread = _forwarded(p) - thread_before
        frozen = [s for s in rs.servers if s is not rs.master]
        for s in frozen:
            s.stop()
        for cl, key in zip(clients, keys):
            cl.send(encode_command("SET", key, "unconfirmed") + encode_command("GET", key))
        unconfirmed = [[cl.read_reply() for _ in range(2)] for cl in clients]
        served = _clients(p)
    finally:
        for s in frozen:
            s.cont()
        for cl in clients:
            cl.close()
    assert by_thread >= 3 * 20 * len(clients), f"the thread forwarded {by_thread} of {3 * 20 * len(clients)}"
    assert 1 <= waits <= 20 * len(clients), f"{waits} WAITs for {20 * len(clients)} batches of writes"
    wrong = [r for pair in unconfirmed for r in pair
             if not (isinstance(r, hiredis.ReplyError) and str(r).startswith("NOREPLICAS"))]
    assert not wrong, f"replies given with no replica confirming the writes: {wrong}"
    assert served >= len(clients), f"{served} clients still with the thread"
