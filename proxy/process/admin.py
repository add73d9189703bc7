"""The admin HTTP app: /healthz, /readyz, /status (JSON) and /metrics.

Raft peer RPC is mounted under /raft/ on the same app by the Raft driver.
"""

from __future__ import annotations

import os
import time

from aiohttp import web

from raft.auth import SECRET_HEADER, request_authorized

from .. import __version__
from ..sentinel import SENTINEL_PEER_PATH, peer_status


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
        "clients": {"connected": len(server.clients), "total": server.total_connections,
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
    add_operator_routes(app, server)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/history", history)
    if metrics_handler is not None:
        app.router.add_get("/metrics", metrics_handler)
    return app


def add_operator_routes(app: web.Application, server) -> None:
    """Operator actions: switchover, leadership transfer, membership.

    They change the cluster, so they need the shared secret (header
    `X-Raft-Secret`) or, with `tls_admin`, a client certificate signed by the
    configured CA; without either they are refused.  Actions only the leader can do
    answer 409 with the leader's name and admin URL on a follower.
    """
    from health.errors import CommitFailed, NotLeaderError
    from raft.core import NotLeader

    from .proposal_errors import PROPOSAL_ERRORS, proposal_failure

    ctl = server.controller

    def guarded(handler):
        """Refuse a request without the shared secret (403)."""
        async def wrapper(request: web.Request) -> web.Response:
            if not request_authorized(request.headers.get(SECRET_HEADER), server.cfg.raft_secret,
                                      request.transport):
                return web.json_response({"ok": False, "error": "bad or missing X-Raft-Secret"}, status=403)
            return await handler(request)
        return wrapper

    def proposal_failed(exc: BaseException, what: str) -> web.Response:
        """A proposal's failure, answered alike by every route (proposal_errors); a 409
        also gives the leader's admin URL."""
        status, doc = proposal_failure(exc, what)
        if status == 409:
            doc["leader_url"] = ctl.peer_url(doc["leader"])
        return web.json_response(doc, status=status)

    def not_leader(leader: str | None) -> web.Response:
        return proposal_failed(NotLeader(leader), "")

    async def body(request: web.Request) -> dict:
        try:
            doc = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="expected a JSON body\n") from None
        if not isinstance(doc, dict):
            raise web.HTTPBadRequest(text="expected a JSON object\n")
        return doc

    async def controller_call(call) -> web.Response:
        """`await call()` on the controller: its result, 409 off the leader, 400 on bad input."""
        try:
            result = await call()
        except NotLeaderError as exc:
            return not_leader(exc.leader)
        except (ValueError, TypeError, RuntimeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response(result)

    async def failover(request: web.Request) -> web.Response:
        doc = await body(request)
        # default: within hold_ms, so that no write held by the pause times out
        return await controller_call(lambda: ctl.switchover(
            str(doc.get("to", "")), timeout=float(doc.get("timeout") or server.cfg.hold_ms / 1000.0 * 0.8)))

    async def pause(request: web.Request) -> web.Response:
        """Maintenance mode: {"reason": str, "expires_s": seconds or null, "by": str}."""
        doc = await body(request)
        expires = doc.get("expires_s")
        return await controller_call(lambda: ctl.pause(str(doc.get("reason") or ""),
                                                       None if expires is None else float(expires),
                                                       str(doc.get("by") or "")))

    async def resume(request: web.Request) -> web.Response:
        doc = await body(request)
        return await controller_call(lambda: ctl.resume(str(doc.get("by") or "")))

    async def transfer(request: web.Request) -> web.Response:
        doc = await body(request)
        cons = server.consensus
        if cons.role != "leader":
            return not_leader(cons.leader_id)
        to = doc.get("to")
        if not to:
            others = [m for m in cons.members if m != server.cfg.node]
            if not others:
                return web.json_response({"ok": False, "error": "no other member"}, status=400)
            to = others[0]
        if to not in cons.members:
            return web.json_response({"ok": False, "error": f"{to} is not a member"}, status=400)
        try:
            await cons.transfer_leadership(str(to))
        except Exception as exc:
            return web.json_response({"ok": False, "error": f"transfer failed: {exc!r}"}, status=500)
        # leader_id may still be unknown here (the old leader stepped down first)
        return web.json_response({"ok": True, "leader": cons.leader_id or to})

    def membership(cons, **extra) -> web.Response:
        return web.json_response({"ok": True, "members": list(cons.members),
                                  "learners": list(getattr(cons, "learners", [])), **extra})

    async def membership_change(what: str, change) -> web.Response:
        """Await a membership change the leader makes: the new membership, or why not
        (proposal_errors; 500 for anything else)."""
        try:
            await change
        except PROPOSAL_ERRORS as exc:
            return proposal_failed(exc, f"membership change ({what})")
        except Exception as exc:  # noqa: BLE001 -- one line for the operator
            return web.json_response({"ok": False, "error": f"{what} failed: {exc!r}"}, status=500)
        return membership(server.consensus)

    async def add_member(request: web.Request) -> web.Response:
        """{"node", "url", "learner": bool}: a new voter, or a non-voting learner."""
        doc = await body(request)
        cons = server.consensus
        if cons.role != "leader":
            return not_leader(cons.leader_id)
        node, url, learner = str(doc.get("node", "")), str(doc.get("url", "")), doc.get("learner", False)
        if not node or not url.startswith("http"):
            return web.json_response({"ok": False, "error": "need node and url"}, status=400)
        if not isinstance(learner, bool):
            return web.json_response({"ok": False, "error": "learner: expected true or false"}, status=400)
        if node in cons.members:
            return membership(cons, message="already a member")
        if learner and node in getattr(cons, "learners", []):
            return membership(cons, message="already a learner")
        # a learner added again without "learner" is promoted (etcd's rule for add)
        return await membership_change("add", cons.add_member(node, url, learner=learner))

    async def promote_member(request: web.Request) -> web.Response:
        node = request.match_info["node"]
        cons = server.consensus
        if cons.role != "leader":
            return not_leader(cons.leader_id)
        if node not in getattr(cons, "learners", []):
            return web.json_response({"ok": False, "error": f"{node} is not a learner"}, status=400)
        return await membership_change("promote", cons.promote_member(node))

    async def remove_member(request: web.Request) -> web.Response:
        node = request.match_info["node"]
        cons = server.consensus
        if cons.role != "leader":
            return not_leader(cons.leader_id)
        if node not in cons.members and node not in getattr(cons, "learners", []):
            return web.json_response({"ok": False, "error": f"{node} is not a member"}, status=400)
        return await membership_change("remove", cons.remove_member(node))

    async def cluster_action(request: web.Request) -> web.Response:
        """Cluster mode: move-slots, add-shard, remove-shard, rebalance, cancel (issue 15)."""
        if server.cluster is None:
            return web.json_response({"ok": False, "error": "not in cluster mode (cluster_nodes is empty)"},
                                     status=400)
        from health.migration.plan import parse_ranges

        doc = await body(request)
        action = request.match_info["action"]
        try:
            if action == "move-slots":
                result = await ctl.move_slots(str(doc.get("from", "")), str(doc.get("to", "")),
                                              parse_ranges(str(doc.get("slots", ""))))
            elif action == "add-shard":
                replicas = doc.get("replicas") or []
                if not isinstance(replicas, list):
                    raise ValueError("replicas: expected a list of host:port")
                result = await ctl.add_shard(str(doc.get("master", "")), [str(r) for r in replicas])
            elif action == "remove-shard":
                result = await ctl.remove_shard(str(doc.get("shard", "")))
            elif action == "rebalance":
                result = await ctl.rebalance(str(doc.get("by", "slots")))
            elif action == "cancel":
                result = await ctl.cancel_migrations()
            else:
                return web.json_response({"ok": False, "error": f"unknown action {action!r}"}, status=404)
        except NotLeaderError as exc:
            return not_leader(exc.leader)
        except ValueError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        except CommitFailed as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=503)
        except PROPOSAL_ERRORS as exc:  # a proposal of add-shard, remove-shard or cancel
            return proposal_failed(exc, action)
        return web.json_response(result)

    async def config_show(_request: web.Request) -> web.Response:
        from .dynamic_config import settable_text

        return web.json_response({"ok": True, "node": server.cfg.node, **config_doc(server),
                                  "overrides": server.sm.config, "settable": settable_text()})

    async def config_change(request: web.Request) -> web.Response:
        """{"set": {key: value}, "unset": [key], "replace": false, "by": str}: validated as at
        start-up, every problem at once; nothing is applied when one is wrong."""
        from health.state_machine import TopologyStateMachine

        from .config_live import pair_problems
        from .dynamic_config import validate_change

        doc = await body(request)
        set_, unset = doc.get("set") or {}, doc.get("unset") or []
        if not isinstance(set_, dict) or not isinstance(unset, list):
            return web.json_response({"ok": False, "error": "expected set: {key: value}, unset: [key]"}, status=400)
        if server.consensus.role != "leader":
            return not_leader(server.consensus.leader_id)
        new, errors = validate_change(server.sm.config, set_, [str(k) for k in unset], bool(doc.get("replace")))
        if not errors:      # the pair as this proxy would run it (its own file where Raft sets nothing)
            errors += pair_problems(server.live_config.values_with(new))
        if errors:
            return web.json_response({"ok": False, "error": "; ".join(str(e) for e in errors),
                                      "errors": [str(e) for e in errors]}, status=400)
        changed = {k: v for k, v in new.items() if server.sm.config.get(k, object()) != v}
        removed = [k for k in server.sm.config if k not in new]
        if not changed and not removed:
            return web.json_response({"ok": True, "message": "nothing to change", "overrides": new})
        entry = TopologyStateMachine.config_entry(changed, removed, by=str(doc.get("by") or ""))
        try:
            await server.consensus.propose(entry, timeout=2.0)
        except PROPOSAL_ERRORS as exc:
            return proposal_failed(exc, "config change")
        except Exception as exc:  # noqa: BLE001 -- one line for the operator
            return web.json_response({"ok": False, "error": f"could not commit the change: {exc!r}"}, status=500)
        what = [f"{k}={v}" for k, v in changed.items()] + [f"{k} unset" for k in removed]
        return web.json_response({"ok": True, "message": "applied on every proxy: " + ", ".join(what),
                                  "overrides": new})

    app.router.add_get("/admin/config", guarded(config_show))
    app.router.add_post("/admin/config", guarded(config_change))
    app.router.add_post("/admin/cluster/{action}", guarded(cluster_action))
    app.router.add_post("/admin/failover", guarded(failover))
    app.router.add_post("/admin/pause", guarded(pause))
    app.router.add_post("/admin/resume", guarded(resume))
    app.router.add_post("/admin/transfer-leadership", guarded(transfer))
    app.router.add_post("/admin/members", guarded(add_member))
    app.router.add_post("/admin/members/{node}/promote", guarded(promote_member))
    app.router.add_delete("/admin/members/{node}", guarded(remove_member))
