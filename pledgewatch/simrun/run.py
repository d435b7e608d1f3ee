"""``pledgewatch sim run``: a scenario's whole chain in one process, on a simulated clock.

    World (firmware_sim.world) --observations--> SiteEdge per site (device bytes through the
    real protocols decoders and edge aggregators into a real SQLite outbox) --signed
    envelopes--> IngestService (the cloud's ingest, SQLite) --committed batches-->
    DomainEngine (rules on event time, valuation) --> alerts and valuations tables

The clock is the world's: every component that reads a clock reads the simulated one, so a
run is deterministic for a seed (the same truth, the same alerts). Without ``speed`` the run
goes as fast as the machine allows; with it, simulated time is held to ``speed`` simulated
seconds per wall second.

Gateways upload every ``upload_interval_ms`` of simulated time while their network is up; a
``network`` outage keeps readings in the outbox (they arrive late, in order), a ``crash``
loses what the gateway held in memory and what the devices said meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.alerts.models import Alert, Valuation
from cloud.db import models as m
from cloud.db.migrate import upgrade
from cloud.db.session import make_engine, make_sessionmaker
from cloud.domain.engine import DomainEngine
from cloud.ingest.service import IngestService
from firmware_sim.world import observations as ob
from firmware_sim.world.scenario import load_scenario
from firmware_sim.world.world import World
from pledgewatch.simrun.edge import DeviceSpec, SiteEdge

__all__ = ["RunResult", "SimCloud", "run", "run_async"]

log = logging.getLogger(__name__)

UPLOAD_INTERVAL_MS = 10 * 60_000
STEP_INTERVAL_MS = 10 * 60_000


@dataclasses.dataclass(slots=True)
class RunResult:
    out_dir: Path
    sim_ms: int
    wall_s: float
    observations: int
    readings: int
    batches: int
    alerts: int
    counters: dict[str, int]

    @property
    def speedup(self) -> float:
        return (self.sim_ms / 1000) / self.wall_s if self.wall_s > 0 else float("inf")


@dataclasses.dataclass(frozen=True, slots=True)
class SimCloud:
    """What a caller of :func:`run_async` gets in ``on_ready``."""

    url: str
    sessions: sessionmaker[Session]
    domain: DomainEngine
    clock: Callable[[], int]
    on_stored: Callable[[str, Any], Awaitable[None]]
    world: World


class _Clock:
    def __init__(self, start_ms: int) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms


def _date(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()


def _public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def register_world(session: Session, world: World, keys: dict[str, Ed25519PrivateKey]) -> None:
    """Put what the bank knows at the start of the scenario into the cloud's registry."""
    reg = world.registry
    banks: dict[str, m.Bank] = {}
    for b in reg.banks:
        bank = m.Bank(code=b.code, name=b.name)
        session.add(bank)
        banks[b.code] = bank
    session.flush()
    sites: dict[tuple[str, str], m.Site] = {}
    for s in reg.sites:
        site_row = m.Site(bank_id=banks[s.bank].id, code=s.code, name=s.name, kind=s.kind,
                          lat=s.lat, lon=s.lon)
        session.add(site_row)
        sites[(s.bank, s.code)] = site_row
    session.flush()
    for s in reg.sites:
        site = sites[(s.bank, s.code)]
        if s.geofence:
            session.add(m.Geofence(site_id=site.id, name=f"{s.code} boundary",
                                   polygon={"points": [list(p) for p in s.geofence]}))
    borrowers: dict[tuple[str, str], m.Borrower] = {}
    loans = {}
    for ln in reg.loans:
        bkey = (ln.bank, ln.borrower)
        if bkey not in borrowers:
            borrowers[bkey] = m.Borrower(bank_id=banks[ln.bank].id, code=ln.borrower,
                                         name=ln.borrower)
            session.add(borrowers[bkey])
            session.flush()
        loan_row = m.Loan(bank_id=banks[ln.bank].id, borrower_id=borrowers[bkey].id, code=ln.id,
                     currency=ln.currency, outstanding=Decimal(str(ln.outstanding)),
                     ltv_line=Decimal(str(ln.ltv_line)),
                     margin_call_line=Decimal(str(ln.margin_call_line)),
                     liquidation_line=Decimal(str(ln.liquidation_line)),
                     haircut=Decimal(str(ln.haircut)))
        session.add(loan_row)
        session.flush()
        loans[(ln.bank, ln.id)] = loan_row
        for code in ln.sites:
            session.add(m.LoanSite(loan_id=loan_row.id, site_id=sites[(ln.bank, code)].id))
    for gw in reg.gateways:
        site = sites[(gw.bank, gw.site)]
        session.add(m.Gateway(gateway_id=gw.gateway_id, site_id=site.id,
                              public_key=_public_raw(keys[gw.gateway_id]), disabled=False,
                              last_seq=0))
    for d in reg.devices:
        site = sites[(d.bank, d.site)]
        kind = d.role if not d.place else f"{d.role}:{d.place}"
        session.add(m.Device(site_id=site.id, device_id=d.device_id, kind=kind[:32]))
    session.flush()
    session.bulk_insert_mappings(m.PledgedAnimal, [
        {"loan_id": loans[(a.bank, a.loan)].id, "site_id": sites[(a.bank, a.site)].id,
         "epc": a.epc, "iso11784": a.iso11784, "breed": a.breed, "sex": a.sex,
         "birth_date": _date(a.birth_ms) if a.birth_ms is not None else None,
         "entry_weight_kg": a.entry_weight_kg, "pen": a.pen,
         "entry_date": _date(world.start_ms)}
        for a in reg.animals])
    lot_rows: dict[tuple[str, str, str], m.PledgedLot] = {}
    for lot in reg.lots:
        lot_row = m.PledgedLot(loan_id=loans[(lot.bank, lot.loan)].id,
                           site_id=sites[(lot.bank, lot.site)].id, lot_code=lot.code,
                           sku=lot.sku, commodity=lot.commodity, zone=lot.zone,
                           quantity=Decimal(str(round(lot.quantity_kg, 3))), unit="kg")
        session.add(lot_row)
        lot_rows[(lot.bank, lot.site, lot.code)] = lot_row
    session.flush()
    for r in reg.release_orders:
        pledged = lot_rows.get((r.bank, r.site, r.lot)) if r.lot else None
        session.add(m.ReleaseOrder(bank_id=banks[r.bank].id, site_id=sites[(r.bank, r.site)].id,
                                   lot_id=pledged.id if pledged is not None else None,
                                   truck_id=r.truck_id,
                                   quantity_kg=Decimal(str(round(r.quantity_kg, 3))),
                                   valid_from_ms=r.valid_from_ms, valid_to_ms=r.valid_to_ms,
                                   reference=r.reference))
    for p in reg.prices:
        session.add(m.Price(bank_id=banks[p.bank].id, commodity=p.commodity, unit=p.unit,
                            currency=p.currency, price=Decimal(str(round(p.price, 4))),
                            as_of=p.date, source="simulated"))
    session.flush()


class _Progress:
    def __init__(self, start_ms: int, end_ms: int, stream: TextIO | None) -> None:
        self.start_ms, self.end_ms, self.stream = start_ms, end_ms, stream
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, now_ms: int, observations: int, readings: int, alerts: int,
               *, force: bool = False) -> None:
        if self.stream is None:
            return
        t = time.perf_counter()
        if not force and t - self.last < 1.0:
            return
        self.last = t
        wall = max(t - self.t0, 1e-9)
        frac = (now_ms - self.start_ms) / max(self.end_ms - self.start_ms, 1)
        bar = "#" * int(frac * 30)
        sim = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
        speed = (now_ms - self.start_ms) / 1000 / wall
        self.stream.write(f"\r[{bar:<30}] {frac:6.1%} sim {sim}  x{speed:,.0f}  "
                          f"{observations / wall:,.0f} obs/s  readings {readings:,}  "
                          f"alerts {alerts}  ")
        self.stream.flush()
        if force:
            self.stream.write("\n")


async def run_async(scenario_path: Path, out_dir: Path, *, speed: float | None = None,
                    progress: TextIO | None = sys.stderr,
                    on_alert: Callable[[dict[str, Any]], None] | None = None,
                    database_url: str | None = None,
                    submit: Callable[[str, bytes], Awaitable[object]] | None = None,
                    on_ready: Callable[[SimCloud], Awaitable[None]] | None = None
                    ) -> RunResult:
    """Run a scenario; see the module docstring.

    ``submit(gateway_id, envelope)`` replaces the in-process ingest (the demo publishes over
    MQTT to a served cloud whose ingest hands batches to ``SimCloud.domain.on_batch``);
    ``on_ready(cloud)`` is awaited once the registry is loaded, before the first
    observation (the demo creates its token and starts serving there)."""
    scenario = load_scenario(scenario_path)
    world = World(scenario)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    clock = _Clock(scenario.start_ms)
    url = database_url or f"sqlite:///{work / 'cloud.db'}"
    upgrade(url)
    engine_db = make_engine(url)
    sessions = make_sessionmaker(engine_db)
    keys = {gw.gateway_id: Ed25519PrivateKey.generate() for gw in world.registry.gateways}
    with sessions() as session, session.begin():
        register_world(session, world, keys)

    domain = DomainEngine(sessions, clock_ms=clock)
    domain.load()
    with sessions() as session:
        bank_codes = {b.id: b.code for b in session.scalars(select(m.Bank))}
        site_codes = {s.id: s.code for s in session.scalars(select(m.Site))}
        loan_codes = {ln.id: ln.code for ln in session.scalars(select(m.Loan))}

    async def stored(gateway_id: str, batch: Any) -> None:
        domain.on_batch(gateway_id, batch)

    ingest = IngestService(sessions=sessions, clock_ms=clock, queue_size=64,
                           replay_window=1_000_000, on_stored=stored)
    if submit is None:
        async def submit_inprocess(gateway_id: str, envelope: bytes) -> object:
            return await ingest.submit(envelope)

        submit = submit_inprocess
    if on_ready is not None:
        await on_ready(SimCloud(url=url, sessions=sessions, domain=domain, clock=clock,
                                on_stored=stored, world=world))
    edges: dict[str, SiteEdge] = {}
    for gw in world.registry.gateways:
        devices = [DeviceSpec(device_id=d.device_id, role=d.role, protocol=d.protocol,
                              place=d.place)
                   for d in world.registry.devices if d.site == gw.site]
        edges[gw.site] = SiteEdge(site=gw.site, gateway_id=gw.gateway_id, devices=devices,
                                  data_dir=work / gw.site, private_key=keys[gw.gateway_id],
                                  start_ms=scenario.start_ms)
    network_up = {site: True for site in edges}
    crashed = {site: False for site in edges}
    end_ms = scenario.start_ms + scenario.duration_ms
    bar = _Progress(scenario.start_ms, end_ms, progress)
    counts = {"observations": 0, "batches": 0, "refused": 0}
    seen_alerts: set[int] = set()
    wall0 = time.perf_counter()

    async def upload(now: int) -> None:
        for site, edge in edges.items():
            if crashed[site]:
                continue
            edge.advance(now)
            if not network_up[site]:
                continue
            for _ in range(1000):
                envs = edge.pending_envelopes(now, 1)
                if not envs:
                    break
                seq, env = envs[0]
                try:
                    await submit(edge.gateway_id, env)
                except Exception as exc:  # a refused batch: counted, the run goes on
                    counts["refused"] += 1
                    log.warning("batch %s/%d refused: %s", site, seq, exc)
                counts["batches"] += 1
                edge.ack(seq)

    def step() -> None:
        domain.step()
        if on_alert is not None:
            with sessions() as session:
                rows = session.scalars(select(Alert).where(Alert.id > max(seen_alerts,
                                                                          default=0))
                                       .order_by(Alert.id)).all()
                for a in rows:
                    seen_alerts.add(a.id)
                    rec = _alert_record(a, site_codes, loan_codes)
                    rec["bank"] = bank_codes.get(a.bank_id)
                    on_alert(rec)

    await ingest.start()
    try:
        next_upload = scenario.start_ms + UPLOAD_INTERVAL_MS
        next_step = scenario.start_ms + STEP_INTERVAL_MS
        for obs in world.observations():
            if obs.ts_ms > end_ms:
                break
            while obs.ts_ms >= next_upload:
                clock.now_ms = next_upload
                await _pace(speed, wall0, scenario.start_ms, clock.now_ms)
                await upload(next_upload)
                next_upload += UPLOAD_INTERVAL_MS
                if clock.now_ms >= next_step:
                    step()
                    next_step += STEP_INTERVAL_MS
                bar.update(clock.now_ms, counts["observations"], domain.stats.readings,
                           len(seen_alerts))
            clock.now_ms = obs.ts_ms
            counts["observations"] += 1
            edge = edges.get(obs.site)
            if edge is None:
                continue
            if isinstance(obs, ob.GatewayState):
                if obs.what == "network":
                    network_up[obs.site] = obs.up
                elif obs.up:
                    crashed[obs.site] = False
                    edge.restart(obs.ts_ms)
                else:
                    crashed[obs.site] = True
                    edge.crash(obs.ts_ms)
            elif isinstance(obs, ob.DeviceState):
                edge.set_device_online(obs.device, obs.online, obs.ts_ms, obs.reason)
            else:
                edge.feed(obs)
        # the end: let every gateway drain and every site evaluate what it has
        for site in edges:
            network_up[site] = True
            if crashed[site]:
                crashed[site] = False
                edges[site].restart(end_ms)
        while next_upload <= end_ms:
            clock.now_ms = next_upload
            await upload(next_upload)
            if clock.now_ms >= next_step:
                step()
                next_step += STEP_INTERVAL_MS
            next_upload += UPLOAD_INTERVAL_MS
        clock.now_ms = end_ms
        await upload(end_ms)
        step()
    finally:
        await ingest.stop()
        for edge in edges.values():
            edge.close()
    bar.update(clock.now_ms, counts["observations"], domain.stats.readings, len(seen_alerts),
               force=True)
    wall = time.perf_counter() - wall0
    n_alerts = write_outputs(out_dir, world, sessions, end_ms)
    engine_db.dispose()
    counters = {**counts, **dataclasses.asdict(domain.stats),
                **{f"ingest_{k}": v for k, v in ingest.counters().items()}}
    for site, edge in edges.items():
        counters.update({f"edge_{site}_{k}": v for k, v in edge.counters.items()})
    return RunResult(out_dir=out_dir, sim_ms=end_ms - scenario.start_ms, wall_s=wall,
                     observations=counts["observations"], readings=domain.stats.readings,
                     batches=counts["batches"], alerts=n_alerts, counters=counters)


async def _pace(speed: float | None, wall0: float, start_ms: int, now_ms: int) -> None:
    if speed is None:
        return
    due = wall0 + (now_ms - start_ms) / 1000 / speed
    delay = due - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def _iso_day(ms: int) -> str:
    return _date(ms).isoformat()


def _alert_record(a: Any, sites: dict[int, str], loans: dict[int, str]) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "severity": a.severity, "bank": a.bank_id,
            "loan": loans.get(a.loan_id) if a.loan_id else None,
            "site": sites.get(a.site_id) if a.site_id else None,
            "subject_type": a.subject_type, "subject_id": a.subject_id,
            "event_time_ms": a.event_time_ms, "opened_at_ms": a.opened_at_ms,
            "resolved_at_ms": a.resolved_at_ms, "state": a.state, "summary": a.summary}


def write_outputs(out_dir: Path, world: World, sessions: sessionmaker[Session],
                  end_ms: int) -> int:
    """truth.jsonl, alerts.jsonl and valuations.jsonl (see docs/scenarios.md)."""
    world.write_truth(out_dir / "truth.jsonl")
    with sessions() as session:
        banks = {b.id: b.code for b in session.scalars(select(m.Bank))}
        sites = {s.id: s.code for s in session.scalars(select(m.Site))}
        loans = {ln.id: ln for ln in session.scalars(select(m.Loan))}
        loan_codes = {i: ln.code for i, ln in loans.items()}
        n = 0
        with (out_dir / "alerts.jsonl").open("w") as f:
            for a in session.scalars(select(Alert).order_by(Alert.id)):
                rec = _alert_record(a, sites, loan_codes)
                rec["bank"] = banks.get(a.bank_id)
                f.write(json.dumps(rec) + "\n")
                n += 1
        # the valuation at the end of each simulated day: the last one stamped that day
        # (the midnight tick already belongs to the next day and its price)
        last: dict[tuple[int, str], Any] = {}
        for v in session.scalars(select(Valuation).order_by(Valuation.ts_ms)):
            last[(v.loan_id, _iso_day(v.ts_ms))] = v
        with (out_dir / "valuations.jsonl").open("w") as f:
            for (loan_id, day), v in sorted(last.items(), key=lambda kv: (kv[0][1], kv[0][0])):
                loan = loans[loan_id]
                f.write(json.dumps({"loan": loan.code, "day": day, "ts_ms": v.ts_ms,
                                    "value": float(v.value), "low": float(v.low),
                                    "high": float(v.high), "coverage": _num(v.coverage),
                                    "ltv": _num(v.ltv),
                                    "currency": loan.currency}) + "\n")
    return n


def _num(x: Any) -> float | None:
    """JSON has no infinity: an LTV with nothing left to value is written as null."""
    f = float(x)
    return f if f == f and abs(f) != float("inf") else None


def run(scenario_path: Path, out_dir: Path, **kwargs: Any) -> RunResult:
    return asyncio.run(run_async(scenario_path, out_dir, **kwargs))
