# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the plum.deploy collection: it can change at any time, without notice.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:

    # How the modules reach the agent and the controller. Every module of the plum.deploy.plum action group
    # takes all of these options, so one module_defaults block can configure both.
    DOCUMENTATION = r"""
options:
  agent_url:
    description:
      - Base URL of the Plum agent's API, as seen from the target host.
      - If not set, the value of the E(PLUM_AGENT_URL) environment variable on the target is used.
      - Used by M(plum.deploy.plum_app) and M(plum.deploy.plum_app_info); the other modules accept and ignore it.
    type: str
    default: http://127.0.0.1:7070
  agent_token:
    description:
      - Bearer token of the agent's API.
      - If not set, the E(PLUM_AGENT_TOKEN) environment variable on the target is used, and then the
        token file O(agent_token_file) on the target.
      - The agent's token is its E(AGENT_API_TOKEN) when that is set, else the C(agent.token) file it creates in its
        data directory.
    type: str
  agent_token_file:
    description:
      - File on the target holding the agent's token, read when neither O(agent_token) nor E(PLUM_AGENT_TOKEN) is set.
      - "The file is readable by its owner only, so reading it usually needs C(become: true)."
    type: path
    default: /var/lib/plum/agent/agent.token
  controller_url:
    description:
      - Base URL of the Plum controller's API, as seen from the target host.
      - If not set, the value of the E(PLUM_CONTROLLER_URL) environment variable on the target is used.
      - Used by M(plum.deploy.plum_deployment); the other modules accept and ignore it.
    type: str
    default: http://127.0.0.1:8080
  controller_token:
    description:
      - Operator token of the controller's API.
      - If not set, the E(PLUM_CONTROLLER_TOKEN) environment variable on the target is used, and then the
        token file O(controller_token_file) on the target.
      - The controller's operator token is its E(CONTROLLER_OPERATOR_TOKEN) when that is set, else the
        C(operator.token) file in its data directory.
    type: str
  controller_token_file:
    description:
      - File on the target holding the controller's operator token, read when neither O(controller_token) nor
        E(PLUM_CONTROLLER_TOKEN) is set.
    type: path
    default: /var/lib/plum/controller/operator.token
  validate_certs:
    description:
      - Verify TLS certificates when a URL uses C(https://).
    type: bool
    default: true
  request_timeout:
    description:
      - Seconds to wait for one API request. Stopping an app waits for its C(stop_timeout) on top of this.
    type: int
    default: 60
notes:
  - The modules talk HTTP with C(ansible.module_utils.urls) only; targets need nothing beyond Python and ansible-core.
  - Set the connection once for all modules with C(module_defaults) and the action group
    C(group/plum.deploy.plum).
  - Proxies from the target's environment are not used for loopback URLs.
"""
