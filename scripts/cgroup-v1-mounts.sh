#!/usr/bin/env bash
# Mount every active cgroup v1 hierarchy that has no mount point on this machine.
#
# Why: on a cgroup v1 machine that mounts only some controllers, systemd inside a test host (started
# with --cgroupns=host and /sys/fs/cgroup bound read-write, see scripts/lab.py) mounts the missing ones
# (hugetlb, perf_event, net_cls,net_prio) in its own namespace. Those hierarchies then exist for every
# process, but the machine has no mount point for them, and containerd's shim can no longer load a
# container's cgroups: Docker stops reporting OOM kills (State.OOMKilled stays false). Mounting them
# here, where the kernel already lists them, restores that. Idempotent; nothing to do on cgroup v2.
set -euo pipefail

root=/sys/fs/cgroup
[[ $(stat -f -c %T "$root" 2>/dev/null) == tmpfs ]] || exit 0   # not a v1 (legacy or hybrid) layout

mounted() { awk -v p="$1" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo; }

remounted=0
while IFS=: read -r _ controllers _; do
    [[ -n $controllers && $controllers != name=* ]] || continue
    dir=$root/$controllers
    mounted "$dir" && continue
    if [[ ! -d $dir ]]; then
        # The tmpfs is read-only outside systemd's early boot: open it just long enough for the directory.
        if ((!remounted)); then mount -o remount,rw "$root"; remounted=1; fi
        mkdir -p "$dir"
    fi
    mount -t cgroup -o "$controllers" cgroup "$dir"
    printf 'cgroup-v1-mounts: mounted the %s hierarchy at %s\n' "$controllers" "$dir" >&2
done </proc/self/cgroup
if ((remounted)); then mount -o remount,ro "$root"; fi
