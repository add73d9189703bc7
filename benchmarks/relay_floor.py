"""The floor under the throughput targets: a bare Python relay, for `benchmarks/throughput`.

An asyncio (uvloop) process that forwards Redis commands the way the proxy does at the
least, and nothing else: every client's complete commands (found by the proxy's C
splitter, `proxy.protocol.resp.split_commands`) are queued on one connection to Redis,
everything queued in one loop iteration goes out in one write, the replies are counted
off with the proxy's C scanner (`scan_replies`) and each client's go back in one write.
No routing, no lease or write gate, no metrics, no limits, no error handling beyond
closing: not something to run in front of anything. Measured beside the proxy in the
same rounds, it shows what a forwarding path in Python and uvloop costs per command
before any of the proxy's own work (issue 16).

    python benchmarks/relay_floor.py LISTEN_PORT REDIS_PORT
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.process.config import Config  # noqa: E402
from proxy.protocol.resp import scan_replies, split_commands  # noqa: E402

HOST = "127.0.0.1"
_DEFAULTS = Config()        # the proxy's default limits on a client's commands
MAX_BULK = _DEFAULTS.proto_max_bulk_len
MAX_ARGS = _DEFAULTS.max_args


class _Upstream(asyncio.Protocol):
    """The one connection to Redis: commands out in order, replies back to their clients."""

    def __init__(self) -> None:
        self.waiting: deque[list] = deque()       # [client, replies still owed to it]
        self.out: list[bytes] = []
        self.buf = b""
        self.touched: set[_Client] = set()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        asyncio.get_running_loop().stop()       # nothing to relay to any more

    def send(self, data: bytes, client: _Client, count: int) -> None:
        self.waiting.append([client, count])
        self.out.append(data)
        if len(self.out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        out, self.out = self.out, []
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        waiting, touched = self.waiting, self.touched
        while pos < n and waiting:
            head = waiting[0]
            end, rem = scan_replies(buf, pos, head[1])
            if end > pos:
                head[0].parts.append(buf[pos:end])
                pos = end
            head[1] = rem
            if rem:
                break
            waiting.popleft()
            touched.add(head[0])
        self.buf = buf[pos:]
        for client in touched:
            client.reply()
        touched.clear()


class _Client(asyncio.Protocol):
    def __init__(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        self.parts: list[bytes] = []
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        groups, pos, _need, err = split_commands(buf, 0, MAX_BULK, MAX_ARGS, {}, 0)
        if err is not None:
            self.transport.close()
            return
        count = sum(group[1] for group in groups)
        if count:
            self.upstream.send(buf if pos == len(buf) else buf[:pos], self, count)
        self.buf = buf[pos:]

    def reply(self) -> None:
        parts, self.parts = self.parts, []
        if not self.transport.is_closing():
            self.transport.write(parts[0] if len(parts) == 1 else b"".join(parts))


async def relay(port: int, redis_port: int) -> None:
    loop = asyncio.get_running_loop()
    _, upstream = await loop.create_connection(_Upstream, HOST, redis_port)
    server = await loop.create_server(lambda: _Client(upstream), HOST, port)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        uvloop.run(relay(int(sys.argv[1]), int(sys.argv[2])))
    except RuntimeError:        # the loop stopped: Redis went away
        sys.exit(1)
