"""What risk staff see of one site besides its alerts: the herd (pledged vs present), the
warehouse inventory ledger, positions (with the site's geofences) and weigh tickets.
Bank-scoped like ``cloud.read``: another bank's site is :class:`cloud.read.NotFoundError`.

The herd comes from ``animal_status``, which the domain engine writes with
:func:`record_herd` as it evaluates. Until it has written anything for a site (a fresh
install, or no engine running) the herd is derived from the readings: an animal is present
if a tag sighting of its EPC is no older than ``RuleParams.missing_after_ms`` before the
site's newest reading; weight and health are then unknown (null).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from cloud.alerts.models import AnimalStatus
from cloud.alerts.service import begin_write, rule_params
from cloud.alerts.timefmt import iso, iso_or_none
from cloud.db.models import (
    Geofence,
    Loan,
    PledgedAnimal,
    PledgedLot,
    Position,
    Reading,
    Site,
    WeighTicket,
)
from cloud.domain.model import DAY_MS
from cloud.read import BadCursorError, NotFoundError

__all__ = [
    "FALLBACK_LOOKBACK_MS", "MAX_PAGE", "AnimalSnapshot", "Page", "PositionsPage",
    "record_herd", "site_geofences", "site_herd", "site_inventory", "site_positions",
    "site_weigh_tickets",
]

log = logging.getLogger(__name__)

MAX_PAGE: Final = 1000
FALLBACK_LOOKBACK_MS: Final = 30 * DAY_MS  # how far back the readings fallback looks
# units a pledged lot quantity may be in, and their kilograms; other units (bags, pallets)
# have no weight in the registry and are left out of the kg totals
_KG_PER_UNIT: Final = {"kg": Decimal(1), "t": Decimal(1000)}
_INBOUND: Final = ("in", "inbound")
_OUTBOUND: Final = ("out", "outbound")


def _own_site(session: Session, bank_id: int, site_id: int) -> Site:
    site = session.scalar(select(Site).where(Site.id == site_id, Site.bank_id == bank_id))
    if site is None:
        raise NotFoundError("site")
    return site


def _encode(*parts: object) -> str:
    raw = ":".join(str(p) for p in parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(text: str, tag: str) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise BadCursorError() from exc
    parts = raw.split(":", 2)
    if len(parts) < 2 or parts[0] != tag:
        raise BadCursorError()
    return parts[1:]


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class PositionsPage:
    """A page of fixes, and the site's geofences (the same on every page) so a map can draw
    the fixes against the fences the ``geofence_exit`` rule uses."""

    items: list[dict[str, Any]]
    next_cursor: str | None
    geofences: list[dict[str, Any]]


# -- herd ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class AnimalSnapshot:
    """The engine's view of one animal at a tick (input of :func:`record_herd`)."""

    epc: str
    present: bool
    last_seen_ms: int | None = None
    est_weight_kg: float | None = None
    health: str | None = None  # ok | sick | inactive | ...


def record_herd(session: Session, *, site_id: int, now_ms: int,
                animals: Iterable[AnimalSnapshot]) -> int:
    """Upsert the status of the given animals of ``site_id`` (others are left as they were).
    Returns how many rows were written. Does not commit."""
    begin_write(session)
    rows = {r.epc: r for r in session.scalars(
        select(AnimalStatus).where(AnimalStatus.site_id == site_id))}
    count = 0
    for snap in animals:
        row = rows.get(snap.epc)
        if row is None:
            row = AnimalStatus(site_id=site_id, epc=snap.epc)
            session.add(row)
            rows[snap.epc] = row
        row.present = snap.present
        row.last_seen_ms = snap.last_seen_ms
        row.est_weight_kg = snap.est_weight_kg
        row.health = snap.health
        row.updated_ms = now_ms
        count += 1
    session.flush()
    return count


def _fallback_status(session: Session, site_id: int,
                     bank_id: int) -> dict[str, tuple[bool, int | None]]:
    """EPC -> (present, last seen) from tag sightings, when the engine wrote nothing."""
    newest = session.scalar(select(func.max(Reading.ts_ms)).where(Reading.site_id == site_id))
    if newest is None:
        return {}
    window_ms = rule_params(session, bank_id, site_id).missing_after_ms
    epc = Reading.data["epc"].as_string()
    rows = session.execute(
        select(epc, func.max(Reading.ts_ms))
        .where(Reading.site_id == site_id, Reading.kind == "tag_sighting",
               Reading.ts_ms >= newest - max(window_ms, FALLBACK_LOOKBACK_MS))
        .group_by(epc)).all()
    return {str(e).upper(): (last >= newest - window_ms, int(last))
            for e, last in rows if e is not None}


def site_herd(session: Session, *, bank_id: int, site_id: int, limit: int = 200,
              cursor: str | None = None) -> dict[str, Any]:
    """Pledged vs present animals of the site; ``animals`` paged by EPC (``next_cursor``)."""
    _own_site(session, bank_id, site_id)
    limit = max(1, min(limit, MAX_PAGE))
    pledged = session.execute(
        select(PledgedAnimal.epc, PledgedAnimal.iso11784, Loan.code)
        .join(Loan, Loan.id == PledgedAnimal.loan_id)
        .where(PledgedAnimal.site_id == site_id)).all()
    animals = sorted(((epc or iso_id or "").upper(), loan) for epc, iso_id, loan in pledged)
    status = {r.epc.upper(): r for r in session.scalars(
        select(AnimalStatus).where(AnimalStatus.site_id == site_id))}
    fallback = {} if status else _fallback_status(session, site_id, bank_id)

    def view(epc: str) -> tuple[bool, int | None, float | None, str | None]:
        row = status.get(epc)
        if row is not None:
            return row.present, row.last_seen_ms, row.est_weight_kg, row.health
        present, last = fallback.get(epc, (False, None))
        return present, last, None, None

    missing = [epc for epc, _ in animals if not view(epc)[0]]
    start = 0
    if cursor:
        after = _decode(cursor, "h")[0]
        start = next((i for i, (epc, _) in enumerate(animals) if epc > after), len(animals))
    page = animals[start:start + limit]
    items = []
    for epc, loan in page:
        _, last, weight, health = view(epc)
        items.append({"epc": epc, "loan": loan, "last_seen": iso_or_none(last),
                      "est_weight_kg": weight, "health": health})
    more = start + limit < len(animals)
    return {"pledged": len(animals), "present": len(animals) - len(missing),
            "missing": missing, "animals": items,
            "next_cursor": _encode("h", page[-1][0]) if more and page else None}


# -- inventory ----------------------------------------------------------------------------


def site_inventory(session: Session, *, bank_id: int, site_id: int) -> dict[str, Any]:
    """Pledged lots and the weighbridge ledger: ``opening_kg`` is the pledged (stock-take)
    quantity in kg, ``in_kg``/``out_kg`` the net of inbound/outbound tickets,
    ``ledger_kg = opening + in - out``."""
    _own_site(session, bank_id, site_id)
    lots = session.scalars(select(PledgedLot).where(PledgedLot.site_id == site_id)
                           .order_by(PledgedLot.lot_code)).all()
    items = []
    opening = Decimal(0)
    for lot in lots:
        per_unit = _KG_PER_UNIT.get(lot.unit.lower())
        kg = None if per_unit is None else lot.quantity * per_unit
        if kg is not None:
            opening += kg
        items.append({"lot": lot.lot_code, "commodity": lot.commodity,
                      "pledged_kg": None if kg is None else float(kg)})
    totals = dict(session.execute(
        select(WeighTicket.direction, func.sum(WeighTicket.net_kg))
        .where(WeighTicket.site_id == site_id).group_by(WeighTicket.direction)).all())
    in_kg = sum(float(totals.get(d) or 0.0) for d in _INBOUND)
    out_kg = sum(float(totals.get(d) or 0.0) for d in _OUTBOUND)
    return {"lots": items, "opening_kg": float(opening), "in_kg": in_kg, "out_kg": out_kg,
            "ledger_kg": float(opening) + in_kg - out_kg}


# -- positions and weigh tickets ----------------------------------------------------------


def _fence_points(polygon: object) -> list[tuple[float, float]] | None:
    """``{"points": [[lat, lon], ...]}`` as stored -> the points; None when the row is not
    a polygon of finite (lat, lon) pairs (written by hand into the database, say)."""
    raw = polygon.get("points") if isinstance(polygon, dict) else None
    if not isinstance(raw, list) or len(raw) < 3:
        return None
    points = []
    for p in raw:
        if not (isinstance(p, list | tuple) and len(p) == 2
                and all(type(v) in (int, float) and math.isfinite(v) for v in p)):
            return None
        points.append((float(p[0]), float(p[1])))
    return points


def site_geofences(session: Session, *, site_id: int) -> list[dict[str, Any]]:
    """The site's geofences as ``{"name", "points": [(lat, lon), ...]}``, by name. A stored
    polygon that is not a list of (lat, lon) pairs is left out (logged), not a 500."""
    out = []
    for fence in session.scalars(select(Geofence).where(Geofence.site_id == site_id)
                                 .order_by(Geofence.name, Geofence.id)):
        points = _fence_points(fence.polygon)
        if points is None:
            log.warning("geofence %d of site %d is not a polygon of (lat, lon) points; "
                        "left out of the positions answer", fence.id, site_id)
            continue
        out.append({"name": fence.name, "points": points})
    return out


def site_positions(session: Session, *, bank_id: int, site_id: int,
                   since_ms: int | None = None, limit: int = 500,
                   cursor: str | None = None) -> PositionsPage:
    """GPS fixes of the site in time order (``ts_ms``, id), keyset-paged, with the site's
    geofences."""
    _own_site(session, bank_id, site_id)
    rows, next_cursor = _time_page(session, Position, Position.ts_ms, "p", site_id=site_id,
                                   since_ms=since_ms, limit=limit, cursor=cursor)
    items = [{"device_id": p.device_id, "lat": p.lat, "lon": p.lon, "ts_ms": p.ts_ms,
              "at": iso(p.ts_ms)} for p in rows]
    return PositionsPage(items, next_cursor, site_geofences(session, site_id=site_id))


def site_weigh_tickets(session: Session, *, bank_id: int, site_id: int,
                       since_ms: int | None = None, limit: int = 500,
                       cursor: str | None = None) -> Page:
    """Weighbridge tickets of the site in order of their out time, keyset-paged."""
    _own_site(session, bank_id, site_id)
    rows, next_cursor = _time_page(session, WeighTicket, WeighTicket.out_ms, "w",
                                   site_id=site_id, since_ms=since_ms, limit=limit,
                                   cursor=cursor)
    items = [{"id": t.id, "device_id": t.device_id, "truck_id": t.truck_id,
              "direction": t.direction, "gross_kg": t.gross_kg, "tare_kg": t.tare_kg,
              "net_kg": t.net_kg, "in_at": iso(t.in_ms), "out_at": iso(t.out_ms),
              "in_ms": t.in_ms, "out_ms": t.out_ms} for t in rows]
    return Page(items, next_cursor)


def _time_page(session: Session, model: Any, ts_col: Any, tag: str, *, site_id: int,
               since_ms: int | None, limit: int, cursor: str | None
               ) -> tuple[Sequence[Any], str | None]:
    """One keyset page of ``model`` rows of a site in (``ts_col``, id) order from
    ``since_ms``, and the cursor of the next page (None on the last)."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(model).where(model.site_id == site_id)
    if since_ms is not None:
        query = query.where(ts_col >= since_ms)
    if cursor:
        ts, row_id = _ints(_decode(cursor, tag))
        query = query.where(or_(ts_col > ts, and_(ts_col == ts, model.id > row_id)))
    rows = session.scalars(query.order_by(ts_col, model.id).limit(limit + 1)).all()
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _encode(tag, f"{getattr(last, ts_col.key)}:{last.id}")


def _ints(parts: list[str]) -> tuple[int, int]:
    try:
        a, b = parts[0].split(":") if len(parts) == 1 else parts
        return int(a), int(b)
    except ValueError as exc:
        raise BadCursorError() from exc
