"""benchmarks/benchlib/proccpu.py: a process's own CPU and RSS accounting from /proc."""

from __future__ import annotations

import os
import threading
import time

from benchmarks.benchlib.proccpu import (
    CLOCK_TICKS,
    CpuWindow,
    cpu_and_sys_seconds,
    cpu_seconds,
    machine_ticks,
    parse_proc_stat_steal,
    parse_stat_cpu_ticks,
    parse_stat_sys_ticks,
    parse_status_rss_bytes,
    parse_status_voluntary_switches,
    rss_bytes,
    steal_percent,
    wakeups,
)


def test_stat_fields_are_counted_after_a_command_name_with_spaces_and_parentheses():
    line = "4242 (redis (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 123 45 0 0 20 0 4 0 100 1 2 3"
    assert parse_stat_cpu_ticks(line) == 123 + 45
    assert parse_stat_sys_ticks(line) == 45


def test_system_time_grows_with_system_calls_and_is_part_of_the_total():
    me = os.getpid()
    total0, sys0 = cpu_and_sys_seconds(me)
    deadline = time.monotonic() + 30
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        while cpu_and_sys_seconds(me)[1] - sys0 < 3 / CLOCK_TICKS and time.monotonic() < deadline:
            for _ in range(1000):
                os.read(fd, 65536)      # the kernel's work: copying pages of zeroes
    finally:
        os.close(fd)
    total1, sys1 = cpu_and_sys_seconds(me)
    assert sys1 - sys0 >= 3 / CLOCK_TICKS
    # in clock ticks: the seconds are tick counts / CLOCK_TICKS, whose float differences can
    # differ in the last bit (0.58 - 0.55 < 0.08 - 0.05), which failed this 2 runs in 15
    def ticks(seconds: float) -> int:
        return round(seconds * CLOCK_TICKS)

    assert ticks(total1) - ticks(total0) >= ticks(sys1) - ticks(sys0) and ticks(sys1) <= ticks(total1)


def test_rss_is_read_in_bytes():
    assert parse_status_rss_bytes("Name:\tx\nVmRSS:\t  53720 kB\nThreads:\t4\n") == 53720 * 1024
    assert parse_status_rss_bytes("Name:\tzombie\nState:\tZ\n") == 0


def test_this_process_cpu_grows_with_work_and_a_window_reports_percent_of_a_core():
    me = os.getpid()
    window = CpuWindow({"me": me}).start()
    before = cpu_seconds(me)
    deadline = time.process_time() + 3 / CLOCK_TICKS       # a few clock ticks of CPU
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(me) > before
    window.stop()
    assert 0 < window.percent_of_core("me") <= 100 * (os.cpu_count() or 1)
    # the kernel's part is some of it at most (all of it can happen: the kernel samples by
    # clock tick, and time.process_time() is itself a system call)
    assert 0 <= window.sys_s["me"] <= window.cpu_s["me"]
    assert window.percent_of_core("me", kernel=True) == 100.0 * window.sys_s["me"] / window.wall_s
    assert rss_bytes(me) > 1024 * 1024


def test_voluntary_switches_are_read_from_a_status_text():
    text = "Name:\tx\nvoluntary_ctxt_switches:\t2833\nnonvoluntary_ctxt_switches:\t999\n"
    assert parse_status_voluntary_switches(text) == 2833


def test_a_window_counts_the_wakeups_of_every_thread():
    me = os.getpid()
    go, slept, release = threading.Event(), threading.Event(), threading.Event()

    def sleeper() -> None:          # 40 short sleeps in the window, then alive until it closed
        go.wait(10)
        for _ in range(40):
            time.sleep(0.002)
        slept.set()
        release.wait(10)

    thread = threading.Thread(target=sleeper, daemon=True)
    thread.start()      # (started before the window: a thread that ends inside it takes its count along)
    window = CpuWindow({"me": me}).start()
    go.set()
    try:
        assert slept.wait(10)
        window.stop()
        total = wakeups(me)     # while the thread lives: an exited thread's count leaves /proc/PID/task
    finally:
        release.set()
        thread.join(10)
    assert window.wakeups["me"] >= 40
    assert window.wakeups_per_s("me") == window.wakeups["me"] / window.wall_s
    assert total >= window.wakeups["me"]


def test_steal_is_read_from_the_machines_cpu_line():
    text = "cpu  100 5 50 800 10 1 4 30 7 0\ncpu0 50 2 25 400 5 0 2 15 3 0\nintr 1\n"
    assert parse_proc_stat_steal(text) == (30, 1000)     # guest (7) is already inside user
    assert steal_percent((30, 1000), (60, 1300)) == 10.0
    assert steal_percent((30, 1000), (30, 1000)) == 0.0
    steal, total = machine_ticks()
    assert 0 <= steal <= total


def test_a_window_reports_the_steal_over_it():
    window = CpuWindow({"me": os.getpid()}).start()
    time.sleep(0.02)
    window.stop()
    assert window.steal_pct is not None and 0.0 <= window.steal_pct <= 100.0
