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


def redirect(slot: Slot) -> bytes | None:
    """The `-MOVED ...` / `-ASK ...` line a finished slot holds, or None."""
    parts = slot.parts
    if parts and parts[0][:1] == b"-" and (parts[0][:7] == b"-MOVED " or parts[0][:5] == b"-ASK "):
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

    __slots__ = ("cuts", "following", "positions", "replies", "slots")

    def __init__(self, session, parent: Slot, count: int, slots: list[int]) -> None:
        super().__init__(session, parent, combine_first)
        self.positions: list[list[int]] = []    # per sub-slot: the client's command indexes in it
        self.cuts: list[list[int]] = []         # per sub-slot: where each command starts in its data, and the end
        self.slots = slots                      # per command: its key's hash slot
        self.replies: list[bytes] | None = None
        self.following: dict[int, RoutedSlot] = {}

    def add(self, sub: RoutedSlot, positions: list[int], cuts: list[int]) -> None:
        self.subs.append(sub)
        self.positions.append(positions)
        self.cuts.append(cuts)

    def slots_done(self) -> None:
        """Called from the upstream that read a sub-slot's (or a followed command's) last
        reply: on a connection other clients share, so nothing here may raise."""
        if self.parent.done or self.session.closed:
            return
        if self.replies is None:
            for sub in self.subs:
                if not sub.done:
                    return
            try:
                self._split()
            except (resp.ReplyError, ValueError) as exc:
                log.warning("event=pipeline_split_failed client=%s error=%r", self.session._peer(), exc)
                self._finish([b"-ERR proxy: the nodes' replies could not be split\r\n"] * len(self.slots))
                return
        for i, followed in list(self.following.items()):
            if not followed.done or self.session._follow(followed):
                return
            drop_prefix(followed)
            self.replies[i] = b"".join(followed.parts)
            del self.following[i]
        if not self.following:
            self._finish(self.replies)

    def _split(self) -> None:
        """Each sub-slot's replies to their commands' places; redirects sent on."""
        replies: list[bytes] = [b""] * len(self.slots)
        self.replies = replies
        redirected = []
        for sub, positions, cuts in zip(self.subs, self.positions, self.cuts, strict=True):
            raw = b"".join(sub.parts)
            pos = 0
            for j, i in enumerate(positions):
                end, left = resp.scan_replies(raw, pos, 1)
                if left:
                    raise ValueError(f"{len(positions)} replies expected, fewer came")
                reply = raw[pos:end]
                replies[i] = reply
                if reply[:1] == b"-" and (reply[:7] == b"-MOVED " or reply[:5] == b"-ASK "):
                    redirected.append((i, sub, j, cuts))
                pos = end
        for i, sub, j, cuts in redirected:
            followed = RoutedSlot(self, sub.data[cuts[j]:cuts[j + 1]], self.slots[i], sub.write)
            followed.parts = [replies[i]]
            followed.done = True
            if self.session._follow(followed):
                self.following[i] = followed
            else:
                replies[i] = b"".join(followed.parts)   # the redirect, or why it was not followed

    def _finish(self, replies: list[bytes]) -> None:
        self.parent.parts = [b"".join(replies)]
        self.parent.remaining = 0
        self.parent.done = True
        self.session.slots_done()
