"""Cluster mode (issue 14) with real processes: a cluster-enabled Redis/Valkey cluster
behind 3 proxies running Raft.

Used by `tests/integration/test_cluster_mode.py`, `tests/integration/test_cluster_failover.py`
and the cluster benchmarks.  Built on the integration harness (`ClusterNodes` from
`tests/integration/cluster_nodes.py`, `ProxyProcess`, `wait_until`, free ports) and on
`benchmarks/failover_lib.py` (proxy names, the Raft secret, /status over HTTP):

* `ShardedProxyCluster`  N shards (1 master + R replicas each, slots split evenly) and
                         3 proxies given every node as `cluster_nodes`; `start()` waits
                         until every proxy's /status shows every shard with a master
* `ShardView`            one shard as a proxy's /status (or the nodes' CLUSTER SHARDS)
                         shows it, with the `RedisServer`s behind its addresses
* `key_in_shard`         a key (or hash tag) whose slot one given shard serves
* `shard_writers`        one `Writer` per shard (keys of one hash tag in it), through
                         the proxies in turn; `longest_pause` between acknowledgements
* `reply_error`          an error reply as the server sent it (CROSSSLOT, CLUSTERDOWN)

127.0.0.1 only; every wait is bounded (`wait_until`); nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import redis

from benchmarks.failover_lib import (
    PROXY_NAMES,
    RAFT_SECRET,
    Writer,
    WriteResult,
    _http_json,
    error_text,
)
from proxy.protocol.reply_maps import as_map
from proxy.routing.keyslot import SLOTS, key_slot
from tests.integration.cluster_nodes import ClusterNodes
from tests.integration.harness import (
    HOST,
    HarnessError,
    ProxyProcess,
    RedisServer,
    free_ports,
    redis_client,
    release_ports,
    wait_until,
)


@dataclass
class ShardView:
    """One shard: its slot ranges, its master and replicas (None / absent when down or unknown)."""

    id: str
    ranges: list[tuple[int, int]]
    master: RedisServer | None
    replicas: list[RedisServer] = field(default_factory=list)
    epoch: int | None = None
    raw: dict = field(default_factory=dict)

    def serves(self, slot: int) -> bool:
        return any(start <= slot <= end for start, end in self.ranges)

    @property
    def servers(self) -> list[RedisServer]:
        return [s for s in [self.master, *self.replicas] if s is not None]


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _addr(entry: Any) -> str | None:
    """A node address as /status writes it: "host:port", or an object with `addr`."""
    if entry is None:
        return None
    if isinstance(entry, Mapping):
        return entry.get("addr") or (f"{entry['host']}:{entry['port']}" if "host" in entry else None)
    return str(entry)


class ShardedProxyCluster:
    """`shards` x (1 + `replicas_per_master`) cluster-enabled redis-servers (or valkey-servers:
    `binary`) and 3 proxies running Raft in cluster mode.

    `options` go to every proxy as flags (e.g. ``{"ack": "replica", "down_after_ms": 500}``);
    `slot_ranges` gives each master its slots (default: split evenly);
    `node_options` maps a proxy name to extra flags for that proxy only.  Each proxy is given
    every node as `cluster_nodes` (the harness also passes `redis_nodes` / `master`, which
    cluster mode ignores).
    """

    def __init__(self, workdir: Path, shards: int = 3, replicas_per_master: int = 1,
                 options: Mapping[str, Any] | None = None, binary: str | None = None,
                 node_options: Mapping[str, Mapping[str, Any]] | None = None,
                 read_policy: str = "replicas", slot_ranges: Sequence[tuple[int, int]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.shard_count = shards
        self.cluster = ClusterNodes(self.workdir / "nodes", masters=shards,
                                    replicas_per_master=replicas_per_master, binary=binary,
                                    ranges=list(slot_ranges) if slot_ranges is not None else None)
        self.names = list(PROXY_NAMES)
        ports = free_ports(2 * len(self.names))
        self.client_ports = dict(zip(self.names, ports[:len(self.names)]))
        self.admin_ports = dict(zip(self.names, ports[len(self.names):]))
        peers = ",".join(f"{n}=http://{HOST}:{self.admin_ports[n]}" for n in self.names)
        node_addrs = [s.addr for s in self.cluster.servers]
        self.proxies: dict[str, ProxyProcess] = {}
        for name in self.names:
            opts: dict[str, Any] = {"cluster_nodes": ",".join(node_addrs), "peers": peers,
                                    "data_dir": str(self.workdir / "raft" / name)}
            opts.update(options or {})
            opts.update((node_options or {}).get(name, {}))
            self.proxies[name] = ProxyProcess(self.workdir / "proxies", node_addrs, self.cluster.masters[0].addr,
                                              node=name, port=self.client_ports[name],
                                              admin_port=self.admin_ports[name], read_policy=read_policy,
                                              options=opts, env={"REDIS_RAFT_PROXY_RAFT_SECRET": RAFT_SECRET})

    # -- life cycle ---------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> ShardedProxyCluster:
        self.cluster.start(timeout)
        for p in self.proxies.values():
            p.spawn()
        for p in self.proxies.values():
            p.wait_ready(timeout)
        self.wait_ready(timeout=timeout)
        return self

    def cleanup(self) -> None:
        for p in self.proxies.values():
            p.cleanup()
        self.cluster.cleanup()
        release_ports(list(self.client_ports.values()) + list(self.admin_ports.values()))

    def __enter__(self) -> ShardedProxyCluster:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -- views --------------------------------------------------------------------------
    @property
    def nodes(self) -> list[RedisServer]:
        return list(self.cluster.servers)

    def node(self, addr: str) -> RedisServer:
        for s in self.cluster.servers:
            if s.addr == addr:
                return s
        raise KeyError(addr)

    def proxy(self, name: str) -> ProxyProcess:
        return self.proxies[name]

    def alive(self) -> list[ProxyProcess]:
        return [p for p in self.proxies.values() if p.alive()]

    def status(self, name: str, timeout: float = 1.0) -> dict | None:
        """One proxy's /status, or None when it does not answer."""
        try:
            return _http_json(self.proxies[name].admin_url, "/status", timeout)
        except Exception:  # noqa: BLE001 - dead, stopped or still starting
            return None

    def statuses(self, names: Iterable[str] | None = None) -> dict[str, dict | None]:
        names = list(names) if names is not None else [p.node for p in self.alive()]
        return {n: self.status(n) for n in names}

    def _shard_view(self, d: Mapping[str, Any]) -> ShardView:
        master = _addr(d.get("master"))
        return ShardView(id=str(d["id"]), ranges=[(int(a), int(b)) for a, b in d.get("slots", [])],
                         master=self.node(master) if master else None,
                         replicas=[self.node(a) for a in map(_addr, d.get("replicas") or []) if a],
                         epoch=d.get("epoch"), raw=dict(d))

    def shards(self, name: str | None = None) -> list[ShardView]:
        """The shards as proxy `name` (default: the first that answers) committed them."""
        for n in [name] if name else [p.node for p in self.alive()]:
            s = self.status(n)
            if s is not None:
                return [self._shard_view(d) for d in s.get("shards", [])]
        raise HarnessError("no proxy answers /status")

    def agreed(self, names: Iterable[str] | None = None) -> list[ShardView] | None:
        """The shards when every named (default: live) proxy is in cluster mode, knows a Raft
        leader, and shows the same `shard_count` shards, each with a master; else None."""
        sts = self.statuses(names)
        if not sts or any(s is None for s in sts.values()):
            return None
        views = set()
        for s in sts.values():
            if s.get("mode") != "cluster" or not s.get("raft", {}).get("leader"):
                return None
            shards = s.get("shards") or []
            if len(shards) != self.shard_count or any(not d.get("master") for d in shards):
                return None
            views.add(json.dumps(sorted((str(d["id"]), _addr(d["master"]), d.get("epoch")) for d in shards)))
        if len(views) != 1:
            return None
        return [self._shard_view(d) for d in next(iter(sts.values()))["shards"]]

    def wait_ready(self, names: Iterable[str] | None = None, timeout: float = 30.0) -> list[ShardView]:
        """Every named (default: live) proxy shows every shard with the same master."""
        names = list(names) if names is not None else None
        return wait_until(lambda: self.agreed(names), timeout,
                          message=lambda: f"every proxy's /status to show {self.shard_count} shards with a "
                                          f"master: {self._brief(self.statuses(names))}")

    def leader(self) -> ProxyProcess:
        """The Raft leader (every live proxy agreeing on it, the leader saying so itself)."""
        def find():
            sts = self.statuses()
            leaders = {s["raft"]["leader"] if s else None for s in sts.values()}
            if len(leaders) != 1 or None in leaders:
                return None
            leader = leaders.pop()
            s = sts.get(leader)
            return self.proxies[leader] if s and s["raft"]["role"] == "leader" else None
        return wait_until(find, 20, message=lambda: f"one Raft leader: {self._brief(self.statuses())}")

    @staticmethod
    def _brief(sts: Mapping[str, dict | None]) -> str:
        out = {}
        for n, s in sts.items():
            if s is None:
                out[n] = None
                continue
            out[n] = {"mode": s.get("mode"), "leader": s.get("raft", {}).get("leader"),
                      "shards": [{k: d.get(k) for k in ("id", "master", "epoch", "phase", "phase_reason")}
                                 for d in s.get("shards") or []],
                      "problems": s.get("cluster_config_problems")}
        return json.dumps(out)

    # -- where keys live ------------------------------------------------------------------
    def shard_of_key(self, key: str | bytes, source: str = "status") -> ShardView:
        """The shard serving `key`: as the proxies committed it (`source="status"`) or as the
        nodes themselves say (`source="nodes"`: CLUSTER SHARDS on a live node, failed nodes
        left out)."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        views = self.shards() if source == "status" else self.node_shards()
        for v in views:
            if v.serves(slot):
                return v
        raise HarnessError(f"no shard serves slot {slot} ({key!r}) in {[(v.id, v.ranges) for v in views]}")

    def shard_index(self, key: str | bytes) -> int:
        """Position (0..shards-1, by first slot) of the shard serving `key`."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        return next(i for i, v in enumerate(self.ordered_shards()) if v.serves(slot))

    def ordered_shards(self) -> list[ShardView]:
        """The committed shards sorted by their first slot (stable across failovers)."""
        return sorted(self.shards(), key=lambda v: min(v.ranges))

    def node_shards(self) -> list[ShardView]:
        """CLUSTER SHARDS as a live node answers it, failed nodes left out."""
        for s in self.cluster.servers:
            if not s.alive():
                continue
            try:
                with s.client(timeout=2) as c:
                    reply = c.execute_command("CLUSTER", "SHARDS")
            except (OSError, redis.RedisError):
                continue        # try the next node
            out = []
            for entry in reply:
                d = as_map(entry)
                flat = [int(x) for x in d.get("slots", [])]
                if not flat:
                    continue            # a master that lost all its slots (Redis 7.0 lists it alone)
                master, replicas, master_id = None, [], ""
                for n in map(as_map, d.get("nodes", [])):
                    if _text(n.get("health", "online")) == "fail":
                        continue        # "loading" is fine: Redis 7.0 says so of a replica at offset 0
                    addr = f"{_text(n.get('ip') or n.get('endpoint'))}:{int(n['port'])}"
                    if _text(n.get("role")) == "master":
                        master, master_id = addr, _text(n.get("id"))
                    else:
                        replicas.append(addr)
                out.append(ShardView(master_id or _text(d.get("shard-id", "")), list(zip(flat[0::2], flat[1::2])),
                                     self.node(master) if master else None, [self.node(a) for a in replicas]))
            return out
        raise HarnessError("no cluster node answers CLUSTER SHARDS")

    # -- faults ---------------------------------------------------------------------------
    def kill_master(self, shard: int | str | ShardView) -> RedisServer:
        """SIGKILL the committed master of `shard` (its position in `ordered_shards()`, its
        id, or a view); returns the killed server."""
        if isinstance(shard, ShardView):
            view = shard
        elif isinstance(shard, int):
            view = self.ordered_shards()[shard]
        else:
            view = next(v for v in self.shards() if v.id == shard)
        if view.master is None:
            raise HarnessError(f"shard {view.id} has no master to kill")
        view.master.kill()
        return view.master

    def logs(self, lines: int = 60) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(lines)}" for p in self.proxies.values())

    # -- resharding (issue 15) --------------------------------------------------------------
    def spare_nodes(self, count: int, timeout: float = 30.0) -> list[RedisServer]:
        """Start `count` cluster-enabled nodes not in the cluster yet (for `cluster add-shard`)."""
        return self.cluster.spare_nodes(count, timeout)

    def admin(self, action: str, body: Mapping[str, Any] | None = None, via: str | None = None,
              timeout: float = 30.0) -> tuple[int, Any]:
        """POST /admin/cluster/`action` (move-slots, add-shard, remove-shard, rebalance, cancel)
        as `redis-raft-proxy cluster ...` does: to proxy `via` (default: the first live one),
        following its hint to the leader; returns (HTTP status, JSON reply)."""
        from proxy.process.ops_cli import leader_call
        proxy = self.proxies[via] if via else self.alive()[0]
        return leader_call(proxy.admin_url, "POST", f"/admin/cluster/{action}", dict(body or {}), RAFT_SECRET,
                           timeout)

    def migrations(self, name: str | None = None) -> list[dict]:
        """The `migrations` list of proxy `name`'s /status (default: the Raft leader's)."""
        s = self.status(name or self.leader().node)
        return list((s or {}).get("migrations") or [])

    def wait_migrations(self, ids: Iterable[str], timeout: float = 60.0,
                        states: Sequence[str] = ("done", "cancelled", "failed")) -> list[dict]:
        """Poll the leader's /status until every migration in `ids` is in one of `states`;
        returns them."""
        ids = set(ids)

        def ended():
            try:
                mine = [m for m in self.migrations() if m["id"] in ids]
            except HarnessError:
                return None         # no leader at the moment (one was killed): ask again
            return mine if len(mine) == len(ids) and all(m["state"] in states for m in mine) else None
        out = wait_until(ended, timeout, message=lambda: f"migrations {sorted(ids)} to end: "
                                                         f"{self._safe_migrations()}")
        self.wait_applied_everywhere()
        return out

    def wait_applied_everywhere(self, timeout: float = 15.0) -> None:
        """Every live proxy has applied what the leader had committed when this was called: a
        view read from any proxy right after the leader reported a migration's end was one entry
        (the last batch) behind on a loaded machine."""
        lead = self.status(self.leader().node) or {}
        target = int((lead.get("raft") or {}).get("commit_index") or 0)

        def applied(p: ProxyProcess) -> bool:
            raft = (self.status(p.node) or {}).get("raft") or {}
            return int(raft.get("applied_index") or -1) >= target
        wait_until(lambda: all(applied(p) for p in self.alive()), timeout,
                   message=lambda: f"every proxy to apply index {target}: {self._brief(self.statuses())}")

    def _safe_migrations(self) -> Any:
        for n in [p.node for p in self.alive()]:
            s = self.status(n)
            if s is not None and s.get("raft", {}).get("role") == "leader":
                return s.get("migrations")
        return "no leader answers"


def reply_error(call: Callable[[], Any]) -> str:
    """The error reply `call` (a redis-py call) got, as the server sent it (redis-py turns
    CROSSSLOT, CLUSTERDOWN, EXECABORT ... into exception classes without the code)."""
    try:
        reply = call()
    except redis.ResponseError as exc:
        return error_text(exc)
    raise AssertionError(f"expected an error reply, got {reply!r}")


def key_in_shard(view: ShardView, prefix: str = "k", start: int = 0) -> str:
    """The first key `prefix`N (N >= `start`) whose slot `view` serves; used as a hash tag to
    pin many keys to one shard (``"{" + key_in_shard(v) + "}:suffix"``)."""
    for i in range(start, start + 1_000_000):
        key = f"{prefix}{i}"
        if view.serves(key_slot(key.encode())):
            return key
    raise HarnessError(f"no key {prefix}N lands in shard {view.id}")


def shard_writers(c: ShardedProxyCluster, shards: Sequence[ShardView], prefix: str,
                  interval: float = 0.005) -> list[Writer]:
    """One Writer per shard, through proxy-1, -2, -3 in turn; each writes keys of one hash tag
    in its shard (so every key of a writer lives on that shard's master)."""
    out = []
    for i, view in enumerate(shards):
        tag = key_in_shard(view, f"{prefix}{i}-")
        proxy = c.proxy(c.names[i % len(c.names)])
        out.append(Writer(proxy.port, prefix="{" + tag + "}", interval=interval))
    return out


def longest_pause(results: Sequence[WriteResult], start: float, end: float) -> float:
    """The longest time without an acknowledgement between `start` and `end`."""
    acks = [start] + sorted(r.done for r in results if r.ok and start <= r.done <= end) + [end]
    return max(b - a for a, b in pairwise(acks))


def slot_owners(server: RedisServer) -> tuple[list[str | None], list[int]]:
    """What `server`'s CLUSTER SHARDS says of every slot: the owner (master node id, None when
    no shard lists the slot) per slot, and the slots that more than one shard lists."""
    owners: list[str | None] = [None] * SLOTS
    doubles = []
    with server.client(timeout=5) as c:
        reply = c.execute_command("CLUSTER", "SHARDS")
    for entry in reply:
        d = as_map(entry)
        flat = [int(x) for x in d.get("slots", [])]
        master = next((_text(n.get("id")) for n in map(as_map, d.get("nodes", [])) if _text(n.get("role")) == "master"),
                      "?")
        for a, b in zip(flat[0::2], flat[1::2]):
            for slot in range(a, b + 1):
                if owners[slot] is not None and owners[slot] != master:
                    doubles.append(slot)
                owners[slot] = master
    return owners, doubles


def node_keys(server: RedisServer) -> list[str]:
    """Every key on `server` (SCAN, not KEYS: the node goes on serving the load)."""
    with server.client(decode=True, timeout=10) as c:
        return list(c.scan_iter(count=1000))


@dataclass
class ReadResult:
    key: str
    expected: str
    got: str | None
    sent: float
    done: float
    kind: str = "ok"        # ok | wrong (another value or nil) | reply (an error reply) | conn
    error: str | None = None


def retried_tryagain(worker, text: str, sent: float) -> bool:
    """A `-TRYAGAIN` answer within `worker.retry_for` of sending: counted, and retried after
    `worker.retry_pause` (True), as a cluster client does; anything else is an error (False)."""
    if not text.startswith("TRYAGAIN") or time.monotonic() - sent >= worker.retry_for or worker._halt.is_set():
        return False
    with worker._lock:
        worker.tryagain += 1
        worker.tryagain_texts.append(text)
    worker._halt.wait(worker.retry_pause)
    return True


class Reader(threading.Thread):
    """GET, every ~`interval` s through one endpoint, a random key that another client's
    writer had acknowledged at least `settle` s before (so it is on a replica too under
    `ack = replica`); records every outcome and its latency (a -TRYAGAIN is retried, as
    by RetryingWriter, and counted)."""

    def __init__(self, port: int, writers: Sequence[Writer], prefix: str = "r", interval: float = 0.005,
                 settle: float = 0.5, timeout: float = 10.0, seed: int = 0, retry_for: float = 10.0,
                 retry_pause: float = 0.05) -> None:
        super().__init__(name=f"reader-{prefix}", daemon=True)
        self.port, self.writers = port, list(writers)
        self.interval, self.settle, self.timeout = interval, settle, timeout
        self.retry_for, self.retry_pause = retry_for, retry_pause
        self.tryagain = 0               # -TRYAGAIN answers retried (as a cluster client does)
        self.tryagain_texts: list[str] = []
        self.results: list[ReadResult] = []
        self.crashed: BaseException | None = None
        self._rng = random.Random(seed)
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def _pick(self) -> WriteResult | None:
        w = self._rng.choice(self.writers)
        acked = [r for r in w.snapshot()[-2000:] if r.ok and r.done <= time.monotonic() - self.settle]
        return self._rng.choice(acked) if acked else None

    def run(self) -> None:
        client = None
        try:
            while not self._halt.is_set():
                pick = self._pick()
                if pick is None:
                    self._halt.wait(self.interval)
                    continue
                sent = time.monotonic()
                while True:
                    try:
                        if client is None:
                            client = redis_client(self.port, decode=True, timeout=self.timeout)
                        got = client.get(pick.key)
                        r = ReadResult(pick.key, pick.value, got, sent, time.monotonic(),
                                       "ok" if got == pick.value else "wrong")
                    except redis.ResponseError as exc:
                        text = error_text(exc)
                        if retried_tryagain(self, text, sent):
                            continue
                        r = ReadResult(pick.key, pick.value, None, sent, time.monotonic(), "reply", text)
                    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                        r = ReadResult(pick.key, pick.value, None, sent, time.monotonic(), "conn",
                                       f"{type(exc).__name__}: {exc}")
                        client = None
                    break
                with self._lock:
                    self.results.append(r)
                left = self.interval - (time.monotonic() - sent)
                if left > 0:
                    self._halt.wait(left)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.crashed = exc

    def stop(self) -> Reader:
        self._halt.set()
        self.join(30)
        return self

    def snapshot(self) -> list[ReadResult]:
        with self._lock:
            return list(self.results)


class RetryingWriter(Writer):
    """A Writer that retries a -TRYAGAIN answer every `retry_pause` s for up to `retry_for` s
    (each counted in `tryagain`), as a cluster client does; a result then is the write's
    final outcome.

    With `tags` > 0 it writes `MSET {tag}:last V {tag}:N V` for `tags` hash tags in turn
    (one key that exists, one new: while the tag's slot migrates, Redis answers -TRYAGAIN
    when one is moved and the other not); the result's key is the new key `{tag}:N`.
    Otherwise it SETs unique keys `prefix:N`, as Writer does."""

    def __init__(self, port: int, prefix: str = "w", tags: int = 0, interval: float = 0.005,
                 retry_for: float = 10.0, retry_pause: float = 0.05, timeout: float = 10.0) -> None:
        super().__init__(port, prefix=prefix, interval=interval, timeout=timeout)
        self.tags = [f"{{{prefix}-t{i}}}" for i in range(tags)]
        self.retry_for, self.retry_pause = retry_for, retry_pause
        self.tryagain = 0
        self.tryagain_texts: list[str] = []

    def _run(self) -> None:
        i = 0
        client = None
        while not self._halt.is_set():
            if self.tags:
                tag = self.tags[i % len(self.tags)]
                key, value = f"{tag}:{i}", f"{self.prefix}-v{i}"
            else:
                tag, key, value = "", f"{self.prefix}:{i}", f"{self.prefix}-v{i}"
            i += 1
            sent = time.monotonic()
            r = None
            while True:
                try:
                    if client is None:
                        client = self.client = self.client_factory()
                    reply = client.mset({f"{tag}:last": value, key: value}) if tag else client.set(key, value)
                    r = WriteResult(key, value, sent, time.monotonic(), reply is True,
                                    None if reply is True else f"unexpected reply {reply!r}",
                                    "ok" if reply is True else "reply")
                except redis.ResponseError as exc:
                    text = error_text(exc)
                    if retried_tryagain(self, text, sent):
                        continue
                    r = WriteResult(key, value, sent, time.monotonic(), False, text, "reply")
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    r = WriteResult(key, value, sent, time.monotonic(), False, f"{type(exc).__name__}: {exc}", "conn")
                    client = None
                break
            with self._lock:
                self.results.append(r)
            left = self.interval - (time.monotonic() - sent)
            if left > 0:
                self._halt.wait(left)

    def last_values_ok(self, client: Any) -> list[str]:
        """Each tag's `last` key holds the value of its last acknowledged MSET or of a later one
        (whose reply was lost); returns the tags for which it does not."""
        bad = []
        order = {r.value: n for n, r in enumerate(self.snapshot())}
        for tag in self.tags:
            acked = [r for r in self.snapshot() if r.ok and r.key.startswith(tag + ":")]
            if not acked:
                continue
            got = client.get(f"{tag}:last")
            got = got.decode() if isinstance(got, bytes) else got
            if got not in order or order[got] < order[acked[-1].value]:
                bad.append(f"{tag}:last = {got!r}, last acknowledged {acked[-1].value!r}")
        return bad


__all__ = ["HOST", "ClusterNodes", "ReadResult", "Reader", "RetryingWriter", "ShardView", "ShardedProxyCluster",
           "key_in_shard", "longest_pause", "node_keys", "reply_error", "shard_writers", "slot_owners"]
