"""The NMEA GPS driver under its coordinator, against the simulated receiver over a real pty
(on a fast simulated clock), and its fix-time rule around midnight."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from edge.aggregate import thin_track
from edge.drivers import build_driver
from edge.drivers.base import split
from edge.drivers.nmea import NmeaDriver, nmea_time_ms
from firmware_sim import Faults, PtyLink
from firmware_sim.gps_receiver import GpsReceiver, demo_track
from protocols import nmea
from protocols.messages import Position
from protocols.uplink import Reading
from tests.edge.driver_harness import FastClock, MemorySink, run_driver


def utc_ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


def availability(sink: MemorySink) -> list[str]:
    return [r.kind for r in sink.readings if r.kind.startswith("device_")]


# -- the fix-time rule ----------------------------------------------------------------------------
@pytest.mark.parametrize(("time_utc", "date", "ref", "want"), [
    # RMC: the date is on the sentence, the reference does not matter
    ("23:59:59", "2026-01-01", "2026-03-05T12:00:00", "2026-01-01T23:59:59"),
    ("00:00:00.50", "2026-01-02", "2026-01-01T23:59:59", "2026-01-02T00:00:00.500"),
    # GGA after an RMC of the old day: the new day starts
    ("00:00:00", None, "2026-01-01T23:59:59.900", "2026-01-02T00:00:00"),
    ("00:00:01.25", None, "2026-01-01T23:59:58", "2026-01-02T00:00:01.250"),
    # GGA of the old day received just after midnight (gateway clock a little ahead)
    ("23:59:59", None, "2026-01-02T00:00:00.400", "2026-01-01T23:59:59"),
    # an ordinary midday GGA
    ("12:34:56", None, "2026-01-02T12:35:00", "2026-01-02T12:34:56"),
    # across a year end and a leap day
    ("00:00:02", None, "2027-12-31T23:59:59", "2028-01-01T00:00:02"),
    ("23:59:58", None, "2028-03-01T00:00:03", "2028-02-29T23:59:58"),
])
def test_fix_time_takes_the_day_that_puts_the_time_nearest_the_reference(
        time_utc: str, date: str | None, ref: str, want: str) -> None:
    assert nmea_time_ms(time_utc, date, ref_ms=utc_ms(ref)) == utc_ms(want)


def test_gga_only_epochs_after_midnight_take_the_new_date() -> None:
    """An RMC of the old day, then GGA-only epochs: the driver advances the receiver's last
    known time by the receive time elapsed, so the GGA at 00:00:00 is on January 2nd, and
    before any RMC the gateway's receive date is used."""
    driver = NmeaDriver(device_id="gps", min_distance_m=0.0, max_interval_s=1.0)
    sentences = [
        (nmea.encode_rmc(time_utc="23:59:59", date="2026-01-01", lat=35.19, lon=-101.85),
         utc_ms("2026-01-01T23:59:59.200")),
        (nmea.encode_gga(time_utc="00:00:00", lat=35.1901, lon=-101.85),
         utc_ms("2026-01-02T00:00:00.200")),
        (nmea.encode_gga(time_utc="00:00:01", lat=35.1902, lon=-101.85),
         utc_ms("2026-01-02T00:00:01.200")),
    ]
    dec = nmea.Decoder()
    out: list[Reading] = []
    for raw, recv in sentences:
        out += driver.on_messages(split(dec.feed(raw))[0], recv)
    out += driver.flush(utc_ms("2026-01-02T00:00:05"))
    assert [r.ts_ms for r in out] == [utc_ms("2026-01-01T23:59:59"),
                                      utc_ms("2026-01-02T00:00:00"),
                                      utc_ms("2026-01-02T00:00:01")]
    assert [r.data["lat"] for r in out] == [35.19, 35.1901, 35.1902]
    fresh = NmeaDriver(device_id="gps")
    first = fresh.on_messages(
        split(dec.feed(nmea.encode_gga(time_utc="23:59:58", lat=1.0, lon=2.0)))[0],
        utc_ms("2026-01-02T00:00:01"))
    first += fresh.flush(utc_ms("2026-01-02T00:00:03"))
    assert [r.ts_ms for r in first] == [utc_ms("2026-01-01T23:59:58")]


def test_an_epoch_merges_gga_rmc_and_vtg_into_one_reading() -> None:
    driver = NmeaDriver(device_id="gps")
    dec = nmea.Decoder()
    raw = (nmea.encode_gga(time_utc="10:00:00", lat=35.5, lon=-101.5, satellites=9, hdop=0.8,
                           altitude_m=1101.5)
           + nmea.encode_rmc(time_utc="10:00:00", date="2026-02-03", lat=35.5, lon=-101.5,
                             speed_knots=None, course_deg=None)
           + nmea.encode_vtg(course_true_deg=87.5, speed_knots=12.25))
    assert driver.on_messages(split(dec.feed(raw))[0], 5) == []  # the epoch may not be complete yet
    assert driver.flush(5 + 999) == []
    (r,) = driver.flush(5 + 1000)
    assert r.ts_ms == utc_ms("2026-02-03T10:00:00") and r.recv_ms == 5
    assert r.data == {"lat": 35.5, "lon": -101.5, "speed_knots": 12.25, "course_deg": 87.5,
                      "altitude_m": 1101.5, "satellites": 9, "hdop": 0.8}
    # an epoch without a fix is dropped and counted
    raw = (nmea.encode_gga(time_utc="10:00:01", lat=None, lon=None, quality=0)
           + nmea.encode_rmc(time_utc="10:00:01", date="2026-02-03", lat=None, lon=None,
                             valid=False))
    assert driver.on_messages(split(dec.feed(raw))[0], 1005) == []
    assert driver.flush(0, final=True) == []
    assert driver.thinner.dropped_no_fix == 1


# -- against the simulated receiver -------------------------------------------------------
def sent_fixes(sim: GpsReceiver) -> list[tuple[int, float, float]]:
    """(ts_ms, lat, lon) of every RMC with a fix the receiver put on the wire, decoded as
    the driver decodes it."""
    dec = nmea.Decoder()
    out = []
    for frame in sim.clean_frames():
        for m in dec.feed(frame):
            if isinstance(m, Position) and m.sentence == "RMC" and m.fix:
                assert m.time_utc and m.date and m.lat is not None and m.lon is not None
                out.append((nmea_time_ms(m.time_utc, m.date, ref_ms=0), m.lat, m.lon))
    return out


@pytest.mark.parametrize("faults", [None, Faults(garbage=0.1, bad_checksum=0.05, split=0.2)],
                         ids=["clean", "faults"])
def test_positions_match_the_track_and_are_thinned_by_distance_or_time(
        faults: Faults | None) -> None:
    # start 30 s before midnight: the fixes cross into January 2nd
    clock = FastClock(40.0, start=utc_ms("2026-01-01T23:59:30") / 1000)
    sim = GpsReceiver(track=demo_track(), speed_knots=20.0, vtg_every=5, clock=clock,
                      outages=[(20.0, 30.0)], seed=11, faults=faults)
    driver = NmeaDriver(device_id="truck-7", min_distance_m=25.0, max_interval_s=4.0)
    with PtyLink(sim) as link:
        sink, coord = asyncio.run(run_driver(
            driver, link.path, clock_ms=clock.ms,
            until=lambda s: len(s.kinds("position")) >= 25))
    positions = sink.kinds("position")
    truth = {round(f.t * 1000): f for f in sim.fixes}
    for r in positions:
        assert Reading.from_wire(r.to_wire()) == r
        f = truth[r.ts_ms]  # the fix time is the receiver's, to the millisecond
        assert f.fix and f.lat is not None and f.lon is not None
        assert r.data["lat"] == pytest.approx(f.lat, abs=1e-6)
        assert r.data["lon"] == pytest.approx(f.lon, abs=1e-6)
        # a sentence lost to a fault takes its fields along (RMC: speed, GGA: altitude)
        if faults is None or "speed_knots" in r.data:
            assert r.data["speed_knots"] == pytest.approx(20.0)
            assert r.data["course_deg"] == pytest.approx(f.course_deg, abs=0.05)
        if faults is None or "altitude_m" in r.data:
            assert r.data["altitude_m"] == 1100.0 and r.data["satellites"] >= 7
        assert r.recv_ms >= r.ts_ms
    days = {dt.datetime.fromtimestamp(r.ts_ms / 1000, tz=dt.UTC).day for r in positions}
    assert days == {1, 2}
    assert driver.thinner.dropped_no_fix >= 5  # the outage sent fixes without a position
    # thinning: exactly what the batch thinner keeps from the fixes the driver saw
    wire = [f for f in sent_fixes(sim) if positions[0].ts_ms <= f[0] <= positions[-1].ts_ms]
    if faults is None:
        ts = [f[0] for f in wire]
        mask = thin_track([f[1] for f in wire], [f[2] for f in wire], ts,
                          min_distance_m=25.0, max_interval_ms=4000)
        assert [t for t, keep in zip(ts, mask, strict=True) if keep] == [
            r.ts_ms for r in positions]
        assert coord.stats.codec_errors == 0
    else:
        assert coord.stats.error_kinds.get("bad_checksum", 0) > 0
        assert coord.stats.error_kinds.get("garbage", 0) > 0
    assert availability(sink) == ["device_online"]


def test_silent_receiver_goes_offline_once_and_comes_back_once() -> None:
    clock = FastClock(5.0)
    sim = GpsReceiver(track=demo_track(), speed_knots=20.0, clock=clock, seed=12)
    driver = build_driver("nmea", device_id="truck-8", silence_timeout_s=0.5,
                          options={"min_distance_m": 5.0, "max_interval_s": 10})
    real_tick = sim.tick
    muted = {"on": False}
    sim.tick = lambda now: [] if muted["on"] else real_tick(now)  # type: ignore[method-assign]

    def script(s: MemorySink) -> bool:
        kinds = availability(s)
        if kinds == ["device_online"] and s.kinds("position"):
            muted["on"] = True
        elif kinds == ["device_online", "device_offline"]:
            muted["on"] = False
        return len(kinds) >= 3

    with PtyLink(sim) as link:
        sink, _ = asyncio.run(run_driver(driver, link.path, until=script, clock_ms=clock.ms))
    assert availability(sink) == ["device_online", "device_offline", "device_online"]


@pytest.mark.parametrize("options", [{"min_distance_m": -1}, {"max_interval_s": 0},
                                     {"speed": 3}])
def test_bad_options_are_refused(options: dict[str, float]) -> None:
    with pytest.raises((ValueError, TypeError)):
        build_driver("nmea", device_id="gps", silence_timeout_s=5, options=options)


def test_a_sentence_without_time_is_its_own_epoch() -> None:
    driver = NmeaDriver(device_id="gps", min_distance_m=0.0, max_interval_s=1.0)
    dec = nmea.Decoder()
    gll = [nmea.encode_sentence("GP", "GLL", [lat, "N", "10151.0000", "W"])  # NMEA 1.5
           for lat in ("3511.4000", "3511.7000")]
    out = driver.on_messages(split(dec.feed(b"".join(gll)))[0], 5_000)
    assert [(r.ts_ms, r.data["lat"]) for r in out] == [(5_000, 35.19), (5_000, 35.195)]
