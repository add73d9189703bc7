"""`/status` names what it shows (issue 18): a replica's replication lag (bytes, ms) and the
age of this proxy's last probe are separate fields; the old `lag_bytes` / `lag_ms` stay, with
`lag_ms` being the probe age it always was (deprecated: README, "Contract changes for observability")."""

from __future__ import annotations

import time
from collections import deque

from health.probes.probe import Health
from proxy.process.admin import topology_doc
from proxy.process.ops_cli import render
from proxy.routing.topology import Topology


def _health(now: float) -> Health:
    h = Health(["m:1", "r:2", "r:3"], down_after_ms=5000)
    m = h.nodes["m:1"]
    # the master probed every 100 ms, the last one 50 ms ago: its offset grew past 150 at -0.25 s
    m.samples = deque([(now - 0.45, 100), (now - 0.35, 150), (now - 0.25, 200), (now - 0.15, 260)])
    m.ever_ok, m.last_ok, m.offset, m.role = True, now - 0.05, 260, "master"
    r = h.nodes["r:2"]
    r.ever_ok, r.last_ok, r.offset, r.role, r.link_up, r.master_addr = True, now - 0.2, 150, "slave", True, "m:1"
    r.probe_ms = 1.25
    h.nodes["r:3"].since = now - 60          # never answered, for a minute: down
    return h


def test_replica_fields_say_lag_or_probe_age():
    now = time.monotonic()
    doc = topology_doc(_health(now), Topology(3, "m:1", ("r:2", "r:3")), None)
    r2, r3 = doc["replicas"]
    assert r2["replication_lag_bytes"] == 110
    # data the replica lacked existed from the master probe at now-0.25 to its own probe at now-0.2
    assert r2["replication_lag_ms"] == 50
    # the probe age grows with time since the probe, whatever the lag (200 ms and a little)
    assert 200 <= r2["probe_age_ms"] < 200 + 1000
    # deprecated names, kept: lag_ms was always the probe age
    assert (r2["lag_bytes"], r2["lag_ms"]) == (r2["replication_lag_bytes"], r2["probe_age_ms"])
    assert [r3[k] for k in ("replication_lag_bytes", "replication_lag_ms", "probe_age_ms", "lag_ms")] == [None] * 4


def test_nodes_section_has_probe_age_and_round_trip():
    now = time.monotonic()
    h = _health(now)
    n2 = h.nodes["r:2"].to_dict(now, h.down_after)
    assert n2["probe_age_ms"] == 200 and n2["probe_rtt_ms"] == 1.25
    n3 = h.nodes["r:3"].to_dict(now, h.down_after)
    assert n3["probe_age_ms"] is None and n3["probe_rtt_ms"] is None


def test_status_cli_shows_replication_lag_and_probe_age_by_their_names():
    now = time.monotonic()
    h = _health(now)
    st = {"node": "proxy-1", "raft": {"role": "leader", "term": 2, "leader": "proxy-1"}, "lease": {"held": True},
          "clients": {"connected": 0}, "failover": {},
          "topology": topology_doc(h, Topology(3, "m:1", ("r:2", "r:3")), None),
          "nodes": [s.to_dict(now, h.down_after) for s in h.nodes.values()]}
    st["topology"]["replicas"][0].update(replication_lag_ms=50, probe_age_ms=123)   # fixed for the text
    st["nodes"][1]["probe_age_ms"] = 123
    text = render(st, {"proxy-1": st})
    header = next(ln for ln in text.splitlines() if ln.startswith("REDIS NODE"))
    assert "LAG(bytes)" in header and "LAG(ms)" in header and "PROBE AGE(ms)" in header
    line = next(ln for ln in text.splitlines() if ln.startswith("r:2 "))
    assert line.split()[4:7] == ["110", "50", "123"], line
