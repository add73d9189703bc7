"""Holding an emptied cluster master's full resynchronisations while writes wait for the
operator (cluster mode's stand-in for detaching replicas).

When a shard's master restarted without the committed data and no node is safe to
promote (`no_safe_master`), single-set mode detaches the replicas still following it
(REPLICAOF NO ONE) so that none resynchronises from it and discards what it holds: the
operator's `failover --to NODE` may still want it. A cluster node cannot leave its master
without taking its slots, so instead the leader postpones the full resync Redis would
start: with diskless sync (Redis' default) a master starts the transfer a replica asked
for only once `repl-diskless-sync-delay` seconds have passed since it asked, and the
replica keeps its data (and serves it) until the transfer begins. The leader adds
`HOLD_S` to the emptied master's delay; while it waits, Redis sends the replica a
newline every second, so the replica does not time out.

The original value is kept in the value itself (`HOLD_S` + original), so any leader,
after any leader change, can tell a held node and restore it: once the node is no
longer the emptied master of a held shard (the operator chose, or it got the history
back), `release` sets the original again and the replicas' syncs go on. It needs
`+config|set` for the control user; without it (NOPERM) the leader logs
`event=sync_hold_failed` and the replicas resynchronise after the delay, as before.
Disk-based sync (`repl-diskless-sync no`) or `repl-diskless-sync-max-replicas` above 0
start a transfer without waiting out the delay: nothing to hold with, said in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from health.cluster.node_config import config_values

HOLD_S = 1_000_000_000      # added to the delay while held (Redis allows up to 2**31 - 1)
DELAY = "repl-diskless-sync-delay"
KEYS = ("repl-diskless-sync", DELAY, "repl-diskless-sync-max-replicas")

Command = Callable[..., Awaitable[Any]]     # execute_command of a control client of the node


def held_delay(delay: int) -> int:
    """The delay that holds full syncs and remembers `delay`."""
    return HOLD_S + delay


def original_delay(delay: int) -> int | None:
    """The delay a held node had before it was held; None when `delay` is not a held one."""
    return delay - HOLD_S if delay >= HOLD_S else None


def hold_refusal(config: dict[str, str]) -> str | None:
    """Why full syncs of a node with `config` cannot be held by its delay; None when they can."""
    if config.get("repl-diskless-sync", "yes").lower() != "yes":
        return "repl-diskless-sync is no: a disk-based full sync starts without waiting for the delay"
    try:
        most = int(config.get("repl-diskless-sync-max-replicas", "0"))
    except ValueError:
        most = 0
    if most > 0:
        return (f"repl-diskless-sync-max-replicas is {most}: a full sync starts without waiting for the delay "
                "once that many replicas wait")
    return None


async def _get(command: Command) -> dict[str, str]:
    got: dict[str, str] = {}
    for key in KEYS:        # one key per CONFIG GET: Redis before 7 takes one pattern
        got.update(config_values(await command("CONFIG", "GET", key)))
    return got


async def hold(command: Command, addr: str, log: logging.Logger | logging.LoggerAdapter) -> bool:
    """Hold the full syncs node `addr` would serve (idempotent: a held node is left as it
    is). True when they are held now. Errors propagate (the caller logs them)."""
    got = await _get(command)
    delay = int(got.get(DELAY, "5"))
    if original_delay(delay) is not None:
        return True
    why = hold_refusal(got)
    if why is not None:
        log.error("event=sync_hold_impossible node=%s reason=%r", addr, why)
        return False
    await command("CONFIG", "SET", DELAY, str(held_delay(delay)))
    log.warning("event=full_syncs_held node=%s original_delay_s=%d reason='its replicas keep what they hold until "
                "the operator runs redis-raft-proxy failover --to <node>'", addr, delay)
    return True


async def release(command: Command, addr: str, log: logging.Logger | logging.LoggerAdapter) -> bool:
    """Give node `addr` its own delay back if it is held. True when it was released."""
    got = config_values(await command("CONFIG", "GET", DELAY))
    before = original_delay(int(got.get(DELAY, "0")))
    if before is None:
        return False
    await command("CONFIG", "SET", DELAY, str(before))
    log.warning("event=full_syncs_released node=%s delay_s=%d", addr, before)
    return True
