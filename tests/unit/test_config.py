"""proxy/config.py: precedence, validation and error messages naming the key."""

import pytest

from proxy.config import ConfigError, load_config


def test_defaults():
    cfg = load_config(env={})
    assert cfg.port == 6380 and cfg.admin_port == 8000 and cfg.read_policy == "replicas"
    assert cfg.initial_master == "127.0.0.1:7000"


def test_precedence(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('read_policy = "master"\nport = 7777\nproto_max_bulk_len = "1mb"\n')
    cfg = load_config(str(path), env={"REDIS_RAFT_PROXY_PORT": "7778"}, flags={"read_policy": "any"})
    assert (cfg.port, cfg.read_policy, cfg.proto_max_bulk_len) == (7778, "any", 1024 * 1024)


@pytest.mark.parametrize("source, key", [
    ({"env": {"REDIS_RAFT_PROXY_READ_POLICY": "nearest"}}, "read_policy"),
    ({"env": {"REDIS_RAFT_PROXY_NOPE": "1"}}, "nope"),
    ({"flags": {"port": "abc"}}, "port"),
    ({"flags": {"redis_nodes": "localhost"}}, "redis_nodes"),
    ({"flags": {"master": "127.0.0.1:1"}}, "master"),
    ({"flags": {"read_your_writes": "maybe"}}, "read_your_writes"),
])
def test_bad_values_name_the_key(source, key):
    with pytest.raises(ConfigError) as exc:
        load_config(env=source.get("env", {}), flags=source.get("flags"))
    assert exc.value.key == key and key in str(exc.value)


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('raed_policy = "master"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(str(path), env={})
    assert exc.value.key == "raed_policy"


def test_secrets_redacted():
    cfg = load_config(env={}, flags={"requirepass": "hunter2"})
    assert "hunter2" not in repr(cfg.redacted())


def test_example_file_loads_and_matches_defaults():
    import pathlib

    path = pathlib.Path(__file__).parents[2] / "config.example.toml"
    assert load_config(str(path), env={}) == load_config(env={})


def test_control_credentials_default_to_the_data_user():
    cfg = load_config(env={"REDIS_RAFT_PROXY_REDIS_PASSWORD": "data-pw"}, flags={"redis_username": "rrp-data"})
    assert (cfg.control_username, cfg.control_password) == ("rrp-data", "data-pw")
    assert (cfg.redis_control_username, cfg.redis_control_password) == ("", "")


def test_control_credentials_are_their_own_when_set():
    cfg = load_config(env={"REDIS_RAFT_PROXY_REDIS_CONTROL_PASSWORD": "ctl-pw", "REDIS_RAFT_PROXY_REDIS_PASSWORD": "d"},
                      flags={"redis_username": "rrp-data", "redis_control_username": "rrp-control"})
    assert (cfg.control_username, cfg.control_password) == ("rrp-control", "ctl-pw")
    assert (cfg.redis_username, cfg.redis_password) == ("rrp-data", "d")
    assert "ctl-pw" not in repr(cfg.redacted()) and "rrp-control" in repr(cfg.redacted())
