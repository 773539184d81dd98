#!/usr/bin/env bash
# The README's main job: a local lab of three systemd hosts (controller, agent1, agent2), site.yml in
# MODE against it, the example app deployed through the controller, and where each replica runs.
#
# Usage: scripts/run-lab.sh up [bare|hybrid|containerized|mixed]   (default bare; make run MODE=...)
#        scripts/run-lab.sh hosts [MODE]         only the hosts and the inventory with its vars (no site.yml)
#        scripts/run-lab.sh down                 (make down)
#
# agent2 is a Debian 13 host (Compose v2), the others Debian 12 (Compose v1). mixed: a containerized
# controller, a bare agent1, a hybrid agent2 (host_vars).
#
# Everything lives in .run/lab/: the inventory lab.py writes, its group_vars/host_vars, the SSH key, the
# operator token that site.yml copies to the control node, the image archive. The lab's hosts reach no
# registry, so the roles load the apps' base image and the Python base of Plum's images from an archive
# of plum-test/base:bookworm.
#
# PLUM_LAB_NAME (default plum-lab) and PLUM_LAB_DIR (default .run/lab) give another lab its own containers
# and directory (bench/converge.py builds its labs with `hosts`, then times site.yml itself).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$repo/.venv/bin
lab=${PLUM_LAB_NAME:-plum-lab}
dir=${PLUM_LAB_DIR:-$repo/.run/lab}
inventory=$dir/hosts.yml
say() { printf '\n== %s\n' "$*"; }

down() {
    "$bin/python" "$repo/scripts/lab.py" down --name "$lab"
    rm -rf "$dir"
}

check_mode() {
    case $1 in bare | hybrid | containerized | mixed) ;;
    *) echo "run-lab: MODE=$1: expected bare, hybrid, containerized or mixed" >&2; exit 2 ;;
    esac
}

# The images, the three hosts and the inventory with its group_vars/host_vars for MODE: everything up to site.yml.
hosts() {
    local mode=$1
    check_mode "$mode"
    mkdir -p "$dir"
    "$repo/scripts/build-test-image.sh" --host bookworm
    "$repo/scripts/build-test-image.sh" --host trixie
    "$repo/scripts/build-test-image.sh"
    say "lab: controller, agent1 (Debian 12), agent2 (Debian 13): systemd test hosts"
    "$bin/python" "$repo/scripts/lab.py" up --name "$lab" --host controller:plum_controller \
        --host agent1:plum_agents --host agent2:plum_agents --host-image agent2=plum-test/host:trixie \
        --publish controller:8080 --inventory "$inventory"
    # The settings go in group_vars/host_vars next to the inventory (extra vars would beat host_vars):
    # mixed = a containerized controller, a bare agent1 and a hybrid agent2.
    "$bin/python" "$repo/scripts/lab.py" save-image plum-test/base:bookworm "$dir/base-image.tar"
    mkdir -p "$dir/group_vars" "$dir/host_vars"
    cat >"$dir/group_vars/all.yml" <<EOF
plum_mode: ${mode/mixed/bare}
plum_controller_operator_token_file: $dir/operator.token
# No registry here: the images come from this archive (the apps' base image and the Python base image).
plum_agent_base_image: plum-test/base:bookworm
plum_agent_base_image_archive: $dir/base-image.tar
plum_image_base: plum-test/base:bookworm
plum_image_base_archive: $dir/base-image.tar
EOF
    rm -f "$dir"/host_vars/*.yml
    if [[ $mode == mixed ]]; then
        echo "plum_mode: containerized" >"$dir/host_vars/controller.yml"
        echo "plum_mode: hybrid" >"$dir/host_vars/agent2.yml"
    fi
}

up() {
    local mode=${1:-bare} started=$SECONDS
    check_mode "$mode"
    hosts "$mode"
    local -a vars=()
    export ANSIBLE_CONFIG=$repo/ansible.cfg PATH=$bin:$PATH
    say "site.yml, plum_mode=$mode"
    ansible-playbook -i "$inventory" "$repo/site.yml" "${vars[@]}"
    local api
    api=http://127.0.0.1:$("$bin/python" -c 'import sys, yaml
print(yaml.safe_load(open(sys.argv[1]))["all"]["hosts"]["controller"]["lab_published_ports"][8080])' "$inventory")
    say "the example app, deployed through the controller ($api)"
    ansible-playbook -i "$inventory" "$repo/playbooks/deploy_app.yml" "${vars[@]}" \
        -e "plum_app_src=$repo/examples/apps/hello" -e "plum_controller_api_url=$api"
    say "where the replicas run"
    PLUM_CONTROLLER_TOKEN=$(cat "$dir/operator.token") "$bin/python" "$repo/scripts/lab_status.py" "$api"
    local plumctl=/opt/plum/agent/venv/bin/plumctl agent_log="journalctl -u plum-agent -n 20 --no-pager"
    if [[ $mode == containerized ]]; then
        plumctl="docker exec plum-agent /opt/plum/venv/bin/plumctl" agent_log="docker logs --tail 20 plum-agent"
    fi
    cat <<EOF

The lab is up after $((SECONDS - started)) s (mode $mode). To look at it:
  docker exec $lab-agent1 $plumctl --config /etc/plum/agent.env list   # agent1's apps
  docker exec $lab-agent1 $agent_log                                     # agent1's log
  docker exec $lab-controller docker ps                                  # the containers of a host
  curl -H "Authorization: Bearer \$(cat $dir/operator.token)" $api/v1/nodes
  $bin/plumctl fleet --controller $api --token-file $dir/operator.token deployments status hello
  $api/ui in a browser: the live status page (its token: $dir/operator.token)
  make down                                                              # remove the lab
EOF
}

case ${1:-} in
    up) up "${2:-bare}" ;;
    hosts) hosts "${2:-bare}" ;;
    down) down ;;
    *) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
