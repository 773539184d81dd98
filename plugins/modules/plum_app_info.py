#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: plum_app_info
short_description: Read the apps of a Plum agent and their status
version_added: 0.1.0
description:
  - Returns the apps that the Plum agent on the target host runs, or one of them, with their phase, restarts,
    resource use and last log lines, for C(register) and reports.
author:
  - Plum Deploy maintainers (!UNKNOWN)
extends_documentation_fragment:
  - plum.deploy._connection
  - plum.deploy._attributes
  - plum.deploy._attributes.INFO_MODULE
  - plum.deploy._attributes.ACTIONGROUP_PLUM
attributes:
  action:
    support: none
  async:
    support: full
options:
  name:
    description:
      - Only this app. When it does not exist, RV(apps) is empty and RV(exists) is false; the module does not fail.
    type: str
  log_lines:
    description:
      - Also read this many of the last lines of each app's log into C(logs) of each app in RV(apps). V(0) reads none.
    type: int
    default: 0
seealso:
  - module: plum.deploy.plum_app
"""

EXAMPLES = r"""
- name: Read every app of the agent
  plum.deploy.plum_app_info:
  register: plum

- name: Show the apps that are not Running
  ansible.builtin.debug:
    msg: "{{ item.name }} {{ item.version }}: {{ item.phase }} {{ item.message }}"
  loop: "{{ plum.apps | rejectattr('phase', 'equalto', 'Running') }}"

- name: Read one app with its last 10 log lines
  plum.deploy.plum_app_info:
    name: hello
    log_lines: 10
  register: hello

- name: Fail when hello restarted
  ansible.builtin.assert:
    that: hello.exists and hello.apps[0].restarts == 0
"""

RETURN = r"""
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
exists:
  description: Whether O(name) exists on the agent; true when O(name) is not given.
  returned: always
  type: bool
agent:
  description: What the agent says about itself (C(GET /healthz)).
  returned: always
  type: dict
  contains:
    node_id:
      description: The agent's node id (E(AGENT_NODE_ID)).
      type: str
      returned: always
    version:
      description: The agent's version.
      type: str
      returned: always
    url:
      description: The agent's URL the module used.
      type: str
      returned: always
apps:
  description:
    - The apps, sorted by name, each with the same status fields as the C(app) that M(plum.deploy.plum_app) returns.
    - Among them C(name), C(package), C(version), C(runtime), C(phase), C(desired), C(pid), C(restarts), C(exit_code),
      C(exit_reason), C(message), C(started_at), C(artifact_sha256), C(spec), C(services), C(cpu_seconds),
      C(cpu_percent), C(memory_bytes), C(log_path) and C(last_logs).
  returned: always
  type: list
  elements: dict
  sample:
    - name: hello
      version: 1.0.0
      runtime: process
      phase: Running
      pid: 4242
      restarts: 0
      memory_bytes: 3362816
      cpu_percent: 0.0
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.plum.deploy.plugins.module_utils._client import (
    AGENT,
    PlumClient,
    PlumError,
    PlumNotFound,
    connection_argument_spec,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=connection_argument_spec(
            name=dict(type="str"),
            log_lines=dict(type="int", default=0),
        ),
        supports_check_mode=True,
    )
    name = module.params["name"]
    try:
        client = PlumClient.from_params(AGENT, module.params)
        if client.token:
            module.no_log_values.add(client.token)
        health = client.healthz() or {}
        if name:
            try:
                apps = [client.request("GET", PlumClient.path("v1", "apps", name))]
            except PlumNotFound:
                apps = []
        else:
            apps = (client.request("GET", "/v1/apps") or {}).get("apps") or []
        if module.params["log_lines"] > 0:
            for app in apps:
                answer = client.request("GET", PlumClient.path("v1", "apps", app["name"], "logs"),
                                        query={"tail": module.params["log_lines"]})
                app["logs"] = list((answer or {}).get("lines") or [])
    except PlumError as exc:
        module.fail_json(msg=exc.message, status_code=exc.status, field=exc.field)
    module.exit_json(
        changed=False,
        exists=bool(apps) or not name,
        agent=dict(node_id=health.get("node_id"), version=health.get("version"), url=client.url),
        apps=apps,
    )


if __name__ == "__main__":
    main()
