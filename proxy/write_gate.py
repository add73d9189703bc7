"""The write gate: the one place that decides whether a write may reach the master.

docs/design.md safety rule 1: a proxy sends writes only to the master of the
latest committed topology, and only while it holds a lease; without one it
holds writes up to `hold_ms`, then answers an error that says why.  Every
client mode (shared, dedicated, MULTI, pub/sub, MONITOR) asks this gate, at
two moments:

* when a write is routed (`admit`): open, held (the session stops reading
  until `ProxyServer` wakes it), or refused after `hold_ms`;
* when its bytes leave and when its reply comes back (`in_flight_ok`, asked
  by the `Upstream` once per flush and once per batch of replies while a write
  is owed).

A lease that lapses while writes are queued or owed on a master connection
suspends that connection (`suspend`): bytes not sent stay unsent and replies
that arrive are kept, not delivered.  Then (`settle`, on every lease poll and
every topology apply):

* the lease is back and the committed topology is the one the connection was
  suspended under (same epoch, same master, no switchover pause): the
  connection resumes.  Nothing newer can have been committed meanwhile, since
  a lease is only held once everything its leader committed is applied here,
  and a later change is fenced against this lease: the writes were processed
  by the master of the latest committed topology, as every write is;
* the topology changed first, or hold_ms passed without the lease: the outcome
  of those writes is unknown, and every reply still owed becomes an error.

So losing the Raft leader (followers' leases lapse until a new one is elected)
is a short pause for clients, while a write is never acknowledged late by a
master that was replaced or outside a lease.  Topology changes also retire
the old master's connections (`ProxyServer`), which turns every reply they
still owe into an error.
"""

from __future__ import annotations

import logging
import time

from .protocol import resp

log = logging.getLogger("proxy.write_gate")

NO_LEASE = "this proxy holds no lease from a quorum of proxies (partitioned or no Raft leader)"
STOP = object()     # a session stops reading commands until it is woken (held, or replies owed)

# How long one positive lease check is trusted by `in_flight_ok`.  Leases
# change only at Raft ticks (tick_ms, 50 ms by default) or on a message from a
# peer, so a millisecond of caching costs at most a millisecond of accuracy
# and keeps the check to one clock read and one comparison per reply batch.
LEASE_RECHECK_S = 0.001
# A pause that began with this proxy applying a commit and ended within this is
# routine (logged at info); a longer one is a warning whatever began it.
ROUTINE_PAUSE_S = 0.1


class Refusal:
    """An error reply for a command that cannot be routed now."""

    __slots__ = ("reply",)

    def __init__(self, reply: bytes) -> None:
        self.reply = reply


def lease_lapsed_reply(addr: str) -> bytes:
    return resp.error_reply(f"TRYAGAIN proxy: write outcome unknown: this proxy's lease lapsed (no quorum of "
                            f"proxies heard within lease_ms) while the command was in flight to master {addr}")


def master_replaced_reply(addr: str, epoch: int) -> bytes:
    return resp.error_reply(f"TRYAGAIN proxy: write outcome unknown: master {addr} was replaced (topology "
                            f"epoch {epoch}) while the command was in flight")


def topology_changed_reply(addr: str, epoch: int) -> bytes:
    return resp.error_reply(f"TRYAGAIN proxy: write outcome unknown: the topology changed (epoch {epoch}) while "
                            f"this proxy's lease had lapsed with the command in flight to master {addr}")


def writes_paused_reply(addr: str, epoch: int) -> bytes:
    return resp.error_reply(f"TRYAGAIN proxy: write outcome unknown: a switchover from master {addr} paused "
                            f"writes (topology epoch {epoch}) while the command was in flight")


class WriteGate:
    """Owned by `ProxyServer`; shared by every session and upstream."""

    __slots__ = ("server", "open_until", "suspended", "suspended_since", "routine_lapse")

    def __init__(self, server) -> None:
        self.server = server
        self.open_until = 0.0       # monotonic time until which the last positive lease check is trusted
        self.suspended: list = []   # (master connection, its routing generation) since the lease lapsed
        self.suspended_since = 0.0
        self.routine_lapse = False  # the last lapse was this proxy applying a commit (`lapsed`)

    # -- when a write is routed ------------------------------------------------
    def admit(self, session, addr: str | None):
        """None when a write may go to master `addr` now; else STOP (held) or a Refusal."""
        server = self.server
        if addr is None or not server.can_write(addr):
            return self.hold(session, addr)
        if session.hold_since is not None:
            self._released(session)
        return None

    def admit_read(self, session):
        """None when a read may be served now (see `ProxyServer.can_read`); else STOP or a Refusal."""
        if self.server.can_read():
            if session.hold_since is not None:
                self._released(session)
            return None
        return self.hold(session, self.server.router.master, reading=True)

    def admit_unknown(self, session, reading: bool):
        """STOP or a Refusal for a command that needs a shard while this proxy knows none yet
        (cluster mode: starting, or wiped and rejoining): held like a write before the first
        topology, then TRYAGAIN saying why, in a read's terms for a read."""
        return self.hold(session, None, reading=reading, why=self.server.write_unavailable_reason(None))

    def _released(self, session) -> None:
        """The session's commands flow again: its hold (if any) is over and counted."""
        if session.hold_since is not None:
            if not session.hold_reported:
                self.server.stats.hold_seconds.observe(time.monotonic() - session.hold_since)
            session.hold_since = None
            session.hold_reported = False

    def hold(self, session, addr: str | None, reading: bool = False, why: str = NO_LEASE):
        """Hold `session`'s commands until a master can take writes (`reading`: until this
        proxy may serve reads, `why` not), up to hold_ms."""
        server = self.server
        now = time.monotonic()
        if session.hold_since is None:
            session.hold_since = now
            server.stats.held_total += 1
        if now - session.hold_since < server.hold_s:
            session.held = True
            server.hold(session)
            return STOP
        if not session.hold_reported:
            session.hold_reported = True
            server.stats.hold_timeouts += 1
            server.stats.hold_seconds.observe(now - session.hold_since)
        if reading:
            return Refusal(resp.error_reply(f"TRYAGAIN proxy: no read for {server.cfg.hold_ms} ms: {why}"))
        return Refusal(resp.error_reply(server.write_unavailable_error(addr)))

    # -- while a write is in flight --------------------------------------------
    def in_flight_ok(self) -> bool:
        """May a write's bytes leave now, and may its reply be delivered?

        True while this proxy holds its lease.  A stalled event loop is caught
        too: the lease check itself fails when Raft ticks fell behind.
        """
        now = time.monotonic()
        if now < self.open_until:
            return True
        if self.server.lease_held():
            self.open_until = now + LEASE_RECHECK_S
            return True
        self.open_until = 0.0
        return False

    def lapsed(self, routine: bool = False) -> None:
        """The lease was seen lost: stop trusting the cached check at once. `routine`: only
        until this proxy applies a commit (its resumption is then logged at info)."""
        self.open_until = 0.0
        self.routine_lapse = routine

    # -- writes in flight while the lease is lapsed ---------------------------
    def suspend(self, upstream) -> None:
        """`upstream` stopped sending and delivering (`Upstream.suspend`): `settle` decides,
        by the committed topology of the master it writes to (cluster mode: its shard's)."""
        if not self.suspended:
            self.suspended_since = time.monotonic()
        self.suspended.append((upstream, self.server.routing_generation(upstream.addr)))
        kick = getattr(self.server, "kick_hold_waker", None)
        if kick is not None:
            kick()      # settle from now on every 20 ms, not only every Raft tick

    def settle(self) -> None:
        """Resume or fail the suspended connections (see the module doc). Each is judged by
        its own master's topology: a failover in one shard fails no write to another."""
        if not self.suspended:
            return
        server = self.server
        lease = server.lease_held()
        expired = time.monotonic() - self.suspended_since >= server.hold_s
        keep, resume, changed, lapsed = [], [], [], []
        for up, generation in self.suspended:
            if up.closed:
                continue
            if server.routing_generation(up.addr) != generation:
                changed.append(up)
            elif lease:
                resume.append(up)
            elif expired:
                lapsed.append(up)
            else:
                keep.append((up, generation))
        self.suspended = keep
        if resume:
            paused = time.monotonic() - self.suspended_since
            log.log(logging.INFO if self.routine_lapse and paused < ROUTINE_PAUSE_S else logging.WARNING,
                    "event=writes_resumed master=%s connections=%d paused_ms=%d", _addrs(resume), len(resume),
                    paused * 1000)
            for up in resume:
                up.resume()
        if changed:
            self._fail(changed, "topology_changed", topology_changed_reply(_addrs(changed), server.topology_epoch()))
        if lapsed:
            self._fail(lapsed, "lease_lapsed", lease_lapsed_reply(_addrs(lapsed)))

    def _fail(self, ups: list, why: str, reply: bytes) -> None:
        """The outcome of the writes `ups` owe is unknown: every reply still owed (on these
        connections, and on any other to their masters) becomes `reply`."""
        log.warning("event=write_outcome_unknown master=%s reason=%s connections=%d", _addrs(ups), why, len(ups))
        for addr in {up.addr for up in ups}:
            self.server.retire_writes(addr, reply)
        for up in ups:
            if not up.closed:       # (every suspended connection owes a write: retired above)
                up.retire(reply)


def _addrs(ups) -> str:
    return ",".join(sorted({up.addr for up in ups}))
