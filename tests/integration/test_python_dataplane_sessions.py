"""The data path's tests again, with the event loop forwarding (`dataplane = "python"`).

What `test_sessions.py`, `test_session_rw.py` and `test_client_commands.py` assert of a
client through one proxy (reply order, transactions, RESP3, CLIENT LIST/KILL/PAUSE,
MONITOR, read-your-writes with stalling replicas), what `test_observability.py` asserts
of /metrics and /status across a failover, what `test_bad_input.py` asserts of a client
that never reads, what a SIGHUP reload does to the limits (`test_session_auth.py`) and
what 5,000 idle clients cost (`test_many_clients.py`) must hold on both data paths.
By default (`dataplane = "auto"`) the C thread serves plain clients of a single set and
hands them back to Python for what it does not forward; here the same test functions
run with Python forwarding everything, every proxy they start with `dataplane =
"python"` (`RRP_TEST_DATAPLANE=python` for this module: tests/integration/harness.py;
set for a whole run, it runs the single-set suite that way).
"""

from __future__ import annotations

import os
import urllib.request

import pytest

from . import test_client_commands, test_observability, test_session_rw, test_sessions
from .test_bad_input import (  # noqa: F401 -- fixtures and tests, run here in Python
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
def _every_proxy_in_python():
    before = os.environ.get("RRP_TEST_DATAPLANE")
    os.environ["RRP_TEST_DATAPLANE"] = "python"
    try:
        yield
    finally:
        if before is None:
            del os.environ["RRP_TEST_DATAPLANE"]
        else:
            os.environ["RRP_TEST_DATAPLANE"] = before


@pytest.fixture(scope="module")
def proxy(replica_set, module_proxy_factory):
    return module_proxy_factory(replica_set, read_policy="replicas", down_after_ms=10_000, dataplane="python",
                                node="proxy-py")


@pytest.fixture(scope="module")
def limited_proxy(replica_set, module_proxy_factory):
    return module_proxy_factory(replica_set, node="bad-input-py", dataplane="python", **LIMITS, **QUIET)


def test_this_modules_proxy_forwards_in_python(proxy):
    """(So the tests above ran with Python forwarding, not the thread.)"""
    def counts() -> tuple[float, float]:
        with urllib.request.urlopen(proxy.admin_url + "/metrics", timeout=5) as r:
            m = Metrics(r.read().decode())
        return m.sum("redis_raft_proxy_dataplane_commands_total"), m.sum("redis_raft_proxy_commands_total")

    thread_before, all_before = counts()
    with proxy.client() as c:
        for i in range(200):
            c.set("python-dataplane-sessions", i)
    thread_after, all_after = counts()
    assert all_after - all_before >= 200 and thread_after == thread_before == 0
