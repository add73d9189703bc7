"""Client workloads that record every acknowledged write (real redis-py clients).

Each workload is a thread with its own client (from a factory: a proxy's port,
or redis-py's Sentinel `master_for`), which it drops and re-creates after a
connection error.  An acknowledgement is a reply that says the write was done;
an error reply is a refusal; a connection error or a timeout leaves the write's
fate unknown (neither acknowledged nor lost).  What each one records:

* `PipelineWriter`  pipelines of SETs of unique keys            acked[key] = value
* `MultiWriter`     MULTI: SET a, SET b, INCR count, EXEC        acked pairs, count increments
* `LuaWriter`       EVAL: SET key, RPUSH log                      acked[key] = value, log members
* `CounterWriter`   INCR on a few counters                        acked increments per counter
* `QueueProducer`   LPUSH of unique items                         acked items
* `QueueConsumer`   BRPOP                                         delivered items (and in-flight losses)
* `PubSubClient`    SUBSCRIBE, get a PUBLISHed message, UNSUBSCRIBE, SET on the same connection
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

ClientFactory = Callable[[], Any]
BACKOFF_S = 0.05
LUA_SET_AND_LOG = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('RPUSH', KEYS[2], ARGV[1])"


@dataclass
class Ledger:
    """What one workload saw.  `acks` holds the done-time of every acknowledged write (for the
    longest gap without one); the typed records are read by the checker."""

    name: str
    kind: str
    values: dict[str, str] = field(default_factory=dict)         # key -> value it must hold
    members: dict[str, list[str]] = field(default_factory=dict)  # list key -> values it must contain
    increments: Counter = field(default_factory=Counter)         # counter key -> acked increments
    pushed: list[str] = field(default_factory=list)              # queue items acknowledged
    delivered: list[str] = field(default_factory=list)           # queue items received
    inflight_pops: int = 0                                       # BRPOPs that ended in a connection error
    messages: list[tuple[str, str]] = field(default_factory=list)   # (channel, payload) received
    published: dict[str, set] = field(default_factory=dict)         # channel -> payloads published
    acks: list[float] = field(default_factory=list)
    acked_at: dict[str, float] = field(default_factory=dict)    # key -> when its write was acknowledged
    refused: int = 0
    unknown: int = 0
    errors: Counter = field(default_factory=Counter)


class Workload(threading.Thread):
    kind = "workload"
    interval = 0.01

    def __init__(self, name: str, factory: ClientFactory) -> None:
        super().__init__(name=f"wl-{name}", daemon=True)
        self.factory = factory
        self.ledger = Ledger(name, self.kind)
        self.seq = 0
        self.client: Any = None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.crashed: BaseException | None = None

    # -- one operation; subclasses ---------------------------------------------------------
    def op(self, client: Any) -> None:
        raise NotImplementedError

    # -- loop --------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self._halt.is_set():
                t = time.monotonic()
                try:
                    if self.client is None:
                        self.client = self.factory()
                    self.op(self.client)
                except redis.ResponseError as exc:
                    self._error("refused", exc)
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    self._error("unknown", exc)
                    self._drop_client()
                    self._halt.wait(BACKOFF_S)
                except redis.RedisError as exc:          # e.g. Sentinel: no master found
                    self._error("unknown", exc)
                    self._drop_client()
                    self._halt.wait(BACKOFF_S)
                left = self.interval - (time.monotonic() - t)
                if left > 0:
                    self._halt.wait(left)
        except BaseException as exc:  # noqa: BLE001 - reported by the checker
            self.crashed = exc
        finally:
            self._drop_client()

    def _error(self, what: str, exc: Exception) -> None:
        with self._lock:
            if what == "refused":
                self.ledger.refused += 1
            else:
                self.ledger.unknown += 1
            self.ledger.errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
        self.on_error(what)

    def on_error(self, what: str) -> None:
        """Hook: a subclass forgets the state of the operation that failed."""

    def _drop_client(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001
                pass
            self.client = None

    def ack(self, *keys: str) -> None:
        t = time.monotonic()
        self.ledger.acks.append(t)
        for k in keys:
            self.ledger.acked_at[k] = t

    def stop_soon(self) -> None:
        """Ask the thread to end after its current operation."""
        self._halt.set()

    def stop(self, timeout: float = 20.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class PipelineWriter(Workload):
    kind = "pipeline"
    interval = 0.02
    batch = 8

    def op(self, client: Any) -> None:
        pipe = client.pipeline(transaction=False)
        batch = []
        for _ in range(self.batch):
            i = self.next_seq()
            key, value = f"{self.ledger.name}:{i}", f"v{i}"
            pipe.set(key, value)
            batch.append((key, value))
        results = pipe.execute(raise_on_error=False)
        for (key, value), r in zip(batch, results):
            if r is True:
                self.ledger.values[key] = value
                self.ack(key)
            elif isinstance(r, redis.ResponseError):
                self._error("refused", r)
            elif isinstance(r, Exception):
                self._error("unknown", r)


class MultiWriter(Workload):
    kind = "multi"
    interval = 0.02

    def prefix(self, seq: int) -> str:
        """The keys' prefix for write `seq` (the three keys of one write share it)."""
        return self.ledger.name

    def op(self, client: Any) -> None:
        i = self.next_seq()
        p = self.prefix(i)
        a, b, count = f"{p}:{i}:a", f"{p}:{i}:b", f"{p}:count"
        pipe = client.pipeline(transaction=True)
        pipe.set(a, f"v{i}")
        pipe.set(b, f"v{i}")
        pipe.incr(count)
        r = pipe.execute()
        if len(r) == 3 and r[0] is True and r[1] is True and isinstance(r[2], int):
            self.ledger.values[a] = self.ledger.values[b] = f"v{i}"
            self.ledger.increments[count] += 1
            self.ack(a, b)


class LuaWriter(Workload):
    kind = "lua"
    interval = 0.02

    def prefix(self, seq: int) -> str:
        """The keys' prefix for write `seq` (its key and the log share it)."""
        return self.ledger.name

    def op(self, client: Any) -> None:
        i = self.next_seq()
        p = self.prefix(i)
        key, log = f"{p}:{i}", f"{p}:log"
        r = client.eval(LUA_SET_AND_LOG, 2, key, log, f"v{i}")
        if isinstance(r, int) and r > 0:
            self.ledger.values[key] = f"v{i}"
            self.ledger.members.setdefault(log, []).append(f"v{i}")
            self.ack(key)


class CounterWriter(Workload):
    kind = "counter"
    interval = 0.01
    counters = 4

    def op(self, client: Any) -> None:
        i = self.next_seq()
        key = f"{self.ledger.name}:c{i % self.counters}"
        r = client.incr(key)
        if isinstance(r, int):
            self.ledger.increments[key] += 1
            self.ack()


QUEUE_KEY = "chaos:queue"


class QueueProducer(Workload):
    kind = "queue-push"
    interval = 0.02

    def op(self, client: Any) -> None:
        item = f"{self.ledger.name}:{self.next_seq()}"
        r = client.lpush(QUEUE_KEY, item)
        if isinstance(r, int) and r > 0:
            self.ledger.pushed.append(item)
            self.ack()


class QueueConsumer(Workload):
    kind = "queue-pop"
    interval = 0.0
    block_s = 1

    def op(self, client: Any) -> None:
        self._popping = True
        r = client.brpop(QUEUE_KEY, timeout=self.block_s)
        self._popping = False
        if r:
            _, item = r
            self.ledger.delivered.append(item)

    def on_error(self, what: str) -> None:
        # a BRPOP whose reply was lost may have removed one item that nobody saw
        if getattr(self, "_popping", False) and what == "unknown":
            self.ledger.inflight_pops += 1
        self._popping = False


class PubSubClient(Workload):
    """SUBSCRIBE a channel, PUBLISH to it on another connection, read the message (if it
    comes within a second), UNSUBSCRIBE, then SET a key on the SAME connection: after
    pub/sub mode ends, the connection must write where every other write goes."""

    kind = "pubsub"
    interval = 0.05

    def __init__(self, name: str, factory: ClientFactory) -> None:
        super().__init__(name, factory)
        self.conn: Any = None

    def op(self, client: Any) -> None:
        i = self.next_seq()
        channel = f"{self.ledger.name}:ch"
        payload = f"m{i}"
        conn = client.connection_pool.get_connection()
        try:
            conn.send_command("SUBSCRIBE", channel)
            self._expect(conn, "subscribe", channel)
            self.ledger.published.setdefault(channel, set()).add(payload)
            client.publish(channel, payload)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                if not conn.can_read(timeout=max(0.0, deadline - time.monotonic())):
                    break
                msg = conn.read_response()
                if isinstance(msg, list) and msg and _s(msg[0]) == "message":
                    self.ledger.messages.append((_s(msg[1]), _s(msg[2])))
                    if _s(msg[2]) == payload:
                        break
            conn.send_command("UNSUBSCRIBE", channel)
            self._expect(conn, "unsubscribe", channel)
            key, value = f"{self.ledger.name}:{i}", f"v{i}"
            conn.send_command("SET", key, value)
            r = conn.read_response()
            if _s(r) == "OK" or r is True:
                self.ledger.values[key] = value
                self.ack(key)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            client.connection_pool.release(conn)

    def _expect(self, conn: Any, kind: str, channel: str) -> None:
        """Read until the (un)subscribe confirmation; record messages that come first."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = conn.read_response()
            if isinstance(msg, list) and msg and _s(msg[0]) == kind:
                return
            if isinstance(msg, list) and msg and _s(msg[0]) == "message":
                self.ledger.messages.append((_s(msg[1]), _s(msg[2])))
        raise redis.TimeoutError(f"no {kind} confirmation")


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def standard_workloads(factories: list[ClientFactory]) -> list[Workload]:
    """One of each writer per endpoint (three endpoints: the three proxies), and a queue with a
    producer and a consumer on every endpoint."""
    out: list[Workload] = []
    for i, f in enumerate(factories, 1):
        out += [PipelineWriter(f"pipe{i}", f), MultiWriter(f"multi{i}", f), LuaWriter(f"lua{i}", f),
                CounterWriter(f"incr{i}", f), QueueProducer(f"qpush{i}", f), QueueConsumer(f"qpop{i}", f),
                PubSubClient(f"pubsub{i}", f)]
    return out
