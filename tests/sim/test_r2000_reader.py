"""The simulated R2000 reader read through a real pty pair (and TCP) with pyserial and the
host-role codec: what the driver decodes is exactly what the device sent."""

from __future__ import annotations

import time

import serial

from firmware_sim import Faults, PtyLink, TcpLink
from firmware_sim.r2000_reader import R2000Reader, SimTag
from protocols import r2000
from protocols._base import FrameError, Message

EPCS = [bytes.fromhex(f"E2806894000050{i:010X}") for i in range(20)]


def _population(prob: float = 1.0) -> list[SimTag]:
    return [SimTag(epc=e, antennas=frozenset({1 + i % 2}), rssi_dbm=-40 - i,
                   read_probability=prob) for i, e in enumerate(EPCS)]


def read_until(port: serial.SerialBase, dec: r2000.Decoder, *, done: int,
               timeout: float = 10.0) -> list[Message | FrameError]:
    """Read and decode until ``done`` inventory-done/error frames arrived (or time out)."""
    out: list[Message | FrameError] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out += dec.feed(port.read(port.in_waiting or 1))
        if sum(isinstance(m, r2000.InventoryDone | r2000.ReaderError) for m in out) >= done:
            break
    return out


def test_inventory_over_pty_reads_every_tag_on_the_antenna() -> None:
    reader = R2000Reader(tags=_population(), seed=1)
    with PtyLink(reader) as link, serial.Serial(link.path, 115200, timeout=0.05) as port:
        dec = r2000.Decoder()
        port.write(r2000.encode_get_firmware_version(1))
        port.write(r2000.encode_set_work_antenna(1, 2))
        port.write(r2000.encode_real_time_inventory(1, 1))
        out = read_until(port, dec, done=1)
    assert out[0] == r2000.FirmwareVersion(1, 1, 9)
    assert out[1] == r2000.CommandResult(1, 0x74, 0x10)
    tags = [m for m in out if m.type == "tag_read"]
    # antenna 2 sees the odd-indexed tags
    assert sorted(t.epc for t in tags) == sorted(e.hex().upper() for e in EPCS[1::2])
    assert all(t.antenna == 2 for t in tags)
    done = out[-1]
    assert isinstance(done, r2000.InventoryDone) and done.total_read == len(tags) == 10
    assert dec.errors == 0


def test_faults_over_pty_lose_only_the_corrupted_frames() -> None:
    faults = Faults(split=0.3, garbage=0.3, bad_checksum=0.1)
    reader = R2000Reader(tags=_population(), seed=7, faults=faults)
    with PtyLink(reader) as link, serial.Serial(link.path, 115200, timeout=0.05) as port:
        dec = r2000.Decoder()
        for ant in (1, 2, 1, 2):
            port.write(r2000.encode_set_work_antenna(1, ant))
            port.write(r2000.encode_real_time_inventory(1, 2))
        out = read_until(port, dec, done=4)
    sent_ok = [f for f in reader.clean_frames()]
    decoded = [m for m in out if isinstance(m, Message)]
    # every intact frame the device sent decodes, in order, to the same message
    assert decoded == [m for f in sent_ok for m in r2000.Decoder().feed(f)]
    corrupted = sum(s.corrupted for s in reader.sent)
    assert reader.injector.counts["garbage"] > 0 and corrupted > 0
    assert dec.errors >= corrupted  # each corrupted frame is reported, never silently dropped


def test_unconnected_antenna_answers_antenna_missing() -> None:
    reader = R2000Reader(tags=_population(), connected_antennas=frozenset({1}))
    with PtyLink(reader) as link, serial.Serial(link.path, 115200, timeout=0.05) as port:
        dec = r2000.Decoder()
        port.write(r2000.encode_set_work_antenna(1, 3) + r2000.encode_real_time_inventory(1))
        out = read_until(port, dec, done=1)
    assert out[-1] == r2000.ReaderError(1, 0x89, 0x22, "antenna_missing_error")


def test_fast_switch_inventory_over_tcp() -> None:
    reader = R2000Reader(tags=_population(), seed=3)
    with TcpLink(reader) as link, serial.serial_for_url(link.url, timeout=0.05) as port:
        dec = r2000.Decoder()
        port.write(r2000.encode_fast_switch_inventory(1, antennas=((1, 1), (2, 1))))
        out = read_until(port, dec, done=1)
    tags = [m for m in out if m.type == "tag_read"]
    assert {t.epc for t in tags} == {e.hex().upper() for e in EPCS}
    assert {t.antenna for t in tags} == {1, 2}
    assert out[-1].type == "inventory_done" and out[-1].total_read == 20


def test_same_seed_same_output() -> None:
    def run(seed: int) -> list[bytes]:
        reader = R2000Reader(tags=_population(0.5), seed=seed)
        return reader.handle(r2000.encode_real_time_inventory(1, 4)) + reader.handle(
            r2000.encode_real_time_inventory(1, 4))

    assert run(5) == run(5)
    assert run(5) != run(6)
