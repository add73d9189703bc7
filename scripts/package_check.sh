#!/usr/bin/env bash
# `make package-check`: builds the sdist and the wheel with `python -m build`
# (the wheel from the sdist, so a file missing from the sdist fails here),
# checks what they carry, installs the wheel in a fresh venv and runs the
# smoke test there, outside the source tree: `redis-raft-proxy --help` and
# importing every package, the compiled speedups included. On Python 3.11 the
# dependencies come from requirements.lock by hash, as in the Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "package-check: $*" >&2; exit 1; }

echo "package-check: python -m build (sdist, then the wheel from it)"
"$PY" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; fail "build failed"; }
sdist=$(ls "$work"/dist/*.tar.gz)
wheel=$(ls "$work"/dist/*.whl)

sdist_files=$(tar tzf "$sdist")
for f in LICENSE README.md pyproject.toml setup.py proxy/protocol/_speedups.c proxy/protocol/resp_scan.h \
    proxy/dataplane/_fastpath.c; do
  grep -qx "[^/]*/$f" <<<"$sdist_files" || fail "$f is not in the sdist"
done
! grep -q '\.so$' <<<"$sdist_files" || fail "a compiled .so is in the sdist"

wheel_files=$("$PY" -m zipfile -l "$wheel" | awk 'NR>1 {print $1}')
grep -q '^proxy/protocol/_speedups\..*\.so$' <<<"$wheel_files" || fail "the wheel has no compiled proxy/protocol/_speedups"
grep -q '^proxy/dataplane/_fastpath\..*\.so$' <<<"$wheel_files" || fail "the wheel has no compiled proxy/dataplane/_fastpath"
grep -q '\.dist-info/licenses/LICENSE$' <<<"$wheel_files" || fail "the wheel has no LICENSE"
! grep -q '^tests/' <<<"$wheel_files" || fail "the tests are in the wheel"

echo "package-check: installing $(basename "$wheel") in a fresh venv"
"$PY" -m venv "$work/venv"
pip=("$work/venv/bin/pip" install -q --disable-pip-version-check)
if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  # as the Dockerfile does: the locked dependencies by hash, then the wheel alone
  "${pip[@]}" --require-hashes --only-binary=:all: -r requirements.lock >"$work/install.log" 2>&1 \
    || { tail -40 "$work/install.log"; fail "installing requirements.lock failed (run scripts/lock.sh?)"; }
fi
"${pip[@]}" "$wheel" >>"$work/install.log" 2>&1 || { tail -40 "$work/install.log"; fail "installing the wheel failed"; }
"$work/venv/bin/pip" check >"$work/check.log" 2>&1 \
  || { cat "$work/check.log"; fail "the installed dependencies do not satisfy the wheel's (requirements.lock stale?)"; }

src=$PWD
cd "$work"      # imports must come from the venv, not from the source tree
"$work/venv/bin/redis-raft-proxy" --help | grep -q "usage: redis-raft-proxy" || fail "redis-raft-proxy --help"
SRC_DIR="$src" "$work/venv/bin/python" - <<'PYEOF' || fail "the smoke test in the fresh venv failed"
import importlib.metadata as md
import proxy, proxy.protocol._speedups, proxy.process.cli, raft.core, health.shard.controller
assert "/venv/" in proxy.__file__, proxy.__file__
# every module of the source tree must be in the wheel (a package left out of
# pyproject's list would only fail where it is imported)
import importlib, os, pathlib
src = pathlib.Path(os.environ["SRC_DIR"])
for f in sorted(p for top in ("proxy", "raft", "health") for p in (src / top).rglob("*.py")):
    rel = f.relative_to(src)
    mod = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
    m = importlib.import_module(mod)
    assert "/venv/" in m.__file__, f"{mod} imported from {m.__file__}, not the wheel"
meta = md.metadata("redis-raft-proxy")
assert meta["License-Expression"] == "MIT", meta["License-Expression"]
assert meta["Requires-Python"] == ">=3.11", meta["Requires-Python"]
assert any(c.startswith("Programming Language :: Python :: 3.11") for c in meta.get_all("Classifier"))
print("package-check: ok:", meta["Name"], meta["Version"], "from", proxy.__file__.rsplit("/proxy/", 1)[0])
PYEOF
