"""Each incident kind changes the device streams the way docs/scenarios.md says, on one 3-day
world that has every kind (tests/world/conftest.py)."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from typing import Any

import numpy as np

from edge.aggregate import motion_step, split_motion_epc
from firmware_sim.world.layout import point_in_polygon
from firmware_sim.world.observations import (
    AnimalWeighing,
    DeviceState,
    FeedDelivery,
    GatewayState,
    PositionFix,
    TagRead,
    TruckWeighing,
)
from firmware_sim.world.ranch import FEEDING_EXPONENT, PRODROME_EXPONENT, prodrome_factor
from firmware_sim.world.truth import validate_truth_line

from .conftest import DAY_MS, HOUR_MS, Run, run_world


def reads_of(run: Run, epcs: set[str]) -> list[tuple[int, str, int | None]]:
    """(ts, device, motion counter) of every read of these identity EPCs."""
    out = []
    for o in run.obs:
        if isinstance(o, TagRead):
            ident, counter = split_motion_epc(o.epc)
            if ident in epcs:
                out.append((o.ts_ms, o.device, counter))
    return out


def test_stream_is_ordered_and_inside_the_run(all_kinds: Run) -> None:
    w = all_kinds.world
    ts = [o.ts_ms for o in all_kinds.obs]
    assert ts == sorted(ts)
    assert ts[0] >= w.start_ms and ts[-1] < w.end_ms
    kinds = {type(o) for o in all_kinds.obs}
    assert kinds == {TagRead, AnimalWeighing, FeedDelivery, TruckWeighing, PositionFix,
                     DeviceState, GatewayState}


def test_every_kind_has_one_valid_truth_line(all_kinds: Run) -> None:
    incidents = [t for t in all_kinds.truth if t["type"] == "incident"]
    assert len(incidents) == 14
    assert [t["id"] for t in incidents] == [f"inc-{i}" for i in range(1, 15)]
    for t in all_kinds.truth:
        assert validate_truth_line(t) == [], t


def test_theft_stolen_animals_are_never_read_again(all_kinds: Run) -> None:
    inc = all_kinds.incident("theft")
    stolen = set(inc["subjects"]["animals"])
    assert len(stolen) == 3 and inc["subjects"]["loans"][0] == "LR"
    reads = reads_of(all_kinds, stolen)
    at = inc["start_ms"]
    assert not [r for r in reads if r[0] >= at]
    # ... while every one of them was read in the hours before
    seen_before = {split_motion_epc(o.epc)[0] for o in all_kinds.obs
                   if isinstance(o, TagRead) and at - 6 * HOUR_MS <= o.ts_ms < at}
    assert stolen <= seen_before
    weighed_after = [o for o in all_kinds.obs if isinstance(o, AnimalWeighing)
                     and o.epc in stolen and o.ts_ms >= at]
    assert weighed_after == []


def test_death_no_motion_read_only_where_it_lies(all_kinds: Run) -> None:
    inc = all_kinds.incident("death")
    (dead,) = inc["subjects"]["animals"]
    (where,) = inc["subjects"]["devices"]
    at = inc["start_ms"]
    after = [r for r in reads_of(all_kinds, {dead}) if r[0] >= at]
    assert len(after) > 1000  # a read most minutes for two days
    assert {r[1] for r in after} == {where}
    assert len({r[2] for r in after}) == 1 and after[0][2] is not None  # counter frozen
    before = [r for r in reads_of(all_kinds, {dead}) if r[0] < at - HOUR_MS]
    assert len({r[2] for r in before}) > 10  # it moved while alive


def test_tag_drop_read_at_one_reader_without_motion(all_kinds: Run) -> None:
    inc = all_kinds.incident("tag_drop")
    (epc,) = inc["subjects"]["animals"]
    (where,) = inc["subjects"]["devices"]
    at = inc["start_ms"]
    reads = reads_of(all_kinds, {epc})
    after = [r for r in reads if r[0] >= at]
    before = [r for r in reads if r[0] < at]
    assert {r[1] for r in after} == {where}
    assert len({r[2] for r in after}) == 1
    assert after[-1][0] > all_kinds.world.end_ms - 10 * 60_000  # read till the end
    assert len({r[1] for r in before}) >= 2  # a live animal visits bunk and water
    # the animal is still there (its value counts) but no scale can name it any more
    assert not [o for o in all_kinds.obs if isinstance(o, AnimalWeighing) and o.epc == epc
                and o.ts_ms >= at]
    assert inc["end_ms"] is None


def _activity_per_hour(reads: list[tuple[int, str, int | None]], t0: int, t1: int) -> float:
    """Counts per hour between the first and last read in [t0, t1), across the 16-bit wrap."""
    inside = [(t, c) for t, _, c in reads if t0 <= t < t1 and c is not None]
    total = 0
    for (_, a), (_, b) in itertools.pairwise(inside):
        step = motion_step(a, b)
        total += step or 0
    span = inside[-1][0] - inside[0][0]
    return total / span * HOUR_MS


def test_illness_activity_falls_before_the_clinical_day(all_kinds: Run) -> None:
    inc = all_kinds.incident("illness")
    ill = inc["subjects"]["animals"]
    onset, clinical = inc["start_ms"], inc["detail"]["clinical_ms"]
    assert clinical - onset == 36 * HOUR_MS and inc["end_ms"] == clinical + 6 * HOUR_MS
    w = all_kinds.world
    reg = {a.epc: a for a in w.registry.animals}
    assert all(reg[e].tag == "motion" for e in ill)  # picked for their motion tags
    touched = {e for t in all_kinds.truth if t["type"] == "incident"
               and t["kind"] != "double_pledge" for e in t["subjects"]["animals"]}
    healthy = [e for e, a in reg.items() if a.tag == "motion" and e not in touched][:20]
    # activity is circadian: compare the 12 h before the clinical moment with the same clock
    # hours of day 0 (before the onset)
    late = (clinical - 12 * HOUR_MS, clinical)
    first = w.start_ms + (late[0] - w.start_ms) % DAY_MS
    base = (first, first + 12 * HOUR_MS)
    assert base[1] <= onset

    def ratio(epc: str) -> float:
        reads = reads_of(all_kinds, {epc})
        return _activity_per_hour(reads, *late) / _activity_per_hour(reads, *base)

    for e in ill:
        assert ratio(e) < 0.8, e
    assert 0.85 < statistics.median(ratio(e) for e in healthy) < 1.15

    # still seen at the water: an ill animal is not a missing one
    ill_reads = reads_of(all_kinds, set(ill))
    gaps = np.diff([w.start_ms, *sorted(t for t, _, _ in ill_reads)])
    assert gaps.max() < 6 * HOUR_MS


def test_feed_shortage_cuts_the_pen_deliveries(all_kinds: Run) -> None:
    inc = all_kinds.incident("feed_shortage")
    t0, t1 = inc["start_ms"], inc["end_ms"]
    assert inc["detail"] == {"percent": 50.0} and inc["subjects"]["pens"] == ["P2"]
    kg: dict[tuple[str, bool], list[float]] = defaultdict(list)
    for o in all_kinds.obs:
        if isinstance(o, FeedDelivery):
            kg[(o.pen, t0 <= o.ts_ms < t1)].append(o.kg)
    p2 = statistics.mean(kg["P2", True]) / statistics.mean(kg["P2", False])
    p1 = statistics.mean(kg["P1", True]) / statistics.mean(kg["P1", False])
    assert 0.45 < p2 < 0.55 and 0.9 < p1 < 1.1
    assert len(kg["P2", True]) == 2  # two feedings a day


def test_reader_offline_says_nothing_meanwhile(all_kinds: Run) -> None:
    inc = all_kinds.incident("reader_offline")
    (dev,) = inc["subjects"]["devices"]
    t0, t1 = inc["start_ms"], inc["end_ms"]
    assert t1 - t0 == 3 * HOUR_MS
    states = [o for o in all_kinds.obs if isinstance(o, DeviceState)]
    assert [(s.device, s.online, s.ts_ms) for s in states] == [(dev, False, t0),
                                                                (dev, True, t1)]
    from_dev = [o.ts_ms for o in all_kinds.obs if o.device == dev and isinstance(o, TagRead)]
    assert not [t for t in from_dev if t0 <= t < t1]
    assert [t for t in from_dev if t0 - HOUR_MS <= t < t0]
    assert [t for t in from_dev if t1 <= t < t1 + HOUR_MS]


def test_gateway_outages_stop_nothing_in_the_world(all_kinds: Run) -> None:
    states = [o for o in all_kinds.obs if isinstance(o, GatewayState)]
    assert [(s.site, s.device, s.what, s.up) for s in states] == [
        ("w1", "gw-w1", "crash", False), ("w1", "gw-w1", "crash", True),
        ("r1", "gw-r1", "network", False), ("r1", "gw-r1", "network", True)]
    net = all_kinds.incident("network_outage")
    during = [o for o in all_kinds.obs if isinstance(o, TagRead) and o.site == "r1"
              and net["start_ms"] <= o.ts_ms < net["end_ms"]]
    assert len(during) > 1000  # devices keep talking; the runner decides what is lost
    outages = [t for t in all_kinds.truth if t["type"] == "outage"]
    assert outages == [  # in file order
        {"type": "outage", "site": "r1", "start_ms": net["start_ms"], "end_ms": net["end_ms"],
         "what": "network"},
        {"type": "outage", "site": "w1", "start_ms": states[0].ts_ms,
         "end_ms": states[1].ts_ms, "what": "crash"}]
    assert net["subjects"]["gateways"] == ["gw-r1"] and net["subjects"]["devices"] == []


def _weighs(run: Run, truck: str) -> list[TruckWeighing]:
    return [o for o in run.obs if isinstance(o, TruckWeighing) and o.truck_id == truck]


def test_outbound_without_release(all_kinds: Run) -> None:
    inc = all_kinds.incident("outbound_without_release")
    (truck,) = inc["subjects"]["trucks"]
    (lot,) = inc["subjects"]["lots"]
    d = inc["detail"]
    weighs = {(o.phase, o.ts_ms): o.weight_kg for o in _weighs(all_kinds, truck)}
    w_in, w_out = weighs["in", d["in_ms"]], weighs["out", d["out_ms"]]
    assert math.isclose(w_out - w_in, 20000, abs_tol=60)  # left loaded: net = out - in
    assert inc["start_ms"] == d["out_ms"]
    reg = all_kinds.world.registry
    assert not [r for r in reg.release_orders if r.truck_id == truck
                and r.valid_from_ms <= d["out_ms"] <= r.valid_to_ms]
    assert not [r for r in reg.release_orders if r.lot == lot
                and r.valid_from_ms <= d["out_ms"] <= r.valid_to_ms]
    # the truck reader saw it at the bridge each time
    tags = [o.ts_ms for o in all_kinds.obs if isinstance(o, TagRead) and o.epc == truck]
    assert any(d["in_ms"] - 5 * 60_000 <= t <= d["in_ms"] for t in tags)
    assert any(d["out_ms"] - 5 * 60_000 <= t <= d["out_ms"] for t in tags)


def test_every_other_shipment_has_its_release_order(all_kinds: Run) -> None:
    reg = all_kinds.world.registry
    bad = all_kinds.incident("outbound_without_release")["detail"]["out_ms"]
    by_truck: dict[str, list[TruckWeighing]] = defaultdict(list)
    for o in all_kinds.obs:
        if isinstance(o, TruckWeighing):
            by_truck[o.truck_id].append(o)
    shipments = 0
    for truck, ws in by_truck.items():
        assert [w.phase for w in ws] == ["in", "out"] * (len(ws) // 2)
        for w_in, w_out in zip(ws[::2], ws[1::2], strict=True):
            if w_out.weight_kg - w_in.weight_kg > 1000 and w_out.ts_ms != bad:
                shipments += 1
                orders = [r for r in reg.release_orders if r.truck_id == truck
                          and r.valid_from_ms <= w_out.ts_ms <= r.valid_to_ms]
                # loaded to its order (a truck may have two orders on one day)
                net = w_out.weight_kg - w_in.weight_kg
                assert any(abs(r.quantity_kg - net) < 150 for r in orders), (orders, net)
    assert shipments >= 3


def test_tare_fraud_records_the_tare_light(all_kinds: Run) -> None:
    inc = all_kinds.incident("tare_fraud")
    (truck,) = inc["subjects"]["trucks"]
    d = inc["detail"]
    true_tare = next(t.tare_kg for t in all_kinds.world.registry.trucks if t.truck_id == truck)
    assert d["true_tare_kg"] == true_tare
    weighs = _weighs(all_kinds, truck)
    fraud = next(w for w in weighs if w.ts_ms == d["out_ms"])
    assert fraud.phase == "out" and fraud.weight_kg == d["recorded_tare_kg"]
    assert math.isclose(fraud.weight_kg, true_tare * 0.9, abs_tol=10)
    # every other empty weigh of that truck shows its true tare
    others = [w.weight_kg for w in weighs if w.ts_ms != fraud.ts_ms
              and abs(w.weight_kg - true_tare) < 0.5 * true_tare]
    assert others and all(abs(x - true_tare) <= 60 for x in others)
    assert d["ticket_net_kg"] > d["true_net_kg"]  # the ledger gains phantom stock


def test_geofence_exit(all_kinds: Run) -> None:
    inc = all_kinds.incident("geofence_exit")
    (tracker,) = inc["subjects"]["devices"]
    fence = all_kinds.world.registry.site("w1").geofence
    outside = [o for o in all_kinds.obs if isinstance(o, PositionFix)
               and not point_in_polygon(o.lat, o.lon, fence)]
    assert outside and {o.device for o in outside} == {tracker}
    assert all(inc["start_ms"] <= o.ts_ms <= inc["end_ms"] for o in outside)
    assert inc["end_ms"] - inc["start_ms"] > 30 * 60_000
    far = max(abs(o.lat - all_kinds.world.registry.site("w1").lat) for o in outside)
    assert far * 111_320 > 300  # 300 m beyond the fence, 100 m south of the centre
    inside = [o for o in all_kinds.obs if isinstance(o, PositionFix) and o.device == tracker
              and point_in_polygon(o.lat, o.lon, fence)]
    assert len(inside) > 100


def test_double_pledge_is_in_the_registry_only(all_kinds: Run) -> None:
    reg = all_kinds.world.registry
    animals = all_kinds.incident("double_pledge")
    dp = set(animals["subjects"]["animals"])
    assert len(dp) == 5 and animals["subjects"]["loans"] == ["LR", "LB"]
    loans_of: dict[str, set[str]] = defaultdict(set)
    for a in reg.animals:
        loans_of[a.epc].add(a.loan)
    assert {e for e, ls in loans_of.items() if len(ls) > 1} == dp
    assert all(loans_of[e] == {"LR", "LB"} for e in dp)
    lots = [t for t in all_kinds.truth if t["type"] == "incident"
            and t["kind"] == "double_pledge"][1]
    lot_loans: dict[str, set[str]] = defaultdict(set)
    for lot in reg.lots:
        lot_loans[lot.code].add(lot.loan)
    assert {c for c, ls in lot_loans.items() if len(ls) > 1} == set(lots["subjects"]["lots"])
    assert {b.code for b in reg.banks} == {"BA", "BB"}
    lb = reg.loan("LB")
    assert lb.bank == "BB" and lb.borrower == "FARM" and lb.outstanding
    # the value of the second pledge is that of its own 5 animals
    day0 = [t for t in all_kinds.truth if t["type"] == "value"][:4]
    by_loan = {t["loan"]: t["value"] for t in day0}
    assert 0.03 < by_loan["LB"] / by_loan["LR"] < 0.08


def test_price_change(all_kinds: Run) -> None:
    inc = all_kinds.incident("price_change")
    d = inc["detail"]
    assert d["commodity"] == "copper_cathode" and inc["subjects"]["loans"] == ["LW", "LB-W"]
    ratio = d["price_after"] / d["price_before"]
    assert abs(math.log(ratio) - math.log(0.9)) < 5 * 0.01  # shock +- 5 daily sds
    prices = [p for p in all_kinds.world.registry.prices if p.commodity == "copper_cathode"
              and p.bank == "BA"]
    assert [p.date.isoformat() for p in prices] == ["2026-01-05", "2026-01-06", "2026-01-07"]
    assert prices[2].price == d["price_after"] and prices[1].price == d["price_before"]
    assert all(p.unit == "t" and p.currency == "USD" for p in prices)


def test_truth_values_follow_the_events(all_kinds: Run) -> None:
    values: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in all_kinds.truth:
        if t["type"] == "value":
            values[t["loan"]].append(t)
    assert sorted(values) == ["LB", "LB-W", "LR", "LW"]
    loans = {t["loan"]: t for t in all_kinds.truth if t["type"] == "loan"}
    assert loans["LW"] == {"type": "loan", "loan": "LW", "outstanding": loans["LW"]["outstanding"],
                           "ltv_line": 0.7, "margin_call_line": 0.8, "liquidation_line": 0.9,
                           "bank": "BA", "currency": "USD"}
    # no outstanding given: 60 % of the true value at the start
    w = all_kinds.world
    at_start = w.warehouses[0].stock_at(w.start_ms).sum() / 1000 * w.registry.prices[
        [p.commodity for p in w.registry.prices].index("copper_cathode")].price * 0.8
    assert math.isclose(loans["LW"]["outstanding"], 0.6 * at_start, rel_tol=1e-6)
    assert sorted(loans) == sorted(values) and loans["LB"]["bank"] == "BB"
    assert all(len(v) == 3 for v in values.values())
    lr = values["LR"]
    assert all(v["inventory"] == 0 and v["livestock"] > 0 for v in lr)
    assert [v["ts_ms"] for v in lr] == [all_kinds.world.start_ms + k * DAY_MS
                                        for k in (1, 2, 3)]
    # day 2 lost 3 stolen and 1 dead head (~4 % of 100) despite growth
    assert lr[1]["livestock"] < lr[0]["livestock"] * 0.985
    lw = values["LW"]
    assert all(v["livestock"] == 0 for v in lw)
    # inventory = true stock x price x (1 - haircut): day 3 has copper -10 %
    wh = all_kinds.world.warehouses[0]
    prices = [p.price for p in all_kinds.world.registry.prices
              if p.commodity == "copper_cathode" and p.bank == "BA"]
    for v, price in zip(lw, prices, strict=True):
        stock_kg = wh.stock_at(v["ts_ms"]).sum()
        assert math.isclose(v["inventory"], stock_kg / 1000 * price * 0.8, abs_tol=0.02)
    assert prices[2] < prices[1] * 0.95


def _passes(run: Run, epcs: set[str], devices: set[str], t0: int, t1: int) -> int:
    """Passes (reads of one animal at one reader more than a minute apart) in [t0, t1)."""
    last: dict[tuple[str, str], int] = {}
    n = 0
    for o in run.obs:
        if isinstance(o, TagRead) and o.device in devices and t0 <= o.ts_ms < t1:
            key = (split_motion_epc(o.epc)[0], o.device)
            if key[0] in epcs and o.ts_ms - last.get(key, -10**15) > 60_000:
                n += 1
            if key[0] in epcs:
                last[key] = o.ts_ms
    return n


def test_illness_bunk_visits_fall_water_visits_do_not() -> None:
    run = run_world({"seed": 5, "duration": "4d", "ranch": [{"id": "r", "animals": 40}],
                     "incident": [{"kind": "illness", "site": "r", "at": "+1d", "count": 20,
                                   "prodrome": "2d"}]})
    inc = run.incident("illness")
    ill = set(inc["subjects"]["animals"])
    assert inc["end_ms"] is None and inc["detail"]["recovered_ms"] is None
    devices = run.world.registry.devices
    bunk = {d.device_id for d in devices if d.place == "bunk"}
    water = {d.device_id for d in devices if d.place == "water"}
    s = run.world.start_ms
    clinical = inc["detail"]["clinical_ms"]
    assert clinical == s + 3 * DAY_MS
    day0 = (s, s + DAY_MS)
    day3 = (clinical, clinical + DAY_MS)  # activity_drop 0.5 all day
    bunk_ratio = _passes(run, ill, bunk, *day3) / _passes(run, ill, bunk, *day0)
    water_ratio = _passes(run, ill, water, *day3) / _passes(run, ill, water, *day0)
    assert 0.3 < bunk_ratio < 0.7
    assert 0.85 < water_ratio < 1.15


def test_theft_through_the_gate_reader() -> None:
    """With a gate reader the stolen animals are read leaving, in the 10 minutes before the
    theft's time (across midnight here), and by nobody afterwards; the gate reads nobody
    else."""
    run = run_world({"seed": 1, "duration": "2d",
                     "ranch": [{"id": "r", "animals": 30, "gate_reader": True}],
                     "incident": [{"kind": "theft", "site": "r", "at": "+1d5m", "count": 3}]})
    inc = run.incident("theft")
    at = inc["start_ms"]
    assert inc["subjects"]["devices"] == ["r-rdr-gate"]
    gate = [o for o in run.obs if isinstance(o, TagRead) and o.device == "r-rdr-gate"]
    assert {split_motion_epc(o.epc)[0] for o in gate} == set(inc["subjects"]["animals"])
    assert all(at - 10 * 60_000 <= o.ts_ms < at for o in gate)
    assert len(gate) == len(set(gate)) >= 6
    assert not [r for r in reads_of(run, set(inc["subjects"]["animals"])) if r[0] >= at]


def test_prodrome_factor_shapes() -> None:
    """The prodrome curves of docs/scenarios.md: activity linear, feeding behaviour a square
    root (earlier), both 1 before the onset and ``1 - drop`` at the clinical moment."""
    assert (PRODROME_EXPONENT, FEEDING_EXPONENT) == (1.0, 0.5)
    for exp in (PRODROME_EXPONENT, FEEDING_EXPONENT):
        xs = np.linspace(0.0, 1.0, 61)
        f = [prodrome_factor(float(x), 0.5, exp) for x in xs]
        assert f[0] == 1.0 and f[-1] == 0.5 and prodrome_factor(-0.1, 0.5, exp) == 1.0
        assert all(b < a for a, b in itertools.pairwise(f))  # falls all the way
    assert prodrome_factor(0.5, 0.5) == 0.75
    assert prodrome_factor(0.25, 0.5, FEEDING_EXPONENT) == 0.75
    # day -6 of a 6-day prodrome: the decline is under way (Pillen et al.: "started at least
    # 6 days prior"); mean factor over x in [0, 1/6]
    day6 = np.mean([prodrome_factor(float(x), 0.5) for x in np.linspace(0, 1 / 6, 101)])
    assert 0.95 < day6 < 0.97


def test_illness_prodrome_in_the_streams() -> None:
    """Half-way through the prodrome the streams show the curves: activity (motion counter)
    over x in [0.25, 0.5) at 1 - 0.5 * 0.375 = 0.81 of the animal's own level at the same
    clock hours before the onset (the former x**1.5 curve: 0.88), bunk passes over x in
    [0, 0.5) at 1 - 0.5 * 0.47 = 0.76 (a linear curve: 0.88), relative to healthy animals."""
    run = run_world({"seed": 8, "duration": "6d",
                     "ranch": [{"id": "r", "animals": 80, "motion_fraction": 0.9,
                                "iso_fraction": 0.1}],
                     "incident": [{"kind": "illness", "site": "r", "at": "+2d", "count": 30,
                                   "prodrome": "4d"}]})
    inc = run.incident("illness")
    ill = set(inc["subjects"]["animals"])
    onset = inc["start_ms"]
    s = run.world.start_ms
    reg = {a.epc: a for a in run.world.registry.animals}
    healthy = {e for e, a in reg.items() if a.tag == "motion" and e not in ill}
    assert len(healthy) >= 10 and all(reg[e].tag == "motion" for e in ill)

    def activity_ratio(epc: str) -> float:
        reads = reads_of(run, {epc})
        return (_activity_per_hour(reads, onset + DAY_MS, onset + 2 * DAY_MS)
                / _activity_per_hour(reads, s, s + DAY_MS))

    act = (statistics.median(activity_ratio(e) for e in ill)
           / statistics.median(activity_ratio(e) for e in healthy))
    assert 0.77 < act < 0.85, act  # 0.83 at this seed
    bunk = {d.device_id for d in run.world.registry.devices if d.place == "bunk"}

    def bunk_ratio(epcs: set[str]) -> float:
        return (_passes(run, epcs, bunk, onset, onset + 2 * DAY_MS)
                / _passes(run, epcs, bunk, s, s + 2 * DAY_MS))

    feed = bunk_ratio(ill) / bunk_ratio(healthy)
    assert 0.68 < feed < 0.84, feed  # 0.74 at this seed
