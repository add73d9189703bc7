"""Valkey 9's atomic slot migration, the Redis commands of it (issue 15).

`CLUSTER MIGRATESLOTS SLOTSRANGE a b [c d ...] NODE target-id`, sent to the source,
starts a job that copies the slots' keys (a snapshot, then the writes made meanwhile)
to the target and ends by handing the slots over in one step: clients never see a
half-moved slot (no `ASK`), and a job that fails or is cancelled is rolled back by
Valkey (the slots stay on the source, the target drops what it copied). The reply is
`OK`, not the job's name: the job is found in `CLUSTER GETSLOTMIGRATIONS` (newest
first, one map per job: name, operation EXPORT|IMPORT, slot_ranges "0-9 20-29",
source_node, target_node, state, message, last_update_time, last_ack_time, ...;
states end in success, failed or cancelled). Checked against valkey-server 9.1.

Re-running a batch is safe: slots the target already owns are skipped, and a job
still running on the source for these slots (a leader that died while waiting) is
waited for rather than started again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from redis.exceptions import RedisError, ResponseError

from health.migration.plan import to_ranges
from health.migration.reconcile import node_view
from health.redis_control import pipelined
from proxy.protocol.reply_maps import as_map

SUCCESS, FAILED, CANCELLED = "success", "failed", "cancelled"
FINISHED = (SUCCESS, FAILED, CANCELLED)
STALL_S = 30.0          # a job whose state and acks do not change for this long is cancelled
POLL_S = (0.02, 0.5)    # the first and the longest pause between two looks at the job


class AtomicMoveFailed(RedisError):
    """The job failed, was cancelled on the node, or stalled (and was cancelled)."""


@dataclass(frozen=True)
class SlotJob:
    """One entry of `CLUSTER GETSLOTMIGRATIONS`."""
    name: str
    operation: str                          # EXPORT (on the source) or IMPORT (on the target)
    ranges: tuple[tuple[int, int], ...]
    source: str                             # node ids
    target: str
    state: str
    message: str = ""
    progress: tuple = ()                    # what changes while the job makes headway

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def slots(self) -> set[int]:
        return {s for a, b in self.ranges for s in range(a, b + 1)}


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else "" if x is None else str(x)


def parse_slot_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """`"0-9 20-29 31"` -> ((0, 9), (20, 29), (31, 31))."""
    out = []
    for part in text.split():
        a, sep, b = part.partition("-")
        out.append((int(a), int(b) if sep else int(a)))
    return tuple(out)


def parse_jobs(reply) -> list[SlotJob]:
    """`CLUSTER GETSLOTMIGRATIONS` (RESP2 flat arrays or RESP3 maps, bytes or str)."""
    jobs = []
    for entry in reply or []:
        d = {k: _text(v) for k, v in as_map(entry).items()}
        jobs.append(SlotJob(d.get("name", ""), d.get("operation", "").upper(),
                            parse_slot_ranges(d.get("slot_ranges", "")), d.get("source_node", ""),
                            d.get("target_node", ""), d.get("state", "").lower(), d.get("message", "").strip(),
                            (d.get("state"), d.get("last_update_time"), d.get("last_ack_time"),
                             d.get("remaining_repl_size"), d.get("cow_size"))))
    return jobs


def running_export(jobs: list[SlotJob], slots: set[int]) -> SlotJob | None:
    """A job of the source still moving some of `slots` (started by an earlier leader)."""
    return next((j for j in jobs if j.operation == "EXPORT" and not j.finished and j.slots() & slots), None)


def new_export(before: list[SlotJob], after: list[SlotJob], target: str,
               ranges: tuple[tuple[int, int], ...]) -> SlotJob | None:
    """The job `CLUSTER MIGRATESLOTS` just started: in `after`, not in `before`."""
    known = {j.name for j in before}
    return next((j for j in after if j.name not in known and j.operation == "EXPORT" and j.target == target
                 and j.ranges == ranges), None)


def myself_slots(cluster_nodes: str) -> set[int]:
    """The slots a node serves in its own view (its `myself` line of `CLUSTER NODES`;
    `[slot->-id]` / `[slot-<-id]` entries are slots in legacy migration, not served)."""
    return set(node_view(cluster_nodes).slots)


async def atomic_unsupported(client, addr: str) -> str:
    """Why `addr` cannot take part in an atomic slot migration ("" if it can)."""
    try:
        await client.execute_command("CLUSTER", "GETSLOTMIGRATIONS")
    except ResponseError as exc:        # Redis 7: unknown subcommand; or an ACL without it
        return f"{addr} has no CLUSTER GETSLOTMIGRATIONS ({exc})"
    return ""


# Slots counted per pipeline. redis-py builds and parses a pipeline in Python without
# yielding to the event loop: one of 16,384 commands held a proxy's loop for 170 ms on
# an idle 2-core VM, long enough under load for the Raft leader to miss its heartbeats
# (a CI run lost the leader during `cluster rebalance --by keys`); 512 hold it about 10 ms.
KEY_COUNT_BATCH = 512


async def key_counts(client, slots: list[int]) -> list[int]:
    """`CLUSTER COUNTKEYSINSLOT` of each slot (pipelines of KEY_COUNT_BATCH slots)."""
    out: list[int] = []
    for i in range(0, len(slots), KEY_COUNT_BATCH):
        batch = slots[i:i + KEY_COUNT_BATCH]
        out += [int(n) for n in await pipelined(client, [("CLUSTER", "COUNTKEYSINSLOT", s) for s in batch])]
    return out


async def count_keys(client, slots: list[int]) -> int:
    return sum(await key_counts(client, slots))


async def cancel_exports(src, slots: set[int], timeout: float = 10.0) -> bool:
    """Cancel the source's atomic jobs still moving some of `slots` (an earlier leader's:
    Valkey rolls them back) and wait until they ended; False if the node has no atomic
    slot migration (Redis 7). AtomicMoveFailed if one is still running after `timeout`."""
    try:
        jobs = parse_jobs(await src.execute_command("CLUSTER", "GETSLOTMIGRATIONS"))
    except ResponseError:
        return False
    if running_export(jobs, slots) is None:
        return True
    await src.execute_command("CLUSTER", "CANCELSLOTMIGRATIONS")
    deadline = time.monotonic() + timeout
    while (job := running_export(parse_jobs(await src.execute_command("CLUSTER", "GETSLOTMIGRATIONS")),
                                 slots)) is not None:
        if time.monotonic() > deadline:
            raise AtomicMoveFailed(f"atomic slot migration {job.name[:8]} still {job.state} {timeout:.0f}s after "
                                   "it was cancelled")
        await asyncio.sleep(POLL_S[0])
    return True


async def move_atomic(src, dst, slots: list[int], *, stall_s: float = STALL_S) -> int:
    """Move `slots` from the node `src` to the node `dst` (clients) with one atomic job;
    return how many keys moved (counted on the source before the job started).
    AtomicMoveFailed if the job failed, was cancelled or stalled (Valkey rolled it back)."""
    dst_id, keys = _text(await dst.execute_command("CLUSTER", "MYID")), 0
    for _ in range(2):                  # a job an earlier leader left running, then ours for the rest
        todo = sorted(set(slots) - myself_slots(_text(await dst.execute_command("CLUSTER", "NODES"))))
        if not todo:
            return keys                 # moved before (a new leader re-running the batch)
        before = parse_jobs(await src.execute_command("CLUSTER", "GETSLOTMIGRATIONS"))
        job = running_export(before, set(todo))
        adopted = job is not None
        if job is None:
            keys = await count_keys(src, todo)
            job = await _start(src, before, dst_id, todo)
        job = await _finished(src, job, stall_s)
        if job.state != SUCCESS:
            raise AtomicMoveFailed(f"atomic slot migration {job.name[:8]} {job.state} on the source"
                                   + (f": {job.message}" if job.message else ""))
        if not adopted:
            break
    left = set(slots) - myself_slots(_text(await dst.execute_command("CLUSTER", "NODES")))
    if left:
        raise AtomicMoveFailed(f"atomic slot migration {job.name[:8]} succeeded but the target does not serve "
                               f"slots {to_ranges(left)}")
    return keys


async def _start(src, before: list[SlotJob], dst_id: str, todo: list[int]) -> SlotJob:
    ranges = to_ranges(todo)
    try:
        await src.execute_command("CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", *[s for r in ranges for s in r],
                                  "NODE", dst_id)
    except ResponseError as exc:        # e.g. NOPERM: counts towards going on the legacy way
        raise AtomicMoveFailed(f"CLUSTER MIGRATESLOTS refused by the source: {exc}") from exc
    job = new_export(before, parse_jobs(await src.execute_command("CLUSTER", "GETSLOTMIGRATIONS")), dst_id, ranges)
    if job is None:
        raise AtomicMoveFailed("CLUSTER MIGRATESLOTS answered OK but no job shows in CLUSTER GETSLOTMIGRATIONS")
    return job


async def _finished(src, job: SlotJob, stall_s: float) -> SlotJob:
    """Poll the job until it ends; cancel it (all of the source's jobs: the leader runs
    one at a time) once it made no headway for `stall_s`."""
    pause, seen, since = POLL_S[0], job.progress, time.monotonic()
    while not job.finished:
        await asyncio.sleep(pause)
        pause = min(POLL_S[1], pause * 1.5)
        now = next((j for j in parse_jobs(await src.execute_command("CLUSTER", "GETSLOTMIGRATIONS"))
                    if j.name == job.name), None)
        if now is None:
            raise AtomicMoveFailed(f"atomic slot migration {job.name[:8]} vanished from CLUSTER GETSLOTMIGRATIONS")
        job = now
        if job.progress != seen:
            seen, since = job.progress, time.monotonic()
        elif not job.finished and time.monotonic() - since > stall_s:
            await src.execute_command("CLUSTER", "CANCELSLOTMIGRATIONS")
            raise AtomicMoveFailed(f"atomic slot migration {job.name[:8]} made no headway for {stall_s:.0f}s "
                                   f"(state {job.state}) and was cancelled")
    return job
