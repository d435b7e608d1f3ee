"""The R2000 driver under its coordinator, against the simulated reader over a real pty."""

from __future__ import annotations

import asyncio

from edge.drivers.r2000 import R2000Driver
from firmware_sim import Faults, PtyLink
from firmware_sim.r2000_reader import R2000Reader, SimTag
from tests.edge.driver_harness import run_driver

EPCS = [bytes.fromhex(f"E2801170000100000000{i:04X}") for i in range(12)]


def reader(**kw: object) -> R2000Reader:
    tags = [SimTag(epc=e, antennas=frozenset({1 + i % 3}), rssi_dbm=-50 - i)
            for i, e in enumerate(EPCS)]
    return R2000Reader(tags=tags, connected_antennas=frozenset({1, 2, 3}), **kw)  # type: ignore[arg-type]


def test_every_tag_becomes_a_sighting_and_device_goes_online_once() -> None:
    sim = reader(seed=1)
    driver = R2000Driver(device_id="gate-1", antennas=(1, 2, 3), window_s=0.3,
                         poll_interval_s=0.05)
    want = {e.hex().upper() for e in EPCS}
    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(
            driver, link.path,
            until=lambda s: {r.data["epc"] for r in s.kinds("tag_sighting")} >= want))
    sightings = sink.kinds("tag_sighting")
    assert {r.data["epc"] for r in sightings} == want
    by_epc = {r.data["epc"]: r for r in sightings}
    for i, e in enumerate(EPCS):
        r = by_epc[e.hex().upper()]
        assert r.data["antenna"] == 1 + i % 3 and r.device_id == "gate-1"
        assert r.data["count"] >= 1 and r.data["first_ms"] <= r.data["last_ms"]
    assert [r.kind for r in sink.readings if r.kind.startswith("device_")] == ["device_online"]
    assert coord.stats.codec_errors == 0 and coord.online


def test_faults_are_counted_and_reads_still_arrive() -> None:
    sim = reader(seed=2, faults=Faults(garbage=0.2, bad_checksum=0.05, split=0.3))
    driver = R2000Driver(device_id="gate-2", antennas=(1, 2, 3), window_s=0.3,
                         poll_interval_s=0.05)
    want = {e.hex().upper() for e in EPCS}
    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(
            driver, link.path,
            until=lambda s: {r.data["epc"] for r in s.kinds("tag_sighting")} >= want))
    assert {r.data["epc"] for r in sink.kinds("tag_sighting")} == want
    assert coord.stats.codec_errors > 0
    assert coord.stats.error_kinds.get("garbage", 0) > 0
    assert [r.kind for r in sink.readings if r.kind.startswith("device_")] == ["device_online"]


def test_silent_device_goes_offline_once_and_comes_back_once() -> None:
    sim = reader(seed=3)
    driver = R2000Driver(device_id="gate-3", antennas=(1,), window_s=0.2, poll_interval_s=0.05,
                         silence_timeout_s=0.5, reply_timeout_s=0.2)
    real_handle = sim.handle
    muted = {"on": False}
    sim.handle = lambda data: [] if muted["on"] else real_handle(data)  # type: ignore[method-assign]

    def script(s: object) -> bool:
        kinds = [r.kind for r in s.readings if r.kind.startswith("device_")]  # type: ignore[attr-defined]
        if kinds == ["device_online"]:
            muted["on"] = True
        elif kinds == ["device_online", "device_offline"]:
            muted["on"] = False
        return len(kinds) >= 3

    with PtyLink(sim) as link:
        sink, _ = asyncio.run(run_driver(driver, link.path, until=script))
    kinds = [r.kind for r in sink.readings if r.kind.startswith("device_")]
    # several failed retries happen while muted, but only the transitions are reported
    assert kinds == ["device_online", "device_offline", "device_online"]
    off = sink.kinds("device_offline")[0]
    assert "no answer" in off.data["reason"]
