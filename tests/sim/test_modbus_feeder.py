"""The simulated Modbus feeder controller: register map, exceptions and ground truth, in memory
and over a real pty pair (and TCP) read with pyserial and the client-role codec."""

from __future__ import annotations

import time

import pytest
import serial

from firmware_sim import Faults, ManualClock, PtyLink, TcpLink, device_class
from firmware_sim import modbus_feeder as mf
from firmware_sim.modbus_feeder import FeederEvent, ModbusFeeder
from protocols import modbus
from protocols._base import FrameError, Message
from protocols.messages import Weight

# fill 150 kg at 10 kg/s (15 s) + 5 s settle; pen 1: 100 kg at 10 kg/s (10 s) + 5 s;
# pen 2: 50 kg (5 s) + 5 s -> a 45 s cycle
PENS = (100.0, 50.0)
CYCLE_S = 45.0


def feeder(clock: ManualClock, **kw: object) -> ModbusFeeder:
    return ModbusFeeder(pens_kg=PENS, fill_rate_kg_s=10.0, deliver_rate_kg_s=10.0,
                        settle_s=5.0, noise_kg=2.0, clock=clock, **kw)  # type: ignore[arg-type]


def ask(sim: ModbusFeeder, frame: bytes) -> list[Message | FrameError]:
    return modbus.Decoder("client").feed(b"".join(sim.handle(frame)))


def read(sim: ModbusFeeder, start: int, quantity: int, function: int = 3) -> tuple[int, ...]:
    (resp,) = ask(sim, modbus.encode_read_request(1, start, quantity, function=function))
    assert isinstance(resp, modbus.ReadResponse), resp
    return resp.registers


def weight(regs: tuple[int, ...]) -> Weight:
    return modbus.registers_to_weight(regs, decimals=1, status_index=2,
                                      stable_bit=mf.STATUS_STABLE, net_bit=mf.STATUS_NET,
                                      overload_bit=mf.STATUS_OVERLOAD)


def test_weight_follows_the_cycle() -> None:
    clock = ManualClock()
    sim = feeder(clock)
    w = weight(read(sim, 0, 3))  # the cycle starts with the fill: empty and moving
    assert w.stable is False and w.mode == "gross" and abs(w.weight) <= 2.0
    clock.advance(7.5)  # half-way through the fill: moving, within the noise
    w = weight(read(sim, 0, 3))
    assert w.stable is False and abs(w.weight - 75.0) <= 2.0
    clock.advance(10)  # 17.5 s: full, settled
    assert weight(read(sim, 0, 3)) == Weight(150.0, "kg", 150.0, True, "gross")
    clock.advance(7.5)  # 25 s: delivering to pen 1
    regs = read(sim, 0, 7)
    assert regs[mf.REG_PEN_NOW] == 1 and regs[mf.REG_STATUS] >> mf.STATUS_DELIVERING & 1
    assert abs(weight(regs).weight - 100.0) <= 2.0
    clock.advance(15)  # 40 s: pen 2 done
    assert weight(read(sim, 0, 3)).weight == 0.0
    assert read(sim, mf.REG_PEN_FEED, 2) == (100, 50)
    assert read(sim, mf.REG_TOTAL_FEED, 2) == (0, 150)


def test_events_are_the_ground_truth() -> None:
    clock = ManualClock()
    t0 = clock.now()
    sim = feeder(clock)
    for _ in range(int(2 * CYCLE_S)):
        sim.tick(clock.now())
        clock.advance(1)
    sim.tick(clock.now())
    assert sim.started_at == t0
    assert sim.events == [
        FeederEvent("fill", 0, 150.0, t0, t0 + 15), FeederEvent("deliver", 1, 100.0, t0 + 20,
                                                                t0 + 30),
        FeederEvent("deliver", 2, 50.0, t0 + 35, t0 + 40),
        FeederEvent("fill", 0, 150.0, t0 + 45, t0 + 60),
        FeederEvent("deliver", 1, 100.0, t0 + 65, t0 + 75),
        FeederEvent("deliver", 2, 50.0, t0 + 80, t0 + 85),
    ]
    # the counters agree with the events
    assert read(sim, mf.REG_PEN_FEED, 2) == (200, 100)
    assert sim.delivered_kg(1, clock.now()) == 200.0


def test_single_cycle_stops() -> None:
    clock = ManualClock()
    sim = feeder(clock, repeat=False)
    sim.tick(clock.now())
    clock.advance(500)
    sim.tick(clock.now())
    assert [e.kind for e in sim.events] == ["fill", "deliver", "deliver"]
    assert read(sim, mf.REG_PEN_FEED, 2) == (100, 50)
    assert weight(read(sim, 0, 3)).weight == 0.0


def test_input_registers_mirror_the_measurements() -> None:
    clock = ManualClock()
    sim = feeder(clock)
    sim.tick(clock.now())
    clock.advance(18)
    assert read(sim, 0, 7, function=4) == read(sim, 0, 7)
    assert read(sim, mf.REG_PEN_COUNT, 1, function=4) == (2,)


def test_tare_clear_and_reset_commands() -> None:
    clock = ManualClock()
    sim = feeder(clock)
    sim.tick(clock.now())
    clock.advance(18)  # 150 kg settled
    assert ask(sim, modbus.encode_write_single(1, mf.REG_COMMAND, mf.COMMAND_TARE)) == [
        modbus.WriteSingle(1, mf.REG_COMMAND, mf.COMMAND_TARE)]
    assert weight(read(sim, 0, 3)) == Weight(0.0, "kg", 0.0, True, "net")
    assert read(sim, mf.REG_TARE, 1) == (1500,)
    clock.advance(12)  # 30 s: pen 1 got 100 kg -> net -100 kg
    assert weight(read(sim, 0, 3)).weight == -100.0
    ask(sim, modbus.encode_write_single(1, mf.REG_COMMAND, mf.COMMAND_CLEAR_TARE))
    assert weight(read(sim, 0, 3)) == Weight(50.0, "kg", 50.0, True, "gross")
    assert read(sim, mf.REG_PEN_FEED, 2) == (100, 0)
    ask(sim, modbus.encode_write_single(1, mf.REG_COMMAND, mf.COMMAND_RESET_COUNTERS))
    assert read(sim, mf.REG_PEN_FEED, 2) == (0, 0)
    clock.advance(10)  # pen 2 delivered after the reset
    assert read(sim, mf.REG_PEN_FEED, 2) == (0, 50)
    assert read(sim, mf.REG_COMMAND, 1) == (0,)


def test_write_multiple_pen_counters() -> None:
    clock = ManualClock()
    sim = feeder(clock)
    assert ask(sim, modbus.encode_write_multiple(1, mf.REG_PEN_FEED, [7, 9])) == [
        modbus.WriteMultipleResponse(1, mf.REG_PEN_FEED, 2)]
    assert read(sim, mf.REG_PEN_FEED, 2) == (7, 9)
    assert read(sim, mf.REG_TOTAL_FEED, 2) == (0, 16)


def test_overload_bit() -> None:
    clock = ManualClock()
    sim = feeder(clock, capacity_kg=120.0)
    sim.tick(clock.now())
    clock.advance(18)
    w = weight(read(sim, 0, 3))
    assert w.overload and w.weight == 150.0


EXC = modbus.ExceptionResponse
EXCEPTIONS = [
    ("read_coils_illegal_function", modbus.encode_frame(1, bytes.fromhex("01 0000 0008")),
     EXC(1, 1, 1, "illegal_function")),
    ("write_coil_illegal_function", modbus.encode_frame(1, bytes.fromhex("05 0000 FF00")),
     EXC(1, 5, 1, "illegal_function")),
    ("read_gap_illegal_address", modbus.encode_read_request(1, 5, 6),
     EXC(1, 3, 2, "illegal_data_address")),
    ("read_past_end_illegal_address", modbus.encode_read_request(1, 31, 2),
     EXC(1, 3, 2, "illegal_data_address")),
    ("input_pen_feed_illegal_address", modbus.encode_read_request(1, 10, 1, function=4),
     EXC(1, 4, 2, "illegal_data_address")),
    ("read_quantity_126_illegal_value", modbus.encode_frame(1, bytes.fromhex("03 0000 007E")),
     EXC(1, 3, 3, "illegal_data_value")),
    ("read_quantity_0_illegal_value", modbus.encode_frame(1, bytes.fromhex("04 0000 0000")),
     EXC(1, 4, 3, "illegal_data_value")),
    ("write_weight_read_only", modbus.encode_write_single(1, 0, 5),
     EXC(1, 6, 2, "illegal_data_address")),
    ("write_unmapped", modbus.encode_write_single(1, 100, 5),
     EXC(1, 6, 2, "illegal_data_address")),
    ("unknown_command_value", modbus.encode_write_single(1, mf.REG_COMMAND, 9),
     EXC(1, 6, 3, "illegal_data_value")),
    ("write_multiple_over_read_only", modbus.encode_write_multiple(1, 3, [0, 1]),
     EXC(1, 16, 2, "illegal_data_address")),
    ("write_multiple_bad_command", modbus.encode_write_multiple(1, 4, [9]),
     EXC(1, 16, 3, "illegal_data_value")),
]


@pytest.mark.parametrize(("request_frame", "expected"), [e[1:] for e in EXCEPTIONS],
                         ids=[e[0] for e in EXCEPTIONS])
def test_exceptions(request_frame: bytes, expected: modbus.ExceptionResponse) -> None:
    sim = feeder(ManualClock())
    assert ask(sim, request_frame) == [expected]


def test_silence_for_other_devices_broadcast_and_bad_crc() -> None:
    clock = ManualClock()
    sim = feeder(clock)
    assert sim.handle(modbus.encode_read_request(2, 0, 2)) == []
    broadcast = modbus.encode_write_single(0, mf.REG_PEN_FEED, 42)
    assert sim.handle(broadcast) == []
    assert read(sim, mf.REG_PEN_FEED, 1) == (42,)  # the broadcast write was executed
    bad = bytearray(modbus.encode_read_request(1, 0, 2))
    bad[-1] ^= 0xFF
    assert sim.handle(bytes(bad)) == []
    # a request split across writes is answered once complete
    frame = modbus.encode_read_request(1, mf.REG_PEN_COUNT, 1)
    assert sim.handle(frame[:3]) == []
    assert modbus.Decoder().feed(b"".join(sim.handle(frame[3:]))) == [
        modbus.ReadResponse(1, 3, (2,))]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ModbusFeeder(device_id=0)
    with pytest.raises(ValueError):
        ModbusFeeder(pens_kg=())
    with pytest.raises(ValueError):
        ModbusFeeder(pens_kg=(1.0,) * 21)
    with pytest.raises(ValueError):
        ModbusFeeder(fill_rate_kg_s=0)


def test_registered_as_modbus() -> None:
    assert device_class("modbus") is ModbusFeeder
    sim = ModbusFeeder.demo(seed=1, clock=ManualClock())
    assert isinstance(sim, ModbusFeeder) and len(sim.pens_kg) == 4


# -- over real links ---------------------------------------------------------------------------
def transact(port: serial.SerialBase, request: bytes, *, device_id: int = 1,
             timeout: float = 2.0) -> list[Message | FrameError]:
    """Send one request and read until its reply decoded (or a non-garbage error), as a
    polling driver does: a decoder that expects this device and function."""
    dec = modbus.Decoder(expect=(device_id, request[1]))
    port.write(request)
    out: list[Message | FrameError] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out += dec.feed(port.read(port.in_waiting or 1))
        if any(isinstance(o, Message) or o.kind != "garbage" for o in out):
            break
    else:
        out += dec.flush()
    return out


def test_polling_over_pty() -> None:
    clock = ManualClock()
    sim = feeder(clock)
    with PtyLink(sim) as link, serial.Serial(link.path, 19200, timeout=0.05) as port:
        (resp,) = transact(port, modbus.encode_read_request(1, 0, 3))
        assert isinstance(resp, modbus.ReadResponse) and resp.registers[2] == 0  # filling
        clock.advance(18)
        (resp,) = transact(port, modbus.encode_read_request(1, 0, 7))
        assert isinstance(resp, modbus.ReadResponse)
        assert weight(resp.registers) == Weight(150.0, "kg", 150.0, True, "gross")
        assert transact(port, modbus.encode_write_single(1, mf.REG_COMMAND, 1)) == [
            modbus.WriteSingle(1, mf.REG_COMMAND, 1)]
        assert transact(port, modbus.encode_frame(1, bytes.fromhex("01 0000 0001"))) == [
            modbus.ExceptionResponse(1, 1, 1, "illegal_function")]
        # another device on the bus never answers: the driver times out with nothing decoded
        assert transact(port, modbus.encode_read_request(7, 0, 2), device_id=7,
                        timeout=0.3) == []
        clock.advance(12)
        (resp,) = transact(port, modbus.encode_read_request(1, 0, 3))
    assert isinstance(resp, modbus.ReadResponse)
    assert weight(resp.registers) == Weight(-100.0, "kg", -100.0, True, "net")
    assert [type(r).__name__ for r in sim.requests] == [
        "ReadRequest", "ReadRequest", "WriteSingle", "OtherRequest", "ReadRequest"]


def test_faults_over_pty_lose_only_the_corrupted_replies() -> None:
    clock = ManualClock()
    faults = Faults(split=0.3, garbage=0.3, bad_checksum=0.2)
    sim = feeder(clock, seed=5, faults=faults)
    replies: list[list[Message | FrameError]] = []
    with PtyLink(sim) as link, serial.Serial(link.path, 19200, timeout=0.05) as port:
        for i in range(30):
            clock.advance(1.5)
            replies.append(transact(port, modbus.encode_read_request(1, i % 7, 1 + i % 4)))
    assert len(sim.sent) == 30
    for record, got in zip(sim.sent, replies, strict=True):
        decoded = [m for m in got if isinstance(m, Message)]
        if record.corrupted:
            assert decoded == []
            assert any(isinstance(e, FrameError) and e.kind == "bad_checksum" for e in got)
        else:
            assert decoded == modbus.Decoder().feed(record.frame)
    assert sum(s.corrupted for s in sim.sent) > 0 and sim.injector.counts["garbage"] > 0


def test_over_tcp() -> None:
    clock = ManualClock()
    sim = feeder(clock)
    with TcpLink(sim) as link, serial.serial_for_url(link.url, timeout=0.05) as port:
        out = transact(port, modbus.encode_read_request(1, mf.REG_PEN_COUNT, 1, function=4))
    assert out == [modbus.ReadResponse(1, 4, (2,))]
