#!/usr/bin/env bash
# Build the minimal Debian bookworm image the tests run containers from.
#
# Usage: scripts/build-test-image.sh [NAME:TAG]   (default plum-test/base:bookworm)
#
# No container registry is reachable on the build/test machines, so `docker pull`
# cannot work: the image is a debootstrap root filesystem fed to `docker import`.
# The rootfs tarball is cached, so rebuilding after `docker rmi` (or on a machine
# that kept the cache) takes seconds. Idempotent: exits at once if the image exists.
#
# Environment:
#   PLUM_IMAGE_CACHE       rootfs tarball cache (default /var/cache/plum-images)
#   PLUM_TAG_DEFAULT_BASE  =1: also tag the image as ubuntu:22.04, the agent's
#                          default base image name (a Debian stand-in, see below)
#   PLUM_DEBIAN_MIRROR     Debian mirror URL; default: read from apt's sources
set -euo pipefail

name=${1:-plum-test/base:bookworm}
suite=bookworm
variant=minbase
include=procps,python3
default_base=ubuntu:22.04
# Marks images made here, so a stale stand-in tag can be told from a real image.
label=org.plum-deploy.test-image
cache_dir=${PLUM_IMAGE_CACHE:-/var/cache/plum-images}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf 'build-test-image: %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
start_ms=$(now_ms)
elapsed() { local ms=$(($(now_ms) - start_ms)); printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100)); }

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

# Optional ubuntu:22.04 alias. It is NOT Ubuntu: it only lets tests that use the
# agent's default base image name run without a registry. A real ubuntu:22.04
# (e.g. from `docker load`) is never overwritten.
tag_default_base() {
    [[ ${PLUM_TAG_DEFAULT_BASE:-} == 1 ]] || return 0
    local ours theirs
    ours=$(image_id "$name")
    theirs=$(image_id "$default_base" || true)
    if [[ -n $theirs && $theirs != "$ours" ]] &&
        [[ -z $(docker image inspect --format "{{index .Config.Labels \"$label\"}}" "$default_base" 2>/dev/null) ]]; then
        say "$default_base already exists and is not a stand-in made here; leaving it alone"
        return 0
    fi
    docker tag "$name" "$default_base"
    say "NOTE: $default_base is a stand-in: it is $name (Debian $suite), not Ubuntu"
}

# The engine must answer first (installs/starts it when needed; fast otherwise).
"$here/docker-engine.sh"

if image_id "$name" >/dev/null; then
    tag_default_base
    exit 0
fi

mkdir -p "$cache_dir"
# Serialise builds of the same image (parallel CI jobs, concurrent `make test`).
safe_name=${name//[^A-Za-z0-9._-]/_}
exec 9>"$cache_dir/.$safe_name.lock"
flock 9
if image_id "$name" >/dev/null; then
    tag_default_base
    exit 0
fi

# Cache key: the image name plus the recipe, so changing the package list
# does not silently reuse an old rootfs.
recipe_hash=$(printf '%s %s %s\n' "$suite" "$variant" "$include" | sha256sum | cut -c1-12)
cache_tar=$cache_dir/$safe_name.$recipe_hash.tar

# Print the URI of the first enabled `deb` source that serves $suite. Reads
# apt's configuration at run time: the mirror must never be written into
# the repository.
find_mirror() {
    local f
    local -a deb822=() oneline=()
    for f in /etc/apt/sources.list.d/*.sources; do [[ -f $f ]] && deb822+=("$f"); done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [[ -f $f ]] && oneline+=("$f"); done
    if ((${#deb822[@]})); then
        # deb822 stanzas (paragraph mode; one stanza never spans two files).
        awk -v suite="$suite" 'BEGIN { RS = ""; FS = "\n" }
        {
            types = uris = suites = ""; enabled = "yes"; key = ""
            for (i = 1; i <= NF; i++) {
                line = $i
                if (line ~ /^#/) continue
                if (line ~ /^[ \t]/) val = line                      # continuation
                else if (match(line, /^[A-Za-z-]+:/)) {
                    key = tolower(substr(line, 1, RLENGTH - 1)); val = substr(line, RLENGTH + 1)
                } else continue
                if (key == "types") types = types " " val
                else if (key == "uris") uris = uris " " val
                else if (key == "suites") suites = suites " " val
                else if (key == "enabled") enabled = val
            }
            if (tolower(enabled) ~ /no/) next
            if ((types " ") !~ /[ \t]deb[ \t]/) next
            n = split(suites, s, /[ \t]+/)
            for (j = 1; j <= n; j++) if (s[j] == suite) {
                m = split(uris, u, /[ \t]+/)
                for (k = 1; k <= m; k++) if (u[k] != "") { print u[k]; exit }
            }
        }' "${deb822[@]}"
    fi
    if ((${#oneline[@]})); then
        # One-line format: deb [options] URI SUITE COMPONENTS...
        awk -v suite="$suite" '$1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit }
        }' "${oneline[@]}"
    fi
}

build_dir=
tmp_tar=
cleanup() {
    if [[ -n $build_dir && -d $build_dir ]]; then
        # A failed debootstrap can leave proc/sys (or a /dev bind mount) mounted
        # inside the rootfs: unmount before deleting, and never cross filesystems.
        awk -v d="$build_dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" || true; done
        rm -rf --one-file-system "$build_dir" || true
    fi
    if [[ -n $tmp_tar ]]; then rm -f "$tmp_tar"; fi
}
trap cleanup EXIT

build_rootfs() {
    local mirror dlog
    mirror=${PLUM_DEBIAN_MIRROR:-$(find_mirror | head -n 1)}
    if [[ -z $mirror ]]; then
        say "no apt source serves '$suite'; set PLUM_DEBIAN_MIRROR to a Debian mirror URL"
        exit 1
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap ||
            { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap; }
    fi
    # Build next to the cache (not /tmp: may be tmpfs/noexec/nodev, and the
    # final mv should stay on one filesystem).
    build_dir=$(mktemp -d "$cache_dir/.rootfs.XXXXXX")
    tmp_tar=$(mktemp "$cache_dir/.$safe_name.XXXXXX.tar")
    dlog=$cache_dir/$safe_name.debootstrap.log
    say "debootstrap $suite ($variant, +$include) from the apt mirror (log: $dlog)"
    if ! debootstrap --variant="$variant" --include="$include" "$suite" "$build_dir" "$mirror" >"$dlog" 2>&1; then
        say "debootstrap failed; last lines of $dlog:"
        tail -n 30 "$dlog" >&2 || true
        exit 1
    fi
    # Downloaded .debs and package lists are useless in the image (containers
    # reach no registry); dropping them roughly halves the tarball.
    rm -rf "$build_dir"/var/cache/apt/archives/*.deb "$build_dir"/var/lib/apt/lists/*
    tar --numeric-owner --one-file-system -C "$build_dir" -cf "$tmp_tar" .
    # Atomic publish: a half-written tarball is never picked up as cache.
    chmod 0644 "$tmp_tar"
    mv -f "$tmp_tar" "$cache_tar"
    tmp_tar=
}

docker_import() {
    docker import \
        -c 'CMD ["/bin/bash"]' \
        -c "LABEL $label=debian-$suite-$variant" \
        -m "debootstrap $suite $variant +$include (scripts/build-test-image.sh)" \
        "$cache_tar" "$name" >/dev/null
}

source=cache
if [[ ! -s $cache_tar ]]; then
    source=debootstrap
    build_rootfs
fi
if ! docker_import; then
    if [[ $source == debootstrap ]]; then exit 1; fi
    # A damaged cache entry should cost one rebuild, not a manual cleanup.
    say "import from cached $cache_tar failed; rebuilding it"
    rm -f "$cache_tar"
    source=debootstrap
    build_rootfs
    docker_import
fi

tag_default_base
say "built $name from $source in $(elapsed) (rootfs cache: $cache_tar)"
