"""The leader's own kill before it fails a busy master over, against a real redis-server.

Every proxy that finds the master down and answering -BUSY sends SCRIPT KILL. A client
that runs its runaway script again as soon as it is killed keeps the master busy; the
leader leaves such a master alone for a grace after each kill that ended a script. But
the kills that ended them may all be the other proxies': a leader whose own probe caught
a valid reply between two runs sent none, and by its own record alone it would fail over a
master whose every script is killed. So before failing a busy master over, the leader
kills too (`Prober.kill_busy_script`): this checks what that kill says for each thing
the master may be doing then.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from health.probes.probe import Health, Prober

from .harness import RedisServer
from .test_failover import BUSY_AFTER_WRITE, BUSY_LOOP, ScriptRunner

BOUND_S = 10.0


async def _poll(predicate, what: str) -> None:
    try:
        async with asyncio.timeout(BOUND_S):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"no {what} within {BOUND_S} s") from None


async def _join(runner: threading.Thread) -> None:
    await asyncio.to_thread(runner.join, BOUND_S)
    assert not runner.is_alive(), "the script is still running"


def test_the_leaders_kill_before_failing_a_busy_master_over(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    outcomes: dict[str, object] = {}

    async def scenario() -> None:
        health = Health([server.addr], down_after_ms=5000)      # its own kills come later than these
        prober = Prober(health, server.addr, interval_ms=20, timeout_ms=2000)
        st = health.nodes[server.addr]
        sent: list[tuple] = []
        execute = prober._client.execute_command

        async def counted(*args, **kw):
            sent.append(args)
            return await execute(*args, **kw)

        prober._client.execute_command = counted
        outcomes["never busy"] = await prober.kill_busy_script()
        task = asyncio.get_running_loop().create_task(prober.run())
        try:
            await _poll(lambda: st.ever_ok, "a first probe")
            runner = ScriptRunner(server.port, BUSY_LOOP)
            runner.start()
            await _poll(lambda: st.busy_at is not None, "a -BUSY reply")
            outcomes["running"] = await prober.kill_busy_script()
            outcomes["killed_at set"] = st.killed_at is not None
            await _join(runner)
            outcomes["runner"] = runner.outcome
            outcomes["none running"] = await prober.kill_busy_script()     # NOTBUSY

            busy_before = st.busy_at
            writer = ScriptRunner(server.port, BUSY_AFTER_WRITE, "busy:wrote")
            writer.start()
            await _poll(lambda: st.busy_at != busy_before, "a -BUSY reply to the script that wrote")
            outcomes["wrote"] = await prober.kill_busy_script()            # UNKILLABLE
            kills = len(sent)
            outcomes["again"] = await prober.kill_busy_script()
            outcomes["sent again"] = len(sent) - kills
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        with server.client(timeout=5) as cl:
            cl.config_set("busy-reply-threshold", 100)
        asyncio.run(scenario())
    finally:
        server.kill()           # the script that wrote cannot be ended any other way
    assert outcomes["never busy"] is False, "a kill for a node never seen busy"
    assert outcomes["running"] is True and outcomes["killed_at set"], outcomes
    assert "Script killed" in str(outcomes["runner"]), outcomes["runner"]
    assert outcomes["none running"] is True, "NOTBUSY: the master answers and runs no script"
    assert outcomes["wrote"] is False, "a script that wrote cannot be killed: the failover goes ahead"
    assert outcomes["again"] is False and outcomes["sent again"] == 0, outcomes
