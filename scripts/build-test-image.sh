#!/usr/bin/env bash
# Build the Debian images the tests run: a minimal base image for app containers,
# and a systemd "test host" (sshd + its own Docker engine) for molecule and the lab.
#
# Usage: scripts/build-test-image.sh [NAME:TAG]          base image, bookworm
#                                                        (default plum-test/base:bookworm)
#        scripts/build-test-image.sh --base SUITE [NAME:TAG]   base image of SUITE (plum-test/base:SUITE)
#        scripts/build-test-image.sh --host SUITE [NAME:TAG]   systemd test host (plum-test/host:SUITE)
# SUITE: bookworm or trixie (any suite the apt mirror serves).
#
# No container registry is reachable on the build/test machines, so `docker pull`
# cannot work: the image is a debootstrap root filesystem fed to `docker import`.
# The rootfs tarball is cached, so rebuilding after `docker rmi` (or on a machine
# that kept the cache) takes seconds. Idempotent: exits at once if the image exists.
#
# Host images have no CMD worth relying on: start them with the command
# /lib/systemd/systemd and the capabilities of scripts/lab.py (no --privileged).
#
# Environment:
#   PLUM_IMAGE_CACHE       rootfs tarball cache (default /var/cache/plum-images)
#   PLUM_TAG_DEFAULT_BASE  =1: also tag the base image as ubuntu:22.04, the agent's
#                          default base image name (a Debian stand-in, see below)
#   PLUM_DEBIAN_MIRROR     Debian mirror URL; default: read from apt's sources
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2; exit "${1:-2}"; }

kind=base
suite=bookworm
name=
while (($#)); do
    case $1 in
    --base | --host)
        kind=${1#--}
        [[ $# -ge 2 && $2 != -* ]] || { printf 'build-test-image: %s needs a SUITE\n' "$1" >&2; usage; }
        suite=$2
        shift 2
        ;;
    -h | --help) usage 0 ;;
    -*) printf 'build-test-image: unknown option %s\n' "$1" >&2; usage ;;
    *)
        [[ -z $name ]] || usage
        name=$1
        shift
        ;;
    esac
done
name=${name:-plum-test/$kind:$suite}
variant=minbase
case $kind in
base) include=procps,python3 ;;
# What a small Debian server has, plus the Docker engine and Compose (v1 on bookworm,
# the v2 plugin on trixie: the containerized mode drives either) for hybrid/containerized
# modes. python3-apt: Ansible's apt/package_facts modules.
host)
    include=systemd,systemd-sysv,dbus,python3,python3-venv,python3-apt,openssh-server,sudo,procps,iproute2,ca-certificates,docker.io,docker-compose,iptables,curl
    # After bookworm the docker client is its own package, which docker.io only
    # recommends (debootstrap installs no recommends).
    [[ $suite == bookworm ]] || include+=,docker-cli
    ;;
esac
if [[ ! $suite =~ ^[a-z]+$ ]]; then
    printf 'build-test-image: %s is not a Debian suite name\n' "$suite" >&2
    exit 2
fi
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
    [[ ${PLUM_TAG_DEFAULT_BASE:-} == 1 && $kind == base ]] || return 0
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

# Turn the debootstrap tree in $1 into a systemd test host: boots as PID 1 in
# an unprivileged container, sshd takes root logins by key, dockerd starts.
# Its code is part of the cache key: edit it and the rootfs is rebuilt.
customise_host() {
    local root=$1
    # systemctl in the chroot wants /proc (the EXIT trap unmounts it on failure).
    mount -t proc proc "$root/proc"
    # Units that need real hardware, consoles or the network (apt timers), or
    # that fail without CAP_SYS_ADMIN on the host: they only burn CPU or show
    # up as failed units in a container.
    chroot "$root" systemctl mask --quiet \
        systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
        systemd-udev-trigger.service systemd-udev-settle.service \
        getty.target console-getty.service getty@tty1.service serial-getty@console.service \
        systemd-firstboot.service systemd-remount-fs.service systemd-hwdb-update.service \
        sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
        dev-hugepages.mount systemd-journald-audit.socket \
        apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer
    # Root logs in with a key only (what Ansible uses); no DNS lookups of clients.
    mkdir -p "$root/etc/ssh/sshd_config.d"
    printf '%s\n' '# scripts/build-test-image.sh: test host' \
        'PermitRootLogin prohibit-password' 'PasswordAuthentication no' \
        'KbdInteractiveAuthentication no' 'UseDNS no' >"$root/etc/ssh/sshd_config.d/plum-test.conf"
    install -d -m 0700 "$root/root/.ssh"
    # Every container of the image must not share host keys (nor a machine-id):
    # generate them at first boot instead of baking the build's into the image.
    rm -f "$root"/etc/ssh/ssh_host_*
    cat >"$root/etc/systemd/system/plum-ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys (test host image)
Before=ssh.service ssh.socket
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target ssh.service
UNIT
    # Debian's default iptables is the nft backend; on a kernel without
    # nf_tables dockerd cannot set up its bridge, so fall back to legacy at boot.
    cat >"$root/etc/systemd/system/plum-iptables-backend.service" <<'UNIT'
[Unit]
Description=Use iptables-legacy when nf_tables is missing (test host image)
Before=docker.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'iptables-nft -w -t nat -L -n >/dev/null 2>&1 || { update-alternatives --set iptables /usr/sbin/iptables-legacy && update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy; }'

[Install]
WantedBy=multi-user.target docker.service
UNIT
    # The systemd cgroup driver nests the inner containers under this host's
    # own cgroup. With cgroupfs (20.10's default on cgroup v1) and
    # --cgroupns=host they land next to the outer containers and their cgroup
    # directories leak on the machine when the host is removed.
    mkdir -p "$root/etc/docker"
    printf '{"exec-opts": ["native.cgroupdriver=systemd"]}\n' >"$root/etc/docker/daemon.json"
    # /proc/sys is read-only in an unprivileged container: Docker >= 26 (trixie)
    # then fails every `docker run` unless allowed to leave IPv6 on (20.10 ignores it).
    mkdir -p "$root/etc/systemd/system/docker.service.d"
    printf '%s\n' '[Service]' 'Environment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1' \
        >"$root/etc/systemd/system/docker.service.d/plum-test-host.conf"
    chroot "$root" systemctl enable --quiet plum-ssh-hostkeys.service plum-iptables-backend.service \
        ssh.service docker.service
    umount "$root/proc"
    # Empty (not absent): systemd then makes a fresh id per boot without
    # treating the boot as a first boot (which would apply presets).
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"
}

# Cache key: the image name plus the recipe, so changing the package list
# does not silently reuse an old rootfs. Host images also hash the
# customisation code (base keeps its old key, so existing caches stay valid).
recipe="$suite $variant $include"
if [[ $kind == host ]]; then recipe+=$'\n'$(declare -f customise_host); fi
recipe_hash=$(printf '%s\n' "$recipe" | sha256sum | cut -c1-12)
safe_name=${name//[^A-Za-z0-9._-]/_}
cache_tar=$cache_dir/$safe_name.$recipe_hash.tar

# The image records its recipe: an image built from an older recipe is rebuilt
# (from the rootfs cache when it has this recipe), not silently kept.
image_recipe() { docker image inspect --format "{{index .Config.Labels \"$label.recipe\"}}" "$1" 2>/dev/null; }
up_to_date() { [[ $(image_recipe "$name") == "$recipe_hash" ]]; }

# The engine must answer first (installs/starts it when needed; fast otherwise).
"$here/docker-engine.sh"

if up_to_date; then
    tag_default_base
    exit 0
fi

mkdir -p "$cache_dir"
# Serialise builds of the same image (parallel CI jobs, concurrent `make test`).
exec 9>"$cache_dir/.$safe_name.lock"
flock 9
if up_to_date; then
    tag_default_base
    exit 0
fi
old_id=$(image_id "$name" || true)
if [[ -n $old_id ]]; then say "$name is from another recipe (or an older version of this script); rebuilding it"; fi

# Print the URI of the first enabled `deb` source that serves suite $1. Reads
# apt's configuration at run time: the mirror must never be written into
# the repository.
find_mirror() {
    local f
    local -a deb822=() oneline=()
    for f in /etc/apt/sources.list.d/*.sources; do [[ -f $f ]] && deb822+=("$f"); done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [[ -f $f ]] && oneline+=("$f"); done
    if ((${#deb822[@]})); then
        # deb822 stanzas (paragraph mode; one stanza never spans two files).
        awk -v suite="$1" 'BEGIN { RS = ""; FS = "\n" }
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
        awk -v suite="$1" '$1 == "deb" {
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
    mirror=${PLUM_DEBIAN_MIRROR:-$(find_mirror "$suite" | head -n 1)}
    # The machine's sources usually list only its own release (bookworm); the
    # same Debian mirror serves the other suites (trixie) too.
    if [[ -z $mirror ]]; then mirror=$(find_mirror bookworm | head -n 1); fi
    if [[ -z $mirror ]]; then
        say "no apt source serves '$suite' or bookworm; set PLUM_DEBIAN_MIRROR to a Debian mirror URL"
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
    if [[ $kind == host ]]; then customise_host "$build_dir"; fi
    # Downloaded .debs and package lists are useless in the image (containers
    # reach no registry); dropping them roughly halves the tarball.
    rm -rf "$build_dir"/var/cache/apt/archives/*.deb "$build_dir"/var/lib/apt/lists/*
    tar --numeric-owner --one-file-system -C "$build_dir" -cf "$tmp_tar" .
    # Atomic publish: a half-written tarball is never picked up as cache.
    chmod 0644 "$tmp_tar"
    mv -f "$tmp_tar" "$cache_tar"
    tmp_tar=
    # Rootfs tarballs of older recipes of this image are dead weight (~500 MB each).
    find "$cache_dir" -maxdepth 1 -name "$safe_name.*.tar" ! -name "${cache_tar##*/}" -delete
}

docker_import() {
    local -a changes=(-c 'CMD ["/bin/bash"]' -c "LABEL $label=debian-$suite-$variant" -c "LABEL $label.recipe=$recipe_hash")
    if [[ $kind == host ]]; then
        # container=docker: how systemd (and Ansible's facts) know they run in a
        # container. (Docker 20.10's import refuses STOPSIGNAL: lab.py passes
        # --stop-signal SIGRTMIN+3, systemd's "halt", to `docker run` instead.)
        changes=(-c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker'
            -c "LABEL $label=debian-$suite-host" -c "LABEL $label.recipe=$recipe_hash")
    fi
    docker import \
        "${changes[@]}" \
        -m "debootstrap $suite $variant +$include ($kind, scripts/build-test-image.sh)" \
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

# The image this one replaces, unless containers still use it.
if [[ -n $old_id && $old_id != "$(image_id "$name")" ]]; then docker rmi "$old_id" >/dev/null 2>&1 || true; fi
tag_default_base
say "built $name from $source in $(elapsed) (rootfs cache: $cache_tar)"
