"""Following the controller: heartbeats, assignments and status reports (CONTROLLER_BASE set).

Three independent tasks, so slow work never delays a heartbeat (a defect of the reference):
- heartbeat: POST /v1/nodes/heartbeat on its own timer;
- watch: the SSE stream /v1/stream?nodeId=..., whose `update` events nudge the sync;
- sync: GET /v1/assignments on each nudge and on a periodic safety poll, then apply the items
  through the supervisor, as apps owned by the controller (named after the instance id).
Status reports go out when an instance's phase, exit code or message changes, never every round.
The services an instance declares in meta.ini are registered while it runs, heartbeated on the
heartbeat timer by a task of their own, and deregistered when it stops or goes away.
If the controller is unreachable, apps keep running and every task retries with backoff.

The feed carries the controller database's identity (``controllerId``). The agent follows one
identity, kept in AGENT_DATA_DIR/controller-id; a feed from another one (the controller's database
was emptied, lost or replaced) is not applied: every instance keeps running with its data, the
mismatch is logged and shown in /healthz, and an operator accepts the new database by removing
that file (see ControllerIdentity).

Every call carries this node's own token, from its join (see plum.agent.credential); the calls
wait while the agent joins, and a call refused with 401 (the credential revoked, or the
controller's database replaced) makes it join again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote, urlsplit

from plum.agent.config import AgentConfig
from plum.agent.credential import NodeCredential
from plum.agent.spec import SpecError
from plum.agent.state import AppRecord
from plum.agent.supervisor import Supervisor, Upload
from plum.common import fsio
from plum.common.artifact import APP_NAME_PATTERN, ArtifactError
from plum.common.httpclient import ClientError, HTTPClient, sse_events
from plum.common.streams import save_stream
from plum.common.vocab import ControllerDesired, Desired, Owner, Phase

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
FOLLOWED_FILE = "controller-id"
HOLD_LOG_INTERVAL = 60.0  # a hold is logged when it starts, then at most once a minute
IDENTITY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}")
DOCKER_FIELDS = {"memory": "memory", "cpus": "cpus", "networkMode": "network_mode", "ports": "ports"}


def spec_from_assignment(item: dict[str, Any]) -> dict[str, Any]:
    """The agent spec for one assignment (the deployment entry's runtime settings)."""
    spec: dict[str, Any] = {}
    if item.get("startCmd"):
        spec["start_cmd"] = item["startCmd"]
    if item.get("env"):
        spec["env"] = item["env"]
    if item.get("restartPolicy"):
        spec["restart_policy"] = item["restartPolicy"]
    if item.get("artifactType") == "image":
        spec["image"] = item.get("image") or f"{item.get('imageRepository')}:{item.get('imageTag')}"
        if not item.get("ports") and item.get("portMappings"):  # the image app's own mappings (Plum)
            with contextlib.suppress(ValueError, TypeError):
                spec["ports"] = json.loads(item["portMappings"])
    else:
        if item.get("runtime"):
            spec["runtime"] = item["runtime"]
        if item.get("image"):  # a zip app's image is the base image it runs in
            spec["base_image"] = item["image"]
    for key, field in DOCKER_FIELDS.items():
        if item.get(key) not in (None, "", []):
            spec[field] = item[key]
    return spec


def item_key(item: dict[str, Any]) -> dict[str, Any]:
    """What identifies an assignment's content: the same key means the same artifact and settings."""
    return {"sha": item.get("artifactSha256"), "spec": spec_from_assignment(item), "desired": item.get("desired")}


def endpoints_of(record: AppRecord) -> list[dict[str, Any]]:
    """The service endpoints of a running instance, from its meta.ini `service=` lines."""
    if record.phase is not Phase.RUNNING:
        return []
    services = record.meta.services if record.meta else ()
    return [{"serviceName": s.name, "protocol": s.protocol, "port": s.port} for s in services]


def status_payload(record: AppRecord) -> dict[str, Any]:
    return {
        "instanceId": record.instance_id,
        "phase": record.phase,
        "exitCode": record.exit_code,
        "healthy": record.phase in (Phase.RUNNING, Phase.COMPLETED),
        "message": record.message[:2000],
        "restarts": record.restarts,
        "tsUnix": int(time.time()),
    }


@dataclass
class Hold:
    followed: str
    served: str
    since: float  # wall clock, for the operator
    instances: int


class ControllerIdentity:
    """Which controller database this agent follows, and the hold while another one answers.

    - No identity on record (a new agent, the first start after an upgrade, or an operator removed
      the file): the agent follows the database that answers and records it.
    - The recorded one: the feed is applied, scale-downs to zero and failover moves included.
    - Another one, while this node has controller instances: the feed is NOT applied (nothing
      stopped, removed or started) until the controller answers with the recorded identity again
      (its backup restored) or an operator removes the file, accepting the database that answers.
      With no controller instance here there is nothing to protect: the new one is followed.
    - No identity in the feed (a controller that does not serve one, such as Plum's): followed as before.
    """

    def __init__(self, path: Path, controller: str) -> None:
        self.path = path
        self.controller = controller
        self.followed = self._load()
        self.hold: Optional[Hold] = None
        self._saved = self.followed is not None
        self._logged_at = -math.inf

    def _load(self) -> Optional[str]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:  # unknown: safer to hold than to follow whatever answers
            log.error("cannot read %s (%s): holding controller instances until it is readable", self.path, exc)
            return f"unreadable {self.path.name}"
        return text if IDENTITY_RE.fullmatch(text) else f"unreadable {self.path.name}"

    async def admits(self, served: Any, instances: int) -> bool:
        """Whether a feed from database ``served`` may be applied to this node's ``instances``."""
        if not isinstance(served, str) or not IDENTITY_RE.fullmatch(served):
            return True
        if self.hold is not None and not self._saved:  # the file was never written: write it before any
            await self._save()  # missing file can be read as the operator's consent
        consent = self.hold is not None and self._saved and not await asyncio.to_thread(self.path.exists)
        if self.followed is None or consent:
            if self.hold is not None:
                log.warning("%s was removed: following controller database %s from now on", self.path, served)
            else:
                log.info("following controller database %s", served)
            self.followed, self.hold, self._saved = served, None, False
        elif served != self.followed and instances == 0:  # nothing here to protect: no hold needed
            log.warning(
                "controller database changed from %s to %s; no controller instance here: following it",
                self.followed,
                served,
            )
            self.followed, self.hold, self._saved = served, None, False
        if served == self.followed:
            if self.hold is not None:
                log.warning("controller database %s answers again: applying its feed", served)
                self.hold = None
            if not self._saved:
                await self._save()
            return True
        if self.hold is None or self.hold.served != served:
            self.hold = Hold(self.followed, served, time.time(), instances)
            self._logged_at = -math.inf
        self.hold.instances = instances
        if time.monotonic() - self._logged_at >= HOLD_LOG_INTERVAL:
            self._logged_at = time.monotonic()
            log.error("%s", self.hold_message())
        return False

    async def _save(self) -> None:
        assert self.followed is not None
        data = (self.followed + "\n").encode()
        try:
            await asyncio.to_thread(fsio.write_atomic, self.path, data, mode=0o600)
            self._saved = True
        except fsio.StorageError as exc:  # followed in memory; saved again on the next feed
            log.warning("%s", exc.message)

    def hold_message(self) -> str:
        assert self.hold is not None
        return (
            f"controller {self.controller} answers with database {self.hold.served}, but this agent follows "
            f"database {self.hold.followed}: its feed is not applied and the {self.hold.instances} controller "
            f"instance(s) here keep running with their data; restore the controller's backup, or accept the "
            f"new database by removing {self.path}"
        )

    def status(self) -> dict[str, Any]:
        if self.hold is None:
            return {"state": "following", "controllerId": self.followed}
        return {
            "state": "held",
            "controllerId": self.hold.followed,
            "servedControllerId": self.hold.served,
            "since": int(self.hold.since),
            "instances": self.hold.instances,
            "message": self.hold_message(),
        }


class ControllerSync:
    def __init__(self, config: AgentConfig, supervisor: Supervisor) -> None:
        assert config.controller_base is not None
        self.config = config
        self.supervisor = supervisor
        self.credential = NodeCredential(
            config.data_dir, config.node_id, config.controller_base, config.controller_token
        )
        self.client = HTTPClient(config.controller_base, self.credential.token, timeout=10.0)
        self.heartbeat_interval = config.sync_interval
        self.nudge = asyncio.Event()
        self.reported: dict[str, tuple[Any, ...]] = {}
        self.pending: dict[str, dict[str, Any]] = {}
        self.pending_event = asyncio.Event()
        self.refused: dict[str, str] = {}  # instance -> the assignment it failed with: not retried as is
        self._registry_refusals: set[tuple[str, str, int]] = set()  # (instance, method, status) logged once
        self._orphans_logged_at = -math.inf
        self.endpoints_wanted: dict[str, list[dict[str, Any]]] = {}
        self.endpoints_registered: dict[str, list[dict[str, Any]]] = {}
        self.services_event = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.synced_once = asyncio.Event()
        self.identity = ControllerIdentity(config.data_dir / FOLLOWED_FILE, config.controller_base)
        self.not_held = asyncio.Event()  # cleared while the identity holds: no reports, no services
        self.not_held.set()
        supervisor.listeners.append(self._on_change)

    def start(self) -> None:
        for app in self.supervisor.apps.values():  # what the controller last heard may be stale
            self._on_change(app.record)
        for loop_fn in (
            self.credential.run,
            self._heartbeat_loop,
            self._watch_loop,
            self._sync_loop,
            self._report_loop,
            self._services_loop,
        ):
            self.tasks.append(asyncio.ensure_future(self._forever(loop_fn)))

    @staticmethod
    async def _forever(loop_fn: Any) -> None:
        """Run a loop for the agent's lifetime: an unexpected error is logged, never the end of the task."""
        while True:
            try:
                await loop_fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; restarting it in 1 s", loop_fn.__name__)
                await asyncio.sleep(1)

    def status(self) -> dict[str, Any]:
        """For /healthz: which controller database is followed, or why its feed is held."""
        return {
            "base": self.config.controller_base,
            **self.identity.status(),
            "nodeCredential": self.credential.status(),
            **({"orphans": sorted(self.orphans), "orphansMessage": self.orphans_message()} if self.orphans else {}),
        }

    def _note_orphans(self, wanted: dict[str, dict[str, Any]], removed: Optional[set[str]]) -> None:
        """Controller instances the feed neither lists nor names as removed: kept running, and reported.

        The controller forgot them without removing them (a database restored from an older backup, a
        tombstone pruned while this agent was away): removing them would lose work nobody asked to
        lose. An operator removes one with the agent's own API (plumctl rm), which is then allowed."""
        present = {name for name, app in self.supervisor.apps.items() if app.record.owner is Owner.CONTROLLER}
        self.supervisor.released = set() if removed is None else present - set(wanted) - removed
        if self.orphans and time.monotonic() - self._orphans_logged_at >= HOLD_LOG_INTERVAL:
            self._orphans_logged_at = time.monotonic()
            log.error("%s", self.orphans_message())

    @property
    def orphans(self) -> set[str]:
        """The supervisor keeps them: they are the ones its local API may remove."""
        return self.supervisor.released

    def orphans_message(self) -> str:
        names = ", ".join(sorted(self.orphans))
        return (
            f"controller {self.config.controller_base} no longer lists instance(s) {names} but did not remove "
            "them: they keep running with their data; deploy them again through the controller, or remove "
            "them here with plumctl rm NAME"
        )

    def controller_instances(self) -> int:
        """Instances the controller may own here; an app whose record was lost might be one of them."""
        return sum(1 for app in self.supervisor.apps.values() if app.record.owner is Owner.CONTROLLER or app.lost)

    def advertised_ip(self) -> str:
        """AGENT_IP, else the address this host uses to reach the controller."""
        return self.config.advertise_ip or self.client.local_ip or "127.0.0.1"

    async def call(self, method: str, path: str, payload: Any = None) -> Any:
        """A call with this node's token, once it has one; a refused token makes the agent join again."""
        token = await self.authorized()
        try:
            return await self.client.call(method, path, payload)
        except ClientError as exc:
            self.credential.refused(token, exc)
            raise

    async def authorized(self) -> Optional[str]:
        """Wait for a usable token and put it on the client; returns it."""
        await self.credential.ready.wait()
        self.client.token = self.credential.token
        return self.client.token

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # ---- heartbeat ------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        failing = False
        while True:
            body = {"nodeId": self.config.node_id}
            if self.config.advertise_ip:  # else the controller records the address it sees
                body["ip"] = self.config.advertise_ip
            try:
                answer = await self.call("POST", "/v1/nodes/heartbeat", body)
                interval = (answer or {}).get("heartbeatIntervalSec")
                if isinstance(interval, (int, float)) and 0.1 <= interval <= 3600:
                    self.heartbeat_interval = float(interval)
                if failing:
                    log.info("controller %s answers heartbeats again", self.config.controller_base)
                    self.nudge.set()  # catch up on what changed meanwhile
                    self._report_everything()
                failing = False
            except ClientError as exc:
                if not failing:
                    log.warning("heartbeat failed (apps keep running; retrying): %s", exc)
                failing = True
            await asyncio.sleep(self.heartbeat_interval)

    # ---- SSE nudges -----------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        backoff = 1.0
        path = f"/v1/stream?nodeId={quote(self.config.node_id)}"
        while True:
            token = await self.authorized()
            try:
                async with self.client.stream("GET", path, headers={"accept": "text/event-stream"}) as response:
                    if response.status != 200:
                        raise ClientError(f"event stream answered {response.status}", response.status)
                    backoff = 1.0
                    self.nudge.set()  # (re)connected: something may have changed while we were away
                    async for event, _ in sse_events(response.chunks):
                        if event in ("update", "ping"):
                            self.nudge.set()
            except ClientError as exc:
                self.credential.refused(token, exc)
                log.debug("event stream: %s", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    # ---- assignments ----------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        failures = 0
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.nudge.wait(), self.config.sync_interval)
            self.nudge.clear()
            try:
                answer = await self.call("GET", f"/v1/assignments?nodeId={quote(self.config.node_id)}")
                failures = 0
                if not await self.identity.admits((answer or {}).get("controllerId"), self.controller_instances()):
                    self.not_held.clear()
                    continue
                self.not_held.set()
                removed = (answer or {}).get("removed")
                await self.reconcile(
                    list((answer or {}).get("items") or []),
                    None if removed is None else {str(name) for name in removed if isinstance(name, str)},
                )
                self.synced_once.set()
            except ClientError as exc:
                failures += 1
                if failures == 1:
                    log.warning("cannot fetch assignments (apps keep running; retrying): %s", exc)
                # back off, but retry at once when the heartbeat or the stream sees the controller again
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.nudge.wait(), min(2.0**failures, MAX_BACKOFF))

    async def reconcile(self, items: list[dict[str, Any]], removed: Optional[set[str]] = None) -> None:
        """Apply a feed. ``removed``: the instances the controller says it removed (None from a controller
        that does not say, such as Plum's: then an instance missing from the feed is removed)."""
        wanted: dict[str, dict[str, Any]] = {}
        for item in items:
            instance_id = str(item.get("instanceId") or "")
            if not re.fullmatch(APP_NAME_PATTERN, instance_id):
                log.error("ignoring assignment with an unusable instance id %r", instance_id)
                continue
            wanted[instance_id] = item
        self._note_orphans(wanted, removed)
        for name, app in list(self.supervisor.apps.items()):
            gone = app.record.owner is Owner.CONTROLLER and name not in wanted and name not in self.orphans
            if gone or (app.lost and removed is not None and name in removed):  # a lost record the controller removed
                log.info("instance %s is no longer assigned to this node: removing it", name)
                try:
                    await self.supervisor.remove(name)
                except Exception:
                    log.exception("cannot remove instance %s; retrying on the next round", name)
                    continue
                self.reported.pop(name, None)
                self._want_endpoints(name, [])
                self._queue(
                    name, {"instanceId": name, "phase": Phase.STOPPED, "healthy": True, "tsUnix": int(time.time())}
                )
        for name in set(self.refused) - set(wanted):
            del self.refused[name]
        for name, item in wanted.items():
            key = json.dumps(item_key(item), sort_keys=True)
            if self.refused.get(name) == key:
                continue  # refused as it is (bad artifact or settings): wait for the assignment to change
            try:
                await self.apply(name, item)
                self.refused.pop(name, None)
            except (ArtifactError, SpecError) as exc:
                self.refused[name] = key
                self._report_failure(name, item, exc.message)
            except ClientError as exc:  # the controller or the network: retried next round
                self._report_failure(name, item, f"download failed: {exc}")
            except Exception as exc:  # one bad item must not stop the others, nor the sync
                log.exception("cannot apply instance %s", name)
                self._report_failure(name, item, f"agent error: {exc}")

    async def apply(self, name: str, item: dict[str, Any]) -> None:
        app = self.supervisor.apps.get(name)
        if item.get("desired") != ControllerDesired.RUNNING:
            if app is not None and (app.record.desired is Desired.RUNNING or app.handle is not None):
                await self.supervisor.stop(name)  # stopped, not removed: data and release stay
            return
        spec = spec_from_assignment(item)
        upload = None
        sha = str(item.get("artifactSha256") or "")
        if item.get("artifactType") != "image" and (app is None or app.record.artifact_sha256 != sha):
            upload = await self.fetch(name, item)
        await self.supervisor.deploy(name, upload, spec, start=True, owner=Owner.CONTROLLER, instance_id=name)

    async def fetch(self, name: str, item: dict[str, Any]) -> Upload:
        """The assignment's artifact: from the local cache by sha256, else streamed from the controller."""
        sha = str(item.get("artifactSha256") or "")
        tmp = self.supervisor.tmp_dir / f"download-{os.urandom(8).hex()}.zip"
        cached = self.supervisor.artifacts_dir / f"{sha}.zip"
        if sha and cached.exists():
            os.link(cached, tmp)  # deploy consumes the upload; the cache keeps its copy
            return Upload(tmp, sha)
        self.reported[name] = (Phase.DOWNLOADING, None, "", 0)
        self._queue(name, {"instanceId": name, "phase": Phase.DOWNLOADING, "healthy": True, "tsUnix": int(time.time())})
        url = str(item.get("artifactUrl") or "")
        path = url if url.startswith("/") else urlsplit(url).path
        if not path:
            raise ArtifactError(f"assignment has no artifact URL: {url!r}", field="artifactUrl")

        def too_large(limit: int) -> ArtifactError:
            return ArtifactError(f"artifact larger than {limit} bytes (AGENT_MAX_ARTIFACT_BYTES)")

        token = await self.authorized()
        async with self.client.stream("GET", path) as response:
            if response.status != 200:
                exc = ClientError(f"GET {path}: {response.status}", response.status)
                self.credential.refused(token, exc)
                raise exc
            saved, got, _ = await save_stream(
                response.chunks, self.supervisor.tmp_dir, self.config.max_artifact_bytes, too_large
            )
        if sha and got != sha:
            saved.unlink(missing_ok=True)
            raise ArtifactError(f"artifact checksum mismatch: expected sha256 {sha}, downloaded {got}")
        return Upload(saved, got)

    # ---- status reports -------------------------------------------------------------------

    def _on_change(self, record: AppRecord) -> None:
        if record.owner is not Owner.CONTROLLER:
            return
        self._want_endpoints(record.name, endpoints_of(record))
        key = (record.phase, record.exit_code, record.message, record.restarts)
        if self.reported.get(record.name) == key:
            return
        self.reported[record.name] = key
        self._queue(record.name, status_payload(record))

    def _report_everything(self) -> None:
        """Send every instance's state again: a controller that was away may have come back with an
        older database (a restored backup) that never saw the last reports."""
        for app in list(self.supervisor.apps.values()):
            self.reported.pop(app.name, None)
            self._on_change(app.record)

    def _report_failure(self, name: str, item: dict[str, Any], message: str) -> None:
        log.warning("instance %s: %s", name, message)
        key = (Phase.FAILED, None, message, 0)
        if self.reported.get(name) != key:
            self.reported[name] = key
            payload = {"instanceId": name, "phase": Phase.FAILED, "healthy": False, "message": message[:2000]}
            self._queue(name, {**payload, "tsUnix": int(time.time())})

    def _queue(self, name: str, payload: dict[str, Any]) -> None:
        self.pending[name] = payload  # only the newest state of an instance matters
        self.pending_event.set()

    # ---- services ---------------------------------------------------------------------------

    def _want_endpoints(self, name: str, endpoints: list[dict[str, Any]]) -> None:
        if self.endpoints_wanted.get(name, []) == endpoints:
            return
        if endpoints:
            self.endpoints_wanted[name] = endpoints
        else:
            self.endpoints_wanted.pop(name, None)
        self.services_event.set()

    async def _services_loop(self) -> None:
        """Register what runs, deregister what stopped, heartbeat the rest: one pass per timer tick.

        Only after the first sync: until then the agent may still hold instances the controller moved
        away (failover) while this node was silent, and they must not be published again."""
        await self.synced_once.wait()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.services_event.wait(), self.heartbeat_interval)
            self.services_event.clear()
            await self.not_held.wait()  # never publish held instances in another database's registry
            try:
                await self._sync_services()
            except ClientError as exc:
                log.debug("service registry: %s", exc)

    async def _sync_services(self) -> None:
        """One call per instance. A refusal (4xx) is logged and only that instance waits for the next
        pass; the controller being unreachable ends the pass (every call would fail alike)."""
        for name in list(self.endpoints_registered):
            if name not in self.endpoints_wanted:
                refused = await self._registry_call(name, "DELETE", f"/v1/services?instanceId={quote(name)}")
                if refused in (None, 404):  # deregistered, or nothing left to deregister
                    del self.endpoints_registered[name]
        for name, endpoints in list(self.endpoints_wanted.items()):
            if self.endpoints_registered.get(name) != endpoints:
                payload = {
                    "instanceId": name,
                    "nodeId": self.config.node_id,
                    "ip": self.advertised_ip(),
                    "endpoints": endpoints,
                }
                if await self._registry_call(name, "POST", "/v1/services/register?replace=true", payload) is None:
                    self.endpoints_registered[name] = endpoints
            elif await self._registry_call(name, "POST", "/v1/services/heartbeat", {"instanceId": name}) == 404:
                # the registry lost them (an endpoint deleted, a database restored): register again next pass
                del self.endpoints_registered[name]

    async def _registry_call(self, name: str, method: str, path: str, payload: Any = None) -> Optional[int]:
        """None when the registry took the call, else the status it refused it with."""
        try:
            await self.call(method, path, payload)
        except ClientError as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 401:
                raise
            if (name, method, exc.status) not in self._registry_refusals:  # once, not on every pass
                self._registry_refusals.add((name, method, exc.status))
                log.warning("service registry refused %s of instance %s: %s", method, name, exc)
            return exc.status
        self._registry_refusals -= {r for r in self._registry_refusals if r[0] == name}
        return None

    async def _report_loop(self) -> None:
        backoff = 1.0
        while True:
            await self.pending_event.wait()
            self.pending_event.clear()
            while self.pending:
                await self.not_held.wait()  # the database that answers does not know these instances
                name, payload = next(iter(self.pending.items()))
                try:
                    await self.call("POST", "/v1/instances/status", payload)
                except ClientError as exc:
                    if exc.status is not None and 400 <= exc.status < 500 and exc.status != 401:
                        log.warning("controller refused the status of %s: %s", name, exc)
                    else:
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, MAX_BACKOFF)
                        continue
                backoff = 1.0
                if self.pending.get(name) is payload:
                    del self.pending[name]
