"""The controller's steps run at least every 100 ms, however slowly the nodes are probed
(issue 16): a node is down `down_after_ms` after its last valid reply, judged at the
step, so a longer probe_interval_ms does not find a dead master later."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from health.probes.probe import Health
from health.shard.controller import DECISION_INTERVAL_S, Controller, TopologyStateMachine
from proxy.process.config import load_config


def controller(probe_interval_ms: int, down_after_ms: int = 500) -> Controller:
    cfg = load_config(env={}, flags={"probe_interval_ms": str(probe_interval_ms),
                                     "down_after_ms": str(down_after_ms)})
    consensus = SimpleNamespace(role="follower", term=1, leader_id="p1", members=["p1", "p2", "p3"],
                                is_learner=False, lease_held=lambda: True)
    server = SimpleNamespace(cfg=cfg, health=Health(list(cfg.redis_nodes), cfg.down_after_ms),
                             stats=SimpleNamespace(observe_raft=lambda c: None))
    return Controller(server, consensus, TopologyStateMachine(lambda new, old, reason: None))


@pytest.mark.parametrize(("probe_ms", "step_s"), [(50, 0.05), (100, 0.1), (300, DECISION_INTERVAL_S),
                                                   (1000, DECISION_INTERVAL_S)])
def test_steps_are_never_further_apart_than_the_decision_interval(probe_ms, step_s) -> None:
    assert controller(probe_ms, down_after_ms=5000).interval == pytest.approx(step_s)


def test_what_depends_on_the_probes_follows_the_probe_interval() -> None:
    ctl = controller(300)
    assert ctl.probe_interval == pytest.approx(0.3)
    # a view is fresh for 3 probes (or down_after_ms when longer), and so is a candidate's offset
    assert ctl.freshness == pytest.approx(0.9) and ctl.candidate_age_s == pytest.approx(0.9)
    # an unchanged view is sent again well within its freshness, not every step
    assert ctl.report_refresh_s == pytest.approx(0.36)
    ctl.cfg.probe_interval_ms = 100           # the dynamic configuration changed it
    ctl.timings_changed()
    assert (ctl.interval, ctl.freshness) == (pytest.approx(0.1), pytest.approx(0.5))


def test_a_step_between_two_probes_judges_by_the_time_of_the_last_reply() -> None:
    ctl = controller(800, down_after_ms=1000)
    addr = next(iter(ctl.server.health.nodes))
    st = ctl.server.health.nodes[addr]
    st.ever_ok, st.role = True, "master"
    st.last_ok = time.monotonic() - 0.95       # the last probe was answered 950 ms ago
    assert ctl.local_view()[addr].up
    st.last_ok = time.monotonic() - 1.05       # no new reply (the next probe may be 550 ms away): down
    assert not ctl.local_view()[addr].up


def test_a_round_of_probes_wakes_what_uses_them_once_the_last_reply_is_in() -> None:
    """Issue 16: the controller and the Sentinel watch run in the wake-up that read the
    probes' replies, not in one of their own half an interval later."""
    health = Health(["a:1", "b:2"], 500)
    rounds: list[int] = []
    health.round_listeners.append(lambda: rounds.append(1))
    health.probe_started("a:1")
    health.probe_started("b:2")
    health.probe_done("a:1")
    assert rounds == []                        # b:2 has not answered yet
    health.probe_done("b:2")
    assert rounds == [1]
    health.probe_done("b:2")                   # not in flight: no second round
    health.probe_started("a:1")
    health.probe_done("a:1", notify=False)     # a prober stopped (its node removed)
    assert rounds == [1]


def test_without_a_round_the_step_runs_half_an_interval_after_the_probes_and_the_last_step() -> None:
    from health.probes.probe import next_step_deadline

    # woken by the replies of the probes sent at 5.0: next at the replies of 5.1, at the
    # latest 5.15 (not 5.05, which would only repeat the step just made)
    assert 5.001 + next_step_deadline(0.1, now=5.001) == pytest.approx(5.15)
    assert 5.05 + next_step_deadline(0.1, now=5.05) == pytest.approx(5.15)    # a step at the deadline
    assert 5.149 + next_step_deadline(0.1, now=5.149) == pytest.approx(5.25)


def test_a_report_that_changes_what_a_node_is_wakes_the_leaders_step() -> None:
    """A follower's report saying the master went down may complete the quorum a failover
    waits for: the leader steps at once. Offsets and ages alone (refreshes) do not wake it."""
    ctl = controller(100)
    addr = next(iter(ctl.server.health.nodes))
    view = {addr: {"up": True, "role": "master", "offset": 100, "age_s": 0.01}}
    ctl.receive_report("p2", view)
    assert ctl._waiter.take()                  # the first from that proxy
    ctl.receive_report("p2", {addr: {**view[addr], "offset": 250, "age_s": 0.05}})
    assert not ctl._waiter.take()
    ctl.receive_report("p2", {addr: {**view[addr], "up": False}})
    assert ctl._waiter.take()
