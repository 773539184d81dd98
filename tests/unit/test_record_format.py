"""A state file an earlier agent wrote loads into the typed record, and is saved back in the same shape."""

from __future__ import annotations

import json

from plum.agent.restart import RestartTracker
from plum.agent.state import AppRecord
from plum.common.artifact import AppMeta, Service
from plum.common.vocab import Desired, Owner, Phase

EARLIER = {
    "name": "svc",
    "instance_id": "svc-1a2b3c4d",
    "runtime": "process",
    "owner": "controller",
    "desired": "running",
    "phase": "BackOff",
    "spec": {"start_cmd": "python app.py", "max_restarts": 3, "ports": []},
    "spec_hash": "",
    "release": "0123456789abcdef",
    "meta": {"name": "svc", "version": "1.0", "services": [{"name": "web", "protocol": "http", "port": 80}]},
    "tracker": {"consecutive": 2, "history": [1.0, 2.5]},
    "intent": {
        "release": "fedcba9876543210",
        "artifact_sha256": "ab" * 32,
        "meta": {"name": "svc", "version": "2.0", "services": []},
        "spec": {},
        "spec_hash": "",
        "runtime": "process",
        "desired": "stopped",
    },
}


def test_an_earlier_record_loads_typed_and_saves_in_its_shape(tmp_path):
    path = tmp_path / "apps" / "svc" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(EARLIER))
    record = AppRecord.load(path)
    assert (record.owner, record.desired, record.phase) == (Owner.CONTROLLER, Desired.RUNNING, Phase.BACKOFF)
    assert record.spec.start_cmd == "python app.py" and record.spec.restart.max_restarts == 3
    assert record.meta == AppMeta("svc", "1.0", (Service("web", "http", 80),))
    assert record.tracker == RestartTracker(2, [1.0, 2.5])
    assert record.intent is not None and record.intent.desired is Desired.STOPPED
    assert record.intent.meta == AppMeta("svc", "2.0", ())

    record.save(path)
    saved = json.loads(path.read_text())
    assert saved["meta"] == EARLIER["meta"] and saved["tracker"] == EARLIER["tracker"]
    assert saved["spec"]["start_cmd"] == "python app.py" and saved["spec"]["max_restarts"] == 3
    assert saved["intent"]["meta"] == EARLIER["intent"]["meta"] and saved["intent"]["desired"] == "stopped"
    assert AppRecord.load(path) == record
