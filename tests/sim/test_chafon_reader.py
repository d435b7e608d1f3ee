"""The simulated Chafon reader (UHFReader18 and UHFReader288M) read through a real pty pair (and
TCP) with pyserial and the host-role codec: what a driver decodes is what the device sent."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import serial

from firmware_sim import Faults, PtyLink, TcpLink
from firmware_sim.chafon_reader import ST_ILLEGAL_COMMAND, ST_PARAMETER_ERROR, ChafonReader
from firmware_sim.r2000_reader import SimTag
from protocols import chafon as cf
from protocols._base import FrameError, Message

EPCS = [bytes.fromhex(f"E2801170000C{i:012X}") for i in range(12)]
Items = list[Message | FrameError]


def _population(prob: float = 1.0) -> list[SimTag]:
    return [SimTag(epc=e, antennas=frozenset({1 + i % 3}), rssi_dbm=-40 - i,
                   read_probability=prob) for i, e in enumerate(EPCS)]


def read_until(port: serial.SerialBase, dec: cf.Decoder, stop: Callable[[Items], bool], *,
               timeout: float = 10.0) -> Items:
    out: Items = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop(out):
        out += dec.feed(port.read(port.in_waiting or 1))
    return out


def _rounds(n: int) -> Callable[[Items], bool]:
    """n inventory rounds ended (done / error status) or n other replies."""
    def stop(out: Items) -> bool:
        ends = [m for m in out if isinstance(m, cf.InventoryStatus | cf.ReaderError
                                             | cf.ReaderInfo | cf.CommandResult)]
        return len(ends) >= n
    return stop


def _tags(out: Items) -> list[cf.ChafonTagRead]:
    return [m for m in out if isinstance(m, cf.ChafonTagRead)]


def test_288m_reader_info_power_and_inventory_per_antenna() -> None:
    sim = ChafonReader(variant="288", tags=_population(), connected_antennas=frozenset({1, 2}),
                       seed=1)
    with PtyLink(sim) as link, serial.Serial(link.path, 57600, timeout=0.05) as port:
        dec = cf.Decoder()
        port.write(cf.encode_get_reader_info() + cf.encode_set_power(power_dbm=20)
                   + cf.encode_inventory_288(antenna=2) + cf.encode_inventory_288(antenna=3))
        out = read_until(port, dec, _rounds(4))
    info = next(m for m in out if isinstance(m, cf.ReaderInfo))
    assert info.model == "UHFReader288M" and info.reader_type == 0x0C and info.power_dbm == 30
    assert cf.CommandResult(0, 0x2F, "set_power") in out and sim.power_dbm == 20
    tags = _tags(out)
    # antenna 2 sees tags 1, 4, 7, 10; every read carries antenna 2 and an RSSI byte
    assert {t.epc for t in tags} == {EPCS[i].hex().upper() for i in (1, 4, 7, 10)}
    assert {t.antenna for t in tags} == {2}
    assert all(t.rssi_raw is not None and 0 < t.rssi_raw < 128 for t in tags)
    # antenna 3 is not connected
    assert cf.ReaderError(0, 0x01, 0xF8, "antenna_error") in out
    assert sim.inventories == [2, 3] and dec.errors == 0


def test_18_reader_answers_bare_inventory_with_epcs_only() -> None:
    sim = ChafonReader(variant="18", tags=_population(), seed=2)
    with PtyLink(sim) as link, serial.Serial(link.path, 57600, timeout=0.05) as port:
        dec = cf.Decoder()
        port.write(cf.encode_get_reader_info() + cf.encode_inventory_18())
        out = read_until(port, dec, _rounds(2))
    info = next(m for m in out if isinstance(m, cf.ReaderInfo))
    assert info.model == "UHFReader18"
    tags = _tags(out)
    assert {t.epc for t in tags} == {EPCS[i].hex().upper() for i in (0, 3, 6, 9)}
    assert all(t.antenna is None and t.rssi_raw is None for t in tags)
    status = [m for m in out if isinstance(m, cf.InventoryStatus)]
    assert [(s.variant, s.state) for s in status] == [("18", "done")]


@pytest.mark.parametrize("variant", ["18", "288"])
def test_many_tags_are_split_into_more_frames(variant: str) -> None:
    tags = [SimTag(epc=e) for e in EPCS]
    sim = ChafonReader(variant=variant, tags=tags, max_tags_per_frame=5, seed=3)  # type: ignore[arg-type]
    with PtyLink(sim) as link, serial.Serial(link.path, 57600, timeout=0.05) as port:
        dec = cf.Decoder(variant=variant)  # type: ignore[arg-type]
        port.write(cf.encode_inventory_18() if variant == "18" else cf.encode_inventory_288())
        out = read_until(port, dec, _rounds(1))
    assert [t.epc for t in _tags(out)] == [e.hex().upper() for e in EPCS]
    # 12 tags at 5 per frame: two "more" frames (tags only), then the done frame
    assert len(sim.sent) == 3
    assert next(m for m in out if isinstance(m, cf.InventoryStatus)).tag_count == 2


def test_address_filter_and_error_statuses() -> None:
    sim = ChafonReader(variant="288", address=5, tags=_population(), seed=4)
    with PtyLink(sim) as link, serial.Serial(link.path, 57600, timeout=0.05) as port:
        dec = cf.Decoder()
        port.write(cf.encode_get_reader_info(6)  # another reader's address: no answer
                   + cf.encode_command(5, 0x40, b"\x01")  # buzzer: not simulated
                   + cf.encode_set_power(5, 30)[:3] + b"\x1f"  # bad CRC: ignored
                   + cf.encode_command(5, 0x2F, b"\x1f")  # 31 dBm: out of range
                   + cf.encode_command(5, 0x01, b"\x04\x00")  # truncated 288M parameters
                   + cf.encode_get_reader_info(5))
        out = read_until(port, dec, _rounds(4))
    errors = [(m.cmd, m.status) for m in out if isinstance(m, cf.ReaderError)]
    assert errors == [(0x40, ST_ILLEGAL_COMMAND), (0x2F, ST_PARAMETER_ERROR),
                      (0x01, ST_PARAMETER_ERROR)]
    assert [m.address for m in out if isinstance(m, cf.ReaderInfo)] == [5]
    assert [c.cmd for c in sim.commands] == [0x40, 0x2F, 0x01, 0x21]
    assert sim.power_dbm == 30 and sim.inventories == []


def test_faults_leave_every_clean_frame_decodable() -> None:
    sim = ChafonReader(variant="288", tags=_population(), connected_antennas=frozenset({1}),
                       seed=5, faults=Faults(garbage=0.3, bad_checksum=0.2, split=0.5))
    with PtyLink(sim) as link, serial.Serial(link.path, 57600, timeout=0.05) as port:
        dec = cf.Decoder()
        out: Items = []
        for _ in range(20):
            port.write(cf.encode_inventory_288(antenna=1))
            out += read_until(port, dec, _rounds(1), timeout=0.5)
        out += dec.feed(port.read(port.in_waiting)) + dec.flush()
    want = [m for f in sim.clean_frames() for m in cf.Decoder("host", "288").feed(f)]
    got = [m for m in out if not isinstance(m, FrameError)]
    assert got == want
    assert sim.injector.counts["bad_checksum"] > 0 and sim.injector.counts["garbage"] > 0
    assert any(isinstance(e, FrameError) for e in out)


def test_tcp_link_and_demo() -> None:
    sim = ChafonReader.demo(seed=7)
    assert isinstance(sim, ChafonReader) and len(sim.tags) == 50
    with TcpLink(sim) as link, serial.serial_for_url(link.url, timeout=0.05) as port:
        dec = cf.Decoder()
        for ant in (1, 2, 3, 4):
            port.write(cf.encode_inventory_288(antenna=ant))
        out = read_until(port, dec, _rounds(4))
    seen = {(t.epc, t.antenna) for t in _tags(out)}
    expected = {(tag.epc.hex().upper(), a) for tag in sim.tags for a in tag.antennas}
    # every read is of a tag on the antenna it names; with p >= 0.7 most tags answer
    assert seen <= expected and len(seen) > len(expected) // 2
    assert sim.inventories == [1, 2, 3, 4]
