"""What the C data plane may forward, and for whom: pure functions of the session's and
the server's state (tested without sockets).  The thread forwards only what the Python
path would send as is to a shared connection; anything else makes it hand the client back."""

from __future__ import annotations

from ..protocol.commands import BLOCK_OPTION, CONTAINERS, RAW_MODE, REFUSED, SESSION_COMMANDS, Kind
from ..session.client_registry import AFTER_RUN

# routed specially by the session even though Redis calls them reads or writes; scripts
# too: EVALSHA needs the SCRIPT LOADs Python replays on every new connection to a node
NOT_FORWARDED = frozenset({b"wait", b"waitaof", b"readonly", b"readwrite", b"asking", b"monitor", b"sync", b"psync",
                           b"debug", b"shutdown", b"eval", b"evalsha", b"eval_ro", b"evalsha_ro", b"fcall",
                           b"fcall_ro"})

# a session handed back stays in Python at most this long before it may go again
RESUME_AFTER_MAX_S = 1.0


def forwarded_commands(fast: dict[bytes, int]) -> dict[bytes, int]:
    """The thread's command table: plain reads (1) and writes (2) of the splitter's table
    (`CommandTable.fast`), without every name the session handles itself."""
    special = SESSION_COMMANDS | RAW_MODE | REFUSED.keys() | CONTAINERS | BLOCK_OPTION | AFTER_RUN | NOT_FORWARDED
    return {name: kind for name, kind in fast.items()
            if kind in (int(Kind.READ), int(Kind.WRITE)) and name not in special and 0 < len(name) <= 32}


def resume_delay(bounces: int) -> float:
    """How long a session handed back `bounces` times stays in Python before it may go to
    the thread again: 1 ms after the first (a client's CLIENT SETINFO at connect, an
    occasional PING), doubling, at most RESUME_AFTER_MAX_S (a client that mixes other
    commands with its reads and writes all the time stays in Python, where each costs
    less than a round trip through the hand-over)."""
    return min(RESUME_AFTER_MAX_S, 0.001 * 2 ** min(bounces - 1, 20)) if bounces > 0 else 0.0


def caught_up_before(master_samples, replica_offset: int) -> float:
    """Read-your-writes for the thread: every write answered before the returned time is on
    a replica at `replica_offset` (0.0: none known).  It is the send time of the latest probe
    of the master (`master_samples`: (sent_at, offset), oldest first) whose offset the replica
    has reached: a write answered before that probe was sent is in its offset
    (`Health.master_offset_after` reasons the same way for the Python path)."""
    for sent_at, offset in reversed(master_samples):
        if offset <= replica_offset:
            return sent_at
    return 0.0


def offloadable(s, now: float) -> bool:
    """Session `s` may go to the thread now: plain, authenticated, database 0, nothing owed
    to it nor queued for it, no MONITOR or CLIENT PAUSE in force, and not handed back too
    recently (`s.resume_at`, `resume_delay`).  A session with connections of its own
    (DEDICATED: after HELLO or a blocking command) may go too when they hold nothing the
    thread's connections lack: the proxy's data user (no AUTH of its own), no NO-TOUCH; its
    protocol (RESP2 or 3) the thread matches with connections of that protocol."""
    from ..session.common import DEDICATED, SHARED

    own_state_is_protocol_only = s.mode == DEDICATED and s.auth is None and not s.no_touch
    return ((s.mode == SHARED or own_state_is_protocol_only) and s.authenticated and not s.multi
            and not s.watching and s.reply_mode == b"on" and s.db == 0 and not s.tracking and s.raw is None
            and not s.monitoring and not s.channels
            and not s.patterns and not s.schannels and not s.closing and not s.closed and not s.draining
            and not s.client_eof and not s.held and s.hold_since is None and not s.waiting and not s.pending
            and not s.killed and s.blocked_on is None and not s.registry.intercept and now >= s.resume_at)
