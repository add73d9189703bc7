"""`health.probes.probe.Wake`: what the probes, the controller and the Sentinel watch wait on
between rounds (issue 16: one future and one timer handle instead of `asyncio.timeout`
around an `Event`). It must end at the delay, end early when set, end at once when set
before, and leave no timer behind when cancelled."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from health.probes.probe import Wake


def _run(coro):
    return uvloop.run(coro)


def test_a_wait_ends_at_its_delay() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await Wake().wait(0.05)
        return loop.time() - started

    assert 0.045 <= _run(scenario()) < 1.0


def test_set_ends_a_wait_early_and_stays_set_until_cleared() -> None:
    async def scenario() -> tuple[float, bool, float]:
        loop = asyncio.get_running_loop()
        wake = Wake()
        loop.call_later(0.01, wake.set)
        started = loop.time()
        await wake.wait(5.0)
        early = loop.time() - started
        stays = wake.is_set()
        started = loop.time()
        await wake.wait(5.0)                    # still set: at once
        again = loop.time() - started
        return early, stays, again

    early, stays, again = _run(scenario())
    assert early < 1.0 and stays and again < 0.5


def test_cleared_it_waits_again() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        wake = Wake()
        wake.set()
        wake.clear()
        started = loop.time()
        await wake.wait(0.05)
        return loop.time() - started

    assert _run(scenario()) >= 0.045


def test_a_cancelled_wait_leaves_no_timer_and_raises() -> None:
    async def scenario() -> tuple[bool, int]:
        loop = asyncio.get_running_loop()
        wake = Wake()
        task = loop.create_task(wake.wait(60.0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        wake.set()                              # nothing waits: no error, just set
        return wake.is_set(), len([h for h in getattr(loop, "_scheduled", []) if not h.cancelled()])

    is_set, timers = asyncio.run(scenario())    # the default loop: its timers can be counted
    assert is_set and timers == 0
