"""Cluster mode's control loop: the same decisions as for one master-replica set, made
per shard (issue 14).

One loop per proxy (views to the leader, as in single-set mode); on the leader, one
`Controller` per shard shares those views and runs the same detection, quorum, fence
and reconciliation for its shard, promoting with `CLUSTER FAILOVER TAKEOVER` (the
nodes run with `cluster-replica-no-failover yes`: the proxies are the only failover
authority). The first topology of every shard comes from `CLUSTER SHARDS`, committed
in one Raft entry. Every proxy also checks, now and then, that the nodes are
configured as the proxies need (`health.cluster_config`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from .cluster_discovery import DiscoveryError, cluster_shards, config_problems, initial_topologies
from .controller import Controller, NotLeaderError
from .state_machine import TopologyStateMachine

log = logging.getLogger("health.cluster")

CONFIG_CHECK_INTERVAL_S = 30.0


class ClusterController(Controller):
    def __init__(self, server, consensus, sm: TopologyStateMachine) -> None:
        super().__init__(server, consensus, sm)
        self.per_shard: dict[str, Controller] = {}
        self.config_problems: list[str] = []
        self._config_checked_at = -CONFIG_CHECK_INTERVAL_S
        self._checking = False
        self.discovery_error = ""

    def shard(self, shard: str) -> Controller:
        c = self.per_shard.get(shard)
        if c is None:
            c = self.per_shard[shard] = Controller(self.server, self.consensus, self.sm, shard=shard,
                                                   shared_with=self)
        return c

    def _timeout(self) -> float:
        return max(0.5, self.cfg.down_after_ms / 1000.0)

    async def _step(self) -> None:
        self._maybe_check_config()
        self.server.stats.observe_raft(self.consensus)
        self.raft_events.observe(self.consensus)
        view = self.local_view()
        if self.consensus.role != "leader":
            self.views.clear()
            asyncio.get_running_loop().create_task(self._send_report(view))
            return
        self.views[self.cfg.node] = (time.monotonic(), view)
        term = self.consensus.term
        if self.refusal(term, None) is not None:
            return
        shards = self.sm.cluster_shards
        if not shards:
            await self._propose_discovered()
            return
        await asyncio.gather(*(self._shard_step(s, term, view) for s in shards))

    async def _shard_step(self, shard: str, term: int, view) -> None:
        c = self.shard(shard)
        try:
            await c._maybe_fail_over(c.topology)
            await c._reconcile(c.topology, view, term)
        except Exception:
            log.exception("controller step failed shard=%s", shard)

    async def _propose_discovered(self) -> None:
        if self._proposing:
            return
        try:
            shards = await cluster_shards(self.cfg.cluster_nodes, self._client, self._timeout())
        except DiscoveryError as exc:
            if str(exc) != self.discovery_error:
                log.error("event=cluster_discovery_failed error=%r", str(exc))
            self.discovery_error = str(exc)
            return
        if not shards:
            self.discovery_error = "the cluster has no master serving slots yet"
            return
        self.discovery_error = ""
        topologies = initial_topologies(shards)
        self._proposing = True
        try:
            await self.consensus.propose(TopologyStateMachine.shards_entry(
                topologies, "initial topology from CLUSTER SHARDS"), timeout=2.0)
            log.warning("event=cluster_discovered shards=%d nodes=%d", len(shards),
                        sum(len(t.nodes) for t in topologies.values()))
        except Exception as exc:
            log.warning("event=propose_failed reason='initial cluster topology' error=%r", exc)
        finally:
            self._proposing = False

    # -- node settings ----------------------------------------------------------
    def _maybe_check_config(self) -> None:
        now = time.monotonic()
        if self._checking or now - self._config_checked_at < CONFIG_CHECK_INTERVAL_S:
            return
        nodes = sorted({a for t in self.sm.cluster_shards.values() for a in t.nodes} or set(self.cfg.cluster_nodes))
        self._config_checked_at = now
        self._checking = True
        asyncio.get_running_loop().create_task(self._check_config(nodes))

    async def _check_config(self, nodes: list[str]) -> None:
        try:
            problems = await config_problems(nodes, self._client, self._timeout())
        finally:
            self._checking = False
        for p in sorted(set(problems) - set(self.config_problems)):
            log.error("event=cluster_config_problem problem=%r", p)
        self.config_problems = problems

    # -- operator actions ----------------------------------------------------------
    async def switchover(self, to: str, timeout: float = 10.0) -> dict:
        """`failover --to NODE`: the shard is the one whose committed topology names NODE."""
        if self.consensus.role != "leader":
            raise NotLeaderError(self.consensus.leader_id)
        for shard, topo in self.sm.cluster_shards.items():
            if to in topo.nodes:
                out = await self.shard(shard).switchover(to, timeout)
                return {**out, "shard": shard}
        raise ValueError(f"{to} is not a node of any shard")

    def shard_status(self) -> list[dict]:
        out = []
        for shard, topo in sorted(self.sm.cluster_shards.items()):
            c = self.per_shard.get(shard)
            d = {"id": shard, "slots": [list(r) for r in topo.slots], "epoch": topo.epoch, "master": topo.master,
                 "replicas": list(topo.replicas), "writes_paused": topo.writes_paused,
                 "phase": c.phase if c else "idle", "phase_reason": c.phase_reason if c else ""}
            if topo.hold_reason:
                d["hold_reason"] = topo.hold_reason
            if topo.history is not None:
                d["history"] = topo.history.to_dict()
            out.append(d)
        return out
