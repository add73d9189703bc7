"""Fixtures of the chaos suite.  The per-test time limit, the SIGTERM-to-interrupt hook and the
proxy logs attached to a failure come from the integration suite's conftest (same hooks)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import (pytest_configure, pytest_runtest_call,  # noqa: F401 - pytest hooks
                                        pytest_runtest_makereport, pytest_runtest_setup,
                                        pytest_runtest_teardown)

from .netfaults import ChaosNet


@pytest.fixture
def chaos_net():
    """This run's nftables table and cgroups (stale ones of dead runs are swept first); removed
    at teardown, and by atexit / SIGTERM handlers if the teardown never runs."""
    net = ChaosNet()
    try:
        net.check_cgroup_match()
        yield net
    finally:
        net.close()
