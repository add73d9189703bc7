"""Where the benchmark's processes run (--pin): the client on one CPU, the servers on the rest.

On a small machine the client, the hop and the redis-server behind it share the cores, and
the kernel's scheduler decides who shares with whom. Its wake-up placement puts a thread
beside the one that woke it most, and a hop exchanges many more wake-ups with the client's
50 connections than with its one or two to Redis: left alone, the hop often ends up on the
client's core, which then carries both while the other core idles between Redis's turns
(docs/performance.md, 2026-12-04, session 41). Pinning every target and redis-server to the
same CPUs, and the client to its own, measures every target in the same placement: the one
a deployment has, where clients run on other machines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """The CPUs the client (redis-benchmark) and the servers (every target) run on."""

    client: frozenset[int]
    servers: frozenset[int]

    def to_dict(self) -> dict[str, list[int]]:
        return {"client": sorted(self.client), "servers": sorted(self.servers)}


def split_cpus(cpus: set[int] | None = None) -> Placement:
    """The last of the CPUs this process may use for the client, the others for the servers.

    Raises ValueError on a machine with a single CPU, where there is nothing to place."""
    usable = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if len(usable) < 2:
        raise ValueError(f"--pin needs at least 2 CPUs, this process may use {usable}")
    return Placement(client=frozenset(usable[-1:]), servers=frozenset(usable[:-1]))


def pin_process(pid: int, cpus: frozenset[int]) -> None:
    """Pin every thread a running process has now (threads it starts later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass    # a thread that ended meanwhile


def pin_client(placement: Placement) -> None:
    """Pin this process, and with it every redis-benchmark it starts from now on."""
    os.sched_setaffinity(0, placement.client)
