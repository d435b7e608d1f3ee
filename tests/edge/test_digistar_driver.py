"""The Digi-Star TMR mixer driver under its coordinator, against the simulated indicator over a
real pty, on a fast simulated clock shared by the indicator and the driver."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from edge.drivers import build_driver
from edge.drivers.digistar import DigiStarDriver
from firmware_sim import Faults, PtyLink
from firmware_sim.digistar_indicator import DigiStarIndicator, FeedStep
from protocols.messages import LB_TO_KG, Weight
from protocols.uplink import Reading
from tests.edge.driver_harness import FastClock, MemorySink, run_driver

# a short batch: parked, two ingredients, a mix, three pens
SCRIPT = [FeedStep("idle", "PARKED", 0, 12, 0),
          FeedStep("load", "HAY", 1200, 6, 5),
          FeedStep("load", "SILAGE", 3000, 8, 5),
          FeedStep("mix", "MIX", 0, 6, 5),
          FeedStep("unload", "PEN1", 1500, 6, 5),
          FeedStep("unload", "PEN2", 1400, 6, 5),
          FeedStep("unload", "PEN3", 1250, 6, 8)]


def step_starts() -> list[tuple[float, FeedStep]]:
    t = 0.0
    out = []
    for step in SCRIPT:
        out.append((t, step))
        t += step.duration_s + step.settle_s
    return out


def availability(sink: MemorySink) -> list[str]:
    return [r.kind for r in sink.readings if r.kind.startswith("device_")]


@pytest.mark.parametrize(("mode", "unit", "faults"), [
    (1, "lb", None),  # display frames with the motion flag, unit from the driver option
    (38, "kg", None),  # multi-scale frames, unit on the wire, no motion flag
    (1, "lb", Faults(garbage=0.1, bad_checksum=0.05, split=0.2)),
    (11, "kg", Faults(garbage=0.1, bad_checksum=0.05, split=0.2)),
], ids=["display-lb", "multiscale-kg", "display-faults", "serialgross-faults"])
def test_feed_events_match_the_mixer_script(mode: int, unit: str,
                                            faults: Faults | None) -> None:
    clock = FastClock(25.0)
    sim = DigiStarIndicator(script=SCRIPT, output_mode=mode, unit=unit,  # type: ignore[arg-type]
                            other_scales=(500.0, 20.0) if mode == 38 else (), clock=clock,
                            seed=mode, faults=faults)
    driver = DigiStarDriver(device_id="mixer-1", unit=unit,  # type: ignore[arg-type]
                            weight_interval_s=5.0)
    fed = {"done": False}

    def until(s: MemorySink) -> bool:
        if not fed["done"] and sim.started_at is not None:
            # the bunk reader tells the driver which pen the wagon is at
            for at, step in step_starts():
                if step.kind == "unload":
                    driver.set_pen(step.label, round((sim.started_at + at) * 1000))
            fed["done"] = True
        return len(s.kinds("feed_event")) >= 5

    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, until=until,
                                             clock_ms=clock.ms))
    events = sink.kinds("feed_event")
    truth = [e for e in sim.events if e.kind in ("load", "unload")]
    resolution_kg = sim.resolution * (LB_TO_KG if unit == "lb" else 1.0)
    assert [(r.data["event"], r.data["pen"]) for r in events] == [
        (e.kind, e.label if e.kind == "unload" else None) for e in truth]
    for r, e in zip(events, truth, strict=True):
        assert Reading.from_wire(r.to_wire()) == r
        assert e.amount_kg is not None
        # both settled levels are rounded to the display resolution
        assert abs(r.data["kg"] - e.amount_kg) <= resolution_kg
        # the event is dated when the weight settled at its new level
        # (the upper bound allows for a busy test machine)
        assert e.settled - 1.5 <= r.ts_ms / 1000 <= e.settled + 5.0
    weights = sink.kinds("weight")
    assert weights and all(r.data["weight_kg"] is not None for r in weights)
    gaps = [b.recv_ms - a.recv_ms for a, b in itertools.pairwise(weights)]
    assert all(g >= 5000 for g in gaps)
    assert availability(sink) == ["device_online"]
    if faults is None:
        assert coord.stats.codec_errors == 0
    else:
        assert coord.stats.codec_errors > 0
        assert coord.stats.error_kinds.get("garbage", 0) > 0


def test_only_the_mixer_platform_of_a_multi_scale_indicator_counts() -> None:
    driver = DigiStarDriver(device_id="mixer", scale="B", weight_interval_s=0)
    msgs = [Weight(100.0, "kg", 100.0, None, scale="A*"),
            Weight(200.0, "kg", 200.0, None, scale="B"),
            Weight(300.0, "lb", 136.077711, False, scale="locked")]
    out = driver.on_messages(msgs, 1000)
    assert [r.data["weight_kg"] for r in out if r.kind == "weight"] == [200.0, 136.077711]


@pytest.mark.parametrize("options", [{"unit": "t"}, {"mode": 99}, {"scale": "D"},
                                     {"threshold_kg": 1.0, "tolerance_kg": 5.0},
                                     {"pens": ["A"]}])
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        build_driver("digistar", device_id="mixer", silence_timeout_s=5, options=options)
