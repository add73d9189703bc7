"""Least privilege towards Redis (issue 13): the proxies' control connections use a
control user that may run only what they send (INFO, REPLICAOF, CLIENT PAUSE/UNPAUSE,
SCRIPT/FUNCTION KILL, COMMAND); client traffic uses a data user that may not run
REPLICAOF, CONFIG or CLIENT PAUSE; replicas sync with a replication user of their own
(`masteruser` / `masterauth`, configured on Redis, never by the proxy).

The ACL lines below are the ones README.md documents ("Least-privilege Redis users");
a test checks that README still carries them word for word.  The default user stays
on (without a password) only so that the harness and the assertions can inspect the
servers; the proxies never use it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoPermissionError

from benchmarks.failover_lib import (
    PROXY_NAMES,
    RAFT_SECRET,
    ProxyCluster,
    wait_replica_of,
)
from benchmarks.raft_cluster_lib import run_ops

from .harness import ENV_PREFIX, start_or_clean, wait_until

DATA_PASSWORD = "Data-User-Secret-41ab"
CONTROL_PASSWORD = "Control-User-Secret-9c2e"
REPL_PASSWORD = "Repl-User-Secret-77d0"

DATA_ACL = "user rrp-data on >DATA_PASSWORD ~* &* +@all -@admin -@dangerous"
CONTROL_ACL = ("user rrp-control on >CONTROL_PASSWORD -@all +info +replicaof +client|pause +client|unpause "
               "+script|kill +function|kill +command")
REPL_ACL = "user rrp-repl on >REPL_PASSWORD +psync +replconf +ping"
TIMING = {"down_after_ms": 500, "hold_ms": 5000, "lease_ms": 1000}
README = Path(__file__).parents[2] / "README.md"


def _user_args(line: str) -> list[str]:
    """`user NAME rules...` with the placeholder passwords filled in, as redis-server flags."""
    line = (line.replace("DATA_PASSWORD", DATA_PASSWORD).replace("CONTROL_PASSWORD", CONTROL_PASSWORD)
            .replace("REPL_PASSWORD", REPL_PASSWORD))
    return ["--" + line.split()[0], *line.split()[1:]]


def _acl_denials(server) -> list[dict]:
    with server.client(decode=True, timeout=5) as c:
        return [dict(e) for e in c.acl_log()]


def _has_user_connection(server, user: str) -> bool:
    with server.client(decode=True, timeout=5) as c:
        return any(cl.get("user") == user for cl in c.client_list())


@pytest.fixture(scope="module")
def acl_cluster(tmp_path_factory):
    env = {ENV_PREFIX + "REDIS_PASSWORD": DATA_PASSWORD, ENV_PREFIX + "REDIS_CONTROL_PASSWORD": CONTROL_PASSWORD}
    c = ProxyCluster(tmp_path_factory.mktemp("acl"), options={**TIMING, "ack": "replica",
                                                             "redis_username": "rrp-data",
                                                             "redis_control_username": "rrp-control"},
                     node_env={n: dict(env) for n in PROXY_NAMES})
    for s in c.rs.servers:
        s.extra_args += [*_user_args(DATA_ACL), *_user_args(CONTROL_ACL), *_user_args(REPL_ACL),
                         "--masteruser", "rrp-repl", "--masterauth", REPL_PASSWORD]
    start_or_clean(c, 60)
    try:
        yield c
    finally:
        c.cleanup()


def test_readme_documents_the_acl_lines_the_test_uses():
    text = README.read_text()
    for line in (DATA_ACL, CONTROL_ACL, REPL_ACL):
        assert line in text, f"README.md does not carry {line!r}"


def test_the_users_are_what_the_test_claims(acl_cluster):
    """ACL DRYRUN: the data user may not run the control commands; the control user may run
    every command the proxy's control paths send, and nothing that touches data."""
    master = acl_cluster.rs.master
    control_cmds = [["INFO", "replication"], ["REPLICAOF", "NO", "ONE"], ["REPLICAOF", "127.0.0.1", "1"],
                    ["CLIENT", "PAUSE", "1000", "WRITE"], ["CLIENT", "UNPAUSE"], ["SCRIPT", "KILL"],
                    ["FUNCTION", "KILL"], ["COMMAND"]]
    with master.client(decode=True, timeout=5) as c:
        for cmd in control_cmds:
            assert c.execute_command("ACL", "DRYRUN", "rrp-control", *cmd) == "OK", cmd
        for cmd in (["REPLICAOF", "NO", "ONE"], ["CONFIG", "SET", "maxmemory", "0"], ["CLIENT", "PAUSE", "10"]):
            assert c.execute_command("ACL", "DRYRUN", "rrp-data", *cmd) != "OK", cmd
        for cmd in (["GET", "k"], ["SET", "k", "v"], ["CONFIG", "GET", "maxmemory"]):
            assert c.execute_command("ACL", "DRYRUN", "rrp-control", *cmd) != "OK", cmd


def test_data_and_control_connections_use_their_own_users(acl_cluster):
    c = acl_cluster
    view = c.wait_stable(timeout=30)
    master = c.redis(view["master"])
    key = "acl:k"
    with c.proxy(view["leader"]).client() as r:
        assert r.set(key, "v1") is True                     # ack = replica: WAIT on the data connection
        assert r.get(key) == b"v1"                            # read your writes
        assert r.execute_command("WAIT", "1", "2000") >= 1    # a client's own WAIT (PUBLISH marker first)
        assert r.eval("return redis.call('GET', KEYS[1])", 1, key) == b"v1"
        sha = r.script_load("return 7")
        assert r.evalsha(sha, 0) == 7
        r.execute_command("SELECT", "1")
        assert r.set(key, "db1") is True
    with master.client(decode=True, timeout=5) as m:
        assert int(m.info("commandstats")["cmdstat_wait"]["calls"]) >= 2
    # pub/sub through the proxy
    sub_proxy, pub_proxy = c.proxy(PROXY_NAMES[0]), c.proxy(PROXY_NAMES[1])
    with sub_proxy.client() as sr, pub_proxy.client() as pr:
        ps = sr.pubsub()
        ps.subscribe("acl:chan")
        assert ps.get_message(timeout=5)["type"] == "subscribe"
        wait_until(lambda: pr.publish("acl:chan", "hello") >= 1, 10, message="a subscriber on acl:chan")
        msg = wait_until(lambda: ps.get_message(timeout=0.2), 10, message="the published message")
        assert msg["data"] == b"hello"
        ps.close()
    assert _has_user_connection(master, "rrp-data") and _has_user_connection(master, "rrp-control")
    assert not _acl_denials(master), "some proxy command was refused by Redis' ACLs"


def test_clients_still_cannot_change_roles_or_config(acl_cluster):
    c = acl_cluster
    view = c.wait_stable(timeout=30)
    with c.proxy(view["leader"]).client() as r:
        with pytest.raises(redis.ResponseError, match="managed by redis-raft-proxy"):
            r.execute_command("REPLICAOF", "NO", "ONE")
        with pytest.raises(NoPermissionError, match="config|set"):     # forwarded; the data user may not
            r.execute_command("CONFIG", "SET", "maxmemory", "0")
        with pytest.raises(NoPermissionError, match="client|pause"):
            r.execute_command("CLIENT", "PAUSE", "10")
    master = c.redis(view["master"])
    denied = {(e["username"], e["object"]) for e in _acl_denials(master)}
    assert denied == {("rrp-data", "config|set"), ("rrp-data", "client|pause")}, denied
    with master.client(timeout=5) as m:
        m.execute_command("ACL", "LOG", "RESET")


def test_failover_and_switchover_with_the_control_user(acl_cluster):
    """SIGKILL the master: the leader promotes a replica and repoints the other with the
    control user; the replica syncs with the replication user; then a switchover (CLIENT
    PAUSE, INFO, REPLICAOF) back to the other replica. No ACL denial anywhere."""
    c = acl_cluster
    view = c.wait_stable(timeout=30)
    old = c.redis(view["master"])
    for s in c.rs.servers:
        if s is not old:
            wait_replica_of(s, old)
    old.kill()
    after = c.wait_epoch(view["epoch"] + 1, timeout=30)
    new = c.redis(after["master"])
    assert new is not old
    wait_until(lambda: new.info("replication")["role"] == "master", 15,
               message=lambda: f"the reconciler to promote {new.addr}; logs: {c.logs(20)}")
    other = next(s for s in c.rs.servers if s is not old and s is not new)
    wait_replica_of(other, new)              # repointed by the reconciler; synced as rrp-repl
    with c.proxy(after["leader"]).client() as r:
        assert r.set("acl:after", "x") is True   # ack = replica: the repointed replica acknowledges
    leader = c.proxy(after["leader"])
    # the leader switches over only to a replica its own probes show healthy (synced, link up):
    # Redis says so a probe interval before the leader sees it
    wait_until(lambda: any(rep["addr"] == other.addr and rep["healthy"]
                           for rep in leader.status()["topology"]["replicas"]), 15,
               message=lambda: f"the leader to see {other.addr} as a healthy replica: {leader.status()['topology']}")
    res = run_ops("failover", "--to", other.addr, endpoint=f"http://127.0.0.1:{leader.admin_port}",
                  secret=RAFT_SECRET)
    assert res.returncode == 0, res.stdout + res.stderr
    final = c.wait_epoch(after["epoch"] + 1, timeout=30)
    assert final["master"] == other.addr
    # the switchover's duration is in the leader's histogram
    code, body = leader.http_get("/metrics")
    count = re.search(rb"^redis_raft_proxy_switchover_duration_seconds_count 1\.0$", body, re.MULTILINE)
    assert code == 200 and count, \
        body.decode(errors="replace")[-3000:]
    wait_replica_of(new, other)
    with c.proxy(final["leader"]).client() as r:
        assert r.set("acl:switched", "y") is True
        assert r.get("acl:after") == b"x"
    for s in (new, other):
        assert not _acl_denials(s), f"ACL denials on {s.addr}: {_acl_denials(s)}"
    logs = "".join(p.log_text() for p in c.proxies.values())
    assert "reconcile_failed" not in logs and "switchover_aborted" not in logs
    for secret in (DATA_PASSWORD, CONTROL_PASSWORD):
        assert not re.search(re.escape(secret), logs), "a Redis password reached a proxy log"
