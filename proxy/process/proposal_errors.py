"""How an operator action whose Raft proposal failed is answered over the admin API.

Every route that proposes (a config change, a membership change, a cluster action)
answers the same failure the same way, and says whether the change may still happen:

- ``NotLeader``: 409 with the leader's name (the admin adds its URL; the CLI asks it
  once). The entry was not committed: it was never appended here, or a newer leader
  replaced it, so asking the leader again is safe.
- ``ProposalRejected``: 400 with the leader's reason (another membership change is
  pending, the node is already a voter, ...). Nothing was proposed.
- ``TimeoutError``: 503; the entry was appended but not applied in time, so it may
  still commit: look before asking again.
- ``RaftError`` or ``StorageError`` (this proxy's log cannot be written): 503.

Anything else is not a proposal's failure and is left to the caller.
"""

from __future__ import annotations

from raft.core import NotLeader, ProposalRejected, RaftError
from raft.storage import StorageError

PROPOSAL_ERRORS = (RaftError, StorageError, TimeoutError)     # (NotLeader and ProposalRejected are RaftErrors)


def proposal_failure(exc: BaseException, what: str) -> tuple[int, dict]:
    """The HTTP status and JSON body for ``what`` (e.g. "config change") having failed
    with ``exc``, one of PROPOSAL_ERRORS. A 409's body carries ``leader`` (may be None)."""
    if isinstance(exc, NotLeader):
        return 409, {"ok": False, "error": "not the Raft leader", "leader": exc.leader_hint}
    if isinstance(exc, ProposalRejected):
        return 400, {"ok": False, "error": f"{what} refused by the leader: {exc}"}
    if isinstance(exc, TimeoutError):
        return 503, {"ok": False, "error": f"{what} not confirmed in time; it may still be applied: "
                                           "check /status before asking again"}
    if isinstance(exc, (RaftError, StorageError)):
        return 503, {"ok": False, "error": f"{what} not done: {exc}"}
    raise TypeError(f"not a proposal error: {exc!r}")
