"""benchmarks/benchlib/placement: --pin gives the client a CPU of its own and the servers the rest."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.benchlib.placement import pin_process, split_cpus


def test_the_client_gets_the_last_cpu_and_the_servers_the_others():
    placement = split_cpus({0, 1, 2, 3})
    assert (placement.client, placement.servers) == ({3}, {0, 1, 2})
    assert placement.to_dict() == {"client": [3], "servers": [0, 1, 2]}


def test_one_cpu_cannot_be_split():
    with pytest.raises(ValueError, match="at least 2 CPUs"):
        split_cpus({5})


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to pin to one of them")
def test_every_thread_of_a_running_process_is_pinned_and_threads_it_starts_later_too():
    script = ("import os, sys, threading\n"
              "threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
              "print('up', flush=True); sys.stdin.readline()\n"
              "print(sorted(os.sched_getaffinity(0)), flush=True)\n"
              "t = threading.Thread(target=lambda: print(sorted(os.sched_getaffinity(0)), flush=True))\n"
              "t.start(); t.join()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        tasks = os.listdir(f"/proc/{proc.pid}/task")
        assert len(tasks) == 2
        cpu = max(os.sched_getaffinity(0))
        pin_process(proc.pid, frozenset({cpu}))
        assert all(os.sched_getaffinity(int(t)) == {cpu} for t in tasks)
        out, _ = proc.communicate("go\n", timeout=10)
        assert out.split("\n")[:2] == [str([cpu])] * 2
    finally:
        proc.kill()
        proc.wait(timeout=10)
