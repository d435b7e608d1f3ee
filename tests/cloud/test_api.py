"""The cloud HTTP app: bearer auth, roles and tenant isolation on every read route, against a
real SQLite file database seeded with two banks; the body limit, /healthz, /metrics, OpenAPI,
settings, and ``cloud.serve`` running under uvicorn in a subprocess."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from pydantic import ValidationError
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from cloud import read
from cloud.api.app import BodyLimitMiddleware, add_error_handlers, create_app
from cloud.api.deps import get_session, require_role
from cloud.auth import has_role, new_token
from cloud.db.models import (
    ApiToken,
    Bank,
    Borrower,
    Device,
    Gateway,
    IngestedBatch,
    Loan,
    Reading,
    Site,
    User,
)
from cloud.settings import DEMO_SECRET, CloudSettings

BANKS = ("alpha", "beta")
ROLES = ("viewer", "analyst", "admin")
READINGS_PER_SITE = 5


def _settings(tmp_path: Path, **overrides: Any) -> CloudSettings:
    values: dict[str, Any] = {"database_url": f"sqlite:///{tmp_path / 'cloud.db'}",
                              "secret_key": "test-secret-not-the-default"}
    values.update(overrides)
    return CloudSettings(_env_file=None, **values)  # type: ignore[call-arg]


# -- seeded world ---------------------------------------------------------------------------


@dataclass
class SeededBank:
    code: str
    id: int = 0
    tokens: dict[str, str] = field(default_factory=dict)  # role -> token
    site_ids: list[int] = field(default_factory=list)
    site_codes: set[str] = field(default_factory=set)
    devices: dict[int, set[str]] = field(default_factory=dict)  # site id -> device ids
    readings: dict[int, list[tuple[int, str, str]]] = field(default_factory=dict)
    loan_codes: set[str] = field(default_factory=set)
    gateway_ids: set[str] = field(default_factory=set)


@dataclass
class World:
    banks: dict[str, SeededBank]
    extra_tokens: dict[str, str]  # revoked, expired, disabled_user, expires_later


def _add_token(s: Session, user: User, *, revoked: bool = False,
               expires_at: dt.datetime | None = None) -> str:
    token, prefix, digest = new_token()
    s.add(ApiToken(user_id=user.id, prefix=prefix, token_hash=digest, revoked=revoked,
                   expires_at=expires_at))
    return token


def _seed(factory: sessionmaker[Session]) -> World:
    banks: dict[str, SeededBank] = {}
    extra: dict[str, str] = {}
    now = dt.datetime.now(dt.UTC)
    with factory() as s, s.begin():
        for n, code in enumerate(BANKS):
            seeded = SeededBank(code=code)
            bank = Bank(code=code, name=f"Bank {code}")
            s.add(bank)
            s.flush()
            seeded.id = bank.id
            users = {}
            for role in ROLES:
                user = User(bank_id=bank.id, email=f"{role}@{code}.test", role=role)
                s.add(user)
                s.flush()
                users[role] = user
                seeded.tokens[role] = _add_token(s, user)
            if code == "alpha":
                extra["revoked"] = _add_token(s, users["admin"], revoked=True)
                extra["expired"] = _add_token(s, users["admin"],
                                              expires_at=now - dt.timedelta(minutes=1))
                extra["expires_later"] = _add_token(s, users["viewer"],
                                                    expires_at=now + dt.timedelta(days=1))
                gone = User(bank_id=bank.id, email=f"gone@{code}.test", role="admin",
                            disabled=True)
                s.add(gone)
                s.flush()
                extra["disabled_user"] = _add_token(s, gone)
            borrower = Borrower(bank_id=bank.id, code=f"{code}-borrower", name="Ranch Co")
            s.add(borrower)
            s.flush()
            for i in (1, 2):
                loan = Loan(bank_id=bank.id, borrower_id=borrower.id, code=f"{code}-loan-{i}",
                            currency="USD", outstanding=Decimal("1000000.50"),
                            ltv_line=Decimal("0.7"), margin_call_line=Decimal("0.8"),
                            liquidation_line=Decimal("0.9"))
                s.add(loan)
                seeded.loan_codes.add(loan.code)
            for kind in ("ranch", "warehouse"):
                site = Site(bank_id=bank.id, code=f"{code}-{kind}", name=f"{code} {kind}",
                            kind=kind, lat=-30.0 - n, lon=-60.0)
                s.add(site)
                s.flush()
                seeded.site_ids.append(site.id)
                seeded.site_codes.add(site.code)
                gw = Gateway(gateway_id=f"{code}-gw-{kind}", site_id=site.id,
                             public_key=bytes(range(32)), last_seq=3)
                s.add(gw)
                seeded.gateway_ids.add(gw.gateway_id)
                devs = {f"{code}-{kind}-reader-{i}" for i in (1, 2)}
                seeded.devices[site.id] = devs
                s.add_all(Device(site_id=site.id, device_id=d, kind="r2000", online=True,
                                 last_seen_ms=1_000) for d in devs)
                batch = IngestedBatch(gateway_id=gw.gateway_id, seq=1, created_ms=1,
                                      received_ms=2, readings=READINGS_PER_SITE)
                s.add(batch)
                s.flush()
                rows = []
                for i in range(READINGS_PER_SITE):
                    # two readings share ts_ms 2_000 so the cursor must break ties by id
                    ts = 1_000 * (i + 1) if i != 2 else 2_000
                    kind_ = "position" if i % 2 else "tag_sighting"
                    device = f"{code}-{kind}-reader-{1 + i % 2}"
                    row = Reading(site_id=site.id, batch_id=batch.id, device_id=device,
                                  kind=kind_, ts_ms=ts, recv_ms=ts + 5,
                                  data={"bank": code, "i": i})
                    s.add(row)
                    rows.append(row)
                s.flush()
                seeded.readings[site.id] = sorted((r.ts_ms, r.device_id, r.kind)
                                                  for r in rows)
            banks[code] = seeded
    return World(banks, extra)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(_settings(tmp_path))
    with TestClient(app) as c:
        yield c


@pytest.fixture
def world(client: TestClient) -> World:
    app = client.app
    assert isinstance(app, FastAPI)
    return _seed(app.state.sessionmaker)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the route table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    needed: str  # lowest role allowed
    path: Callable[[SeededBank], str]  # the URL for a target bank
    site_scoped: bool
    ident: Callable[[dict[str, Any]], str]  # what names a row of the response
    expected: Callable[[SeededBank], set[str]]  # the identifiers the target bank owns


def _items(body: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return items


ROUTES = [
    Route("sites", "viewer", lambda b: "/v1/sites", False, lambda r: r["code"],
          lambda b: b.site_codes),
    Route("site_devices", "viewer", lambda b: f"/v1/sites/{b.site_ids[0]}/devices", True,
          lambda r: r["device_id"], lambda b: b.devices[b.site_ids[0]]),
    Route("site_readings", "viewer", lambda b: f"/v1/sites/{b.site_ids[0]}/readings", True,
          lambda r: r["device_id"], lambda b: {d for _, d, _ in b.readings[b.site_ids[0]]}),
    Route("loans", "viewer", lambda b: "/v1/loans", False, lambda r: r["code"],
          lambda b: b.loan_codes),
    Route("gateways", "admin", lambda b: "/v1/gateways", False, lambda r: r["gateway_id"],
          lambda b: b.gateway_ids),
]
ROUTE_IDS = [r.name for r in ROUTES]


# the alert package's routes have their own token/role/bank matrix in
# tests/cloud/alerts/test_routes.py (the SSE stream's in tests/cloud/alerts/test_stream.py)
ALERT_GET_ROUTES = {
    "/v1/alerts", "/v1/alerts/{alert_id}", "/v1/alerts/stream", "/v1/webhooks", "/v1/rules",
    "/v1/loans/{loan_id}/valuation", "/v1/sites/{site_id}/herd",
    "/v1/sites/{site_id}/inventory", "/v1/sites/{site_id}/positions",
    "/v1/sites/{site_id}/weigh-tickets",
}


def test_route_table_covers_every_read_route(client: TestClient) -> None:
    """A new /v1 GET route must be added to ROUTES (and so to the isolation matrix)."""
    paths = client.get("/openapi.json").json()["paths"]
    get_v1 = {p for p, ops in paths.items()
              if p.startswith("/v1/") and "get" in ops} - ALERT_GET_ROUTES
    assert get_v1 == {"/v1/sites", "/v1/sites/{site_id}/devices",
                      "/v1/sites/{site_id}/readings", "/v1/loans", "/v1/gateways"}
    assert len(ROUTES) == len(get_v1)


@pytest.mark.parametrize("case", ["no_token", "bad_token", "wrong_bank", "right_bank"])
@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_tenant_isolation(client: TestClient, world: World, route: Route, case: str) -> None:
    alpha, beta = world.banks["alpha"], world.banks["beta"]
    if case == "no_token":
        resp = client.get(route.path(alpha))
    elif case == "bad_token":
        resp = client.get(route.path(alpha), headers=_auth("pw_00000000_not-a-real-token"))
    elif case == "wrong_bank":  # beta's admin asks for alpha's rows
        resp = client.get(route.path(alpha), headers=_auth(beta.tokens["admin"]))
    else:
        resp = client.get(route.path(alpha), headers=_auth(alpha.tokens["admin"]))

    if case in ("no_token", "bad_token"):
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["reason"] == "unauthorized"
        assert "alpha" not in resp.text and "beta" not in resp.text
        return
    if case == "wrong_bank" and route.site_scoped:
        assert resp.status_code == 404  # not 403: another bank's ids do not exist for beta
        assert resp.json()["reason"] == "not_found"
        assert "alpha" not in resp.text
        return
    assert resp.status_code == 200, resp.text
    owner, foreign = (beta, alpha) if case == "wrong_bank" else (alpha, beta)
    seen = {route.ident(row) for row in _items(resp.json())}
    assert seen == route.expected(owner)
    assert seen  # the seed gave every bank rows on every route
    assert foreign.code not in resp.text


@pytest.mark.parametrize("route", [r for r in ROUTES if r.site_scoped], ids=lambda r: r.name)
def test_site_routes_own_other_site_and_missing_site(client: TestClient, world: World,
                                                     route: Route) -> None:
    alpha = world.banks["alpha"]
    token = _auth(alpha.tokens["viewer"])
    second = f"/v1/sites/{alpha.site_ids[1]}/" + route.path(alpha).rsplit("/", 1)[1]
    resp = client.get(second, headers=token)
    assert resp.status_code == 200
    assert {route.ident(r) for r in _items(resp.json())} <= alpha.devices[alpha.site_ids[1]]
    missing = route.path(alpha).replace(f"/{alpha.site_ids[0]}/", "/999999/")
    assert client.get(missing, headers=token).status_code == 404


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_roles(client: TestClient, world: World, route: Route, role: str) -> None:
    alpha = world.banks["alpha"]
    resp = client.get(route.path(alpha), headers=_auth(alpha.tokens[role]))
    if has_role(role, route.needed):
        assert resp.status_code == 200
    else:
        assert resp.status_code == 403
        assert resp.json()["reason"] == "forbidden"
        assert "alpha-" not in resp.text


def test_gateways_are_admin_only() -> None:
    """The decision the role matrix relies on (see cloud/api/routes/gateways.py)."""
    assert {r.name: r.needed for r in ROUTES}["gateways"] == "admin"
    assert [r.needed for r in ROUTES if r.name != "gateways"] == ["viewer"] * 4


@pytest.mark.parametrize("which,status", [("revoked", 401), ("expired", 401),
                                          ("disabled_user", 401), ("expires_later", 200)])
def test_token_states(client: TestClient, world: World, which: str, status: int) -> None:
    resp = client.get("/v1/sites", headers=_auth(world.extra_tokens[which]))
    assert resp.status_code == status
    if status == 401:
        assert resp.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer ", "Token x",
                                    "pw_x_y"])
def test_malformed_authorization_is_401(client: TestClient, world: World, header: str) -> None:
    resp = client.get("/v1/sites", headers={"Authorization": header})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"


def test_bearer_scheme_is_case_insensitive(client: TestClient, world: World) -> None:
    token = world.banks["alpha"].tokens["viewer"]
    assert client.get("/v1/sites", headers={"Authorization": f"bearer {token}"}
                      ).status_code == 200


def test_token_from_another_bank_with_similar_prefix_is_not_accepted(
        client: TestClient, world: World) -> None:
    """Only the full token's hash is looked up: same prefix, other secret is a 401."""
    prefix = world.banks["alpha"].tokens["admin"].split("_")[1]
    resp = client.get("/v1/sites", headers=_auth(f"pw_{prefix}_forged-secret"))
    assert resp.status_code == 401


def test_require_role_refuses_unknown_role() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        require_role("superuser")


# -- payloads -------------------------------------------------------------------------------


def test_payload_shapes(client: TestClient, world: World) -> None:
    alpha = world.banks["alpha"]
    admin = _auth(alpha.tokens["admin"])
    loan = client.get("/v1/loans", headers=admin).json()[0]
    assert loan["outstanding"] == "1000000.50" and loan["currency"] == "USD"
    assert Decimal(loan["ltv_line"]) == Decimal("0.7")
    gateway = client.get("/v1/gateways", headers=admin).json()[0]
    assert gateway["public_key"] == "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    assert gateway["last_seq"] == 3 and gateway["disabled"] is False
    site = client.get("/v1/sites", headers=admin).json()[0]
    assert set(site) == {"id", "code", "name", "kind", "lat", "lon"}


def _all_readings(client: TestClient, url: str, headers: dict[str, str],
                  **params: Any) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    pages = 0
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        resp = client.get(url, headers=headers, params=query)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        items.extend(body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert pages < 20


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 1000])
def test_readings_pages_cover_everything_once_in_order(client: TestClient, world: World,
                                                       limit: int) -> None:
    alpha = world.banks["alpha"]
    site = alpha.site_ids[0]
    items, pages = _all_readings(client, f"/v1/sites/{site}/readings",
                                 _auth(alpha.tokens["viewer"]), limit=limit)
    assert sorted((r["ts_ms"], r["device_id"], r["kind"]) for r in items) == \
        alpha.readings[site]
    assert len({r["id"] for r in items}) == READINGS_PER_SITE
    keys = [(r["ts_ms"], r["id"]) for r in items]
    assert keys == sorted(keys)
    assert pages == -(-READINGS_PER_SITE // limit)  # a full last page says so: no empty page


def test_readings_since_and_kind(client: TestClient, world: World) -> None:
    alpha = world.banks["alpha"]
    site = alpha.site_ids[0]
    url, headers = f"/v1/sites/{site}/readings", _auth(alpha.tokens["viewer"])
    since = client.get(url, headers=headers, params={"since": 2_000}).json()["items"]
    assert sorted(r["ts_ms"] for r in since) == [2_000, 2_000, 4_000, 5_000]
    positions, _ = _all_readings(client, url, headers, kind="position", limit=1)
    assert [r["kind"] for r in positions] == ["position", "position"]
    both = client.get(url, headers=headers,
                      params={"since": 3_000, "kind": "tag_sighting"}).json()["items"]
    assert [(r["ts_ms"], r["kind"]) for r in both] == [(5_000, "tag_sighting")]
    assert client.get(url, headers=headers, params={"kind": "nope"}).json() == \
        {"items": [], "next_cursor": None}


@pytest.mark.parametrize("params,status,reason", [
    ({"limit": 0}, 422, None),
    ({"limit": read.MAX_PAGE + 1}, 422, None),
    ({"since": -1}, 422, None),
    ({"cursor": "not-a-cursor!"}, 400, "bad_cursor"),
    ({"cursor": "MTIz"}, 400, "bad_cursor"),  # base64 of "123": no separator
])
def test_readings_bad_parameters(client: TestClient, world: World, params: dict[str, Any],
                                 status: int, reason: str | None) -> None:
    alpha = world.banks["alpha"]
    resp = client.get(f"/v1/sites/{alpha.site_ids[0]}/readings",
                      headers=_auth(alpha.tokens["viewer"]), params=params)
    assert resp.status_code == status
    if reason:
        assert resp.json()["reason"] == reason


def test_cursor_roundtrip() -> None:
    cursor = read.ReadingCursor(ts_ms=1_700_000_000_123, id=42)
    assert read.ReadingCursor.decode(cursor.encode()) == cursor


# -- ops: health, metrics, docs, body limit -------------------------------------------------


def test_healthz(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "database": True}


def test_healthz_reports_a_dead_database(client: TestClient, tmp_path: Path) -> None:
    broken = create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    factory = sessionmaker(broken)

    def dead_session() -> Iterator[Session]:
        with factory() as s:
            yield s

    app = client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[get_session] = dead_session
    try:
        resp = client.get("/healthz")
    finally:
        app.dependency_overrides.clear()
        broken.dispose()
    assert resp.status_code == 503
    assert resp.json() == {"status": "degraded", "database": False}


def _sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


def test_metrics_count_requests_by_route_template_and_status(client: TestClient,
                                                             world: World) -> None:
    alpha = world.banks["alpha"]
    viewer = _auth(alpha.tokens["viewer"])
    for site in alpha.site_ids:
        assert client.get(f"/v1/sites/{site}/devices", headers=viewer).status_code == 200
    client.get("/v1/sites")
    client.get("/v1/gateways", headers=viewer)
    client.get("/no/such/path")
    text = client.get("/metrics").text
    name = "pledgewatch_http_requests_total"
    assert _sample(text, name, method="GET", route="/v1/sites/{site_id}/devices",
                   status="200") == 2.0
    assert _sample(text, name, method="GET", route="/v1/sites", status="401") == 1.0
    assert _sample(text, name, method="GET", route="/v1/gateways", status="403") == 1.0
    assert _sample(text, name, method="GET", route="unmatched", status="404") == 1.0
    assert f"/v1/sites/{alpha.site_ids[0]}/" not in text  # raw paths are not labels
    # the ingest service's counters are scraped from it
    assert _sample(text, "pledgewatch_ingest_stored_total") == 0.0
    assert _sample(text, "pledgewatch_ingest_queue_depth") == 0.0


def test_app_restarts_and_ingest_metrics_follow_the_lifespan(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))
    for _ in range(2):  # a second lifespan on the same app must not collide in the registry
        with TestClient(app) as c:
            text = c.get("/metrics").text
            assert _sample(text, "pledgewatch_ingest_stored_total") == 0.0
            assert c.get("/healthz").status_code == 200
        # stopped: the service's collector is gone from the app's registry
        assert b"pledgewatch_ingest_" not in generate_latest(app.state.registry)


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    sites = spec["paths"]["/v1/sites"]["get"]
    assert sites["security"] == [{"HTTPBearer": []}]
    assert "/v1/ingest" in spec["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_declared_oversized_body_is_413_before_routing(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, max_body_bytes=1024))
    with TestClient(app) as c:
        resp = c.post("/v1/ingest", content=b"x" * 2048,
                      headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == 413
        assert resp.json()["reason"] == "too_large"
        ok = c.post("/v1/ingest", content=b"x" * 1000,
                    headers={"Content-Type": "application/octet-stream"})
        assert ok.status_code != 413  # small garbage gets its own 4xx from ingest
        assert 400 <= ok.status_code < 500


def test_streamed_oversized_ingest_body_is_413(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, max_body_bytes=1024))
    with TestClient(app) as c:
        resp = c.post("/v1/ingest", content=_chunks(64 * 1024),
                      headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == 413
        assert resp.json()["reason"] == "too_large"


def _echo_app(limit: int) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=limit)
    add_error_handlers(app)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    @app.post("/json")
    def json_body(body: dict[str, str]) -> dict[str, int]:
        return {"n": len(body)}

    return app


def _chunks(total: int, size: int = 256) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


@pytest.mark.parametrize("total,status", [(1024, 200), (1025, 413), (10 * 1024 * 1024, 413)])
def test_streamed_body_limit(total: int, status: int) -> None:
    """Chunked bodies carry no Content-Length: the limit is counted while reading."""
    with TestClient(_echo_app(1024)) as c:
        resp = c.post("/echo", content=_chunks(total))
        assert resp.status_code == status
        if status == 200:
            assert resp.json() == {"n": total}
        else:
            assert resp.json()["reason"] == "too_large"


def test_streamed_body_limit_applies_to_parsed_bodies() -> None:
    """FastAPI's own body parsing turns read errors into 400; ours stays a 413."""
    big = b'{"a": "' + b"y" * 4096 + b'"}'
    with TestClient(_echo_app(1024)) as c:
        resp = c.post("/json", content=iter([big]),
                      headers={"Content-Type": "application/json"})
        assert resp.status_code == 413
        small = c.post("/json", json={"a": "b"})
        assert small.json() == {"n": 1}


# -- settings -------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PLEDGEWATCH_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_default_secret_refused_outside_demo() -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        CloudSettings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        CloudSettings(_env_file=None, secret_key=DEMO_SECRET)  # type: ignore[call-arg]
    assert CloudSettings(_env_file=None, demo=True).secret_key == DEMO_SECRET  # type: ignore[call-arg]
    assert CloudSettings(_env_file=None, secret_key="s3cret").demo is False  # type: ignore[call-arg]


@pytest.mark.usefixtures("clean_env")
def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEDGEWATCH_SECRET_KEY", "from-env")
    monkeypatch.setenv("PLEDGEWATCH_MAX_BODY_BYTES", "2048")
    settings = CloudSettings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.secret_key, settings.max_body_bytes) == ("from-env", 2048)
    monkeypatch.setenv("PLEDGEWATCH_SECRET_KEY", DEMO_SECRET)
    with pytest.raises(ValidationError):
        CloudSettings(_env_file=None)  # type: ignore[call-arg]


# -- serve ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_runs_uvicorn(tmp_path: Path) -> None:
    port = _free_port()
    db = tmp_path / "served.db"
    code = textwrap.dedent(f"""
        from cloud.serve import serve
        from cloud.settings import CloudSettings
        serve(CloudSettings(_env_file=None, database_url={f"sqlite:///{db}"!r},
                            secret_key="serve-test"), "127.0.0.1", {port}, log_level="info")
    """)
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env["PYTHONPATH"] = str(repo)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health is not None, f"server did not come up: {proc.communicate(timeout=5)}"
        assert health.status_code == 200 and health.json()["database"] is True
        docs = httpx.get(f"{base}/docs", timeout=5)
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        assert httpx.get(f"{base}/v1/sites", timeout=5).status_code == 401
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        # uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is a clean exit
        assert proc.returncode in (0, -signal.SIGTERM), err
        assert "Application shutdown complete" in err
        assert db.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)



def test_token_prefix_survives_underscores_in_the_secret() -> None:
    from cloud.auth import new_token, token_prefix

    for _ in range(200):  # token_urlsafe secrets contain "_" about 1 time in 2
        token, prefix, _hash = new_token()
        assert token_prefix(token) == prefix
    assert token_prefix("pw_abcd1234_se_cr_et") == "abcd1234"
    assert token_prefix("nope") == ""
