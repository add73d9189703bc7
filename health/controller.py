"""The control loop: views to the leader, failover decisions, reconciliation.

Every proxy sends its view of the Redis nodes to the Raft leader each probe
interval.  The leader declares the master objectively down only when a
quorum of fresh views (its own included) say so, proposes the next topology
through Raft, and runs the reconciler that makes Redis roles match the
committed topology.  Decisions are the pure functions of `health.decide`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from proxy.topology import Topology

from .decide import NodeView, choose_new_master, objectively_down, reconcile, replica_with_lost_history
from .raft_events import RaftEvents

log = logging.getLogger("health.controller")

REPORT_PATH = "/health/report"


class NotLeaderError(Exception):
    """An operation only the Raft leader can do; `leader` says where to go."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the Raft leader (leader: {leader})")
        self.leader = leader


class TopologyStateMachine:
    """The replicated state: the committed topology.  Raft entries are JSON."""

    def __init__(self, on_change) -> None:
        self.topology: Topology | None = None
        self._on_change = on_change

    @staticmethod
    def entry(topology: Topology, reason: str = "") -> bytes:
        return json.dumps({"op": "topology", "topology": topology.to_dict(), "reason": reason}).encode()

    def apply(self, data: bytes) -> None:
        try:
            doc = json.loads(data)
        except ValueError:
            return  # no-op and membership entries are not ours
        if not isinstance(doc, dict) or doc.get("op") != "topology":
            return
        new = Topology.from_dict(doc["topology"])
        if self.topology is None or new.epoch > self.topology.epoch:
            old, self.topology = self.topology, new
            self._on_change(new, old, doc.get("reason", ""))

    def snapshot(self) -> bytes:
        return json.dumps({"topology": self.topology.to_dict() if self.topology else None}).encode()

    def restore(self, data: bytes) -> None:
        doc = json.loads(data) if data else {}
        if doc.get("topology"):
            new = Topology.from_dict(doc["topology"])
            if self.topology is None or new.epoch >= self.topology.epoch:
                old, self.topology = self.topology, new
                self._on_change(new, old, "restored from snapshot")


class StandaloneConsensus:
    """A single proxy without peers: it is its own quorum."""

    def __init__(self, node: str, sm: TopologyStateMachine) -> None:
        self.node_id = node
        self._sm = sm
        self.commit_index = 0
        self.applied_index = 0
        self.peers = {node: ""}

    role = "leader"
    term = 1

    @property
    def leader_id(self) -> str:
        return self.node_id

    @property
    def members(self) -> list[str]:
        return [self.node_id]

    def lease_held(self) -> bool:
        return True

    fence_timeout_s = 0.0

    def writes_fenced(self, index: int) -> bool:
        return True

    async def propose(self, data: bytes, timeout: float) -> None:
        self.commit_index += 1
        self.applied_index += 1
        self._sm.apply(data)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def raft_status(consensus) -> dict:
    if getattr(consensus, "core", True) is None:   # RaftNode not started yet
        return {"role": "follower", "term": 0, "leader": None, "members": [], "commit_index": 0,
                "applied_index": 0}
    return {"role": consensus.role, "term": consensus.term, "leader": consensus.leader_id,
            "members": list(consensus.members), "commit_index": consensus.commit_index,
            "applied_index": consensus.applied_index}


class Controller:
    """Runs on every proxy; acts (decides, reconciles) only on the leader."""

    def __init__(self, server, consensus, sm: TopologyStateMachine) -> None:
        self.server = server
        self.cfg = server.cfg
        self.consensus = consensus
        self.sm = sm
        self.views: dict[str, tuple[float, dict[str, NodeView]]] = {}
        self.interval = self.cfg.probe_interval_ms / 1000.0
        self.freshness = max(3 * self.interval, self.cfg.down_after_ms / 1000.0)
        self._http: aiohttp.ClientSession | None = None
        self._clients: dict[str, aioredis.Redis] = {}
        self._proposing = False
        self._last_failover_at = 0.0
        self._acted: dict[tuple[str, int], float] = {}
        self.failovers = 0
        self.last_failover_s = 0.0
        self.raft_events = RaftEvents(self.cfg.node)
        self.phase = "idle"
        self._down_since: float | None = None
        self._fence: tuple[int, int] = (-1, 0)  # (topology epoch, Raft index to fence on)

    # -- views --------------------------------------------------------------
    def local_view(self) -> dict[str, NodeView]:
        health = self.server.health
        now = time.monotonic()
        out = {}
        for addr, st in health.nodes.items():
            out[addr] = NodeView(st.up(now, health.down_after), st.role, st.offset, st.link_up,
                                 st.link_down_since_s, st.master_addr, st.replid, st.replid2)
        return out

    def receive_report(self, proxy: str, view: dict) -> None:
        self.views[proxy] = (time.monotonic(), {a: NodeView.from_dict(v) for a, v in view.items()})

    def fresh_views(self) -> dict[str, dict[str, NodeView]]:
        now = time.monotonic()
        members = set(self.consensus.members)
        return {p: v for p, (t, v) in self.views.items() if now - t <= self.freshness and p in members}

    async def _send_report(self, view: dict[str, NodeView]) -> None:
        url = self.peer_url(self.consensus.leader_id)
        if not url or self._http is None:
            return
        body = {"node": self.cfg.node, "view": {a: v.to_dict() for a, v in view.items()}}
        try:
            async with self._http.post(url + REPORT_PATH, json=body,
                                       headers={"X-Raft-Secret": self.cfg.raft_secret}) as r:
                await r.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            pass

    # -- the loop -------------------------------------------------------------
    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(0.2, self.interval * 2))
        self._http = aiohttp.ClientSession(timeout=timeout)
        try:
            while True:
                started = time.monotonic()
                try:
                    await self._step()
                except Exception:  # the control loop must survive anything
                    log.exception("controller step failed")
                await asyncio.sleep(max(0.01, self.interval - (time.monotonic() - started)))
        finally:
            await self._http.close()
            for c in self._clients.values():
                await c.aclose()

    async def _step(self) -> None:
        self.server.stats.observe_raft(self.consensus)
        self.raft_events.observe(self.consensus)
        view = self.local_view()
        if self.consensus.role != "leader":
            self.views.clear()
            asyncio.get_running_loop().create_task(self._send_report(view))
            return
        self.views[self.cfg.node] = (time.monotonic(), view)
        if self.sm.topology is None:
            await self._propose_initial()
            return
        await self._maybe_fail_over(self.sm.topology)
        await self._reconcile(self.sm.topology, view)

    async def _propose_initial(self) -> None:
        if self._proposing:
            return
        topo = Topology.initial(list(self.cfg.redis_nodes), self.cfg.initial_master)
        await self._propose(topo, "initial topology from configuration")

    async def _propose(self, topo: Topology, reason: str) -> bool:
        self._proposing = True
        try:
            await self.consensus.propose(TopologyStateMachine.entry(topo, reason), timeout=2.0)
            return True
        except Exception as exc:
            log.warning("event=propose_failed epoch=%d reason=%r error=%r", topo.epoch, reason, exc)
            return False
        finally:
            self._proposing = False

    async def _maybe_fail_over(self, topo: Topology) -> None:
        if topo.master is None or self._proposing:
            return
        views = self.fresh_views()
        quorum = len(self.consensus.members) // 2 + 1
        if not objectively_down(topo.master, views, quorum):
            self._down_since = None
            if self.phase == "objectively_down":
                self.phase = "idle"
            await self._maybe_keep_lost_history(topo)
            return
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self.phase = "objectively_down"
            log.warning("event=objectively_down master=%s epoch=%d votes=%d quorum=%d", topo.master,
                        topo.epoch, sum(1 for v in views.values() if topo.master in v and not v[topo.master].up),
                        quorum)
        down_for = self.cfg.down_after_ms / 1000.0 + (now - self._down_since)
        new = choose_new_master(topo.master, topo.replicas, views,
                                max_staleness_s=self.cfg.max_replica_staleness_ms / 1000.0, down_for_s=down_for)
        if new is None:
            if self.phase != "no_candidate":
                log.error("event=failover_blocked master=%s epoch=%d reason='no replica is safe to promote'",
                          topo.master, topo.epoch)
            self.phase = "no_candidate"
            return
        # duration: from objective down to committed (the wait for a safe candidate included)
        if await self._fail_over(topo, new, f"failover: {topo.master} objectively down", self._down_since):
            self._down_since = None

    async def _maybe_keep_lost_history(self, topo: Topology) -> None:
        """The master is up but restarted without its data (see `replica_with_lost_history`):
        promote the replica that still has it before it resynchronises from the empty master.
        The leader's own probes decide: a node's replication history is a fact, not a matter
        of reachability, so no quorum of views is needed."""
        if topo.writes_paused or self.phase == "switchover":
            return
        view = self.views[self.cfg.node][1]
        keeper = replica_with_lost_history(topo.master, topo.replicas, view)
        if keeper is None:
            return
        m, k = view[topo.master], view[keeper]
        log.error("event=master_restarted_empty master=%s offset=%d replica=%s replica_offset=%d epoch=%d",
                  topo.master, m.offset, keeper, k.offset, topo.epoch)
        await self._fail_over(topo, keeper, f"failover: {topo.master} restarted without its data "
                                            f"(offset {m.offset}, {keeper} has {k.offset})", time.monotonic())

    async def _fail_over(self, topo: Topology, new: str, reason: str, since: float) -> bool:
        """Commit `topo` with `new` as master; the reconciler then changes the roles."""
        nxt = topo.with_master(new)
        self.phase = "proposing"
        started = time.monotonic()
        log.warning("event=failover_started old_master=%s new_master=%s epoch=%d", topo.master, new, nxt.epoch)
        if not await self._propose(nxt, reason):
            return False
        done = time.monotonic()
        self.failovers += 1
        self.last_failover_s = done - since
        self.phase = "reconciling"
        log.warning("event=failover_committed new_master=%s epoch=%d duration_ms=%.0f commit_ms=%.0f", new,
                    nxt.epoch, self.last_failover_s * 1000, (done - started) * 1000)
        return True

    async def _reconcile(self, topo: Topology, view: dict[str, NodeView], paused_master: bool = False) -> None:
        """Bring Redis roles in line with `topo`. Not before every proxy that may
        still route writes has applied `topo` (Raft's writes_fenced): a proxy a
        heartbeat behind would otherwise write to the old master after the new
        one was promoted, and lose those writes when the old one is demoted.
        `paused_master`: the switchover's CLIENT PAUSE WRITE holds such writes."""
        actions = reconcile(topo.master, topo.nodes, view)
        if actions and not paused_master and not await self._wait_fenced(topo):
            return
        if not actions and self.phase == "reconciling":
            self.phase = "idle"
            log.info("event=failover_finished epoch=%d master=%s", topo.epoch, topo.master)
        now = time.monotonic()
        for action in actions:
            key = (action.node, topo.epoch, action.replicaof or "")
            last = self._acted.get(key)
            if last is not None and now - last < max(0.5, 5 * self.interval):
                continue  # give the last command time to show in the probes
            self._acted[key] = now
            await self._run_action(action, topo.epoch)

    async def _wait_fenced(self, topo: Topology) -> bool:
        """Poll Raft's writes_fenced for `topo` (normally one round trip) for at most
        the longest a lease can outlive its last renewal; False if still not."""
        if self._fence[0] != topo.epoch:
            self._fence = (topo.epoch, self.consensus.applied_index)  # at or after the entry of `topo`
        deadline = time.monotonic() + self.consensus.fence_timeout_s + 0.1
        while not self.consensus.writes_fenced(self._fence[1]):
            if time.monotonic() > deadline or self.consensus.role != "leader":
                return False
            await asyncio.sleep(0.01)
        return True

    # -- graceful switchover ------------------------------------------------------
    async def switchover(self, to: str, timeout: float = 10.0) -> dict:
        """Make replica `to` the master with no acknowledged write lost.

        1. commit a topology with writes paused: every proxy holds writes
           (and `CLIENT PAUSE WRITE` on the master covers a proxy that lags);
        2. wait until `to` has replicated the master's whole offset;
        3. commit the topology with `to` as master; promote, demote, unpause.
        If `to` does not catch up in time, writes resume on the old master.
        """
        if self.consensus.role != "leader":
            raise NotLeaderError(self.consensus.leader_id)
        topo = self.sm.topology
        if topo is None or topo.master is None:
            raise ValueError("no committed topology")
        if to == topo.master and not topo.writes_paused:
            return {"ok": True, "message": f"{to} is already the master", "epoch": topo.epoch}
        if to not in topo.replicas:
            raise ValueError(f"{to} is not a replica in the committed topology")
        if not self.server.health.readable(to, topo.master):
            raise ValueError(f"{to} is not a healthy replica of {topo.master}")
        started = time.monotonic()
        old = topo.master
        self.phase = "switchover"
        log.warning("event=switchover_started from=%s to=%s epoch=%d", old, to, topo.epoch)
        if not await self._propose(topo.paused(), f"switchover to {to}: pause writes"):
            self.phase = "idle"
            raise RuntimeError("could not commit the write pause")
        master = self._client(old)
        target = self._client(to)
        try:
            await master.execute_command("CLIENT", "PAUSE", int(timeout * 1000), "WRITE")
            deadline = time.monotonic() + timeout
            while True:
                m = await master.info("replication")
                r = await target.info("replication")
                if int(r.get("slave_repl_offset", -1)) >= int(m.get("master_repl_offset", 0)):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{to} did not catch up with {old} within {timeout}s")
                await asyncio.sleep(0.01)
        except (RedisError, OSError, TimeoutError, asyncio.TimeoutError) as exc:
            log.error("event=switchover_aborted from=%s to=%s error=%r", old, to, exc)
            await self._propose(self.sm.topology.resumed(), f"switchover to {to} aborted: {exc}")
            await self._unpause(master)
            self.phase = "idle"
            raise RuntimeError(f"switchover aborted, writes resumed on {old}: {exc}") from None
        nxt = self.sm.topology.with_master(to)
        if not await self._propose(nxt, f"switchover to {to}"):
            await self._propose(self.sm.topology.resumed(), f"switchover to {to} aborted")
            await self._unpause(master)
            self.phase = "idle"
            raise RuntimeError("could not commit the new topology; writes resumed on the old master")
        await self._reconcile(nxt, self.local_view(), paused_master=True)
        await self._unpause(master)
        self.phase = "idle"
        took = time.monotonic() - started
        log.warning("event=switchover_finished from=%s to=%s epoch=%d duration_ms=%.0f", old, to, nxt.epoch,
                    took * 1000)
        return {"ok": True, "message": f"{to} is the master", "epoch": nxt.epoch, "duration_s": round(took, 3)}

    async def _unpause(self, client: aioredis.Redis) -> None:
        try:
            await client.execute_command("CLIENT", "UNPAUSE")
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            log.warning("event=unpause_failed error=%r", exc)

    def peer_url(self, node: str | None) -> str | None:
        """A proxy's admin URL: from the Raft membership, else from config."""
        if node is None:
            return None
        core = getattr(self.consensus, "core", None)
        members = getattr(core, "members", None) or {}
        return members.get(node) or self.consensus.peers.get(node)

    def _client(self, addr: str) -> aioredis.Redis:
        c = self._clients.get(addr)
        if c is None:
            host, _, port = addr.rpartition(":")
            t = self.cfg.down_after_ms / 1000.0
            c = self._clients[addr] = aioredis.Redis(
                host=host, port=int(port), username=self.cfg.redis_username or None,
                password=self.cfg.redis_password or None, socket_timeout=t, socket_connect_timeout=t)
        return c

    async def _run_action(self, action, epoch: int) -> None:
        client = self._client(action.node)
        try:
            if action.replicaof is None:
                await client.execute_command("REPLICAOF", "NO", "ONE")
                log.warning("event=node_promoted node=%s epoch=%d reason=%r", action.node, epoch, action.reason)
            else:
                host, _, port = action.replicaof.rpartition(":")
                await client.execute_command("REPLICAOF", host, port)
                log.warning("event=node_demoted node=%s replicaof=%s epoch=%d reason=%r", action.node,
                            action.replicaof, epoch, action.reason)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            log.warning("event=reconcile_failed node=%s epoch=%d error=%r", action.node, epoch, exc)


def add_report_route(app: web.Application, controller: Controller) -> None:
    async def report(request: web.Request) -> web.Response:
        if request.headers.get("X-Raft-Secret", "") != controller.cfg.raft_secret:
            return web.Response(status=403, text="bad secret\n")
        try:
            body = await request.json()
            controller.receive_report(str(body["node"]), dict(body["view"]))
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="bad report\n")
        return web.Response(text="ok\n")

    app.router.add_post(REPORT_PATH, report)
