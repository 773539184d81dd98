"""Keeps every app in its desired state: deploy, start, stop, restart on exit, re-adopt on boot.

All state changes happen on the event loop; one asyncio.Lock per app serialises the operations on
it (deploy, start, stop, remove, a pending restart), so a crash-restart never races a deploy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from plum.agent import logfiles
from plum.agent.appenv import base_env
from plum.agent.config import AgentConfig
from plum.agent.restart import RestartTracker
from plum.agent.runtimes.base import ExitInfo, Handle, Launch, Runtime, StartError
from plum.agent.runtimes.docker_resources import image_tag
from plum.agent.spec import AppSpec, SpecError, parse_spec
from plum.agent.state import AppRecord
from plum.common.artifact import AppMeta, ArtifactError, Service, extract_zip, parse_meta_ini, validate_app_name

log = logging.getLogger(__name__)

ACTIVE_PHASES = ("Starting", "Running", "BackOff")
LOG_TAIL_ON_EXIT = 20
LOG_ROTATE_EVERY = 10.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class AppNotFound(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.message = f"no app named {name!r} on this agent"


Listener = Callable[[AppRecord], None]


class AppOwnedElsewhere(Exception):
    """A local change to an app the controller manages (or the reverse)."""

    def __init__(self, name: str, owner: str) -> None:
        super().__init__(name)
        where = "the controller" if owner == "controller" else "a local deploy"
        self.message = f"app {name!r} is managed by {where}; change it there"


@dataclass(frozen=True)
class Upload:
    """An artifact received and hashed, waiting in the agent's tmp dir."""

    path: Path
    sha256: str


def iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def meta_from_record(data: Optional[dict[str, Any]]) -> Optional[AppMeta]:
    if not data:
        return None
    services = tuple(Service(**s) for s in data.get("services", ()))
    return AppMeta(data["name"], data["version"], services)


def meta_to_record(meta: Optional[AppMeta]) -> Optional[dict[str, Any]]:
    if meta is None:
        return None
    return {
        "name": meta.name,
        "version": meta.version,
        "services": [{"name": s.name, "protocol": s.protocol, "port": s.port} for s in meta.services],
    }


class App:
    def __init__(self, record: AppRecord, root: Path, lock: asyncio.Lock, listeners: list[Listener]) -> None:
        self.record = record
        self.listeners = listeners
        self.dir = root / record.name
        self.handle: Optional[Handle] = None
        self.lock = lock  # the supervisor's one lock for this name, also held while the app is created
        self.timer: Optional[asyncio.TimerHandle] = None
        self.cpu_sample: Optional[tuple[float, float]] = None

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def log_path(self) -> Path:
        return self.dir / "logs" / "app.log"

    @property
    def spec(self) -> AppSpec:
        return parse_spec(self.record.spec, runtimes=(self.record.runtime,))

    def release_dir(self, release: Optional[str]) -> Optional[Path]:
        return self.dir / "releases" / release if release else None

    def save(self) -> None:
        self.record.save(self.state_path)
        self.notify()

    def notify(self) -> None:
        """Tell the listeners (the controller sync) about a change, saved or passing (Starting)."""
        for listener in self.listeners:
            listener(self.record)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.record.next_restart_at = None


class Supervisor:
    def __init__(self, config: AgentConfig, runtimes: dict[str, Runtime]) -> None:
        self.config = config
        self.runtimes = runtimes
        self.apps: dict[str, App] = {}
        self.listeners: list[Listener] = []  # called on every saved state change
        self.apps_dir = config.data_dir / "apps"
        self.artifacts_dir = config.data_dir / "artifacts"
        self.tmp_dir = config.data_dir / "tmp"
        self._locks: dict[str, asyncio.Lock] = {}
        self._artifacts_in_use: list[str] = []  # sha256 of deploys in progress (one entry each): kept by GC
        self._rotator: Optional[asyncio.Task[None]] = None
        self._tasks: set[asyncio.Task[None]] = set()  # pending restarts, referenced until done

    # ---- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        for path in (self.apps_dir, self.artifacts_dir, self.tmp_dir):
            path.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            self._remove_path(leftover)
        for state_path in sorted(self.apps_dir.glob("*/state.json")):
            try:
                record = AppRecord.load(state_path)
            except (OSError, ValueError, TypeError) as exc:
                log.error("cannot read %s (%s); leaving that app alone", state_path, exc)
                continue
            app = App(record, self.apps_dir, self._lock_for(record.name), self.listeners)
            self.apps[record.name] = app
            await self._recover(app)
        self._rotator = asyncio.ensure_future(self._rotate_logs_forever())

    async def close(self) -> None:
        """Stop watching; the apps themselves keep running (they are re-adopted on next start)."""
        if self._rotator is not None:
            self._rotator.cancel()
        for app in self.apps.values():
            if app.timer is not None:
                app.timer.cancel()

    async def _recover(self, app: App) -> None:
        record = app.record
        if record.handle is None and record.phase not in ACTIVE_PHASES:
            return
        runtime = self.runtimes.get(record.runtime)
        if runtime is None:
            record.phase, record.message = "Failed", f"runtime {record.runtime!r} is not available on this agent"
            app.save()
            return
        handle = await runtime.recover(self._launch(app), record.handle or {}, self._exit_callback(app))
        if handle is not None:
            app.handle = handle
            record.handle = handle.to_state()
            if record.desired == "stopped":  # a stop was interrupted by the agent's own death
                await self._stop_instance(app)
                record.phase = "Stopped"
            else:
                record.phase = "Running"
            log.info("re-adopted %s (pid %s)", app.name, handle.pid)
            app.save()
            return
        record.handle = None
        if record.desired != "running":
            record.phase = "Stopped"
            app.save()
            return
        if record.phase == "BackOff" and record.next_restart_at:
            self._schedule_restart(app, max(0.0, record.next_restart_at - time.time()))
            return
        log.info("%s is not running any more; applying its restart policy", app.name)
        now = time.time()
        self._after_exit(app, ExitInfo(None, None, "Unknown", now), now - (record.started_at or now))

    # ---- queries ----------------------------------------------------------------------------

    def get(self, name: str) -> App:
        app = self.apps.get(name)
        if app is None:
            raise AppNotFound(name)
        return app

    def statuses(self) -> list[dict[str, Any]]:
        apps = sorted(self.apps.values(), key=lambda a: a.name)
        usage: dict[int, Any] = {}
        for runtime in self.runtimes.values():
            handles = [a.handle for a in apps if a.handle is not None and a.record.runtime == runtime.name]
            if handles:
                usage.update(runtime.usage(handles))
        return [self._status(app, usage.get(id(app.handle))) for app in apps]

    def status(self, name: str) -> dict[str, Any]:
        app = self.get(name)
        usage = None
        if app.handle is not None:
            usage = self.runtimes[app.record.runtime].usage([app.handle]).get(id(app.handle))
        return self._status(app, usage)

    def _status(self, app: App, usage: Any) -> dict[str, Any]:
        r = app.record
        cpu_percent = None
        if usage is not None:
            now = time.monotonic()
            if app.cpu_sample is not None and now - app.cpu_sample[0] > 0.2:
                cpu_percent = round(100 * (usage.cpu_seconds - app.cpu_sample[1]) / (now - app.cpu_sample[0]), 2)
            if app.cpu_sample is None or now - app.cpu_sample[0] > 0.2:
                app.cpu_sample = (now, usage.cpu_seconds)
        meta = r.meta or {}
        return {
            "name": r.name,
            "package": meta.get("name"),
            "version": meta.get("version"),
            "runtime": r.runtime,
            # What deploying it again would run it in: differs from runtime after the node changed mode.
            "runtime_on_deploy": self._runtime_for(r.spec or {}),
            "phase": r.phase,
            "desired": r.desired,
            "pid": app.handle.pid if app.handle is not None else None,
            "instance_id": r.instance_id,
            "restarts": r.restarts,
            "exit_code": r.exit_code,
            "exit_signal": r.exit_signal,
            "exit_reason": r.exit_reason,
            "message": r.message,
            "started_at": iso(r.started_at),
            "finished_at": iso(r.finished_at),
            "next_restart_at": iso(r.next_restart_at),
            "deployed_at": iso(r.deployed_at),
            "artifact_sha256": r.artifact_sha256,
            "spec_hash": r.spec_hash,
            "spec": r.spec,
            "services": meta.get("services", []),
            "cpu_seconds": round(usage.cpu_seconds, 3) if usage is not None else None,
            "cpu_percent": cpu_percent,
            "memory_bytes": usage.memory_bytes if usage is not None else None,
            "log_path": str(app.log_path),
            "last_logs": r.last_logs if r.phase in ("BackOff", "Failed", "Completed", "Stopped") else [],
        }

    async def tail_logs(self, name: str, lines: int) -> list[str]:
        app = self.get(name)
        return await self.runtimes[app.record.runtime].tail_logs_async(self._launch(app), app.handle, lines)

    # ---- operations -------------------------------------------------------------------------

    def _lock_for(self, name: str) -> asyncio.Lock:
        """One lock per app name for the agent's lifetime, so an app never has two."""
        return self._locks.setdefault(name, asyncio.Lock())

    async def deploy(
        self,
        name: str,
        upload: Optional[Upload],
        spec_data: Any,
        *,
        start: bool = True,
        owner: str = "local",
        instance_id: Optional[str] = None,
    ) -> tuple[bool, dict[str, Any]]:
        """Stage the artifact while the old version runs, then swap; identical input changes nothing."""
        try:
            validate_app_name(name)
            spec = parse_spec(spec_data, runtimes=tuple(self.runtimes))
            async with self._lock_for(name):
                self.check_owner(name, owner)
                if upload is not None:
                    self._artifacts_in_use.append(upload.sha256)
                try:
                    changed = await self._deploy_locked(name, upload, spec, start=start, owner=owner, iid=instance_id)
                finally:
                    if upload is not None:
                        self._artifacts_in_use.remove(upload.sha256)
                status = self.status(name)
        finally:
            if upload is not None:
                upload.path.unlink(missing_ok=True)
        return changed, status

    def _runtime_for(self, spec: dict[str, Any]) -> str:
        """The runtime an app of this spec gets: docker for an image, else its own choice or the run mode."""
        return "docker" if spec.get("image") else str(spec.get("runtime") or self.config.run_mode)

    def check_owner(self, name: str, owner: str) -> None:
        app = self.apps.get(name)
        if app is not None and app.record.owner != owner:
            raise AppOwnedElsewhere(name, app.record.owner)

    async def _deploy_locked(
        self, name: str, upload: Optional[Upload], spec: AppSpec, *, start: bool, owner: str, iid: Optional[str]
    ) -> bool:
        app = self.apps.get(name)
        if spec.image is not None and upload is not None:
            raise ArtifactError("an image app (spec.image) takes no artifact", field="artifact")
        if spec.image is None and upload is None and (app is None or app.record.artifact_sha256 is None):
            raise ArtifactError("an artifact is required to deploy a new app", field="artifact")
        sha: Optional[str] = None  # an image app has no artifact
        if upload is not None:
            sha = upload.sha256
        elif spec.image is None:
            sha = app.record.artifact_sha256  # type: ignore[union-attr]
        runtime = self._runtime_for(spec.to_dict())
        if runtime not in self.runtimes:
            raise SpecError("runtime", f"{runtime!r} is not available on this agent")
        if runtime != "docker" and spec.docker_fields_set():
            raise SpecError(spec.docker_fields_set()[0], f"only for docker apps, and this app runs as a {runtime}")
        # Same artifact and spec in the same runtime: nothing to do. A runtime that changed (the agent's
        # AGENT_RUN_MODE moved, e.g. bare -> hybrid) redeploys the app in the new one.
        if (
            app is not None
            and app.record.artifact_sha256 == sha
            and app.record.spec_hash == spec.digest()
            and app.record.runtime == runtime
        ):
            if start and app.record.desired == "stopped":
                await self._start_locked(app)
                return True
            return False

        meta, release = await self._stage(name, app, upload=upload, sha=sha, spec=spec, runtime=runtime)

        if app is None:
            record = AppRecord(
                name=name, instance_id=iid or f"{name}-{secrets.token_hex(4)}", runtime=runtime, owner=owner
            )
            record.desired = "stopped"
            app = App(record, self.apps_dir, self._lock_for(name), self.listeners)
            self.apps[name] = app
        record = app.record
        was_running = app.handle is not None
        if was_running:
            await self._stop_instance(app)
        app.cancel_timer()
        if record.release != release:
            record.previous_release = record.release
        record.release, record.artifact_sha256, record.meta = release, sha, meta_to_record(meta)
        record.spec, record.spec_hash, record.runtime = spec.to_dict(), spec.digest(), runtime
        record.restarts, record.tracker, record.deployed_at = 0, {}, time.time()
        record.exit_code = record.exit_signal = record.exit_reason = None
        record.message, record.last_logs = "", []
        if start or was_running:
            record.desired = "running"
        if record.desired == "running":
            await self._launch_instance(app)
        else:
            record.phase = "Stopped"
            app.save()
        self._collect_garbage(app)
        return True

    async def _stage(
        self,
        name: str,
        app: Optional[App],
        *,
        upload: Optional[Upload],
        sha: Optional[str],
        spec: AppSpec,
        runtime: str,
    ) -> tuple[AppMeta, Optional[str]]:
        """Extract and check the new release while the old one runs; nothing is kept if anything fails.

        Returns the release's meta and its directory name (None for an image app: the image is the release)."""
        if sha is None:
            meta = AppMeta(name, image_tag(spec.image or ""), ())
            self._preflight(name, spec, meta, runtime)
            return meta, None
        release = sha[:16]
        target = self.apps_dir / name / "releases" / release
        if target.exists():
            known = app is not None and app.record.release == release
            meta = meta_from_record(app.record.meta) if known else None  # type: ignore[union-attr]
            meta = meta or self._read_meta(target)
            self._preflight(name, spec, meta, runtime)
            return meta, release
        source = upload.path if upload is not None else self.artifacts_dir / f"{sha}.zip"
        staging = self.tmp_dir / f"stage-{name}-{secrets.token_hex(4)}"
        try:
            meta = await asyncio.to_thread(extract_zip, source, staging)  # large zips: off the event loop
            self._preflight(name, spec, meta, runtime)
        except BaseException:
            self._remove_path(staging)
            raise
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
        if upload is not None:
            self._store_artifact(upload)
        return meta, release

    def _preflight(self, name: str, spec: AppSpec, meta: AppMeta, runtime: str) -> None:
        check = getattr(self.runtimes[runtime], "preflight", None)  # e.g. Docker: host ports free
        if check is not None:
            check(name, spec, meta)

    @contextlib.asynccontextmanager
    async def _locked(self, name: str) -> AsyncIterator[App]:
        """The app under its lock; AppNotFound if it was removed while we waited for the lock."""
        app = self.get(name)
        async with app.lock:
            if self.apps.get(name) is not app:
                raise AppNotFound(name)
            yield app

    async def start(self, name: str) -> tuple[bool, dict[str, Any]]:
        async with self._locked(name) as app:
            changed = app.handle is None
            if changed:
                await self._start_locked(app)
        return changed, self.status(name)

    async def _start_locked(self, app: App) -> None:
        app.record.desired = "running"
        app.cancel_timer()
        app.record.tracker = {}
        await self._launch_instance(app)

    async def stop(self, name: str) -> tuple[bool, dict[str, Any]]:
        async with self._locked(name) as app:
            changed = app.record.desired != "stopped" or app.handle is not None
            app.record.desired = "stopped"
            app.cancel_timer()
            if app.handle is not None:
                await self._stop_instance(app)
                self._keep_last_logs(app)
            app.record.phase = "Stopped"
            app.save()
        return changed, self.status(name)

    async def restart(self, name: str) -> tuple[bool, dict[str, Any]]:
        async with self._locked(name) as app:
            if app.handle is not None:
                await self._stop_instance(app)
            await self._start_locked(app)
        return True, self.status(name)

    async def remove(self, name: str) -> None:
        async with self._locked(name) as app:
            app.record.desired = "stopped"
            app.cancel_timer()
            if app.handle is not None:
                await self._stop_instance(app)
            runtime = self.runtimes.get(app.record.runtime)
            if runtime is not None:
                await runtime.forget(self._launch(app))
            del self.apps[name]
            await asyncio.to_thread(self._remove_path, app.dir)
        self._collect_garbage()

    # ---- instances --------------------------------------------------------------------------

    def _launch(self, app: App) -> Launch:
        record = app.record
        meta = meta_from_record(record.meta)
        spec = app.spec
        return Launch(
            app_name=record.name,
            instance_id=record.instance_id,
            version=meta.version if meta else "",
            app_dir=app.release_dir(record.release),
            data_dir=app.dir / "data",
            log_path=app.log_path,
            spec=spec,
            meta=meta,
            env=self._app_env(app, meta, spec),
        )

    def _app_env(self, app: App, meta: Optional[AppMeta], spec: AppSpec) -> dict[str, str]:
        """A clean environment: never the agent's own (it may hold tokens), only what apps need."""
        env = base_env(os.environ)
        env.setdefault("PATH", DEFAULT_PATH)
        if self.config.controller_base:
            env["CONTROLLER_BASE"] = self.config.controller_base
        env.update(spec.env)
        env.update(
            PLUM_INSTANCE_ID=app.record.instance_id,
            PLUM_APP_NAME=meta.name if meta else app.name,
            PLUM_APP_VERSION=meta.version if meta else "",
            WORKER_NODE_ID=self.config.node_id,
        )
        return env

    async def _launch_instance(self, app: App) -> None:
        record = app.record
        record.phase, record.next_restart_at = "Starting", None
        app.notify()
        runtime = self.runtimes[record.runtime]
        try:
            handle = await runtime.start(self._launch(app), self._exit_callback(app))
        except StartError as exc:  # the app itself cannot start (no such command, no image): final
            log.warning("%s failed to start: %s", app.name, exc)
            record.phase, record.message, record.handle = "Failed", str(exc), None
            record.finished_at = time.time()
            app.save()
            return
        except Exception as exc:
            log.exception("%s failed to start", app.name)
            record.handle = None
            now = time.time()
            self._after_exit(app, ExitInfo(None, None, "StartFailed", now, detail=str(exc) or type(exc).__name__), 0)
            return
        app.handle = handle
        record.handle, record.started_at = handle.to_state(), handle.started_at
        record.phase, record.message = "Running", ""
        app.save()

    async def _stop_instance(self, app: App) -> None:
        handle = app.handle
        if handle is None:
            return
        handle.stopping = True
        await self.runtimes[app.record.runtime].stop(handle, app.spec.stop_timeout)
        app.handle = None
        app.record.handle = None

    def _exit_callback(self, app: App) -> Any:
        def on_exit(handle: Handle, info: ExitInfo) -> None:
            if app.handle is not handle:
                return  # an instance we already replaced
            app.handle = None
            record = app.record
            record.handle = None
            record.exit_code, record.exit_signal, record.exit_reason = info.exit_code, info.signal, info.reason
            record.finished_at = info.finished_at
            if handle.stopping:
                return  # the stop path records the outcome
            self._after_exit(app, info, info.finished_at - handle.started_at)

        return on_exit

    def _after_exit(self, app: App, info: ExitInfo, run_seconds: float) -> None:
        """Apply the restart policy to an exit we did not ask for."""
        record, spec = app.record, app.spec
        policy = spec.restart
        if not policy.wants_restart(info.exit_code):
            record.phase = "Completed" if info.exit_code == 0 else "Failed"
            record.message = info.describe()
            self._keep_last_logs(app)
            app.save()
            return
        tracker = RestartTracker.from_state(record.tracker)
        delay = tracker.next_delay(policy, run_seconds, time.time())
        record.tracker = tracker.to_state()
        if delay is None:
            record.phase = "Failed"
            record.message = (
                f"{info.describe()}; gave up after {policy.max_restarts} restarts within {policy.window:g}s"
            )
            self._keep_last_logs(app)
            app.save()
            log.warning("%s: %s", app.name, record.message)
            return
        if delay == 0:
            record.phase = "Starting"
            self._schedule_restart(app, 0.0)
            return
        record.phase, record.message = "BackOff", f"{info.describe()}; restarting in {delay:.1f}s"
        self._keep_last_logs(app)
        self._schedule_restart(app, delay)
        app.save()

    def _schedule_restart(self, app: App, delay: float) -> None:
        app.cancel_timer()
        if delay > 0:
            app.record.next_restart_at = time.time() + delay
            app.timer = asyncio.get_running_loop().call_later(delay, self._restart_soon, app)
        else:
            self._restart_soon(app)

    def _restart_soon(self, app: App) -> None:
        task = asyncio.ensure_future(self._restart_after_exit(app))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart_after_exit(self, app: App) -> None:
        async with app.lock:
            app.timer = None
            if app.handle is not None or app.record.desired != "running" or app.record.phase not in ACTIVE_PHASES:
                return
            if self.apps.get(app.name) is not app:
                return  # removed meanwhile
            app.record.restarts += 1
            await self._launch_instance(app)

    def _keep_last_logs(self, app: App) -> None:
        with contextlib.suppress(Exception):
            app.record.last_logs = self.runtimes[app.record.runtime].tail_logs(
                self._launch(app), None, LOG_TAIL_ON_EXIT
            )

    # ---- storage ----------------------------------------------------------------------------

    def _store_artifact(self, upload: Upload) -> Path:
        target = self.artifacts_dir / f"{upload.sha256}.zip"
        if target.exists():
            os.utime(target)  # recently used: the cache keeps it longer
        else:
            os.replace(upload.path, target)
        return target

    @staticmethod
    def _read_meta(release_dir: Path) -> AppMeta:
        return parse_meta_ini((release_dir / "meta.ini").read_text(encoding="utf-8"))

    def _collect_garbage(self, deployed: Optional[App] = None) -> None:
        """Keep each app's current and previous release, the artifacts they came from, and a cache.

        Releases are pruned only for the app just deployed (its lock is held); other apps may be in
        the middle of a deploy. Artifacts no app uses stay as a cache, newest first, up to
        AGENT_ARTIFACT_CACHE_BYTES, so a stop/start or a redeploy does not download them again.
        """
        if deployed is not None:
            keep = {deployed.record.release, deployed.record.previous_release}
            releases = deployed.dir / "releases"
            for entry in releases.iterdir() if releases.is_dir() else ():
                if entry.name not in keep:
                    self._remove_path(entry)
        prefixes = set(self._artifacts_in_use)
        for app in self.apps.values():
            prefixes.update(r for r in (app.record.artifact_sha256, app.record.previous_release) if r)
        unused = []
        for artifact in self.artifacts_dir.glob("*.zip"):
            if not any(artifact.stem.startswith(prefix) for prefix in prefixes):
                with contextlib.suppress(FileNotFoundError):
                    unused.append((artifact.stat().st_mtime, artifact.stat().st_size, artifact))
        budget = self.config.artifact_cache_bytes
        for _, size, artifact in sorted(unused, reverse=True):
            budget -= size
            if budget < 0:
                artifact.unlink(missing_ok=True)

    @staticmethod
    def _remove_path(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    async def _rotate_logs_forever(self) -> None:
        while True:
            await asyncio.sleep(LOG_ROTATE_EVERY)
            for app in list(self.apps.values()):
                try:
                    logfiles.rotate_if_large(app.log_path, self.config.log_max_bytes, self.config.log_backups)
                except OSError as exc:
                    log.warning("cannot rotate %s: %s", app.log_path, exc)
