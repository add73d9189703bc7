"""The views of the Redis nodes that the proxies send to the Raft leader, as a part of
the shard controller (health.shard.controller.Controller): a follower's report rides its
next Raft frame to the leader (POST /health/report where the stream cannot carry it),
and the leader keeps each proxy's last view with the time it came."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from health.shard.decide import NodeView, node_states
from raft.auth import SECRET_HEADER, request_authorized

REPORT_PATH = "/health/report"
REPORT_KEY = "report"        # a report's key among the Raft stream's application payloads


class Reports:
    """The report exchange of health.shard.controller.Controller (a mixin: it uses the controller's
    cfg, consensus, views, freshness, _http, _report_key, peer_url and step_soon)."""

    def receive_report(self, proxy: str, view: dict) -> None:
        """A proxy's view; its ages are by its clock at sending, counted from receipt here
        (the time in flight is not known, and is bounded by the report's HTTP timeout).
        One that says a node changed (up or down, role, link) wakes the leader's step:
        it may complete the quorum a failover waits for."""
        views = {a: NodeView.from_dict(v) for a, v in view.items()}
        old = self.views.get(proxy)
        self.views[proxy] = (time.monotonic(), views)
        if old is None or node_states(old[1]) != node_states(views):
            self.step_soon()

    def fresh_views(self) -> dict[str, dict[str, NodeView]]:
        """Views received within `freshness`, every node's age counted up to now."""
        now = time.monotonic()
        members = set(self.consensus.members)
        return {p: {a: nv.aged(now - t) for a, nv in v.items()}
                for p, (t, v) in self.views.items() if now - t <= self.freshness and p in members}

    def _report(self, view: dict[str, NodeView]) -> None:
        """Send this proxy's view to the leader: in the next frame of the Raft stream to it
        (no HTTP request and response: issue 16), else (the stream is not open, or the
        leader is of a version without it) by POST /health/report."""
        body = {"node": self.cfg.node, "view": {a: v.to_dict() for a, v in view.items()}}
        send_app = getattr(getattr(self.consensus, "transport", None), "send_app", None)
        leader = self.consensus.leader_id
        if leader is not None and send_app is not None and send_app(leader, {REPORT_KEY: body}, self._report_lost):
            return
        asyncio.get_running_loop().create_task(self._send_report(body))

    def _report_lost(self) -> None:
        self._report_key = None     # not delivered: send again at the next step

    async def _send_report(self, body: dict) -> None:
        url = self.peer_url(self.consensus.leader_id)
        if not url or self._http is None:
            return
        try:
            async with self._http.post(url + REPORT_PATH, json=body,
                                       headers={"X-Raft-Secret": self.cfg.raft_secret}) as r:
                await r.read()
                if r.status < 300:
                    return
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        self._report_lost()


def stream_payload_handler(controller: Reports) -> Callable[[dict], None]:
    """What the Raft stream hands each application payload to (raft.transport.add_raft_routes):
    a follower's report, as POST /health/report takes it (the stream was authorized at its
    upgrade with the same secret)."""
    def handle(payload: dict) -> None:
        body = payload.get(REPORT_KEY)
        if body is not None:
            controller.receive_report(str(body["node"]), dict(body["view"]))
    return handle


def add_report_route(app: web.Application, controller: Reports) -> None:
    async def report(request: web.Request) -> web.Response:
        if not request_authorized(request.headers.get(SECRET_HEADER), controller.cfg.raft_secret,
                                  request.transport):
            return web.Response(status=403, text="bad or missing X-Raft-Secret\n")
        try:
            body = await request.json()
            controller.receive_report(str(body["node"]), dict(body["view"]))
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="bad report\n")
        return web.Response(text="ok\n")

    app.router.add_post(REPORT_PATH, report)
