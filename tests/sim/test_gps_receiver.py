"""The simulated GNSS receiver: its truth log matches what the NMEA codec decodes, in memory
and over a real pty pair (and TCP) read with pyserial."""

from __future__ import annotations

import math
import time

import pytest
import serial

from firmware_sim import Faults, ManualClock, PtyLink, TcpLink, device_class
from firmware_sim.gps_receiver import KNOT_M_S, M_PER_DEG, GpsReceiver, demo_track
from protocols import nmea
from protocols._base import FrameError, Message
from protocols.messages import Position

# 5 decimals of minutes: a reported coordinate is within 0.5e-5 / 60 degrees of the truth
RESOLUTION_DEG = 0.5e-5 / 60 + 1e-9


def run(sim: GpsReceiver, clock: ManualClock, seconds: int) -> list[bytes]:
    frames: list[bytes] = []
    for _ in range(seconds * 4):
        frames += sim.tick(clock.now())
        clock.advance(0.25)
    return frames + sim.tick(clock.now())


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dy = (b[0] - a[0]) * M_PER_DEG
    dx = (b[1] - a[1]) * M_PER_DEG * math.cos(math.radians(a[0]))
    return math.hypot(dx, dy)


def positions(items: list[Message | FrameError], sentence: str) -> list[Position]:
    return [m for m in items if isinstance(m, Position) and m.sentence == sentence]


def test_every_second_decodes_to_the_truth() -> None:
    clock = ManualClock()
    t0 = clock.now()
    sim = GpsReceiver(track=demo_track(), speed_knots=10.0, clock=clock, seed=1)
    frames = run(sim, clock, 10)
    dec = nmea.Decoder()
    out = dec.feed(b"".join(frames))
    assert dec.errors == 0
    gga, rmc = positions(out, "GGA"), positions(out, "RMC")
    vtg = [m for m in out if isinstance(m, nmea.Velocity)]
    assert len(sim.fixes) == len(gga) == len(rmc) == 11  # t0 .. t0 + 10
    assert len(vtg) == 3  # every 5 s: t0, t0 + 5, t0 + 10
    for truth, g, r in zip(sim.fixes, gga, rmc, strict=True):
        assert truth.fix and g.fix and r.fix and g.quality == 1
        assert truth.lat is not None and truth.lon is not None
        for p in (g, r):
            assert p.lat == pytest.approx(truth.lat, abs=RESOLUTION_DEG)
            assert p.lon == pytest.approx(truth.lon, abs=RESOLUTION_DEG)
        assert r.speed_knots == 10.0 and r.course_deg == pytest.approx(truth.course_deg)
        assert r.date == "2026-01-01"
    assert [f.t for f in sim.fixes] == [t0 + k for k in range(11)]
    assert gga[0].time_utc == "00:00:00.00" and gga[10].time_utc == "00:00:10.00"
    assert vtg[0] == nmea.Velocity("GP", 90.0, None, 10.0, 18.52, "A", True)


def test_track_is_driven_at_speed_and_loops() -> None:
    clock = ManualClock()
    track = demo_track()
    sim = GpsReceiver(track=track, speed_knots=20.0, clock=clock, vtg_every=0)
    perimeter = sum(metres(track[i], track[(i + 1) % 4]) for i in range(4))
    lap_s = math.ceil(perimeter / (20.0 * KNOT_M_S))
    run(sim, clock, lap_s + 30)
    lats = [f.true_lat for f in sim.fixes]
    lons = [f.true_lon for f in sim.fixes]
    # never leaves the rectangle, visits every side, and comes back past the start
    assert min(lats) >= 35.19 - 1e-9 and max(lats) <= 35.1945 + 1e-9
    assert min(lons) >= -101.85 - 1e-9 and max(lons) <= -101.845 + 1e-9
    assert {f.course_deg for f in sim.fixes} == {0.0, 90.0, 180.0, 270.0}
    # (lap_s + 30) s at 20 kn is one lap plus 30..31 s of driving along the first side
    assert 30 * 20.0 * KNOT_M_S - 1 < metres(sim.position(), track[0]) < 31 * 20.0 * KNOT_M_S
    steps = [metres((a.true_lat, a.true_lon), (b.true_lat, b.true_lon))
             for a, b in zip(sim.fixes, sim.fixes[1:], strict=False)]
    # a second's step is the speed, or less when it cuts a corner
    assert max(steps) == pytest.approx(20.0 * KNOT_M_S, rel=1e-3)
    assert all(s <= 20.0 * KNOT_M_S * 1.001 for s in steps)


def test_random_walk_is_seeded_and_moves_at_speed() -> None:
    def walk(seed: int) -> list[bytes]:
        clock = ManualClock()
        return run(GpsReceiver(speed_knots=3.0, clock=clock, seed=seed), clock, 20)

    assert walk(4) == walk(4)
    assert walk(4) != walk(5)
    clock = ManualClock()
    sim = GpsReceiver(speed_knots=3.0, clock=clock, seed=4)
    run(sim, clock, 20)
    steps = [metres((a.true_lat, a.true_lon), (b.true_lat, b.true_lon))
             for a, b in zip(sim.fixes, sim.fixes[1:], strict=False)]
    assert steps == pytest.approx([3.0 * KNOT_M_S] * 20, rel=1e-3)
    assert len({f.course_deg for f in sim.fixes}) > 10  # it wanders


def test_jitter_stays_near_the_truth() -> None:
    clock = ManualClock()
    sim = GpsReceiver(jitter_m=3.0, speed_knots=0.0, clock=clock, seed=2)
    run(sim, clock, 50)
    offsets = [metres((f.true_lat, f.true_lon), (f.lat, f.lon)) for f in sim.fixes
               if f.lat is not None and f.lon is not None]
    assert len(offsets) == 51 and max(offsets) < 20.0 and sum(offsets) / 51 > 0.5


def test_no_fix_sentences() -> None:
    clock = ManualClock()
    sim = GpsReceiver(fix=False, clock=clock, vtg_every=1)
    out = nmea.Decoder().feed(b"".join(run(sim, clock, 2)))
    gga, rmc = positions(out, "GGA"), positions(out, "RMC")
    assert len(gga) == len(rmc) == 3
    assert all(p.lat is None and p.lon is None and not p.fix for p in gga + rmc)
    assert all(p.quality == 0 and p.hdop is None for p in gga)
    vtg = [m for m in out if isinstance(m, nmea.Velocity)]
    assert vtg == [nmea.Velocity("GP", None, None, None, None, "N", False)] * 3
    assert not any(f.fix for f in sim.fixes)


def test_outage_and_runtime_switch() -> None:
    clock = ManualClock()
    sim = GpsReceiver(outages=[(3.0, 6.0)], clock=clock, talker="GN")
    out = nmea.Decoder().feed(b"".join(run(sim, clock, 8)))
    assert [p.fix for p in positions(out, "GGA")] == [True] * 3 + [False] * 3 + [True] * 3
    assert {p.talker for p in positions(out, "RMC")} == {"GN"}
    sim.fix = False
    out = nmea.Decoder().feed(b"".join(run(sim, clock, 1)))
    assert [p.fix for p in positions(out, "GGA")] == [False]


def test_clock_jump_is_capped() -> None:
    clock = ManualClock()
    sim = GpsReceiver(clock=clock, vtg_every=0)
    sim.tick(clock.now())
    clock.advance(10_000)
    frames = sim.tick(clock.now())
    assert len(frames) == 2 * 600
    assert sim.tick(clock.now()) == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        GpsReceiver(track=[(0.0, 0.0)])
    with pytest.raises(ValueError):
        GpsReceiver(track=[(0.0, 0.0), (95.0, 0.0)])
    with pytest.raises(ValueError):
        GpsReceiver(speed_knots=-1)


def test_host_sentences_are_recorded() -> None:
    sim = GpsReceiver()
    cmd = nmea.encode_sentence("P", "MTK220", ["1000"])
    assert sim.handle(cmd[:5]) == [] and sim.handle(cmd[5:]) == []
    assert sim.commands == [nmea.OtherSentence("P", "MTK220", ("1000",))]


def test_registered_as_gps() -> None:
    assert device_class("gps") is GpsReceiver
    sim = GpsReceiver.demo(seed=3, clock=ManualClock())
    assert isinstance(sim, GpsReceiver) and sim.track == tuple(demo_track())


# -- over real links ---------------------------------------------------------------------------
def read_seconds(port: serial.SerialBase, dec: nmea.Decoder, clock: ManualClock, *,
                 count: int, timeout: float = 15.0) -> list[Message | FrameError]:
    """Advance the simulated clock one second at a time, decoding what arrives, until
    ``count`` RMC sentences were decoded. Opening the port discards what the device sent
    before (pyserial resets the input buffer), so the first second may be missing."""
    out: list[Message | FrameError] = []
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < count and time.monotonic() < deadline:
        clock.advance(1.0)
        second_deadline = min(deadline, time.monotonic() + 1.0)
        while time.monotonic() < second_deadline:
            out += dec.feed(port.read(port.in_waiting or 1))
            rmc = len(positions(out, "RMC"))
            if rmc > seen:
                seen = rmc
                break
    return out


def truth_by_time(sim: GpsReceiver) -> dict[str, tuple[float | None, float | None]]:
    return {time.strftime("%H:%M:%S.00", time.gmtime(f.t)): (f.lat, f.lon) for f in sim.fixes}


def test_over_pty_decodes_what_was_sent() -> None:
    clock = ManualClock()
    sim = GpsReceiver(track=demo_track(), speed_knots=8.0, jitter_m=1.0, clock=clock, seed=9)
    with PtyLink(sim) as link, serial.Serial(link.path, 9600, timeout=0.05) as port:
        dec = nmea.Decoder()
        out = read_seconds(port, dec, clock, count=6)
    assert dec.errors == 0
    gga = positions(out, "GGA")
    assert len(gga) >= 6
    truth = truth_by_time(sim)
    for p in gga:
        assert p.time_utc is not None
        lat, lon = truth[p.time_utc]
        assert p.lat == pytest.approx(lat, abs=RESOLUTION_DEG)
        assert p.lon == pytest.approx(lon, abs=RESOLUTION_DEG)


def test_faults_over_pty_lose_only_the_corrupted_sentences() -> None:
    clock = ManualClock()
    faults = Faults(split=0.3, garbage=0.3, bad_checksum=0.15)
    sim = GpsReceiver(speed_knots=4.0, clock=clock, seed=11, faults=faults, vtg_every=1)
    with PtyLink(sim) as link, serial.Serial(link.path, 9600, timeout=0.05) as port:
        dec = nmea.Decoder()
        out = read_seconds(port, dec, clock, count=12)
        out += dec.feed(port.read(port.in_waiting)) + dec.flush()
    decoded = [m for m in out if isinstance(m, Message)]
    clean_sent = [i for i, s in enumerate(sim.sent) if not s.corrupted]
    clean = [nmea.Decoder().feed(sim.sent[i].frame)[0] for i in clean_sent]
    # what arrived intact decodes, in order, to exactly what was sent (the first second may
    # have been discarded when the port was opened)
    first = clean.index(decoded[0])
    assert first <= 3 and decoded == clean[first:first + len(decoded)]
    lo, hi = clean_sent[first], clean_sent[first + len(decoded) - 1]
    corrupted = sum(s.corrupted for s in sim.sent[lo:hi])
    assert corrupted > 0 and sim.injector.counts["garbage"] > 0
    reported = [e for e in out if isinstance(e, FrameError) and e.kind != "garbage"]
    assert len(reported) >= corrupted  # each corrupted sentence is reported, never dropped
    assert {e.kind for e in reported} <= {"bad_checksum", "truncated"}


def test_over_tcp() -> None:
    clock = ManualClock()
    sim = GpsReceiver(fix=False, clock=clock)
    with TcpLink(sim) as link, serial.serial_for_url(link.url, timeout=0.05) as port:
        dec = nmea.Decoder()
        out = read_seconds(port, dec, clock, count=3)
    gga = positions(out, "GGA")
    assert len(gga) >= 3 and not any(p.fix for p in gga)
    assert dec.errors == 0


def test_reports_on_whole_seconds() -> None:
    clock = ManualClock(start=1_767_225_600.4)
    sim = GpsReceiver(clock=clock, vtg_every=0)
    assert sim.tick(clock.now()) == []
    clock.advance(0.6)
    (gga, _rmc) = nmea.Decoder().feed(b"".join(sim.tick(clock.now())))
    assert isinstance(gga, Position) and gga.time_utc == "00:00:01.00"
    assert sim.fixes[0].t == 1_767_225_601.0
