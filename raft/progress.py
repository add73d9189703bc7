"""The leader's per-follower replication state (etcd's tracker.Progress).

PROBE: one AppendEntries at a time until the leader finds where the logs
match. REPLICATE: stream optimistically, at most ``max_inflight`` batches
unacknowledged. SNAPSHOT: an InstallSnapshot is outstanding.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.Enum):
    PROBE = 0  # one AppendEntries at a time until we find where the logs match
    REPLICATE = 1  # stream optimistically, up to max_inflight
    SNAPSHOT = 2  # an InstallSnapshot is outstanding


@dataclass(slots=True)
class Progress:
    """The leader's view of one follower."""

    next: int
    match: int = 0
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    inflight: deque[int] = field(default_factory=deque)  # last index of each outstanding batch
    recent_active: bool = False
    ack_ctx: int = -(10**9)  # highest leader tick echoed back (for the lease)
    peer_ctx: int = -1  # the follower's tick in its newest response: echoed, it bounds message delay
    peer_boot: int = -1  # echoed as echo_boot: -1 until a response with fboot arrived
    peer_ctx_at: int = -(10**9)  # our tick when it arrived
    commit_seen: int = 0  # the highest commit index it says we told it
    match_boot: int = 0  # the follower's boot id (fboot) in the reply that last raised match

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()
