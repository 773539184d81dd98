"""Routes for apps (zip upload, image apps, list, delete) and artifact downloads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Optional

from plum.common import resources
from plum.common.artifact import DEFAULT_LIMITS, ArtifactError, Limits, inspect_zip
from plum.common.httpserver import HTTPError, Request, Response, json_response
from plum.common.multipart import MultipartReader, boundary_of
from plum.common.streams import save_stream
from plum.common.vocab import PROTOCOLS
from plum.controller import validation as v
from plum.controller.api import AGENT, OPERATOR, Context, RouteSpec, no_content, read_json
from plum.controller.apps import APP_NAME_RE, VERSION_RE, app_json
from plum.controller.credentials import OPERATOR as OPERATOR_CALLER
from plum.controller.credentials import Access

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
MULTIPART_OVERHEAD = 64 * 1024
IMAGE_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]{1,5})?(?:/[a-z0-9][a-z0-9._-]*)*")
IMAGE_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def parse_port_mappings(value: Any, field: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise v.bad(field, f"expected a list of {{host, container, serviceName?, protocol?}}, got {v.show(value)}")
    out = []
    for i, raw in enumerate(value):
        prefix = f"{field}[{i}]"
        item = v.obj(raw, prefix)
        v.no_unknown(item, ("host", "container", "serviceName", "protocol"), prefix)
        container = v.integer(item, "container", prefix, minimum=1, maximum=65535)
        if container is None:
            raise v.bad(f"{prefix}.container", "is required")
        mapping: dict[str, Any] = {"container": container}
        host = v.integer(item, "host", prefix, minimum=1, maximum=65535)
        if host is not None:
            mapping["host"] = host
        service = v.string(item, "serviceName", prefix, max_length=128)
        if service:
            mapping["serviceName"] = service
        mapping["protocol"] = v.choice(item, "protocol", PROTOCOLS, prefix, default="tcp")
        out.append(mapping)
    return out


def etag_matches(header: str, etag: str) -> bool:
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


class AppRoutes:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        cap = ctx.config.max_artifact_bytes
        self.limits = Limits(
            max_archive_bytes=cap,
            max_total_bytes=max(DEFAULT_LIMITS.max_total_bytes, cap),
            max_entries=DEFAULT_LIMITS.max_entries,
            max_ratio=DEFAULT_LIMITS.max_ratio,
        )

    def routes(self) -> list[RouteSpec]:
        return [
            RouteSpec(
                "POST",
                "/v1/apps/upload",
                self.upload,
                OPERATOR,
                max_body=self.ctx.config.max_artifact_bytes + MULTIPART_OVERHEAD,
                limit_hint=f"CONTROLLER_MAX_ARTIFACT_BYTES={self.ctx.config.max_artifact_bytes} plus form overhead",
            ),
            RouteSpec("POST", "/v1/apps/create-image", self.create_image, OPERATOR),
            RouteSpec("GET", "/v1/apps", self.list_apps, OPERATOR),
            RouteSpec("GET", "/v1/apps/docker-images", self.docker_images, OPERATOR),
            RouteSpec("DELETE", "/v1/apps/{id}", self.delete_app, OPERATOR),
            RouteSpec("GET", "/artifacts/{file}", self.artifact, AGENT),
        ]

    # -- upload ---------------------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        cap = self.ctx.config.max_artifact_bytes
        boundary = boundary_of(request.content_type)
        reader = MultipartReader(request.chunks(), boundary)
        saved: Optional[tuple[Path, str, int]] = None
        try:
            async for part in reader.parts():
                if part.name != "file":
                    continue
                if saved is not None:
                    raise v.bad("file", "more than one 'file' part; upload one zip per request")
                saved = await self._save_part(reader.body(), cap)
            if saved is None:
                raise v.bad("file", "multipart field 'file' is missing (send the zip as form field 'file')")
            tmp, sha256, size = saved
            try:
                meta = await asyncio.to_thread(inspect_zip, tmp, self.limits)
            except ArtifactError as exc:
                raise HTTPError(400, f"invalid app zip: {exc.message}", field=exc.field) from None
            if not APP_NAME_RE.fullmatch(meta.name):
                raise v.bad("name", f"meta.ini name {v.show(meta.name)} is not valid (letters, digits, '_', '.', '-')")
            if not VERSION_RE.fullmatch(meta.version):
                raise v.bad(
                    "version",
                    f"meta.ini version {v.show(meta.version)} is not valid (letters, digits, '_', '.', '+', '-')",
                )
            services = [{"name": s.name, "protocol": s.protocol, "port": s.port} for s in meta.services]
            row = self.ctx.apps.add_zip(
                name=meta.name, version=meta.version, sha256=sha256, size=size, services=services, tmp=tmp
            )
            saved = None  # moved into place
            return json_response(app_json(row))
        finally:
            if saved is not None:
                with contextlib.suppress(OSError):
                    saved[0].unlink()

    async def _save_part(self, body: AsyncIterator[bytes], cap: int) -> tuple[Path, str, int]:
        """Stream one part to a temp file, hashing as it goes; 413 past the cap."""
        return await save_stream(body, self.ctx.config.tmp_dir, cap, lambda limit: self._too_large(limit, limit + 1))

    @staticmethod
    def _too_large(cap: int, size: int) -> HTTPError:
        return HTTPError(
            413,
            f"artifact larger than CONTROLLER_MAX_ARTIFACT_BYTES={cap} (got at least {size} bytes)",
            field="file",
            maxBytes=cap,
        )

    # -- image apps, list, delete ---------------------------------------------------------------

    async def create_image(self, request: Request) -> Response:
        body = await read_json(request)
        v.no_unknown(body, ("name", "version", "imageRepository", "imageTag", "portMappings"))
        name = v.string(body, "name", required=True, pattern=APP_NAME_RE, what="letters, digits, '_', '.', '-'")
        version = v.string(
            body, "version", required=True, pattern=VERSION_RE, what="letters, digits, '_', '.', '+', '-'"
        )
        repo = v.string(body, "imageRepository", required=True, pattern=IMAGE_REPO_RE, what="a Docker repository")
        tag = v.string(body, "imageTag", default="latest", pattern=IMAGE_TAG_RE, what="a Docker tag")
        v.parsed({"imageRepository": f"{repo}:{tag}"}, "imageRepository", "", resources.validate_image)  # as agents
        mappings = parse_port_mappings(body.get("portMappings"), "portMappings")
        row = self.ctx.apps.add_image(name=name, version=version, repository=repo, tag=tag, port_mappings=mappings)
        return json_response(app_json(row))

    async def list_apps(self, request: Request) -> Response:
        return json_response(self.ctx.apps.listing())

    async def delete_app(self, request: Request) -> Response:
        self.ctx.apps.delete(request.path_params["id"])
        return no_content()

    async def docker_images(self, request: Request) -> Response:
        """Images on the controller host's Docker daemon (as Plum); [] when Docker is unavailable."""
        docker = shutil.which("docker")
        if docker is None:
            return json_response([])
        try:
            proc = await asyncio.create_subprocess_exec(
                docker,
                "images",
                "--format",
                "{{json .}}",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("docker images failed: %s", exc)
            return json_response([])
        images = []
        for line in out.decode("utf-8", "replace").splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                images.append(
                    {
                        "repository": item.get("Repository", ""),
                        "tag": item.get("Tag", ""),
                        "id": item.get("ID", ""),
                        "size": item.get("Size", ""),
                        "created": item.get("CreatedAt", ""),
                    }
                )
        return json_response(images)

    # -- downloads ------------------------------------------------------------------------------

    async def artifact(self, request: Request) -> Response:
        """One uploaded zip, streamed from disk; only files known to the database are served."""
        name = request.path_params["file"]
        row = self.ctx.apps.by_file(name)
        if row is None:
            raise HTTPError(404, f"no such artifact: {name}", field="file")
        nodes = self.ctx.deployments.nodes_of_artifact(row["artifact_id"])
        if not nodes and Access.caller(request).role != OPERATOR_CALLER:
            raise HTTPError(403, f"artifact {name} is assigned to no node: only the operator may download it")
        self.ctx.access.any_node(request, nodes, f"artifact {name} (assigned to {', '.join(nodes) or 'no node'})")
        path = self.ctx.apps.file_path(row)
        etag = f'"{row["sha256"]}"'
        headers = {
            "etag": etag,
            "cache-control": "private, max-age=31536000, immutable",
            "x-content-sha256": row["sha256"],
        }
        if etag_matches(request.headers.get("if-none-match", ""), etag):
            return Response(304, b"", "application/zip", headers)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise HTTPError(404, f"artifact file is missing on the controller: {name}", field="file") from None
        size = os.fstat(fh.fileno()).st_size
        headers["content-length"] = str(size)
        headers["content-disposition"] = f'attachment; filename="{name}"'
        if request.method == "HEAD":
            fh.close()
            return Response(200, _empty(), "application/zip", headers)
        return Response(200, _stream_file(fh), "application/zip", headers)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _stream_file(fh: Any) -> AsyncIterator[bytes]:
    try:
        while True:
            chunk = await asyncio.to_thread(fh.read, READ_CHUNK)
            if not chunk:
                return
            yield chunk
    finally:
        fh.close()
