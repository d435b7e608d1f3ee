"""The domain engine: turns stored readings into alerts and valuations, on event time.

How time works here (DESIGN.md section 6):

- **Event time, per site, with a watermark.** Each gateway uploads its outbox first in,
  first out (priority lane, then bulk, oldest first). So when a batch carries a bulk reading
  the gateway stored at ``recv_ms = R`` (gateway clock), every reading that gateway stored
  before ``R`` has already arrived, and aggregation closes a reading at most
  ``RuleParams.lateness_ms`` after its event time. The gateway's watermark is therefore
  ``max bulk recv_ms - lateness``, and a site's watermark is the lowest of its gateways'.
  Rules run on a fixed event-time grid (``eval_interval_ms``): the tick ``T`` is evaluated
  once the watermark passes it, with exactly the readings stamped ``<= T``. A backlog
  replayed after an outage therefore gives the same conditions at the same ticks as live
  data, and while a site is silent its watermark does not move, so its animals cannot look
  missing.
- **Processing time for silence.** ``site_offline`` is the one rule on the engine's clock:
  no upload from any of the site's gateways for ``site_offline_after_ms``. While it is
  active the per-animal kinds (``model.PER_ANIMAL_KINDS``) are muted: none opens, none
  auto-resolves.
- **Valuation** runs on hour ticks per loan, from the latest snapshot of every site pledged
  to the loan, and is stored; ``coverage_breach`` and ``price_shock`` come from it.

The engine holds per-site state in memory. :meth:`DomainEngine.warm_start` rebuilds it from
the readings table after a restart (the last ``baseline_days`` + a margin).

Thread model: all methods are synchronous and must be called from one thread at a time (the
cloud app calls :meth:`on_batch` and :meth:`step` through one worker; the simulator calls
them inline).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.alerts import service as alerts
from cloud.alerts import site_views
from cloud.db.models import IngestedBatch
from cloud.db.models import Reading as ReadingRow
from cloud.domain import growth, rules
from cloud.domain import valuation as val
from cloud.domain.model import (
    DAY_MS,
    HOUR_MS,
    PER_ANIMAL_KINDS,
    Condition,
    RuleParams,
    SiteRegistry,
)
from cloud.domain.registry import PriceBook, SiteInfo, load_prices, load_sites
from cloud.domain.state import SiteState
from protocols.uplink import READING_KINDS, Batch, Lane, Reading

__all__ = ["DomainEngine", "EngineStats", "LoanValue"]

log = logging.getLogger(__name__)

# kinds the site state evaluates each tick (the engine does the others)
STATE_KINDS: Final = frozenset({
    "animal_missing", "herd_count_drop", "tag_inactive", "health_anomaly", "feed_intake_drop",
    "foreign_tag", "stock_below_minimum", "unauthorized_outbound", "geofence_exit",
    "weight_discrepancy", "device_offline", "data_integrity"})
_BULK: Final = frozenset(k for k, (lane, _) in READING_KINDS.items() if lane is Lane.BULK)


@dataclasses.dataclass(slots=True)
class LoanValue:
    loan_code: str
    loan_id: int
    bank_id: int
    ts_ms: int
    value: float
    low: float
    high: float
    livestock: float
    inventory: float
    coverage: float
    ltv: float
    status: str


@dataclasses.dataclass(slots=True)
class EngineStats:
    readings: int = 0
    late_readings: int = 0
    unknown_gateway_batches: int = 0
    ticks: int = 0
    valuations: int = 0
    rule_errors: int = 0


@dataclasses.dataclass(slots=True)
class _Site:
    info: SiteInfo
    state: SiteState
    params: RuleParams
    buffer: list[Reading] = dataclasses.field(default_factory=list)
    watermarks: dict[str, int] = dataclasses.field(default_factory=dict)
    next_tick_ms: int | None = None
    last_upload_ms: int = 0
    offline: bool = False
    offline_clear_left: int = 0  # evaluations still needed to count an alert's absence
    # per reconcile scope: evaluations still needed to count absences (0: nothing active)
    clear_left: dict[str, int] = dataclasses.field(default_factory=dict)
    # after a restart: ticks up to here only rebuild the state (their alerts and
    # valuations were written before the restart)
    replay_until_ms: int | None = None


class DomainEngine:
    def __init__(self, sessions: sessionmaker[Session], *, clock_ms: Callable[[], int],
                 params: RuleParams | None = None,
                 params_for: Callable[[Session, int, int], RuleParams] | None = None,
                 on_valuation: Callable[[LoanValue], None] | None = None) -> None:
        self.sessions = sessions
        self.clock_ms = clock_ms
        self.default_params = params or RuleParams()
        self._params_for = params_for
        self.on_valuation = on_valuation
        self.stats = EngineStats()
        self._sites: dict[int, _Site] = {}
        self._by_gateway: dict[str, int] = {}
        self._site_ids: dict[tuple[int, str], int] = {}  # (bank, site code) -> id
        self._loan_ids: dict[tuple[int, str], int] = {}
        self._bank_sites: dict[int, dict[str, int]] = defaultdict(dict)
        self._bank_loans: dict[int, dict[str, int]] = defaultdict(dict)
        self._loan_value_parts: dict[int, dict[int, tuple[float, float, float, str]]] = \
            defaultdict(dict)  # loan id -> site id -> (value, low, high, component)
        self.prices = PriceBook()
        self.latest: dict[int, LoanValue] = {}

    # -- registry ----------------------------------------------------------------------
    def load(self) -> None:
        """(Re)read the registry and prices; existing site state is kept."""
        now = self.clock_ms()
        with self.sessions() as session:
            infos = load_sites(session)
            self.prices = load_prices(session)
            params = {sid: self._params(session, info) for sid, info in infos.items()}
        for sid, info in infos.items():
            site = self._sites.get(sid)
            if site is None:
                # silence counts from the last upload the ingest saw, not from this start
                seen = info.last_seen_ms if info.last_seen_ms is not None else now
                self._sites[sid] = _Site(info=info, state=SiteState(info.registry, params[sid]),
                                         params=params[sid], last_upload_ms=seen,
                                         offline_clear_left=params[sid].clear_after_ticks)
            else:
                site.info = info
                if params[sid] != site.params:
                    site.params = params[sid]
                    site.state.set_params(params[sid])
                site.state.set_registry(info.registry)
        self._by_gateway = {gw: sid for sid, s in self._sites.items() for gw in s.info.gateways}
        self._site_ids = {(s.info.registry.bank_id, s.info.registry.site_code): sid
                          for sid, s in self._sites.items()}
        self._loan_ids = {(s.info.registry.bank_id, code): lid for s in self._sites.values()
                          for code, lid in s.info.loan_ids.items()}
        self._bank_sites = defaultdict(dict)
        for (bank, code), sid in self._site_ids.items():
            self._bank_sites[bank][code] = sid
        self._bank_loans = defaultdict(dict)
        for (bank, code), lid in self._loan_ids.items():
            self._bank_loans[bank][code] = lid

    def _params(self, session: Session, info: SiteInfo) -> RuleParams:
        if self._params_for is None:
            return self.default_params
        return self._params_for(session, info.registry.bank_id, info.site_id)

    # -- input -------------------------------------------------------------------------
    def on_batch(self, gateway_id: str, batch: Batch) -> None:
        """A batch the ingest committed. Buffers its readings on their site and moves the
        gateway's watermark."""
        sid = self._by_gateway.get(gateway_id)
        if sid is None:
            self.load()
            sid = self._by_gateway.get(gateway_id)
            if sid is None:
                self.stats.unknown_gateway_batches += 1
                return
        site = self._sites[sid]
        site.last_upload_ms = max(site.last_upload_ms, self.clock_ms())
        site.buffer.extend(batch.readings)
        self.stats.readings += len(batch.readings)
        newest = max((r.recv_ms for r in batch.readings if r.kind in _BULK), default=None)
        if newest is not None:
            mark = newest - site.params.lateness_ms
            if mark > site.watermarks.get(gateway_id, -1):
                site.watermarks[gateway_id] = mark

    def warm_start(self, since_ms: int) -> set[tuple[str, int]]:
        """Feed the stored readings since ``since_ms`` back through the sites (after a
        restart) so their state is what it was; the ticks they cover rebuild state only
        (no alert or valuation is written again). Returns the ``(gateway_id, seq)`` of the
        batches replayed, so a caller can skip those batches if the ingest hands them over
        too (committed while this ran)."""
        self.load()
        replayed: set[tuple[str, int]] = set()
        now = self.clock_ms()
        with self.sessions() as session:
            rows = session.execute(
                select(ReadingRow.site_id, ReadingRow.kind, ReadingRow.device_id,
                       ReadingRow.ts_ms, ReadingRow.recv_ms, ReadingRow.data,
                       IngestedBatch.gateway_id, IngestedBatch.seq)
                .join(IngestedBatch, IngestedBatch.id == ReadingRow.batch_id)
                .where(ReadingRow.ts_ms >= since_ms).order_by(ReadingRow.ts_ms))
            for site_id, kind, device_id, ts_ms, recv_ms, data, gw_id, seq in rows:
                replayed.add((gw_id, seq))
                site = self._sites.get(site_id)
                if site is None:
                    continue
                site.buffer.append(Reading(kind, device_id, ts_ms, recv_ms, data))
                self.stats.readings += 1
                if kind in _BULK:
                    for gw in site.info.gateways:
                        site.watermarks[gw] = max(site.watermarks.get(gw, -1),
                                                  recv_ms - site.params.lateness_ms)
        for site in self._sites.values():
            site.replay_until_ms = now - site.params.lateness_ms
        return replayed

    # -- work --------------------------------------------------------------------------
    def step(self) -> int:
        """Evaluate every tick the watermarks allow, then the processing-time rules.
        Returns the number of ticks evaluated."""
        ticks = 0
        now = self.clock_ms()
        for sid, site in self._sites.items():
            if not site.info.gateways:
                # no data will come: value from the registry (entry weights, growth priors,
                # pledged quantities) on the hour of the engine's clock, so the loan still
                # has a figure
                hour = now // HOUR_MS * HOUR_MS
                if site.next_tick_ms is None or hour >= site.next_tick_ms:
                    site.next_tick_ms = hour + HOUR_MS
                    self._value(sid, site, hour, now)
                continue
            try:
                self._site_offline(sid, site, now)
                ticks += self._advance(sid, site, now)
            except Exception:  # e.g. the database went away: this site retries next step,
                self.stats.rule_errors += 1  # the other sites go on
                log.exception("rules step failed for site %s",
                              site.info.registry.site_code)
        return ticks

    def _watermark(self, site: _Site) -> int | None:
        if not site.info.gateways:
            return None
        # the slowest gateway that has uploaded; one that never did does not hold the
        # others back forever
        return min((site.watermarks[gw] for gw in site.info.gateways
                    if gw in site.watermarks), default=None)

    def _advance(self, sid: int, site: _Site, now: int) -> int:
        mark = self._watermark(site)
        if mark is None:
            return 0
        interval = site.params.eval_interval_ms
        if site.next_tick_ms is None:
            first = min((r.ts_ms for r in site.buffer), default=mark)
            site.next_tick_ms = (first // interval + 1) * interval
        if site.next_tick_ms > mark:
            return 0
        site.buffer.sort(key=lambda r: r.ts_ms)
        taken = 0
        n = 0
        try:
            while site.next_tick_ms <= mark:
                tick = site.next_tick_ms
                end = taken
                while end < len(site.buffer) and site.buffer[end].ts_ms <= tick:
                    end += 1
                if end > taken:
                    site.state.apply(site.buffer[taken:end])
                    taken = end
                if site.replay_until_ms is None or tick > site.replay_until_ms:
                    self._evaluate(sid, site, tick, now)
                # on the grid of the current interval (it may have changed by PUT /v1/rules)
                site.next_tick_ms = (tick // interval + 1) * interval
                n += 1
        finally:
            # applied readings leave the buffer even when an evaluation failed: the retry
            # evaluates the tick again but must not count its readings twice
            del site.buffer[:taken]
        # readings stamped before a tick already evaluated (a gateway whose clock or
        # aggregation ran later than the lateness allowance): applied with the next tick
        self.stats.late_readings += sum(1 for r in site.buffer
                                        if r.ts_ms <= site.next_tick_ms - interval)
        self.stats.ticks += n
        return n

    def _evaluate(self, sid: int, site: _Site, tick: int, now: int) -> None:
        reg = site.info.registry
        try:
            conditions = list(site.state.evaluate(tick))
        except Exception:  # a rule bug must not stop the site's other rules for good
            self.stats.rule_errors += 1
            log.exception("rules failed for site %s at tick %d", reg.site_code, tick)
            conditions = []
        muted = PER_ANIMAL_KINDS if site.offline else frozenset()
        if muted:
            conditions = [c for c in conditions if c.kind not in muted]
        conditions += self._price_shock(site, tick)
        # a scope with no condition now and none in the last clear_after_ticks evaluations
        # has no active alert (alerts change only here, or are resolved by hand): skip the
        # database. After a restart the first evaluations always reconcile.
        left = site.clear_left.get("state", site.params.clear_after_ticks + 1)
        if conditions or muted:  # muted absences are not counted: keep the countdown full
            site.clear_left["state"] = site.params.clear_after_ticks + 1
        elif left > 0:
            site.clear_left["state"] = left - 1
        else:
            return self._hourly(sid, site, tick, now)
        self._reconcile(reg.bank_id, sid, STATE_KINDS | {"price_shock"}, conditions, now,
                        site.params, muted)
        self._hourly(sid, site, tick, now)

    def _hourly(self, sid: int, site: _Site, tick: int, now: int) -> None:
        if tick % HOUR_MS == 0:
            self._value(sid, site, tick, now)

    def _reconcile(self, bank_id: int, site_id: int | None, kinds: frozenset[str],
                   conditions: Sequence[Condition], now: int, params: RuleParams,
                   muted: frozenset[str] = frozenset(), loan_id: int | None = None) -> None:
        site_ids = self._bank_sites.get(bank_id, {})
        loan_ids = self._bank_loans.get(bank_id, {})
        with self.sessions() as session, session.begin():
            alerts.reconcile(session, bank_id=bank_id, site_id=site_id, scope_kinds=kinds,
                             conditions=conditions, now_ms=now,
                             clear_after_ticks=params.clear_after_ticks, site_ids=site_ids,
                             loan_ids=loan_ids, muted_kinds=muted, loan_id=loan_id)

    # -- processing-time rules -----------------------------------------------------------
    def _site_offline(self, sid: int, site: _Site, now: int) -> None:
        reg = site.info.registry
        if not site.info.gateways:
            return
        silent = now - site.last_upload_ms
        conditions: list[Condition] = []
        if silent >= site.params.site_offline_after_ms:
            conditions.append(Condition(
                kind="site_offline", severity="high", subject_type="site",
                subject_id=reg.site_code, site_code=reg.site_code, loan_code=None,
                event_time_ms=site.last_upload_ms + site.params.site_offline_after_ms,
                summary=f"no upload from {reg.site_code} for {silent // 60_000} min",
                evidence={"last_upload_ms": site.last_upload_ms,
                          "gateways": sorted(site.info.gateways)}))
            site.offline = True
            site.offline_clear_left = site.params.clear_after_ticks
        else:
            site.offline = False
            if site.offline_clear_left <= 0:
                return  # nothing active to count down: spare the database a transaction
            site.offline_clear_left -= 1
        self._reconcile(reg.bank_id, sid, frozenset({"site_offline"}), conditions, now,
                        site.params)

    def _price_shock(self, site: _Site, tick: int) -> list[Condition]:
        reg = site.info.registry
        day = tick // DAY_MS * DAY_MS
        today = self.prices.per_kg(reg.bank_id, site.info.commodity, day)
        before = self.prices.per_kg(reg.bank_id, site.info.commodity, day - 1)
        # one alert per loan the site's collateral secures: the bank re-prices loans
        found = (rules.price_shock_condition(site.info.commodity or "", before, today,
                                             site.params, site_code=reg.site_code, ts_ms=day,
                                             loan_code=loan.code) for loan in reg.loans)
        return [c for c in found if c is not None]

    # -- valuation -----------------------------------------------------------------------
    def _value(self, sid: int, site: _Site, tick: int, now: int) -> None:
        reg = site.info.registry
        price = self.prices.per_kg(reg.bank_id, site.info.commodity, tick)
        herd: list[tuple[Any, Any]] = []
        parts = site_values(site.state, reg, tick, price, herd_out=herd)
        if herd:  # the herd API's per-animal view: presence, last sighting, weight, health
            snap, hv = herd[0]
            with self.sessions() as session, session.begin():
                site_views.record_herd(session, site_id=sid, now_ms=tick, animals=[
                    site_views.AnimalSnapshot(
                        epc=a.epc, present=bool(snap.present[i]),
                        last_seen_ms=int(snap.last_seen_ms[i]) if snap.last_seen_ms[i] >= 0
                        else None,
                        est_weight_kg=round(float(hv.est_weight_kg[i]), 1),
                        health="dead" if snap.dead[i] else "missing" if snap.missing[i]
                        else "sick" if snap.health_factor[i] < 1.0 else "ok")
                    for i, a in enumerate(snap.animals)])
        for loan_code, (value, low, high, component) in parts.items():
            loan_id = site.info.loan_ids.get(loan_code)
            if loan_id is not None:
                self._loan_value_parts[loan_id][sid] = (value, low, high, component)
        for loan in reg.loans:
            loan_id = site.info.loan_ids[loan.code]
            self._record_loan(reg.bank_id, loan, loan_id, tick, now)

    def _record_loan(self, bank_id: int, loan: Any, loan_id: int, tick: int,
                     now: int) -> None:
        parts = self._loan_value_parts.get(loan_id, {})
        value = sum(p[0] for p in parts.values())
        low = sum(p[1] for p in parts.values())
        high = sum(p[2] for p in parts.values())
        livestock = sum(p[0] for p in parts.values() if p[3] == "livestock")
        inventory = sum(p[0] for p in parts.values() if p[3] == "inventory")
        cov = val.coverage(value, low, high, loan.outstanding, loan.ltv_line,
                           loan.margin_call_line, loan.liquidation_line)
        lv = LoanValue(loan_code=loan.code, loan_id=loan_id, bank_id=bank_id, ts_ms=tick,
                       value=value, low=low, high=high, livestock=livestock,
                       inventory=inventory, coverage=cov.coverage, ltv=cov.ltv,
                       status=cov.status)
        previous = self.latest.get(loan_id)
        if previous is not None and previous.ts_ms == tick and previous.value == value:
            return
        self.latest[loan_id] = lv
        self.stats.valuations += 1
        with self.sessions() as session, session.begin():
            alerts.record_valuation(session, loan_id=loan_id, ts_ms=tick, value=value, low=low,
                                    high=high, coverage=cov.coverage, ltv=cov.ltv,
                                    status=cov.status, livestock=livestock,
                                    inventory=inventory)
        if self.on_valuation is not None:
            self.on_valuation(lv)
        found = rules.coverage_condition(loan, value, tick, low=low, high=high)
        conditions = [found] if found is not None else []
        self._reconcile(bank_id, None, frozenset({"coverage_breach"}), conditions, now,
                        self.default_params, loan_id=loan_id)


def site_values(state: SiteState, reg: SiteRegistry, tick: int, price_per_kg: float | None,
                *, herd_out: list[tuple[Any, Any]] | None = None
                ) -> dict[str, tuple[float, float, float, str]]:
    """Value of one site's collateral per loan code: ``(value, low, high, component)``.
    Without a price nothing is valued (the loan keeps its last valuation parts).
    ``herd_out`` receives ``(HerdSnapshot, HerdValue)`` of a ranch."""
    if price_per_kg is None:
        return {}
    if reg.kind == "ranch":
        return _herd_values(state, reg, tick, price_per_kg, herd_out)
    return _stock_values(state, reg, tick, price_per_kg)


def _herd_values(state: SiteState, reg: SiteRegistry, tick: int, price_per_kg: float,
                 herd_out: list[tuple[Any, Any]] | None = None
                 ) -> dict[str, tuple[float, float, float, str]]:
    snap = state.herd_snapshot(tick)
    animals = snap.animals
    if not animals:
        return {}
    prior = growth.prior_arrays([a.breed for a in animals], [a.sex for a in animals])
    birth = np.array([a.birth_ms if a.birth_ms is not None else -1 for a in animals],
                     dtype=np.int64)
    age_now = (tick - birth) / DAY_MS
    unknown = birth < 0
    if unknown.any():
        # no birth date: the age the breed curve gives for the entry weight, else a yearling
        entry = np.array([a.entry_weight_kg or np.nan for a in animals], dtype=np.float64)
        since_entry = np.array([max((tick - a.entry_ms) / DAY_MS, 0.0)
                                if a.entry_ms is not None else 0.0 for a in animals])
        imputed = growth.impute_age_days(entry, prior.mature_kg, prior.b, prior.k_per_day)
        age_now = np.where(unknown, np.where(np.isnan(imputed), 365.0, imputed + since_entry),
                           age_now)
    counts = np.diff(snap.weigh_start)
    idx = np.repeat(np.arange(len(animals)), counts)
    w_age = age_now[idx] - (tick - snap.weigh_ts_ms) / DAY_MS
    # the entry weight, placed on the curve at the animal's age when it was taken: the
    # anchor of animals the scale has not weighed yet
    entry_w = np.array([a.entry_weight_kg if a.entry_weight_kg and a.entry_ms is not None
                        else np.nan for a in animals], dtype=np.float64)
    entry_t = np.array([a.entry_ms if a.entry_ms is not None else tick for a in animals],
                       dtype=np.float64)
    entry_age = np.maximum(age_now - (tick - entry_t) / DAY_MS, 0.0)
    herd = val.HerdInput(epc=[a.epc for a in animals], present=np.asarray(snap.present, bool),
                         age_days_now=age_now, prior=prior, weigh_animal_idx=idx,
                         weigh_age_days=w_age, weigh_kg=snap.weigh_kg,
                         health_factor=snap.health_factor, entry_weight_kg=entry_w,
                         entry_age_days=np.where(np.isnan(entry_w), np.nan, entry_age))
    hv = val.value_herd(herd, price_per_kg)
    if herd_out is not None:
        herd_out.append((snap, hv))
    codes = sorted({a.loan_code for a in animals})
    index = {c: i for i, c in enumerate(codes)}
    parts = val.split_herd_value(hv, np.array([index[a.loan_code] for a in animals]),
                                 len(codes))
    return {c: (v, lo, hi, "livestock") for c, (v, lo, hi) in zip(codes, parts, strict=True)}


def _stock_values(state: SiteState, reg: SiteRegistry, tick: int,
                  price_per_kg: float) -> dict[str, tuple[float, float, float, str]]:
    snap = state.stock_snapshot(tick)
    pledged: dict[str, float] = defaultdict(float)
    for lot in reg.lots:
        pledged[lot.loan_code] += lot.quantity_kg
    total = sum(pledged.values())
    haircut = {loan.code: loan.haircut for loan in reg.loans}
    out = {}
    for code, qty in pledged.items():
        share = qty / total if total > 0 else 0.0
        iv = val.value_inventory(snap.ledger_kg * share, price_per_kg, haircut.get(code, 0.0))
        out[code] = (iv.value, iv.low, iv.high, "inventory")
    return out
