"""Thousands of idle clients cost little and do not slow the others down."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from .harness import HOST, RawClient, raise_nofile_limit, wait_until

pytestmark = pytest.mark.timeout(120)

IDLE_CLIENTS = 5000


def _connected(proxy) -> int:
    return int(proxy.status()["clients"]["connected"])


def _p50_set_get(client, n: int = 100) -> float:
    lat = []
    for i in range(n):
        t = time.monotonic()
        client.set("lat", i)
        client.get("lat")
        lat.append(time.monotonic() - t)
    return sorted(lat)[n // 2]


def test_5000_idle_clients_cost_little_and_others_are_served(replica_set, proxy_factory):
    # The proxy inherits this limit: it needs an fd per client, and so do we.
    soft = raise_nofile_limit(2 * IDLE_CLIENTS + 1000)
    assert soft >= IDLE_CLIENTS + 500, f"RLIMIT_NOFILE soft limit {soft} is too low for this test"
    proxy = proxy_factory(replica_set, node="many-clients", down_after_ms=10_000)

    worker = proxy.client()
    base_p50 = _p50_set_get(worker)
    # Warm up: the paths an idle client touches are loaded, the first allocations made.
    for _ in range(20):
        with RawClient(proxy.port) as raw:
            assert raw.command("PING") == b"PONG"
    assert worker.set("warm", "1") is True
    wait_until(lambda: _connected(proxy) == 1, 10, message="warm-up clients to be gone")
    base_rss = proxy.rss_kb()

    idle: list[socket.socket] = []
    try:
        t0 = time.monotonic()
        for _ in range(IDLE_CLIENTS):
            idle.append(socket.create_connection((HOST, proxy.port), timeout=10))
        connect_s = time.monotonic() - t0
        wait_until(lambda: _connected(proxy) >= IDLE_CLIENTS + 1, 60, interval=0.1,
                   message=f"the proxy to accept {IDLE_CLIENTS} idle clients")
        rss = proxy.rss_kb()
        per_client_kb = (rss - base_rss) / IDLE_CLIENTS
        print(f"\n{IDLE_CLIENTS} idle clients: RSS {base_rss / 1024:.1f} MB -> {rss / 1024:.1f} MB, "
              f"{per_client_kb * 1024:.0f} bytes per idle client (connected in {connect_s:.1f}s)")

        # Others are served, with bounded latency.
        latencies = []
        for i in range(200):
            key = f"busy:{uuid.uuid4().hex}"
            t = time.monotonic()
            assert worker.set(key, i) is True
            assert worker.get(key) == str(i).encode()
            latencies.append(time.monotonic() - t)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"SET+GET with {IDLE_CLIENTS} idle clients: p50 {latencies[100] * 1000:.2f} ms, "
              f"p99 {p99 * 1000:.2f} ms (p50 without them: {base_p50 * 1000:.2f} ms)")
        assert p99 < 0.5, f"p99 SET+GET latency {p99 * 1000:.0f} ms with idle clients connected"

        # A new client is served too, and idle ones work when they wake up.
        with RawClient(proxy.port) as fresh:
            assert fresh.command("SET", "fresh", "1") == b"OK"
        for s in (idle[0], idle[len(idle) // 2], idle[-1]):
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert s.recv(64) == b"+PONG\r\n"

        assert per_client_kb < 50, f"{per_client_kb:.1f} KB of proxy RSS per idle client"
    finally:
        for s in idle:
            s.close()
        worker.close()
    wait_until(lambda: _connected(proxy) == 0, 30, interval=0.1, message="idle clients to be released")
