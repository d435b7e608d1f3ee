"""The dashboard's static files as the cloud serves them, without a browser: routes, headers,
that nothing is fetched from another origin, and that no server text can reach an HTML sink
in app.js (the browser test checks the rendering itself)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.dashboard import SECURITY_HEADERS
from cloud.settings import CloudSettings

STATIC = resources.files("cloud.dashboard") / "static"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = CloudSettings(database_url=f"sqlite:///{tmp_path / 'c.db'}",
                             secret_key="test-secret-not-the-default")
    with TestClient(create_app(settings)) as c:
        yield c


def test_root_and_bare_prefix_redirect_to_the_dashboard(client: TestClient) -> None:
    for path in ("/", "/dashboard"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 307
        assert r.headers["location"] == "/dashboard/"


@pytest.mark.parametrize(("path", "media", "marker"), [
    ("/dashboard/", "text/html", b'<script src="app.js" defer></script>'),
    ("/dashboard/app.js", "text/javascript", b'"use strict";'),
    ("/dashboard/style.css", "text/css", b":root {"),
])
def test_files_are_served_with_their_type_and_security_headers(
        client: TestClient, path: str, media: str, marker: bytes) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(media)
    assert marker in r.content
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value
    assert client.head(path).status_code == 200


@pytest.mark.parametrize("name", ["index.html", "nope.js", "..%2Fapi%2Fapp.py", "%2E%2E"])
def test_unknown_names_are_404_and_nothing_outside_static_is_served(client: TestClient,
                                                                    name: str) -> None:
    r = client.get(f"/dashboard/{name}")
    assert r.status_code == 404
    assert r.json()["reason"] == "not_found"


def test_dashboard_routes_stay_out_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/dashboard")]


def _text(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def test_nothing_is_loaded_from_another_origin() -> None:
    """No CDN, no web font, no tile server: the page must work offline (issue 8)."""
    for name in ("index.html", "app.js", "style.css"):
        urls = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", _text(name), re.I)
        # the SVG namespace is an identifier, not a request
        assert [u for u in urls if u != "http://www.w3.org"] == [], name
    assert "@import" not in _text("style.css")


def test_app_js_has_no_html_sinks() -> None:
    """Server text must only ever become text nodes: none of the APIs that parse HTML."""
    code = _text("app.js")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "DOMParser", "createContextualFragment"):
        assert sink not in code, sink
