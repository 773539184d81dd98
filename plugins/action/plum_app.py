# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action plugin for plum_app (and plum_deployment): pushes ``src`` from the control node.

A directory is zipped reproducibly on the control node and the artifact's sha256 computed there.
The module then runs with ``artifact_sha256`` only; it compares that with what the agent (or the
controller) already has, and only when a real run needs the bytes does it answer
``artifact_missing``. Then, and only then, the zip is copied to a temporary path on the target and
the module runs again with ``remote_src`` pointing at it. Check mode never copies anything. The
temporary files are removed on both sides.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Optional

from ansible import constants as C
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.action import ActionBase
from ansible_collections.plum.deploy.plugins.module_utils._artifact import (
    ArtifactError,
    package,
    read_app_meta,
    sha256_file,
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp: Optional[str] = None, task_vars: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        self._supports_check_mode = True
        self._supports_async = False
        result: dict[str, Any] = super().run(tmp, task_vars)
        del tmp

        args = dict(self._task.args)
        src = args.pop("src", None)
        try:
            if src is None:
                result.update(self._execute_module(module_args=args, task_vars=task_vars))
                return result
            if args.get("remote_src"):
                raise AnsibleActionFail("parameters are mutually exclusive: src|remote_src")
            result.update(self._run_with_src(src, args, task_vars))
            return result
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _run_with_src(self, src: str, args: dict[str, Any], task_vars: Optional[dict[str, Any]]) -> dict[str, Any]:
        try:
            local = self._find_needle("files", src)
        except AnsibleError as exc:
            raise AnsibleActionFail("src %s: %s" % (src, to_native(exc)))
        workdir = tempfile.mkdtemp(prefix="plum-artifact-", dir=C.DEFAULT_LOCAL_TMP)
        try:
            try:
                zip_path, _created = package(local, workdir)
                meta = read_app_meta(zip_path)
            except ArtifactError as exc:
                raise AnsibleActionFail("src: %s" % to_native(exc))
            sha = sha256_file(zip_path)
            args["artifact_sha256"] = sha
            res: dict[str, Any] = self._execute_module(module_args=args, task_vars=task_vars)
            if res.get("failed") and res.get("artifact_missing"):
                tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
                remote = self._connection._shell.join_path(tmpdir, "plum-artifact.zip")
                self._transfer_file(zip_path, remote)
                self._fixup_perms2((tmpdir, remote))
                args["remote_src"] = remote
                res = self._execute_module(module_args=args, task_vars=task_vars)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        res["artifact"] = dict(src=local, sha256=sha, package=meta["name"], version=meta["version"],
                               directory=os.path.isdir(local))
        self._fill_in_diff(res.get("diff"), sha, meta)
        return res

    @staticmethod
    def _fill_in_diff(diff: Any, sha: str, meta: dict[str, Any]) -> None:
        """The module saw only the sha256 of an artifact it does not have: name the new version in the diff."""
        after = diff.get("after") if isinstance(diff, dict) else None
        if not isinstance(after, dict):
            return
        if after.get("artifact_sha256") == sha and after.get("version") is None:  # plum_app
            after["version"] = meta["version"]
            after["package"] = meta["name"]
        app = after.get("app")
        if isinstance(app, dict) and app.get("sha256") == sha and app.get("version") is None:  # plum_deployment
            app["name"] = meta["name"]
            app["version"] = meta["version"]
