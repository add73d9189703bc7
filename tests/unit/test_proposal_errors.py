"""An operator action whose Raft proposal fails is answered the same way on every route,
saying whether the change may still happen (proxy/process/proposal_errors.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.process.operator_api import OperatorApi
from proxy.process.proposal_errors import proposal_failure
from raft.auth import SECRET_HEADER
from raft.core import NotLeader, ProposalRejected, RaftError
from raft.storage import StorageError

SECRET = "s" * 32


@pytest.mark.parametrize(("exc", "status", "says"), [
    (NotLeader("proxy-2"), 409, "not the Raft leader"),
    (ProposalRejected("another membership change is pending"), 400,
     "refused by the leader: another membership change is pending"),
    (TimeoutError(), 503, "may still be applied"),
    (StorageError("disk full"), 503, "not done: disk full"),
    (RaftError("stopped"), 503, "not done: stopped"),
])
def test_each_proposal_failure_has_one_answer(exc, status, says):
    got, doc = proposal_failure(exc, "config change")
    assert got == status
    assert doc["ok"] is False and says in doc["error"]
    assert ("leader" in doc) == (status == 409)


def test_the_leader_hint_of_a_lost_leadership_is_passed_on():
    assert proposal_failure(NotLeader("proxy-3"), "x")[1]["leader"] == "proxy-3"
    assert proposal_failure(NotLeader(None), "x")[1]["leader"] is None


def test_anything_else_is_not_taken_for_a_proposal_failure():
    with pytest.raises(TypeError):
        proposal_failure(ValueError("bad"), "x")


class _Consensus:
    """A leader whose membership proposals fail with `exc`."""

    role, leader_id, members, learners = "leader", "proxy-1", ["proxy-1", "proxy-2", "proxy-3"], []

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def add_member(self, node, url, learner=False):
        raise self.exc

    async def remove_member(self, node):
        raise self.exc


def _server(exc: BaseException):
    controller = SimpleNamespace(peer_url=lambda node: f"http://{node}:8000" if node else None)
    return SimpleNamespace(consensus=_Consensus(exc), controller=controller, cfg=SimpleNamespace(raft_secret=SECRET))


async def _call(exc: BaseException, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    app = web.Application()
    OperatorApi(_server(exc)).add_routes(app)
    async with TestClient(TestServer(app)) as client:
        resp = await client.request(method, path, json=body, headers={SECRET_HEADER: SECRET})
        return resp.status, await resp.json()


async def test_a_membership_change_that_lost_the_leadership_points_at_the_new_leader():
    status, doc = await _call(NotLeader("proxy-2"), "POST", "/admin/members",
                              {"node": "proxy-4", "url": "http://127.0.0.1:8003"})
    assert status == 409
    assert doc["leader"] == "proxy-2" and doc["leader_url"] == "http://proxy-2:8000"


async def test_a_membership_change_the_leader_refuses_is_a_client_error_with_its_reason():
    status, doc = await _call(ProposalRejected("another membership change is pending"), "DELETE",
                              "/admin/members/proxy-3")
    assert status == 400
    assert "another membership change is pending" in doc["error"]


async def test_a_membership_change_not_confirmed_in_time_says_it_may_still_happen():
    status, doc = await _call(TimeoutError(), "DELETE", "/admin/members/proxy-3")
    assert status == 503 and "may still be applied" in doc["error"]
