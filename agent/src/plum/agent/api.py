"""The agent's HTTP API: /healthz, /metrics and /v1/apps (see docs/agent.md)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Callable, Optional

from plum import __version__
from plum.agent import metrics
from plum.agent.spec import SpecError
from plum.agent.supervisor import AppConflict, AppNotFound, Supervisor, Upload
from plum.common import prometheus
from plum.common.artifact import ArtifactError, validate_app_name
from plum.common.httpserver import (
    HTTPError,
    Request,
    Response,
    Router,
    json_response,
    parse_json,
    text_response,
    token_matcher,
)
from plum.common.multipart import MultipartReader, boundary_of
from plum.common.streams import save_stream
from plum.common.vocab import Owner

MAX_SPEC_BYTES = 256 * 1024
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and part headers around the artifact and the spec
MAX_LOG_LINES = 10_000


def _bool_query(request: Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise HTTPError(400, f"query parameter {name}={raw!r}: expected true or false", field=name)


def _translate_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Domain errors become 4xx JSON answers naming the field."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except AppNotFound as exc:
            raise HTTPError(404, exc.message, field="name") from None
        except AppConflict as exc:  # managed elsewhere, or its record is lost
            raise HTTPError(409, exc.message, field="name") from None
        except (ArtifactError, SpecError) as exc:
            raise HTTPError(400, exc.message, field=exc.field) from None

    return wrapped


def _parse_spec(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return parse_json(raw, "spec")
    except HTTPError as exc:
        raise HTTPError(exc.status, exc.message, field="spec") from None


class AgentAPI:
    def __init__(
        self,
        supervisor: Supervisor,
        token: str,
        controller_status: Optional[Callable[[], dict[str, Any]]] = None,  # ControllerSync.status
    ) -> None:
        self.supervisor = supervisor
        self.controller_status = controller_status
        self.router = Router(token_check=token_matcher(token))
        add = self.router.add
        add("GET", "/healthz", self.healthz, auth=False)
        add("GET", "/metrics", self.metrics, auth=not supervisor.config.metrics_public)
        add("GET", "/v1/apps", self.list_apps)
        add("GET", "/v1/apps/{name}", _translate_errors(self.get_app))
        deploy_cap = supervisor.config.max_artifact_bytes + MAX_SPEC_BYTES + FORM_OVERHEAD
        hint = "AGENT_MAX_ARTIFACT_BYTES plus the spec and form overhead"
        add("PUT", "/v1/apps/{name}", _translate_errors(self.deploy), max_body=deploy_cap, limit_hint=hint)
        add("DELETE", "/v1/apps/{name}", _translate_errors(self.remove))
        add("GET", "/v1/apps/{name}/logs", _translate_errors(self.logs))
        for action in ("start", "stop", "restart"):
            add("POST", f"/v1/apps/{{name}}/{action}", _translate_errors(self._action(action)))

    async def healthz(self, request: Request) -> Response:
        config = self.supervisor.config
        health = {"status": "ok", "node_id": config.node_id, "version": __version__, "apps": len(self.supervisor.apps)}
        if self.controller_status is not None:  # "state": "held" when the controller's database changed
            health["controller"] = self.controller_status()
        return json_response(health)

    async def metrics(self, request: Request) -> Response:
        text = metrics.render(self.supervisor)
        return text_response(text, content_type=prometheus.CONTENT_TYPE)

    async def list_apps(self, request: Request) -> Response:
        return json_response({"apps": self.supervisor.statuses()})

    async def get_app(self, request: Request) -> Response:
        return json_response(self.supervisor.status(request.path_params["name"]))

    async def logs(self, request: Request) -> Response:
        name = request.path_params["name"]
        raw = request.query.get("tail", "100")
        if not raw.isdigit() or int(raw) > MAX_LOG_LINES:
            raise HTTPError(400, f"tail={raw!r}: expected a number from 0 to {MAX_LOG_LINES}", field="tail")
        lines = await self.supervisor.tail_logs(name, int(raw))
        return json_response({"name": name, "lines": lines, "path": str(self.supervisor.get(name).log_path)})

    async def remove(self, request: Request) -> Response:
        self.supervisor.check_owner(request.path_params["name"], Owner.LOCAL)
        await self.supervisor.remove(request.path_params["name"], owner=Owner.LOCAL)
        return json_response({"changed": True})

    def _action(self, action: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            self.supervisor.check_owner(request.path_params["name"], Owner.LOCAL)
            operation = getattr(self.supervisor, action)
            changed, status = await operation(request.path_params["name"], owner=Owner.LOCAL)
            return json_response({"changed": changed, "app": status})

        return handler

    async def deploy(self, request: Request) -> Response:
        name = request.path_params["name"]
        validate_app_name(name)  # before reading a possibly large body
        start = _bool_query(request, "start", True)
        upload, spec = await self._read_deploy_body(request)
        changed, status = await self.supervisor.deploy(name, upload, spec, start=start)
        return json_response({"changed": changed, "app": status})

    async def _read_deploy_body(self, request: Request) -> tuple[Optional[Upload], Any]:
        """Stream the 'artifact' part to disk while hashing it; decode the 'spec' part as JSON."""
        reader = MultipartReader(request.chunks(), boundary_of(request.content_type))
        upload: Optional[Upload] = None
        spec: Any = None
        try:
            async for part in reader.parts():
                if part.name == "artifact":
                    if upload is not None:
                        raise HTTPError(400, "more than one 'artifact' part", field="artifact")
                    upload = await self._receive_artifact(reader)
                elif part.name == "spec":
                    raw = await reader.read_small(MAX_SPEC_BYTES)
                    spec = _parse_spec(raw)
                else:
                    raise HTTPError(400, f"unknown form part {part.name!r} (expected 'artifact' and 'spec')")
        except BaseException:
            if upload is not None:
                upload.path.unlink(missing_ok=True)
            raise
        return upload, spec

    async def _receive_artifact(self, reader: MultipartReader) -> Upload:
        def too_large(limit: int) -> HTTPError:
            return HTTPError(413, f"artifact larger than {limit} bytes (AGENT_MAX_ARTIFACT_BYTES)", field="artifact")

        limit = self.supervisor.config.max_artifact_bytes
        path, sha, size = await save_stream(reader.body(), self.supervisor.tmp_dir, limit, too_large)
        if size == 0:
            path.unlink(missing_ok=True)
            raise HTTPError(400, "artifact: the uploaded file is empty", field="artifact")
        return Upload(path, sha)
