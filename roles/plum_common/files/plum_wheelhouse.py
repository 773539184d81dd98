# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the runtime's wheelhouse on the control node, once per (Python version, architecture).

Run by the roles with the Python that runs Ansible (it has pip and packaging):

    python plum_wheelhouse.py --cache DIR --python 3.11 --machine x86_64 --constraints FILE
        (--wheel PLUM.whl | --source AGENT_DIR) [--extra docker] [--pip-arg=--index-url=URL ...]

It prints one JSON object: {"changed": bool, "archive": PATH, "version": "0.1.0", "sha256": ...}.

The result is a tar of wheels only (the runtime, its dependencies for the target's Python and
architecture, and pip itself), so targets install with ``pip --no-index`` and need no network. An
archive that exists is reused as it is: same inputs, same file, so copying it to targets is
idempotent. A lock makes concurrent runs on one control node safe.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

from packaging.requirements import Requirement

# Manylinux tags every pip >= 19.3 understands, for glibc >= 2.17: covers every supported distribution.
PLATFORMS = ("manylinux2014_{m}", "manylinux_2_17_{m}", "linux_{m}")
SOURCE_FILES = ("pyproject.toml", "README.md")


class BuildError(Exception):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_digest(source: Path) -> str:
    """A digest of the runtime's source tree: the wheel is rebuilt only when the sources change."""
    digest = hashlib.sha256()
    files = [source / name for name in SOURCE_FILES if (source / name).is_file()]
    # Only the package itself: building writes src/*.egg-info, which must not count as a change.
    files += sorted(p for p in (source / "src" / "plum").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def pip(args: List[str]) -> None:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
    )
    if result.returncode != 0:
        tail = result.stdout.decode(errors="replace").strip().splitlines()[-15:]
        raise BuildError("pip " + " ".join(args[:2]) + " failed:\n" + "\n".join(tail))


def build_wheel(source: Path, cache: Path) -> Path:
    """The runtime wheel built from a checkout's agent/ directory, cached by source digest."""
    if not (source / "pyproject.toml").is_file():
        raise BuildError(f"{source}: no pyproject.toml (expected the runtime's agent/ directory)")
    out = cache / "built" / source_digest(source)
    wheels = sorted(out.glob("plum-*.whl"))
    if wheels:
        return wheels[-1]
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".build-"))
    try:
        # A fixed timestamp keeps the wheel's bytes stable when rebuilt from the same sources.
        os.environ.setdefault("SOURCE_DATE_EPOCH", "315532800")
        # An absolute path: a bare "agent" would be looked up on the package index as a project name.
        pip(["wheel", "--no-deps", "--wheel-dir", str(tmp), str(source.resolve())])
        built = sorted(tmp.glob("plum-*.whl"))
        if not built:
            raise BuildError(f"pip wheel {source} produced no plum wheel")
        out.mkdir(parents=True, exist_ok=True)
        final = out / built[-1].name
        shutil.move(str(built[-1]), str(final))
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def wheel_metadata(wheel: Path) -> Dict[str, List[str]]:
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if not names:
            raise BuildError(f"{wheel}: not a wheel (no .dist-info/METADATA)")
        text = archive.read(names[0]).decode("utf-8")
    fields: Dict[str, List[str]] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _sep, value = line.partition(": ")
        fields.setdefault(key, []).append(value.strip())
    return fields


def requirements(meta: Dict[str, List[str]], extras: List[str], python: str) -> List[str]:
    """The wheel's own dependencies for the selected extras and the target's Python version."""
    wanted = []
    for raw in meta.get("Requires-Dist", []):
        req = Requirement(raw)
        environments = [{"extra": extra, "python_version": python, "python_full_version": python + ".0"} for extra in ["", *extras]]
        if req.marker is None or any(req.marker.evaluate(env) for env in environments):
            wanted.append(f"{req.name}{req.specifier}")
    return wanted


def deterministic_tar(directory: Path, target: Path) -> None:
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        info.mode = 0o644
        return info

    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directory.iterdir()):
            tar.add(str(path), arcname=path.name, filter=clean)


def build(args: argparse.Namespace) -> Dict[str, object]:
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # many hosts, one cache: one build at a time
        wheel = Path(args.wheel).expanduser() if args.wheel else build_wheel(Path(args.source), cache)
        if not wheel.is_file():
            raise BuildError(f"runtime wheel {wheel} does not exist")
        meta = wheel_metadata(wheel)
        version = meta["Version"][0]
        extras = sorted(set(args.extra))
        wheel_sha = sha256_of(wheel)
        constraints = Path(args.constraints)
        inputs = hashlib.sha256(
            json.dumps([wheel_sha, sha256_of(constraints), extras, args.pip_arg]).encode()
        ).hexdigest()[:12]
        key = f"plum-{version}-py{args.python}-{args.machine}-{inputs}"
        archive = cache / f"{key}.tar"
        result = {"archive": str(archive), "version": version, "key": key, "wheel": wheel.name}
        if archive.is_file():
            return {**result, "changed": False, "sha256": sha256_of(archive)}
        work = Path(tempfile.mkdtemp(dir=cache, prefix=".wheelhouse-"))
        try:
            shutil.copy2(wheel, work / wheel.name)
            abi = "cp" + args.python.replace(".", "")
            platforms = [p.format(m=args.machine) for p in PLATFORMS]
            pip_args = ["download", "--only-binary=:all:", "--dest", str(work), "--constraint", str(constraints)]
            pip_args += ["--python-version", args.python, "--implementation", "cp", "--abi", abi, "--abi", "none"]
            for platform in platforms:
                pip_args += ["--platform", platform]
            pip_args += args.pip_arg
            pip([*pip_args, "pip", *requirements(meta, extras, args.python)])
            manifest = {
                "version": version,
                "extras": extras,
                "python": args.python,
                "machine": args.machine,
                "files": {p.name: sha256_of(p) for p in sorted(work.iterdir())},
            }
            (work / "wheelhouse.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            partial = archive.with_suffix(".tar.partial")
            deterministic_tar(work, partial)
            os.replace(partial, archive)  # atomic: a half-written archive is never reused
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {**result, "changed": True, "sha256": sha256_of(archive)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--cache", required=True, help="directory on the control node for built wheelhouses")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wheel", help="the runtime wheel (plum-*.whl)")
    source.add_argument("--source", help="the runtime's source directory (agent/ of a checkout)")
    parser.add_argument("--python", required=True, help="the target's Python version, e.g. 3.11")
    parser.add_argument("--machine", required=True, help="the target's architecture, e.g. x86_64")
    parser.add_argument("--constraints", required=True, help="the pinned versions (constraints.txt)")
    parser.add_argument("--extra", action="append", default=[], help="an extra of the runtime, e.g. docker")
    parser.add_argument("--pip-arg", action="append", default=[], help="an argument for pip download")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python):
        parser.error(f"--python={args.python!r}: expected a version such as 3.11")
    try:
        result = build(args)
    except BuildError as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    out = io.StringIO()
    json.dump(result, out, sort_keys=True)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
