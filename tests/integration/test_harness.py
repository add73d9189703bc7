"""The harness itself: ports, wait_until, process control, and the fault relay.

These run against a bare redis-server (no proxy), so a failure here is a
harness problem, not a proxy bug.
"""

from __future__ import annotations

import socket
import time

import pytest
import redis

from .harness import (FaultRelay, HarnessError, RedisServer, free_ports, ping_port, port_is_listening,
                      redis_client, wait_until)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def lone_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("lone")).start()
    yield server
    server.cleanup()


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert not set(ports) & set(free_ports(20)), "ports handed out twice in one process"
    for p in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_wait_until_returns_value_and_raises_with_message():
    calls = []
    assert wait_until(lambda: calls.append(1) or len(calls) >= 3, timeout=2, interval=0.001) is True
    t0 = time.monotonic()
    with pytest.raises(HarnessError, match="the moon to turn blue"):
        wait_until(lambda: False, timeout=0.2, message="the moon to turn blue")
    assert time.monotonic() - t0 < 2

    def boom():
        raise ValueError("still starting")
    with pytest.raises(HarnessError, match="still starting"):
        wait_until(boom, timeout=0.1)


def test_redis_server_stop_cont_kill_restart(tmp_path):
    server = RedisServer(tmp_path).start()
    try:
        assert ping_port(server.port)
        server.stop()
        assert not ping_port(server.port, timeout=0.3), "a SIGSTOPped redis-server answered"
        server.cont()
        wait_until(lambda: ping_port(server.port), 5, message="redis to answer after SIGCONT")
        server.kill()
        assert not server.alive()
        assert not port_is_listening(server.port)
        server.restart()
        assert server.alive() and ping_port(server.port)
    finally:
        server.cleanup()
    assert not server.alive()


def test_relay_pass_delay_blackhole_cut_heal(lone_redis):
    with FaultRelay(lone_redis.port) as relay:
        c = redis_client(relay.port, timeout=2)
        assert c.ping() is True
        assert c.set("relay:k", "v") and c.get("relay:k") == b"v"

        relay.set_delay(0.25)
        t0 = time.monotonic()
        assert c.ping() is True
        assert time.monotonic() - t0 >= 0.45, "the delay was not applied in both directions"

        relay.heal()
        t0 = time.monotonic()
        assert c.ping() is True
        assert time.monotonic() - t0 < 0.25

        c.close()
        c = redis_client(relay.port, timeout=0.3)
        assert c.ping() is True
        relay.blackhole()
        with pytest.raises(redis.TimeoutError):
            c.ping()
        c.close()
        fresh = redis_client(relay.port, timeout=0.3)
        with pytest.raises(redis.TimeoutError):     # accepted, then silence
            fresh.ping()
        fresh.close()
        assert relay.dropped_bytes > 0

        relay.heal()
        c = redis_client(relay.port, timeout=2)
        assert c.ping() is True

        relay.cut()
        with pytest.raises(redis.ConnectionError):
            c.ping()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", relay.port), timeout=1).close()

        relay.heal()
        c = redis_client(relay.port, timeout=2)
        assert c.get("relay:k") == b"v"
        c.close()
