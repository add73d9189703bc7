"""The Python path's session tests again, with the C data plane (`dataplane = "c"`).

What `test_sessions.py` and `test_session_rw.py` assert of a client through one proxy
(reply order, transactions, RESP3, CLIENT commands, read-your-writes with stalling
replicas) and what `test_bad_input.py` asserts of a client that never reads must hold
when the thread serves the client and hands it back: the same test functions run here
with this module's `proxy` and `limited_proxy`, which have the thread.  (The whole
single-set suite runs that way with `RRP_TEST_DATAPLANE=c`: see tests/integration/harness.py.)
"""

from __future__ import annotations

import inspect
import urllib.request

import pytest

from . import test_session_rw, test_sessions
from .test_bad_input import (  # noqa: F401 -- a fixture and a test, run here with the thread
    LIMITS,
    QUIET,
    bystander,
    test_client_that_never_reads_is_disconnected_and_memory_stays_bounded,
)
from .test_observability import Metrics

pytestmark = pytest.mark.timeout(60)


def _on_the_shared_proxy(fn) -> bool:
    """A test that takes this module's `proxy` (not a proxy of its own)."""
    params = inspect.signature(fn).parameters
    return "proxy" in params and not {"proxy_factory", "norw_proxy"} & params.keys()


for _module in (test_sessions, test_session_rw):
    for _name, _fn in vars(_module).items():
        if _name.startswith("test_") and callable(_fn) and _on_the_shared_proxy(_fn):
            globals()[_name] = _fn


@pytest.fixture(scope="module")
def proxy(replica_set, module_proxy_factory):
    return module_proxy_factory(replica_set, read_policy="replicas", down_after_ms=10_000, dataplane="c",
                                node="proxy-c")


@pytest.fixture(scope="module")
def limited_proxy(replica_set, module_proxy_factory):
    return module_proxy_factory(replica_set, node="bad-input-c", dataplane="c", **LIMITS, **QUIET)


def test_this_modules_proxy_forwards_through_the_thread(proxy):
    """(So the tests above ran with clients in the thread, not in Python alone.)"""
    def forwarded() -> float:
        with urllib.request.urlopen(proxy.admin_url + "/metrics", timeout=5) as r:
            return sum(v for _, v in Metrics(r.read().decode()).select("redis_raft_proxy_dataplane_commands_total"))

    before = forwarded()
    with proxy.client() as c:
        for i in range(200):
            c.set("dataplane-sessions", i)
    assert forwarded() - before >= 100
