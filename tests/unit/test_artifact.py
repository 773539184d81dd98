from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Union

import pytest

from plum.common.artifact import (
    APP_NAME_PATTERN,
    VERSION_PATTERN,
    AppMeta,
    ArtifactError,
    Limits,
    Service,
    _copy_limited,
    _normalize_name,
    extract_zip,
    inspect_zip,
    parse_meta_ini,
    sha256_file,
    validate_app_name,
    validate_version,
    zip_directory,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "apps"
META = b"name=demo\nversion=1.2.3\n"
START = b"#!/bin/sh\necho hi\n"

# (name, data, unix mode or None); a mode of None leaves external_attr at zero, like Windows zippers.
Entry = tuple[str, Union[bytes, str], Optional[int]]


def reg(mode: int = 0o644) -> int:
    return stat.S_IFREG | mode


LINK = stat.S_IFLNK | 0o777
DIR = stat.S_IFDIR | 0o755


def make_zip(path: Path, entries: list[Entry], base: bool = True) -> Path:
    if base:
        entries = [("start.sh", START, reg(0o755)), ("meta.ini", META, reg()), *entries]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate-name test case
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data, mode in entries:
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                if mode is not None:
                    info.create_system = 3
                    info.external_attr = mode << 16
                else:
                    info.create_system = 0
                zf.writestr(info, data)
    for name, _, mode in entries:
        if mode is None:  # zipfile.writestr turns a zero external_attr into 0o600
            patch_central(path, name, 38, "<I", 0)
    return path


def patch_central(path: Path, name: str, offset: int, fmt: str, value: int) -> None:
    """Overwrite one field of an entry's central-directory record."""
    raw = bytearray(path.read_bytes())
    pos = raw.find(b"PK\x01\x02")
    while pos >= 0:
        (name_len,) = struct.unpack_from("<H", raw, pos + 28)
        if raw[pos + 46 : pos + 46 + name_len] == name.encode():
            struct.pack_into(fmt, raw, pos + offset, value)
            path.write_bytes(bytes(raw))
            return
        pos = raw.find(b"PK\x01\x02", pos + 1)
    raise AssertionError(f"no central record for {name}")


# --- meta.ini ------------------------------------------------------------------------------------


def test_parse_meta_ini_with_services() -> None:
    meta = parse_meta_ini(
        "name=demo\nversion=1.0\nservice=web:http:8080\nservice=NaviControl:UDP:9114\nservice=rpc:grpc:1\n"
    )
    assert meta == AppMeta(
        "demo",
        "1.0",
        (
            Service("web", "http", 8080),
            Service("NaviControl", "udp", 9114),
            Service("rpc", "grpc", 1),
        ),
    )


def test_parse_meta_ini_colon_separators_comments_and_case() -> None:
    text = (
        "\ufeff# a comment\n"
        "; another comment: with = separators\n"
        "\n"
        "  Name: Hello:world  \n"
        "VERSION = 2.0-beta\n"
        "Service: healthz : HTTPS : 65535\n"
        "description=ignored = kept\n"
    )
    meta = parse_meta_ini(text)
    assert meta == AppMeta("Hello:world", "2.0-beta", (Service("healthz", "https", 65535),))


def test_parse_meta_ini_without_services_and_last_key_wins() -> None:
    meta = parse_meta_ini("name=a\nname=b\nversion=1\n")
    assert meta == AppMeta("b", "1", ())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name=a\nversion=1\njust some words\n", "line 3: expected 'key=value'"),
        ("name=a\n=1\nversion=1\n", "line 2: missing key"),
        ("version=1\n", "'name' is missing"),
        ("name=a\n", "'version' is missing"),
        ("name=\nversion=1\n", "line 1: 'name' is empty"),
        ("name=a\nversion:   \n", "line 2: 'version' is empty"),
        (
            "name=a\nversion=1\nservice=web:http\n",
            "line 3: service must be 'name:protocol:port'",
        ),
        (
            "name=a\nversion=1\nservice=web:http:80:90\n",
            "line 3: service must be 'name:protocol:port'",
        ),
        ("name=a\nversion=1\nservice=:http:80\n", "line 3: service name is empty"),
        ("name=a\nversion=1\nservice=web:ftp:21\n", "line 3: service protocol 'ftp'"),
        ("name=a\nversion=1\nservice=web:http:0\n", "line 3: service port '0'"),
        ("name=a\nversion=1\nservice=web:http:65536\n", "line 3: service port '65536'"),
        (
            "name=a\nversion=1\nservice=web:http:eighty\n",
            "line 3: service port 'eighty'",
        ),
        ("name=a\nversion=1\nservice=web:http:-80\n", "line 3: service port '-80'"),
    ],
)
def test_parse_meta_ini_rejects(text: str, expected: str) -> None:
    with pytest.raises(ArtifactError) as err:
        parse_meta_ini(text)
    assert err.value.field == "meta.ini"
    assert expected in err.value.message


# --- app names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hello", "a", "my-app_2.0", "0day", "x" * 63])
def test_validate_app_name_accepts(name: str) -> None:
    assert validate_app_name(name) == name


@pytest.mark.parametrize("name", ["", "Hello", "-app", ".hidden", "..", "a/b", "a b", "x" * 64, "app\n"])
def test_validate_app_name_rejects(name: str) -> None:
    with pytest.raises(ArtifactError) as err:
        validate_app_name(name)
    assert err.value.field == "name"
    assert repr(name) in err.value.message
    assert APP_NAME_PATTERN in err.value.message


def test_long_names_are_cut_in_messages() -> None:
    with pytest.raises(ArtifactError) as err:
        validate_app_name("x" * 5000)
    assert "(5000 characters)" in err.value.message
    assert len(err.value.message) < 400


@pytest.mark.parametrize("version", ["1", "1.0.0", "2.0-beta+build.7", "v1_2", "A" * 64])
def test_validate_version_accepts(version: str) -> None:
    assert validate_version(version) == version


@pytest.mark.parametrize(
    "version",
    ["../../x", "x" * 5000, "1.0 beta", "-1", ".1", "1/2", "1\x00", "", 3, None],
)
def test_validate_version_rejects(version: object) -> None:
    with pytest.raises(ArtifactError) as err:
        validate_version(version)
    assert err.value.field == "version"
    assert VERSION_PATTERN in err.value.message
    assert len(err.value.message) < 400


def test_meta_ini_version_follows_the_controller_rule() -> None:
    with pytest.raises(ArtifactError) as err:
        parse_meta_ini("name=a\nversion=../../x\n")
    assert err.value.field == "version"
    assert err.value.message.startswith("meta.ini line 2: version '../../x' is not valid")


# --- inspect_zip ---------------------------------------------------------------------------------


def test_inspect_happy_path(tmp_path: Path) -> None:
    meta_ini = b"# demo\nname: demo\nversion: 3.1\nservice=web:http:8080\nservice=dns:udp:53\n"
    path = make_zip(
        tmp_path / "app.zip",
        [
            ("start.sh", START, reg(0o755)),
            ("meta.ini", meta_ini, reg()),
            ("bin/", b"", DIR),
            ("bin/server", b"\x7fELF", reg(0o755)),
            ("lib/libx.so.1", b"lib", reg()),
            ("lib/libx.so", "libx.so.1", LINK),
            ("current", "bin/../lib", LINK),
            ("README", b"no unix mode", None),
        ],
        base=False,
    )
    meta = inspect_zip(path)
    assert meta == AppMeta("demo", "3.1", (Service("web", "http", 8080), Service("dns", "udp", 53)))


def _bomb(path: Path) -> Path:
    return make_zip(path, [("zeros.bin", b"\0" * (2 * 1024 * 1024), reg())])


def _overlapping(path: Path) -> Path:
    make_zip(path, [("a.txt", b"aaaa", reg()), ("b.txt", b"bbbb", reg())])
    with zipfile.ZipFile(path) as zf:
        offset = zf.getinfo("a.txt").header_offset
    patch_central(path, "b.txt", 42, "<I", offset)
    return path


@pytest.mark.parametrize(
    ("entries", "limits", "expected"),
    [
        (
            [("x", b"1", reg()), ("y", b"2", reg())],
            Limits(max_entries=3),
            "4 entries, more than the limit of 3",
        ),
        (
            [("big", b"x" * 1000, reg())],
            Limits(max_total_bytes=500),
            "more than the limit of 500 bytes",
        ),
        ([("/etc/passwd", b"x", reg())], Limits(), "'/etc/passwd' is an absolute path"),
        ([("C:\\evil.txt", b"x", reg())], Limits(), "is an absolute path"),
        ([("C:/evil.txt", b"x", reg())], Limits(), "is an absolute path"),
        ([("\\\\server\\share\\x", b"x", reg())], Limits(), "is an absolute path"),
        ([("dir\\file", b"x", reg())], Limits(), "'dir\\\\file' contains a backslash"),
        (
            [("../escape", b"x", reg())],
            Limits(),
            "'../escape' contains a '..' component",
        ),
        ([("a/../../escape", b"x", reg())], Limits(), "contains a '..' component"),
        (
            [("dup.txt", b"1", reg()), ("dup.txt", b"2", reg())],
            Limits(),
            "duplicate entry 'dup.txt'",
        ),
        (
            [("dup", b"1", reg()), ("./dup/", b"", DIR)],
            Limits(),
            "duplicate entry './dup/'",
        ),
        (
            [("suid", b"x", reg(0o4755))],
            Limits(),
            "'suid' has setuid/setgid/sticky bits",
        ),
        (
            [("sgid", b"x", reg(0o2755))],
            Limits(),
            "'sgid' has setuid/setgid/sticky bits",
        ),
        (
            [("tmp/", b"", stat.S_IFDIR | 0o1777)],
            Limits(),
            "'tmp/' has setuid/setgid/sticky bits",
        ),
        ([("tty", b"", stat.S_IFCHR | 0o644)], Limits(), "'tty' is a character device"),
        ([("sda", b"", stat.S_IFBLK | 0o644)], Limits(), "'sda' is a block device"),
        ([("pipe", b"", stat.S_IFIFO | 0o644)], Limits(), "'pipe' is a FIFO"),
        ([("sock", b"", stat.S_IFSOCK | 0o644)], Limits(), "'sock' is a socket"),
        (
            [("passwd", "/etc/passwd", LINK)],
            Limits(),
            "symlink 'passwd' has an absolute target '/etc/passwd'",
        ),
        (
            [("up", "..", LINK)],
            Limits(),
            "symlink 'up' -> '..' resolves outside the archive root",
        ),
        (
            [("a/b/up", "../../../x", LINK)],
            Limits(),
            "resolves outside the archive root",
        ),
        # each link looks inside on its own, but d/s resolves to the root, so d/s/.. is its parent
        (
            [("d/s", "..", LINK), ("e", "d/s/../x", LINK)],
            Limits(),
            "symlink 'e' -> 'd/s/../x' resolves outside",
        ),
        ([("loop", "loop", LINK)], Limits(), "symlink loop"),
        (
            [("lib", "real", LINK), ("real/", b"", DIR), ("lib/x.so", b"x", reg())],
            Limits(),
            "below 'lib'",
        ),
        (
            [("data", b"x", reg()), ("data/file", b"y", reg())],
            Limits(),
            "'data/file' lies below 'data'",
        ),
    ],
)
def test_inspect_rejects_entries(tmp_path: Path, entries: list[Entry], limits: Limits, expected: str) -> None:
    path = make_zip(tmp_path / "app.zip", entries)
    with pytest.raises(ArtifactError) as err:
        inspect_zip(path, limits)
    assert err.value.field == "artifact"
    assert expected in err.value.message


ROOT_START = ("start.sh", START, reg(0o755))
ROOT_META = ("meta.ini", META, reg())


def test_inspect_caps_the_depth(tmp_path: Path) -> None:
    deep = "a/" * 2000 + "x"  # 2000 nested folders in a zip of a few KB
    path = make_zip(tmp_path / "deep.zip", [(deep, b"x", reg())])
    assert path.stat().st_size < 16 * 1024
    with pytest.raises(ArtifactError) as err:
        inspect_zip(path)
    assert err.value.field == "artifact"
    assert "2001 levels deep, more than the limit of 64 levels" in err.value.message
    assert err.value.message.startswith("entry 'a/a/a/")
    assert len(err.value.message) < 400


def test_depth_limit_counts_components(tmp_path: Path) -> None:
    at_limit = make_zip(tmp_path / "ok.zip", [("d/" * 3 + "f", b"x", reg())])
    assert inspect_zip(at_limit, Limits(max_depth=4)).name == "demo"
    over = make_zip(tmp_path / "over.zip", [("d/" * 4 + "f", b"x", reg())])
    with pytest.raises(ArtifactError, match="5 levels deep, more than the limit of 4 levels"):
        inspect_zip(over, Limits(max_depth=4))
    folder = make_zip(tmp_path / "dir.zip", [("d/" * 5, b"", DIR)])
    with pytest.raises(ArtifactError, match="5 levels deep"):
        inspect_zip(folder, Limits(max_depth=4))


def test_extract_of_a_deep_zip_writes_nothing(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "deep.zip", [("a/" * 100 + "x", b"x", reg())])
    dest = tmp_path / "app"
    with pytest.raises(ArtifactError, match="levels deep"):
        extract_zip(path, dest)
    assert not dest.exists()


def test_inspect_refuses_a_name_component_over_name_max(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "long.zip", [("d/" + "n" * 256, b"x", reg())])
    with pytest.raises(ArtifactError, match="component longer than 255 bytes"):
        inspect_zip(path)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (
            [("bin/start.sh", START, reg(0o755)), ROOT_META],
            "start.sh must be at the zip root, found bin/start.sh",
        ),
        (
            [ROOT_START, ("bin/meta.ini", META, reg())],
            "meta.ini must be at the zip root, found bin/meta.ini",
        ),
        ([ROOT_META], "start.sh is missing from the zip root"),
        (
            [("START.SH", START, reg(0o755)), ROOT_META],
            "start.sh is missing from the zip root (names are case-sensitive; found START.SH)",
        ),
        ([ROOT_START], "meta.ini is missing from the zip root"),
        (
            [
                ("bin/start.sh", START, reg()),
                ("start.sh", "bin/start.sh", LINK),
                ROOT_META,
            ],
            "start.sh at the zip root must be a regular file, not a symlink",
        ),
        (
            [("start.sh/", b"", DIR), ROOT_META],
            "start.sh at the zip root must be a regular file, not a directory",
        ),
        ([], "start.sh is missing"),
    ],
)
def test_inspect_requires_root_files(tmp_path: Path, entries: list[Entry], expected: str) -> None:
    path = make_zip(tmp_path / "app.zip", entries, base=False)
    with pytest.raises(ArtifactError) as err:
        inspect_zip(path)
    assert expected in err.value.message


def test_inspect_rejects_zip_bomb(tmp_path: Path) -> None:
    path = _bomb(tmp_path / "bomb.zip")
    with pytest.raises(ArtifactError) as err:
        inspect_zip(path, Limits(max_ratio=100))
    assert "'zeros.bin' expands" in err.value.message
    assert "zip bomb" in err.value.message


def test_ratio_check_skips_small_entries(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "app.zip", [("zeros.bin", b"\0" * 1024 * 1024, reg())])
    assert inspect_zip(path, Limits(max_ratio=2)).name == "demo"


def test_inspect_rejects_overlapping_entries(tmp_path: Path) -> None:
    path = _overlapping(tmp_path / "overlap.zip")
    with pytest.raises(ArtifactError) as err:
        inspect_zip(path)
    assert "overlap" in err.value.message


def test_inspect_rejects_archive_over_size_limit(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "app.zip", [])
    size = path.stat().st_size
    with pytest.raises(ArtifactError) as err:
        inspect_zip(path, Limits(max_archive_bytes=size - 1))
    assert f"archive is {size} bytes, more than the limit of {size - 1}" in err.value.message


@pytest.mark.parametrize("content", [b"", b"this is not a zip file at all", b"PK\x03\x04garbage"])
def test_inspect_rejects_non_zip(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "app.zip"
    path.write_bytes(content)
    with pytest.raises(ArtifactError) as err:
        inspect_zip(path)
    assert "not a zip archive" in err.value.message


def test_inspect_rejects_truncated_zip(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "app.zip", [])
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ArtifactError) as err:
        inspect_zip(path)
    assert "not a zip archive, or a corrupt one" in err.value.message


def test_inspect_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as err:
        inspect_zip(tmp_path / "nope.zip")
    assert "cannot read artifact" in err.value.message


def test_inspect_rejects_corrupt_meta_data(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "app.zip", [])
    patch_central(path, "meta.ini", 16, "<I", 0xDEADBEEF)  # wrong CRC-32
    with pytest.raises(ArtifactError) as err:
        inspect_zip(path)
    assert "cannot read entry 'meta.ini'" in err.value.message


def test_inspect_rejects_non_utf8_meta(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "app.zip",
        [
            ("start.sh", START, reg(0o755)),
            ("meta.ini", b"name=demo\nversion=caf\xe9\n", reg()),
        ],
        base=False,
    )
    with pytest.raises(ArtifactError) as err:
        inspect_zip(path)
    assert err.value.field == "meta.ini"
    assert "line 2: not valid UTF-8" in err.value.message


def test_inspect_reports_bad_meta_line(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "app.zip",
        [
            ("start.sh", START, reg(0o755)),
            ("meta.ini", b"name=demo\nversion=1\nservice=web\n", reg()),
        ],
        base=False,
    )
    with pytest.raises(ArtifactError) as err:
        inspect_zip(path)
    assert err.value.field == "meta.ini"
    assert "line 3" in err.value.message


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a\x00b", "NUL byte"), ("", "empty name"), ("./", "names the archive root")],
)
def test_entry_name_checks_zipfile_cannot_produce(name: str, expected: str) -> None:
    # zipfile truncates names at NUL when reading, so these are checked on the helper directly.
    with pytest.raises(ArtifactError) as err:
        _normalize_name(name)
    assert expected in err.value.message


def test_normalize_name_drops_dot_and_empty_parts() -> None:
    assert _normalize_name("./a//b/./c/") == "a/b/c"


# --- extract_zip ---------------------------------------------------------------------------------


def test_extract_happy_path_modes_and_links(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "app.zip",
        [
            ("start.sh", START, reg(0o644)),  # made executable anyway
            ("meta.ini", b"name=demo\nversion=1\nservice=web:tcp:9000\n", reg(0o666)),
            ("bin/tool", b"tool", reg(0o775)),
            ("etc/secret", b"s", reg(0o640)),
            ("README", b"windows", None),
            ("empty/", b"", stat.S_IFDIR | 0o700),
            ("lib/libx.so.1", b"lib", reg()),
            ("lib/libx.so", "libx.so.1", LINK),
            ("dangling", "not/there", LINK),
        ],
        base=False,
    )
    dest = tmp_path / "deep" / "instance" / "app"
    meta = extract_zip(path, dest)
    assert meta == AppMeta("demo", "1", (Service("web", "tcp", 9000),))

    def mode(rel: str) -> int:
        return stat.S_IMODE((dest / rel).lstat().st_mode)

    assert (dest / "start.sh").read_bytes() == START
    # Whatever the zip says, only "executable or not" is kept: no access for other users, no group write.
    assert mode("start.sh") == 0o750
    assert mode("meta.ini") == 0o640
    assert mode("bin/tool") == 0o750
    assert mode("etc/secret") == 0o640
    assert mode("README") == 0o640
    assert mode("empty") == 0o750
    assert mode("bin") == 0o750
    assert mode(".") == 0o750
    assert (dest / "lib/libx.so").is_symlink()
    assert os.readlink(dest / "lib/libx.so") == "libx.so.1"
    assert (dest / "lib/libx.so").read_bytes() == b"lib"
    assert os.readlink(dest / "dangling") == "not/there"


def test_extract_refuses_existing_dest(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "app.zip", [])
    dest = tmp_path / "app"
    dest.mkdir()
    (dest / "keep").write_text("x")
    with pytest.raises(ArtifactError) as err:
        extract_zip(path, dest)
    assert "already exists" in err.value.message
    assert (dest / "keep").exists()


def test_extract_refuses_dangling_symlink_dest(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "app.zip", [])
    dest = tmp_path / "app"
    dest.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ArtifactError, match="already exists"):
        extract_zip(path, dest)
    assert not (tmp_path / "elsewhere").exists()


def test_extract_inspects_first_and_writes_nothing(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "app.zip", [("ok.txt", b"x", reg()), ("../evil", b"x", reg())])
    dest = tmp_path / "app"
    with pytest.raises(ArtifactError, match=r"'\.\.' component"):
        extract_zip(path, dest)
    assert not dest.exists()
    assert not (tmp_path / "evil").exists()


def test_extract_lying_header_aborts_and_cleans_up(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "app.zip", [("a.txt", b"a", reg()), ("big", b"y" * 100_000, reg())])
    patch_central(path, "big", 24, "<I", 10)  # claims 10 bytes uncompressed
    assert inspect_zip(path).name == "demo"  # the claim alone looks harmless
    dest = tmp_path / "app"
    with pytest.raises(ArtifactError) as err:
        extract_zip(path, dest)
    assert "'big'" in err.value.message
    assert not dest.exists()


@pytest.mark.parametrize(
    ("declared", "budget", "expected"),
    [
        (10, 1000, "more data than its declared size of 10 bytes"),
        (1000, 10, "more than the limit"),
    ],
)
def test_copy_limited_counts_actual_bytes(declared: int, budget: int, expected: str) -> None:
    out = io.BytesIO()
    with pytest.raises(ArtifactError) as err:
        _copy_limited(io.BytesIO(b"z" * 100), out, "big", declared, budget)
    assert "'big'" in err.value.message
    assert expected in err.value.message
    assert out.getvalue() == b""


def test_copy_limited_copies_within_limits() -> None:
    out = io.BytesIO()
    assert _copy_limited(io.BytesIO(b"z" * 100), out, "f", 100, 100) == 100
    assert out.getvalue() == b"z" * 100


# --- zip_directory, sha256 -----------------------------------------------------------------------


def _build_tree(root: Path, order: list[str]) -> None:
    files = {
        "start.sh": (START, 0o700),
        "meta.ini": (b"name=tree\nversion=1\n", 0o600),
        "bin/tool": (b"tool", 0o750),
        "lib/libx.so.1": (b"lib", 0o664),
        "docs/a b.txt": ("ünïcode".encode(), 0o644),
    }
    for rel in order:
        data, mode = files[rel]
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        os.chmod(root / rel, mode)
    (root / "lib" / "libx.so").symlink_to("libx.so.1")
    (root / "empty").mkdir()


def test_zip_directory_is_reproducible(tmp_path: Path) -> None:
    names = ["start.sh", "meta.ini", "bin/tool", "lib/libx.so.1", "docs/a b.txt"]
    _build_tree(tmp_path / "one", names)
    _build_tree(tmp_path / "two", list(reversed(names)))
    zip_directory(tmp_path / "one", tmp_path / "one.zip")
    for path in (tmp_path / "one").rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    zip_directory(tmp_path / "one", tmp_path / "again.zip")
    zip_directory(tmp_path / "two", tmp_path / "two.zip")
    first = (tmp_path / "one.zip").read_bytes()
    assert (tmp_path / "again.zip").read_bytes() == first
    assert (tmp_path / "two.zip").read_bytes() == first

    with zipfile.ZipFile(tmp_path / "one.zip") as zf:
        infos = zf.infolist()
        names_in_zip = [i.filename for i in infos]
        assert names_in_zip == sorted(names_in_zip)
        assert set(names_in_zip) == {
            *names,
            "lib/libx.so",
        }  # no directory entries, "empty" dropped
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        modes = {i.filename: i.external_attr >> 16 for i in infos}
        assert modes["start.sh"] == stat.S_IFREG | 0o755
        assert modes["bin/tool"] == stat.S_IFREG | 0o755
        assert modes["meta.ini"] == stat.S_IFREG | 0o644
        assert modes["lib/libx.so.1"] == stat.S_IFREG | 0o644
        assert stat.S_ISLNK(modes["lib/libx.so"])
        assert zf.read("lib/libx.so") == b"libx.so.1"


def test_zip_directory_round_trip(tmp_path: Path) -> None:
    names = ["start.sh", "meta.ini", "bin/tool", "lib/libx.so.1", "docs/a b.txt"]
    src = tmp_path / "src"
    _build_tree(src, names)
    zip_directory(src, src / "pkg.zip")  # dest inside src: must not package itself
    zip_directory(src, src / "pkg.zip")
    with zipfile.ZipFile(src / "pkg.zip") as zf:
        assert "pkg.zip" not in zf.namelist()
    dest = tmp_path / "out"
    assert extract_zip(src / "pkg.zip", dest) == AppMeta("tree", "1", ())
    for rel in names:
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()
    assert os.readlink(dest / "lib" / "libx.so") == "libx.so.1"
    assert stat.S_IMODE((dest / "bin" / "tool").stat().st_mode) == 0o750
    assert stat.S_IMODE((dest / "lib" / "libx.so.1").stat().st_mode) == 0o640


def test_zip_directory_rejects_special_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "fifo")
    with pytest.raises(ArtifactError, match="not a regular file or symlink"):
        zip_directory(src, tmp_path / "out.zip")
    assert list(tmp_path.glob("*.zip")) == []
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("hello", AppMeta("hello", "1.0.0", (Service("hello", "http", 8080),))),
        ("crashy", AppMeta("crashy", "1.0.0", ())),
    ],
)
def test_example_apps_package_cleanly(tmp_path: Path, app: str, expected: AppMeta) -> None:
    zip_directory(EXAMPLES / app, tmp_path / f"{app}.zip")
    assert inspect_zip(tmp_path / f"{app}.zip") == expected
    with zipfile.ZipFile(tmp_path / f"{app}.zip") as zf:
        assert zf.getinfo("start.sh").external_attr >> 16 == stat.S_IFREG | 0o755
        assert zf.read("start.sh").startswith(b"#!/bin/sh\n")


@pytest.mark.parametrize("size", [0, 5, 1024 * 1024, 1024 * 1024 + 7])
def test_sha256_file(tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
