"""Read-your-writes under the `replicas` read policy, with replicas that stall (SIGSTOP)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from .harness import commandstats_calls, wait_until
from .test_sessions import aclient, replica_calls, uniq, wait_replicas_healthy

pytestmark = pytest.mark.timeout(60)


class ReplicaStaller:
    """Background thread: SIGSTOP one replica (alternating) for `pause` s every `period` s.

    Always leaves every replica running (SIGCONT) when stopped, even on errors.
    """

    def __init__(self, rs, pause: float = 0.1, period: float = 1.0) -> None:
        self.rs = rs
        self.pause = pause
        self.period = period
        self.stopping = threading.Event()
        self.stalls = 0
        self.thread = threading.Thread(target=self._run, name="replica-staller", daemon=True)

    def _run(self) -> None:
        i = 0
        try:
            while not self.stopping.wait(self.period - self.pause):
                rep = self.rs.replicas[i % len(self.rs.replicas)]
                i += 1
                rep.stop()
                try:
                    self.stopping.wait(self.pause)
                finally:
                    rep.cont()
                self.stalls += 1
        finally:
            for rep in self.rs.replicas:
                rep.cont()

    def __enter__(self) -> "ReplicaStaller":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(5)
        for rep in self.rs.replicas:
            rep.cont()


@pytest.fixture(scope="module")
def norw_proxy(replica_set, module_proxy_factory):
    return module_proxy_factory(replica_set, read_policy="replicas", read_your_writes=False, node="proxy-norw",
                                down_after_ms=10_000)


@pytest.mark.timeout(300)
def test_read_your_writes_5000_pairs_with_stalling_replicas(proxy, replica_set):
    wait_replicas_healthy(proxy)
    k = uniq("ryw")
    stale: list[tuple[int, bytes | None]] = []
    before = replica_calls(replica_set, "get")
    with proxy.client(timeout=10) as r, ReplicaStaller(replica_set) as staller:
        t0 = time.monotonic()
        for i in range(5_000):
            r.set(k, i)
            got = r.get(k)
            if got != str(i).encode():
                stale.append((i, got))
        elapsed = time.monotonic() - t0
    assert staller.stalls >= 1 or elapsed < 1.0, "the replicas were never stalled during the run"
    assert not stale, f"{len(stale)} stale reads, first: {stale[:5]}"
    print(f"5000 pairs in {elapsed:.1f}s, {staller.stalls} stalls, "
          f"{replica_calls(replica_set, 'get') - before} GETs served by replicas")


async def test_read_your_writes_pipelined_pairs_async(proxy, replica_set):
    """SET+GET sent together in one pipeline, several clients at once, replicas stalling."""
    stale: list = []

    async def worker(n: int) -> None:
        r = aclient(proxy.port)
        k = uniq(f"rywa{n}")
        try:
            for i in range(150):
                res = await r.pipeline(transaction=False).set(k, i).get(k).execute()
                if res[1] != str(i).encode():
                    stale.append((n, i, res[1]))
                await r.set(k, f"s{i}")
                got = await r.get(k)
                if got != f"s{i}".encode():
                    stale.append((n, i, got))
        finally:
            await r.aclose()

    with ReplicaStaller(replica_set):
        await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(5))), 40)
    assert not stale, f"{len(stale)} stale reads, first: {stale[:5]}"


def test_reads_move_back_to_replicas_and_are_never_stale(proxy, replica_set):
    """read_your_writes must not mean "every read goes to the master": after each
    write the client's reads return to a replica once it has the write, and no
    read ever returns an older value, while replicas keep stalling."""
    wait_replicas_healthy(proxy)
    k = uniq("back")
    rounds = 25
    stale: list = []
    with proxy.client() as r, ReplicaStaller(replica_set):
        for i in range(rounds):
            r.set(k, f"v{i}")
            before = replica_calls(replica_set, "get")

            def served_by_replica() -> bool:
                got = r.get(k)
                if got != f"v{i}".encode():
                    stale.append((i, got))
                return replica_calls(replica_set, "get") > before
            wait_until(served_by_replica, 5, interval=0.005,
                       message=f"round {i}: a GET after the write to be served by a replica")
    assert not stale, f"{len(stale)} stale reads, first: {stale[:5]}"


def test_reads_return_to_replicas_after_they_recover(proxy_factory, replica_set):
    """A client whose reads fell back to the master while every replica was down
    must read from replicas again once they are healthy (not stay pinned)."""
    # its own proxy: the shared one uses down_after_ms=10000, too long to see replicas down
    proxy = proxy_factory(replica_set, read_policy="replicas", down_after_ms=2000, node="proxy-recover")
    wait_replicas_healthy(proxy)
    k = uniq("recover")
    with replica_set.master.client() as m:
        m.set(k, "v")
    replica_set.wait_synced()
    with proxy.client() as r:
        for rep in replica_set.replicas:
            rep.stop()
        try:
            wait_until(lambda: not any(x["healthy"] for x in proxy.status()["topology"]["replicas"]), 5,
                       message=lambda: f"the proxy to see both frozen replicas unhealthy: {proxy.status()['nodes']}")
            assert r.get(k) == b"v"               # served by the master: no replica is fit
        finally:
            for rep in replica_set.replicas:
                rep.cont()
        wait_replicas_healthy(proxy)
        before = replica_calls(replica_set, "get")

        def back_on_replicas() -> bool:
            assert r.get(k) == b"v"
            return replica_calls(replica_set, "get") > before
        wait_until(back_on_replicas, 5, interval=0.05,
                   message="this client's reads to return to the recovered replicas")


def test_without_read_your_writes_reads_go_to_replicas(norw_proxy, replica_set):
    wait_replicas_healthy(norw_proxy)
    k = uniq("norw")
    n = 300
    before_replicas = replica_calls(replica_set, "get")
    before_master = commandstats_calls(replica_set.master, "get")
    with norw_proxy.client() as r:
        for i in range(n):
            r.set(k, i)
            r.get(k)                        # may be stale: that is the point of the setting
    on_replicas = replica_calls(replica_set, "get") - before_replicas
    on_master = commandstats_calls(replica_set.master, "get") - before_master
    assert on_replicas >= 0.9 * n, f"only {on_replicas} of {n} GETs reached a replica ({on_master} the master)"
    assert on_master <= 0.1 * n


# ---------------------------------------------------------------------------
# every kind of write counts for read-your-writes
# ---------------------------------------------------------------------------

FN_LIB = ("#!lua name=rywlib\nredis.register_function('ryw_set', function(keys, args) "
          "return redis.call('SET', keys[1], args[1]) end)")

# kind -> (setup on the master, the write through the proxy, the read through the proxy, expected read reply)
WRITE_KINDS = {
    "set": (lambda m, k: None, [("SET", "{k}", "v")], ("GET", "{k}"), b"v"),
    "exec": (lambda m, k: None, [("MULTI",), ("SET", "{k}", "v"), ("EXEC",)], ("GET", "{k}"), b"v"),
    "eval": (lambda m, k: None, [("EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "{k}", "v")],
             ("GET", "{k}"), b"v"),
    "fcall": (lambda m, k: m.function_load(FN_LIB, replace=True), [("FCALL", "ryw_set", "1", "{k}", "v")],
              ("GET", "{k}"), b"v"),
    "blpop": (lambda m, k: m.rpush(k, "a"), [("BLPOP", "{k}", "1")], ("LLEN", "{k}"), 0),
    "blmove": (lambda m, k: m.rpush(k, "a"), [("BLMOVE", "{k}", "{k}:dst", "LEFT", "RIGHT", "1")],
               ("LRANGE", "{k}:dst", "0", "-1"), [b"a"]),
    "bzpopmin": (lambda m, k: m.zadd(k, {"a": 1}), [("BZPOPMIN", "{k}", "1")], ("ZCARD", "{k}"), 0),
    "xreadgroup": (lambda m, k: (m.xgroup_create(k, "g", id="0", mkstream=True), m.xadd(k, {"f": "v"})),
                   [("XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "BLOCK", "100", "STREAMS", "{k}", ">")],
                   ("XPENDING", "{k}", "g"), None),
}


@pytest.mark.parametrize("kind", list(WRITE_KINDS))
def test_read_after_write_of_each_kind_never_goes_to_a_replica_without_it(proxy, replica_set, kind):
    """Both replicas are frozen (SIGSTOP) before the write, so neither can have
    it: the read that follows on the same connection must be served by the
    master.  The replicas are resumed once the read is answered, or by a timer
    after 5 s, so a misrouted read shows up in their INFO commandstats (and may
    also return a stale value)."""
    from .harness import wait_replica_synced
    setup, writes, read, expected = WRITE_KINDS[kind]
    wait_replicas_healthy(proxy)
    k = uniq(f"kind-{kind}")
    sub = (lambda args: [a.replace("{k}", k) for a in args])
    with replica_set.master.client() as m:
        setup(m, k)
    replica_set.wait_synced()
    read_cmd = read[0].lower()
    before = replica_calls(replica_set, read_cmd)
    c = proxy.raw(timeout=10)
    # a read sent to a frozen replica would hang: the timer ends that; not sooner than the
    # writes and the read can take on a loaded machine (the replicas resumed early and caught
    # up may rightly serve the read, and the check below would fail the test)
    timer = threading.Timer(5.0, lambda: [rep.cont() for rep in replica_set.replicas])
    try:
        assert c.command("PING") == b"PONG"          # connected; no read has been routed yet
        for rep in replica_set.replicas:
            rep.stop()
        timer.start()
        for w in writes:
            reply = c.command(*sub(w))
            assert not isinstance(reply, Exception), f"{w[0]}: {reply!r}"
        got = c.command(*sub(read))
    finally:
        timer.cancel()
        for rep in replica_set.replicas:
            rep.cont()
        c.close()
    for rep in replica_set.replicas:
        wait_replica_synced(rep, replica_set.master, 10)
    served_by_replicas = replica_calls(replica_set, read_cmd) - before
    if kind == "xreadgroup":
        assert got[0] == 1, f"XPENDING after XREADGROUP answered {got!r} (stale)"
    else:
        assert got == expected, f"{read[0]} after a {kind} write answered {got!r}, expected {expected!r}"
    assert served_by_replicas == 0, \
        f"the {read[0]} right after a {kind} write was sent to a replica that could not have the write"
    if kind == "fcall":
        with replica_set.master.client() as m:
            m.function_delete("rywlib")
