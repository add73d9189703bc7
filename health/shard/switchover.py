"""A graceful switchover (`failover --to NODE`) and the operator's acceptance of a data
loss, as a part of the shard controller (health.shard.controller.Controller): the
controller's own proposals, records, reconciler and Redis clients do the work."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from health.errors import NotLeaderError
from health.maintenance import DATA_LOSS_ACCEPTED, MANUAL
from health.shard.decide import failover_refusal, never_seen
from health.state_machine import SINGLE
from proxy.routing.topology import History, Topology


def switchover_budget(timeout: float) -> tuple[float, float]:
    """Split a switchover's `timeout` into (seconds from the start by which the target must
    have caught up, seconds kept for committing the new master): a fifth for the commit,
    at most 1 s, so the whole operation ends within `timeout`."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    commit_s = min(1.0, timeout / 5)
    return timeout - commit_s, commit_s


class Switchover:
    """The switchover of health.shard.controller.Controller (a mixin: it uses the controller's
    consensus, topology, health, _propose, _record, _reconcile and _client)."""

    async def switchover(self, to: str, timeout: float = 10.0) -> dict:
        """Make replica `to` the master with no acknowledged write lost.

        1. commit a topology with writes paused: every proxy holds writes
           (and `CLIENT PAUSE WRITE` on the master covers a proxy that lags);
        2. wait until `to` has replicated the master's whole offset;
        3. commit the topology with `to` as master; promote, demote, unpause.
        If `to` does not catch up in time, writes resume on the old master.
        If the old master could not be demoted, it is not unpaused: the reconciler
        keeps demoting it (renewing its pause before each try) and unpauses it once
        it is a replica; until then it may still take writes from clients that do
        not go through the proxies.

        While writes are held because no node has the committed data
        (`no_safe_master`), this is how the operator accepts the loss: `to`, any
        node that answers, becomes the master with what it holds.
        """
        if self.consensus.role != "leader":
            raise NotLeaderError(self.consensus.leader_id)
        topo = self.topology
        if topo is None or topo.master is None:
            raise ValueError("no committed topology")
        if topo.writes_paused and topo.hold_reason:
            return await self._accept_loss(topo, to)
        if never_seen(topo.history) and not self.server.health.up(topo.master):
            return await self._accept_loss(topo, to)
        if to == topo.master and not topo.writes_paused:
            return {"ok": True, "message": f"{to} is already the master", "epoch": topo.epoch}
        if to not in topo.replicas:
            raise ValueError(f"{to} is not a replica in the committed topology")
        if not self.server.health.readable(to, topo.master):
            raise ValueError(f"{to} is not a healthy replica of {topo.master}")
        tagged = failover_refusal(to, self.tags)
        if tagged is not None:      # the operator's choice wins over the tag, with a warning
            self.log.warning("event=switchover_to_tagged_node node=%s tag=%r", to, tagged)
        started = time.monotonic()
        # `timeout` bounds the whole switchover: the pause's commit, the catch-up, and the
        # new topology's commit (kept a share of it: see switchover_budget)
        caught_up_by, commit_s = switchover_budget(timeout)
        deadline = started + caught_up_by
        old, term = topo.master, self.consensus.term
        self.phase = "switchover"
        self.log.warning("event=switchover_started from=%s to=%s epoch=%d timeout_s=%.3f", old, to, topo.epoch,
                         timeout)
        if not await self._propose(topo.paused(), f"switchover to {to}: pause writes", timeout=min(2.0, caught_up_by)):
            self.phase = "idle"
            raise RuntimeError("could not commit the write pause")
        master = self._client(old)
        target = self._client(to)
        try:
            await master.execute_command("CLIENT", "PAUSE", max(1, int((started + timeout - time.monotonic()) * 1000)),
                                         "WRITE")
            while True:
                m = await master.info("replication")
                r = await target.info("replication")
                if int(r.get("slave_repl_offset", -1)) >= int(m.get("master_repl_offset", 0)):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{to} did not catch up with {old} within the timeout ({timeout}s)")
                await asyncio.sleep(0.01)
        except (RedisError, OSError, TimeoutError) as exc:
            self.log.error("event=switchover_aborted from=%s to=%s error=%r", old, to, exc)
            await self._propose(self.topology.resumed(), f"switchover to {to} aborted: {exc}")
            await self._unpause(master)
            self.phase = "idle"
            raise RuntimeError(f"switchover aborted, writes resumed on {old}: {exc}") from None
        nxt = self.topology.with_master(to, History(str(r.get("master_replid", "")),
                                                       int(r.get("slave_repl_offset", 0))))
        if not await self._propose(nxt, f"switchover to {to}", timeout=max(0.1, started + timeout - time.monotonic(),
                                                                          min(commit_s, 0.5))):
            await self._propose(self.topology.resumed(), f"switchover to {to} aborted")
            await self._unpause(master)
            self.phase = "idle"
            raise RuntimeError("could not commit the new topology; writes resumed on the old master")
        self._record(old, nxt, MANUAL, time.monotonic() - started, f"switchover to {to}")
        await self._reconcile(nxt, self.local_view(), term, paused_master=True)
        demoted = await self._became_replica(master)
        if demoted:
            await self._unpause(master)
        else:
            self._paused_old = old
            self.log.error("event=switchover_demotion_pending node=%s epoch=%d reason='the old master is still a "
                      "master: it stays paused until the reconciler has demoted it'", old, nxt.epoch)
        self.phase = "idle"
        took = time.monotonic() - started
        self.switchover_seconds.observe(took)
        self.log.warning("event=switchover_finished from=%s to=%s epoch=%d duration_ms=%.0f old_demoted=%s", old, to,
                    nxt.epoch, took * 1000, demoted)
        out = {"ok": True, "message": f"{to} is the master", "epoch": nxt.epoch, "duration_s": round(took, 3)}
        if tagged is not None:
            out["warning"] = f"{to} is {tagged}: automatic failover would never have promoted it"
            out["message"] += f" (warning: {out['warning']})"
        if not demoted:
            out["message"] += f"; {old} is not demoted yet and stays paused until it is"
        return out

    async def _accept_loss(self, topo: Topology, to: str) -> dict:
        """The operator's answer to no_safe_master: make `to` the master with what it has."""
        if to not in topo.nodes:
            raise ValueError(f"{to} is not a node of the committed topology")
        v = self.local_view().get(to)
        if v is None or not v.up or not v.replid:
            raise ValueError(f"{to} does not answer")
        h = topo.history
        self.log.error("event=data_loss_accepted node=%s replid=%s offset=%d history_replid=%s history_offset=%d "
                       "epoch=%d", to, v.replid, v.offset, h.replid if h else "", h.offset if h else -1, topo.epoch)
        nxt = topo.with_master(to, History(v.replid, v.offset))
        if not await self._propose(nxt, f"operator accepted the data loss: {to} is the master"):
            raise RuntimeError("could not commit the new topology")
        self._record(topo.master, nxt, DATA_LOSS_ACCEPTED, None, f"operator accepted the data loss: {to}")
        self.phase, self.phase_reason = "reconciling", ""
        return {"ok": True, "message": f"{to} is the master with the data it has", "epoch": nxt.epoch}

    async def _became_replica(self, client: aioredis.Redis, within_s: float = 2.0) -> bool:
        """The old master turned replica (at once after REPLICAOF; in cluster mode once the
        cluster bus brought it the promoted node's claim on its slots)."""
        deadline = time.monotonic() + within_s
        while not await self._is_replica(client):
            if self.shard == SINGLE or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _is_replica(self, client: aioredis.Redis) -> bool:
        try:
            info = await client.info("replication")
        except (TimeoutError, RedisError, OSError):
            return False
        return info.get("role") == "slave"

    async def _unpause(self, client: aioredis.Redis) -> None:
        try:
            await client.execute_command("CLIENT", "UNPAUSE")
        except (TimeoutError, RedisError, OSError) as exc:
            self.log.warning("event=unpause_failed error=%r", exc)
