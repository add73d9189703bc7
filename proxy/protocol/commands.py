"""Command classification: which commands are reads, writes, blocking, stateful.

The table is built from the upstream's own `COMMAND` reply (its flags), so
modules and new Redis versions are classified by Redis itself.  A small
built-in table covers the time before the first upstream answered.  Commands
the proxy has to treat specially (transactions, pub/sub, topology) are kept
as explicit data here rather than as ifs scattered through the session.
"""

from __future__ import annotations

from enum import IntEnum

from .keyspecs import Keys, KeySpec, key_positions, parse_key_specs


class Kind(IntEnum):
    SPECIAL = 0     # the session inspects it (handlers, containers, XREAD BLOCK)
    READ = 1        # may go to a replica
    WRITE = 2       # must go to the master
    ADMIN = 3       # not a data command: goes to the master
    BLOCKING = 4    # may block: needs a connection of its own


# Commands the proxy owns or refuses: they would change the topology or the
# proxy's own behaviour behind Raft's back.
REFUSED = {
    b"replicaof": "REPLICAOF is managed by redis-raft-proxy (the topology is agreed by Raft)",
    b"slaveof": "SLAVEOF is managed by redis-raft-proxy (the topology is agreed by Raft)",
    b"failover": "FAILOVER is managed by redis-raft-proxy: use `redis-raft-proxy failover --to NODE`",
    b"shutdown": "SHUTDOWN is not allowed through redis-raft-proxy",
    b"cluster": "CLUSTER is not supported: redis-raft-proxy serves a master-replica set",
    b"sentinel": "SENTINEL is not served on the data port of redis-raft-proxy",
    b"sync": "SYNC is not allowed through redis-raft-proxy",
    b"psync": "PSYNC is not allowed through redis-raft-proxy",
    b"debug": "DEBUG is not allowed through redis-raft-proxy",
    b"replconf": "REPLCONF is not allowed through redis-raft-proxy",
}

# Always blocking (may wait for data or replicas); XREAD/XREADGROUP only with BLOCK.
BLOCKING = frozenset({
    b"blpop", b"brpop", b"brpoplpush", b"blmove", b"blmpop", b"bzpopmin", b"bzpopmax",
    b"bzmpop", b"wait", b"waitaof",
})
BLOCK_OPTION = frozenset({b"xread", b"xreadgroup"})

# Commands that switch the connection into pub/sub or a reply stream: from then
# on the client talks to the master raw.
RAW_MODE = frozenset({
    b"subscribe", b"psubscribe", b"ssubscribe", b"unsubscribe", b"punsubscribe",
    b"sunsubscribe", b"monitor",
})

# Commands that pin the client to a connection of its own for session state.
TRANSACTION_START = frozenset({b"multi", b"watch"})

# Commands the session handles itself or changes state with (see session._HANDLERS).
SESSION_COMMANDS = frozenset({
    b"ping", b"echo", b"quit", b"select", b"multi", b"watch", b"exec", b"discard", b"unwatch",
    b"auth", b"hello", b"reset", b"client",
})

# Container commands whose subcommand decides the class (Redis 7 `a|b` names).
CONTAINERS = frozenset({
    b"object", b"memory", b"xinfo", b"config", b"client", b"script", b"function", b"pubsub",
    b"command", b"acl", b"latency", b"slowlog", b"module", b"cluster",
})

_FALLBACK_READ = b"""get getex? mget strlen getrange substr exists type ttl pttl expiretime pexpiretime
hget hmget hgetall hkeys hvals hlen hexists hstrlen hrandfield hscan
lrange lindex llen lpos sismember smismember smembers scard srandmember sscan sinter sunion sdiff
sintercard zrange zrangebyscore zrangebylex zrevrange zrevrangebyscore zrevrangebylex zscore
zmscore zrank zrevrank zcard zcount zlexcount zscan zrandmember zinter zunion zdiff zintercard
xrange xrevrange xlen xread xinfo|stream xinfo|groups xinfo|consumers xpending
keys scan randomkey dbsize dump getbit bitcount bitpos bitfield_ro pfcount geopos geodist
geohash georadius_ro georadiusbymember_ro geosearch sort_ro eval_ro evalsha_ro fcall_ro
lcs touch object|encoding object|freq object|idletime object|refcount memory|usage""".split()


def _builtin() -> dict[bytes, Kind]:
    table = {name.rstrip(b"?"): Kind.READ for name in _FALLBACK_READ}
    for name in BLOCKING:
        table[name] = Kind.BLOCKING
    return table


BUILTIN = _builtin()

# Commands MONITOR does not show (Redis' `admin` flag; `skip_monitor` ones, EVAL and FCALL,
# Redis shows all the same), until the upstream's own COMMAND reply is loaded.
_UNMONITORED = frozenset(b"""monitor debug config shutdown sync psync replconf replicaof slaveof failover
client|list client|kill client|pause client|unpause client|no-evict acl|log acl|setuser acl|deluser""".split())


class CommandTable:
    """Maps a lower-case command name (or `container|sub`) to its Kind.

    Unknown commands (modules the upstream did not list yet) are writes: they
    go to the master, which is always correct if not always fastest.
    """

    def __init__(self, table: dict[bytes, Kind] | None = None) -> None:
        self._table: dict[bytes, Kind] = dict(BUILTIN if table is None else table)
        self._specs: dict[bytes, tuple[KeySpec, ...]] = {}     # name (or `container|sub`) -> key specs
        self.single_key: frozenset[bytes] = frozenset()          # commands whose one key is argument 1
        self.unmonitored: frozenset[bytes] = _UNMONITORED        # not shown by MONITOR (admin)
        self.from_upstream = False
        self._build_fast()

    def _build_fast(self) -> None:
        """The name -> int map the command splitter uses (0: the session looks)."""
        fast = {name: int(kind) for name, kind in self._table.items() if b"|" not in name}
        for name in SESSION_COMMANDS | RAW_MODE | REFUSED.keys() | CONTAINERS | BLOCK_OPTION:
            fast[name] = int(Kind.SPECIAL)
        self.fast = fast

    def kind(self, name: bytes) -> Kind:
        return self._table.get(name, Kind.WRITE)

    def kind_sub(self, name: bytes, sub: bytes) -> Kind:
        full = name + b"|" + sub.lower()
        k = self._table.get(full)
        return k if k is not None else self._table.get(name, Kind.WRITE)

    def keys(self, name: bytes, args: list[bytes]) -> Keys | None:
        """Where the keys of `name args...` are (positions count the name as 0), from the
        command's key specs; None when it has none or the table is not loaded yet."""
        specs = None
        if name in CONTAINERS and args:
            specs = self._specs.get(name + b"|" + args[0].lower())
        if specs is None:
            specs = self._specs.get(name)
        if not specs:
            return None
        return key_positions(specs, [name, *args])

    def load_command_reply(self, reply: list) -> None:
        """Replace the table with one built from a decoded `COMMAND` reply."""
        table: dict[bytes, Kind] = {}
        specs: dict[bytes, tuple[KeySpec, ...]] = {}
        unmonitored: set[bytes] = set()
        for entry in reply:
            _add_entry(table, entry, b"", specs, unmonitored)
        for name in BLOCKING:
            table[name] = Kind.BLOCKING
        if table:
            self._table = table
            self._specs = specs
            self.single_key = frozenset(n for n, sp in specs.items() if b"|" not in n and _one_key_at_1(sp))
            self.unmonitored = frozenset(unmonitored)
            self.from_upstream = True
            self._build_fast()


def _one_key_at_1(specs: tuple[KeySpec, ...]) -> bool:
    """GET, SET, INCR, HSET ...: exactly one key, the first argument (cluster mode routes
    them without following the specs for every command)."""
    if len(specs) != 1:
        return False
    s = specs[0]
    return s.begin == "index" and s.index == 1 and s.find == "range" and s.lastkey == 0 and not s.incomplete


def _as_bytes(x) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()


def _add_entry(table: dict[bytes, Kind], entry: list, parent: bytes,
               specs: dict[bytes, tuple[KeySpec, ...]] | None = None, unmonitored: set[bytes] | None = None) -> None:
    name = _as_bytes(entry[0]).lower()
    if specs is not None and len(entry) > 8 and isinstance(entry[8], list) and entry[8]:
        specs[name] = parse_key_specs(entry[8])
    flags = {_as_bytes(f).lower() for f in entry[2]}
    if unmonitored is not None and b"admin" in flags:
        unmonitored.add(name)
    if b"write" in flags or b"may_replicate" in flags:
        kind = Kind.WRITE
    elif b"blocking" in flags and name not in BLOCK_OPTION:
        kind = Kind.BLOCKING
    elif b"readonly" in flags and b"admin" not in flags:
        kind = Kind.READ
    else:
        kind = Kind.ADMIN
    table[name] = kind
    # Redis 7: element 9 lists subcommands as full entries named `parent|sub`.
    if len(entry) > 9 and isinstance(entry[9], list):
        for sub in entry[9]:
            _add_entry(table, sub, name, specs, unmonitored)
