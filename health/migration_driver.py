"""Moving hash slots on the leader (issue 15): the committed plan (`health.migration`)
carried out batch by batch with Redis' own machinery, each batch's result committed
with the new slot ranges of both shards.

One slot, the legacy way (`CLUSTER SETSLOT` + `MIGRATE`, every Redis 7 and Valkey):
the target imports, the source migrates, keys move in groups of `KEYS_PER_MIGRATE`
(`MIGRATE ... REPLACE KEYS`: a key still on the source is the newest, since clients
write there while it exists), then every master learns the slot's new owner. Each
step is idempotent, so a new leader (or a retry after a failed batch) simply runs the
batch again: a slot whose target already owns it only has its owner announced again.

While a slot migrates, clients notice nothing but latency: the source answers for
keys it still has, and `ASK`s for the rest, which the proxies follow; once moved, the
source answers `MOVED`, which they follow too until the batch is committed. With
`ack = replica`, after each group of keys the target's replica must confirm the keys
(`WAIT`) before the next group moves: a failed target loses at most one group, the
window `ack = replica` leaves for any write. A shard failing over, a master down, or
a paused shard holds the migration (`waiting`) until both shards are well again; it
then goes on with the new masters.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from .migration import DONE, QUEUED, RUNNING, Migration
from .redis_control import control_client, control_tls
from .state_machine import TopologyStateMachine

log = logging.getLogger("health.migration")

BATCH_SLOTS = 32
KEYS_PER_MIGRATE = 100
MIGRATE_TIMEOUT_MS = 10000
WAIT_MARK = ("PUBLISH", "__redis-raft-proxy:migration__", "")


class MigrationDriver:
    def __init__(self, controller) -> None:
        self.ctl = controller
        self.cfg = controller.cfg
        self.sm: TopologyStateMachine = controller.sm
        self._task: asyncio.Task | None = None
        self._clients: dict[str, aioredis.Redis] = {}
        self.waiting = ""           # why the running migration is held (shown in /status)

    def current(self) -> Migration | None:
        running = [m for m in self.sm.migrations.values() if m.state == RUNNING]
        return running[0] if running else None

    def next_queued(self) -> Migration | None:
        queued = sorted((m for m in self.sm.migrations.values() if m.state == QUEUED), key=lambda m: m.id)
        return queued[0] if queued else None

    def step(self, term: int) -> None:
        """Called by the leader's control loop: start the next batch unless one runs."""
        if self._task is not None and not self._task.done():
            return
        m = self.current()
        if m is None:
            q = self.next_queued()
            if q is None:
                return
            self._task = asyncio.get_running_loop().create_task(
                self._commit(q.with_state(RUNNING, now=time.time()), None, term, "next planned move"))
            return
        self._task = asyncio.get_running_loop().create_task(self._batch(m, term))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for c in self._clients.values():
            await c.aclose()

    def _client(self, addr: str) -> aioredis.Redis:
        c = self._clients.get(addr)
        if c is None:
            c = self._clients[addr] = control_client(addr, username=self.cfg.control_username,
                                                     password=self.cfg.control_password,
                                                     timeout=MIGRATE_TIMEOUT_MS / 1000.0 + 5, tls=control_tls(self.cfg))
        return c

    def _hold_reason(self, m: Migration) -> str:
        shards = self.sm.cluster_shards
        for sid in (m.source, m.target):
            t = shards.get(sid)
            if t is None:
                return f"shard {sid} no longer exists"
            c = self.ctl.per_shard.get(sid)
            if c is not None and c.phase != "idle":
                return f"shard {sid} is {c.phase}"
            if t.writes_paused:
                return f"shard {sid} has its writes paused"
            if t.master is None or not self.ctl.server.health.up(t.master):
                return f"shard {sid}'s master {t.master} is down"
        return ""

    async def _batch(self, m: Migration, term: int) -> None:
        why = self._hold_reason(m)
        if why:
            if why != self.waiting:
                log.warning("event=migration_waiting id=%s reason=%r", m.id, why)
            self.waiting = why
            return
        if self.waiting:
            log.warning("event=migration_resumed id=%s after=%r", m.id, self.waiting)
            self.waiting = ""
        shards = self.sm.cluster_shards
        src, dst = shards[m.source].master, shards[m.target].master
        others = [t.master for sid, t in shards.items() if sid not in (m.source, m.target) and t.master]
        batch = m.pending()[:BATCH_SLOTS]
        started = time.monotonic()
        try:
            keys = await self._move_legacy(src, dst, others, batch)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self.waiting = f"a batch failed and is retried: {str(exc) or type(exc).__name__}"
            log.warning("event=migration_batch_failed id=%s slots=%d-%d error=%r", m.id, batch[0], batch[-1], exc)
            return
        cur = self.sm.migrations.get(m.id, m)       # (cancelled meanwhile: the progress is kept, the state too)
        nxt = cur.advanced(len(batch), keys, time.time())
        log.info("event=migration_batch id=%s slots=%d-%d keys=%d ms=%.0f", m.id, batch[0], batch[-1], keys,
                 (time.monotonic() - started) * 1000)
        forget = m.source if nxt.state == DONE and nxt.then_remove else ""
        if await self._commit(nxt, batch, term, "slots moved", forget):
            if nxt.state == DONE:
                log.warning("event=migration_finished id=%s source=%s target=%s slots=%d keys=%d", nxt.id,
                            nxt.source, nxt.target, nxt.total, nxt.keys_moved)
            if forget:
                await self._release(shards[forget].nodes, [t for sid, t in shards.items() if sid != forget])

    async def _commit(self, m: Migration, moved: list[int] | None, term: int, reason: str, forget: str = "") -> bool:
        why = self.ctl.refusal(term, None)
        if why is not None:
            log.warning("event=migration_not_committed id=%s reason=%r", m.id, why)
            return False
        try:
            await self.ctl.consensus.propose(TopologyStateMachine.migration_entry(m, moved, forget, reason),
                                             timeout=2.0)
            return True
        except Exception as exc:
            log.warning("event=propose_failed reason='migration %s' error=%r", m.id, exc)
            return False

    # -- Redis commands ---------------------------------------------------------------
    async def _move_legacy(self, src: str, dst: str, others: list[str], slots: list[int]) -> int:
        s, d = self._client(src), self._client(dst)
        src_id = await s.execute_command("CLUSTER", "MYID")
        dst_id = await d.execute_command("CLUSTER", "MYID")
        host, _, port = dst.rpartition(":")
        auth = self._migrate_auth()
        keys_moved = 0
        for slot in slots:
            try:
                await d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            except ResponseError as exc:
                if "already the owner" not in str(exc):
                    raise
                await self._announce(slot, dst_id, [src, *others])     # moved before: announce again
                continue
            await s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            while True:
                keys = await s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, KEYS_PER_MIGRATE)
                if not keys:
                    break
                await s.execute_command("MIGRATE", host, port, "", 0, MIGRATE_TIMEOUT_MS, "REPLACE", *auth,
                                        "KEYS", *keys)
                keys_moved += len(keys)
                if self.cfg.ack == "replica":
                    await self._replicated(d, dst)
            await self._announce(slot, dst_id, [dst, src, *others])
        return keys_moved

    def _migrate_auth(self) -> list[str]:
        """MIGRATE logs in on the target as the control user."""
        cfg = self.cfg
        if not cfg.control_password:
            return []
        if cfg.control_username:
            return ["AUTH2", cfg.control_username, cfg.control_password]
        return ["AUTH", cfg.control_password]

    async def _replicated(self, d: aioredis.Redis, dst: str) -> None:
        """ack = replica: the target's replica has every key moved so far."""
        await d.execute_command(*WAIT_MARK)
        acked = await d.execute_command("WAIT", 1, self.cfg.ack_timeout_ms)
        if int(acked) < 1:
            raise RedisError(f"no replica of {dst} confirmed the moved keys within {self.cfg.ack_timeout_ms} ms "
                             "(ack = replica)")

    async def _announce(self, slot: int, owner_id, nodes: list[str]) -> None:
        """Every master learns the slot's owner (the owner first: Redis' own order)."""
        for i, addr in enumerate(nodes):
            try:
                await self._client(addr).execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner_id)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                if i < 2:
                    raise       # the target and the source must know; the others learn by gossip
                log.debug("SETSLOT NODE on %s failed: %r", addr, exc)

    async def _release(self, nodes, remaining) -> None:
        """remove-shard: the emptied shard's nodes leave the cluster (CLUSTER FORGET on
        every remaining node, CLUSTER RESET on them), best effort: they no longer serve
        anything the proxies route to."""
        ids = {}
        for addr in nodes:
            try:
                ids[addr] = await self._client(addr).execute_command("CLUSTER", "MYID")
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("event=node_release_failed node=%s error=%r", addr, exc)
        for t in remaining:
            for addr in t.nodes:
                for node_id in ids.values():
                    try:
                        await self._client(addr).execute_command("CLUSTER", "FORGET", node_id)
                    except (RedisError, OSError, asyncio.TimeoutError) as exc:
                        log.debug("CLUSTER FORGET on %s failed: %r", addr, exc)
        for addr in sorted(ids, key=lambda a: a not in nodes[1:]):     # replicas first
            try:
                await self._client(addr).execute_command("CLUSTER", "RESET", "SOFT")
                log.warning("event=node_released node=%s", addr)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("event=node_release_failed node=%s error=%r", addr, exc)
