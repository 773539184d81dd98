#!/usr/bin/env bash
# Run a molecule scenario (molecule/<SCENARIO>/molecule.yml) against plum.deploy as users get it: the
# collection tarball built from this checkout, installed offline into an empty directory that is then the
# only collections path. The scenarios start systemd test hosts with scripts/lab.py (molecule/_shared).
#
# Usage: scripts/molecule.sh SCENARIO [MOLECULE_SUBCOMMAND [ARGS...]]     (default subcommand: test)
#   scripts/molecule.sh bare                     # the full test sequence
#   scripts/molecule.sh hybrid converge          # keep the hosts; then e.g. `... hybrid login --host agent1`
#   scripts/molecule.sh hybrid destroy
#
# Environment: PLUM_MOLECULE_KEEP=1 keeps the temporary build/install directory (printed) for debugging.
#              PLUM_MOLECULE_LAB_PREFIX (default plum-mol): the hosts are <prefix>-<scenario>-<host>; give
#              concurrent runs of one scenario (other checkouts, CI jobs) different prefixes.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$repo/.venv/bin
say() { printf 'molecule.sh: %s\n' "$*" >&2; }

if (($# < 1)) || [[ $1 == -* ]]; then
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
    exit 2
fi
scenario=$1
shift
if [[ ! -f $repo/molecule/$scenario/molecule.yml ]]; then
    say "no scenario molecule/$scenario/molecule.yml"
    exit 2
fi
(($#)) || set -- test
[[ -x $bin/molecule ]] || { say "no $bin/molecule: run make venv"; exit 1; }

start=$SECONDS
# The engine and the images the scenarios use (each a no-op when already there).
"$repo/scripts/build-test-image.sh" --host bookworm
"$repo/scripts/build-test-image.sh" --host trixie
"$repo/scripts/build-test-image.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/plum-molecule.XXXXXX")
if [[ ${PLUM_MOLECULE_KEEP:-} == 1 ]]; then say "keeping $work"; else trap 'rm -rf "$work"' EXIT; fi

# Everything Ansible reads comes from here, not from the checkout: the repository's ansible.cfg (found in
# the cwd) points collections_path at ./collections, a symlink to the checkout.
export ANSIBLE_CONFIG=$repo/molecule/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH=$work/collections
# Ansible would also find collections in sys.path (e.g. the `ansible` package's, if installed in the venv).
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
# Scenarios live at the repository root (molecule/<name>/): without this, molecule in a collection
# (galaxy.yml in the cwd) only accepts them with a "should migrate to extensions/molecule" warning.
export MOLECULE_GLOB='molecule/*/molecule.yml'
# molecule and the playbooks call ansible-* by name.
export PATH=$bin:$PATH

# The tarball users install: scripts/build-collection.sh adds the runtime wheel the roles install.
if [[ -x $repo/scripts/build-collection.sh ]]; then
    "$repo/scripts/build-collection.sh" "$work/dist" >/dev/null
else
    "$bin/ansible-galaxy" collection build --output-path "$work/dist" "$repo" >/dev/null
fi
tarball=("$work"/dist/plum-deploy-*.tar.gz)
mkdir -p "$work/collections"
"$bin/ansible-galaxy" collection install --offline -p "$work/collections" "${tarball[0]}" >/dev/null
say "built and installed ${tarball[0]##*/} in $((SECONDS - start))s; the collections Ansible sees:"
(cd "$work" && "$bin/ansible-galaxy" collection list)

cd "$repo"
say "molecule $1 -s $scenario ${*:2}"
status=0
"$bin/molecule" --base-config "$repo/molecule/_shared/base.yml" "$1" -s "$scenario" "${@:2}" || status=$?
say "molecule $1 -s $scenario: exit $status after $((SECONDS - start))s"
exit "$status"
