"""The live status page: static files under ui/, served without a token (they hold no data).

The page asks for the operator token itself and sends it only in Authorization headers; every
data call it makes goes through the token-protected API. The headers keep the page from running
inline or foreign scripts and from being framed."""

from __future__ import annotations

from importlib import resources

from plum.common.httpserver import HTTPError, Request, Response
from plum.controller import api_schemas as s
from plum.controller.api import PUBLIC, RouteSpec
from plum.controller.openapi import Doc, Reply
from plum.controller.schema import Raw

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def asset(name: str) -> Response:
    content_type = ASSETS.get(name)
    if content_type is None:
        raise HTTPError(404, f"no such file of the status page: {name}")
    data = resources.files("plum.controller").joinpath("ui").joinpath(name).read_bytes()
    return Response(200, data, content_type, dict(SECURITY_HEADERS))


class UiRoutes:
    """GET /ui (the page) and GET /ui/{name} (its script and style sheet)."""

    def routes(self) -> list[RouteSpec]:
        return [
            RouteSpec(
                "GET",
                "/ui",
                self.page,
                PUBLIC,
                doc=Doc(
                    "The live status page (no token needed: it asks for the operator token and holds no data)",
                    {200: Reply("the page", Raw(media="text/html"))},
                ),
            ),
            RouteSpec(
                "GET",
                "/ui/{name}",
                self.file,
                PUBLIC,
                doc=Doc(
                    "The status page's script and style sheet",
                    {
                        200: Reply("app.js or style.css", Raw(media="text/javascript")),
                        404: Reply("no such file", s.ERROR),
                    },
                ),
            ),
        ]

    async def page(self, request: Request) -> Response:
        return asset("index.html")

    async def file(self, request: Request) -> Response:
        return asset(request.path_params["name"])
