"""The risk staff dashboard: three static files served by the cloud at ``/dashboard/``.

No build step and nothing fetched from the internet at run time: ``index.html``, ``app.js``
(vanilla JS, charts and the map drawn as inline SVG) and ``style.css`` ship inside the
package and are read once, when the router is built. The page talks only to the ``/v1`` API
of the same origin with the bearer token the user types in, so this module needs no
authentication of its own: the files are public, the data is not.

Every answer carries a strict Content-Security-Policy (scripts and styles from this origin
only, no inline script, requests to this origin only) so that a summary or a device id
that smuggles markup into the page cannot run anything even if a rendering bug let it in.
See docs/dashboard.md.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

__all__ = ["PREFIX", "SECURITY_HEADERS", "router"]

PREFIX: Final = "/dashboard"

_FILES: Final = {  # name -> media type
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # small files, changed only by an upgrade: revalidate instead of serving a stale app.js
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, bytes]:
    """Read the static files once; a missing one fails the app build, not a request."""
    root = resources.files(__name__) / "static"
    return {name: (root / name).read_bytes() for name in _FILES}


def _build_router() -> APIRouter:
    files = _load()
    router = APIRouter(include_in_schema=False)

    def serve(name: str) -> Response:
        return Response(files[name], media_type=_FILES[name], headers=SECURITY_HEADERS)

    @router.api_route("/", methods=["GET", "HEAD"])
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @router.api_route(PREFIX, methods=["GET", "HEAD"])
    def dashboard_no_slash() -> RedirectResponse:
        # relative URLs in index.html resolve against /dashboard/, so keep the slash
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @router.api_route(f"{PREFIX}/", methods=["GET", "HEAD"])
    def index() -> Response:
        return serve("index.html")

    @router.api_route(PREFIX + "/{name}", methods=["GET", "HEAD"])
    def static_file(name: str) -> Response:
        if name not in files or name == "index.html":
            return Response(b'{"reason":"not_found","detail":"no such dashboard file"}',
                            status_code=404, media_type="application/json")
        return serve(name)

    return router


router: Final = _build_router()
