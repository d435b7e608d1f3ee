"""XK3190-A9 continuous output codec: the standard codec test set plus the shared captures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import xk3190
from protocols.messages import Weight
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


def kg(weight: float, scale: str | None = None) -> Weight:
    return Weight(weight=weight, unit="kg", weight_kg=weight, stable=None, scale=scale)


# (id, frame, expected message) -- the indicator only talks, so every frame is device -> host
CATALOGUE = [
    ("empty_platform", xk3190.encode_a9(0), kg(0.0)),
    ("truck_12340", xk3190.encode_a9(12340), kg(12340.0)),
    ("two_decimals", xk3190.encode_a9(2.05, 2), kg(2.05)),
    ("one_decimal", xk3190.encode_a9(356.1, 1), kg(356.1)),
    ("four_decimals", xk3190.encode_a9(1.2345, 4), kg(1.2345)),
    ("negative", xk3190.encode_a9(-20), kg(-20.0)),
    ("negative_decimals", xk3190.encode_a9(-0.5, 1), kg(-0.5)),
    ("full_scale", xk3190.encode_a9(999999), kg(999999.0)),
    ("eq_zero_status_c", xk3190.encode_eq(0, 2, status="C"), kg(0.0, "status=C")),
    ("eq_no_status", xk3190.encode_eq(1520.5, 1), kg(1520.5)),
    ("eq_negative_status_at", xk3190.encode_eq(-12.25, 2, status="@"), kg(-12.25, "status=@")),
]


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_roundtrip(frame: bytes, expected: Weight) -> None:
    check_roundtrip(xk3190.Decoder, frame, expected)
    check_prefixes_incomplete(xk3190.Decoder, frame)


def test_unit_is_a_decoder_setting() -> None:
    frame = xk3190.encode_a9(1000)
    (w,) = feed_all(lambda: xk3190.Decoder("lb"), frame)
    assert w == Weight(weight=1000.0, unit="lb", weight_kg=453.59237, stable=None)
    (w,) = feed_all(lambda: xk3190.Decoder("t"), xk3190.encode_a9(12.5, 1))
    assert (w.unit, w.weight_kg) == ("t", 12500.0)
    (w,) = feed_all(lambda: xk3190.Decoder(None), frame)
    assert (w.unit, w.weight_kg) == (None, None)


def test_a9_encoder_matches_the_worked_example() -> None:
    # protocols.md 3.3: +000205, 2 decimals, XOR 0x1E
    assert xk3190.encode_a9(2.05, 2) == bytes.fromhex("02 2B 30 30 30 32 30 35 32 31 45 03")
    assert xk3190.encode_a9(0) == bytes.fromhex("02 2B 30 30 30 30 30 30 30 31 42 03")


def test_lower_case_checksum_hex_is_accepted() -> None:
    frame = bytearray(xk3190.encode_a9(2.05, 2))
    frame[10] = ord("e")
    (w,) = feed_all(xk3190.Decoder, bytes(frame))
    assert w == kg(2.05)


# -- the unconfirmed reversed-digit '=' format (tF = 1) --------------------------------------
def rev() -> xk3190.Decoder:
    return xk3190.Decoder(reversed_digits=True)


REVERSED = [
    ("reversed_cr", xk3190.encode_eq(12.34, 2, reversed_digits=True), kg(12.34)),
    ("reversed_negative", xk3190.encode_eq(-3.5, 3, reversed_digits=True), kg(-3.5)),
    ("reversed_integer", xk3190.encode_eq(1500, 0, reversed_digits=True), kg(1500.0)),
]


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in REVERSED],
                         ids=[c[0] for c in REVERSED])
def test_reversed_digits_roundtrip(frame: bytes, expected: Weight) -> None:
    check_roundtrip(rev, frame, expected)
    check_prefixes_incomplete(rev, frame)


def test_reversed_digits_wire_form_and_frames_without_cr() -> None:
    assert xk3190.encode_eq(12.34, 2, reversed_digits=True, terminator=b"") == b"=43.21  "
    # frames that end at the next '=' (no CR): each frame is complete when the next begins
    stream = b"=43.2100=43.2100=05.21-0"
    dec = rev()
    out = dec.feed(stream)
    assert out == [kg(12.34), kg(12.34)]
    assert dec.buffered == len(b"=05.21-0")
    (err,) = dec.flush()
    assert err.kind == "truncated"
    # the default decoder reads the same bytes in display order (and they make no sense)
    out = feed_all(xk3190.Decoder, b"=43.2100\r")
    assert out == [kg(43.21)]


def test_eq_frames_ended_by_next_frame_or_stx() -> None:
    a9 = xk3190.encode_a9(20)
    out = feed_all(xk3190.Decoder, b"=   1.50A=   1.60B" + a9)
    assert out == [kg(1.5, "status=A"), kg(1.6, "status=B"), kg(20.0)]


def test_bytewise_equals_oneshot() -> None:
    stream = (b"\x00\x11" + b"".join(c[1] for c in CATALOGUE)
              + bytes.fromhex("02 2B 30 30 30 30 30 30 31 31 42 03") + b"=  x\r"
              + CATALOGUE[1][1] + b"=   1.00B=  2.5\x02" + CATALOGUE[0][1])
    check_bytewise_equals_oneshot(xk3190.Decoder, stream)
    check_bytewise_equals_oneshot(rev, b"=43.2100=43.2100\r=1\r" + CATALOGUE[0][1])


MALFORMED = [
    ("bad_checksum", bytes.fromhex("02 2B 30 30 30 30 30 30 31 31 42 03"), "bad_checksum"),
    ("no_etx", bytes.fromhex("02 2B 30 30 30 30 30 30 30 31 42 04"), "bad_length"),
    ("sign_not_plus_minus", bytes.fromhex("02 20 30 30 30 30 30 30 30 31 42 03"), "bad_field"),
    ("digit_not_ascii", b"\x02+00x000\x30" + b"1B\x03", "bad_field"),
    ("decimals_out_of_range", b"\x02+0000009" + b"12\x03", "bad_field"),
    ("checksum_not_hex", b"\x02+0000000" + b"1G\x03", "bad_field"),
    # addressed variant (02 'A' 'B' '+' ...) is not supported: reported, not misread
    ("addressed_variant", b"\x02AB+00002000\x03", "bad_length"),
    # a frame cut short runs into the next frame: resync on the STX inside it
    ("truncated_then_good", bytes.fromhex("02 2B 30 30 30"), "bad_length"),
    ("eq_not_a_number", b"=  1.2.3\r", "bad_field"),
    ("eq_empty", b"=\r", "bad_field"),
    ("eq_without_end", b"=" + b"1" * 20, "oversized"),
    ("garbage_only", b"\x01\x11abc", "garbage"),
]


@pytest.mark.parametrize(("data", "kind"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed(data: bytes, kind: str) -> None:
    good = CATALOGUE[1][1]
    out = feed_all(xk3190.Decoder, data + good)
    errs = errors(out)
    assert errs and errs[0].kind == kind and errs[0].protocol == "xk3190"
    assert out[-1] == CATALOGUE[1][2], "the good frame after the bad input must still decode"
    # every byte is accounted for: reported bad or part of the good frame
    assert sum(len(e.raw) for e in errs) == len(data)


def test_truncated_at_end_of_stream_is_reported_by_flush() -> None:
    dec = xk3190.Decoder()
    assert dec.feed(bytes.fromhex("02 2B 30 30 30")) == []
    (err,) = dec.flush()
    assert err.kind == "truncated" and err.raw == bytes.fromhex("02 2B 30 30 30")


def test_buffer_is_capped() -> None:
    big = xk3190.MAX_BUFFER + 10
    out = xk3190.Decoder().feed(b"\x00" * big)
    assert [e.kind for e in errors(out)] == ["garbage"] and len(out[0].raw) == big
    dec = xk3190.Decoder()
    for _ in range(50):
        dec.feed(b"=111")
        assert dec.buffered <= xk3190.MAX_BUFFER


# -- real frames from shared/captures --------------------------------------------------------
def test_capture_file_decodes_as_documented() -> None:
    frames = [bytes.fromhex(line) for line in capture_lines("scale_xk3190_a9.txt")]
    assert len(frames) == 8
    out = [feed_all(xk3190.Decoder, f) for f in frames]
    assert out[0] == [kg(0.0)]  # empty platform, XOR 1B
    assert out[1] == [kg(20.0)]
    assert out[2] == [kg(2.05)]  # the worked example: +000205 with 2 decimals
    assert out[3] == [kg(12340.0)]  # composed: +012340 kg
    assert out[4] == [kg(356.1)]  # composed: +356.1 kg
    assert out[5] == [kg(-20.0)]  # composed: -20 kg
    # the negative vector quoted in a public comment fails the XOR check (1A expected)
    (err,) = out[6]
    assert err.kind == "bad_checksum" and err.raw == frames[6] and "1A" in err.detail
    # the '=' variant from hahuyquyen/CMA_1: 0.00 with status letter C (meaning unknown)
    assert out[7] == [kg(0.0, "status=C")]
    assert b"".join(frames[:6]) == b"".join(xk3190.encode_a9(w, d) for w, d in (
        (0, 0), (20, 0), (2.05, 2), (12340, 0), (356.1, 1), (-20, 0)))
    assert frames[7] == xk3190.encode_eq(0, 2, status="C")


def test_decode_frame_arg() -> None:
    assert xk3190.decode_frame_arg("02 2B 30 30 30 32 30 35 32 31 45 03") == [kg(2.05)]
    assert xk3190.decode_frame_arg("=   0.00C") == [kg(0.0, "status=C")]
    with pytest.raises(ValueError):
        xk3190.decode_frame_arg("S", sent_by="host")


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        xk3190.encode_a9(1_000_000)
    with pytest.raises(ValueError):
        xk3190.encode_a9(1.0, 5)
    with pytest.raises(ValueError):
        xk3190.encode_eq(1.0, status="c")
    with pytest.raises(ValueError):
        xk3190.encode_eq(123456789012.0)


# -- property tests ----------------------------------------------------------------------------
_frames = st.lists(st.sampled_from([c[1] for c in CATALOGUE]), min_size=1, max_size=8)
_garbage = st.binary(max_size=40).map(lambda b: b.replace(b"\x02", b"").replace(b"=", b""))


@given(frames=_frames, data=st.data())
def test_garbage_between_frames(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_garbage) for _ in frames]
    check_garbage_between(xk3190.Decoder, frames, garbage)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_arbitrary_bytes_never_raise(blob: bytes, chunk: int) -> None:
    check_never_raises(xk3190.Decoder, blob, chunk)
    check_never_raises(rev, blob, chunk)


@given(weight=st.integers(-999_999, 999_999), decimals=st.integers(0, 4))
def test_any_a9_weight_roundtrips(weight: int, decimals: int) -> None:
    value = weight / 10 ** decimals
    (w,) = messages(feed_all(xk3190.Decoder, xk3190.encode_a9(value, decimals)))
    assert w == kg(value if weight else 0.0)
