"""Cluster mode: what the proxy answers itself (SELECT, CLUSTER *) and the pub/sub
connection of a client (one RAW connection to the master that serves its channels)."""

from __future__ import annotations

from ..protocol import resp
from ..protocol.commands import Kind
from ..routing import cluster_view
from ..routing.keyslot import SLOTS, key_slot
from ..write_gate import STOP
from .common import NOAUTH, OK


class ClusterLocalCommands:
    """Mixed into ClusterSession (proxy/session/cluster_client.py)."""

    def _cmd_select(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if len(args) != 1:
            return self._local(b"-ERR wrong number of arguments for 'select' command\r\n")
        if args[0] == b"0":
            return self._local(OK)
        return self._local(b"-ERR SELECT is not allowed in cluster mode\r\n")

    def _ping_master(self) -> str | None:
        r = self._default_router()
        return r.topology.master if r is not None else None

    def _debug_target(self, args):
        """DEBUG OBJECT key: the master of the key's slot; DEBUG ERROR, SLEEP 0: the default one."""
        if args[0].lower() == b"object" and len(args) == 2:
            owner = self.cluster.slots.owner(key_slot(args[1]))
            r = self.cluster.router(owner.id) if owner is not None else None
            if r is not None:
                return self._master_in(r)
        return self._master()

    def _me(self) -> cluster_view.ProxyNode:
        sock = self.transport.get_extra_info("sockname") if self.transport is not None else None
        host = sock[0] if sock else self.server.cfg.bind
        port = sock[1] if sock else self.server.cfg.port
        return cluster_view.ProxyNode(self.server.cfg.node, host, port)

    def _cmd_cluster(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        sub = args[0].lower() if args else b""
        me = self._me()
        if sub == b"slots":
            return self._local(encode(cluster_view.cluster_slots(me, []), self.resp3))
        if sub == b"shards":
            return self._local(encode(cluster_view.cluster_shards(me, []), self.resp3))
        if sub == b"nodes":
            return self._local(bulk_text(cluster_view.cluster_nodes(me, [])))
        if sub == b"info":
            ok = bool(self.cluster.routers) and not self.cluster.slots.uncovered()
            return self._local(bulk_text(cluster_view.cluster_info(1, ok)))
        if sub == b"myid":
            return self._local(bulk_text(me.id.encode()))
        if sub == b"keyslot" and len(args) == 2:
            return self._local(b":%d\r\n" % key_slot(args[1]))
        if sub == b"countkeysinslot" and len(args) == 2 and args[1].isdigit() and int(args[1]) < SLOTS:
            owner = self.cluster.slots.owner(int(args[1]))
            if owner is not None:
                return self._one(owner.id, int(args[1]), resp.encode_command([b"CLUSTER", *args]), Kind.READ)
        return self._local(resp.error_reply(f"ERR proxy: CLUSTER {sub.decode(errors='replace').upper()} is not "
                                            "served by redis-raft-proxy (it answers SLOTS, SHARDS, NODES, INFO, "
                                            "MYID, KEYSLOT, COUNTKEYSINSLOT)"))

    def _cluster_raw(self, name: bytes, args: list[bytes]):
        """SUBSCRIBE & co: one RAW connection to a master. Messages PUBLISHed anywhere in the
        cluster reach every node, so any master serves SUBSCRIBE; SSUBSCRIBE goes to the
        master of its channels' slot."""
        if not self.authenticated:
            return self._local(NOAUTH)
        if not self._drained():
            return STOP
        if name in (b"ssubscribe", b"sunsubscribe") and args:
            owner = self.cluster.slots.owner(key_slot(args[0]))
            r = self.cluster.router(owner.id) if owner is not None else None
        else:
            r = self._default_router()
        return self._go_raw(r.topology.master if r is not None else None)


class ShardedPubsub:
    """Mixed into ClusterSession: one client connection subscribed to shard channels of
    several shards. A node accepts SSUBSCRIBE only for the slots it serves, so each
    shard's master gets a RAW connection of its own for this client (the first one is
    `raw`), and every message from any of them goes to the client as it arrives."""

    def init_sharded_pubsub(self) -> None:
        self.raw_shards: dict[str, object] = {}     # master address -> its RAW upstream (not `raw`)

    def _route_sharded(self, name: bytes, args: list[bytes], data: bytes) -> bool:
        """SSUBSCRIBE/SUNSUBSCRIBE in RAW mode: to the master of the channel's slot."""
        owner = self.cluster.slots.owner(key_slot(args[0])) if args else None
        r = self.cluster.router(owner.id) if owner is not None else None
        addr = r.topology.master if r is not None else None
        if not args:        # SUNSUBSCRIBE from everything: every connection that has shard channels
            for up in [self.raw, *self.raw_shards.values()]:
                up.send(data, None)
            return True
        if addr is None:
            self._refuse_in_stream(resp.error_reply(f"CLUSTERDOWN proxy: hash slot {key_slot(args[0])} is not served"))
            self.slots_done()
            return True
        up = self.raw if addr == self.raw.addr else self.raw_shards.get(addr)
        if up is None or up.closed:
            up = self.raw_shards[addr] = self.server.raw_upstream(addr, self)
        up.send(data, None)
        return True

    def _close_sharded(self) -> None:
        for up in self.raw_shards.values():
            up.close()
        self.raw_shards.clear()

    def _sharded_retired(self, addr: str, reply: bytes) -> None:
        up = self.raw_shards.get(addr)
        if up is not None:
            up.retire(reply)


def bulk_text(text: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(text), text)


def encode(value, resp3: bool = False) -> bytes:
    """A reply built by the proxy (nested lists of bytes and ints) in RESP."""
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(encode(v, resp3) for v in value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    if value is None:
        return b"_\r\n" if resp3 else b"$-1\r\n"
    return bulk_text(value)
