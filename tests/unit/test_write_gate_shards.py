"""The write gate in cluster mode: writes suspended while the lease lapsed are judged by
their own master's shard, so a failover in one shard fails none of another's."""

from __future__ import annotations

from types import SimpleNamespace

from proxy.routing.topology import Topology
from proxy.write_gate import WriteGate


class FakeUpstream:
    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.closed = False
        self.resumed = False
        self.retired: bytes | None = None

    def resume(self) -> None:
        self.resumed = True

    def retire(self, reply: bytes) -> None:
        self.retired = reply
        self.closed = True


class FakeServer:
    hold_s = 5.0

    def __init__(self) -> None:
        self.lease = False
        self.shards = {"h:1": Topology(1, "h:1", ("h:3",)), "h:2": Topology(1, "h:2", ("h:4",))}
        self.cfg = SimpleNamespace(hold_ms=5000)

    def lease_held(self) -> bool:
        return self.lease

    def routing_generation(self, addr: str):
        t = self.shards.get(addr)
        return None if t is None else (t.epoch, t.master, t.writes_paused)

    def topology_epoch(self) -> int:
        return max(t.epoch for t in self.shards.values())

    def retire_writes(self, addr: str, reply: bytes) -> None:
        pass


def test_a_failover_in_one_shard_fails_only_its_suspended_writes():
    server = FakeServer()
    gate = WriteGate(server)
    a, b = FakeUpstream("h:1"), FakeUpstream("h:2")
    gate.suspend(a)
    gate.suspend(b)
    server.shards["h:2"] = server.shards["h:2"].with_master("h:4")      # shard of h:2 failed over
    gate.settle()                       # no lease yet: b's outcome is unknown at once, a waits
    assert b.retired is not None and b"topology changed" in b.retired and a.retired is None and not a.resumed
    server.lease = True
    gate.settle()
    assert a.resumed and a.retired is None and gate.suspended == []


def test_without_any_change_the_lease_back_resumes_everything():
    server = FakeServer()
    gate = WriteGate(server)
    ups = [FakeUpstream("h:1"), FakeUpstream("h:2")]
    for up in ups:
        gate.suspend(up)
    server.lease = True
    gate.settle()
    assert all(up.resumed and up.retired is None for up in ups)


class FakeSession:
    def __init__(self) -> None:
        self.hold_since = None
        self.hold_reported = False
        self.held = False


class ReadServer(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.router = SimpleNamespace(master=None)      # cluster mode: no single master
        self.stats = SimpleNamespace(held_total=0, hold_timeouts=0,
                                     hold_seconds=SimpleNamespace(observe=lambda s: None))
        self.hold_s = 0.0
        self.holding = []

    def can_read(self) -> bool:
        return self.lease

    def hold(self, session) -> None:
        self.holding.append(session)


def test_a_read_only_client_is_held_afresh_after_every_lapse_and_told_why():
    server = ReadServer()
    gate = WriteGate(server)
    s = FakeSession()
    refused = gate.admit_read(s)        # hold_ms 0: refused at once, for the right reason
    assert b"no read for" in refused.reply and b"lease" in refused.reply and b"topology" not in refused.reply
    server.lease = True
    assert gate.admit_read(s) is None and s.hold_since is None and not s.hold_reported
    server.lease, server.hold_s = False, 5.0
    assert gate.admit_read(s) is not None and s.held    # a new lapse: held again (STOP), not refused at once


def test_a_command_before_any_shard_is_known_is_told_so_in_its_own_terms():
    """Cluster mode, no shard known yet (starting, or wiped and rejoining): a read held past
    hold_ms is told it got no read (it used to be told "no write"), a write no write; both
    say why: no topology yet, not a lost lease."""
    server = ReadServer()
    server.lease = True
    server.write_unavailable_reason = lambda addr: "no committed topology yet" if addr is None else "down"
    server.write_unavailable_error = lambda addr: f"TRYAGAIN proxy: no write for 0 ms: " \
                                                  f"{server.write_unavailable_reason(addr)}"
    gate = WriteGate(server)
    read = gate.admit_unknown(FakeSession(), reading=True)
    write = gate.admit_unknown(FakeSession(), reading=False)
    assert read.reply.startswith(b"-TRYAGAIN proxy: no read for") and b"no committed topology yet" in read.reply
    assert write.reply.startswith(b"-TRYAGAIN proxy: no write for") and b"no committed topology yet" in write.reply
    assert b"lease" not in read.reply + write.reply
    server.hold_s = 5.0
    s = FakeSession()
    assert gate.admit_unknown(s, reading=True) is not None and s.held and server.holding == [s]   # held first


def _lapse(applying: bool, caplog) -> list[tuple[int, str]]:
    """A follower's lease seen lapsing, applying a commit or not: the levels and events logged
    from the lapse to the resumption of a write suspended by it."""
    import logging

    from proxy.process.server import ProxyServer

    server = FakeServer()
    gate = WriteGate(server)
    up = FakeUpstream("h:1")
    proxy = SimpleNamespace(consensus=SimpleNamespace(lease_held=lambda: False, lease_waits_for_apply=lambda: applying),
                            gate=gate, masters=["h:1"], _lease_seen=True,
                            _suspend_writes=lambda addr: gate.suspend(up))
    with caplog.at_level(logging.INFO):
        ProxyServer._watch_lease(proxy)
        server.lease = True
        gate.settle()
    assert up.resumed
    return [(r.levelno, r.getMessage().split()[0]) for r in caplog.records]


def test_a_follower_applying_a_commit_lapses_routinely_said_at_info(caplog):
    """Every commit lapses a follower's lease until it applies it (the fence): a resharding
    commits every batch, so those lapses are info, a lease lost otherwise a warning."""
    import logging

    assert _lapse(True, caplog) == [(logging.INFO, "event=lease_lost"), (logging.INFO, "event=writes_resumed")]
    caplog.clear()
    assert _lapse(False, caplog) == [(logging.WARNING, "event=lease_lost"), (logging.WARNING, "event=writes_resumed")]
