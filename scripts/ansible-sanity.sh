#!/usr/bin/env bash
# Run `ansible-test sanity` on the plum.deploy collection, offline-friendly, with no ignore files.
#
# Usage: scripts/ansible-sanity.sh [extra ansible-test sanity arguments, e.g. --test validate-modules]
#
# What it does:
#  1. Builds the collection with `ansible-galaxy collection build` (so galaxy.yml and build_ignore are
#     checked too) and unpacks it at <tmp>/ansible_collections/plum/deploy: ansible-test needs that path,
#     and it tests exactly what ships.
#  2. Saves an offline stand-in for ansible-test's pip bootstrap script. With --requirements, ansible-test
#     first downloads get-pip.py from a site these machines cannot reach, then runs pip with
#     PIP_CONFIG_FILE=/dev/null (so the machine's pip.conf, its CA file included, is ignored). The stand-in,
#     saved where ansible-test looks for its cache (~/.ansible/test/cache/get_pip_<version>.py), bootstraps
#     pip with ensurepip and runs `pip install --cert <system CA bundle> <its arguments>`.
#  3. Runs `ansible-test sanity --local --requirements --python <this python>` from the collection root.
#
# Environment:
#   ANSIBLE_TEST   the ansible-test to run (default: the one next to $PYTHON, else on PATH)
#   PYTHON         the Python that has ansible-core (default: .venv/bin/python, else python3)
#   SANITY_PYTHON  the Python version to test (default: $PYTHON's major.minor)
#   KEEP_TREE=1    keep the built tree (its path is printed)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'ansible-sanity: %s\n' "$*" >&2; }

if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $here/.venv/bin/python ]]; then PYTHON=$here/.venv/bin/python; else PYTHON=$(command -v python3); fi
fi
bindir=$(dirname "$PYTHON")
ANSIBLE_TEST=${ANSIBLE_TEST:-$( [[ -x $bindir/ansible-test ]] && echo "$bindir/ansible-test" || command -v ansible-test || true)}
GALAXY=$( [[ -x $bindir/ansible-galaxy ]] && echo "$bindir/ansible-galaxy" || command -v ansible-galaxy || true)
if [[ -z $ANSIBLE_TEST || -z $GALAXY ]]; then
    say "ansible-test/ansible-galaxy not found next to $PYTHON or on PATH: install ansible-core (see constraints.txt)"
    exit 2
fi
SANITY_PYTHON=${SANITY_PYTHON:-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}

# --- 1. the offline stand-in for get-pip.py ------------------------------------------------------
pip_version=$("$PYTHON" - <<'EOF'
import pathlib, re
import ansible_test
source = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
match = re.search(r"pip='([0-9.]+)'", source.read_text())
print(match.group(1) if match else "24.2")
EOF
)
cache_dir=$HOME/.ansible/test/cache
stand_in=$cache_dir/get_pip_${pip_version//./_}.py
mkdir -p "$cache_dir"
cat >"$stand_in" <<'EOF'
"""Offline stand-in for ansible-test's get-pip.py, written by plum.deploy's scripts/ansible-sanity.sh.

ansible-test runs it as `python get_pip.py [pip install arguments] [--no-setuptools] [--no-wheel]`.
It bootstraps pip from the standard library's ensurepip, then installs what it was asked for, with the
system CA bundle (ansible-test hides the machine's pip.conf from pip).
"""
import os
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
try:
    import pip  # noqa: F401
except ImportError:
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
command = [sys.executable, "-m", "pip", "install"]
for bundle in (os.environ.get("PIP_CERT"), "/etc/ssl/certs/ca-certificates.crt"):
    if bundle and os.path.isfile(bundle):
        command += ["--cert", bundle]
        break
sys.exit(subprocess.call(command + args))
EOF
say "pip bootstrap stand-in: $stand_in"

# --- 2. the collection tree ----------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/plum-sanity.XXXXXX")
if [[ ${KEEP_TREE:-0} != 1 ]]; then trap 'rm -rf "$work"' EXIT; fi
"$GALAXY" collection build --force --output-path "$work/dist" "$here" >/dev/null
tree=$work/ansible_collections/plum/deploy
mkdir -p "$tree"
tar -xzf "$work"/dist/plum-deploy-*.tar.gz -C "$tree"
say "collection tree: $tree ($(find "$tree" -type f | wc -l) files)"

# --- 3. sanity -----------------------------------------------------------------------------------
cd "$tree"
started=$(date +%s)
"$ANSIBLE_TEST" sanity --local --requirements --python "$SANITY_PYTHON" --color no "$@"
say "ansible-test sanity passed in $(( $(date +%s) - started ))s (no ignore files: $(ls tests/sanity 2>/dev/null | wc -l) present)"
