"""A fake Docker engine for the Docker runtime's unit tests: the APIClient calls the runtime makes, in memory.

It can go down and come back (every client call then fails as the SDK's would, with a requests
ConnectionError), end its event streams (a restarted dockerd), and refuse stops or removals with the
SDK's own APIError, so the runtime's error paths run without a real engine.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import docker
import requests

from plum.agent.runtimes.docker import plan as planning
from plum.agent.runtimes.docker.engine import LABEL_MANAGED, LABEL_NODE, EngineUnavailable

IMAGE_ID = "sha256:fake-image"


class FakeStream:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.events: queue.Queue[Optional[dict[str, Any]]] = queue.Queue()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            event = self.events.get()
            if event is None:  # the engine went away: the stream ends
                return
            yield event

    def close(self) -> None:
        self.events.put(None)


class FakeClient:
    api_version = "1.41"

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.closed = False

    def _answer(self) -> None:
        if not self.engine.up:
            raise requests.exceptions.ConnectionError("the fake engine is down")
        self.engine.calls += 1

    def close(self) -> None:
        self.closed = True

    def info(self) -> dict[str, Any]:
        self._answer()
        return {"NCPU": 4}

    def events(self, **_: Any) -> FakeStream:
        self._answer()
        stream = FakeStream(self)
        self.engine.streams.append(stream)
        return stream

    def containers(self, **kwargs: Any) -> list[dict[str, Any]]:
        self._answer()
        wanted = dict(item.split("=", 1) for item in kwargs["filters"]["label"])
        with self.engine.lock:
            found = list(self.engine.containers.values())
        return [dict(c) for c in found if all(c["Labels"].get(k) == v for k, v in wanted.items())]

    def inspect_container(self, cid: str) -> dict[str, Any]:
        self._answer()
        container = self.engine.containers.get(cid)
        if container is None:
            raise docker.errors.NotFound(f"no such container: {cid}")
        running = container["State"] == "running"
        return {
            "Name": container["Names"][0],
            "Image": container.get("Image", IMAGE_ID),
            "Config": {"Labels": dict(container["Labels"])},
            "State": {"Running": running, "ExitCode": 0 if running else 1, "Pid": 0},
            "NetworkSettings": {},
        }

    def inspect_image(self, image: str) -> dict[str, Any]:
        self._answer()
        return {"Id": IMAGE_ID}

    def create_host_config(self, **config: Any) -> dict[str, Any]:
        return config

    def create_container(self, image: str, *, name: str, labels: dict[str, str], **_: Any) -> dict[str, str]:
        self._answer()
        cid = f"new{len(self.engine.created)}"
        self.engine.created.append(cid)
        self.engine.add(cid, labels[planning.LABEL_APP], labels[planning.LABEL_INSTANCE], state="created")
        self.engine.containers[cid]["Labels"] = dict(labels)
        self.engine.containers[cid]["Names"] = [f"/{name}"]
        return {"Id": cid}

    def start(self, cid: str) -> None:
        self._answer()
        if cid not in self.engine.containers:
            raise docker.errors.NotFound(f"no such container: {cid}")
        self.engine.containers[cid]["State"] = "running"
        self.engine.started.append(cid)

    def stop(self, cid: str, timeout: int = 10) -> None:
        self._answer()
        if self.engine.stop_error is not None:
            raise self.engine.stop_error
        if cid not in self.engine.containers:
            raise docker.errors.NotFound(f"no such container: {cid}")
        self.engine.containers[cid]["State"] = "exited"

    def remove_container(self, cid: str, force: bool = False) -> None:
        self._answer()
        if self.engine.remove_error is not None:
            raise self.engine.remove_error
        with self.engine.lock:
            if self.engine.containers.pop(cid, None) is None:
                raise docker.errors.NotFound(f"no such container: {cid}")
        self.engine.removed.append(cid)

    def logs(self, cid: str, **kwargs: Any) -> bytes:
        self._answer()
        time.sleep(self.engine.logs_delay)
        lines = [f"{cid} line {i}" for i in range(1, 6)]
        return "".join(line + "\n" for line in lines[-kwargs.get("tail", 5) :]).encode()


class FakeEngine:
    def __init__(self, node: str = "n1") -> None:
        self.node = node
        self.up = True
        self.calls = 0
        self.lock = threading.Lock()
        self.containers: dict[str, dict[str, Any]] = {}
        self.clients: list[FakeClient] = []
        self.streams: list[FakeStream] = []
        self.removed: list[str] = []
        self.created: list[str] = []  # containers created, in order
        self.started: list[str] = []  # containers started, in order (a start again too)
        self.stop_error: Optional[Exception] = None
        self.remove_error: Optional[Exception] = None
        self.logs_delay = 0.0

    def add(
        self,
        cid: str,
        app: str,
        instance: str,
        *,
        node: str = "",
        state: str = "running",
        spec: str = "",
        age: float = 3600.0,
    ) -> None:
        """A container of this engine, created age seconds ago (by default long past any grace)."""
        labels = {
            LABEL_MANAGED: "true",
            LABEL_NODE: node or self.node,
            planning.LABEL_APP: app,
            planning.LABEL_INSTANCE: instance,
            planning.LABEL_SPEC: spec,
        }
        with self.lock:
            self.containers[cid] = {
                "Id": cid,
                "Names": [f"/plum-{node or self.node}-{app}-{cid}"],
                "State": state,
                "Status": "Up 1 second" if state == "running" else "Exited (1)",
                "Created": time.time() - age,
                "Labels": labels,
                "ImageID": IMAGE_ID,
                "Ports": [],
            }

    def new_client(self, timeout: int = 30) -> FakeClient:
        """Engine.new_client: the SDK checks the engine's version first, so a down engine fails here."""
        if not self.up:
            raise EngineUnavailable("the fake engine does not answer")
        client = FakeClient(self)
        self.clients.append(client)
        return client

    def down(self) -> None:
        self.up = False
        for stream in self.streams:
            stream.close()

    def die(self, cid: str, exit_code: Optional[int] = 1) -> None:
        """The container's process ends by itself: the die event (with its exit code, as the engine sends it,
        unless None) on every open stream."""
        self.containers[cid]["State"] = "exited"
        attributes = {} if exit_code is None else {"exitCode": str(exit_code)}
        for stream in self.streams:
            stream.events.put({"Action": "die", "id": cid, "Actor": {"ID": cid, "Attributes": attributes}})

    def restart(self) -> None:
        """dockerd restarting with live-restore: event streams break, containers survive."""
        for stream in self.streams:
            stream.close()


def api_error(message: str, status: int = 500) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(message, response=response, explanation=message)
