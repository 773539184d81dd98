#!/usr/bin/env python3
"""A lab of systemd test hosts in Docker containers, reachable by SSH on loopback, for Ansible.

Each host is a container of the image of `scripts/build-test-image.sh --host bookworm` with systemd as PID 1,
sshd and its own Docker engine, started without --privileged (see /work/shared/ENVIRONMENT.md, "systemd test
hosts"). Used by `make run` (a local lab) and by molecule's create/destroy playbooks (molecule/_shared).

    python scripts/lab.py up --name plum-lab --host controller:plum_controller \\
        --host agent1:plum_agents --host agent2:plum_agents --publish controller:8080 \\
        --inventory .run/lab/inventory.yml
    ansible -i .run/lab/inventory.yml all -m ansible.builtin.ping
    python scripts/lab.py load-image --name plum-lab plum-test/base:bookworm      # into every host's engine
    python scripts/lab.py save-image plum-test/base:bookworm .run/lab/base.tar   # an archive for the roles
    python scripts/lab.py down --name plum-lab

`up` is idempotent: it reuses running containers of the same spec and rewrites the inventory. The SSH key pair
of a lab lives in `<inventory dir>/.<name>.state/`. Only 127.0.0.1 ports are published (Docker picks them).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

DEFAULT_IMAGE = "plum-test/host:bookworm"
LABEL = "org.plum-deploy.lab"
SSH_COMMON_ARGS = (
    "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ControlMaster=auto -o ControlPersist=60s"
)
# ENVIRONMENT.md's recipe: --privileged fails on these machines, so grant what systemd and an inner dockerd need.
RUN_FLAGS = [
    *("--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW", "--cap-add", "MKNOD"),
    # The inner runc joins the namespaces of a container's process to exec into it (healthchecks, docker
    # exec): for a container that runs as a non-root user, that needs ptrace rights over another uid.
    *("--cap-add", "SYS_PTRACE"),
    *("--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"),
    *("--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock"),
    # systemd's halt signal (PID 1 ignores SIGTERM); `docker import` cannot set STOPSIGNAL in the image.
    *("--stop-signal", "SIGRTMIN+3"),
]


class LabError(Exception):
    pass


def docker_bin() -> str:
    path = shutil.which("docker")
    if path is None:
        raise LabError("no docker client on PATH (scripts/docker-engine.sh installs and starts the engine)")
    return path


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    """Run `docker ARGS` (an argument list, never a shell) and return its stdout."""
    proc = subprocess.run([docker_bin(), *args], capture_output=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise LabError(f"docker {' '.join(args[:3])}... failed ({proc.returncode}): {err}")
    return proc.stdout.decode(errors="replace")


def docker_ok(*args: str) -> bool:
    return subprocess.run([docker_bin(), *args], capture_output=True, check=False, timeout=60).returncode == 0


@dataclass
class Host:
    name: str
    groups: list[str]
    publish: list[int] = field(default_factory=list)
    image: Optional[str] = None  # None: the lab's --image

    def container(self, lab: str) -> str:
        return f"{lab}-{self.name}"

    def volume(self, lab: str) -> str:
        return f"{lab}-{self.name}-docker"

    def spec(self, image: str) -> str:
        """What the container was started with: a reused container must match it."""
        return hashlib.sha256(json.dumps([image, sorted(self.publish), RUN_FLAGS]).encode()).hexdigest()[:16]


@dataclass
class Running:
    host: Host
    ssh_port: int
    ports: dict[int, int]
    address: str
    state: str


# Lab names prefix container, volume and network names; host names are also hostnames.
LAB_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,40}")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
GROUP_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_lab_name(lab: str) -> str:
    if not LAB_RE.fullmatch(lab):
        raise LabError(f"--name {lab!r}: use lowercase letters, digits, '-', '_' and '.'")
    return lab


def parse_hosts(specs: list[str], publish: list[str], images: Optional[list[str]] = None) -> list[Host]:
    hosts: dict[str, Host] = {}
    for spec in specs:
        name, sep, groups = spec.partition(":")
        if not NAME_RE.fullmatch(name) or not sep or not groups:
            raise LabError(f"--host {spec!r}: expected NAME:GROUP[,GROUP], NAME of lowercase letters, digits and '-'")
        if name in hosts:
            raise LabError(f"--host {name} given twice")
        group_list = [g for g in groups.split(",") if g]
        for group in group_list:
            if not GROUP_RE.fullmatch(group):
                raise LabError(f"--host {spec!r}: group {group!r} is not a valid Ansible group name")
        hosts[name] = Host(name, group_list)
    for item in publish:
        name, _, port = item.partition(":")
        if name not in hosts or not port.isdigit():
            raise LabError(f"--publish {item!r}: expected NAME:CONTAINER_PORT with NAME one of the --host names")
        hosts[name].publish.append(int(port))
    for item in images or []:
        name, _, image = item.partition("=")
        if name not in hosts or not image:
            raise LabError(f"--host-image {item!r}: expected NAME=IMAGE with NAME one of the --host names")
        hosts[name].image = image
    if not hosts:
        raise LabError("give at least one --host NAME:GROUP")
    return list(hosts.values())


def state_dir(inventory: Path, lab: str) -> Path:
    # Hidden: the inventory's directory stays a valid Ansible inventory source (molecule passes the whole
    # directory), since Ansible skips dot entries there instead of trying to parse the key files.
    return inventory.parent / f".{lab}.state"


def ensure_key(directory: Path, lab: str) -> Path:
    key = directory / "id_ed25519"
    if not key.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        keygen = shutil.which("ssh-keygen")
        if keygen is None:
            raise LabError("ssh-keygen is missing (apt-get install openssh-client)")
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", lab, "-f", str(key)], check=True)
    return key


def ensure_network(lab: str) -> None:
    if not docker_ok("network", "inspect", lab):
        docker("network", "create", "--driver", "bridge", "--label", f"{LABEL}={lab}", lab)


def container_state(name: str) -> Optional[dict[str, str]]:
    out = docker(
        "container",
        "inspect",
        "--format",
        f'{{{{json .State.Status}}}} {{{{json (index .Config.Labels "{LABEL}.spec")}}}}',
        name,
        check=False,
    )
    if not out.strip():
        return None
    status, spec = out.split(" ", 1)
    return {"status": json.loads(status), "spec": json.loads(spec) or ""}


def start_container(lab: str, host: Host, image: str) -> str:
    """Create (or reuse) the host's container; return 'created', 'started' or 'reused'."""
    name = host.container(lab)
    spec = host.spec(image)
    state = container_state(name)
    if state is not None and state["spec"] != spec:
        print(f"{name}: started with another image or ports; recreating it (its Docker volume is kept)")
        docker("rm", "-f", name)
        state = None
    if state is not None:
        if state["status"] == "running":
            return "reused"
        docker("start", name)
        return "started"
    if not docker_ok("volume", "inspect", host.volume(lab)):
        docker("volume", "create", "--label", f"{LABEL}={lab}", host.volume(lab))
    publish: list[str] = ["-p", "127.0.0.1::22"]
    for port in host.publish:
        publish += ["-p", f"127.0.0.1::{port}"]
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        host.name,
        "--network",
        lab,
        # Other hosts of the lab reach this one by its short name (e.g. http://controller:8080).
        "--network-alias",
        host.name,
        "--label",
        f"{LABEL}={lab}",
        "--label",
        f"{LABEL}.host={host.name}",
        "--label",
        f"{LABEL}.spec={spec}",
        *RUN_FLAGS,
        "-v",
        f"{host.volume(lab)}:/var/lib/docker",
        *publish,
        image,
        "/lib/systemd/systemd",
    )
    return "created"


def host_port(container: str, port: int) -> int:
    # One line per published address, e.g. "127.0.0.1:49153"; we publish on 127.0.0.1 only.
    out = docker("port", container, f"{port}/tcp").split()
    if not out:
        raise LabError(f"{container}: port {port} is not published")
    return int(out[0].rsplit(":", 1)[1])


def install_key(container: str, public_key: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "authorized_keys"
        keys.write_bytes(public_key.read_bytes())
        keys.chmod(0o600)
        docker("exec", container, "install", "-d", "-m", "0700", "/root/.ssh")
        docker("cp", str(keys), f"{container}:/root/.ssh/authorized_keys")
    docker("exec", container, "chown", "root:root", "/root/.ssh/authorized_keys")


def wait_booted(container: str, deadline: float) -> str:
    """Wait for systemd to finish booting; return 'running' or 'degraded' (failed units are printed)."""
    state = ""
    while time.monotonic() < deadline:
        # Before D-Bus is up this prints an error; "starting"/"initializing" while units start.
        state = docker("exec", container, "systemctl", "is-system-running", check=False).strip()
        if state in ("running", "degraded"):
            break
        time.sleep(0.5)
    else:
        logs = docker("exec", container, "systemctl", "list-jobs", "--no-pager", check=False)
        raise LabError(f"{container}: systemd not booted in time (state {state!r}); pending jobs:\n{logs}")
    if state == "degraded":
        failed = docker("exec", container, "systemctl", "--failed", "--no-legend", "--plain", check=False)
        print(f"{container}: degraded; failed units:\n{failed.rstrip()}")
    active = docker("exec", container, "systemctl", "is-active", "docker.service", "ssh.service", check=False)
    if active.split() != ["active", "active"]:
        journal = docker(
            "exec", container, "journalctl", "-u", "docker", "-u", "ssh", "-n", "30", "--no-pager", check=False
        )
        raise LabError(f"{container}: docker/ssh not active ({' '.join(active.split())}):\n{journal}")
    return state


def wait_ssh(port: int, deadline: float) -> None:
    """The published port answers with an SSH banner (docker-proxy accepts before sshd listens)."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise LabError(f"no SSH banner on 127.0.0.1:{port}")


def bring_up(lab: str, host: Host, image: str, public_key: Path, timeout: float) -> Running:
    deadline = time.monotonic() + timeout
    name = host.container(lab)
    how = start_container(lab, host, image)
    install_key(name, public_key)
    state = wait_booted(name, deadline)
    ssh_port = host_port(name, 22)
    wait_ssh(ssh_port, deadline)
    ports = {port: host_port(name, port) for port in host.publish}
    address = docker(
        "container",
        "inspect",
        "--format",
        f"{{{{(index .NetworkSettings.Networks {json.dumps(lab)}).IPAddress}}}}",
        name,
    ).strip()
    print(
        f"{name}: {how}, {state}, ssh 127.0.0.1:{ssh_port}"
        + "".join(f", {p} -> 127.0.0.1:{h}" for p, h in ports.items())
    )
    return Running(host, ssh_port, ports, address, state)


def yaml_scalar(value: object) -> str:
    # JSON scalars are valid YAML flow scalars: no YAML library needed, and no quoting surprises.
    return json.dumps(value)


def write_inventory(path: Path, lab: str, key: Path, hosts: list[Running]) -> None:
    lines = [
        f"# Written by scripts/lab.py up --name {lab}; rewritten on every `up`, do not edit.",
        "all:",
        "  hosts:",
    ]
    for run in hosts:
        host_vars: dict[str, object] = {
            "ansible_host": "127.0.0.1",
            "ansible_port": run.ssh_port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key),
            "ansible_ssh_common_args": SSH_COMMON_ARGS,
            "ansible_python_interpreter": "/usr/bin/python3",
            # The container's address on the lab network: what the other hosts reach it at.
            "lab_address": run.address,
            "lab_container": run.host.container(lab),
        }
        lines.append(f"    {run.host.name}:")
        lines += [f"      {k}: {yaml_scalar(v)}" for k, v in host_vars.items()]
        if run.ports:
            lines.append("      lab_published_ports:")
            lines += [f"        {port}: {hport}" for port, hport in sorted(run.ports.items())]
    groups: dict[str, list[str]] = {}
    for run in hosts:
        for group in run.host.groups:
            groups.setdefault(group, []).append(run.host.name)
    lines.append("  children:")
    for group, members in groups.items():
        lines += [f"    {group}:", "      hosts:"] + [f"        {m}: {{}}" for m in members]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def cmd_up(args: argparse.Namespace) -> None:
    started = time.monotonic()
    hosts = parse_hosts(args.host, args.publish, args.host_image)
    for image in sorted({h.image or args.image for h in hosts}):
        if not docker_ok("image", "inspect", image):
            suite = image.rpartition(":")[2]
            raise LabError(f"image {image} is missing: scripts/build-test-image.sh --host {suite} builds it")
    inventory = Path(args.inventory).resolve()
    key = ensure_key(state_dir(inventory, args.name), args.name)
    ensure_network(args.name)
    # Hosts boot in parallel: each takes seconds, mostly waiting for systemd.
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        futures = [
            pool.submit(bring_up, args.name, h, h.image or args.image, key.with_suffix(".pub"), args.timeout)
            for h in hosts
        ]
        results = [f.result() for f in futures]
    write_inventory(inventory, args.name, key, results)
    # The hosts' systemd may have created cgroup v1 hierarchies this machine does not mount.
    subprocess.run([str(Path(__file__).with_name("cgroup-v1-mounts.sh"))], check=False)
    print(f"lab {args.name}: {len(results)} host(s) up in {time.monotonic() - started:.1f}s, inventory {inventory}")


def lab_objects(lab: str, kind: str) -> list[str]:
    fmt = "{{.Name}}" if kind != "container" else "{{.Names}}"
    listing = {"container": ("ps", "-a"), "volume": ("volume", "ls"), "network": ("network", "ls")}[kind]
    out = docker(*listing, "--filter", f"label={LABEL}={lab}", "--format", fmt)
    return out.split()


def cmd_down(args: argparse.Namespace) -> None:
    containers = lab_objects(args.name, "container")
    if containers:
        docker("rm", "-f", "-v", *containers)
    volumes = lab_objects(args.name, "volume")
    if volumes:
        docker("volume", "rm", "-f", *volumes)
    for network in lab_objects(args.name, "network"):
        docker("network", "rm", network)
    if args.inventory:
        inventory = Path(args.inventory).resolve()
        inventory.unlink(missing_ok=True)
        shutil.rmtree(state_dir(inventory, args.name), ignore_errors=True)
    print(f"lab {args.name}: removed {len(containers)} container(s), {len(volumes)} volume(s)")


def image_id(image: str, container: Optional[str] = None) -> str:
    where = ("exec", container, "docker") if container else ()
    return docker(*where, "image", "inspect", "--format", "{{.Id}}", image, check=False).strip()


def load_into(containers: list[str], image: str) -> list[str]:
    """`docker save IMAGE | docker exec -i C docker load` for every container, with one `docker save`.

    Processes joined by pipes (no shell); the save stream is copied to each loader, so N hosts cost one save.
    """
    docker_path = docker_bin()
    loads = {
        c: subprocess.Popen(
            [docker_path, "exec", "-i", c, "docker", "load", "-q"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for c in containers
    }
    broken: set[str] = set()
    with subprocess.Popen([docker_path, "save", image], stdout=subprocess.PIPE) as save:
        assert save.stdout is not None
        while chunk := save.stdout.read(1 << 20):
            for name, load in loads.items():
                if name in broken:
                    continue
                assert load.stdin is not None
                try:
                    load.stdin.write(chunk)
                except BrokenPipeError:  # that loader died: its stderr says why
                    broken.add(name)
    lines, errors = [], []
    for name, load in loads.items():
        assert load.stdin is not None and load.stdout is not None and load.stderr is not None
        try:
            load.stdin.close()
        except BrokenPipeError:
            broken.add(name)
        out, err = load.stdout.read().decode(errors="replace"), load.stderr.read().decode(errors="replace")
        if load.wait() != 0 or name in broken or save.returncode != 0:
            # docker exec -i reports a failure to start the command on stdout.
            errors.append(f"{name}: loading {image} failed: {(err or out).strip()}")
        else:
            lines.append(f"{name}: {out.strip()}")
    if errors:
        raise LabError("\n".join(errors))
    return lines


def cmd_load_image(args: argparse.Namespace) -> None:
    wanted = image_id(args.image)
    if not wanted:
        raise LabError(f"image {args.image} is not in the local engine")
    hosts = args.host or []
    containers = [f"{args.name}-{h}" for h in hosts] if hosts else lab_objects(args.name, "container")
    if not containers:
        raise LabError(f"lab {args.name} has no hosts")
    # Same image ID inside: nothing to do (IDs survive save/load).
    missing = [c for c in containers if image_id(args.image, c) != wanted]
    for c in containers:
        if c not in missing:
            print(f"{c}: {args.image} already loaded")
    if missing:
        for line in load_into(missing, args.image):
            print(line)


def archive_image_id(path: Path) -> str:
    """The image ID a `docker save` archive holds (its manifest's config blob), '' when unreadable."""
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("manifest.json")
            if member is None:
                return ""
            config = json.load(member)[0]["Config"]
    except (OSError, tarfile.TarError, KeyError, IndexError, ValueError):
        return ""
    # Docker 20.10 names it "<hex>.json", newer engines "blobs/sha256/<hex>".
    return "sha256:" + config.rsplit("/", 1)[-1].removesuffix(".json")


def cmd_save_image(args: argparse.Namespace) -> None:
    path = Path(args.path).resolve()
    wanted = image_id(args.image)
    if not wanted:
        raise LabError(f"image {args.image} is not in the local engine")
    if path.exists() and archive_image_id(path) == wanted:
        print(f"{path}: already holds {args.image}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    docker("save", "-o", str(tmp), args.image, timeout=600)
    os.replace(tmp, path)
    print(f"{path}: saved {args.image} ({path.stat().st_size // 2**20} MiB)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start (or reuse) the hosts and write the inventory")
    up.add_argument("--name", required=True, help="lab name: network, container and volume prefix")
    up.add_argument("--host", action="append", default=[], metavar="NAME:GROUP[,GROUP]")
    up.add_argument("--inventory", required=True, metavar="PATH", help="Ansible YAML inventory to write (.yml)")
    up.add_argument("--image", default=DEFAULT_IMAGE)
    up.add_argument("--publish", action="append", default=[], metavar="NAME:CONTAINER_PORT")
    up.add_argument(
        "--host-image", action="append", default=[], metavar="NAME=IMAGE", help="this host's image (e.g. trixie)"
    )
    up.add_argument("--timeout", type=float, default=180, help="seconds for each host to boot (default 180)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="remove the hosts, their volumes and the network")
    down.add_argument("--name", required=True)
    down.add_argument("--inventory", metavar="PATH", help="also delete this inventory and the lab's key pair")
    down.set_defaults(func=cmd_down)
    load = sub.add_parser("load-image", help="copy an image of the local engine into the hosts' engines")
    load.add_argument("--name", required=True)
    load.add_argument("image")
    load.add_argument("--host", action="append", metavar="NAME", help="only these hosts (default: all)")
    load.set_defaults(func=cmd_load_image)
    save = sub.add_parser("save-image", help="write `docker save IMAGE` to PATH unless it already holds it")
    save.add_argument("image")
    save.add_argument("path")
    save.set_defaults(func=cmd_save_image)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "name", None) is not None:
            check_lab_name(args.name)
        args.func(args)
    except (LabError, subprocess.TimeoutExpired) as exc:
        print(f"lab.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
