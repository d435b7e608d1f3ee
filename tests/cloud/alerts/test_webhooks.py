"""Webhooks end to end with a real HTTP receiver on a loopback port: it checks the HMAC
signature itself (hashlib/hmac, not our code), a receiver failing twice then succeeding gets
the event through retries, a receiver that never answers 2xx is given up on after
``max_attempts`` (counted), a dispatcher restart loses nothing, and the kinds filter and
deletion are honoured. Plus the pure parts: backoff and ``verify``."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from cloud.alerts import webhooks
from cloud.alerts.models import Webhook, WebhookDelivery
from cloud.alerts.webhooks import DispatcherConfig, WebhookDispatcher
from cloud.read import NotFoundError
from tests.cloud.alerts.conftest import World, make_app
from tests.cloud.alerts.helpers import EPCS, T0, cond, run
from tests.cloud.conftest import Db

SECRET = "correct-horse-battery-staple"


@dataclass
class Delivery:
    status: int
    event_id: int
    body: dict[str, Any]
    signature_ok: bool


@dataclass
class Receiver:
    """Answers the statuses in ``script`` in turn, then ``then`` forever."""

    script: list[int] = field(default_factory=list)
    then: int = 200
    port: int = 0
    got: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, headers: Any, raw: bytes) -> int:
        stamp = headers["X-Pledgewatch-Timestamp"]
        expected = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + raw,
                                        hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(expected, headers["X-Pledgewatch-Signature"]) and abs(
            time.time() - int(stamp)) < 300
        with self.lock:
            status = self.script.pop(0) if self.script else self.then
            self.got.append(Delivery(status, int(headers["X-Pledgewatch-Event-Id"]),
                                     json.loads(raw), ok))
        return status

    def delivered(self) -> list[Delivery]:
        with self.lock:
            return [d for d in self.got if d.status == 200]


@contextmanager
def receiver(**kwargs: Any) -> Iterator[Receiver]:
    rec = Receiver(**kwargs)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            status = rec.answer(self.headers, raw)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="webhook-receiver")
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _deliveries(db: Db) -> list[tuple[int, str, int, int | None]]:
    with db.sessions() as s:
        return [(d.event_id, d.state, d.attempts, d.last_status)
                for d in s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))]


def test_signed_delivery_with_retries_through_the_app(db: Db, world: World) -> None:
    alpha = world["alpha"]
    with receiver(script=[500, 502]) as rec, TestClient(make_app(db.url)) as client:
        made = client.post("/v1/webhooks", headers=alpha.auth("admin"),
                           json={"url": rec.url, "secret": SECRET,
                                 "kinds": ["animal_missing"]})
        assert made.status_code == 201
        app = client.app
        assert isinstance(app, FastAPI)
        opened = run(app.state.sessionmaker, alpha,
                     [cond(subject=EPCS[2], site=alpha.ranch),
                      cond("tag_inactive", EPCS[3], site=alpha.ranch)], now=T0)
        missing_id = next(i for i in opened.opened
                          if client.get(f"/v1/alerts/{i}", headers=alpha.auth("viewer"))
                          .json()["kind"] == "animal_missing")
        wait_for("the opened event", lambda: len(rec.delivered()) == 1)
        ack = client.post(f"/v1/alerts/{missing_id}/ack", headers=alpha.auth("analyst"))
        assert ack.status_code == 200
        wait_for("the acknowledged event", lambda: len(rec.delivered()) == 2)
        wait_for("the outcome recorded",
                 lambda: [r[1] for r in _deliveries(db)] == ["delivered", "delivered"])
        metrics = client.get("/metrics").text
    assert 'pledgewatch_webhook_deliveries_total{outcome="delivered"} 2.0' in metrics
    assert 'pledgewatch_webhook_deliveries_total{outcome="retried"} 2.0' in metrics

    assert all(d.signature_ok for d in rec.got)
    assert [d.status for d in rec.got] == [500, 502, 200, 200]
    assert len({d.event_id for d in rec.got[:3]}) == 1  # the same event, retried
    first, second = rec.delivered()
    assert (first.body["action"], first.body["id"], first.body["state"]) == (
        "opened", missing_id, "open")
    assert (second.body["action"], second.body["state"]) == ("acknowledged", "acknowledged")
    assert second.body["actor"] == alpha.emails["analyst"]
    assert first.body["event_id"] == first.event_id < second.event_id
    assert all(d.body["kind"] == "animal_missing" for d in rec.got)  # kinds filter
    assert _deliveries(db) == [(first.event_id, "delivered", 3, 200),
                               (second.event_id, "delivered", 1, 200)]


def _register(db: Db, bank_id: int, url: str) -> int:
    with db.sessions.begin() as s:
        if url.startswith("http"):
            return int(webhooks.create_webhook(s, bank_id=bank_id, url=url, secret=SECRET,
                                               kinds=None, now_ms=T0)["id"])
        hook = Webhook(bank_id=bank_id, url=url, secret=SECRET, kinds=None, active=True,
                       created_at_ms=T0)  # bypasses the URL check, like a bad config would
        s.add(hook)
        s.flush()
        return hook.id


def test_gives_up_after_max_attempts_and_survives_a_restart(db: Db, world: World) -> None:
    alpha = world["alpha"]
    config = DispatcherConfig(poll_s=0.02, base_backoff_ms=10, max_backoff_ms=40,
                              max_attempts=3, lease_ms=60_000)

    def clock() -> int:
        return time.time_ns() // 1_000_000

    async def dispatch_until(check: Callable[[], bool]) -> WebhookDispatcher:
        dispatcher = WebhookDispatcher(sessions=db.sessions, clock_ms=clock, config=config)
        await dispatcher.start()
        try:
            deadline = time.monotonic() + 20
            while not check():
                assert time.monotonic() < deadline, "dispatcher made no progress"
                await asyncio.sleep(0.02)
        finally:
            await dispatcher.stop()
        return dispatcher

    with receiver(then=503) as rec:
        _register(db, alpha.id, rec.url)
        _register(db, alpha.id, "mailto:ops@alpha.test")
        run(db.sessions, alpha, [cond(subject=EPCS[2], site=alpha.ranch)], now=T0)
        first = asyncio.run(dispatch_until(lambda: len(rec.got) >= 1))
        # a new process picks the owed delivery up from the table
        second = asyncio.run(dispatch_until(
            lambda: all(state == "failed" for _, state, _, _ in _deliveries(db))))

    assert first.stats.gave_up + second.stats.gave_up == 2
    assert first.stats.retried + second.stats.retried == 2  # attempts 1 and 2 at the receiver
    assert [d.status for d in rec.got] == [503, 503, 503]
    assert len({d.event_id for d in rec.got}) == 1
    rows = sorted(_deliveries(db), key=lambda r: r[2])
    assert [(state, attempts, status) for _, state, attempts, status in rows] == [
        ("failed", 1, None), ("failed", 3, 503)]  # a bad URL is not retried


def test_deleting_a_webhook_cancels_what_it_was_owed(db: Db, world: World) -> None:
    alpha = world["alpha"]
    hook_id = _register(db, alpha.id, "http://127.0.0.1:9/never")
    run(db.sessions, alpha, [cond(subject=EPCS[2], site=alpha.ranch)], now=T0)
    assert [state for _, state, _, _ in _deliveries(db)] == ["pending"]
    with db.sessions.begin() as s:
        webhooks.delete_webhook(s, bank_id=alpha.id, webhook_id=hook_id)
    assert [state for _, state, _, _ in _deliveries(db)] == ["cancelled"]
    run(db.sessions, alpha, [cond(subject=EPCS[3], site=alpha.ranch)], now=T0)
    assert len(_deliveries(db)) == 1  # an inactive webhook is owed nothing new
    with db.sessions() as s, pytest.raises(NotFoundError):
        webhooks.delete_webhook(s, bank_id=world["beta"].id, webhook_id=hook_id)


def test_backoff_is_capped_exponential_with_jitter() -> None:
    delays = [webhooks.backoff_ms(n, base_ms=1000, cap_ms=30_000, jitter=0.999999)
              for n in range(1, 8)]
    assert delays == [999, 1999, 3999, 7999, 15999, 29999, 29999]
    assert webhooks.backoff_ms(3, base_ms=1000, cap_ms=30_000, jitter=0.0) == 2000
    assert webhooks.backoff_ms(200, base_ms=1000, cap_ms=30_000, jitter=0.5) == 22_500
    with pytest.raises(ValueError):
        webhooks.backoff_ms(0, base_ms=1000, cap_ms=30_000, jitter=0.5)


def test_verify_accepts_only_the_signed_body_in_time() -> None:
    body = b'{"id":1}'
    sig = webhooks.sign(SECRET, 1_700_000_000, body)
    assert sig == "sha256=" + hmac.new(SECRET.encode(), b"1700000000." + body,
                                       hashlib.sha256).hexdigest()
    assert webhooks.verify(SECRET, "1700000000", sig, body, now_s=1_700_000_100)
    assert not webhooks.verify(SECRET, "1700000000", sig, body + b" ", now_s=1_700_000_100)
    assert not webhooks.verify("other-secret-xxxxxx", "1700000000", sig, body,
                               now_s=1_700_000_100)
    assert not webhooks.verify(SECRET, "1700000001", sig, body, now_s=1_700_000_100)
    assert not webhooks.verify(SECRET, "1700000000", sig, body, now_s=1_700_000_400)
    assert not webhooks.verify(SECRET, "soon", sig, body, now_s=1_700_000_100)
