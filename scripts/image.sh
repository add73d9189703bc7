#!/usr/bin/env bash
# `make image`: builds the container image and runs its smoke test where a
# container builder is available (a docker daemon, or podman); says so and
# succeeds where none is, so that CI can call it everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${IMAGE_TAG:-redis-raft-proxy:dev}
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  builder=docker
elif command -v podman >/dev/null; then
  builder=podman
else
  echo "image: no container builder here (no docker daemon, no podman): the image is not built" >&2
  exit 0
fi
"$builder" build -t "$TAG" .
"$builder" run --rm "$TAG" --help >/dev/null
# the container defaults: without a node list it refuses to start, naming the key
out=$("$builder" run --rm "$TAG" 2>&1 || true)
grep -q "redis_nodes" <<<"$out" || { echo "$out" >&2; echo "image: the default command did not ask for redis_nodes" >&2; exit 1; }
echo "image: built $TAG with $builder; --help and the container defaults checked"
