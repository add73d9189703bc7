"""The Sentinel endpoint of one proxy: its listener, the committed topology as Sentinel
reports it, the events it publishes, and the other proxies' Sentinel ports read from
their `/status`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from health.probes.probe import RoundWaiter, Wake
from raft.transport import http_session

from .. import __version__
from ..tls import tls_protocol_factory

if TYPE_CHECKING:
    from .session import SentinelSession


log = logging.getLogger("proxy.sentinel")

DEFAULT_PORT = 26379
DEFAULT_MASTER_NAME = "mymaster"
REDIS_VERSION = "7.0.0"           # the Sentinel protocol version these replies follow
PEER_POLL_S = 2.0                 # how often the other proxies are read (Sentinel's hello period)
PEER_POLL_FAST_S = 0.25           # ... while this proxy sees the master down (o_down needs their views)
PEER_DISCOVERY_S = 10.0           # ... and, this long after reading resumed, while a member never answered
PEER_LINGER_S = 60.0              # read only while a client is connected and this long after the last left
PEER_FRESH_S = 5.0                # a peer's status older than this does not count (two polls missed)
PEER_TIMEOUT_S = 1.0
# what a peer's Sentinel port reads of another proxy (its /status's fields apply_peer_status
# uses, served alone); a proxy without the route (an older version) is read at /status
SENTINEL_PEER_PATH = "/status/sentinel"



def sentinel_id(node: str) -> str:
    """A stable 40-hex Sentinel id (run id) for a proxy node name."""
    return hashlib.sha1(f"redis-raft-proxy:{node}".encode()).hexdigest()


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


@dataclass
class PeerInfo:
    """What this proxy last learned about another proxy from its /status."""

    name: str
    url: str = ""
    host: str = ""
    port: int = 0                 # its sentinel port (0: unknown or disabled)
    myid: str = ""
    last_ok: float = 0.0          # monotonic time of the last successful /status
    master: str | None = None
    master_up: bool = True
    lease: bool = False
    full_status: bool = False     # it has no SENTINEL_PEER_PATH: read its whole /status

    def fresh(self, now: float) -> bool:
        return self.last_ok > 0 and now - self.last_ok <= PEER_FRESH_S


class _Disabled:
    """`sentinel_port = 0`: the same interface, doing nothing."""

    port = 0
    enabled = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def on_topology(self, new, old=None, reason: str = "") -> None:
        pass

    def status_doc(self) -> dict:
        return {"port": 0}


class SentinelService:
    """The Sentinel endpoint of one proxy."""

    enabled = True

    @property
    def password(self) -> str:
        """The proxy's requirepass as it is now (a SIGHUP may have changed it)."""
        return getattr(self.cfg, "requirepass", "") or ""

    def __init__(self, server, port: int, master_name: str = DEFAULT_MASTER_NAME, bind: str | None = None) -> None:
        self.server = server
        self.cfg = server.cfg
        self.port = port
        self.master_name = master_name
        self.bind = bind if bind is not None else self.cfg.bind
        self.myid = sentinel_id(self.cfg.node)
        self.sessions: set[SentinelSession] = set()
        self.total_connections = 0
        self.started = time.time()
        self.error: str | None = None
        self.peers: dict[str, PeerInfo] = {}
        self._next_id = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task] = []
        self._http = None
        # announced state, from which events are derived
        topo = server.router.topology
        self._epoch = topo.epoch
        self._master = topo.master
        self._sdown: dict[str, float] = {}         # addr -> monotonic time it went subjectively down
        self._odown_since: float | None = None
        self._roles: dict[str, tuple[str, float]] = {}
        self._running = False
        # the other proxies are read only while clients are around (issue 16): `_client_at` is
        # when one last was, `_wanted` wakes the idle poller, `refresh` is the read a client
        # that arrived at an idle port waits for before its first command is answered
        self._client_at = float("-inf")
        self._wanted = Wake()
        self.refresh: asyncio.Future[None] | None = None

    # -- life cycle ------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = self.server.tls
            from .session import SentinelSession  # (it imports this module)

            factory = (tls_protocol_factory(lambda: SentinelSession(self), tls, "sentinel") if tls.sentinel
                       else lambda: SentinelSession(self))
            self._server = await loop.create_server(factory, self.bind, self.port, reuse_address=True)
        except OSError as exc:
            # The data path matters more than this compatibility endpoint: keep serving Redis traffic.
            self.error = f"cannot listen on {self.bind}:{self.port}: {exc.strerror or exc}"
            log.error("event=sentinel_listen_failed bind=%s port=%d error=%r", self.bind, self.port, str(exc))
            return
        if not self.port:   # an ephemeral port (tests)
            self.port = self._server.sockets[0].getsockname()[1]
        self._running = True
        self._tasks.append(loop.create_task(self._watch()))
        self._tasks.append(loop.create_task(self._poll_peers()))
        log.info("sentinel endpoint listening on %s:%d (master name %r, myid %s)", self.bind, self.port,
                 self.master_name, self.myid)

    async def stop(self) -> None:
        self._running = False
        if self._server is not None:
            self._server.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for s in list(self.sessions):
            s.transport.close()
        if self.refresh is not None and not self.refresh.done():
            self.refresh.set_result(None)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def status_doc(self) -> dict:
        doc = {"port": self.port if self._running else 0, "master_name": self.master_name, "myid": self.myid,
               "clients": len(self.sessions)}
        if self.error:
            doc["error"] = self.error
        return doc

    # -- state -------------------------------------------------------------------
    @property
    def topology(self):
        return self.server.router.topology

    @property
    def health(self):
        return self.server.health

    def members(self) -> list[str]:
        try:
            return list(self.server.consensus.members)
        except Exception:  # noqa: BLE001 - consensus not started yet
            return [self.cfg.node]

    def lease_held(self) -> bool:
        try:
            return bool(self.server.consensus.lease_held())
        except Exception:  # noqa: BLE001 - consensus not started yet
            return False

    def quorum(self) -> int:
        return len(self.members()) // 2 + 1

    def known_master(self, name: bytes | str) -> bool:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return name == self.master_name and self.topology.master is not None

    def node_down(self, addr: str) -> bool:
        return not self.health.up(addr)

    def other_sentinels(self) -> list[PeerInfo]:
        """The other proxies whose Sentinel address is known (a dead one stays listed, s_down)."""
        me = self.cfg.node
        return [p for name, p in sorted(self.peers.items()) if name != me and name in self.members() and p.port]

    def usable_sentinels(self) -> int:
        now = time.monotonic()
        return 1 + sum(1 for name, p in self.peers.items()
                       if name != self.cfg.node and name in self.members() and p.fresh(now))

    def odown_votes(self, master: str) -> int:
        """This proxy (when it sees `master` down) plus the fresh peers that do."""
        now = time.monotonic()
        votes = 1 if self.node_down(master) else 0
        for name, p in self.peers.items():
            if name != self.cfg.node and p.fresh(now) and p.master == master and not p.master_up:
                votes += 1
        return votes

    def master_odown(self) -> bool:
        master = self.topology.master
        return master is not None and self.node_down(master) and self.odown_votes(master) >= self.quorum()

    def _ms_since(self, t: float | None, now: float) -> int:
        return int(max(0.0, now - t) * 1000) if t else 0

    def _common_fields(self, addr: str, name: str, flags: list[str], now: float) -> list[tuple[str, object]]:
        st = self.health.nodes.get(addr)
        last_ok = st.last_ok if st is not None and st.ever_ok else None
        down = self.node_down(addr)
        host, port = split_addr(addr)
        fl = []
        if down:
            fl.append("s_down")
        if "master" in flags and self._odown_since is not None and addr == self.topology.master:
            fl.append("o_down")
        fl += flags
        if down:
            fl.append("disconnected")
        pairs: list[tuple[str, object]] = [
            ("name", name), ("ip", host), ("port", port), ("runid", ""), ("flags", ",".join(fl)),
            ("link-pending-commands", 0), ("link-refcount", 1),
            ("last-ping-sent", self._ms_since(last_ok, now) if down else 0),
            ("last-ok-ping-reply", self._ms_since(last_ok, now)),
            ("last-ping-reply", self._ms_since(last_ok, now)),
        ]
        if down:
            pairs.append(("s-down-time", self._ms_since(self._sdown.get(addr) or now, now)))
        if "o_down" in fl:
            pairs.append(("o-down-time", self._ms_since(self._odown_since, now)))
        pairs.append(("down-after-milliseconds", self.cfg.down_after_ms))
        role = st.role if st is not None and st.role in ("master", "slave") else ("master" if "master" in flags
                                                                                  else "slave")
        seen = self._roles.get(addr)
        pairs += [("info-refresh", self._ms_since(last_ok, now)), ("role-reported", role),
                  ("role-reported-time", self._ms_since(seen[1] if seen else self._started_mono(), now))]
        return pairs

    def _started_mono(self) -> float:
        return time.monotonic() - (time.time() - self.started)

    def master_fields(self) -> list[tuple[str, object]]:
        topo = self.topology
        now = time.monotonic()
        pairs = self._common_fields(topo.master, self.master_name, ["master"], now)
        pairs += [("config-epoch", topo.epoch), ("num-slaves", len(topo.replicas)),
                  ("num-other-sentinels", max(0, len(self.members()) - 1)), ("quorum", self.quorum()),
                  ("failover-timeout", self.cfg.hold_ms), ("parallel-syncs", 1)]
        return pairs

    def replica_fields(self, addr: str) -> list[tuple[str, object]]:
        now = time.monotonic()
        st = self.health.nodes.get(addr)
        pairs = self._common_fields(addr, addr, ["slave"], now)
        mhost, mport = "?", 0
        if st is not None and st.master_addr:
            try:
                mhost, mport = split_addr(st.master_addr)
            except ValueError:
                pass
        link_ok = st is not None and st.link_up and not self.node_down(addr)
        priority = st.priority if st is not None else 100   # Redis's own replica-priority
        pairs += [("master-link-down-time", int(st.link_down_since_s * 1000) if st and not st.link_up else 0),
                  ("master-link-status", "ok" if link_ok else "err"), ("master-host", mhost),
                  ("master-port", mport), ("slave-priority", priority),
                  ("slave-repl-offset", st.offset if st is not None else 0), ("replica-announced", 1)]
        return pairs

    def sentinel_fields(self, peer: PeerInfo) -> list[tuple[str, object]]:
        now = time.monotonic()
        fresh = peer.fresh(now)
        flags = "sentinel" if fresh else "s_down,sentinel,disconnected"
        since = self._ms_since(peer.last_ok, now) if peer.last_ok else int(self.uptime() * 1000)
        pairs: list[tuple[str, object]] = [
            ("name", peer.myid), ("ip", peer.host), ("port", peer.port), ("runid", peer.myid), ("flags", flags),
            ("link-pending-commands", 0), ("link-refcount", 1), ("last-ping-sent", 0 if fresh else since),
            ("last-ok-ping-reply", since), ("last-ping-reply", since)]
        if not fresh:
            pairs.append(("s-down-time", since))
        pairs += [("down-after-milliseconds", self.cfg.down_after_ms), ("last-hello-message", since),
                  ("voted-leader", "?"), ("voted-leader-epoch", 0)]
        return pairs

    def uptime(self) -> float:
        return time.time() - self.started

    def master_status_word(self) -> str:
        master = self.topology.master
        if master is None:
            return "ok"
        if self._odown_since is not None:
            return "odown"
        return "sdown" if self.node_down(master) else "ok"

    def info_text(self, section: str, session: "SentinelSession") -> str:
        section = section.lower()
        every = section in ("", "default", "all", "everything")
        out = []
        if every or section == "server":
            up = self.uptime()
            out.append("# Server\r\n" + "".join(f"{k}:{v}\r\n" for k, v in [
                ("redis_version", REDIS_VERSION), ("redis_mode", "sentinel"),
                ("redis_raft_proxy_version", __version__), ("redis_raft_proxy_node", self.cfg.node),
                ("os", f"{os.uname().sysname} {os.uname().release} {os.uname().machine}"),
                ("arch_bits", 64 if sys.maxsize > 2**32 else 32), ("process_id", os.getpid()),
                ("run_id", self.myid), ("tcp_port", self.port), ("uptime_in_seconds", int(up)),
                ("uptime_in_days", int(up // 86400)), ("executable", sys.argv[0] if sys.argv else ""),
            ]))
        if every or section == "clients":
            out.append("# Clients\r\n" + f"connected_clients:{len(self.sessions)}\r\n"
                       + f"pubsub_clients:{sum(1 for s in self.sessions if s.subscriptions())}\r\n")
        if every or section == "stats":
            out.append("# Stats\r\n" + f"total_connections_received:{self.total_connections}\r\n")
        if every or section == "sentinel":
            lines = ["sentinel_masters:%d" % (1 if self.topology.master else 0), "sentinel_tilt:0",
                     "sentinel_tilt_since_seconds:-1", "sentinel_running_scripts:0",
                     "sentinel_scripts_queue_length:0", "sentinel_simulate_failure_flags:0"]
            topo = self.topology
            if topo.master:
                lines.append(f"master0:name={self.master_name},status={self.master_status_word()},"
                             f"address={topo.master},slaves={len(topo.replicas)},"
                             f"sentinels={max(1, len(self.members()))}")
            out.append("# Sentinel\r\n" + "".join(line + "\r\n" for line in lines))
        return "\r\n".join(out)

    # -- events -----------------------------------------------------------------
    def describe(self, addr: str, master: str | None = None) -> str:
        """Sentinel's `%@` instance text: `master <name> <ip> <port>` or
        `slave <ip:port> <ip> <port> @ <name> <master-ip> <master-port>`."""
        master = self.topology.master if master is None else master
        host, port = split_addr(addr)
        if addr == master:
            return f"master {self.master_name} {host} {port}"
        text = f"slave {addr} {host} {port}"
        if master:
            mhost, mport = split_addr(master)
            text += f" @ {self.master_name} {mhost} {mport}"
        return text

    def publish(self, channel: str, message: str) -> int:
        ch, msg = channel.encode(), message.encode()
        log.info("event=sentinel_event channel=%s message=%r", channel, message)
        n = 0
        for s in list(self.sessions):
            n += s.deliver(ch, msg)
        return n

    def on_topology(self, new, old=None, reason: str = "") -> None:
        """A topology was committed and applied: announce a new master (idempotent per epoch).

        Called from the Raft apply path: it never raises."""
        try:
            self._announce(new, reason)
        except Exception:  # noqa: BLE001 - an event bug must not break applying the log
            log.exception("sentinel: announcing epoch %s failed", getattr(new, "epoch", "?"))

    def _announce(self, new, reason: str) -> None:
        if new.epoch <= self._epoch:
            return
        prev = self._master
        self._epoch, self._master = new.epoch, new.master
        if not self._running or not prev or not new.master or prev == new.master:
            return
        q = self.quorum()
        if self._odown_since is None and (reason.startswith("failover") or prev in self._sdown):
            self.publish("+odown", f"master {self.master_name} {' '.join(map(str, split_addr(prev)))} "
                                   f"#quorum {max(q, self.odown_votes(prev))}/{q}")
        ohost, oport = split_addr(prev)
        nhost, nport = split_addr(new.master)
        self.publish("+switch-master", f"{self.master_name} {ohost} {oport} {nhost} {nport}")
        self._odown_since = None
        self._sdown.pop(new.master, None)
        for addr in new.replicas:
            self.publish("+slave", self.describe(addr, new.master))
        if prev in self._sdown:
            # the old master is a replica from now on, still down: Sentinel says so in slave terms
            self.publish("+sdown", self.describe(prev, new.master))

    def _tick(self) -> None:
        topo = self.topology
        if topo.epoch > self._epoch:
            self.on_topology(topo, None, "")
        now = time.monotonic()
        for addr in topo.nodes:
            st = self.health.nodes.get(addr)
            role = st.role if st is not None else "unknown"
            seen = self._roles.get(addr)
            if seen is None or seen[0] != role:
                self._roles[addr] = (role, now)
            down = self.node_down(addr)
            if down and addr not in self._sdown:
                self._sdown[addr] = now
                self.publish("+sdown", self.describe(addr))
            elif not down and addr in self._sdown:
                del self._sdown[addr]
                self.publish("-sdown", self.describe(addr))
        for addr in list(self._sdown):
            if addr not in topo.nodes:
                del self._sdown[addr]
        master = topo.master
        if master is None:
            return
        odown = self.master_odown()
        if odown and self._odown_since is None:
            self._odown_since = now
            q = self.quorum()
            self.publish("+odown", f"{self.describe(master)} #quorum {self.odown_votes(master)}/{q}")
        elif not odown and self._odown_since is not None and not self.node_down(master):
            self._odown_since = None
            self.publish("-odown", self.describe(master))

    async def _watch(self) -> None:
        """Derive the events after every round of probes, as the controller steps (in the
        wake-up that read their replies), else half an interval after they were sent."""
        interval = max(0.02, min(0.1, self.cfg.probe_interval_ms / 1000.0))
        with RoundWaiter(self.server.health, self.server) as rounds:
            while True:
                await rounds.wait(interval)
                try:
                    self._tick()
                except Exception:  # never let a bug here stop the events
                    log.exception("sentinel tick failed")

    # -- the other proxies ----------------------------------------------------------
    def client_arrived(self) -> None:
        """A client connected. If nobody has been around for `PEER_LINGER_S`, the other
        proxies have not been read since: start a read, which the client's first command
        waits for (`refresh`), so it never gets an answer from a stale view of them."""
        idle = not self._peers_wanted()
        self._client_at = time.monotonic()
        if idle and self._tasks and (self.refresh is None or self.refresh.done()):   # (the poller runs)
            self.refresh = asyncio.get_running_loop().create_future()
            self._wanted.set()

    def client_left(self) -> None:
        self._client_at = time.monotonic()

    def _peers_wanted(self) -> bool:
        """Read the other proxies only while a client may ask about them: one is connected,
        or was within `PEER_LINGER_S`. What they say matters only to clients (SENTINEL
        SENTINELS, CKQUORUM, o_down and its events), and an idle proxy then sends and
        answers no HTTP request for this port (issue 16)."""
        return bool(self.sessions) or time.monotonic() - self._client_at <= PEER_LINGER_S

    async def _poll_peers(self) -> None:
        self._http = http_session(PEER_TIMEOUT_S, self.server.tls.admin_client)
        discover_until = 0.0
        while True:
            while not self._peers_wanted():
                self._wanted.clear()
                await self._wanted.wait(PEER_LINGER_S)
                discover_until = time.monotonic() + PEER_DISCOVERY_S
            fast = False
            try:
                me = self.cfg.node
                names = [m for m in self.members() if m != me]
                if names:
                    await asyncio.gather(*(self._poll_one(n) for n in names), return_exceptions=True)
                master = self.topology.master
                fast = master is not None and self.node_down(master)
                # the proxies start together: a peer not listening yet is asked again soon, so a
                # Sentinel client right after start-up sees every proxy (then at Sentinel's pace)
                fast = fast or (time.monotonic() < discover_until
                                and any(self.peers.get(n) is None or not self.peers[n].last_ok for n in names))
            except Exception:  # never let a bug here stop the polling
                log.exception("sentinel peer poll failed")
            finally:
                if self.refresh is not None and not self.refresh.done():
                    self.refresh.set_result(None)
            self._wanted.clear()        # a client arriving at an idle port cuts the pause short
            await self._wanted.wait(PEER_POLL_FAST_S if fast else PEER_POLL_S)

    async def _poll_one(self, name: str) -> None:
        controller = getattr(self.server, "controller", None)
        url = controller.peer_url(name) if controller is not None else None
        if not url:
            return
        peer = self.peers.get(name)
        if peer is None or peer.url != url:
            peer = self.peers[name] = PeerInfo(name, url, urlsplit(url).hostname or "")
        try:
            async with self._http.get(url.rstrip("/") + ("/status" if peer.full_status else SENTINEL_PEER_PATH)) as r:
                if r.status == 404 and not peer.full_status:
                    peer.full_status = True     # a version before the route: /status, from the next poll
                if r.status != 200:
                    return
                doc = await r.json(content_type=None)
        except Exception:  # noqa: BLE001 - down, partitioned, not JSON: simply not fresh
            return
        self.apply_peer_status(peer, doc)

    def apply_peer_status(self, peer: PeerInfo, doc: dict) -> None:
        sen = doc.get("sentinel") or {}
        try:
            port = int(sen.get("port") or 0)
        except (TypeError, ValueError):
            port = 0
        if port:
            peer.port = port
        peer.myid = str(sen.get("myid") or sentinel_id(peer.name))
        topo = doc.get("topology") or {}
        peer.master = topo.get("master")
        peer.master_up = bool(topo.get("master_up", True))
        peer.lease = bool((doc.get("lease") or {}).get("held"))
        peer.last_ok = time.monotonic()

    def new_client_id(self) -> int:
        self._next_id += 1
        return self._next_id


def attach_sentinel(server, port: int | None = None, master_name: str | None = None):
    """The Sentinel endpoint for `server`: `await .start()`, `await .stop()`,
    `.on_topology(new, old, reason)`, `.status_doc()`.  A no-op object when the
    port (default: `cfg.sentinel_port`) is 0."""
    cfg = server.cfg
    port = int(getattr(cfg, "sentinel_port", 0) if port is None else port)
    name = master_name or getattr(cfg, "master_name", "") or DEFAULT_MASTER_NAME
    if not port or getattr(cfg, "cluster_mode", False):
        return _Disabled()      # (cluster mode has no one master to name: CLUSTER SLOTS serves its clients)
    return SentinelService(server, port, name)


def peer_status(server) -> dict:
    """GET /status/sentinel: the fields of /status that `apply_peer_status` reads."""
    topo = server.router.topology
    return {"node": server.cfg.node, "sentinel": sentinel_status(server),
            "topology": {"master": topo.master,
                         "master_up": server.health.up(topo.master)},
            "lease": {"held": server.consensus.lease_held()}}


def sentinel_status(server) -> dict:
    """The `"sentinel"` field of `/status` (works before the server has one)."""
    svc = getattr(server, "sentinel", None)
    return svc.status_doc() if svc is not None else {"port": 0}
