"""Maintenance mode and the failover history: replicated records and pure decisions.

Both live in the Raft state (`health.state_machine`), so every proxy shows the same
and a new leader honours a pause its predecessor committed.

* `Pause`: no automatic failover while it is in effect (an operator's switchover,
  `failover --to`, still works). It may carry an expiry, a wall-clock time judged by
  the leader alone (`pause_expired`): the leader then commits the resume.
* `FailoverRecord`: one change of master (failover or switchover), committed by the
  leader right after the new topology; the state machine keeps the last `HISTORY_MAX`.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

HISTORY_MAX = 100       # records kept in the replicated state (oldest dropped first)

# why the master changed (FailoverRecord.cause)
OBJECTIVELY_DOWN = "objectively_down"
BUSY = "busy"
RESTARTED_EMPTY = "restarted_empty"
MANUAL = "manual"
DATA_LOSS_ACCEPTED = "manual_data_loss_accepted"
CAUSES = (OBJECTIVELY_DOWN, BUSY, RESTARTED_EMPTY, MANUAL, DATA_LOSS_ACCEPTED)


@dataclass(frozen=True)
class Pause:
    """Automatic failover is off: why, until when (unix time; None: until resumed),
    who asked (the operator's text, else the leader that committed it) and when."""

    reason: str = ""
    until: float | None = None
    by: str = ""
    at: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Pause | None:
        if not isinstance(d, dict):
            return None
        until = d.get("until")
        return cls(str(d.get("reason") or ""), float(until) if until is not None else None,
                   str(d.get("by") or ""), float(d.get("at") or 0.0))


def pause_expired(pause: Pause | None, now: float) -> bool:
    """True when the leader must commit the end of `pause` (its expiry passed by the
    leader's wall clock `now`). A pause without an expiry never expires."""
    return pause is not None and pause.until is not None and now >= pause.until


def pause_until(now: float, expires_s: float | None) -> float | None:
    """The expiry to commit for a pause asked at `now` for `expires_s` seconds (None: none)."""
    if expires_s is None:
        return None
    if not math.isfinite(expires_s) or expires_s <= 0:
        raise ValueError(f"expires: expected a positive duration, got {expires_s!r}")
    return now + expires_s


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """"90s", "30m", "2h", "1d", "500ms", or plain seconds; ValueError otherwise."""
    m = _DURATION_RE.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"expected a positive duration like 30m, 2h or 90s, got {text!r}")
    return float(m.group(1)) * _UNIT_S[(m.group(2) or "").lower()]


@dataclass(frozen=True)
class FailoverRecord:
    """One change of master: the epoch it committed, when (unix time), the old and new
    master, why (`CAUSES`), how long writes were held (from the master's last valid
    reply, or the switchover's write pause, to the commit of the new master), the
    leader that led it, the shard (cluster mode) and the reason text of the entry."""

    epoch: int
    time: float
    old_master: str | None
    new_master: str
    cause: str
    held_ms: int | None         # None: not known (writes were held before this leader acted)
    leader: str
    shard: str = ""
    detail: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.shard:
            del d["shard"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FailoverRecord:
        return cls(int(d["epoch"]), float(d.get("time") or 0.0), d.get("old_master"), str(d["new_master"]),
                   str(d.get("cause") or ""), None if d.get("held_ms") is None else int(d["held_ms"]),
                   str(d.get("leader") or ""),
                   str(d.get("shard") or ""), str(d.get("detail") or ""))


def down_cause(probe_error: str | None) -> str:
    """Why the master was found objectively down, from the leader's last probe error:
    a node answering -BUSY (a script or function that would not end) is `busy`."""
    return BUSY if (probe_error or "").startswith("BUSY") else OBJECTIVELY_DOWN


def busy_kill_grace_s(probe_interval_s: float, down_after_s: float) -> float:
    """How long a master found objectively down while answering -BUSY is left alone: the
    SCRIPT KILL that every proxy sends when it finds it so reaches it at once, and the
    probes and reports after it show whether it worked (a script that wrote cannot be
    killed: the failover then goes ahead, this much later). 3 probe intervals were not
    always enough on a loaded machine (a CI run failed a master over 274 ms after its
    script was killed): at least down_after_ms."""
    return max(3 * probe_interval_s, down_after_s)


def busy_master_left_alone(now: float, down_since: float, killed_at: float | None, grace: float) -> bool:
    """Leave a master found objectively down while answering -BUSY alone for now? For
    `grace` after it was found so (the kill every proxy sends needs that long to show), and
    for `grace` after the last kill this proxy saw end a script (accepted, or answered
    NOTBUSY: it had ended). A client that runs its runaway script again at once keeps the
    master busy with no valid reply in between, yet each run is killed: failing the master
    over would lose its unreplicated writes and not stop that client. A refused kill
    (-UNKILLABLE: the script wrote) ends nothing: the failover goes ahead `grace` after the
    last kill that did."""
    return now - down_since < grace or (killed_at is not None and now - killed_at < grace)


def bounded(records: list[FailoverRecord], new: FailoverRecord, limit: int = HISTORY_MAX) -> list[FailoverRecord]:
    """`records` with `new` appended (once: a record of the same shard and epoch is kept
    as it was, so a re-applied entry changes nothing), at most `limit`, oldest dropped."""
    if any(r.epoch == new.epoch and r.shard == new.shard for r in records):
        return records
    return [*records, new][-limit:]
