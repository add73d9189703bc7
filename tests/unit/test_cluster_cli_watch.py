"""`redis-raft-proxy cluster ... ` watching a migration: it ends with the migration, and
gives up (exit 2, saying the migration goes on) when the endpoint stops answering,
instead of polling a dead endpoint for ever."""

from __future__ import annotations

from types import SimpleNamespace

from proxy.process import cluster_cli

ARGS = SimpleNamespace(endpoint="http://127.0.0.1:1", cacert=None, cert=None, key=None)
M = {"id": "m1", "source": "a" * 40, "target": "b" * 40, "done": 2, "total": 4, "state": "running",
     "keys_moved": 7, "started_at": 100.0, "updated_at": 101.0}


def watch_with(monkeypatch, replies: list) -> int:
    it = iter(replies)
    monkeypatch.setattr(cluster_cli, "_fetch_status", lambda endpoint, ctx: next(it, replies[-1]))
    return cluster_cli.watch(ARGS, ["m1"], interval=0.001, give_up_s=0.05)


def test_watch_ends_with_the_migration(monkeypatch, capsys):
    done = {**M, "done": 4, "state": "done"}
    assert watch_with(monkeypatch, [{"migrations": [M]}, None, {"migrations": [done]}]) == 0
    out = capsys.readouterr()
    assert "2/4 slots" in out.out and "4/4 slots" in out.out and "does not answer" in out.err
    assert watch_with(monkeypatch, [{"migrations": [{**M, "state": "cancelled"}]}]) == 1


def test_watch_gives_up_on_an_endpoint_that_stopped_answering(monkeypatch, capsys):
    assert watch_with(monkeypatch, [{"migrations": [M]}, None]) == 2
    err = capsys.readouterr().err
    assert "does not answer" in err and "stopped watching" in err and "goes on" in err
    assert watch_with(monkeypatch, [{"migrations": []}]) == 2
    assert "shows none of these migrations" in capsys.readouterr().err
