"""The Sentinel endpoint (issue 8) with real processes: 3 redis-server + 3 proxies.

A redis-py `Sentinel` client is given the three proxies' sentinel ports and
nothing else: `master_for("mymaster")` writes and reads, `slave_for` reads
from a replica, and after SIGKILL of the master the same `master_for` client
writes again (to the new master) without any change; a subscriber to
`+switch-master` on a proxy's sentinel port gets the new address.

The proxies run through a small launcher (`LAUNCHER`): once `sentinel_port`
is a configuration key (the endpoint is wired into `ProxyServer`), it is
plain `redis-raft-proxy run ... --sentinel-port P`; before that, it attaches
`proxy.sentinel` to `ProxyServer` the way the wiring does.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis
from redis.sentinel import Sentinel

from benchmarks.failover_lib import ProxyCluster

from .harness import HOST, RawClient, release_ports, free_ports, wait_until

pytestmark = pytest.mark.timeout(120)

LAUNCHER = r'''
import dataclasses, sys
from proxy.process import cli, config

argv = sys.argv[1:]
if "sentinel_port" not in {f.name for f in dataclasses.fields(config.Config)}:
    # Not wired yet: take the two keys off the command line and attach the endpoint here.
    from proxy import sentinel
    from proxy.process import admin, server as srv

    opts = {"--sentinel-port": "0", "--master-name": "mymaster"}
    rest = []
    i = 0
    while i < len(argv):
        if argv[i] in opts:
            opts[argv[i]] = argv[i + 1]
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    argv = rest
    P = srv.ProxyServer
    init, start, stop, apply = P.__init__, P.start, P.stop, P._apply_topology

    def __init__(self, cfg):
        init(self, cfg)
        self.sentinel = sentinel.attach_sentinel(self, port=int(opts["--sentinel-port"]),
                                                 master_name=opts["--master-name"])

    async def _start(self):
        await start(self)
        await self.sentinel.start()

    async def _stop(self):
        await self.sentinel.stop()
        await stop(self)

    def _apply(self, new, old, reason):
        apply(self, new, old, reason)
        self.sentinel.on_topology(new, old, reason)

    P.__init__, P.start, P.stop, P._apply_topology = __init__, _start, _stop, _apply
    status_document = admin.status_document

    def _status(server, raft=None):
        doc = status_document(server, raft)
        doc.setdefault("sentinel", sentinel.sentinel_status(server))
        return doc

    admin.status_document = _status
sys.exit(cli.main(argv))
'''


@pytest.fixture
def cluster(tmp_path):
    sports = free_ports(3)
    names = ("proxy-1", "proxy-2", "proxy-3")
    c = ProxyCluster(tmp_path / "cluster",
                     node_options={n: {"sentinel_port": p, "master_name": "mymaster"} for n, p in zip(names, sports)})
    for p in c.proxies.values():
        p.argv = (lambda proc=p: [sys.executable, "-c", LAUNCHER] + type(proc).argv(proc)[1:])
    c.sentinel_ports = dict(zip(names, sports))
    try:
        c.start(timeout=60)
        yield c
    finally:
        c.cleanup()
        release_ports(sports)


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_messages(sub: RawClient, seconds: float) -> list:
    """Every reply that arrives on `sub` within `seconds`."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sub.sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            out.append(sub.read_reply())
        except (TimeoutError, OSError):
            break
    return out


def test_sentinel_clients_follow_a_failover(cluster):
    c = cluster
    view = c.wait_stable(timeout=30)
    master = c.rs.by_addr(view["master"])
    ports = [c.sentinel_ports[n] for n in c.names]

    # every proxy publishes its sentinel port in /status and knows the others'
    def sentinels_known():
        for name in c.names:
            st = c.status(name)
            if not st or st.get("sentinel", {}).get("port") != c.sentinel_ports[name]:
                return False
        with redis.Redis(host=HOST, port=ports[0], socket_timeout=5, decode_responses=True) as s1:
            others = s1.sentinel_sentinels("mymaster")
        if sorted(o["port"] for o in others) != sorted(ports[1:]) or any(o["ip"] != HOST for o in others):
            return False
        # each proxy counts a peer as usable only once it has a fresh /status from it
        for p in ports:
            with redis.Redis(host=HOST, port=p, socket_timeout=5) as s:
                if not s.execute_command("SENTINEL", "CKQUORUM", "mymaster").startswith(b"OK 3 usable Sentinels"):
                    return False
        return True
    wait_until(sentinels_known, 20, interval=0.2, message="every proxy's sentinel to know the other two")

    # a real redis-cli, as an operator would ask
    out = subprocess.run(["redis-cli", "-p", str(ports[2]), "SENTINEL", "get-master-addr-by-name", "mymaster"],
                         capture_output=True, text=True, timeout=10).stdout.split()
    assert out == [HOST, str(master.port)]
    with redis.Redis(host=HOST, port=ports[1], socket_timeout=5) as s2:
        # CKQUORUM answers OK while this proxy holds its lease; a follower's lease waits for it to
        # apply what the leader committed (at start-up: the topology, the master's history), so
        # one answer right after start-up may be NOQUORUM (a CI run): poll, bounded
        wait_until(lambda: s2.execute_command("SENTINEL", "CKQUORUM", "mymaster").startswith(b"OK 3 usable Sentinels"),
                   5, message="CKQUORUM to answer OK 3 usable Sentinels")
        info = s2.info("sentinel")
        assert info["sentinel_masters"] == 1 and info["master0"]["status"] == "ok"
        assert info["master0"]["address"] == master.addr and info["master0"]["sentinels"] == 3
        with pytest.raises(redis.ResponseError, match="redis-raft-proxy failover --to"):
            s2.execute_command("SENTINEL", "FAILOVER", "mymaster")

    sentinel = Sentinel([(HOST, p) for p in ports], socket_timeout=2, socket_connect_timeout=2)
    assert sentinel.discover_master("mymaster") == (HOST, master.port)
    m = sentinel.master_for("mymaster", socket_timeout=2, socket_connect_timeout=2)
    r = sentinel.slave_for("mymaster", socket_timeout=2, socket_connect_timeout=2)
    assert m.set("sentinel:k1", "v1") is True
    assert m.get("sentinel:k1") == b"v1"
    assert r.info("replication")["role"] == "slave"
    wait_until(lambda: r.get("sentinel:k1") == b"v1", 10, message="the replica read of sentinel:k1")

    # a subscriber on proxy-2's sentinel port, for every event
    sub = RawClient(ports[1], timeout=5)
    assert sub.command("SUBSCRIBE", "+switch-master") == [b"subscribe", b"+switch-master", 1]
    assert sub.command("PSUBSCRIBE", "*down") == [b"psubscribe", b"*down", 2]

    master.kill()
    killed_at = time.monotonic()

    def write_again():
        try:
            return m.set("sentinel:k2", "v2")
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, redis.ResponseError):
            return False
    wait_until(write_again, 30, interval=0.1, message="master_for to write again after the master died")
    took = time.monotonic() - killed_at
    new_view = c.wait_stable(timeout=20)
    assert new_view["master"] != master.addr and new_view["epoch"] > view["epoch"]
    new_host, new_port = new_view["master"].rsplit(":", 1)
    assert sentinel.discover_master("mymaster") == (new_host, int(new_port))
    assert m.get("sentinel:k2") == b"v2"
    assert m.info("replication")["role"] == "master"
    print(f"master_for wrote again {took:.2f}s after SIGKILL of the master")

    msgs = []
    # proxy-2 may see the master down before the commit (+sdown master ...) or, when the
    # other two proxies were quicker, only afterwards, as a replica (+sdown slave ...)
    sdown_old = {("+sdown", f"master mymaster {HOST} {master.port}"),
                 ("+sdown", f"slave {master.addr} {HOST} {master.port} @ mymaster {new_host} {new_port}")}

    def pm():
        return [(x[2].decode(), x[3].decode()) for x in msgs if x[0] == b"pmessage"]

    def got_events():
        msgs.extend(read_messages(sub, 0.5))
        switched = any(x[0] == b"message" and x[1] == b"+switch-master" for x in msgs)
        return switched and sdown_old & set(pm())
    wait_until(got_events, 15, message=lambda: f"+switch-master and +sdown on the subscriber; got {msgs}")
    switch = [x for x in msgs if x[0] == b"message" and x[1] == b"+switch-master"]
    assert len(switch) == 1 and switch[0][2].decode() == f"mymaster {HOST} {master.port} {new_host} {new_port}"
    assert any(ch == "+odown" and text.startswith(f"master mymaster {HOST} {master.port} #quorum ")
               for ch, text in pm()), pm()
    sub.close()

    # the other proxies answer the new master too; the old one is now a replica in s_down
    for p in ports:
        with redis.Redis(host=HOST, port=p, socket_timeout=5, decode_responses=True) as s:
            assert s.sentinel_get_master_addr_by_name("mymaster") == (new_host, int(new_port))

    def old_listed_down():
        with redis.Redis(host=HOST, port=ports[0], socket_timeout=5, decode_responses=True) as s:
            reps = {f"{x['ip']}:{x['port']}": x for x in s.sentinel_slaves("mymaster")}
        return master.addr in reps and reps[master.addr]["is_sdown"]
    wait_until(old_listed_down, 10, message="the dead old master listed as a replica in s_down")
    for c_ in (m, r):
        c_.close()
