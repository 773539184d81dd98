"""Routes for apps (zip upload, image apps, list, delete) and artifact downloads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Optional

from plum.common.artifact import DEFAULT_LIMITS, ArtifactError, Limits, inspect_zip
from plum.common.httpserver import HTTPError, Request, Response, json_response
from plum.common.multipart import MultipartReader, boundary_of
from plum.common.streams import save_stream
from plum.controller import api_schemas as s
from plum.controller import validation as v
from plum.controller.api import AGENT, OPERATOR, Context, RouteSpec, no_content, read_body
from plum.controller.apps import APP_NAME_RE, VERSION_RE, app_json
from plum.controller.credentials import OPERATOR as OPERATOR_CALLER
from plum.controller.credentials import Access
from plum.controller.openapi import Doc, Reply
from plum.controller.schema import Array

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
MULTIPART_OVERHEAD = 64 * 1024


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
        taken = Reply("name+version exists", s.ERROR)
        return [
            RouteSpec(
                "POST",
                "/v1/apps/upload",
                self.upload,
                OPERATOR,
                max_body=self.ctx.config.max_artifact_bytes + MULTIPART_OVERHEAD,
                limit_hint=f"CONTROLLER_MAX_ARTIFACT_BYTES={self.ctx.config.max_artifact_bytes} plus form overhead",
                doc=Doc(
                    "Upload an app zip (multipart field 'file'): start.sh and meta.ini at the root",
                    {
                        200: Reply("stored", s.APP),
                        400: Reply("invalid zip", s.ERROR),
                        409: taken,
                        413: Reply("larger than CONTROLLER_MAX_ARTIFACT_BYTES", s.ERROR),
                    },
                    body=s.UPLOAD_FORM,
                ),
            ),
            RouteSpec(
                "POST",
                "/v1/apps/create-image",
                self.create_image,
                OPERATOR,
                doc=Doc("Register an image app", {200: Reply("stored", s.APP), 409: taken}, body=s.IMAGE_APP),
            ),
            RouteSpec(
                "GET",
                "/v1/apps",
                self.list_apps,
                OPERATOR,
                doc=Doc("List apps", {200: Reply("apps", Array(items=s.APP))}),
            ),
            RouteSpec(
                "GET",
                "/v1/apps/docker-images",
                self.docker_images,
                OPERATOR,
                doc=Doc(
                    "Images on the controller host's Docker daemon ([] without Docker)",
                    {200: Reply("images", Array(items=s.DOCKER_IMAGE))},
                ),
            ),
            RouteSpec(
                "DELETE",
                "/v1/apps/{id}",
                self.delete_app,
                OPERATOR,
                doc=Doc(
                    "Delete an app unless a deployment uses it",
                    {204: Reply("deleted"), 404: Reply("no such app", s.ERROR), 409: Reply("in use", s.ERROR)},
                ),
            ),
            RouteSpec(
                "GET",
                "/artifacts/{file}",
                self.artifact,
                AGENT,
                doc=Doc(
                    "Download an uploaded zip (ETag = sha256; If-None-Match gives 304)",
                    {200: Reply("the zip", s.ZIP), 304: Reply("not modified"), 404: Reply("no such artifact", s.ERROR)},
                ),
            ),
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
        body = await read_body(request, s.IMAGE_APP)
        repo, tag = body["imageRepository"], body["imageTag"]
        v.image_ref(f"{repo}:{tag}", "imageRepository")  # as agents will read it
        row = self.ctx.apps.add_image(
            name=body["name"],
            version=body["version"],
            repository=repo,
            tag=tag,
            port_mappings=body.get("portMappings", []),
        )
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
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk


async def _stream_file(fh: Any) -> AsyncIterator[bytes]:
    try:
        while True:
            chunk = await asyncio.to_thread(fh.read, READ_CHUNK)
            if not chunk:
                return
            yield chunk
    finally:
        fh.close()
