"""TLS on every hop (issue 13): clients -> proxy, proxy -> Redis, proxy <-> proxy and
operator -> proxy, with real TLS redis-servers (Debian's redis-server is built with
TLS), real clients (redis-py with ssl, redis-cli --tls) and certificates the test makes
with the openssl CLI (proxy/process/devcerts.py).

One cluster for the module (3 TLS redis-servers, tls-replication yes, client
certificates required; 3 proxies with tls_port, tls_upstream and tls_admin); the
failover test comes last, as it changes the master.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest
import redis

from benchmarks.failover_lib import RAFT_SECRET, ProxyCluster
from proxy.process.config import ENV_PREFIX

from .harness import HOST, PROXY_BIN, free_ports, redis_client, start_or_clean, wait_until
from .tls_fixtures import TestTls

pytestmark = pytest.mark.timeout(180)

OPTIONS = {"down_after_ms": 500, "hold_ms": 5000, "lease_ms": 1000, "tls_handshake_timeout_ms": 1500}


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> TestTls:
    return TestTls.make(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tls):
    c = ProxyCluster(tmp_path_factory.mktemp("tls-cluster"), options=dict(OPTIONS), tls=tls,
                     node_options={"proxy-1": {"sentinel_port": free_ports(1)[0], "tls_sentinel": True}})
    start_or_clean(c, 60)
    try:
        yield c
    finally:
        c.cleanup()


def tls_client(c: ProxyCluster, tls: TestTls, name: str = "proxy-1", **kw) -> redis.Redis:
    return redis.Redis(host=HOST, port=c.tls_ports[name], socket_timeout=10, decode_responses=True,
                       **tls.redis_py_kwargs(), **kw)


def handshake_failures(c: ProxyCluster, name: str) -> int:
    return c.proxy(name).log_text().count("event=tls_handshake_failed")


def wait_failure_logged(c: ProxyCluster, name: str, before: int, what: str) -> None:
    wait_until(lambda: handshake_failures(c, name) > before, 10,
               message=f"{name} to log event=tls_handshake_failed for {what}")


def test_redis_nodes_only_speak_tls_with_a_certificate(cluster, tls):
    """The test's premise: the proxies can only be reaching Redis over TLS."""
    master = cluster.redis(cluster.wait_stable()["master"])
    with pytest.raises(redis.ConnectionError):
        redis_client(master.port, timeout=2).ping()     # plaintext on the TLS port
    with redis_client(master.port, timeout=2, ssl=True, ssl_ca_certs=str(tls.ca.cert)) as r:
        with pytest.raises(redis.ConnectionError):
            r.ping()                                                             # no client certificate
    st = cluster.status("proxy-1")
    assert all(n["up"] for n in st["nodes"]), st["nodes"]


def test_reads_and_writes_over_tls(cluster, tls):
    cluster.wait_stable()
    with tls_client(cluster, tls) as r:
        assert r.set("tls:k", "v") is True
        assert r.incr("tls:n") == 1
        # reads go to replicas (read-your-writes on this connection)
        assert r.get("tls:k") == "v"
    with tls_client(cluster, tls, name="proxy-2") as other:   # another client: replication is asynchronous
        wait_until(lambda: other.get("tls:k") == "v", 10, message="the write to be readable via proxy-2")
    out = subprocess.run(["redis-cli", "--tls", "--cacert", str(tls.ca.cert), "--cert", str(tls.client.cert),
                          "--key", str(tls.client.key), "-h", HOST, "-p", str(cluster.tls_ports["proxy-3"]),
                          "GET", "tls:k"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and out.stdout.strip() == "v", out


def test_sentinel_port_over_tls(cluster, tls):
    view = cluster.wait_stable()
    port = cluster.proxy("proxy-1").options["sentinel_port"]
    with redis.Redis(host=HOST, port=port, socket_timeout=5, decode_responses=True, **tls.redis_py_kwargs()) as s:
        host, p = s.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
    assert f"{host}:{p}" == view["master"]
    with pytest.raises(redis.ConnectionError):
        redis_client(port, timeout=2).ping()


def test_bad_tls_clients_are_closed_and_logged_without_harming_others(cluster, tls, tmp_path):
    """A plaintext client, no client certificate, an expired one, one from another CA, and
    a handshake that stalls: each connection is closed and logged; a client already
    connected keeps working throughout."""
    cluster.wait_stable()
    port = cluster.tls_ports["proxy-1"]
    bystander = tls_client(cluster, tls)
    assert bystander.set("tls:bystander", "0") is True
    from proxy.process.devcerts import DevCA

    expired = tls.ca.leaf("expired-client", expired=True)
    stranger = DevCA(tmp_path / "other-ca", name="some other CA").leaf("stranger")
    attempts = {
        "no client certificate": {"ssl": True, "ssl_ca_certs": str(tls.ca.cert)},
        "an expired certificate": tls.redis_py_kwargs(expired),
        "a certificate from another CA": tls.redis_py_kwargs(stranger),
    }
    for i, (what, kw) in enumerate(attempts.items()):
        before = handshake_failures(cluster, "proxy-1")
        with redis_client(port, timeout=5, **kw) as bad:     # no retries: each attempt is one handshake
            # without a certificate the client is told what is missing (an error reply, then
            # the proxy closes); a bad one fails the handshake itself
            expected = redis.ResponseError if what == "no client certificate" else redis.ConnectionError
            with pytest.raises(expected) as refused:
                bad.ping()
            if expected is redis.ResponseError:
                assert "TLS client certificate required" in str(refused.value)
        wait_failure_logged(cluster, "proxy-1", before, what)
        assert bystander.set("tls:bystander", str(i + 1)) is True
    # redis-cli without its certificate prints the reason (it died of SIGPIPE, silently, when
    # the proxy closed the handshake without a word)
    out = subprocess.run(["redis-cli", "--tls", "--cacert", str(tls.ca.cert), "-h", HOST, "-p", str(port),
                          "SET", "tls:bystander", "by-a-client-without-certificate"],
                         capture_output=True, text=True, timeout=20)
    assert "TLS client certificate required" in out.stdout + out.stderr, out
    # plaintext RESP on the TLS port, and a client that connects and sends nothing
    for what, payload in (("plaintext RESP", b"*1\r\n$4\r\nPING\r\n"), ("a stalled handshake", b"")):
        before = handshake_failures(cluster, "proxy-1")
        with socket.create_connection((HOST, port), timeout=10) as s:
            if payload:
                s.sendall(payload)
            t0 = time.monotonic()
            data = s.recv(100)      # the proxy closes it: b"" (never a RESP reply)
            assert data == b"", f"{what}: got {data!r}"
            assert time.monotonic() - t0 < 8, f"{what}: not closed within the handshake timeout"
        wait_failure_logged(cluster, "proxy-1", before, what)
    assert bystander.get("tls:bystander") == str(len(attempts))
    bystander.close()


def test_admin_and_raft_over_https(cluster, tls):
    """The proxies' admin ports serve HTTPS only; a client certificate signed by the CA
    authenticates operator routes like the secret; the operator CLI speaks HTTPS."""
    view = cluster.wait_stable()
    leader = cluster.proxy(view["leader"])
    import urllib.error
    import urllib.request

    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://{HOST}:{leader.admin_port}/status", timeout=3).read()
    server_only = ssl.create_default_context(cafile=str(tls.ca.cert))      # verifies, presents nothing
    server_only.check_hostname = False
    with urllib.request.urlopen(f"{leader.admin_url}/status", timeout=5, context=server_only) as r:
        assert r.status == 200      # /status is open (it holds no secret)
    req = urllib.request.Request(f"{leader.admin_url}/raft/cluster")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(req, timeout=5, context=server_only)
    assert denied.value.code == 403
    with urllib.request.urlopen(req, timeout=5, context=tls.client_context()) as r:
        assert r.status == 200      # a client certificate from the CA, no secret
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    out = subprocess.run([PROXY_BIN, "status", "--endpoint", leader.admin_url, "--cacert", str(tls.ca.cert)],
                         capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "healthy" in out.stdout
    # an operator action authenticated by a client certificate alone
    target = next(n for n in cluster.names if n != view["leader"])
    out = subprocess.run([PROXY_BIN, "transfer-leadership", "--to", target, "--endpoint", leader.admin_url,
                          "--cacert", str(tls.ca.cert), "--cert", str(tls.client.cert), "--key",
                          str(tls.client.key)], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_until(lambda: (v := cluster.agreed()) and v["leader"] == target, 20,
               message=f"leadership to move to {target} over HTTPS Raft")


def test_certificate_rotation_under_load(cluster, tls):
    """The proxy's certificate files are replaced (as cert-manager does) while a client
    writes over TLS: the proxy reloads them, new connections get the new certificate,
    the connected client never notices."""
    cluster.wait_stable()
    name = "proxy-2"
    port = cluster.tls_ports[name]

    def serial_presented() -> int:
        ctx = tls.client_context()
        with socket.create_connection((HOST, port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return int(s.getpeercert()["serialNumber"], 16)

    old_serial = serial_presented()
    errors: list[BaseException] = []
    acked: list[int] = []
    stop = threading.Event()

    def writer():
        with tls_client(cluster, tls, name=name) as r:
            i = 0
            while not stop.is_set():
                try:
                    r.set(f"rot:{i}", i)
                    acked.append(i)
                except redis.RedisError as exc:
                    errors.append(exc)
                i += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        wait_until(lambda: len(acked) > 50, 15, message="the writer to get going")
        new = tls.ca.leaf("proxy-rotated")
        for src, dst in ((new.cert, tls.proxy.cert), (new.key, tls.proxy.key)):
            tmp = dst.with_suffix(".new")
            tmp.write_bytes(src.read_bytes())
            os.replace(tmp, dst)
        wait_until(lambda: "event=tls_reloaded" in cluster.proxy(name).log_text(), 15,
                   message=f"{name} to reload its certificate")
        new_serial = wait_until(lambda: (s := serial_presented()) != old_serial and s, 10,
                                message="new connections to get the new certificate")
        count = len(acked)
        wait_until(lambda: len(acked) > count + 50, 15, message="writes to go on after the rotation")
    finally:
        stop.set()
        t.join(15)
    assert not errors, f"the connected client saw errors during the rotation: {errors[:3]}"
    assert new_serial != old_serial


def test_subscribers_gone_mid_stream_get_nothing_more_and_nothing_is_logged(cluster, tls):
    """Subscribers over TLS that close while messages flow to them, or that the proxy closes
    after a protocol error: the proxy stops writing their streams (uvloop would log "SSL
    connection is closed" for every message written after the close) and a subscriber
    that stays gets every message."""
    cluster.wait_stable()
    ch = "tls:gone"
    port = cluster.tls_ports["proxy-1"]
    ctx = tls.client_context()
    log_before = len(cluster.proxy("proxy-1").log_text())
    stayer = tls_client(cluster, tls).pubsub()
    stayer.subscribe(ch)
    assert wait_until(lambda: stayer.get_message(timeout=0.2), 5, message="the stayer's confirmation")
    stop = threading.Event()
    published = [0]

    def publish() -> None:
        with tls_client(cluster, tls) as pub:
            while not stop.is_set():
                pub.publish(ch, b"m" * 200)
                published[0] += 1

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        for i in range(30):
            raw = socket.create_connection((HOST, port), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname=HOST)
            s.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(ch), ch.encode()))
            assert s.recv(100).startswith(b"*3\r\n$9\r\nsubscribe"), "no confirmation"
            if i % 4 == 1:      # a close_notify first (its answer is not waited for)
                s.settimeout(0.2)
                with contextlib.suppress(OSError, ssl.SSLError):
                    s.unwrap()
            elif i % 4 == 2:    # half-closed: the proxy reads EOF while the socket stays open
                s.shutdown(socket.SHUT_WR)
                time.sleep(0.1)
            elif i % 4 == 3:    # a protocol error: the proxy answers it and closes its side,
                s.sendall(b"*1\r\n$x\r\n")     # then messages come while the client reads nothing
                mark = published[0]
                wait_until(lambda: published[0] > mark + 50, 10, message="50 messages published")
            s.close()           # gone mid-stream
        wait_until(lambda: published[0] > 2000, 30, message="2,000 messages published")
    finally:
        stop.set()
        publisher.join(10)
    got, deadline = 0, time.monotonic() + 30
    while got < published[0] and time.monotonic() < deadline:
        if stayer.get_message(timeout=1.0) is not None:
            got += 1
    while stayer.get_message(timeout=0.5) is not None:     # and no more than were published
        got += 1
    stayer.close()
    assert got == published[0], f"the stayer got {got} of {published[0]} messages"
    log = cluster.proxy("proxy-1").log_text()[log_before:]
    assert "SSL connection is closed" not in log and "Traceback" not in log, log[-3000:]


def test_a_redis_node_whose_certificate_does_not_verify_is_down_with_the_reason_and_gets_no_reads(tmp_path, tls):
    """A replica that serves a certificate from a CA the proxies do not trust (its CA file
    and the other nodes' hold both CAs, so replication itself works): every proxy reports
    it down, with the verification failure in /status and in its log, and never logs it
    up; it gets none of the reads, which the other replica serves; writes go on."""
    from proxy.process.devcerts import DevCA
    from proxy.tls import TlsFiles

    other = DevCA(tmp_path / "other-ca", name="some other CA")
    stranger = other.leaf("redis-stranger")
    both = tmp_path / "both-cas.pem"
    both.write_text(tls.ca.cert.read_text() + other.cert.read_text())
    c = ProxyCluster(tmp_path / "cluster", options=dict(OPTIONS), tls=tls)
    good, victim = c.rs.replicas
    for server in (c.rs.master, good):
        server.tls = TlsFiles(server.tls.cert, server.tls.key, str(both))
    victim.tls = TlsFiles(str(stranger.cert), str(stranger.key), str(both))
    start_or_clean(c, 60)
    try:
        def reported_down() -> bool:
            for st in c.statuses().values():
                node = st and next(n for n in st["nodes"] if n["addr"] == victim.addr)
                if not (node and not node["up"] and "certificate verify failed" in (node["error"] or "")):
                    return False
            return True
        wait_until(reported_down, 15, message=lambda: f"every proxy to report {victim.addr} down for its "
                                                      f"certificate: {c.statuses()}")

        def down_logged(name: str) -> bool:
            return any(f"node={victim.addr}" in line and "certificate verify failed" in line
                       for line in c.proxy(name).log_text().splitlines() if "event=node_subjectively_down" in line)
        for name in c.names:
            wait_until(lambda: down_logged(name), 10, message=lambda: f"{name} to log why {victim.addr} is down:\n"
                                                                  f"{c.proxy(name).log_tail(20)}")
            assert not any(f"node={victim.addr}" in line for line in c.proxy(name).log_text().splitlines()
                           if "event=node_up" in line), f"{name} logged {victim.addr} up: it never answered"
        with tls_client(c, tls) as writer:
            for i in range(20):
                assert writer.set(f"badcert:{i}", str(i)) is True
        gets = {s.addr: s.client().info("commandstats").get("cmdstat_get", {}).get("calls", 0) for s in c.rs.replicas}
        with tls_client(c, tls, name="proxy-2") as reader:      # has written nothing: its reads go to replicas

            def good_served() -> bool:
                for i in range(20):
                    reader.get(f"badcert:{i}")
                return good.client().info("commandstats").get("cmdstat_get", {}).get("calls", 0) > gets[good.addr]
            wait_until(good_served, 15, message=f"reads through proxy-2 to reach the replica {good.addr}")
        assert victim.client().info("commandstats").get("cmdstat_get", {}).get("calls", 0) == gets[victim.addr], \
            "a read went to the node whose certificate does not verify"
    finally:
        c.cleanup()


def test_a_proxy_with_a_certificate_from_another_ca_is_named_with_the_reason_then_joins_once_fixed(tmp_path, tls):
    """In a new cluster proxy-3 serves and presents a certificate from a CA the others do
    not trust: no proxy bootstraps without every peer, and each says why in its log (the
    other two: proxy-3's certificate does not verify; proxy-3: the others refuse it),
    rather than only "no answer yet". Restarted with a certificate from the cluster's CA,
    proxy-3 is reached, the others log it, and the cluster forms."""
    from proxy.process.devcerts import DevCA

    stranger = DevCA(tmp_path / "other-ca", name="some other CA").leaf("proxy-stranger")
    c = ProxyCluster(tmp_path / "cluster", options=dict(OPTIONS), tls=tls, node_options={
        "proxy-3": {"tls_cert_file": str(stranger.cert), "tls_key_file": str(stranger.key)}})
    third = c.proxy("proxy-3")
    try:
        c.rs.start()
        for p in c.proxies.values():
            p.spawn()

        def lines(name: str, *words: str) -> list[str]:
            return [line for line in c.proxy(name).log_text().splitlines() if all(w in line for w in words)]
        for name in ("proxy-1", "proxy-2"):
            wait_until(lambda: lines(name, "event=raft_peer_unreachable", "peer=proxy-3", "certificate verify failed")
                       and lines(name, "not bootstrapping", "proxy-3 (", "certificate verify failed"), 20,
                       message=lambda: f"{name} to say why proxy-3 does not answer:\n{c.proxy(name).log_tail(20)}")
        wait_until(lambda: lines("proxy-3", "event=raft_peer_unreachable", "peer=proxy-1"), 20,
                   message=lambda: f"proxy-3 to say why proxy-1 does not answer:\n{third.log_tail(20)}")
        assert not any(lines(name, "event=leader_elected") for name in c.names), "a cluster formed without proxy-3"
        third.kill()
        third.options.update(tls_cert_file=str(tls.proxy.cert), tls_key_file=str(tls.proxy.key))
        third.spawn()
        for p in c.proxies.values():
            p.wait_ready(30)
        c.wait_stable(timeout=30)
        for name in ("proxy-1", "proxy-2"):
            wait_until(lambda: lines(name, "event=raft_peer_reachable", "peer=proxy-3"), 10,
                       message=lambda: f"{name} to log proxy-3 reachable:\n{c.proxy(name).log_tail(20)}")
    finally:
        c.cleanup()


def test_failover_over_tls(cluster, tls):
    """SIGKILL the master: the proxies (Raft over HTTPS) promote a replica over TLS and
    TLS clients go on writing; nothing they were acknowledged is lost."""
    view = cluster.wait_stable()
    master = cluster.redis(view["master"])
    with tls_client(cluster, tls, name="proxy-3") as r:
        keys = [f"tlsfo:{i}" for i in range(100)]
        for k in keys:
            assert r.set(k, k) is True
        replica = next(s for s in cluster.rs.servers if s is not master)
        with replica.client(decode=True) as rc:
            wait_until(lambda: rc.get(keys[-1]) == keys[-1], 10, message="the last write to reach a replica")
        master.kill()
        new = cluster.wait_epoch(view["epoch"] + 1, timeout=30)
        assert new["master"] != master.addr

        def writable():
            try:
                return r.set("tlsfo:after", "1") is True
            except redis.RedisError:
                return False
        wait_until(writable, 20, message="writes over TLS after the failover")
        with cluster.redis(new["master"]).client(decode=True) as nm:
            missing = [k for k, v in zip(keys, nm.mget(keys)) if v != k]
        assert not missing, f"{len(missing)} acknowledged keys lost"


def test_sigterm_closes_an_idle_tls_client_after_a_short_linger(cluster, tls):
    """A pooled TLS client that never reads again does not answer the proxy's close_notify:
    a stopping proxy closes it after a short linger as it does a plaintext one, rather than
    waiting out drain_timeout_ms (5 s) for it. (Last in the module: it stops proxy-3.)"""
    cluster.wait_stable()
    name = "proxy-3"
    p = cluster.proxy(name)
    idle = tls_client(cluster, tls, name=name)
    assert idle.ping()
    t0 = time.monotonic()
    assert p.terminate(timeout=15) == 0, f"{name} did not exit 0 on SIGTERM:\n{p.log_tail()}"
    took = time.monotonic() - t0
    idle.close()
    assert took < 3.0 and "answered_and_closed=1 cut=0" in p.log_text(), \
        f"{name} took {took:.1f}s to stop:\n{p.log_tail()}"


def test_unloadable_certificate_exits_2_naming_the_key(tmp_path, tls):
    port, admin, tls_port, r1 = free_ports(4)
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("hello\n")
    ca = {"tls_ca_cert_file": str(tls.ca.cert)}
    cases = [({"tls_cert_file": str(bad), "tls_key_file": str(tls.proxy.key), **ca}, "tls_cert_file"),
             ({"tls_cert_file": str(tls.proxy.cert), "tls_key_file": str(tls.client.key), **ca}, "tls_cert_file"),
             ({"tls_cert_file": str(tls.proxy.cert), "tls_key_file": str(tls.proxy.key)}, "tls_ca_cert_file"),
             ({"tls_cert_file": str(tls.proxy.cert), "tls_key_file": str(tls.proxy.key),
               "tls_ca_cert_file": str(tmp_path / "missing.crt")}, "tls_ca_cert_file")]
    for opts, key in cases:
        argv = [PROXY_BIN, "run", "--node", "badtls", "--port", str(port), "--admin-port", str(admin),
                "--tls-port", str(tls_port), "--redis-nodes", f"{HOST}:{r1}"]
        for k, v in opts.items():
            argv += ["--" + k.replace("_", "-"), v]
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
        assert out.returncode == 2, (opts, out.stderr)
        assert key in out.stderr and "Traceback" not in out.stderr, out.stderr


assert RAFT_SECRET  # the cluster still has a secret: certificates add to it, they do not replace it
