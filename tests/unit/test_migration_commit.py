"""An operator's slot moves are committed one migration at a time (health.cluster.controller.
commit_migrations): what the admin API answers when the leadership or a proposal fails
part of the way. A CI run answered HTTP 500 when the leader lost its leadership while it
counted the keys of every slot for `cluster rebalance --by keys`."""

from __future__ import annotations

import asyncio

import pytest

from health.cluster.controller import commit_migrations
from health.errors import CommitFailed, NotLeaderError
from health.migration.plan import QUEUED, RUNNING, Migration
from raft.core import NotLeader
from raft.storage import StorageError


class Consensus:
    """Commits proposals until the `fail_at`-th (0-based), which raises `error`."""

    def __init__(self, fail_at: int, error: Exception) -> None:
        self.fail_at, self.error, self.committed = fail_at, error, 0

    async def propose(self, data: bytes, timeout: float) -> None:
        if self.committed == self.fail_at:
            raise self.error
        self.committed += 1


def plan(n: int) -> list[Migration]:
    return [Migration(f"m-{i}", "a" * 40, "b" * 40, ((i * 10, i * 10 + 9),), state=RUNNING if i == 0 else QUEUED,
                      started_at=0.0, updated_at=0.0) for i in range(n)]


def test_all_committed() -> None:
    consensus = Consensus(99, RuntimeError("never"))
    asyncio.run(commit_migrations(consensus, plan(3), "rebalance by keys"))
    assert consensus.committed == 3


def test_leadership_lost_before_the_first_is_not_the_leader() -> None:
    with pytest.raises(NotLeaderError) as err:
        asyncio.run(commit_migrations(Consensus(0, NotLeader("p2")), plan(3), "rebalance by keys"))
    assert err.value.leader == "p2"


@pytest.mark.parametrize(("error", "says"), [
    (NotLeader(None), "lost the Raft leadership"),
    (TimeoutError(), "not confirmed within 2 s (it may still commit)"),
    (StorageError("disk full"), "disk full"),
])
def test_a_failure_part_of_the_way_says_how_many_were_committed(error, says) -> None:
    with pytest.raises(CommitFailed) as err:
        asyncio.run(commit_migrations(Consensus(1, error), plan(3), "rebalance by keys"))
    assert "rebalance by keys: 1 of 3 migrations committed" in str(err.value) and says in str(err.value)
