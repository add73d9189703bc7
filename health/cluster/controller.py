"""Cluster mode's control loop: the same decisions as for one master-replica set, made
per shard (issue 14).

One loop per proxy (views to the leader, as in single-set mode); on the leader, one
`Controller` per shard shares those views and runs the same detection, quorum, fence
and reconciliation for its shard, promoting with `CLUSTER FAILOVER TAKEOVER` (the
nodes run with `cluster-replica-no-failover yes`: the proxies are the only failover
authority). The first topology of every shard comes from `CLUSTER SHARDS`, committed
in one Raft entry. Every proxy also checks, now and then, that the nodes are
configured as the proxies need (`health.cluster.node_config`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from health.cluster.discovery import (
    DiscoveryError,
    cluster_shards,
    config_problems,
    initial_topologies,
)
from health.cluster.sync_hold import release as release_full_syncs
from health.errors import CommitFailed, NotLeaderError
from health.migration.atomic import key_counts
from health.migration.driver import MigrationDriver
from health.migration.plan import (
    ACTIVE,
    CANCELLED,
    DONE,
    QUEUED,
    RUNNING,
    Migration,
    even_keys_plan,
    even_plan,
    expand,
    refuse_move,
    resolve_shard,
    to_ranges,
)
from health.migration.reconcile import served_slots
from health.redis_control import cluster_node_view, reply_text
from health.shard.controller import Controller
from health.state_machine import TopologyStateMachine
from proxy.routing.topology import Topology
from raft.core import NotLeader, RaftError
from raft.storage import StorageError

log = logging.getLogger("health.cluster")

CONFIG_CHECK_INTERVAL_S = 30.0


async def commit_migrations(consensus, planned: list[Migration], what: str) -> None:
    """Propose `planned` in order. NotLeaderError when the leadership was lost before the
    first (planning can take a while: counting the keys of every slot), CommitFailed
    saying how many were committed when a proposal fails later or otherwise."""
    for i, m in enumerate(planned):
        try:
            await consensus.propose(TopologyStateMachine.migration_entry(m, reason=what), timeout=2.0)
        except NotLeader as exc:
            if i == 0:
                raise NotLeaderError(exc.leader_hint) from None
            raise CommitFailed(f"{what}: {i} of {len(planned)} migrations committed, then this proxy lost the "
                               f"Raft leadership ({exc}); `cluster migrations` lists them") from None
        except TimeoutError:
            raise CommitFailed(f"{what}: {i} of {len(planned)} migrations committed, the next not confirmed "
                               "within 2 s (it may still commit); `cluster migrations` lists what did") from None
        except (RaftError, StorageError) as exc:
            raise CommitFailed(f"{what}: {i} of {len(planned)} migrations committed, then the next failed "
                               f"({exc}); `cluster migrations` lists them") from None


class ClusterController(Controller):
    def __init__(self, server, consensus, sm: TopologyStateMachine) -> None:
        super().__init__(server, consensus, sm)
        self.per_shard: dict[str, Controller] = {}
        self.config_problems: list[str] = []
        self._config_checked_at = -CONFIG_CHECK_INTERVAL_S
        self._checking = False
        self.discovery_error = ""
        self.migration = MigrationDriver(self)

    def for_shard(self, shard: str) -> Controller:
        c = self.per_shard.get(shard)
        if c is None:
            c = self.per_shard[shard] = Controller(self.server, self.consensus, self.sm, shard=shard,
                                                   shared_with=self)
        return c

    def _timeout(self) -> float:
        return max(0.5, self.cfg.down_after_ms / 1000.0)

    async def _step(self) -> None:
        self._maybe_check_config()
        view = self._observe()
        if view is None:
            return
        term = self.consensus.term
        if self.refusal(term, None) is not None:
            return
        shards = self.sm.cluster_shards
        if not shards:
            await self._propose_discovered()
            return
        await self._maybe_end_pause()      # maintenance mode covers every shard
        await asyncio.gather(*(self._shard_step(s, term, view) for s in shards))
        self.migration.step(term)

    async def _shard_step(self, shard: str, term: int, view) -> None:
        c = self.for_shard(shard)
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
        await self._release_stale_sync_holds(nodes)

    async def _release_stale_sync_holds(self, nodes: list[str]) -> None:
        """The leader gives back its own sync delay to any node whose full syncs a leader held
        (`sync_hold`) and that is no longer the master of a shard holding writes for the
        operator: the leader that held it may have lost leadership before releasing it."""
        if self.refusal(self.consensus.term, None) is not None:
            return
        holding = {t.master for t in self.sm.cluster_shards.values() if t.writes_paused and t.hold_reason}
        for addr in nodes:
            if addr in holding:
                continue
            try:
                async with asyncio.timeout(self._timeout()):
                    await release_full_syncs(self._client(addr).execute_command, addr, log)
            except (TimeoutError, RedisError, OSError, ValueError) as exc:
                log.debug("sync hold check on %s failed: %r", addr, exc)

    # -- operator actions ----------------------------------------------------------
    async def switchover(self, to: str, timeout: float = 10.0) -> dict:
        """`failover --to NODE`: the shard is the one whose committed topology names NODE."""
        if self.consensus.role != "leader":
            raise NotLeaderError(self.consensus.leader_id)
        for shard, topo in self.sm.cluster_shards.items():
            if to in topo.nodes:
                out = await self.for_shard(shard).switchover(to, timeout)
                return {**out, "shard": shard}
        raise ValueError(f"{to} is not a node of any shard")

    # -- moving slots (issue 15) ------------------------------------------------------
    def _leader(self) -> None:
        if self.consensus.role != "leader":
            raise NotLeaderError(self.consensus.leader_id)

    def _shard_id(self, name: str) -> str:
        sid = resolve_shard(self.sm.cluster_shards, name)
        if sid is None:
            raise ValueError(f"no shard {name!r} (name one by its id, as /status shows it, or by a node's address)")
        return sid

    def _refuse_if_busy(self) -> None:
        for m in self.sm.migrations.values():
            if m.state in ACTIVE:
                raise ValueError(f"migration {m.id} ({m.source} -> {m.target}) is {m.state}; cancel it or let it "
                                 "finish first")

    async def _plan(self, moves: list[tuple[str, str, tuple[tuple[int, int], ...]]], what: str,
                    then_remove: str = "", extra: dict | None = None) -> dict:
        """Commit `moves` as migrations, the first running and the rest queued behind it."""
        shards = self.sm.cluster_shards
        for source, target, slots in moves[:1]:
            why = refuse_move(shards, list(self.sm.migrations.values()), source, target, slots)
            if why is not None:
                raise ValueError(why)
        now = time.time()
        base = f"{int(now * 1000):x}"
        planned = [Migration(f"{base}-{i}", source, target, slots, state=RUNNING if i == 0 else QUEUED,
                             started_at=now, updated_at=now, then_remove=bool(then_remove) and i == len(moves) - 1)
                   for i, (source, target, slots) in enumerate(moves)]
        await commit_migrations(self.consensus, planned, what)
        log.warning("event=migration_planned what=%r moves=%d slots=%d", what, len(planned),
                    sum(m.total for m in planned))
        return {"ok": True, "message": what, "migrations": [m.to_dict() for m in planned], **(extra or {})}

    async def move_slots(self, source: str, target: str, slots: tuple[tuple[int, int], ...]) -> dict:
        self._leader()
        src, dst = self._shard_id(source), self._shard_id(target)
        return await self._plan([(src, dst, slots)], f"move {sum(b - a + 1 for a, b in slots)} slots {src} -> {dst}")

    async def rebalance(self, by: str = "slots") -> dict:
        """Even out the shards' slots (`by="slots"`) or their keys (`by="keys"`: planned from
        CLUSTER COUNTKEYSINSLOT of every slot on its master)."""
        if by not in ("slots", "keys"):
            raise ValueError(f"rebalance by {by!r}: expected 'slots' or 'keys'")
        self._leader()
        self._refuse_if_busy()
        shards = self.sm.cluster_shards
        extra: dict = {}
        if by == "keys":
            keys = await self._slot_keys(shards)
            moves = even_keys_plan(shards, keys)
            extra["keys"] = {sid: sum(keys.get(s, 0) for s in expand(t.slots)) for sid, t in shards.items()}
        else:
            moves = even_plan(shards)
        if not moves:
            return {"ok": True, "message": f"already balanced by {by}", "migrations": [], **extra}
        return await self._plan(moves, f"rebalance by {by}", extra=extra)

    async def _slot_keys(self, shards: dict[str, Topology]) -> dict[int, int]:
        """Every slot's key count, asked of the master serving it."""
        out: dict[int, int] = {}
        for sid, t in shards.items():
            slots = expand(t.slots)
            if not slots:
                continue
            if t.master is None:
                raise ValueError(f"shard {sid} has no master to count its keys")
            try:
                out.update(zip(slots, await key_counts(self._client(t.master), slots)))
            except (TimeoutError, RedisError, OSError) as exc:
                raise ValueError(f"could not count the keys of shard {sid} on {t.master}: {exc}") from None
        return out

    async def remove_shard(self, name: str) -> dict:
        """Move every slot of shard `name` to the others (evenly), then forget it and
        release its nodes."""
        self._leader()
        self._refuse_if_busy()
        sid = self._shard_id(name)
        rest = sorted(s for s in self.sm.cluster_shards if s != sid)
        if not rest:
            raise ValueError("cannot remove the last shard")
        slots = expand(self.sm.cluster_shards[sid].slots)
        if not slots:       # nothing to move: forget it and release its nodes now
            now = time.time()
            m = Migration(f"{int(now * 1000):x}-0", sid, rest[0], (), state=DONE, started_at=now, updated_at=now,
                          then_remove=True)
            nodes = self.sm.cluster_shards[sid].nodes
            await self.consensus.propose(TopologyStateMachine.migration_entry(m, forget=sid, reason="remove-shard"),
                                         timeout=2.0)
            await self.migration.release(nodes, list(self.sm.cluster_shards.values()))
            return {"ok": True, "message": f"shard {sid} removed (it served no slots)", "migrations": []}
        per = -(-len(slots) // len(rest))
        moves = [(sid, target, to_ranges(slots[i * per:(i + 1) * per])) for i, target in enumerate(rest)
                 if slots[i * per:(i + 1) * per]]
        return await self._plan(moves, f"remove shard {sid}", then_remove=sid)

    async def add_shard(self, master: str, replicas: list[str]) -> dict:
        """Bring new nodes into the cluster (MEET, REPLICATE), commit them as a shard with
        no slots, then rebalance slots onto it."""
        self._leader()
        self._refuse_if_busy()
        shards = self.sm.cluster_shards
        known = {a for t in shards.values() for a in t.nodes}
        for addr in [master, *replicas]:
            if addr in known:
                raise ValueError(f"{addr} is already a node of a shard")
        seed = min((t.master for t in shards.values() if t.master), default=None)
        if seed is None:
            raise ValueError("no shard has a master to introduce the new nodes")
        sid = await self._introduce(seed, master, replicas)
        await self.consensus.propose(TopologyStateMachine.entry(Topology(1, master, tuple(replicas)), "add-shard",
                                                                sid), timeout=2.0)
        moves = even_plan(self.sm.cluster_shards)
        if not moves:
            return {"ok": True, "message": f"shard {sid} added", "shard": sid, "migrations": []}
        return await self._plan(moves, f"add shard {sid} and rebalance", extra={"shard": sid})

    async def _introduce(self, seed: str, master: str, replicas: list[str]) -> str:
        """CLUSTER MEET the new nodes from `seed`, make `replicas` replicate `master`;
        returns the master's node id (the new shard's id)."""
        try:
            for addr in [master, *replicas]:
                host, _, port = addr.rpartition(":")
                bus = await self._bus_port(addr)
                await self._client(seed).execute_command("CLUSTER", "MEET", host, int(port), bus)
            master_id = reply_text(await self._client(master).execute_command("CLUSTER", "MYID"))
            for addr in replicas:
                deadline = time.monotonic() + 10
                while True:     # the replica must know the master (gossip) before it can follow it
                    try:
                        await self._client(addr).execute_command("CLUSTER", "REPLICATE", master_id)
                        break
                    except RedisError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.1)
            await self._learn_slot_map(seed, master)
        except (TimeoutError, RedisError, OSError) as exc:
            raise ValueError(f"could not bring the new nodes into the cluster: {exc}") from None
        return master_id

    async def _learn_slot_map(self, seed: str, new: str, timeout: float = 10.0) -> None:
        """Wait (bounded) until the new master knows who serves every slot the seed knows of,
        from the cluster bus: slots it is told to import before that it would never learn
        (`served_slots`); and until it says cluster_state:ok, or the first batches would fail
        and the clients' ASKs to it get -CLUSTERDOWN (`cluster_state`). Past the bound the
        migration driver tells it the owners, slot by slot, and waits for ok."""
        want = served_slots(reply_text(await self._client(seed).execute_command("CLUSTER", "NODES")))
        deadline = time.monotonic() + timeout
        while True:
            _, nodes, state = await cluster_node_view(self._client(new), new, self.migration.state_unchecked)
            missing = want - served_slots(nodes)
            if not missing and state in ("ok", None):
                return
            if time.monotonic() > deadline:
                log.warning("event=slot_map_not_learned node=%s missing_slots=%d cluster_state=%s", new,
                            len(missing), state)
                return
            await asyncio.sleep(0.1)

    async def _bus_port(self, addr: str) -> int:
        """The node's cluster bus port, from its own CLUSTER NODES line."""
        for line in reply_text(await self._client(addr).execute_command("CLUSTER", "NODES")).splitlines():
            fields = line.split()
            if len(fields) > 2 and "myself" in fields[2]:
                return int(fields[1].split("@")[1].split(",")[0])
        raise ValueError(f"{addr} is not a cluster-enabled node (no CLUSTER NODES line of its own)")

    async def cancel_migrations(self) -> dict:
        """Stop after the batch in flight: slots moved so far stay moved, the rest stay put.
        What the nodes moved and no leader committed (a leader killed mid-batch) is first
        made to agree with them (`MigrationDriver.reconcile`) and committed with the cancel."""
        self._leader()
        cancelled = []
        await self.migration.quiesce()      # the batch in flight commits what it moved first
        try:
            # the running one first: if the nodes cannot be asked, nothing is cancelled
            for m in sorted(self.sm.migrations.values(), key=lambda m: (m.state != RUNNING, m.id)):
                if m.state not in ACTIVE:
                    continue
                moved: list[int] = []
                keys = 0
                if m.state == RUNNING:
                    try:
                        decided, keys = await self.migration.reconcile(m)
                    except (TimeoutError, RedisError, OSError, ValueError) as exc:
                        raise ValueError(f"migration {m.id} not cancelled: could not make the committed slot map "
                                         f"agree with the nodes ({exc}); try again once both shards have a master"
                                         ) from None
                    moved = decided.to_commit
                cur = self.sm.migrations.get(m.id, m)
                nxt = cur.advanced(len(moved), keys, time.time()) if moved else cur
                forget = ""
                if nxt.state == DONE:       # every slot had moved: it is done, not cancelled
                    forget = m.source if m.then_remove else ""
                else:
                    nxt = nxt.with_state(CANCELLED, "cancelled by the operator", time.time())
                shards = self.sm.cluster_shards
                await self.consensus.propose(TopologyStateMachine.migration_entry(nxt, moved, forget, reason="cancel"),
                                             timeout=2.0)
                if forget and forget in shards:
                    await self.migration.release(shards[forget].nodes,
                                                 [t for sid, t in shards.items() if sid != forget])
                cancelled.append(nxt.to_dict())
        finally:
            self.migration.resume()
        log.warning("event=migration_cancelled count=%d", len(cancelled))
        return {"ok": True, "message": f"{len(cancelled)} migration(s) cancelled", "migrations": cancelled}

    def migration_status(self) -> list[dict]:
        out = []
        for m in sorted(self.sm.migrations.values(), key=lambda m: m.id):
            d = m.to_dict()
            if m.state == RUNNING and self.migration.waiting:
                d["waiting"] = self.migration.waiting
            out.append(d)
        return out

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
