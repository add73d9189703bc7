"""Run a benchmark module with the project's virtualenv Python when the one it was started
with lacks redis-py or the proxy package (`python3 -m benchmarks.X` outside the venv).
Imports nothing but the standard library: it runs before the benchmark's own imports."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def reexec_in_venv_if_needed(module: str) -> None:
    try:
        import redis  # noqa: F401

        import proxy  # noqa: F401
    except ImportError:
        mark = "BENCH_REEXEC_" + module.rsplit(".", 1)[-1].upper()
        if VENV_PYTHON.exists() and not os.environ.get(mark):
            os.environ[mark] = "1"
            os.chdir(REPO)
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), "-m", module, *sys.argv[1:]])
