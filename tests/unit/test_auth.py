"""raft/auth.py: the one credential check of the admin, Raft, report and requirepass paths."""

import pytest

from raft.auth import secret_matches


@pytest.mark.parametrize("given, expected, ok", [
    ("s3cret-value", "s3cret-value", True),
    (b"s3cret-value", "s3cret-value", True),
    ("s3cret-valuf", "s3cret-value", False),
    ("s3cret", "s3cret-value", False),
    ("", "", False),            # an empty header never matches an empty secret
    (None, "", False),
    ("", "s3cret-value", False),
    (None, "s3cret-value", False),
    ("anything", "", False),    # no configured secret: nothing authenticates
])
def test_secret_matches(given, expected, ok):
    assert secret_matches(given, expected) is ok
