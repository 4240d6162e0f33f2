#!/usr/bin/env bash
# Run a command with a Docker engine available: use the one DOCKER_HOST (or the default socket)
# names if it answers, else start a private dockerd (root only; Debian's docker.io) for the
# command's lifetime and stop it afterwards. Without an engine the command still runs, and the
# tests that need one skip locally (and fail in CI).
#   deploy/docker/engine.sh python -m pytest
set -uo pipefail

if docker info >/dev/null 2>&1; then
  exec "$@"
fi
if [ "$(id -u)" != 0 ] || ! command -v dockerd >/dev/null 2>&1; then
  echo "engine.sh: no Docker engine answers and none can be started here (needs root and dockerd)" >&2
  exec "$@"
fi

root="${FER_DOCKER_ROOT:-/var/tmp/fer-docker}"  # kept between runs: images and the layer cache
mkdir -p "$root/data" "$root/exec"
sock="$root/docker.sock"
dockerd --data-root "$root/data" --exec-root "$root/exec" -H "unix://$sock" \
  --pidfile "$root/dockerd.pid" >"$root/dockerd.log" 2>&1 &
pid=$!
export DOCKER_HOST="unix://$sock"
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && break
  sleep 0.5
done
if ! docker info >/dev/null 2>&1; then
  echo "engine.sh: dockerd did not start; see $root/dockerd.log" >&2
  tail -20 "$root/dockerd.log" >&2
fi

"$@"
status=$?
# Stop what this script started (containers first, so none outlives the run).
docker ps -q | xargs -r docker rm -f >/dev/null 2>&1
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
exit $status
