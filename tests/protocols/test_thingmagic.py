"""ThingMagic Mercury codec: the standard codec test set plus the shared captures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import thingmagic as tm
from protocols._crc import crc16_gen2
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
    messages,
)

EPC = bytes.fromhex("E28068940000501E5A7C1234")
CAPTURE_EPC = bytes.fromhex("000000000000000000001545")
CAPTURE_REC = tm.TagRecord(epc=CAPTURE_EPC, read_count=1, rssi_dbm=-51, antenna=1,
                           frequency_khz=919_600, timestamp_ms=10, gpio=0x0F)


def _read(epc: bytes, **kw: object) -> TagRead:
    return TagRead(epc=epc.hex().upper(), **kw)  # type: ignore[arg-type]


# (id, frame, expected message) -- module -> host frames
CATALOGUE = [
    ("version", tm.encode_version(),
     tm.Version(0x03, "07.10.23.00", "01.00.00.03", "2014-10-07", "01.07.02.09", (5,))),
    ("boot_firmware_version", tm.encode_version(
        bootloader="12.34.56.78", hardware="18.00.00.02", firmware_date="2020-01-31",
        firmware_version="01.0B.03.01", protocols=(3, 5, 7), opcode=0x04),
     tm.Version(0x04, "12.34.56.78", "18.00.00.02", "2020-01-31", "01.0B.03.01", (3, 5, 7))),
    ("ack_set_region", tm.encode_ack(0x97), tm.Ack(0x97, "set_region")),
    ("ack_clear_buffer", tm.encode_ack(0x2A), tm.Ack(0x2A, "clear_tag_id_buffer")),
    ("single_read_legacy", tm.encode_single_read(EPC), _read(EPC, pc=0x3000)),
    ("single_read_umi_pc", tm.encode_single_read(EPC, pc=0x3400), _read(EPC, pc=0x3400)),
    ("single_read_64bit", tm.encode_single_read(b"\x01\x02\x03\x04\x05\x06\x07\x08"),
     _read(b"\x01\x02\x03\x04\x05\x06\x07\x08", pc=0x2000)),
    ("stream_all_metadata", tm.encode_stream_tag(CAPTURE_REC),
     _read(CAPTURE_EPC, antenna=1, rssi_dbm=-51.0, pc=0x3000, frequency_khz=919_600,
           read_count=1, device_ts_ms=10)),
    ("stream_rssi_antenna_only", tm.encode_stream_tag(
        tm.TagRecord(epc=EPC, rssi_dbm=-72, antenna=3), metadata_flags=0x0006),
     _read(EPC, antenna=3, rssi_dbm=-72.0, pc=0x3000)),
    ("stream_positive_rssi_count_ts", tm.encode_stream_tag(
        tm.TagRecord(epc=EPC, rssi_dbm=5, read_count=200, timestamp_ms=0xDEADBEEF),
        metadata_flags=0x0013),
     _read(EPC, rssi_dbm=5.0, read_count=200, device_ts_ms=0xDEADBEEF, pc=0x3000)),
    ("stream_no_metadata", tm.encode_stream_tag(tm.TagRecord(epc=EPC), metadata_flags=0),
     _read(EPC, pc=0x3000)),
    ("stream_embedded_data", tm.encode_stream_tag(
        tm.TagRecord(epc=EPC, antenna=2, data=b"\xe2\x80\x11\x05"), metadata_flags=0x0084),
     _read(EPC, antenna=2, pc=0x3000)),
    ("stream_iso18k6b_no_pc", tm.encode_stream_tag(
        tm.TagRecord(epc=b"\x11" * 8, protocol=0x03, tag_crc=0xABCD), metadata_flags=0x0044),
     _read(b"\x11" * 8, antenna=1)),
    ("stream_epc_full_of_head_bytes", tm.encode_stream_tag(
        tm.TagRecord(epc=b"\xff" * 12, antenna=15, rssi_dbm=-1)),
     _read(b"\xff" * 12, antenna=15, rssi_dbm=-1.0, pc=0x3000, frequency_khz=915_000,
           read_count=1, device_ts_ms=0)),
    ("stream_end", tm.encode_stream_end(), tm.StreamEnd(0x001B, 0x01FF, b"")),
    ("tags_found", tm.encode_tags_found(7), tm.TagsFound(0x22, 7)),
    ("tags_found_wide", tm.encode_tags_found(70_000), tm.TagsFound(0x22, 70_000)),
    ("tag_buffer_one", tm.encode_tag_buffer([tm.TagRecord(epc=EPC, antenna=4)],
                                            metadata_flags=0x0004),
     _read(EPC, antenna=4, pc=0x3000)),
    ("tag_buffer_empty", tm.encode_tag_buffer([]), tm.TagsFound(0x29, 0)),
    ("continuous_started", tm.encode_continuous_read_started(), tm.ContinuousRead(True, 0x22)),
    ("continuous_stopped", tm.encode_continuous_read_stopped(), tm.ContinuousRead(False)),
    ("no_tags_found", tm.encode_error(0x21, 0x0400), tm.ModuleError(0x21, 0x0400,
                                                                    "no_tags_found")),
    ("error_with_data", tm.encode_error(0x22, 0x0503, b"\x10\x00\x1b"),
     tm.ModuleError(0x22, 0x0503, "antenna_not_connected", b"\x10\x00\x1b")),
    ("unknown_status", tm.encode_error(0x03, 0x0ABC), tm.ModuleError(0x03, 0x0ABC, "0x0ABC")),
    ("other_reply", tm.encode_reply(0x72, b"\x1e"), tm.Response(0x72, 0, b"\x1e")),
]

# host -> module commands, decoded by the device role: (id, frame, opcode, data)
COMMANDS = [
    ("version", tm.encode_get_version(), 0x03, b""),
    ("boot_firmware", tm.encode_boot_firmware(), 0x04, b""),
    ("set_region_name", tm.encode_set_region("north_america"), 0x97, b"\x0d"),
    ("set_region_code", tm.encode_set_region(0x02), 0x97, b"\x02"),
    ("set_tag_protocol", tm.encode_set_tag_protocol(), 0x93, b"\x00\x05"),
    ("set_antenna", tm.encode_set_antenna(1), 0x91, b"\x01\x01"),
    ("set_antenna_bistatic", tm.encode_set_antenna(2, 3), 0x91, b"\x02\x03"),
    ("set_read_power", tm.encode_set_read_power(27), 0x92, b"\x0a\x8c"),
    ("set_read_power_fraction", tm.encode_set_read_power(5.5), 0x92, b"\x02\x26"),
    ("read_single", tm.encode_read_tag_single(1000), 0x21, b"\x03\xe8"),
    ("read_multiple", tm.encode_read_tag_multiple(500), 0x22, b"\x00\x00\x00\x01\xf4"),
    ("start_continuous", tm.encode_start_continuous_read(), 0x2F,
     bytes.fromhex("0000 01 22 0000 05 07 22 10 001B 03E8 01FF")),
    ("stop_continuous", tm.encode_stop_continuous_read(), 0x2F, b"\x00\x00\x02"),
    ("get_tag_buffer", tm.encode_get_tag_buffer(), 0x29, b"\x01\xff\x00"),
    ("clear_tag_buffer", tm.encode_clear_tag_buffer(), 0x2A, b""),
]


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_roundtrip(frame: bytes, expected: object) -> None:
    check_roundtrip(tm.Decoder, frame, expected)  # type: ignore[arg-type]
    check_prefixes_incomplete(tm.Decoder, frame)


@pytest.mark.parametrize(("frame", "opcode", "data"), [c[1:] for c in COMMANDS],
                         ids=[c[0] for c in COMMANDS])
def test_device_role_decodes_commands(frame: bytes, opcode: int, data: bytes) -> None:
    (msg,) = feed_all(lambda: tm.Decoder("device"), frame)
    assert isinstance(msg, tm.Command)
    assert (msg.opcode, msg.data) == (opcode, data)
    assert msg.name == tm._OP_NAMES[opcode]
    check_prefixes_incomplete(lambda: tm.Decoder("device"), frame)


def test_device_role_skips_wakeup_preamble() -> None:
    """The Mercury API wakes a sleeping module with a run of FF bytes before a command."""
    out = feed_all(lambda: tm.Decoder("device"), b"\xff" * 16 + tm.encode_get_version())
    assert out == [tm.Command(0x03, "version", b"")]


def test_parse_continuous_read() -> None:
    start = feed_all(lambda: tm.Decoder("device"), tm.encode_start_continuous_read(0x0006))
    assert tm.parse_continuous_read(start[0].data) == (True, 0x0006)  # type: ignore[union-attr]
    assert tm.parse_continuous_read(b"\x00\x00\x02") == (False, 0)
    assert tm.parse_continuous_read(b"\x00\x00\x01\x22\x00\x00") is None
    assert tm.parse_continuous_read(b"") is None


def test_tag_buffer_yields_one_tag_read_per_record() -> None:
    recs = [tm.TagRecord(epc=bytes([i]) * 12, antenna=i, rssi_dbm=-40 - i) for i in (1, 2, 3)]
    dec = tm.Decoder()
    out = dec.feed(tm.encode_tag_buffer(recs, metadata_flags=0x0006))
    assert out == [_read(bytes([i]) * 12, antenna=i, rssi_dbm=float(-40 - i), pc=0x3000)
                   for i in (1, 2, 3)]
    assert (dec.messages, dec.errors) == (3, 0)


def test_tag_buffer_bad_tag_crc_reports_only_that_record() -> None:
    recs = [tm.TagRecord(epc=EPC, antenna=1), tm.TagRecord(epc=EPC, antenna=2, tag_crc=0x1234),
            tm.TagRecord(epc=EPC, antenna=3)]
    dec = tm.Decoder()
    out = dec.feed(tm.encode_tag_buffer(recs, metadata_flags=0x0004))
    assert out[0] == _read(EPC, antenna=1, pc=0x3000)
    assert isinstance(out[1], tm.FrameError) and out[1].kind == "bad_field"
    assert "record 2 of 3" in out[1].detail and "0x1234" in out[1].detail
    assert out[2] == _read(EPC, antenna=3, pc=0x3000)
    assert (dec.messages, dec.errors) == (2, 1)


def test_bytewise_equals_oneshot() -> None:
    bad = bytearray(tm.encode_stream_tag(CAPTURE_REC))
    bad[-1] ^= 0x01
    multi = tm.encode_tag_buffer([tm.TagRecord(epc=EPC), tm.TagRecord(epc=b"\xff" * 4)])
    stream = (b"\x00\x11" + b"".join(c[1] for c in CATALOGUE) + bytes(bad) + multi
              + CATALOGUE[0][1])
    check_bytewise_equals_oneshot(tm.Decoder, stream)


def _with_frame_crc(frame: bytes) -> bytes:
    """Re-frame a (tampered) reply so only its inner fields are wrong."""
    return tm.encode_reply(frame[2], frame[5:-2], (frame[3] << 8) | frame[4])


def _tamper(frame: bytes, index: int, value: int) -> bytes:
    b = bytearray(frame)
    b[index] = value
    return _with_frame_crc(bytes(b))


STREAM = tm.encode_stream_tag(CAPTURE_REC)
MALFORMED = [
    ("bad_checksum", STREAM[:-1] + bytes((STREAM[-1] ^ 0xFF,)), "bad_checksum"),
    ("bad_tag_crc", _tamper(STREAM, 41, 0x00), "bad_field"),  # EPC byte changed
    ("unknown_metadata_flag", _tamper(STREAM, 8, 0x03), "bad_field"),  # flags 0x03FF
    ("unknown_stream_response_type", _tamper(STREAM, 10, 0x07), "bad_field"),
    ("epc_bits_not_bytes", _tamper(STREAM, 28, 0x81), "bad_field"),
    ("record_overruns_frame", _tamper(STREAM, 27, 0x01), "bad_field"),
    ("bytes_after_record", tm.encode_reply(0x22, STREAM[5:-2] + b"\x00"), "bad_field"),
    ("single_read_wrong_pc_length",  # tag CRC implies a PC whose length field is not 6 words
     tm.encode_single_read(EPC, pc=0x2000), "bad_field"),
    ("single_read_odd_length", tm.encode_reply(0x21, b"\x01\x02\x03\x04\x05"), "bad_field"),
    ("read_multiple_odd_layout", tm.encode_reply(0x22, b"\x00\x00"), "bad_field"),
    ("tag_buffer_short", tm.encode_reply(0x29, b"\x01\xff"), "bad_field"),
    ("tag_buffer_trailing", tm.encode_reply(0x29, b"\x00\x00\x00\x00\x99"), "bad_field"),
    ("tag_buffer_record_cut", tm.encode_reply(0x29, b"\x00\x04\x00\x02\x11\x00"), "bad_field"),
    ("garbage_only", b"\x01\x02\x03", "garbage"),
    # a frame cut short runs into the next one: its CRC fails and the decoder resyncs on the
    # next head byte inside it, so the following good frame is not lost
    ("truncated_then_good", STREAM[:20], "bad_checksum"),
]


@pytest.mark.parametrize(("data", "kind"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed(data: bytes, kind: str) -> None:
    good = CATALOGUE[0][1]
    out = feed_all(tm.Decoder, data + good)
    errs = errors(out)
    assert errs and errs[0].kind == kind and errs[0].protocol == "thingmagic"
    assert out[-1] == CATALOGUE[0][2], "the good frame after the bad input must still decode"


def test_tampered_vectors_really_pass_the_frame_crc() -> None:
    """The bad_field rows must fail on the field, not on the frame CRC."""
    for name, data, kind in MALFORMED:
        if kind == "bad_field":
            (err,) = feed_all(tm.Decoder, data)
            assert err.kind == "bad_field", name


def test_truncated_at_end_of_stream_is_reported_by_flush() -> None:
    dec = tm.Decoder()
    assert dec.feed(STREAM[:20]) == []
    (err,) = dec.flush()
    assert err.kind == "truncated" and err.raw == STREAM[:20]


def test_stray_head_byte_does_not_hold_back_the_next_reply() -> None:
    """FF before a reply makes ``FF FF ...`` claim 262 bytes; the complete reply behind it
    decodes at once instead of waiting for them."""
    good = tm.encode_ack(0x97)
    dec = tm.Decoder()
    out = dec.feed(b"\xff" + good)
    assert [e.kind for e in errors(out)] == ["bad_length"] and out[0].raw == b"\xff"
    assert out[-1] == tm.Ack(0x97, "set_region") and dec.buffered == 0


def test_partial_frame_is_not_cut_by_an_inner_head_byte() -> None:
    """A stream record carries FF inside (metadata flags 0x01FF): while the record is still
    arriving, the inner FF must not be taken for a frame start."""
    dec = tm.Decoder()
    for i in range(1, len(STREAM)):
        assert dec.feed(STREAM[i - 1:i]) == []
    assert dec.feed(STREAM[-1:]) == [CATALOGUE[7][2]]


def test_flush_decodes_frames_behind_a_stalled_candidate() -> None:
    # an unknown opcode is not trusted by the look-ahead, so the stray FF stalls until flush
    other = tm.encode_reply(0xEE, b"\x01")
    dec = tm.Decoder()
    assert dec.feed(b"\xff" + other) == []
    out = dec.flush()
    assert [e.kind for e in errors(out)] == ["truncated"] and out[0].raw == b"\xff"
    assert out[-1] == tm.Response(0xEE, 0, b"\x01")


def test_buffer_is_capped() -> None:
    dec = tm.Decoder()
    out = dec.feed(b"\xff\xff" + b"\x00" * 200)  # Len 255 reply: 262 bytes expected
    assert out == [] and dec.buffered == 202
    big = tm.MAX_BUFFER + 10
    out = tm.Decoder().feed(b"\x00" * big)
    assert [e.kind for e in errors(out)] == ["garbage"] and len(out[0].raw) == big


def test_largest_frame_decodes() -> None:
    frame = tm.encode_reply(0x72, bytes(range(255)))
    assert len(frame) == tm.MAX_FRAME
    assert feed_all(tm.Decoder, frame) == [tm.Response(0x72, 0, bytes(range(255)))]


# -- real frames from shared/captures --------------------------------------------------------
def test_capture_file_decodes_as_documented() -> None:
    lines = capture_lines("rfid_thingmagic_mercury.txt")
    assert len(lines) == 17
    frames = [bytes.fromhex(ln) for ln in lines if not ln.startswith(">")]
    # Source A: the payload typed by hand (Len Opcode Data) equals the frame sent
    for typed, sent in zip(lines[0:12:3], lines[1:12:3], strict=True):
        payload = bytes.fromhex(typed[1:])
        assert tm.encode_command(payload[1], payload[2:]) == bytes.fromhex(sent)
    host = [frames[i] for i in (0, 2, 4, 6, 8, 11)]
    module = [frames[i] for i in (1, 3, 5, 7, 9, 10, 12)]
    cmds = feed_all(lambda: tm.Decoder("device"), b"".join(host))
    assert [(c.opcode, c.data) for c in cmds] == [  # type: ignore[attr-defined]
        (0x04, b""), (0x03, b""), (0x97, b"\x02"), (0x21, b"\x03\xe8"),
        (0x2F, bytes.fromhex("0000 01 22 0000 05 07 22 10 001B 03E8 01FF")),
        (0x2F, b"\x00\x00\x02")]
    out = feed_all(tm.Decoder, b"".join(module))
    version = ("07.10.23.00", "01.00.00.03", "2014-10-07", "01.07.02.09", (5,))
    assert out == [
        tm.Version(0x04, *version),  # boot firmware answers with the version block
        tm.Version(0x03, *version),
        tm.Ack(0x97, "set_region"),
        TagRead(epc="E200322FE20DF9311328B7E3", pc=0x3000),  # tag CRC D100 verified
        tm.ContinuousRead(True, 0x22),
        TagRead(epc="000000000000000000001545", antenna=1, rssi_dbm=-51.0, pc=0x3000,
                frequency_khz=919_600, read_count=1, device_ts_ms=10),
        tm.ContinuousRead(False),
    ]


def test_protocols_md_vectors() -> None:
    assert tm.encode_get_version() == bytes.fromhex("FF 00 03 1D 0C")
    assert tm.encode_boot_firmware() == bytes.fromhex("FF 00 04 1D 0B")
    assert tm.encode_command(0x63) == bytes.fromhex("FF 00 63 1D 6C")
    assert tm.encode_set_region(0x02) == bytes.fromhex("FF 01 97 02 4B BF")
    assert tm.encode_read_tag_single(1000) == bytes.fromhex("FF 02 21 03 E8 D5 09")
    assert tm.encode_error(0x21, 0x0400) == bytes.fromhex("FF 00 21 04 00 B4 83")
    assert feed_all(tm.Decoder, bytes.fromhex("FF 00 21 04 00 B4 83")) == [
        tm.ModuleError(0x21, 0x0400, "no_tags_found")]


def test_device_encoders_reproduce_capture_bytes() -> None:
    lines = capture_lines("rfid_thingmagic_mercury.txt")
    assert tm.encode_start_continuous_read() == bytes.fromhex(lines[12])
    assert tm.encode_continuous_read_started() == bytes.fromhex(lines[13])
    assert tm.encode_stream_tag(CAPTURE_REC) == bytes.fromhex(lines[14])
    assert tm.encode_stop_continuous_read() == bytes.fromhex(lines[15])
    assert tm.encode_continuous_read_stopped() == bytes.fromhex(lines[16])
    assert tm.encode_version(opcode=0x04) == bytes.fromhex(lines[2])
    assert tm.encode_ack(0x97) == bytes.fromhex(lines[8])
    assert tm.encode_single_read(bytes.fromhex("E200322FE20DF9311328B7E3")) == bytes.fromhex(
        lines[11])


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        tm.encode_set_read_power(40)
    with pytest.raises(ValueError):
        tm.encode_set_antenna(0)
    with pytest.raises(ValueError):
        tm.encode_start_continuous_read(0x0200)
    with pytest.raises(ValueError):
        tm.encode_stream_tag(tm.TagRecord(epc=b"\x01\x02\x03"))
    with pytest.raises(ValueError):
        tm.encode_stream_tag(tm.TagRecord(epc=EPC, rssi_dbm=-200))
    with pytest.raises(ValueError):
        tm.encode_version(bootloader="1.2")
    with pytest.raises(ValueError):
        tm.encode_error(0x21, 0)
    with pytest.raises(ValueError):
        tm.encode_command(0x22, bytes(256))
    with pytest.raises(KeyError):
        tm.encode_set_region("atlantis")
    with pytest.raises(ValueError):
        tm.Decoder("sideways")  # type: ignore[arg-type]


def test_cli_decode_frame_arg() -> None:
    assert tm.decode_frame_arg("FF 01 2F 00 00 02 30 E6") == [tm.ContinuousRead(False)]
    assert tm.decode_frame_arg("FF 00 03 1D 0C", sent_by="host") == [
        tm.Command(0x03, "version", b"")]


# -- property tests ----------------------------------------------------------------------------
@given(epc_words=st.integers(1, 31), pc_low=st.integers(0, 0x7FF), data=st.data())
def test_pc_is_recovered_from_the_tag_crc(epc_words: int, pc_low: int,
                                          data: st.DataObject) -> None:
    epc = data.draw(st.binary(min_size=2 * epc_words, max_size=2 * epc_words))
    pc = (epc_words << 11) | pc_low
    (msg,) = feed_all(tm.Decoder, tm.encode_single_read(epc, pc=pc))
    assert msg == TagRead(epc=epc.hex().upper(), pc=pc)
    assert tm._recover_pc(epc, crc16_gen2(pc.to_bytes(2, "big") + epc)) == pc


_frames = st.lists(st.sampled_from([c[1] for c in CATALOGUE]), min_size=1, max_size=8)
_garbage = st.binary(max_size=40).map(lambda b: b.replace(b"\xff", b""))


@given(frames=_frames, data=st.data())
def test_garbage_between_frames(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_garbage) for _ in frames]
    check_garbage_between(tm.Decoder, frames, garbage)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_arbitrary_bytes_never_raise(blob: bytes, chunk: int) -> None:
    check_never_raises(tm.Decoder, blob, chunk)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_arbitrary_bytes_never_raise_device_role(blob: bytes, chunk: int) -> None:
    check_never_raises(lambda: tm.Decoder("device"), blob, chunk)


@given(recs=st.lists(st.builds(
    tm.TagRecord, epc=st.binary(min_size=2, max_size=32).filter(lambda b: len(b) % 2 == 0),
    read_count=st.integers(0, 255), rssi_dbm=st.integers(-128, 127), antenna=st.integers(1, 15),
    frequency_khz=st.integers(0, 0xFFFFFF), timestamp_ms=st.integers(0, 0xFFFFFFFF)),
    min_size=1, max_size=5), flags=st.integers(0, tm.METADATA_ALL))
def test_stream_records_roundtrip(recs: list[tm.TagRecord], flags: int) -> None:
    out = feed_all(tm.Decoder, b"".join(tm.encode_stream_tag(r, metadata_flags=flags)
                                        for r in recs))
    assert len(messages(out)) == len(out) == len(recs)
    for rec, msg in zip(recs, out, strict=True):
        assert isinstance(msg, TagRead)
        assert msg.epc == rec.epc.hex().upper()
        assert msg.antenna == (rec.antenna if flags & 0x0004 else None)
        assert msg.rssi_dbm == (rec.rssi_dbm if flags & 0x0002 else None)
        assert msg.read_count == (rec.read_count if flags & 0x0001 else None)
        assert msg.frequency_khz == (rec.frequency_khz if flags & 0x0008 else None)
        assert msg.device_ts_ms == (rec.timestamp_ms if flags & 0x0010 else None)
