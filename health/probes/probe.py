"""Probes of Redis nodes: every proxy asks every node `INFO replication`.

The result per node is a `NodeStatus` (reachable, role, replication offset,
link to its master).  A node is subjectively down after `down_after_ms`
without a valid reply; `-LOADING` and `-BUSY` are replies, but not valid ones.
A node still answering `-BUSY` once subjectively down gets one `SCRIPT KILL`
(or `FUNCTION KILL`) per busy spell, as Sentinel does: a runaway read-only
script ends and the node comes back; one that already wrote cannot be killed
(`-UNKILLABLE`), and failover goes ahead as for any node that stopped answering.
The master's offsets are kept with the time each probe was *sent*, which is
what read-your-writes needs (see `Health.master_offset_after`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from redis.exceptions import RedisError, ResponseError

from health.cancellation import raise_if_cancelled
from health.probes.connection import ProbeClient
from health.shard.decide import DEFAULT_PRIORITY, NO_REPLID

log = logging.getLogger("health.probe")


@dataclass
class NodeStatus:
    addr: str
    last_ok: float = 0.0            # monotonic time of the last valid reply
    sent_ok: float = 0.0            # monotonic time the probe behind that reply was sent
    ever_ok: bool = False
    role: str = "unknown"           # master | slave | unknown
    offset: int = 0                 # master_repl_offset (master) or slave_repl_offset (replica)
    link_up: bool = False           # replica: master_link_status:up
    link_down_since_s: float = 0.0  # replica: master_link_down_since_seconds
    master_addr: str | None = None  # replica: the master it follows
    connected_replicas: int = 0
    error: str | None = None
    replid: str = ""
    replid2: str = ""               # the history this node continues ("000..." when none)
    offset2: int = -1               # second_repl_offset: replid2 holds up to offset2 - 1
    priority: int = DEFAULT_PRIORITY   # replica-priority (slave_priority): 0 = never promote
    run_id: str = ""                # the process answering (INFO server, read once per connection)
    probe_ms: float = 0.0
    busy_at: float | None = None    # monotonic time of the last -BUSY reply
    busy_error: str = ""            # ... and its text (says whether SCRIPT or FUNCTION KILL ends it)
    killed_at: float | None = None  # ... of the last kill that ended a script (or found it ended)
    samples: deque = field(default_factory=lambda: deque(maxlen=64))  # (sent_at, offset)

    since: float = field(default_factory=time.monotonic)  # when probing began

    def up(self, now: float, down_after: float) -> bool:
        """Subjectively up: a valid reply within `down_after` (a node not yet
        probed that long gets the benefit of the doubt, so a proxy that just
        started never votes a healthy master down)."""
        return now <= self.up_until(down_after)

    def up_until(self, down_after: float) -> float:
        """When this node stops being up unless a probe answers before."""
        return (self.last_ok if self.ever_ok else self.since) + down_after

    def to_dict(self, now: float, down_after: float) -> dict:
        """`/status`'s `nodes` entry.  `probe_age_ms`: how long ago the last valid reply
        came (None: never); `probe_rtt_ms`: that probe's round trip."""
        return {"addr": self.addr, "up": self.up(now, down_after), "role": self.role,
                "offset": self.offset, "link_up": self.link_up, "master": self.master_addr,
                "error": self.error, "priority": self.priority,
                "probe_age_ms": round(max(0.0, now - self.last_ok) * 1000) if self.ever_ok else None,
                "probe_rtt_ms": round(self.probe_ms, 3) if self.ever_ok else None}


def until_next(interval: float, now: float | None = None, offset: float = 0.0) -> float:
    """Seconds until the next point `offset` past a multiple of `interval` on the event
    loop's clock.

    The periodic tasks of a proxy (the probes of every node, the controller, the
    Sentinel port's watch, the Raft ticker) wait on one grid, so an idle proxy
    wakes up once for several of them rather than once for each (issue 16). Tasks
    that use what others found take an offset (the controller's and the Sentinel
    watch's fallback when the probes' replies are late: `next_step_deadline`). A
    wake-up a little early does not run twice for one grid point."""
    if now is None:
        now = asyncio.get_running_loop().time()
    delay = interval - ((now - offset) % interval)
    return delay if delay > 0.05 * interval else delay + interval


def next_step_deadline(interval: float, now: float | None = None) -> float:
    """Seconds until a task that runs after each round of probes (woken by
    `Health.round_listeners`) runs anyway: half an interval past a probe time, and at
    least half an interval from now. So a step woken by the replies of the probes sent
    at T waits for those sent at T + interval, or T + 1.5 intervals if they are slow,
    rather than running again at T + 0.5 (a wake-up that only makes the same step)."""
    if now is None:
        now = asyncio.get_running_loop().time()
    return interval / 2 + until_next(interval, now + interval / 2, offset=interval / 2)


class Wake:
    """A wait that ends after a delay or at `set()`, whichever comes first; set before the
    wait, it ends at once (like an `asyncio.Event` with a timeout). One future and one timer
    handle per wait: `asyncio.timeout` around `Event.wait` costs a Timeout object and, each
    time the delay is what ends it, a cancellation of the task unwound through it (issue 16:
    the probes, the controller and the Sentinel watch wait like this ten times a second)."""

    __slots__ = ("_fut", "_set")

    def __init__(self) -> None:
        self._fut: asyncio.Future | None = None
        self._set = False

    def set(self) -> None:
        self._set = True
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def is_set(self) -> bool:
        return self._set

    def clear(self) -> None:
        self._set = False

    async def wait(self, delay: float) -> None:
        """Until `set()` or `delay` seconds have passed; leaves it set if set."""
        if self._set:
            return
        loop = asyncio.get_running_loop()
        fut = self._fut = loop.create_future()
        timer = loop.call_later(delay, _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._fut = None


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class RoundWaiter:
    """What a loop that runs after each round of probes waits on: woken by the round's
    last reply (`Health.round_listeners`: in the wake-up that read it, none of its own,
    issue 16) or by `wake()`, else at `next_step_deadline`. Listens while in a `with`.
    `server`: the proxy, whose `step_interval_s` may stretch the interval (a learner's)."""

    def __init__(self, health: object, server: object = None) -> None:
        self._rounds: list[Callable[[], None]] = getattr(health, "round_listeners", [])
        self._stretch: Callable[[float], float] | None = getattr(server, "step_interval_s", None)
        self._woken = Wake()

    def wake(self) -> None:
        self._woken.set()

    def take(self) -> bool:
        """Whether it was woken since the last `wait` or `take`; clears that."""
        woken = self._woken.is_set()
        self._woken.clear()
        return woken

    def __enter__(self) -> RoundWaiter:
        self._rounds.append(self.wake)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.wake in self._rounds:
            self._rounds.remove(self.wake)

    async def wait(self, interval: float) -> None:
        """Until woken (at once if it was meanwhile) or the deadline passes."""
        if self._stretch is not None:
            interval = self._stretch(interval)
        await self._woken.wait(next_step_deadline(interval))
        self._woken.clear()


def _replid(value: object) -> str:
    """redis-py decodes INFO values that look like numbers: "000...0" arrives as 0."""
    return NO_REPLID if value == 0 else str(value)


def parse_replication_info(info: dict, status: NodeStatus) -> None:
    """Fill `status` from a decoded `INFO replication` dict."""
    role = str(info.get("role", "unknown"))
    status.role = role
    status.replid = _replid(info.get("master_replid", ""))
    status.replid2 = _replid(info.get("master_replid2", ""))
    status.connected_replicas = int(info.get("connected_slaves", 0))
    status.offset2 = int(info.get("second_repl_offset", -1) or -1)
    if role == "slave":
        status.master_addr = f"{info.get('master_host')}:{info.get('master_port')}"
        status.link_up = info.get("master_link_status") == "up"
        status.link_down_since_s = float(info.get("master_link_down_since_seconds", 0) or 0)
        status.offset = int(info.get("slave_repl_offset", 0))
        status.priority = int(info.get("slave_priority", DEFAULT_PRIORITY))
        if int(info.get("master_sync_in_progress", 0) or 0):
            status.link_up = False
    else:
        status.master_addr = None
        status.link_up = True
        status.link_down_since_s = 0.0
        status.offset = int(info.get("master_repl_offset", 0))


def lag_seconds(master_samples, replica_offset: int, replica_seen_at: float) -> float:
    """Replication lag in seconds from the master's probed offsets `(sent_at, offset)`:
    the time from the first master probe that saw more than the replica held to the
    replica's probe (0 when the replica held everything the master had when last
    probed before it).  Probes are `probe_interval_ms` apart, so this is a lower bound
    with that resolution; a replica behind every kept sample gets the oldest one's age."""
    behind_since = None
    for sent_at, offset in reversed(master_samples):
        if sent_at > replica_seen_at:
            continue
        if offset <= replica_offset:
            break
        behind_since = sent_at
    return 0.0 if behind_since is None else max(0.0, replica_seen_at - behind_since)


class Health:
    """Every node's latest status, as seen by this proxy."""

    def __init__(self, nodes: list[str], down_after_ms: int) -> None:
        self.nodes: dict[str, NodeStatus] = {a: NodeStatus(a) for a in nodes}
        self.down_after = down_after_ms / 1000.0
        self.listeners: list[Callable[[str, bool], None]] = []
        # called whenever the last probe in flight has its reply (or failed): what uses the
        # probes' results runs then, in the wake-up that read them (issue 16)
        self.round_listeners: list[Callable[[], None]] = []
        self._in_flight: set[str] = set()

    def probe_started(self, addr: str) -> None:
        self._in_flight.add(addr)

    def probe_done(self, addr: str, *, notify: bool = True) -> None:
        """`addr`'s probe is over; the round is, once none is in flight."""
        if addr not in self._in_flight:
            return
        self._in_flight.discard(addr)
        if notify and not self._in_flight:
            for listener in list(self.round_listeners):
                listener()

    def add_node(self, addr: str) -> None:
        self.nodes.setdefault(addr, NodeStatus(addr))

    def up(self, addr: str | None) -> bool:
        """`addr` answered within down_after (False for no node)."""
        st = self.nodes.get(addr) if addr is not None else None
        return st is not None and st.up(time.monotonic(), self.down_after)

    def readable(self, addr: str, master: str | None) -> bool:
        """A replica fit to serve reads: up, following `master`, link up."""
        st = self.nodes.get(addr)
        if st is None or not st.up(time.monotonic(), self.down_after):
            return False
        return st.role == "slave" and st.link_up and st.master_addr == master

    def offset(self, addr: str) -> int:
        st = self.nodes.get(addr)
        return st.offset if st is not None else -1

    def replica_lag_seconds(self, replica: str, master: str) -> float | None:
        """How far behind `master` the data `replica` held at its last probe was, in seconds
        (`lag_seconds`); None before both were probed."""
        r, m = self.nodes.get(replica), self.nodes.get(master)
        if r is None or m is None or not r.ever_ok or not m.samples:
            return None
        return lag_seconds(m.samples, r.offset, r.last_ok)

    def master_offset_after(self, addr: str, t: float) -> int | None:
        """The master's offset from the first probe sent after time `t`.

        Any write acknowledged before `t` is included in that offset, because
        the probe reached the master after the write's reply left it.
        """
        st = self.nodes.get(addr)
        if st is None:
            return None
        for sent_at, offset in st.samples:
            if sent_at > t:
                return offset
        return None


class Prober:
    """Probes one node forever (until cancelled) and updates `Health`."""

    def __init__(self, health: Health, addr: str, *, interval_ms: int, timeout_ms: int,
                 username: str = "", password: str = "", tls: dict | None = None,
                 on_change: Callable[[str, bool], None] | None = None) -> None:
        self.health = health
        self.addr = addr
        self.interval = interval_ms / 1000.0
        self.timeout = timeout_ms / 1000.0
        self._client = ProbeClient(addr, username=username, password=password, tls=tls)
        self._on_change = on_change
        self._was_up: bool | None = None
        self._kick = Wake()
        self._kill_sent = False         # a SCRIPT/FUNCTION KILL refused in this busy spell
        self._parsed: dict | None = None    # the INFO reply `status` was last filled from

    @property
    def peer(self) -> str:
        """The numeric address its connection last reached ("" before one did)."""
        return self._client.peer

    def kick(self) -> None:
        """Probe again now rather than at the next interval (during a failover)."""
        self._kick.set()

    async def kill_busy_script(self) -> bool:
        """Send SCRIPT KILL (or FUNCTION KILL, as the last -BUSY says) to the busy node: True
        when it accepted the kill, or answered NOTBUSY (another proxy's kill came first, or
        no script runs: the node answers). That script stops at once, so a -BUSY to a later
        probe is another script (a client running it again), which gets its own kill; a kill
        refused (-UNKILLABLE: the script wrote) or not answered is not sent again in this
        busy spell, and a node never seen busy gets none (False for both).
        `status.killed_at` records when a kill last ended a script: the leader leaves a
        master whose scripts keep ending alone. Sent by this prober once its node has been
        busy for `down_after_ms`, and by the leader just before it fails a busy master over
        (`Controller._killed_before_failover`)."""
        status = self.health.nodes[self.addr]
        if self._kill_sent or not status.busy_error:
            return False
        kill = ("FUNCTION", "KILL") if "FUNCTION KILL" in status.busy_error else ("SCRIPT", "KILL")
        try:
            reply = await self._client.execute_command(*kill, timeout=self.timeout)
            log.warning("event=busy_script_killed node=%s command=%r reply=%r", self.addr, " ".join(kill), reply)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            log.warning("event=busy_script_kill_failed node=%s command=%r error=%r", self.addr, " ".join(kill),
                        str(exc) or type(exc).__name__)
            if not (isinstance(exc, ResponseError) and str(exc).startswith("NOTBUSY")):
                self._kill_sent = True
                return False
        status.killed_at = time.monotonic()
        return True

    async def run(self) -> None:
        status = self.health.nodes[self.addr]
        try:
            while True:
                raise_if_cancelled()
                started = time.monotonic()
                self.health.probe_started(self.addr)
                try:
                    info = await self._client.info_replication(self.timeout)
                    if info is not self._parsed:    # a reply unlike the last (ProbeClient.info_replication)
                        parse_replication_info(info, status)
                        self._parsed = info
                    status.run_id = self._client.run_id
                    status.last_ok = time.monotonic()
                    status.sent_ok = started
                    status.ever_ok = True
                    status.error = None
                    status.probe_ms = (status.last_ok - started) * 1000
                    if status.role == "master":
                        status.samples.append((started, status.offset))
                    self._kill_sent = False
                except ResponseError as exc:      # -BUSY, -LOADING, -NOAUTH...: the connection is fine
                    status.error = str(exc)
                    if status.error.startswith("BUSY"):
                        status.busy_at, status.busy_error = time.monotonic(), status.error
                except (RedisError, OSError, asyncio.TimeoutError) as exc:
                    status.error = str(exc) or type(exc).__name__
                    try:
                        await self._client.aclose()
                    except Exception:
                        pass
                now = time.monotonic()
                up = status.up(now, self.health.down_after)
                if not up and (status.error or "").startswith("BUSY"):
                    await self.kill_busy_script()
                if up != self._was_up:
                    self._was_up = up
                    if self._on_change:
                        self._on_change(self.addr, up)
                self.health.probe_done(self.addr)
                self._kick.clear()
                await self._kick.wait(until_next(self.interval))
        finally:
            self.health.probe_done(self.addr, notify=False)
            try:
                await self._client.aclose()
            except Exception:
                pass
