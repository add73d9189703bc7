"""A Raft learner probes Redis at learner_probe_interval_ms (issue 16), and at the
voters' rate again once promoted."""

from __future__ import annotations

import random

from proxy.process.config import load_config
from proxy.process.server import ProxyServer
from raft.core import RaftCore


class FakeProber:
    def __init__(self) -> None:
        self.interval = 0.1
        self.kicked = 0

    def kick(self) -> None:
        self.kicked += 1


def server_with(core: RaftCore, **flags) -> ProxyServer:
    server = ProxyServer(load_config(env={}, flags={"down_after_ms": "500", **flags}))
    server.consensus.core = core     # the probe rate follows the Raft configuration only
    return server


def test_learner_probes_slower_and_speeds_up_once_promoted() -> None:
    core = RaftCore("p4", {"p1": "", "p2": "", "p3": ""}, learners={"p4": ""}, rng=random.Random(1))
    server = server_with(core, learner_probe_interval_ms="1000")
    prober = FakeProber()
    server.probers["127.0.0.1:7000"] = prober   # type: ignore[assignment]
    server.tune_probes()
    assert server.probing_as_learner()
    assert prober.interval == 1.0 and prober.kicked == 1
    # probed once a second, a node must not look down between two probes
    assert server.health.down_after == 1.5
    core.members["p4"] = core.learners.pop("p4")   # promoted
    server.tune_probes()
    assert not server.probing_as_learner()
    assert prober.interval == 0.1 and prober.kicked == 2 and server.health.down_after == 0.5
    server.tune_probes()
    assert prober.kicked == 2   # no change, nothing done


def test_a_learner_steps_at_its_probe_interval_a_voter_at_the_decision_interval() -> None:
    """The loops that follow the probes (controller step, Sentinel events) of a learner run
    as often as its probes, not 10 times a second: it decides and reports nothing."""
    core = RaftCore("p4", {"p1": "", "p2": "", "p3": ""}, learners={"p4": ""}, rng=random.Random(1))
    server = server_with(core, learner_probe_interval_ms="1000")
    server.tune_probes()
    assert server.step_interval_s(0.1) == 1.0
    assert server.step_interval_s(2.0) == 2.0       # never more often than asked
    core.members["p4"] = core.learners.pop("p4")   # promoted
    server.tune_probes()
    assert server.step_interval_s(0.1) == 0.1


def test_a_proxy_started_as_learner_probes_slowly_before_it_is_added(tmp_path) -> None:
    core = RaftCore("p4", {}, rng=random.Random(1))      # --join: no membership yet
    server = server_with(core, learner="true", join="http://127.0.0.1:8000", peers="p1=http://127.0.0.1:8000",
                         data_dir=str(tmp_path), raft_secret="a3f9c1e07b6d4428", node="p4")
    assert server.probing_as_learner() and server._probe_interval_ms() == 1000
    voter = server_with(RaftCore("p1", {"p1": ""}, rng=random.Random(1)))
    assert not voter.probing_as_learner() and voter._probe_interval_ms() == 100


def test_a_learner_does_not_report_its_view_to_the_leader() -> None:
    """Only voters' views count for objective down; a learner does not send its own."""
    import asyncio
    from types import SimpleNamespace

    from health.probes.probe import Health
    from health.shard.controller import Controller, TopologyStateMachine

    cfg = load_config(env={}, flags={})
    consensus = SimpleNamespace(role="follower", term=2, leader_id="p1", members=["p1", "p2", "p3"],
                                learners=["p4"], is_learner=True, lease_held=lambda: True)
    server = SimpleNamespace(cfg=cfg, health=Health(list(cfg.redis_nodes), cfg.down_after_ms),
                             stats=SimpleNamespace(observe_raft=lambda c: None))
    ctl = Controller(server, consensus, TopologyStateMachine(lambda new, old, reason: None))
    sent: list[str] = []

    async def report(view) -> None:
        sent.append(consensus.role)

    ctl._send_report = report   # type: ignore[method-assign]

    async def observe_twice() -> None:
        assert ctl._observe() is None
        consensus.is_learner = False      # promoted
        assert ctl._observe() is None
        await asyncio.sleep(0)

    asyncio.run(observe_twice())
    assert sent == ["follower"]   # only once it is a voter
