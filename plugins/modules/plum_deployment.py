#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: plum_deployment
short_description: Manage a deployment of an app on a Plum controller
version_added: 0.1.0
description:
  - Keeps a deployment on the Plum controller in the wanted state, through the controller's deployment API. The
    controller places the replicas on the nodes, and the agents there run them.
  - Placement is the controller's. With O(replicas) as a number, the controller places that many replicas on the
    healthy nodes among O(nodes) and those with O(node_labels), spreads them, moves them off a node that fails, and
    keeps them where they are when the same task runs again. With O(replicas) as a dictionary, the replicas are
    pinned per node by the task.
  - The app is a zip, given as O(src) on the control node or O(remote_src) on the target and uploaded to the
    controller unless an app with the same sha256 is already there, or an O(image), registered as an image app
    unless one with the same repository and tag is already there.
  - "Idempotent: the same app, settings, replicas, placement and labels report no change, also after a failover
    moved replicas to other nodes. Every change is made in place: the deployment keeps its id, and its replicas
    their instance ids."
  - A new app version or new runtime settings are rolled out by the controller, a few replicas at a time, each
    new replica having to stay Running for a while; when new replicas fail, the controller rolls them back to the
    previous version. With O(wait), the module waits for the rollout to end and fails with the controller's
    message when it was rolled back.
  - In check mode nothing is uploaded, registered, created or changed; the module reports what a real run would do.
  - The module manages deployments with a single entry (one app); deployments with several entries are refused.
author:
  - Plum Deploy maintainers (!UNKNOWN)
extends_documentation_fragment:
  - plum.deploy._connection
  - plum.deploy._attributes
  - plum.deploy._attributes.ACTIONGROUP_PLUM
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows the status, the app (name, version, sha256), the runtime settings, the replicas (per node when
        pinned; the number when the controller places them), the placement and the labels.
  idempotent:
    support: full
  action:
    support: full
    details:
      - The action plugin packages O(src) on the control node and copies it to the target only when the controller
        does not already have that app.
  async:
    support: none
options:
  name:
    description:
      - Name of the deployment, unique on the controller.
    type: str
    required: true
  state:
    description:
      - V(started) creates or updates the deployment and starts it; with O(wait), waits until every replica is Running.
      - V(present) creates or updates the deployment without starting or stopping it; a new deployment stays stopped.
      - V(stopped) creates or updates the deployment and stops it; with O(wait), waits until no replica runs.
      - V(absent) deletes the deployment; its replicas are stopped by their agents.
    type: str
    choices: [started, present, stopped, absent]
    default: started
  src:
    description:
      - The app on the control node, a zip or a directory (zipped reproducibly), uploaded to the controller when it
        has no app with the same sha256.
      - Mutually exclusive with O(remote_src) and O(image).
    type: path
  remote_src:
    description:
      - The app on the target, a zip or a directory.
      - Mutually exclusive with O(src) and O(image).
    type: path
  artifact_sha256:
    description:
      - The sha256 of the app zip. The action plugin sets it from O(src); there is usually no need to set it.
      - With O(remote_src), the zip must have this checksum. Alone, it names an app already uploaded to the controller.
    type: str
  image:
    description:
      - Image of an image app (C(repository:tag), tag V(latest) when left out). It is registered on the controller
        as an app named after the deployment, with the tag as its version, unless an image app with the same
        repository and tag exists.
    type: str
  replicas:
    description:
      - "The number of replicas, placed by the controller (see O(nodes) and O(node_labels)), or replicas pinned per
        node, as a dictionary of node id to count (V({node-a: 2, node-b: 1})): nodes left out keep none."
      - Nodes must have sent a heartbeat to the controller.
      - Required to create a deployment; when not set, an existing deployment keeps its replicas and placement.
    type: raw
  nodes:
    description:
      - With O(replicas) as a number, the nodes the controller may place replicas on. If not set, every node
        (that has O(node_labels)).
    type: list
    elements: str
  node_labels:
    description:
      - With O(replicas) as a number, the labels a node must have (in its heartbeat, every C(key=value) given) for
        the controller to place replicas on it.
    type: dict
  labels:
    description:
      - Labels of the deployment. When not set, an existing deployment keeps its labels.
    type: dict
  runtime:
    description:
      - How the agents run the app. If not set, each agent's own mode.
    type: str
    choices: [process, docker]
  start_cmd:
    description:
      - Command line that starts the app instead of its C(./start.sh).
    type: str
  env:
    description:
      - Environment variables for the app. Values must be strings or numbers.
    type: dict
  restart_policy:
    description:
      - When the agents restart the app after it exits. If not set, the agents' default.
    type: str
    choices: [always, on-failure, never]
  memory:
    description:
      - Docker runtime only. Memory limit of each replica's container (V(512m), V(1g)).
    type: str
  cpus:
    description:
      - Docker runtime only. CPU limit of each replica's container.
    type: float
  network_mode:
    description:
      - Docker runtime only. Network mode of the containers.
    type: str
    choices: [host, bridge, none]
  ports:
    description:
      - Docker runtime only. Ports to publish, each C([HOST_PORT:]CONTAINER_PORT[/tcp|udp]). With a host port, a node
        can run only one replica.
    type: list
    elements: str
  base_image:
    description:
      - Docker runtime only. Image that a zip app runs in, instead of each agent's E(PLUM_BASE_IMAGE).
    type: str
  update:
    description:
      - How the controller rolls out a new app or new settings. Sent when the deployment is created and with each
        change that is rolled out; the controller keeps it as the deployment's policy. Options not set keep the
        controller's defaults.
      - The controller does not report the policy back, so changing only this option changes nothing.
    type: dict
    suboptions:
      max_unavailable:
        description:
          - How many replicas may be updating at once (the controller's default is 1).
        type: int
      min_healthy_seconds:
        description:
          - Seconds an updated replica must report Running on the new version to count as healthy (default 10).
        type: float
      progress_deadline_seconds:
        description:
          - Seconds an updated replica has to become healthy before the rollout stops (default 120).
        type: float
      auto_rollback:
        description:
          - Whether the controller puts every updated replica back on the previous version when the rollout stops
            (default true).
        type: bool
  wait:
    description:
      - After a change of the app or the settings of a running deployment, wait until the controller's rollout ends;
        the module fails with the controller's message when the rollout was rolled back or failed.
      - With O(state=started), wait until every replica reports Running and stays so for O(wait_stable) seconds;
        with O(state=stopped), until no replica runs.
      - The module fails as soon as a replica fails or crash-loops, with each node's phase and reason.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait with O(wait), for the rollout and the replicas together.
    type: int
    default: 180
  wait_stable:
    description:
      - Seconds every replica must stay Running, without a restart, before O(wait) counts the deployment as started.
      - The agents report to the controller when a replica's phase changes; the window covers that delay too.
    type: float
    default: 3.0
notes:
  - The controller's deployment API has no per-deployment stop timeout or host library mounts; those are set on
    the agents (see the plum_agent role).
seealso:
  - module: plum.deploy.plum_app
"""

EXAMPLES = r"""
- name: Run two replicas of hello on node-a and one on node-b
  plum.deploy.plum_deployment:
    name: hello
    src: apps/hello/
    replicas:
      node-a: 2
      node-b: 1
    env:
      GREETING: hi
  delegate_to: "{{ groups['plum_controller'][0] }}"
  run_once: true

- name: Four replicas placed by the controller on three nodes, in Docker with limits
  plum.deploy.plum_deployment:
    name: web
    image: registry.example.com/web:1.4
    replicas: 4
    nodes: [node-a, node-b, node-c]
    runtime: docker
    memory: 256m
    cpus: 0.5
    labels:
      team: edge

- name: Roll out a new version on the nodes labelled zone=eu, two replicas at most
  plum.deploy.plum_deployment:
    name: web
    image: registry.example.com/web:1.5
    replicas: 2
    node_labels:
      zone: eu
    update:
      max_unavailable: 1
      min_healthy_seconds: 30
    wait_timeout: 600
  register: web

- name: Show how the rollout went
  ansible.builtin.debug:
    msg: "revision {{ web.rollout.revision }}: {{ web.rollout.state }}"
  when: web.rollout.state is defined

- name: Stop a deployment
  plum.deploy.plum_deployment:
    name: web
    state: stopped

- name: Delete a deployment
  plum.deploy.plum_deployment:
    name: web
    state: absent
"""

RETURN = r"""
changed:
  description: Whether the deployment was (or, in check mode, would be) changed.
  returned: always
  type: bool
actions:
  description:
    - What the module did, or would do in check mode, in order.
    - C(upload), C(register-image), C(create), C(update) (in place, rolling out a new app or new settings),
      C(start), C(stop), C(delete).
  returned: always
  type: list
  elements: str
  sample: [upload, create, start]
reasons:
  description: Why each change is needed.
  returned: always
  type: list
  elements: str
artifact_missing:
  description:
    - Set when a real run must upload the app but only O(artifact_sha256) was given. The action plugin then copies
      O(src) to the target and runs the module again.
  returned: on failure, in that case only
  type: bool
status_code:
  description: HTTP status of the API request that failed, when the API refused it (C(null) when it could not be reached).
  returned: on failure
  type: int
  sample: 400
field:
  description: The field the API named in its error, if any.
  returned: on failure
  type: str
  sample: restart_policy
deployment_id:
  description: The id of the deployment. Empty when it does not exist.
  returned: always
  type: str
  sample: 3f2a9c0d4b5e6f708192a3b4c5d6e7f8
deployment:
  description:
    - The deployment as the controller reports it (C(GET /v1/deployments/{id})), after the change. In check mode,
      before it. Empty when it does not exist.
  returned: always
  type: dict
  contains:
    deployment:
      description: C(DeploymentID), C(Name), C(Labels) and C(Status) (C(Running) or C(Stopped)).
      type: dict
      returned: when the deployment exists
    assignments:
      description:
        - One item per replica, with C(instanceId), C(nodeId), C(desired), C(phase), C(message), C(exitCode),
          C(restarts), C(appName), C(appVersion) and C(lastReportAt).
      type: list
      elements: dict
      returned: when the deployment exists
    entries:
      description:
        - The deployment's entry, with its app, runtime settings and C(replicas) per node (where the replicas run).
        - With replicas placed by the controller, also C(desiredReplicas) (the number asked for) and C(placement).
      type: list
      elements: dict
      returned: when the deployment exists
rollout:
  description:
    - The deployment's last rollout of a new app or new settings, as the controller reports it, after the run (after
      the wait, with O(wait)). Empty when the deployment never rolled out a change.
    - C(state) is C(Running), C(Succeeded), C(RolledBack) or C(Failed).
  returned: always
  type: dict
  contains:
    revision:
      description: The revision rolled out.
      type: int
    previousRevision:
      description: The revision before it, which a rollback goes back to.
      type: int
    state:
      description: C(Running), C(Succeeded), C(RolledBack) or C(Failed).
      type: str
    updated:
      description: Replicas updated so far.
      type: int
    healthy:
      description: Updated replicas that passed the health gate.
      type: int
    total:
      description: Replicas to update.
      type: int
    message:
      description: The controller's account of the rollout (why it stopped, when it did).
      type: str
    startedAt:
      description: When the rollout started.
      type: raw
    finishedAt:
      description: When it ended, C(null) while it runs.
      type: raw
  sample:
    revision: 3
    previousRevision: 2
    state: Succeeded
    updated: 2
    healthy: 2
    total: 2
    message: ""
    startedAt: 1764652000
    finishedAt: 1764652025
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.plum.deploy.plugins.module_utils._deployment import run_module
from ansible_collections.plum.deploy.plugins.module_utils._deployment_plan import MUTUALLY_EXCLUSIVE, argument_spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=MUTUALLY_EXCLUSIVE,
    )
    run_module(module)


if __name__ == "__main__":
    main()
