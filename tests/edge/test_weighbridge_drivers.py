"""The XK3190, Toledo and MT-SICS drivers under their coordinator, against the simulated
weighbridge / scale terminal over a real pty, on a fast simulated clock shared by the device
and the driver."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from edge.drivers import build_driver
from edge.drivers._weighing import WeighingPipeline, WeightThinner
from edge.drivers.mtsics import MtSicsDriver
from edge.drivers.toledo import ToledoDriver
from edge.drivers.xk3190 import Xk3190Driver
from firmware_sim import Faults, PtyLink
from firmware_sim.toledo_scale import Placement, ToledoScale
from firmware_sim.xk3190_weighbridge import TruckVisit, Xk3190Weighbridge
from protocols.messages import ScaleStatus, Weight
from protocols.uplink import Reading
from tests.edge.driver_harness import FastClock, MemorySink, run_driver


def availability(sink: MemorySink) -> list[str]:
    return [r.kind for r in sink.readings if r.kind.startswith("device_")]


def wire_ok(readings: list[Reading]) -> None:
    for r in readings:
        assert Reading.from_wire(r.to_wire()) == r


# -- XK3190 ---------------------------------------------------------------------------------------
VISITS = [TruckVisit("TRK-A", 8, 31_420, 12_100, True, 30),
          TruckVisit("TRK-B", 12, 27_000, 9_880, False, 30),
          TruckVisit("TRK-C", 30, 18_760, 8_020, True, 25)]
PHASES: dict[str, Any] = {"drive_on_s": 2.0, "settle_s": 1.5, "dwell_s": 2.5,
                          "drive_off_s": 1.5}


def gate_feeder(sim: Xk3190Weighbridge, driver: Xk3190Driver) -> Callable[[], None]:
    """An ``until`` hook that plays the RFID gate: once the indicator has started, every truck
    is identified at the moment it starts to drive on (as a gate reader would)."""
    done = {"fed": False}

    def feed() -> None:
        if not done["fed"] and sim.start is not None:
            for w in sim.weighings:
                driver.set_truck(w.truck, round((sim.start + w.start_s) * 1000))
            done["fed"] = True
    return feed


def expected_tickets(sim: Xk3190Weighbridge) -> dict[str, tuple[str, float, float, float]]:
    out = {}
    for v in VISITS:
        w_in, w_out = (w.weight_kg for w in sim.weighings if w.truck == v.truck)
        out[v.truck] = ("inbound" if w_in > w_out else "outbound", max(w_in, w_out),
                        min(w_in, w_out), max(w_in, w_out) - min(w_in, w_out))
    return out


@pytest.mark.parametrize("faults", [None, Faults(garbage=0.1, bad_checksum=0.05, split=0.2)],
                         ids=["clean", "faults"])
def test_xk3190_tickets_match_the_scripted_weighings(faults: Faults | None) -> None:
    clock = FastClock(25.0)
    sim = Xk3190Weighbridge(visits=VISITS, clock=clock, seed=5, faults=faults, **PHASES)
    driver = Xk3190Driver(device_id="wb-1", weight_interval_s=1.0)
    feed_gate = gate_feeder(sim, driver)

    def until(s: MemorySink) -> bool:
        feed_gate()
        return len(s.kinds("weigh_ticket")) >= len(VISITS)

    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, until=until,
                                             clock_ms=clock.ms))
    wire_ok(sink.readings)
    tickets = {r.data["truck_id"]: r.data for r in sink.kinds("weigh_ticket")}
    # gross, tare and net are the displayed weights of the two weighings (multiples of the
    # 20 kg division), paired by truck although the trucks interleave on the platform
    assert {t: (d["direction"], d["gross_kg"], d["tare_kg"], d["net_kg"])
            for t, d in tickets.items()} == expected_tickets(sim)
    weighs = [r for r in sink.kinds("weigh_event") if r.data["event"] == "weigh"]
    assert [(r.data["truck_id"], r.data["weight_kg"]) for r in weighs] == [
        (w.truck, w.weight_kg) for w in sim.weighings]
    assert sim.start is not None
    for r, w in zip(weighs, sim.weighings, strict=True):
        # settled on the plateau: not before the truck stood still (the upper bound allows
        # for a busy test machine: the frames carry no time, the receive time is used)
        assert sim.start + w.stable_from_s <= r.ts_ms / 1000 <= sim.start + w.end_s + 3.0
    assert not [r for r in sink.kinds("weigh_event") if r.data["event"] == "unmatched"]
    assert sink.kinds("weight"), "the live weight is reported for dashboards"
    assert availability(sink) == ["device_online"]
    if faults is None:
        assert coord.stats.codec_errors == 0
    else:
        assert coord.stats.error_kinds.get("garbage", 0) > 0
        assert coord.stats.error_kinds.get("bad_checksum", 0) > 0


def test_xk3190_without_gate_ids_weighs_are_unmatched_and_weight_is_thinned() -> None:
    clock = FastClock(40.0)
    visits = VISITS[:1]
    sim = Xk3190Weighbridge(visits=visits, clock=clock, seed=6, frame_format="eq",
                            decimals=0, **PHASES)
    driver = build_driver("xk3190", device_id="wb-2", silence_timeout_s=5.0,
                          options={"weight_interval_s": 2.0})
    assert isinstance(driver, Xk3190Driver)
    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(
            driver, link.path, clock_ms=clock.ms,
            until=lambda s: len([r for r in s.kinds("weigh_event")
                                 if r.data["event"] == "unmatched"]) >= 2))
    events = sink.kinds("weigh_event")
    assert [(r.data["event"], r.data["truck_id"], r.data["weight_kg"]) for r in events] == [
        (e, None, w.weight_kg) for w in sim.weighings for e in ("weigh", "unmatched")]
    assert {r.data["reason"] for r in events if r.data["event"] == "unmatched"} == {
        "no_truck_id"}
    assert not sink.kinds("weigh_ticket")
    weights = sink.kinds("weight")
    assert len(weights) >= 2
    gaps = [b.recv_ms - a.recv_ms for a, b in itertools.pairwise(weights)]
    assert min(gaps) >= 2000
    assert all(r.data["stable"] is None for r in weights)  # the A9/= frames carry no flag
    assert coord.stats.codec_errors == 0


def test_weighing_pipeline_without_pairing_sends_weighs_only() -> None:
    pipe = WeighingPipeline(device_id="s", truck_id_source="none", n_equal=2,
                            tolerance_kg=0, min_weight_kg=100, weight_interval_s=0)
    out: list[Reading] = []
    for i, w in enumerate([0.0, 250.0, 250.0, 250.0, 0.0, 300.0, 300.0]):
        out += pipe.feed(1000 * i, 1000 * i + 5, Weight(w, "kg", w, None))
    assert [r.kind for r in out].count("weight") == 7
    assert [(r.data["event"], r.data["weight_kg"], r.ts_ms, r.recv_ms)
            for r in out if r.kind == "weigh_event"] == [("weigh", 250.0, 1000, 2005),
                                                         ("weigh", 300.0, 5000, 6005)]
    with pytest.raises(ValueError, match="truck_id_source"):
        WeighingPipeline(device_id="s", truck_id_source="plate")


def test_weight_thinner_keeps_one_per_interval() -> None:
    th = WeightThinner(device_id="s", interval_ms=1000)
    w = Weight(10.0, "kg", 10.0, True, overload=True, mode="net")
    kept = [t for t in range(0, 3000, 250) if th.feed(t, t, w) is not None]
    assert kept == [0, 1000, 2000] and th.thinned == 9
    r = WeightThinner(device_id="s", interval_ms=0).feed(1, 2, w)
    assert r is not None and r.data == {"weight_kg": 10.0, "stable": True, "mode": "net",
                                        "overload": True}


@pytest.mark.parametrize("options", [{"unit": "oz"}, {"truck_id_source": "rfid"},
                                     {"n_equal": 0}, {"colour": "red"}])
def test_xk3190_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        build_driver("xk3190", device_id="wb", silence_timeout_s=5, options=options)


# -- Toledo continuous ----------------------------------------------------------------------------
# two trucks crossing a Toledo truck scale, each weighed in and out (visits interleave)
TOLEDO_TRUCKS = [(8.0, "TRK-A", 31_420), (13.0, "TRK-B", 9_880), (18.0, "TRK-A", 12_100),
                 (23.0, "TRK-B", 27_000)]


def toledo_truck_scale(clock: FastClock, **kw: Any) -> ToledoScale:
    placements = []
    for at, _, kg in TOLEDO_TRUCKS:
        placements += [Placement(at, kg, 1.0), Placement(at + 2.5, 0.0, 0.5)]
    return ToledoScale(placements=placements, code=2, capacity=60_000.0, clock=clock, **kw)


@pytest.mark.parametrize(("sim_kw", "drv_kw"), [
    ({"checksum": True, "parity": True}, {}),  # 7E1 terminal read on an 8N1 port
    ({"checksum": False}, {"checksum": False}),
    ({"checksum": True, "faults": Faults(garbage=0.1, bad_checksum=0.05, split=0.2)},
     {"checksum": True}),
], ids=["auto-7e1", "no-checksum", "faults"])
def test_toledo_tickets_match_the_scripted_weighings(sim_kw: dict[str, Any],
                                                     drv_kw: dict[str, Any]) -> None:
    clock = FastClock(15.0)
    sim = toledo_truck_scale(clock, seed=7, **sim_kw)
    driver = ToledoDriver(device_id="wb-3", weight_interval_s=0.5, **drv_kw)
    fed = {"done": False}

    def until(s: MemorySink) -> bool:
        if not fed["done"] and sim.start is not None:
            for at, truck, _ in TOLEDO_TRUCKS:  # the gate reader sees each truck drive on
                driver.set_truck(truck, round((sim.start + at) * 1000))
            fed["done"] = True
        return len(s.kinds("weigh_ticket")) >= 2

    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, until=until,
                                             clock_ms=clock.ms))
    wire_ok(sink.readings)
    tickets = {r.data["truck_id"]: (r.data["direction"], r.data["gross_kg"],
                                    r.data["tare_kg"], r.data["net_kg"])
               for r in sink.kinds("weigh_ticket")}
    assert tickets == {"TRK-A": ("inbound", 31_420.0, 12_100.0, 19_320.0),
                       "TRK-B": ("outbound", 27_000.0, 9_880.0, 17_120.0)}
    weighs = [r for r in sink.kinds("weigh_event") if r.data["event"] == "weigh"]
    assert [(r.data["truck_id"], r.data["weight_kg"], r.data["stable_by"]) for r in weighs] == [
        (t, float(kg), "device") for _, t, kg in TOLEDO_TRUCKS]
    assert sim.start is not None
    for r, (at, _, _) in zip(weighs, TOLEDO_TRUCKS, strict=True):
        # the terminal's motion bit clears after the 1 s settle (the truck leaves at +2.5 s;
        # the upper bound allows for a busy test machine)
        assert sim.start + at + 1.0 <= r.ts_ms / 1000 <= sim.start + at + 4.0
    assert availability(sink) == ["device_online"]
    if "faults" in sim_kw:
        assert coord.stats.error_kinds.get("bad_checksum", 0) > 0
        assert coord.stats.error_kinds.get("garbage", 0) > 0
    else:
        assert coord.stats.codec_errors == 0


def test_toledo_silent_terminal_goes_offline_once_and_comes_back_once() -> None:
    clock = FastClock(1.0)
    sim = ToledoScale(placements=[Placement(0.0, 800.0, 0.2)], clock=clock, seed=8)
    driver = ToledoDriver(device_id="wb-4", silence_timeout_s=0.4, weight_interval_s=0)
    real_tick = sim.tick
    muted = {"on": False}
    sim.tick = lambda now: [] if muted["on"] else real_tick(now)  # type: ignore[method-assign]

    def script(s: MemorySink) -> bool:
        kinds = availability(s)
        if kinds == ["device_online"] and len(s.kinds("weight")) > 5:
            muted["on"] = True
        elif kinds == ["device_online", "device_offline"]:
            muted["on"] = False
        return len(kinds) >= 3

    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, until=script))
    assert availability(sink) == ["device_online", "device_offline", "device_online"]
    assert "no good frame" in sink.kinds("device_offline")[0].data["reason"]
    assert coord.stats.connects >= 2


# -- MT-SICS (Toledo terminal in SICS mode) --------------------------------------------------------
# three animals, two of them interrupted by an overload (a tractor on the livestock scale)
SICS_PLACEMENTS = [Placement(6.0, 412.5, 1.0), Placement(10.0, 0.0, 0.5),
                   Placement(12.0, 5_000.0, 0.5), Placement(15.0, 0.0, 0.5),
                   Placement(17.0, 533.0, 1.0), Placement(21.0, 0.0, 0.5),
                   Placement(23.0, 9_000.0, 0.5), Placement(26.0, 0.0, 0.5),
                   Placement(28.0, 298.4, 1.0), Placement(32.0, 0.0, 0.5)]


@pytest.mark.parametrize("faults", [None, Faults(garbage=0.1, bad_checksum=0.05, split=0.2)],
                         ids=["clean", "faults"])
def test_mtsics_weighs_match_the_placements_and_overload_alarms_once_each(
        faults: Faults | None) -> None:
    clock = FastClock(20.0)
    sim = ToledoScale(mode="sics", placements=SICS_PLACEMENTS, capacity=3000.0, clock=clock,
                      seed=9, faults=faults)
    driver = MtSicsDriver(device_id="chute-1", poll_interval_s=0.02, reply_timeout_s=0.1,
                          min_weight_kg=100.0, weight_interval_s=0)
    want = [412.5, 533.0, 298.4]

    def until(s: MemorySink) -> bool:
        return len(s.kinds("weigh_event")) >= len(want) and sim.start is not None and (
            clock.now() - sim.start > 33.0)

    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, until=until,
                                             clock_ms=clock.ms))
    wire_ok(sink.readings)
    assert [(r.data["weight_kg"], r.data["stable_by"]) for r in sink.kinds("weigh_event")] == [
        (w, "device") for w in want]
    alarms = sink.kinds("alarm")
    # one alarm per transition into overload, although every poll meanwhile said "S +"
    assert [r.data["alarm"] for r in alarms] == ["scale_overload", "scale_overload"]
    assert all(r.lane == 0 for r in alarms)
    assert sim.start is not None
    for r, at in zip(alarms, (12.0, 23.0), strict=True):
        assert sim.start + at <= r.ts_ms / 1000 <= sim.start + at + 5.0
    assert driver.status_counts["overload"] > len(alarms)
    assert all(c.name == "SI" for c in sim.commands)
    assert availability(sink) == ["device_online"]
    if faults is None:
        assert coord.stats.codec_errors == 0
    else:
        assert coord.stats.error_kinds.get("bad_text", 0) > 0


def test_mtsics_alarm_state_machine() -> None:
    d = MtSicsDriver(device_id="s", weight_interval_s=0)
    over = ScaleStatus("overload", "+", "S")
    under = ScaleStatus("underload", "-", "S")
    busy = ScaleStatus("busy", "I", "S")
    w = Weight(10.0, "kg", 10.0, True)
    seq: list[Weight | ScaleStatus] = [over, over, busy, over, w, under, under, over, w, over]
    alarms = [r.data["alarm"] for i, m in enumerate(seq) for r in d.on_reply(m, i)
              if r.kind == "alarm"]
    assert alarms == ["scale_overload", "scale_underload", "scale_overload", "scale_overload"]
    assert d.status_counts == {"overload": 5, "underload": 2, "busy": 1}
