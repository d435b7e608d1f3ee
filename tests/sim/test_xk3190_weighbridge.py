"""The simulated XK3190 weighbridge read through a real pty pair with pyserial and the
host-role codec: what the driver decodes is what the indicator sent, and the stable plateaus
in that stream are the scheduled weighings, which pair into gross / tare / net per truck."""

from __future__ import annotations

import itertools
import time

import pytest
import serial

from firmware_sim import Faults, ManualClock, PtyLink
from firmware_sim.xk3190_weighbridge import TruckVisit, Xk3190Weighbridge, truck_schedule
from protocols import xk3190
from protocols._base import FrameError, Message
from protocols.messages import Weight

VISITS = [
    TruckVisit("KAA-123", arrive_s=2.0, loaded_kg=35_280, empty_kg=14_010, on_site_s=45.0),
    TruckVisit("KBB-456", arrive_s=20.0, loaded_kg=28_000, empty_kg=12_500, delivering=False,
               on_site_s=50.0),
]


def run_over_pty(wb: Xk3190Weighbridge, clock: ManualClock, seconds: float, *,
                 step_s: float = 1.0, dec: xk3190.Decoder | None = None
                 ) -> list[Message | FrameError]:
    """Serve ``wb`` on a pty, move the simulated clock forward ``seconds`` in small steps
    while reading the port, and return everything the host decoder made of the bytes."""
    dec = dec or xk3190.Decoder()
    out: list[Message | FrameError] = []
    received = 0
    # Start the device's time before the port is open: opening a port flushes its input
    # (pyserial resets the buffer), so frame 0 would be lost to the host but counted as sent.
    # Frame 0 is taken here, off the wire; the next is due when the clock moves.
    assert len(wb.tick(clock.now())) == 1
    with PtyLink(wb) as link, serial.Serial(link.path, 9600, timeout=0.02) as port:
        end = clock.now() + seconds
        deadline = time.monotonic() + 30.0
        quiet = 0
        while time.monotonic() < deadline:
            data = port.read(port.in_waiting or 1)
            received += len(data)
            out += dec.feed(data)
            due = wb.next_frame_at
            if due is None or due <= clock.now():
                continue  # the device has not emitted everything due yet
            if clock.now() < end:
                clock.advance(min(step_s, end - clock.now()))
                continue
            quiet = quiet + 1 if not data and received == link.written else 0
            if quiet >= 3:
                break  # all emitted, written and read
        assert link.error is None
    return out + dec.flush()


def plateaus(readings: list[float], *, min_kg: float = 1000.0, n: int = 30) -> list[float]:
    """The simplest stability rule a gateway can use on a flagless stream: ``n`` equal
    consecutive readings above ``min_kg`` make one weighing (reported once per plateau)."""
    found: list[float] = []
    run = 0
    for i, w in enumerate(readings):
        run = run + 1 if i and w == readings[i - 1] else 1
        if run == n and w >= min_kg:
            found.append(w)
    return found


def test_trucks_weighed_in_and_out_over_pty() -> None:
    clock = ManualClock()
    wb = Xk3190Weighbridge(visits=VISITS, clock=clock, seed=4)
    out = run_over_pty(wb, clock, 140.0)
    weights = [m for m in out if isinstance(m, Weight)]
    assert not [e for e in out if isinstance(e, FrameError)]
    # every frame sent was decoded, in order, and carries no stability flag
    assert len(weights) == len(wb.sent) >= 140 * 10
    assert weights == [m for f in wb.clean_frames() for m in xk3190.Decoder().feed(f)]
    assert all(w.stable is None and w.unit == "kg" for w in weights)
    # the stable plateaus are exactly the scheduled weighings, in time order
    assert plateaus([w.weight for w in weights]) == [w.weight_kg for w in wb.weighings]
    # and pair per truck into gross / tare / net
    by_truck: dict[str, dict[str, float]] = {}
    for wg in wb.weighings:
        by_truck.setdefault(wg.truck, {})[wg.direction] = wg.weight_kg
    assert by_truck == {"KAA-123": {"in": 35_280.0, "out": 14_000.0},
                        "KBB-456": {"in": 12_500.0, "out": 28_000.0}}
    net = {t: max(d.values()) - min(d.values()) for t, d in by_truck.items()}
    assert net == {"KAA-123": 21_280.0, "KBB-456": 15_500.0}
    # between trucks the platform reads empty, and motion shows up as changing readings
    assert weights[0].weight == 0.0 and weights[-1].weight == 0.0
    assert len({w.weight for w in weights}) > 50


def test_faults_over_pty_lose_only_the_corrupted_frames() -> None:
    clock = ManualClock()
    faults = Faults(split=0.2, garbage=0.2, bad_checksum=0.05)
    wb = Xk3190Weighbridge(visits=VISITS[:1], clock=clock, seed=9, faults=faults)
    out = run_over_pty(wb, clock, 40.0)
    decoded = [m for m in out if isinstance(m, Message)]
    assert decoded == [m for f in wb.clean_frames() for m in xk3190.Decoder().feed(f)]
    corrupted = sum(s.corrupted for s in wb.sent)
    assert corrupted > 0 and wb.injector.counts["garbage"] > 0
    errs = [e for e in out if isinstance(e, FrameError)]
    assert sum(e.kind == "bad_checksum" for e in errs) == corrupted
    assert {e.kind for e in errs} <= {"bad_checksum", "garbage"}


@pytest.mark.parametrize("fmt", ["eq", "eq_reversed"])
def test_eq_formats_over_pty(fmt: str) -> None:
    clock = ManualClock()
    wb = Xk3190Weighbridge(visits=VISITS[:1], clock=clock, seed=2, frame_format=fmt,  # type: ignore[arg-type]
                           rate_hz=5.0)
    out = run_over_pty(wb, clock, 35.0,
                       dec=xk3190.Decoder(reversed_digits=fmt == "eq_reversed"))
    assert not [e for e in out if isinstance(e, FrameError)]
    weights = [m.weight for m in out if isinstance(m, Weight)]
    assert len(weights) == len(wb.sent)
    assert plateaus(weights, n=10) == [35_280.0]


def test_same_seed_same_stream_and_schedule_queues_trucks() -> None:
    def frames(seed: int) -> list[bytes]:
        wb = Xk3190Weighbridge(visits=VISITS, seed=seed)
        start = 1000.0
        return [f for i in range(300) for f in wb.tick(start + i * 0.1)]

    assert frames(1) == frames(1)
    assert frames(1) != frames(2)
    # trucks that arrive together queue: weighings never overlap
    visits = [TruckVisit(f"T{i}", arrive_s=10.0, loaded_kg=30_000, empty_kg=12_000,
                         on_site_s=5.0) for i in range(3)]
    ws = Xk3190Weighbridge(visits=visits).weighings
    assert all(b.start_s >= a.end_s for a, b in itertools.pairwise(ws))
    assert [w.direction for w in ws].count("in") == 3
    assert all(w.weight_kg in (30_000.0, 12_000.0) for w in ws)
    demo = Xk3190Weighbridge.demo(seed=3)
    assert len(demo.weighings) == 40 and demo.loop
    assert truck_schedule(5, seed=1) == truck_schedule(5, seed=1)
