"""A Raft stream to a peer that went silent is closed without WebSocket pings (issue 16).

Our own streams send no pings (each cost both ends two wake-ups a second, idle); what
we write on one must be acknowledged by the peer's host within STREAM_UNACKED_S
(TCP_USER_TIMEOUT), or the kernel ends the connection and the next message opens
another. Here the peer goes silent for real: nftables drops every packet of the
stream's port both ways (no RST, as in a partition), while messages keep being sent
as a leader's heartbeats are.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from raft.messages import TimeoutNow
from raft.transport import STREAM_UNACKED_S
from tests.chaos.netfaults import PREFIX, nft
from tests.unit.test_raft_transport import Sink, counting_server, transport_to

pytestmark = pytest.mark.timeout(60)

TABLE = f"ip {PREFIX}{os.getpid()}"     # `ip`: apart from a chaos run's `inet` table of this pid


async def test_a_stream_whose_writes_go_unacknowledged_is_closed_then_reopened_by_the_next_message() -> None:
    sink = Sink()
    server, requests = await counting_server(sink)
    port = server.port
    t = transport_to(server)
    await t.start()
    sent = 0

    def send() -> None:
        nonlocal sent
        sent += 1
        t.send("b", TimeoutNow(sent, "a", "b"))

    async def sending_until(pred, timeout: float) -> float:
        """Send a message every 100 ms until `pred()`; the seconds that took."""
        start = time.monotonic()
        while not pred():
            assert time.monotonic() - start < timeout, f"not reached in {timeout} s"
            send()
            await asyncio.sleep(0.1)
        return time.monotonic() - start

    try:
        await sending_until(lambda: len(sink.got) >= 3, 5)
        ws = t._links["b"].ws
        assert ws is not None and requests == ["GET /raft/stream"]
        nft(f"add table {TABLE}\n"
            f"add chain {TABLE} out {{ type filter hook output priority 0 ; }}\n"
            f"add rule {TABLE} out tcp dport {port} drop\n"
            f"add rule {TABLE} out tcp sport {port} drop\n")
        try:
            got_before = len(sink.got)
            took = await sending_until(lambda: ws.closed, STREAM_UNACKED_S + 5)
            assert len(sink.got) == got_before, "a message got through the dropped link"
        finally:
            nft(f"delete table {TABLE}\n")
        # the kernel, not a pong timeout (there is none) and not the peer (it heard nothing)
        assert STREAM_UNACKED_S - 0.2 <= took <= STREAM_UNACKED_S + 3, took
        await sending_until(lambda: len(sink.got) > got_before, 10)
        assert requests == ["GET /raft/stream", "GET /raft/stream"]
    finally:
        await t.close()
        await server.close()
