"""Print where each deployment's replicas run, from the controller's API (for scripts/run-lab.sh).

PLUM_CONTROLLER_TOKEN=... python scripts/lab_status.py http://127.0.0.1:PORT
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from typing import Any


def get(api: str, path: str) -> Any:
    headers = {"Authorization": "Bearer " + os.environ["PLUM_CONTROLLER_TOKEN"]}
    request = urllib.request.Request(api + path, headers=headers)  # noqa: S310 - the lab's http:// URL
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the lab's loopback URL
        return json.load(response)


def main() -> int:
    api = sys.argv[1].rstrip("/")
    nodes = {n.get("nodeId"): n for n in get(api, "/v1/nodes")}
    for summary in get(api, "/v1/deployments"):
        detail = get(api, f"/v1/deployments/{summary['deploymentId']}")
        print(f"deployment {summary['name']} ({summary['status']}):")
        for a in detail.get("assignments", []):
            node = nodes.get(a["nodeId"], {})
            where = f"{a['nodeId']} ({node.get('ip', '?')}, {node.get('health', node.get('status', '?'))})"
            print(f"  {a['instanceId']}  on {where}: {a['phase']} {a.get('message') or ''}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
