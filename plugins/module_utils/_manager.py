# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the plum.deploy collection: it can change at any time, without notice.
"""What every module's manager shares: the results it returns, and a failure that returns them too."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from typing import Any, Dict, NoReturn


class Manager:
    """Base of the modules' managers (one per module, as community.docker's)."""

    def __init__(self, module: Any, results: Dict[str, Any]) -> None:
        self.module = module
        self.results = results
        self.did_change = False

    def fail(self, msg: str, **extra: Any) -> NoReturn:
        """Fail with what was done so far (changed, actions, the object's state) next to the message."""
        result = dict(self.results)
        result["changed"] = self.did_change
        result.update(extra)
        self.module.fail_json(msg=msg, **result)
        raise AssertionError("fail_json returned")  # it exits; this tells the type checker so
