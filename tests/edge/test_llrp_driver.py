"""The LLRP driver under its coordinator, against the simulated fixed reader over real TCP:
the session flow, device time, keepalives, faults, a refused connection and a dropped one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge.drivers import build_driver
from edge.drivers.llrp import LlrpDriver
from firmware_sim import Faults, ManualClock, TcpLink
from firmware_sim.llrp_reader import ACTIVE, LlrpReader
from firmware_sim.r2000_reader import SimTag
from protocols import llrp
from tests.edge.driver_harness import MemorySink, run_driver

EPCS = [bytes.fromhex(f"E2801170000F{i:012X}") for i in range(12)]
WANT = {e.hex().upper() for e in EPCS}
T0 = 1_700_000_000.0  # the reader's clock, far from the gateway's
STEP_S = 0.125  # exact in binary floating point, so reader times stay whole milliseconds


def reader(**kw: object) -> LlrpReader:
    tags = [SimTag(epc=e, antennas=frozenset({1 + i % 3}), rssi_dbm=-50 - i)
            for i, e in enumerate(EPCS)]
    kw.setdefault("max_antennas", 4)
    return LlrpReader(tags=tags, connected_antennas=frozenset({1, 2, 3}),
                      **kw)  # type: ignore[arg-type]


def url(link: TcpLink) -> str:
    return f"tcp://127.0.0.1:{link.port}"


def seen(s: MemorySink) -> set[str]:
    return {r.data["epc"] for r in s.kinds("tag_sighting")}


def seen_after_reconnect(s: MemorySink) -> set[str]:
    """EPCs read since the device came back online (the second ``device_online``)."""
    online = s.kinds("device_online")
    if len(online) < 2:
        return set()
    return {r.data["epc"] for r in s.kinds("tag_sighting") if r.recv_ms >= online[1].ts_ms}


def availability(s: MemorySink) -> list[str]:
    return [r.kind for r in s.readings if r.kind.startswith("device_")]


def requests(sim: LlrpReader) -> list[str]:
    return [r.type_name for r in sim.requests if isinstance(r, llrp.LlrpRequest)]


def test_session_streams_every_tag_with_the_readers_first_seen_time() -> None:
    clock = ManualClock(T0)
    sim = reader(seed=1, clock=clock, report_interval_s=STEP_S, keepalive_interval_s=0.5)
    driver = LlrpDriver(device_id="dock-1", antennas=(1, 2, 3), window_s=0.3)

    def until(s: MemorySink) -> bool:
        clock.advance(STEP_S)  # the reader's time moves one report interval per poll
        return seen(s) >= WANT and sim.keepalive_acks >= 2

    with TcpLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, url(link), until=until))
        names = requests(sim)
    assert seen(sink) == WANT
    by_epc = {r.data["epc"]: r for r in sink.kinds("tag_sighting")}
    # rounds run at T0 + k * STEP_S on the reader's clock: its first-seen time is the
    # sighting's event time, whatever the gateway clock says
    for i, e in enumerate(EPCS):
        r = by_epc[e.hex().upper()]
        assert r.data["antenna"] == 1 + i % 3 and r.device_id == "dock-1"
        assert r.ts_ms == r.data["first_ms"] <= r.data["last_ms"]
        assert (r.ts_ms - round(T0 * 1000)) % round(STEP_S * 1000) == 0
        assert round(T0 * 1000) <= r.ts_ms < r.recv_ms
        assert r.data["rssi_max_dbm"] is not None and r.data["count"] >= 1
    assert names[:4] == ["DELETE_ROSPEC", "ADD_ROSPEC", "ENABLE_ROSPEC", "START_ROSPEC"]
    assert names.count("KEEPALIVE_ACK") >= 2 and driver.keepalives >= 2
    assert names[-1] == "CLOSE_CONNECTION"  # on shutdown
    delete = next(r for r in sim.requests if isinstance(r, llrp.LlrpRequest)
                  and r.type_name == "DELETE_ROSPEC")
    assert delete.rospec_id == 0
    add = next(r for r in sim.requests if isinstance(r, llrp.LlrpRequest) and r.rospec)
    assert add.rospec is not None and add.rospec.antennas == (1, 2, 3)
    assert "first_seen_timestamp" in add.rospec.report_fields
    assert availability(sink) == ["device_online"]
    assert coord.stats.codec_errors == 0 and coord.online and link.connections == 1


def test_faults_are_counted_and_reads_still_arrive() -> None:
    sim = reader(seed=2, report_interval_s=0.05)
    driver = LlrpDriver(device_id="dock-2", window_s=0.3)
    faults = Faults(garbage=0.2, bad_checksum=0.05, split=0.3)

    def until(s: MemorySink) -> bool:
        if availability(s) and sim.injector.faults is not faults:
            sim.injector.faults = faults  # once the ROSpec runs, the reports get faults
        return sum(sim.injector.counts.values()) >= 20 and seen(s) >= WANT

    with TcpLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, url(link), until=until))
    assert seen(sink) == WANT
    assert coord.stats.error_kinds.get("garbage", 0) > 0
    assert coord.stats.codec_errors >= sim.injector.counts["garbage"]
    assert availability(sink) == ["device_online"] and link.connections == 1


class RefusingReader(LlrpReader):
    """A reader that already serves another client."""

    def on_connect(self) -> list[bytes]:
        super().on_connect()
        return [llrp.encode_reader_event_notification(self._next_id(), 0,
                                                      connection_status=2)]


def test_a_refused_connection_is_retried_with_backoff_and_reported_offline_once() -> None:
    sim = RefusingReader(tags=[SimTag(epc=EPCS[0])], seed=3, report_interval_s=0.05)
    driver = LlrpDriver(device_id="dock-3")
    attempts: list[int] = []

    def backoff(attempt: int, jitter: float) -> float:
        attempts.append(attempt)
        return 0.02 * attempt

    with TcpLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, url(link), backoff=backoff,
                                             until=lambda s: len(attempts) >= 4))
    assert attempts[:4] == [1, 2, 3, 4]  # the backoff grows with every refusal
    assert link.connections >= 4 and coord.stats.connects >= 4
    assert availability(sink) == ["device_offline"]
    reason = sink.kinds("device_offline")[0].data["reason"]
    assert "failed_client_initiated_connection_exists" in reason
    assert "ADD_ROSPEC" not in requests(sim) and not sim.rospecs
    assert not coord.online


def test_a_dropped_connection_reconnects_and_sets_the_rospec_up_again() -> None:
    sim = reader(seed=4, report_interval_s=0.05)
    driver = LlrpDriver(device_id="dock-4", window_s=0.2)
    state = {"dropped": False}

    def until(s: MemorySink) -> bool:
        counts = sim.injector.counts
        if not state["dropped"] and seen(s) >= WANT:
            sim.injector.faults = Faults(disconnect=1.0)  # the next frame drops the link
            state["dropped"] = True
        elif state["dropped"] and counts["disconnect"] and sim.injector.faults.disconnect:
            sim.injector.faults = Faults()
        return seen_after_reconnect(s) >= WANT

    with TcpLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, url(link), until=until))
        names = requests(sim)
    assert seen_after_reconnect(sink) == WANT and driver.sessions == 2
    assert link.connections >= 2
    assert names.count("DELETE_ROSPEC") >= 2 and names.count("ADD_ROSPEC") >= 2
    assert names.count("START_ROSPEC") >= 2
    assert sim.rospecs[1].state == ACTIVE
    assert availability(sink) == ["device_online", "device_offline", "device_online"]
    assert "closed" in sink.kinds("device_offline")[0].data["reason"]
    assert coord.online


def test_a_failed_rospec_request_is_reported_and_retried() -> None:
    sim = reader(seed=5, max_antennas=2)
    driver = LlrpDriver(device_id="dock-5", antennas=(1, 4))  # the reader has 2 antennas
    attempts: list[int] = []

    def backoff(attempt: int, jitter: float) -> float:
        attempts.append(attempt)
        return 0.02

    with TcpLink(sim) as link:
        sink, _ = asyncio.run(run_driver(driver, url(link), backoff=backoff,
                                         until=lambda s: len(attempts) >= 2))
        names = requests(sim)
    assert availability(sink) == ["device_offline"]
    reason = sink.kinds("device_offline")[0].data["reason"]
    assert "LlrpRequestFailed" in reason and "ADD_ROSPEC failed: A_Invalid" in reason
    assert names.count("ADD_ROSPEC") >= 2 and "ENABLE_ROSPEC" not in names
    assert names.count("CLOSE_CONNECTION") >= 2  # the driver says goodbye every time


def test_a_quiet_reader_is_probed_and_stays_online() -> None:
    sim = reader(seed=6, report_interval_s=0.05)
    sim.tags = []  # an empty field: the reader has nothing to report
    driver = LlrpDriver(device_id="dock-6", probe_after_s=0.2, silence_timeout_s=1.0)
    with TcpLink(sim) as link:
        sink, coord = asyncio.run(run_driver(driver, url(link),
                                             until=lambda s: driver.probes >= 8))
    assert availability(sink) == ["device_online"] and coord.online
    assert driver.capabilities is not None and driver.capabilities.max_antennas == 4


def test_options_are_validated_at_build_time() -> None:
    d = build_driver("llrp", device_id="x", silence_timeout_s=30.0,
                     options={"antennas": [1, 2], "rospec_id": 9, "report_every_n_tags": 4})
    assert isinstance(d, LlrpDriver) and d.rospec.antennas == (1, 2)
    assert d.rospec.rospec_id == 9 and d.rospec.report_n == 4
    bad_options: list[dict[str, Any]] = [{"rospec_id": 0}, {"antennas": []},
                                         {"report_every_n_tags": 0}]
    for bad in bad_options:
        with pytest.raises(ValueError):
            build_driver("llrp", device_id="x", silence_timeout_s=30.0, options=bad)
    with pytest.raises(TypeError):
        build_driver("llrp", device_id="x", silence_timeout_s=30.0, options={"host": "a"})
