"""The Modbus RTU driver under its coordinator, against the simulated feeder controller over a
real pty, on a fast simulated clock shared by the feeder and the driver; and the pure counter
rules (rise, wrap, reset)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge.drivers import build_driver
from edge.drivers.modbus import CounterStep, ModbusDriver, PenFeedTracker, counter_delta
from firmware_sim import Faults, PtyLink
from firmware_sim.modbus_feeder import COMMAND_RESET_COUNTERS, REG_COMMAND, ModbusFeeder
from protocols import modbus
from protocols.uplink import Reading
from tests.edge.driver_harness import FastClock, MemorySink, run_driver

PENS_KG = (120.0, 90.0, 150.0)


def feeder(clock: FastClock, **kw: Any) -> ModbusFeeder:
    return ModbusFeeder(pens_kg=PENS_KG, fill_rate_kg_s=60.0, deliver_rate_kg_s=30.0,
                        settle_s=4.0, noise_kg=5.0, clock=clock, **kw)


def delivered(sink: MemorySink) -> dict[str | None, float]:
    out: dict[str | None, float] = {}
    for r in sink.kinds("feed_event"):
        out[r.data["pen"]] = out.get(r.data["pen"], 0.0) + r.data["kg"]
    return out


def truth(sim: ModbusFeeder) -> dict[str | None, float]:
    out: dict[str | None, float] = {}
    for e in sim.events:
        if e.kind == "deliver":
            out[str(e.pen)] = out.get(str(e.pen), 0.0) + e.amount_kg
    return out


def availability(sink: MemorySink) -> list[str]:
    return [r.kind for r in sink.readings if r.kind.startswith("device_")]


@pytest.mark.parametrize("faults", [None, Faults(garbage=0.1, bad_checksum=0.05, split=0.2)],
                         ids=["clean", "faults"])
def test_feed_events_sum_to_the_delivered_totals(faults: Faults | None) -> None:
    clock = FastClock(20.0)
    sim = feeder(clock, repeat=False, seed=3, faults=faults)
    driver = ModbusDriver(device_id="feeder-1", poll_interval_s=0.02, reply_timeout_s=0.1,
                          weight_interval_s=0)
    want = {str(i + 1): kg for i, kg in enumerate(PENS_KG)}
    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, clock_ms=clock.ms,
                                             until=lambda s: delivered(s) == want))
    assert delivered(sink) == want == truth(sim)
    events = sink.kinds("feed_event")
    # one event per delivery, in delivery order, dated within the delivery
    assert [r.data["pen"] for r in events] == ["1", "2", "3"]
    delivers = [e for e in sim.events if e.kind == "deliver"]
    for r, e in zip(events, delivers, strict=True):
        assert Reading.from_wire(r.to_wire()) == r
        assert e.start <= r.data["start_ms"] / 1000 <= r.ts_ms / 1000 <= e.end + 1.0
    weights = sink.kinds("weight")
    assert weights
    # a stable hopper shows a settled level of the ration cycle, to the 0.1 kg register step
    levels = {0.0, 360.0, 240.0, 150.0}
    stable = [r.data["weight_kg"] for r in weights if r.data["stable"]]
    assert stable and set(stable) <= levels
    assert all(r.data["mode"] == "gross" for r in weights)
    assert availability(sink) == ["device_online"]
    assert {(q.function, q.start, q.quantity) for q in sim.requests
            if isinstance(q, modbus.ReadRequest)} == {(3, 0, 6), (3, 10, 3)}
    if faults is None:
        assert coord.stats.codec_errors == 0
    else:
        assert coord.stats.error_kinds.get("bad_checksum", 0) > 0


def test_a_counter_reset_between_cycles_loses_nothing() -> None:
    clock = FastClock(20.0)
    sim = feeder(clock, repeat=True, seed=4)
    driver = ModbusDriver(device_id="feeder-2", poll_interval_s=0.02, reply_timeout_s=0.1,
                          pen_names=["north", "east", "south"])
    reset = {"done": False}
    want = {name: 2 * kg for name, kg in zip(["north", "east", "south"], PENS_KG, strict=True)}

    def until(s: MemorySink) -> bool:
        # the second fill has finished: the operator clears the counters before pen 1
        if not reset["done"] and len(sim.events) == 5:
            sim._write(REG_COMMAND, COMMAND_RESET_COUNTERS, clock.now())
            reset["done"] = True
        return delivered(s) == want

    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, until=until,
                                             clock_ms=clock.ms, timeout_s=15))
    assert reset["done"]
    assert delivered(sink) == want
    assert driver.tracker.resets == 3 and driver.tracker.wraps == 0
    assert coord.stats.codec_errors == 0


@pytest.mark.parametrize(("prev", "cur", "step"), [
    (100, 100, CounterStep("same", 0)),
    (100, 130, CounterStep("rise", 30)),
    (65530, 20, CounterStep("wrap", 26)),  # across the top of a uint16 counter
    (65535, 0, CounterStep("wrap", 1)),
    (1200, 0, CounterStep("reset", 0)),  # cleared
    (1200, 35, CounterStep("reset", 35)),  # cleared, then 35 kg delivered
    (40000, 100, CounterStep("reset", 100)),  # a fall from mid-range is not a wrap
])
def test_counter_steps(prev: int, cur: int, step: CounterStep) -> None:
    assert counter_delta(prev, cur) == step


def test_counter_delta_of_a_uint32_counter_and_bad_values() -> None:
    assert counter_delta(2**32 - 10, 5, modulus=2**32) == CounterStep("wrap", 15)
    with pytest.raises(ValueError):
        counter_delta(70000, 1)


def test_tracker_groups_rises_into_deliveries_across_a_wrap() -> None:
    tr = PenFeedTracker(device_id="f", pen_names=["A"])
    polls = [[65500], [65500], [65520], [65535], [15], [15], [15], [40], [0]]
    out: list[Reading] = []
    for i, counters in enumerate(polls):
        out += tr.update(counters, 1000 * i, 1000 * i + 7)
    out += tr.drain()
    assert [(r.data["kg"], r.data["start_ms"], r.ts_ms, r.recv_ms) for r in out] == [
        (51.0, 2000, 4000, 4007),  # 20 + 15 + 16 across the wrap, closed by the poll at 5 s
        (25.0, 7000, 7000, 7007),  # closed by the reset at 8 s
    ]
    assert (tr.wraps, tr.resets) == (1, 1)
    assert {r.data["pen"] for r in out} == {"A"}


def test_register_map_options() -> None:
    d = build_driver("modbus", device_id="ind", silence_timeout_s=5,
                     options={"unit_id": 7, "function": 4, "weight_register": 4,
                              "value_type": "float32", "word_order": "little",
                              "status_register": 0, "stable_bit": None, "motion_bit": 3,
                              "pen_counter_register": -1, "decimals": 0})
    assert isinstance(d, ModbusDriver)
    assert (d.block_start, d.block_len) == (0, 6)
    regs = [1 << 3, 0, 0, 0, *modbus.value_to_registers(12.5, value_type="float32",
                                                         word_order="little")]
    w = modbus.registers_to_weight(regs, **d.weight_args)
    assert (w.weight_kg, w.stable) == (12.5, False)


@pytest.mark.parametrize("options", [{"unit_id": 0}, {"function": 6}, {"value_type": "int8"},
                                     {"counter_type": "int64"}, {"pens": 500},
                                     {"weight_register": 0, "status_register": 200},
                                     {"baud": 9600}])
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        build_driver("modbus", device_id="feeder", silence_timeout_s=5, options=options)
