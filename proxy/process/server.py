"""The proxy process: client listener, upstream pools, probes, admin HTTP.

`ProxyServer` owns everything one proxy shares between its clients: the
command table, the router (committed topology + health), the shared
upstream connections and the set of client sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time

import hiredis

from health.cluster.controller import ClusterController
from health.probes.probe import Health, Prober
from health.raft_events import lease_lapse
from health.redis_control import control_tls
from health.shard.controller import Controller, StandaloneConsensus, TopologyStateMachine
from health.shard.decide import may_take_writes

from ..log_budget import LogBudget
from ..protocol import resp
from ..protocol.commands import CommandTable
from ..routing.cluster_router import ClusterRouter
from ..routing.keyslot import ranges_text
from ..routing.router import Router
from ..routing.topology import Topology
from ..session import ClientSession, ClusterSession
from ..session.client_registry import ClientRegistry
from ..tls import ProxyTls, tls_from_config, tls_protocol_factory
from ..upstream import DiscardSlot, Upstream, set_nodelay, wait_command
from ..write_gate import NO_LEASE, WriteGate, master_replaced_reply, writes_paused_reply
from .config import Config, uses_c_dataplane
from .metrics import Stats

log = logging.getLogger("proxy.server")

# A wake-up of the Raft ticker this late is logged (`event=loop_late`): a heartbeat
# period, in which a leader sent nothing and a follower checked no lease.
LOOP_LATE_S = 0.1
LOOP_LATE_LOG_S = 10.0
_loop_late_lines = LogBudget(5, LOOP_LATE_LOG_S)

READONLY = resp.encode_command([b"READONLY"])
RECONNECT_BACKOFF = 0.1   # seconds a failed node is answered from memory before the next attempt


class ProxyServer:
    def __init__(self, cfg: Config, tls: ProxyTls | None = None) -> None:
        self.cfg = cfg
        self.tls = tls if tls is not None else tls_from_config(cfg)
        self.table = CommandTable()
        # cluster mode: nodes are probed once a committed topology names them
        self.health = Health([] if cfg.cluster_mode else list(cfg.redis_nodes), cfg.down_after_ms)
        self._probing_as_learner = False
        self._set_probe_rate(cfg.learner)
        # Nothing is routed until a topology is committed (by Raft, or at once when standalone).
        self.router = Router(Topology(0, None, ()), self.health, cfg.read_policy)
        self.cluster = ClusterRouter(self.health, cfg.read_policy) if cfg.cluster_mode else None
        self.session_class = ClusterSession if cfg.cluster_mode else ClientSession
        self.sm = TopologyStateMachine(self._apply_topology, self._apply_shard, self._apply_migrations)
        self.stats = Stats()            # before the consensus: Raft saves are timed into it (on_sync)
        self.consensus = self._make_consensus()
        self.controller = (ClusterController if cfg.cluster_mode else Controller)(self, self.consensus, self.sm)
        from .config_live import LiveConfig

        # the dynamic configuration (issue 17): Raft's overrides of the cluster-wide keys, applied live
        self.live_config = LiveConfig(self)
        self.sm.on_config = self.live_config.apply
        if self.sm.config:
            self.live_config.apply(self.sm.config)
        from ..sentinel import attach_sentinel

        self.sentinel = attach_sentinel(self)
        self.held: set[ClientSession] = set()
        self.hold_s = cfg.hold_ms / 1000.0
        self.gate = WriteGate(self)
        self._lease_seen = False        # the lease as the hold waker last saw it
        self._hold_kick = asyncio.Event()   # held clients or suspended writes: poll every 20 ms
        self.clients: set[ClientSession] = set()
        self.registry = ClientRegistry(self)    # MONITOR, CLIENT PAUSE, the proxy's own ACL LOG
        self.dataplane = None           # the C thread's Python side (proxy/dataplane)
        if uses_c_dataplane(cfg):
            from ..dataplane.plane import DataPlane

            self.dataplane = DataPlane(self)
        self.total_connections = 0
        self.rejected: dict[str, int] = {}
        self.started = time.time()
        self._shared: dict[str, list[Upstream | None]] = {}
        self._dead: dict[str, tuple[float, Upstream]] = {}
        self._soft: set[ClientSession] = set()
        self._failed_at: dict[str, float] = {}
        self.scripts: dict[str, bytes] = {}
        self.probers: dict[str, Prober] = {}
        self._tasks: list[asyncio.Task] = []
        self._servers: list[asyncio.AbstractServer] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def _make_consensus(self):
        cfg = self.cfg
        if not cfg.peers and not cfg.join:
            return StandaloneConsensus(cfg.node, self.sm)
        from raft.node import RaftNode
        from raft.transport import HttpTransport

        peers = cfg.peer_urls
        transport = HttpTransport(cfg.node, peers, cfg.raft_secret, ssl_context=self.tls.admin_client)
        transport.on_rpc = self.stats.observe_raft_rpc
        return RaftNode(cfg.node, peers, cfg.data_dir, cfg.raft_secret, transport=transport, apply=self.sm.apply,
                        snapshot=self.sm.snapshot, restore=self.sm.restore, tick_ms=cfg.tick_ms,
                        election_ticks=cfg.election_ticks, heartbeat_ticks=cfg.heartbeat_ticks,
                        join=bool(cfg.join), on_sync=self.stats.fsync_seconds.observe,
                        lease_ticks=cfg.lease_ticks)

    # -- topology and write gating -------------------------------------------
    def _apply_topology(self, new: Topology, old: Topology | None, reason: str) -> None:
        """A committed topology was applied: route by it from now on."""
        self.router.set_topology(new)
        self.stats.topology_changes += 1
        log.warning("event=topology_applied epoch=%d master=%s replicas=%s reason=%r", new.epoch, new.master,
                    ",".join(new.replicas), reason)
        self._roles_changed(new, old)
        if self.dataplane is not None:
            self.dataplane.refresh()
        self.sentinel.on_topology(new, old, reason)

    def _roles_changed(self, new: Topology, old: Topology | None) -> None:
        """What a newly applied topology (of the single set, or of one shard) means for the
        connections in flight."""
        if old is not None and old.master and old.master != new.master:
            # Nothing more may reach the old master through this proxy: replies
            # still owed by it become errors, never late acknowledgements.
            reply = master_replaced_reply(old.master, new.epoch)
            for up in self._shared.pop(old.master, []):
                if up is not None:
                    up.retire(reply)
            for s in list(self.clients):
                s.node_retired(old.master, reply)
        elif old is not None and new.master and new.writes_paused and not old.writes_paused:
            # A switchover drains the master: a write still in flight may land
            # after the offsets it waits for were read; its outcome is unknown.
            self.retire_writes(new.master, writes_paused_reply(new.master, new.epoch))
        self.gate.settle()           # writes suspended under an earlier topology fail now
        self._wake_held()

    def _apply_shard(self, shard: str, new: Topology | None, old: Topology | None, reason: str) -> None:
        """Cluster mode: a shard's committed topology was applied (as `_apply_topology`);
        `new` None: the shard was removed (its slots moved away first)."""
        if new is None:
            self.cluster.remove_shard(shard)
            log.warning("event=shard_removed shard=%s reason=%r", shard, reason)
            self.gate.settle()
            return
        self.cluster.set_shard(shard, new)
        self.stats.topology_changes += 1
        log.warning("event=topology_applied shard=%s epoch=%d master=%s replicas=%s slots=%s reason=%r", shard,
                    new.epoch, new.master, ",".join(new.replicas), ranges_text(new.slots), reason)
        for addr in new.nodes:
            self._probe(addr)
        self._roles_changed(new, old)

    def _apply_migrations(self) -> None:
        """Cluster mode: the slots of the moves running or queued are read on masters only."""
        if self.cluster is not None:
            from health.migration.plan import ACTIVE, expand

            self.cluster.set_migrating(s for m in self.sm.migrations.values() if m.state in ACTIVE
                                       for s in expand(m.slots))

    def routing_generation(self, addr: str) -> tuple | None:
        """Changes with every committed change of roles or write pause of the topology that
        names `addr` (the write gate's check; cluster mode: `addr`'s shard)."""
        t = self._topology_of(addr)
        return None if t is None else (t.epoch, t.master, t.writes_paused)

    def topology_epoch(self) -> int:
        if self.cluster is not None:
            return max((t.epoch for t in self.sm.cluster_shards.values()), default=0)
        return self.router.topology.epoch

    def _topology_of(self, addr: str) -> Topology | None:
        """The committed topology in which `addr` is a node (cluster mode: its shard's)."""
        if self.cluster is not None:
            return self.cluster.topology_of(addr)
        return self.router.topology

    @property
    def masters(self) -> list[str]:
        if self.cluster is not None:
            return self.cluster.masters
        return [self.router.master] if self.router.master else []

    @property
    def all_nodes(self) -> list[str]:
        return self.cluster.nodes if self.cluster is not None else list(self.router.topology.nodes)

    def lease_held(self) -> bool:
        return self.consensus.lease_held()

    def retire_writes(self, addr: str, reply: bytes) -> None:
        """Every connection to `addr` with a write queued or unanswered answers `reply` instead."""
        for up in self._shared.get(addr, []):
            if up is not None and not up.closed and up.writes_owed():
                up.retire(reply)
        for s in list(self.clients):
            s.retire_writes(addr, reply)

    def _suspend_writes(self, addr: str) -> None:
        """Every connection to `addr` with a write queued or unanswered stops
        sending and delivering until the write gate settles it."""
        for up in self._shared.get(addr, []):
            if up is not None and not up.closed and up.writes_owed():
                up.suspend()
        for s in list(self.clients):
            s.suspend_writes(addr)

    def _watch_lease(self) -> None:
        """On losing the lease, writes in flight are suspended at once (not only
        when their replies arrive, which a frozen master may never send); the
        write gate then resumes them or fails them (`WriteGate.settle`)."""
        held = self.consensus.lease_held()
        if self._lease_seen and not held:
            level, reason = lease_lapse(self.consensus)
            self.gate.lapsed(routine=reason == "applying")
            for master in self.masters:
                log.log(level, "event=lease_lost master=%s reason=%s writes in flight are suspended", master,
                        reason)
                self._suspend_writes(master)
        self._lease_seen = held
        self.gate.settle()
        dataplane = getattr(self, "dataplane", None)    # (unit tests drive this with a stand-in server)
        if dataplane is not None:
            dataplane.refresh()

    def can_write(self, addr: str) -> bool:
        """Writes may flow to `addr`: lease held, node up and not suspect.

        A node is suspect from the moment a connection to it failed until a
        probe succeeds again: writes are held at once, not only after
        `down_after_ms`.
        """
        topo = self.router.topology if self.cluster is None else self.cluster.topology_of(addr)
        if topo is None or topo.writes_paused or topo.master != addr or not self.consensus.lease_held():
            return False
        health = self.health
        st = health.nodes.get(addr)     # `health.up(addr)`, inlined: asked for every batch of writes
        if st is None or not st.up(time.monotonic(), health.down_after):
            return False
        if st.ever_ok and st.role != "master":
            # Committed as master, but the reconciler's REPLICAOF NO ONE has
            # not shown in a probe yet: hold rather than hit READONLY.
            self._kick(addr)
            return False
        # (the state machine's record: a history entry changes it without a new topology to
        # route by, in either mode: the routers' copies keep the history of their last topology)
        committed = self.sm.topology if self.cluster is None else self.sm.shards.get(self.cluster.shard_of(addr))
        if not may_take_writes(st, (committed or topo).history):
            return False    # restarted without its data: the leader fails over (health.shard.decide)
        failed = self._failed_at.get(addr)
        return failed is None or st.last_ok > failed

    def _kick(self, addr: str) -> None:
        prober = self.probers.get(addr)
        if prober is not None:
            prober.kick()

    def can_read(self) -> bool:
        return self.cfg.stale_reads_when_partitioned or self.consensus.lease_held()

    def write_unavailable_reason(self, addr: str | None) -> str:
        if addr is None:
            return "no committed topology yet"
        if not self.consensus.lease_held():
            return NO_LEASE
        topo = self._topology_of(addr)
        if topo is not None and topo.writes_paused:
            return topo.hold_reason or f"a switchover from master {addr} is in progress"
        st = self.health.nodes.get(addr)
        detail = f" ({st.error})" if st is not None and st.error else ""
        return f"master {addr} is down{detail} and no failover has completed"

    def write_unavailable_error(self, addr: str | None) -> str:
        """The error a write held for `hold_ms` gets (without the leading '-')."""
        why = self.write_unavailable_reason(addr)
        topo = self._topology_of(addr) if addr is not None else None
        if self.cluster is not None and topo is not None and self.consensus.lease_held() \
                and not topo.writes_paused:
            shard = self.cluster.shard_of(addr)
            return f"CLUSTERDOWN proxy: hash slots {ranges_text(topo.slots)} (shard {shard}) have no master " \
                   f"for {self.cfg.hold_ms} ms: {why}"
        return f"TRYAGAIN proxy: no write for {self.cfg.hold_ms} ms: {why}"

    def hold(self, session: ClientSession) -> None:
        self.held.add(session)
        self._hold_kick.set()

    def kick_hold_waker(self) -> None:
        """Something to settle (a write suspended): the hold waker polls every 20 ms again."""
        self._hold_kick.set()

    def _wake_held(self) -> None:
        held, self.held = self.held, set()
        for s in held:
            s.wake()

    def _on_raft_tick(self) -> None:
        """Every Raft tick: a lease runs out only by a tick (or by a message, which the
        upstream's own checks and the next tick see), so the lease is watched here, and
        the 20 ms poll below runs only while clients are held or writes suspended."""
        self._watch_lease()
        self._watch_loop_lag(self.consensus.wake_late_s)
        if self.held or self.gate.suspended:
            self._hold_kick.set()

    def _watch_loop_lag(self, late_s: float) -> None:
        """The Raft ticker woke `late_s` after its time: counted in the event loop lag
        histogram, and logged (at most five lines in LOOP_LATE_LOG_S) when it was late
        enough to delay heartbeats and lease checks (a leader this late for most of a
        lease costs its followers their leases; the line explains the `lease_lost`)."""
        self.stats.loop_lag_seconds.observe(late_s)
        if late_s >= LOOP_LATE_S:
            left_out = _loop_late_lines.take("loop")
            if left_out is not None:
                log.info("event=loop_late ms=%.0f role=%s%s", late_s * 1000, self.consensus.role,
                         f" more={left_out}" if left_out else "")

    async def _hold_waker(self) -> None:
        """Wake held clients when writes can flow again or their hold expired."""
        tick_driven = hasattr(self.consensus, "on_tick")
        if tick_driven:
            self.consensus.on_tick = self._on_raft_tick
        while True:
            if tick_driven and not self.held and not self.gate.suspended:
                self._hold_kick.clear()
                await self._hold_kick.wait()    # idle: no wake-up every 20 ms (issue 16)
            else:
                await asyncio.sleep(0.02)
            self._watch_lease()
            if not self.held:
                continue
            now = time.monotonic()
            if self.cluster is not None:    # which shard a held client waits for is its own business
                ok = self.consensus.lease_held()
            else:
                master = self.router.master
                ok = master is not None and self.can_write(master)
            for s in list(self.held):
                if s.closed:
                    self.held.discard(s)
                elif ok or (s.hold_since is not None and now - s.hold_since >= self.hold_s):
                    self.held.discard(s)
                    s.wake()

    # -- upstreams --------------------------------------------------------------
    def upstream_auth_command(self, *, control: bool = False) -> bytes:
        """AUTH as the data user (connections carrying client traffic) or the control user."""
        cfg = self.cfg
        user, password = (cfg.control_username, cfg.control_password) if control \
            else (cfg.redis_username, cfg.redis_password)
        return resp.encode_command([b"AUTH"] + ([user.encode()] if user else []) + [password.encode()])

    def _base_handshake(self, *, control: bool = False) -> list[bytes]:
        password = self.cfg.control_password if control else self.cfg.redis_password
        return [self.upstream_auth_command(control=control)] if password else []

    # -- scripts -------------------------------------------------------------------
    def script_loads(self) -> list[bytes]:
        """SCRIPT LOAD for every script a client loaded: replayed on each new
        upstream connection, so EVALSHA works on replicas, on a node that
        restarted empty and on a new master after a failover."""
        return [resp.encode_command([b"SCRIPT", b"LOAD", body]) for body in self.scripts.values()]

    def script_command(self, args: list[bytes]) -> None:
        """A client's SCRIPT LOAD/FLUSH: remember it and send it to every node."""
        sub = args[0].lower()
        if sub == b"load" and len(args) == 2:
            self.scripts[hashlib.sha1(args[1]).hexdigest()] = args[1]
        elif sub == b"flush":
            self.scripts.clear()
        else:
            return
        cmd = resp.encode_command([b"SCRIPT", *args])
        for addr in self.all_nodes:
            if self.cluster is not None or addr != self.router.master:
                self.shared_upstream(addr, 0).send(cmd, DiscardSlot(1))

    def _make(self, addr: str, **kw) -> Upstream:
        """A new upstream, or the last failed one while the node is backing off."""
        dead = self._dead.get(addr)
        if dead is not None and time.monotonic() < dead[0]:
            return dead[1]
        if self.cluster is not None:
            # a cluster replica serves reads only on a READONLY connection (else MOVED to its
            # master); a master ignores it
            kw["handshake"] = [*kw.get("handshake", ()), READONLY]
        up = Upstream(addr, connect_timeout=self.cfg.connect_timeout_ms / 1000.0,
                      on_close=self._upstream_closed, tls=self.upstream_tls(addr.rpartition(":")[0]), **kw)
        up.gate = self.gate
        if self.cfg.ack == "replica":     # (RAW mode: see Upstream.raw_write)
            up.wait_cmd = wait_command(self.cfg.ack_timeout_ms)
            up.wait_timeout_ms = self.cfg.ack_timeout_ms
        up.start(self.loop)
        return up

    def upstream_tls(self, host: str) -> dict:
        """create_connection's TLS arguments towards a Redis node on `host` ({} without tls_upstream)."""
        if self.tls.upstream is None:
            return {}
        return {"ssl": self.tls.upstream, "server_hostname": host,
                "ssl_handshake_timeout": self.cfg.connect_timeout_ms / 1000.0}

    def _upstream_closed(self, up: Upstream) -> None:
        if up.error:
            kind = "unreachable" if "unreachable" in up.error else "lost" if "lost" in up.error \
                else "invalid_reply" if "invalid" in up.error else "setup_refused"
            self.stats.upstream_errors[(up.addr, kind)] += 1
        if up.error and ("unreachable" in up.error or "lost" in up.error):
            self.node_connection_failed(up.addr)
            if "unreachable" in up.error:
                self._dead[up.addr] = (time.monotonic() + RECONNECT_BACKOFF, up)
        if up.raw_sink is not None:
            up.raw_sink.raw_closed(up)

    def node_connection_failed(self, addr: str) -> None:
        """A connection to `addr` failed (ours, or the C data plane's): the node is suspect,
        writes to it hold until a probe succeeds after this (`can_write`)."""
        self._failed_at[addr] = time.monotonic()

    def shared_upstream(self, addr: str, client_id: int) -> Upstream:
        conns = self._shared.get(addr)
        if conns is None:
            conns = self._shared[addr] = [None] * self.cfg.shared_connections
        i = client_id % len(conns)
        up = conns[i]
        if up is None or up.closed:
            up = conns[i] = self._make(addr, handshake=self._base_handshake(), best_effort=self.script_loads())
        return up

    def dedicated_upstream(self, addr: str, session: ClientSession) -> Upstream:
        return self._make(addr, handshake=session.handshake(), best_effort=self.script_loads(),
                          push_sink=session, resp3=session.resp3, want_id=True)

    def raw_upstream(self, addr: str, session: ClientSession) -> Upstream:
        return self._make(addr, handshake=session.handshake(), best_effort=self.script_loads(),
                          raw_sink=session, resp3=session.resp3, want_id=True)

    # -- clients ----------------------------------------------------------------
    @property
    def connected_clients(self) -> int:
        """Client connections now: the event loop's and the C data plane's."""
        return len(self.clients) + (self.dataplane.clients if self.dataplane is not None else 0)

    def client_connected(self, session: ClientSession) -> None:
        self.total_connections += 1
        if self.connected_clients >= self.cfg.maxclients:
            self.count_rejected("maxclients")
            session.transport.write(b"-ERR max number of clients reached\r\n")
            session.transport.close()
            return
        set_nodelay(session.transport)
        self.clients.add(session)

    def limits_changed(self) -> None:
        """proto_max_bulk_len, max_args or client_output_buffer_limit reloaded (SIGHUP):
        every connected client is held to them from now on, as Redis' CONFIG SET does,
        whether the event loop or the thread serves it (a session keeps its own copy of
        each for its per-command checks)."""
        cfg = self.cfg
        for s in self.clients:
            s.max_bulk, s.max_args = cfg.proto_max_bulk_len, cfg.max_args
            s.output_limit = cfg.client_output_buffer_limit
        if self.dataplane is not None:
            self.dataplane.limits_changed()

    def client_disconnected(self, session: ClientSession) -> None:
        self.clients.discard(session)
        self._soft.discard(session)

    def count_rejected(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def watch_soft_limit(self, session: ClientSession) -> None:
        self._soft.add(session)

    async def _soft_limit_sweeper(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for s in list(self._soft):
                if s.closed or s.soft_since is None:
                    self._soft.discard(s)
                else:
                    s._check_output()

    # -- command table ------------------------------------------------------------
    async def _load_command_table(self) -> None:
        """Fetch `COMMAND` from the master (or any node) until one answers."""
        while not self.table.from_upstream:
            for addr in [*self.masters, *self.cfg.cluster_nodes, *self.cfg.redis_nodes]:
                if addr is None:
                    continue
                try:
                    async with asyncio.timeout(5.0):
                        reply = await self._fetch_commands(addr)
                    self.table.load_command_reply(reply)
                    log.info("command table loaded from %s (%d commands)", addr, len(reply))
                    return
                except (OSError, asyncio.TimeoutError, hiredis.ProtocolError, ValueError) as exc:
                    log.debug("COMMAND from %s failed: %s", addr, exc)
            await asyncio.sleep(1.0)

    async def _fetch_commands(self, addr: str) -> list:
        host, _, port = addr.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port), **self.upstream_tls(host))
        try:
            msgs = self._base_handshake(control=True) + [resp.encode_command([b"COMMAND"])]
            writer.write(b"".join(msgs))
            parser = hiredis.Reader()
            replies = []
            while len(replies) < len(msgs):
                data = await reader.read(1 << 16)
                if not data:
                    raise ConnectionError("closed")
                parser.feed(data)
                while (r := parser.gets()) is not False:
                    replies.append(r)
            if isinstance(replies[-1], Exception) or not isinstance(replies[-1], list):
                raise ValueError(f"COMMAND failed: {replies[-1]}")
            return replies[-1]
        finally:
            writer.close()

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        cfg = self.cfg
        if cfg.port:
            self._servers.append(await self.loop.create_server(lambda: self.session_class(self), cfg.bind, cfg.port,
                                                               backlog=4096, reuse_address=True))
        if cfg.tls_port:
            factory = tls_protocol_factory(lambda: self.session_class(self), self.tls, "clients")
            self._servers.append(await self.loop.create_server(factory, cfg.bind, cfg.tls_port, backlog=4096,
                                                               reuse_address=True))
        self._tasks.append(self.loop.create_task(self.tls.reloader.run()))
        for addr in ([] if cfg.cluster_mode else cfg.redis_nodes):
            self._probe(addr)
        self._tasks.append(self.loop.create_task(self._load_command_table()))
        self._tasks.append(self.loop.create_task(self._soft_limit_sweeper()))
        self._tasks.append(self.loop.create_task(self._hold_waker()))
        await self.consensus.start()
        for addr in (self.all_nodes if self.cluster is not None else ()):    # restored from a snapshot
            self._probe(addr)
        if isinstance(self.consensus, StandaloneConsensus) and not cfg.cluster_mode:
            await self.consensus.propose(TopologyStateMachine.entry(
                Topology.initial(list(cfg.redis_nodes), cfg.initial_master), "standalone: from configuration"), 1)
        self._tasks.append(self.loop.create_task(self.controller.run()))
        await self.sentinel.start()
        ports = ", ".join(f"{cfg.bind}:{p}{' (TLS)' if tls else ''}"
                          for p, tls in ((cfg.port, False), (cfg.tls_port, True)) if p)
        log.info("proxy %s listening on %s (pid %d)", cfg.node, ports, os.getpid())
        log.info("event=dataplane_selected kind=%s dataplane=%s", "c" if self.dataplane is not None else "python",
                 cfg.dataplane)

    def _probe(self, addr: str) -> None:
        """Probe `addr` from now on (once: a node already probed is left as it is)."""
        if addr in self.probers or self.loop is None:
            return
        cfg = self.cfg
        self.health.add_node(addr)
        prober = Prober(self.health, addr, interval_ms=self._probe_interval_ms(), timeout_ms=cfg.down_after_ms,
                        username=cfg.control_username, password=cfg.control_password,
                        tls=control_tls(cfg), on_change=self._node_changed)
        self.probers[addr] = prober
        self._tasks.append(self.loop.create_task(prober.run()))

    def _probe_interval_ms(self) -> int:
        return self.cfg.learner_probe_interval_ms if self._probing_as_learner else self.cfg.probe_interval_ms

    def step_interval_s(self, interval: float) -> float:
        """How often a loop that follows the probes (the controller's step, the Sentinel
        port's events) runs: `interval`, or while this proxy probes as a learner its probe
        interval, when longer: a learner decides and reports nothing, and what it derives
        changes only with its probes (issue 16: 10 learners each stepping 10 times a second)."""
        if not self._probing_as_learner:
            return interval
        return max(interval, self.cfg.learner_probe_interval_ms / 1000.0)

    def probing_as_learner(self) -> bool:
        """A Raft learner, or a proxy started with `learner` not yet made a voter: its
        view of Redis is not counted for failover, so it probes at
        `learner_probe_interval_ms` and 10+ proxies do not multiply the probe load."""
        core = getattr(self.consensus, "core", None)
        if core is None or not hasattr(core, "learners"):
            return self.cfg.learner
        return core.is_learner() or (self.cfg.learner and self.cfg.node not in core.members)

    def tune_probes(self) -> None:
        """Follow a change of Raft role (a promotion) with the probe rate (the controller calls this)."""
        learner = self.probing_as_learner()
        if learner != self._probing_as_learner:
            self._set_probe_rate(learner)
            log.info("event=probe_rate node=%s learner=%s interval_ms=%d", self.cfg.node, learner,
                     self._probe_interval_ms())

    def _set_probe_rate(self, learner: bool) -> None:
        self._probing_as_learner = learner
        interval_ms = self._probe_interval_ms()
        # probed less often, a node must not look down between two probes (writes need it up);
        # a dead master is still seen at once through failed connections (_failed_at)
        self.health.down_after = (self.cfg.down_after_ms + (interval_ms if learner else 0)) / 1000.0
        for prober in getattr(self, "probers", {}).values():
            prober.interval = interval_ms / 1000.0
            prober.kick()

    def _node_changed(self, addr: str, up: bool) -> None:
        """A node's subjective state changed: logged with why a down node is down (the last
        probe's error: refused, timed out, a certificate that does not verify, -NOAUTH...)."""
        status = self.health.nodes.get(addr)
        if up:
            if status is not None and not status.ever_ok:
                return      # not answered yet, only not probed for down_after_ms: no news
            log.info("event=node_up node=%s", addr)
        else:
            log.info("event=node_subjectively_down node=%s error=%r", addr,
                     status.error if status is not None else None)

    async def drain(self) -> None:
        """SIGTERM: stop accepting clients, hand Raft leadership to another proxy, let
        every client's commands in flight be answered (at most drain_timeout_ms), then
        close the connections between replies, never inside one."""
        loop = asyncio.get_running_loop()
        for srv in self._servers:
            srv.close()
        best = getattr(self.consensus, "best_transferee", lambda: None)()
        if best is not None:
            try:
                await self.consensus.transfer_leadership(best)
                log.info("event=leadership_handed_over to=%s", best)
            except Exception as exc:  # noqa: BLE001 -- stopping anyway: an election settles it
                log.warning("event=leadership_handover_failed to=%s error=%r", best, exc)
        dp = self.dataplane
        if dp is not None:
            dp.drain()                  # its clients come back to be drained below
        clients = self.connected_clients
        for s in list(self.clients):
            s.drain()
        deadline = loop.time() + self.cfg.drain_timeout_ms / 1000.0
        while (self.clients or (dp is not None and dp.clients)) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        cut = len(self.clients)
        log.info("event=drained clients=%d answered_and_closed=%d cut=%d", clients, clients - cut, cut)

    async def stop(self) -> None:
        for srv in self._servers:
            srv.close()
        await self.sentinel.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.consensus.stop()
        except Exception:
            log.exception("stopping consensus")
        for s in list(self.clients):
            s.transport.close()
        if self.dataplane is not None:
            self.dataplane.close()
        for conns in self._shared.values():
            for up in conns:
                if up is not None:
                    up.close()
