"""A budget of log lines for what any client can cause as often as it likes."""

from __future__ import annotations

import time


class LogBudget:
    """At most `lines` log lines per key in each `window_s`; the first line allowed after
    some were left out says how many (`take` returns that count, None: do not log). A
    flood of bad clients (failed TLS handshakes, protocol errors) must not fill the disk
    with one line each; the metrics count them all."""

    def __init__(self, lines: int, window_s: float) -> None:
        self.lines, self.window_s = lines, window_s
        self._state: dict[str, tuple[float, int, int]] = {}     # key -> (window start, logged, left out)

    def take(self, key: str, now: float | None = None) -> int | None:
        now = time.monotonic() if now is None else now
        start, logged, left_out = self._state.get(key, (now, 0, 0))
        if now - start >= self.window_s:
            start, logged = now, 0
        if logged >= self.lines:
            self._state[key] = (start, logged, left_out + 1)
            return None
        self._state[key] = (start, logged + 1, 0)
        return left_out
