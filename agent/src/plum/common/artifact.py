"""App packages: parse meta.ini, validate and safely extract app zips, build reproducible zips.

Plum's agent unzips with no containment check (zip-slip), keeps setuid bits, writes symlinks as
regular files and never checks sizes; its controller only looks for some entry whose basename is
start.sh. Here every archive is inspected before a single byte is written: entry names, file types,
modes, symlink targets, folder depth, declared sizes and compression ratios. Extraction then counts
the bytes it actually writes, because the sizes in a zip header are only claims.

Extracted modes never come from the zip beyond "executable or not": directories are 0750, files
0640, or 0750 when the zip marks any execute bit (start.sh always). setuid, setgid and sticky bits
are refused; group/other write bits are dropped.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from plum.common.digest import sha256
from plum.common.fsio import is_storage_error
from plum.common.vocab import GIB, KIB, MIB, PROTOCOLS

APP_NAME_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,62}"
# An app's version, on the controller and the agent alike: it ends up in file names, labels and
# logs, so no '/', no leading '.' or '-', no whitespace or control characters.
VERSION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}"

CHUNK = 1 * MIB
RATIO_CHECK_MIN_BYTES = 1 * MIB  # small entries may compress well without being bombs
MAX_META_BYTES = 64 * KIB
MAX_LINK_BYTES = 4095  # PATH_MAX - 1
MAX_LINK_HOPS = 40  # as Linux's MAXSYMLINKS
MAX_NAME_BYTES = 255  # NAME_MAX: one component of an entry's path
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
START_SCRIPT = "start.sh"
META_FILE = "meta.ini"

# Modes of what extract_zip writes (the agent's files: no access for other users).
DIR_MODE = 0o750
EXEC_MODE = 0o750
FILE_MODE = 0o640
# Modes zip_directory stores in a zip: the usual ones, so any unzip tool gives a usable tree.
_ZIP_EXEC_MODE = 0o755
_ZIP_FILE_MODE = 0o644
_LINK_MODE = 0o777
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_SUPPORTED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_LOCAL_HEADER_MIN = 30
_DRIVE = re.compile(r"^[A-Za-z]:")
_PORT = re.compile(r"[0-9]{1,5}")
# Errors zipfile and its decompressors raise on corrupt or unsupported data.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    struct.error,
)

_FILE, _DIR, _LINK = "file", "directory", "symlink"
_SPECIAL_KINDS = (
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
)


class ArtifactError(ValueError):
    """A rejected package or meta.ini; field is "artifact", "name" or "meta.ini"."""

    def __init__(self, message: str, field: str = "artifact") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def show(value: object, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: error messages must not echo a 5000-character value."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[: limit - 3]}...{size}"


def validate_app_name(name: object) -> str:
    """An app's name as the agent keeps it (its folder name): from the API, the controller or disk."""
    if not isinstance(name, str) or not re.fullmatch(APP_NAME_PATTERN, name):
        raise ArtifactError(
            f"invalid app name {show(name)}: it must match {APP_NAME_PATTERN} (1-63 characters: "
            "lowercase letters, digits, '_', '.', '-', starting with a letter or digit)",
            field="name",
        )
    return name


def validate_version(version: object, where: str = "version") -> str:
    """A version as the controller accepts it; `where` says where it was found (for the message)."""
    if not isinstance(version, str) or not re.fullmatch(VERSION_PATTERN, version):
        raise ArtifactError(
            f"{where} {show(version)} is not valid: it must match {VERSION_PATTERN} (1-64 characters: "
            "letters, digits, '_', '.', '+', '-', starting with a letter or digit)",
            field="version",
        )
    return version


@dataclass(frozen=True)
class Service:
    name: str
    protocol: str
    port: int


@dataclass(frozen=True)
class AppMeta:
    name: str
    version: str
    services: tuple[Service, ...]


@dataclass(frozen=True)
class Limits:
    max_archive_bytes: int = 512 * MIB
    max_total_bytes: int = 1 * GIB
    max_entries: int = 10_000
    max_ratio: int = 200
    max_depth: int = 64  # path components of one entry: 'a/b/c' is 3 levels deep


DEFAULT_LIMITS = Limits()


# --- meta.ini ------------------------------------------------------------------------------------


def _meta_error(lineno: int, message: str) -> ArtifactError:
    return ArtifactError(f"meta.ini line {lineno}: {message}", field="meta.ini")


def _parse_service(lineno: int, value: str) -> Service:
    parts = [p.strip() for p in value.split(":")]
    if len(parts) != 3:
        expected = "'name:protocol:port' (3 parts separated by ':')"
        raise _meta_error(lineno, f"service must be {expected}, got {value!r}")
    name, protocol, port = parts[0], parts[1].lower(), parts[2]
    if not name:
        raise _meta_error(lineno, f"service name is empty in {value!r}")
    if protocol not in PROTOCOLS:
        allowed = ", ".join(PROTOCOLS)
        raise _meta_error(lineno, f"service protocol {parts[1]!r} is not one of {allowed} in {value!r}")
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise _meta_error(lineno, f"service port {port!r} is not an integer from 1 to 65535 in {value!r}")
    return Service(name, protocol, int(port))


def parse_meta_ini(text: str) -> AppMeta:
    """Parse meta.ini as Plum's controller does, but reject what Plum would silently skip.

    Lines are `key=value` or `key: value` (whichever separator comes first), `#`/`;` comments and
    blank lines are ignored, keys are case-insensitive, a repeated key keeps its last value and
    unknown keys are ignored. `name` and `version` are required, the version as the controller
    accepts it; `service=name:protocol:port` may appear any number of times.
    """
    values: dict[str, tuple[int, str]] = {}
    services: list[Service] = []
    for lineno, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        cuts = [i for i in (line.find("="), line.find(":")) if i >= 0]
        if not cuts:
            raise _meta_error(lineno, f"expected 'key=value' or 'key: value', got {line!r}")
        key, value = line[: min(cuts)].strip().lower(), line[min(cuts) + 1 :].strip()
        if not key:
            raise _meta_error(lineno, f"missing key before the separator in {line!r}")
        if key == "service":
            services.append(_parse_service(lineno, value))
        else:
            values[key] = (lineno, value)
    fields: dict[str, str] = {}
    for key in ("name", "version"):
        if key not in values:
            raise ArtifactError(f"meta.ini: required key {key!r} is missing", field="meta.ini")
        lineno, value = values[key]
        if not value:
            raise _meta_error(lineno, f"{key!r} is empty")
        fields[key] = value
    validate_version(fields["version"], where=f"meta.ini line {values['version'][0]}: version")
    return AppMeta(fields["name"], fields["version"], tuple(services))


def _decode_meta(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data[: exc.start].count(b"\n") + 1
        raise _meta_error(lineno, f"not valid UTF-8 (byte {data[exc.start]:#04x})") from None


# --- inspection ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    path: str  # normalized: '/'-joined components, no '.', no empty parts
    kind: str
    mode: int  # permission bits of a regular file once extracted (FILE_MODE or EXEC_MODE)
    target: str = ""  # symlink target


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name))


def _normalize_name(name: str) -> str:
    """Check one entry name and return it normalized; raise on anything that could escape dest."""
    if not name:
        raise ArtifactError("entry with an empty name")
    if "\x00" in name:
        raise ArtifactError(f"entry name {name!r} contains a NUL byte")
    if _is_absolute(name):
        raise ArtifactError(f"entry name {name!r} is an absolute path")
    if "\\" in name:
        raise ArtifactError(f"entry name {name!r} contains a backslash")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArtifactError(f"entry name {name!r} contains a '..' component")
    if not parts:
        raise ArtifactError(f"entry name {name!r} names the archive root")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise ArtifactError(f"entry name {show(name)} has a component longer than {MAX_NAME_BYTES} bytes")
    return "/".join(parts)


def _check_depth(name: str, path: str, limits: Limits) -> None:
    """Refuse deep trees before anything is written: every later walk (removal included) stays cheap."""
    depth = path.count("/") + 1
    if depth > limits.max_depth:
        raise ArtifactError(
            f"entry {show(name)} is {depth} levels deep, more than the limit of {limits.max_depth} levels"
        )


def _kind_of(info: zipfile.ZipInfo) -> str:
    unix = info.external_attr >> 16
    name = info.filename
    if unix & _SPECIAL_BITS:
        raise ArtifactError(f"entry {name!r} has setuid/setgid/sticky bits (mode {unix & 0o7777:04o})")
    for check, label in _SPECIAL_KINDS:
        if check(unix):
            raise ArtifactError(f"entry {name!r} is a {label}; only files, directories and symlinks")
    fmt = stat.S_IFMT(unix)
    if fmt == stat.S_IFLNK:
        if name.endswith("/"):
            raise ArtifactError(f"symlink entry {name!r} ends with '/'")
        return _LINK
    if fmt == stat.S_IFDIR or info.is_dir():
        return _DIR
    if fmt not in (0, stat.S_IFREG):
        raise ArtifactError(f"entry {name!r} has an unknown file type (mode {unix:o})")
    return _FILE


def _extracted_mode(info: zipfile.ZipInfo, path: str) -> int:
    """The one thing taken from a file's zip mode is whether it is executable."""
    executable = path == START_SCRIPT or bool((info.external_attr >> 16) & 0o111)
    return EXEC_MODE if executable else FILE_MODE


def _read_limited(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    try:
        with zf.open(info) as fh:
            data = fh.read(limit + 1)
    except _ZIP_ERRORS as exc:
        raise ArtifactError(f"cannot read entry {info.filename!r}: {exc}") from None
    if len(data) > limit:
        raise ArtifactError(f"entry {info.filename!r} is larger than {limit} bytes")
    return data


def _read_link(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    name = info.filename
    raw = _read_limited(archive, info, MAX_LINK_BYTES)
    try:
        target = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(f"symlink {name!r} has a target that is not valid UTF-8") from None
    if not target:
        raise ArtifactError(f"symlink {name!r} has an empty target")
    if "\x00" in target:
        raise ArtifactError(f"symlink {name!r} target {target!r} contains a NUL byte")
    if _is_absolute(target):
        raise ArtifactError(f"symlink {name!r} has an absolute target {target!r}")
    if "\\" in target:
        raise ArtifactError(f"symlink {name!r} target {target!r} contains a backslash")
    return target


def _stays_inside(path: str, target: str, links: dict[str, str]) -> bool:
    """Resolve a link target the way the kernel will, following links inside the archive."""
    current = path.split("/")[:-1]
    pending = deque(target.split("/"))
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                return False
            current.pop()
            continue
        current.append(part)
        nested = links.get("/".join(current))
        if nested is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise ArtifactError(f"symlink {path!r} -> {target!r} is part of a symlink loop")
        current.pop()
        pending.extendleft(reversed(nested.split("/")))
    return True


def _declared_entry_count(fh: BinaryIO) -> int | None:
    """Entry count from the end-of-central-directory record, read before zipfile parses it all.

    zipfile builds a ZipInfo per central-directory record, so a 512 MiB archive of empty entries
    would cost gigabytes of memory before max_entries could be checked.
    """
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    span = min(size, 22 + 0xFFFF)
    fh.seek(size - span)
    tail = fh.read(span)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or len(tail) - pos < 22:
        return None
    (total,) = struct.unpack("<H", tail[pos + 10 : pos + 12])
    if total != 0xFFFF:
        return int(total)
    locator = pos - 20
    if locator < 0 or tail[locator : locator + 4] != b"PK\x06\x07":
        return None
    (offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
    fh.seek(offset)
    record = fh.read(56)
    if len(record) < 56 or record[:4] != b"PK\x06\x06":
        return None
    (total64,) = struct.unpack("<Q", record[32:40])
    return int(total64)


def _open_zip(path: Path, limits: Limits) -> zipfile.ZipFile:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact {str(path)!r}: {exc.strerror or exc}") from None
    if size > limits.max_archive_bytes:
        raise ArtifactError(f"archive is {size} bytes, more than the limit of {limits.max_archive_bytes}")
    try:
        with path.open("rb") as fh:
            declared = _declared_entry_count(fh)
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact {str(path)!r}: {exc}") from None
    if declared is not None and declared > limits.max_entries:
        raise ArtifactError(f"archive has {declared} entries, more than the limit of {limits.max_entries}")
    try:
        return zipfile.ZipFile(path)
    except (*_ZIP_ERRORS, ValueError) as exc:
        raise ArtifactError(f"not a zip archive, or a corrupt one: {exc}") from None


def _check_sizes(infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    if len(infos) > limits.max_entries:
        raise ArtifactError(f"archive has {len(infos)} entries, more than the limit of {limits.max_entries}")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise ArtifactError(f"entry {info.filename!r} is encrypted; encrypted zips are not supported")
        if info.compress_type not in _SUPPORTED_COMPRESSION:
            method = info.compress_type
            raise ArtifactError(f"entry {info.filename!r} uses unsupported compression method {method}")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_CHECK_MIN_BYTES and ratio > limits.max_ratio:
            raise ArtifactError(
                f"entry {info.filename!r} expands {ratio:.0f}x ({info.compress_size} -> {info.file_size} "
                f"bytes), more than the limit of {limits.max_ratio}x: a zip bomb?"
            )
        total += info.file_size
        if total > limits.max_total_bytes:
            limit = limits.max_total_bytes
            raise ArtifactError(f"archive expands to more than the limit of {limit} bytes at {info.filename!r}")
    # Entries sharing or overlapping compressed data are the classic non-recursive zip bomb.
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for prev, cur in zip(ordered, ordered[1:]):
        if cur.header_offset < prev.header_offset + _LOCAL_HEADER_MIN + prev.compress_size:
            pair = f"{prev.filename!r} and {cur.filename!r}"
            raise ArtifactError(f"entries {pair} overlap in the archive (a zip bomb?)")


def _scan(archive: zipfile.ZipFile, limits: Limits) -> tuple[AppMeta, list[_Entry]]:
    infos = archive.infolist()
    _check_sizes(infos, limits)
    entries: list[_Entry] = []
    kinds: dict[str, str] = {}
    for info in infos:
        path = _normalize_name(info.filename)
        _check_depth(info.filename, path, limits)
        kind = _kind_of(info)
        if path in kinds:
            raise ArtifactError(f"duplicate entry {info.filename!r} (normalized {path!r})")
        kinds[path] = kind
        target = _read_link(archive, info) if kind == _LINK else ""
        entries.append(_Entry(info, path, kind, _extracted_mode(info, path), target))
    links = {e.path: e.target for e in entries if e.kind == _LINK}
    for entry in entries:
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if kinds.get(parent, _DIR) != _DIR:
                what = f"{parent!r}, which is a {kinds[parent]}"
                raise ArtifactError(f"entry {entry.info.filename!r} lies below {what}")
        if entry.kind == _LINK and not _stays_inside(entry.path, entry.target, links):
            raise ArtifactError(
                f"symlink {entry.info.filename!r} -> {entry.target!r} resolves outside the archive root"
            )
    by_path = {e.path: e for e in entries}
    for required in (START_SCRIPT, META_FILE):
        found = by_path.get(required)
        if found is None:
            similar = sorted(e.path for e in entries if e.path.rsplit("/", 1)[-1].lower() == required)
            nested = [p for p in similar if p.rsplit("/", 1)[-1] == required]
            if nested:
                raise ArtifactError(f"{required} must be at the zip root, found {', '.join(nested)}")
            hint = f" (names are case-sensitive; found {', '.join(similar)})" if similar else ""
            raise ArtifactError(f"{required} is missing from the zip root{hint}")
        if found.kind != _FILE:
            raise ArtifactError(f"{required} at the zip root must be a regular file, not a {found.kind}")
    raw_meta = _read_limited(archive, by_path[META_FILE].info, MAX_META_BYTES)
    return parse_meta_ini(_decode_meta(raw_meta)), entries


def inspect_zip(path: Path, limits: Limits = DEFAULT_LIMITS) -> AppMeta:
    """Validate an app zip without extracting it; return its parsed meta.ini."""
    with _open_zip(Path(path), limits) as archive:
        meta, _ = _scan(archive, limits)
    return meta


# --- extraction ----------------------------------------------------------------------------------


def _copy_limited(src: IO[bytes], dst: IO[bytes], name: str, declared: int, budget: int) -> int:
    """Copy src to dst; stop once more than `declared` or `budget` bytes have come out."""
    written = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            return written
        written += len(chunk)
        if written > declared:
            raise ArtifactError(f"entry {name!r} holds more data than its declared size of {declared} bytes")
        if written > budget:
            raise ArtifactError(f"archive expands to more than the limit when writing {name!r}")
        dst.write(chunk)


def _make_parents(dest: Path, path: str) -> Path:
    """Create the directories above an entry, refusing to go through anything but real dirs."""
    current = dest
    for part in path.split("/")[:-1]:
        current = current / part
        try:
            st = current.lstat()
        except FileNotFoundError:
            current.mkdir()
            os.chmod(current, DIR_MODE)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise ArtifactError(f"entry {path!r} would be written through the symlink {part!r}")
        if not stat.S_ISDIR(st.st_mode):
            raise ArtifactError(f"entry {path!r} lies below {part!r}, which is not a directory")
    return dest / path


def _write_entry(archive: zipfile.ZipFile, dest: Path, entry: _Entry, budget: int) -> int:
    target = _make_parents(dest, entry.path)
    if entry.kind == _DIR:
        try:
            target.mkdir()
        except FileExistsError:  # already made as the parent of an earlier entry
            if not stat.S_ISDIR(target.lstat().st_mode):
                raise ArtifactError(f"directory entry {entry.path!r} clashes with an existing path") from None
        os.chmod(target, DIR_MODE)
        return 0
    if entry.kind == _LINK:
        os.symlink(entry.target, target)
        return 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as out, archive.open(entry.info) as src:
        written = _copy_limited(src, out, entry.info.filename, entry.info.file_size, budget)
        os.fchmod(out.fileno(), entry.mode)
    return written


def extract_zip(path: Path, dest: Path, limits: Limits = DEFAULT_LIMITS) -> AppMeta:
    """Inspect, then extract into `dest`, which must not exist; on any error dest is removed."""
    dest = Path(dest)
    with _open_zip(Path(path), limits) as archive:
        meta, entries = _scan(archive, limits)
        if os.path.lexists(dest):
            raise ArtifactError(f"destination {str(dest)!r} already exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            dest.mkdir()
        except FileExistsError:
            raise ArtifactError(f"destination {str(dest)!r} already exists") from None
        try:
            os.chmod(dest, DIR_MODE)
            budget = limits.max_total_bytes
            for entry in entries:
                try:
                    budget -= _write_entry(archive, dest, entry, budget)
                except ArtifactError:
                    raise
                except (*_ZIP_ERRORS, ValueError) as exc:
                    if is_storage_error(exc):
                        raise  # the disk is full or failing: not the artifact's fault
                    raise ArtifactError(f"cannot extract entry {entry.info.filename!r}: {exc}") from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return meta


# --- building and hashing ------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _raise(exc: OSError) -> None:
    raise exc


def _collect(src: Path, skip: Path) -> Iterable[tuple[str, Path, os.stat_result]]:
    for root, dirs, files in os.walk(src, onerror=_raise):
        for name in sorted(dirs + files):
            full = Path(root, name)
            st = full.lstat()
            if stat.S_ISDIR(st.st_mode):
                continue  # walked into; only its contents are stored
            if stat.S_ISREG(st.st_mode) and full.resolve() == skip:
                continue  # the zip being replaced, when dest lies inside src
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise ArtifactError(f"cannot package {str(full)!r}: not a regular file or symlink")
            yield full.relative_to(src).as_posix(), full, st


def zip_directory(src: Path, dest: Path) -> None:
    """Zip a directory reproducibly: same content and modes in, byte-identical zip out.

    Entries are sorted, timestamps fixed at 1980-01-01, files stored as 0755 if any exec bit is
    set and 0644 otherwise, symlinks kept as symlinks, directories implied by their contents.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise ArtifactError(f"cannot package {str(src)!r}: not a directory")
    items = sorted(_collect(src, dest.resolve()), key=lambda item: item[0])
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
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
                mode = _ZIP_EXEC_MODE if st.st_mode & 0o111 else _ZIP_FILE_MODE
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                info.file_size = st.st_size  # lets zipfile pick zip64 up front for big files
                with full.open("rb") as fh, archive.open(info, "w") as out:
                    shutil.copyfileobj(fh, out, CHUNK)
        os.chmod(tmp, _ZIP_FILE_MODE)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
