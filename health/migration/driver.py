"""Moving hash slots on the leader (issue 15): the committed plan (`health.migration.plan`)
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

Where every master has Valkey 9's atomic slot migration (`health.migration.atomic`),
it is used instead (bigger batches: one job each): the choice is made once per
migration, logged (`event=migration_mechanism`) and committed in `Migration.mechanism`.
A failed or cancelled atomic job (Valkey rolls it back) holds the migration with its
reason and is retried; after `ATOMIC_ATTEMPTS` failures in a row the migration goes on
the legacy way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from health.cancellation import raise_if_cancelled
from health.migration.atomic import (
    AtomicMoveFailed,
    atomic_unsupported,
    cancel_exports,
    key_counts,
    move_atomic,
)
from health.migration.plan import DONE, QUEUED, RUNNING, Migration, to_ranges
from health.migration.reconcile import (
    Reconciliation,
    node_view,
    not_owned_by,
    reconcile,
    served_slots,
    slot_facts,
    slot_owner,
)
from health.redis_control import cluster_node_view, control_client, control_tls, pipelined, reply_text
from health.state_machine import TopologyStateMachine
from proxy.routing.keyslot import ranges_text

log = logging.getLogger("health.migration")

BATCH_SLOTS = 128
ATOMIC_BATCH_SLOTS = 512            # one atomic job (one snapshot of the source) per batch
ATOMIC_ATTEMPTS = 3                 # failed atomic jobs in a row before going on the legacy way
RETRY_AFTER_S = 1.0                 # pause after a failed batch
ATOMIC, LEGACY = "atomic", "legacy"
KEYS_PER_MIGRATE = 100
REPLICAS_LEARN_S = 2.0              # how long a batch waits for the target's replicas to learn its slots
MIGRATE_TIMEOUT_MS = 10000
WAIT_MARK = ("PUBLISH", "__redis-raft-proxy:migration__", "")


class MigrationDriver:
    def __init__(self, controller) -> None:
        self.ctl = controller
        self.cfg = controller.cfg
        self.sm: TopologyStateMachine = controller.sm
        self._task: asyncio.Task | None = None
        self._clients: dict[str, aioredis.Redis] = {}
        self.held = ""              # why the running migration is held
        self.failure = ""           # why its last batch failed (cleared by the next that succeeds)
        self.stopping = False       # no new batch (a cancel is being committed)
        self._retry_at = 0.0
        self._mechanism: dict[str, str] = {}        # migration id -> the mechanism this leader chose
        self._atomic_failures: dict[str, tuple[int, str]] = {}     # id -> failed jobs in a row, the last error
        self.state_unchecked: set[str] = set()      # nodes whose ACL refuses CLUSTER INFO (warned once each)

    @property
    def waiting(self) -> str:
        """Why the running migration does not progress (shown in /status), or ""."""
        return self.held or self.failure

    def current(self) -> Migration | None:
        running = [m for m in self.sm.migrations.values() if m.state == RUNNING]
        return running[0] if running else None

    def next_queued(self) -> Migration | None:
        queued = sorted((m for m in self.sm.migrations.values() if m.state == QUEUED), key=lambda m: m.id)
        return queued[0] if queued else None

    def step(self, term: int) -> None:
        """Called by the leader's control loop: start the next batch unless one runs. A
        batch that commits asks for the next step at once (`_then_next`): batches follow
        each other, not the control loop's grid."""
        if self._task is not None and not self._task.done() or time.monotonic() < self._retry_at \
                or self.stopping:
            return
        m = self.current()
        if m is None:
            self.held = self.failure = ""
            q = self.next_queued()
            if q is None:
                return
            self._task = self._then_next(self._commit(q.with_state(RUNNING, now=time.time()), None, term,
                                                      "next planned move"))
            return
        self._task = self._then_next(self._batch(m, term))

    def _then_next(self, work) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work)
        task.add_done_callback(self._step_if_committed)
        return task

    def _step_if_committed(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("event=migration_step_failed error=%r", task.exception(), exc_info=task.exception())
        elif task.result():
            self.ctl.step_soon()

    async def quiesce(self, timeout: float = 30.0) -> None:
        """Let the batch in flight finish and commit, and start no other until `resume`
        (a cancel is committed between two batches, never across one)."""
        self.stopping = True
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=timeout)

    def resume(self) -> None:
        self.stopping = False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for c in self._clients.values():
            await c.aclose()

    def _client(self, addr: str) -> aioredis.Redis:
        c = self._clients.get(addr)
        if c is None:
            # control clients do not retry (a failed command fails the batch, which the driver
            # runs again; redis-py's default held a batch for minutes behind a partition)
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

    async def _batch(self, m: Migration, term: int) -> bool:
        """Run the next batch of `m` and commit it; True once something was committed."""
        why = self._hold_reason(m)
        if why:
            if why != self.held:
                log.warning("event=migration_waiting id=%s reason=%r", m.id, why)
            self.held = why
            return False
        shards = self.sm.cluster_shards
        src, dst = shards[m.source].master, shards[m.target].master
        if self.held:       # it goes on (never back): the batch is re-run with the masters as they are now
            log.warning("event=migration_resumed id=%s outcome=continue after=%r source_master=%s target_master=%s",
                        m.id, self.held, src, dst)
            self.held = ""
        others = [t.master for sid, t in shards.items() if sid not in (m.source, m.target) and t.master]
        try:
            up = [t.master for sid, t in shards.items()       # (a master down elsewhere takes no part)
                  if t.master and (sid in (m.source, m.target) or self.ctl.server.health.up(t.master))]
            mechanism = await self._choose_mechanism(m, up)
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed(m, f"could not ask the masters which slot migration they support: {exc!r}")
            return False
        if mechanism != m.mechanism:
            cur = self.sm.migrations.get(m.id, m)
            if cur.state == RUNNING:        # (not cancelled while the masters were asked)
                return await self._commit(replace(cur, mechanism=mechanism), None, term,
                                          f"slot migration: {mechanism}")
            return False
        batch = m.pending()[:ATOMIC_BATCH_SLOTS if mechanism == ATOMIC else BATCH_SLOTS]
        started = time.monotonic()
        try:
            if mechanism == ATOMIC:
                keys = await self._move_atomic(src, dst, batch)
            else:
                keys = await self._move_legacy(src, dst, others, batch, shards[m.target].replicas)
        except AtomicMoveFailed as exc:
            n = self._atomic_failures.get(m.id, (0, ""))[0] + 1
            self._atomic_failures[m.id] = (n, str(exc))
            then = "it goes on the legacy way" if n >= ATOMIC_ATTEMPTS else "it is retried"
            self._failed(m, f"atomic slot migration failed ({n}/{ATOMIC_ATTEMPTS}), {then}: {exc}", batch)
            return False
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed(m, f"a batch failed and is retried: {str(exc) or type(exc).__name__}", batch)
            return False
        if self.failure:
            log.warning("event=migration_resumed id=%s outcome=continue after=%r source_master=%s target_master=%s",
                        m.id, self.failure, src, dst)
        self.failure = ""
        self._atomic_failures.pop(m.id, None)
        cur = self.sm.migrations.get(m.id, m)       # (cancelled meanwhile: the progress is kept, the state too)
        nxt = cur.advanced(len(batch), keys, time.time())
        log.info("event=migration_batch id=%s slots=%d-%d keys=%d ms=%.0f", m.id, batch[0], batch[-1], keys,
                 (time.monotonic() - started) * 1000)
        forget = m.source if nxt.state == DONE and nxt.then_remove else ""
        if not await self._commit(nxt, batch, term, "slots moved", forget):
            return False
        if nxt.state == DONE:
            log.warning("event=migration_finished id=%s source=%s target=%s slots=%d keys=%d", nxt.id,
                        nxt.source, nxt.target, nxt.total, nxt.keys_moved)
        if forget:
            await self.release(shards[forget].nodes, [t for sid, t in shards.items() if sid != forget])
        return True

    def _failed(self, m: Migration, why: str, batch: list[int] | None = None) -> None:
        repeated = why == self.failure         # (a lasting cause, e.g. NOPERM, is logged once, not every retry)
        self.failure, self._retry_at = why, time.monotonic() + RETRY_AFTER_S
        (log.debug if repeated else log.warning)("event=migration_batch_failed id=%s slots=%s reason=%r", m.id,
                                                 f"{batch[0]}-{batch[-1]}" if batch else "-", why)

    async def _choose_mechanism(self, m: Migration, masters: list[str]) -> str:
        """Atomic if every master supports it, else legacy; legacy too once atomic jobs
        failed `ATOMIC_ATTEMPTS` times in a row. Logged when it differs from the
        committed choice (the first time, or a change): once per migration."""
        chosen = self._mechanism.get(m.id)
        failures, last = self._atomic_failures.get(m.id, (0, ""))
        if chosen == ATOMIC and failures >= ATOMIC_ATTEMPTS:
            chosen, reason = LEGACY, f"{failures} atomic slot migrations failed in a row, the last: {last}"
        elif chosen is None and m.mechanism == LEGACY:
            chosen = reason = LEGACY        # committed so by an earlier leader (perhaps after atomic failures)
        elif chosen is None:
            why = [w for w in [await atomic_unsupported(self._client(a), a) for a in masters] if w]
            chosen, reason = (LEGACY, why[0]) if why else (ATOMIC, "every master supports CLUSTER MIGRATESLOTS")
        else:
            return chosen
        self._mechanism[m.id] = chosen
        if chosen != m.mechanism:
            log.warning("event=migration_mechanism id=%s mechanism=%s reason=%r", m.id, chosen, reason)
        return chosen

    async def _commit(self, m: Migration, moved: list[int] | None, term: int, reason: str, forget: str = "") -> bool:
        """Commit `m` (and the slots that moved); False if this proxy may not act any more. A
        refusal that passes (this leader has not applied all it committed yet) is waited out:
        slots moved on the nodes must not go uncommitted."""
        deadline = time.monotonic() + 2.0
        while (why := self.ctl.refusal(term, None)) is not None:
            if not why.startswith("applied") or time.monotonic() > deadline:
                log.warning("event=migration_not_committed id=%s reason=%r", m.id, why)
                return False
            await asyncio.sleep(0.01)
        try:
            await self.ctl.consensus.propose(TopologyStateMachine.migration_entry(m, moved, forget, reason),
                                             timeout=2.0)
            return True
        except Exception as exc:
            log.warning("event=propose_failed reason='migration %s' error=%r", m.id, exc)
            return False

    async def reconcile(self, m: Migration) -> tuple[Reconciliation, int]:
        """Make the running migration `m` agree with the nodes before it is cancelled
        (`health.migration.reconcile`): an atomic job still running is cancelled (Valkey
        rolls it back), slots the nodes moved and nobody committed (a leader killed
        mid-batch) get their owner announced again, half-moved ones are finished. Returns
        the decision (its `to_commit` slots are now the target's) and the keys moved.
        Call with the driver quiesced; raises TimeoutError, RedisError, OSError or
        ValueError when the two masters cannot be asked."""
        pending = m.pending()
        shards = self.sm.cluster_shards
        if not pending:
            return Reconciliation(), 0
        src_t, dst_t = shards.get(m.source), shards.get(m.target)
        if src_t is None or dst_t is None or src_t.master is None or dst_t.master is None:
            raise ValueError(f"shard {m.source if src_t is None or src_t.master is None else m.target} has no "
                             "master to ask where the slots are")
        src, dst = src_t.master, dst_t.master
        others = [t.master for sid, t in shards.items() if sid not in (m.source, m.target) and t.master]
        s, d = self._client(src), self._client(dst)
        await cancel_exports(s, set(pending))
        sv = node_view(reply_text(await s.execute_command("CLUSTER", "NODES")))
        dv = node_view(reply_text(await d.execute_command("CLUSTER", "NODES")))
        counts = zip(pending, await key_counts(s, pending), await key_counts(d, pending))
        decided = reconcile(pending, {slot: slot_facts(sv, dv, slot, a, b) for slot, a, b in counts})
        keys = 0
        unserved = set(decided.to_commit) - served_slots(reply_text(await d.execute_command("CLUSTER", "NODES")))
        for slot in decided.to_commit:
            keys += await self._move_slot(src, dst, others, slot, sv.id, dv.id, slot in unserved)
        if decided.to_commit or decided.lost:
            log.warning("event=migration_reconciled id=%s moved=%d finished=%d lost=%d keys=%d", m.id,
                        len(decided.moved), len(decided.finish), len(decided.lost), keys)
        return decided, keys

    # -- Redis commands ---------------------------------------------------------------
    async def _move_atomic(self, src: str, dst: str, slots: list[int]) -> int:
        d = self._client(dst)
        keys = await move_atomic(self._client(src), d, slots)
        if self.cfg.ack == "replica":
            await self._replicated(d, dst)
        return keys

    async def _move_legacy(self, src: str, dst: str, others: list[str], slots: list[int],
                           dst_replicas: tuple[str, ...]) -> int:
        """A batch the legacy way, each step of Redis' per-slot order sent for every slot of
        the batch in one round trip: the target imports them all, the source migrates them
        all, their keys move (`_migrate_keys`), then each master learns the new owner (the
        target first). A slot whose mark Redis refuses (the target owns it already, the
        source no longer does, or any other answer) is then taken from wherever it is,
        one by one (`_move_slot`), where an error the batch cannot decide raises. Last, the
        target's replicas learn it owns them (`_replicas_learned`)."""
        s, d = self._client(src), self._client(dst)
        src_id = reply_text(await s.execute_command("CLUSTER", "MYID"))
        dst_id, nodes, state = await cluster_node_view(d, dst, self.state_unchecked)
        if state not in ("ok", None):      # (nothing marked: the clients see no ASK to it)
            raise RedisError(f"the target master {dst} says cluster_state:{state}; the batch waits for ok")
        unserved = set(slots) - served_slots(nodes)
        imported = await pipelined(d, [("CLUSTER", "SETSLOT", n, "IMPORTING", src_id) for n in slots], False)
        ready = [n for n, r in zip(slots, imported) if not isinstance(r, ResponseError)]
        migrating = await pipelined(s, [("CLUSTER", "SETSLOT", n, "MIGRATING", dst_id) for n in ready], False)
        marked = [n for n, r in zip(ready, migrating) if not isinstance(r, ResponseError)]
        taught = [n for n in marked if n in unserved]
        if taught:      # (see `_move_slot`)
            await pipelined(d, [("CLUSTER", "SETSLOT", n, "NODE", src_id) for n in taught])
            log.warning("event=slot_owner_taught node=%s slots=%s owner=%s", dst, ranges_text(to_ranges(taught)), src)
        keys_moved = await self._migrate_keys(src, dst, marked)
        await self._announce(marked, dst_id, [dst, src, *others])
        for slot in sorted(set(slots) - set(marked)):
            keys_moved += await self._move_slot(src, dst, others, slot, src_id, dst_id, slot in unserved)
        await self._replicas_learned(dst_id, dst_replicas, slots)
        return keys_moved

    async def _replicas_learned(self, dst_id: str, replicas: tuple[str, ...], slots: list[int]) -> None:
        """Before a batch moved the legacy way is committed, the target's replicas (those up)
        know that their master owns its slots. Redis 7 tells them only over the cluster
        bus (`SETSLOT` is for masters; Valkey 8 replicates it): a target killed before its
        replicas heard left the promoted one claiming none of the batch, the committed map
        giving the slots to its shard, and no batch left to announce them again (seen in
        CI: 128 slots served by no live node). Not learned within REPLICAS_LEARN_S: a
        RedisError, the batch is retried, and re-run with the shard's new master if the
        target died (`_left_source` announces it)."""
        health = self.ctl.server.health
        waiting = [a for a in replicas if health.up(a)]
        if not waiting:
            return
        deadline = time.monotonic() + REPLICAS_LEARN_S
        while True:
            views = [reply_text(v) for v in await asyncio.gather(
                *(self._client(a).execute_command("CLUSTER", "NODES") for a in waiting))]
            behind = {a: missing for a, v in zip(waiting, views) if (missing := not_owned_by(v, dst_id, slots))}
            if not behind:
                return
            if time.monotonic() > deadline:
                raise RedisError("the target's replicas have not learned that it owns the moved slots within "
                                 f"{REPLICAS_LEARN_S:.0f} s: " + ", ".join(
                                     f"{a} ({ranges_text(to_ranges(s))})" for a, s in sorted(behind.items())))
            await asyncio.sleep(0.05)

    async def _migrate_keys(self, src: str, dst: str, slots: list[int]) -> int:
        """Move every key of `slots` (each MIGRATING on the source, IMPORTING on the target)
        until the source has none left; returns how many moved. The source lists up to
        `KEYS_PER_MIGRATE` keys of every slot in one round trip, one MIGRATE per slot moves
        them; with `ack = replica` the target's replica confirms them before more than
        `KEYS_PER_MIGRATE` keys are unconfirmed. No key of a migrating slot appears on the
        source (Redis sends a client asking for a missing one to the target), so the loop ends."""
        s, d = self._client(src), self._client(dst)
        host, _, port = dst.rpartition(":")
        auth = self._migrate_auth()
        moved = unconfirmed = 0
        while slots:
            raise_if_cancelled()
            found = await pipelined(s, [("CLUSTER", "GETKEYSINSLOT", n, KEYS_PER_MIGRATE) for n in slots])
            slots = [n for n, keys in zip(slots, found) if keys]
            for keys in filter(None, found):
                if self.cfg.ack == "replica" and unconfirmed and unconfirmed + len(keys) > KEYS_PER_MIGRATE:
                    await self._replicated(d, dst)
                    unconfirmed = 0
                await s.execute_command("MIGRATE", host, port, "", 0, MIGRATE_TIMEOUT_MS, "REPLACE", *auth,
                                        "KEYS", *keys)
                moved += len(keys)
                unconfirmed += len(keys)
        if self.cfg.ack == "replica" and unconfirmed:
            await self._replicated(d, dst)
        return moved

    async def _move_slot(self, src: str, dst: str, others: list[str], slot: int, src_id: str, dst_id: str,
                         unserved: bool = False) -> int:
        """One slot the legacy way, from wherever it is: untouched, half-moved (marks, some of
        its keys on each node) or moved (only its owner announced again); returns the keys moved.
        `unserved`: the target knows no owner of the slot (`served_slots`); once the source
        has accepted MIGRATING (it serves the slot) the target is told so, or it would refuse
        every key with `-CLUSTERDOWN Hash slot not served`, for ever if it imports already."""
        s, d = self._client(src), self._client(dst)
        try:
            await d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        except ResponseError as exc:
            if "already the owner" not in str(exc):
                raise
            if not int(await s.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)):
                await self._announce([slot], dst_id, [src, *others])     # moved before: announce again
                return 0
            # the target serves it but the source still holds keys of it: they go along first
        try:
            await s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        except ResponseError as exc:
            if "not the owner" not in str(exc):
                raise
            await self._left_source(src, dst, others, slot, dst_id)
            return 0
        if unserved:
            await d.execute_command("CLUSTER", "SETSLOT", slot, "NODE", src_id)
            log.warning("event=slot_owner_taught node=%s slot=%d owner=%s", dst, slot, src)
        keys_moved = await self._migrate_keys(src, dst, [slot])
        await self._announce([slot], dst_id, [dst, src, *others])
        return keys_moved

    async def _left_source(self, src: str, dst: str, others: list[str], slot: int, dst_id: str) -> None:
        """The source no longer serves a slot of the batch: its keys went to the target and its
        owner was announced to the source, but the target did not take it (a target master
        killed right after the announcement, before its replica - now the master - heard of
        it, would leave the slot to a dead node). With none of its keys left on the source and
        no other shard's master serving it, the target's master is announced its owner. Any
        other case is left for an operator (RedisError: the migration waits, saying why)."""
        s = self._client(src)
        owner = slot_owner(reply_text(await s.execute_command("CLUSTER", "NODES")), slot)
        other_ids = {reply_text(await self._client(a).execute_command("CLUSTER", "MYID")) for a in others}
        keys = int(await s.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
        if owner is None or owner in other_ids or keys:
            raise RedisError(f"slot {slot} is no longer served by the source master {src} (served by "
                             f"{owner or 'no node'} in its view, {keys} of its keys still there): "
                             "check the slot with CLUSTER NODES and fix it by hand, or cancel the migration")
        await self._announce([slot], dst_id, [dst, src, *others])
        log.warning("event=slot_owner_announced slot=%d owner=%s was=%s", slot, dst, owner)

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
        _, acked = await pipelined(d, [WAIT_MARK, ("WAIT", 1, self.cfg.ack_timeout_ms)])
        if int(acked) < 1:
            raise RedisError(f"no replica of {dst} confirmed the moved keys within {self.cfg.ack_timeout_ms} ms "
                             "(ack = replica)")

    async def _announce(self, slots: list[int], owner_id, nodes: list[str]) -> None:
        """Every master learns the slots' owner (the owner first: Redis' own order), one round
        trip per master."""
        for i, addr in enumerate(nodes):
            try:
                await pipelined(self._client(addr), [("CLUSTER", "SETSLOT", n, "NODE", owner_id) for n in slots])
            except (TimeoutError, RedisError, OSError) as exc:
                if i < 2:
                    raise       # the target and the source must know; the others learn by gossip
                log.debug("SETSLOT NODE on %s failed: %r", addr, exc)

    async def release(self, nodes, remaining) -> None:
        """remove-shard: the emptied shard's nodes leave the cluster (CLUSTER FORGET on
        every remaining node, CLUSTER RESET on them), best effort: they no longer serve
        anything the proxies route to."""
        ids = {}
        for addr in nodes:
            try:
                ids[addr] = await self._client(addr).execute_command("CLUSTER", "MYID")
            except (TimeoutError, RedisError, OSError) as exc:
                log.warning("event=node_release_failed node=%s error=%r", addr, exc)
        for t in remaining:
            for addr in t.nodes:
                for node_id in ids.values():
                    try:
                        await self._client(addr).execute_command("CLUSTER", "FORGET", node_id)
                    except (TimeoutError, RedisError, OSError) as exc:
                        log.debug("CLUSTER FORGET on %s failed: %r", addr, exc)
        for addr in sorted(ids, key=lambda a: a not in nodes[1:]):     # replicas first
            try:
                await self._client(addr).execute_command("CLUSTER", "RESET", "SOFT")
                log.warning("event=node_released node=%s", addr)
            except (TimeoutError, RedisError, OSError) as exc:
                log.warning("event=node_release_failed node=%s error=%r", addr, exc)
