"""Server-Sent Events against the real app under uvicorn on a loopback port (SQLite and
PostgreSQL): events arrive in order, a reconnect with Last-Event-ID gets exactly what was
missed, a fresh stream starts at "now", another bank's events never show, and the stream
ends when the server shuts down."""

from __future__ import annotations

import httpx

from cloud.alerts import service
from cloud.alerts.runtime import stop_streams
from tests.cloud.alerts.conftest import World, make_app
from tests.cloud.alerts.helpers import EPCS, T0, cond, read_events, run, serve
from tests.cloud.conftest import Db


def test_stream_in_order_and_resume_after_reconnect(db: Db, world: World) -> None:
    alpha, beta = world["alpha"], world["beta"]
    first = run(db.sessions, alpha, [cond(subject=EPCS[2], site=alpha.ranch),
                                     cond("tag_inactive", EPCS[3], site=alpha.ranch)],
                now=T0, clear=1)
    run(db.sessions, beta, [cond(subject=EPCS[2], site=beta.ranch)], now=T0)
    a, b = first.opened
    with db.sessions.begin() as s:
        service.acknowledge(s, a, bank_id=alpha.id, actor="ana", now_ms=T0 + 1)
    app = make_app(db.url)
    with serve(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        url = "/v1/alerts/stream"
        got = read_events(http, url, 3, headers=alpha.auth("viewer"),
                          params={"last_event_id": "0"})
        assert [(e.event, e.data["id"], e.data["action"]) for e in got] == [
            ("alert", a, "opened"), ("alert", b, "opened"), ("alert", a, "acknowledged")]
        assert [e.id for e in got] == sorted(e.id for e in got)
        assert all(e.data["event_id"] == e.id for e in got)
        # each event shows the alert as it was then, not as it is now
        assert got[0].data["state"] == "open" and got[2].data["state"] == "acknowledged"
        assert got[2].data["actor"] == "ana" and got[0].data["site"] == alpha.ranch

        # while disconnected: the condition of b clears, a is resolved by hand
        run(db.sessions, alpha, [cond(subject=EPCS[2], site=alpha.ranch)], now=T0 + 60_000,
            clear=1)
        with db.sessions.begin() as s:
            service.resolve(s, a, bank_id=alpha.id, actor="ana", now_ms=T0 + 120_000)
        resumed = read_events(http, url, 2, headers={
            **alpha.auth("viewer"), "Last-Event-ID": str(got[-1].id)})
        assert [(e.data["id"], e.data["action"], e.data["resolved_by"]) for e in resumed] == [
            (b, "resolved", "auto"), (a, "resolved", "ana")]
        assert resumed[0].id > got[-1].id and resumed[1].id > resumed[0].id

        # a fresh stream (no Last-Event-ID) starts after the newest event; EventSource
        # clients authenticate with ?access_token=
        with http.stream("GET", url, params={"access_token": alpha.tokens["viewer"]}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines) == "retry: 2000"
            new = run(db.sessions, alpha, [cond("geofence_exit", "truck-9",
                                                subject_type="truck", site=alpha.ranch)],
                      now=T0 + 180_000, clear=1, kinds=("geofence_exit",)).opened[0]
            data = next(line for line in lines if line.startswith("data: "))
            assert f'"id":{new},' in data and '"action":"opened"' in data
        # beta's stream never carried alpha's events
        theirs = read_events(http, url, 1, headers=beta.auth("viewer"),
                             params={"last_event_id": "0"})
        assert theirs[0].data["site"] == beta.ranch


def test_open_stream_ends_when_the_server_stops(db: Db, world: World) -> None:
    """uvicorn waits for open responses before it runs the lifespan shutdown, so an SSE
    stream must end by itself when the server is asked to exit (``stop_streams``)."""
    alpha = world["alpha"]
    app = make_app(db.url)
    with serve(app) as base, httpx.Client(base_url=base, timeout=10) as http, \
            http.stream("GET", "/v1/alerts/stream", headers=alpha.auth("viewer")) as resp:
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith(":")) == ": keep-alive"
        stop_streams(app)
        rest = []
        for line in lines:  # ends: the server closes the response at its next poll
            rest.append(line)
            if len(rest) > 50:  # 25 heartbeats: it did not stop
                break
    assert len(rest) <= 50
    assert all(line == "" or line.startswith(":") for line in rest)
