"""The operator of a long chaos run (benchmarks/chaos).

A long random schedule can destroy every copy of the last writes (a master and then
the replica promoted in its place killed before the third node had them). The proxies
then hold writes (`no_safe_master`) until an operator accepts the loss with
`failover --to`. Without an operator the run would report every write as lost, and
the faults that follow would empty the nodes that still hold the rest. `OperatorWatch`
acts as a paged operator would, `delay_s` after the proxies asked, and keeps watching;
what it did goes into the run's fault log and result.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from .cluster import ChaosCluster

OPERATOR_DELAY_S = 15.0     # how long the proxies wait for the operator, as an alert's reaction time
POLL_S = 0.5


class OperatorWatch(threading.Thread):
    """Does `ChaosCluster.operator_step` once a controller has asked for `delay_s`."""

    def __init__(self, cluster: ChaosCluster, note: Callable[[str], None],
                 delay_s: float = OPERATOR_DELAY_S) -> None:
        super().__init__(name="chaos-operator", daemon=True)
        self.cluster = cluster
        self.note = note
        self.delay_s = delay_s
        self.steps: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        asked_since: float | None = None
        while not self._halt.wait(POLL_S):
            try:
                asking = self.cluster.operator_asked()
                if asking is None:
                    asked_since = None
                    continue
                now = time.monotonic()
                if asked_since is None:
                    asked_since = now
                    self.note(f"{asking} holds writes for the operator; acting in {self.delay_s:g} s if still asked")
                elif now - asked_since >= self.delay_s:
                    self._act(asking)
                    asked_since = None
            except Exception as exc:  # noqa: BLE001 - said, then asked again at the next poll
                self.note(f"operator step failed: {exc!r}")

    def act_if_asked(self) -> None:
        """After healing: a controller still asking gets its answer now, not `delay_s` later."""
        asking = self.cluster.operator_asked()
        if asking is not None:
            self._act(asking)

    def _act(self, asking: str) -> None:
        step = self.cluster.operator_step(asking)
        self.steps.append(step)
        self.note(step)

    def stop(self) -> None:
        self._halt.set()
        self.join(60)
