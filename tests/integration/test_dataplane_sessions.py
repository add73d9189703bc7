"""The Python path's tests again, with the C data plane (`dataplane = "c"`).

What `test_sessions.py`, `test_session_rw.py` and `test_client_commands.py` assert of a
client through one proxy (reply order, transactions, RESP3, CLIENT LIST/KILL/PAUSE,
MONITOR, read-your-writes with stalling replicas), what `test_observability.py` asserts
of /metrics and /status across a failover, what `test_bad_input.py` asserts of a client
that never reads, what a SIGHUP reload does to the limits (`test_session_auth.py`) and
what 5,000 idle clients cost (`test_many_clients.py`) must hold when the thread serves
the clients and hands them back: the same test functions run here, every proxy they
start with the thread (`RRP_TEST_DATAPLANE=c` for this module: tests/integration/
harness.py; set for a whole run, it runs the single-set suite that way).
"""

from __future__ import annotations

import os
import urllib.request

import pytest

from . import test_client_commands, test_observability, test_session_rw, test_sessions
from .test_bad_input import (  # noqa: F401 -- fixtures and tests, run here with the thread
    LIMITS,
    QUIET,
    bystander,
    test_client_that_never_reads_is_disconnected_and_memory_stays_bounded,
)
from .test_client_commands import locked  # noqa: F401 -- a fixture of tests run here
from .test_many_clients import test_5000_idle_clients_cost_little_and_others_are_served  # noqa: F401
from .test_observability import Metrics, scenario  # noqa: F401 -- a fixture of tests run here
from .test_session_auth import (  # noqa: F401
    test_sighup_reloads_requirepass_and_limits_keeps_clients_and_refuses_restart_keys,
)
from .test_session_rw import norw_proxy  # noqa: F401 -- a fixture of tests run here

pytestmark = pytest.mark.timeout(120)


replica_set = test_client_commands.replica_set     # the fixture: its servers take DEBUG

for _module in (test_sessions, test_session_rw, test_client_commands, test_observability):
    for _name, _fn in vars(_module).items():
        if _name.startswith("test_") and callable(_fn):
            globals()[_name] = _fn


@pytest.fixture(scope="module", autouse=True)
def _every_proxy_with_the_thread():
    before = os.environ.get("RRP_TEST_DATAPLANE")
    os.environ["RRP_TEST_DATAPLANE"] = "c"
    try:
        yield
    finally:
        if before is None:
            del os.environ["RRP_TEST_DATAPLANE"]
        else:
            os.environ["RRP_TEST_DATAPLANE"] = before


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
