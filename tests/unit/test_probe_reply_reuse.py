"""A probe whose INFO reply is the same as the last one is not parsed again
(health.probes.connection.ProbeClient.info_replication, health.probes.probe.Prober),
and one that differs is: against a small RESP server on a real socket that answers
each request with the next reply of a script (the first, on connecting, is `INFO
server`: the node's run_id)."""

from __future__ import annotations

import asyncio

import uvloop

import health.probes.probe as probe_mod
from health.probes.connection import ProbeClient
from health.probes.probe import Health, Prober

MASTER = b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:100\r\n"
MASTER_MOVED_ON = b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:250\r\n"
SERVER = b"# Server\r\nredis_version:7.0.15\r\nrun_id:0123abcd\r\n"    # read once per connection
REPLICA = (b"# Replication\r\nrole:slave\r\nmaster_host:10.0.0.9\r\nmaster_port:6379\r\n"
           b"master_link_status:up\r\nslave_repl_offset:250\r\nslave_priority:100\r\n")


def _bulk(body: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(body), body)


async def _scripted_server(replies: list[bytes]) -> tuple[asyncio.AbstractServer, list[int]]:
    """Answers each request (one per read: the probe sends one at a time) with the next
    reply, the last one again once the script is used up. Returns the server and a
    one-item list counting the requests."""
    served = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            writer.write(_bulk(replies[min(served[0], len(replies) - 1)]))
            served[0] += 1
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, served


def test_the_same_reply_is_the_same_dict_and_a_new_one_is_parsed() -> None:
    async def scenario() -> list[dict]:
        server, _ = await _scripted_server([SERVER, MASTER, MASTER, MASTER_MOVED_ON])
        port = server.sockets[0].getsockname()[1]
        client = ProbeClient(f"127.0.0.1:{port}")
        try:
            replies = [await client.info_replication(timeout=2.0) for _ in range(3)]
            assert client.run_id == "0123abcd"
            return replies
        finally:
            await client.aclose()
            server.close()

    first, second, third = uvloop.run(scenario())
    assert second is first
    assert third is not first
    assert first["master_repl_offset"] == "100"
    assert third["master_repl_offset"] == "250"


def test_a_prober_parses_only_replies_that_changed(monkeypatch) -> None:
    parsed: list[str] = []
    real = probe_mod.parse_replication_info

    def counting(info: dict, status) -> None:
        parsed.append(str(info.get("role")))
        real(info, status)

    monkeypatch.setattr(probe_mod, "parse_replication_info", counting)

    async def scenario() -> tuple[int, object]:
        server, served = await _scripted_server([SERVER, MASTER, MASTER, MASTER, REPLICA])
        addr = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        health = Health([addr], down_after_ms=1000)
        prober = Prober(health, addr, interval_ms=5, timeout_ms=1000)
        task = asyncio.get_running_loop().create_task(prober.run())
        try:
            async with asyncio.timeout(10):
                while served[0] < 7:        # INFO server, three replies alike, then three of the replica
                    await asyncio.sleep(0.005)
                while health.nodes[addr].role != "slave":
                    await asyncio.sleep(0.005)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            server.close()
        return served[0], health.nodes[addr]

    served, status = uvloop.run(scenario())
    assert parsed[:2] == ["master", "slave"], parsed
    assert len(parsed) == 2, f"{len(parsed)} parses for {served} replies of two kinds"
    assert status.role == "slave"
    assert status.master_addr == "10.0.0.9:6379"
    assert status.link_up is True
    assert status.offset == 250
    assert status.run_id == "0123abcd"
