"""proxy/process/ops_cli.leader_call: how an operator command finds the Raft leader."""

from __future__ import annotations

import pytest

from proxy.process import ops_cli

NOT_LEADER = {"ok": False, "error": "not the Raft leader", "leader": None, "leader_url": None}


def answers(monkeypatch, replies: list[tuple[int, dict]]) -> list[str]:
    """Make ops_cli.http answer `replies` in turn; the URLs asked are recorded."""
    asked: list[str] = []

    def http(method, url, body=None, secret="", timeout=5.0, ssl_context=None):
        asked.append(url)
        return replies.pop(0)
    monkeypatch.setattr(ops_cli, "http", http)
    monkeypatch.setattr(ops_cli, "time", Clock())
    return asked


class Clock:
    """ops_cli's `time`: sleeping moves it on, nothing else does."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_a_followers_hint_is_followed_once(monkeypatch) -> None:
    asked = answers(monkeypatch, [(409, {**NOT_LEADER, "leader": "p2", "leader_url": "http://p2:8000/"}),
                                  (200, {"ok": True})])
    assert ops_cli.leader_call("http://p1:8000", "POST", "/admin/pause", {}, "s", 5.0) == (200, {"ok": True})
    assert asked == ["http://p1:8000/admin/pause", "http://p2:8000/admin/pause"]


def test_during_an_election_the_command_asks_again_until_there_is_a_leader(monkeypatch) -> None:
    """A 409 without a leader (an election, or the leadership lost while a plan was made:
    nothing committed) is asked again rather than failing the operator's command."""
    asked = answers(monkeypatch, [(409, dict(NOT_LEADER)), (409, dict(NOT_LEADER)),
                                  (409, {**NOT_LEADER, "leader": "p3", "leader_url": "http://p3:8000"}),
                                  (200, {"ok": True, "migrations": []})])
    status, doc = ops_cli.leader_call("http://p1:8000", "POST", "/admin/cluster/rebalance", {"by": "keys"}, "s", 5.0)
    assert (status, doc["ok"]) == (200, True)
    assert asked[-1] == "http://p3:8000/admin/cluster/rebalance" and len(asked) == 4


@pytest.mark.parametrize("wait", [0.0, 0.5])
def test_without_a_leader_it_gives_up_after_the_wait(monkeypatch, wait) -> None:
    asked = answers(monkeypatch, [(409, dict(NOT_LEADER))] * 100)
    status, doc = ops_cli.leader_call("http://p1:8000", "POST", "/admin/pause", {}, "s", 5.0, election_wait_s=wait)
    assert status == 409 and doc["error"] == "not the Raft leader"
    assert len(asked) == 1 + int(wait / 0.3), asked     # asked again every 0.3 s within the wait


def test_other_answers_are_returned_as_they_are(monkeypatch) -> None:
    asked = answers(monkeypatch, [(503, {"ok": False, "error": "rebalance by keys: 1 of 3 migrations committed"})])
    assert ops_cli.leader_call("http://p1:8000", "POST", "/admin/cluster/rebalance", {}, "s", 5.0)[0] == 503
    assert len(asked) == 1
