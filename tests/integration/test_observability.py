"""Observability of a failover with real processes (issue 6): metrics, /status, the CLI, events.

One module-wide cluster (3 redis-server + 3 Raft proxies, `ProxyCluster`) goes
through ONE failover: metrics are scraped on every proxy, the master is
SIGKILLed, and once the new epoch is committed every test checks that one
window onto the cluster tells the same story: `/metrics` (Prometheus text and
OpenMetrics), `/status`, `redis-raft-proxy status` (table, `--json`, exit code)
and the structured `event=...` log lines.  The last test restarts the old
master and checks that it is demoted and that the CLI turns healthy again.

The proxies run with secrets (Raft secret, proxy `requirepass`, the password
they use towards Redis through an ACL user), all passed by environment, and no
secret may show in a log, /status or /metrics.

Tests share the failover (`Scenario.failed_over()` runs it once, inside the
first test that needs it, so the slow start is not bound by the fixture-setup
limit) and run in file order; the last one changes the cluster (old master back).
Every wait is a bounded poll.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.failover_lib import (
    PROXY_NAMES,
    RAFT_SECRET,
    ProxyCluster,
    wait_replica_of,
)

from .harness import (
    ENV_PREFIX,
    HOST,
    PROXY_BIN,
    free_port,
    redis_client,
    release_ports,
    start_or_clean,
    wait_until,
    yield_then_clean,
)

pytestmark = pytest.mark.timeout(120)

# the settings the time bounds are written for (as in test_failover.py)
TIMING = {"down_after_ms": 500, "hold_ms": 5000, "lease_ms": 1000}
REDIS_USER = "rrp-proxy"
REDIS_PASSWORD = "Redis-Upstream-Secret-5d1e"       # the proxies' password towards Redis (ACL user)
PROXY_PASSWORD = "Proxy-Requirepass-Secret-c07b"    # the proxies' own requirepass
SECRETS = (RAFT_SECRET, REDIS_PASSWORD, PROXY_PASSWORD)
# every event test reads both log formats: the last proxy logs JSON, the others logfmt
LOG_FORMATS = {n: ("json" if n == PROXY_NAMES[-1] else "kv") for n in PROXY_NAMES}


# ---------------------------------------------------------------------------
# scraping
# ---------------------------------------------------------------------------

def http_get(port: int, path: str, headers: dict | None = None, timeout: float = 2.0) -> tuple[str, str]:
    """(content type, body) of a 200 answer from a proxy's admin port."""
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        assert resp.status == 200, f"GET {path} answered {resp.status}"
        return resp.headers.get("Content-Type", ""), resp.read().decode()


class Metrics:
    """One /metrics scrape, parsed with prometheus_client; samples by sample name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, list[tuple[dict, float]]] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                self.samples.setdefault(s.name, []).append((dict(s.labels), s.value))

    def select(self, name: str, **labels: str) -> list[tuple[dict, float]]:
        return [(lab, v) for lab, v in self.samples.get(name, ()) if all(lab.get(k) == w for k, w in labels.items())]

    def value(self, name: str, **labels: str) -> float:
        found = self.select(name, **labels)
        assert len(found) == 1, f"expected one sample {name}{labels}, found {found}"
        return found[0][1]

    def sum(self, name: str, **labels: str) -> float:
        return sum(v for _, v in self.select(name, **labels))


def scrape(port: int) -> Metrics:
    return Metrics(http_get(port, "/metrics")[1])


def status(port: int) -> dict:
    return json.loads(http_get(port, "/status")[1])


def parse_log_line(line: str) -> dict:
    """One log line as a dict: a JSON object (`log_format = "json"`) or logfmt (`"kv"`), parsed
    independently of the proxy's formatter (json.loads; shlex for logfmt's quoting)."""
    if line.startswith("{"):
        doc = json.loads(line)
        assert isinstance(doc, dict), line
        return doc
    out = {}
    for token in shlex.split(line, posix=True):
        key, eq, value = token.partition("=")
        assert eq and re.fullmatch(r"[A-Za-z_][\w.-]*", key), f"not logfmt: {token!r} in {line!r}"
        out[key] = value
    return out


def log_lines(log: str) -> list[str]:
    """The proxy's own lines (not the harness's `===== start #n: <command>` markers)."""
    return [line for line in log.splitlines() if line.strip() and not line.startswith("===== start #")]


def log_records(log: str) -> list[dict]:
    return [parse_log_line(line) for line in log_lines(log)]


def events(log: str, name: str) -> list[dict[str, str]]:
    """The fields of every `event=<name>` log line (values as text, whichever the log format)."""
    out = []
    for rec in log_records(log):
        if rec.get("event") == name:
            out.append({k: v if isinstance(v, str) else json.dumps(v) for k, v in rec.items()})
    return out


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return subprocess.run([PROXY_BIN, "status", *args], capture_output=True, text=True, timeout=timeout, env=env)


# ---------------------------------------------------------------------------
# the shared failover
# ---------------------------------------------------------------------------

@dataclass
class Scenario:
    root: Path
    cluster: ProxyCluster | None = None
    before: dict[str, Metrics] = field(default_factory=dict)
    e0: int = 0
    old: str = ""              # the killed master
    new: str = ""              # the promoted replica
    epoch: int = 0             # the new epoch
    leader: str = ""           # the proxy that led the failover
    rejoined: bool = False
    _tried: bool = False
    _done: bool = False

    def admin(self, name: str) -> int:
        return self.cluster.admin_ports[name]

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.admin(name)}"

    def log(self, name: str) -> str:
        return self.cluster.proxy(name).log_text()

    def wait_event(self, name: str, event: str, timeout: float = 15.0, **fields: str) -> dict[str, str]:
        def found():
            return next((e for e in events(self.log(name), event)
                         if all(e.get(k) == v for k, v in fields.items())), None)
        return wait_until(found, timeout, message=lambda: f"event={event} {fields} in the log of {name}:\n"
                                                          f"{self.cluster.proxy(name).log_tail(30)}")

    def failed_over(self) -> Scenario:
        """Start the cluster, scrape baselines, SIGKILL the master, wait for the new epoch (once)."""
        if self._done:
            return self
        if self._tried:
            pytest.fail("the shared failover already failed in an earlier test")
        self._tried = True
        node_env = {n: {ENV_PREFIX + "REDIS_PASSWORD": REDIS_PASSWORD, ENV_PREFIX + "REQUIREPASS": PROXY_PASSWORD,
                        ENV_PREFIX + "LOG_FORMAT": LOG_FORMATS[n]}
                    for n in PROXY_NAMES}
        c = ProxyCluster(self.root, options={**TIMING, "redis_username": REDIS_USER}, node_env=node_env)
        for s in c.rs.servers:
            # the proxies' own ACL user; replication and the tests use the passwordless default user
            s.extra_args += ["--user", REDIS_USER, "on", f">{REDIS_PASSWORD}", "~*", "&*", "+@all"]
        self.cluster = start_or_clean(c, 60)
        view = c.wait_stable(timeout=30)
        self.e0, self.old = view["epoch"], view["master"]
        assert self.old == c.rs.master.addr
        for name in c.names:
            self.before[name] = scrape(self.admin(name))
        c.redis(self.old).kill()                                    # SIGKILL
        after = c.wait_epoch(self.e0 + 1, timeout=30)
        self.epoch, self.new = after["epoch"], after["master"]
        assert self.epoch == self.e0 + 1, f"expected one failover to epoch {self.e0 + 1}, got {self.epoch}"
        assert self.new != self.old and self.new in c.rs.addrs

        def committed():
            return [n for n in c.names if events(self.log(n), "failover_committed")]
        leaders = wait_until(committed, 10, message="an event=failover_committed in some proxy's log")
        assert len(leaders) == 1, f"failover_committed logged by {leaders}"
        self.leader = leaders[0]
        self._done = True
        return self

    def rejoin(self) -> None:
        """Restart the killed master (empty, as a master) and wait until it is an in-sync replica."""
        c = self.failed_over().cluster
        old, new = c.redis(self.old), c.redis(self.new)
        if not self.rejoined:
            old.replicaof = None
            old.start()
            self.rejoined = True
        wait_replica_of(old, new, timeout=30)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    yield from yield_then_clean(Scenario(tmp_path_factory.mktemp("observability")))


def down(scenario: Scenario) -> Scenario:
    """The cluster right after the failover, the killed master still down (called in the test,
    not in a fixture: conftest gives a fixture's setup only 60 s)."""
    sc = scenario.failed_over()
    if sc.rejoined:
        pytest.skip("the old master was already restarted (tests run out of file order)")
    return sc


# ---------------------------------------------------------------------------
# 1. /metrics
# ---------------------------------------------------------------------------

def test_metrics_reflect_the_failover(scenario):
    sc = down(scenario)
    c = sc.cluster
    # the failover counters are per proxy: failovers this proxy committed as the Raft leader
    # (health/shard/controller.py), so the leader counts one and the others none
    # (and every proxy holds its lease: it lapses for a moment when a starved event loop misses
    # 3 ticks, or while a commit is not applied yet, so one scrape may catch it out)
    def counted():
        now = {n: scrape(sc.admin(n)) for n in c.names}
        done = now[sc.leader].value("redis_raft_proxy_failovers_total") >= 1
        return now if done and all(m.value("redis_raft_proxy_lease_held") == 1.0 for m in now.values()) else None
    now = wait_until(counted, 10, message=f"{sc.leader}'s failover counter to count the failover, every lease held")
    for name in c.names:
        m, b = now[name], sc.before[name]
        delta = m.value("redis_raft_proxy_failovers_total") - b.value("redis_raft_proxy_failovers_total")
        assert delta == (1 if name == sc.leader else 0), f"{name}: failovers_total grew by {delta}"
        duration = m.value("redis_raft_proxy_last_failover_duration_seconds")
        if name == sc.leader:
            assert duration > 0, f"{name}: last failover duration {duration}"
        else:
            assert duration == 0, f"{name} led no failover but reports a duration of {duration}s"
        # the failover's duration as a histogram too: one observation on the leader, none elsewhere
        count = m.value("redis_raft_proxy_failover_duration_seconds_count")
        assert count == (1 if name == sc.leader else 0), f"{name}: failover histogram count {count}"
        assert m.value("redis_raft_proxy_failover_duration_seconds_bucket", le="+Inf") == count
        assert m.value("redis_raft_proxy_failover_duration_seconds_sum") == pytest.approx(duration, abs=1e-6)
        assert m.value("redis_raft_proxy_switchover_duration_seconds_count") == 0
        # the committed topology: new master, one info sample, no label that changes every failover
        info = m.select("redis_raft_proxy_master_info")
        assert [lab for lab, _ in info] == [{"node": sc.new}], f"{name}: {info}"
        assert info[0][1] == 1.0
        assert m.value("redis_raft_proxy_topology_epoch") == sc.epoch
        assert (m.value("redis_raft_proxy_topology_changes_total")
                - b.value("redis_raft_proxy_topology_changes_total")) == 1, name
        assert b.select("redis_raft_proxy_master_info")[0][0] == {"node": sc.old}
        # Raft messages were timed: the Raft leader's to both followers, a follower's (its answers) to the leader
        raft_leader = status(sc.admin(name))["raft"]["leader"]
        peers = {lab["peer"] for lab, _ in m.select("redis_raft_proxy_raft_rpc_duration_seconds_count")}
        expected = set(c.names) - {name} if raft_leader == name else {raft_leader}
        assert expected <= peers, f"{name}: timed peers {peers}, Raft leader {raft_leader}"
        assert all(v > 0 for _, v in m.select("redis_raft_proxy_raft_rpc_duration_seconds_count"))
        # the standard process metrics and the build info
        for std in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                    "process_start_time_seconds"):
            assert m.value(std) > 0, (name, std)
        (build, one), = m.select("redis_raft_proxy_build_info")
        assert one == 1.0 and build["version"] and build["speedups"] in ("true", "false"), build
        # the fsync histogram has timed Raft saves (votes, entries)
        assert m.value("redis_raft_proxy_raft_fsync_duration_seconds_count") > 0, name
        assert m.value("redis_raft_proxy_raft_fsync_duration_seconds_bucket", le="+Inf") == \
            m.value("redis_raft_proxy_raft_fsync_duration_seconds_count")
        assert m.value("redis_raft_proxy_raft_fsync_duration_seconds_sum") > 0, name
        assert m.value("redis_raft_proxy_lease_held") == 1.0, name
        assert m.value("redis_raft_proxy_raft_storage_failed") == 0.0, name

    # the killed node is down, the others up, on every proxy (a proxy may see it a probe later)
    def node_up():
        out = {n: {lab["node"]: v for lab, v in scrape(sc.admin(n)).select("redis_raft_proxy_redis_node_up")}
               for n in c.names}
        return out if all(v[sc.old] == 0.0 for v in out.values()) else None
    ups = wait_until(node_up, 10, message=f"every proxy to report {sc.old} down")
    for name, nodes in ups.items():
        assert set(nodes) == set(c.rs.addrs), name
        assert all(v == 1.0 for a, v in nodes.items() if a != sc.old), f"{name}: {nodes}"

    # on the leader the new master reports role master once REPLICAOF NO ONE took effect
    wait_until(lambda: scrape(sc.admin(sc.leader)).value("redis_raft_proxy_redis_node_is_master", node=sc.new) == 1,
               10, message=f"{sc.leader} to see {sc.new} as role master")


def test_raft_metrics_agree_with_status(scenario):
    sc = down(scenario)
    c = sc.cluster
    for name in c.names:
        port = sc.admin(name)

        def consistent(port=port):
            # /status, /metrics, /status: Raft state and lease unchanged in between, so both describe
            # the same moment
            s1, m, s2 = status(port), scrape(port), status(port)
            keys = ("role", "term", "leader", "commit_index", "applied_index")
            same = all(s1["raft"][k] == s2["raft"][k] for k in keys) and s1["lease"]["held"] == s2["lease"]["held"]
            return (s1, m) if same else None
        st, m = wait_until(consistent, 10, message=f"a quiet moment in {name}'s Raft state")
        raft = st["raft"]
        assert m.value("redis_raft_proxy_raft_term") == raft["term"], name
        assert m.value("redis_raft_proxy_raft_commit_index") == raft["commit_index"], name
        assert m.value("redis_raft_proxy_raft_applied_index") == raft["applied_index"], name
        roles = {lab["role"]: v for lab, v in m.select("redis_raft_proxy_raft_role")}
        expected = {r: (1.0 if r == raft["role"] else 0.0) for r in ("leader", "follower", "candidate", "learner")}
        assert roles == expected, \
            f"{name}: role gauges {roles}, /status says {raft['role']}"
        assert m.value("redis_raft_proxy_lease_held") == (1.0 if st["lease"]["held"] else 0.0)
        assert m.value("redis_raft_proxy_topology_epoch") == st["topology"]["epoch"] == sc.epoch
        assert m.value("redis_raft_proxy_failovers_total") == st["failover"]["total"], name
        assert m.value("redis_raft_proxy_last_failover_duration_seconds") == \
            pytest.approx(st["failover"]["last_duration_s"], abs=0.001)
        phases = {lab["phase"]: v for lab, v in m.select("redis_raft_proxy_failover_phase")}
        assert sum(phases.values()) == 1.0 and phases.get(st["failover"]["phase"]) == 1.0, \
            f"{name}: phase gauges {phases} vs /status {st['failover']['phase']}"
    # every proxy names the same Raft cluster id in /status (chosen by the first leader)
    ids = {status(sc.admin(name))["raft"]["cluster_id"] for name in c.names}
    assert len(ids) == 1 and None not in ids and len(ids.pop()) == 32, ids


def test_a_frozen_follower_reports_how_late_its_loop_woke(scenario):
    """A follower stopped (SIGSTOP) for 300 ms wakes 200-300 ms late (its next 100 ms
    wake-up fell inside the stop): `event=loop_late` in its log and one more wake-up above
    100 ms in `redis_raft_proxy_event_loop_lag_seconds` (what explains a `lease_lost` that
    no Redis or network fault does). 300 ms is the fault's length, not a wait: less than
    an election timeout, so nothing else changes."""
    sc = down(scenario)
    c = sc.cluster
    name = next(n for n in c.names if status(sc.admin(n))["raft"]["role"] == "follower")

    def slower_than_100ms() -> float:
        m = scrape(sc.admin(name))
        return m.value("redis_raft_proxy_event_loop_lag_seconds_count") - \
            m.value("redis_raft_proxy_event_loop_lag_seconds_bucket", le="0.1")
    before = slower_than_100ms()
    assert scrape(sc.admin(name)).value("redis_raft_proxy_event_loop_lag_seconds_count") > 0
    proxy = c.proxy(name)
    proxy.stop()
    try:
        time.sleep(0.3)
    finally:
        proxy.cont()
    wait_until(lambda: slower_than_100ms() >= before + 1, 10, message=f"a late wake-up counted by {name}")
    lines = wait_until(lambda: [e for e in events(sc.log(name), "loop_late") if float(e["ms"]) >= 150], 10,
                       message=lambda: f"event=loop_late ms>=150 in the log of {name}:\n{proxy.log_tail(30)}")
    assert all(e["role"] == "follower" and float(e["ms"]) < 5000 for e in lines), lines


def test_command_counters_count_traffic_by_class(scenario):
    sc = down(scenario)
    c = sc.cluster
    endpoint = c.proxy(next(n for n in c.names if n != sc.leader))      # a follower's client port
    port = sc.admin(endpoint.node)
    before = scrape(port)
    n = 50
    with redis_client(endpoint.port, decode=True, password=PROXY_PASSWORD) as cl:
        for i in range(n):
            assert cl.set(f"obs:{i}", f"v{i}") is True
        for i in range(n):
            assert cl.get(f"obs:{i}") == f"v{i}"
    after = scrape(port)

    def grew(cls: str, **labels: str) -> float:
        name = "redis_raft_proxy_commands_total"
        return after.sum(name, **{"class": cls}, **labels) - before.sum(name, **{"class": cls}, **labels)

    assert grew("write", node=sc.new) >= n, "SETs were not counted as writes to the new master"
    assert grew("write", node=sc.old) == 0, "writes counted against the killed master"
    assert grew("read") >= n, "GETs were not counted as reads"
    timed = (after.sum("redis_raft_proxy_command_duration_seconds_count", **{"class": "write"})
             - before.sum("redis_raft_proxy_command_duration_seconds_count", **{"class": "write"}))
    assert timed >= n, f"{timed} write batches timed for {n} sequential SETs"
    assert after.value("redis_raft_proxy_client_connections_accepted_total") > \
        before.value("redis_raft_proxy_client_connections_accepted_total")
    assert after.value("redis_raft_proxy_client_bytes_in_total") > \
        before.value("redis_raft_proxy_client_bytes_in_total")


def test_openmetrics_negotiation(scenario):
    sc = down(scenario)
    port = sc.admin(sc.leader)
    ctype, body = http_get(port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"})
    assert ctype.startswith("application/openmetrics-text"), ctype
    assert body.endswith("# EOF\n"), body[-200:]
    fams = {f.name: f for f in om_families(body)}
    assert fams["redis_raft_proxy_failovers"].samples[0].value == 1
    assert fams["redis_raft_proxy_master"].type == "info"
    assert fams["redis_raft_proxy_master"].samples[0].labels == {"node": sc.new}
    ctype, body = http_get(port, "/metrics")
    assert ctype.startswith("text/plain") and "# EOF" not in body, ctype


# ---------------------------------------------------------------------------
# 2. /status
# ---------------------------------------------------------------------------

def test_status_reflects_the_failover(scenario):
    sc = down(scenario)
    c = sc.cluster

    def views():
        out = {n: status(sc.admin(n)) for n in c.names}
        # every proxy has probed the killed node as down by now (or soon), and holds its lease: a
        # lease lapses for a moment when the event loop is starved past 3 ticks (a loaded CI
        # machine), or on a follower that has not applied an entry its leader committed yet
        return out if all(not r["healthy"] for st in out.values() for r in st["topology"]["replicas"]
                          if r["addr"] == sc.old) and all(st["lease"]["held"] for st in out.values()) else None
    sts = wait_until(views, 10, message=f"every /status to show {sc.old} unhealthy and every lease held")
    leaders = {st["raft"]["leader"] for st in sts.values()}
    assert len(leaders) == 1 and None not in leaders, f"proxies disagree on the Raft leader: {leaders}"
    leader = leaders.pop()
    for name, st in sts.items():
        # the docs/design.md contract
        assert st["node"] == name and isinstance(st["pid"], int) and st["version"]
        raft = st["raft"]
        for k in ("role", "term", "leader", "members", "commit_index"):
            assert k in raft, f"{name}: raft.{k} missing"
        assert sorted(raft["members"]) == sorted(c.names)
        assert raft["role"] == ("leader" if name == leader else "follower"), name
        assert st["lease"]["held"] is True, name
        topo = st["topology"]
        assert topo["epoch"] == sc.e0 + 1 and topo["master"] == sc.new, f"{name}: {topo}"
        assert topo["master_up"] is True
        replicas = {r["addr"]: r for r in topo["replicas"]}
        assert set(replicas) == set(c.rs.addrs) - {sc.new}, f"{name}: replicas {sorted(replicas)}"
        for r in replicas.values():
            assert {"addr", "healthy", "lag_ms", "lag_bytes",
                    "replication_lag_bytes", "replication_lag_ms", "probe_age_ms"} <= set(r), r
            assert r["lag_ms"] == r["probe_age_ms"] and r["lag_bytes"] == r["replication_lag_bytes"], r
        assert replicas[sc.old]["healthy"] is False and replicas[sc.old]["up"] is False, f"{name}: {replicas[sc.old]}"
        nodes = {n["addr"]: n for n in st["nodes"]}
        assert nodes[sc.old]["up"] is False
        # the failover block: counted on the proxy that led it, with its duration
        fo = st["failover"]
        if name == sc.leader:
            assert fo["total"] == 1 and fo["last_duration_s"] > 0, f"{name}: {fo}"
        else:
            assert fo["total"] == 0, f"{name}: {fo}"
    # the surviving replica follows the new master and is readable
    other = next(a for a in c.rs.addrs if a not in (sc.old, sc.new))
    wait_replica_of(c.redis(other), c.redis(sc.new), timeout=20)
    wait_until(lambda: all(r["healthy"] for n in c.names for r in status(sc.admin(n))["topology"]["replicas"]
                           if r["addr"] == other), 10, message=f"{other} to be a healthy replica everywhere")


# ---------------------------------------------------------------------------
# 3. the CLI
# ---------------------------------------------------------------------------

def test_cli_status_while_the_old_master_is_down(scenario):
    sc = down(scenario)
    c = sc.cluster
    follower = next(n for n in c.names if n != sc.leader)
    r = run_cli("--endpoint", sc.url(follower))
    assert r.returncode == 1, f"exit {r.returncode} with a replica down:\n{r.stdout}\n{r.stderr}"
    out = r.stdout
    assert f"topology epoch {sc.epoch}, master {sc.new}" in out, out
    assert "PROBLEMS" in out and f"replica {sc.old} not healthy" in out, out
    row = next(line for line in out.splitlines() if line.startswith(sc.old))
    assert " NO " in row, f"the killed node's row does not say it is down: {row!r}"
    for name in c.names:
        prow = next((line for line in out.splitlines() if line.startswith(name + " ")), None)
        assert prow is not None and "unreachable" not in prow, f"no row for {name}:\n{out}"
        assert prow.split()[5] == str(sc.epoch), prow
    assert f"failovers led by {follower}: 0" in out, out

    r = run_cli("--endpoint", sc.url(sc.leader), "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    st = status(sc.admin(sc.leader))
    got = doc["status"]
    assert got["node"] == st["node"] == sc.leader
    assert got["topology"]["epoch"] == st["topology"]["epoch"] == sc.epoch
    assert got["topology"]["master"] == st["topology"]["master"] == sc.new
    assert got["raft"]["leader"] == st["raft"]["leader"] and got["raft"]["members"] == st["raft"]["members"]
    assert got["failover"]["total"] == st["failover"]["total"] == 1
    assert sorted(doc["proxies"]) == sorted(c.names)
    assert all(p["topology"]["epoch"] == sc.epoch for p in doc["proxies"].values())
    assert f"replica {sc.old} not healthy" in doc["problems"], doc["problems"]
    for secret in SECRETS:
        assert secret not in r.stdout


def test_cli_status_unreachable_endpoint():
    port = free_port()       # reserved, nothing listens on it
    try:
        r = run_cli("--endpoint", f"http://{HOST}:{port}")
    finally:
        release_ports([port])
    assert r.returncode != 0
    assert f"no proxy answers at http://{HOST}:{port}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# 4. events in the logs
# ---------------------------------------------------------------------------

def test_events_tell_the_failover(scenario):
    sc = down(scenario)
    c = sc.cluster
    for name in c.names:
        sc.wait_event(name, "node_subjectively_down", node=sc.old)
        ev = sc.wait_event(name, "topology_applied", epoch=str(sc.epoch))
        assert ev["master"] == sc.new, ev
    committed = events(sc.log(sc.leader), "failover_committed")
    assert len(committed) == 1, committed
    ev = committed[0]
    assert ev["epoch"] == str(sc.epoch) and ev["new_master"] == sc.new, ev
    assert float(ev["duration_ms"]) > 0, ev
    started = events(sc.log(sc.leader), "failover_started")
    assert [(e["old_master"], e["new_master"], e["epoch"]) for e in started] == [(sc.old, sc.new, str(sc.epoch))]
    assert events(sc.log(sc.leader), "objectively_down")[-1]["master"] == sc.old
    sc.wait_event(sc.leader, "node_promoted", node=sc.new, epoch=str(sc.epoch))
    for name in c.names:
        if name != sc.leader:
            assert not events(sc.log(name), "failover_committed"), f"{name} also logged failover_committed"
        # every proxy logged the Raft leader it follows (no leader change: a Redis failover is not a Raft one)
        elected = events(sc.log(name), "leader_elected")
        assert elected and elected[-1]["leader"] == sc.leader, (name, elected)


def test_log_lines_are_structured_in_both_formats(scenario):
    """Every line of a real proxy's log is one logfmt record (`kv`) or one JSON object (`json`) whose
    event fields are top-level keys, not a `msg` string wrapping `event=...`."""
    sc = down(scenario)
    for name in sc.cluster.names:
        log = sc.log(name)
        records = log_records(log)
        assert records, f"{name} logged nothing"
        fmt = LOG_FORMATS[name]
        assert all(line.startswith("{") == (fmt == "json") for line in log_lines(log)), f"{name}: mixed formats"
        for rec in records:
            assert {"ts", "level", "logger"} <= set(rec) and rec["proxy"] == name, rec
            assert "event=" not in str(rec.get("msg", "")), f"{name}: event wrapped in msg: {rec}"
        applied = [r for r in records if r.get("event") == "topology_applied" and str(r["epoch"]) == str(sc.epoch)]
        assert applied and applied[-1]["master"] == sc.new, (name, applied)
        if fmt == "json":
            # typed values: numbers are JSON numbers, Python literals (the start-up config) JSON objects
            assert applied[-1]["epoch"] == sc.epoch and isinstance(applied[-1]["epoch"], int), applied[-1]
            assert isinstance(next(r for r in records if r.get("event") == "starting")["config"], dict)
        else:
            assert re.search(rf"^ts=\S+ level=warning logger=proxy.server proxy={name} event=topology_applied "
                             rf"epoch={sc.epoch} master={re.escape(sc.new)} ", log, re.MULTILINE), \
                f"{name}: no logfmt topology_applied line"
    committed = events(sc.log(sc.leader), "failover_committed")[0]
    assert float(committed["duration_ms"]) > 0 and committed["logger"] == "health.controller", committed


def test_no_secret_in_logs_status_or_metrics(scenario):
    sc = down(scenario)
    c = sc.cluster
    for name in c.names:
        log = sc.log(name)
        assert events(log, "topology_applied")       # the log is the proxy's, and it is not empty
        # the start-up line prints the configuration with secrets masked
        config = events(log, "starting")[0]["config"]
        assert re.search(r"""['"]raft_secret['"]: ['"]\*\*\*['"]""", config), "no masked raft_secret at start-up"
        assert re.search(r"""['"]redis_password['"]: ['"]\*\*\*['"]""", config), "no masked redis_password"
        exposed = {
            "log": log,
            "/status": http_get(sc.admin(name), "/status")[1],
            "/metrics": http_get(sc.admin(name), "/metrics")[1],
        }
        for where, text in exposed.items():
            for secret in SECRETS:
                assert secret not in text, f"a secret appears in {name}'s {where}"


# ---------------------------------------------------------------------------
# 5. the old master returns
# ---------------------------------------------------------------------------

def test_old_master_returns_demoted_and_cli_turns_healthy(scenario):
    sc = scenario.failed_over()
    c = sc.cluster
    sc.rejoin()
    # the leader's reconciler demoted it under the new epoch
    demoted = [e for n in c.names for e in events(sc.log(n), "node_demoted") if e.get("node") == sc.old]
    assert demoted, "no event=node_demoted for the returning old master"
    assert demoted[-1]["replicaof"] == sc.new and demoted[-1]["epoch"] == str(sc.epoch), demoted
    for name in c.names:
        sc.wait_event(name, "node_up", node=sc.old)

    def healthy():
        r = run_cli("--endpoint", sc.url(sc.leader))
        return r if r.returncode == 0 else None
    r = wait_until(healthy, 20, interval=0.2, message="`redis-raft-proxy status` to exit 0")
    assert f"topology epoch {sc.epoch}, master {sc.new}" in r.stdout
    assert r.stdout.rstrip().endswith("healthy") and "PROBLEMS" not in r.stdout, r.stdout
    for name in c.names:
        # each proxy probes on its own: a follower may still see the resyncing node -LOADING
        def old_healthy(name=name):
            st = status(sc.admin(name))
            old = next(x for x in st["topology"]["replicas"] if x["addr"] == sc.old)
            return st if old["healthy"] is True else None
        st = wait_until(old_healthy, 20, interval=0.2, message=f"{name} to see {sc.old} healthy")
        assert st["topology"]["epoch"] == sc.epoch and st["topology"]["master"] == sc.new
        m = scrape(sc.admin(name))
        assert m.value("redis_raft_proxy_redis_node_up", node=sc.old) == 1.0
        # per replica: its link to the master, its lag in bytes and in seconds (the master is idle here)
        replicas = set(c.rs.addrs) - {sc.new}
        assert {lab["node"] for lab, _ in m.select("redis_raft_proxy_redis_replica_link_up")} == replicas, name
        assert m.value("redis_raft_proxy_redis_replica_link_up", node=sc.old) == 1.0
        assert {lab["node"] for lab, _ in m.select("redis_raft_proxy_redis_replica_lag_bytes")} == replicas, name
        lag_s = {lab["node"]: v for lab, v in m.select("redis_raft_proxy_redis_replica_lag_seconds")}
        assert set(lag_s) == replicas and all(0 <= v < 30 for v in lag_s.values()), (name, lag_s)
        assert m.value("redis_raft_proxy_redis_node_is_master", node=sc.old) == 0.0
        # still exactly the one failover
        assert m.value("redis_raft_proxy_failovers_total") == (1 if name == sc.leader else 0)
