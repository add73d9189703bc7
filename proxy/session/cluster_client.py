"""Cluster mode's client connection (issue 14): every command is routed by the hash
slot of its keys to the shard that owns it, as Redis Cluster would, behind one plain
endpoint.

The connection itself (reply order, modes, flow control, the write gate) is the
single-set `ClientSession`'s; what differs is where a command goes:

* keys in one slot: that shard's master, or one of its replicas for reads
  (read-your-writes per shard);
* keys in several slots: split and merged for MGET, MSET, DEL, UNLINK, EXISTS, TOUCH
  (`routing/split.py`, `cluster_fanout.py`), `-CROSSSLOT` for the rest;
* no keys: the whole cluster where that is the meaning (`KEYLESS`), else one master;
* a `MOVED` or `ASK` a node answers is followed here, never seen by the client;
* MULTI/EXEC, WATCH (`cluster_transactions.py`), pub/sub, `CLUSTER *` (the proxies
  posing as one cluster node, `routing/cluster_view.py`).

Commands are not batched per upstream as in single-set mode: each gets its own reply
slot, which is what lets a redirect be followed for that command alone; except a
pipelined run of single-key reads or writes, which goes as one batch per shard
(`_route_group`), its replies put back in order and any redirect among them followed for
its command alone by a `PipelineFan`.
"""

from __future__ import annotations

import functools

from ..protocol import resp
from ..protocol.commands import BLOCK_OPTION, CONTAINERS, RAW_MODE, REFUSED, Kind
from ..routing.keyslot import key_slot, ranges_text, shard_batches
from ..routing.split import plan
from ..upstream import DiscardSlot, Slot, Upstream
from ..write_gate import STOP, Refusal
from .client import _HANDLERS, ClientSession
from .client_registry import AFTER_RUN
from .cluster_fanout import (
    FanOut,
    PipelineFan,
    RoutedSlot,
    combine_concat,
    combine_first,
    combine_min,
    combine_plan,
    combine_random,
    combine_scan,
    combine_sum,
    drop_prefix,
    redirect,
    scan_cursor,
)
from .cluster_local_commands import ClusterLocalCommands, ShardedPubsub
from .cluster_transactions import ClusterTransactions
from .common import DEDICATED, LOCAL, NOAUTH, OK, RAW, SHARED, WAIT_MARK, log

READ, BLOCKING = Kind.READ, Kind.BLOCKING
MAX_HOPS = 5
ASKING = resp.encode_command([b"ASKING"])

# keyless commands with a cluster-wide meaning: name -> (sent to, combined by)
KEYLESS = {
    b"dbsize": ("masters", combine_sum), b"keys": ("masters", combine_concat),
    b"flushall": ("masters", combine_first), b"flushdb": ("masters", combine_first),
    b"randomkey": ("masters", combine_random), b"wait": ("masters", combine_min),
}
# (sub)commands every master must run: scripts and functions are per node
EVERY_MASTER_SUB = {b"script": {b"load", b"flush"}, b"function": {b"load", b"delete", b"flush", b"restore"}}


def clusterdown(slots: str, shard: str | None, why: str) -> bytes:
    where = f"hash slots {slots}" + (f" (shard {shard})" if shard else "")
    return resp.error_reply(f"CLUSTERDOWN proxy: {where} {why}")


class ClusterSession(ClusterLocalCommands, ShardedPubsub, ClusterTransactions, ClientSession):
    plain = False       # every command is looked at (no batches of plain reads and writes)
    _monitor_at_exec = False    # its MULTI is queued here (cluster_transactions): MONITOR shows commands as queued

    def __init__(self, server) -> None:
        super().__init__(server)
        self.cluster = server.cluster
        self.health = server.health
        self.read_nodes: dict[str, tuple[str | None, float]] = {}   # shard -> (node, when picked)
        self.rw: dict[str, list] = {}           # shard -> [slot of the last write, done at, master offset]
        self.written: set[str] = set()          # the shards this client wrote to (WAIT asks their masters)
        self.init_transactions()
        self.init_sharded_pubsub()

    # -- the command loop ------------------------------------------------------------
    def _dispatch(self, name: bytes, start: int, end: int, args_at: int, inline) -> bool:
        self.last_cmd = name
        registry = self.registry
        if registry.intercept and self._paused(name, end, args_at, inline):
            return False
        if self.mode == RAW:
            if name in SHARDED_PUBSUB and self.authenticated:
                buf = self._buf
                self._ran(name, start, end, args_at, inline)
                return self._route_sharded(name, self._args(buf, args_at, end, inline),
                                           bytes(buf[start:end]) if inline is None else resp.encode_command(inline))
            return super()._dispatch(name, start, end, args_at, inline)
        buf = self._buf
        data = buf[start:end] if inline is None else resp.encode_command(inline)
        if type(data) is not bytes:
            data = bytes(data)
        args = self._args(buf, args_at, end, inline)
        self._write_flag = False
        if self._route_cluster(name, args, data) is STOP:
            return False
        if registry.monitors or self.multi or name in AFTER_RUN:
            self._ran(name, start, end, args_at, inline)
        return True

    def _route_group(self, kind: int, count: int, start: int, end: int, name: bytes) -> bool:
        """A pipelined run of `count` single-key reads (or writes) in `buf[start:end]`, as the
        splitter grouped them: one batch per shard instead of a reply slot per command (the
        replies go back into order in `PipelineFan`). True if sent; False leaves the run to
        `_dispatch`, command by command, which answers everything this does not take: other
        commands, a slot being migrated or not served, a hold or a refusal of the write
        gate, writes waiting for reads on a replica."""
        if count < 2 or not (self.mode == SHARED or self.mode == DEDICATED) or not self.authenticated \
                or self.multi or self.watching or self.reply_mode != b"on" or self.registry.intercept:
            return False
        write = kind != READ
        if write and self.replica_slot is not None and not self.replica_slot.done:
            return False
        names = _pipelined(self.table.single_key)
        cluster = self.cluster
        batches = shard_batches(self._buf, start, end, names, cluster.slots.owners, cluster.migrating)
        if batches is None:
            return False
        targets = []
        for owner, positions, data in batches:
            shard = cluster.slots.shards[owner].id
            r = cluster.router(shard)
            if r is None:
                return False
            target = self._master_in(r) if write else self._reader_in(shard, r)
            if type(target) is not Upstream:
                return False
            targets.append((shard, r, target, positions, data))
        self.last_cmd = name
        parent = Slot(self, 1)
        self.pending.append(parent)
        fan = PipelineFan(self, parent, count, names)
        for shard, r, up, positions, data in targets:
            sub = RoutedSlot(fan, data, None, write, len(positions))
            fan.add(sub, positions)
            up.send(data, sub, write)
            if write:
                self._note_write_in(shard, sub)
            elif up.addr != r.topology.master:
                self.replica_slot = parent
        return True

    def _route_cluster(self, name: bytes, args: list[bytes], data: bytes):
        """Serve one command; LOCAL once its reply slot is queued, or STOP."""
        if self.multi and name not in TX_CONTROL:
            return self._tx_queue(name, args, data)
        handler = CLUSTER_HANDLERS.get(name)
        if handler is not None:
            return self._deliver(handler(self, args), data)
        if not self.authenticated:
            return self._local(NOAUTH)
        kind = self.table.kind(name)
        if name in CONTAINERS and args:
            kind = self.table.kind_sub(name, args[0])
            if name == b"script" and args[0].lower() in (b"load", b"flush"):
                self.server.script_command(args)   # every node now, and every new connection later
            if args[0].lower() in EVERY_MASTER_SUB.get(name, ()):
                return self._fan_masters(data, combine_first, write=True)
        elif name in BLOCK_OPTION and any(a.lower() == b"block" for a in args):
            kind = BLOCKING
        elif name in self.table.single_key and args:     # the common case, without a plan
            slot = key_slot(args[0])
            owner = self.cluster.slots.owner(slot)
            return self._one(owner.id if owner is not None else None, slot, data, kind)
        argv = [name, *args]
        p = plan(argv, self.table.keys(name, args), self.cluster.slots)
        if p.kind == "error":
            return self._local(p.error)
        if p.kind == "keyless":
            return self._keyless(name, args, data, kind)
        if p.kind == "split":
            return self._split(p, kind, data)
        return self._one(p.shard, p.slot, data, kind)

    def _deliver(self, target, data: bytes):
        """A handler's answer: an upstream to send the command to, LOCAL, STOP or a Refusal."""
        if type(target) is Refusal:
            return self._local(target.reply)
        if target is STOP or target is LOCAL:
            return target
        if target is self.raw:
            target.send(data, None)
            return LOCAL
        self._send_routed(target, data, None, self._write_flag)
        return LOCAL

    def _send_routed(self, up: Upstream, data: bytes, slot: int | None, write: bool, *, skip: int = 0,
                     replies: int = 1, owner=None) -> RoutedSlot:
        s = RoutedSlot(owner or self, data, slot, write, replies, skip)
        if owner is None:
            self.pending.append(s)
        up.send(data, s, write)
        return s

    # -- one shard -----------------------------------------------------------------------
    def _one(self, shard: str | None, slot: int, data: bytes, kind: Kind):
        r = self.cluster.router(shard)
        if r is None:
            return self._unrouted(str(slot), data, kind == READ)
        if kind == READ:
            target = self._reader_in(shard, r, slot)
            write = False
        else:
            if kind == BLOCKING and self.mode == SHARED:
                stop = self._go_dedicated()
                if stop is not None:
                    return stop
            if self.replica_slot is not None and self._reads_in_flight():
                return STOP
            target = self._master_in(r)
            write = True
        if type(target) is Refusal:
            return self._local(target.reply)
        if target is STOP:
            return STOP
        s = self._send_routed(target, data, slot, write)
        if write:
            self._note_write_in(shard, s)
        elif target.addr != r.topology.master:
            self.replica_slot = s
        return LOCAL

    def _unrouted(self, slots: str, data: bytes, reading: bool):
        """No shard serves `slots`. Before this proxy knows any shard (starting, or a
        wiped proxy rejoining, until it applies the committed topology) the command is
        held as a write is before the first topology (up to hold_ms, then TRYAGAIN):
        the proxy does not know yet, the cluster is not down. With shards known, the
        slot is unassigned: CLUSTERDOWN, as Redis answers."""
        if not self.cluster.routers:
            return self._deliver(self.gate.admit_unknown(self, reading), data)
        return self._local(clusterdown(slots, None, "are not served by any shard"))

    def _master_in(self, r):
        """Shard router `r`'s master upstream once the write gate admits; else STOP or a Refusal."""
        addr = r.topology.master
        refused = self.gate.admit(self, addr)
        if refused is not None:
            return refused
        return self._upstream(addr)

    def _default_shard(self) -> str | None:
        """The shard that serves slot 0 (else any): where cluster-agnostic commands go."""
        owner = self.cluster.slots.owner(0)
        if owner is not None and owner.id in self.cluster.routers:
            return owner.id
        return min(self.cluster.routers) if self.cluster.routers else None

    def _default_router(self):
        return self.cluster.router(self._default_shard())

    def _master(self):
        r = self._default_router()
        if r is None:
            return self.gate.admit_unknown(self, reading=False)     # held until a topology is committed
        return self._master_in(r)

    def _raw_master(self) -> str | None:
        return self.raw.addr if self.raw is not None else None

    # -- reads ---------------------------------------------------------------------------------
    def _reader_in(self, shard: str, r, slot: int | None = None):
        if r.read_policy == "master" or self.tracking:
            return self._master_in(r)
        refused = self.gate.admit_read(self)
        if refused is not None:
            return refused
        topo = r.topology
        if slot is not None and self.cluster.migrating[slot] and topo.master is not None:
            return self._upstream(topo.master)      # (see ClusterRouter.migrating)
        if not any(self.health.up(n) for n in topo.nodes):
            return Refusal(clusterdown(ranges_text(topo.slots), shard, "have no node up: "
                                       + ", ".join(topo.nodes) + " are down"))
        node, picked = self.read_nodes.get(shard, (None, 0.0))
        if node is None or not r.replica_fit(node) and (node != topo.master or self._now - picked > 0.5):
            node = r.pick_read_node()
            self.read_nodes[shard] = (node, self._now)
        if node is None:
            return self._master_in(r)
        if node != topo.master and shard in self.rw and not self._caught_up_in(shard, topo.master, node):
            return self._master_in(r)
        return self._upstream(node)

    def _note_write_in(self, shard: str, slot: Slot) -> None:
        self.written.add(shard)
        if self.rw_enabled:
            self.rw[shard] = [slot, None, None]

    def _caught_up_in(self, shard: str, master: str | None, node: str) -> bool:
        """Read-your-writes per shard (see ClientSession._caught_up)."""
        state = self.rw[shard]
        slot, done_at, offset = state
        if not slot.done:
            return False
        if offset is None:
            if done_at is None:
                state[1] = self._now
                return False
            offset = state[2] = self.health.master_offset_after(master, done_at)
            if offset is None:
                return False
        if self.health.offset(node) >= offset:
            del self.rw[shard]
            return True
        return False

    # -- several shards ----------------------------------------------------------------------------
    def _split(self, p, kind: Kind, data: bytes):
        write = kind != READ
        if write and self.replica_slot is not None and self._reads_in_flight():
            return STOP
        targets = []
        for part in p.parts:
            r = self.cluster.router(part.shard)
            if r is None:
                return self._unrouted(str(part.slot), data, not write)
            t = self._master_in(r) if write else self._reader_in(part.shard, r, part.slot)
            if t is STOP:
                return STOP
            if type(t) is Refusal:
                return self._local(t.reply)
            targets.append((t, part, r))
        fan = self._fan(combine_plan(p, self.resp3))
        for up, part, r in targets:
            s = self._send_routed(up, resp.encode_command(list(part.argv)), part.slot, write, owner=fan)
            fan.subs.append(s)
            if write:
                self._note_write_in(part.shard, s)
        return LOCAL

    def _fan(self, combine) -> FanOut:
        parent = Slot(self, 1)
        self.pending.append(parent)
        return FanOut(self, parent, combine)

    def _fan_masters(self, data: bytes, combine, *, write: bool, prefix: bytes = b"", shards=None):
        """`data` to every shard's master (or `shards`'); the replies combined into one."""
        routers = [self.cluster.routers[s] for s in sorted(shards or self.cluster.routers)
                   if s in self.cluster.routers]
        if not routers:
            return self._deliver(self.gate.admit_unknown(self, reading=not write) or Refusal(resp.error_reply(
                "CLUSTERDOWN proxy: no shard is known yet")), data)
        ups = []
        for r in routers:
            t = self._master_in(r)
            if t is STOP or type(t) is Refusal:
                return self._deliver(t, data)
            ups.append(t)
        fan = self._fan(combine)
        for up in ups:
            if prefix:
                up.send(prefix, DiscardSlot(1))
            fan.subs.append(self._send_routed(up, data, None, write, owner=fan))
        return LOCAL

    def _keyless(self, name: bytes, args: list[bytes], data: bytes, kind: Kind):
        how = KEYLESS.get(name)
        if how is not None:
            _, combine = how
            write = name in (b"flushall", b"flushdb")
            if name == b"wait":     # the masters of the shards this client wrote to
                shards = (self.written & self.cluster.routers.keys()) or {self._default_shard()} - {None}
                return self._fan_masters(data, combine, write=False, prefix=WAIT_MARK, shards=shards)
            return self._fan_masters(data, combine, write=write)
        if name == b"scan":
            return self._scan(args)
        shard = self._default_shard()
        r = self.cluster.router(shard)
        if r is None:
            return self._deliver(self.gate.admit_unknown(self, kind == READ), data)
        if kind == READ:
            target = self._reader_in(shard, r)
        else:
            target = self._master_in(r)
            self._write_flag = True
        return self._deliver(target, data)

    def _scan(self, args: list[bytes]):
        try:
            cursor = int(args[0]) if args else -1
        except ValueError:
            cursor = -1
        if cursor < 0:
            return self._local(b"-ERR invalid cursor\r\n")
        shards = sorted(self.cluster.routers)
        index, node_cursor = scan_cursor(cursor)
        if index >= len(shards):
            return self._local(b"-ERR invalid cursor\r\n")
        r = self.cluster.routers[shards[index]]
        target = self._master_in(r)     # a replica's SCAN would miss the newest keys of this client
        if target is STOP or type(target) is Refusal:
            return self._deliver(target, b"")
        fan = self._fan(combine_scan(index, len(shards)))
        data = resp.encode_command([b"SCAN", str(node_cursor).encode(), *args[1:]])
        fan.subs.append(self._send_routed(target, data, None, False, owner=fan))
        return LOCAL

    # -- redirects ---------------------------------------------------------------------------------
    def slots_done(self) -> None:
        for s in self.pending:         # the replies about to be delivered: redirects followed first
            if not s.done:
                break
            if type(s) is RoutedSlot:
                if self._follow(s):
                    break
                drop_prefix(s)
        super().slots_done()

    def _follow(self, s: RoutedSlot) -> bool:
        """Send `s`'s command again where the node's MOVED or ASK points; True if sent."""
        line = redirect(s)
        if line is None or self.closed:
            return False
        kind, _, rest = line[1:].partition(b" ")
        slot_s, _, addr_b = rest.partition(b" ")
        addr = addr_b.decode(errors="replace")
        if s.hops >= MAX_HOPS:
            return False
        if kind == b"MOVED":
            if not self.cluster.moved(int(slot_s), addr):
                log.warning("event=moved_to_unknown_master slot=%s node=%s", slot_s.decode(), addr)
                return False
            self.server.stats.redirects_followed += 1
        if s.write and not self.server.can_write(addr):
            s.parts = [resp.error_reply(f"TRYAGAIN proxy: slot {slot_s.decode()} moved to {addr}, which takes "
                                        f"no writes now: " + self.server.write_unavailable_reason(addr))]
            return False
        s.hops += 1
        s.parts = []
        s.done = False
        up = self.server.shared_upstream(addr, self.id) if self.mode == SHARED else self._upstream(addr)
        if kind == b"ASK":
            s.remaining, s.skip = 2, 1
            up.send(ASKING + s.data, s, s.write)
        else:
            s.remaining, s.skip = 1, 0
            up.send(s.data, s, s.write)
        return True

    def connection_lost(self, exc) -> None:
        self._close_sharded()
        super().connection_lost(exc)

    def node_retired(self, addr: str, reply: bytes) -> None:
        self._sharded_retired(addr, reply)
        super().node_retired(addr, reply)

    def raw_closed(self, up) -> None:
        """A shard channel's connection went away: like the main one, the client must
        reconnect and subscribe again."""
        if up is not self.raw and up in self.raw_shards.values() and not self.closed:
            if not self.eof_sent:
                self.transport.write(up.retired or resp.error_reply("ERR proxy: " + (up.error or "connection closed")))
            self.transport.close()
            return
        super().raw_closed(up)

    def _cmd_reset(self, args):
        if not self._drained():
            return STOP
        self._tx_reset()
        self.rw.clear()
        self.read_nodes.clear()
        self.written.clear()
        return super()._cmd_reset(args)


SHARDED_PUBSUB = frozenset({b"ssubscribe", b"sunsubscribe"})
TX_CONTROL = frozenset({b"exec", b"discard", b"multi", b"watch", b"quit", b"reset"})

CLUSTER_HANDLERS = {n: h for n, h in _HANDLERS.items() if n not in RAW_MODE and n not in REFUSED}
CLUSTER_HANDLERS.update({
    b"select": ClusterSession._cmd_select,
    b"reset": ClusterSession._cmd_reset,
    # the proxy decides which node serves a read (its replica connections are READONLY already)
    b"readonly": lambda self, args: self._local(OK),
    b"readwrite": lambda self, args: self._local(OK),
    b"cluster": ClusterSession._cmd_cluster,
    b"multi": ClusterSession._cmd_multi,
    b"exec": ClusterSession._cmd_exec,
    b"discard": ClusterSession._cmd_discard,
    b"watch": ClusterSession._cmd_watch,
    b"unwatch": ClusterSession._cmd_unwatch,
})


@functools.lru_cache(maxsize=4)
def _pipelined(single_key: frozenset[bytes]) -> frozenset[bytes]:
    """The commands `_route_group` may send in a per-shard batch: one key, at argument 1,
    and nothing the session does for them besides routing by it."""
    return single_key - CLUSTER_HANDLERS.keys() - CONTAINERS - BLOCK_OPTION - AFTER_RUN - SHARDED_PUBSUB


def _raw_handler(name: bytes):
    return lambda self, args: self._cluster_raw(name, args)


def _refused_handler(name: bytes):
    return lambda self, args: self._cmd_refused(name)


for _name in RAW_MODE:
    CLUSTER_HANDLERS[_name] = _raw_handler(_name)
for _name in REFUSED:
    if _name != b"cluster":
        CLUSTER_HANDLERS[_name] = _refused_handler(_name)
CLUSTER_HANDLERS[b"monitor"] = _HANDLERS[b"monitor"]
CLUSTER_HANDLERS[b"debug"] = _HANDLERS[b"debug"]
