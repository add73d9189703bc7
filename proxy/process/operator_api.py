"""Operator actions over HTTP: switchover and maintenance, leadership transfer,
membership, cluster mode's slot moves, the dynamic configuration.

They change the cluster, so every route needs the shared secret (header
`X-Raft-Secret`) or, with `tls_admin`, a client certificate signed by the configured
CA; without either it answers 403. Actions only the leader can do answer 409 on a
follower, with the leader's name and admin URL; bad input answers 400 and changes
nothing. The CLI's `failover`, `pause`, `members` ... commands call these."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from health.errors import CommitFailed, NotLeaderError
from raft.auth import SECRET_HEADER, request_authorized
from raft.core import NotLeader

from .proposal_errors import PROPOSAL_ERRORS, proposal_failure

Handler = Callable[[web.Request], Awaitable[web.Response]]
CLUSTER_ACTIONS = ("move-slots", "add-shard", "remove-shard", "rebalance", "cancel")


def refused(error: str, status: int = 400) -> web.Response:
    return web.json_response({"ok": False, "error": error}, status=status)


async def json_body(request: web.Request) -> dict:
    try:
        doc = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON body\n") from None
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(text="expected a JSON object\n")
    return doc


class OperatorApi:
    """The `/admin/*` routes of one proxy (`server`: proxy.process.server.ProxyServer)."""

    def __init__(self, server) -> None:
        self.server = server
        self.ctl = server.controller

    def add_routes(self, app: web.Application) -> None:
        guarded = self.guarded
        app.router.add_get("/admin/config", guarded(self.config_show))
        app.router.add_post("/admin/config", guarded(self.config_change))
        app.router.add_post("/admin/cluster/{action}", guarded(self.cluster_action))
        app.router.add_post("/admin/failover", guarded(self.failover))
        app.router.add_post("/admin/pause", guarded(self.pause))
        app.router.add_post("/admin/resume", guarded(self.resume))
        app.router.add_post("/admin/transfer-leadership", guarded(self.transfer))
        app.router.add_post("/admin/members", guarded(self.add_member))
        app.router.add_post("/admin/members/{node}/promote", guarded(self.promote_member))
        app.router.add_delete("/admin/members/{node}", guarded(self.remove_member))

    # -- answers shared by the routes ---------------------------------------------
    def guarded(self, handler: Handler) -> Handler:
        """Refuse a request without the shared secret or a client certificate (403)."""
        async def wrapper(request: web.Request) -> web.Response:
            if not request_authorized(request.headers.get(SECRET_HEADER), self.server.cfg.raft_secret,
                                      request.transport):
                return refused("bad or missing X-Raft-Secret", 403)
            return await handler(request)
        return wrapper

    def proposal_failed(self, exc: BaseException, what: str) -> web.Response:
        """A proposal's failure, answered alike by every route (proposal_errors); a 409
        also gives the leader's admin URL."""
        status, doc = proposal_failure(exc, what)
        if status == 409:
            doc["leader_url"] = self.ctl.peer_url(doc["leader"])
        return web.json_response(doc, status=status)

    def not_leader(self, leader: str | None) -> web.Response:
        return self.proposal_failed(NotLeader(leader), "")

    def _leader_only(self) -> web.Response | None:
        """409 when this proxy does not lead (membership and configuration are the leader's)."""
        cons = self.server.consensus
        return None if cons.role == "leader" else self.not_leader(cons.leader_id)

    async def _controller_call(self, call: Callable[[], Awaitable[dict]]) -> web.Response:
        """`await call()` on the controller: its result, 409 off the leader, 400 on bad input."""
        try:
            result = await call()
        except NotLeaderError as exc:
            return self.not_leader(exc.leader)
        except (ValueError, TypeError, RuntimeError) as exc:
            return refused(str(exc))
        return web.json_response(result)

    # -- switchover and maintenance -------------------------------------------------
    async def failover(self, request: web.Request) -> web.Response:
        doc = await json_body(request)
        # default: within hold_ms, so that no write held by the pause times out
        timeout = float(doc.get("timeout") or self.server.cfg.hold_ms / 1000.0 * 0.8)
        return await self._controller_call(lambda: self.ctl.switchover(str(doc.get("to", "")), timeout=timeout))

    async def pause(self, request: web.Request) -> web.Response:
        """Maintenance mode: {"reason": str, "expires_s": seconds or null, "by": str}."""
        doc = await json_body(request)
        expires = doc.get("expires_s")
        return await self._controller_call(lambda: self.ctl.pause(str(doc.get("reason") or ""),
                                                                  None if expires is None else float(expires),
                                                                  str(doc.get("by") or "")))

    async def resume(self, request: web.Request) -> web.Response:
        doc = await json_body(request)
        return await self._controller_call(lambda: self.ctl.resume(str(doc.get("by") or "")))

    # -- Raft leadership and membership ---------------------------------------------
    async def transfer(self, request: web.Request) -> web.Response:
        doc = await json_body(request)
        cons = self.server.consensus
        if (refusal := self._leader_only()) is not None:
            return refusal
        to = doc.get("to")
        if not to:
            others = [m for m in cons.members if m != self.server.cfg.node]
            if not others:
                return refused("no other member")
            to = others[0]
        if to not in cons.members:
            return refused(f"{to} is not a member")
        try:
            await cons.transfer_leadership(str(to))
        except Exception as exc:
            return refused(f"transfer failed: {exc!r}", 500)
        # leader_id may still be unknown here (the old leader stepped down first)
        return web.json_response({"ok": True, "leader": cons.leader_id or to})

    @staticmethod
    def _membership(cons, **extra) -> web.Response:
        return web.json_response({"ok": True, "members": list(cons.members),
                                  "learners": list(getattr(cons, "learners", [])), **extra})

    async def _membership_change(self, what: str, change: Awaitable[object]) -> web.Response:
        """Await a membership change the leader makes: the new membership, or why not
        (proposal_errors; 500 for anything else)."""
        try:
            await change
        except PROPOSAL_ERRORS as exc:
            return self.proposal_failed(exc, f"membership change ({what})")
        except Exception as exc:  # noqa: BLE001 -- one line for the operator
            return refused(f"{what} failed: {exc!r}", 500)
        return self._membership(self.server.consensus)

    async def add_member(self, request: web.Request) -> web.Response:
        """{"node", "url", "learner": bool}: a new voter, or a non-voting learner."""
        doc = await json_body(request)
        cons = self.server.consensus
        if (refusal := self._leader_only()) is not None:
            return refusal
        node, url, learner = str(doc.get("node", "")), str(doc.get("url", "")), doc.get("learner", False)
        if not node or not url.startswith("http"):
            return refused("need node and url")
        if not isinstance(learner, bool):
            return refused("learner: expected true or false")
        if node in cons.members:
            return self._membership(cons, message="already a member")
        if learner and node in getattr(cons, "learners", []):
            return self._membership(cons, message="already a learner")
        # a learner added again without "learner" is promoted (etcd's rule for add)
        return await self._membership_change("add", cons.add_member(node, url, learner=learner))

    async def promote_member(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        cons = self.server.consensus
        if (refusal := self._leader_only()) is not None:
            return refusal
        if node not in getattr(cons, "learners", []):
            return refused(f"{node} is not a learner")
        return await self._membership_change("promote", cons.promote_member(node))

    async def remove_member(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        cons = self.server.consensus
        if (refusal := self._leader_only()) is not None:
            return refusal
        if node not in cons.members and node not in getattr(cons, "learners", []):
            return refused(f"{node} is not a member")
        return await self._membership_change("remove", cons.remove_member(node))

    # -- cluster mode -----------------------------------------------------------------
    async def cluster_action(self, request: web.Request) -> web.Response:
        """Cluster mode: move-slots, add-shard, remove-shard, rebalance, cancel (issue 15)."""
        if self.server.cluster is None:
            return refused("not in cluster mode (cluster_nodes is empty)")
        from health.migration.plan import parse_ranges

        doc = await json_body(request)
        action, ctl = request.match_info["action"], self.ctl
        if action not in CLUSTER_ACTIONS:
            return refused(f"unknown action {action!r}", 404)
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
            else:
                result = await ctl.cancel_migrations()
        except NotLeaderError as exc:
            return self.not_leader(exc.leader)
        except ValueError as exc:
            return refused(str(exc))
        except CommitFailed as exc:
            return refused(str(exc), 503)
        except PROPOSAL_ERRORS as exc:  # a proposal of add-shard, remove-shard or cancel
            return self.proposal_failed(exc, action)
        return web.json_response(result)

    # -- the dynamic configuration ------------------------------------------------------
    async def config_show(self, _request: web.Request) -> web.Response:
        from .admin import config_doc
        from .dynamic_config import settable_text

        server = self.server
        return web.json_response({"ok": True, "node": server.cfg.node, **config_doc(server),
                                  "overrides": server.sm.config, "settable": settable_text()})

    async def config_change(self, request: web.Request) -> web.Response:
        """{"set": {key: value}, "unset": [key], "replace": false, "by": str}: validated as at
        start-up, every problem at once; nothing is applied when one is wrong."""
        from health.state_machine import TopologyStateMachine

        from .config_live import pair_problems
        from .dynamic_config import validate_change

        server = self.server
        doc = await json_body(request)
        set_, unset = doc.get("set") or {}, doc.get("unset") or []
        if not isinstance(set_, dict) or not isinstance(unset, list):
            return refused("expected set: {key: value}, unset: [key]")
        if (refusal := self._leader_only()) is not None:
            return refusal
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
            return self.proposal_failed(exc, "config change")
        except Exception as exc:  # noqa: BLE001 -- one line for the operator
            return refused(f"could not commit the change: {exc!r}", 500)
        what = [f"{k}={v}" for k, v in changed.items()] + [f"{k} unset" for k in removed]
        return web.json_response({"ok": True, "message": "applied on every proxy: " + ", ".join(what),
                                  "overrides": new})
