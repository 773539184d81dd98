# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action plugin for plum_deployment: pushes ``src`` from the control node, as for plum_app."""

from __future__ import annotations

from ansible_collections.plum.deploy.plugins.action.plum_app import ActionModule as PlumAppAction


class ActionModule(PlumAppAction):
    """The same flow as plum_app: the module asks for the zip only when the controller does not have it."""
