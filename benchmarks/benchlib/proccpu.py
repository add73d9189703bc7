"""A process's own CPU and memory accounting, read from /proc (Linux).

`cpu_seconds(pid)` is utime + stime of /proc/PID/stat (the kernel's count of
the time the process ran, in user and system mode, all threads;
`cpu_and_sys_seconds` gives the system part too), so a
benchmark measures what a server spent without trusting the server to say
so; `rss_bytes(pid)` is VmRSS of /proc/PID/status; `wakeups(pid)` counts the
times its threads went to sleep and were woken (voluntary context switches: an
idle server's CPU is mostly what each wake-up costs, issue 16). Threads are
included, children are not (every server measured here is one process).

`machine_ticks()` reads the whole machine's steal time from /proc/stat: the time
the hypervisor ran something else while this VM had work for its CPUs. On the
VMs here it went from near 0 to 9 % of all CPU time within an hour, and
redis-benchmark's direct rate with it from about 85,000 to 33,000 SET/s, so a
run taken with steal is no measurement of the code: benchmarks report it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat_cpu_ticks(stat_line: str) -> int:
    """utime + stime (fields 14 and 15) of a /proc/PID/stat line, in clock ticks.

    The command name (field 2) is in parentheses and may hold spaces or
    parentheses itself, so fields are counted from the last ')'.
    """
    rest = stat_line[stat_line.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): utime is field 14, stime field 15
    return int(rest[11]) + int(rest[12])


def parse_stat_sys_ticks(stat_line: str) -> int:
    """stime (field 15) of a /proc/PID/stat line, in clock ticks: the time spent in the
    kernel on the process's behalf (its system calls: the socket reads and writes a
    forwarded command costs whatever language the process is written in)."""
    return int(stat_line[stat_line.rindex(")") + 2:].split()[12])


def parse_status_rss_bytes(status_text: str) -> int:
    """VmRSS of a /proc/PID/status text, in bytes (0 for a zombie, which has none)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time process `pid` has used so far (user + system), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        return parse_stat_cpu_ticks(f.read()) / CLOCK_TICKS


def cpu_and_sys_seconds(pid: int) -> tuple[float, float]:
    """CPU time process `pid` has used so far, (user + system, system), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        line = f.read()
    return parse_stat_cpu_ticks(line) / CLOCK_TICKS, parse_stat_sys_ticks(line) / CLOCK_TICKS


def parse_status_voluntary_switches(status_text: str) -> int:
    """voluntary_ctxt_switches of a /proc/PID/status (or task/TID/status) text."""
    for line in status_text.splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise ValueError("no voluntary_ctxt_switches line")


def wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of process `pid` so far: the times it
    slept (waiting for a timer, a socket, a lock) and was woken."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                total += parse_status_voluntary_switches(f.read())
        except FileNotFoundError:       # a thread that ended meanwhile
            pass
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid`, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        return parse_status_rss_bytes(f.read())


def parse_proc_stat_steal(stat_text: str) -> tuple[int, int]:
    """(steal, total) clock ticks of all CPUs from a /proc/stat text (its "cpu " line:
    user nice system idle iowait irq softirq steal ...; guest time is inside user)."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            ticks = [int(x) for x in line.split()[1:9]]
            return ticks[7], sum(ticks)
    raise ValueError("no cpu line in /proc/stat")


def machine_ticks() -> tuple[int, int]:
    """(steal, total) clock ticks of the machine so far (see parse_proc_stat_steal)."""
    with open("/proc/stat") as f:
        return parse_proc_stat_steal(f.read())


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Steal between two `machine_ticks()` readings, as a percentage of all CPU time."""
    total = after[1] - before[1]
    return round(100.0 * (after[0] - before[0]) / total, 1) if total > 0 else 0.0


@dataclass
class CpuWindow:
    """CPU used by a set of processes between `start()` and `stop()`, by the wall clock."""

    pids: dict[str, int]
    started_at: float = 0.0
    wall_s: float = 0.0
    cpu_start: dict[str, float] | None = None
    cpu_s: dict[str, float] | None = None
    sys_start: dict[str, float] | None = None
    sys_s: dict[str, float] | None = None      # of cpu_s, the kernel's (system time)
    wakeups_start: dict[str, int] | None = None
    wakeups: dict[str, int] | None = None
    machine_start: tuple[int, int] | None = None
    steal_pct: float | None = None     # the machine's steal time over the window (% of all CPU time)

    def start(self) -> CpuWindow:
        both = {name: cpu_and_sys_seconds(pid) for name, pid in self.pids.items()}
        self.cpu_start = {name: cpu for name, (cpu, _) in both.items()}
        self.sys_start = {name: sys_ for name, (_, sys_) in both.items()}
        self.wakeups_start = {name: wakeups(pid) for name, pid in self.pids.items()}
        self.machine_start = machine_ticks()
        self.started_at = time.monotonic()
        return self

    def stop(self) -> CpuWindow:
        if self.cpu_start is None:
            raise RuntimeError("CpuWindow.stop() before start()")
        self.wall_s = time.monotonic() - self.started_at
        both = {name: cpu_and_sys_seconds(pid) for name, pid in self.pids.items()}
        assert self.sys_start is not None
        self.cpu_s = {name: cpu - self.cpu_start[name] for name, (cpu, _) in both.items()}
        # (differences of tick counts over CLOCK_TICKS: in floats, all-kernel could read a hair more than all)
        self.sys_s = {name: min(sys_ - self.sys_start[name], self.cpu_s[name]) for name, (_, sys_) in both.items()}
        assert self.wakeups_start is not None
        self.wakeups = {name: wakeups(pid) - self.wakeups_start[name] for name, pid in self.pids.items()}
        if self.machine_start is not None:
            self.steal_pct = steal_percent(self.machine_start, machine_ticks())
        return self

    def percent_of_core(self, name: str, kernel: bool = False) -> float:
        """CPU used by `name` (`kernel`: its system time only) as a percentage of one core
        over the window."""
        used = self.sys_s if kernel else self.cpu_s
        if used is None or self.wall_s <= 0:
            raise RuntimeError("CpuWindow not stopped")
        return 100.0 * used[name] / self.wall_s

    def wakeups_per_s(self, name: str) -> float:
        """How often `name`'s threads were woken over the window, per second."""
        if self.wakeups is None or self.wall_s <= 0:
            raise RuntimeError("CpuWindow not stopped")
        return self.wakeups[name] / self.wall_s
