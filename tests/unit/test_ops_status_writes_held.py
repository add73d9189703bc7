"""`redis-raft-proxy status` names writes held because no node has the committed data
(issue 12 item 6: the operator is told, rather than the data silently replaced)."""

from __future__ import annotations

from proxy.process.ops_cli import problems


def status(writes_held=None) -> dict:
    return {"node": "proxy-1", "raft": {"leader": "proxy-1"}, "lease": {"held": True},
            "topology": {"epoch": 4, "master": "127.0.0.1:7001", "master_up": True, "replicas": [],
                         "writes_held": writes_held}}


def test_status_reports_writes_held_with_the_reason():
    st = status("no_safe_master: 127.0.0.1:7001 lost the committed data ...")
    assert any(p.startswith("writes held: no_safe_master") for p in problems(st, {"proxy-1": st}))


def test_no_problem_without_a_hold():
    st = status()
    assert problems(st, {"proxy-1": st}) == []
