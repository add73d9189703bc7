"""Cancellation that a library swallowed is still a cancellation.

redis-py's asyncio client (8.1 here) can return a reply to a task that was
cancelled while it was connecting: the ``CancelledError`` never reaches the
caller.  A loop that awaits it then runs on forever and the proxy's shutdown
waits for it (seen: a proxy refused by its Raft cluster never exited).  Loops
call :func:`raise_if_cancelled` once per round.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if someone asked the current task to stop.

    ``asyncio.timeout()`` withdraws its own requests when its block ends, so a
    request still counted here came from elsewhere and was lost on the way.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
