# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the plum.deploy collection: it can change at any time, without notice.
"""App artifacts: reproducible zips of a directory, sha256, a light look at meta.ini, and the artifact a module
is given (``remote_src`` or ``artifact_sha256``).

Standard library only: this runs on the control node (action plugin) and on targets (modules),
which need nothing beyond Python and ansible-core. The zip layout is the same as the runtime's
``plum.common.artifact.zip_directory``, so the same directory gives the same sha256 whichever tool
packaged it: entries sorted by path, timestamps fixed at 1980-01-01, files stored 0755 when any exec
bit is set and 0644 otherwise, symlinks kept as symlinks, directories implied by their contents.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re
import shutil
import stat
import tempfile
import zipfile
from typing import Any, Dict, List, NoReturn, Optional, Tuple

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
CHUNK = 1024 * 1024
MAX_META_BYTES = 64 * 1024
START_SCRIPT = "start.sh"
META_FILE = "meta.ini"
SHA256 = re.compile(r"^[0-9a-f]{64}$")

_EXEC_MODE = 0o755
_FILE_MODE = 0o644
_LINK_MODE = 0o777


class ArtifactError(ValueError):
    """A directory that cannot be packaged, or a zip that is not an app package."""


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def _collect(src: str, skip: Optional[str]) -> List[Tuple[str, str, os.stat_result]]:
    """(arcname, full path, lstat) of every file and symlink below src, sorted by arcname."""
    items = []

    def fail(exc: OSError) -> NoReturn:
        raise ArtifactError("cannot package %r: %s" % (src, exc))

    for root, dirs, files in os.walk(src, onerror=fail):
        for name in sorted(dirs + files):
            full = os.path.join(root, name)
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                continue  # walked into; only its contents are stored
            if stat.S_ISREG(st.st_mode) and skip and os.path.realpath(full) == skip:
                continue  # the zip being written, when dest lies inside src
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise ArtifactError("cannot package %r: not a regular file or symlink" % full)
            arcname = os.path.relpath(full, src).replace(os.sep, "/")
            items.append((arcname, full, st))
    items.sort(key=lambda item: item[0])
    return items


def zip_directory(src: str, dest: str) -> None:
    """Zip a directory reproducibly: the same content and modes give a byte-identical zip."""
    if not os.path.isdir(src):
        raise ArtifactError("cannot package %r: not a directory" % src)
    items = _collect(src, os.path.realpath(dest))
    parent = os.path.dirname(os.path.abspath(dest))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(dest), suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
            for arcname, full, st in items:
                info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
                info.create_system = 3  # unix, so external_attr carries the mode
                if stat.S_ISLNK(st.st_mode):
                    info.external_attr = (stat.S_IFLNK | _LINK_MODE) << 16
                    info.compress_type = zipfile.ZIP_STORED
                    archive.writestr(info, os.readlink(full))
                    continue
                mode = _EXEC_MODE if st.st_mode & 0o111 else _FILE_MODE
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                info.file_size = st.st_size  # lets zipfile choose zip64 up front for big files
                with open(full, "rb") as fh, archive.open(info, "w") as out:
                    shutil.copyfileobj(fh, out, CHUNK)
        os.chmod(tmp, _FILE_MODE)
        os.rename(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def parse_meta_ini(text: str) -> Dict[str, Any]:
    """name, version and services from meta.ini, with the runtime's rules (key=value or key: value)."""
    values: Dict[str, str] = {}
    services: List[str] = []
    if text.startswith("\ufeff"):
        text = text[1:]
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        cuts = [i for i in (line.find("="), line.find(":")) if i >= 0]
        if not cuts:
            raise ArtifactError("meta.ini line %d: expected 'key=value' or 'key: value', got %r" % (lineno, line))
        cut = min(cuts)
        key, value = line[:cut].strip().lower(), line[cut + 1:].strip()
        if key == "service":
            services.append(value)
        elif key:
            values[key] = value
    for key in ("name", "version"):
        if not values.get(key):
            raise ArtifactError("meta.ini: required key %r is missing or empty" % key)
    return {"name": values["name"], "version": values["version"], "services": services}


def read_app_meta(path: str) -> Dict[str, Any]:
    """The meta.ini of an app zip (name, version, services); checks start.sh and meta.ini at its root.

    This is an early, friendly check only: the agent and the controller validate the whole archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names: Dict[str, zipfile.ZipInfo] = {}
            for info in archive.infolist():
                names["/".join(p for p in info.filename.split("/") if p not in ("", "."))] = info
            for required in (START_SCRIPT, META_FILE):
                if required not in names:
                    nested = sorted(n for n in names if n.rsplit("/", 1)[-1] == required)
                    if nested:
                        raise ArtifactError("%s: %s must be at the zip root, found %s" % (path, required, ", ".join(nested)))
                    raise ArtifactError("%s: %s is missing from the zip root" % (path, required))
            info = names[META_FILE]
            if info.file_size > MAX_META_BYTES:
                raise ArtifactError("%s: meta.ini is larger than %d bytes" % (path, MAX_META_BYTES))
            data = archive.read(info)
    except (zipfile.BadZipfile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise ArtifactError("%s: not a zip archive, or a corrupt one (%s)" % (path, exc))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError("%s: meta.ini is not valid UTF-8" % path)
    try:
        return parse_meta_ini(text)
    except ArtifactError as exc:
        raise ArtifactError("%s: %s" % (path, exc))


def package(path: str, workdir: str) -> Tuple[str, bool]:
    """(zip path, created) for an app given as a zip file or a directory; a directory is zipped into workdir."""
    if os.path.isdir(path):
        dest = os.path.join(workdir, "artifact.zip")
        zip_directory(path, dest)
        return dest, True
    if not os.path.isfile(path):
        raise ArtifactError("%s: no such file or directory" % path)
    return path, False


def module_artifact(remote_src: Optional[str], artifact_sha256: Optional[str],
                    workdir: str) -> Tuple[Optional[str], Optional[str], Optional[Dict[str, Any]]]:
    """(sha256, zip path or None, meta or None) of the artifact given to plum_app or plum_deployment.

    ``remote_src`` (a zip, or a directory zipped into ``workdir``) gives its sha256, zip and meta.ini, and must
    match ``artifact_sha256`` when both are set. ``artifact_sha256`` alone gives (sha256, None, None): the module
    names an artifact the agent or the controller may have already. Neither gives (None, None, None).
    Raises ArtifactError with the message the module fails with.
    """
    expected = artifact_sha256
    if expected is not None:
        expected = expected.strip().lower()
        if not SHA256.match(expected):
            raise ArtifactError("artifact_sha256=%r is not a sha256 (64 hex digits)" % (artifact_sha256,))
    if not remote_src:
        return expected, None, None
    try:
        path, _created = package(remote_src, workdir)
        meta = read_app_meta(path)
    except ArtifactError as exc:
        raise ArtifactError("remote_src: %s" % exc)
    sha = sha256_file(path)
    if expected is not None and sha != expected:
        raise ArtifactError("remote_src %s has sha256 %s, not the expected artifact_sha256 %s"
                            % (remote_src, sha, expected))
    return sha, path, meta
