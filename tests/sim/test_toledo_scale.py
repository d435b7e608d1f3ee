"""The simulated Mettler Toledo terminal read through a real pty pair with pyserial and the
host-role codecs: Toledo continuous frames (motion bit while settling) and MT-SICS replies."""

from __future__ import annotations

import itertools
import time

import pytest
import serial

from firmware_sim import Faults, ManualClock, PtyLink
from firmware_sim.toledo_scale import Placement, ToledoScale, animal_placements
from protocols import mtsics, toledo
from protocols._base import FrameError, Message, StreamDecoder
from protocols.messages import ScaleStatus, Weight

ANIMALS = [Placement(1.0, 512.3, 2.0), Placement(8.0, 0.0, 1.0), Placement(11.0, 648.9, 3.0),
           Placement(19.0, 0.0, 1.0)]


def stream_over_pty(scale: ToledoScale, clock: ManualClock, seconds: float,
                    dec: StreamDecoder, *, step_s: float = 0.5) -> list[Message | FrameError]:
    """Serve ``scale`` on a pty, move the simulated clock ``seconds`` forward in steps the
    device keeps up with, and decode everything read from the port."""
    out: list[Message | FrameError] = []
    received = 0
    # Opening a port flushes its input, so the device's first frame is taken here, off the
    # wire (and out of ``scale.sent``); the next is due when the clock moves.
    assert len(scale.tick(clock.now())) == 1
    with PtyLink(scale) as link, serial.Serial(link.path, 9600, timeout=0.02) as port:
        end = clock.now() + seconds
        deadline = time.monotonic() + 30.0
        quiet = 0
        while time.monotonic() < deadline:
            data = port.read(port.in_waiting or 1)
            received += len(data)
            out += dec.feed(data)
            due = scale.next_frame_at
            if due is None or due <= clock.now():
                continue
            if clock.now() < end:
                clock.advance(min(step_s, end - clock.now()))
                continue
            quiet = quiet + 1 if not data and received == link.written else 0
            if quiet >= 3:
                break
        assert link.error is None
    return out + dec.flush()


def decode_frames(frames: list[bytes], dec: StreamDecoder) -> list[Message | FrameError]:
    return [m for f in frames for m in dec.feed(f)]


def test_continuous_output_shows_motion_then_the_stable_weight() -> None:
    clock = ManualClock()
    scale = ToledoScale(placements=ANIMALS, clock=clock, seed=3)
    out = stream_over_pty(scale, clock, 25.0, toledo.Decoder())
    weights = [m for m in out if isinstance(m, Weight)]
    assert not [e for e in out if isinstance(e, FrameError)]
    assert len(weights) == len(scale.sent) >= 250
    assert weights == decode_frames(scale.clean_frames(), toledo.Decoder(checksum=True))
    # every reading's motion bit agrees with the ground truth of the load
    for i, w in enumerate(weights, start=1):  # frame 0 was taken before the port opened
        _, settling = scale.true_load(i * scale.period_s)
        assert w.stable is (not settling)
        assert (w.unit, w.mode, w.tare, w.overload) == ("kg", "gross", 0.0, False)
    stable = [w.weight for w in weights if w.stable]
    assert {512.3, 648.9, 0.0} == set(stable)
    assert any(not w.stable and w.weight not in (0.0, 512.3, 648.9) for w in weights)
    # an animal's weight is the first stable reading after motion
    firsts = [b.weight for a, b in itertools.pairwise(weights)
              if b.stable and not a.stable and b.weight > 0]
    assert firsts == [512.3, 648.9]


def test_7e1_parity_without_checksum_is_auto_detected() -> None:
    clock = ManualClock()
    scale = ToledoScale(placements=ANIMALS[:2], clock=clock, seed=1, checksum=False,
                        parity=True, code=2, increment=1)
    dec = toledo.Decoder()  # auto
    out = stream_over_pty(scale, clock, 10.0, dec)
    assert dec.checksum_detected is False
    weights = [m for m in out if isinstance(m, Weight)]
    # only the first frame had to wait for the next STX; once decided, every frame is
    # complete at its CR, the last one included
    assert len(weights) == len(scale.sent)
    assert not [e for e in out if isinstance(e, FrameError)]
    assert {w.weight for w in weights if w.stable} == {0.0, 512.0}
    assert all(len(f) == toledo.FRAME_LEN and f[0] == 0x82 for f in scale.clean_frames())


def test_continuous_faults_lose_only_the_corrupted_frames() -> None:
    clock = ManualClock()
    faults = Faults(split=0.2, garbage=0.2, bad_checksum=0.05)
    scale = ToledoScale(placements=ANIMALS, clock=clock, seed=5, faults=faults)
    out = stream_over_pty(scale, clock, 20.0, toledo.Decoder(checksum=True))
    decoded = [m for m in out if isinstance(m, Message)]
    assert decoded == decode_frames(scale.clean_frames(), toledo.Decoder(checksum=True))
    corrupted = sum(s.corrupted for s in scale.sent)
    assert corrupted > 0 and scale.injector.counts["garbage"] > 0
    kinds = [e.kind for e in out if isinstance(e, FrameError)]
    assert kinds.count("bad_checksum") == corrupted
    assert set(kinds) <= {"bad_checksum", "garbage"}


# -- MT-SICS mode --------------------------------------------------------------------------------
def ask(port: serial.Serial, dec: mtsics.Decoder, line: bytes, *, replies: int = 1,
        timeout: float = 5.0) -> list[Message | FrameError]:
    port.write(line)
    out: list[Message | FrameError] = []
    deadline = time.monotonic() + timeout
    while len(out) < replies and time.monotonic() < deadline:
        out += dec.feed(port.read(port.in_waiting or 1))
    return out


def test_sics_session_over_pty() -> None:
    clock = ManualClock()
    scale = ToledoScale(mode="sics", placements=[Placement(2.0, 512.3, 2.0)], clock=clock,
                        seed=2, serial_number="B021002593")
    dec = mtsics.Decoder()
    with PtyLink(scale) as link, serial.Serial(link.path, 9600, timeout=0.02) as port:
        assert ask(port, dec, mtsics.encode_info(4)) == [
            mtsics.Info("I4", "A", ("B021002593",))]
        assert ask(port, dec, mtsics.encode_weigh()) == [Weight(0.0, "kg", 0.0, True)]
        assert ask(port, dec, mtsics.encode_zero()) == [ScaleStatus("ok", "A", "Z")]
        clock.advance(3.0)  # the animal is on and the reading still moving
        assert ask(port, dec, mtsics.encode_weigh()) == [ScaleStatus("busy", "I", "S")]
        (dynamic,) = ask(port, dec, mtsics.encode_weigh(immediate=True))
        assert isinstance(dynamic, Weight) and dynamic.stable is False
        assert ask(port, dec, mtsics.encode_tare()) == [ScaleStatus("busy", "I", "T")]
        clock.advance(2.0)
        assert ask(port, dec, mtsics.encode_weigh()) == [Weight(512.3, "kg", 512.3, True)]
        assert ask(port, dec, mtsics.encode_zero()) == [ScaleStatus("overload", "+", "Z")]
        assert ask(port, dec, mtsics.encode_tare_value(10.0, "kg")) == [
            mtsics.Tare("TA", 10.0, "kg", 10.0, None)]
        assert ask(port, dec, mtsics.encode_weigh(immediate=True)) == [
            Weight(502.3, "kg", 502.3, True)]
        assert ask(port, dec, mtsics.encode_tare()) == [
            mtsics.Tare("T", 512.3, "kg", 512.3, True)]
        assert ask(port, dec, mtsics.encode_weigh()) == [Weight(0.0, "kg", 0.0, True)]
        assert ask(port, dec, mtsics.encode_tare_value()) == [
            mtsics.Tare("TA", 512.3, "kg", 512.3, None)]
        assert ask(port, dec, mtsics.encode_clear_tare()) == [ScaleStatus("ok", "A", "TAC")]
        assert ask(port, dec, mtsics.encode_tare_value(1.0, "lb")) == [
            ScaleStatus("error", "L", "TA")]
        assert ask(port, dec, mtsics.encode_command("XYZ")) == [ScaleStatus("error", "ES")]
        assert ask(port, dec, b"S\xff\r\n") == [ScaleStatus("error", "ET")]
        listing = ask(port, dec, mtsics.encode_info(0), replies=15)
        assert [m.status for m in listing] == ["B"] * 14 + ["A"]  # type: ignore[union-attr]
        assert {m.values[1] for m in listing} >= {"S", "SI", "Z", "T", "@"}  # type: ignore[union-attr]
        (i2,) = ask(port, dec, mtsics.encode_info(2))
        assert i2 == mtsics.Info("I2", "A", ("IND-SIM 3000.0 kg",))
        assert ask(port, dec, mtsics.encode_reset()) == [
            mtsics.Info("I4", "A", ("B021002593",))]
        assert link.error is None
    assert dec.errors == 0
    assert [c.name for c in scale.commands][:3] == ["I4", "S", "Z"]


def test_sics_repeat_streams_until_another_command() -> None:
    clock = ManualClock()
    scale = ToledoScale(mode="sics", placements=[Placement(0.5, 250.0, 1.0)], clock=clock,
                        seed=4, rate_hz=5.0)
    dec = mtsics.Decoder()
    with PtyLink(scale) as link, serial.Serial(link.path, 9600, timeout=0.02) as port:
        (first,) = ask(port, dec, mtsics.encode_weigh_repeat())
        out: list[Message | FrameError] = [first]
        for _ in range(10):
            clock.advance(0.2)
            out += ask(port, dec, b"", replies=1)
        # a new command ends the repetition
        assert ask(port, dec, mtsics.encode_clear_tare()) == [ScaleStatus("ok", "A", "TAC")]
        assert link.error is None
    assert not scale.repeat and scale.tick(clock.now() + 10.0) == []
    weights = [m for m in out if isinstance(m, Weight)]
    assert len(weights) == 11
    assert weights[0].weight == 0.0 and weights[-1] == Weight(250.0, "kg", 250.0, True)
    assert any(w.stable is False for w in weights)


def test_sics_faults_junk_lines_do_not_cost_replies() -> None:
    clock = ManualClock()
    scale = ToledoScale(mode="sics", placements=[Placement(0.0, 100.0, 0.1)], clock=clock,
                        seed=8, faults=Faults(garbage=0.5, split=0.5, bad_checksum=0.1))
    assert scale.tick(clock.now()) == []  # the device's time starts now (and it is silent)
    clock.advance(1.0)  # the load has settled
    dec = mtsics.Decoder()
    with PtyLink(scale) as link, serial.Serial(link.path, 9600, timeout=0.02) as port:
        out: list[Message | FrameError] = []
        for _ in range(40):
            out += ask(port, dec, mtsics.encode_weigh(), replies=1)
        # each S gets exactly one reply; a junk line before a reply is one more item
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and (
                len(scale.sent) < 40 or len(out) < 40 + scale.injector.counts["garbage"]):
            out += dec.feed(port.read(port.in_waiting or 1))
        assert link.error is None
    decoded = [m for m in out if isinstance(m, Message)]
    assert decoded == decode_frames(scale.clean_frames(), mtsics.Decoder())
    assert all(m == Weight(100.0, "kg", 100.0, True) for m in decoded)
    corrupted = sum(s.corrupted for s in scale.sent)
    junk = scale.injector.counts["garbage"]
    assert corrupted > 0 and junk > 0
    # each junk line and each corrupted reply is one bad_text error; nothing else is lost
    assert [e.kind for e in out if isinstance(e, FrameError)] == ["bad_text"] * (
        corrupted + junk)


def test_continuous_mode_ignores_commands_and_sics_mode_is_silent() -> None:
    cont = ToledoScale(placements=ANIMALS)
    assert cont.handle(mtsics.encode_weigh()) == []
    sics = ToledoScale(mode="sics", placements=ANIMALS)
    assert sics.tick(1000.0) == [] and sics.tick(1001.0) == []


def test_overload_and_net_in_continuous_frames() -> None:
    scale = ToledoScale(placements=[Placement(0.0, 3500.0, 0.1)], capacity=3000.0, seed=1)
    frames = [f for i in range(5) for f in scale.tick(100.0 + i * 0.1)]
    (last,) = toledo.Decoder(checksum=True).feed(frames[-1])
    assert isinstance(last, Weight) and last.overload and last.weight == 3500.0
    scale = ToledoScale(placements=[Placement(0.0, 400.0, 0.1)], seed=1)
    scale.tare = 25.0
    frames = [f for i in range(5) for f in scale.tick(100.0 + i * 0.1)]
    (last,) = toledo.Decoder(checksum=True).feed(frames[-1])
    assert last == Weight(375.0, "kg", 375.0, True, "net", 25.0)


def test_same_seed_same_stream() -> None:
    def frames(seed: int) -> list[bytes]:
        scale = ToledoScale(placements=ANIMALS, seed=seed)
        return [f for i in range(200) for f in scale.tick(50.0 + i * 0.1)]

    assert frames(1) == frames(1)
    assert frames(1) != frames(2)
    demo = ToledoScale.demo(seed=2)
    assert demo.loop and len(demo.placements) == 60
    assert animal_placements(3, seed=1) == animal_placements(3, seed=1)
    with pytest.raises(ValueError):
        ToledoScale(mode="modbus")  # type: ignore[arg-type]
