"""The cloud's tables (SQLAlchemy 2, typed declarative). One schema for SQLite (the embedded
default, WAL) and PostgreSQL (production); migrations in ``cloud/migrations``.

Tenancy: every row a bank may see carries ``bank_id`` (directly, or through its site/loan), and
every read path filters on it. Money is stored as integer minor units or as Numeric, never
float.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiToken", "Bank", "Base", "Borrower", "Device", "FeedEvent", "Gateway", "Geofence",
    "IngestedBatch", "Loan", "LoanSite", "PledgedAnimal", "PledgedLot", "Position", "Price",
    "Reading", "ReleaseOrder", "Site", "User", "WeighTicket",
]

ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite rowid aliasing needs INTEGER


# Named constraints, so later migrations (SQLite batch mode included) can drop or alter them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON}


def _now() -> Any:
    return func.now()


class Bank(Base):
    __tablename__ = "banks"
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("bank_id", "email"),)
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # viewer | analyst | admin
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    """Bearer tokens, stored as SHA-256 of the secret (the secret is shown once)."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # shown in lists, not secret
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Borrower(Base):
    __tablename__ = "borrowers"
    __table_args__ = (UniqueConstraint("bank_id", "code"),)
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))


class Loan(Base):
    __tablename__ = "loans"
    __table_args__ = (UniqueConstraint("bank_id", "code"),)
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"), index=True)
    borrower_id: Mapped[int] = mapped_column(ForeignKey("borrowers.id"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    outstanding: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    ltv_line: Mapped[Decimal] = mapped_column(Numeric(6, 4))  # e.g. 0.7000
    margin_call_line: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    liquidation_line: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    haircut: Mapped[Decimal] = mapped_column(Numeric(6, 4), default=Decimal("0"))


class Site(Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("bank_id", "code"),)
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # ranch | warehouse
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)


class LoanSite(Base):
    __tablename__ = "loan_sites"
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id", ondelete="CASCADE"),
                                         primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"),
                                         primary_key=True)


class Geofence(Base):
    __tablename__ = "geofences"
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    polygon: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"points": [[lat, lon], ...]}


class Gateway(Base):
    __tablename__ = "gateways"
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(64), unique=True)  # as in the envelope
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_seen_ms: Mapped[int | None] = mapped_column(BigInteger)


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("site_id", "device_id"),)
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str | None] = mapped_column(String(32))
    online: Mapped[bool | None] = mapped_column(Boolean)
    last_seen_ms: Mapped[int | None] = mapped_column(BigInteger)


class PledgedAnimal(Base):
    __tablename__ = "pledged_animals"
    __table_args__ = (Index("ix_animal_epc", "epc"), Index("ix_animal_iso", "iso11784"))
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    epc: Mapped[str | None] = mapped_column(String(64))
    iso11784: Mapped[str | None] = mapped_column(String(16))
    breed: Mapped[str | None] = mapped_column(String(64))
    sex: Mapped[str | None] = mapped_column(String(8))
    birth_date: Mapped[dt.date | None] = mapped_column(Date)
    entry_weight_kg: Mapped[float | None] = mapped_column(Float)
    # the day entry_weight_kg was measured (the import day unless the CSV says otherwise)
    entry_date: Mapped[dt.date | None] = mapped_column(Date)
    pen: Mapped[str | None] = mapped_column(String(32))


class PledgedLot(Base):
    __tablename__ = "pledged_lots"
    __table_args__ = (UniqueConstraint("site_id", "lot_code"),)
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    lot_code: Mapped[str] = mapped_column(String(64))
    sku: Mapped[str] = mapped_column(String(64))
    commodity: Mapped[str] = mapped_column(String(64))
    zone: Mapped[str | None] = mapped_column(String(32))
    quantity: Mapped[Decimal] = mapped_column(Numeric(18, 3))
    unit: Mapped[str] = mapped_column(String(8))  # kg | t | bag | ...


class ReleaseOrder(Base):
    __tablename__ = "release_orders"
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("pledged_lots.id"))
    truck_id: Mapped[str | None] = mapped_column(String(64))
    quantity_kg: Mapped[Decimal] = mapped_column(Numeric(18, 3))
    valid_from_ms: Mapped[int] = mapped_column(BigInteger)
    valid_to_ms: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str | None] = mapped_column(String(64))


class Price(Base):
    __tablename__ = "prices"
    __table_args__ = (Index("ix_price_lookup", "bank_id", "commodity", "as_of"),)
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"))
    commodity: Mapped[str] = mapped_column(String(64))  # e.g. cattle_live, copper_cathode
    unit: Mapped[str] = mapped_column(String(8))  # per kg | per t
    currency: Mapped[str] = mapped_column(String(3))
    price: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    as_of: Mapped[dt.date] = mapped_column(Date)
    source: Mapped[str | None] = mapped_column(String(100))


class IngestedBatch(Base):
    """One row per accepted (gateway, seq): the dedupe key of ingest. ``signature`` is the
    Ed25519 signature of the accepted envelope: a true resend is byte-identical (the gateway
    stores the envelope; Ed25519 is deterministic), so it has the same signature, while a
    different batch under a seen seq (an outbox restored from an old backup) does not and is
    refused as ``seq_reused`` instead of being answered ``duplicate`` and lost. NULL for rows
    stored before migration 0003 (those seqs are deduped on ``(gateway_id, seq)`` alone)."""

    __tablename__ = "ingested_batches"
    __table_args__ = (UniqueConstraint("gateway_id", "seq"),)
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger)
    readings: Mapped[int] = mapped_column(Integer)
    signature: Mapped[bytes | None] = mapped_column(LargeBinary(64))


class Reading(Base):
    """Every reading as it arrived (the typed tables below are projections of some kinds)."""

    __tablename__ = "readings"
    __table_args__ = (Index("ix_readings_site_ts", "site_id", "ts_ms"),
                      Index("ix_readings_site_kind_ts", "site_id", "kind", "ts_ms"))
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    batch_id: Mapped[int] = mapped_column(ForeignKey("ingested_batches.id"))
    device_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    recv_ms: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class WeighTicket(Base):
    __tablename__ = "weigh_tickets"
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    device_id: Mapped[str] = mapped_column(String(128))
    truck_id: Mapped[str | None] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(16))
    gross_kg: Mapped[float] = mapped_column(Float)
    tare_kg: Mapped[float] = mapped_column(Float)
    net_kg: Mapped[float] = mapped_column(Float)
    in_ms: Mapped[int] = mapped_column(BigInteger)
    out_ms: Mapped[int] = mapped_column(BigInteger)


class FeedEvent(Base):
    __tablename__ = "feed_events"
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    device_id: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(16))
    kg: Mapped[float] = mapped_column(Float)
    pen: Mapped[str | None] = mapped_column(String(32))
    ts_ms: Mapped[int] = mapped_column(BigInteger)


class Position(Base):
    __tablename__ = "positions"
    __table_args__ = (Index("ix_positions_site_ts", "site_id", "ts_ms"),)
    id: Mapped[int] = mapped_column(ID, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    device_id: Mapped[str] = mapped_column(String(128))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    ts_ms: Mapped[int] = mapped_column(BigInteger)


# The alert tables (cloud/alerts/models.py) live on this Base too. Importing them here (after
# Base exists: that module imports it) means every user of Base.metadata - the alembic env,
# schema_diff, create_all, tests/cloud/test_migrations.py - sees the whole schema.
from cloud.alerts import models as _alert_models  # noqa: E402,F401
