"""Webhooks: a bank's admin registers URLs; every alert event of the bank (of the kinds asked
for) is POSTed to them as JSON, signed, and retried until the receiver answers 2xx.

* **Signature.** ``X-Pledgewatch-Timestamp: <unix seconds>`` and ``X-Pledgewatch-Signature:
  sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` (:func:`sign`, :func:`verify`).
  Signing the timestamp with the body lets a receiver refuse replays of old deliveries.
* **Never lost.** The service writes one ``webhook_deliveries`` row per (webhook, event) in
  the same transaction as the event (an outbox); the dispatcher works from those rows, so a
  crash or restart between commit and POST only delays a delivery.
* **Retries.** Non-2xx, timeouts and connection errors are retried with capped, jittered
  exponential backoff (:func:`backoff_ms`, pure); after ``max_attempts`` the delivery is
  marked ``failed``, counted and logged. A URL the client cannot even use (bad scheme) fails
  at once: retrying a config error does not fix it.
* **At least once.** A delivery is claimed with a lease (its ``next_attempt_ms`` moved ahead
  by an optimistic UPDATE), so two cloud processes do not send the same one at the same time;
  a process that dies mid-POST leaves it to be sent again after the lease. Receivers
  de-duplicate on ``X-Pledgewatch-Event-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from cloud.alerts.models import AlertEvent, Webhook, WebhookDelivery
from cloud.alerts.service import InvalidParamsError
from cloud.alerts.timefmt import iso
from cloud.domain.model import ALERT_KINDS
from cloud.read import NotFoundError

__all__ = [
    "EVENT_ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "DispatcherConfig",
    "DispatcherStats", "WebhookDispatcher", "backoff_ms", "create_webhook", "delete_webhook",
    "event_body", "list_webhooks", "sign", "verify",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Pledgewatch-Signature"
TIMESTAMP_HEADER: Final = "X-Pledgewatch-Timestamp"
EVENT_ID_HEADER: Final = "X-Pledgewatch-Event-Id"
MIN_SECRET_LEN: Final = 16
MAX_ERROR_LEN: Final = 500


# -- signing ----------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Pledgewatch-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp_header: str, signature_header: str, body: bytes, *,
           now_s: float, tolerance_s: float = 300.0) -> bool:
    """What a receiver does: the signature matches (constant-time compare) and the timestamp
    is within ``tolerance_s`` of its clock."""
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        return False
    if abs(now_s - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature_header)


def backoff_ms(attempt: int, *, base_ms: int, cap_ms: int, jitter: float) -> int:
    """Delay before retry number ``attempt`` (1 = the first retry): ``base * 2**(attempt-1)``
    capped at ``cap_ms``, scaled into [50 %, 100 %) by ``jitter`` in [0, 1) so receivers that
    failed together are not hit together again."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    raw = min(cap_ms, base_ms * 2 ** min(attempt - 1, 62))
    return int(raw * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0)))


# -- registry (admin API) ---------------------------------------------------------------------


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidParamsError("url", "must be an absolute http:// or https:// URL")
    if len(url) > 2000:
        raise InvalidParamsError("url", "longer than 2000 characters")
    return url


def _check_kinds(kinds: Sequence[str] | None) -> list[str] | None:
    if kinds is None:
        return None
    unknown = sorted(set(kinds) - set(ALERT_KINDS))
    if unknown:
        raise InvalidParamsError("kinds", f"unknown alert kinds {unknown}")
    if not kinds:
        raise InvalidParamsError("kinds", "an empty list would match nothing; use null for "
                                          "every kind")
    return sorted(set(kinds))


def _public(hook: Webhook) -> dict[str, Any]:
    return {"id": hook.id, "url": hook.url, "kinds": hook.kinds, "active": hook.active,
            "created_at": iso(hook.created_at_ms)}


def list_webhooks(session: Session, *, bank_id: int) -> list[dict[str, Any]]:
    """The bank's active webhooks (secrets are never shown again)."""
    return [_public(h) for h in session.scalars(
        select(Webhook).where(Webhook.bank_id == bank_id, Webhook.active.is_(True))
        .order_by(Webhook.id))]


def create_webhook(session: Session, *, bank_id: int, url: str, secret: str,
                   kinds: Sequence[str] | None, now_ms: int) -> dict[str, Any]:
    """Register a webhook; it receives events written from now on. Raises
    :class:`InvalidParamsError` (422) for a bad URL, short secret or unknown kinds."""
    if len(secret) < MIN_SECRET_LEN or len(secret) > 200:
        raise InvalidParamsError("secret", f"must be {MIN_SECRET_LEN} to 200 characters")
    hook = Webhook(bank_id=bank_id, url=_check_url(url), secret=secret,
                   kinds=_check_kinds(kinds), active=True, created_at_ms=now_ms)
    session.add(hook)
    session.flush()
    return _public(hook)


def delete_webhook(session: Session, *, bank_id: int, webhook_id: int) -> None:
    """Deactivate the webhook and cancel what it was still owed; another bank's: NotFound."""
    hook = session.scalar(select(Webhook).where(Webhook.id == webhook_id,
                                                Webhook.bank_id == bank_id,
                                                Webhook.active.is_(True)))
    if hook is None:
        raise NotFoundError("webhook")
    hook.active = False
    session.execute(update(WebhookDelivery)
                    .where(WebhookDelivery.webhook_id == webhook_id,
                           WebhookDelivery.state == "pending")
                    .values(state="cancelled"))
    session.flush()


# -- the dispatcher ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DispatcherConfig:
    poll_s: float = 1.0  # how often due deliveries are looked for
    timeout_s: float = 10.0  # per POST
    max_attempts: int = 8  # then the delivery is marked failed
    base_backoff_ms: int = 5_000
    max_backoff_ms: int = 30 * 60_000
    lease_ms: int = 60_000  # a claimed delivery is not claimed again for this long
    batch: int = 50  # deliveries claimed per poll
    concurrency: int = 8  # POSTs in flight


@dataclasses.dataclass
class DispatcherStats:
    delivered: int = 0
    retried: int = 0  # attempts that failed and were rescheduled
    gave_up: int = 0  # deliveries marked failed
    cancelled: int = 0  # owed to a webhook deleted meanwhile
    errors: int = 0  # dispatcher loop errors (database unavailable ...)


@dataclasses.dataclass(frozen=True, slots=True)
class _Job:
    delivery_id: int
    attempts: int
    event_id: int
    url: str
    secret: str
    body: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class _Outcome:
    delivery_id: int
    ok: bool
    status: int | None
    error: str | None
    permanent: bool = False


class WebhookDispatcher:
    """Sends due ``webhook_deliveries`` with ``httpx.AsyncClient``; database work runs in
    worker threads (the store API is synchronous). ``start``/``stop`` from the app lifespan;
    :meth:`run_once` is one poll, for tests."""

    def __init__(self, *, sessions: sessionmaker[Session], clock_ms: Callable[[], int],
                 config: DispatcherConfig | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 rng: Callable[[], float] = random.random) -> None:
        self.sessions = sessions
        self.clock_ms = clock_ms
        self.config = config or DispatcherConfig()
        self.stats = DispatcherStats()
        self._transport = transport
        self._rng = rng
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.config.timeout_s,
                                         transport=self._transport, follow_redirects=False,
                                         headers={"User-Agent": "pledgewatch-webhooks/1"})
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="webhook-dispatcher")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception:  # the loop must outlive a database outage; counted, logged
                self.stats.errors += 1
                log.exception("webhook dispatcher poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.config.poll_s)

    async def run_once(self) -> int:
        """Claim the due deliveries, POST them, record the outcomes. Returns how many."""
        if self._client is None:
            raise RuntimeError("start() the dispatcher first")
        now = self.clock_ms()
        jobs = await asyncio.to_thread(self._claim, now)
        if not jobs:
            return 0
        gate = asyncio.Semaphore(self.config.concurrency)

        async def send(job: _Job) -> _Outcome:
            async with gate:
                return await self._post(job)

        outcomes = await asyncio.gather(*(send(j) for j in jobs))
        await asyncio.to_thread(self._record, {j.delivery_id: j for j in jobs}, outcomes)
        return len(jobs)

    def _claim(self, now_ms: int) -> list[_Job]:
        cfg = self.config
        with self.sessions.begin() as s:
            due = s.execute(
                select(WebhookDelivery.id, WebhookDelivery.next_attempt_ms)
                .where(WebhookDelivery.state == "pending",
                       WebhookDelivery.next_attempt_ms <= now_ms)
                .order_by(WebhookDelivery.id).limit(cfg.batch)).all()
            claimed = []
            for delivery_id, due_ms in due:
                result = s.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery_id,
                           WebhookDelivery.state == "pending",
                           WebhookDelivery.next_attempt_ms == due_ms)
                    .values(next_attempt_ms=now_ms + cfg.lease_ms))
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(delivery_id)
            if not claimed:
                return []
            rows = s.execute(
                select(WebhookDelivery.id, WebhookDelivery.attempts, AlertEvent.id,
                       AlertEvent.payload, Webhook.url, Webhook.secret, Webhook.active)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .join(AlertEvent, AlertEvent.id == WebhookDelivery.event_id)
                .where(WebhookDelivery.id.in_(claimed))
                .order_by(WebhookDelivery.id)).all()
            jobs = []
            for delivery_id, attempts, event_id, payload, url, secret, active in rows:
                if not active:
                    s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                              .values(state="cancelled"))
                    self.stats.cancelled += 1
                    continue
                jobs.append(_Job(delivery_id, attempts, event_id, url, secret,
                                 event_body(event_id, payload)))
            return jobs

    async def _post(self, job: _Job) -> _Outcome:
        assert self._client is not None
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json",
                   EVENT_ID_HEADER: str(job.event_id),
                   TIMESTAMP_HEADER: str(timestamp),
                   SIGNATURE_HEADER: sign(job.secret, timestamp, job.body)}
        try:
            resp = await self._client.post(job.url, content=job.body, headers=headers)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return _Outcome(job.delivery_id, False, None, f"bad url: {exc}", permanent=True)
        except httpx.HTTPError as exc:  # timeouts, refused connections, protocol errors
            return _Outcome(job.delivery_id, False, None,
                            f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LEN])
        ok = 200 <= resp.status_code < 300
        return _Outcome(job.delivery_id, ok, resp.status_code,
                        None if ok else f"HTTP {resp.status_code}")

    def _record(self, jobs: Mapping[int, _Job], outcomes: Iterable[_Outcome]) -> None:
        cfg = self.config
        now = self.clock_ms()
        with self.sessions.begin() as s:
            for out in outcomes:
                attempts = jobs[out.delivery_id].attempts + 1
                values: dict[str, Any] = {"attempts": attempts, "last_status": out.status,
                                          "last_error": out.error}
                if out.ok:
                    values.update(state="delivered", delivered_at_ms=now)
                    self.stats.delivered += 1
                elif out.permanent or attempts >= cfg.max_attempts:
                    values["state"] = "failed"
                    self.stats.gave_up += 1
                    job = jobs[out.delivery_id]
                    log.warning("webhook delivery %d of event %d to %s failed after %d "
                                "attempt(s), giving up: %s", out.delivery_id, job.event_id,
                                job.url, attempts, out.error)
                else:
                    values["next_attempt_ms"] = now + backoff_ms(
                        attempts, base_ms=cfg.base_backoff_ms, cap_ms=cfg.max_backoff_ms,
                        jitter=self._rng())
                    self.stats.retried += 1
                s.execute(update(WebhookDelivery)
                          .where(WebhookDelivery.id == out.delivery_id).values(**values))


def event_body(event_id: int, payload: Mapping[str, Any]) -> bytes:
    """The POST body of one event: the SSE ``data`` object (alert + action + event_id)."""
    return json.dumps({**payload, "event_id": event_id}, separators=(",", ":"),
                      sort_keys=True).encode()
