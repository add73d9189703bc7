"""The demo's Raft secret: made only when the operator gave none, written to a file
its owner alone reads (the banner names the file, never the secret)."""

from __future__ import annotations

import os
from pathlib import Path

from proxy.process.demo import operator_secret_given, write_secret_file


def test_a_secret_or_its_file_in_the_environment_or_the_flags_is_the_operators() -> None:
    assert not operator_secret_given({}, [])
    assert not operator_secret_given({"REDIS_RAFT_PROXY_RAFT_SECRET": ""}, ["--read-policy", "master"])
    assert operator_secret_given({"REDIS_RAFT_PROXY_RAFT_SECRET": "s3"}, [])
    assert operator_secret_given({"REDIS_RAFT_PROXY_RAFT_SECRET_FILE": "/run/secrets/raft"}, [])
    assert operator_secret_given({}, ["--raft-secret", "s3"])
    assert operator_secret_given({}, ["--raft-secret-file=/run/secrets/raft"])


def test_the_secret_file_is_its_owners_alone_even_over_a_readable_earlier_one(tmp_path: Path) -> None:
    earlier = tmp_path / "raft-secret"
    earlier.write_text("an earlier run's, longer than the new one\n")
    os.chmod(earlier, 0o644)
    path = write_secret_file(str(tmp_path), "ab" * 32)
    assert path == str(earlier)
    assert earlier.stat().st_mode & 0o777 == 0o600
    assert earlier.read_text() == "ab" * 32 + "\n"
