"""The admin port is closed by default (README "Security").

Against real proxies: `/admin/*`, `/raft/*` and `/health/report` answer 403
to a missing, empty or wrong `X-Raft-Secret` and change nothing, while
`/healthz`, `/readyz`, `/metrics` and `/status` stay open and `/status`
holds no secret.  The cluster's proxies read their secret from a file
(`raft_secret_file`, as a mounted Kubernetes Secret), so the right secret
being accepted also proves that path.  A standalone proxy (no peers, no
secret) refuses every admin action: before, an empty header matched its
empty secret.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from benchmarks.raft_cluster_lib import RaftCluster

from .harness import HOST, start_or_clean, wait_until

pytestmark = pytest.mark.timeout(150)

SECRET = "3f9d0c1e5b7a42d8a6c1e0f2b4d6a8c0"     # what `openssl rand -hex 32` gives, shortened
WRONG = "3f9d0c1e5b7a42d8a6c1e0f2b4d6a8c1"

# (method, path, JSON body): every route that needs the secret
GUARDED = [
    ("POST", "/admin/failover", {"to": "127.0.0.1:1"}),
    ("POST", "/admin/transfer-leadership", {}),
    ("POST", "/admin/members", {"node": "intruder", "url": "http://127.0.0.1:1"}),
    ("DELETE", "/admin/members/proxy-2", None),
    ("POST", "/raft/message", {"type": "heartbeat"}),
    ("GET", "/raft/stream", None),
    ("GET", "/raft/cluster", None),
    ("POST", "/health/report", {"node": "proxy-2", "view": {}}),
    ("GET", "/admin/config", None),
    ("POST", "/admin/config", {"set": {"read_policy": "master"}}),
]
OPEN = ["/healthz", "/readyz", "/metrics", "/status", "/status/cluster"]
BAD_HEADERS = {"missing": None, "empty": "", "wrong": WRONG}


def call(port: int, method: str, path: str, body: dict | None = None, secret: str | None = None,
         timeout: float = 5.0) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Raft-Secret"] = secret
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("admin-auth")
    secret_file = root / "raft-secret"
    secret_file.write_text(SECRET + "\n")
    # secret="": the proxies get REDIS_RAFT_PROXY_RAFT_SECRET empty and the file instead
    c = start_or_clean(RaftCluster(root, secret="", options={"raft_secret_file": str(secret_file)}), 90)
    try:
        yield c
    finally:
        c.cleanup()


def test_guarded_routes_refuse_a_missing_empty_or_wrong_secret(cluster):
    before = cluster.wait_converged(cluster.initial, timeout=30)
    for name in cluster.initial:
        port = cluster.admin_ports[name]
        for method, path, body in GUARDED:
            for what, header in BAD_HEADERS.items():
                code, text = call(port, method, path, body, header)
                assert code == 403, f"{name} {method} {path} with a {what} secret: HTTP {code} {text[:200]!r}"
    # nothing changed: same members and topology everywhere (a loaded machine may hold an
    # election meanwhile, so leader and term are not compared)
    after = cluster.wait_converged(cluster.initial, timeout=30)
    for key in ("members", "epoch", "master"):
        assert after.get(key) == before.get(key), (key, before.get(key), after.get(key))
    # not vacuous: the secret from the file opens the same routes
    code, text = call(cluster.admin_ports[cluster.initial[0]], "GET", "/raft/cluster", secret=SECRET)
    assert code == 200 and json.loads(text)["cluster_id"], text
    leader_port = cluster.admin_ports[after["leader"]]
    code, text = call(leader_port, "POST", "/admin/members", {"node": "proxy-1", "url": "http://x:1"},
                      secret=SECRET)
    assert code == 200 and b"already a member" in text, text


def ok(answer: tuple[int, bytes]) -> tuple[int, bytes] | None:
    return answer if answer[0] == 200 else None


def test_open_routes_and_status_hold_no_secret(cluster):
    cluster.wait_converged(cluster.initial, timeout=30)
    # converged is not ready: a leader elected a moment ago holds its lease only once a
    # quorum answered its heartbeats (a CI run asked /readyz before and got 503, "no lease")
    for name in cluster.initial:
        wait_until(lambda name=name: call(cluster.admin_ports[name], "GET", "/readyz")[0] == 200, 30,
                   message=lambda name=name: f"{name} ready: {call(cluster.admin_ports[name], 'GET', '/readyz')}")
    for name in cluster.initial:
        port = cluster.admin_ports[name]
        for path in OPEN:
            # polled: /readyz may say 503 for a moment (a lease lapsing on a loaded machine);
            # a route that wanted the secret would answer 403 throughout
            code, text = wait_until(lambda port=port, path=path: ok(call(port, "GET", path)), 30,
                                    message=lambda name=name, port=port, path=path:
                                    f"{name} {path}: {call(port, 'GET', path)}")
            assert SECRET.encode() not in text, f"{name} {path} shows the secret"
        assert SECRET not in cluster.proxies[name].log_text(), f"{name} logged the secret"


@pytest.mark.parametrize("method, path, body", GUARDED[:4] + GUARDED[7:])
@pytest.mark.parametrize("header", list(BAD_HEADERS.values()), ids=list(BAD_HEADERS))
def test_standalone_proxy_without_a_secret_refuses_admin_actions(proxy, method, path, body, header):
    """No raft_secret configured (a single proxy needs none): an empty or missing header
    must not match the empty secret."""
    code, text = call(proxy.admin_port, method, path, body, header)
    assert code == 403, f"{method} {path}: HTTP {code} {text[:200]!r}"
