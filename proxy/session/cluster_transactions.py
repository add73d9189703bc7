"""Cluster mode's MULTI/EXEC and WATCH: a transaction runs on one shard's master, so
its keys must hash to one slot, as in Redis Cluster.

Commands after MULTI are queued by the proxy (the shard is known only once the keys
are): one in another slot than the transaction's gets `-CROSSSLOT` and EXEC then
answers `-EXECABORT`, as Redis does for a command it refuses while queueing. EXEC
sends `MULTI ... EXEC` as one piece to the master, on the client's WATCH connection
if it has one (a connection of its own, DEDICATED mode), else on a shared one (the
bytes travel together, so no other client's command lands inside), and the client
gets EXEC's reply only.
"""

from __future__ import annotations

from ..protocol import resp
from ..routing.split import CROSSSLOT, plan
from ..upstream import DiscardSlot
from ..write_gate import STOP, Refusal
from .common import LOCAL, NOAUTH, OK, SHARED

MULTI = resp.encode_command([b"MULTI"])
EXEC = resp.encode_command([b"EXEC"])
UNWATCH = resp.encode_command([b"UNWATCH"])
QUEUED = b"+QUEUED\r\n"
EXECABORT = b"-EXECABORT Transaction discarded because of previous errors.\r\n"


class ClusterTransactions:
    """Mixed into ClusterSession (proxy/session/cluster_client.py)."""

    def init_transactions(self) -> None:
        self.tx_queue: list[bytes] = []
        self.tx_slot: int | None = None     # the one slot the transaction (and its WATCH) touches
        self.tx_dirty = False
        self.watch_addr: str | None = None  # the master holding this client's WATCH

    def _tx_reset(self) -> None:
        self.multi = self.watching = False
        self.tx_queue = []
        self.tx_slot = None
        self.tx_dirty = False
        self.watch_addr = None
        self.tx_lost = None

    def _slot_for_tx(self, name: bytes, args: list[bytes]):
        """The slot the command's keys hash to (None: no keys), or the error it gets."""
        p = plan([name, *args], self.table.keys(name, args), self.cluster.slots)
        if p.kind == "error" or p.kind == "split":
            return p.error or CROSSSLOT
        if p.kind == "one":
            if self.tx_slot is not None and p.slot != self.tx_slot:
                return CROSSSLOT
            return p.slot
        return None

    def _tx_queue(self, name: bytes, args: list[bytes], data: bytes):
        if not self.authenticated:
            return self._local(NOAUTH)
        slot = self._slot_for_tx(name, args)
        if type(slot) is bytes:
            self.tx_dirty = True
            return self._local(slot)
        if slot is not None:
            self.tx_slot = slot
        self.tx_queue.append(data)
        return self._local(QUEUED)

    def _cmd_multi(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if self.multi:
            return self._local(b"-ERR MULTI calls can not be nested\r\n")
        self.multi = True
        self.tx_queue = []
        self.tx_dirty = False
        return self._local(OK)

    def _tx_router(self):
        if self.tx_slot is None:
            return self._default_router()
        owner = self.cluster.slots.owner(self.tx_slot)
        return self.cluster.router(owner.id) if owner is not None else None

    def _cmd_exec(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if not self.multi:
            return self._local(b"-ERR EXEC without MULTI\r\n")
        if self.tx_lost is not None or self.tx_dirty:
            reply = self.tx_lost or EXECABORT
            self._tx_reset()
            return self._local(reply)
        if self.replica_slot is not None and self._reads_in_flight():
            return STOP
        r = self._tx_router()
        if r is None:
            self._tx_reset()
            return self._local(resp.error_reply("CLUSTERDOWN proxy: the transaction's slot is not served"))
        target = self._master_in(r)
        if target is STOP:
            return STOP
        queued, slot, watched = self.tx_queue, self.tx_slot, self.watch_addr
        self._tx_reset()
        if type(target) is Refusal:
            return self._local(target.reply)
        if watched is not None and watched != target.addr:
            return self._local(b"-EXECABORT Transaction discarded: the master holding its WATCH was replaced\r\n")
        s = self._send_routed(target, MULTI + b"".join(queued) + EXEC, slot, True, skip=len(queued) + 1,
                              replies=len(queued) + 2)
        self._note_write_in(self.cluster.shard_of(target.addr), s)
        return LOCAL

    def _cmd_discard(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if not self.multi:
            return self._local(b"-ERR DISCARD without MULTI\r\n")
        self._unwatch()
        self._tx_reset()
        return self._local(OK)

    def _unwatch(self) -> None:
        up = self.dedicated.get(self.watch_addr) if self.watch_addr else None
        if up is not None and not up.closed:
            up.send(UNWATCH, DiscardSlot(1))

    def _cmd_watch(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        if self.multi:
            return self._local(b"-ERR WATCH inside MULTI is not allowed\r\n")
        slot = self._slot_for_tx(b"watch", args)
        if type(slot) is bytes:
            return self._local(slot)
        if slot is None:
            return self._local(b"-ERR wrong number of arguments for 'watch' command\r\n")
        if self.mode == SHARED:
            stop = self._go_dedicated()
            if stop is not None:
                return stop
        owner = self.cluster.slots.owner(slot)
        r = self.cluster.router(owner.id) if owner is not None else None
        if r is None:
            return self._local(resp.error_reply(f"CLUSTERDOWN proxy: hash slot {slot} is not served"))
        target = self._master_in(r)
        if target is STOP or type(target) is Refusal:
            return target
        self.watching = True
        self.watch_addr = target.addr
        self.tx_slot = slot
        return target

    def _cmd_unwatch(self, args):
        if not self.authenticated:
            return self._local(NOAUTH)
        self._unwatch()
        self.watching = False
        self.watch_addr = None
        if not self.multi:
            self.tx_slot = None
        return self._local(OK)
