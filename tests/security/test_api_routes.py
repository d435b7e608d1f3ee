"""Every ``/v1`` route of the real app (ingest aside: gateways sign their batches) against a
real ``pledgewatch cloud serve`` over HTTP: no token, a malformed, forged, revoked or expired
token, or a disabled user's -> 401; a role below the route's -> 403; another bank's id in the
path, a query filter or a body -> 404 or nothing of theirs; a body over the limit -> 413.

The routes are enumerated from the app itself and each one's required role is read from its
dependencies (``require_<role>``, cloud/api/deps.py), so a route added later is covered
without touching this file - unless it needs something the tables below must say (a new kind
of id in its path, a write route's body), and then the first test fails and says which."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session, sessionmaker

from cloud.alerts import service as alerts
from cloud.api.app import create_app
from cloud.auth import ROLES, has_role, new_token
from cloud.db.models import ApiToken, Bank, Borrower, Loan, LoanSite, Site, User
from cloud.db.session import make_engine, make_sessionmaker
from cloud.domain.model import ALERT_KINDS, Condition
from cloud.settings import CloudSettings
from tests.chaos.support import CloudProcess

MAX_BODY = 64 * 1024
NOW_MS = 1_767_225_600_000
BANKS = ("alpha", "beta")


# -- the routes, as the app declares them ---------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    role: str  # the lowest role allowed
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    has_body: bool

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def writes(self) -> bool:
        return self.method not in ("GET", "HEAD")

    @property
    def streams(self) -> bool:
        return self.id in STREAMS


# Routes that authenticate inside the handler instead of through require_<role> (the SSE
# stream also takes ?access_token= for EventSource clients), with the role they check.
SELF_AUTHENTICATED = {"GET /v1/alerts/stream": "viewer"}
STREAMS = {"GET /v1/alerts/stream"}  # answer forever once authorised: only refusals tested
NOT_BEARER = {"POST /v1/ingest"}  # gateways: Ed25519 signatures (tests/fuzz, tests/cloud)


def _role_of(dependant: Any) -> str | None:
    for dep in dependant.dependencies:
        name = getattr(dep.call, "__name__", "")
        m = re.fullmatch(r"require_(\w+)", name)
        if m:
            return m.group(1)
        found = _role_of(dep)
        if found:
            return found
    return None


def _flat_routes(app: Any) -> list[tuple[str, APIRoute]]:
    """(path, route) of every APIRoute, through FastAPI's lazily included routers."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # an older FastAPI: included routes are flat already
        return [(r.path, r) for r in app.routes if isinstance(r, APIRoute)]
    return [(c.path or c.original_route.path, c.original_route)
            for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def v1_routes() -> list[Route]:
    app = create_app(CloudSettings(_env_file=None,  # type: ignore[call-arg]
                                   database_url="sqlite:///:memory:",
                                   secret_key="route-enumeration"))
    out = []
    for path, r in _flat_routes(app):
        if not path.startswith("/v1/"):
            continue
        for method in sorted((r.methods or set()) - {"HEAD"}):
            rid = f"{method} {path}"
            if rid in NOT_BEARER:
                continue
            role = _role_of(r.dependant) or SELF_AUTHENTICATED.get(rid, "")
            out.append(Route(method, path, role,
                             tuple(p.name for p in r.dependant.path_params),
                             tuple(p.name for p in r.dependant.query_params),
                             r.body_field is not None))
    return out


ROUTES = v1_routes()
IDS = [r.id for r in ROUTES]


# -- the world: two banks with one of everything ------------------------------------------------


@dataclass
class SeededBank:
    code: str
    id: int = 0
    tokens: dict[str, str] = field(default_factory=dict)  # role -> token
    ids: dict[str, int] = field(default_factory=dict)  # path param -> one of its ids


@dataclass
class World:
    base: str
    db_file: Path
    cloud: CloudProcess
    banks: dict[str, SeededBank]
    bad_tokens: dict[str, str]  # revoked, expired, disabled_user (all alpha admins)
    client: httpx.Client

    def call(self, route: Route, *, token: str | None, path_ids: dict[str, int],
             body: Any = None, params: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        url = self.base + route.path.format(**path_ids)
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        return self.client.request(route.method, url, headers=hdrs, params=params,
                                   json=body if body is not None else None)


# which of a bank's ids each path parameter names (a new one must be added here)
PATH_IDS = ("site_id", "loan_id", "alert_id", "webhook_id")


def _body(route: Route, bank: SeededBank) -> Any:
    """A valid body for a write route, naming ``bank``'s ids where it names any."""
    bodies: dict[str, Callable[[SeededBank], Any]] = {
        "POST /v1/alerts/{alert_id}/ack": lambda b: {"note": "seen"},
        "POST /v1/alerts/{alert_id}/resolve": lambda b: {"note": "done"},
        "POST /v1/alerts/{alert_id}/comments": lambda b: {"text": "looking into it"},
        "POST /v1/webhooks": lambda b: {"url": "https://hooks.example/pw",
                                        "secret": "0123456789abcdef0123", "kinds": None},
        "PUT /v1/rules": lambda b: {"site_id": b.ids["site_id"], "params": {}},
    }
    if route.id not in bodies:
        pytest.fail(f"{route.id} takes a body: add a valid one to _body() in {__file__}")
    return bodies[route.id](bank)


# write routes whose body names an id of the bank (checked with another bank's id: 404)
BODY_REFERENCES = {"PUT /v1/rules"}


def _add_token(s: Session, user: User, **kw: Any) -> str:
    token, prefix, digest = new_token()
    s.add(ApiToken(user_id=user.id, prefix=prefix, token_hash=digest, **kw))
    return token


def _seed(sessions: sessionmaker[Session]) -> tuple[dict[str, SeededBank], dict[str, str]]:
    banks: dict[str, SeededBank] = {}
    bad: dict[str, str] = {}
    with sessions.begin() as s:
        for code in BANKS:
            b = SeededBank(code)
            bank = Bank(code=code, name=f"Bank {code}")
            s.add(bank)
            s.flush()
            b.id = bank.id
            users = {}
            for role in ROLES:
                users[role] = User(bank_id=bank.id, email=f"{role}@{code}.test", role=role)
                s.add(users[role])
                s.flush()
                b.tokens[role] = _add_token(s, users[role])
            if code == "alpha":
                now = dt.datetime.now(dt.UTC)
                bad["revoked"] = _add_token(s, users["admin"], revoked=True)
                bad["expired"] = _add_token(s, users["admin"],
                                            expires_at=now - dt.timedelta(seconds=1))
                gone = User(bank_id=bank.id, email=f"gone@{code}.test", role="admin",
                            disabled=True)
                s.add(gone)
                s.flush()
                bad["disabled_user"] = _add_token(s, gone)
            borrower = Borrower(bank_id=bank.id, code=f"{code}-borrower", name="Ranch Co")
            s.add(borrower)
            s.flush()
            loan = Loan(bank_id=bank.id, borrower_id=borrower.id, code=f"{code}-loan",
                        currency="USD", outstanding=Decimal("1000000"),
                        ltv_line=Decimal("0.7"), margin_call_line=Decimal("0.8"),
                        liquidation_line=Decimal("0.9"))
            site = Site(bank_id=bank.id, code=f"{code}-ranch", name=f"{code} ranch",
                        kind="ranch", lat=-30.0, lon=-60.0)
            s.add_all([loan, site])
            s.flush()
            s.add(LoanSite(loan_id=loan.id, site_id=site.id))
            b.ids.update(site_id=site.id, loan_id=loan.id)
            banks[code] = b
    for b in banks.values():
        with sessions.begin() as s:
            result = alerts.reconcile(
                s, bank_id=b.id, site_id=b.ids["site_id"], scope_kinds=ALERT_KINDS,
                conditions=[Condition(kind="site_offline", severity="high",
                                      subject_type="site", subject_id=f"{b.code}-ranch",
                                      site_code=f"{b.code}-ranch", loan_code=None,
                                      event_time_ms=NOW_MS,
                                      summary=f"{b.code}-ranch is offline")],
                now_ms=NOW_MS, clear_after_ticks=3,
                site_ids={f"{b.code}-ranch": b.ids["site_id"]},
                loan_ids={f"{b.code}-loan": b.ids["loan_id"]})
            b.ids["alert_id"] = result.opened[0]
    return banks, bad


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("security")
    db_file = tmp / "cloud.db"
    db_url = f"sqlite:///{db_file}"
    with CloudProcess(tmp, db_url, {"PLEDGEWATCH_MAX_BODY_BYTES": str(MAX_BODY)}) as cloud, \
            httpx.Client(timeout=10) as client:
        engine = make_engine(db_url)
        try:
            banks, bad = _seed(make_sessionmaker(engine))
        finally:
            engine.dispose()
        w = World(cloud.base, db_file, cloud, banks, bad, client)
        for b in banks.values():  # webhooks through the API, as an admin makes them
            resp = client.post(f"{cloud.base}/v1/webhooks", json={
                "url": f"https://hooks.example/{b.code}", "secret": "s" * 20, "kinds": None},
                headers={"Authorization": f"Bearer {b.tokens['admin']}"})
            assert resp.status_code == 201, resp.text
            b.ids["webhook_id"] = resp.json()["id"]
        yield w


def _foreign_text(resp: httpx.Response, foreign: SeededBank) -> bool:
    return foreign.code in resp.text


def _assert_401(resp: httpx.Response) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.headers.get("www-authenticate") == "Bearer"
    assert resp.json()["reason"] == "unauthorized"
    assert "alpha" not in resp.text and "beta" not in resp.text


# -- the tests -------------------------------------------------------------------------------


def test_every_route_is_classified() -> None:
    """Each /v1 route has a role (from require_<role> or SELF_AUTHENTICATED), write routes
    need more than viewer, and every path parameter is one this file knows how to fill."""
    assert len(ROUTES) >= 20  # the enumeration sees the included routers
    for route in ROUTES:
        assert route.role in ROLES, f"{route.id}: no role dependency (require_<role>); add " \
                                    "one, or list the route in SELF_AUTHENTICATED"
        if route.writes:
            assert route.role != "viewer", f"{route.id} writes with the viewer role"
        for param in route.path_params:
            assert param in PATH_IDS, f"{route.id}: add {param!r} to PATH_IDS and seed one"


def test_enumeration_matches_openapi(world: World) -> None:
    """The enumeration is complete: the served OpenAPI lists no /v1 operation it missed."""
    spec = world.client.get(f"{world.base}/openapi.json").json()
    served = {f"{m.upper()} {p}" for p, ops in spec["paths"].items() if p.startswith("/v1/")
              for m in ops}
    assert served - NOT_BEARER <= {r.id for r in ROUTES}
    assert served  # (routes hidden from the schema are still enumerated and tested)


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
def test_no_or_bad_token_is_401(world: World, route: Route) -> None:
    alpha = world.banks["alpha"]
    ids = alpha.ids
    prefix = alpha.tokens["admin"].split("_")[1]
    cases: list[tuple[str | None, dict[str, str]]] = [
        (None, {}),
        (None, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}),
        (None, {"Authorization": "Bearer"}),
        ("not-a-token", {}),
        (f"pw_{prefix}_forged-secret", {}),  # a real prefix, another secret
        (alpha.tokens["admin"][:-1], {}),  # one character short
        *((t, {}) for t in world.bad_tokens.values()),
    ]
    for token, headers in cases:
        body = _body(route, alpha) if route.has_body else None
        _assert_401(world.call(route, token=token, path_ids=ids, body=body, headers=headers))


@pytest.mark.parametrize("route", [r for r in ROUTES if r.role != "viewer"],
                         ids=[r.id for r in ROUTES if r.role != "viewer"])
def test_a_role_too_low_is_403(world: World, route: Route) -> None:
    alpha = world.banks["alpha"]
    for role in ROLES:
        if has_role(role, route.role):
            continue
        body = _body(route, alpha) if route.has_body else None
        resp = world.call(route, token=alpha.tokens[role], path_ids=alpha.ids, body=body)
        assert resp.status_code == 403, (role, resp.text)
        assert resp.json()["reason"] == "forbidden"
        assert "alpha-" not in resp.text


@pytest.mark.parametrize("route", [r for r in ROUTES if not r.streams],
                         ids=[r.id for r in ROUTES if not r.streams])
def test_the_lowest_allowed_role_gets_through(world: World, route: Route) -> None:
    """Reads of the bank's own ids answer 200; writes are pointed at an id that does not
    exist (404 proves the token and role were accepted, and changes nothing)."""
    alpha = world.banks["alpha"]
    token = alpha.tokens[route.role]
    if route.writes and route.path_params:
        missing = dict.fromkeys(route.path_params, 999_999)
        body = _body(route, alpha) if route.has_body else None
        resp = world.call(route, token=token, path_ids=missing, body=body)
        assert resp.status_code == 404, resp.text
        return
    body = _body(route, alpha) if route.has_body else None
    resp = world.call(route, token=token, path_ids=alpha.ids, body=body)
    assert 200 <= resp.status_code < 300, resp.text
    assert "beta" not in resp.text


@pytest.mark.parametrize("route", [r for r in ROUTES if r.path_params and not r.streams],
                         ids=[r.id for r in ROUTES if r.path_params and not r.streams])
def test_another_banks_id_in_the_path_is_404(world: World, route: Route) -> None:
    """alpha's admin names beta's rows: not found (never 403: ids of other banks do not
    leak), and nothing of beta's changes (checked at the end of the module)."""
    alpha, beta = world.banks["alpha"], world.banks["beta"]
    body = _body(route, alpha) if route.has_body else None
    for param in route.path_params:
        ids = dict(alpha.ids)
        ids[param] = beta.ids[param]
        resp = world.call(route, token=alpha.tokens["admin"], path_ids=ids, body=body)
        assert resp.status_code == 404, (param, resp.text)
        assert resp.json()["reason"] == "not_found"
        assert not _foreign_text(resp, beta)


@pytest.mark.parametrize("route", [r for r in ROUTES if not r.writes and not r.streams
                                   and set(r.query_params) & set(PATH_IDS)],
                         ids=[r.id for r in ROUTES if not r.writes and not r.streams
                              and set(r.query_params) & set(PATH_IDS)])
def test_another_banks_id_in_a_filter_shows_nothing_of_theirs(world: World,
                                                              route: Route) -> None:
    alpha, beta = world.banks["alpha"], world.banks["beta"]
    for param in set(route.query_params) & set(PATH_IDS):
        resp = world.call(route, token=alpha.tokens["admin"], path_ids=alpha.ids,
                          params={param: beta.ids[param]})
        assert resp.status_code in (200, 404), resp.text
        assert not _foreign_text(resp, beta), resp.text


@pytest.mark.parametrize("route", [r for r in ROUTES if r.id in BODY_REFERENCES],
                         ids=[r.id for r in ROUTES if r.id in BODY_REFERENCES])
def test_another_banks_id_in_a_body_is_404(world: World, route: Route) -> None:
    alpha, beta = world.banks["alpha"], world.banks["beta"]
    resp = world.call(route, token=alpha.tokens["admin"], path_ids=alpha.ids,
                      body=_body(route, beta))
    assert resp.status_code == 404, resp.text


@pytest.mark.parametrize("route", [r for r in ROUTES if r.writes],
                         ids=[r.id for r in ROUTES if r.writes])
def test_a_body_over_the_limit_is_413(world: World, route: Route) -> None:
    alpha = world.banks["alpha"]
    url = world.base + route.path.format(**alpha.ids)
    resp = world.client.request(route.method, url, content=b"{" + b" " * MAX_BODY + b"}",
                                headers={"Authorization": f"Bearer {alpha.tokens['admin']}",
                                         "Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert resp.json()["reason"] == "too_large"


def test_stream_takes_its_token_from_the_query_too_and_refuses_bad_ones(world: World) -> None:
    url = f"{world.base}/v1/alerts/stream"
    for token in ("nope", *world.bad_tokens.values()):
        _assert_401(world.client.get(url, params={"access_token": token}))


def test_nothing_of_the_other_bank_changed(world: World) -> None:
    """Runs after the tests above: beta's alert, webhook and rules are as seeded."""
    beta = world.banks["beta"]
    auth = {"Authorization": f"Bearer {beta.tokens['admin']}"}
    alert = world.client.get(f"{world.base}/v1/alerts/{beta.ids['alert_id']}",
                             headers=auth).json()
    assert alert["state"] == "open" and alert["comments"] == []
    hooks = world.client.get(f"{world.base}/v1/webhooks", headers=auth).json()
    assert [h["id"] for h in hooks] == [beta.ids["webhook_id"]]
    rules = world.client.get(f"{world.base}/v1/rules", headers=auth).json()
    assert rules["sites"] == [] and rules["bank"] == {}
