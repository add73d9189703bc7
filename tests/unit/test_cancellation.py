"""Long-running tasks stop when cancelled, even when the cancel meets a reply.

A proxy refused by its Raft cluster hung in shutdown, its probes still looping
(CI run): redis-py 8.1's asyncio client returned a reply to a probe cancelled
while it connected.  Python 3.11's ``asyncio.wait_for`` drops a cancellation the
same way when the cancel and the reply land in one loop iteration.
"""

from __future__ import annotations

import asyncio
import pathlib

from health.probes.probe import Health, Prober

ROOT = pathlib.Path(__file__).resolve().parents[2]


class _CancelOnReply:
    """A Redis client whose INFO reply arrives in the same loop iteration as a cancel of the prober."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.calls = 0
        self.run_id = ""        # (ProbeClient's: the process behind the connection)

    async def info_replication(self, timeout: float | None = None) -> dict:
        self.calls += 1
        if self.calls == 1 and self.task is not None:
            asyncio.get_running_loop().call_soon(self.task.cancel)
        return {"role": "master", "connected_slaves": 0, "master_repl_offset": 0}

    async def aclose(self) -> None:
        pass


def test_a_prober_cancelled_as_its_probe_returns_stops():
    stopped, calls = _prober_stops(_CancelOnReply())
    assert stopped, f"the prober kept probing after its cancel ({calls} probes)"


class _SwallowsCancel(_CancelOnReply):
    """A client that, like redis-py 8.1 while it connects, eats the cancel and answers anyway."""

    async def info_replication(self, timeout: float | None = None) -> dict:
        self.calls += 1
        if self.calls == 1 and self.task is not None:
            self.task.cancel()
            try:
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                pass
        return {"role": "master", "connected_slaves": 0, "master_repl_offset": 0}


def _prober_stops(client: _CancelOnReply) -> tuple[bool, int]:
    async def scenario() -> tuple[bool, int]:
        health = Health(["127.0.0.1:1"], down_after_ms=1000)
        prober = Prober(health, "127.0.0.1:1", interval_ms=10, timeout_ms=1000)
        prober._client = client
        task = asyncio.get_running_loop().create_task(prober.run())
        client.task = task
        done, _ = await asyncio.wait([task], timeout=2.0)
        if not done:
            task.cancel()
        return task in done and task.cancelled(), client.calls

    return asyncio.run(scenario())


def test_a_prober_whose_client_swallowed_the_cancel_stops():
    stopped, calls = _prober_stops(_SwallowsCancel())
    assert stopped, f"the prober kept probing after its cancel ({calls} probes)"


def test_no_asyncio_wait_for_in_long_running_code():
    """asyncio.timeout() keeps the cancellation; wait_for (3.11) may swallow it."""
    offenders = [f"{p.relative_to(ROOT)}:{n}" for d in ("proxy", "health", "raft")
                 for p in sorted((ROOT / d).rglob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1) if "asyncio.wait_for(" in line]
    assert not offenders, "use `async with asyncio.timeout(...)`: " + ", ".join(offenders)
