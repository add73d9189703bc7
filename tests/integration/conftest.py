"""Fixtures for the integration tests: real redis-server and proxy processes.

* `replica_set`           module-scoped 1 master + 2 replicas, synced
* `fresh_replica_set`     the same, for one test (tests that kill nodes)
* `proxy_factory`         start proxies for one test: `proxy_factory(rs, read_policy=..., **options)`
* `module_proxy_factory`  the same, shared by a module
* `proxy`                 module-scoped proxy (read_policy=replicas) over `replica_set`

Every test has a time limit (default 60 s; `@pytest.mark.timeout(S)` to change
it), enforced with SIGALRM since pytest-timeout is not installed.  When a
test fails, the stderr of every proxy still registered is attached to the
report.  All processes are killed at teardown and, as a last resort, at
interpreter exit (harness.REGISTRY).
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from pathlib import Path

import pytest

from .harness import REGISTRY, ProxyProcess, ReplicaSet

DEFAULT_TIMEOUT_S = 60.0
SETUP_TIMEOUT_S = 60.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit for integration tests")
    # SIGTERM (a CI runner cancelling the job) would skip fixture teardown and atexit:
    # turn it into an interrupt so every redis-server and proxy is still killed.
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _sigterm)


def _sigterm(_sig, _frame):
    raise KeyboardInterrupt("SIGTERM")


class TestTimeout(Exception):
    """Raised in the main thread when a test exceeds its time limit."""


def _arm(seconds: float, what: str):
    def on_alarm(_sig, _frame):
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        raise TestTimeout(f"{what} exceeded its time limit of {seconds:.0f}s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return old


def _disarm(old) -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def _limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker and marker.args:
        return float(marker.args[0])
    return DEFAULT_TIMEOUT_S


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    old = _arm(SETUP_TIMEOUT_S, f"setup of {item.nodeid}")
    try:
        yield
    finally:
        _disarm(old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    old = _arm(_limit(item), item.nodeid)
    try:
        yield
    finally:
        _disarm(old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item):
    old = _arm(SETUP_TIMEOUT_S, f"teardown of {item.nodeid}")
    try:
        yield
    finally:
        _disarm(old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for proc in list(REGISTRY.procs):
            if isinstance(proc, ProxyProcess):
                state = "running" if proc.alive() else f"exited {proc.returncode()}"
                report.sections.append((f"stderr of {proc.name} ({state}, {proc.log_path})",
                                        proc.log_tail(60)))


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def replica_set(tmp_path_factory: pytest.TempPathFactory):
    rs = ReplicaSet(tmp_path_factory.mktemp("rs"))
    try:
        rs.start()
        yield rs
    finally:
        rs.cleanup()


@pytest.fixture
def fresh_replica_set(tmp_path: Path):
    rs = ReplicaSet(tmp_path / "rs")
    try:
        rs.start()
        yield rs
    finally:
        rs.cleanup()


class ProxyFactory:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proxies: list[ProxyProcess] = []

    def __call__(self, rs: ReplicaSet | None = None, *, redis_nodes=None, master=None, start: bool = True,
                 read_policy: str | None = "replicas", env=None, node: str = "proxy-1",
                 **options) -> ProxyProcess:
        nodes = redis_nodes if redis_nodes is not None else rs.addrs
        master = master or (rs.master.addr if rs is not None else nodes[0])
        p = ProxyProcess(self.workdir, nodes, master, node=node, read_policy=read_policy, options=options, env=env)
        self.proxies.append(p)
        if start:
            p.start()
        return p

    def cleanup(self) -> None:
        for p in self.proxies:
            p.cleanup()


@pytest.fixture
def proxy_factory(tmp_path: Path):
    factory = ProxyFactory(tmp_path / "proxies")
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture(scope="module")
def module_proxy_factory(tmp_path_factory: pytest.TempPathFactory):
    factory = ProxyFactory(tmp_path_factory.mktemp("proxies"))
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture(scope="module")
def proxy(replica_set: ReplicaSet, module_proxy_factory: ProxyFactory) -> ProxyProcess:
    return module_proxy_factory(replica_set, read_policy="replicas", down_after_ms=10_000)
