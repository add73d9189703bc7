"""Cluster mode: one client command served by several node commands, the replies
combined into one (routing/split.py's plans, and the keyless commands that mean the
whole cluster: DBSIZE, KEYS, SCAN, FLUSHALL, RANDOMKEY, WAIT ...).

A `FanOut` owns the node commands' reply slots (it stands in for the session as their
owner); once every one is complete it writes the combined reply into the client's
slot and lets the session deliver in order. Combining works on the raw replies where
it can (an error, +OK, arrays concatenated), so values are never re-encoded.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import hiredis

from ..protocol import resp
from ..routing.keyslot import key_slots_py
from ..routing.split import Plan, merge_replies
from ..upstream import Slot
from .common import bulk

Combine = Callable[[list[bytes]], bytes]

log = logging.getLogger(__name__)


class RoutedSlot(Slot):
    """The reply slot of one node command in cluster mode: the session follows a MOVED
    or ASK it gets (`ClusterSession._follow`) before anyone sees it. `skip`: replies of
    the proxy's own prefix (ASKING, MULTI ... QUEUED) dropped before delivery."""

    __slots__ = ("data", "hops", "skip", "slot", "write")

    def __init__(self, owner, data: bytes, slot: int | None, write: bool, remaining: int = 1,
                 skip: int = 0) -> None:
        super().__init__(owner, remaining)
        self.data = data
        self.slot = slot
        self.write = write
        self.hops = 0
        self.skip = skip


def is_redirect(reply: bytes) -> bool:
    """A node's `-MOVED ...` or `-ASK ...` (at the start of `reply`)."""
    return reply[:7] == b"-MOVED " or reply[:5] == b"-ASK "


def redirect(slot: Slot) -> bytes | None:
    """The `-MOVED ...` / `-ASK ...` line a finished slot holds, or None."""
    parts = slot.parts
    if parts and parts[0][:1] == b"-" and is_redirect(parts[0]):
        return b"".join(parts).split(b"\r\n", 1)[0]
    return None


def drop_prefix(slot: RoutedSlot) -> None:
    """Remove the first `slot.skip` replies (the proxy's own prefix commands)."""
    if not slot.skip:
        return
    data = b"".join(slot.parts)
    end, _ = resp.scan_replies(data, 0, slot.skip)
    slot.parts = [data[end:]]
    slot.skip = 0


class FanOut:
    """Owner of the sub-slots of one client command; fills `parent` when all are done."""

    __slots__ = ("combine", "parent", "session", "subs")

    def __init__(self, session, parent: Slot, combine: Combine) -> None:
        self.session = session
        self.parent = parent
        self.subs: list[RoutedSlot] = []
        self.combine = combine

    # the part of a session an Upstream talks to: reply bytes count against the client's limit
    @property
    def closed(self) -> bool:
        return self.session.closed

    @property
    def queued(self) -> int:
        return self.session.queued

    @queued.setter
    def queued(self, n: int) -> None:
        self.session.queued = n

    @property
    def output_limit(self) -> int:
        return self.session.output_limit

    def output_overflow(self) -> None:
        self.session.output_overflow()

    def slots_done(self) -> None:
        """Called from the upstream that read a sub-slot's last reply: on a connection other
        clients share, so nothing here may raise (uvloop would close it under them)."""
        if self.parent.done or self.session.closed:
            return      # (a closed client's replies are not kept: there is nothing to combine)
        for sub in self.subs:
            if not sub.done:
                return
            if self.session._follow(sub):
                return
        for sub in self.subs:
            drop_prefix(sub)
        raws = [b"".join(s.parts) for s in self.subs]
        try:
            combined = self.combine(raws)
        except (ValueError, TypeError, IndexError, hiredis.ProtocolError) as exc:
            log.warning("event=fanout_combine_failed client=%s error=%r replies=%r", self.session._peer(), exc,
                        [r[:60] for r in raws])
            combined = b"-ERR proxy: the nodes' replies could not be combined\r\n"
        self.parent.parts = [combined]
        self.parent.remaining = 0
        self.parent.done = True
        self.session.slots_done()


# -- combining replies ---------------------------------------------------------------

def parse(raw: bytes):
    r = hiredis.Reader()
    r.feed(raw)
    return r.gets()


def first_error(raws: list[bytes]) -> bytes | None:
    for raw in raws:
        if raw[:1] == b"-":
            return raw
    return None


def _error_first(fn: Combine) -> Combine:
    def combine(raws: list[bytes]) -> bytes:
        err = first_error(raws)
        return err if err is not None else fn(raws)
    return combine


@_error_first
def combine_first(raws: list[bytes]) -> bytes:
    """Every node did it (FLUSHALL, SCRIPT LOAD ...): the first reply."""
    return raws[0]


@_error_first
def combine_sum(raws: list[bytes]) -> bytes:
    return b":%d\r\n" % sum(int(parse(r)) for r in raws)


@_error_first
def combine_min(raws: list[bytes]) -> bytes:
    return b":%d\r\n" % min(int(parse(r)) for r in raws)


@_error_first
def combine_concat(raws: list[bytes]) -> bytes:
    """Arrays (KEYS) joined into one."""
    total, bodies = 0, []
    for raw in raws:
        head, _, body = raw.partition(b"\r\n")
        n = int(head[1:])
        if n > 0:
            total += n
            bodies.append(body)
    return b"*%d\r\n" % total + b"".join(bodies)


def combine_random(raws: list[bytes]) -> bytes:
    """RANDOMKEY: a key from a random node that has one."""
    err = first_error(raws)
    if err is not None:
        return err
    found = [r for r in raws if parse(r) is not None]
    return random.choice(found) if found else raws[0]


def combine_plan(p: Plan, resp3: bool) -> Combine:
    """A split plan's merge (MGET's values back in key order, DEL's sum, MSET's OK)."""
    def combine(raws: list[bytes]) -> bytes:
        err = first_error(raws)
        if err is not None:
            return err
        if p.merge == "ok":
            return raws[0]
        merged = merge_replies(p, [parse(r) for r in raws])
        if p.merge == "sum":
            return b":%d\r\n" % merged
        return b"*%d\r\n" % len(merged) + b"".join(bulk(v, resp3) for v in merged)
    return combine


# -- SCAN over every shard ---------------------------------------------------------------
# The client's cursor carries the shard: (node cursor << SHARD_BITS) | shard index, in the
# shards' sorted order. A shard's walk ends when its node returns 0; the next shard starts.

SHARD_BITS = 10


def scan_cursor(cursor: int) -> tuple[int, int]:
    """(shard index, node cursor) of a client's SCAN cursor."""
    return cursor & ((1 << SHARD_BITS) - 1), cursor >> SHARD_BITS


def combine_scan(index: int, shards: int) -> Combine:
    def combine(raws: list[bytes]) -> bytes:
        raw = raws[0]
        if raw[:1] == b"-":
            return raw
        node_cursor, keys = parse(raw)
        nxt = int(node_cursor)
        if nxt:
            cursor = (nxt << SHARD_BITS) | index
        else:
            cursor = index + 1 if index + 1 < shards else 0
        c = str(cursor).encode()
        return b"*2\r\n" + bulk(c) + b"*%d\r\n" % len(keys) + b"".join(bulk(k) for k in keys)
    return combine


# -- a pipeline split over the shards ------------------------------------------------------

class PipelineFan(FanOut):
    """The replies of a run of single-key commands a client pipelined, sent to their shards
    as one batch per shard (`ClusterSession._route_group`): once every batch is answered,
    the replies go back into the client's order, each MOVED or ASK among them followed for
    its command alone first (`ClusterSession._follow`), as if each had been sent alone."""

    __slots__ = ("count", "following", "names", "positions", "replies")

    def __init__(self, session, parent: Slot, count: int, names: frozenset[bytes]) -> None:
        super().__init__(session, parent, combine_first)
        self.count = count
        self.names = names                      # the commands the batches may hold (to find them again)
        self.positions: list[list[int]] = []    # per sub-slot: the indexes of its commands in the run
        self.replies: list[bytes] | None = None     # once a redirect is being followed
        self.following: dict[int, RoutedSlot] = {}

    def add(self, sub: RoutedSlot, positions: list[int]) -> None:
        self.subs.append(sub)
        self.positions.append(positions)

    def slots_done(self) -> None:
        """Called from the upstream that read a sub-slot's (or a followed command's) last
        reply: on a connection other clients share, so nothing here may raise."""
        if self.parent.done or self.session.closed:
            return
        try:
            if self.replies is None:
                for sub in self.subs:
                    if not sub.done:
                        return
                raws = [b"".join(sub.parts) for sub in self.subs]
                joined = interleave_replies(raws, self.positions, self.count)
                if joined is not None:
                    self._finish(joined)
                    return
                self._follow_redirects(raws)
        except (resp.ReplyError, ValueError) as exc:
            log.warning("event=pipeline_split_failed client=%s error=%r", self.session._peer(), exc)
            self._finish(b"-ERR proxy: the nodes' replies could not be split\r\n" * self.count)
            return
        for i, followed in list(self.following.items()):
            if not followed.done or self.session._follow(followed):
                return
            drop_prefix(followed)
            self.replies[i] = b"".join(followed.parts)
            del self.following[i]
        if not self.following:
            self._finish(b"".join(self.replies))

    def _follow_redirects(self, raws: list[bytes]) -> None:
        """Some node answered MOVED or ASK (a slot moved behind the proxies' back): every
        reply to its place, and each redirected command sent on alone."""
        replies: list[bytes] = [b""] * self.count
        self.replies = replies
        for sub, positions, raw in zip(self.subs, self.positions, raws, strict=True):
            found = key_slots_py(sub.data, 0, len(sub.data), self.names)
            if found is None or len(found) != 2 * len(positions):
                raise ValueError("a batch's commands could not be found again")
            start = 0
            for j, (i, reply) in enumerate(zip(positions, resp.split_replies(raw, len(positions)), strict=True)):
                replies[i] = reply
                cmd_end = found[2 * j]
                if is_redirect(reply):
                    followed = RoutedSlot(self, sub.data[start:cmd_end], found[2 * j + 1], sub.write)
                    followed.parts = [reply]
                    followed.done = True
                    if self.session._follow(followed):
                        self.following[i] = followed
                    else:
                        replies[i] = b"".join(followed.parts)   # the redirect, or why it was not followed
                start = cmd_end

    def _finish(self, replies: bytes) -> None:
        self.parent.parts = [replies]
        self.parent.remaining = 0
        self.parent.done = True
        self.session.slots_done()


def interleave_replies_py(raws: list[bytes], positions: list[list[int]], count: int) -> bytes | None:
    """The replies of a pipeline's per-shard batches (raws[i]: to the commands at
    positions[i] of the run) back in the run's order; None when one is a MOVED or ASK.
    The reference for the C version in protocol/_speedups.c."""
    out: list[bytes | None] = [None] * count
    for raw, batch in zip(raws, positions, strict=True):
        pos = 0
        for i in batch:     # reply by reply, as the C version checks them
            if not 0 <= i < count or out[i] is not None:
                raise ValueError("interleave_replies: positions out of range or repeated")
            end, left = resp.scan_replies(raw, pos, 1)
            if left:
                raise resp.ReplyError("fewer replies than commands")
            reply = raw[pos:end]
            if is_redirect(reply):
                return None
            out[i] = reply
            pos = end
    if any(r is None for r in out):
        raise ValueError("interleave_replies: a position has no reply")
    return b"".join(out)


interleave_replies = resp.speedup("interleave_replies", interleave_replies_py)
