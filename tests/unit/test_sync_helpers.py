from __future__ import annotations

import asyncio

import pytest

from plum.agent.state import AppRecord
from plum.agent.sync import spec_from_assignment, status_payload
from plum.common.httpclient import HTTPClient, error_message, sse_events


async def _chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_sse_events_are_whole_events_and_skip_keepalives(size):
    stream = b"event: ping\ndata: init\n\n: keepalive\n\nevent: update\r\ndata: assignments\r\n\r\ndata: a\ndata: b\n\n"

    async def collect():
        return [e async for e in sse_events(_chunks(stream, size))]

    assert asyncio.run(collect()) == [
        ("ping", "init"),
        ("update", "assignments"),
        ("message", "a\nb"),
    ]


def test_spec_from_a_zip_assignment():
    item = {
        "instanceId": "d-1",
        "artifactType": "zip",
        "startCmd": "./run.sh --fast",
        "env": {"A": "1"},
        "restartPolicy": "on-failure",
        "runtime": "",
        "memory": None,
        "cpus": None,
        "networkMode": "",
        "ports": [],
    }
    assert spec_from_assignment(item) == {
        "start_cmd": "./run.sh --fast",
        "env": {"A": "1"},
        "restart_policy": "on-failure",
    }


def test_spec_from_an_image_assignment_with_docker_settings():
    item = {
        "artifactType": "image",
        "image": "",
        "imageRepository": "web",
        "imageTag": "2",
        "runtime": "docker",
        "memory": "256m",
        "cpus": 0.5,
        "networkMode": "bridge",
        "ports": ["8080:80"],
    }
    assert spec_from_assignment(item) == {
        "image": "web:2",
        "memory": "256m",
        "cpus": 0.5,
        "network_mode": "bridge",
        "ports": ["8080:80"],
    }


def test_status_payload_uses_plum_keys():
    record = AppRecord(
        name="d-1",
        instance_id="d-1",
        runtime="process",
        phase="Failed",
        exit_code=3,
        message="x",
    )
    payload = status_payload(record)
    assert {k: payload[k] for k in ("instanceId", "phase", "exitCode", "healthy", "message")} == {
        "instanceId": "d-1",
        "phase": "Failed",
        "exitCode": 3,
        "healthy": False,
        "message": "x",
    }


def test_client_rejects_non_http_urls_and_reads_json_errors():
    with pytest.raises(ValueError):
        HTTPClient("ftp://x")
    client = HTTPClient("https://ctl.example:8443/base/")
    assert (client.host, client.port, client.prefix) == ("ctl.example", 8443, "/base")
    assert error_message(b'{"error": "bad nodeId"}') == "bad nodeId"
    assert error_message(b"plain text") == "plain text"


def test_image_app_port_mappings_become_ports_when_the_entry_has_none():
    item = {
        "artifactType": "image",
        "image": "web:2",
        "portMappings": '[{"host": 8080, "container": 80}]',
    }
    assert spec_from_assignment(item)["ports"] == [{"host": 8080, "container": 80}]
    assert "ports" not in spec_from_assignment({**item, "portMappings": ""})
