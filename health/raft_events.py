"""Structured log events for Raft state changes as this proxy sees them.

The Raft driver does not log on its own; the control loop shows each step's
view of the consensus to `RaftEvents.observe`, which logs what changed:
leader elected or lost, members joined or removed, this proxy's write lease
lost or regained. One line per change, never one per step.
"""

from __future__ import annotations

import logging

log = logging.getLogger("health.raft")


def lease_lapse(consensus) -> tuple[int, str]:
    """The log level and reason of a lease that just lapsed: info and "applying" for the
    routine lapse every commit opens until it is applied here (see the write fence; a
    resharding commits every batch), warning and "lease" for a lease that ran out."""
    if consensus.lease_waits_for_apply():
        return logging.INFO, "applying"
    return logging.WARNING, "lease"


class RaftEvents:
    def __init__(self, node: str) -> None:
        self.node = node
        self._leader: str | None = None
        self._term = 0
        self._members: set[str] | None = None
        self._learners: set[str] | None = None
        self._lease: bool | None = None

    def observe(self, consensus) -> None:
        leader, term = consensus.leader_id, consensus.term
        if leader != self._leader or (leader is not None and term != self._term):
            if leader is not None:
                log.warning("event=leader_elected leader=%s term=%d self=%s role=%s", leader, term, self.node,
                            consensus.role)
            elif self._leader is not None:
                log.warning("event=leader_lost previous=%s term=%d self=%s", self._leader, term, self.node)
            self._leader = leader
        self._term = term

        members = set(consensus.members)
        if self._members is not None and members != self._members:
            for m in sorted(members - self._members):
                log.warning("event=member_added node=%s members=%s", m, ",".join(sorted(members)))
            for m in sorted(self._members - members):
                log.warning("event=member_removed node=%s members=%s", m, ",".join(sorted(members)))
        if members or self._members is not None:
            self._members = members

        learners = set(getattr(consensus, "learners", ()))
        if self._learners is not None and learners != self._learners:
            for m in sorted(learners - self._learners):
                log.warning("event=learner_added node=%s learners=%s", m, ",".join(sorted(learners)))
            for m in sorted(self._learners - learners):   # promoted (then also member_added) or removed
                log.warning("event=learner_removed node=%s learners=%s", m, ",".join(sorted(learners)))
        if learners or self._learners is not None or members:  # known once there is a membership
            self._learners = learners

        lease = bool(consensus.lease_held())
        if self._lease is not None and lease != self._lease:
            if lease:
                log.info("event=lease_regained self=%s role=%s term=%d", self.node, consensus.role, term)
            else:
                level, reason = lease_lapse(consensus)
                log.log(level, "event=lease_lost self=%s role=%s term=%d leader=%s reason=%s", self.node,
                        consensus.role, term, leader, reason)
        self._lease = lease
