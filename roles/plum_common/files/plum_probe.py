# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Facts the roles' preflight needs about a target, run with the Python the runtime will use.

    python plum_probe.py DATA_DIR PORT

Prints one JSON object: the Python version, whether venv/ensurepip work (Debian's python3-venv), the
machine, the free space where DATA_DIR is (or will be) stored, the systemd version, and which
process listens on PORT, if any. It changes nothing.
"""

import http.client as http_client
import json
import os
import platform
import re
import shutil
import subprocess
import sys


def free_mb(path):
    """Free space on the filesystem that holds ``path`` or its nearest existing parent."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    return shutil.disk_usage(probe).free // (1024 * 1024), probe


def venv_available():
    try:
        import ensurepip  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel
        import venv  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel
    except ImportError:
        return False
    return True


def run(argv):
    try:
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    except OSError:
        return ""
    return result.stdout.decode("utf-8", "replace")


def systemd_version():
    match = re.search(r"systemd (\d+)", run(["systemctl", "--version"]))
    return int(match.group(1)) if match else 0


def server_of(address, port):
    """The HTTP Server header of what answers /healthz at ``address``, e.g. "plum-agent/0.1.0", or ""."""
    host = address.strip("[]")
    if host in ("*", "0.0.0.0", "::", ""):
        host = "127.0.0.1"
    try:
        connection = http_client.HTTPConnection(host, port, timeout=3)
        connection.request("GET", "/healthz")
        return connection.getresponse().getheader("Server") or ""
    except (OSError, http_client.HTTPException):
        return ""


def listener(port):
    """What listens on TCP ``port``: its program and pid when ss may tell (it may not without
    CAP_SYS_PTRACE, as in containers), and the Server header it answers /healthz with."""
    out = run(["ss", "-H", "-l", "-t", "-n", "-p", "sport = :%d" % port])
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address = fields[3].rsplit(":", 1)[0]
        match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
        return {
            "name": match.group(1) if match else "an unknown program",
            "pid": int(match.group(2)) if match else 0,
            "address": address,
            "server": server_of(address, port),
        }
    return None


def main():
    data_dir, port = sys.argv[1], int(sys.argv[2])
    free, checked = free_mb(data_dir)
    print(
        json.dumps(
            {
                "python": "%d.%d" % sys.version_info[:2],
                "python_full": platform.python_version(),
                "venv": venv_available(),
                "machine": platform.machine(),
                "free_mb": free,
                "free_path": checked,
                "systemd": systemd_version(),
                "listener": listener(port),
            }
        )
    )


if __name__ == "__main__":
    main()
