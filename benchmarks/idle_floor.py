"""The floor under the idle target: a bare Python prober, for `benchmarks.idle --floor`.

An asyncio (uvloop) process that does nothing but what every proxy must do at the
least, the way a proxy does it: every 100 ms, on the same grid of the monotonic
clock, it sends `INFO replication` to each node given on the command line on a
bare RESP connection, reads the replies with hiredis and parses them into a dict
(`health.probes.connection.parse_info_text`). No Raft, no controller, no client port.
Sampled in the same window as the proxies and the Sentinels, it shows how much of
a proxy's idle CPU a Python process spends before doing anything else (issue 16).

    python -m benchmarks.idle_floor 127.0.0.1:6379 127.0.0.1:6380 ...
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import hiredis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from health.probes.connection import INFO_REPLICATION, parse_info_text  # noqa: E402

INTERVAL_S = 0.1


class _Reply(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        reply = self.reader.gets()
        if reply is not False and self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(reply)


async def probe_forever(addrs: list[str]) -> None:
    loop = asyncio.get_running_loop()
    conns = []
    for addr in addrs:
        host, _, port = addr.rpartition(":")
        conns.append((await loop.create_connection(_Reply, host, int(port)))[1])
    while True:
        for c in conns:
            c.waiting = loop.create_future()
            c.transport.write(INFO_REPLICATION)
        for c in conns:
            parse_info_text((await c.waiting).decode())
        await asyncio.sleep(INTERVAL_S - loop.time() % INTERVAL_S)


if __name__ == "__main__":
    uvloop.run(probe_forever(sys.argv[1:]))
