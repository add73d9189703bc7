#!/usr/bin/env bash
# The test command: set up, then run the whole suite. Extra args go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 "$@" tests
rc=$?
# pytest exits 5 when it collected no tests: that is not a failure of the code,
# but CI must not call it green silently either.
if [ $rc -eq 5 ]; then echo "no tests were collected"; exit 1; fi
exit $rc
