"""A local cluster on this machine: one controller, two agents, the example app deployed through the
controller with one replica on each node. Everything listens on loopback; state lives in .run/cluster
(PLUM_CLUSTER_DIR overrides it, and PLUM_CLUSTER_PORT the first of the three ports, 8180).

    python scripts/local_cluster.py up      # start (or reuse) the cluster, deploy hello, show where it runs
    python scripts/local_cluster.py down    # remove the deployment, stop the agents and the controller
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

from plum.common.artifact import zip_directory
from plum.common.multipart import Part, encode_multipart

REPO = Path(__file__).resolve().parents[1]
RUN = Path(os.environ.get("PLUM_CLUSTER_DIR") or REPO / ".run" / "cluster")
BIN = Path(sys.executable).parent
CONTROLLER_PORT = int(os.environ.get("PLUM_CLUSTER_PORT") or 8180)
NODES = {"node1": CONTROLLER_PORT + 1, "node2": CONTROLLER_PORT + 2}


def call(method: str, url: str, token: str, body: Optional[bytes] = None, ctype: str = "application/json") -> Any:
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - our own http:// URLs
    request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {url}: {exc.code} {exc.read().decode(errors='replace')}") from None
    return json.loads(raw) if raw.strip() else None


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1):  # noqa: S310
            return True
    except OSError:
        return False


def spawn(name: str, command: list[str], env: dict[str, str], url: str) -> None:
    if healthy(url):
        print(f"{name}: already running at {url}")
        return
    log = (RUN / f"{name}.log").open("ab")
    proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=log, start_new_session=True)
    (RUN / f"{name}.pid").write_text(f"{proc.pid}\n")
    for _ in range(100):
        if healthy(url):
            print(f"{name}: started (pid {proc.pid}) at {url}, log {RUN / (name + '.log')}")
            return
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}; see {RUN / (name + '.log')}")
        time.sleep(0.1)
    raise SystemExit(f"{name} did not answer at {url}; see {RUN / (name + '.log')}")


def up() -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    api = f"http://127.0.0.1:{CONTROLLER_PORT}"
    controller_env = {"CONTROLLER_DATA_DIR": str(RUN / "controller"), "CONTROLLER_ADDR": f"127.0.0.1:{CONTROLLER_PORT}"}
    spawn("controller", [str(BIN / "plum-controller")], controller_env, api)
    operator = (RUN / "controller" / "operator.token").read_text().strip()
    for node, port in NODES.items():
        env = {
            "AGENT_NODE_ID": node,
            "AGENT_DATA_DIR": str(RUN / node),
            "AGENT_API_ADDR": f"127.0.0.1:{port}",
            "CONTROLLER_BASE": api,
            # A token is never put in a daemon's environment (readable in /proc/<pid>/environ): its file is.
            "CONTROLLER_AGENT_TOKEN_FILE": str(RUN / "controller" / "agent.token"),
        }
        spawn(node, [str(BIN / "plum-agent")], env, f"http://127.0.0.1:{port}")

    deployments = {d["name"]: d for d in call("GET", f"{api}/v1/deployments", operator)}
    if "hello" in deployments:
        dep_id = deployments["hello"]["deploymentId"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            artifact = Path(tmp) / "hello.zip"
            zip_directory(REPO / "examples" / "apps" / "hello", artifact)
            body, content_type = encode_multipart([Part("file", artifact.read_bytes(), "hello.zip", "application/zip")])
        apps = {(a["name"], a["version"]): a for a in call("GET", f"{api}/v1/apps", operator)}
        app = apps.get(("hello", "1.0.0")) or call("POST", f"{api}/v1/apps/upload", operator, body, content_type)
        entry = {"artifactUrl": app["url"], "replicas": dict.fromkeys(NODES, 1)}
        created = call(
            "POST", f"{api}/v1/deployments", operator, json.dumps({"name": "hello", "entries": [entry]}).encode()
        )
        dep_id = created["deploymentId"]
    call("POST", f"{api}/v1/deployments/{dep_id}?action=start", operator, b"")

    for _ in range(100):
        detail = call("GET", f"{api}/v1/deployments/{dep_id}", operator)
        if all(a.get("phase") == "Running" for a in detail["assignments"]):
            break
        time.sleep(0.1)
    print(f"\ndeployment hello ({dep_id}):")
    for a in detail["assignments"]:
        print(f"  {a['instanceId']}  node={a['nodeId']}  phase={a.get('phase') or '-'}")
    print(f"\ncontroller API: {api} (operator token: {RUN / 'controller' / 'operator.token'})")
    for node, port in NODES.items():
        print(f"{node}: AGENT_DATA_DIR={RUN / node} AGENT_API_ADDR=127.0.0.1:{port} {BIN / 'plumctl'} list")
    print("stop it all: make cluster-down")


def down() -> None:
    api = f"http://127.0.0.1:{CONTROLLER_PORT}"
    token_file = RUN / "controller" / "operator.token"
    if healthy(api) and token_file.exists():
        operator = token_file.read_text().strip()
        for dep in call("GET", f"{api}/v1/deployments", operator):
            if dep["name"] == "hello":
                call("DELETE", f"{api}/v1/deployments/{dep['deploymentId']}", operator)
        time.sleep(2)  # the agents see the deletion and stop the instances
    for name in [*NODES, "controller"]:
        pid_file = RUN / f"{name}.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):  # wait until it is gone, so a new `up` can take its port
                    os.kill(pid, 0)
                    time.sleep(0.1)
            except ProcessLookupError:
                print(f"{name}: stopped")
            pid_file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("up", "down"))
    args = parser.parse_args()
    up() if args.action == "up" else down()


if __name__ == "__main__":
    main()
