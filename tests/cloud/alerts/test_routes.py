"""The alert, webhook, rule and valuation routes over HTTP (the real app, lifespan included,
on SQLite and PostgreSQL): every route refuses a missing token (401), a role below its own
(403) and another bank's object (404); then what each route answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete

from cloud.admin import service as admin_service
from cloud.alerts import service
from cloud.alerts.site_views import AnimalSnapshot, record_herd
from cloud.db.models import Geofence
from tests.cloud.alerts.helpers import EPCS, ROLES, T0, SeededBank, cond, run

World = dict[str, SeededBank]


def _sessions(client: TestClient) -> Any:
    app = client.app
    assert isinstance(app, FastAPI)
    return app.state.sessionmaker


def _new_alert(client: TestClient, bank: SeededBank, subject: str) -> int:
    return run(_sessions(client), bank, [cond(subject=subject, site=bank.ranch,
                                              loan=bank.loan)], now=T0, clear=99).opened[0]


def _new_webhook(client: TestClient, bank: SeededBank) -> int:
    resp = client.post("/v1/webhooks", headers=bank.auth("admin"),
                       json={"url": "http://127.0.0.1:9/hook", "secret": "s" * 16})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {alert} {webhook} {site} {loan} are filled from the owning bank's objects
    needed: str
    body: dict[str, Any] | None = None
    fresh_alert: bool = False  # the call changes the alert: one per call


ROUTES = [
    Route("GET", "/v1/alerts", "viewer"),
    Route("GET", "/v1/alerts/{alert}", "viewer"),
    Route("POST", "/v1/alerts/{alert}/ack", "analyst", {"note": "seen"}, fresh_alert=True),
    Route("POST", "/v1/alerts/{alert}/resolve", "analyst", {}, fresh_alert=True),
    Route("POST", "/v1/alerts/{alert}/comments", "analyst", {"text": "hello"}),
    Route("GET", "/v1/webhooks", "admin"),
    Route("POST", "/v1/webhooks", "admin", {"url": "https://example.test/h",
                                            "secret": "0123456789abcdef"}),
    Route("DELETE", "/v1/webhooks/{webhook}", "admin"),
    Route("GET", "/v1/rules", "admin"),
    Route("PUT", "/v1/rules", "admin", {"site_id": "{site}", "params": {"cusum_h": 5}}),
    Route("GET", "/v1/loans/{loan}/valuation", "viewer"),
    Route("GET", "/v1/sites/{site}/herd", "viewer"),
    Route("GET", "/v1/sites/{site}/inventory", "viewer"),
    Route("GET", "/v1/sites/{site}/positions", "viewer"),
    Route("GET", "/v1/sites/{site}/weigh-tickets", "viewer"),
]
OWNED = ("{alert}", "{webhook}", "{site}", "{loan}")


def _call(client: TestClient, route: Route, owner: SeededBank, headers: dict[str, str],
          subject: Callable[[], str]) -> Any:
    ids: dict[str, str] = {"{site}": str(owner.ranch_id),
                           "{loan}": str(owner.loan_ids[owner.loan])}
    if "{alert}" in route.path:
        ids["{alert}"] = str(_new_alert(client, owner, subject()))
    if "{webhook}" in route.path:
        ids["{webhook}"] = str(_new_webhook(client, owner))
    path = route.path
    body = dict(route.body) if route.body is not None else None
    for key, value in ids.items():
        path = path.replace(key, value)
        if body is not None and body.get("site_id") == key:
            body["site_id"] = int(value)
    return client.request(route.method, path, headers=headers, json=body)


def test_every_route_checks_token_role_and_bank(client: TestClient, world: World) -> None:
    alpha, beta = world["alpha"], world["beta"]
    counter = iter(range(10_000))

    def subject() -> str:
        return f"SUBJ{next(counter)}"

    paths = {(r.method, r.path) for r in ROUTES}
    spec = client.get("/openapi.json").json()["paths"]
    for method, path in paths:  # the table covers what the app serves under these prefixes
        templated = path
        for name, param in (("{alert}", "{alert_id}"), ("{webhook}", "{webhook_id}"),
                            ("{site}", "{site_id}"), ("{loan}", "{loan_id}")):
            templated = templated.replace(name, param)
        assert method.lower() in spec[templated], (method, templated)

    for route in ROUTES:
        where = f"{route.method} {route.path}"
        assert _call(client, route, alpha, {}, subject).status_code == 401, where
        bad = _call(client, route, alpha, {"Authorization": "Bearer pw_nope_nope"}, subject)
        assert bad.status_code == 401, where
        for role in ROLES[:ROLES.index(route.needed)]:
            resp = _call(client, route, alpha, alpha.auth(role), subject)
            assert resp.status_code == 403, (where, role)
            assert resp.json()["reason"] == "forbidden"
        for role in ROLES[ROLES.index(route.needed):]:
            resp = _call(client, route, alpha, alpha.auth(role), subject)
            assert resp.status_code in (200, 201, 204), (where, role, resp.text)
        if any(name in route.path or name in str(route.body) for name in OWNED):
            # beta's staff, with every role the route allows, on alpha's objects
            resp = _call(client, route, alpha, beta.auth("admin"), subject)
            assert resp.status_code == 404, (where, resp.text)
            assert resp.json()["reason"] == "not_found"


def test_lists_show_only_the_callers_bank(client: TestClient, world: World) -> None:
    alpha, beta = world["alpha"], world["beta"]
    mine = _new_alert(client, alpha, "MINE")
    theirs = _new_alert(client, beta, "THEIRS")
    _new_webhook(client, beta)
    ids = [a["id"] for a in client.get("/v1/alerts", headers=alpha.auth("viewer"))
           .json()["items"]]
    assert ids == [mine] and theirs not in ids
    assert client.get("/v1/webhooks", headers=alpha.auth("admin")).json() == []
    assert client.get("/v1/alerts", headers=alpha.auth("viewer"),
                      params={"site_id": beta.ranch_id}).json()["items"] == []


def test_ack_resolve_comment_over_http(client: TestClient, world: World) -> None:
    alpha = world["alpha"]
    alert_id = _new_alert(client, alpha, EPCS[3])
    analyst = alpha.auth("analyst")
    listed = client.get("/v1/alerts", headers=alpha.auth("viewer"),
                        params={"state": "open"}).json()["items"]
    assert listed == [{
        "id": alert_id, "kind": "animal_missing", "severity": "high", "state": "open",
        "site_id": alpha.ranch_id, "site": alpha.ranch, "loan_id": alpha.loan_ids[alpha.loan],
        "loan": alpha.loan, "subject_type": "animal", "subject_id": EPCS[3],
        "summary": f"animal_missing {EPCS[3]}", "event_time": "2026-01-01T00:00:00.000Z",
        "opened_at": "2026-01-01T00:00:00.000Z", "last_seen_at": "2026-01-01T00:00:00.000Z",
        "acknowledged_at": None, "resolved_at": None, "resolved_by": None}]

    ack = client.post(f"/v1/alerts/{alert_id}/ack", headers=analyst)  # no body: fine
    assert ack.status_code == 200 and ack.json()["state"] == "acknowledged"
    again = client.post(f"/v1/alerts/{alert_id}/ack", headers=analyst)
    assert again.status_code == 409 and again.json()["reason"] == "invalid_transition"
    made = client.post(f"/v1/alerts/{alert_id}/comments", headers=analyst,
                       json={"text": "truck seen at the gate"})
    assert made.status_code == 201
    assert made.json()["author"] == alpha.emails["analyst"]
    assert client.post(f"/v1/alerts/{alert_id}/comments", headers=analyst,
                       json={"text": ""}).status_code == 422
    done = client.post(f"/v1/alerts/{alert_id}/resolve", headers=analyst,
                       json={"note": "found"})
    assert done.status_code == 200
    assert (done.json()["state"], done.json()["resolved_by"]) == (
        "resolved", alpha.emails["analyst"])
    assert client.post(f"/v1/alerts/{alert_id}/resolve",
                       headers=analyst).status_code == 409

    detail = client.get(f"/v1/alerts/{alert_id}", headers=alpha.auth("viewer")).json()
    assert detail["evidence"] == {}
    assert [(a["action"], a["actor"], a["to_state"]) for a in detail["audit"]] == [
        ("opened", "system", "open"),
        ("acknowledged", alpha.emails["analyst"], "acknowledged"),
        ("commented", alpha.emails["analyst"], "acknowledged"),
        ("resolved", alpha.emails["analyst"], "resolved")]
    assert detail["audit"][-1]["note"] == "found"
    assert [c["text"] for c in detail["comments"]] == ["truck seen at the gate"]
    assert client.get("/v1/alerts/999999", headers=alpha.auth("viewer")).status_code == 404


def test_alert_list_pages_and_bad_parameters(client: TestClient, world: World) -> None:
    alpha = world["alpha"]
    ids = [run(_sessions(client), alpha, [cond(subject=f"P{i}", site=alpha.ranch)],
               now=T0 + i * 60_000, clear=99).opened[0] for i in range(5)]
    seen: list[int] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, "since": "2026-01-01T00:01:00Z"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/alerts", headers=alpha.auth("viewer"), params=params).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[:0:-1]  # newest first, the first one opened before `since`
    bad: list[tuple[dict[str, Any], int, str | None]] = [
        ({"cursor": "garbage!"}, 400, "bad_cursor"),
        ({"since": "yesterday"}, 422, "invalid_time"),
        ({"limit": 0}, 422, None)]
    for bad_params, code, reason in bad:
        resp = client.get("/v1/alerts", headers=alpha.auth("viewer"), params=bad_params)
        assert resp.status_code == code, bad_params
        if reason:
            assert resp.json()["reason"] == reason


def test_rules_get_and_put(client: TestClient, world: World) -> None:
    alpha = world["alpha"]
    admin = alpha.auth("admin")
    put = client.put("/v1/rules", headers=admin,
                     json={"site_id": None, "params": {"missing_after_ms": 3_600_000}})
    assert put.status_code == 200
    assert put.json()["effective"]["missing_after_ms"] == 3_600_000
    put = client.put("/v1/rules", headers=admin,
                     json={"site_id": alpha.ranch_id, "params": {"clear_after_ticks": 6}})
    assert put.json() == {"site_id": alpha.ranch_id, "params": {"clear_after_ticks": 6},
                          "effective": {**put.json()["effective"], "clear_after_ticks": 6,
                                        "missing_after_ms": 3_600_000}}
    rules = client.get("/v1/rules", headers=admin).json()
    assert rules["bank"] == {"missing_after_ms": 3_600_000}
    assert rules["defaults"]["missing_after_ms"] == 12 * 3_600_000
    assert rules["effective"]["missing_after_ms"] == 3_600_000
    assert rules["sites"] == [{"site_id": alpha.ranch_id, "params": {"clear_after_ticks": 6},
                               "effective": {**rules["effective"], "clear_after_ticks": 6}}]
    bad = client.put("/v1/rules", headers=admin,
                     json={"site_id": None, "params": {"clear_after_tick": 6}})
    assert bad.status_code == 422
    assert bad.json()["reason"] == "invalid_params"
    assert bad.json()["detail"].startswith("clear_after_tick:")
    bad = client.put("/v1/rules", headers=admin,
                     json={"site_id": None, "params": {"eval_interval_ms": "10m"}})
    assert bad.status_code == 422 and "eval_interval_ms" in bad.json()["detail"]


def test_webhook_registry(client: TestClient, world: World) -> None:
    alpha = world["alpha"]
    admin = alpha.auth("admin")
    made = client.post("/v1/webhooks", headers=admin,
                       json={"url": "https://hooks.example.test/pw", "secret": "x" * 32,
                             "kinds": ["animal_missing", "geofence_exit"]})
    assert made.status_code == 201
    hook = made.json()
    assert "secret" not in hook
    assert hook["kinds"] == ["animal_missing", "geofence_exit"]
    assert client.get("/v1/webhooks", headers=admin).json() == [hook]
    for body, key in [({"url": "ftp://x.test/", "secret": "x" * 16}, "url"),
                      ({"url": "https://x.test/", "secret": "x" * 16, "kinds": ["nope"]},
                       "kinds"),
                      ({"url": "https://x.test/", "secret": "x" * 16, "kinds": []},
                       "kinds")]:
        resp = client.post("/v1/webhooks", headers=admin, json=body)
        assert resp.status_code == 422 and resp.json()["detail"].startswith(key), body
    short = client.post("/v1/webhooks", headers=admin,
                        json={"url": "https://x.test/", "secret": "short"})
    assert short.status_code == 422
    assert client.delete(f"/v1/webhooks/{hook['id']}", headers=admin).status_code == 204
    assert client.get("/v1/webhooks", headers=admin).json() == []
    assert client.delete(f"/v1/webhooks/{hook['id']}", headers=admin).status_code == 404


def test_valuation_route(client: TestClient, world: World) -> None:
    alpha = world["alpha"]
    loan_id = alpha.loan_ids[alpha.loan]
    empty = client.get(f"/v1/loans/{loan_id}/valuation", headers=alpha.auth("viewer")).json()
    assert empty == {"loan_id": loan_id, "loan": alpha.loan, "currency": "USD", "now": None,
                     "history": []}
    with _sessions(client).begin() as s:
        for day in range(3):
            service.record_valuation(s, loan_id, T0 + day * 86_400_000,
                                     value=1_250_000.126 - day * 100_000, low=1_200_000,
                                     high=1_300_000, coverage=1.25, ltv=0.8,
                                     status="margin_call" if day else "warning",
                                     livestock=1_000_000, inventory=250_000.126)
    body = client.get(f"/v1/loans/{loan_id}/valuation", headers=alpha.auth("viewer"),
                      params={"since": "2026-01-02T00:00:00Z"}).json()
    assert body["now"] == {"as_of": "2026-01-03T00:00:00.000Z", "value": 1_050_000.13,
                           "low": 1_200_000.0, "high": 1_300_000.0, "coverage": 1.25,
                           "ltv": 0.8, "status": "margin_call", "livestock": 1_000_000.0,
                           "inventory": 250_000.13}
    assert [v["as_of"][:10] for v in body["history"]] == ["2026-01-02", "2026-01-03"]
    assert client.get(f"/v1/loans/{loan_id}/valuation", headers=alpha.auth("viewer"),
                      params={"until": "soon"}).status_code == 422


def test_herd_from_readings_then_from_the_engine(client: TestClient, world: World) -> None:
    alpha = world["alpha"]
    url = f"/v1/sites/{alpha.ranch_id}/herd"
    viewer = alpha.auth("viewer")
    herd = client.get(url, headers=viewer).json()
    # no engine status yet: EPCS[0] was read 1 h before the site's newest reading (present),
    # EPCS[1] 21 h before (beyond the 12 h default window), the others never
    assert (herd["pledged"], herd["present"]) == (6, 1)
    assert herd["missing"] == EPCS[1:]
    assert herd["animals"][0] == {"epc": EPCS[0], "loan": alpha.loan,
                                  "last_seen": "2026-01-01T20:00:00.000Z",
                                  "est_weight_kg": None, "health": None}
    assert herd["animals"][1]["last_seen"] == "2026-01-01T00:00:00.000Z"
    with _sessions(client).begin() as s:
        record_herd(s, site_id=alpha.ranch_id, now_ms=T0, animals=[
            AnimalSnapshot(epc, present=i != 4, last_seen_ms=T0 - i * 1000,
                           est_weight_kg=400.0 + i, health="sick" if i == 2 else "ok")
            for i, epc in enumerate(EPCS)])
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        page = client.get(url, headers=viewer, params=params).json()
        pages += page["animals"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert (page["pledged"], page["present"], page["missing"]) == (6, 5, [EPCS[4]])
    assert [a["epc"] for a in pages] == EPCS
    assert pages[2] == {"epc": EPCS[2], "loan": alpha.loan,
                        "last_seen": "2025-12-31T23:59:58.000Z", "est_weight_kg": 402.0,
                        "health": "sick"}


def test_inventory_positions_and_tickets(client: TestClient, world: World) -> None:
    alpha = world["alpha"]
    viewer = alpha.auth("viewer")
    site = alpha.warehouse_id
    inv = client.get(f"/v1/sites/{site}/inventory", headers=viewer).json()
    assert inv == {"lots": [
        {"lot": "LOT-A", "commodity": "copper_cathode", "pledged_kg": 25_000.0},
        {"lot": "LOT-B", "commodity": "maize", "pledged_kg": 5_000.0},
        {"lot": "LOT-C", "commodity": "maize", "pledged_kg": None}],
        "opening_kg": 30_000.0, "in_kg": 18_000.0, "out_kg": 8_500.0, "ledger_kg": 39_500.0}

    fixes: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/v1/sites/{site}/positions", headers=viewer, params=params).json()
        fixes += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [(f["ts_ms"] - T0, f["lat"]) for f in fixes] == [
        (0, -31.0), (0, -30.999), (1000, -30.998), (1000, -30.997), (2000, -30.996)]
    since = client.get(f"/v1/sites/{site}/positions", headers=viewer,
                       params={"since": str(T0 + 1000)}).json()["items"]
    assert [f["at"] for f in since] == ["2026-01-01T00:00:01.000Z"] * 2 + [
        "2026-01-01T00:00:02.000Z"]
    tickets = client.get(f"/v1/sites/{site}/weigh-tickets", headers=viewer,
                         params={"since": "2026-01-01T00:02:00Z"}).json()
    assert [(t["truck_id"], t["direction"], t["net_kg"]) for t in tickets["items"]] == [
        ("T2", "out", 7_500.0), ("T3", "out", 1_000.0)]
    assert tickets["next_cursor"] is None
    bad = client.get(f"/v1/sites/{site}/positions", headers=viewer, params={"cursor": "x"})
    assert bad.status_code == 400


def test_positions_carry_the_sites_geofences(client: TestClient, world: World) -> None:
    alpha, beta = world["alpha"], world["beta"]
    yard = [(-31.01, -64.01), (-30.99, -64.01), (-30.99, -63.99), (-31.01, -63.99)]
    annex = [(-31.02, -64.0), (-31.01, -64.0), (-31.01, -63.99)]
    sessions = _sessions(client)
    try:
        with sessions.begin() as s:  # as `pledgewatch cloud admin add-geofence` does
            admin_service.add_geofence(s, bank_code="alpha", site_code="alpha-warehouse",
                                       name="yard", points=yard)
            admin_service.add_geofence(s, bank_code="alpha", site_code="alpha-warehouse",
                                       name="annex", points=annex)
            admin_service.add_geofence(s, bank_code="beta", site_code="beta-warehouse",
                                       name="beta yard", points=yard)
            # a row written by hand that is no polygon: left out, not a 500
            s.add(Geofence(site_id=alpha.warehouse_id, name="broken",
                           polygon={"points": [["-31", -64], [-31, "x"], [0, 0]]}))

        viewer = alpha.auth("viewer")
        site = alpha.warehouse_id
        expected = [{"name": "annex", "points": [list(p) for p in annex]},
                    {"name": "yard", "points": [list(p) for p in yard]}]
        pages = []
        cursor = None
        while True:  # every page carries the fences (the dashboard reads the first one)
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            resp = client.get(f"/v1/sites/{site}/positions", headers=viewer, params=params)
            assert resp.status_code == 200, resp.text
            pages.append(resp.json())
            cursor = pages[-1]["next_cursor"]
            if cursor is None:
                break
        assert len(pages) == 3
        assert all(page["geofences"] == expected for page in pages)
        assert sum(len(page["items"]) for page in pages) == 5
        # a site without fences, and the tenancy rule: beta cannot read alpha's site
        ranch = client.get(f"/v1/sites/{alpha.ranch_id}/positions", headers=viewer).json()
        assert ranch == {"items": [], "next_cursor": None, "geofences": []}
        other = client.get(f"/v1/sites/{site}/positions", headers=beta.auth("viewer"))
        assert other.status_code == 404
        assert other.json()["reason"] == "not_found"
        own = client.get(f"/v1/sites/{beta.warehouse_id}/positions",
                         headers=beta.auth("viewer")).json()
        assert [g["name"] for g in own["geofences"]] == ["beta yard"]
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        assert "geofences" in schemas["PositionsPagePublic"]["required"]
        assert set(schemas["GeofencePublic"]["properties"]) == {"name", "points"}
    finally:
        with sessions.begin() as s:  # the PostgreSQL world is shared by later tests
            s.execute(delete(Geofence))


def test_stream_refuses_a_missing_or_bad_token(client: TestClient, world: World) -> None:
    assert client.get("/v1/alerts/stream").status_code == 401
    assert client.get("/v1/alerts/stream",
                      params={"access_token": "pw_bad_token"}).status_code == 401
    resp = client.get("/v1/alerts/stream", headers=world["alpha"].auth("viewer"),
                      params={"last_event_id": "minus-one"})
    assert resp.status_code == 400


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_openapi_documents_the_alert_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/alerts", "/v1/alerts/stream", "/v1/alerts/{alert_id}",
                 "/v1/alerts/{alert_id}/ack", "/v1/webhooks", "/v1/rules",
                 "/v1/loans/{loan_id}/valuation", "/v1/sites/{site_id}/herd"):
        assert path in paths, path
