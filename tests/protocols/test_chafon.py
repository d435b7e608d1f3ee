"""Chafon UHFReader18 / UHFReader288M codec: the standard codec test set plus the captures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import chafon as cf
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
EPC2 = bytes.fromhex("300833B2DDD9014000000000")


def _tag(epc: bytes, **kw: object) -> cf.ChafonTagRead:
    return cf.ChafonTagRead(epc=epc.hex().upper(), **kw)  # type: ignore[arg-type]


# (id, frame, expected message) -- reader -> host frames that decode to exactly one message
CATALOGUE = [
    ("inv18_more", cf.encode_inventory_reply_18(0, [EPC], status=0x03),
     _tag(EPC, reader_address=0)),
    ("inv18_short_epc", cf.encode_inventory_reply_18(7, [b"\x01\x02"], status=0x03),
     _tag(b"\x01\x02", reader_address=7)),
    ("inv288_ant3_more", cf.encode_inventory_reply_288(0, [(EPC, 0x64)], antenna=3, status=3),
     _tag(EPC, antenna=3, reader_address=0, rssi_raw=0x64)),
    ("inv288_ant8", cf.encode_inventory_reply_288(1, [(EPC2, 0xC8)], antenna=8, status=3),
     _tag(EPC2, antenna=8, reader_address=1, rssi_raw=0xC8)),
    ("inv288_done_no_tags", cf.encode_inventory_reply_288(0, [], antenna=1, status=0x01),
     cf.InventoryStatus(0, 0x01, "done", 0, 1, "288")),
    ("inv288_timeout_no_tags", cf.encode_inventory_reply_288(0, [], antenna=2, status=0x02),
     cf.InventoryStatus(0, 0x02, "timeout", 0, 2, "288")),
    ("inv18_done_no_tags", cf.encode_inventory_reply_18(0, [], status=0x01),
     cf.InventoryStatus(0, 0x01, "done", 0, None, "18")),
    ("inv18_buffer_full_no_tags", cf.encode_inventory_reply_18(0, [], status=0x04),
     cf.InventoryStatus(0, 0x04, "buffer_full", 0, None, "18")),
    ("inventory_antenna_error", cf.encode_reply(0, 0x01, 0xF8),
     cf.ReaderError(0, 0x01, 0xF8, "antenna_error")),
    ("reader_info_288m", cf.encode_reader_info(0, firmware=(3, 2), reader_type=0x0C,
                                               protocols=0b10, band=0b0010, min_freq_index=0,
                                               max_freq_index=49, power_dbm=26,
                                               scan_time_100ms=10, extra=b"\x01\x00\x00\x00\x00"),
     cf.ReaderInfo(0, 3, 2, 0x0C, "UHFReader288M", ("6C",), 0b0010, "US", 0, 49, 26, 10,
                   b"\x01\x00\x00\x00\x00")),
    ("reader_info_18_eu", cf.encode_reader_info(0, reader_type=0x09, protocols=0b11,
                                                band=0b0100, min_freq_index=3,
                                                max_freq_index=14),
     cf.ReaderInfo(0, 1, 0, 0x09, "UHFReader18", ("6B", "6C"), 0b0100, "EU", 3, 14, 30, 10)),
    ("set_power_ok", cf.encode_command_result(0, 0x2F), cf.CommandResult(0, 0x2F, "set_power")),
    ("set_power_unknown_error", cf.encode_command_result(0, 0x2F, 0xFE),
     cf.ReaderError(0, 0x2F, 0xFE, "0xFE")),
    ("other_reply", cf.encode_reply(3, 0x22, 0x00, b"\x4e\x00"),
     cf.Response(3, 0x22, 0x00, b"\x4e\x00")),
    ("epc_full_of_len_bytes", cf.encode_inventory_reply_288(0, [(b"\xff" * 12, 0xFF)],
                                                            status=3),
     _tag(b"\xff" * 12, antenna=1, reader_address=0, rssi_raw=0xFF)),
]

# host -> reader commands, decoded by the device role: (id, frame, address, cmd, data)
COMMANDS = [
    ("inventory_18", cf.encode_inventory_18(), 0xFF, 0x01, b""),
    ("inventory_288_defaults", cf.encode_inventory_288(), 0xFF, 0x01,
     bytes.fromhex("0f0001000000008014")),
    ("inventory_288_options", cf.encode_inventory_288(q=2, session=1, mask_mem=2, target=1,
                                                      scan_time_100ms=3), 0xFF, 0x01,
     bytes.fromhex("020102000000018003")),
    ("inventory_288_ant4_mask", cf.encode_inventory_288(0, antenna=4, mask=b"\x30\x08",
                                                        mask_address=0x20), 0x00, 0x01,
     bytes.fromhex("0f 00 01 0020 10 3008 00 83 14")),
    ("get_reader_info", cf.encode_get_reader_info(), 0xFF, 0x21, b""),
    ("set_power", cf.encode_set_power(0, 26), 0x00, 0x2F, b"\x1a"),
]


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_roundtrip(frame: bytes, expected: object) -> None:
    check_roundtrip(cf.Decoder, frame, expected)  # type: ignore[arg-type]
    check_prefixes_incomplete(cf.Decoder, frame)


@pytest.mark.parametrize(("frame", "address", "cmd", "data"), [c[1:] for c in COMMANDS],
                         ids=[c[0] for c in COMMANDS])
def test_device_role_decodes_commands(frame: bytes, address: int, cmd: int,
                                      data: bytes) -> None:
    (msg,) = feed_all(lambda: cf.Decoder("device"), frame)
    assert isinstance(msg, cf.Command)
    assert (msg.address, msg.cmd, msg.data) == (address, cmd, data)
    check_prefixes_incomplete(lambda: cf.Decoder("device"), frame)


def test_multi_tag_frames_yield_one_tag_read_per_epc() -> None:
    dec = cf.Decoder()
    out = dec.feed(cf.encode_inventory_reply_288(0, [(EPC, 0x6B), (EPC2, 0x6C)], antenna=2,
                                                 status=0x03))
    assert out == [_tag(EPC, antenna=2, reader_address=0, rssi_raw=0x6B),
                   _tag(EPC2, antenna=2, reader_address=0, rssi_raw=0x6C)]
    assert (dec.messages, dec.errors) == (2, 0)


def test_round_ending_status_follows_the_tags() -> None:
    out = feed_all(cf.Decoder, cf.encode_inventory_reply_18(5, [EPC, EPC2], status=0x01))
    assert out == [_tag(EPC, reader_address=5), _tag(EPC2, reader_address=5),
                   cf.InventoryStatus(5, 0x01, "done", 2, None, "18")]


def test_tag_reads_are_tag_reads() -> None:
    from protocols.messages import TagRead

    (msg,) = feed_all(cf.Decoder, CATALOGUE[2][1])
    assert isinstance(msg, TagRead) and msg.type == "tag_read"
    assert msg.to_dict()["rssi_raw"] == 0x64 and msg.rssi_dbm is None


@pytest.mark.parametrize(("frame", "variant", "expected"), [
    # both layouts consume this exactly: auto prefers the 288M
    (cf.encode_reply(0, 0x01, 0x03, bytes.fromhex("02 01 02 02 AA BB")), "auto",
     [_tag(b"\x02\xaa", antenna=2, reader_address=0, rssi_raw=0xBB)]),
    (cf.encode_reply(0, 0x01, 0x03, bytes.fromhex("02 01 02 02 AA BB")), "18",
     [_tag(b"\x02", reader_address=0), _tag(b"\xaa\xbb", reader_address=0)]),
    # a 288M reply with a non-single-bit antenna mask is only accepted when told it is 288M
    (cf.encode_reply(0, 0x01, 0x03, bytes.fromhex("03 01 01 AA 40")), "288",
     [_tag(b"\xaa", antenna=None, reader_address=0, rssi_raw=0x40)]),
], ids=["ambiguous_auto_prefers_288", "ambiguous_forced_18", "forced_288_multi_bit_mask"])
def test_variant_selection(frame: bytes, variant: cf.Variant, expected: list[object]) -> None:
    assert feed_all(lambda: cf.Decoder(variant=variant), frame) == expected


@pytest.mark.parametrize(("frame", "variant"), [
    (cf.encode_inventory_reply_288(0, [(EPC, 0x64)], status=3), "18"),
    (cf.encode_inventory_reply_18(0, [EPC], status=3), "288"),
    (cf.encode_reply(0, 0x01, 0x03, bytes.fromhex("03 01 01 AA 40")), "auto"),
    (cf.encode_reply(0, 0x01, 0x01, bytes.fromhex("01 00")), "18"),  # zero-length EPC
])
def test_wrong_variant_is_a_bad_field(frame: bytes, variant: cf.Variant) -> None:
    (err,) = feed_all(lambda: cf.Decoder(variant=variant), frame)
    assert isinstance(err, cf.FrameError) and err.kind == "bad_field"


def test_bytewise_equals_oneshot() -> None:
    bad = bytearray(CATALOGUE[0][1])
    bad[-1] ^= 0x01
    stream = (b"\x00\x01" + b"".join(c[1] for c in CATALOGUE) + bytes(bad) + b"\xff"
              + cf.encode_inventory_reply_18(0, [EPC, EPC2], status=0x01) + b"\x13\x00"
              + CATALOGUE[2][1])
    check_bytewise_equals_oneshot(cf.Decoder, stream)


GOOD = CATALOGUE[2]
MALFORMED = [
    ("bad_checksum", GOOD[1][:-1] + bytes((GOOD[1][-1] ^ 0xFF,)), "bad_checksum"),
    ("len_below_reply_minimum", b"\x03\x00\x01\x00", "bad_length"),
    # the reader's own command echoed on a half-duplex RS-485 line (Len 4 < 5)
    ("echoed_host_command", cf.encode_inventory_18(), "bad_length"),
    # a stray byte whose Len claims 256 bytes must not hold the next reply back
    ("stray_ff", b"\xff", "garbage"),
    ("inventory_layout_mismatch", cf.encode_reply(0, 0x01, 0x03, b"\x01\x0c\x00"),
     "bad_field"),
    ("garbage_only", b"\x00\x01\x02", "bad_length"),
    # a frame cut short runs into the next one: its CRC fails and every later offset is
    # tried, so the following good frame is not lost
    ("truncated_then_good", GOOD[1][:10], "bad_checksum"),
]


@pytest.mark.parametrize(("data", "kind"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed(data: bytes, kind: str) -> None:
    """Between two good frames (the decoder is in sync when the bad bytes start)."""
    dec = cf.Decoder()
    out = dec.feed(GOOD[1] + data + GOOD[1])
    errs = errors(out)
    assert errs and errs[0].kind == kind and errs[0].protocol == "chafon"
    assert b"".join(e.raw for e in errs) == data or kind == "bad_field"
    assert out[0] == GOOD[2] and out[-1] == GOOD[2], "good frames around it must decode"
    assert dec.buffered == 0, "nothing may be held back waiting for bytes"


def test_garbage_at_start_is_reported_as_garbage() -> None:
    out = feed_all(cf.Decoder, b"\x00\x01\x02\x03\x04" + GOOD[1])
    assert [e.kind for e in errors(out)] == ["garbage"] and out[-1] == GOOD[2]


def test_truncated_at_end_of_stream_is_reported_by_flush() -> None:
    dec = cf.Decoder()
    assert dec.feed(GOOD[1][:10]) == []
    (err,) = dec.flush()
    assert err.kind == "truncated" and err.raw == GOOD[1][:10]


def test_flush_decodes_frames_behind_a_stalled_candidate() -> None:
    """A frame from another reader address is not trusted by the look-ahead while the stream
    runs, but at the end of the stream the stalled candidate cannot complete any more."""
    other = cf.encode_inventory_reply_18(9, [EPC], status=0x03)
    dec = cf.Decoder()
    assert dec.feed(GOOD[1] + b"\xfe" + other) == [GOOD[2]]
    assert dec.buffered == 1 + len(other)
    out = dec.flush()
    assert [type(o).__name__ for o in out] == ["FrameError", "ChafonTagRead"]
    assert out[0].raw == b"\xfe" and out[1] == _tag(EPC, reader_address=9)


def test_buffer_is_capped() -> None:
    dec = cf.Decoder()
    out = dec.feed(b"\xff" + b"\x00" * 200)  # Len 255: 256 bytes expected
    assert out == [] and dec.buffered == 201
    big = cf.MAX_BUFFER + 10
    out = cf.Decoder().feed(b"\x00" * big)
    assert [e.kind for e in errors(out)] == ["garbage"] and len(out[0].raw) == big


def test_largest_frame_decodes() -> None:
    frame = cf.encode_reply(0, 0x22, 0x00, bytes(250))
    assert len(frame) == cf.MAX_FRAME
    assert feed_all(cf.Decoder, frame) == [cf.Response(0, 0x22, 0x00, bytes(250))]


# -- real frames from shared/captures --------------------------------------------------------
def test_capture_file_decodes_as_documented() -> None:
    lines = capture_lines("rfid_chafon_uhfreader.txt")
    frames = [bytes.fromhex(ln.replace(" ", "")) for ln in lines]
    assert len(frames) == 12
    assert feed_all(lambda: cf.Decoder("device"), frames[0]) == [
        cf.Command(0xFF, 0x01, "inventory", b"")]
    assert cf.encode_inventory_18() == frames[0]
    z313, z314 = "000000000000000000000313", "000000000000000000000314"
    wabson = "49440000000000000A000334"
    expected = [
        # UHFReader18: status 0x03 (more frames follow), no antenna, no RSSI
        [cf.ChafonTagRead(epc=z313, reader_address=0)],
        [cf.ChafonTagRead(epc=wabson, reader_address=0)],
        [cf.ChafonTagRead(epc=z313, reader_address=0),
         cf.ChafonTagRead(epc=z314, reader_address=0)],
        # UHFReader288M
        [cf.ChafonTagRead(epc=z313, antenna=1, reader_address=0, rssi_raw=0x6B)],
        [cf.ChafonTagRead(epc="3039606303C74380001A0559", antenna=1, reader_address=0,
                          rssi_raw=0x40)],
        [cf.ChafonTagRead(epc=wabson, antenna=3, reader_address=0, rssi_raw=0x64)],
        [cf.ChafonTagRead(epc="00323038", antenna=1, reader_address=0, rssi_raw=0x6D)],
        [cf.InventoryStatus(0, 0x01, "done", 0, 1, "288")],
        [cf.ChafonTagRead(epc=z313, antenna=1, reader_address=0, rssi_raw=0x6B),
         cf.ChafonTagRead(epc=z314, antenna=1, reader_address=0, rssi_raw=0x6C)],
    ]
    replies = frames[1:10]
    for frame, exp in zip(replies, expected, strict=True):
        assert feed_all(cf.Decoder, frame) == exp, frame.hex()
    # the whole capture as one stream decodes to the same, in order
    assert feed_all(cf.Decoder, b"".join(replies)) == [m for e in expected for m in e]
    # the two 288M inventory command data fields (not frames) match the encoder
    assert cf.encode_inventory_288()[3:-2] == frames[10]
    assert cf.encode_inventory_288(q=2, session=1, mask_mem=2, target=1,
                                   scan_time_100ms=3)[3:-2] == frames[11]


def test_device_encoders_reproduce_capture_bytes() -> None:
    lines = capture_lines("rfid_chafon_uhfreader.txt")
    z313 = bytes.fromhex("000000000000000000000313")
    z314 = bytes.fromhex("000000000000000000000314")
    assert cf.encode_inventory_reply_18(0, [z313], status=3) == bytes.fromhex(lines[1])
    assert cf.encode_inventory_reply_18(0, [z313, z314], status=3) == bytes.fromhex(lines[3])
    assert cf.encode_inventory_reply_288(0, [(z313, 0x6B)], status=3) == bytes.fromhex(lines[4])
    assert cf.encode_inventory_reply_288(0, [], status=1) == bytes.fromhex(lines[8])
    assert cf.encode_inventory_reply_288(0, [(z313, 0x6B), (z314, 0x6C)],
                                         status=3) == bytes.fromhex(lines[9])


def test_protocols_md_vector() -> None:
    assert cf.encode_inventory_18(0xFF) == bytes.fromhex("04 FF 01 1B B4")
    assert cf.encode_get_reader_info(0xFF) == bytes.fromhex("04 FF 21 19 95")


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        cf.encode_set_power(0, 31)
    with pytest.raises(ValueError):
        cf.encode_inventory_288(q=16)
    with pytest.raises(ValueError):
        cf.encode_inventory_288(session=4)
    with pytest.raises(ValueError):
        cf.encode_inventory_288(mask=b"\x01", mask_bits=9)
    with pytest.raises(ValueError):
        cf.encode_inventory_reply_18(0, [b""])
    with pytest.raises(ValueError):
        cf.encode_inventory_reply_288(0, [(EPC, 1)], antenna=9)
    with pytest.raises(ValueError):
        cf.encode_reply(0, 0x01, 0, bytes(251))
    with pytest.raises(ValueError):
        cf.Decoder("sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cf.Decoder(variant="99")  # type: ignore[arg-type]


def test_cli_decode_frame_arg() -> None:
    assert cf.decode_frame_arg("0700010101001e4b") == [
        cf.InventoryStatus(0, 0x01, "done", 0, 1, "288")]
    assert cf.decode_frame_arg("04 FF 01 1B B4", sent_by="host") == [
        cf.Command(0xFF, 0x01, "inventory", b"")]
    (err,) = cf.decode_frame_arg("1500010301010c0000000000000000000003136bb1a5", variant="18")
    assert err.kind == "bad_field"


@pytest.mark.parametrize("stray", range(256))
def test_any_single_stray_byte_between_frames(stray: int) -> None:
    """Deterministic stand-in for a full-alphabet garbage property (which could collide with
    the CRC by chance): one stray byte of every value between and after good frames."""
    a = cf.encode_inventory_reply_288(0, [(EPC, 0x50)], antenna=2, status=0x03)
    b = cf.encode_inventory_reply_288(0, [], antenna=2, status=0x01)
    check_garbage_between(cf.Decoder, [a, b], [bytes((stray,)), bytes((stray,))])
    out = feed_all(cf.Decoder, a + bytes((stray,)) + b + bytes((stray,)))
    assert messages(out) == messages(feed_all(cf.Decoder, a + b))
    assert b"".join(e.raw for e in errors(out)) == bytes((stray, stray))


# -- property tests ----------------------------------------------------------------------------
# Garbage alphabet: 0x00..0x04. With no sync byte, any byte >= 5 is a plausible Len and a
# garbage run could, by a 1-in-65536 CRC coincidence, form a frame with the bytes after it;
# bytes below the reply minimum Len (5) can never start a frame, so the property is exact.
_frames = st.lists(st.sampled_from([c[1] for c in CATALOGUE]), min_size=1, max_size=8)
_garbage = st.binary(max_size=40).map(lambda b: bytes(x % 5 for x in b))


@given(frames=_frames, data=st.data())
def test_garbage_between_frames(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_garbage) for _ in frames]
    check_garbage_between(cf.Decoder, frames, garbage)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_arbitrary_bytes_never_raise(blob: bytes, chunk: int) -> None:
    check_never_raises(cf.Decoder, blob, chunk)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_arbitrary_bytes_never_raise_device_role(blob: bytes, chunk: int) -> None:
    check_never_raises(lambda: cf.Decoder("device"), blob, chunk)


@given(tags=st.lists(st.tuples(st.binary(min_size=1, max_size=62), st.integers(0, 255)),
                     max_size=3), antenna=st.integers(1, 8), status=st.sampled_from([1, 2, 3, 4]))
def test_inventory_288_roundtrip(tags: list[tuple[bytes, int]], antenna: int,
                                 status: int) -> None:
    frame = cf.encode_inventory_reply_288(0x10, tags, antenna=antenna, status=status)
    out = feed_all(lambda: cf.Decoder(variant="288"), frame)
    reads = [m for m in out if isinstance(m, cf.ChafonTagRead)]
    assert [(r.epc, r.rssi_raw, r.antenna) for r in reads] == [
        (e.hex().upper(), rssi, antenna) for e, rssi in tags]
    assert len(out) == len(tags) + (1 if not tags or status != 3 else 0)
