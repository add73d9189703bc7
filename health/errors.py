"""Why an operator's action did not happen: raised by the controllers, answered by the admin API."""

from __future__ import annotations


class NotLeaderError(Exception):
    """An operation only the Raft leader can do; `leader` says where to go."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the Raft leader (leader: {leader})")
        self.leader = leader


class CommitFailed(Exception):
    """An operator's change could not be committed (the proposal timed out, the leadership
    or the disk failed): nothing, or only the part the message names, took effect."""
