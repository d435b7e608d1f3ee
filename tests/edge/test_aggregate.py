"""Edge aggregation: hand-built streams with exact expected readings, Hypothesis properties
against reference models, and the simulated TMR indicator and weighbridge as ground truth."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from edge.aggregate import (
    MOTION_COUNTER_MOD,
    GpsThinner,
    StableWeightDetector,
    TagSightingAggregator,
    TmrEventDetector,
    WeighTicketPairer,
    _Run,
    haversine_m,
    motion_step,
    split_motion_epc,
    thin_track,
)
from firmware_sim import ManualClock
from firmware_sim.digistar_indicator import DigiStarIndicator, FeedStep, demo_ration
from firmware_sim.xk3190_weighbridge import TruckVisit, Xk3190Weighbridge
from protocols import digistar, iso11784, xk3190
from protocols.messages import LB_TO_KG, Position, TagRead, Weight
from protocols.uplink import Reading

DEV = "reader-1"
A = "300833B2DDD9014000000001"
B = "300833B2DDD9014000000002"
SERIAL = "01020304050607"  # 7 bytes of a motion tag's serial


def motion_epc(counter: int, serial: str = SERIAL, reserved: str = "0000") -> str:
    return f"E7{serial}{reserved}{counter:04X}"


def wire_ok(readings: list[Reading]) -> list[Reading]:
    """Every reading must survive the uplink contract's validation unchanged."""
    for r in readings:
        assert Reading.from_wire(r.to_wire()) == r
    return readings


def sighting(epc: str, antenna: int | None, count: int, first: int, last: int,
             rssi: float | None, recv: int, **extra: Any) -> Reading:
    data: dict[str, Any] = {"epc": epc, "antenna": antenna, "count": count, "first_ms": first,
                            "last_ms": last, "rssi_max_dbm": rssi, **extra}
    return Reading("tag_sighting", DEV, first, recv, data)


# -- motion EPC convention ---------------------------------------------------------------------
@pytest.mark.parametrize(("epc", "expected"), [
    (motion_epc(0x1234), (f"E7{SERIAL}00000000", 0x1234)),
    (motion_epc(0, reserved="ABCD"), (f"E7{SERIAL}ABCD0000", 0)),
    (motion_epc(0xFFFF).lower(), (f"E7{SERIAL}00000000", 0xFFFF)),
    (A, (A, None)),  # another header: no counter
    ("E7" + "00" * 9, ("E7" + "00" * 9, None)),  # 80-bit EPC: not the 96-bit layout
    ("E7" + "00" * 11 + "00", ("E7" + "00" * 12, None)),  # 104 bits
    ("E70102030405060700000_12", ("E70102030405060700000_12", None)),  # not hex
    ("e9" + "00" * 11, ("E9" + "00" * 11, None)),
], ids=["motion", "reserved-kept", "lowercase", "sgtin", "short", "long", "not-hex", "iso"])
def test_split_motion_epc(epc: str, expected: tuple[str, int | None]) -> None:
    assert split_motion_epc(epc) == expected


@pytest.mark.parametrize(("prev", "cur", "step"), [
    (5, 5, 0), (5, 9, 4), (0xFFFE, 0x0001, 3), (0xFFFF, 0, 1), (0, 0x7FFF, 0x7FFF),
    (0, 0x8000, None), (9, 5, None), (0x0001, 0xFFFE, None),
])
def test_motion_step_is_wrap_aware(prev: int, cur: int, step: int | None) -> None:
    assert motion_step(prev, cur) == step


# -- sightings: hand-built streams -------------------------------------------------------------
def test_reads_aggregate_per_epc_antenna_and_window() -> None:
    agg = TagSightingAggregator(1000, DEV)
    agg.feed(1000, TagRead(epc=A, antenna=1, rssi_dbm=-60))
    agg.feed(1200, TagRead(epc=A, antenna=1, rssi_dbm=-55))
    agg.feed(1500, TagRead(epc=A, antenna=2, rssi_dbm=-70))
    agg.feed(1900, TagRead(epc=B, antenna=1))
    agg.feed(1999, TagRead(epc=A, antenna=1, rssi_dbm=-58.5))
    agg.feed(2100, TagRead(epc=A, antenna=1, rssi_dbm=-50))
    assert agg.flush(1999) == []
    assert wire_ok(agg.flush(2000)) == [
        sighting(A, 1, 3, 1000, 1999, -55, 1999),
        sighting(A, 2, 1, 1500, 1500, -70, 1500),
        sighting(B, 1, 1, 1900, 1900, None, 1900),
    ]
    assert agg.open_sightings == 1
    assert agg.flush(2999) == []
    assert agg.flush(3000) == [sighting(A, 1, 1, 2100, 2100, -50, 2100)]
    assert (agg.reads, agg.sightings, agg.open_sightings, agg.late_reads) == (6, 4, 0, 0)


def test_device_time_sets_first_and_last_receive_time_sets_window_and_recv() -> None:
    agg = TagSightingAggregator(1000, DEV)
    # the reader's clock runs 40 s behind; windows follow the gateway clock
    agg.feed(5100, TagRead(epc=A, antenna=3, rssi_dbm=-61, device_ts_ms=-34_950 + 40_000))
    agg.feed(5300, TagRead(epc=A, antenna=3, rssi_dbm=-62, device_ts_ms=-34_990 + 40_000))
    agg.feed(5900, TagRead(epc=A, antenna=3, rssi_dbm=-63, device_ts_ms=-34_200 + 40_000))
    assert agg.flush(6000) == [sighting(A, 3, 3, 5010, 5800, -61, 5900)]


def test_read_count_of_preaggregating_readers_is_summed() -> None:
    agg = TagSightingAggregator(500, DEV)
    agg.feed(10, TagRead(epc=A, antenna=1, read_count=7))
    agg.feed(20, TagRead(epc=A, antenna=1, read_count=0))  # a zero count still is a read
    agg.feed(30, TagRead(epc=A, antenna=1))
    assert [r.data["count"] for r in agg.drain()] == [9]
    assert agg.reads == 9


def test_motion_tag_reads_aggregate_under_identity_with_counter_and_delta() -> None:
    agg = TagSightingAggregator(60_000, DEV)
    for i, counter in enumerate([0xFFFD, 0xFFFE, 0xFFFE, 0x0002, 0xFFFF, 0x0003]):
        agg.feed(1000 + i, TagRead(epc=motion_epc(counter), antenna=1, rssi_dbm=-50 - i))
    agg.feed(2000, TagRead(epc=motion_epc(0x0100), antenna=2))
    ident = f"E7{SERIAL}00000000"
    # 0xFFFD -> 0xFFFE -> 0x0002 (4 across the wrap); 0xFFFF is a stale read; -> 0x0003
    assert wire_ok(agg.flush(60_000)) == [
        sighting(ident, 1, 6, 1000, 1005, -50, 1005, motion=3, motion_delta=6),
        sighting(ident, 2, 1, 2000, 2000, None, 2000, motion=0x0100, motion_delta=0),
    ]


def test_iso11784_animal_id_is_added_when_the_epc_carries_one() -> None:
    animal = iso11784.AnimalId(country_code=999, national_id=123456789012)
    epc = iso11784.to_epc(animal).hex().upper()
    agg = TagSightingAggregator(1000, DEV)
    agg.feed(1, TagRead(epc=epc, antenna=1, rssi_dbm=-40))
    agg.feed(2, TagRead(epc=A, antenna=1, rssi_dbm=-40))
    iso, other = wire_ok(agg.flush(1000))
    assert iso.data["iso11784"] == "999123456789012" == animal.decimal
    assert "iso11784" not in other.data and "motion" not in other.data


def test_a_late_read_gets_its_own_sighting_and_is_counted() -> None:
    agg = TagSightingAggregator(1000, DEV)
    agg.feed(100, TagRead(epc=A, antenna=1))
    assert len(agg.flush(1500)) == 1
    agg.feed(900, TagRead(epc=A, antenna=1))  # receive times went backwards
    assert agg.late_reads == 1
    assert agg.flush(1500) == [sighting(A, 1, 1, 900, 900, None, 900)]


def test_too_many_open_sightings_close_the_oldest_window_early() -> None:
    agg = TagSightingAggregator(1000, DEV, max_open=3)
    agg.feed(0, TagRead(epc=A, antenna=1))
    agg.feed(1, TagRead(epc=B, antenna=1))
    agg.feed(1000, TagRead(epc=A, antenna=1))
    agg.feed(1001, TagRead(epc=B, antenna=1))  # 4 open: window 0 closes early
    assert agg.early_closes == 1 and agg.open_sightings == 2
    out = agg.flush(500)  # before window 0 would have ended: the early close is delivered
    assert [(r.data["epc"], r.ts_ms) for r in out] == [(A, 0), (B, 1)]
    assert [(r.data["epc"], r.ts_ms) for r in agg.drain()] == [(A, 1000), (B, 1001)]


@pytest.mark.parametrize("kwargs", [
    {"window_ms": 0, "device_id": DEV}, {"window_ms": 1.5, "device_id": DEV},
    {"window_ms": 1000, "device_id": ""}, {"window_ms": 1000, "device_id": DEV, "max_open": 0},
])
def test_sighting_aggregator_rejects_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TagSightingAggregator(**kwargs)


# -- sightings: properties against a reference model -------------------------------------------
EPCS = [A, B, motion_epc(0), motion_epc(0, serial="0A0B0C0D0E0F10")]


@st.composite
def read_streams(draw: st.DrawFn) -> list[tuple[int, TagRead]]:
    """Reads with non-decreasing receive times; motion tags count up in small steps."""
    n = draw(st.integers(0, 60))
    t = draw(st.integers(0, 10_000))
    counters = {e: draw(st.integers(0, MOTION_COUNTER_MOD - 1)) for e in EPCS}
    out = []
    for _ in range(n):
        t += draw(st.integers(0, 700))
        epc = draw(st.sampled_from(EPCS))
        identity, counter = split_motion_epc(epc)
        if counter is not None:
            counters[epc] = (counters[epc] + draw(st.integers(0, 300))) % MOTION_COUNTER_MOD
            epc = identity[:20] + f"{counters[epc]:04X}"
        dev_ts = draw(st.one_of(st.none(), st.integers(0, 2**40)))
        out.append((t, TagRead(epc=epc, antenna=draw(st.sampled_from([None, 1, 2, 4])),
                               rssi_dbm=draw(st.one_of(st.none(), st.integers(-90, -20))),
                               read_count=draw(st.sampled_from([None, None, 1, 3])),
                               device_ts_ms=dev_ts)))
    return out


def reference_sightings(reads: list[tuple[int, TagRead]], window_ms: int) -> list[Reading]:
    """The obvious group-by, written independently of the aggregator."""
    groups: dict[tuple[int, str, int | None], list[tuple[int, TagRead]]] = {}
    for recv, r in reads:
        identity, _ = split_motion_epc(r.epc)
        groups.setdefault((recv // window_ms, identity, r.antenna), []).append((recv, r))
    out = []
    for (_, identity, antenna), items in sorted(groups.items(), key=lambda kv: kv[0][0]):
        ts = [r.device_ts_ms if r.device_ts_ms is not None else recv for recv, r in items]
        rssi = [r.rssi_dbm for _, r in items if r.rssi_dbm is not None]
        data: dict[str, Any] = {
            "epc": identity, "antenna": antenna,
            "count": sum(r.read_count or 1 for _, r in items),
            "first_ms": min(ts), "last_ms": max(ts), "rssi_max_dbm": max(rssi, default=None)}
        counters = [c for _, r in items if (c := split_motion_epc(r.epc)[1]) is not None]
        if counters:
            data["motion"] = counters[-1]
            data["motion_delta"] = sum((b - a) % MOTION_COUNTER_MOD
                                       for a, b in itertools.pairwise(counters))
        out.append(Reading("tag_sighting", DEV, min(ts), max(recv for recv, _ in items), data))
    return out


@given(read_streams(), st.sampled_from([1, 250, 1000, 5000]))
def test_sightings_match_a_reference_group_by(reads: list[tuple[int, TagRead]],
                                              window_ms: int) -> None:
    agg = TagSightingAggregator(window_ms, DEV)
    agg.feed_many(reads)
    out = wire_ok(agg.drain())
    assert out == reference_sightings(reads, window_ms)
    assert sum(r.data["count"] for r in out) == agg.reads == sum(
        r.read_count or 1 for _, r in reads)


@given(read_streams(), st.sampled_from([1, 250, 1000]), st.data())
def test_sightings_do_not_depend_on_when_flush_is_called(
        reads: list[tuple[int, TagRead]], window_ms: int, data: st.DataObject) -> None:
    whole = TagSightingAggregator(window_ms, DEV)
    whole.feed_many(reads)
    expected = whole.drain()
    chunked = TagSightingAggregator(window_ms, DEV)
    got: list[Reading] = []
    for i, (recv, read) in enumerate(reads):
        chunked.feed(recv, read)
        next_recv = reads[i + 1][0] if i + 1 < len(reads) else recv + 10 * window_ms
        if data.draw(st.booleans()):  # flush at any time up to the next read's arrival
            got += chunked.flush(data.draw(st.integers(recv, next_recv)))
    got += chunked.drain()
    assert got == expected
    assert chunked.late_reads == 0


# -- weighbridge: stable weight detection ------------------------------------------------------
def kg(value: float, stable: bool | None = None, **kw: Any) -> Weight:
    return Weight(weight=value, unit="kg", weight_kg=value, stable=stable, **kw)


def run_detector(det: StableWeightDetector, stream: list[tuple[int, Weight]]
                 ) -> list[tuple[int, float, int, int]]:
    out = []
    for ts, w in stream:
        ev = det.feed(ts, w)
        if ev is not None:
            wire_ok([ev])
            out.append((ev.ts_ms, ev.data["weight_kg"], ev.data["visit"],
                        ev.data["visit_start_ms"]))
    return out


@given(st.lists(st.integers(0, 60), max_size=80), st.sampled_from([0, 5, 20]),
       st.integers(1, 12))
def test_run_keeps_the_longest_recent_stretch_within_tolerance(
        values: list[int], tol: int, cap: int) -> None:
    run = _Run(float(tol), cap)
    naive: list[float] = []
    for ts, v in enumerate(values):
        run.add(ts, float(v))
        naive.append(float(v))
        while max(naive) - min(naive) > tol or len(naive) > cap:
            naive.pop(0)
        assert [w for _, w in run.items] == naive
        assert (run.lo, run.hi) == (min(naive), max(naive))
        assert run.first_ms == ts - len(naive) + 1


def test_device_flag_settles_once_per_level() -> None:
    det = StableWeightDetector(device_id="wb", min_weight_kg=500, tolerance_kg=20)
    stream = [(0, kg(0, True)), (100, kg(8000, False)), (200, kg(21000, False)),
              (300, kg(20000, True)), (400, kg(20000, True)), (500, kg(20015, True)),
              (600, kg(20040, False)), (700, kg(20060, True)),  # someone climbed on: re-settle
              (800, kg(3000, False)), (900, kg(0, True)),  # drove off
              (1000, kg(12000, True)), (1100, kg(12000, True))]
    assert run_detector(det, stream) == [(300, 20000, 1, 100), (700, 20060, 1, 100),
                                         (1000, 12000, 2, 1000)]
    assert det.events == 3 and det.visit == 2


def test_n_equal_readings_settle_without_a_device_flag() -> None:
    det = StableWeightDetector(device_id="wb", n_equal=4, tolerance_kg=20, min_weight_kg=500)
    stream = [(0, kg(0)), (1, kg(9000)), (2, kg(19940)), (3, kg(19990)), (4, kg(20000)),
              (5, kg(20010)), (6, kg(19995)),  # 4 within 20 kg from ts 3: median_low 19995
              (7, kg(20000)), (8, kg(20020)), (9, kg(19990)),  # same level: no new event
              (10, kg(0)), (11, kg(0)),
              (12, kg(15000)), (13, kg(15000)), (14, kg(15000)), (15, kg(15000))]
    assert run_detector(det, stream) == [(3, 19995, 1, 1), (12, 15000, 2, 12)]


def test_device_flag_can_be_ignored_and_bad_readings_are_skipped() -> None:
    det = StableWeightDetector(device_id="wb", n_equal=2, min_weight_kg=500,
                               use_device_flag=False)
    stream = [(0, kg(9000, False)), (1, kg(9000, False)),
              (2, Weight(weight=30, unit=None, weight_kg=None, stable=True)),
              (3, kg(99999, True, overload=True)), (4, kg(9000, False)), (5, kg(9000, False)),
              (6, kg(12000, False)), (7, kg(12000, False))]
    # skipped readings neither settle nor re-arm: 9000 again is the same level
    assert run_detector(det, stream) == [(0, 9000, 1, 0), (6, 12000, 1, 0)]
    assert det.ignored == 2


# -- weighbridge: ticket pairing ---------------------------------------------------------------
def weigh(ts: int, weight_kg: float, visit: int, visit_start: int | None = None) -> Reading:
    return Reading("weigh_event", "wb", ts, ts + 5,
                   {"weight_kg": weight_kg, "event": "weigh", "stable_by": "n_equal",
                    "visit": visit, "visit_start_ms": ts - 10 if visit_start is None
                    else visit_start})


def summary(readings: list[Reading]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for r in wire_ok(readings):
        d = r.data
        if r.kind == "weigh_ticket":
            out.append(("ticket", d["truck_id"], d["direction"], d["gross_kg"], d["tare_kg"],
                        d["net_kg"], d["in_ms"], d["out_ms"]))
        elif d["event"] == "weigh":
            out.append(("weigh", d["truck_id"], d["weight_kg"], r.ts_ms))
        else:
            out.append(("unmatched", d["truck_id"], d["reason"], d["in_ms"]))
    return out


def test_inbound_and_outbound_tickets_pair_interleaved_trucks() -> None:
    p = WeighTicketPairer(device_id="wb")
    out: list[Reading] = []
    p.set_truck("T1", 950)
    out += p.feed(weigh(1000, 30000, 1))
    p.set_truck("T2", 1950)
    out += p.feed(weigh(2000, 11000, 2))
    p.set_truck("T1", 2950)
    out += p.feed(weigh(3000, 12500.5, 3))
    p.set_truck("T2", 3950)
    out += p.feed(weigh(4000, 27000, 4))
    assert summary(out) == [
        ("weigh", "T1", 30000, 1000), ("weigh", "T2", 11000, 2000),
        ("weigh", "T1", 12500.5, 3000),
        ("ticket", "T1", "inbound", 30000, 12500.5, 17499.5, 1000, 3000),
        ("weigh", "T2", 27000, 4000),
        ("ticket", "T2", "outbound", 27000, 11000, 16000, 2000, 4000)]
    ticket = out[3]
    assert (ticket.ts_ms, ticket.recv_ms, ticket.lane.name) == (3000, 3005, "PRIORITY")
    assert p.open_trucks == [] and p.tickets == 2 and p.unmatched == 0


def test_identification_rules_lead_time_consumption_and_late_ident() -> None:
    p = WeighTicketPairer(device_id="wb", ident_lead_ms=100)
    out: list[Reading] = []
    p.set_truck("OLD", 700)  # more than ident_lead_ms before the visit started (890)
    out += p.feed(weigh(1000, 20000, 1, visit_start=890))
    p.set_truck("T1", 1500)
    out += p.feed(weigh(1600, 20000, 2, visit_start=1550))
    out += p.feed(weigh(2600, 9000, 3, visit_start=2550))  # T1's ident belongs to visit 2
    p.set_truck("T9", 3700)  # seen after the weigh: too late for it
    out += p.feed(weigh(3600, 9000, 4, visit_start=3550))
    assert summary(out) == [
        ("weigh", None, 20000, 1000), ("unmatched", None, "no_truck_id", 1000),
        ("weigh", "T1", 20000, 1600),
        ("weigh", None, 9000, 2600), ("unmatched", None, "no_truck_id", 2600),
        ("weigh", None, 9000, 3600), ("unmatched", None, "no_truck_id", 3600)]
    assert p.open_trucks == ["T1"]


def test_resettle_in_one_visit_replaces_and_timeouts_flush_unmatched() -> None:
    p = WeighTicketPairer(device_id="wb", pair_timeout_ms=10_000)
    out: list[Reading] = []
    p.set_truck("T1", 990)
    out += p.feed(weigh(1000, 20000, 1))
    out += p.feed(weigh(1500, 20080, 1))  # same visit: the later weigh counts
    p.set_truck("T2", 1990)
    out += p.feed(weigh(2000, 15000, 2))
    assert p.flush(11_499) == []
    out += p.flush(11_500)
    out += p.flush(12_000)
    assert summary(out) == [
        ("weigh", "T1", 20000, 1000), ("weigh", "T1", 20080, 1500),
        ("unmatched", "T1", "replaced", 1000),
        ("weigh", "T2", 15000, 2000),
        ("unmatched", "T1", "timeout", 1500), ("unmatched", "T2", "timeout", 2000)]
    assert out[-1].recv_ms == 12_000 and out[-1].ts_ms == 2000


def test_too_many_waiting_trucks_push_out_the_oldest() -> None:
    p = WeighTicketPairer(device_id="wb", max_open=2)
    out: list[Reading] = []
    for i, truck in enumerate(["T1", "T2", "T3"]):
        p.set_truck(truck, 1000 * i + 990)
        out += p.feed(weigh(1000 * i + 1000, 20000, i + 1))
    assert summary(out)[-1] == ("unmatched", "T1", "overflow", 1000)
    assert p.open_trucks == ["T2", "T3"]


@pytest.mark.parametrize(("cls", "kwargs"), [
    (StableWeightDetector, {"n_equal": 0}), (StableWeightDetector, {"tolerance_kg": -1}),
    (StableWeightDetector, {"device_id": ""}),
    (WeighTicketPairer, {"pair_timeout_ms": 0}), (WeighTicketPairer, {"ident_lead_ms": -1}),
    (TmrEventDetector, {"threshold_kg": 5, "tolerance_kg": 5}),
    (TmrEventDetector, {"min_readings": 0}),
])
def test_detectors_reject_bad_parameters(cls: type, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        cls(**{"device_id": "dev", **kwargs})


def test_pairer_refuses_other_kinds() -> None:
    with pytest.raises(ValueError):
        WeighTicketPairer(device_id="wb").feed(Reading("weight", "wb", 1, 1, {}))


@given(st.lists(st.tuples(st.sampled_from(["ident", "weigh", "same_visit", "flush"]),
                          st.sampled_from(["T1", "T2", "T3"]), st.integers(1, 5000),
                          st.integers(8000, 40000)), max_size=40))
def test_every_weigh_ends_in_exactly_one_ticket_or_unmatched_event(
        ops: list[tuple[str, str, int, int]]) -> None:
    p = WeighTicketPairer(device_id="wb", pair_timeout_ms=20_000, ident_lead_ms=3000)
    t, visit, weighs = 0, 0, 0
    out: list[Reading] = []
    for op, truck, dt, w in ops:
        t += dt
        if op == "ident":
            p.set_truck(truck, t)
        elif op == "flush":
            out += p.flush(t)
        else:
            visit += op == "weigh" or visit == 0
            weighs += 1
            out += p.feed(weigh(t, w, visit, visit_start=t - 100))
    out += p.flush(t + 10**9)
    wire_ok(out)
    tickets = [r for r in out if r.kind == "weigh_ticket"]
    unmatched = [r for r in out if r.data.get("event") == "unmatched"]
    assert 2 * len(tickets) + len(unmatched) == weighs
    assert len([r for r in out if r.data.get("event") == "weigh"]) == weighs
    for r in tickets:
        d = r.data
        assert d["gross_kg"] >= d["tare_kg"] and d["in_ms"] < d["out_ms"]
        assert math.isclose(d["net_kg"], d["gross_kg"] - d["tare_kg"])


def test_simulated_weighbridge_tickets_match_the_schedule() -> None:
    visits = [TruckVisit("TRK-A", 5, 31_420, 12_100, True, 200),
              TruckVisit("TRK-B", 60, 27_000, 9_880, False, 200),
              TruckVisit("TRK-C", 120, 18_760, 8_020, True, 300)]
    clock = ManualClock()
    sim = Xk3190Weighbridge(visits=visits, clock=clock, seed=4)
    t0 = clock.now()
    dec = xk3190.Decoder()
    det = StableWeightDetector(device_id="wb", n_equal=10, tolerance_kg=0, min_weight_kg=500)
    pairer = WeighTicketPairer(device_id="wb")
    gate = sorted((w.start_s, w.truck) for w in sim.weighings)
    out: list[Reading] = []
    for _ in range(round((sim.weighings[-1].end_s + 10) / 0.1)):
        now = clock.now()
        while gate and t0 + gate[0][0] <= now:
            pairer.set_truck(gate[0][1], round((t0 + gate[0][0]) * 1000))
            gate.pop(0)
        for m in dec.feed(b"".join(sim.tick(now))):
            if isinstance(m, Weight) and (ev := det.feed(round(now * 1000), m)) is not None:
                out += pairer.feed(ev)
        clock.advance(0.1)
    assert dec.errors == 0
    weighs = [r for r in out if r.data.get("event") == "weigh"]
    # one weigh per weighing, settled once the truck stood still, at the displayed weight
    assert [(r.data["truck_id"], r.data["weight_kg"]) for r in weighs] == [
        (w.truck, w.weight_kg) for w in sim.weighings]
    for r, w in zip(weighs, sim.weighings, strict=True):
        assert t0 + w.start_s < r.ts_ms / 1000 <= t0 + w.stable_from_s + 1.0
    tickets = {r.data["truck_id"]: r.data for r in out if r.kind == "weigh_ticket"}
    assert {t: (d["direction"], d["gross_kg"], d["tare_kg"], d["net_kg"])
            for t, d in tickets.items()} == {
        v.truck: ("inbound" if v.delivering else "outbound", v.loaded_kg, v.empty_kg,
                  v.loaded_kg - v.empty_kg) for v in visits}
    assert pairer.unmatched == 0


# -- TMR mixer ---------------------------------------------------------------------------------
def run_tmr(det: TmrEventDetector, stream: Sequence[tuple[int, float | None, bool | None]]
            ) -> list[tuple[int, str, float, str | None, int]]:
    out = []
    for ts, w, stable in stream:
        ev = det.feed(ts, w, stable)
        if ev is not None:
            wire_ok([ev])
            out.append((ev.ts_ms, ev.data["event"], ev.data["kg"], ev.data["pen"],
                        ev.data["start_ms"]))
    return out


def plateau(ts: int, w: float, n: int = 3, step: int = 1000) -> list[tuple[int, float, bool]]:
    return [(ts + i * step, w, True) for i in range(n)]


def test_tmr_loads_and_unloads_between_stable_plateaus() -> None:
    det = TmrEventDetector(device_id="mix", threshold_kg=20, tolerance_kg=5,
                           min_plateau_ms=2000)
    det.set_pen("P1", 9_000)
    det.set_pen("P2", 16_500)
    stream = (plateau(0, 100)  # first plateau: the reference, no event
              + [(3000, 300, False), (4000, 600, False)] + plateau(5000, 1100)
              + [(8000, 1100, False)] + plateau(9000, 1101)  # mixing: same weight, no event
              + [(12000, 700, False)] + plateau(13000, 400)  # unload into P1
              + [(16000, 300, False), (17000, 100, False), (18000, 50, False)]
              + plateau(19000, 40)  # mostly P2
              + plateau(22000, 55, 3) + plateau(25000, 70, 3))  # +15, +30: one load of 30
    assert run_tmr(det, stream) == [
        (5000, "load", 1000, None, 2000), (13000, "unload", 700, "P1", 11000),
        (19000, "unload", 360, "P2", 15000), (25000, "load", 30, None, 24000)]
    assert det.events == 4


def test_tmr_without_a_stability_flag_finds_plateaus_by_tolerance() -> None:
    det = TmrEventDetector(device_id="mix", threshold_kg=20, tolerance_kg=5,
                           min_plateau_ms=2000)
    ramp = [(3000 + i * 1000, 100 + 150 * (i + 1), None) for i in range(6)]
    stream: list[tuple[int, float | None, bool | None]] = [
        (0, 100, None), (1000, 102, None), (2000, 98, None), *ramp,
        (9000, 1000, None), (10000, 1003, None), (11000, None, None), (12000, 1001, None)]
    assert run_tmr(det, stream) == [(8000, "load", 900, None, 2000)]


@pytest.mark.parametrize(("pens", "start", "end", "expected"), [
    ([], 0, 100, None),
    ([(0, "P1")], 10, 100, "P1"),
    ([(0, "P1"), (50, "P2")], 10, 100, "P2"),  # 40 ms P1, 50 ms P2
    ([(0, "P1"), (60, "P2")], 10, 100, "P1"),  # 50 ms P1, 40 ms P2
    ([(0, "P1"), (55, "P2")], 10, 100, "P2"),  # 45 ms each: the later pen
    ([(0, "P1"), (40, "P2"), (70, "P1")], 10, 100, "P1"),  # 30 + 30 against 30: P1
    ([(60, "P2")], 0, 100, None),  # 60 ms with no pen known
    ([(0, "P1"), (55, "P2")], 100, 100, "P2"),  # empty interval: the pen at its end
    ([(0, "P1"), (200, "P2")], 10, 100, "P1"),  # a later pen does not count
])
def test_pen_during_picks_the_pen_in_force_longest(
        pens: list[tuple[int, str]], start: int, end: int, expected: str | None) -> None:
    det = TmrEventDetector(device_id="mix")
    for ts, pen in pens:
        det.set_pen(pen, ts)
    assert det.pen_during(start, end) == expected


def digistar_events(script: list[FeedStep], *, mode: int, noise: float, seed: int,
                    step_s: float = 0.0625) -> tuple[list[Reading], DigiStarIndicator, float]:
    """Run the simulated indicator over a manual clock, decode its frames, feed the weights
    to the detector; pens are set when the driver starts each unload."""
    clock = ManualClock()
    sim = DigiStarIndicator(script=script, clock=clock, output_mode=mode, noise=noise,
                            seed=seed)
    dec = digistar.Decoder(mode=mode, unit="lb")
    det = TmrEventDetector(device_id="mixer-1", threshold_kg=20, tolerance_kg=5,
                           min_plateau_ms=2000)
    t0 = clock.now()
    pens, t = [], t0
    for s in script:
        if s.kind == "unload":
            pens.append((t, s.label))
        t += s.duration_s + s.settle_s
    out: list[Reading] = []
    for _ in range(round((t - t0 + 5) / step_s)):
        now = clock.now()
        while pens and pens[0][0] <= now:
            det.set_pen(pens[0][1], round(pens.pop(0)[0] * 1000))
        for m in dec.feed(b"".join(sim.tick(now))):
            if isinstance(m, Weight) and (ev := det.feed(round(now * 1000), m.weight_kg,
                                                         m.stable)) is not None:
                out.append(ev)
        clock.advance(step_s)
    assert dec.errors == 0
    return wire_ok(out), sim, t0


@pytest.mark.parametrize(("mode", "noise", "seed"), [(1, 40.0, 1), (1, 40.0, 2), (7, 0.0, 3),
                                                     (7, 40.0, 4), (11, 40.0, 5), (38, 40.0, 6)])
def test_tmr_events_match_the_simulated_mixer_script(mode: int, noise: float,
                                                     seed: int) -> None:
    out, sim, _ = digistar_events(demo_ration(), mode=mode, noise=noise, seed=seed)
    truth = [e for e in sim.events if e.kind in ("load", "unload")]
    assert [e.kind for e in truth] == ["load"] * 4 + ["unload"] * 3
    resolution_kg = sim.resolution * LB_TO_KG
    interval_ms = sim.interval_s * 1000
    assert len(out) == len(truth)
    for ev, e in zip(out, truth, strict=True):
        assert e.amount_kg is not None
        assert ev.data["event"] == e.kind
        assert abs(ev.data["kg"] - e.amount_kg) <= resolution_kg
        assert ev.data["pen"] == (e.label if e.kind == "unload" else None)
        # the event time is when the weight settled, to within one output interval
        assert -interval_ms <= ev.ts_ms - e.settled * 1000 <= interval_ms
        assert ev.data["start_ms"] <= e.start * 1000 + interval_ms


def test_tmr_small_loads_below_the_threshold_add_up() -> None:
    script = [FeedStep("idle", "PARKED", 0, 5, 0)] + [
        FeedStep("load", f"MINERAL{i}", 30, 2, 5) for i in range(3)]  # 30 lb = 13.6 kg each
    out, _, _ = digistar_events(script, mode=1, noise=0.0, seed=7)
    assert [(r.data["event"], r.data["kg"]) for r in out] == [("load", round(60 * LB_TO_KG, 6))]


# -- GPS thinning ------------------------------------------------------------------------------
def test_haversine_of_one_degree_of_latitude() -> None:
    assert haversine_m(0, 0, 1, 0) == pytest.approx(111_195.08, abs=0.01)
    assert haversine_m(-33.9, 151.2, -33.9, 151.2) == 0.0
    assert haversine_m(0, 179.9, 0, -179.9) == pytest.approx(2 * 11_119.5, rel=1e-4)


def north_steps(metres: list[float], lat0: float = -20.0) -> Iterator[float]:
    per_m = 1 / haversine_m(0, 0, 1, 0)
    lat = lat0
    for m in metres:
        lat += m * per_m
        yield lat


def test_thinner_keeps_on_distance_or_interval_and_counts_drops() -> None:
    th = GpsThinner(10.0, 60_000, device_id="gps-1")
    lats = list(north_steps([0, 4, 4, 4, 1, 25, 0, 0]))
    ts = [0, 1000, 2000, 3000, 4000, 5000, 6000, 65_000]
    kept = [th.keep(t, lat, 30.0) for t, lat in zip(ts, lats, strict=True)]
    # 0 kept; 4, 8 m thinned; 12 m kept; 1 m; 26 m from the last kept; same place; interval
    assert kept == [True, False, False, True, False, True, False, True]
    assert not th.keep(70_000, None, None)
    assert not th.keep(71_000, 10.0, 30.0, fix=False)
    assert not th.keep(72_000, float("nan"), 30.0)
    assert (th.kept, th.thinned, th.dropped_no_fix) == (4, 4, 3)


def test_thinner_feed_makes_position_readings() -> None:
    th = GpsThinner(5.0, 30_000, device_id="gps-1")
    fix = Position(lat=-20.5, lon=30.25, fix=True, sentence="RMC", speed_knots=3.5,
                   course_deg=90.0, satellites=None)
    assert wire_ok([r for r in [th.feed(1000, fix, recv_ms=1200)] if r is not None]) == [
        Reading("position", "gps-1", 1000, 1200,
                {"lat": -20.5, "lon": 30.25, "speed_knots": 3.5, "course_deg": 90.0})]
    assert th.feed(2000, fix) is None
    assert th.feed(3000, Position(lat=None, lon=None, fix=False, sentence="GGA")) is None


def test_thin_track_hand_built() -> None:
    lats = list(north_steps([0, 4, 4, 4, 1, 25, 0, 0]))
    lats[2] = float("nan")
    mask = thin_track(lats, [30.0] * 8, [0, 1000, 2000, 3000, 4000, 5000, 6000, 65_000],
                      min_distance_m=10.0, max_interval_ms=60_000,
                      fix=[True, True, True, True, True, True, False, True])
    assert mask.tolist() == [True, False, False, True, False, True, False, True]
    assert thin_track([], [], [], min_distance_m=1, max_interval_ms=1).tolist() == []
    with pytest.raises(ValueError):
        thin_track([1.0], [1.0, 2.0], [0], min_distance_m=1, max_interval_ms=1)


@st.composite
def tracks(draw: st.DrawFn) -> tuple[list[float], list[float], list[int], list[bool]]:
    n = draw(st.integers(0, 300))
    lat = draw(st.floats(-89, 89))
    lon = draw(st.floats(-180, 180))
    scale = draw(st.sampled_from([1e-6, 1e-5, 1e-4, 1e-3]))  # ~0.1 m .. 100 m steps
    step = st.floats(-1, 1, allow_nan=False)
    lats, lons, ts, fixes = [], [], [], []
    t = draw(st.integers(0, 2**41))
    for _ in range(n):
        lat = min(90.0, max(-90.0, lat + draw(step) * scale))
        lon = lon + draw(step) * scale
        t += draw(st.one_of(st.sampled_from([0, 500, 1000]), st.integers(0, 3000)))
        lats.append(lat if draw(st.integers(0, 30)) else float("nan"))
        lons.append(lon)
        ts.append(t)
        fixes.append(draw(st.integers(0, 20)) > 0)
    return lats, lons, ts, fixes


@given(tracks(), st.floats(0, 200),
       st.one_of(st.sampled_from([500, 1000, 2000, 5000]), st.integers(1, 20_000)))
def test_streaming_and_vectorised_thinning_agree(
        track: tuple[list[float], list[float], list[int], list[bool]],
        min_distance_m: float, max_interval_ms: int) -> None:
    lats, lons, ts, fixes = track
    th = GpsThinner(min_distance_m, max_interval_ms, device_id="gps")
    streamed = [th.keep(t, la, lo, f) for la, lo, t, f in zip(lats, lons, ts, fixes,
                                                               strict=True)]
    mask = thin_track(np.array(lats), np.array(lons), np.array(ts, dtype=np.int64),
                      min_distance_m=min_distance_m, max_interval_ms=max_interval_ms,
                      fix=np.array(fixes, dtype=bool))
    assert mask.tolist() == streamed
    assert th.kept + th.thinned + th.dropped_no_fix == len(lats)


@given(st.floats(-80, 80), st.floats(-179, 179), st.floats(-0.01, 0.01), st.floats(-0.01, 0.01),
       st.floats(0.5, 1000))
def test_thinning_decision_is_the_haversine_distance_test(
        lat: float, lon: float, dlat: float, dlon: float, min_distance_m: float) -> None:
    d = haversine_m(lat, lon, lat + dlat, lon + dlon)
    assume(abs(d - min_distance_m) > 1e-6 * min_distance_m)
    th = GpsThinner(min_distance_m, 10**9, device_id="gps")
    assert th.keep(0, lat, lon)
    assert th.keep(1, lat + dlat, lon + dlon) == (d > min_distance_m)


@pytest.mark.parametrize("bad", [(-1.0, 1000), (10.0, 0), (float("nan"), 1000)])
def test_thinner_rejects_bad_parameters(bad: tuple[float, int]) -> None:
    with pytest.raises(ValueError):
        GpsThinner(*bad, device_id="gps")
