"""The ThingMagic driver under its coordinator, against the simulated module over a real pty:
boot and setup, continuous reading, faults, a stream that stops, a module that reboots, and a
module that refuses its configuration."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge.drivers import build_driver
from edge.drivers.thingmagic import StreamClock, ThingMagicDriver
from firmware_sim import Faults, PtyLink, SimDevice
from firmware_sim.r2000_reader import SimTag
from firmware_sim.thingmagic_reader import ThingMagicReader
from protocols import thingmagic as tm
from protocols.messages import TagRead
from tests.edge.driver_harness import MemorySink, run_driver, wall_ms

EPCS = [bytes.fromhex(f"E2801170000E{i:012X}") for i in range(12)]
WANT = {e.hex().upper() for e in EPCS}


def module(**kw: object) -> ThingMagicReader:
    tags = [SimTag(epc=e, antennas=frozenset({1 + i % 2}), rssi_dbm=-45 - i)
            for i, e in enumerate(EPCS)]
    return ThingMagicReader(tags=tags, connected_antennas=frozenset({1, 2}),
                            antenna_plan=(1, 2), round_interval_s=0.02,
                            **kw)  # type: ignore[arg-type]


def seen(s: MemorySink) -> set[str]:
    return {r.data["epc"] for r in s.kinds("tag_sighting")}


def faulted(sim: SimDevice) -> int:
    """Frames the simulator sent with garbage before them or a broken checksum."""
    return sim.injector.counts["garbage"] + sim.injector.counts["bad_checksum"]


def availability(s: MemorySink) -> list[str]:
    return [r.kind for r in s.readings if r.kind.startswith("device_")]


def seen_since(s: MemorySink, since_ms: int) -> set[str]:
    return {r.data["epc"] for r in s.kinds("tag_sighting") if r.data["first_ms"] > since_ms}


def opcodes(sim: ThingMagicReader) -> list[int]:
    return [c.opcode for c in sim.commands]


def test_boots_configures_and_streams_every_tag_on_its_antenna() -> None:
    sim = module(seed=1, in_bootloader=True)
    driver = ThingMagicDriver(device_id="gate-tm", region="europe", read_power_dbm=25,
                              window_s=0.3)
    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, until=lambda s: seen(s) >= WANT))
    assert seen(sink) == WANT
    by_epc = {r.data["epc"]: r for r in sink.kinds("tag_sighting")}
    for i, e in enumerate(EPCS):
        r = by_epc[e.hex().upper()]
        assert r.data["antenna"] == 1 + i % 2 and r.device_id == "gate-tm"
        assert r.data["count"] >= 1 and r.data["first_ms"] <= r.data["last_ms"]
        assert r.data["rssi_max_dbm"] is not None and r.data["rssi_max_dbm"] < 0
        assert r.ts_ms == r.data["first_ms"]
    # stop, boot, region, protocol, antenna, power, then continuous reading with metadata
    assert opcodes(sim)[:7] == [0x2F, 0x04, 0x97, 0x93, 0x91, 0x92, 0x2F]
    assert not sim.in_bootloader and sim.streaming
    assert sim.region == tm.REGIONS["europe"] and sim.power_cdbm == 2500
    assert sim.antenna == (1, 1) and sim.metadata_flags & tm.METADATA_FLAGS["timestamp"]
    assert driver.version is not None and driver.setups == 1
    assert availability(sink) == ["device_online"]
    assert coord.stats.codec_errors == 0 and coord.online


def test_faults_are_counted_and_reads_still_arrive() -> None:
    sim = module(seed=2, faults=Faults(garbage=0.2, bad_checksum=0.05, split=0.3))
    driver = ThingMagicDriver(device_id="gate-tm2", window_s=0.3, reply_timeout_s=0.3)
    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, until=lambda s: seen(s) >= WANT
                                             and faulted(sim) >= 5))
    assert seen(sink) == WANT
    assert coord.stats.codec_errors > 0
    assert coord.stats.error_kinds.get("garbage", 0) > 0
    assert availability(sink) == ["device_online"]


def test_a_stream_that_stops_is_started_again() -> None:
    sim = module(seed=3)
    driver = ThingMagicDriver(device_id="gate-tm3", window_s=0.2, restart_after_s=0.5,
                              flush_interval_s=0.1)
    state = {"stopped": False, "at": 0}

    def script(s: MemorySink) -> bool:
        if not state["stopped"] and seen(s) >= WANT:
            sim.streaming = False  # the module stops streaming on its own
            state["stopped"] = True
            state["at"] = wall_ms()
        return bool(state["stopped"]) and seen_since(s, state["at"]) >= WANT

    with PtyLink(sim) as link:
        sink, _ = asyncio.run(run_driver(driver, link.path, until=script))
    assert state["stopped"] and sim.streaming
    assert driver.restarts >= 1 and driver.setups == 1
    assert seen_since(sink, state["at"]) == WANT
    assert availability(sink) == ["device_online"]


def test_a_module_back_in_its_bootloader_is_booted_and_set_up_again() -> None:
    sim = module(seed=4, in_bootloader=True)
    driver = ThingMagicDriver(device_id="gate-tm4", region="north_america", window_s=0.2,
                              restart_after_s=0.3, flush_interval_s=0.1)
    state = {"cycled": False, "at": 0}

    def script(s: MemorySink) -> bool:
        if not state["cycled"] and seen(s) >= WANT:
            sim.streaming = False  # power cycle: quiet, and back in the bootloader
            sim.in_bootloader = True
            state["cycled"] = True
            state["at"] = wall_ms()
        return bool(state["cycled"]) and seen_since(s, state["at"]) >= WANT

    with PtyLink(sim) as link:
        sink, _ = asyncio.run(run_driver(driver, link.path, until=script))
    assert driver.setups == 2 and opcodes(sim).count(0x04) == 2
    assert not sim.in_bootloader and sim.streaming
    assert driver.module_errors.get("invalid_opcode", 0) >= 1
    assert availability(sink) == ["device_online"]


def test_a_refused_configuration_keeps_the_module_offline_and_is_retried() -> None:
    sim = module(seed=5, max_power_cdbm=2700)
    driver = ThingMagicDriver(device_id="gate-tm5", read_power_dbm=30, reply_timeout_s=0.3)
    attempts: list[int] = []

    def backoff(attempt: int, jitter: float) -> float:
        attempts.append(attempt)
        return 0.05

    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, backoff=backoff,
                                             until=lambda s: len(attempts) >= 3))
    assert attempts[:3] == [1, 2, 3]
    assert availability(sink) == ["device_offline"]
    reason = sink.kinds("device_offline")[0].data["reason"]
    assert "msg_power_too_high" in reason and "set_read_tx_power" in reason
    assert not sink.kinds("tag_sighting") and not coord.online
    assert opcodes(sim).count(0x92) >= 3 and not sim.streaming


def test_stream_clock_converts_and_unwraps_module_time() -> None:
    c = StreamClock(1_700_000_000_000)
    assert c.to_epoch_ms(0) == 1_700_000_000_000
    assert c.to_epoch_ms(1500) == 1_700_000_001_500
    top = (1 << 32) - 10
    assert c.to_epoch_ms(top) == 1_700_000_000_000 + top
    assert c.to_epoch_ms(5) == 1_700_000_000_000 + (1 << 32) + 5  # wrapped
    assert c.to_epoch_ms(top + 2) == 1_700_000_000_000 + top + 2  # late, from before the wrap
    assert c.to_epoch_ms(20) == 1_700_000_000_000 + (1 << 32) + 20


def test_tag_times_become_epoch_ms_once_the_start_is_acknowledged() -> None:
    driver = ThingMagicDriver(device_id="unit", window_s=1.0)
    driver.note_start_sent(1_000_000)
    read = TagRead(epc="E2801170000E000000000001", antenna=2, rssi_dbm=-50.0,
                   device_ts_ms=250)
    before = TagRead(epc="E2801170000E000000000002", antenna=1, device_ts_ms=99)
    driver.on_messages([before, tm.ContinuousRead(True, 0x22), read], 1_000_400)
    out = driver.flush(1_001_000)
    by_epc = {r.data["epc"]: r for r in out}
    # a record before the acknowledgement belongs to an unknown stream: receive time
    assert by_epc[before.epc].ts_ms == 1_000_400
    assert by_epc[read.epc].ts_ms == 1_000_250 and by_epc[read.epc].recv_ms == 1_000_400
    assert not driver.restart_due
    driver.on_messages([tm.StreamEnd(0x1B, 0x5F)], 1_000_500)
    assert driver.restart_due


def test_options_are_validated_at_build_time() -> None:
    d = build_driver("thingmagic", device_id="x", silence_timeout_s=5.0,
                     options={"region": "europe", "antenna": 2, "read_power_dbm": 20})
    assert isinstance(d, ThingMagicDriver)
    bad_options: list[dict[str, Any]] = [{"region": "mars"}, {"read_power_dbm": 40}, {"antenna": 0}]
    for bad in bad_options:
        with pytest.raises(ValueError):
            build_driver("thingmagic", device_id="x", silence_timeout_s=5.0, options=bad)
    with pytest.raises(TypeError):
        build_driver("thingmagic", device_id="x", silence_timeout_s=5.0, options={"port": 1})
