"""Registry operations of ``pledgewatch cloud admin``, as plain functions over a ``Session``.

Each function takes explicit arguments (no environment, no clock unless passed), adds or
changes rows and flushes; the caller owns the transaction (``session_scope``), so a failure
anywhere rolls the whole command back. Expected failures are :class:`AdminError` with a
``reason``: ``not_found``, ``exists``, ``invalid``, ``ambiguous``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.auth import ROLES, new_token, token_prefix
from cloud.db.models import (
    ApiToken,
    Bank,
    Borrower,
    Gateway,
    Geofence,
    Loan,
    LoanSite,
    PledgedAnimal,
    PledgedLot,
    Price,
    ReleaseOrder,
    Site,
    User,
)
from cloud.errors import CloudError

__all__ = [
    "CODE_PATTERN",
    "CURRENCY_PATTERN",
    "MAX_GEOFENCE_POINTS",
    "PRICE_UNITS",
    "PUBLIC_KEY_BYTES",
    "AdminError",
    "GatewayRow",
    "GeofenceRow",
    "LoanRow",
    "SiteRow",
    "TokenRow",
    "add_geofence",
    "add_price",
    "add_release_order",
    "check_code",
    "create_bank",
    "create_token",
    "create_user",
    "disable_gateway",
    "format_points",
    "get_bank",
    "get_site",
    "list_banks",
    "list_gateways",
    "list_geofences",
    "list_loans",
    "list_sites",
    "list_tokens",
    "list_users",
    "parse_points",
    "parse_public_key",
    "register_gateway",
    "remove_geofence",
    "revoke_token",
]

# bank, site, loan, borrower, lot and gateway codes: what a gateway id may be (gateway/config)
CODE_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
CURRENCY_PATTERN: Final = re.compile(r"[A-Z]{3}\Z")
EMAIL_PATTERN: Final = re.compile(r"[^@\s]{1,100}@[^@\s]{1,99}\Z")
PRICE_UNITS: Final = ("kg", "t")
PUBLIC_KEY_BYTES: Final = 32
MAX_NAME: Final = 200
MAX_TOKEN_DAYS: Final = 3650
# a site boundary drawn by hand or from a survey: a few to a few hundred vertices. Every GPS
# fix is tested against every vertex of every fence of its site (cloud.domain.rules), so the
# cap also bounds that cost.
MAX_GEOFENCE_POINTS: Final = 1000
MAX_GEOFENCE_NAME: Final = 100  # geofences.name is VARCHAR(100)


class AdminError(CloudError):
    """A registry operation that cannot be done; ``reason`` says why in one word."""


def check_code(what: str, code: str) -> str:
    if not CODE_PATTERN.match(code):
        raise AdminError(f"{what} code {code!r} must be 1-64 characters of A-Z a-z 0-9 _ . : -",
                         reason="invalid")
    return code


def _check_name(what: str, name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise AdminError(f"{what} must be 1-{MAX_NAME} characters", reason="invalid")
    return name


# -- banks, users, tokens --------------------------------------------------------------------
def get_bank(session: Session, code: str) -> Bank:
    bank = session.scalar(select(Bank).where(Bank.code == code))
    if bank is None:
        raise AdminError(f"no bank {code!r}", reason="not_found")
    return bank


def create_bank(session: Session, *, code: str, name: str) -> Bank:
    check_code("bank", code)
    name = _check_name("bank name", name)
    if session.scalar(select(Bank.id).where(Bank.code == code)) is not None:
        raise AdminError(f"bank {code!r} already exists", reason="exists")
    bank = Bank(code=code, name=name)
    session.add(bank)
    session.flush()
    return bank


def _get_user(session: Session, bank: Bank, email: str) -> User:
    user = session.scalar(select(User).where(User.bank_id == bank.id,
                                             User.email == email.lower()))
    if user is None:
        raise AdminError(f"bank {bank.code!r} has no user {email!r}", reason="not_found")
    return user


def create_user(session: Session, *, bank_code: str, email: str, role: str) -> User:
    bank = get_bank(session, bank_code)
    email = email.strip().lower()
    if not EMAIL_PATTERN.match(email):
        raise AdminError(f"{email!r} is not an e-mail address", reason="invalid")
    if role not in ROLES:
        raise AdminError(f"role must be one of {', '.join(ROLES)}", reason="invalid")
    exists = session.scalar(select(User.id).where(User.bank_id == bank.id,
                                                  User.email == email))
    if exists is not None:
        raise AdminError(f"bank {bank_code!r} already has user {email!r}", reason="exists")
    user = User(bank_id=bank.id, email=email, role=role, disabled=False)
    session.add(user)
    session.flush()
    return user


def create_token(session: Session, *, bank_code: str, email: str,
                 expires_days: int | None = None,
                 now: dt.datetime | None = None) -> tuple[str, ApiToken]:
    """A new bearer token for a user: ``(token, row)``. The token is returned once and never
    stored; the row holds its prefix and SHA-256 only."""
    if expires_days is not None and not 0 < expires_days <= MAX_TOKEN_DAYS:
        raise AdminError(f"expiry must be 1..{MAX_TOKEN_DAYS} days", reason="invalid")
    bank = get_bank(session, bank_code)
    user = _get_user(session, bank, email)
    if user.disabled:
        raise AdminError(f"user {email!r} is disabled", reason="invalid")
    now = now or dt.datetime.now(dt.UTC)
    token, prefix, digest = new_token()
    row = ApiToken(user_id=user.id, prefix=prefix, token_hash=digest, revoked=False,
                   expires_at=None if expires_days is None
                   else now + dt.timedelta(days=expires_days))
    session.add(row)
    session.flush()
    return token, row


def revoke_token(session: Session, prefix: str) -> tuple[ApiToken, bool]:
    """Revoke the token with this prefix (or given whole); ``(row, was_active)``."""
    prefix = token_prefix(prefix) or prefix
    rows = session.scalars(select(ApiToken).where(ApiToken.prefix == prefix)).all()
    if not rows:
        raise AdminError(f"no token with prefix {prefix!r}", reason="not_found")
    if len(rows) > 1:
        raise AdminError(f"{len(rows)} tokens share prefix {prefix!r}; revoke by the whole "
                         "token", reason="ambiguous")
    row = rows[0]
    was_active = not row.revoked
    row.revoked = True
    session.flush()
    return row, was_active


# -- sites and gateways ----------------------------------------------------------------------
def get_site(session: Session, bank: Bank, code: str) -> Site:
    site = session.scalar(select(Site).where(Site.bank_id == bank.id, Site.code == code))
    if site is None:
        raise AdminError(f"bank {bank.code!r} has no site {code!r}", reason="not_found")
    return site


def parse_public_key(text: str) -> bytes:
    """The raw 32-byte Ed25519 public key from its base64 text (what ``pledgewatch edge
    keygen`` prints and writes to ``KEY.pub``)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AdminError("public key is not base64", reason="invalid") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise AdminError(f"public key is {len(raw)} bytes, an Ed25519 key is "
                         f"{PUBLIC_KEY_BYTES}", reason="invalid")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise AdminError(f"not an Ed25519 public key: {exc}", reason="invalid") from None
    return raw


def register_gateway(session: Session, *, bank_code: str, site_code: str, gateway_id: str,
                     public_key: bytes) -> Gateway:
    check_code("gateway", gateway_id)
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise AdminError(f"public key must be {PUBLIC_KEY_BYTES} bytes", reason="invalid")
    bank = get_bank(session, bank_code)
    site = get_site(session, bank, site_code)
    if session.scalar(select(Gateway.id).where(Gateway.gateway_id == gateway_id)) is not None:
        raise AdminError(f"gateway {gateway_id!r} is already registered", reason="exists")
    gw = Gateway(gateway_id=gateway_id, site_id=site.id, public_key=public_key, disabled=False,
                 last_seq=0)
    session.add(gw)
    session.flush()
    return gw


def disable_gateway(session: Session, gateway_id: str) -> tuple[Gateway, bool]:
    """Refuse further batches from a gateway; ``(row, was_enabled)``."""
    gw = session.scalar(select(Gateway).where(Gateway.gateway_id == gateway_id))
    if gw is None:
        raise AdminError(f"no gateway {gateway_id!r}", reason="not_found")
    was_enabled = not gw.disabled
    gw.disabled = True
    session.flush()
    return gw, was_enabled


# -- release orders and prices ---------------------------------------------------------------
def _decimal(what: str, value: str | Decimal, *, places: int) -> Decimal:
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise AdminError(f"{what} {value!r} is not a number", reason="invalid") from None
    if not d.is_finite() or d <= 0:
        raise AdminError(f"{what} must be a positive number", reason="invalid")
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise AdminError(f"{what} has more than {places} decimal places", reason="invalid")
    return d


def add_release_order(session: Session, *, bank_code: str, site_code: str,
                      quantity_kg: str | Decimal, valid_from_ms: int, valid_to_ms: int,
                      lot_code: str | None = None, truck_id: str | None = None,
                      reference: str | None = None) -> ReleaseOrder:
    """A bank's permission to take ``quantity_kg`` out of a site (optionally one lot, one
    truck) between two instants; later issues match weighbridge tickets against it."""
    qty = _decimal("quantity", quantity_kg, places=3)
    if valid_to_ms <= valid_from_ms:
        raise AdminError("the order must end after it starts", reason="invalid")
    if truck_id is not None:
        check_code("truck", truck_id)
    if reference is not None:
        check_code("reference", reference)
    bank = get_bank(session, bank_code)
    site = get_site(session, bank, site_code)
    lot_id = None
    if lot_code is not None:
        lot = session.scalar(select(PledgedLot).where(PledgedLot.site_id == site.id,
                                                      PledgedLot.lot_code == lot_code))
        if lot is None:
            raise AdminError(f"site {site_code!r} has no lot {lot_code!r}", reason="not_found")
        lot_id = lot.id
    order = ReleaseOrder(bank_id=bank.id, site_id=site.id, lot_id=lot_id, truck_id=truck_id,
                         quantity_kg=qty, valid_from_ms=valid_from_ms, valid_to_ms=valid_to_ms,
                         reference=reference)
    session.add(order)
    session.flush()
    return order


def add_price(session: Session, *, bank_code: str, commodity: str, price: str | Decimal,
              unit: str, currency: str, as_of: dt.date, source: str | None = None) -> Price:
    """A price quote (per ``unit`` of ``commodity``, in ``currency``) valid from ``as_of``."""
    check_code("commodity", commodity)
    value = _decimal("price", price, places=4)
    if unit not in PRICE_UNITS:
        raise AdminError(f"unit must be one of {', '.join(PRICE_UNITS)}", reason="invalid")
    if not CURRENCY_PATTERN.match(currency):
        raise AdminError(f"currency {currency!r} must be 3 capital letters (ISO 4217)",
                         reason="invalid")
    if source is not None:
        source = _check_name("source", source)
    bank = get_bank(session, bank_code)
    row = Price(bank_id=bank.id, commodity=commodity, unit=unit, currency=currency, price=value,
                as_of=as_of, source=source)
    session.add(row)
    session.flush()
    return row


# -- geofences -------------------------------------------------------------------------------
def parse_points(text: str) -> list[tuple[float, float]]:
    """``"lat,lon;lat,lon;..."`` (decimal degrees, WGS84; spaces allowed, a trailing ``;``
    too) -> ``[(lat, lon), ...]``. Only the syntax and the ranges are checked here; the shape
    is checked by :func:`add_geofence`."""
    parts = [p.strip() for p in text.split(";")]
    if parts and not parts[-1]:
        parts.pop()
    if not parts:
        raise AdminError("no points given (--points \"lat,lon;lat,lon;lat,lon\")",
                         reason="invalid")
    points = []
    for n, part in enumerate(parts, start=1):
        fields = [f.strip() for f in part.split(",")]
        if len(fields) != 2:
            raise AdminError(f"point {n} {part!r} is not lat,lon", reason="invalid")
        try:
            lat, lon = float(fields[0]), float(fields[1])
        except ValueError:
            raise AdminError(f"point {n} {part!r} is not two numbers (lat,lon in decimal "
                             "degrees)", reason="invalid") from None
        points.append((lat, lon))
    return points


def _check_polygon(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The polygon as stored: every vertex a valid (lat, lon), at least 3 distinct, not
    closed by repeating the first (the ring closes itself), enclosing some area."""
    ring = [(float(lat), float(lon)) for lat, lon in points]
    for n, (lat, lon) in enumerate(ring, start=1):
        if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
            raise AdminError(f"point {n}: latitude {lat:g} is outside -90..90",
                             reason="invalid")
        if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
            raise AdminError(f"point {n}: longitude {lon:g} is outside -180..180",
                             reason="invalid")
    if len(ring) > 1 and ring[0] == ring[-1]:
        ring.pop()
    if len(set(ring)) < 3:
        raise AdminError(f"a geofence needs at least 3 distinct points, got {len(set(ring))}",
                         reason="invalid")
    if len(ring) > MAX_GEOFENCE_POINTS:
        raise AdminError(f"a geofence may have at most {MAX_GEOFENCE_POINTS} points, got "
                         f"{len(ring)}", reason="invalid")
    lons = [lon for _, lon in ring]
    if max(lons) - min(lons) > 180.0:
        # the rules' point-in-polygon test works in plain degrees (cloud.domain.rules)
        raise AdminError("the polygon spans more than 180 degrees of longitude (fences "
                         "across the antimeridian are not supported)", reason="invalid")
    # shoelace formula relative to the first vertex (absolute degrees would drown a small
    # site's area in rounding), against the bounding box: collinear points give ~0
    y0, x0 = ring[0]
    rel = [(lat - y0, lon - x0) for lat, lon in ring]
    twice_area = sum(a[1] * b[0] - b[1] * a[0]
                     for a, b in zip(rel, rel[1:] + rel[:1], strict=True))
    lats = [lat for lat, _ in ring]
    box = (max(lats) - min(lats)) * (max(lons) - min(lons))
    if abs(twice_area) <= 1e-9 * box:
        # every fix would be outside it: a geofence_exit for every tracker of the site
        raise AdminError("the points enclose no area (all on one line)", reason="invalid")
    return ring


def format_points(points: Sequence[Sequence[float]]) -> str:
    """The ``--points`` text of a polygon (shortest exact decimals)."""
    return ";".join(f"{float(p[0])!r},{float(p[1])!r}" for p in points)


def add_geofence(session: Session, *, bank_code: str, site_code: str, name: str,
                 points: Sequence[tuple[float, float]]) -> Geofence:
    """A named polygon of ``(lat, lon)`` points around a site: a tracker whose latest fix is
    outside every fence of its site raises ``geofence_exit``. Names are unique per site."""
    name = name.strip()
    if not name or len(name) > MAX_GEOFENCE_NAME:
        raise AdminError(f"geofence name must be 1-{MAX_GEOFENCE_NAME} characters",
                         reason="invalid")
    ring = _check_polygon(points)
    bank = get_bank(session, bank_code)
    site = get_site(session, bank, site_code)
    exists = session.scalar(select(Geofence.id).where(Geofence.site_id == site.id,
                                                      Geofence.name == name))
    if exists is not None:
        raise AdminError(f"site {site_code!r} already has a geofence {name!r} (remove it "
                         "first to redraw it)", reason="exists")
    fence = Geofence(site_id=site.id, name=name,
                     polygon={"points": [[lat, lon] for lat, lon in ring]})
    session.add(fence)
    session.flush()
    return fence


def remove_geofence(session: Session, *, bank_code: str, site_code: str, name: str) -> None:
    bank = get_bank(session, bank_code)
    site = get_site(session, bank, site_code)
    fence = session.scalar(select(Geofence).where(Geofence.site_id == site.id,
                                                  Geofence.name == name.strip()))
    if fence is None:
        raise AdminError(f"site {site_code!r} has no geofence {name!r}", reason="not_found")
    session.delete(fence)
    session.flush()


# -- lists -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenRow:
    prefix: str
    email: str
    role: str
    created_at: dt.datetime | None
    expires_at: dt.datetime | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class GatewayRow:
    gateway_id: str
    site: str
    disabled: bool
    last_seq: int


@dataclass(frozen=True, slots=True)
class SiteRow:
    code: str
    name: str
    kind: str
    animals: int
    lots: int


@dataclass(frozen=True, slots=True)
class GeofenceRow:
    site: str
    name: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class LoanRow:
    code: str
    borrower: str
    currency: str
    outstanding: Decimal
    sites: tuple[str, ...]


def list_banks(session: Session) -> Sequence[Bank]:
    return session.scalars(select(Bank).order_by(Bank.code)).all()


def list_users(session: Session, *, bank_code: str) -> Sequence[User]:
    bank = get_bank(session, bank_code)
    return session.scalars(select(User).where(User.bank_id == bank.id)
                           .order_by(User.email)).all()


def list_tokens(session: Session, *, bank_code: str) -> list[TokenRow]:
    bank = get_bank(session, bank_code)
    rows = session.execute(
        select(ApiToken, User.email, User.role).join(User, ApiToken.user_id == User.id)
        .where(User.bank_id == bank.id).order_by(User.email, ApiToken.id)).all()
    return [TokenRow(t.prefix, email, role, t.created_at, t.expires_at, t.revoked)
            for t, email, role in rows]


def list_gateways(session: Session, *, bank_code: str) -> list[GatewayRow]:
    bank = get_bank(session, bank_code)
    rows = session.execute(
        select(Gateway, Site.code).join(Site, Gateway.site_id == Site.id)
        .where(Site.bank_id == bank.id).order_by(Gateway.gateway_id)).all()
    return [GatewayRow(g.gateway_id, code, g.disabled, g.last_seq) for g, code in rows]


def list_sites(session: Session, *, bank_code: str) -> list[SiteRow]:
    bank = get_bank(session, bank_code)
    animals = dict(session.execute(
        select(PledgedAnimal.site_id, func.count()).join(Site, PledgedAnimal.site_id == Site.id)
        .where(Site.bank_id == bank.id).group_by(PledgedAnimal.site_id)).all())
    lots = dict(session.execute(
        select(PledgedLot.site_id, func.count()).join(Site, PledgedLot.site_id == Site.id)
        .where(Site.bank_id == bank.id).group_by(PledgedLot.site_id)).all())
    sites = session.scalars(select(Site).where(Site.bank_id == bank.id)
                            .order_by(Site.code)).all()
    return [SiteRow(s.code, s.name, s.kind, animals.get(s.id, 0), lots.get(s.id, 0))
            for s in sites]


def list_loans(session: Session, *, bank_code: str) -> list[LoanRow]:
    bank = get_bank(session, bank_code)
    links: dict[int, list[str]] = {}
    for loan_id, code in session.execute(
            select(LoanSite.loan_id, Site.code).join(Site, LoanSite.site_id == Site.id)
            .where(Site.bank_id == bank.id).order_by(Site.code)).all():
        links.setdefault(loan_id, []).append(code)
    rows = session.execute(
        select(Loan, Borrower.code).join(Borrower, Loan.borrower_id == Borrower.id)
        .where(Loan.bank_id == bank.id).order_by(Loan.code)).all()
    return [LoanRow(loan.code, borrower, loan.currency, loan.outstanding,
                    tuple(links.get(loan.id, ()))) for loan, borrower in rows]


def list_geofences(session: Session, *, bank_code: str,
                   site_code: str | None = None) -> list[GeofenceRow]:
    """The bank's geofences (one site's with ``site_code``), by site then name."""
    bank = get_bank(session, bank_code)
    query = (select(Geofence, Site.code).join(Site, Geofence.site_id == Site.id)
             .where(Site.bank_id == bank.id))
    if site_code is not None:
        query = query.where(Site.id == get_site(session, bank, site_code).id)
    rows = session.execute(query.order_by(Site.code, Geofence.name, Geofence.id)).all()
    out = []
    for fence, code in rows:
        raw = fence.polygon.get("points", []) if isinstance(fence.polygon, dict) else []
        out.append(GeofenceRow(code, fence.name,
                               tuple((float(p[0]), float(p[1])) for p in raw)))
    return out
