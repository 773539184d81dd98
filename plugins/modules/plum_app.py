#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: plum_app
short_description: Deploy, start, stop and remove an app through a Plum agent
version_added: 0.1.0
description:
  - Deploys an app to the Plum agent on the target host and keeps it in the wanted state, through the agent's
    HTTP API. The agent runs the app as a process or as a Docker container and restarts it by its restart policy.
  - The artifact is a Plum app zip (C(start.sh) and C(meta.ini) at its root), given as O(src) on the control node,
    as O(remote_src) on the target, or an O(image) for image apps.
  - "Idempotent: the same artifact (by sha256) and options report no change and send nothing. In check mode the module
    compares the same way and reports exactly what a real run would change, without uploading or changing anything."
  - When an artifact (O(src), O(remote_src), O(artifact_sha256)) or O(image) is given, the module manages the app's
    whole spec; options that are not set take the agent's defaults, as on a fresh deploy. Without any of them and
    without spec options, it only manages the run state of an app that already exists.
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
      - The diff shows the run state, the artifact's sha256, package name and version, and the spec.
  idempotent:
    support: partial
    details:
      - O(state=restarted) restarts the app on every run, and so always reports a change.
  action:
    support: full
    details:
      - The action plugin packages O(src) on the control node and copies it to the target only when the agent does
        not already run that artifact.
  async:
    support: none
options:
  name:
    description:
      - Name of the app on the agent (1 to 63 characters of lowercase letters, digits, C(_), C(.) and C(-),
        starting with a letter or a digit).
    type: str
    required: true
  state:
    description:
      - V(started) deploys the app when needed and makes sure it runs; with O(wait), waits until it is Running (or
        Completed, for one-shot apps) and stable.
      - V(present) deploys the app when needed without changing whether it runs. A new app stays stopped; an app
        that runs is redeployed and keeps running.
      - V(stopped) stops the app, and deploys it stopped when needed.
      - V(restarted) deploys the app when needed, else restarts it. It always reports a change.
      - V(absent) stops the app and removes it with its files from the agent.
    type: str
    choices: [started, present, stopped, restarted, absent]
    default: started
  src:
    description:
      - The artifact on the control node, a zip or a directory. A directory is zipped reproducibly (sorted entries,
        fixed timestamps, normalized modes), so the same content always gives the same sha256.
      - Relative paths are looked up like other files (the role's or playbook's C(files/) directory first).
      - The zip is copied to the target only when the agent does not already run it, and removed afterwards.
      - Mutually exclusive with O(remote_src).
    type: path
  remote_src:
    description:
      - The artifact on the target, a zip or a directory (zipped reproducibly on the target).
      - Mutually exclusive with O(src).
    type: path
  artifact_sha256:
    description:
      - The sha256 of the artifact. The action plugin sets it from O(src); there is usually no need to set it.
      - With O(remote_src), the artifact must have this checksum.
      - Alone, it names an artifact the agent already runs for this app; the module fails with RV(artifact_missing)
        when a real run would need the artifact itself.
    type: str
  image:
    description:
      - Image of an image app (C(repository:tag)); the app then runs in Docker from this image and needs no artifact.
    type: str
  runtime:
    description:
      - How the agent runs the app. If not set, the agent's own mode (its E(AGENT_RUN_MODE)).
    type: str
    choices: [process, docker]
  start_cmd:
    description:
      - Command line that starts the app (run through C(/bin/sh -c)) instead of the artifact's C(./start.sh).
    type: str
  env:
    description:
      - Environment variables for the app. Values must be strings or numbers (quote V(yes)/V(no) in YAML).
      - The agent sets E(PLUM_INSTANCE_ID), E(PLUM_APP_NAME), E(PLUM_APP_VERSION), E(PLUM_RELEASE), E(PLUM_APP_HOME)
        and E(WORKER_NODE_ID) itself.
    type: dict
  restart_policy:
    description:
      - When the agent restarts the app after it exits. If not set, the agent's default V(always).
    type: str
    choices: [always, on-failure, never]
  max_restarts:
    description:
      - Give up (phase C(Failed)) after this many restarts within O(restart_window) seconds. V(0) never gives up,
        the agent's default.
    type: int
  restart_window:
    description:
      - Window in seconds for O(max_restarts). The agent's default is V(60).
    type: float
  stop_timeout:
    description:
      - Seconds between SIGTERM (or C(docker stop)) and SIGKILL when the app is stopped. The agent's default is V(10).
    type: float
  user:
    description:
      - The user the app runs as, C(NAME) or C(UID), optionally followed by C(:GROUP) or C(:GID).
      - If not set, an agent running as root runs process apps as its E(AGENT_APP_USER) (V(nobody) by default),
        never as root; an agent that is not root runs them as its own user, and refuses any other user.
      - A user or group that does not exist on the target is refused (status 400) and the running app is left as it is.
      - For Docker apps the user is passed to the container (C(docker run --user)) and names are resolved in the image.
      - Changing it redeploys the app.
    type: str
  memory:
    description:
      - Docker runtime only. Memory limit of the container, with units (V(512m), V(1g)) or in bytes.
    type: str
  cpus:
    description:
      - Docker runtime only. CPU limit of the container, in CPUs (V(0.5) is half a CPU).
    type: float
  network_mode:
    description:
      - Docker runtime only. Network mode of the container.
    type: str
    choices: [host, bridge, none]
  ports:
    description:
      - Docker runtime only. Ports to publish, each C([HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]).
      - Quote each item in YAML, or C(8080:80) may be read as a number.
    type: list
    elements: str
  host_lib_paths:
    description:
      - Docker runtime only. Host directories mounted read-only at the same path in the container.
    type: list
    elements: str
  base_image:
    description:
      - Docker runtime only. Image that zip apps run in, instead of the agent's E(PLUM_BASE_IMAGE).
    type: str
  pull_policy:
    description:
      - Docker runtime only. When the agent pulls the image.
    type: str
    choices: [if-not-present, always, never]
  seccomp_unconfined:
    description:
      - Docker runtime only. Run the container with C(seccomp=unconfined) (some old images need it).
    type: bool
  wait:
    description:
      - Wait until the app is Running and stable (or Completed, for one-shot apps) after O(state=started),
        O(state=restarted), or a redeploy of a running app.
      - The module fails as soon as the app fails or restarts while it waits, with the phase, the reason and the
        last lines of the app's log.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the app with O(wait).
    type: int
    default: 120
  wait_stable:
    description:
      - Seconds the app must stay Running, without a restart, before O(wait) counts it as started.
    type: float
    default: 2.0
  log_lines:
    description:
      - How many of the app's last log lines to include when the module fails.
    type: int
    default: 20
seealso:
  - module: plum.deploy.plum_app_info
  - module: plum.deploy.plum_deployment
"""

EXAMPLES = r"""
- name: Deploy hello from a directory on the control node and wait until it runs
  plum.deploy.plum_app:
    name: hello
    src: apps/hello/
    env:
      GREETING: hi

- name: Run a worker as its own unprivileged user
  plum.deploy.plum_app:
    name: worker
    src: apps/worker/
    user: worker

- name: Deploy a zip that is already on the target, stopped
  plum.deploy.plum_app:
    name: batch
    remote_src: /srv/releases/batch-2.1.0.zip
    restart_policy: on-failure
    state: present

- name: Run an image app in Docker with limits
  plum.deploy.plum_app:
    name: web
    image: registry.example.com/web:1.4
    runtime: docker
    memory: 512m
    cpus: 1.5
    network_mode: bridge
    ports:
      - "127.0.0.1:8081:8080"

- name: Restart an app (its artifact and spec stay as they are)
  plum.deploy.plum_app:
    name: hello
    state: restarted

- name: Remove an app
  plum.deploy.plum_app:
    name: hello
    state: absent

- name: Set the agent connection once for all plum.deploy modules
  module_defaults:
    group/plum.deploy.plum:
      agent_url: http://127.0.0.1:7070
      agent_token: "{{ vault_plum_agent_token }}"
  block:
    - name: Stop hello
      plum.deploy.plum_app:
        name: hello
        state: stopped
"""

RETURN = r"""
changed:
  description: Whether the app was (or, in check mode, would be) changed.
  returned: always
  type: bool
actions:
  description:
    - What the module did, or would do in check mode, in order.
    - C(deploy) (deploy and run), C(deploy-stopped) (deploy without starting), C(start), C(stop), C(restart), C(delete).
  returned: always
  type: list
  elements: str
  sample: [deploy]
reasons:
  description: Why each change is needed (a new artifact, the spec fields that change, the app being stopped...).
  returned: always
  type: list
  elements: str
  sample: ["spec changes: env"]
artifact_missing:
  description:
    - Set when a real run needs the artifact but only O(artifact_sha256) was given. The action plugin then copies
      O(src) to the target and runs the module again.
  returned: on failure, in that case only
  type: bool
artifact:
  description: The artifact given as O(src), as the action plugin found it on the control node.
  returned: when O(src) is given
  type: dict
  contains:
    src:
      description: Path of O(src) on the control node.
      type: str
      returned: when O(src) is given
    directory:
      description: Whether O(src) is a directory, zipped on the control node.
      type: bool
      returned: when O(src) is given
    sha256:
      description: sha256 of the zip.
      type: str
      returned: when O(src) is given
    package:
      description: The C(name) in its C(meta.ini).
      type: str
      returned: when O(src) is given
    version:
      description: The C(version) in its C(meta.ini).
      type: str
      returned: when O(src) is given
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
logs:
  description: The last lines of the app's log, when the module fails because the app failed, restarted or timed out.
  returned: on failure while waiting
  type: list
  elements: str
app:
  description:
    - The app's status as the agent reports it, after the change. In check mode, the status before it.
    - Empty when the app does not exist.
  returned: always
  type: dict
  contains:
    name:
      description: Name of the app on the agent.
      type: str
      returned: when the app exists
      sample: hello
    package:
      description: The C(name) in the artifact's C(meta.ini).
      type: str
      returned: when the app exists
      sample: hello
    version:
      description: The C(version) in the artifact's C(meta.ini).
      type: str
      returned: when the app exists
      sample: 1.0.0
    runtime:
      description: The runtime that runs the app, C(process) or C(docker).
      type: str
      returned: when the app exists
      sample: process
    runtime_on_deploy:
      description:
        - The runtime a new deploy of the app would use. It differs from RV(app.runtime) after the node changed mode
          (docs/modes.md); the module then redeploys the app.
      type: str
      returned: when the app exists
      sample: docker
    phase:
      description:
        - C(Starting), C(Running), C(BackOff) (waiting to restart after an exit), C(Failed) (gave up, or could not
          start), C(Stopped) or C(Completed) (a one-shot app exited with 0).
      type: str
      returned: when the app exists
      sample: Running
    desired:
      description: Whether the app should run, C(running) or C(stopped).
      type: str
      returned: when the app exists
      sample: running
    pid:
      description: Process id of the running instance, or null.
      type: int
      returned: when the app exists
      sample: 4242
    instance_id:
      description: The instance id the app sees as E(PLUM_INSTANCE_ID).
      type: str
      returned: when the app exists
      sample: hello-1a2b3c4d
    restarts:
      description: Restarts by the agent since the last deploy.
      type: int
      returned: when the app exists
      sample: 0
    exit_code:
      description: Exit code of the last instance that exited, or null.
      type: int
      returned: when the app exists
    exit_reason:
      description: Why the last instance exited (for example C(Exited), C(Signaled), C(OOMKilled)), or null.
      type: str
      returned: when the app exists
    message:
      description: The agent's explanation of the phase (the exit and the next restart, the start error).
      type: str
      returned: when the app exists
      sample: ""
    started_at:
      description: When the running instance started, ISO 8601 in UTC.
      type: str
      returned: when the app exists
      sample: "2025-01-01T12:00:00.000Z"
    artifact_sha256:
      description: sha256 of the app's artifact.
      type: str
      returned: when the app exists
    spec_hash:
      description: sha256 of the app's normalized spec.
      type: str
      returned: when the app exists
    spec:
      description: The app's spec as the agent normalized it (every field, defaults filled in).
      type: dict
      returned: when the app exists
      sample: {"runtime": null, "start_cmd": null, "env": {}, "restart_policy": "always", "max_restarts": 0,
               "restart_window": 60.0, "stop_timeout": 10.0, "user": null}
    services:
      description: The services declared in C(meta.ini), each with C(name), C(protocol) and C(port).
      type: list
      elements: dict
      returned: when the app exists
    cpu_seconds:
      description: CPU time used by the running instance, or null.
      type: float
      returned: when the app exists
    cpu_percent:
      description: CPU use of the running instance since the previous status request, or null.
      type: float
      returned: when the app exists
    memory_bytes:
      description: Resident memory of the running instance, or null.
      type: int
      returned: when the app exists
    log_path:
      description: The app's log file on the target.
      type: str
      returned: when the app exists
    last_logs:
      description: The last log lines kept when the app exited (phases C(BackOff), C(Failed), C(Completed)).
      type: list
      elements: str
      returned: when the app exists
"""

import json
import time
from datetime import datetime
from typing import Any, Dict, List, NoReturn, Optional, Tuple, Union

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.plum.deploy.plugins.module_utils._artifact import ArtifactError, module_artifact
from ansible_collections.plum.deploy.plugins.module_utils._client import (
    AGENT,
    MultipartBody,
    PlumClient,
    PlumError,
    PlumNotFound,
    connection_argument_spec,
)
from ansible_collections.plum.deploy.plugins.module_utils._manager import Manager
from ansible_collections.plum.deploy.plugins.module_utils._spec import (
    RUNNING,
    SPEC_OPTIONS,
    Plan,
    SpecError,
    build_spec,
    plan,
    view,
)
from ansible_collections.plum.deploy.plugins.module_utils._status import describe

POLL_INTERVAL = 0.2
Json = Dict[str, Any]


def parse_time(text: Optional[str]) -> Optional[float]:
    """Seconds since the epoch from the agent's ISO 8601 UTC timestamps (Python 3.8 has no 'Z' support)."""
    if not text:
        return None
    try:
        value = datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        try:
            value = datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return None
    return value.timestamp()


class PlumAppManager(Manager):
    def __init__(self, module: Any, client: PlumClient) -> None:
        super().__init__(module, dict(changed=False, actions=[], reasons=[], app={}))
        self.client = client
        self.params = module.params
        self.name: str = self.params["name"]
        self.check_mode = module.check_mode
        self.spec: Optional[Json] = None

    # -- helpers --------------------------------------------------------------------------

    def app_path(self, *more: str) -> str:
        return PlumClient.path("v1", "apps", self.name, *more)

    def get_status(self) -> Optional[Json]:
        try:
            status: Json = self.client.request("GET", self.app_path())
        except PlumNotFound:
            return None
        return status

    def logs(self, status: Optional[Json]) -> List[str]:
        lines = list((status or {}).get("last_logs") or [])
        if lines:
            return lines[-self.params["log_lines"]:]
        try:
            answer = self.client.request("GET", self.app_path("logs"), query={"tail": self.params["log_lines"]})
        except PlumError:
            return []
        return list((answer or {}).get("lines") or [])

    def op_timeout(self, current: Optional[Json]) -> float:
        stop = (self.spec or {}).get("stop_timeout") or ((current or {}).get("spec") or {}).get("stop_timeout") or 10
        return self.client.timeout + float(stop)

    # -- artifact -------------------------------------------------------------------------

    def artifact(self) -> Tuple[Optional[str], Optional[str], Optional[Json]]:
        """(sha256, zip path or None, meta or None) of the artifact to deploy, or (None, None, None)."""
        try:
            return module_artifact(self.params["remote_src"], self.params["artifact_sha256"], self.module.tmpdir)
        except ArtifactError as exc:
            self.fail(to_native(exc))

    # -- the run --------------------------------------------------------------------------

    def run(self) -> Json:
        params = self.params
        if params["src"]:
            self.fail("src is a path on the control node and is handled by the plum.deploy.plum_app action plugin; "
                      "use remote_src for a path on the target")
        sha, zip_path, meta = self.artifact() if params["state"] != "absent" else (None, None, None)
        manage_spec = sha is not None or any(params.get(k) is not None for k in SPEC_OPTIONS)
        try:
            self.spec = build_spec(params) if manage_spec and params["state"] != "absent" else None
        except SpecError as exc:
            self.fail(to_native(exc))
        current = self.get_status()
        try:
            the_plan = plan(
                self.name, params["state"], current, artifact_sha256=sha, spec=self.spec,
                version=(meta or {}).get("version"), package=(meta or {}).get("name"),
            )
        except SpecError as exc:
            self.fail(to_native(exc))
        self.results.update(actions=the_plan.actions, reasons=the_plan.reasons, changed=the_plan.changed,
                            app=current or {})
        if self.module._diff:
            self.results["diff"] = dict(before=view(current), after=the_plan.after)
        if self.check_mode:
            return self.results
        if the_plan.upload and zip_path is None:
            self.fail("the agent does not have artifact %s for app %s; give src or remote_src to upload it"
                      % (sha, self.name), artifact_missing=True)

        status = current
        for action in the_plan.actions:
            try:
                status, did = self.perform(action, status, zip_path if the_plan.upload else None)
            except PlumError as exc:
                self.fail(exc.message, status_code=exc.status, field=exc.field)
            self.did_change = self.did_change or did
            if not did:
                self.module.warn("the agent reported no change for %r on app %s although one was expected (%s)"
                                 % (action, self.name, "; ".join(the_plan.reasons) or "no reason given"))
        self.results["changed"] = self.did_change
        self.results["app"] = status or {}
        if self.module._diff:
            self.results["diff"]["after"] = view(status)

        if status and params["wait"] and self.should_wait(the_plan, status):
            self.results["app"] = self.wait(status, status.get("restarts") or 0)
        return self.results

    def should_wait(self, the_plan: Plan, status: Json) -> bool:
        state = self.params["state"]
        if state in ("started", "restarted"):
            return True
        if state == "present":
            return bool(the_plan.actions) and status.get("desired") == RUNNING
        return False

    def perform(self, action: str, status: Optional[Json], zip_path: Optional[str]) -> Tuple[Optional[Json], bool]:
        """Run one action; return (the app's status after it, whether the agent changed something)."""
        timeout = self.op_timeout(status)
        if action in ("deploy", "deploy-stopped"):
            parts: List[Tuple[str, Optional[str], str, Union[bytes, str]]] = []
            if zip_path is not None:
                parts.append(("artifact", "artifact.zip", "application/zip", zip_path))
            parts.append(("spec", None, "application/json", json.dumps(self.spec, sort_keys=True).encode("utf-8")))
            query = {"start": "false"} if action == "deploy-stopped" else None
            answer = self.client.request("PUT", self.app_path(), query=query, body=MultipartBody(parts),
                                         timeout=timeout)
            return answer.get("app"), bool(answer.get("changed"))
        if action in ("start", "stop", "restart"):
            answer = self.client.request("POST", self.app_path(action), timeout=timeout)
            return answer.get("app"), bool(answer.get("changed"))
        if action == "delete":
            try:
                self.client.request("DELETE", self.app_path(), timeout=timeout)
            except PlumNotFound:
                return None, False
            return None, True
        raise AssertionError("unknown action %s" % action)

    def wait(self, status: Json, baseline_restarts: int) -> Json:
        """Until the app is Running and stable, or Completed; fail fast when it fails or restarts."""
        params = self.params
        deadline = time.time() + params["wait_timeout"]
        seen_running = None
        while True:
            phase = status.get("phase")
            if phase == "Completed":
                return status
            if phase == "Failed":
                self.fail_app("failed", status)
            if status.get("desired") != RUNNING:
                self.fail_app("was stopped while the module waited for it", status)
            if phase == "BackOff" or (status.get("restarts") or 0) > baseline_restarts:
                self.fail_app("is crash-looping (it exited and the agent is restarting it)", status)
            if phase == "Running":
                started = parse_time(status.get("started_at"))
                now = time.time()
                if seen_running is None:
                    seen_running = now
                uptime = now - started if started is not None else now - seen_running
                if uptime >= params["wait_stable"]:
                    return status
            if time.time() >= deadline:
                self.fail_app("did not become Running and stable within %s seconds (wait_timeout)"
                              % params["wait_timeout"], status)
            time.sleep(POLL_INTERVAL)
            try:
                status = self.client.request("GET", self.app_path())
            except PlumNotFound:
                self.fail("app %s was removed while the module waited for it" % self.name)

    def fail_app(self, what: str, status: Json) -> NoReturn:
        lines = self.logs(status)
        msg = "app %s %s: %s" % (self.name, what, describe(status))
        if lines:
            msg += "\nLast %d log line(s):\n%s" % (len(lines), "\n".join("  " + line for line in lines))
        else:
            msg += "\nThe app's log is empty (%s)." % status.get("log_path")
        self.results["app"] = status
        self.fail(msg, logs=lines)


def main() -> None:
    argument_spec = connection_argument_spec(
        name=dict(type="str", required=True),
        state=dict(type="str", default="started", choices=["started", "present", "stopped", "restarted", "absent"]),
        src=dict(type="path"),
        remote_src=dict(type="path"),
        artifact_sha256=dict(type="str"),
        image=dict(type="str"),
        runtime=dict(type="str", choices=["process", "docker"]),
        start_cmd=dict(type="str"),
        env=dict(type="dict"),
        restart_policy=dict(type="str", choices=["always", "on-failure", "never"]),
        max_restarts=dict(type="int"),
        restart_window=dict(type="float"),
        stop_timeout=dict(type="float"),
        user=dict(type="str"),
        memory=dict(type="str"),
        cpus=dict(type="float"),
        network_mode=dict(type="str", choices=["host", "bridge", "none"]),
        ports=dict(type="list", elements="str"),
        host_lib_paths=dict(type="list", elements="str"),
        base_image=dict(type="str"),
        pull_policy=dict(type="str", choices=["if-not-present", "always", "never"]),
        seccomp_unconfined=dict(type="bool"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=120),
        wait_stable=dict(type="float", default=2.0),
        log_lines=dict(type="int", default=20),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("src", "remote_src")],
    )
    try:
        client = PlumClient.from_params(AGENT, module.params)
    except PlumError as exc:
        module.fail_json(msg=exc.message)
    if client.token:
        module.no_log_values.add(client.token)
    manager = PlumAppManager(module, client)
    try:
        results = manager.run()
    except PlumError as exc:
        manager.fail(exc.message, status_code=exc.status, field=exc.field)
    module.exit_json(**results)


if __name__ == "__main__":
    main()
