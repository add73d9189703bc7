"""Leases and fences (issue 12; safety rule 1 of the design): when a node may route
writes, and when a committed entry is fenced (no node can still hold a lease without
having applied it).

A leader holds a lease while a quorum acknowledged a message it sent within
`effective_lease_ticks`; it tells its followers, in each AppendEntries, how long theirs
runs. A follower counts its lease from the tick of the response that the leader echoes
back (`echo`, `echo_boot`), so a message that was long in flight vouches for nothing.
`writes_fenced` is what the application waits for before acting on an entry that a
proxy with a stale view would contradict (promoting a new Redis master while a lagging
proxy still writes to the old).

Pure like the rest of the core: a mixin of `raft.core.RaftCore`, whose state it reads
(`_now`, `role`, `commit`, `_applied`, `_prs`, the lease fields)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raft.messages import LEGACY_ECHO
from raft.roles import FOLLOWER, LEADER

if TYPE_CHECKING:
    from raft.messages import AppendEntries
    from raft.progress import Progress


class Leases:
    """The lease queries and updates of `RaftCore` (a mixin: the state is the core's)."""

    def lease_valid(self) -> bool:
        """True on a leader whose quorum acked a message sent within lease_ticks,
        that has committed an entry of its term, applied all it committed (an
        earlier leader may have acted on those entries) and is not handing over."""
        return self.role == LEADER and self._leader_lease_but_apply() and self._applied >= self.commit

    def follower_lease_valid(self) -> bool:
        """True on a follower whose leader, when it last wrote, said it held a lease
        that has not run out yet by this node's clock, measured from before that
        message was sent, and that has applied everything the leader said is
        committed (so its state machine is not behind what the leader acts on)."""
        return (self.role == FOLLOWER and self._follower_lease_but_apply()
                and self._applied >= self._leader_commit)

    def lease_ticks_left(self) -> int:
        """Ticks until the lease this node holds now runs out (0: it holds none); what a
        reader that cannot ask at every moment (the C data plane) may trust it for."""
        if self.lease_valid():
            return max(0, self._lease_until() - self._now)
        if self.follower_lease_valid():
            return max(0, self._follower_lease_until - self._now)
        return 0

    def lease_waits_for_apply(self) -> bool:
        """A lease that holds but for committed entries this node has not applied yet: the
        short lapse every commit opens, on the leader and on each follower, as opposed to
        a lease that ran out."""
        if self.role == LEADER:
            return self._leader_lease_but_apply() and self._applied < self.commit
        return (self.role == FOLLOWER and self._follower_lease_but_apply()
                and self._applied < self._leader_commit)

    def _leader_lease_but_apply(self) -> bool:
        """A leader's lease conditions except that it has applied what it committed."""
        return (self._transferee is None and self.log.term_at(self.commit) == self.term
                and self._now < self._lease_until())

    def _follower_lease_but_apply(self) -> bool:
        """A follower's lease conditions except that it has applied what its leader committed."""
        return self.leader_id is not None and self._now < self._follower_lease_until

    def writes_fenced(self, index: int) -> bool:
        """Leader: no node can hold a lease any more without having applied
        ``index``. True once ``index`` is committed and applied here and every
        peer (voters and learners alike: both route writes) has answered that it
        knows the commit (its lease then waits for its apply) and leases a node
        outside our configuration may hold have run out (a removed member, or
        one an earlier leader added), or once every lease
        handed out before the commit has run out. The application waits for this
        before acting on an entry that proxies with a stale view would contradict
        (promoting a new Redis master while a lagging proxy still writes to the old)."""
        if self.role != LEADER or self.commit < index or self._applied < index:
            return False
        at = next((t for i, t in self._commit_ticks if i >= index), None)
        if at is None:
            return True  # committed before the oldest record kept: long enough ago
        if self._now >= at + self.cfg.lease_outlives_ticks:
            return True
        if self._now < self._dropped_lease_end:
            return False  # a peer dropped from the configuration may still hold a lease
        return all(pr.commit_seen >= index or self._now >= self._lease_end(pr) for pr in self._prs.values())

    def _lease_end(self, pr: Progress) -> int:
        """The tick by which any lease this peer holds has run out unless we send
        it another. A lease from us needs an echo of its response, which we got at
        ``peer_ctx_at`` at the latest; one from an earlier leader ran out within
        ``lease_outlives_ticks`` of our election (a quorum that elected us had stopped
        acking it; a handover ends its lease at once)."""
        heard = pr.peer_ctx_at if pr.peer_ctx >= 0 else -(10**9)
        return max(self._leader_since, heard) + self.cfg.lease_outlives_ticks

    def _lease_until(self) -> int:
        prs, me, now = self._prs, self.id, self._now
        acks = [now if p == me else (prs[p].ack_ctx if p in prs else -(10**9)) for p in self.members]
        acks.sort(reverse=True)
        q = self.quorum()
        if len(acks) < q:
            return -(10**9)
        return acks[q - 1] + self.cfg.effective_lease_ticks

    def _lease_remaining(self) -> int:
        if self._transferee is not None or self.log.term_at(self.commit) != self.term:
            return 0
        return max(0, self._lease_until() - self._now)

    def _note_follower_lease(self, m: AppendEntries) -> None:
        self._leader_commit = max(self._leader_commit, m.commit)
        if m.ctx < self._leader_ctx_seen:
            return  # an older message overtaken by a newer one: its lease news is stale
        self._leader_ctx_seen = m.ctx
        if m.lease_ticks <= 0:
            self._follower_lease_until = 0  # the leader holds no lease (or is handing over)
        elif m.echo_boot == LEGACY_ECHO:
            # a leader of a version before echoes (a rolling upgrade): its rule,
            # the lease counted from arrival; writes_fenced cannot bound it
            self._follower_lease_until = self._now + m.lease_ticks - 1
        elif m.echo_boot == self._boot_id and 0 <= self._now - m.echo <= self.cfg.max_lease_delay_ticks:
            # The leader sent this after our response from tick ``echo`` reached it,
            # so it spent at most now - echo ticks in flight: counted from now, the
            # lease it carries outlasts the leader's by at most that much, and
            # writes_fenced waits for that.
            self._follower_lease_until = self._now + m.lease_ticks - 1
        # else: a message that may have been in flight too long vouches for nothing;
        # the lease of the last timely one stands
