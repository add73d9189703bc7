"""3 voters + 4 non-voting Raft learners (issue 16), real proxies, real redis-server.

Learners join with `--join URL --learner`: they follow the log and route
clients under the same lease and fence rules as voters, but never vote. The
tests share one cluster and run in order:

1. the learners are learners everywhere, and a write through each of them is
   acknowledged and on the master;
2. SIGKILL the Raft leader: a voter takes over, the learners follow it, and
   writes through a learner go on;
3. a learner cut off from every other proxy (nftables, cgroup per proxy) while
   the Redis master dies: the failover is committed, but the leader promotes
   the new master only once the cut learner's lease has run out (the fence
   counts learners); the learner holds, then refuses writes; healed, it follows
   the new master;
4. the operator CLI: `promote` and `remove` of learners.

Raft ticks are 100 ms here (lease 0.8 s, a lease outlives its last renewal by
at most 1.7 s) so that the fence's wait for the cut learner stands out from the
time the failover takes to commit.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import redis

from benchmarks.raft_cluster_lib import NAMES, RaftCluster
from tests.chaos.netfaults import ChaosNet, Endpoint

from .harness import redis_client, start_or_clean, wait_until

pytestmark = pytest.mark.timeout(60)

LEARNERS = ("learner-1", "learner-2", "learner-3", "learner-4")
CUT = "learner-4"
TICK_MS = 100
HOLD_MS = 1500
OPTIONS = {"down_after_ms": 500, "hold_ms": HOLD_MS, "lease_ms": 1000, "tick_ms": TICK_MS}
LEASE_OUTLIVES_S = (8 + 8 + 1) * TICK_MS / 1000   # raft.core.Config.lease_outlives_ticks with lease_ticks 8


@pytest.fixture(scope="module")
def lc(tmp_path_factory):
    net = ChaosNet()
    c = None
    try:
        net.check_cgroup_match()
        c = RaftCluster(tmp_path_factory.mktemp("learners"), NAMES, options=OPTIONS)
        for name in LEARNERS:
            joiner = c.add_joiner(name, via=c.admin_url(NAMES[0]), peers=c.bootstrap_peers())
            joiner.options["learner"] = True
        for name, p in c.proxies.items():   # each proxy in a cgroup of its own, from its first socket on
            p.argv = (lambda argv=p.argv, pre=net.launcher(name): [*pre, *argv()])
        learners = {n: c.proxies.pop(n) for n in LEARNERS}  # the voters first: the learners join them
        start_or_clean(c, 60)
        c.proxies.update(learners)
        for name in LEARNERS:
            c.proxies[name].spawn()
        for name in LEARNERS:
            c.proxies[name].wait_ready(60)
        yield SimpleNamespace(c=c, net=net)
    finally:
        if c is not None:
            c.cleanup()
        net.close()


def everyone_agrees(c: RaftCluster, names, timeout: float = 20.0) -> dict:
    """Every named proxy on one leader, term, epoch and master, with a lease, and the
    leader listing the 4 learners."""
    def ok():
        v = c.converged(names)
        if v is None or sorted(v["statuses"][v["leader"]]["raft"]["learners"]) != sorted(LEARNERS):
            return None
        return v
    return wait_until(ok, timeout, message=lambda: f"agreement of {list(names)}: {c.brief(names)}")


def set_through(c: RaftCluster, name: str, key: str, value: str, timeout: float = HOLD_MS / 1000 + 5):
    with redis_client(c.client_ports[name], decode=True, timeout=timeout) as cl:
        return cl.set(key, value)


def on_master(c: RaftCluster, master: str, key: str) -> str | None:
    with c.rs.by_addr(master).client(decode=True, timeout=5) as cl:
        return cl.get(key)


def test_learners_join_route_writes_and_never_vote(lc):
    c = lc.c
    v = everyone_agrees(c, c.names)
    assert v["leader"] in NAMES
    for name, s in v["statuses"].items():
        r = s["raft"]
        assert sorted(r["members"]) == sorted(NAMES), (name, r)
        assert sorted(r["learners"]) == sorted(LEARNERS), (name, r)
        role = "learner" if name in LEARNERS else "leader" if name == v["leader"] else "follower"
        assert r["role"] == role, (name, r)
        m = c.metrics(name) or {}
        assert [k for k, x in m.items() if k.startswith("redis_raft_proxy_raft_role{") and x == 1] == \
            [f'redis_raft_proxy_raft_role{{role="{role}"}}'], (name, m)
    for name in LEARNERS:
        assert set_through(c, name, f"t1:{name}", name) is True
        assert on_master(c, v["master"], f"t1:{name}") == name


def test_leader_sigkill_a_voter_leads_and_learners_follow(lc):
    c = lc.c
    v = everyone_agrees(c, c.names)
    old = v["leader"]
    c.kill(old)
    live = [n for n in c.names if n != old]
    new = wait_until(lambda: (x := c.leader_view(live)) and x["leader"] != old and x["term"] > v["term"] and x,
                     20, message=lambda: f"a new leader after killing {old}: {c.brief(live)}")
    assert new["leader"] in NAMES
    for name in LEARNERS:
        assert new["statuses"][name]["raft"]["role"] == "learner"
    everyone_agrees(c, live)
    assert set_through(c, "learner-1", "t2:after-kill", "x") is True
    assert on_master(c, v["master"], "t2:after-kill") == "x"
    c.restart(old)   # whole again: in test 3 only the cut learner may hold a lease the leader must wait out
    everyone_agrees(c, c.names)


class LeaseSampler(threading.Thread):
    """Polls a proxy's /status every 10 ms: (time the request was sent, lease held, epoch)."""

    def __init__(self, c: RaftCluster, name: str) -> None:
        super().__init__(daemon=True)
        self.c, self.name_, self.samples, self.halt = c, name, [], threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            t = time.monotonic()
            s = self.c.status(self.name_, timeout=0.5)
            if s is not None:
                self.samples.append((t, s["lease"]["held"], s["topology"]["epoch"]))
            self.halt.wait(0.01)


def test_cut_learner_is_fenced_then_refuses_writes_then_follows_again(lc):
    c, net = lc.c, lc.net
    live = c.live()
    v = everyone_agrees(c, live)
    e0, old_master, leader = v["epoch"], v["master"], v["leader"]
    learner = Endpoint(CUT, (c.admin_ports[CUT],), net.cgroup(CUT))
    others = [Endpoint(n, (c.admin_ports[n],), net.cgroup(n)) for n in c.names if n != CUT]
    sampler = LeaseSampler(c, CUT)
    sampler.start()
    faults = []
    try:
        wait_until(lambda: any(held for _, held, _ in sampler.samples), 5, message="a first sample with a lease")
        faults = [net.drop(learner, o) for o in others]
        t_cut = time.monotonic()
        c.rs.by_addr(old_master).kill()
        replicas = [s for s in c.rs.servers if s.addr != old_master]
        committed = wait_until(lambda: (s := c.status(leader)) and s["topology"]["epoch"] > e0 and s, 15,
                               message=lambda: f"the failover to commit: {c.brief(live)}")
        t_commit = time.monotonic()
        new_master = committed["topology"]["master"]
        promoted = c.rs.by_addr(new_master)
        assert new_master in [r.addr for r in replicas]
        wait_until(lambda: promoted.info()["role"] == "master", 10, interval=0.005,
                   message=f"{new_master} to be promoted")
        t_promoted = time.monotonic()
        sampler.halt.set()
        sampler.join(2)
        last_held = max((t for t, held, _ in sampler.samples if held), default=0.0)
        # the fence: no promotion while the cut learner could still write to the old master
        assert last_held < t_promoted, (last_held - t_cut, t_promoted - t_cut)
        assert not any(e > e0 for _, _, e in sampler.samples), "the cut learner applied the new topology"
        min_wait = LEASE_OUTLIVES_S - 0.5    # the leader heard the learner last up to a few ticks before the cut
        if t_commit - t_cut < min_wait - 0.2:   # committed well before the cut learner's lease bound
            assert t_promoted - t_cut >= min_wait, (
                f"promoted {t_promoted - t_cut:.2f} s after the cut (committed at {t_commit - t_cut:.2f} s): the "
                f"leader did not wait out the cut learner's lease ({LEASE_OUTLIVES_S} s)")
        print(f"cut learner: lease last seen {last_held - t_cut:.2f} s after the cut, failover committed "
              f"{t_commit - t_cut:.2f} s, new master promoted {t_promoted - t_cut:.2f} s")

        # no lease: a write through the cut learner is held for hold_ms, then refused
        wait_until(lambda: (s := c.status(CUT)) and not s["lease"]["held"], 5,
                   message="the cut learner's lease to lapse")
        t0 = time.monotonic()
        with pytest.raises(redis.exceptions.TryAgainError, match="holds no lease"):
            set_through(c, CUT, "t3:while-cut", "lost")
        assert time.monotonic() - t0 >= HOLD_MS / 1000 * 0.8
    finally:
        sampler.halt.set()
        for fid in faults:
            net.heal(fid)
    new = everyone_agrees(c, live, timeout=20)
    assert new["master"] == new_master and new["epoch"] > e0
    assert set_through(c, CUT, "t3:healed", "y") is True
    assert on_master(c, new_master, "t3:healed") == "y"


def test_cli_promotes_and_removes_learners(lc):
    c = lc.c
    live = c.live()
    v = everyone_agrees(c, live)
    endpoint = c.admin_url(v["leader"])
    r = c.ops("promote", "--node", "proxy-9", endpoint=endpoint)
    assert r.returncode == 1 and "not a learner" in r.stderr, r.stdout + r.stderr
    r = c.ops("promote", "--node", "learner-1", endpoint=endpoint)
    assert r.returncode == 0, r.stdout + r.stderr
    r = c.ops("remove", "--node", "learner-2", endpoint=endpoint)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "learner-2" not in r.stdout and "learner-1" in r.stdout.split("learners")[0]
    s = wait_until(lambda: (x := c.status("learner-1")) and x["raft"]["role"] != "learner" and x, 10,
                   message="learner-1 to be a voter")
    assert sorted(s["raft"]["members"]) == sorted([*NAMES, "learner-1"])
    assert sorted(s["raft"]["learners"]) == ["learner-3", "learner-4"]
