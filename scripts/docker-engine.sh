#!/usr/bin/env bash
# Ensure a Docker engine answers `docker info`.
#
# Used by `make test` and CI. Those run as root on fresh Debian 12 machines that
# have no systemd as PID 1 and often only the docker *client*, so this script
# installs the engine from Debian (docker.io) and starts dockerd itself.
# Idempotent: when the engine already answers it exits at once.
#
# Environment:
#   DOCKERD_LOG        dockerd log file          (default /var/log/dockerd.log)
#   DOCKERD_WAIT_SECS  how long to wait for it   (default 60)
set -euo pipefail

# dockerd lives in /usr/sbin, which minimal CI shells may not have on PATH.
PATH=$PATH:/usr/sbin:/sbin
log_file=${DOCKERD_LOG:-/var/log/dockerd.log}
wait_secs=${DOCKERD_WAIT_SECS:-60}
lock_file=/run/plum-docker-engine.lock

say() { printf 'docker-engine: %s\n' "$*" >&2; }

engine_up() { docker info >/dev/null 2>&1; }

# Test hosts can leave cgroup v1 hierarchies without a mount point, which silences Docker's OOM
# reports (see the script); cheap and idempotent, so it runs every time.
if [[ $(id -u) -eq 0 ]]; then "$(dirname "${BASH_SOURCE[0]}")/cgroup-v1-mounts.sh"; fi

# Fast path: nothing to do (also covers a systemd-managed or remote engine).
if command -v docker >/dev/null 2>&1 && engine_up; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    say "engine not answering and not root: cannot install or start dockerd"
    exit 1
fi

# Serialise concurrent callers (parallel CI jobs) so only one installs/starts.
exec 9>"$lock_file"
flock 9
if command -v docker >/dev/null 2>&1 && engine_up; then
    exit 0
fi

# Install the engine from Debian when it is missing. debootstrap comes in the
# same apt call because scripts/build-test-image.sh needs it and no registry
# is reachable to pull base images from.
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    pkgs=(docker.io debootstrap)
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { apt-get install -y --no-install-recommends "${pkgs[@]}"; }
    # Refresh the package lists only when apt does not know the packages yet;
    # retry once after an update in case the cached lists are stale (404s).
    if ! apt-cache show "${pkgs[@]}" >/dev/null 2>&1; then
        say "apt-get update"
        apt-get update
    fi
    say "installing ${pkgs[*]}"
    if ! apt_install; then
        say "install failed; refreshing package lists and retrying"
        apt-get update
        apt_install
    fi
fi

# dockerd may already be starting (pid file of a live process): then just wait
# instead of launching a second daemon that would fight over /var/lib/docker.
dockerd_pid() {
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null) || return 1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

if ! pid=$(dockerd_pid); then
    say "starting dockerd (log: $log_file)"
    mkdir -p "$(dirname "$log_file")"
    # setsid+nohup: the daemon must outlive this shell, make's process group and
    # CI step boundaries. 9>&- so it does not inherit (and hold) our lock.
    setsid nohup dockerd >>"$log_file" 2>&1 </dev/null 9>&- &
    pid=$!
fi

# Wait for the API; give up early if the daemon died.
deadline=$((SECONDS + wait_secs))
until engine_up; do
    if ! kill -0 "$pid" 2>/dev/null && ! dockerd_pid >/dev/null; then
        say "dockerd exited; last lines of $log_file:"
        tail -n 30 "$log_file" >&2 || true
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        say "no answer from dockerd after ${wait_secs}s; last lines of $log_file:"
        tail -n 30 "$log_file" >&2 || true
        exit 1
    fi
    sleep 0.5
done
say "engine ready: $(docker version --format 'server {{.Server.Version}}' 2>/dev/null || echo '?')"
