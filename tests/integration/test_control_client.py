"""The proxy's control connections give up on a frozen node within their timeout.

redis-py's default retry (10 times, with backoff) held one REPLICAOF on a
SIGSTOPped node for 8 s at a 0.5 s timeout: a control loop awaiting it stalls.
"""

from __future__ import annotations

import asyncio
import time

from health.redis_control import control_client

from .harness import RedisServer


def test_a_command_to_a_frozen_node_fails_within_its_timeout(tmp_path):
    server = RedisServer(tmp_path).start()
    try:
        async def scenario() -> tuple[float, str]:
            c = control_client(server.addr, username="", password="", timeout=0.5)
            try:
                assert await c.ping()
                server.stop()
                t0 = time.monotonic()
                try:
                    await c.execute_command("REPLICAOF", "NO", "ONE")
                    outcome = "answered"
                except Exception as exc:  # noqa: BLE001 -- any error will do; the time is the point
                    outcome = type(exc).__name__
                return time.monotonic() - t0, outcome
            finally:
                server.cont()
                await c.aclose()

        took, outcome = asyncio.run(scenario())
        assert outcome != "answered"
        assert took < 1.5, f"{outcome} after {took:.1f}s: retried inside redis-py"
    finally:
        server.cleanup()


def test_a_connection_closed_by_a_restarted_node_is_reopened_at_once(tmp_path):
    """A node restarted since the last command closed the pooled connection: the next
    command reconnects instead of failing (a switchover failed on it)."""
    server = RedisServer(tmp_path).start()
    try:
        async def scenario() -> object:
            c = control_client(server.addr, username="", password="", timeout=2.0)
            try:
                assert await c.ping()
                server.restart()
                return await c.execute_command("PING")
            finally:
                await c.aclose()

        assert asyncio.run(scenario()) is True
    finally:
        server.cleanup()
