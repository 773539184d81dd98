"""Durable atomic writes and safe removal (plum.common.fsio)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from plum.common import fsio
from plum.common.fsio import StorageError


def test_write_atomic_replaces_the_file_privately_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "app" / "state.json"
    fsio.write_json_atomic(target, {"a": 1})
    fsio.write_json_atomic(target, {"a": 2})
    assert target.read_text() == '{"a":2}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_content_and_names_the_path_and_the_reason(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    fsio.write_atomic(target, b"old")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageError) as err:
        fsio.write_atomic(target, b"new")
    assert err.value.message == f"cannot save {target}: no space left on device"
    assert err.value.disk_full and err.value.path == str(target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"], "the temporary file is removed"


def _deep_tree(root: Path, depth: int, outside: Path) -> None:
    """depth nested folders, each with a file and a symlink out of the tree; some read-only or closed."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            with open(os.open("f", os.O_CREAT | os.O_WRONLY, 0o400, dir_fd=fd), "w") as fh:
                fh.write("x")
            os.symlink(str(outside), "out", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            if level % 5 == 0:
                os.chmod("d", 0o500 if level % 2 else 0o000, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def test_remove_tree_removes_any_depth_without_following_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    root = tmp_path / "deep"
    _deep_tree(root, 2500, outside)  # paths far beyond PATH_MAX, more levels than the recursion limit
    fsio.remove_tree(root)
    assert not root.exists()
    assert (outside / "keep").read_text() == "precious"


def test_remove_tree_of_a_wide_folder(tmp_path):
    root = tmp_path / "wide"
    for index in range(500):
        (root / str(index)).mkdir(parents=True)
        (root / str(index) / "file").write_text("x")
    fsio.remove_tree(root)
    assert not root.exists()


def test_remove_path_takes_files_links_and_missing_paths(tmp_path):
    target = tmp_path / "folder"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    fsio.remove_path(link)
    assert target.is_dir() and not link.exists()
    (tmp_path / "file").write_text("x")
    fsio.remove_path(tmp_path / "file")
    fsio.remove_path(tmp_path / "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_a_removal_that_fails_names_the_entry_and_can_be_retried(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "file").write_text("x")
    real_rmdir = os.rmdir
    calls = {"n": 0}

    def busy_once(path, *, dir_fd=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        return real_rmdir(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "rmdir", busy_once)
    with pytest.raises(StorageError) as err:
        fsio.remove_tree(root)
    assert err.value.message == f"cannot remove {root / 'a' / 'b'}: device or resource busy"
    fsio.remove_tree(root)
    assert not root.exists()


def test_move_aside_keeps_the_file_under_a_new_name(tmp_path):
    bad = tmp_path / "state.json"
    bad.write_bytes(b"\x00garbage")
    kept = fsio.move_aside(bad)
    assert not bad.exists() and kept.read_bytes() == b"\x00garbage"
    assert kept.name.startswith("state.json.bad-")
    bad.write_bytes(b"again")
    assert fsio.move_aside(bad) != kept, "a second bad file in the same second gets its own name"


def test_error_classes():
    assert fsio.is_storage_error(OSError(errno.ENOSPC, "x"))
    assert not fsio.is_storage_error(OSError(errno.ENOENT, "x"))
    assert fsio.is_resource_error(OSError(errno.EMFILE, "x"))
    assert not fsio.is_resource_error(FileNotFoundError(errno.ENOENT, "x"))
    assert not StorageError("save", "/x", "permission denied", errno.EACCES).disk_full
