"""Dynamic configuration through Raft (issue 17): validation, merge, effective values and
sources, node tags, `config edit`'s TOML; the state machine's `config` entry and snapshot;
the tags in the failover decision and read routing."""

from __future__ import annotations

import json

import pytest

from health.shard.decide import (
    NodeTags,
    NodeView,
    choose_new_master,
    failover_refusal,
    serves_reads,
)
from health.state_machine import TopologyStateMachine, merge_change
from proxy.process.config import Config, ConfigError, load_config
from proxy.process.dynamic_config import (
    DYNAMIC_KEYS,
    edit_change,
    effective,
    from_toml,
    node_tags,
    parse_override,
    to_toml,
    validate_change,
)
from proxy.process.reload import plan_reload
from proxy.routing.router import Router
from proxy.routing.topology import Topology

N1, N2 = "127.0.0.1:7001", "127.0.0.1:7002"


def test_values_are_parsed_and_checked_with_the_start_up_messages():
    assert parse_override("down_after_ms", "700") == 700
    assert parse_override("read_your_writes", "false") is False
    assert parse_override(f"tags.{N1}.max_lag_on_failover", "1mb") == 1024 * 1024
    assert parse_override(f"tags.{N1}.nofailover", True) is True
    # the messages of a bad value at start-up, word for word
    for key, raw in (("read_policy", "nearest"), ("down_after_ms", "0"), ("hold_ms", "soon")):
        with pytest.raises(ConfigError) as at_start:
            load_config(None, env={}, flags={key: raw})
        with pytest.raises(ConfigError) as via_raft:
            parse_override(key, raw)
        assert str(via_raft.value) == str(at_start.value), key


def test_keys_that_cannot_be_set_are_refused_naming_the_ones_that_can():
    for key in ("port", "peers", "lease_ms", "nonsense"):
        with pytest.raises(ConfigError) as exc:
            parse_override(key, "1")
        assert exc.value.key == key and "read_policy" in str(exc.value) and "tags.HOST:PORT.TAG" in str(exc.value)
    with pytest.raises(ConfigError, match="unknown tag 'fast'"):
        parse_override(f"tags.{N1}.fast", "true")
    with pytest.raises(ConfigError, match="not a Redis node address"):
        parse_override("tags.nohost.nofailover", "true")
    with pytest.raises(ConfigError, match=">= 0"):
        parse_override(f"tags.{N1}.priority", "-1")


def test_a_change_reports_every_problem_and_merges_only_when_valid():
    current = {"hold_ms": 3000, f"tags.{N1}.nofailover": True}
    new, errors = validate_change(current, {"read_policy": "master", "ack": "sometimes", "port": "1"},
                                  ["hold_ms", "data_dir"])
    assert {e.key for e in errors} == {"ack", "port", "data_dir"}
    new, errors = validate_change(current, {"read_policy": "master"}, ["hold_ms"])
    assert errors == [] and new == {"read_policy": "master", f"tags.{N1}.nofailover": True}
    assert merge_change(current, {"set": {"read_policy": "master"}, "unset": ["hold_ms"]}) == new
    assert merge_change(current, {"set": {"ack": "replica"}, "replace": True}) == {"ack": "replica"}


def test_effective_values_say_where_they_come_from():
    base = {k: getattr(Config(), k) for k in DYNAMIC_KEYS}
    out = effective({**base, "hold_ms": 2000}, {"hold_ms": "file", "ack": "env"},
                    {"read_policy": "master", "future_key": 1})
    assert out["read_policy"] == ("master", "raft")
    assert out["hold_ms"] == (2000, "file") and out["ack"] == ("async", "env")
    assert out["down_after_ms"] == (500, "default")


def test_load_config_records_the_source_of_each_value(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("hold_ms = 2000\n")
    cfg = load_config(str(f), env={"REDIS_RAFT_PROXY_ACK": "replica"}, flags={"probe_interval_ms": "50"})
    assert cfg.sources == {"hold_ms": "file", "ack": "env", "probe_interval_ms": "flag"}


def test_node_tags_from_the_flat_map():
    tags = node_tags({f"tags.{N1}.nofailover": True, f"tags.{N1}.priority": 5, f"tags.{N2}.noloadbalance": True,
                      "read_policy": "any"})
    assert tags == {N1: NodeTags(nofailover=True, priority=5), N2: NodeTags(noloadbalance=True)}


def test_edit_round_trips_and_a_deleted_line_unsets():
    values = {k: (getattr(Config(), k), "default") for k in DYNAMIC_KEYS}
    values["read_policy"] = ("master", "raft")
    text = to_toml(values, {N1: {"nofailover": True}})
    before = from_toml(text)
    assert before["read_policy"] == "master" and before[f"tags.{N1}.nofailover"] is True
    assert edit_change(before, before, ["read_policy", f"tags.{N1}.nofailover"]) == ({}, [])
    edited = text.replace('read_policy = "master"', "").replace("hold_ms = 5000", "hold_ms = 900")
    set_, unset = edit_change(before, from_toml(edited), ["read_policy", f"tags.{N1}.nofailover"])
    assert set_ == {"hold_ms": 900} and unset == ["read_policy"]
    with pytest.raises(ConfigError, match="not valid TOML"):
        from_toml("hold_ms = = 3")


def test_the_replicated_state_keeps_the_map_in_snapshots_and_older_snapshots_read():
    seen = []
    sm = TopologyStateMachine(lambda *a: None)
    sm.on_config = seen.append
    sm.apply(TopologyStateMachine.config_entry({"read_policy": "master", f"tags.{N1}.nofailover": True}))
    sm.apply(TopologyStateMachine.config_entry({"hold_ms": 900}, ["read_policy"]))
    assert sm.config == {f"tags.{N1}.nofailover": True, "hold_ms": 900} and seen[-1] == sm.config
    sm2 = TopologyStateMachine(lambda *a: None)
    sm2.restore(sm.snapshot())
    assert sm2.config == sm.config
    old = TopologyStateMachine(lambda *a: None)
    old.restore(json.dumps({"topology": {"epoch": 1, "master": N1, "replicas": [N2]}}).encode())
    assert old.config == {}


def test_sighup_makes_the_files_cluster_wide_keys_the_new_base_not_a_restart():
    plan = plan_reload(Config(), Config(read_policy="master", hold_ms=900))
    assert plan.need_restart == () and plan.dynamic["read_policy"] == "master" and plan.dynamic["hold_ms"] == 900


# -- the tags in the decisions ---------------------------------------------------

M, A, B = "10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"


def _choose(replicas: dict[str, NodeView], tags: dict[str, NodeTags], master_offset: int | None = None):
    master = NodeView(False) if master_offset is None else NodeView(False, "master", master_offset)
    views = {p: {M: master, **replicas} for p in ("proxy-1", "proxy-2", "proxy-3")}
    return choose_new_master(M, tuple(sorted(replicas)), views, leader="proxy-1", max_age_s=0.3,
                             max_staleness_s=10.0, down_for_s=0.5, tags=tags)


def _replica(offset: int, priority: int = 100) -> NodeView:
    return NodeView(True, "slave", offset, False, 0.0, M, priority=priority)


def test_nofailover_is_never_promoted_automatically():
    assert _choose({A: _replica(900), B: _replica(100)}, {A: NodeTags(nofailover=True)}) == B
    assert _choose({A: _replica(900)}, {A: NodeTags(nofailover=True)}) is None
    assert failover_refusal(A, {A: NodeTags(nofailover=True)}) == "tagged nofailover"
    assert failover_refusal(A, {A: NodeTags(priority=0)}) == "tagged priority 0"
    assert failover_refusal(B, {A: NodeTags(nofailover=True)}) is None


def test_priority_tag_lower_wins_and_replaces_replica_priority_for_its_node():
    assert _choose({A: _replica(500), B: _replica(500)}, {B: NodeTags(priority=10)}) == B
    # Redis' replica-priority still counts where no tag is set
    assert _choose({A: _replica(500, priority=5), B: _replica(500)}, {B: NodeTags(priority=10)}) == A
    assert _choose({A: _replica(500, priority=5), B: _replica(500)}, {B: NodeTags(priority=1)}) == B
    assert _choose({A: _replica(500), B: _replica(500, priority=0)}, {}) == A      # replica-priority 0: never
    assert _choose({A: _replica(500)}, {A: NodeTags(priority=0)}) is None
    # the offset still comes first (docs/design.md rule 3)
    assert _choose({A: _replica(501), B: _replica(500)}, {B: NodeTags(priority=1)}) == A


def test_max_lag_on_failover_keeps_a_replica_too_far_behind_out():
    tags = {A: NodeTags(max_lag_on_failover=1000), B: NodeTags(max_lag_on_failover=1000)}
    assert _choose({A: _replica(5000), B: _replica(3000)}, tags, master_offset=5500) == A
    assert _choose({B: _replica(3000)}, tags, master_offset=5500) is None
    assert _choose({B: _replica(4500)}, tags, master_offset=5500) == B     # exactly the bound: allowed
    assert _choose({B: _replica(3000)}, {}, master_offset=5500) == B       # no tag: no bound


class _AllReadable:
    def readable(self, addr, master):
        return True

    def add_node(self, addr):
        pass


def test_noloadbalance_nodes_serve_no_reads():
    r = Router(Topology(1, M, (A, B)), _AllReadable(), "replicas")
    r.tags = {A: NodeTags(noloadbalance=True)}
    assert r.readable_replicas() == [B] and not r.replica_fit(A) and r.replica_fit(B)
    assert {r.pick_read_node() for _ in range(4)} == {B}
    r.tags = {A: NodeTags(noloadbalance=True), B: NodeTags(noloadbalance=True)}
    assert r.pick_read_node() == M          # no replica may serve reads: the master does
    assert serves_reads(A, {}) and not serves_reads(A, {A: NodeTags(noloadbalance=True)})



def test_a_committed_change_applies_live_to_the_running_proxy(caplog):
    """config_live.LiveConfig: what a proxy does when the `config` entry applies."""
    import logging
    from types import SimpleNamespace

    from health.probes.probe import Health
    from proxy.process.config_live import LiveConfig

    cfg = Config()
    cfg.sources = {"hold_ms": "file"}
    timings = []
    health = Health([M, A], cfg.down_after_ms)
    server = SimpleNamespace(cfg=cfg, health=health, router=Router(Topology(1, M, (A,)), health, cfg.read_policy),
                             cluster=None, hold_s=cfg.hold_ms / 1000.0, probers={},
                             controller=SimpleNamespace(timings_changed=lambda: timings.append(1)))
    live = LiveConfig(server)
    with caplog.at_level(logging.INFO):
        live.apply({"read_policy": "master", "hold_ms": 900, "down_after_ms": 700, f"tags.{A}.noloadbalance": True})
    assert cfg.read_policy == "master" and server.router.read_policy == "master"
    assert server.hold_s == 0.9 and health.down_after == 0.7 and timings == [1]
    assert server.router.tags == {A: NodeTags(noloadbalance=True)}
    assert "event=config_applied key=read_policy value=master source=raft" in caplog.text
    live.apply({})          # everything unset: each key back to the proxy's own value
    assert cfg.hold_ms == 5000 and server.router.read_policy == "replicas" and server.router.tags == {}
    assert "event=config_applied key=hold_ms value=5000 source=file" in caplog.text
    live.set_base({"hold_ms": 1200})        # SIGHUP: the file's new value, Raft setting nothing
    assert cfg.hold_ms == 1200 and server.hold_s == 1.2
    live.apply({"hold_ms": 800})
    live.set_base({"hold_ms": 1500})        # Raft's value still wins
    assert cfg.hold_ms == 800
    # probes as far apart as down_after_ms would make every node flap: the pair is not applied
    live.apply({"probe_interval_ms": 800})
    assert (cfg.probe_interval_ms, cfg.down_after_ms) == (100, 500) and health.down_after == 0.5
    assert "event=config_ignored keys=probe_interval_ms,down_after_ms" in caplog.text
    assert "must be smaller than down_after_ms (500)" in caplog.text
    assert live.values()["probe_interval_ms"] == (100, "running")     # what `config show` says
    live.apply({"probe_interval_ms": 800, "down_after_ms": 2000})
    assert (cfg.probe_interval_ms, cfg.down_after_ms) == (800, 2000) and health.down_after == 2.0
