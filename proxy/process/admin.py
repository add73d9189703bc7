"""The admin HTTP app: /healthz, /readyz, /status (JSON) and /metrics.

Raft peer RPC is mounted under /raft/ on the same app by the Raft driver, the
operator actions under /admin/ by operator_api.py.
"""

from __future__ import annotations

import os
import time

from aiohttp import web

from .. import __version__
from ..sentinel import SENTINEL_PEER_PATH, peer_status
from .operator_api import OperatorApi


def _committed_history(server) -> dict | None:
    """The replicated state's history: `history` entries update it without re-routing,
    so the router's copy of the topology does not carry it."""
    sm_topo = server.controller.sm.topology
    return sm_topo.history.to_dict() if sm_topo is not None and sm_topo.history else None


def replica_doc(health, addr: str, master: str | None, now: float) -> dict:
    """One replica of a committed topology as `/status` shows it.

    `replication_lag_bytes`: how far its replication offset is behind the master's, as
    last probed; `replication_lag_ms`: how long ago the master first had data the replica
    did not (health.probes.probe.lag_seconds: a lower bound, probe_interval_ms resolution);
    `probe_age_ms`: how long ago this proxy's last valid probe reply came.  All None
    while the replica is down (or, for the lag in ms, before both were probed).
    Deprecated, kept for compatibility: `lag_bytes` (= replication_lag_bytes) and
    `lag_ms`, which despite its name is the probe age (= probe_age_ms), not a lag."""
    st = health.nodes.get(addr)
    up = st is not None and st.up(now, health.down_after)
    master_off = health.offset(master) if master else 0
    lag_bytes = max(0, master_off - st.offset) if st and up else None
    probe_age_ms = round(max(0.0, now - st.last_ok) * 1000) if st and up else None
    lag_s = health.replica_lag_seconds(addr, master) if up and master else None
    return {"addr": addr, "healthy": health.readable(addr, master), "up": up, "offset": st.offset if st else 0,
            "replication_lag_bytes": lag_bytes,
            "replication_lag_ms": None if lag_s is None else round(lag_s * 1000),
            "probe_age_ms": probe_age_ms,
            "lag_bytes": lag_bytes, "lag_ms": probe_age_ms}


def topology_doc(health, topo, history: dict | None) -> dict:
    """A committed topology as `/status` shows it, with each replica's health and lag."""
    now = time.monotonic()
    replicas = [replica_doc(health, addr, topo.master, now) for addr in topo.replicas]
    return {"epoch": topo.epoch, "master": topo.master,
            "master_up": health.up(topo.master), "replicas": replicas,
            "writes_paused": topo.writes_paused, "writes_held": topo.hold_reason or None, "history": history}


def status_document(server, raft=None) -> dict:
    """The `/status` JSON: the contract in docs/design.md, plus extra fields."""
    cfg = server.cfg
    health = server.health
    now = time.monotonic()
    from health.shard.controller import raft_status

    raft_doc = raft_status(server.consensus)
    lease = {"held": server.consensus.lease_held(), "lease_ms": cfg.lease_ms,
             "effective_ms": cfg.lease_ticks * cfg.tick_ms}
    ctl = server.controller
    failover = {"phase": ctl.phase, "reason": ctl.phase_reason, "total": ctl.failovers,
                "last_duration_s": round(ctl.last_failover_s, 3)}
    doc = {
        "node": cfg.node,
        "mode": "cluster" if server.cluster is not None else "single",
        "pid": os.getpid(),
        "version": __version__,
        "uptime_s": round(time.time() - server.started, 3),
        "raft": raft_doc,
        "lease": lease,
        "failover": failover,
        "topology": {**topology_doc(health, server.router.topology, _committed_history(server)),
                     # maintenance mode (issue 17): {reason, until, by, at} while automatic failover is off
                     "paused": server.sm.pause.to_dict() if server.sm.pause is not None else None},
        "clients": {"connected": server.connected_clients, "total": server.total_connections,
                    "rejected": dict(server.rejected)},
        "nodes": [st.to_dict(now, health.down_after) for st in health.nodes.values()],
        "peers": {m: server.controller.peer_url(m) for m in (*raft_doc["members"], *raft_doc["learners"])},
        "sentinel": server.sentinel.status_doc(),
        # the cluster-wide keys' effective values and where each comes from, and node tags (issue 17)
        "config": config_doc(server),
    }
    if server.cluster is not None:
        ctl = server.controller
        doc["shards"] = ctl.shard_status()
        # docs/design.md's form: one entry per shard, each as the single set's topology
        doc["topology"]["shards"] = [
            {"id": shard, "slots": [list(r) for r in t.slots],
             **topology_doc(health, t, t.history.to_dict() if t.history else None)}
            for shard, t in sorted(server.sm.cluster_shards.items())]
        doc["cluster_config_problems"] = list(ctl.config_problems)
        doc["migrations"] = ctl.migration_status()
        if ctl.discovery_error:
            doc["cluster_discovery_error"] = ctl.discovery_error
    return doc


def config_doc(server) -> dict:
    """The dynamic configuration as this proxy applies it."""
    from .dynamic_config import tags_doc

    live = server.live_config
    return {"values": {k: {"value": v, "source": src} for k, (v, src) in live.values().items()},
            "tags": tags_doc(live.overrides)}


PEER_STATUS_TIMEOUT_S = 2.0


async def peers_status(server, raft=None) -> dict:
    """{"node": this proxy, "proxies": {member: its /status, or null when it did not answer}}."""
    import asyncio

    import aiohttp

    from raft.transport import http_session

    me = status_document(server, raft)
    proxies: dict[str, dict | None] = {me["node"]: me}

    async def one(name: str, url: str | None) -> None:
        proxies[name] = None
        if not url:
            return
        try:
            async with session.get(url.rstrip("/") + "/status") as r:
                doc = await r.json() if r.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            doc = None
        proxies[name] = doc if isinstance(doc, dict) and "raft" in doc else None

    async with http_session(PEER_STATUS_TIMEOUT_S, server.tls.admin_client) as session:
        await asyncio.gather(*(one(n, u) for n, u in me["peers"].items() if n != me["node"]))
    return {"node": me["node"], "proxies": proxies}


def not_ready(server) -> str | None:
    """Why /readyz answers 503 (this proxy should get no clients now), or None. A lease that
    holds but for a committed entry this node has not applied yet counts as held: that
    lapse opens at every commit, until the entry is applied, and readiness must not flap
    with it (writes wait for it anyway: the write gate)."""
    if server.cluster is not None:
        if not server.cluster.routers:
            return "no committed topology"
    elif server.router.topology.master is None:
        return "no committed topology"
    consensus = server.consensus
    if not (consensus.lease_held() or consensus.lease_waits_for_apply() or server.cfg.stale_reads_when_partitioned):
        return "no lease from a quorum"
    return None


def make_app(server, raft=None, metrics_handler=None) -> web.Application:
    app = web.Application()

    async def healthz(_request):
        return web.Response(text="ok\n")

    async def readyz(_request):
        why = not_ready(server)
        return web.Response(text="ready\n") if why is None else web.Response(status=503, text=why + "\n")

    async def status(_request):
        return web.json_response(status_document(server, raft))

    async def sentinel_peer_status(_request):
        """What the other proxies' Sentinel-compatible ports read of this one every 2 s
        (`proxy.sentinel.peer_status`): a few fields instead of the whole /status (issue 16)."""
        return web.json_response(peer_status(server))

    async def history(_request):
        """Every change of master the replicated state remembers (the last 100), oldest first."""
        return web.json_response({"node": server.cfg.node,
                                  "history": [r.to_dict() for r in server.sm.failover_history]})

    async def cluster_status(_request):
        """Every member's /status, fetched by this proxy: one endpoint (a single `kubectl
        port-forward`) shows the whole cluster. Read-only, like /status."""
        return web.json_response(await peers_status(server, raft))

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status/cluster", cluster_status)
    app.router.add_get(SENTINEL_PEER_PATH, sentinel_peer_status)
    OperatorApi(server).add_routes(app)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/history", history)
    if metrics_handler is not None:
        app.router.add_get("/metrics", metrics_handler)
    return app
