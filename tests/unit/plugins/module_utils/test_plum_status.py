"""The one-line descriptions of an app's or a replica's run in the modules' messages (module_utils/_status.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("ansible")

from ansible_collections.plum.deploy.plugins.module_utils import _deployment
from ansible_collections.plum.deploy.plugins.module_utils._status import describe
from ansible_collections.plum.deploy.plugins.modules import plum_app, plum_deployment


def test_describe_an_agents_app_status():
    status = {
        "phase": "BackOff",
        "restarts": 2,
        "exit_code": 3,
        "exit_reason": "Exited",
        "message": "restarting",
    }
    assert describe(status) == "phase BackOff, 2 restart(s), last exit code 3 (Exited): restarting"
    assert describe({"phase": "Running", "restarts": 0, "exit_code": None}) == "phase Running"
    assert describe({"phase": "Stopped", "exit_code": 0}) == "phase Stopped, last exit code 0"


def test_describe_a_controllers_replica():
    replica = {
        "nodeId": "n1",
        "instanceId": "i-1",
        "phase": "Failed",
        "restarts": 5,
        "exitCode": 3,
        "message": "gave up",
    }
    assert describe(replica) == "phase Failed, 5 restart(s), last exit code 3: gave up"
    assert describe({"nodeId": "n1", "phase": None, "exitCode": None}) == "no phase reported yet"


def test_both_modules_use_the_shared_helpers():
    assert plum_app.describe is describe and _deployment.describe is describe
    assert not hasattr(plum_app, "SHA256") and not hasattr(plum_deployment, "SHA256")
