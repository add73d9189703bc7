"""proxy/process/config.py: precedence, validation and error messages naming the key."""

import os
import subprocess
import sys

import pytest

from proxy.process.config import ConfigError, load_config


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


def test_the_example_file_shows_every_key():
    """config.example.toml is where README sends operators for every key (drain_timeout_ms
    was missing from it)."""
    import dataclasses
    import pathlib
    import re

    from proxy.process.config import Config

    text = (pathlib.Path(__file__).parents[2] / "config.example.toml").read_text()
    missing = [f.name for f in dataclasses.fields(Config) if not re.search(rf"^#?\s*{f.name}\s*=", text, re.M)]
    assert missing == [], f"keys without an example: {missing}"


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


# -- closed by default: the Raft secret, placeholders, secrets from files ------------------

CLUSTER = {"peers": "proxy-1=http://127.0.0.1:8000,proxy-2=http://127.0.0.1:8001", "data_dir": "/tmp/raft-data"}


@pytest.mark.parametrize("flags", [CLUSTER, {**CLUSTER, "join": "http://127.0.0.1:8001"}])
def test_peers_or_join_without_a_raft_secret_is_refused(flags):
    with pytest.raises(ConfigError) as exc:
        load_config(env={}, flags=flags)
    assert exc.value.key == "raft_secret"
    assert "openssl rand -hex 32" in str(exc.value) and "REDIS_RAFT_PROXY_RAFT_SECRET" in str(exc.value)


def test_a_standalone_proxy_needs_no_secret():
    assert load_config(env={}).raft_secret == ""


@pytest.mark.parametrize("key", ["raft_secret", "requirepass", "redis_password", "redis_control_password"])
@pytest.mark.parametrize("value", ["change-me-raft-secret", "change-me-redis-password", "CHANGEME", "secret"])
def test_placeholder_secrets_are_refused(key, value):
    with pytest.raises(ConfigError) as exc:
        load_config(env={}, flags={**CLUSTER, "raft_secret": "a" * 32, key: value})
    assert exc.value.key == key and "placeholder" in str(exc.value)
    assert repr(value) not in str(exc.value)     # the error does not echo the value


def test_the_k8s_placeholder_is_refused():
    """The committed k8s/base/secret.env must not open a cluster."""
    import pathlib

    env = dict(line.split("=", 1) for line in
               (pathlib.Path(__file__).parents[2] / "k8s/base/secret.env").read_text().split() if "=" in line)
    with pytest.raises(ConfigError) as exc:
        load_config(env={"REDIS_RAFT_PROXY_RAFT_SECRET": env["raft-secret"]}, flags=CLUSTER)
    assert exc.value.key == "raft_secret"


@pytest.mark.parametrize("key", ["raft_secret", "requirepass", "redis_password", "redis_control_password"])
def test_secrets_from_files(tmp_path, key):
    path = tmp_path / key
    path.write_text("0f3a9c-from-a-file\n")      # `echo ... > file` and Kubernetes Secrets end so
    cfg = load_config(env={f"REDIS_RAFT_PROXY_{key.upper()}_FILE": str(path)}, flags=CLUSTER | {
        "raft_secret": "a" * 32} if key != "raft_secret" else CLUSTER)
    assert getattr(cfg, key) == "0f3a9c-from-a-file"
    assert "0f3a9c-from-a-file" not in repr(cfg.redacted())
    assert cfg.redacted()[key] == "***"


@pytest.mark.parametrize("content, why", [(None, "No such file"), ("", "empty"), ("\n", "empty")])
def test_unreadable_or_empty_secret_file_names_the_key(tmp_path, content, why):
    path = tmp_path / "raft-secret"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as exc:
        load_config(env={}, flags={**CLUSTER, "raft_secret_file": str(path)})
    assert exc.value.key == "raft_secret_file" and why in str(exc.value) and str(path) in str(exc.value)


def test_secret_and_a_different_secret_file_conflict(tmp_path):
    path = tmp_path / "pw"
    path.write_text("from-the-file")
    with pytest.raises(ConfigError) as exc:
        load_config(env={}, flags={"requirepass": "from-a-flag", "requirepass_file": str(path)})
    assert exc.value.key == "requirepass_file" and "from-the-file" not in str(exc.value)


@pytest.mark.parametrize("probe_ms", ["500", "800"])
def test_probes_at_least_down_after_apart_are_refused(probe_ms):
    """A node answering every probe would look down between two: refused at start-up."""
    with pytest.raises(ConfigError) as exc:
        load_config(env={}, flags={"down_after_ms": "500", "probe_interval_ms": probe_ms})
    assert exc.value.key == "probe_interval_ms" and "down_after_ms (500)" in str(exc.value)
    assert load_config(env={}, flags={"down_after_ms": "500", "probe_interval_ms": "499"}).probe_interval_ms == 499


@pytest.mark.parametrize("flags, fix", [
    ({"heartbeat_ticks": "4"}, "at most 3"),                       # 8-tick lease (400 ms at the defaults)
    ({"heartbeat_ticks": "2", "lease_ms": "200"}, "at most 1"),    # 4 ticks
    ({"heartbeat_ticks": "1", "lease_ms": "100"}, "raise lease_ms"),  # 2 ticks: no heartbeat is often enough
])
def test_heartbeats_too_far_apart_for_the_lease_are_refused(flags, fix):
    """A follower's lease would lapse between every two heartbeats (tests/sim: with no latency at all)."""
    with pytest.raises(ConfigError) as exc:
        load_config(env={}, flags=flags)
    assert exc.value.key == "heartbeat_ticks" and fix in str(exc.value) and "write lease of" in str(exc.value)


@pytest.mark.parametrize("flags", [{}, {"heartbeat_ticks": "3"}, {"heartbeat_ticks": "1", "lease_ms": "150"},
                                   {"heartbeat_ticks": "4", "election_ticks": "12"}])
def test_heartbeats_within_half_the_lease_are_accepted(flags):
    cfg = load_config(env={}, flags=flags)
    assert 2 * cfg.heartbeat_ticks < cfg.lease_ticks


def test_cli_exits_2_naming_the_key(tmp_path):
    """`redis-raft-proxy run` with peers and no secret does not start (bounded: before
    the check it served forever)."""
    def run(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "proxy.process.cli", "run", "--port", "0", "--admin-port", "0",
                "--sentinel-port", "0", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_RAFT_PROXY_")}
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, check=False)

    r = run("--peers", CLUSTER["peers"], "--data-dir", str(tmp_path), "--node", "proxy-1")
    assert r.returncode == 2 and "'raft_secret'" in r.stderr and "openssl rand -hex 32" in r.stderr, r.stderr
    r = run("--raft-secret-file", str(tmp_path / "missing"))
    assert r.returncode == 2 and "'raft_secret_file'" in r.stderr, r.stderr


def test_learner_needs_join():
    with pytest.raises(ConfigError, match="learner.*only with --join"):
        load_config(env={}, flags={"learner": "true", "raft_secret": "a3f9c1e07b6d4428", **CLUSTER})
    cfg = load_config(env={}, flags={**CLUSTER, "learner": "true", "join": "http://127.0.0.1:8000",
                                     "raft_secret": "a3f9c1e07b6d4428", "node": "proxy-3"})
    assert cfg.learner and cfg.learner_probe_interval_ms == 1000


def test_a_bool_flag_alone_means_true():
    from proxy.process.cli import build_parser
    from proxy.process.config import flags_from_args

    args = build_parser().parse_args(["run", "--learner", "--read-your-writes", "false"])
    assert flags_from_args(args) == {"learner": "true", "read_your_writes": "false"}


def test_dataplane_auto_uses_the_thread_only_where_it_can_serve():
    """`auto` (the default): the C thread for a single set over plaintext; Python in
    cluster mode and with tls_upstream, where `c` is refused at start."""
    from proxy.process.config import uses_c_dataplane

    assert load_config(env={}).dataplane == "auto"
    assert uses_c_dataplane(load_config(env={}))
    assert not uses_c_dataplane(load_config(env={}, flags={"dataplane": "python"}))
    assert not uses_c_dataplane(load_config(env={}, flags={"tls_upstream": True}))
    assert uses_c_dataplane(load_config(env={}, flags={"dataplane": "c"}))
    with pytest.raises(ConfigError, match="tls_upstream"):
        load_config(env={}, flags={"dataplane": "c", "tls_upstream": True})
