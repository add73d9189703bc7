"""After `CLUSTER FAILOVER TAKEOVER`: make the new master's claim to its slots win on every node.

A Redis Cluster node gives a slot to whichever claimant has the greater config epoch.
TAKEOVER hands the replica an epoch without the other masters' agreement
(`clusterBumpConfigEpochWithoutConsensus`): one more than the greatest epoch the replica
knows of, or none at all when its own epoch already is that greatest. Either can tie with
the dead master's epoch:

- the replica had not yet heard (over the cluster bus) of its master's last bump, which
  closing a slot import makes;
- the two have shared an epoch since the cluster formed: nodes MEET as masters with epoch
  0, Redis separates equal epochs only between two masters, and a node made a replica
  before that happened keeps its master's epoch.

A node that knows the dead master at an epoch at least the new master's keeps the slots on
the dead node, and Redis's own collision resolution needs both colliding masters alive: the
cluster's slot map stays split for good (seen in CI: four of six nodes sent the shard's
slots to the killed master while the proxies served them from the new one).

So after every TAKEOVER the leader asks the nodes it can reach who owns the new master's
slots, and while one still names another node at an epoch not below the new master's:
`CLUSTER BUMPEPOCH` on the new master; when that says STILL (it holds the greatest epoch it
knows, tied with the dead one), `CLUSTER BUMPEPOCH` on another node first, whose greater
epoch the cluster bus then brings to the new master. A bump only ever raises an epoch,
which for any node is harmless. `blocking_views` is the pure decision, tested without sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from redis.exceptions import RedisError

from health.migration.plan import expand
from health.redis_control import reply_text
from proxy.routing.cluster_nodes import NodeEntry, Range, parse_cluster_nodes

Command = Callable[..., Awaitable]      # (address, *command) -> reply


def blocking_views(new_id: str, new_epoch: int, claimed: Sequence[Range],
                   views: Mapping[str, Sequence[NodeEntry]]) -> dict[str, tuple[str, int]]:
    """address -> (owner id, its epoch) for every view that gives one of the slots `claimed`
    by the new master `new_id` (config epoch `new_epoch`) to another node at an epoch at
    least `new_epoch`: those nodes will not accept the claim until the new master's epoch
    is greater. A view that already names the new master, or an owner at a lower epoch
    (the claim wins at the next message), blocks nothing."""
    mine = set(expand(claimed))
    out: dict[str, tuple[str, int]] = {}
    for addr, entries in views.items():
        for e in entries:
            if e.node_id != new_id and e.master_id is None and e.config_epoch >= new_epoch \
                    and not mine.isdisjoint(expand(e.slots)):
                out[addr] = (e.node_id, e.config_epoch)
                break
    return out


async def _view(command: Command, addr: str) -> list[NodeEntry] | None:
    try:
        return parse_cluster_nodes(reply_text(await command(addr, "CLUSTER", "NODES")))
    except (TimeoutError, RedisError, OSError):
        return None


async def make_takeover_win(command: Command, new_master: str, others: Sequence[str], log: logging.Logger,
                            timeout: float = 10.0, poll: float = 0.1) -> bool:
    """Bump epochs (see the module's docstring) until no node in `others` that answers gives
    one of `new_master`'s slots to another node at an epoch not below its own; False if
    that is still so after `timeout` seconds (logged). `others`: the cluster's other nodes,
    the new master's own replicas first (those are bumped first when a bump elsewhere is needed)."""
    deadline = time.monotonic() + timeout
    raised_elsewhere = False
    said = ""
    while True:
        own = await _view(command, new_master)
        me = next((e for e in own or () if e.myself), None)
        if me is not None and me.master_id is None:
            answers = await asyncio.gather(*(_view(command, a) for a in others))
            views = {a: v for a, v in zip(others, answers) if v is not None}
            blocking = blocking_views(me.node_id, me.config_epoch, me.slots, views)
            if not blocking:
                return True
            if time.monotonic() > deadline:
                log.error("event=config_epoch_tie_unresolved node=%s epoch=%d nodes=%s", new_master,
                          me.config_epoch, ",".join(sorted(blocking)))
                return False
            try:
                reply = reply_text(await command(new_master, "CLUSTER", "BUMPEPOCH"))
            except (TimeoutError, RedisError, OSError) as exc:
                reply = f"failed: {exc!r}"
            if reply != said:       # once per outcome, not once per poll
                said = reply
                log.warning("event=config_epoch_tie node=%s epoch=%d held_by=%s bumpepoch=%r", new_master,
                            me.config_epoch, ",".join(f"{a}:{o[:8]}@{ep}" for a, (o, ep) in sorted(blocking.items())),
                            reply)
            if reply.startswith("STILL") and not raised_elsewhere:
                raised_elsewhere = await _bump_one_of(command, others, log)
        elif time.monotonic() > deadline:
            log.error("event=config_epoch_tie_unresolved node=%s reason='not a master with slots'", new_master)
            return False
        await asyncio.sleep(poll)


async def _bump_one_of(command: Command, nodes: Sequence[str], log: logging.Logger) -> bool:
    """A greater epoch somewhere in the cluster (the first node that takes a bump)."""
    for addr in nodes:
        try:
            reply = reply_text(await command(addr, "CLUSTER", "BUMPEPOCH"))
        except (TimeoutError, RedisError, OSError):
            continue
        if reply.startswith("BUMPED"):
            log.warning("event=config_epoch_raised node=%s bumpepoch=%r", addr, reply)
            return True
    return False
