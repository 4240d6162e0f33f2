#!/usr/bin/env bash
# Make a local stand-in for python:3.11-slim where no image registry can be reached: a minimal
# Debian bookworm root filesystem with Python 3.11 from Debian's own packages, imported as an
# image. Then build with:  docker build --build-arg BASE_IMAGE=fer-base:bookworm -t emotion-api .
#   deploy/docker/make-base.sh [TAG [EXTRA_DEBIAN_PACKAGES...]]   (root, debootstrap; about a minute)
# With extra packages it makes other images the same way, e.g. Prometheus and Alertmanager from
# Debian's packages for the compose test:  make-base.sh fer-prometheus:bookworm prometheus prometheus-alertmanager
set -euo pipefail
tag="${1:-fer-base:bookworm}"
shift || true
extra=""
for package in "$@"; do extra="$extra,$package"; done
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag exists"; exit 0
fi
# The first Debian mirror apt already uses (no other host is reachable here).
mirror="${DEBIAN_MIRROR:-$(grep -hoE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
  | grep -v security | head -1)}"
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include="python3,python3-venv,python-is-python3,ca-certificates$extra" \
  bookworm "$rootfs" "$mirror" >/dev/null
# Like the slim images: no apt lists, docs or man pages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/var/cache/apt/*
tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$tag" >/dev/null
echo "$tag built from $mirror: $(docker image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
