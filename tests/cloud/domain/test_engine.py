"""The domain engine against a real SQLite database: a restart rebuilds state without
writing old alerts again, and a failed evaluation does not count readings twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cloud.alerts import service as alerts
from cloud.alerts.models import Alert
from cloud.db import models as m
from cloud.db.migrate import upgrade
from cloud.db.session import make_engine, make_sessionmaker
from cloud.domain import engine as engine_mod
from cloud.domain.engine import DomainEngine
from protocols.uplink import Batch, Reading

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MIN = 60_000
HOUR = 60 * MIN
UNKNOWN = "E28011700000000000ABCDEF"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def _db(tmp_path: Path, kind: str) -> Any:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    with sessions() as s, s.begin():
        bank = m.Bank(code="TB", name="Test Bank")
        s.add(bank)
        s.flush()
        site = m.Site(bank_id=bank.id, code="s-1", name="Site", kind=kind)
        s.add(site)
        s.flush()
        borrower = m.Borrower(bank_id=bank.id, code="B1", name="B1")
        s.add(borrower)
        s.flush()
        loan = m.Loan(bank_id=bank.id, borrower_id=borrower.id, code="L1", currency="USD",
                      outstanding=1000, ltv_line=0.7, margin_call_line=0.8,
                      liquidation_line=0.9, haircut=0)
        s.add(loan)
        s.flush()
        s.add(m.LoanSite(loan_id=loan.id, site_id=site.id))
        s.add(m.Gateway(gateway_id="gw-1", site_id=site.id, public_key=b"k" * 32,
                        disabled=False, last_seq=0))
        if kind == "warehouse":
            s.add(m.PledgedLot(loan_id=loan.id, site_id=site.id, lot_code="LOT-1", sku="CU",
                               commodity="copper_cathode", quantity=50_000, unit="kg"))
    return sessions


def _store(sessions: Any, engine: DomainEngine, seq: int, readings: list[Reading]) -> None:
    """What the ingest does: commit the batch and its readings, then hand it over."""
    with sessions() as s, s.begin():
        site_id = s.scalar(select(m.Site.id))
        batch = m.IngestedBatch(gateway_id="gw-1", seq=seq, created_ms=readings[-1].recv_ms,
                                received_ms=readings[-1].recv_ms, readings=len(readings))
        s.add(batch)
        s.flush()
        s.add_all(m.Reading(site_id=site_id, batch_id=batch.id, device_id=r.device_id,
                            kind=r.kind, ts_ms=r.ts_ms, recv_ms=r.recv_ms, data=r.data)
                  for r in readings)
    engine.on_batch("gw-1", Batch("gw-1", seq, readings[-1].recv_ms, tuple(readings)))


def _beat(t: int) -> Reading:
    return Reading("heartbeat", "gateway:gw-1", t, t, {"outbox_readings": 0})


def _alerts(sessions: Any) -> list[tuple[str, str, str]]:
    with sessions() as s:
        return [(a.kind, a.subject_id, a.state) for a in s.scalars(select(Alert)
                                                                    .order_by(Alert.id))]


def test_a_restart_rebuilds_state_without_reopening_old_alerts(tmp_path: Path) -> None:
    sessions = _db(tmp_path, "ranch")
    clock = Clock()
    first = DomainEngine(sessions, clock_ms=clock)
    first.load()
    seq = 0
    # an unknown tag read twice (a foreign_tag), then only heartbeats for two days: the
    # alert opens, holds its 24 h and resolves
    for t in range(T0, T0 + 48 * HOUR, 10 * MIN):
        clock.now = t
        seq += 1
        readings = [_beat(t)]
        if t < T0 + 30 * MIN:
            readings.insert(0, Reading("tag_sighting", "water-1", t, t, {
                "epc": UNKNOWN, "antenna": 1, "count": 3, "first_ms": t, "last_ms": t,
                "rssi_max_dbm": -50}))
        _store(sessions, first, seq, readings)
        first.step()
    before = _alerts(sessions)
    # (no price registered: the loan is valued at 0, a standing coverage breach)
    assert before == [("foreign_tag", UNKNOWN, "resolved"), ("coverage_breach", "L1", "open")]

    # a new process: rebuilt from the stored readings, it writes nothing about the past
    clock.now += 10 * MIN
    second = DomainEngine(sessions, clock_ms=clock)
    replayed = second.warm_start(T0)
    assert ("gw-1", 1) in replayed and len(replayed) == seq
    second.step()
    assert _alerts(sessions) == before
    # and goes on live: the same tag read again opens a new alert
    for t in range(clock.now, clock.now + 40 * MIN, 10 * MIN):
        clock.now = t
        seq += 1
        _store(sessions, second, seq, [Reading("tag_sighting", "water-1", t, t, {
            "epc": UNKNOWN, "antenna": 1, "count": 3, "first_ms": t, "last_ms": t,
            "rssi_max_dbm": -50}), _beat(t)])
        second.step()
    assert [a for a in _alerts(sessions) if a[0] == "foreign_tag"] == [
        ("foreign_tag", UNKNOWN, "resolved"), ("foreign_tag", UNKNOWN, "open")]


def test_a_failed_evaluation_does_not_count_readings_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = _db(tmp_path, "warehouse")
    clock = Clock()
    eng = DomainEngine(sessions, clock_ms=clock)
    eng.load()
    real = alerts.reconcile
    calls = {"n": 0}

    def flaky(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is locked")
        return real(*args, **kw)

    monkeypatch.setattr(engine_mod.alerts, "reconcile", flaky)
    t = T0 + 5 * MIN
    ticket = Reading("weigh_ticket", "wb-1", t, t, {
        "gross_kg": 40_000.0, "tare_kg": 15_000.0, "net_kg": 25_000.0, "truck_id": "T1",
        "in_ms": t - 30 * MIN, "out_ms": t, "direction": "inbound"})
    clock.now = T0 + 30 * MIN
    _store(sessions, eng, 1, [ticket, _beat(T0 + 30 * MIN)])
    eng.step()
    assert eng.stats.rule_errors == 1
    clock.now = T0 + 40 * MIN
    _store(sessions, eng, 2, [_beat(T0 + 40 * MIN)])
    eng.step()
    site = next(iter(eng._sites.values()))
    snap = site.state.stock_snapshot(T0 + 30 * MIN)
    assert snap.in_kg == 25_000.0 and snap.tickets == 1
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Alert)) == 0


@pytest.mark.parametrize(("key", "value"), [
    ("eval_interval_ms", 1), ("eval_interval_ms", 7 * MIN), ("baseline_days", 1_000_000),
    ("missing_after_ms", 400 * 24 * HOUR)])
def test_rule_overrides_that_would_stall_the_shared_engine_are_refused(key: str,
                                                                       value: int) -> None:
    with pytest.raises(alerts.InvalidParamsError, match=key):
        alerts.validate_params({key: value})
    assert alerts.validate_params({"eval_interval_ms": 15 * MIN}) == {
        "eval_interval_ms": 15 * MIN}


def test_the_rules_runner_tails_batches_any_process_stored_once_each(tmp_path: Path) -> None:
    """The rules process sees batches another cloud process ingested (it reads the table,
    not its own ingest), including one that became visible after a later one, and hands
    each to the engine once."""
    from cloud.domain.runner import RulesRunner

    sessions = _db(tmp_path, "ranch")
    clock = Clock()
    runner = RulesRunner(sessions, clock_ms=clock)
    clock.now = T0 + HOUR
    runner._warm()

    def insert(seq: int, received_ms: int) -> None:
        with sessions() as s, s.begin():
            site_id = s.scalar(select(m.Site.id))
            batch = m.IngestedBatch(gateway_id="gw-1", seq=seq, created_ms=received_ms,
                                    received_ms=received_ms, readings=2)
            s.add(batch)
            s.flush()
            for k in range(2):
                s.add(m.Reading(site_id=site_id, batch_id=batch.id, device_id="gateway:gw-1",
                                kind="heartbeat", ts_ms=received_ms + k, recv_ms=received_ms,
                                data={"outbox_readings": 0}))

    insert(1, T0 + HOUR + 10_000)
    assert runner._tail() == 1 and runner._tail() == 0
    insert(3, T0 + HOUR + 20_000)
    insert(2, T0 + HOUR + 5_000)  # committed late by another process, stamped earlier
    assert runner._tail() == 2 and runner._tail() == 0
    assert runner.engine.stats.readings == 6
