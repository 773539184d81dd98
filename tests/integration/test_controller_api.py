"""The controller's HTTP API over real HTTP, against a real plum-controller process and real SQLite."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from support.agent import wait_until
from support.controller import (
    ControllerProc,
    app_zip,
    read_until,
)


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProc]:
    proc = ControllerProc(
        tmp_path_factory.mktemp("ctl") / "data",
        HEARTBEAT_TTL_SEC="2",
        HEARTBEAT_INTERVAL_SEC="0.5",
        CONTROLLER_MAX_ARTIFACT_BYTES="65536",
        CONTROLLER_STATUS_HISTORY="5",
        SERVICE_CHECK_INTERVAL_SEC="0.3",
        SERVICE_HEALTH_TTL_SEC="5",
    ).start()
    yield proc
    assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()


def uploaded(ctl: ControllerProc, name: str, version: str = "1.0.0") -> dict[str, Any]:
    reply = ctl.upload(app_zip(name, version))
    assert reply.status == 200, reply
    return reply.json


def nodes(ctl: ControllerProc, *names: str) -> None:
    for name in names:
        assert ctl.heartbeat(name).status == 200


# --- auth ------------------------------------------------------------------------------------------


def test_healthz_needs_no_token(ctl: ControllerProc) -> None:
    reply = ctl.call("GET", "/healthz", token=None)
    assert (reply.status, reply.body) == (200, b"ok")


def test_missing_and_wrong_tokens_are_401_json(ctl: ControllerProc) -> None:
    for path in ("/v1/nodes", "/v1/assignments?nodeId=x", "/v1/openapi.json", "/artifacts/x.zip"):
        missing = ctl.call("GET", path, token=None)
        assert missing.status == 401, path
        assert missing.headers["content-type"] == "application/json"
        assert "Authorization: Bearer" in missing.json["error"]
        wrong = ctl.call("GET", path, token="not-the-token-at-all")
        assert wrong.status == 401
        assert wrong.json["error"] == "invalid bearer token"
    basic = ctl.call("GET", "/v1/nodes", token=None, headers={"Authorization": f"Basic {ctl.operator}"})
    assert basic.status == 401


def test_agent_token_is_refused_on_operator_routes(ctl: ControllerProc) -> None:
    for method, path in (
        ("GET", "/v1/nodes"),
        ("POST", "/v1/deployments"),
        ("GET", "/v1/apps"),
        ("DELETE", "/v1/nodes/x"),
        ("PATCH", "/v1/assignments/x"),
        ("PUT", "/v1/services/endpoint"),
    ):
        reply = ctl.call(method, path, {}, token="agent")
        assert reply.status == 403, (method, path, reply)
        assert "operator token" in reply.json["error"]
    # ...and accepted on agent routes, as is the operator token
    assert ctl.heartbeat("auth-node").status == 200
    for token in ("agent", "operator"):
        assert ctl.call("GET", "/v1/assignments?nodeId=auth-node", token=token).status == 200
        assert ctl.call("GET", "/v1/openapi.json", token=token).status == 200


def test_openapi_document_lists_every_route(ctl: ControllerProc) -> None:
    doc = ctl.ok("GET", "/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, method in (
        ("/v1/nodes/heartbeat", "post"),
        ("/v1/apps/upload", "post"),
        ("/artifacts/{file}", "get"),
        ("/v1/deployments/{id}", "patch"),
        ("/v1/stream", "get"),
        ("/v1/discovery/one", "get"),
        ("/healthz", "get"),
    ):
        assert method in paths[path], path


# --- nodes -----------------------------------------------------------------------------------------


def test_heartbeat_reply_node_health_and_ttl_expiry(ctl: ControllerProc) -> None:
    reply = ctl.heartbeat("ttl-node", labels={"zone": "a"})
    assert reply.json == {"ttlSec": 2, "heartbeatIntervalSec": 0.5}
    listed = {n["nodeId"]: n for n in ctl.ok("GET", "/v1/nodes")}
    assert listed["ttl-node"]["health"] == "Healthy"
    assert listed["ttl-node"]["labels"] == {"zone": "a"}
    assert listed["ttl-node"]["ip"] == "127.0.0.1"
    one = ctl.ok("GET", "/v1/nodes/ttl-node")
    assert one["health"] == "Healthy"
    assert abs(one["lastSeen"] - time.time()) < 5
    time.sleep(2.3)
    assert ctl.ok("GET", "/v1/nodes/ttl-node")["health"] == "Unhealthy"
    assert ctl.heartbeat("ttl-node").status == 200
    assert ctl.ok("GET", "/v1/nodes/ttl-node")["health"] == "Healthy"
    assert ctl.ok("GET", "/v1/nodes/ttl-node")["labels"] == {"zone": "a"}  # no labels sent: kept


def test_heartbeat_bad_input(ctl: ControllerProc) -> None:
    cases = [
        ({"ip": "127.0.0.1"}, "nodeId"),
        ({"nodeId": "", "ip": "127.0.0.1"}, "nodeId"),
        ({"nodeId": "bad id/with slash"}, "nodeId"),
        ({"nodeId": 42}, "nodeId"),
        ({"nodeId": "ok-node", "ip": "not an ip!"}, "ip"),
        ({"nodeId": "ok-node", "labels": ["a"]}, "labels"),
        ([1, 2], ""),
    ]
    for body, field in cases:
        reply = ctl.call("POST", "/v1/nodes/heartbeat", body, token="agent")
        assert reply.status == 400, (body, reply)
        assert reply.json["field"] == field, reply
    assert "ok-node" not in {n["nodeId"] for n in ctl.ok("GET", "/v1/nodes")}


def test_node_id_alive_on_another_address_is_refused(ctl: ControllerProc) -> None:
    assert ctl.heartbeat("twin", ip="127.0.0.1").status == 200
    reply = ctl.heartbeat("twin", ip="127.0.0.2")
    assert reply.status == 409
    assert "127.0.0.1" in reply.json["error"]
    assert "127.0.0.2" in reply.json["error"]
    assert reply.json["field"] == "nodeId"
    assert ctl.ok("GET", "/v1/nodes/twin")["ip"] == "127.0.0.1"


def test_node_get_and_delete(ctl: ControllerProc) -> None:
    assert ctl.call("GET", "/v1/nodes/nobody").status == 404
    assert ctl.call("DELETE", "/v1/nodes/nobody").status == 404
    nodes(ctl, "busy-node", "free-node")
    app = uploaded(ctl, "nodedel")
    ctl.ok(
        "POST",
        "/v1/deployments",
        {"name": "nodedel", "entries": [{"artifactUrl": app["url"], "replicas": {"busy-node": 1}}]},
    )
    reply = ctl.call("DELETE", "/v1/nodes/busy-node")
    assert reply.status == 409
    assert "in use" in reply.json["error"]
    assert ctl.call("DELETE", "/v1/nodes/free-node").status == 204
    assert ctl.call("GET", "/v1/nodes/free-node").status == 404


# --- apps and artifacts ----------------------------------------------------------------------------


def test_upload_valid_zip(ctl: ControllerProc) -> None:
    data = app_zip("uploaded", "2.1.0")
    reply = ctl.upload(data)
    assert reply.status == 200, reply
    app = reply.json
    sha = hashlib.sha256(data).hexdigest()
    assert app["name"] == "uploaded"
    assert app["version"] == "2.1.0"
    assert app["sha256"] == sha
    assert app["sizeBytes"] == len(data)
    assert app["type"] == "zip"
    assert app["url"] == f"/artifacts/uploaded_2.1.0_{sha[:8]}.zip"
    assert app["services"] == [{"name": "web", "protocol": "http", "port": 8080}]
    assert (ctl.data_dir / "artifacts" / f"uploaded_2.1.0_{sha[:8]}.zip").read_bytes() == data
    assert app["artifactId"] in {a["artifactId"] for a in ctl.ok("GET", "/v1/apps")}


def test_upload_rejections_leave_nothing_behind(ctl: ControllerProc) -> None:
    before = ctl.ok("GET", "/v1/apps")
    files_before = sorted(p.name for p in (ctl.data_dir / "artifacts").iterdir())

    not_zip = ctl.upload(b"this is not a zip file at all")
    assert not_zip.status == 400, not_zip
    assert not_zip.json["field"]

    no_start = ctl.upload(app_zip(files={"meta.ini": b"name=x\nversion=1\n", "run.sh": b"#!/bin/sh\n"}))
    assert no_start.status == 400
    assert "start.sh" in no_start.json["error"]

    nested = ctl.upload(app_zip(files={"bin/start.sh": b"#!/bin/sh\n", "bin/meta.ini": b"name=x\nversion=1\n"}))
    assert nested.status == 400
    assert "root" in nested.json["error"]

    no_version = ctl.upload(app_zip(files={"start.sh": b"#!/bin/sh\n", "meta.ini": b"name=x\n"}))
    assert no_version.status == 400
    assert "version" in no_version.json["error"]

    big = ctl.upload(
        app_zip(
            "big",
            files={
                "start.sh": b"#!/bin/sh\n",
                "meta.ini": b"name=big\nversion=1\n",
                "blob.bin": secrets.token_bytes(100_000),
            },
        )
    )
    assert big.status == 413, big
    assert "CONTROLLER_MAX_ARTIFACT_BYTES=65536" in big.json["error"]
    assert big.json["field"] == "file"

    wrong_field = ctl.upload(app_zip("wf"), field="upload")
    assert wrong_field.status == 400
    assert wrong_field.json["field"] == "file"

    not_multipart = ctl.call("POST", "/v1/apps/upload", raw=app_zip("nm"), content_type="application/zip")
    assert not_multipart.status == 415

    uploaded(ctl, "dup", "1.0")
    dup = ctl.upload(app_zip("dup", "1.0"))
    assert dup.status == 409
    assert dup.json["field"] == "version"

    after = ctl.ok("GET", "/v1/apps")
    assert len(after) == len(before) + 1  # only "dup 1.0"
    files_after = sorted(p.name for p in (ctl.data_dir / "artifacts").iterdir())
    assert len(files_after) == len(files_before) + 1
    assert list((ctl.data_dir / "tmp").iterdir()) == []


def test_artifact_download_etag_and_no_traversal(ctl: ControllerProc) -> None:
    data = app_zip("dl", "1.0")
    app = ctl.upload(data).json
    assert ctl.call("GET", app["url"], token="agent").status == 403  # assigned to no node: the operator only
    ctl.heartbeat("dl-node")
    ctl.ok("POST", "/v1/deployments", {"name": "dl", "artifactId": app["artifactId"], "replicas": {"dl-node": 1}})
    reply = ctl.call("GET", app["url"], token="agent")
    assert reply.status == 200
    assert reply.body == data
    assert reply.headers["etag"] == f'"{app["sha256"]}"'
    assert reply.headers["content-type"] == "application/zip"
    assert int(reply.headers["content-length"]) == len(data)
    cached = ctl.call("GET", app["url"], token="agent", headers={"If-None-Match": reply.headers["etag"]})
    assert (cached.status, cached.body) == (304, b"")
    stale = ctl.call("GET", app["url"], token="agent", headers={"If-None-Match": '"0000"'})
    assert stale.status == 200
    head = ctl.call("HEAD", app["url"], token="agent")
    assert head.status == 200
    for path in (
        "/artifacts/",
        "/artifacts",
        "/artifacts/..",
        "/artifacts/../controller.db",
        "/artifacts/..%2fcontroller.db",
        "/artifacts/%2e%2e%2foperator.token",
        "/artifacts/..%2f..%2fetc%2fpasswd",
        "/artifacts/nope.zip",
        "/artifacts/.hidden",
    ):
        bad = ctl.call("GET", path, token="agent")
        assert bad.status == 404, (path, bad)
        assert b"controller" not in bad.body or b"no such" in bad.body


def test_image_app_and_delete_in_use(ctl: ControllerProc) -> None:
    nodes(ctl, "img-node")
    bad = ctl.call("POST", "/v1/apps/create-image", {"name": "img", "version": "1"})
    assert bad.status == 400
    assert bad.json["field"] == "imageRepository"
    bad_map = ctl.call(
        "POST",
        "/v1/apps/create-image",
        {"name": "img", "version": "1", "imageRepository": "nginx", "portMappings": [{"host": 99999, "container": 80}]},
    )
    assert bad_map.status == 400
    assert bad_map.json["field"] == "portMappings[0].host"
    app = ctl.ok(
        "POST",
        "/v1/apps/create-image",
        {
            "name": "img",
            "version": "1",
            "imageRepository": "nginx",
            "imageTag": "1.25",
            "portMappings": [{"host": 8081, "container": 80, "serviceName": "web"}],
        },
    )
    assert app["type"] == "image"
    assert app["url"] == ""
    assert json.loads(app["portMappings"]) == [{"container": 80, "host": 8081, "protocol": "tcp", "serviceName": "web"}]
    dup = ctl.call("POST", "/v1/apps/create-image", {"name": "img", "version": "1", "imageRepository": "nginx"})
    assert dup.status == 409
    dep = ctl.ok(
        "POST",
        "/v1/deployments",
        {"name": "img-dep", "entries": [{"artifactUrl": f"image://{app['artifactId']}", "replicas": {"img-node": 1}}]},
    )
    in_use = ctl.call("DELETE", f"/v1/apps/{app['artifactId']}")
    assert in_use.status == 409
    assert "img-dep" in in_use.json["error"]
    ctl.ok("POST", f"/v1/deployments/{dep['deploymentId']}?action=start")
    item = ctl.feed("img-node")[0]
    assert item["artifactType"] == "image"
    assert item["artifactUrl"] == f"image://{app['artifactId']}"
    assert (item["imageRepository"], item["imageTag"]) == ("nginx", "1.25")
    assert item["runtime"] == "docker"
    assert item["image"] == "nginx:1.25"
    assert ctl.call("DELETE", f"/v1/deployments/{dep['deploymentId']}").status == 204
    assert ctl.call("DELETE", f"/v1/apps/{app['artifactId']}").status == 204
    assert app["artifactId"] not in {a["artifactId"] for a in ctl.ok("GET", "/v1/apps")}
    assert ctl.call("DELETE", f"/v1/apps/{app['artifactId']}").status == 404


def test_zip_app_delete_in_use_then_free(ctl: ControllerProc) -> None:
    nodes(ctl, "zipdel-node")
    app = uploaded(ctl, "zipdel")
    dep = ctl.ok(
        "POST", "/v1/deployments", {"name": "zipdel", "artifactUrl": app["url"], "replicas": {"zipdel-node": 1}}
    )
    assert ctl.call("DELETE", f"/v1/apps/{app['artifactId']}").status == 409
    assert ctl.call("DELETE", f"/v1/deployments/{dep['deploymentId']}").status == 204
    assert ctl.call("DELETE", f"/v1/apps/{app['artifactId']}").status == 204
    assert not (ctl.data_dir / app["url"].lstrip("/")).exists()
    assert ctl.call("GET", app["url"], token="agent").status == 404


# --- deployments -----------------------------------------------------------------------------------


def test_deployment_lifecycle(ctl: ControllerProc) -> None:
    nodes(ctl, "life-a", "life-b")
    app = uploaded(ctl, "life")
    created = ctl.ok(
        "POST",
        "/v1/deployments",
        {
            "name": "life",
            "labels": {"team": "core"},
            "entries": [
                {
                    "artifactUrl": app["url"],
                    "startCmd": "./start.sh --port 8080",
                    "replicas": {"life-a": 2, "life-b": 1},
                    "runtime": "docker",
                    "image": "debian:12",
                    "env": {"MODE": "prod", "WORKERS": 4},
                    "memory": "256m",
                    "cpus": 0.5,
                    "networkMode": "bridge",
                    "restartPolicy": "on-failure",
                    "ports": [{"container": 8080}, "9000/udp"],
                }
            ],
        },
    )
    dep_id = created["deploymentId"]
    assert re.fullmatch(r"[0-9a-f]{32}", dep_id)
    assert len(created["instances"]) == 3
    assert all(i.startswith(dep_id + "-") for i in created["instances"])

    listed = {d["deploymentId"]: d for d in ctl.ok("GET", "/v1/deployments")}
    assert listed[dep_id] == {
        "deploymentId": dep_id,
        "name": "life",
        "labels": {"team": "core"},
        "status": "Stopped",
        "instances": 3,
        "rollout": None,  # it never rolled out a change
    }
    detail = ctl.ok("GET", f"/v1/deployments/{dep_id}")
    assert detail["deployment"] == {
        "DeploymentID": dep_id,
        "Name": "life",
        "Labels": {"team": "core"},
        "Status": "Stopped",
        # what Plum's web UI reads to offer Start or Stop
        "deploymentId": dep_id,
        "name": "life",
        "labels": {"team": "core"},
        "status": "Stopped",
        "rollout": None,
    }
    assert len(detail["assignments"]) == 3
    first = detail["assignments"][0]
    for key in (
        "instanceId",
        "deploymentId",
        "nodeId",
        "desired",
        "artifactUrl",
        "startCmd",
        "appName",
        "appVersion",
        "phase",
    ):
        assert key in first, key
    assert detail["entries"][0]["replicas"] == {"life-a": 2, "life-b": 1}

    assert {i["desired"] for i in ctl.feed("life-a")} == {"Stopped"}  # not started: nothing runs yet
    started = ctl.ok("POST", f"/v1/deployments/{dep_id}?action=start")
    assert started == {"deploymentId": dep_id, "status": "Running", "message": "Deployment started successfully"}
    feed_a = ctl.feed("life-a")
    assert len(feed_a) == 2
    item = feed_a[0]
    assert item["desired"] == "Running"
    assert item["artifactUrl"] == app["url"]
    assert item["artifactSha256"] == app["sha256"]
    assert item["appName"] == "life"
    assert item["appVersion"] == "1.0.0"
    assert item["artifactType"] == "zip"
    assert item["startCmd"] == "./start.sh --port 8080"
    assert item["runtime"] == "docker"
    assert item["image"] == "debian:12"
    assert item["env"] == {"MODE": "prod", "WORKERS": "4"}
    assert item["memory"] == "256m"
    assert item["memoryBytes"] == 256 * 1024 * 1024
    assert item["cpus"] == 0.5
    assert item["networkMode"] == "bridge"
    assert item["restartPolicy"] == "on-failure"
    assert item["ports"] == [{"container": 8080, "protocol": "tcp"}, {"container": 9000, "protocol": "udp"}]
    assert item["phase"] == ""
    assert len(ctl.feed("life-b")) == 1

    # scale up and down in place: same id, surviving instances kept
    original = {a["instanceId"] for a in ctl.ok("GET", f"/v1/deployments/{dep_id}")["assignments"]}
    patched = ctl.ok("PATCH", f"/v1/deployments/{dep_id}", {"replicas": {"life-a": 3}, "labels": {"team": "ops"}})
    assert patched["deployment"]["DeploymentID"] == dep_id
    assert patched["deployment"]["Labels"] == {"team": "ops"}
    ids_up = {a["instanceId"] for a in patched["assignments"]}
    assert original < ids_up
    assert len(ids_up) == 4
    assert len(ctl.feed("life-a")) == 3
    newest_a = [a["instanceId"] for a in patched["assignments"] if a["nodeId"] == "life-a"][-1]
    down = ctl.ok("PATCH", f"/v1/deployments/{dep_id}", {"replicas": {"life-a": 1, "life-b": 0}})
    ids_down = {a["instanceId"] for a in down["assignments"]}
    assert len(ids_down) == 1
    assert ids_down < original  # the oldest instance of life-a survived
    assert newest_a not in ids_down
    assert ctl.feed("life-b") == []
    assert {d["deploymentId"]: d["instances"] for d in ctl.ok("GET", "/v1/deployments")}[dep_id] == 1

    stopped = ctl.ok("POST", f"/v1/deployments/{dep_id}?action=stop")
    assert stopped["message"] == "Deployment stopped successfully"
    assert [(i["instanceId"], i["desired"]) for i in ctl.feed("life-a")] == [(i, "Stopped") for i in sorted(ids_down)]
    ctl.ok("POST", f"/v1/deployments/{dep_id}?action=start")
    assert [i["instanceId"] for i in ctl.feed("life-a")] == sorted(ids_down)

    assert ctl.call("DELETE", f"/v1/deployments/{dep_id}").status == 204
    assert ctl.call("GET", f"/v1/deployments/{dep_id}").status == 404
    assert ctl.feed("life-a") == []
    assert dep_id not in {d["deploymentId"] for d in ctl.ok("GET", "/v1/deployments")}


def test_legacy_single_entry_form_and_multi_entry_patch(ctl: ControllerProc) -> None:
    nodes(ctl, "legacy-a", "legacy-b")
    app1 = uploaded(ctl, "legacy1")
    app2 = uploaded(ctl, "legacy2")
    legacy = ctl.ok(
        "POST",
        "/v1/deployments",
        {"name": "legacy", "artifactUrl": app1["url"], "startCmd": "./start.sh", "replicas": {"legacy-a": 1}},
    )
    assert len(legacy["instances"]) == 1
    multi = ctl.ok(
        "POST",
        "/v1/deployments",
        {
            "name": "multi",
            "entries": [
                {"artifactUrl": app1["url"], "replicas": {"legacy-a": 1}},
                {"artifactId": app2["artifactId"], "replicas": {"legacy-b": 2}},
            ],
        },
    )
    dep_id = multi["deploymentId"]
    refused = ctl.call("PATCH", f"/v1/deployments/{dep_id}", {"replicas": {"legacy-a": 2}})
    assert refused.status == 400
    assert refused.json["field"] == "replicas"
    patched = ctl.ok(
        "PATCH", f"/v1/deployments/{dep_id}", {"entries": [{}, {"replicas": {"legacy-b": 1, "legacy-a": 1}}]}
    )
    assert [e["replicas"] for e in patched["entries"]] == [{"legacy-a": 1}, {"legacy-a": 1, "legacy-b": 1}]
    rename = ctl.call("PATCH", f"/v1/deployments/{dep_id}", {"name": "other"})
    assert rename.status == 400
    assert rename.json["field"] == "name"


def test_deployment_bad_input_is_400_and_nothing_half_written(ctl: ControllerProc) -> None:
    nodes(ctl, "bad-a")
    app = uploaded(ctl, "badinput")
    good = {"artifactUrl": app["url"], "replicas": {"bad-a": 1}}
    before = ctl.ok("GET", "/v1/deployments")
    cases = [
        (
            {"name": "x", "entries": [good, {"artifactUrl": app["url"], "replicas": {"ghost-node": 1}}]},
            "entries[1].replicas",
            "ghost-node",
        ),
        (
            {"name": "x", "entries": [{"artifactUrl": "/artifacts/missing_1_0000.zip", "replicas": {"bad-a": 1}}]},
            "entries[0].artifactUrl",
            "missing_1_0000.zip",
        ),
        (
            {"name": "x", "entries": [{"artifactUrl": "image://nope", "replicas": {"bad-a": 1}}]},
            "entries[0].artifactUrl",
            "image://nope",
        ),
        ({"entries": [good]}, "name", ""),
        ({"name": "x", "entries": []}, "entries", ""),
        ({"name": "x", "entries": [{"artifactUrl": app["url"]}]}, "entries[0].replicas", ""),
        ({"name": "x", "entries": [{**good, "replicas": {"bad-a": -1}}]}, "entries[0].replicas.bad-a", "-1"),
        ({"name": "x", "entries": [{**good, "replicas": {"bad-a": "2"}}]}, "entries[0].replicas.bad-a", "'2'"),
        ({"name": "x", "entries": [{**good, "runtime": "vm"}]}, "entries[0].runtime", "vm"),
        ({"name": "x", "entries": [{**good, "env": {"PLUM_INSTANCE_ID": "x"}}]}, "entries[0].env.PLUM_INSTANCE_ID", ""),
        ({"name": "x", "entries": [{**good, "env": {"A": {"b": 1}}}]}, "entries[0].env.A", ""),
        ({"name": "x", "entries": [{**good, "memory": "lots"}]}, "entries[0].memory", "lots"),
        ({"name": "x", "entries": [{**good, "memory": "5m"}]}, "entries[0].memory", "6 MiB"),
        ({"name": "x", "entries": [{**good, "image": "Upper/Case"}]}, "entries[0].image", "Upper/Case"),
        ({"name": "x", "entries": [{**good, "env": {"1A": "x"}}]}, "entries[0].env.1A", "1A"),
        (
            {"name": "x", "entries": [{**good, "networkMode": "host", "ports": [{"container": 80}]}]},
            "entries[0].ports",
            "host",
        ),
        ({"name": "x", "entries": [{**good, "ports": ["8080:80", "8080:81"]}]}, "entries[0].ports[1]", "twice"),
        ({"name": "x", "entries": [{**good, "cpus": 0}]}, "entries[0].cpus", "0"),
        ({"name": "x", "entries": [{**good, "networkMode": "overlay"}]}, "entries[0].networkMode", "overlay"),
        ({"name": "x", "entries": [{**good, "restartPolicy": "sometimes"}]}, "entries[0].restartPolicy", "sometimes"),
        ({"name": "x", "entries": [{**good, "ports": [{"host": 80}]}]}, "entries[0].ports[0].container", ""),
        (
            {"name": "x", "entries": [{**good, "replicas": {"bad-a": 2}, "ports": [{"host": 8080, "container": 80}]}]},
            "entries[0].replicas",
            "8080",
        ),
        ({"name": "x", "entries": [{**good, "replica": 1}]}, "entries[0].replica", ""),
        ({"name": "x", "entries": [good], "extra": True}, "extra", ""),
    ]
    for body, field, named in cases:
        reply = ctl.call("POST", "/v1/deployments", body)
        assert reply.status == 400, (body, reply)
        assert reply.json["field"] == field, (field, reply)
        assert named in reply.json["error"], (named, reply)
    taken = ctl.ok("POST", "/v1/deployments", {"name": "taken", "entries": [good]})["deploymentId"]
    dup = ctl.call("POST", "/v1/deployments", {"name": "taken", "entries": [good]})
    assert dup.status == 409
    assert dup.json["field"] == "name"
    after = ctl.ok("GET", "/v1/deployments")
    assert [d["name"] for d in after] == [d["name"] for d in before] + ["taken"]
    assert {i["deploymentId"] for i in ctl.feed("bad-a")} == {taken}  # nothing of the refused ones

    # a bad PATCH changes nothing either
    dep_id = next(d["deploymentId"] for d in after if d["name"] == "taken")
    snapshot = ctl.ok("GET", f"/v1/deployments/{dep_id}")
    for body, field in (
        ({"replicas": {"ghost": 2}}, "replicas"),
        ({"replicas": {"bad-a": 2}, "labels": "x"}, "labels"),
        ({"labels": {"ok": "1"}, "replicas": {"bad-a": 5000}}, "replicas.bad-a"),
        ({"scale": 2}, "scale"),
    ):
        reply = ctl.call("PATCH", f"/v1/deployments/{dep_id}", body)
        assert reply.status == 400, (body, reply)
        assert reply.json["field"] == field
    assert ctl.ok("GET", f"/v1/deployments/{dep_id}") == snapshot
    assert ctl.call("POST", f"/v1/deployments/{dep_id}?action=launch").status == 400
    assert ctl.call("POST", f"/v1/deployments/{dep_id}").json["field"] == "action"
    assert ctl.call("POST", "/v1/deployments/0000?action=start").status == 404
    assert ctl.call("PATCH", "/v1/deployments/0000", {"labels": {}}).status == 404
    assert ctl.call("DELETE", "/v1/deployments/0000").status == 404


def test_malformed_json_everywhere_is_400(ctl: ControllerProc) -> None:
    routes = [
        ("POST", "/v1/nodes/heartbeat", "agent"),
        ("POST", "/v1/instances/status", "agent"),
        ("POST", "/v1/services/register", "agent"),
        ("POST", "/v1/services/heartbeat", "agent"),
        ("POST", "/v1/deployments", "operator"),
        ("PATCH", "/v1/deployments/abc", "operator"),
        ("PATCH", "/v1/assignments/abc", "operator"),
        ("POST", "/v1/apps/create-image", "operator"),
        ("PUT", "/v1/services/endpoint", "operator"),
    ]
    for method, path, token in routes:
        for raw in (b"{bad json", b"", b"\xff\xfe", b"[1, 2]", b'"text"'):
            reply = ctl.call(method, path, raw=raw, token=token)
            assert reply.status == 400, (method, path, raw, reply)
            assert reply.headers["content-type"] == "application/json"
            assert reply.json["error"], reply


# --- assignments and instance status ---------------------------------------------------------------


def started_deployment(ctl: ControllerProc, name: str, replicas: dict[str, int]) -> tuple[str, list[str]]:
    nodes(ctl, *replicas)
    app = uploaded(ctl, name)
    dep = ctl.ok(
        "POST", "/v1/deployments", {"name": name, "entries": [{"artifactUrl": app["url"], "replicas": replicas}]}
    )
    ctl.ok("POST", f"/v1/deployments/{dep['deploymentId']}?action=start")
    return dep["deploymentId"], dep["instances"]


def test_assignment_patch_and_delete(ctl: ControllerProc) -> None:
    _, (first, second) = started_deployment(ctl, "asg", {"asg-node": 2})
    assert ctl.call("PATCH", f"/v1/assignments/{first}", {"desired": "Paused"}).json["field"] == "desired"
    assert ctl.call("PATCH", f"/v1/assignments/{first}", {"desired": "Stopped"}).status == 204
    desired = {i["instanceId"]: i["desired"] for i in ctl.feed("asg-node")}
    assert desired == {first: "Stopped", second: "Running"}
    assert ctl.call("DELETE", f"/v1/assignments/{second}").status == 204
    assert [i["instanceId"] for i in ctl.feed("asg-node")] == [first]
    assert ctl.call("DELETE", f"/v1/assignments/{second}").status == 404
    assert ctl.call("PATCH", "/v1/assignments/nope", {"desired": "Running"}).status == 404


def test_instance_status_and_bounded_history(ctl: ControllerProc) -> None:
    _, (iid,) = started_deployment(ctl, "status", {"status-node": 1})
    for body, field in (
        ({"instanceId": iid, "phase": "Sleeping"}, "phase"),
        ({"instanceId": iid}, "phase"),
        ({"phase": "Running"}, "instanceId"),
        ({"instanceId": iid, "phase": "Failed", "exitCode": "1"}, "exitCode"),
        ({"instanceId": iid, "phase": "Running", "restarts": -1}, "restarts"),
        ({"instanceId": iid, "phase": "Running", "healthy": "yes"}, "healthy"),
    ):
        reply = ctl.call("POST", "/v1/instances/status", body, token="agent")
        assert reply.status == 400, (body, reply)
        assert reply.json["field"] == field
    unknown = ctl.call("POST", "/v1/instances/status", {"instanceId": "ghost-1", "phase": "Running"}, token="agent")
    assert unknown.status == 404

    phases = ["Downloading", "Starting", "Running", "Failed", "BackOff", "Starting", "Running", "Stopped"]
    for n, phase in enumerate(phases):
        body = {"instanceId": iid, "phase": phase, "message": f"step {n}", "restarts": n, "tsUnix": time.time()}
        if phase == "Failed":
            body["exitCode"] = 3
        assert ctl.call("POST", "/v1/instances/status", body, token="agent").status == 204
    item = ctl.feed("status-node")[0]
    assert item["phase"] == "Stopped"
    assert item["message"] == "step 7"
    assert item["restarts"] == 7
    assert item["healthy"] is True
    assert abs(item["lastReportAt"] - time.time()) < 5
    history = ctl.ok("GET", f"/v1/instances/{iid}/statuses")["items"]
    assert [h["phase"] for h in history] == ["Stopped", "Running", "Starting", "BackOff", "Failed"]  # last 5
    assert history[-1]["exitCode"] == 3
    assert history[-2]["healthy"] is False  # BackOff


# --- SSE -------------------------------------------------------------------------------------------


def test_sse_stream_sends_update_after_a_change(ctl: ControllerProc) -> None:
    nodes(ctl, "sse-node")
    app = uploaded(ctl, "sse")
    dep = ctl.ok(
        "POST",
        "/v1/deployments",
        {"name": "sse", "entries": [{"artifactUrl": app["url"], "replicas": {"sse-node": 1}}]},
    )
    with socket.create_connection(("127.0.0.1", ctl.port), timeout=5) as sock:
        sock.sendall(
            f"GET /v1/stream?nodeId=sse-node HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ctl.agent}\r\n\r\n".encode()
        )
        head = read_until(sock, b"event: ping\ndata: init\n\n", 5)
        assert b"200" in head.split(b"\r\n", 1)[0]
        assert b"text/event-stream" in head
        ctl.ok("POST", f"/v1/deployments/{dep['deploymentId']}?action=start")
        read_until(sock, b"event: update\ndata: assignments\n\n", 5)
        # the change is committed before the nudge: the feed already has it
        assert len(ctl.feed("sse-node")) == 1


def test_sse_stream_needs_agent_token(ctl: ControllerProc) -> None:
    assert ctl.call("GET", "/v1/stream?nodeId=x", token=None).status == 401
    bad = ctl.call("GET", "/v1/stream?nodeId=bad%20id", token="agent")
    assert (bad.status, bad.json["field"]) == (400, "nodeId")


# --- services --------------------------------------------------------------------------------------


def test_services_register_discover_and_background_health(ctl: ControllerProc) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    live_port = server.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    try:
        t0 = time.monotonic()
        reply = ctl.call(
            "POST",
            "/v1/services/register",
            {
                "instanceId": "svc-1",
                "nodeId": "svc-node",
                "ip": "127.0.0.1",
                "endpoints": [
                    {"serviceName": "echo", "protocol": "tcp", "port": live_port},
                    {"serviceName": "echo", "protocol": "tcp", "port": dead_port},
                    {"serviceName": "metrics", "protocol": "udp", "port": 9125},
                ],
            },
            token="agent",
        )
        assert reply.status == 204
        assert time.monotonic() - t0 < 1.0  # no health check inside the request
        assert "echo" in ctl.ok("GET", "/v1/services/list", token="agent")

        def healthy_ports() -> set[int]:
            return {e["port"] for e in ctl.ok("GET", "/v1/discovery?service=echo", token="agent")}

        assert wait_until(lambda: healthy_ports() == {live_port}, 5, what="background check")
        everything = ctl.ok("GET", "/v1/discovery?service=echo&all=true", token="agent")
        assert {(e["port"], e["healthy"]) for e in everything} == {(live_port, True), (dead_port, False)}
        endpoint = everything[0]
        for key in (
            "serviceName",
            "instanceId",
            "nodeId",
            "ip",
            "port",
            "protocol",
            "version",
            "labels",
            "healthy",
            "lastSeen",
        ):
            assert key in endpoint
        assert ctl.ok("GET", "/v1/discovery?service=metrics", token="agent")[0]["port"] == 9125  # udp: trusted
        assert ctl.ok("GET", "/v1/discovery/random?service=echo", token="agent")["port"] == live_port
        lazy = ctl.ok("GET", "/v1/discovery/one?service=echo&strategy=lazy", token="agent")
        assert lazy["port"] == live_port
        assert ctl.call("GET", "/v1/discovery/one?service=echo&strategy=fastest", token="agent").status == 400
        assert ctl.call("GET", "/v1/discovery/random?service=nothing", token="agent").status == 404
        assert ctl.call("GET", "/v1/discovery", token="agent").json["field"] == "service"

        assert ctl.call("POST", "/v1/services/heartbeat", {"instanceId": "svc-1"}, token="agent").status == 204
        assert ctl.call("POST", "/v1/services/heartbeat", {"instanceId": "svc-none"}, token="agent").status == 404
        assert (
            ctl.call(
                "POST",
                "/v1/services/register",
                {"instanceId": "x", "ip": "127.0.0.1", "endpoints": [{"serviceName": "a", "port": 0}]},
                token="agent",
            ).json["field"]
            == "endpoints[0].port"
        )
        endpoint_query = f"service=echo&instanceId=svc-1&ip=127.0.0.1&port={live_port}&protocol=tcp"
        patch = ctl.call("PATCH", f"/v1/services/endpoint?{endpoint_query}", {"healthy": False})
        assert patch.status == 204
        assert healthy_ports() == set()

        # Plum's web UI sends the whole endpoint object back, as discovery listed it
        listed = next(
            e for e in ctl.ok("GET", "/v1/discovery?service=echo&all=true", token="agent") if e["port"] == live_port
        )
        whole = {**listed, "healthy": True, "version": "2.0", "lastSeen": 1}
        assert ctl.call("PATCH", f"/v1/services/endpoint?{endpoint_query}", whole).status == 204
        after = next(
            e for e in ctl.ok("GET", "/v1/discovery?service=echo&all=true", token="agent") if e["port"] == live_port
        )
        assert (after["healthy"], after["version"]) == (True, "2.0")
        assert after["lastSeen"] != 1  # the registry's own, never the client's
        for field, value in (("ip", "10.0.0.9"), ("port", live_port + 1), ("nodeId", "another-node")):
            moved = ctl.call("PATCH", f"/v1/services/endpoint?{endpoint_query}", {**whole, field: value})
            assert moved.status == 400 and moved.json["field"] == field, moved
            assert "does not match the endpoint being patched" in moved.json["error"]
        assert ctl.call("PUT", "/v1/services/endpoint", {**whole, "healthy": False}).status == 204
        assert healthy_ports() == set()
        assert ctl.call("DELETE", "/v1/services?instanceId=svc-1", token="agent").status == 204
        assert ctl.ok("GET", "/v1/discovery?service=echo&all=true", token="agent") == []
    finally:
        server.close()


def test_values_agents_would_refuse_are_refused_at_the_controller(ctl: ControllerProc) -> None:
    nodes(ctl, "strict-node")
    app = uploaded(ctl, "strict")
    bad_cmd = {
        "name": "strict",
        "entries": [{"artifactUrl": app["url"], "startCmd": "echo 'open", "replicas": {"strict-node": 1}}],
    }
    reply = ctl.call("POST", "/v1/deployments", bad_cmd)
    assert reply.status == 400 and reply.json["field"] == "entries[0].startCmd", reply
    image = ctl.call("POST", "/v1/apps/create-image", {"name": "up", "version": "1", "imageRepository": "Upper/Case"})
    assert image.status == 400 and image.json["field"] == "imageRepository", image


# --- answers match the document --------------------------------------------------------------------


def conforms(document: dict[str, Any], method: str, route: str, reply: Any) -> None:
    """``reply`` is what the document says ``method route`` answers with this status: the JSON body
    against the response schema (its $refs resolved in the document), else the declared media type."""
    responses = document["paths"][route][method.lower()]["responses"]
    assert str(reply.status) in responses, (method, route, reply.status, reply)
    content = responses[str(reply.status)].get("content")
    if content is None:
        assert reply.body == b"", (method, route, reply)
        return
    media = reply.headers["content-type"].split(";")[0]
    assert media in content, (method, route, media)
    if media == "application/json":
        schema = {**content[media]["schema"], "components": document["components"]}
        jsonschema.validate(reply.json, schema)


def test_live_answers_match_the_response_schemas(ctl: ControllerProc) -> None:
    doc = ctl.ok("GET", "/v1/openapi.json")
    checked: set[tuple[str, str]] = set()

    def call(method: str, route: str, path: str = "", body: Any = None, **kw: Any) -> Any:
        reply = ctl.call(method, path or route, body, **kw)
        conforms(doc, method, route, reply)
        checked.add((method, route))
        return reply.json if reply.body and reply.headers["content-type"] == "application/json" else None

    call("GET", "/healthz", token=None)
    call("GET", "/metrics")
    call("GET", "/v1/openapi.json")
    call("POST", "/v1/nodes/heartbeat", body={"nodeId": "doc-a", "labels": {"zone": "a"}}, token="agent")
    call("POST", "/v1/nodes/heartbeat", body={"nodeId": "doc a"}, token="agent")  # 400
    call("GET", "/v1/nodes")
    call("GET", "/v1/nodes/{id}", "/v1/nodes/doc-a")
    call("GET", "/v1/nodes/{id}", "/v1/nodes/doc-nobody")  # 404
    call("POST", "/v1/nodes/{id}/join", "/v1/nodes/doc-joiner/join", token="agent")
    zip_app = ctl.upload(app_zip("docapp", "1.0.0"))
    conforms(doc, "POST", "/v1/apps/upload", zip_app)
    image_app = call(
        "POST",
        "/v1/apps/create-image",
        body={"name": "docimg", "version": "1", "imageRepository": "nginx", "portMappings": [{"container": 80}]},
    )
    call("GET", "/v1/apps")
    call("GET", "/v1/apps/docker-images")
    entry = {"artifactUrl": zip_app.json["url"], "replicas": {"doc-a": 2}, "env": {"A": "1"}, "ports": ["9000/udp"]}
    created = call("POST", "/v1/deployments", body={"name": "doc-dep", "entries": [entry]})
    call("POST", "/v1/deployments", body={"name": "doc-dep", "entries": [entry]})  # 409
    dep = f"/v1/deployments/{created['deploymentId']}"
    call("GET", "/v1/deployments")
    call("POST", "/v1/deployments/{id}", f"{dep}?action=start")
    call("PATCH", "/v1/deployments/{id}", dep, body={"labels": {"team": "docs"}, "replicas": {"doc-a": 1}})
    call("GET", "/v1/deployments/{id}", f"{dep}?lost=true")
    feed = call("GET", "/v1/assignments", "/v1/assignments?nodeId=doc-a", token="agent")
    instance = feed["items"][0]["instanceId"]
    status = {"instanceId": instance, "phase": "Running", "restarts": 1, "exitCode": 0, "tsUnix": time.time()}
    call("POST", "/v1/instances/status", body=status, token="agent")
    call("GET", "/v1/instances/{id}/statuses", f"/v1/instances/{instance}/statuses")
    call("PATCH", "/v1/assignments/{id}", f"/v1/assignments/{instance}", body={"desired": "Stopped"})
    endpoints = [{"serviceName": "docsvc", "protocol": "udp", "port": 9000, "labels": {"v": "1"}}]
    register = {"instanceId": instance, "nodeId": "doc-a", "ip": "127.0.0.1", "endpoints": endpoints}
    call("POST", "/v1/services/register", body=register, token="agent")
    call("POST", "/v1/services/heartbeat", body={"instanceId": instance}, token="agent")
    call("GET", "/v1/services/list", token="agent")
    call("GET", "/v1/discovery", "/v1/discovery?service=docsvc", token="agent")
    call("GET", "/v1/discovery/random", "/v1/discovery/random?service=docsvc", token="agent")
    call("GET", "/v1/discovery/one", "/v1/discovery/one?service=docsvc&strategy=lazy", token="agent")
    call("GET", "/v1/discovery/one", "/v1/discovery/one?service=nobody", token="agent")  # 404
    key = f"service=docsvc&instanceId={instance}&ip=127.0.0.1&port=9000&protocol=udp"
    call("PATCH", "/v1/services/endpoint", f"/v1/services/endpoint?{key}", body={"version": "2"})
    call("DELETE", "/v1/services/endpoint", f"/v1/services/endpoint?{key}")
    call("DELETE", "/v1/services", f"/v1/services?instanceId={instance}", token="agent")
    call("DELETE", "/v1/assignments/{id}", f"/v1/assignments/{instance}")
    call("DELETE", "/v1/deployments/{id}", dep)
    call("DELETE", "/v1/apps/{id}", f"/v1/apps/{image_app['artifactId']}")
    call("DELETE", "/v1/nodes/{id}/credential", "/v1/nodes/doc-joiner/credential")
    call("GET", "/v1/nodes", token="agent")  # 403
    assert len({route for _, route in checked}) >= 25
