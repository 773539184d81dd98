#!/usr/bin/env bash
# Build the plum.deploy collection tarball, carrying the runtime wheel the roles install.
#
# Usage: scripts/build-collection.sh [OUTPUT_DIR]      (default: dist/)
#
# The tarball is what users install (ansible-galaxy collection install plum-deploy-X.tar.gz): the
# roles find the runtime wheel in roles/plum_common/files/dist/ and the pins in constraints.txt, so a
# control node without this checkout (or without network for the runtime's own sources) can install
# Plum. The wheel is built with a fixed timestamp (same sources, same bytes), placed in the tree only
# for the build, and removed afterwards so that runs from the checkout keep using the live sources.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/dist}
bin=$repo/.venv/bin
[[ -x $bin/ansible-galaxy ]] || { echo "build-collection: no $bin/ansible-galaxy: run make venv" >&2; exit 1; }

dist=$repo/roles/plum_common/files/dist
# The wheel is placed in the tree for the build: one build at a time (parallel molecule runs).
exec 9>"$repo/.collection-build.lock"
flock 9
rm -rf "$dist"
trap 'rm -rf "$dist"' EXIT
mkdir -p "$dist" "$out"
SOURCE_DATE_EPOCH=315532800 "$bin/python" -m pip wheel --quiet --no-deps --wheel-dir "$dist" "$repo/agent"
"$bin/ansible-galaxy" collection build --force --output-path "$out" "$repo" >/dev/null
tarball=$(ls -t "$out"/plum-deploy-*.tar.gz | head -n 1)
echo "$tarball"
