"""Prometheus metrics, cheap on the hot path.

The data path only bumps plain ints and dicts (per group of commands, not
per command); `ProxyCollector` turns them into Prometheus families when
`/metrics` is scraped.  Labels are bounded: command class, Redis node
address (from config), Raft peer (the membership), error kind, Raft role:
never keys or client addresses, and never a value that changes with every
failover (the epoch is a gauge's value, not a label).  The registry also
carries the standard `process_*` and `python_*` collectors.
"""

from __future__ import annotations

import platform
import time
from collections import defaultdict

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder

from health.histogram import Histogram

from .. import __version__

KIND_NAMES = {1: "read", 2: "write", 3: "admin", 4: "blocking", 0: "other"}
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0)
RAFT_RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# every phase health.shard's controller sets (tests/unit/test_failover_phases.py checks the list)
FAILOVER_PHASES = ("idle", "objectively_down", "busy", "proposing", "reconciling", "no_candidate", "never_seen",
                   "no_safe_master", "switchover", "paused")


class Stats:
    """Counters the data path and the control loop update."""

    def __init__(self) -> None:
        # node -> kind -> count (nested: the hot path builds no tuple key per batch)
        self.commands: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.latency: dict[int, Histogram] = defaultdict(lambda: Histogram(LATENCY_BUCKETS))       # kind -> histogram
        self.upstream_errors: dict[tuple[str, str], int] = defaultdict(int)  # (node, kind)
        self.bytes_in = 0
        self.bytes_out = 0
        self.held_total = 0
        self.hold_seconds = Histogram((0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0))
        self.hold_timeouts = 0
        # Raft saves that had to reach the disk, timed around the executor call
        self.fsync_seconds = Histogram((0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
        # how late the Raft ticker's 100 ms wake-ups ran (the event loop busy, or not scheduled)
        self.loop_lag_seconds = Histogram((0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        self.leader_changes = 0
        self.elections = 0
        self.topology_changes = 0
        self.redirects_followed = 0     # cluster mode: MOVED answers followed inside the proxy
        # Raft messages to peers: one POST per batch (raft/transport.py reports each)
        self.raft_rpc_seconds: dict[str, Histogram] = defaultdict(lambda: Histogram(RAFT_RPC_BUCKETS))
        self.raft_rpc_errors: dict[tuple[str, str], int] = defaultdict(int)     # (peer, kind)
        self._last_leader = None
        self._last_term = 0

    def observe_raft_rpc(self, peer: str, seconds: float | None, error: str | None) -> None:
        """One POST of Raft messages to `peer`: its round trip (None: no answer) and error kind."""
        if seconds is not None:
            self.raft_rpc_seconds[peer].observe(seconds)
        if error is not None:
            self.raft_rpc_errors[peer, error] += 1

    def observe_raft(self, consensus) -> None:
        """Called each control step: counts leader changes and new terms."""
        leader, term = consensus.leader_id, consensus.term
        if leader != self._last_leader:
            if self._last_leader is not None or leader is not None:
                self.leader_changes += 1
            self._last_leader = leader
        if term > self._last_term:
            self.elections += term - self._last_term if self._last_term else 0
            self._last_term = term


def _speedups() -> bool:
    try:
        from ..protocol import _speedups  # noqa: F401
    except ImportError:
        return False
    return True


def build_info() -> InfoMetricFamily:
    info = InfoMetricFamily("redis_raft_proxy_build", "The running version (value 1)",
                            labels=["version", "python", "speedups"])
    info.add_metric([__version__, platform.python_version(), "true" if _speedups() else "false"], {})
    return info


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc)
    h.add_metric([], hist.family_buckets(), hist.total)
    return h


def _one(cls, name: str, doc: str, value: float):
    """A family with a single unlabelled sample."""
    fam = cls(name, doc)
    fam.add_metric([], value)
    return fam


class ProxyCollector:
    def __init__(self, server) -> None:
        self.server = server

    def _tls(self):
        tls = self.server.tls
        c = CounterMetricFamily("redis_raft_proxy_tls_handshake_failures", "Client TLS handshakes that failed or "
                                "stalled (the connection was closed)", labels=["listener"])
        for listener, n in list(tls.handshake_failures.items()):
            c.add_metric([listener], n)
        yield c
        yield _one(CounterMetricFamily, "redis_raft_proxy_tls_reloads", "Certificates reloaded after their files "
                   "changed", tls.reloader.reloads)
        yield _one(CounterMetricFamily, "redis_raft_proxy_tls_reload_failures", "Changed certificate files that "
                   "did not load (the previous certificate stays in use)", tls.reloader.failures)
        g = GaugeMetricFamily("redis_raft_proxy_tls_certificate_expiry_timestamp_seconds", "When the certificate "
                              "a TLS context presents expires (Unix time)", labels=["context"])
        for name, when in tls.reloader.expiries().items():
            g.add_metric([name], when)
        yield g

    def collect(self):
        s = self.server
        st: Stats = s.stats
        yield build_info()
        c = CounterMetricFamily("redis_raft_proxy_commands", "Commands forwarded, by class and target node",
                                labels=["class", "node"])
        counts: dict[tuple[str, str], float] = {}
        for node, by_kind in list(st.commands.items()):
            for kind, n in list(by_kind.items()):
                key = (KIND_NAMES.get(kind, "other"), node)
                counts[key] = counts.get(key, 0) + n
        dp = s.dataplane if s.cfg.command_metrics else None
        for node, (reads, writes) in (dp.node_stats() if dp is not None else {}).items():
            for key, n in (("read", node), reads), (("write", node), writes):   # the C data plane's
                counts[key] = counts.get(key, 0) + n
        for (kind, node), n in counts.items():
            c.add_metric([kind, node], n)
        yield c
        h = HistogramMetricFamily("redis_raft_proxy_command_duration_seconds",
                                  "Time from a command batch leaving the proxy to its replies being complete",
                                  labels=["class"])
        hists = dict(st.latency)
        for kind, (counts, total) in (dp.latency() if dp is not None else {}).items():    # the C data plane's
            merged = Histogram(LATENCY_BUCKETS)
            if kind in hists:
                merged.counts, merged.total = list(hists[kind].counts), hists[kind].total
            merged.counts = [a + b for a, b in zip(merged.counts, counts)]
            merged.total += total
            hists[kind] = merged
        for kind, hist in list(hists.items()):
            h.add_metric([KIND_NAMES.get(kind, "other")], hist.family_buckets(), hist.total)
        yield h
        e = CounterMetricFamily("redis_raft_proxy_upstream_errors", "Upstream connection failures",
                                labels=["node", "kind"])
        for (node, kind), n in list(st.upstream_errors.items()):
            e.add_metric([node, kind], n)
        yield e
        yield _one(GaugeMetricFamily, "redis_raft_proxy_client_connections", "Client connections now",
                   s.connected_clients)
        yield _one(CounterMetricFamily, "redis_raft_proxy_client_connections_accepted", "Client connections accepted",
                   s.total_connections)
        c = CounterMetricFamily("redis_raft_proxy_client_connections_rejected", "Client connections closed by "
                                "the proxy", labels=["reason"])
        for reason, n in list(s.rejected.items()):
            c.add_metric([reason], n)
        yield c
        dps = s.dataplane.stats() if s.dataplane is not None else {}
        yield _one(CounterMetricFamily, "redis_raft_proxy_client_bytes_in", "Bytes read from clients",
                   st.bytes_in + dps.get("bytes_in", 0))
        yield _one(CounterMetricFamily, "redis_raft_proxy_client_bytes_out", "Bytes written to clients",
                   st.bytes_out + dps.get("bytes_out", 0))
        yield _one(GaugeMetricFamily, "redis_raft_proxy_held_clients", "Clients whose commands are held now",
                   len(s.held))
        yield _one(CounterMetricFamily, "redis_raft_proxy_holds", "Times a client's commands were held for a master",
                   st.held_total)
        yield _one(CounterMetricFamily, "redis_raft_proxy_hold_timeouts", "Holds that ended in an error after hold_ms",
                   st.hold_timeouts)
        h = HistogramMetricFamily("redis_raft_proxy_hold_duration_seconds", "How long held clients waited")
        h.add_metric([], st.hold_seconds.family_buckets(), st.hold_seconds.total)
        yield h
        yield from self._tls()
        yield from self._control()
        yield from self._nodes()
        yield from self._raft()
        yield from self._dataplane()
        if s.cluster is not None:
            yield from self._cluster()

    def _cluster(self):
        """Cluster mode: every shard as this proxy applied it, and the slot moves in flight."""
        sm = self.server.sm
        epoch = GaugeMetricFamily("redis_raft_proxy_shard_epoch", "Epoch of the shard's committed topology",
                                  labels=["shard"])
        slots = GaugeMetricFamily("redis_raft_proxy_shard_slots", "Hash slots the shard serves", labels=["shard"])
        paused = GaugeMetricFamily("redis_raft_proxy_shard_writes_paused", "1 while the shard's writes are held",
                                   labels=["shard"])
        master = InfoMetricFamily("redis_raft_proxy_shard_master", "The master of the shard", labels=["shard", "node"])
        for shard, t in sorted(sm.cluster_shards.items()):
            epoch.add_metric([shard], t.epoch)
            slots.add_metric([shard], sum(b - a + 1 for a, b in t.slots))
            paused.add_metric([shard], 1.0 if t.writes_paused else 0.0)
            master.add_metric([shard, t.master or ""], {})
        yield from (epoch, slots, paused, master)
        active = [m for m in sm.migrations.values() if m.state in ("running", "queued")]
        yield _one(GaugeMetricFamily, "redis_raft_proxy_migrations_active", "Slot moves running or queued",
                   len(active))
        done = GaugeMetricFamily("redis_raft_proxy_migration_slots_moved", "Slots a move in flight has moved",
                                 labels=["id", "source", "target", "state"])
        total = GaugeMetricFamily("redis_raft_proxy_migration_slots", "Slots a move in flight moves in all",
                                  labels=["id"])
        keys = GaugeMetricFamily("redis_raft_proxy_migration_keys_moved", "Keys a move in flight has moved",
                                 labels=["id"])
        for m in active:
            done.add_metric([m.id, m.source, m.target, m.state], m.done)
            total.add_metric([m.id], m.total)
            keys.add_metric([m.id], m.keys_moved)
        yield from (done, total, keys)

    def _control(self):
        s = self.server
        ctl = s.controller
        topo = s.router.topology
        yield _one(CounterMetricFamily, "redis_raft_proxy_failovers", "Failovers this proxy committed as leader",
                   ctl.failovers)
        yield _one(GaugeMetricFamily, "redis_raft_proxy_last_failover_duration_seconds",
                   "Duration of the last failover this proxy led (down detected to committed)", ctl.last_failover_s)
        g = GaugeMetricFamily("redis_raft_proxy_failover_phase", "1 for the current failover phase",
                              labels=["phase"])
        for phase in FAILOVER_PHASES:
            g.add_metric([phase], 1.0 if ctl.phase == phase else 0.0)
        yield g
        yield _histogram("redis_raft_proxy_failover_duration_seconds", "Failovers this proxy led, from the "
                         "master objectively down to the new topology committed", ctl.failover_seconds)
        yield _histogram("redis_raft_proxy_switchover_duration_seconds", "Switchovers (failover --to) this proxy "
                         "led, from the write pause to the new master reconciled", ctl.switchover_seconds)
        # no epoch label: a label whose value changes every failover makes a new series each time
        i = InfoMetricFamily("redis_raft_proxy_master", "The master of the committed topology (its epoch: "
                             "redis_raft_proxy_topology_epoch)", labels=["node"])
        i.add_metric([topo.master or ""], {})
        yield i
        yield _one(GaugeMetricFamily, "redis_raft_proxy_topology_epoch", "Epoch of the committed topology", topo.epoch)
        pause = s.sm.pause
        yield _one(GaugeMetricFamily, "redis_raft_proxy_failover_paused",
                   "1 while automatic failover is paused (maintenance mode, redis-raft-proxy pause)",
                   1.0 if pause is not None else 0.0)
        yield _one(GaugeMetricFamily, "redis_raft_proxy_failover_pause_expiry_timestamp_seconds",
                   "When the pause expires (unix time; 0: not paused or no expiry)",
                   pause.until if pause is not None and pause.until else 0.0)
        yield _one(CounterMetricFamily, "redis_raft_proxy_topology_changes", "Committed topologies applied",
                   s.stats.topology_changes)
        yield _one(CounterMetricFamily, "redis_raft_proxy_cluster_redirects_followed",
                   "Cluster mode: MOVED answers from nodes followed inside the proxy", s.stats.redirects_followed)

    def _nodes(self):
        s = self.server
        health = s.health
        now = time.monotonic()
        master = s.router.master
        master_off = health.offset(master) if master else 0
        up = GaugeMetricFamily("redis_raft_proxy_redis_node_up", "1 when this proxy sees the Redis node up",
                               labels=["node"])
        role = GaugeMetricFamily("redis_raft_proxy_redis_node_is_master", "1 when the node reports role master",
                                 labels=["node"])
        lag = GaugeMetricFamily("redis_raft_proxy_redis_replica_lag_bytes",
                                "Master offset minus replica offset, as probed by this proxy", labels=["node"])
        lag_s = GaugeMetricFamily("redis_raft_proxy_redis_replica_lag_seconds",
                                  "How old the replica's data was at its last probe: time since the first master "
                                  "probe that saw more than it held (probe_interval_ms resolution)", labels=["node"])
        link = GaugeMetricFamily("redis_raft_proxy_redis_replica_link_up",
                                 "1 when the replica reports master_link_status:up", labels=["node"])
        probe = GaugeMetricFamily("redis_raft_proxy_redis_probe_seconds", "Last probe round trip", labels=["node"])
        for addr, st in health.nodes.items():
            up.add_metric([addr], 1.0 if st.up(now, health.down_after) else 0.0)
            role.add_metric([addr], 1.0 if st.role == "master" else 0.0)
            if addr != master and st.role == "slave":
                lag.add_metric([addr], max(0, master_off - st.offset))
                link.add_metric([addr], 1.0 if st.link_up else 0.0)
                seconds = health.replica_lag_seconds(addr, master) if master else None
                if seconds is not None:
                    lag_s.add_metric([addr], seconds)
            probe.add_metric([addr], st.probe_ms / 1000.0)
        yield from (up, role, lag, lag_s, link, probe)

    def _dataplane(self):
        """dataplane = "c": what the C thread forwarded (its commands and batch times are in
        redis_raft_proxy_commands and command_duration_seconds too)."""
        dp = self.server.dataplane
        if dp is None:
            return
        st = dp.stats()
        c = CounterMetricFamily("redis_raft_proxy_dataplane_commands", "Commands the C data plane forwarded, by "
                                "class", labels=["class"])
        c.add_metric(["read"], st.get("reads", 0))
        c.add_metric(["write"], st.get("writes", 0))
        yield c
        yield _one(GaugeMetricFamily, "redis_raft_proxy_dataplane_clients", "Clients the C data plane serves now",
                   st.get("clients", 0))
        c = CounterMetricFamily("redis_raft_proxy_dataplane_handed_back", "Clients the C data plane gave back "
                                "to Python, by why: command (one it does not forward), syntax (inline, malformed or "
                                "over a limit), permit / permit_expired (writes or reads may not flow), eof, recall "
                                "(MONITOR, CLIENT PAUSE, draining)", labels=["reason"])
        for reason, n in sorted(dp.back_reasons.items()):
            c.add_metric([reason], n)
        yield c
        for key, doc in (("adopted", "Clients given to the C data plane"),
                         ("retired_writes", "Write replies the C data plane turned into errors: the master was "
                          "replaced or writes paused while they were in flight"),
                         ("lapsed_writes", "Write replies the C data plane turned into errors: kept back for hold_ms "
                          "while the lease was lapsed"),
                         ("upstream_errors", "Connections of the C data plane to Redis nodes that failed"),
                         ("closed_output_limit", "Clients the C data plane closed over client_output_buffer_limit"),
                         ("bytes_in", "Bytes the C data plane read from clients"),
                         ("bytes_out", "Bytes the C data plane wrote to clients")):
            yield _one(CounterMetricFamily, f"redis_raft_proxy_dataplane_{key}", doc, st.get(key, 0))

    def _raft(self):
        s = self.server
        cons = s.consensus
        st = s.stats
        yield _one(GaugeMetricFamily, "redis_raft_proxy_raft_term", "Current Raft term", cons.term)
        g = GaugeMetricFamily("redis_raft_proxy_raft_role", "1 for this proxy's Raft role (a non-voting "
                              "learner: learner)", labels=["role"])
        role = "learner" if getattr(cons, "is_learner", False) and cons.role == "follower" else cons.role
        for r in ("leader", "follower", "candidate", "learner"):
            g.add_metric([r], 1.0 if role == r else 0.0)
        yield g
        yield _one(GaugeMetricFamily, "redis_raft_proxy_raft_commit_index", "Raft commit index", cons.commit_index)
        yield _one(GaugeMetricFamily, "redis_raft_proxy_raft_applied_index", "Raft applied index", cons.applied_index)
        yield _one(CounterMetricFamily, "redis_raft_proxy_raft_leader_changes", "Leader changes seen by this proxy",
                   st.leader_changes)
        yield _one(CounterMetricFamily, "redis_raft_proxy_raft_elections", "New terms seen by this proxy", st.elections)
        yield _one(GaugeMetricFamily, "redis_raft_proxy_lease_held", "1 while this proxy holds a lease from a quorum",
                   1.0 if cons.lease_held() else 0.0)
        h = HistogramMetricFamily("redis_raft_proxy_raft_rpc_duration_seconds", "Time to hand a batch of Raft "
                                  "messages to a peer: writing a frame on its stream, or a POST's round trip (a peer "
                                  "without the stream route)", labels=["peer"])
        for peer, hist in list(st.raft_rpc_seconds.items()):
            h.add_metric([peer], hist.family_buckets(), hist.total)
        yield h
        c = CounterMetricFamily("redis_raft_proxy_raft_rpc_errors", "Batches of Raft messages that failed (the "
                                "messages are dropped; Raft resends): timeout, connection, refused, unauthorized, "
                                "queue_full", labels=["peer", "kind"])
        for (peer, kind), n in list(st.raft_rpc_errors.items()):
            c.add_metric([peer, kind], n)
        yield c
        h = HistogramMetricFamily("redis_raft_proxy_raft_fsync_duration_seconds",
                                  "Time of Raft storage saves that fsync (hard state, entries, snapshot)")
        h.add_metric([], st.fsync_seconds.family_buckets(), st.fsync_seconds.total)
        yield h
        h = HistogramMetricFamily("redis_raft_proxy_event_loop_lag_seconds",
                                  "How late the Raft ticker's wake-ups (every 100 ms) ran: the event loop was busy "
                                  "or the process not scheduled, and sent no heartbeat meanwhile")
        h.add_metric([], st.loop_lag_seconds.family_buckets(), st.loop_lag_seconds.total)
        yield h
        yield _one(GaugeMetricFamily, "redis_raft_proxy_raft_storage_failed", "1 after a storage error (full or "
                   "read-only disk): the proxy neither votes nor acknowledges",
                   1.0 if getattr(cons, "failed", None) else 0.0)


def make_metrics_handler(server):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(server))
    # the standard process_* (CPU, memory, fds, start time) and python_* families
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)

    async def handler(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(registry)
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type
        return resp

    return handler
