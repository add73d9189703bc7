"""Make cluster-enabled Redis/Valkey nodes one Redis Cluster, as cluster mode needs it.

Used by `redis-raft-proxy demo --shards N`, by the Kubernetes Job of
k8s/overlays/cluster (`redis-raft-proxy create-cluster`) and by the tests'
tests/integration/cluster_nodes.py, so the steps exist once:

1. slots: each intended master that holds no slot and follows no master gets
   the part of its even share of the 16384 slots that no node owns yet
   (CLUSTER ADDSLOTSRANGE);
   then a config epoch of its own for every fresh node (CLUSTER SET-CONFIG-EPOCH);
2. CLUSTER MEET between every pair of nodes where the earlier one (in the order
   given) does not know the later at its current address (a fresh node, a pod's
   new IP, a node that lost its data): every node meets every other itself
   instead of waiting for gossip to spread the news, which takes seconds;
3. CLUSTER REPLICATE of every node left without slots: to its intended master
   (replica i of masters[i // replicas_per_master]) while that one owns slots
   and lacks replicas, else to the master with the fewest replicas;
4. wait until every node says cluster_state:ok, sees every replica with its
   master and every master with the slots it serves, and every replica finished its
   first sync. A node that still sees a new replica as a master, or a master
   without its slots, is told by a MEET from that replica or master (its header
   carries its role and slots), rather than after that node's next periodic ping,
   up to half the node timeout later.

Running it again on a formed cluster changes nothing (and re-meets nodes whose
address changed): slots are only ever given out when no node owns them, so a
node that comes back empty never takes slots a promoted replica now serves; it
becomes a replica instead. Steps 1-4's choices are pure functions of what the nodes
say (`slots_to_assign`, `epochs_to_assign`, `meets_needed`, `replica_targets`,
`role_nudges`, `slot_nudges`), tested without sockets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis import Redis, RedisError

from ..routing.cluster_nodes import NodeEntry, Range, parse_cluster_nodes
from ..routing.keyslot import SLOTS
from .config import parse_addr

# What the proxies require of the nodes (health/cluster/node_config.py says why).
CLUSTER_SERVER_ARGS = ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000",
                       "--cluster-replica-no-failover", "yes", "--cluster-require-full-coverage", "no",
                       "--cluster-allow-replica-migration", "no"]


class ClusterCreateError(RuntimeError):
    """The nodes could not be made one cluster; the message says which step and node."""


def even_ranges(shards: int) -> list[Range]:
    """16384 slots in `shards` contiguous ranges, the last one taking the remainder."""
    if shards < 1:
        raise ValueError("at least one shard")
    size = SLOTS // shards
    return [(i * size, SLOTS - 1 if i == shards - 1 else (i + 1) * size - 1) for i in range(shards)]


def _subtract(rng: Range, owned: Sequence[Range]) -> list[Range]:
    """The parts of `rng` that no range in `owned` covers."""
    free = [rng]
    for a, b in owned:
        nxt = []
        for s, e in free:
            if b < s or a > e:
                nxt.append((s, e))
                continue
            if s < a:
                nxt.append((s, a - 1))
            if e > b:
                nxt.append((b + 1, e))
        free = nxt
    return free


def slots_to_assign(masters: Sequence[str], views: dict[str, list[NodeEntry]]) -> dict[str, list[Range]]:
    """Step 1: the ranges to CLUSTER ADDSLOTSRANGE on each intended master.

    `views`: each node's CLUSTER NODES, by address. A master gets the part of its
    even share that no node owns in any node's view, and only while it holds no
    slot and follows no master."""
    owned = [r for entries in views.values() for e in entries for r in e.slots]
    out: dict[str, list[Range]] = {}
    for addr, share in zip(masters, even_ranges(len(masters))):
        me = _myself(views, addr)
        if me.slots or me.master_id:
            continue
        free = _subtract(share, owned)
        if free:
            out[addr] = free
    return out


def epochs_to_assign(nodes: Sequence[str], views: dict[str, list[NodeEntry]],
                     current_epochs: Mapping[str, int] | None = None) -> dict[str, int]:
    """Step 1b: a config epoch of its own for every node that knows no other node and has
    epoch 0 (fresh), as redis-cli's `--cluster create` does: above every epoch any node shows
    and every node's `cluster_current_epoch` (a replica's line shows its master's epoch, and
    only the current epoch is sure to be at least its own).
    Nodes that MEET with equal epochs are separated by Redis only while both are masters;
    a node made a replica first keeps its master's epoch, and if it is ever promoted by
    `CLUSTER FAILOVER TAKEOVER` its claim ties with the dead master's and loses on every
    node that knew that one (health/cluster/takeover_epoch.py repairs that; this avoids it)."""
    fresh = [a for a in nodes if len(views[a]) == 1 and _myself(views, a).config_epoch == 0]
    top = max([*(e.config_epoch for entries in views.values() for e in entries),
               *(current_epochs or {}).values()], default=0)
    return {a: top + 1 + i for i, a in enumerate(fresh)}


def meets_needed(nodes: Sequence[str], views: dict[str, list[NodeEntry]],
                 ips: Mapping[str, str]) -> list[tuple[str, str]]:
    """Step 2: (from, to) address pairs to CLUSTER MEET: for each pair of nodes, the
    earlier (in `nodes`) meets the later unless it already knows the later's id, not
    gone, at the later's current address. `ips`: address -> the IP it resolves to (what
    CLUSTER NODES shows). One side of each pair suffices: the met node learns the other
    from the handshake."""
    out = []
    for i, a in enumerate(nodes):
        known = {e.node_id: e for e in views[a]}
        for b in nodes[i + 1:]:
            me = _myself(views, b)
            seen = known.get(me.node_id)
            if seen is not None and not seen.gone and (seen.host, seen.port) == (ips[b], parse_addr(b)[1]):
                continue
            out.append((a, b))
    return out


def role_nudges(nodes: Sequence[str], views: dict[str, list[NodeEntry]]) -> list[tuple[str, str]]:
    """Step 4's nudge: (replica, node) pairs where `node` does not yet see `replica` (by its
    own word) following its master: a MEET from the replica tells it at once."""
    return _not_yet_seen(nodes, views, lambda me: me.master_id is not None,
                         lambda seen, me: seen.master_id == me.master_id)


def slot_nudges(nodes: Sequence[str], views: dict[str, list[NodeEntry]]) -> list[tuple[str, str]]:
    """Step 4's other nudge: (master, node) pairs where `node` does not yet see the slots
    `master` serves by its own word. A node learns a master's slots only from the master's
    own messages, not from gossip about it, so after its handshake it may know the master
    for a second or two without its slots (and answer `CLUSTERDOWN Hash slot not served`,
    or `CLUSTER SHARDS` without them) while `cluster_state` already says ok (the nodes do
    not require full coverage). A MEET from the master carries them at once."""
    return _not_yet_seen(nodes, views, lambda me: bool(me.slots) and me.master_id is None,
                         lambda seen, me: sorted(seen.slots) == sorted(me.slots))


def _not_yet_seen(nodes: Sequence[str], views: dict[str, list[NodeEntry]], tells: Callable[[NodeEntry], bool],
                  agrees: Callable[[NodeEntry, NodeEntry], bool]) -> list[tuple[str, str]]:
    """(node, other) pairs where `other`'s view of `node` does not yet agree with what `node`
    says of itself, for each node whose own word `tells` something."""
    out = []
    for a in nodes:
        me = _myself(views, a)
        if not tells(me):
            continue
        for b in nodes:
            if b == a:
                continue
            seen = next((e for e in views[b] if e.node_id == me.node_id), None)
            if seen is None or not agrees(seen, me):
                out.append((a, b))
    return out


def replica_targets(masters: Sequence[str], replicas: Sequence[str],
                    views: dict[str, list[NodeEntry]]) -> dict[str, str]:
    """Step 3: address -> the node id it must CLUSTER REPLICATE, for every node that holds
    no slot and follows no master (after step 1). Roles, slots and counts are what each
    of the given nodes says of itself: nodes that are gone (a pod that came back
    with a new id) count for nothing."""
    per_master = max(1, len(replicas) // max(1, len(masters)))
    order = list(masters) + list(replicas)
    table = [_myself(views, a) for a in order]
    serving = [e.node_id for e in table if e.slots and e.master_id is None]
    count = {m: sum(1 for e in table if e.master_id == m) for m in serving}
    intended = {r: masters[min(i // per_master, len(masters) - 1)] for i, r in enumerate(replicas)}
    out: dict[str, str] = {}
    for addr in order:
        me = _myself(views, addr)
        if me.slots or me.master_id or not serving:
            continue
        want = intended.get(addr)
        want_id = _myself(views, want).node_id if want else None
        if want_id in count and count[want_id] < per_master:
            target = want_id
        else:
            target = min(serving, key=lambda m: count[m])
        out[addr] = target
        count[target] += 1
    return out


def _myself(views: dict[str, list[NodeEntry]], addr: str) -> NodeEntry:
    for e in views[addr]:
        if e.myself:
            return e
    raise ClusterCreateError(f"{addr}: CLUSTER NODES has no 'myself' line (is cluster-enabled yes set?)")


def _poll(pred: Callable[[], Any], timeout: float, what: str, nudge: Callable[[], Any] | None = None,
          nudge_every: float = 3.0) -> None:
    """Poll `pred` until true; `nudge` (if given) runs every `nudge_every` seconds meanwhile."""
    deadline = time.monotonic() + timeout
    next_nudge = time.monotonic() + nudge_every
    last: Exception | None = None
    while True:
        try:
            if pred():
                return
            last = None
            if nudge is not None and time.monotonic() >= next_nudge:
                next_nudge = time.monotonic() + nudge_every
                nudge()
        except RedisError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise ClusterCreateError(f"timed out after {timeout:.0f}s waiting for {what}"
                                     + (f" (last error: {last})" if last else ""))
        time.sleep(0.1)


def resolve(host: str) -> str:
    """An IP address for `host` (CLUSTER MEET takes no host names)."""
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise ClusterCreateError(f"cannot resolve {host}: {exc}") from None


class ClusterCreator:
    """Steps 1-4 over real connections; `client_kwargs` go to every redis-py client
    (password, TLS)."""

    def __init__(self, masters: Sequence[str], replicas: Sequence[str] = (),
                 client_kwargs: dict[str, Any] | None = None, log: Callable[[str], None] = lambda _m: None) -> None:
        if not masters:
            raise ClusterCreateError("no master given")
        if len(replicas) % len(masters):
            raise ClusterCreateError(f"{len(replicas)} replicas cannot be spread evenly over {len(masters)} masters")
        nodes = list(masters) + list(replicas)
        if len(set(nodes)) != len(nodes):
            raise ClusterCreateError("a node is given twice")
        for addr in nodes:
            try:
                parse_addr(addr)
            except ValueError as exc:
                raise ClusterCreateError(f"{addr!r}: {exc}") from None
        self.masters, self.replicas, self.nodes = list(masters), list(replicas), nodes
        self.client_kwargs = dict(client_kwargs or {})
        self.log = log

    def client(self, addr: str, timeout: float = 5.0) -> Redis:
        host, port = parse_addr(addr)
        return Redis(host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout,
                     decode_responses=True, **self.client_kwargs)

    def _call(self, addr: str, *args: Any) -> Any:
        with self.client(addr) as c:
            return c.execute_command(*args)

    def views(self) -> dict[str, list[NodeEntry]]:
        return {a: parse_cluster_nodes(self._call(a, "CLUSTER", "NODES")) for a in self.nodes}

    def run(self, timeout: float = 60.0) -> dict[str, str]:
        """Steps 1-4; returns address -> node id. Raises ClusterCreateError."""
        _poll(lambda: all(self._call(a, "PING") for a in self.nodes), timeout, "every node to answer PING")
        views = self.views()
        for addr, ranges in slots_to_assign(self.masters, views).items():
            for start, end in ranges:
                self.log(f"{addr}: CLUSTER ADDSLOTSRANGE {start} {end}")
                self._call(addr, "CLUSTER", "ADDSLOTSRANGE", start, end)
        ids = {a: _myself(views, a).node_id for a in self.nodes}
        for addr, epoch in epochs_to_assign(self.nodes, views, self.current_epochs()).items():
            self.log(f"{addr}: CLUSTER SET-CONFIG-EPOCH {epoch}")
            self._call(addr, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        self._meet(views)
        # A MEET whose handshake does not finish within the node timeout is forgotten (a
        # loaded machine): MEET again until every node knows every other, as redis-cli does.
        _poll(lambda: self._all_known(ids), timeout, "every node to know every other (CLUSTER MEET)",
              nudge=lambda: self._meet(self.views()))
        for addr, master_id in replica_targets(self.masters, self.replicas, self.views()).items():
            self.log(f"{addr}: CLUSTER REPLICATE {master_id}")
            self._call(addr, "CLUSTER", "REPLICATE", master_id)
        _poll(self._formed, timeout, "cluster_state:ok, every replica with its master and every master's slots "
              "on every node", nudge=self._nudge, nudge_every=0.5)
        _poll(self._synced, timeout, "every replica's first sync (master_link_status:up)")
        return ids

    def current_epochs(self) -> dict[str, int]:
        out = {}
        for addr in self.nodes:
            info = self._call(addr, "CLUSTER", "INFO")
            field = next((ln for ln in info.splitlines() if ln.startswith("cluster_current_epoch:")), "")
            out[addr] = int(field.partition(":")[2] or 0)
        return out

    def _meet(self, views: dict[str, list[NodeEntry]]) -> None:
        ips = self._ips()
        self._send_meets(meets_needed(self.nodes, views, ips), views, ips)

    def _nudge(self) -> None:
        views = self.views()
        self._send_meets(role_nudges(self.nodes, views) + slot_nudges(self.nodes, views), views, self._ips())

    def _ips(self) -> dict[str, str]:
        return {a: resolve(parse_addr(a)[0]) for a in self.nodes}

    def _send_meets(self, pairs: list[tuple[str, str]], views: dict[str, list[NodeEntry]],
                    ips: Mapping[str, str]) -> None:
        """CLUSTER MEET, on each pair's first node, of the second (its IP, port and bus port)."""
        for a, b in pairs:
            port, bus = parse_addr(b)[1], _myself(views, b).bus_port
            self.log(f"{a}: CLUSTER MEET {ips[b]} {port} {bus}")
            self._call(a, "CLUSTER", "MEET", ips[b], port, bus)

    def _all_known(self, ids: dict[str, str]) -> bool:
        want = set(ids.values())
        return all(want <= {e.node_id for e in entries if not e.gone} for entries in self.views().values())

    def _formed(self) -> bool:
        if not all(self._call(a, "CLUSTER", "INFO").startswith("cluster_state:ok") for a in self.nodes):
            return False
        views = self.views()
        return not role_nudges(self.nodes, views) and not slot_nudges(self.nodes, views)

    def _synced(self) -> bool:
        for addr in self.nodes:
            with self.client(addr) as c:
                info = c.info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True


def create_cluster(masters: Sequence[str], replicas: Sequence[str] = (), *, client_kwargs: dict[str, Any] | None = None,
                   timeout: float = 60.0, log: Callable[[str], None] = lambda _m: None) -> dict[str, str]:
    """Make `masters` (one per shard, slots split evenly) and `replicas` (replica i of
    masters[i // (len(replicas) // len(masters))]) one cluster; idempotent. Returns
    address -> node id."""
    return ClusterCreator(masters, replicas, client_kwargs, log).run(timeout)
