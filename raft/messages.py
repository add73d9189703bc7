"""Raft data types: log entries, snapshots, hard state and the RPC messages.

Everything here is a frozen, slotted dataclass so that messages can be shared
between the core, the simulator and the transport without defensive copies.
The wire form lives in :mod:`raft.codec`; nothing here knows about JSON.

Node ids are strings. Every message carries ``term``, ``src`` and ``dst``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Union


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0  # application data, handed to the state machine
    CONFIG = 1  # a full membership configuration (JSON, see raft.core.encode_config)
    NOOP = 2  # appended by every new leader so it can commit an entry of its own term


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before a vote or an ack leaves the node."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine at ``index`` plus the membership in force there.

    ``members`` maps voter id -> address (an opaque string for the core; the
    driver uses it as the peer's admin base URL); ``learners`` the same for the
    non-voting learners (empty in snapshots taken before learners existed).
    """

    index: int
    term: int
    members: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    learners: dict[str, str] = field(default_factory=dict)

    def __hash__(self) -> int:  # dict field: hash by identity-free key
        return hash((self.index, self.term, tuple(sorted(self.members.items())), self.data,
                     tuple(sorted(self.learners.items()))))


@dataclass(frozen=True, slots=True)
class PreVote:
    """Asks whether the receiver *would* vote for ``src`` at ``term`` (term is not bumped)."""

    term: int
    src: str
    dst: str
    last_log_index: int
    last_log_term: int


@dataclass(frozen=True, slots=True)
class PreVoteResponse:
    term: int
    src: str
    dst: str
    granted: bool


@dataclass(frozen=True, slots=True)
class RequestVote:
    """``transfer`` is set when campaigning on a TimeoutNow: voters then ignore their lease."""

    term: int
    src: str
    dst: str
    last_log_index: int
    last_log_term: int
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    term: int
    src: str
    dst: str
    granted: bool


LEGACY_ECHO = 0


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Replication and heartbeat in one message.

    ``ctx`` is the leader's tick counter when it sent this message; the
    follower echoes it so the leader can measure its lease from send time.
    ``lease_ticks`` is how many more ticks the leader's lease is valid for at
    send time (0 if it holds none). ``echo``/``echo_boot`` return the newest
    ``fctx``/``fboot`` the leader has from this follower, which bounds how long
    this message can have been in flight: the follower takes a lease only from
    a message that cannot have been delayed long (Config.max_lease_delay_ticks).
    """

    term: int
    src: str
    dst: str
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    ctx: int = 0
    lease_ticks: int = 0
    echo: int = -1
    echo_boot: int = 0  # LEGACY_ECHO (absent): a leader that does not echo; -1: nothing to echo yet


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """``match_index`` is the last index known to match on success; on reject,
    ``reject_hint`` is the follower's last log index (to skip back quickly).
    ``fctx``/``fboot``: the follower's tick counter and boot id when it sent this.
    ``commit_seen``: the highest commit index this leader has told the follower."""

    term: int
    src: str
    dst: str
    success: bool
    match_index: int
    reject_index: int = 0
    reject_hint: int = 0
    ctx: int = 0
    fctx: int = -1
    fboot: int = 0
    commit_seen: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    term: int
    src: str
    dst: str
    snapshot: Snapshot
    ctx: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    term: int
    src: str
    dst: str
    match_index: int
    ctx: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Sent by a leader to its chosen successor: campaign now, skipping pre-vote."""

    term: int
    src: str
    dst: str


Message = Union[
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
]

MESSAGE_TYPES: tuple[type, ...] = (
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
)
