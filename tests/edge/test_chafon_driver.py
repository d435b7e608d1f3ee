"""The Chafon driver under its coordinator, against the simulated reader over a real pty: both
reader families, detected from the reader information, with and without faults."""

from __future__ import annotations

import asyncio

import pytest

from edge.drivers import build_driver
from edge.drivers.chafon import ChafonDriver
from firmware_sim import Faults, PtyLink, SimDevice
from firmware_sim.chafon_reader import ChafonReader
from firmware_sim.r2000_reader import SimTag
from tests.edge.driver_harness import MemorySink, run_driver

EPCS = [bytes.fromhex(f"E2801170000D{i:012X}") for i in range(12)]
WANT = {e.hex().upper() for e in EPCS}


def reader(variant: str, **kw: object) -> ChafonReader:
    tags = [SimTag(epc=e, antennas=frozenset({1 + i % 3}), rssi_dbm=-50 - i)
            for i, e in enumerate(EPCS)]
    return ChafonReader(variant=variant, tags=tags,  # type: ignore[arg-type]
                        connected_antennas=frozenset({1, 2, 3}), **kw)  # type: ignore[arg-type]


def seen(s: MemorySink) -> set[str]:
    return {r.data["epc"] for r in s.kinds("tag_sighting")}


def faulted(sim: SimDevice) -> int:
    """Frames the simulator sent with garbage before them or a broken checksum."""
    return sim.injector.counts["garbage"] + sim.injector.counts["bad_checksum"]


def availability(s: MemorySink) -> list[str]:
    return [r.kind for r in s.readings if r.kind.startswith("device_")]


def test_288m_is_detected_and_every_tag_becomes_a_sighting_on_its_antenna() -> None:
    sim = reader("288", seed=1, max_tags_per_frame=2, address=3)
    driver = ChafonDriver(device_id="bunk-1", antennas=(1, 2, 3), power_dbm=25, window_s=0.3,
                          poll_interval_s=0.05)
    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, baudrate=57600,
                                             until=lambda s: seen(s) >= WANT))
    assert seen(sink) == WANT
    by_epc = {r.data["epc"]: r for r in sink.kinds("tag_sighting")}
    for i, e in enumerate(EPCS):
        r = by_epc[e.hex().upper()]
        assert r.data["antenna"] == 1 + i % 3 and r.device_id == "bunk-1"
        assert r.data["count"] >= 1 and r.data["first_ms"] <= r.data["last_ms"]
        assert r.data["rssi_max_dbm"] is None  # the 288M's RSSI unit is undocumented
    assert driver.form == "288" and driver.reader_info is not None
    assert driver.reader_info.model == "UHFReader288M" and sim.power_dbm == 25
    assert [c.cmd for c in sim.commands[:2]] == [0x21, 0x2F]
    assert set(sim.inventories) == {1, 2, 3}
    assert availability(sink) == ["device_online"]
    assert coord.stats.codec_errors == 0 and coord.online


def test_18_reader_gets_the_bare_inventory_and_sightings_without_antenna() -> None:
    sim = reader("18", seed=2)
    for t in sim.tags:  # a one-port reader: every tag in front of port 1
        t.antennas = frozenset({1})
    driver = ChafonDriver(device_id="bunk-2", antennas=(1, 2), window_s=0.3,
                          poll_interval_s=0.05)
    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, until=lambda s: seen(s) >= WANT))
    assert seen(sink) == WANT
    assert {r.data["antenna"] for r in sink.kinds("tag_sighting")} == {None}
    assert driver.form == "18"
    inventories = [c for c in sim.commands if c.cmd == 0x01]
    assert inventories and all(c.data == b"" for c in inventories)
    assert availability(sink) == ["device_online"] and coord.stats.codec_errors == 0


def test_faults_are_counted_and_reads_still_arrive() -> None:
    sim = reader("288", seed=3, faults=Faults(garbage=0.2, bad_checksum=0.05, split=0.3))
    driver = ChafonDriver(device_id="bunk-3", variant="288", antennas=(1, 2, 3), window_s=0.3,
                          poll_interval_s=0.05, reply_timeout_s=0.3)
    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, link.path, until=lambda s: seen(s) >= WANT
                                             and faulted(sim) >= 5))
    assert seen(sink) == WANT
    assert coord.stats.codec_errors > 0
    assert coord.stats.error_kinds.get("garbage", 0) + coord.stats.error_kinds.get(
        "bad_checksum", 0) > 0
    assert availability(sink) == ["device_online"]


def test_missing_antenna_is_noted_and_the_reader_stays_online() -> None:
    sim = reader("288", seed=4)
    driver = ChafonDriver(device_id="bunk-4", antennas=(1, 2, 3, 4), window_s=0.3,
                          poll_interval_s=0.05)
    with PtyLink(sim) as link:
        sink, _ = asyncio.run(run_driver(driver, link.path,
                                         until=lambda s: seen(s) >= WANT
                                         and bool(driver.missing_antennas)))
    assert driver.missing_antennas == {4}
    assert driver.reader_errors.get("antenna_error", 0) >= 1
    assert availability(sink) == ["device_online"]


def test_options_are_validated_at_build_time() -> None:
    d = build_driver("chafon", device_id="x", silence_timeout_s=5.0,
                     options={"antennas": [1, 2], "variant": "288", "power_dbm": 20})
    assert isinstance(d, ChafonDriver) and d.antennas == (1, 2)
    with pytest.raises(ValueError):
        build_driver("chafon", device_id="x", silence_timeout_s=5.0,
                     options={"variant": "86"})
    with pytest.raises(ValueError):
        build_driver("chafon", device_id="x", silence_timeout_s=5.0, options={"power_dbm": 40})
    with pytest.raises(TypeError):
        build_driver("chafon", device_id="x", silence_timeout_s=5.0, options={"bogus": 1})
