"""The simulated world: a scenario's ranches, warehouses, loans, prices and incidents.

``World(scenario)`` plans everything that decides the truth (animals and their fates, truck
visits and stock, prices) at construction, deterministically from the scenario's seed.
:meth:`World.observations` then generates the device streams lazily, one day at a time, in
non-decreasing ``ts_ms`` order; :meth:`World.truth` gives the truth.jsonl lines; and
:attr:`World.registry` what the bank and the cloud know up front.

Random numbers come from ``numpy.random.Generator`` objects seeded by (seed, component,
block), so the same seed gives the same world whatever is asked first, and a component's
stream does not shift when another component changes.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import operator
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from firmware_sim.world import layout
from firmware_sim.world.observations import DeviceState, GatewayState, Observation
from firmware_sim.world.prices import PriceBook, Shock, midnight_ms, price_unit
from firmware_sim.world.ranch import Ranch, TruthPiece
from firmware_sim.world.registry import (
    AnimalRecord,
    BankRecord,
    BorrowerRecord,
    DeviceRecord,
    GatewayRecord,
    LotRecord,
    PriceRecord,
    SiteRecord,
    TruckRecord,
    WorldRegistry,
)
from firmware_sim.world.scenario import (
    DAY_MS,
    IncidentSpec,
    LoanSpec,
    RanchSpec,
    Scenario,
    WarehouseSpec,
    load_scenario,
)
from firmware_sim.world.truth import write_truth_lines
from firmware_sim.world.warehouse import Warehouse

__all__ = ["DEFAULT_OUTSTANDING_SHARE", "World"]

# a loan without `outstanding` borrows this share of its collateral's true value at the start
# (the advance rates of domain.md 2.5 run 50-80 %)
DEFAULT_OUTSTANDING_SHARE = 0.6


@dataclasses.dataclass(slots=True)
class _Pledge:
    """What a loan holds: whole sites, or (double pledge) some animals or lots of one."""

    loan: LoanSpec
    ranch_masks: dict[str, np.ndarray]  # site -> animals mask
    lot_masks: dict[str, np.ndarray]  # site -> lots mask


class World:
    def __init__(self, scenario: Scenario) -> None:
        sc = self.scenario = scenario
        self.start_ms = sc.start_ms
        self.end_ms = sc.end_ms
        order = [s.id for s in sc.sites]
        self.owner = {site: loan for loan in sc.loans for site in loan.sites}
        by_site: dict[str | None, list[IncidentSpec]] = {}
        for inc in sc.incidents:
            by_site.setdefault(inc.site, []).append(inc)
        self.ranches = [Ranch(r, site_index=order.index(r.id), start_ms=sc.start_ms,
                              end_ms=sc.end_ms, seed=sc.seed, incidents=by_site.get(r.id, []),
                              source=sc.source) for r in sc.ranches]
        self.warehouses = [Warehouse(w, site_index=order.index(w.id), start_ms=sc.start_ms,
                                     end_ms=sc.end_ms, seed=sc.seed,
                                     incidents=by_site.get(w.id, []),
                                     bank=self.owner[w.id].bank) for w in sc.warehouses]
        self._ranch = {r.site: r for r in self.ranches}
        self._warehouse = {w.site: w for w in self.warehouses}
        shocks = [Shock(self._commodity(inc), inc.at_ms, inc.percent or 0.0)
                  for inc in sc.incidents if inc.kind == "price_change"]
        commodities = {w.commodity for w in sc.warehouses} | (
            {"cattle_live"} if sc.ranches else set())
        self.prices = PriceBook(sc.market, commodities, sc.start_ms, sc.end_ms, sc.seed, shocks)
        self._pledges = [_Pledge(loan, {s: np.ones(self._ranch[s].n, bool) for s in loan.sites
                                        if s in self._ranch},
                                 {s: np.ones(self._warehouse[s].spec.lots, bool)
                                  for s in loan.sites if s in self._warehouse})
                         for loan in sc.loans]
        self._dp_pieces: list[TruthPiece] = []
        for inc in sc.incidents:
            if inc.kind == "double_pledge":
                self._double_pledge(inc)
        # resolve default outstanding amounts
        for p in self._pledges:
            if p.loan.outstanding is None:
                v = sum(self._value(p, sc.start_ms, self.prices.dates[0]))
                p.loan = dataclasses.replace(
                    p.loan, outstanding=round(max(1.0, DEFAULT_OUTSTANDING_SHARE * v), 2))
        self._events, self._offline = self._device_events()
        self.registry = self._build_registry()

    @classmethod
    def from_file(cls, path: str | Path) -> World:
        return cls(load_scenario(path))

    # -- incidents handled at world level --------------------------------------------------
    def _commodity(self, inc: IncidentSpec) -> str:
        if inc.commodity:
            return inc.commodity
        site = self.scenario.site(inc.site or "")
        return "cattle_live" if isinstance(site, RanchSpec) else site.commodity

    def _double_pledge(self, inc: IncidentSpec) -> None:
        site = inc.site or ""
        orig = self.owner[site]
        rng = np.random.default_rng([self.scenario.seed, 0xD0B1, inc.index])
        loan = LoanSpec(id=inc.loan or f"{orig.id}-DP{inc.index + 1}", bank=inc.bank or "BANK-B",
                        borrower=inc.borrower or orig.borrower, sites=(site,),
                        outstanding=inc.outstanding, currency=orig.currency,
                        ltv_line=orig.ltv_line, margin_call_line=orig.margin_call_line,
                        liquidation_line=orig.liquidation_line, haircut=orig.haircut,
                        borrower_name=orig.borrower_name)
        piece = TruthPiece(inc, inc.at_ms, None, detail={
            "bank": orig.bank, "loan": orig.id, "other_bank": loan.bank,
            "other_loan": loan.id})
        if site in self._ranch:
            r = self._ranch[site]
            count = min(inc.count or 10, r.n)
            mask = np.zeros(r.n, bool)
            mask[rng.choice(r.n, count, replace=False)] = True
            self._pledges.append(_Pledge(loan, {site: mask}, {}))
            piece.animals = [r.identity[i] for i in np.flatnonzero(mask)]
        else:
            w = self._warehouse[site]
            count = min(inc.count or 2, w.spec.lots)
            mask = np.zeros(w.spec.lots, bool)
            mask[rng.choice(w.spec.lots, count, replace=False)] = True
            self._pledges.append(_Pledge(loan, {}, {site: mask}))
            piece.lots = [w.lot_codes[i] for i in np.flatnonzero(mask)]
        piece.detail["count"] = count
        self._dp_pieces.append(piece)

    def _device_events(self) -> tuple[list[Observation], dict[str, list[tuple[int, int]]]]:
        events: list[Observation] = []
        offline: dict[str, list[tuple[int, int]]] = {}
        for inc in self.scenario.incidents:
            site = inc.site or ""
            dur = inc.duration_ms or 0
            if inc.kind == "reader_offline":
                dev = inc.device or self._default_device(site)
                events.append(DeviceState(inc.at_ms, site, dev, False, "scripted outage"))
                if inc.at_ms + dur < self.end_ms:
                    events.append(DeviceState(inc.at_ms + dur, site, dev, True, ""))
                offline.setdefault(dev, []).append((inc.at_ms, inc.at_ms + dur))
            elif inc.kind in ("network_outage", "gateway_crash"):
                what = "network" if inc.kind == "network_outage" else "crash"
                gw = layout.gateway_id(site)
                events.append(GatewayState(inc.at_ms, site, gw, what, False))  # type: ignore[arg-type]
                if inc.at_ms + dur < self.end_ms:
                    events.append(GatewayState(inc.at_ms + dur, site, gw, what, True))  # type: ignore[arg-type]
        return events, offline

    def _default_device(self, site: str) -> str:
        if site in self._ranch:
            return layout.reader_id(site, 0)
        return layout.truck_reader_id(site)

    # -- registry --------------------------------------------------------------------------
    def _build_registry(self) -> WorldRegistry:
        sc = self.scenario
        loans = tuple(p.loan for p in self._pledges)
        banks = dict(sc.banks)
        for ln in loans:
            banks.setdefault(ln.bank, ln.bank)
        borrowers: dict[tuple[str, str], BorrowerRecord] = {}
        for ln in loans:
            borrowers.setdefault((ln.bank, ln.borrower), BorrowerRecord(
                ln.borrower, ln.borrower_name or f"Borrower {ln.borrower}", ln.bank))
        sites, gateways, devices = [], [], []
        for s in sc.sites:
            outline = (layout.RANCH_OUTLINE_M if isinstance(s, RanchSpec)
                       else layout.WAREHOUSE_OUTLINE_M)
            fence = layout.polygon(s.lat, s.lon, outline)
            owner = self.owner[s.id].bank
            lenders = [owner] + sorted({p.loan.bank for p in self._pledges
                                        if s.id in p.loan.sites} - {owner})
            sites += [SiteRecord(s.id, s.kind, s.name, s.lat, s.lon, fence, s.utc_offset_h,
                                 bank=b) for b in lenders]
            gateways.append(GatewayRecord(layout.gateway_id(s.id), s.id, owner))
            devices += (self._ranch_devices(s, owner) if isinstance(s, RanchSpec)
                        else self._warehouse_devices(s, owner))
        animals: list[AnimalRecord] = []
        lots: list[LotRecord] = []
        for p in self._pledges:
            for site, mask in p.ranch_masks.items():
                r = self._ranch[site]
                for i in np.flatnonzero(mask).tolist():
                    animals.append(AnimalRecord(
                        epc=r.identity[i], iso11784=r.iso[i], loan=p.loan.id, site=site,
                        breed=r.breed[i], sex="F" if r.female[i] else "M",
                        birth_ms=int(r.birth_ms[i]),
                        entry_weight_kg=round(float(r.w0[i]), 1),
                        pen=r.pen_names[r.pen[i]], tag=r.tag_name(i),  # type: ignore[arg-type]
                        number=i, bank=p.loan.bank))
            for site, mask in p.lot_masks.items():
                w = self._warehouse[site]
                for i in np.flatnonzero(mask).tolist():
                    lots.append(LotRecord(
                        code=w.lot_codes[i], loan=p.loan.id, site=site, sku=w.spec.sku,
                        commodity=w.spec.commodity, zone=w.zone_names[w.lot_zone[i]],
                        quantity_kg=float(w.lot_kg0[i]), bank=p.loan.bank))
        lending = sorted({p.loan.bank for p in self._pledges})
        prices = [PriceRecord(d, c, price_unit(c), self.prices.currency,  # type: ignore[arg-type]
                              self.prices.price(c, d), bank=b)
                  for b in lending for d in self.prices.dates for c in sorted(self.prices.series)]
        trucks = [TruckRecord(w.truck_ids[n], w.site, w.plates[n], float(w.tare[n]),
                              w.trackers[n])
                  for w in self.warehouses for n in range(w.spec.trucks)]
        releases = [ro for w in self.warehouses for ro in w.release_orders]
        return WorldRegistry(
            banks=tuple(BankRecord(c, n) for c, n in banks.items()),
            borrowers=tuple(borrowers.values()), loans=loans, sites=tuple(sites),
            gateways=tuple(gateways), devices=tuple(devices), animals=tuple(animals),
            lots=tuple(lots), release_orders=tuple(releases), prices=tuple(prices),
            trucks=tuple(trucks))

    def _ranch_devices(self, s: RanchSpec, bank: str) -> list[DeviceRecord]:
        out = [DeviceRecord(dev, s.id, bank, "reader", s.reader_protocol, place,  # type: ignore[arg-type]
                            pens, s.antennas)
               for dev, place, pens in layout.ranch_readers(s.id, s.readers, s.pens)]
        pens = tuple(layout.pen_ids(s.pens))
        if s.scale != "none":
            out.append(DeviceRecord(layout.scale_reader_id(s.id), s.id, bank, "reader",
                                    s.reader_protocol, "scale", pens, 1))
            out.append(DeviceRecord(layout.scale_id(s.id), s.id, bank, "animal_scale",
                                    "toledo", pens=pens))
        if s.gate_reader:
            out.append(DeviceRecord(layout.gate_reader_id(s.id), s.id, bank, "reader",
                                    s.reader_protocol, "gate", (), 1))
        out.append(DeviceRecord(layout.feeder_id(s.id), s.id, bank, "feeder", s.feeder,
                                pens=pens))
        return out

    def _warehouse_devices(self, s: WarehouseSpec, bank: str) -> list[DeviceRecord]:
        w = self._warehouse[s.id]
        out = [DeviceRecord(w.bridge, s.id, bank, "weighbridge", s.weighbridge),
               DeviceRecord(w.truck_reader, s.id, bank, "truck_reader", s.truck_reader_protocol,
                            antennas=1)]
        out += [DeviceRecord(w.trackers[n], s.id, bank, "gps", "nmea",
                             attached_to=f"truck:{w.truck_ids[n]}") for n in range(s.trucks)]
        out += [DeviceRecord(d, s.id, bank, "gps", "nmea", attached_to="forklift")
                for d in w.forklifts]
        out += [DeviceRecord(d, s.id, bank, "gps", "nmea", attached_to="staff")
                for d in w.staff]
        return out

    # -- observations ----------------------------------------------------------------------
    def observations(self) -> Iterator[Observation]:
        """Every observation of the run in non-decreasing ``ts_ms``, generated a day at a
        time. Devices named by ``reader_offline`` say nothing while offline; gateway
        outages do not stop the devices (the runner decides what is lost)."""
        key = operator.attrgetter("ts_ms")
        gens = [r.blocks() for r in self.ranches] + [w.blocks() for w in self.warehouses]
        events = sorted(self._events, key=key)
        offline = self._offline
        start, end = self.start_ms, self.end_ms
        carry: list[Observation] = []
        ev_i = 0
        for blocks in zip(*gens, strict=True):
            d1 = blocks[0][1]
            items = carry
            for _, _, obs in blocks:
                items.extend(obs)
            while ev_i < len(events) and events[ev_i].ts_ms < d1:
                items.append(events[ev_i])
                ev_i += 1
            if offline:
                items = [o for o in items if not _silenced(o, offline)]
            items.sort(key=key)
            cut = bisect.bisect_left(items, d1, key=key)
            yield from (o for o in items[:cut] if o.ts_ms >= start)
            carry = items[cut:]
        carry += events[ev_i:]
        carry.sort(key=key)
        yield from (o for o in carry if start <= o.ts_ms < end)

    # -- truth -----------------------------------------------------------------------------
    def _value(self, p: _Pledge, t: int, day: dt.date) -> tuple[float, float]:
        """True (livestock, inventory) value of a pledge at ``t`` with ``day``'s prices."""
        live = sum(self._ranch[s].value(t, self.prices.price_per_kg("cattle_live", day), m)
                   for s, m in p.ranch_masks.items())
        inv = sum(self._warehouse[s].value(
            t, self.prices.price_per_kg(self._warehouse[s].spec.commodity, day),
            p.loan.haircut, m) for s, m in p.lot_masks.items())
        return float(live), float(inv)

    def truth(self) -> list[dict[str, Any]]:
        """The truth.jsonl lines: incidents in file order, outages, one loan line per loan,
        then one value line per loan per UTC day."""
        sc = self.scenario
        pieces: dict[int, TruthPiece] = {}
        for comp in self._components():
            for pc in comp.pieces:
                pieces[pc.incident.index] = pc
        for pc in self._dp_pieces:
            pieces[pc.incident.index] = pc
        lines: list[dict[str, Any]] = []
        outages: list[dict[str, Any]] = []
        for inc in sc.incidents:
            pc = pieces.get(inc.index) or self._world_piece(inc)
            loans = self._loans_for(inc)
            lines.append({
                "type": "incident", "id": inc.id, "kind": inc.kind, "site": inc.site,
                "start_ms": int(pc.start_ms),
                "end_ms": None if pc.end_ms is None else int(pc.end_ms),
                "subjects": {"animals": pc.animals, "lots": pc.lots, "trucks": pc.trucks,
                             "devices": pc.devices, "loans": loans, "pens": pc.pens,
                             "gateways": pc.gateways},
                "detail": pc.detail})
            if inc.kind in ("network_outage", "gateway_crash"):
                outages.append({"type": "outage", "site": inc.site, "start_ms": pc.start_ms,
                                "end_ms": pc.end_ms,
                                "what": "network" if inc.kind == "network_outage"
                                else "crash"})
        lines += outages
        lines += [{"type": "loan", "loan": p.loan.id, "outstanding": p.loan.outstanding,
                   "ltv_line": p.loan.ltv_line, "margin_call_line": p.loan.margin_call_line,
                   "liquidation_line": p.loan.liquidation_line, "bank": p.loan.bank,
                   "currency": p.loan.currency} for p in self._pledges]
        for day in self.prices.dates:
            ts = min(midnight_ms(day) + DAY_MS, self.end_ms)
            for p in self._pledges:
                live, inv = self._value(p, ts, day)
                live, inv = round(live, 2), round(inv, 2)
                lines.append({"type": "value", "loan": p.loan.id, "day": day.isoformat(),
                              "ts_ms": ts, "value": round(live + inv, 2), "livestock": live,
                              "inventory": inv, "currency": p.loan.currency})
        return lines

    def _world_piece(self, inc: IncidentSpec) -> TruthPiece:
        dur = inc.duration_ms or 0
        if inc.kind == "reader_offline":
            return TruthPiece(inc, inc.at_ms, inc.at_ms + dur,
                              devices=[inc.device or self._default_device(inc.site or "")])
        if inc.kind in ("network_outage", "gateway_crash"):
            return TruthPiece(inc, inc.at_ms, inc.at_ms + dur,
                              gateways=[layout.gateway_id(inc.site or "")])
        if inc.kind == "price_change":
            c = self._commodity(inc)
            day = dt.datetime.fromtimestamp(inc.at_ms // 1000, dt.UTC).date()
            before = self.prices.price(c, day - dt.timedelta(days=1))
            if day == self.prices.dates[0]:
                before = self.scenario.market.start_price(c)
            # prices are daily: the new price holds from the start of its day (UTC), which
            # is when a bank's price feed shows it
            day_start = inc.at_ms // 86_400_000 * 86_400_000
            return TruthPiece(inc, day_start, None, detail={
                "commodity": c, "percent": inc.percent, "price_before": before,
                "price_after": self.prices.price(c, day), "unit": price_unit(c)})
        raise AssertionError(f"no truth for {inc.kind}")  # pragma: no cover

    def _loans_for(self, inc: IncidentSpec) -> list[str]:
        if inc.kind == "price_change":
            c = self._commodity(inc)
            return [p.loan.id for p in self._pledges
                    if (c == "cattle_live" and p.ranch_masks)
                    or any(self._warehouse[s].spec.commodity == c for s in p.lot_masks)]
        out = [p.loan.id for p in self._pledges
               if inc.site in p.ranch_masks or inc.site in p.lot_masks]
        if inc.kind != "double_pledge":
            # the second pledge of a double pledge is only about its own assets
            dp = {pc.detail["other_loan"] for pc in self._dp_pieces}
            out = [x for x in out if x not in dp or self._touches_dp(inc, x)]
        return out

    def _touches_dp(self, inc: IncidentSpec, loan: str) -> bool:
        """Whether an incident's animals or lots are among a double-pledge loan's."""
        p = next(p for p in self._pledges if p.loan.id == loan)
        pc = next((c for comp in self._components() for c in comp.pieces
                   if c.incident.index == inc.index), None)
        if pc is None:
            return True  # site-wide (outage, device, feed): it concerns every pledge
        for site, mask in p.ranch_masks.items():
            ids = {self._ranch[site].identity[i] for i in np.flatnonzero(mask)}
            if ids & set(pc.animals):
                return True
            if not pc.animals:
                return True
        for site, mask in p.lot_masks.items():
            codes = {self._warehouse[site].lot_codes[i] for i in np.flatnonzero(mask)}
            if codes & set(pc.lots) or not pc.lots:
                return True
        return False

    def _components(self) -> list[Ranch | Warehouse]:
        return [*self.ranches, *self.warehouses]

    def write_truth(self, path: str | Path) -> int:
        """Write :meth:`truth` to ``path`` as JSON lines; returns the number of lines."""
        return write_truth_lines(path, self.truth())


def _silenced(o: Observation, offline: dict[str, list[tuple[int, int]]]) -> bool:
    windows = offline.get(o.device)
    if windows is None or isinstance(o, DeviceState | GatewayState):
        return False
    return any(a <= o.ts_ms < b for a, b in windows)

