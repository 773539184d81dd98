# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the plum.deploy collection: it can change at any time, without notice.
"""How the modules tell what an app or a replica is doing, in the messages they fail with."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from typing import Any, Mapping

# Instance phases (plum.common.vocab.Phase), pinned by a contract test.
DOWNLOADING = "Downloading"
STARTING = "Starting"
RUNNING = "Running"
BACKOFF = "BackOff"
FAILED = "Failed"
STOPPED = "Stopped"
COMPLETED = "Completed"
UNKNOWN = "Unknown"
PHASES = (DOWNLOADING, STARTING, RUNNING, BACKOFF, FAILED, STOPPED, COMPLETED, UNKNOWN)
ACTIVE_PHASES = (STARTING, RUNNING, BACKOFF)  # holding (or about to hold) a process or a container
FAILING_PHASES = (FAILED, BACKOFF)
ENDED_PHASES = (FAILED, STOPPED, COMPLETED)  # no process, and none coming without a start


def describe(status: Mapping[str, Any]) -> str:
    """One line on an app's or a replica's run: phase, restarts, last exit and the agent's message.

    ``status`` is an app status from the agent (``exit_code``, ``exit_reason``) or a replica (assignment) from the
    controller (``exitCode``); a replica that has not reported yet has no phase.
    """
    text = "phase %s" % status["phase"] if status.get("phase") else "no phase reported yet"
    if status.get("restarts"):
        text += ", %s restart(s)" % status["restarts"]
    exit_code = status.get("exit_code", status.get("exitCode"))
    if exit_code is not None:
        text += ", last exit code %s" % exit_code
    if status.get("exit_reason"):
        text += " (%s)" % status["exit_reason"]
    if status.get("message"):
        text += ": %s" % status["message"]
    return text
