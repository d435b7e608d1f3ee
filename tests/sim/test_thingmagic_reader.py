"""The simulated ThingMagic module read through a real pty pair (and TCP) with pyserial and the
host-role codec: what the driver decodes is exactly what the device sent."""

from __future__ import annotations

import time
from collections.abc import Callable

import serial

from firmware_sim import Faults, ManualClock, PtyLink, TcpLink
from firmware_sim.r2000_reader import SimTag
from firmware_sim.thingmagic_reader import HOP_TABLES_KHZ, ThingMagicReader
from protocols import thingmagic as tm
from protocols._base import FrameError, Message
from protocols.messages import TagRead

EPCS = [bytes.fromhex(f"E2801170000A{i:012X}") for i in range(12)]


def _population(prob: float = 1.0) -> list[SimTag]:
    return [SimTag(epc=e, antennas=frozenset({1 + i % 2}), rssi_dbm=-40 - 2 * i,
                   read_probability=prob) for i, e in enumerate(EPCS)]


def read_until(port: serial.SerialBase, dec: tm.Decoder,
               stop: Callable[[list[Message | FrameError]], bool], *,
               timeout: float = 10.0) -> list[Message | FrameError]:
    out: list[Message | FrameError] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop(out):
        out += dec.feed(port.read(port.in_waiting or 1))
    return out


def drain(port: serial.SerialBase, dec: tm.Decoder, *, quiet_s: float = 0.3,
          timeout: float = 10.0) -> list[Message | FrameError]:
    """Read until the line has been silent for ``quiet_s``."""
    out: list[Message | FrameError] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
        chunk = port.read(port.in_waiting or 1)
        if chunk:
            last = time.monotonic()
            out += dec.feed(chunk)
    return out


def _count(kind: type, n: int) -> Callable[[list[Message | FrameError]], bool]:
    return lambda out: sum(isinstance(m, kind) for m in out) >= n


def test_setup_and_single_read_over_pty() -> None:
    reader = ThingMagicReader(tags=_population(), connected_antennas=frozenset({1, 2}), seed=1)
    with PtyLink(reader) as link, serial.Serial(link.path, 115200, timeout=0.05) as port:
        dec = tm.Decoder()
        port.write(tm.encode_get_version() + tm.encode_set_region("europe")
                   + tm.encode_set_tag_protocol() + tm.encode_set_antenna(2)
                   + tm.encode_set_read_power(20) + tm.encode_read_tag_single(500))
        out = read_until(port, dec, lambda o: len(o) >= 6)
    assert out[0] == tm.Version(0x03, "07.10.23.00", "01.00.00.03", "2014-10-07",
                                "01.07.02.09", (5,))
    assert out[1:5] == [tm.Ack(0x97, "set_region"), tm.Ack(0x93, "set_tag_protocol"),
                        tm.Ack(0x91, "set_antenna_port"), tm.Ack(0x92, "set_read_tx_power")]
    # antenna 2 sees the odd-indexed tags; the strongest of them is EPCS[1] (-42 dBm)
    assert out[5] == TagRead(epc=EPCS[1].hex().upper(), pc=0x3000)
    assert reader.region == 0x08 and reader.antenna == (2, 2) and reader.power_cdbm == 2000
    assert dec.errors == 0


def test_continuous_read_streams_every_tag_until_stopped() -> None:
    reader = ThingMagicReader(tags=_population(), connected_antennas=frozenset({1, 2}),
                              antenna_plan=(1, 2), round_interval_s=0.02, seed=2)
    with PtyLink(reader) as link, serial.Serial(link.path, 115200, timeout=0.05) as port:
        dec = tm.Decoder()
        port.write(tm.encode_start_continuous_read())
        out = read_until(port, dec, lambda o: len({m.epc for m in o if isinstance(m, TagRead)})
                         >= len(EPCS))
        port.write(tm.encode_stop_continuous_read())
        out += read_until(port, dec, lambda o: tm.ContinuousRead(False) in o)
        tail = drain(port, dec)
    assert out[0] == tm.ContinuousRead(True, 0x22)
    assert out[-1] == tm.ContinuousRead(False)
    assert tail == [], "nothing is streamed after the stop acknowledgement"
    reads = [m for m in out if isinstance(m, TagRead)]
    assert {r.epc for r in reads} == {e.hex().upper() for e in EPCS}
    by_epc = {e.hex().upper(): i for i, e in enumerate(EPCS)}
    hops = set(HOP_TABLES_KHZ[0x0D])
    for r in reads:
        i = by_epc[r.epc]
        assert r.antenna == 1 + i % 2
        assert r.rssi_dbm is not None and abs(r.rssi_dbm - (-40 - 2 * i)) <= 2
        assert r.frequency_khz in hops and r.read_count == 1 and r.pc == 0x3000
        assert r.device_ts_ms is not None and r.device_ts_ms >= 0
    ts = [r.device_ts_ms for r in reads]
    assert ts == sorted(ts), "timestamps count up from the start of the stream"
    assert dec.errors == 0 and not reader.streaming


def test_continuous_read_honours_requested_metadata() -> None:
    reader = ThingMagicReader(tags=_population(), seed=3, round_interval_s=0.02)
    with PtyLink(reader) as link, serial.Serial(link.path, 115200, timeout=0.05) as port:
        dec = tm.Decoder()
        port.write(tm.encode_start_continuous_read(0x0006))  # RSSI + antenna only
        out = read_until(port, dec, _count(TagRead, 3))
        port.write(tm.encode_stop_continuous_read())
        out += read_until(port, dec, lambda o: tm.ContinuousRead(False) in o)
    reads = [m for m in out if isinstance(m, TagRead)]
    assert reads and all(r.antenna == 1 and r.rssi_dbm is not None for r in reads)
    assert all(r.frequency_khz is None and r.read_count is None and r.device_ts_ms is None
               for r in reads)


def test_faults_over_pty_lose_only_the_corrupted_frames() -> None:
    faults = Faults(split=0.3, garbage=0.3, bad_checksum=0.1)
    reader = ThingMagicReader(tags=_population(), connected_antennas=frozenset({1, 2}),
                              antenna_plan=(1, 2), round_interval_s=0.01, seed=7,
                              faults=faults)
    with PtyLink(reader) as link, serial.Serial(link.path, 115200, timeout=0.05) as port:
        dec = tm.Decoder()
        port.write(tm.encode_start_continuous_read())
        out = read_until(port, dec, _count(TagRead, 150))
        port.write(tm.encode_stop_continuous_read())
        out += drain(port, dec)
        out += dec.flush()
    assert not reader.streaming
    decoded = [m for m in out if isinstance(m, Message)]
    # every intact frame the device sent decodes, in order, to the same message
    assert decoded == [m for f in reader.clean_frames() for m in tm.Decoder().feed(f)]
    corrupted = sum(s.corrupted for s in reader.sent)
    assert reader.injector.counts["garbage"] > 0 and reader.injector.counts["split"] > 0
    assert corrupted > 0
    assert dec.errors >= corrupted  # each corrupted frame is reported, never silently dropped


def test_tag_buffer_flow_over_tcp() -> None:
    tags = [SimTag(epc=e) for e in EPCS]  # all twelve on antenna 1
    reader = ThingMagicReader(tags=tags, seed=4)
    with TcpLink(reader) as link, serial.serial_for_url(link.url, timeout=0.05) as port:
        dec = tm.Decoder()
        port.write(tm.encode_read_tag_multiple(200))
        found = read_until(port, dec, _count(tm.TagsFound, 1))
        # seven records with all metadata fill one frame; the rest come with the next request
        port.write(tm.encode_get_tag_buffer())
        first = read_until(port, dec, _count(TagRead, 7))
        port.write(tm.encode_get_tag_buffer())
        second = read_until(port, dec, _count(TagRead, 5))
        port.write(tm.encode_get_tag_buffer() + tm.encode_clear_tag_buffer())
        tail = read_until(port, dec, _count(tm.Ack, 1))
    assert found == [tm.TagsFound(0x22, 12)]
    assert len(first) == 7 and len(second) == 5
    reads = [r for r in first + second if isinstance(r, TagRead)]
    assert [r.epc for r in reads] == [e.hex().upper() for e in EPCS]
    assert all(r.antenna == 1 and r.read_count == 1 for r in reads)
    assert tail == [tm.ModuleError(0x29, 0x0600, "tag_id_buffer_not_enough_tags_available"),
                    tm.Ack(0x2A, "clear_tag_id_buffer")]
    assert dec.errors == 0


def test_tag_buffer_folds_repeated_reads() -> None:
    reader = ThingMagicReader(tags=[SimTag(epc=EPCS[0], rssi_dbm=-50)], rssi_noise_db=0)
    for _ in range(3):
        reader.handle(tm.encode_read_tag_multiple())
    out = tm.Decoder().feed(b"".join(reader.handle(tm.encode_get_tag_buffer())))
    assert [(m.epc, m.read_count, m.rssi_dbm) for m in out] == [  # type: ignore[attr-defined]
        (EPCS[0].hex().upper(), 3, -50.0)]


def test_errors_a_module_would_give() -> None:
    reader = ThingMagicReader(tags=_population(), connected_antennas=frozenset({1}))
    dec = tm.Decoder()

    def ask(frame: bytes) -> list[Message | FrameError]:
        return dec.feed(b"".join(reader.handle(frame)))

    assert ask(tm.encode_set_antenna(2) + tm.encode_read_tag_single()) == [
        tm.Ack(0x91, "set_antenna_port"),
        tm.ModuleError(0x21, 0x0503, "antenna_not_connected")]
    assert ask(tm.encode_set_antenna(1)) == [tm.Ack(0x91, "set_antenna_port")]
    reader.tags = []
    assert ask(tm.encode_read_tag_single()) == [tm.ModuleError(0x21, 0x0400, "no_tags_found")]
    assert ask(tm.encode_set_read_power(30)) == [
        tm.ModuleError(0x92, 0x0103, "msg_power_too_high")]
    assert ask(tm.encode_set_tag_protocol(0x03)) == [
        tm.ModuleError(0x93, 0x0402, "invalid_protocol_specified")]
    assert ask(tm.encode_set_region(0x42)) == [tm.ModuleError(0x97, 0x010B, "invalid_region")]
    assert ask(tm.encode_command(0x72)) == [tm.ModuleError(0x72, 0x0102,
                                                           "unimplemented_opcode")]
    assert ask(tm.encode_command(0xEE)) == [tm.ModuleError(0xEE, 0x0101, "invalid_opcode")]
    assert ask(tm.encode_command(0x63) + tm.encode_command(0x67) + tm.encode_command(0x61)
               + tm.encode_command(0x62, b"\x00")) == [
        tm.Response(0x63, 0, b"\x00\x05"), tm.Response(0x67, 0, b"\x0d"),
        tm.Response(0x61, 0, b"\x01\x01"), tm.Response(0x62, 0, b"\x00\x07\xd0")]
    assert dec.errors == 0


def test_bootloader_answers_only_version_and_boot() -> None:
    reader = ThingMagicReader(tags=_population(), in_bootloader=True, seed=5)
    dec = tm.Decoder()

    def ask(frame: bytes) -> list[Message | FrameError]:
        return dec.feed(b"".join(reader.handle(frame)))

    assert ask(tm.encode_read_tag_single()) == [tm.ModuleError(0x21, 0x0101, "invalid_opcode")]
    (boot,) = ask(b"\xff" * 8 + tm.encode_boot_firmware())  # after a wake-up preamble
    assert isinstance(boot, tm.Version) and boot.opcode == 0x04
    assert ask(tm.encode_read_tag_single()) == [TagRead(epc=EPCS[0].hex().upper(), pc=0x3000)]
    assert ask(tm.encode_boot_firmware()) == [tm.ModuleError(0x04, 0x0101, "invalid_opcode")]


def test_streaming_follows_the_injected_clock() -> None:
    clock = ManualClock()
    reader = ThingMagicReader(tags=_population(), clock=clock, round_interval_s=0.1, seed=6)
    assert reader.handle(tm.encode_start_continuous_read()) == [
        tm.encode_continuous_read_started()]
    assert reader.tick(clock.now()) == []
    clock.advance(0.1)
    first = reader.tick(clock.now())
    assert len(first) == 6  # one round on antenna 1: the six even-indexed tags
    assert reader.tick(clock.now()) == []
    clock.advance(0.35)
    assert len(reader.tick(clock.now())) == 3 * 6
    clock.advance(3600)  # a clock jump is capped, not replayed in full
    assert len(reader.tick(clock.now())) == 50 * 6
    assert reader.handle(tm.encode_stop_continuous_read()) == [
        tm.encode_continuous_read_stopped()]
    clock.advance(1)
    assert reader.tick(clock.now()) == []
    out = tm.Decoder().feed(b"".join(first))
    assert [m.device_ts_ms for m in out] == [100] * 6  # type: ignore[attr-defined]


def test_same_seed_same_output() -> None:
    def run(seed: int) -> list[bytes]:
        clock = ManualClock()
        reader = ThingMagicReader(tags=_population(0.5), clock=clock, seed=seed)
        frames = reader.handle(tm.encode_start_continuous_read())
        for _ in range(10):
            clock.advance(0.05)
            frames += reader.tick(clock.now())
        return frames

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_demo_reader_serves_all_ports() -> None:
    clock = ManualClock()
    reader = ThingMagicReader.demo(seed=1, clock=clock)
    reader.handle(tm.encode_start_continuous_read())
    frames: list[bytes] = []
    for _ in range(8):
        clock.advance(0.05)
        frames += reader.tick(clock.now())
    reads = [m for m in tm.Decoder().feed(b"".join(frames)) if isinstance(m, TagRead)]
    assert {r.antenna for r in reads} == {1, 2, 3, 4}
    assert len({r.epc for r in reads}) > 25
