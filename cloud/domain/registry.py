"""Build the rules' view of each site (:class:`~cloud.domain.model.SiteRegistry`) from the
database, and the bank's price lists.

Cross-bank facts enter here and only here: a tag pledged under another bank's loan shows up
in ``pledged_elsewhere`` as ``("other bank", "")`` - the rules may say that the animal is
pledged twice, but never to whom, so one bank never learns another's loans.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Final, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db.models import (
    Bank,
    Device,
    Gateway,
    Geofence,
    Loan,
    LoanSite,
    PledgedAnimal,
    PledgedLot,
    Price,
    ReleaseOrder,
    Site,
)
from cloud.domain.model import (
    AnimalInfo,
    LoanInfo,
    LotInfo,
    ReleaseInfo,
    SiteRegistry,
)

__all__ = ["OTHER_BANK", "PriceBook", "SiteInfo", "load_prices", "load_sites"]

OTHER_BANK: Final = "other bank"
_UNIT_KG: Final = {"kg": 1.0, "t": 1000.0, "lb": 0.45359237}


@dataclasses.dataclass(frozen=True, slots=True)
class SiteInfo:
    site_id: int
    registry: SiteRegistry
    gateways: frozenset[str]
    loan_ids: dict[str, int]  # loan code -> id, for the loans pledging at this site
    commodity: str | None  # what the site's collateral is priced as
    last_seen_ms: int | None = None  # the newest upload of its gateways (ingest clock)


def _ms(d: dt.date | None) -> int | None:
    if d is None:
        return None
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp() * 1000)


def load_sites(session: Session) -> dict[int, SiteInfo]:
    """Every site of every bank with its registry (one pass per table, not per site)."""
    banks = {b.id: b.code for b in session.scalars(select(Bank))}
    loans = {ln.id: ln for ln in session.scalars(select(Loan))}
    loan_sites: dict[int, list[int]] = defaultdict(list)
    for ls in session.scalars(select(LoanSite)):
        loan_sites[ls.site_id].append(ls.loan_id)
    animals: dict[int, list[AnimalInfo]] = defaultdict(list)
    epc_pledges: dict[str, list[tuple[int, int]]] = defaultdict(list)  # epc -> (bank, loan)
    bank_epcs: dict[int, set[str]] = defaultdict(set)
    for a in session.scalars(select(PledgedAnimal)):
        loan = loans.get(a.loan_id)
        if loan is None:  # rows written between the reads above: the next reload has them
            continue
        epc = (a.epc or "").upper()
        if epc:
            epc_pledges[epc].append((loan.bank_id, loan.id))
            bank_epcs[loan.bank_id].add(epc)
        animals[a.site_id].append(AnimalInfo(
            epc=epc, iso11784=a.iso11784, loan_code=loan.code, breed=a.breed, sex=a.sex,
            birth_ms=_ms(a.birth_date), entry_weight_kg=a.entry_weight_kg, pen=a.pen,
            entry_ms=_ms(a.entry_date)))
    lots: dict[int, list[LotInfo]] = defaultdict(list)
    lot_codes: dict[int, str] = {}
    lot_pledges: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for lot in session.scalars(select(PledgedLot)):
        loan = loans.get(lot.loan_id)
        if loan is None:
            continue
        lot_codes[lot.id] = lot.lot_code
        # bags, bales and units have no weight the weighbridge could check: not in the
        # ledger (the site views list them apart)
        per_kg = _UNIT_KG.get(lot.unit)
        qty = float(lot.quantity) * per_kg if per_kg is not None else 0.0
        lots[lot.site_id].append(LotInfo(lot_code=lot.lot_code, loan_code=loan.code,
                                         sku=lot.sku, commodity=lot.commodity, zone=lot.zone,
                                         quantity_kg=qty))
        lot_pledges[(lot.sku, lot.lot_code)].append((loan.bank_id, loan.id))
    releases: dict[int, list[ReleaseInfo]] = defaultdict(list)
    for r in session.scalars(select(ReleaseOrder)):
        releases[r.site_id].append(ReleaseInfo(
            truck_id=r.truck_id, lot_code=lot_codes.get(r.lot_id) if r.lot_id else None,
            quantity_kg=float(r.quantity_kg), valid_from_ms=r.valid_from_ms,
            valid_to_ms=r.valid_to_ms, reference=r.reference))
    fences: dict[int, list[tuple[tuple[float, float], ...]]] = defaultdict(list)
    for g in session.scalars(select(Geofence)):
        points = g.polygon.get("points", []) if isinstance(g.polygon, dict) else []
        try:
            fences[g.site_id].append(tuple((float(p[0]), float(p[1])) for p in points))
        except (TypeError, ValueError, IndexError):  # a malformed row: skipped, not fatal
            continue
    devices: dict[int, dict[str, str]] = defaultdict(dict)
    for d in session.scalars(select(Device)):
        devices[d.site_id][d.device_id] = d.kind or ""
    gateways: dict[int, set[str]] = defaultdict(set)
    last_seen: dict[int, int] = {}
    for gw in session.scalars(select(Gateway).where(Gateway.disabled.is_(False))):
        gateways[gw.site_id].add(gw.gateway_id)
        if gw.last_seen_ms is not None:
            last_seen[gw.site_id] = max(last_seen.get(gw.site_id, 0), gw.last_seen_ms)
    trucks: dict[int, set[str]] = defaultdict(set)
    for site_id, orders in releases.items():
        trucks[site_id].update(o.truck_id for o in orders if o.truck_id)

    out: dict[int, SiteInfo] = {}
    for site in session.scalars(select(Site)):
        if site.bank_id not in banks:  # a bank added since its rows were read: next reload
            continue
        site_loans = [loans[i] for i in loan_sites.get(site.id, ()) if i in loans]
        elsewhere: dict[str, tuple[tuple[str, str], ...]] = {}
        for info in animals.get(site.id, ()):
            pledges = epc_pledges.get(info.epc, [])
            if len(pledges) > 1:
                elsewhere[info.epc] = tuple(
                    _describe(banks, loans, site.bank_id, b, ln) for b, ln in pledges
                    if loans[ln].code != info.loan_code or b != site.bank_id)
        for lot_info in lots.get(site.id, ()):
            lpledges = lot_pledges.get((lot_info.sku, lot_info.lot_code), [])
            if len(lpledges) > 1:
                elsewhere[lot_info.lot_code] = tuple(
                    _describe(banks, loans, site.bank_id, b, ln) for b, ln in lpledges
                    if loans[ln].code != lot_info.loan_code or b != site.bank_id)
        kind: Literal["ranch", "warehouse"] = ("warehouse" if site.kind == "warehouse"
                                               else "ranch")
        registry = SiteRegistry(
            bank_id=site.bank_id, bank_code=banks[site.bank_id], site_code=site.code,
            kind=kind,
            animals=tuple(animals.get(site.id, ())), lots=tuple(lots.get(site.id, ())),
            loans=tuple(_loan_info(ln) for ln in site_loans),
            release_orders=tuple(releases.get(site.id, ())),
            geofences=tuple(fences.get(site.id, ())), pledged_elsewhere=elsewhere,
            bank_epcs=frozenset(bank_epcs.get(site.bank_id, ())),
            truck_ids=frozenset(trucks.get(site.id, ())), devices=dict(devices.get(site.id, {})))
        commodity = ("cattle_live" if kind == "ranch"
                     else next((lot.commodity for lot in lots.get(site.id, ())), None))
        out[site.id] = SiteInfo(site_id=site.id, registry=registry,
                                gateways=frozenset(gateways.get(site.id, ())),
                                loan_ids={ln.code: ln.id for ln in site_loans},
                                commodity=commodity, last_seen_ms=last_seen.get(site.id))
    return out


def _describe(banks: dict[int, str], loans: dict[int, Loan], own_bank: int, bank_id: int,
              loan_id: int) -> tuple[str, str]:
    if bank_id != own_bank:
        return (OTHER_BANK, "")  # never name another bank's loan
    return (banks[bank_id], loans[loan_id].code)


def _loan_info(loan: Loan) -> LoanInfo:
    return LoanInfo(code=loan.code, currency=loan.currency, outstanding=float(loan.outstanding),
                    ltv_line=float(loan.ltv_line), margin_call_line=float(loan.margin_call_line),
                    liquidation_line=float(loan.liquidation_line), haircut=float(loan.haircut))


class PriceBook:
    """Prices per (bank, commodity) in currency per kg, as of a day: the newest quote on or
    before it."""

    def __init__(self, rows: Iterable[tuple[int, str, dt.date, float]] = ()) -> None:
        series: dict[tuple[int, str], list[tuple[int, float]]] = defaultdict(list)
        for bank_id, commodity, as_of, per_kg in rows:
            day_ms = _ms(as_of)
            assert day_ms is not None
            series[(bank_id, commodity)].append((day_ms, per_kg))
        self._days: dict[tuple[int, str], list[int]] = {}
        self._prices: dict[tuple[int, str], list[float]] = {}
        for key, points in series.items():
            points.sort()
            self._days[key] = [d for d, _ in points]
            self._prices[key] = [p for _, p in points]

    def per_kg(self, bank_id: int, commodity: str | None, ts_ms: int) -> float | None:
        if commodity is None:
            return None
        days = self._days.get((bank_id, commodity))
        if not days:
            return None
        i = bisect.bisect_right(days, ts_ms) - 1
        return self._prices[(bank_id, commodity)][i] if i >= 0 else None


def load_prices(session: Session) -> PriceBook:
    rows = []
    for p in session.scalars(select(Price)):
        per_kg = float(p.price) / _UNIT_KG.get(p.unit, 1.0)
        rows.append((p.bank_id, p.commodity, p.as_of, per_kg))
    return PriceBook(rows)
