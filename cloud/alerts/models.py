"""The alert tables (migration ``0002``), on the same declarative ``Base`` as the registry so
one metadata describes the whole schema.

The rule "at most one active alert per (bank, subject, kind)" is enforced by the database, not
by code: ``alerts.active_key`` holds ``"{bank_id}:{subject_type}:{subject_id}:{kind}"`` while
the alert is open or acknowledged and NULL once it is resolved, under a UNIQUE constraint.
Both SQLite and PostgreSQL let any number of NULLs through a UNIQUE constraint, so resolved
alerts pile up freely while a second *active* one cannot be inserted, even by a concurrent
writer. A CHECK ties the key to the state so the two cannot drift apart.

``alert_events`` is the audit trail and the event log that SSE and webhooks read: its id
only grows (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), and writers serialise on
:class:`AlertWriteLock` so ids become visible in id order (see ``cloud.alerts.service``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db.models import ID, Base

__all__ = [
    "ALERT_STATES", "Alert", "AlertComment", "AlertEvent", "AlertWriteLock", "AnimalStatus",
    "RuleConfig", "Valuation", "Webhook", "WebhookDelivery",
]

ALERT_STATES = ("open", "acknowledged", "resolved")


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("state IN ('open', 'acknowledged', 'resolved')", name="state"),
        # active (open/acknowledged) <=> active_key set: the uniqueness rule depends on it
        CheckConstraint("(state = 'resolved') = (active_key IS NULL)", name="active_key"),
        Index("ix_alerts_bank_opened", "bank_id", "opened_at_ms", "id"),
        Index("ix_alerts_bank_site_state", "bank_id", "site_id", "state"),
    )
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    loan_id: Mapped[int | None] = mapped_column(ForeignKey("loans.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    subject_type: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(128))
    summary: Mapped[str] = mapped_column(String(1000))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    event_time_ms: Mapped[int] = mapped_column(BigInteger)
    opened_at_ms: Mapped[int] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int] = mapped_column(BigInteger)
    acknowledged_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    resolved_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    absent_ticks: Mapped[int] = mapped_column(Integer, default=0)
    active_key: Mapped[str | None] = mapped_column(String(300), unique=True)


class AlertEvent(Base):
    """One transition or comment of one alert: the audit row, and the SSE/webhook event.
    ``payload`` is the alert as the API showed it right after the transition, so a stream
    replayed later shows each event as it was, not the alert's current state."""

    __tablename__ = "alert_events"
    __table_args__ = (
        UniqueConstraint("alert_id", "seq"),
        Index("ix_alert_events_bank_id_id", "bank_id", "id"),
        {"sqlite_autoincrement": True},  # never reuse an id: it is the SSE event id
    )
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per alert
    at_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(String(2000))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class AlertComment(Base):
    __tablename__ = "alert_comments"
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"),
                                          index=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    author: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(String(4000))


class AlertWriteLock(Base):
    """One row (id 1). Every transaction that writes alert events first bumps it, which
    serialises alert writers on both dialects (a row lock on PostgreSQL, the write lock on
    SQLite) so that event ids commit in increasing order and a poller reading ``id > last``
    never skips one committed late."""

    __tablename__ = "alert_write_lock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class Webhook(Base):
    __tablename__ = "webhooks"
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"),
                                         index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))  # needed in clear to sign (HMAC)
    kinds: Mapped[list[str] | None] = mapped_column(JSON)  # None: every kind
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class WebhookDelivery(Base):
    """One event owed to one webhook. Written in the same transaction as the event (an
    outbox), so an event is never lost between commit and dispatch, and retried from here
    after a restart."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_ms"),
    )
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("alert_events.id", ondelete="CASCADE"),
                                          index=True)
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_ms: Mapped[int] = mapped_column(BigInteger)
    last_status: Mapped[int | None] = mapped_column(Integer)  # HTTP status; None: no answer
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at_ms: Mapped[int | None] = mapped_column(BigInteger)


class RuleConfig(Base):
    """Overrides of :class:`cloud.domain.model.RuleParams` for a bank (``site_id`` NULL) or
    one of its sites. ``scope_key`` ("bank:3", "site:17") makes each scope unique on both
    dialects (a UNIQUE over a nullable ``site_id`` would let bank rows repeat)."""

    __tablename__ = "rule_configs"
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"),
                                         index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    scope_key: Mapped[str] = mapped_column(String(64), unique=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_by: Mapped[str] = mapped_column(String(200))


class Valuation(Base):
    """A loan's collateral value at ``ts_ms`` (event time), as the engine stored it."""

    __tablename__ = "valuations"
    __table_args__ = (
        UniqueConstraint("loan_id", "ts_ms"),
        CheckConstraint("status IN ('ok', 'warning', 'margin_call', 'liquidation')",
                        name="status"),
    )
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id", ondelete="CASCADE"))
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    low: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    high: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    livestock: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    inventory: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    coverage: Mapped[float | None] = mapped_column(Float)  # value / outstanding
    ltv: Mapped[float | None] = mapped_column(Float)  # outstanding / value
    status: Mapped[str] = mapped_column(String(16))


class AnimalStatus(Base):
    """The engine's latest view of one pledged animal (present, last seen, estimated weight,
    health), so ``GET /v1/sites/{id}/herd`` need not replay readings."""

    __tablename__ = "animal_status"
    __table_args__ = (UniqueConstraint("site_id", "epc"),)
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    epc: Mapped[str] = mapped_column(String(64))
    present: Mapped[bool] = mapped_column(Boolean)
    last_seen_ms: Mapped[int | None] = mapped_column(BigInteger)
    est_weight_kg: Mapped[float | None] = mapped_column(Float)
    health: Mapped[str | None] = mapped_column(String(16))  # ok | sick | inactive | ...
    updated_ms: Mapped[int] = mapped_column(BigInteger)
