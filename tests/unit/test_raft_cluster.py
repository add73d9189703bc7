"""raft/cluster.py: the cluster id decisions, its file, and its HTTP wiring."""

from __future__ import annotations

import random

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from raft import codec
from raft.cluster import (
    ID_HEADER,
    INFO_PATH,
    SEEDED_HEADER,
    ClusterMeta,
    bootstrap_verdict,
    new_cluster_id,
    peer_problem,
)
from raft.messages import Message, TimeoutNow
from raft.storage import Storage, StorageError
from raft.transport import MESSAGE_PATH, SECRET_HEADER, HttpTransport, add_raft_routes

X = ClusterMeta("a" * 32, frozenset({"p1", "p2"}))


def test_new_ids_are_random_hex() -> None:
    rng = random.Random(1)
    a, b = new_cluster_id(rng), new_cluster_id(rng)
    assert a != b and len(a) == 32 and int(a, 16) >= 0


def test_bootstrap_verdict() -> None:
    peers = ["p1", "p2", "p3"]
    assert bootstrap_verdict("p3", {}, peers)[0] == "wait"
    assert bootstrap_verdict("p3", {"p1": ClusterMeta()}, peers)[0] == "wait"  # p2 not heard yet
    assert bootstrap_verdict("p3", {"p1": ClusterMeta(), "p2": ClusterMeta()}, peers) is None  # all new
    # p1 and p2 formed the cluster before p3 started: p3 never had the id, it may take part.
    assert bootstrap_verdict("p3", {"p1": X, "p2": X}, peers) is None
    # p3 had the id (it is seeded): it lost its data dir.
    kind, why = bootstrap_verdict("p3", {"p1": ClusterMeta(X.cluster_id, frozenset({"p1", "p3"}))}, peers)
    assert kind == "refuse" and "--join" in why and X.cluster_id in why


def test_bootstrap_wait_names_why_each_peer_did_not_answer() -> None:
    """The operator reads the wait in the log: a peer that cannot be reached is named with
    the error the transport saw (a certificate from another CA, a refused secret)."""
    why = "certificate verify failed: unable to get local issuer certificate"
    kind, text = bootstrap_verdict("p1", {}, ["p1", "p2", "p3"], {"p3": why, "p9": "not a peer"})
    assert kind == "wait"
    assert f"from p2, p3 ({why})" in text and "p9" not in text


def test_peer_problem() -> None:
    assert peer_problem(X, None, "p9") is None  # a version before ids: not checkable, accepted
    assert peer_problem(ClusterMeta(), X, "p1") is None  # we do not know ours yet
    assert peer_problem(X, ClusterMeta(X.cluster_id), "p1") is None
    why = peer_problem(X, ClusterMeta("b" * 32), "p9")
    assert why is not None and "b" * 32 in why and "p9" in why


def test_headers_round_trip() -> None:
    assert ClusterMeta().headers() == {}
    assert ClusterMeta.from_headers({}) is None
    assert ClusterMeta.from_headers(X.headers()) == X


def test_cluster_file_round_trip_and_corruption(tmp_path) -> None:
    s = Storage(str(tmp_path))
    assert s.load_cluster() == ClusterMeta()
    s.save_cluster(X)
    assert Storage(str(tmp_path)).load_cluster() == X
    (tmp_path / "cluster.json").write_text("{not json")
    with pytest.raises(StorageError, match="cluster.json"):
        Storage(str(tmp_path)).load_cluster()


class Node:
    """A receiver that knows its cluster id."""

    secret = "s3cret"

    def __init__(self, meta: ClusterMeta | None) -> None:
        self.meta = meta
        self.got: list[Message] = []

    def receive(self, msg: Message) -> None:
        self.got.append(msg)

    def cluster_info(self) -> ClusterMeta | None:
        return self.meta

    def peer_meta(self, src: str, meta: ClusterMeta | None) -> str | None:
        return peer_problem(self.meta or ClusterMeta(), meta, src)


async def test_http_route_refuses_another_cluster_and_serves_info() -> None:
    node = Node(None)
    app = web.Application()
    add_raft_routes(app, node)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    body = codec.dumps(TimeoutNow(1, "p9", "p1"))
    auth = {SECRET_HEADER: "s3cret"}
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(base + INFO_PATH) as r:
                assert r.status == 403
            async with s.get(base + INFO_PATH, headers=auth) as r:
                assert r.status == 503  # data dir not loaded: no answer rather than a wrong "no id"
            node.meta = X
            async with s.get(base + INFO_PATH, headers=auth) as r:
                assert r.status == 200 and ClusterMeta.from_dict(await r.json()) == X
            other = {**auth, ID_HEADER: "b" * 32, SEEDED_HEADER: "p9"}
            async with s.post(base + MESSAGE_PATH, data=body, headers=other) as r:
                assert r.status == 409 and "b" * 32 in await r.text()
            assert node.got == []
            async with s.post(base + MESSAGE_PATH, data=body, headers={**auth, **X.headers()}) as r:
                assert r.status == 204
            async with s.post(base + MESSAGE_PATH, data=body, headers=auth) as r:
                assert r.status == 204  # no id at all: a peer of the version before
        assert len(node.got) == 2
        t = HttpTransport("p2", {"p1": base}, "s3cret")
        t.set_meta_source(lambda: X)
        await t.start()
        try:
            assert await t.cluster_info("p1") == X
            assert await t.cluster_info("nobody") is None
            t.set_peers({"old": base + "/before-ids"})  # answers 404, like a version before ids
            assert await t.cluster_info("old") == ClusterMeta()
        finally:
            await t.close()
    finally:
        await server.close()
