"""A pure Raft state machine in the style of etcd's raft.

No asyncio, no clock, no sockets, no global random. Time exists only as
``tick()`` calls; randomness comes from an injected ``random.Random``. The
driver loop is::

    core.tick() / core.step(msg) / core.propose(data)   # any number of times
    if core.has_ready():
        rd = core.ready()
        persist rd.snapshot_to_persist, rd.entries_to_persist, rd.hard_state (fsync if rd.must_sync)
        send rd.messages                  # only after the persist above
        restore/apply rd.committed_entries
        core.advance(rd)

``tick``/``step``/``propose`` may be called between ``ready()`` and
``advance()`` (the driver keeps ticking while the disk is slow); their effects
appear in the next Ready. Only one Ready is outstanding at a time.

Safety notes that are easy to get wrong (each has a regression test):

* Term and vote are in ``Ready.hard_state`` and every message in a Ready is
  sent only after it is persisted, so a restart can never vote twice.
* Messages from an older term are dropped (a stale vote is never counted).
* The leader counts replicas only to commit an entry of its own term
  (Raft paper, Figure 8); its own log counts only once it is durable, so a
  single node never reports an entry committed before its fsync.
* A membership change is accepted only when the leader has committed an entry
  of its term and no other change is pending; membership is the latest
  CONFIG entry in the log, committed or not (Raft thesis, 4.1).
* Pre-vote plus check-quorum: a node that heard from a leader within the
  election timeout ignores (pre-)votes, so a rejoining node cannot depose a
  healthy leader; a leader that has not heard from a quorum for an election
  timeout steps down, driven by ticks alone.
* Leases and writes_fenced (issue 12, ``raft/lease.py``): the leader's per-follower echo record
  changes only on replies that carry the echo fields (the answer to a stale-term
  message has none); a snapshot from the leader counts as applied only in
  ``advance``, after the driver restored the application; a leader of term > 1
  waits out leases that nodes outside its configuration may hold from an
  earlier leader.
"""

from __future__ import annotations

import collections
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from raft.cluster import new_cluster_id
from raft.lease import Leases
from raft.log import RaftLog
from raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)
from raft.progress import Progress, ProgressState
from raft.roles import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE


class RaftError(Exception):
    """Base of the errors the core raises to its caller."""


class NotLeader(RaftError):
    """Raised by proposals on a node that cannot accept them; ``leader_hint`` may be None."""

    def __init__(self, leader_hint: str | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader_hint})")
        self.leader_hint = leader_hint


class ProposalRejected(RaftError):
    """A leader refused a request (membership change or transfer) and says why."""


@dataclass(frozen=True, slots=True)
class Config:
    """Core tuning; all durations are in ticks.

    election_ticks: minimum election timeout; each node picks a random timeout
        in [election_ticks, 2*election_ticks). Also the check-quorum period and
        the window in which a node that heard from a leader ignores votes.
    heartbeat_ticks: the leader sends AppendEntries to every peer this often.
    pre_vote: run a pre-vote round before bumping the term.
    check_quorum: a leader steps down if it has not heard from a quorum within
        election_ticks, and followers ignore votes while they hear from a leader.
    lease_ticks: how long after sending a round the leader may rely on a quorum's
        ack for its lease; must be < election_ticks to leave margin for clock
        skew. Default: election_ticks - 2 (at least 1).
    max_inflight: AppendEntries with entries outstanding per follower.
    max_batch: entries per AppendEntries.
    snapshot_threshold: applied entries after the last snapshot that make
        ``should_snapshot()`` true.
    """

    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    lease_ticks: int | None = None
    max_inflight: int = 8
    max_batch: int = 64
    snapshot_threshold: int = 1000

    def validate(self) -> None:
        if self.heartbeat_ticks < 1:
            raise ValueError("heartbeat_ticks must be >= 1")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must be greater than heartbeat_ticks")
        if self.lease_ticks is not None and not 0 < self.lease_ticks < self.election_ticks:
            raise ValueError("lease_ticks must be in (0, election_ticks)")
        if self.max_inflight < 1 or self.max_batch < 1 or self.snapshot_threshold < 1:
            raise ValueError("max_inflight, max_batch and snapshot_threshold must be >= 1")

    @property
    def effective_lease_ticks(self) -> int:
        return self.lease_ticks if self.lease_ticks is not None else max(1, self.election_ticks - 2)

    @property
    def max_lease_delay_ticks(self) -> int:
        """A follower takes its lease only from a message that answers a response
        it sent at most this many ticks ago (so that message was not in flight
        longer): as long as the lease. With 30 ms between proxies the answer
        comes 3-5 ticks (of 50 ms) later, each peer's POSTs going one at a time,
        and more under full load; a shorter bound costs followers their lease."""
        return self.effective_lease_ticks

    @property
    def lease_outlives_ticks(self) -> int:
        """Ticks after a leader last sent a lease (or a term began) within which a
        follower may still hold one: the lease, the longest delay a follower
        accepts, one tick of margin. writes_fenced never waits longer."""
        return self.effective_lease_ticks + self.max_lease_delay_ticks + 1


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One single-server membership change. ``address`` is kept with the membership
    (the admin URL).

    ``add``: a new voter, or a learner promoted to voter; ``add_learner``: a new
    non-voting learner (etcd's model: it gets the log, snapshots and follower
    leases, never votes or campaigns, and is not counted for commit, the leader
    lease or check-quorum); ``promote``: a learner becomes a voter; ``remove``:
    a voter or a learner leaves."""

    op: str  # "add" | "add_learner" | "promote" | "remove"
    node_id: str
    address: str = ""


@dataclass(frozen=True, slots=True)
class StorageState:
    """What a node finds on disk when it starts."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class Ready:
    """Work for the driver, in order: persist, then send, then apply.

    ``snapshot_to_persist`` replaces the log prefix up to its index; if the
    stored entry at that index has another term (a snapshot from the leader
    that conflicts with the local log), every stored entry is discarded.
    ``entries_to_persist`` replaces stored entries from its first index on.
    ``committed_entries`` are durable locally and committed: apply them.

    When nothing but the commit index is to be persisted (``applies_early``), the
    driver may apply first and persist after (``RaftCore.applied_early``): the commit
    index is volatile state in Raft (a restarted node learns it again from its
    leader), and the entries to apply are on disk already. A follower's lease waits
    for that apply, so it no longer waits for an fsync as well.
    """

    hard_state: HardState | None
    entries_to_persist: tuple[Entry, ...]
    snapshot_to_persist: Snapshot | None
    messages: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    must_sync: bool

    @property
    def applies_early(self) -> bool:
        """Committed entries to apply, and nothing to persist but the commit index."""
        return bool(self.committed_entries) and not (self.must_sync or self.entries_to_persist
                                                     or self.snapshot_to_persist is not None)


def encode_members(members: Mapping[str, str], learners: Mapping[str, str] | None = None) -> bytes:
    """A CONFIG entry's data. ``learners`` appear only when there are some, so a
    configuration without learners encodes exactly as before learners existed (a
    node of that version reads it: rolling upgrades)."""
    doc: dict[str, dict[str, str]] = {"members": dict(sorted(members.items()))}
    if learners:
        doc["learners"] = dict(sorted(learners.items()))
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_members(data: bytes) -> dict[str, str]:
    """The voters of a CONFIG entry."""
    return dict(json.loads(data)["members"])


def decode_config(data: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """A CONFIG entry's (voters, learners)."""
    doc = json.loads(data)
    return dict(doc["members"]), dict(doc.get("learners") or {})


class RaftCore(Leases):
    """One Raft node's state machine. See the module docstring for the driver contract."""

    def __init__(
        self,
        node_id: str,
        peers: Mapping[str, str] | Iterable[str],
        storage_state: StorageState | None = None,
        rng: random.Random | None = None,
        config: Config | None = None,
        boot_id: int = 1,
        cluster_id: str = "",
        learners: Mapping[str, str] | None = None,
    ) -> None:
        """``peers`` is the bootstrap membership (id -> address, or ids), used only
        when storage holds no snapshot; pass an empty one to join an existing
        cluster (the node then waits to be added and contacted by its leader).
        ``boot_id`` (positive) differs on every start of the node (its tick
        counter restarts at 0, so a leader's echo of an older start must not count).
        ``cluster_id`` is the id of the cluster this node's data belongs to ("" while
        not known): see raft.cluster. A leader writes it into its NOOP entry (the
        first leader of a cluster chooses it); ``cluster_id`` is set once such an
        entry is applied. ``learners`` are bootstrap learners (id -> address), used
        like ``peers``."""
        if boot_id <= 0:
            raise ValueError("boot_id must be positive")
        self.id = node_id
        self._boot_id = boot_id
        self.cluster_id = cluster_id
        self.cfg = config or Config()
        self.cfg.validate()
        self._rng = rng if rng is not None else random.Random(0)
        st = storage_state or StorageState()
        members = dict(peers) if isinstance(peers, Mapping) else {p: "" for p in peers}
        snap = st.snapshot or Snapshot(index=0, term=0, members=members, data=b"", learners=dict(learners or {}))
        self.log = RaftLog(snap, st.entries)
        hs = st.hard_state
        self.term = hs.term
        self.vote: str | None = hs.vote
        self.commit = min(max(hs.commit, snap.index), self.log.last_index)
        self.role = FOLLOWER
        self.leader_id: str | None = None
        self.members: dict[str, str] = {}  # the voters
        self.learners: dict[str, str] = {}  # non-voting: replicated to and leased, never counted
        self.config_index = 0
        self._recompute_config()

        self._stable = self.log.last_index  # highest index known durable
        self._applied = snap.index
        self._persisted_hs = HardState(hs.term, hs.vote, hs.commit)
        self._pending_snapshot: Snapshot | None = None
        self._msgs: list[Message] = []
        self._ready_out = False

        self._now = 0  # ticks since start; only ever compared with itself
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        # Set by a driver that ticks on a shared grid of the clock (raft/node.py): tick
        # `_now` is that grid's tick number `_now + heartbeat_phase` (modulo
        # heartbeat_ticks), and a leader's heartbeats go at the grid's multiples of
        # heartbeat_ticks, when the driver wakes anyway. None: every heartbeat_ticks
        # ticks from the last (simulations).
        self.heartbeat_phase: int | None = None
        self._randomized_timeout = 0
        self._reset_randomized_timeout()
        # A restarted node may have acked a leader just before it crashed; do not
        # vote for anyone else until an election timeout passes, or that leader's
        # lease could overlap with a new one.
        self._boot_quiet = hs.term > 0
        self._votes: dict[str, bool] = {}
        self._prs: dict[str, Progress] = {}
        self._transferee: str | None = None
        self._follower_lease_until = 0
        self._leader_ctx_seen = -1
        self._leader_commit = 0  # highest commit index the current leader has told us
        # leader: (commit index, tick) each time commit advanced, for writes_fenced()
        self._commit_ticks: collections.deque[tuple[int, int]] = collections.deque()
        self._dropped_lease_end = -(10**9)
        self._leader_since = 0
        self._restate_members = False

    # ------------------------------------------------------------------ queries

    @property
    def commit_index(self) -> int:
        return self.commit

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def now(self) -> int:
        """Ticks since start."""
        return self._now

    @property
    def stable_index(self) -> int:
        return self._stable

    @property
    def transferee(self) -> str | None:
        return self._transferee

    @property
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    def quorum(self) -> int:
        return len(self.members) // 2 + 1

    def promotable(self) -> bool:
        return self.id in self.members

    def is_learner(self) -> bool:
        return self.id in self.learners

    def should_snapshot(self) -> bool:
        return self._pending_snapshot is None and self._applied - self.log.snapshot.index >= self.cfg.snapshot_threshold

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._now += 1
        if self._boot_quiet and self._now >= self.cfg.election_ticks:
            self._boot_quiet = False
        if self.role == LEADER:
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self.promotable() and self._election_elapsed >= self._randomized_timeout:
                self._election_elapsed = 0
                self._campaign(pre=self.cfg.pre_vote)

    def hasten_election(self, ticks: int) -> None:
        """Campaign once `ticks` more ticks pass without a leader, not after a whole randomized
        election timeout: for the one member a brand-new cluster picks to hold its first
        election, when nobody leads and nobody can be disrupted. Once only: the next timeout
        is randomized again, so a vote that fails is retried the usual way."""
        if self.role != LEADER and self.leader_id is None:
            self._randomized_timeout = min(self._randomized_timeout, self._election_elapsed + max(1, ticks))

    def propose(self, data: bytes) -> Entry:
        """Append application data; returns the entry (check its term when it applies)."""
        self._check_can_propose()
        return self._append_local(EntryKind.NORMAL, data)

    def propose_conf_change(self, cc: ConfChange) -> Entry:
        """Append a single-server membership change, or raise why not."""
        self._check_can_propose()
        if self.log.term_at(self.commit) != self.term:
            raise ProposalRejected("the leader has not yet committed an entry of its term")
        if self.config_index > self.commit:
            raise ProposalRejected("another membership change is pending")
        new = dict(self.members)
        learners = dict(self.learners)
        node = cc.node_id
        if cc.op in ("add", "promote"):
            if node in new:
                raise ProposalRejected(f"{node} is already a voter")
            if node in learners:
                address = learners.pop(node)
                new[node] = cc.address or address
            elif cc.op == "promote":
                raise ProposalRejected(f"{node} is not a learner")
            else:
                new[node] = cc.address
        elif cc.op == "add_learner":
            if node in new:
                raise ProposalRejected(f"{node} is already a voter")
            if node in learners:
                raise ProposalRejected(f"{node} is already a learner")
            learners[node] = cc.address
        elif cc.op == "remove":
            if node in learners:
                del learners[node]
            elif node not in new:
                raise ProposalRejected(f"{node} is not a member")
            elif len(new) == 1:
                raise ProposalRejected("cannot remove the last voter")
            else:
                del new[node]
        else:
            raise ProposalRejected(f"unknown membership operation {cc.op!r}")
        return self._append_local(EntryKind.CONFIG, encode_members(new, learners))

    def best_transferee(self) -> str | None:
        """Leader: the voter to hand leadership to: one that echoed one of the last two
        heartbeats before one that did not (a voter stopped a moment ago, in a rolling
        restart, still counts as active for the rest of the election timeout), then one that
        answered within this election timeout, then the most up to date; None if no other
        voter."""
        if self.role != LEADER:
            return None
        lately = self._now - 2 * self.cfg.heartbeat_ticks
        ranked = [(pr.ack_ctx >= lately, pr.recent_active, pr.match, peer) for peer, pr in self._prs.items()
                  if peer != self.id and peer in self.members]
        return max(ranked)[-1] if ranked else None

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to ``to``: bring it up to date, then send it TimeoutNow.
        Proposals are refused and the lease is void meanwhile; if ``to`` has not
        taken over within an election timeout, this leader steps down anyway."""
        if self.role != LEADER:
            raise NotLeader(self.leader_id)
        if to == self.id:
            return
        if to not in self.members:
            raise ProposalRejected(f"{to} is not a voting member")
        self._transferee = to
        self._election_elapsed = 0
        pr = self._prs[to]
        if pr.match == self.log.last_index:
            self._send(TimeoutNow(term=self.term, src=self.id, dst=to))
        else:
            self._send_append(to, empty_ok=True)

    def compact(self, data: bytes) -> Snapshot:
        """Take a snapshot at the applied index with the app's ``data``; the log
        prefix is dropped and the snapshot appears in the next Ready to persist."""
        idx = self._applied
        term = self.log.term_at(idx)
        if term is None or idx <= self.log.snapshot.index:
            raise RaftError("nothing to compact")
        members, learners = self._config_at(idx)
        snap = Snapshot(index=idx, term=term, members=members, data=data, learners=learners)
        self.log.compact(snap)
        self._pending_snapshot = snap
        return snap

    def step(self, m: Message) -> None:
        """Feed one message from the network."""
        if m.dst != self.id:
            return
        if m.term > self.term:
            if isinstance(m, (PreVote, RequestVote)):
                transfer = isinstance(m, RequestVote) and m.transfer
                if not transfer and self._in_lease():
                    return  # we hear from a leader: do not let this candidate disrupt it
            if isinstance(m, PreVote) or (isinstance(m, PreVoteResponse) and m.granted):
                pass  # pre-vote traffic never changes our term
            else:
                leader = m.src if isinstance(m, (AppendEntries, InstallSnapshot, TimeoutNow)) else None
                self._become_follower(m.term, leader)
        elif m.term < self.term:
            if isinstance(m, (AppendEntries, InstallSnapshot)):
                # Tell a stale leader about the newer term so it steps down.
                self._send(AppendEntriesResponse(self.term, self.id, m.src, success=False, match_index=0))
            elif isinstance(m, PreVote):
                self._send(PreVoteResponse(self.term, self.id, m.src, granted=False))
            return  # anything else from an older term, votes included, is ignored

        if isinstance(m, PreVote):
            self._handle_pre_vote(m)
        elif isinstance(m, RequestVote):
            self._handle_request_vote(m)
        elif isinstance(m, (PreVoteResponse, RequestVoteResponse)):
            self._handle_vote_response(m)
        elif isinstance(m, AppendEntries):
            self._accept_leader(m.src)
            self._note_follower_lease(m)
            self._handle_append(m)
        elif isinstance(m, InstallSnapshot):
            self._accept_leader(m.src)
            self._handle_snapshot(m)
        elif isinstance(m, AppendEntriesResponse):
            if self.role == LEADER:
                self._handle_append_response(m)
        elif isinstance(m, InstallSnapshotResponse):
            if self.role == LEADER:
                self._handle_snapshot_response(m)
        elif isinstance(m, TimeoutNow):
            if self.role == FOLLOWER and self.promotable():
                self._campaign(pre=False, transfer=True)

    # ------------------------------------------------------------------ Ready

    def has_ready(self) -> bool:
        if self._ready_out:
            return False
        phs = self._persisted_hs
        return bool(
            self._msgs
            or self._pending_snapshot is not None
            or self.log.last_index > self._stable
            or self.term != phs.term
            or self.vote != phs.vote
            or self.commit != phs.commit
            or min(self.commit, self._stable) > self._applied
        )

    def ready(self) -> Ready:
        if self._ready_out:
            raise RaftError("ready() called again before advance()")
        hs = self.hard_state
        hs_changed = hs != self._persisted_hs
        entries = self.log.slice(self._stable + 1, self.log.last_index)
        snap = self._pending_snapshot
        committed = self.log.slice(self._applied + 1, min(self.commit, self._stable))
        msgs = tuple(self._msgs)
        self._msgs.clear()
        self._ready_out = True
        must_sync = bool(
            entries
            or snap is not None
            or (hs_changed and (hs.term, hs.vote) != (self._persisted_hs.term, self._persisted_hs.vote))
        )
        return Ready(
            hard_state=hs if hs_changed else None,
            entries_to_persist=entries,
            snapshot_to_persist=snap,
            messages=msgs,
            committed_entries=committed,
            must_sync=must_sync,
        )

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied ``rd``."""
        self._ready_out = False
        if rd.hard_state is not None:
            self._persisted_hs = rd.hard_state
        if rd.snapshot_to_persist is not None:
            if self._pending_snapshot is rd.snapshot_to_persist:
                self._pending_snapshot = None
            self._stable = max(self._stable, min(rd.snapshot_to_persist.index, self.log.last_index))
            # The driver restored the application from it (a snapshot of our own was
            # taken at the applied index already).
            self._applied = max(self._applied, rd.snapshot_to_persist.index)
        # Entries persisted are durable only if the log still holds them (a newer
        # leader may have overwritten a suffix meanwhile); by log matching the
        # highest still-matching one vouches for everything below it.
        for e in reversed(rd.entries_to_persist):
            if self.log.term_at(e.index) == e.term:
                self._stable = max(self._stable, e.index)
                break
        self._count_applied(rd.committed_entries)
        if self.role == LEADER and self._maybe_commit():
            self._bcast_append()

    def applied_early(self, rd: Ready) -> None:
        """The driver applied ``rd``'s committed entries before persisting ``rd``, which
        it may do only when ``rd.applies_early``; it calls ``advance`` once persisted."""
        if not rd.applies_early:
            raise RaftError("applied_early() on a Ready with more than the commit index to persist")
        self._count_applied(rd.committed_entries)

    def _count_applied(self, committed: tuple[Entry, ...]) -> None:
        if committed:
            self._applied = max(self._applied, committed[-1].index)
            if not self.cluster_id:
                for e in committed:
                    if e.kind == EntryKind.NOOP and e.data:
                        self.cluster_id = e.data.decode()
                        break

    # ------------------------------------------------------------------ roles

    def _reset_randomized_timeout(self) -> None:
        et = self.cfg.election_ticks
        self._randomized_timeout = et + self._rng.randrange(et)

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.role = FOLLOWER
        self.leader_id = leader
        self._election_elapsed = 0
        self._reset_randomized_timeout()
        self._transferee = None
        self._prs = {}
        self._follower_lease_until = 0
        self._leader_ctx_seen = -1
        self._leader_commit = 0

    def _accept_leader(self, leader: str) -> None:
        if self.role != FOLLOWER:
            self._become_follower(self.term, leader)
        if self.leader_id != leader:
            self.leader_id = leader
            self._leader_ctx_seen = -1
            self._leader_commit = 0
        self._election_elapsed = 0

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if not self.promotable():
            return
        if pre:
            self.role = PRE_CANDIDATE
            self.leader_id = None
            vote_term = self.term + 1
        else:
            self.role = CANDIDATE
            self.term += 1
            self.vote = self.id
            self.leader_id = None
            vote_term = self.term
        self._election_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {self.id: True}
        if self._tally_won():
            self._on_won(pre)
            return
        for peer in sorted(self.members):
            if peer == self.id:
                continue
            if pre:
                self._send(PreVote(vote_term, self.id, peer, self.log.last_index, self.log.last_term))
            else:
                self._send(RequestVote(vote_term, self.id, peer, self.log.last_index, self.log.last_term, transfer))

    def _tally_won(self) -> bool:
        return sum(1 for p, g in self._votes.items() if g and p in self.members) >= self.quorum()

    def _on_won(self, pre: bool) -> None:
        if pre:
            self._campaign(pre=False)
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        self.role = LEADER
        self.leader_id = self.id
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._transferee = None
        self._prs = {p: Progress(next=self.log.last_index + 1) for p in (*self.members, *self.learners)
                     if p != self.id}
        self._leader_since = self._now
        # A node that is not (or no longer) in our configuration may hold a lease
        # from an earlier leader: one it removed, or one it added in an entry we do
        # not have. We cannot ask it, but every lease an earlier leader granted has
        # run out lease_outlives_ticks after our election (see _lease_end). In term 1
        # there was no earlier leader.
        first = self.term == 1
        self._dropped_lease_end = -(10**9) if first else self._leader_since + self.cfg.lease_outlives_ticks
        self._commit_ticks.clear()
        self._note_commit_tick()  # what is committed already counts as committed now
        self._append_local(EntryKind.NOOP, self._cluster_stamp().encode())

    def _cluster_stamp(self) -> str:
        """The cluster id our NOOP carries: the one we know, else the newest in our log
        (a predecessor's entry, not committed yet: keep its choice), else a new one."""
        if self.cluster_id:
            return self.cluster_id
        for e in reversed(self.log.entries):
            if e.kind == EntryKind.NOOP and e.data:
                return e.data.decode()
        return new_cluster_id(self._rng)

    def _in_lease(self) -> bool:
        if not self.cfg.check_quorum:
            return False
        if self._boot_quiet:
            return True
        return self.leader_id is not None and self._election_elapsed < self.cfg.election_ticks

    # ------------------------------------------------------------------ elections

    def _up_to_date(self, last_index: int, last_term: int) -> bool:
        return (last_term, last_index) >= (self.log.last_term, self.log.last_index)

    def _handle_pre_vote(self, m: PreVote) -> None:
        grant = m.term > self.term and self._up_to_date(m.last_log_index, m.last_log_term)
        self._send(PreVoteResponse(m.term if grant else self.term, self.id, m.src, granted=grant))

    def _handle_request_vote(self, m: RequestVote) -> None:
        can_vote = self.vote == m.src or (self.vote is None and self.leader_id is None)
        grant = can_vote and self._up_to_date(m.last_log_index, m.last_log_term)
        if grant:
            self.vote = m.src
            self._election_elapsed = 0
        self._send(RequestVoteResponse(self.term, self.id, m.src, granted=grant))

    def _handle_vote_response(self, m: PreVoteResponse | RequestVoteResponse) -> None:
        pre = isinstance(m, PreVoteResponse)
        if pre:
            if self.role != PRE_CANDIDATE or (m.granted and m.term != self.term + 1):
                return
        elif self.role != CANDIDATE:
            return
        self._votes.setdefault(m.src, m.granted)
        if self._tally_won():
            self._on_won(pre)
        elif sum(1 for p, g in self._votes.items() if not g and p in self.members) >= self.quorum():
            self._become_follower(self.term, None)

    # ------------------------------------------------------------------ follower side

    def _ack(self, m: AppendEntries, success: bool, match: int, reject_index: int = 0, reject_hint: int = 0) -> None:
        self._send(AppendEntriesResponse(self.term, self.id, m.src, success, match, reject_index, reject_hint,
                                         ctx=m.ctx, fctx=self._now, fboot=self._boot_id,
                                         commit_seen=self._leader_commit))

    def _handle_append(self, m: AppendEntries) -> None:
        if m.prev_index < self.commit:
            self._ack(m, True, self.commit)
            return
        if not self.log.match_term(m.prev_index, m.prev_term):
            self._ack(m, False, 0, reject_index=m.prev_index, reject_hint=min(m.prev_index, self.log.last_index))
            return
        for i, e in enumerate(m.entries):
            t = self.log.term_at(e.index)
            if t == e.term:
                continue
            if t is not None:
                if e.index <= self.commit:
                    raise AssertionError(f"{self.id}: leader tried to overwrite committed entry {e.index}")
                dropped = self.log.truncate_from(e.index)
                self._stable = min(self._stable, e.index - 1)
                if any(d.kind == EntryKind.CONFIG for d in dropped):
                    self._recompute_config()
            new = m.entries[i:]
            self.log.append(new)
            if any(d.kind == EntryKind.CONFIG for d in new):
                self._recompute_config()
            break
        last_new = m.prev_index + len(m.entries)
        self._commit_to(min(m.commit, last_new))
        self._ack(m, True, last_new)

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        self._follower_lease_until = 0  # this far behind, no lease until appends resume
        s = m.snapshot
        if s.index <= self.commit:
            match = self.commit
        elif self.log.match_term(s.index, s.term):
            self._commit_to(s.index)
            match = s.index
        else:
            self.log.restore(s)
            self.commit = s.index
            self._stable = s.index
            # Not applied yet: that happens when the driver restores the state
            # machine from the Ready that carries it (see advance).
            self._pending_snapshot = s
            self._recompute_config()
            match = s.index
        self._send(InstallSnapshotResponse(self.term, self.id, m.src, match, ctx=m.ctx))

    def _commit_to(self, index: int) -> None:
        self.commit = max(self.commit, index)

    # ------------------------------------------------------------------ leader side

    def _check_can_propose(self) -> None:
        if self.role != LEADER:
            raise NotLeader(self.leader_id)
        if self._transferee is not None:
            raise NotLeader(self._transferee)

    def _append_local(self, kind: EntryKind, data: bytes) -> Entry:
        e = Entry(term=self.term, index=self.log.last_index + 1, kind=kind, data=data)
        self.log.append([e])
        if kind == EntryKind.CONFIG:
            self._recompute_config()
        self._maybe_commit()  # can matter only when our own removal was the last pending step
        self._bcast_append(empty_ok=False)
        return e

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.cfg.election_ticks:
            self._election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self._become_follower(self.term, None)
                return
            for pr in self._prs.values():
                pr.recent_active = False
            if self._transferee is not None:
                # The transfer did not finish within an election timeout. A TimeoutNow
                # may still be in flight, and the campaign it starts overrides
                # followers' leases, so this leader may never again claim a lease in
                # this term: step down and let an election settle it.
                self._become_follower(self.term, None)
                return
        if self.heartbeat_phase is None:
            beat = self._heartbeat_elapsed >= self.cfg.heartbeat_ticks
        else:
            beat = (self._now + self.heartbeat_phase) % self.cfg.heartbeat_ticks == 0
        if beat:
            self._heartbeat_elapsed = 0
            self._maybe_restate_members()
            for peer, pr in self._prs.items():
                if pr.state == ProgressState.SNAPSHOT:
                    self._send_snapshot(peer)
                    continue
                if pr.state == ProgressState.REPLICATE and len(pr.inflight) >= self.cfg.max_inflight:
                    pr.inflight.popleft()  # maybe lost: make room so replication cannot wedge
                pr.probe_sent = False
                self._send_append(peer, empty_ok=True)
                if peer == self._transferee and pr.match == self.log.last_index:
                    self._send(TimeoutNow(self.term, self.id, peer))

    def _maybe_restate_members(self) -> None:
        """A follower with an empty log learns who the members are only from a CONFIG
        entry or a snapshot. While the membership is still the bootstrap one (in the
        snapshot at index 0, no CONFIG entry in the log), a member that came back
        with an empty data dir (``--join``, its own membership empty) would catch up
        and never know it is a member, nor campaign: write the membership once."""
        if (self._restate_members and self.log.snapshot.index == 0 and self.config_index == 0
                and self.log.term_at(self.commit) == self.term):
            self._restate_members = False
            self._append_local(EntryKind.CONFIG, encode_members(self.members, self.learners))

    def _quorum_active(self) -> bool:
        active = sum(1 for p in self.members if p == self.id or (p in self._prs and self._prs[p].recent_active))
        return active >= self.quorum()

    def _bcast_append(self, empty_ok: bool = True) -> None:
        for peer in self._prs:
            self._send_append(peer, empty_ok=empty_ok)

    def _send_append(self, peer: str, empty_ok: bool) -> bool:
        """Send the next batch to ``peer`` if its progress allows; True if entries went out."""
        pr = self._prs.get(peer)
        if pr is None:  # we stepped down (or it left the configuration) meanwhile
            return False
        if pr.state == ProgressState.SNAPSHOT:
            return False
        if pr.state == ProgressState.PROBE and pr.probe_sent:
            return False
        if pr.state == ProgressState.REPLICATE and len(pr.inflight) >= self.cfg.max_inflight:
            return False
        prev = pr.next - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            if prev > self.log.last_index:  # should not happen; resynchronise
                pr.next = self.log.last_index + 1
                pr.become_probe()
                return False
            self._send_snapshot(peer)
            return True
        entries = self.log.slice(pr.next, pr.next + self.cfg.max_batch - 1)
        if not entries and not empty_ok:
            return False
        self._send(
            AppendEntries(
                self.term,
                self.id,
                peer,
                prev,
                prev_term,
                entries,
                self.commit,
                ctx=self._now,
                lease_ticks=self._lease_remaining(),
                echo=pr.peer_ctx,
                echo_boot=pr.peer_boot,
            )
        )
        if pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        elif entries:
            pr.next = entries[-1].index + 1
            pr.inflight.append(entries[-1].index)
        return bool(entries)

    def _send_snapshot(self, peer: str) -> None:
        pr = self._prs[peer]
        pr.state = ProgressState.SNAPSHOT
        pr.inflight.clear()
        self._send(InstallSnapshot(self.term, self.id, peer, self.log.snapshot, ctx=self._now))

    def _pump(self, peer: str) -> None:
        while self._send_append(peer, empty_ok=False):
            pass

    def _handle_append_response(self, m: AppendEntriesResponse) -> None:
        pr = self._prs.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.ack_ctx = max(pr.ack_ctx, m.ctx)
        self._note_echo(pr, m)
        pr.commit_seen = max(pr.commit_seen, m.commit_seen)
        if m.success:
            if m.match_index > pr.match:
                pr.match = m.match_index
                pr.match_boot = m.fboot
                pr.next = max(pr.next, pr.match + 1)
                if pr.state != ProgressState.REPLICATE:
                    pr.become_replicate()
                while pr.inflight and pr.inflight[0] <= pr.match:
                    pr.inflight.popleft()
                if self._maybe_commit():
                    self._bcast_append()
                if self._transferee == m.src and pr.match == self.log.last_index:
                    self._send(TimeoutNow(self.term, self.id, m.src))
            elif pr.state == ProgressState.PROBE:
                pr.probe_sent = False
            self._pump(m.src)
            return
        if m.reject_hint == 0:
            self._restate_members = True  # an empty follower: see _maybe_restate_members
        if m.reject_index <= pr.match:
            if 0 < m.fboot != pr.match_boot and m.reject_hint < pr.match:
                # Another start of the follower lacks entries it had acknowledged: its
                # data dir was lost and it came back empty (with --join; without it,
                # raft.cluster stops it). Nothing to undo; replicate them again.
                pr.match = m.reject_hint
                pr.match_boot = m.fboot
                pr.next = m.reject_hint + 1
                pr.become_probe()
                self._send_append(m.src, empty_ok=True)
            return  # else stale
        if pr.state == ProgressState.REPLICATE or (
            pr.state == ProgressState.PROBE and m.reject_index == pr.next - 1
        ):
            pr.next = max(pr.match + 1, min(m.reject_index, m.reject_hint + 1))
            pr.become_probe()
            self._send_append(m.src, empty_ok=True)

    def _note_echo(self, pr: Progress, m: AppendEntriesResponse) -> None:
        """Record the follower's clock from a reply that carries it, for the next echo.

        Only valid fields count: the answer to a message from an older term (and a
        peer of the version before echoes) carries none, and taking that would both
        make _lease_end forget the lease this peer holds and send it the legacy
        marker, so its next lease would be timed from arrival. Within one start of
        the follower its clock only grows (a reordered older reply does not move it
        back); ``peer_ctx_at`` only grows too, so the lease bound never shrinks."""
        if m.fboot <= 0 or m.fctx < 0:
            return
        if m.fboot != pr.peer_boot or m.fctx > pr.peer_ctx:
            pr.peer_ctx, pr.peer_boot = m.fctx, m.fboot
        pr.peer_ctx_at = max(pr.peer_ctx_at, self._now)

    def _handle_snapshot_response(self, m: InstallSnapshotResponse) -> None:
        pr = self._prs.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.ack_ctx = max(pr.ack_ctx, m.ctx)
        pr.match = max(pr.match, m.match_index)
        pr.next = pr.match + 1
        pr.become_probe()
        if self._maybe_commit():
            self._bcast_append()
        self._send_append(m.src, empty_ok=True)

    def _note_commit_tick(self) -> None:
        ticks = self._commit_ticks
        ticks.append((self.commit, self._now))
        horizon = self._now - self.cfg.lease_outlives_ticks
        while len(ticks) > 1 and ticks[1][1] <= horizon:
            ticks.popleft()  # the oldest entry stays: it answers for everything at or below it

    def _maybe_commit(self) -> bool:
        """Advance commit to the quorum match, but only onto an entry of this term (Figure 8)."""
        matches = sorted(
            (self._stable if p == self.id else (self._prs[p].match if p in self._prs else 0)) for p in self.members
        )
        matches.reverse()
        q = self.quorum()
        if len(matches) < q:
            return False
        idx = matches[q - 1]
        if idx <= self.commit or self.log.term_at(idx) != self.term:
            return False
        self.commit = idx
        self._note_commit_tick()
        if self.id not in self.members and self.config_index <= self.commit:
            # Our own removal is committed: stop leading (Raft thesis 4.2.2).
            self._become_follower(self.term, None)
        return True

    # ------------------------------------------------------------------ membership

    def _recompute_config(self) -> None:
        """Membership is the latest CONFIG entry in the log, else the snapshot's."""
        for e in reversed(self.log.entries):
            if e.kind == EntryKind.CONFIG:
                self._set_members(*decode_config(e.data), e.index)
                return
        snap = self.log.snapshot
        self._set_members(dict(snap.members), dict(snap.learners), snap.index)

    def _config_at(self, index: int) -> tuple[dict[str, str], dict[str, str]]:
        for e in reversed(self.log.slice(self.log.first_index, index)):
            if e.kind == EntryKind.CONFIG:
                return decode_config(e.data)
        return dict(self.log.snapshot.members), dict(self.log.snapshot.learners)

    def _set_members(self, members: dict[str, str], learners: dict[str, str], index: int) -> None:
        self.members = members
        self.learners = learners
        self.config_index = index
        if self.role == LEADER:
            for p in (*members, *learners):
                if p != self.id and p not in self._prs:
                    self._prs[p] = Progress(next=self.log.last_index + 1)
            for p in list(self._prs):
                if p not in members and p not in learners:
                    # a removed voter or learner may still hold a lease: writes_fenced waits it out
                    self._dropped_lease_end = max(self._dropped_lease_end, self._lease_end(self._prs.pop(p)))
            if self._transferee is not None and self._transferee not in members:
                self._transferee = None

    # ------------------------------------------------------------------ output

    def _send(self, m: Message) -> None:
        self._msgs.append(m)
