"""Impinj R2000 "0xA0" codec: the standard codec test set plus the shared captures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import r2000
from protocols.messages import TagRead
from tests.codec_harness import (
    capture_lines,
    check_bytewise_equals_oneshot,
    check_garbage_between,
    check_never_raises,
    check_prefixes_incomplete,
    check_roundtrip,
    errors,
    feed_all,
)

EPC = bytes.fromhex("E28068940000501E5A7C1234")

# (id, frame, expected message) -- device -> host frames
CATALOGUE = [
    ("tag_ant2", r2000.encode_tag(1, epc=EPC, antenna=2, rssi_dbm=-47),
     TagRead(epc=EPC.hex().upper(), antenna=2, rssi_dbm=-47.0, pc=0x3000,
             frequency_khz=865_000, reader_address=1)),
    ("tag_fast_switch_freq9", r2000.encode_tag(3, epc=b"\x01\x02", antenna=4, rssi_dbm=-80,
                                               freq_index=9, cmd=0x8A),
     TagRead(epc="0102", antenna=4, rssi_dbm=-80.0, pc=0x0800, frequency_khz=903_000,
             reader_address=3)),
    ("tag_epc_with_head_byte", r2000.encode_tag(1, epc=b"\xa0" * 12, antenna=1, rssi_dbm=-30,
                                                cmd=0x8B),
     TagRead(epc="A0" * 12, antenna=1, rssi_dbm=-30.0, pc=0x3000, frequency_khz=865_000,
             reader_address=1)),
    ("inventory_done", r2000.encode_inventory_done(1, antenna=1, read_rate=29, total_read=1),
     r2000.InventoryDone(1, 0x89, total_read=1, antenna=1, read_rate=29)),
    ("fast_switch_done", r2000.encode_fast_switch_done(1, total_read=300, duration_ms=1200),
     r2000.InventoryDone(1, 0x8A, total_read=300, duration_ms=1200)),
    ("error_antenna_missing", r2000.encode_error(1, 0x89, 0x22),
     r2000.ReaderError(1, 0x89, 0x22, "antenna_missing_error")),
    ("error_fast_switch_ant3", r2000.encode_error(1, 0x8A, 0x22, antenna=3),
     r2000.ReaderError(1, 0x8A, 0x22, "antenna_missing_error", antenna=3)),
    ("firmware", r2000.encode_firmware_version(1, 1, 9), r2000.FirmwareVersion(1, 1, 9)),
    ("output_power_all", r2000.encode_output_power(1, (30,)), r2000.OutputPower(1, (30,))),
    ("output_power_per_ant", r2000.encode_output_power(1, (30, 29, 28, 27)),
     r2000.OutputPower(1, (30, 29, 28, 27))),
    ("set_ok", r2000.encode_command_result(1, 0x74), r2000.CommandResult(1, 0x74, 0x10)),
    ("set_fail", r2000.encode_command_result(1, 0x76, 0x48),
     r2000.ReaderError(1, 0x76, 0x48, "parameter_invalid_output_power_out_of_range")),
    ("other_reply", r2000.encode_frame(1, 0x7B, b"\x01\x20"),
     r2000.Response(1, 0x7B, b"\x01\x20")),
]

# host -> device commands, decoded by the device role
COMMANDS = [
    ("real_time_inventory", r2000.encode_real_time_inventory(1, 1), 0x89, b"\x01"),
    ("custom_session", r2000.encode_custom_session_inventory(1, session=1, target=0, repeat=2),
     0x8B, b"\x01\x00\x02"),
    ("fast_switch", r2000.encode_fast_switch_inventory(1, antennas=((1, 1), (3, 2))), 0x8A,
     bytes.fromhex("0001 0202 ff00 ff00 0001")),
    ("get_firmware", r2000.encode_get_firmware_version(1), 0x72, b""),
    ("set_work_antenna", r2000.encode_set_work_antenna(1, 1), 0x74, b"\x00"),
    ("get_output_power", r2000.encode_get_output_power(1), 0x77, b""),
    ("set_output_power", r2000.encode_set_output_power(1, 30), 0x76, b"\x1e"),
]


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_roundtrip(frame: bytes, expected: object) -> None:
    check_roundtrip(r2000.Decoder, frame, expected)  # type: ignore[arg-type]
    check_prefixes_incomplete(r2000.Decoder, frame)


@pytest.mark.parametrize(("frame", "cmd", "data"), [c[1:] for c in COMMANDS],
                         ids=[c[0] for c in COMMANDS])
def test_device_role_decodes_commands(frame: bytes, cmd: int, data: bytes) -> None:
    (msg,) = feed_all(lambda: r2000.Decoder("device"), frame)
    assert isinstance(msg, r2000.Command)
    assert (msg.cmd, msg.data, msg.address) == (cmd, data, 1)
    check_prefixes_incomplete(lambda: r2000.Decoder("device"), frame)


def test_bytewise_equals_oneshot() -> None:
    stream = b"\x00\x11" + b"".join(c[1] for c in CATALOGUE) + bytes.fromhex(
        "A0 0A 01 89 00 00 1D 00 00 00 01 BC") + CATALOGUE[0][1]
    check_bytewise_equals_oneshot(r2000.Decoder, stream)


MALFORMED = [
    ("bad_checksum", bytes.fromhex("A0 0A 01 89 00 00 1D 00 00 00 01 BC"), "bad_checksum"),
    ("len_too_small", bytes.fromhex("A0 02 01 89"), "bad_length"),
    ("len_zero", bytes.fromhex("A0 00"), "bad_length"),
    ("garbage_only", b"\x01\x02\x03", "garbage"),
    ("tag_epc_length_mismatch",  # PC says 6 words, only 2 bytes follow; checksum is right
     r2000.encode_frame(1, 0x89, bytes.fromhex("01 3000 0102 52")), "bad_field"),
    # a frame cut short runs into the next one: its checksum fails and the decoder resyncs on
    # the next head byte inside it, so the following good frame is not lost
    ("truncated_then_good", bytes.fromhex("A0 13 01 89 01 30 00 E2"), "bad_checksum"),
]


@pytest.mark.parametrize(("data", "kind"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed(data: bytes, kind: str) -> None:
    good = CATALOGUE[0][1]
    out = feed_all(r2000.Decoder, data + good)
    errs = errors(out)
    assert errs and errs[0].kind == kind and errs[0].protocol == "r2000"
    assert out[-1] == CATALOGUE[0][2], "the good frame after the bad input must still decode"


def test_truncated_at_end_of_stream_is_reported_by_flush() -> None:
    dec = r2000.Decoder()
    assert dec.feed(bytes.fromhex("A0 13 01 89 01 30 00 E2")) == []
    (err,) = dec.flush()
    assert err.kind == "truncated" and err.raw == bytes.fromhex("A0 13 01 89 01 30 00 E2")


def test_buffer_is_capped() -> None:
    dec = r2000.Decoder()
    # a head byte with a plausible length, then a never-ending trickle with no complete frame
    out = dec.feed(b"\xa0\xff" + b"\x00" * 200)
    assert out == [] and dec.buffered == 202
    big = r2000.MAX_BUFFER + 10
    out = r2000.Decoder().feed(b"\x00" * big)
    assert [e.kind for e in errors(out)] == ["garbage"] and len(out[0].raw) == big


# -- real frames from shared/captures --------------------------------------------------------
def _capture_frames() -> list[tuple[str, bytes]]:
    frames = []
    for line in capture_lines("rfid_r2000_0xA0.txt"):
        direction, hexpart = line[0], line[1:]
        frames.append((direction, bytes.fromhex(hexpart)))
    return frames


def test_capture_file_decodes_as_documented() -> None:
    frames = _capture_frames()
    host_cmds = [f for d, f in frames if d == ">"]
    replies = [f for d, f in frames if d == "<"]
    cmds = feed_all(lambda: r2000.Decoder("device"), b"".join(host_cmds))
    assert [(c.cmd, c.data) for c in cmds] == [(0x72, b""), (0x74, b"\x00"), (0x89, b"\x01")]
    out = feed_all(r2000.Decoder, b"".join(replies))
    assert out[0] == r2000.FirmwareVersion(1, 1, 9)
    assert out[1] == r2000.CommandResult(1, 0x74, 0x10)
    assert out[2] == TagRead(epc="E28068940000501E5A7C1234", antenna=2, rssi_dbm=-47.0,
                             pc=0x3000, frequency_khz=865_000, reader_address=1)
    # the round-complete frame printed in the source doc fails its checksum (0xAE expected)
    assert out[3].kind == "bad_checksum" and "0xAE" in out[3].detail
    assert len(out) == 4


def test_encoders_match_capture_bytes() -> None:
    assert r2000.encode_get_firmware_version(1) == bytes.fromhex("A0 03 01 72 EA")
    assert r2000.encode_set_work_antenna(1, 1) == bytes.fromhex("A0 04 01 74 00 E7")
    assert r2000.encode_real_time_inventory(1, 1) == bytes.fromhex("A0 04 01 89 01 D1")
    assert r2000.encode_error(1, 0x89, 0x22) == bytes.fromhex("A0 04 01 89 22 B0")


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        r2000.encode_tag(1, epc=b"\x01\x02\x03")
    with pytest.raises(ValueError):
        r2000.encode_set_work_antenna(1, 5)
    with pytest.raises(ValueError):
        r2000.encode_set_output_power(1, 40)
    with pytest.raises(ValueError):
        r2000.Decoder("sideways")  # type: ignore[arg-type]


# -- property tests ----------------------------------------------------------------------------
_frames = st.lists(st.sampled_from([c[1] for c in CATALOGUE]), min_size=1, max_size=8)
_garbage = st.binary(max_size=40).map(lambda b: b.replace(b"\xa0", b""))


@given(frames=_frames, data=st.data())
def test_garbage_between_frames(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_garbage) for _ in frames]
    check_garbage_between(r2000.Decoder, frames, garbage)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_arbitrary_bytes_never_raise(blob: bytes, chunk: int) -> None:
    check_never_raises(r2000.Decoder, blob, chunk)
