"""Read services behind the HTTP API: token authentication and the bank-scoped queries.

Every query takes the caller's ``bank_id`` as an explicit argument and filters on it, so a
route cannot forget tenancy: a site id of another bank is indistinguishable from a missing one
(:class:`NotFoundError`, answered as 404, never 403, so ids of other banks do not leak).
Routes hold no SQL; they call these functions with the request's session.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import and_, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cloud.auth import hash_token
from cloud.db.models import ApiToken, Device, Gateway, Loan, Reading, Site, User
from cloud.errors import CloudError

__all__ = [
    "MAX_PAGE",
    "AuthenticationError",
    "BadCursorError",
    "NotFoundError",
    "Principal",
    "ReadingCursor",
    "ReadingsPage",
    "authenticate",
    "database_ok",
    "list_gateways",
    "list_loans",
    "list_sites",
    "site_devices",
    "site_readings",
]

MAX_PAGE: Final = 1000  # most rows one page of readings may hold


class NotFoundError(CloudError):
    """The object does not exist or belongs to another bank (the caller cannot tell which)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found", reason="not_found")


class AuthenticationError(CloudError):
    """No usable bearer token: unknown, revoked, expired, or its user is disabled."""

    def __init__(self, message: str = "invalid or missing bearer token") -> None:
        super().__init__(message, reason="unauthorized")


class BadCursorError(CloudError):
    """A pagination cursor that this API did not issue."""

    def __init__(self) -> None:
        super().__init__("cursor is not one this API issued", reason="bad_cursor")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: one user of one bank, with that user's role."""

    bank_id: int
    user_id: int
    role: str
    token_id: int


def authenticate(session: Session, token: str, *, now: dt.datetime) -> Principal:
    """The principal for a bearer ``token`` at ``now`` (timezone-aware), or
    :class:`AuthenticationError`. Only the token's SHA-256 is looked up.

    ``expires_at`` without a timezone (SQLite drops it) is read as UTC.
    """
    row = session.execute(
        select(ApiToken.id, ApiToken.revoked, ApiToken.expires_at, User.id, User.bank_id,
               User.role, User.disabled)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(token))
    ).one_or_none()
    if row is None:
        raise AuthenticationError()
    token_id, revoked, expires_at, user_id, bank_id, role, disabled = row
    if revoked or disabled:
        raise AuthenticationError()
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=dt.UTC)
        if expires_at <= now:
            raise AuthenticationError()
    return Principal(bank_id=bank_id, user_id=user_id, role=role, token_id=token_id)


def database_ok(session: Session) -> bool:
    """Whether the database answers a trivial query."""
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError:  # any driver error means "not healthy"; the caller answers 503
        return False
    return True


def list_sites(session: Session, *, bank_id: int) -> Sequence[Site]:
    return session.scalars(select(Site).where(Site.bank_id == bank_id).order_by(Site.id)).all()


def _own_site(session: Session, *, bank_id: int, site_id: int) -> Site:
    site = session.scalars(
        select(Site).where(Site.id == site_id, Site.bank_id == bank_id)
    ).one_or_none()
    if site is None:
        raise NotFoundError("site")
    return site


def site_devices(session: Session, *, bank_id: int, site_id: int) -> Sequence[Device]:
    _own_site(session, bank_id=bank_id, site_id=site_id)
    return session.scalars(
        select(Device).where(Device.site_id == site_id).order_by(Device.device_id)
    ).all()


@dataclass(frozen=True, slots=True)
class ReadingCursor:
    """Position after the last reading of a page: readings are ordered by (ts_ms, id)."""

    ts_ms: int
    id: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.ts_ms}:{self.id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, raw: str) -> ReadingCursor:
        try:
            text_ = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
            ts_s, id_s = text_.split(":")
            return cls(ts_ms=int(ts_s), id=int(id_s))
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise BadCursorError() from exc


@dataclass(frozen=True, slots=True)
class ReadingsPage:
    readings: Sequence[Reading]
    next_cursor: ReadingCursor | None  # None: this was the last page


def site_readings(session: Session, *, bank_id: int, site_id: int, since_ms: int | None = None,
                  kind: str | None = None, limit: int = 100,
                  after: ReadingCursor | None = None) -> ReadingsPage:
    """Readings of one site of ``bank_id`` in (ts_ms, id) order, ``ts_ms >= since_ms``,
    optionally of one ``kind``; at most ``limit`` (capped at :data:`MAX_PAGE`) after the
    cursor ``after``. Keyset pagination, so pages stay consistent while rows arrive."""
    _own_site(session, bank_id=bank_id, site_id=site_id)
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Reading).where(Reading.site_id == site_id)
    if since_ms is not None:
        query = query.where(Reading.ts_ms >= since_ms)
    if kind is not None:
        query = query.where(Reading.kind == kind)
    if after is not None:
        query = query.where(or_(Reading.ts_ms > after.ts_ms,
                                and_(Reading.ts_ms == after.ts_ms, Reading.id > after.id)))
    rows = session.scalars(query.order_by(Reading.ts_ms, Reading.id).limit(limit + 1)).all()
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        return ReadingsPage(rows, ReadingCursor(ts_ms=last.ts_ms, id=last.id))
    return ReadingsPage(rows, None)


def list_loans(session: Session, *, bank_id: int) -> Sequence[Loan]:
    return session.scalars(select(Loan).where(Loan.bank_id == bank_id).order_by(Loan.id)).all()


def list_gateways(session: Session, *, bank_id: int) -> Sequence[Gateway]:
    """Gateways of the bank's sites (a gateway belongs to a bank through its site)."""
    return session.scalars(
        select(Gateway).join(Site, Site.id == Gateway.site_id)
        .where(Site.bank_id == bank_id).order_by(Gateway.id)
    ).all()
