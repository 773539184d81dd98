"""Make the repository importable as ``ansible_collections.plum.deploy`` for the plugin unit tests.

The collection root is the repository root; Python finds it through a temporary directory holding
``ansible_collections/plum/deploy`` as a symlink to the repository (ansible-test units does the same
with its own copy). Each test module skips itself when ansible-core is not installed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _collection_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="plum-collections-"))
    atexit.register(shutil.rmtree, root, True)
    (root / "ansible_collections" / "plum").mkdir(parents=True)
    (root / "ansible_collections" / "plum" / "deploy").symlink_to(REPO, target_is_directory=True)
    return root


COLLECTIONS = _collection_root()
sys.path.insert(0, str(COLLECTIONS))
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS))


@pytest.fixture
def repo() -> Path:
    return REPO
