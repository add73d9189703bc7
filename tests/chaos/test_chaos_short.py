"""The short chaos schedule (issue 12), run by `make test`.

3 redis-server + 3 proxies (ack = replica), every process in its own cgroup;
workloads through all three proxies at once (pipelined SETs, MULTI/EXEC, EVAL,
INCR, an LPUSH/BRPOP queue, SUBSCRIBE/UNSUBSCRIBE then SET); about 43 s of real
faults (`faults.short_schedule`): nftables partitions (proxy-Redis, client-proxy,
Redis-Redis), a one-way proxy-proxy cut, a slow proxy-Redis link, SIGSTOP of a
replica, SIGKILL of the master with an empty restart, two quick series of master
kills with empty restarts (back faster than failure detection, the next kill
before any resync could finish: Redis's diskless-sync delay is 5 s), SIGKILL of
the Raft leader, loss of a proxy's data dir, a full disk under one.  The plan
is survivable (never two copies destroyed before a resync), so a correct system
loses nothing.  Then everything is healed and the checker asserts what
`ack = replica` promises: no acknowledged write missing, no counter below its
acknowledged increments, no queue item delivered twice or lost, and, within
10 s of healing, one Redis master, followed by every replica, named by every
proxy at one epoch.

The seed is 12 unless CHAOS_SEED says otherwise; the fault log (relative times)
and the numbers are printed and kept with the processes' logs in
$CHAOS_ARTIFACTS (default /tmp/rrp-chaos-short-last), so a failure names its
schedule and replays with the same seed.  This is an honest assertion: it fails
until the product keeps those promises under this schedule.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from .cluster import ChaosProxyCluster
from .faults import short_schedule
from .run import run_chaos

pytestmark = pytest.mark.timeout(115)

SEED = int(os.environ.get("CHAOS_SEED", "12"))
# the settings the failover tests pin too (Raft timing at its defaults)
TIMING = {"down_after_ms": 500, "hold_ms": 5000, "lease_ms": 1000}
CONVERGE_S = 10.0
# the last run's logs and result.json, kept past pytest's rotation of its temp dirs
ARTIFACTS = Path(os.environ.get("CHAOS_ARTIFACTS", Path(tempfile.gettempdir()) / "rrp-chaos-short-last"))


def keep_artifacts(src: Path) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    for log in list(src.rglob("*.log")) + list(src.glob("*.txt")) + list(src.glob("*.json")):
        try:
            shutil.copy(log, ARTIFACTS / f"{log.parent.name}-{log.name}")
        except OSError:
            pass


def test_short_schedule_keeps_every_acknowledged_write(chaos_net, tmp_path):
    t_start = time.monotonic()
    schedule = short_schedule(SEED)
    print(f"chaos seed {SEED}; schedule:\n" + "\n".join(s.describe() for s in schedule))
    cluster = ChaosProxyCluster(tmp_path / "cluster", chaos_net, ack="replica", persistence=False, options=TIMING)
    try:
        cluster.start(timeout=60)
        result = run_chaos(cluster, schedule, seed=SEED, ack="replica", converge_timeout_s=CONVERGE_S,
                           second_chance_s=10.0, sync_timeout_s=20.0)
    except BaseException:
        print(cluster.logs(60))
        raise
    finally:
        (tmp_path / "nft.txt").write_text(chaos_net.counters())
        cluster.cleanup()
        keep_artifacts(tmp_path)
    print(result.summary())
    print(f"chaos short test: {time.monotonic() - t_start:.1f}s in all; logs in {ARTIFACTS}")
    (ARTIFACTS / "result.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))

    f = result.findings
    # the run did something: every workload kind got acknowledgements
    assert f.acked_writes > 200 and f.acked_increments > 100 and f.queue_pushed > 50, result.summary()
    problems = f.problems()
    if result.converged_s is None:
        problems.append(f"no convergence within {CONVERGE_S}s of healing: {result.convergence_error}")
    assert not problems, (f"seed {SEED}: " + "\n".join(problems) + "\n--- fault log ---\n"
                          + "\n".join(result.fault_log) + "\n--- summary ---\n" + result.summary())
