"""What one wake-up of an idle process costs on this machine, by kind of process.

An idle proxy's CPU is mostly wake-ups: the 100 ms grid (probes, controller, Raft
ticker), the probes' replies, the heartbeats and their answers, the streams'
keep-alive pings (issue 16; docs/performance.md). This measures the fixed cost of
one wake-up with nothing to do, side by side in one window: child processes that
each sleep and wake `--rate` times a second for `--duration` seconds, doing no work
in between:

* `c`: a C loop around `nanosleep` (compiled with `cc` when there is one), the
  floor of any process; Redis and Sentinel wake up this way (plus their work);
* `python-sleep`: a Python loop around `time.sleep`;
* `uvloop-callback`: a uvloop event loop re-arming a timer callback (`call_at`);
* `uvloop-task`: a uvloop event loop and a task awaiting `asyncio.sleep`, the way
  the proxy's periodic tasks wait;
* `asyncio-task`: the same on asyncio's own (pure Python) event loop.

Each child's CPU comes from /proc/PID/schedstat (nanoseconds the scheduler ran it,
not tick samples) and its wake-ups from its voluntary context switches; reported
per wake-up and as a ratio to the C loop.

    python -m benchmarks.wakeup_cost [--rate 20] [--duration 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.benchlib.proccpu import wakeups  # noqa: E402

C_LOOP = r"""
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    long period_ns = atol(argv[1]);
    struct timespec ts = {period_ns / 1000000000L, period_ns % 1000000000L};
    for (;;) nanosleep(&ts, NULL);
}
"""

PY_LOOPS = {
    "python-sleep": "import sys, time\np = float(sys.argv[1])\nwhile True: time.sleep(p)\n",
    "uvloop-callback": (
        "import asyncio, sys, uvloop\np = float(sys.argv[1])\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    def tick(): loop.call_later(p, tick)\n"
        "    tick()\n"
        "    await loop.create_future()\n"
        "uvloop.run(main())\n"),
    "uvloop-task": (
        "import asyncio, sys, uvloop\np = float(sys.argv[1])\n"
        "async def main():\n"
        "    while True: await asyncio.sleep(p)\n"
        "uvloop.run(main())\n"),
    "asyncio-task": (
        "import asyncio, sys\np = float(sys.argv[1])\n"
        "async def main():\n"
        "    while True: await asyncio.sleep(p)\n"
        "asyncio.run(main())\n"),
}


def cpu_ns(pid: int) -> int:
    """Nanoseconds the scheduler ran `pid`'s main thread (/proc/PID/schedstat): exact, where
    /proc/PID/stat counts clock ticks (a process using 0.1 % of a core for 20 s has 2)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def start_children(rate: float, tmp: Path) -> dict[str, subprocess.Popen]:
    period = 1.0 / rate
    children: dict[str, subprocess.Popen] = {}
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is not None:
        (tmp / "loop.c").write_text(C_LOOP)
        subprocess.run([cc, "-O2", "-o", str(tmp / "loop"), str(tmp / "loop.c")], check=True)
        children["c"] = subprocess.Popen([str(tmp / "loop"), str(int(period * 1e9))])
    for name, code in PY_LOOPS.items():
        children[name] = subprocess.Popen([sys.executable, "-c", code, str(period)])
    return children


def measure(rate: float, duration: float, settle: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        children = start_children(rate, Path(d))
        try:
            time.sleep(settle)      # imports done, loops running
            before = {k: (cpu_ns(p.pid), wakeups(p.pid)) for k, p in children.items()}
            time.sleep(duration)
            after = {k: (cpu_ns(p.pid), wakeups(p.pid)) for k, p in children.items()}
        finally:
            for p in children.values():
                p.kill()
                p.wait()
    rows = {}
    for k in children:
        ns, n = after[k][0] - before[k][0], after[k][1] - before[k][1]
        rows[k] = {"wakeups_per_s": n / duration, "cpu_pct": ns / 1e9 / duration * 100,
                   "us_per_wakeup": ns / 1e3 / max(n, 1)}
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rate", type=float, default=20.0, help="wake-ups a second per process")
    p.add_argument("--duration", type=float, default=20.0, help="seconds sampled")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before sampling")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    load = os.getloadavg()
    print(f"[wakeup_cost] load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    rows = measure(args.rate, args.duration, args.settle)
    base = rows.get("c", {}).get("us_per_wakeup")
    print(f"\n{args.rate:g} wake-ups a second per process, {args.duration:g} s, {os.cpu_count()} CPUs\n")
    print("| process | wake-ups/s | % of a core | µs per wake-up | vs C |")
    print("|---|-:|-:|-:|-:|")
    for k, r in rows.items():
        ratio = f"{r['us_per_wakeup'] / base:.1f}" if base else "-"
        print(f"| {k} | {r['wakeups_per_s']:.1f} | {r['cpu_pct']:.3f} | {r['us_per_wakeup']:.1f} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"load_average": load, "rate": args.rate,
                                               "duration_s": args.duration, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
