"""proxy/process/reload.py: which keys a SIGHUP applies and which need a restart (issue 17)."""

from __future__ import annotations

import logging

from proxy.process.config import Config, ConfigError
from proxy.process.reload import plan_reload, reload_config


def test_safe_keys_apply_and_the_others_need_a_restart():
    running = Config()
    new = Config(requirepass="s3cret-new", log_level="debug", maxclients=7, port=6390, down_after_ms=900,
                 redis_nodes=["127.0.0.1:7000", "127.0.0.1:7001"])
    plan = plan_reload(running, new)
    assert plan.apply == {"requirepass": "s3cret-new", "log_level": "debug", "maxclients": 7}
    assert set(plan.need_restart) == {"port", "redis_nodes"}
    # a cluster-wide key is the proxy's new base: it applies live where Raft sets nothing
    assert plan.dynamic["down_after_ms"] == 900 and plan.dynamic["read_policy"] == "replicas"
    assert plan_reload(running, Config()).apply == {} and plan_reload(running, Config()).need_restart == ()


def test_reload_applies_in_place_logs_names_not_values_and_a_bad_file_changes_nothing(caplog):
    running = Config(requirepass="old-pass-1")
    applied = []
    with caplog.at_level(logging.INFO):
        reload_config(running, lambda: Config(requirepass="new-pass-2", data_dir="/elsewhere"), applied.append)
    assert running.requirepass == "new-pass-2" and running.data_dir == ""
    assert applied and applied[0].need_restart == ("data_dir",)
    assert "event=config_reload_refused keys=data_dir" in caplog.text
    assert "old-pass-1" not in caplog.text and "new-pass-2" not in caplog.text

    def bad() -> Config:
        raise ConfigError("read_policy", "must be one of master, replicas, any, got 'x'")
    reload_config(running, bad, applied.append)
    assert running.requirepass == "new-pass-2" and len(applied) == 1
    assert "event=config_reload_failed" in caplog.text
