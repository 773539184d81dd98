"""Reproducible zips and the early look at meta.ini (plugins/module_utils/_artifact.py)."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("ansible")

from ansible_collections.plum.deploy.plugins.module_utils import _artifact


def make_app(root: Path, version: str = "1.0.0") -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "start.sh").write_text("#!/bin/sh\nexec sleep 100\n")
    (root / "start.sh").chmod(0o700)
    (root / "meta.ini").write_text(f"name=demo\nversion={version}\nservice=web:http:8080\n")
    (root / "lib" / "data.txt").write_text("x" * 5000)
    (root / "lib" / "data.txt").chmod(0o600)
    os.symlink("lib/data.txt", root / "link")
    return root


def zipped(src: Path, dest: Path) -> str:
    _artifact.zip_directory(str(src), str(dest))
    return _artifact.sha256_file(str(dest))


def test_same_content_gives_the_same_sha_whatever_the_timestamps_and_umask(tmp_path):
    a = make_app(tmp_path / "a")
    first = zipped(a, tmp_path / "a1.zip")
    for path in a.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1_000_000_000, 1_000_000_000))
    (a / "start.sh").chmod(0o755)  # another exec mode: still stored as 0755
    (a / "lib" / "data.txt").chmod(0o664)  # another non-exec mode: still 0644
    assert zipped(a, tmp_path / "a2.zip") == first
    b = make_app(tmp_path / "b")  # created later, in another order of syscalls
    assert zipped(b, tmp_path / "b.zip") == first


def test_content_and_exec_bits_change_the_sha(tmp_path):
    a = make_app(tmp_path / "a")
    first = zipped(a, tmp_path / "1.zip")
    (a / "lib" / "data.txt").chmod(0o700)
    second = zipped(a, tmp_path / "2.zip")
    (a / "meta.ini").write_text("name=demo\nversion=1.0.1\n")
    third = zipped(a, tmp_path / "3.zip")
    assert len({first, second, third}) == 3


def test_entries_are_sorted_with_fixed_dates_normalized_modes_and_symlinks_kept(
    tmp_path,
):
    a = make_app(tmp_path / "a")
    _artifact.zip_directory(str(a), str(tmp_path / "a.zip"))
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == [
            "lib/data.txt",
            "link",
            "meta.ini",
            "start.sh",
        ]
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        modes = {i.filename: i.external_attr >> 16 for i in infos}
        assert modes["start.sh"] == stat.S_IFREG | 0o755
        assert modes["lib/data.txt"] == stat.S_IFREG | 0o644
        assert stat.S_ISLNK(modes["link"])
        assert zf.read("link") == b"lib/data.txt"


def test_zip_inside_the_directory_is_not_packed_into_itself(tmp_path):
    a = make_app(tmp_path / "a")
    first = zipped(a, tmp_path / "outside.zip")
    assert zipped(a, a / "inside.zip") == first
    assert zipped(a, a / "inside.zip") == first


def test_same_bytes_as_the_runtime_packager(tmp_path):
    artifact = pytest.importorskip("plum.common.artifact")
    a = make_app(tmp_path / "a")
    artifact.zip_directory(a, tmp_path / "runtime.zip")
    assert zipped(a, tmp_path / "ansible.zip") == artifact.sha256_file(tmp_path / "runtime.zip")


def test_special_files_are_refused(tmp_path):
    a = make_app(tmp_path / "a")
    os.mkfifo(a / "pipe")
    with pytest.raises(_artifact.ArtifactError, match="not a regular file or symlink"):
        _artifact.zip_directory(str(a), str(tmp_path / "a.zip"))
    assert not (tmp_path / "a.zip").exists()
    assert not list(tmp_path.glob(".a.zip.*"))


def test_read_app_meta(tmp_path):
    a = make_app(tmp_path / "a", version="2.5.0")
    _artifact.zip_directory(str(a), str(tmp_path / "a.zip"))
    meta = _artifact.read_app_meta(str(tmp_path / "a.zip"))
    assert meta == {"name": "demo", "version": "2.5.0", "services": ["web:http:8080"]}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"meta.ini": "name=a\nversion=1\n"}, "start.sh is missing from the zip root"),
        (
            {"app/start.sh": "", "app/meta.ini": "name=a\nversion=1\n"},
            "start.sh must be at the zip root",
        ),
        ({"start.sh": "", "meta.ini": "name=a\n"}, "'version' is missing"),
        ({"start.sh": "", "meta.ini": "name=a\nversion=1\nbogus line\n"}, "line 3"),
    ],
)
def test_read_app_meta_refuses_what_the_agent_would(tmp_path, files, message):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    with pytest.raises(_artifact.ArtifactError, match=message):
        _artifact.read_app_meta(str(path))


def test_not_a_zip(tmp_path):
    path = tmp_path / "junk.zip"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(_artifact.ArtifactError, match="not a zip archive"):
        _artifact.read_app_meta(str(path))


def test_parse_meta_ini_accepts_plums_forms():
    meta = _artifact.parse_meta_ini("\ufeff# comment\n; other\nName: Hello\nversion = 1.2\nservice=a:http:80\n")
    assert meta == {"name": "Hello", "version": "1.2", "services": ["a:http:80"]}


def test_package_zips_directories_and_passes_zips_through(tmp_path):
    a = make_app(tmp_path / "a")
    work = tmp_path / "work"
    work.mkdir()
    path, created = _artifact.package(str(a), str(work))
    assert created and Path(path).parent == work
    again, created_again = _artifact.package(path, str(work))
    assert (again, created_again) == (path, False)
    with pytest.raises(_artifact.ArtifactError, match="no such file"):
        _artifact.package(str(tmp_path / "missing"), str(work))


def test_module_artifact_from_remote_src_or_sha(tmp_path):
    a = make_app(tmp_path / "a")
    work = tmp_path / "work"
    work.mkdir()
    sha, path, meta = _artifact.module_artifact(str(a), None, str(work))
    assert sha == _artifact.sha256_file(path) and Path(path).parent == work
    assert (meta["name"], meta["version"]) == ("demo", "1.0.0")
    assert _artifact.module_artifact(str(a), " " + sha.upper() + "\n", str(work))[0] == sha, "normalized"
    assert _artifact.module_artifact(None, sha.upper(), str(work)) == (sha, None, None)
    assert _artifact.module_artifact(None, None, str(work)) == (None, None, None)


@pytest.mark.parametrize(
    ("remote_src", "sha", "message"),
    [
        (None, "abc", r"artifact_sha256='abc' is not a sha256 \(64 hex digits\)"),
        (
            "a",
            "0" * 64,
            r"remote_src .*/a has sha256 [0-9a-f]{64}, not the expected artifact_sha256 0{64}$",
        ),
        ("missing", None, r"^remote_src: .*/missing: no such file or directory$"),
        ("a/lib", None, r"^remote_src: .*start\.sh is missing from the zip root$"),
    ],
)
def test_module_artifact_errors(tmp_path, remote_src, sha, message):
    make_app(tmp_path / "a")
    src = str(tmp_path / remote_src) if remote_src else None
    with pytest.raises(_artifact.ArtifactError, match=message):
        _artifact.module_artifact(src, sha, str(tmp_path))
