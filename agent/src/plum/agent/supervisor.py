"""Keeps every app in its desired state: deploy, start, stop, restart on exit, re-adopt on boot.

All state changes happen on the event loop; one asyncio.Lock per app serialises the operations on
it (deploy, start, stop, remove, a pending restart), so a crash-restart never races a deploy.

Crash consistency: a change asked for through the API is saved before it is carried out or reported
(TaskRunner.committing); if it cannot be saved, nothing changes, in memory or on disk, and the caller gets a
StorageError. A deploy (or a restart) saves what it is about to run (the record's ``intent``) before
it stops the old instance, and every instance carries its release in its environment, so an agent
that died at any moment of a swap finds out at start which release runs and makes the record and
the instance agree (``_recover``). Changes the agent makes on its own (an exit, a restart) are saved
when they happen, and again later if the disk refused them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from plum.agent import logfiles
from plum.agent.config import AgentConfig, private_dir
from plum.agent.restart import RestartTracker
from plum.agent.runtimes.base import Expected, Handle, Runtime, Usage
from plum.agent.spec import AppSpec, SpecError, parse_spec
from plum.agent.state import STATE_FILE, AppRecord, Intent, StateFileError
from plum.agent.taskrunner import Clock, Listener, RealClock, TaskRunner
from plum.common import fsio
from plum.common.artifact import AppMeta, ArtifactError, extract_zip, parse_meta_ini, validate_app_name
from plum.common.fsio import StorageError
from plum.common.resources import image_tag
from plum.common.vocab import ACTIVE_PHASES, Desired, Owner, Phase

log = logging.getLogger(__name__)

HOUSEKEEPING_EVERY = 10.0  # log rotation, and saving again what the disk refused


class AppNotFound(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.message = f"no app named {name!r} on this agent"


class AppConflict(Exception):
    """A change the app's current situation refuses (HTTP 409); message says what to do instead."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(name)
        self.message = message


class AppOwnedElsewhere(AppConflict):
    """A local change to an app the controller manages (or the reverse)."""

    def __init__(self, name: str, owner: Owner) -> None:
        where = "the controller" if owner is Owner.CONTROLLER else "a local deploy"
        super().__init__(name, f"app {name!r} is managed by {where}; change it there")


class AppRecordLost(AppConflict):
    """start/restart of an app whose saved record could not be read: only a deploy or a delete can help."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, f"app {name!r} has no usable record ({reason}): deploy it again or delete it")


@dataclass(frozen=True)
class Upload:
    """An artifact received and hashed, waiting in the agent's tmp dir."""

    path: Path
    sha256: str


def is_saved_instance(handle: Handle, saved: dict[str, Any]) -> bool:
    """Whether an adopted instance is the one a saved handle describes (not one started after it was saved)."""
    state = handle.to_state()
    keys = ("container_id",) if saved.get("container_id") else ("pid", "start_ticks")
    return all(saved.get(key) is not None and state.get(key) == saved[key] for key in keys)


class Supervisor:
    """The registry of the apps on this agent (one TaskRunner each, one lock per name): deploys and their
    staging, the operations of the API and the sync, recovery at start, garbage collection, housekeeping."""

    def __init__(self, config: AgentConfig, runtimes: dict[str, Runtime], clock: Optional[Clock] = None) -> None:
        self.config = config
        self.runtimes = runtimes
        self.clock = clock or RealClock()
        self.apps: dict[str, TaskRunner] = {}
        self.listeners: list[Listener] = []  # called on every saved state change
        self.apps_dir = config.data_dir / "apps"
        self.artifacts_dir = config.data_dir / "artifacts"
        self.tmp_dir = config.data_dir / "tmp"
        self._locks: dict[str, asyncio.Lock] = {}
        self._artifacts_in_use: list[str] = []  # sha256 of deploys in progress (one entry each): kept by GC
        self._housekeeper: Optional[asyncio.Task[None]] = None
        self.released: set[str] = set()  # controller instances the controller forgot: the local API may remove them

    # ---- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        for path in (self.apps_dir, self.artifacts_dir, self.tmp_dir):
            path.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():  # staging folders and uploads of interrupted deploys
            self._remove_quietly(leftover)
        for folder in sorted(self.apps_dir.iterdir()):
            app = self._load(folder)
            if app is not None:
                self.apps[app.name] = app
        for runtime in self.runtimes.values():  # before any recover: they learn what is tracked first
            await runtime.open(self.tracked)
        for app in list(self.apps.values()):
            try:
                await self._recover(app)
            except Exception as exc:  # one app's trouble never keeps the agent from supervising the others
                log.exception("%s: cannot re-adopt it", app.name)
                app.record.message = f"cannot re-adopt it: {exc}"
        for app in list(self.apps.values()):
            await self._collect_garbage(app)
        self._housekeeper = asyncio.ensure_future(self._housekeeping_forever())

    async def close(self) -> None:
        """Stop watching; the apps themselves keep running (they are re-adopted on next start)."""
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        for app in self.apps.values():
            app.flush_save()
            app.retire()
        for runtime in self.runtimes.values():
            await runtime.close()

    def tracked(self) -> list[Expected]:
        """The instances the supervisor answers for, with their saved handles: what a runtime must keep."""
        return [
            Expected(app.name, app.record.instance_id, app.record.runtime, app.record.handle)
            for app in self.apps.values()
        ]

    def _load(self, folder: Path) -> Optional[TaskRunner]:
        """The app kept in folder: from its record, or a placeholder when the record is unusable."""
        if folder.is_symlink() or not folder.is_dir():
            return None
        try:
            validate_app_name(folder.name)
        except ArtifactError as exc:
            log.error("ignoring %s: %s", folder, exc.message)
            return None
        for entry in folder.iterdir():
            if entry.name.startswith(f".{STATE_FILE}."):  # a write the agent's death cut short
                self._remove_quietly(entry)
        state = folder / STATE_FILE
        if os.path.lexists(state):
            try:
                record = AppRecord.load(state)
            except StateFileError as exc:
                return self._lost_app(folder.name, self._set_aside(state, exc))
            return self._runner(record)
        earlier = sorted(p.name for p in folder.glob(f"{STATE_FILE}.bad-*"))
        kept = f"; the unreadable one is kept as {earlier[-1]}" if earlier else ""
        return self._lost_app(folder.name, f"{state} is missing{kept}")

    def _runner(self, record: AppRecord) -> TaskRunner:
        lock = self._lock_for(record.name)
        return TaskRunner(
            record, self.apps_dir, lock, self.listeners, runtimes=self.runtimes, config=self.config, clock=self.clock
        )

    @staticmethod
    @staticmethod
    def _set_aside(state: Path, exc: StateFileError) -> str:
        """Move an unusable state file out of the way (kept for a post-mortem); returns why the record is lost."""
        try:
            kept = fsio.move_aside(state)
        except StorageError as err:
            return f"{state} is unusable ({exc.reason}); {err.message}"
        return f"{state} was unusable ({exc.reason}); kept as {kept.name}"

    def _lost_app(self, name: str, reason: str) -> TaskRunner:
        record = AppRecord(name=name, instance_id=name, runtime="process", desired=Desired.STOPPED, phase=Phase.UNKNOWN)
        app = self._runner(record)
        app.lost = reason
        record.message = reason
        return app

    async def _recover(self, app: TaskRunner) -> None:
        """Re-adopt the app's instance, and make the record and the instance agree (see the module's doc)."""
        if app.lost is not None:
            await self._recover_lost(app)
            return
        record = app.record
        if record.handle is None and record.phase not in ACTIVE_PHASES and record.intent is None:
            return
        runtime = self.runtimes.get(record.runtime)
        if runtime is None:
            record.message = f"runtime {record.runtime!r} is not available on this agent"
            app.transition(Phase.FAILED, record.message)
            app.save_quietly()
            return
        saved = record.handle or {}
        handle = await runtime.recover(app.launch(), saved, app.on_exit)
        if handle is not None:
            app.adopt(handle)
            log.info("re-adopted %s (pid %s)", app.name, handle.pid)
        intent, record.intent = record.intent, None
        if intent is not None and not self._installed(app, intent):
            if record.deployed_at is None:  # an app's first deploy, cut before anything of it ran
                await self._forget_first_deploy(app)
                return
            intent = None  # cut before the new release was in place: the old instance was never touched
        stale = handle is not None and self._stale(app, handle, saved, intent)
        if stale:
            log.info("%s: replacing pid %s, which the record does not describe", app.name, handle.pid)  # type: ignore[union-attr]
            await app.stop_instance()
        if intent is not None and not intent.same_deployment(record):
            if record.deployed_at is None:  # a first deploy may replace an app whose record was lost
                await self._stop_unrecorded_instances(app)
            record.apply_deploy(intent, self.clock.now())
            log.info("%s: finished the deploy of release %s the agent's death interrupted", app.name, record.release)
        await app.resume(saved, restart_now=intent is not None or stale)

    @staticmethod
    def _installed(app: TaskRunner, intent: Intent) -> bool:
        """Whether an intent's release is in place (an image app's release is its image)."""
        release_dir = app.release_dir(intent.release)
        return release_dir is None or release_dir.is_dir()

    def _stale(self, app: TaskRunner, handle: Handle, saved: dict[str, Any], intent: Optional[Intent]) -> bool:
        """Whether an adopted instance must be replaced for the record and the instance to agree.

        Without an intent: it says it runs another release than the record's. With one (a deploy or a
        restart the agent's death cut short): it is the instance the intent was stopping (the saved one),
        or it does not say it runs the intent's release. What cannot be told is replaced, never guessed.
        """
        running = self.runtimes[app.record.runtime].inspect(handle).release
        if intent is None:
            return running is not None and app.record.release is not None and running != app.record.release
        return is_saved_instance(handle, saved) or running != (intent.release or None)

    async def _forget_first_deploy(self, app: TaskRunner) -> None:
        log.info("%s: undoing its first deploy, which the agent's death interrupted", app.name)
        await app.stop_instance()
        self._forget_unfinished(app)
        del self.apps[app.name]
        app.retire()
        if app.dir.exists():  # it held an app whose record was lost: listed as such again
            lost = self._load(app.dir)
            if lost is not None:
                self.apps[lost.name] = lost
                await self._recover(lost)

    async def _recover_lost(self, app: TaskRunner) -> None:
        """An app whose record is lost: find its instance by the app's folder, so it can still be stopped."""
        for runtime in self.runtimes.values():
            found = await runtime.recover_lost(app.launch(), app.on_exit)
            if found and app.handle is None:
                app.adopt(found[0])
                found = found[1:]
                app.record.runtime, app.record.desired = runtime.name, Desired.RUNNING
            await self._stop_extra_instances(app, runtime, found)
        app.record.message = app.lost_message()
        log.error("%s: %s", app.name, app.record.message)

    async def _stop_unrecorded_instances(self, app: TaskRunner) -> None:
        """Stop every instance in the app's folder but the adopted one (a replaced app's whose record was lost)."""
        for runtime in self.runtimes.values():
            found = await runtime.recover_lost(app.launch(), lambda handle, info: None)
            await self._stop_extra_instances(app, runtime, found)

    async def _stop_extra_instances(self, app: TaskRunner, runtime: Runtime, found: list[Handle]) -> None:
        """One instance per app: any other one found is a leftover nothing else would ever stop."""
        for extra in found:
            if app.handle is not None and extra.pid == app.handle.pid:
                continue
            log.warning("%s: stopping a second instance (pid %s) that no record describes", app.name, extra.pid)
            await runtime.stop(extra, app.record.spec.stop_timeout)

    # ---- queries ----------------------------------------------------------------------------

    def get(self, name: str) -> TaskRunner:
        app = self.apps.get(name)
        if app is None:
            raise AppNotFound(name)
        return app

    def statuses(self) -> list[dict[str, Any]]:
        apps = sorted(self.apps.values(), key=lambda a: a.name)
        usage: dict[int, Usage] = {}
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

    def _status(self, app: TaskRunner, usage: Optional[Usage]) -> dict[str, Any]:
        # runtime_on_deploy: what deploying it again would run it in (differs after the node changed mode)
        return app.status(usage, runtime_on_deploy=self.runtime_for(app.record.spec))

    async def tail_logs(self, name: str, lines: int) -> list[str]:
        app = self.get(name)
        return await self.runtimes[app.record.runtime].tail_logs_async(app.launch(), app.handle, lines)

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
        owner: Owner = Owner.LOCAL,
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

    def runtime_for(self, spec: AppSpec) -> str:
        """The runtime an app of this spec gets: docker for an image, else its own choice or the run mode."""
        return "docker" if spec.image else spec.runtime or self.config.default_runtime

    def check_owner(self, name: str, owner: Owner) -> None:
        app = self.apps.get(name)
        if app is None or app.lost is not None or app.record.owner == owner:
            return
        if owner == Owner.LOCAL and name in self.released:
            return  # the controller forgot it without removing it: the node's operator decides
        raise AppOwnedElsewhere(name, app.record.owner)

    async def _deploy_locked(
        self, name: str, upload: Optional[Upload], spec: AppSpec, *, start: bool, owner: Owner, iid: Optional[str]
    ) -> bool:
        app = self.apps.get(name)
        if spec.image is not None and upload is not None:
            raise ArtifactError("an image app (spec.image) takes no artifact", field="artifact")
        if app is not None and app.lost is not None and upload is None and spec.image is None:
            raise ArtifactError("an artifact is required: the app's record is lost", field="artifact")
        if spec.image is None and upload is None and (app is None or app.record.artifact_sha256 is None):
            raise ArtifactError("an artifact is required to deploy a new app", field="artifact")
        sha: Optional[str] = None  # an image app has no artifact
        if upload is not None:
            sha = upload.sha256
        elif spec.image is None:
            sha = app.record.artifact_sha256  # type: ignore[union-attr]
        runtime = self.runtime_for(spec)
        if runtime not in self.runtimes:
            raise SpecError("runtime", f"{runtime!r} is not available on this agent")
        if runtime != "docker" and spec.docker_fields_set():
            raise SpecError(spec.docker_fields_set()[0], f"only for docker apps, and this app runs as a {runtime}")
        # Same artifact and spec in the same runtime: nothing to do. A runtime that changed (the agent's
        # AGENT_RUN_MODE moved, e.g. bare -> hybrid) redeploys the app in the new one.
        if (
            app is not None
            and app.lost is None
            and app.record.artifact_sha256 == sha
            and app.record.spec_hash == spec.digest()
            and app.record.runtime == runtime
        ):
            if start and app.record.desired == Desired.STOPPED:
                await self._start_locked(app)
                return True
            return False

        meta, release, staging = await self._stage(name, app, upload=upload, sha=sha, spec=spec, runtime=runtime)
        lost = app if app is not None and app.lost is not None else None
        intent = self._deploy_intent(
            None if lost else app, release=release, sha=sha, meta=meta, spec=spec, runtime=runtime, start=start
        )
        try:
            app = self._record_intent(name, None if lost else app, intent, owner=owner, iid=iid)
        except BaseException:
            if staging is not None:
                self._remove_quietly(staging)
            raise
        try:
            self._install(app, release, staging, upload)
        except BaseException:
            self._drop_intent(app)
            raise
        if lost is not None:  # its instance goes first: one instance runs after the deploy
            await self._stop_lost(lost)
            lost.retire()
        self.apps[name] = app
        if app.handle is not None:
            await app.stop_instance()
        app.cancel_timer()
        app.record.apply_deploy(intent, self.clock.now())
        if app.record.desired == Desired.RUNNING:
            await app.start_instance()
        else:
            app.transition(Phase.STOPPED, "deployed stopped")
            app.save_quietly()
        await self._collect_garbage(app)
        return True

    @staticmethod
    def _deploy_intent(
        app: Optional[TaskRunner],
        *,
        release: Optional[str],
        sha: Optional[str],
        meta: AppMeta,
        spec: AppSpec,
        runtime: str,
        start: bool,
    ) -> Intent:
        """What a deploy will run (the record fields it sets): an app that runs, or should, keeps running."""
        keep_running = app is not None and (app.handle is not None or app.record.desired == Desired.RUNNING)
        return Intent(
            release=release,
            artifact_sha256=sha,
            meta=meta,
            spec=spec,
            spec_hash=spec.digest(),
            runtime=runtime,
            desired=Desired.RUNNING if start or keep_running else Desired.STOPPED,
        )

    def _record_intent(
        self, name: str, app: Optional[TaskRunner], intent: Intent, *, owner: Owner, iid: Optional[str]
    ) -> TaskRunner:
        """Save what the deploy is about to run before anything is swapped; StorageError leaves all as it was."""
        if app is not None:
            with app.committing() as record:
                record.intent = intent
            return app
        iid = iid or f"{name}-{os.urandom(4).hex()}"
        record = AppRecord(name=name, instance_id=iid, runtime=intent.runtime, owner=owner)
        record.desired, record.phase, record.intent = Desired.STOPPED, Phase.STOPPED, intent
        app = self._runner(record)
        try:
            private_dir(app.dir)  # 0750, as every folder the agent keeps
        except OSError as exc:
            raise StorageError.from_os_error("create", app.dir, exc) from None
        try:
            app.save()
        except StorageError:
            self._forget_unfinished(app)
            raise
        return app

    def _drop_intent(self, app: TaskRunner) -> None:
        """A deploy that failed before the swap: the record is as before (a new app goes away)."""
        if app.record.deployed_at is None:
            self._forget_unfinished(app)
            return
        app.record.intent = None
        app.save_quietly()

    def _forget_unfinished(self, app: TaskRunner) -> None:
        """Undo a first deploy that never ran: its record and releases go, and its folder unless it holds more.

        (The folder of an app whose record was lost holds its data and logs: they stay.)"""
        self._remove_quietly(app.state_path)
        if app.record.intent is not None and app.lost is None:
            release_dir = app.release_dir(app.record.intent.release)
            if release_dir is not None and not (app.dir / "logs").exists() and not (app.dir / "data").exists():
                self._remove_quietly(release_dir)
        for folder in (app.dir / "releases", app.dir):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty

    async def _stage(
        self,
        name: str,
        app: Optional[TaskRunner],
        *,
        upload: Optional[Upload],
        sha: Optional[str],
        spec: AppSpec,
        runtime: str,
    ) -> tuple[AppMeta, Optional[str], Optional[Path]]:
        """Extract and check the new release while the old one runs; nothing is kept if anything fails.

        Returns the release's meta, its directory name (None for an image app: the image is the release)
        and the staging folder to install it from (None: the release is in place already)."""
        if sha is None:
            meta = AppMeta(name, image_tag(spec.image or ""), ())
            self._preflight(name, spec, meta, runtime)
            return meta, None, None
        release = sha[:16]
        target = self.apps_dir / name / "releases" / release
        if target.is_dir():  # installed whole by an earlier deploy (staged, then renamed)
            known_meta = app.record.meta if app is not None and app.record.release == release else None
            meta = known_meta or self._read_meta(target)
            self._preflight(name, spec, meta, runtime)
            return meta, release, None
        source = upload.path if upload is not None else self.artifacts_dir / f"{sha}.zip"
        staging = self.tmp_dir / f"stage-{name}-{os.urandom(4).hex()}"
        try:
            meta = await asyncio.to_thread(extract_zip, source, staging)  # large zips: off the event loop
            self._preflight(name, spec, meta, runtime)
        except OSError as exc:
            await asyncio.to_thread(self._remove_quietly, staging)
            if fsio.is_storage_error(exc):  # a full disk is the agent's trouble, never a bad artifact
                raise StorageError.from_os_error("extract the artifact into", staging, exc) from None
            raise
        except BaseException:
            await asyncio.to_thread(self._remove_quietly, staging)
            raise
        return meta, release, staging

    def _install(
        self, app: TaskRunner, release: Optional[str], staging: Optional[Path], upload: Optional[Upload]
    ) -> None:
        """Move a staged release into the app's folder and keep its artifact (both durably)."""
        if staging is not None and release is not None:
            target = app.dir / "releases" / release
            try:
                private_dir(private_dir(app.dir) / "releases")  # 0750, as every folder the agent keeps
            except OSError as exc:
                raise StorageError.from_os_error("create", target.parent, exc) from None
            fsio.replace_durably(staging, target)
        if upload is not None:
            self._store_artifact(upload)

    def _preflight(self, name: str, spec: AppSpec, meta: AppMeta, runtime: str) -> None:
        self.runtimes[runtime].preflight(name, spec, meta)  # e.g. Docker: host ports free

    @contextlib.asynccontextmanager
    async def _locked(self, name: str, owner: Optional[Owner] = None) -> AsyncIterator[TaskRunner]:
        """The app under its lock; AppNotFound if it was removed while we waited for the lock. With
        ``owner``, the ownership is checked under the lock too: the sync may have taken it meanwhile."""
        app = self.get(name)
        async with app.lock:
            if self.apps.get(name) is not app:
                raise AppNotFound(name)
            if owner is not None:
                self.check_owner(name, owner)
            yield app

    async def start(self, name: str, owner: Optional[Owner] = None) -> tuple[bool, dict[str, Any]]:
        async with self._locked(name, owner) as app:
            if app.lost is not None:
                raise AppRecordLost(name, app.lost)
            changed = app.handle is None
            if changed:
                await self._start_locked(app)
        return changed, self.status(name)

    async def _start_locked(self, app: TaskRunner, *, restart: bool = False) -> None:
        """Save desired=running (and, for a restart, its intent) first: a refusing disk changes nothing."""
        with app.committing() as record:
            record.desired, record.tracker, record.next_restart_at = Desired.RUNNING, RestartTracker(), None
            if restart:
                record.intent = Intent.of(record)
        app.cancel_timer()
        if app.handle is not None:
            await app.stop_instance()
        app.record.intent = None
        await app.start_instance()

    async def stop(self, name: str, owner: Optional[Owner] = None) -> tuple[bool, dict[str, Any]]:
        async with self._locked(name, owner) as app:
            if app.lost is not None:
                return await self._stop_lost(app), self.status(name)
            changed = app.record.desired != Desired.STOPPED or app.handle is not None
            with app.committing() as record:  # saved first: a refusing disk leaves the app running
                record.desired, record.next_restart_at = Desired.STOPPED, None
            await app.stop("stopped on request")
            app.save_quietly()
        return changed, self.status(name)

    async def restart(self, name: str, owner: Optional[Owner] = None) -> tuple[bool, dict[str, Any]]:
        async with self._locked(name, owner) as app:
            if app.lost is not None:
                raise AppRecordLost(name, app.lost)
            await self._start_locked(app, restart=True)
        return True, self.status(name)

    async def remove(self, name: str, owner: Optional[Owner] = None) -> None:
        """Stop the app and remove its files; it is forgotten only once they are gone (a failure can be retried)."""
        async with self._locked(name, owner) as app:
            recorded = app.lost is None
            if recorded:
                try:
                    with app.committing() as record:
                        record.desired, record.next_restart_at = Desired.STOPPED, None
                except StorageError as exc:  # a full disk must not keep an app from being removed
                    log.warning("%s: %s; removing it anyway", name, exc.message)
                    recorded = False
            await app.stop("removed", keep_logs=False)
            for runtime in self._runtimes_of(app):
                await runtime.forget(app.launch())
            try:
                await asyncio.to_thread(self._remove_app_files, app.dir, recorded)
            except StorageError as exc:
                app.record.message = f"removal failed: {exc.message}; delete it again once this is fixed"
                app.notify()
                raise
            del self.apps[name]
            app.retire()
        await self._collect_garbage()

    def _runtimes_of(self, app: TaskRunner) -> list[Runtime]:
        """The runtimes that may hold something of the app: its own, or every one when its record is lost."""
        if app.lost is not None:
            return list(self.runtimes.values())
        runtime = self.runtimes.get(app.record.runtime)
        return [runtime] if runtime is not None else []

    @staticmethod
    def _remove_app_files(folder: Path, record_says_stopped: bool) -> None:
        """Everything but the record first, the record last: an interrupted removal leaves a stopped app."""
        state = folder / STATE_FILE
        if not record_says_stopped:  # the record still says running: it goes first, so nothing restarts it
            fsio.remove_path(state)
        for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
            if entry.name != STATE_FILE:
                fsio.remove_path(entry)
        fsio.remove_path(folder)

    async def _stop_lost(self, app: TaskRunner) -> bool:
        """Stop the instance of an app whose record is lost (found by its folder); it stays listed."""
        changed = app.handle is not None
        if app.handle is not None:
            await app.stop_instance()
        for runtime in self._runtimes_of(app):  # e.g. Docker: its containers are found by their labels
            await runtime.forget(app.launch())
        app.record.desired = Desired.STOPPED
        app.record.message = app.lost_message()
        app.notify()
        return changed

    # ---- instances --------------------------------------------------------------------------

    # ---- storage ----------------------------------------------------------------------------

    def _store_artifact(self, upload: Upload) -> Path:
        target = self.artifacts_dir / f"{upload.sha256}.zip"
        try:
            if target.exists():
                os.utime(target)  # recently used: the cache keeps it longer
            else:
                fsio.replace_durably(upload.path, target, action="keep the artifact as")
        except OSError as exc:
            raise StorageError.from_os_error("keep the artifact as", target, exc) from None
        return target

    @staticmethod
    def _read_meta(release_dir: Path) -> AppMeta:
        return parse_meta_ini((release_dir / "meta.ini").read_text(encoding="utf-8"))

    async def _collect_garbage(self, app: Optional[TaskRunner] = None) -> None:
        """Remove what no record needs any more, off the event loop (a release may be a large tree).

        Releases: of `app` only (its lock is held, or the agent is starting), every one but its current,
        its previous and the one a deploy is about to run. Artifacts: those no app's releases came from
        stay as a cache, newest first, up to AGENT_ARTIFACT_CACHE_BYTES, so a stop/start or a redeploy
        does not download them again.
        """
        releases, keep = None, set()
        if app is not None and app.lost is None:  # which releases an app whose record is lost needs is unknown
            record = app.record
            releases = app.dir / "releases"
            keep = {record.release, record.previous_release, record.intent.release if record.intent else None}
        used = set(self._artifacts_in_use)
        for other in self.apps.values():
            record = other.record
            used.update(r for r in (record.artifact_sha256, record.previous_release) if r)
            used.update(r for r in (record.intent.artifact_sha256 if record.intent else None,) if r)
        await asyncio.to_thread(self._remove_unused, releases, keep, used)

    def _remove_unused(self, releases: Optional[Path], keep: set[Optional[str]], used: set[str]) -> None:
        for entry in releases.iterdir() if releases is not None and releases.is_dir() else ():
            if entry.name not in keep:
                self._remove_quietly(entry)
        unused = []
        for artifact in self.artifacts_dir.glob("*.zip"):
            if not any(artifact.stem.startswith(prefix) for prefix in used):
                with contextlib.suppress(FileNotFoundError):
                    unused.append((artifact.stat().st_mtime, artifact.stat().st_size, artifact))
        budget = self.config.artifact_cache_bytes
        for _, size, artifact in sorted(unused, reverse=True):
            budget -= size
            if budget < 0:
                artifact.unlink(missing_ok=True)

    @staticmethod
    def _remove_quietly(path: Path) -> None:
        """Remove what only takes space (a leftover, an old release): a failure is logged, never fatal."""
        try:
            fsio.remove_path(path)
        except StorageError as exc:
            log.warning("%s", exc.message)

    async def _housekeeping_forever(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_EVERY)
            for app in list(self.apps.values()):
                if app.unsaved:
                    app.save_quietly()
                try:
                    await asyncio.to_thread(  # a copy of megabytes: never on the event loop
                        logfiles.rotate_if_large, app.log_path, self.config.log_max_bytes, self.config.log_backups
                    )
                except OSError as exc:
                    log.warning("cannot rotate %s: %s", app.log_path, exc)
