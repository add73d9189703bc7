#!/usr/bin/env bash
# Installs what the demo and the tests need: Debian's redis-server and
# redis-tools (if missing) and a virtualenv with the project. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO=none; fi
  if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null; then
    echo "setup: redis-server/redis-tools are missing and cannot be installed here;" >&2
    echo "       install them (Debian: apt-get install -y redis-server redis-tools) and run again." >&2
    exit 1
  fi
  echo "setup: installing redis-server and redis-tools with apt-get"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  # Debian starts a system redis on 6379; the project never uses that port.
fi

# kubectl renders the k8s/ kustomizations in the tests; best effort (the k8s
# tests say clearly when it is missing).
if ! command -v kubectl >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "setup: installing kubectl with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null 2>&1 \
    || echo "setup: kubectl is not available from apt here; the k8s rendering checks will be skipped" >&2
fi

# nft runs the chaos suite's network faults (tests/chaos); best effort like kubectl (the
# chaos test fails, saying why, when it is missing).
if ! command -v nft >/dev/null && ! [ -x /usr/sbin/nft ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "setup: installing nftables with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null 2>&1 \
    || echo "setup: nftables is not available from apt here; tests/chaos will fail" >&2
fi

# Debian's own Python ships venv and its C headers in packages of their own: on a fresh
# Debian machine install them (and a C compiler for the project's C parts: the speedups and
# the forwarding thread, without which the proxy falls back to pure Python). A Python of
# another origin (pyenv, a distribution of its own) brings both itself.
if [ ! -x "$VENV/bin/python" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=""
  command -v "$PYTHON" >/dev/null || missing=" python3 python3-venv python3-dev"
  if [ -z "$missing" ] && [ "$("$PYTHON" -c 'import sys; print(sys.base_prefix)')" = /usr ]; then
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing="$missing python3-venv"
    "$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
      || missing="$missing python3-dev"
  fi
  command -v cc >/dev/null || missing="$missing gcc libc6-dev"
  if [ -n "$missing" ]; then
    echo "setup: installing${missing} with apt-get"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null 2>&1 \
      || { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
           && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; }
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/pip" install -q -e '.[test]'
  touch "$stamp"
fi

# The project's own bytecode, written once here: a proxy process imports about a hundred of
# its modules, and where PYTHONDONTWRITEBYTECODE is set (CI machines often set it) every
# start would compile them all again (~0.2 s of CPU per process; the tests start ~500).
PYTHONDONTWRITEBYTECODE= "$VENV/bin/python" -m compileall -q proxy raft health benchmarks >/dev/null
