"""proxy/process/ops_cli.py: where the operator commands take the Raft secret from."""

import argparse

import pytest

from proxy.process.ops_cli import _secret


def test_flag_then_env_then_file(tmp_path, monkeypatch):
    path = tmp_path / "raft-secret"
    path.write_text("from-the-file-5e1f\n")
    monkeypatch.delenv("REDIS_RAFT_PROXY_RAFT_SECRET", raising=False)
    monkeypatch.setenv("REDIS_RAFT_PROXY_RAFT_SECRET_FILE", str(path))
    assert _secret(argparse.Namespace(secret=None)) == "from-the-file-5e1f"
    monkeypatch.setenv("REDIS_RAFT_PROXY_RAFT_SECRET", "from-env-0c2d")
    assert _secret(argparse.Namespace(secret=None)) == "from-env-0c2d"
    assert _secret(argparse.Namespace(secret="from-flag")) == "from-flag"


def test_unreadable_file_exits_2_naming_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("REDIS_RAFT_PROXY_RAFT_SECRET", raising=False)
    monkeypatch.setenv("REDIS_RAFT_PROXY_RAFT_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(SystemExit) as exc:
        _secret(argparse.Namespace(secret=None))
    assert exc.value.code == 2 and "'raft_secret_file'" in capsys.readouterr().err
