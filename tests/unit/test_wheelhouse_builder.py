"""The wheelhouse builder the roles run on the control node (roles/plum_common/files/plum_wheelhouse.py)."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "plum_common" / "files" / "plum_wheelhouse.py"
spec = importlib.util.spec_from_file_location("plum_wheelhouse", SCRIPT)
assert spec and spec.loader
wheelhouse = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheelhouse)

METADATA = """Metadata-Version: 2.4
Name: plum
Version: 1.2.3
Requires-Dist: h11<1,>=0.14
Requires-Dist: docker>=7.1; extra == "docker"
Requires-Dist: pytest>=8; extra == "test"
Requires-Dist: backport>=1; python_version < "3.10"

A description that is not metadata: Requires-Dist: nope
"""


def make_wheel(tmp_path: Path) -> Path:
    path = tmp_path / "plum-1.2.3-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("plum-1.2.3.dist-info/METADATA", METADATA)
    return path


def test_requirements_follow_the_extras_and_the_targets_python(tmp_path):
    meta = wheelhouse.wheel_metadata(make_wheel(tmp_path))
    assert meta["Version"] == ["1.2.3"]
    assert wheelhouse.requirements(meta, [], "3.11") == ["h11<1,>=0.14"]
    assert wheelhouse.requirements(meta, ["docker"], "3.11") == [
        "h11<1,>=0.14",
        "docker>=7.1",
    ]
    assert wheelhouse.requirements(meta, [], "3.9") == ["h11<1,>=0.14", "backport>=1"]


def test_a_zip_that_is_not_a_wheel_is_refused(tmp_path):
    path = tmp_path / "x.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.txt", "")
    with pytest.raises(wheelhouse.BuildError, match="not a wheel"):
        wheelhouse.wheel_metadata(path)


def test_the_archive_is_the_same_bytes_for_the_same_files(tmp_path):
    for name in ("b.whl", "a.whl"):
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(name.encode())
    wheelhouse.deterministic_tar(tmp_path / "in", tmp_path / "one.tar")
    for path in (tmp_path / "in").iterdir():  # other timestamps, same content
        path.touch()
    wheelhouse.deterministic_tar(tmp_path / "in", tmp_path / "two.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()


def test_the_source_digest_ignores_build_output(tmp_path):
    (tmp_path / "src" / "plum").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "src" / "plum" / "__init__.py").write_text('__version__ = "1"\n')
    before = wheelhouse.source_digest(tmp_path)
    (tmp_path / "src" / "plum.egg-info").mkdir()
    (tmp_path / "src" / "plum.egg-info" / "PKG-INFO").write_text("rewritten by every build")
    (tmp_path / "src" / "plum" / "__pycache__").mkdir()
    (tmp_path / "src" / "plum" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert wheelhouse.source_digest(tmp_path) == before
    (tmp_path / "src" / "plum" / "__init__.py").write_text('__version__ = "2"\n')
    assert wheelhouse.source_digest(tmp_path) != before
