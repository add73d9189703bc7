"""The admin HTTP app: /healthz, /readyz, /status (JSON) and /metrics.

Raft peer RPC is mounted under /raft/ on the same app by the Raft driver.
"""

from __future__ import annotations

import os
import time

from aiohttp import web

from . import __version__


def status_document(server, raft=None) -> dict:
    """The `/status` JSON: the contract in DESIGN.md, plus extra fields."""
    cfg = server.cfg
    topo = server.router.topology
    health = server.health
    now = time.monotonic()
    master_off = health.offset(topo.master) if topo.master else 0
    replicas = []
    for addr in topo.replicas:
        st = health.nodes.get(addr)
        up = st is not None and st.up(now, health.down_after)
        replicas.append({"addr": addr, "healthy": health.readable(addr, topo.master),
                         "up": up, "offset": st.offset if st else 0,
                         "lag_bytes": max(0, master_off - st.offset) if st and up else None,
                         "lag_ms": None if not (st and up) else round(max(0.0, now - st.last_ok) * 1000)})
    from health.controller import raft_status

    raft_doc = raft_status(server.consensus)
    lease = {"held": server.consensus.lease_held(), "lease_ms": cfg.lease_ms}
    ctl = server.controller
    failover = {"phase": ctl.phase, "total": ctl.failovers, "last_duration_s": round(ctl.last_failover_s, 3)}
    return {
        "node": cfg.node,
        "pid": os.getpid(),
        "version": __version__,
        "uptime_s": round(time.time() - server.started, 3),
        "raft": raft_doc,
        "lease": lease,
        "failover": failover,
        "topology": {"epoch": topo.epoch, "master": topo.master,
                     "master_up": health.up(topo.master) if topo.master else False, "replicas": replicas},
        "clients": {"connected": len(server.clients), "total": server.total_connections,
                    "rejected": dict(server.rejected)},
        "nodes": [st.to_dict(now, health.down_after) for st in health.nodes.values()],
    }


def make_app(server, raft=None, metrics_handler=None) -> web.Application:
    app = web.Application()

    async def healthz(_request):
        return web.Response(text="ok\n")

    async def readyz(_request):
        topo = server.router.topology
        if topo.master is None:
            return web.Response(status=503, text="no committed topology\n")
        if not server.consensus.lease_held() and not server.cfg.stale_reads_when_partitioned:
            return web.Response(status=503, text="no lease from a quorum\n")
        return web.Response(text="ready\n")

    async def status(_request):
        return web.json_response(status_document(server, raft))

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    if metrics_handler is not None:
        app.router.add_get("/metrics", metrics_handler)
    return app
