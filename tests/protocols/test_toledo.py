"""Mettler Toledo continuous output codec: the standard codec test set plus the captures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import toledo
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


def w(weight: float, unit: str | None = "kg", *, stable: bool = True, mode: str = "gross",
      tare: float = 0.0, overload: bool = False, scale: str | None = None,
      weight_kg: float | None = None) -> Weight:
    if weight_kg is None and unit == "kg":
        weight_kg = weight
    return Weight(weight=weight, unit=unit, weight_kg=weight_kg, stable=stable, mode=mode,
                  tare=tare, overload=overload, scale=scale)


# (id, encode_frame kwargs, expected message)
CASES: list[tuple[str, dict[str, object], Weight]] = [
    ("gross_stable_kg", {"weight": 1520}, w(1520.0)),
    ("net_motion_tare", {"weight": 1480, "tare": 40, "net": True, "motion": True},
     w(1480.0, stable=False, mode="net", tare=40.0)),
    ("two_decimals", {"weight": 0.46, "code": 4, "increment": 2}, w(0.46)),
    ("three_decimals_net", {"weight": 1.235, "tare": 0.5, "code": 5, "net": True},
     w(1.235, mode="net", tare=0.5)),
    ("five_decimals", {"weight": 0.12345, "code": 7}, w(0.12345)),
    ("dummy_zero_x10", {"weight": 2000, "code": 1}, w(2000.0)),
    ("dummy_zeros_x100", {"weight": 144000, "tare": 4600, "code": 0, "increment": 5},
     w(144000.0, tare=4600.0)),
    ("negative", {"weight": -20, "net": True}, w(-20.0, mode="net")),
    ("overload", {"weight": 999999, "overload": True}, w(999999.0, overload=True)),
    ("underload", {"weight": -5, "overload": True}, w(-5.0, overload=True)),
    ("pounds", {"weight": 3351, "unit": "lb"}, w(3351.0, "lb", weight_kg=1519.988032)),
    ("grams", {"weight": 250.5, "code": 3, "unit": "g"}, w(250.5, "g", weight_kg=0.2505)),
    ("tonnes", {"weight": 12.5, "code": 3, "unit": "t"}, w(12.5, "t", weight_kg=12500.0)),
    ("ounces_no_kg", {"weight": 16, "unit": "oz"}, w(16.0, "oz")),
    ("not_zeroed_print", {"weight": 0, "not_zeroed": True, "print_request": True},
     w(0.0, scale="not_zeroed,print")),
]


def frame_of(kwargs: dict[str, object], **extra: object) -> bytes:
    return toledo.encode_frame(**(kwargs | extra))  # type: ignore[arg-type]


CATALOGUE = [(cid, frame_of(kw), exp) for cid, kw, exp in CASES]
# auto mode needs the byte after a frame to tell a checksum from the next STX; a lone frame
# whose checksum is 0x02 is ambiguous until one more byte arrives (tested separately)
assert all(f[-1] != toledo.STX for _, f, _ in CATALOGUE)

DECODERS: dict[str, Callable[[], toledo.Decoder]] = {
    "auto": toledo.Decoder,
    "checksum": lambda: toledo.Decoder(checksum=True),
}


@pytest.mark.parametrize("mode", list(DECODERS))
@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_roundtrip_with_checksum(mode: str, frame: bytes, expected: Weight) -> None:
    check_roundtrip(DECODERS[mode], frame, expected)
    check_prefixes_incomplete(DECODERS[mode], frame)


def no_chk() -> toledo.Decoder:
    return toledo.Decoder(checksum=False)


@pytest.mark.parametrize(("kwargs", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_roundtrip_without_checksum(kwargs: dict[str, object], expected: Weight) -> None:
    frame = frame_of(kwargs, checksum=False)
    assert len(frame) == toledo.FRAME_LEN
    check_roundtrip(no_chk, frame, expected)
    check_prefixes_incomplete(no_chk, frame)


@pytest.mark.parametrize(("kwargs", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_parity_bit_is_masked(kwargs: dict[str, object], expected: Weight) -> None:
    frame = frame_of(kwargs, parity=True)
    assert frame[0] == 0x82  # STX has one bit set: even parity sets bit 7
    check_roundtrip(toledo.Decoder, frame, expected)


def test_auto_detects_checksum_and_keeps_the_decision() -> None:
    with_chk = [c[1] for c in CATALOGUE[:4]]
    dec = toledo.Decoder()
    assert dec.checksum_detected is None
    assert messages(dec.feed(b"".join(with_chk))) == [c[2] for c in CATALOGUE[:4]]
    assert dec.checksum_detected is True
    # a corrupted checksum later is an error, not a switch to "no checksum"
    bad = bytearray(with_chk[0])
    bad[-1] ^= 0x01
    out = dec.feed(bytes(bad) + with_chk[1])
    assert [type(o).__name__ for o in out] == ["FrameError", "Weight"]
    assert out[0].kind == "bad_checksum"  # type: ignore[union-attr]


def test_auto_detects_frames_without_checksum() -> None:
    frames = [frame_of(kw, checksum=False) for _, kw, _ in CASES]
    dec = toledo.Decoder()
    # the first frame waits for the byte after its CR to decide...
    assert dec.feed(frames[0]) == []
    assert dec.checksum_detected is None
    # ...the next STX decides "no checksum", and from then on a frame is complete at its CR
    assert dec.feed(b"".join(frames[1:])) == [c[2] for c in CASES]
    assert dec.checksum_detected is False


def test_auto_ambiguous_checksum_equal_to_stx() -> None:
    # find a frame whose checksum is 0x02, i.e. whose checksum byte looks like an STX
    frame = toledo.encode_frame(109, 190, net=True)
    assert frame[-1] == toledo.STX
    first = w(109.0, mode="net", tare=190.0)
    other = toledo.encode_frame(7)
    dec = toledo.Decoder()
    assert dec.feed(frame) == []  # a checksum, or the next frame's STX? wait and see
    assert dec.feed(other) == [first, w(7.0)]
    assert dec.checksum_detected is True
    # the same frame without its checksum followed by the next frame: also resolved
    no_chk_frame = frame[:-1]
    dec = toledo.Decoder()
    assert dec.feed(no_chk_frame + b"\x02") == []
    assert dec.feed(toledo.encode_frame(7, checksum=False)[1:]) == [first, w(7.0)]
    assert dec.checksum_detected is False
    # a lone ambiguous frame at the end of a stream is reported as truncated
    dec = toledo.Decoder()
    assert dec.feed(frame) == []
    (err,) = dec.flush()
    assert err.kind == "truncated" and err.raw == frame


def test_status_words_roundtrip() -> None:
    for code in range(8):
        for inc in (None, 1, 2, 5):
            sw = toledo.StatusWords(code=code, increment=inc, net=True, negative=True,
                                    motion=True, kg=False, unit_code=3, expanded=True)
            assert toledo.decode_status(*toledo.encode_status(sw)) == sw
    # WILDCAT table: SWA 0x22 = no dummy zero, no decimal, increment not given; 0x34 = x.xx x2
    assert toledo.decode_status(0x22, 0x30, 0x20) == toledo.StatusWords(code=2, increment=None)
    sw = toledo.decode_status(ord("4"), ord("9"), ord(" "))
    assert (sw.code, sw.increment, sw.net, sw.motion, sw.unit) == (4, 2, True, True, "kg")
    assert toledo.decode_status(0x22, 0x20, 0x21).unit == "g"  # SWC grams beats SWB lb


@pytest.mark.parametrize(("code", "digits", "value"), [
    (0, 12, 1200.0), (1, 200, 2000.0), (2, 1520, 1520.0), (3, 15205, 1520.5),
    (4, 46, 0.46), (5, 1235, 1.235), (6, 1, 0.0001), (7, 123456, 1.23456)])
def test_decimal_code_multiplier(code: int, digits: int, value: float) -> None:
    """value = digits * 10 ** (2 - code), the Mettler SWA table (protocols.md 3.1)."""
    assert toledo.StatusWords(code=code).scale(digits) == value
    if code < 2:  # the other reading: the six digits already include the dummy zeros
        assert toledo.StatusWords(code=code).scale(digits, dummy_zeros_sent=True) == digits


def test_dummy_zeros_sent_option() -> None:
    frame = toledo.encode_frame(2000, code=1)  # digits "   200"
    assert feed_all(lambda: toledo.Decoder(dummy_zeros_sent=True), frame) == [w(200.0)]


def test_bytewise_equals_oneshot() -> None:
    bad = bytearray(CATALOGUE[1][1])
    bad[6] = ord("x")
    stream = (b"\x00\x11" + b"".join(c[1] for c in CATALOGUE) + CATALOGUE[2][1][:9]
              + CATALOGUE[0][1] + bytes(bad) + CATALOGUE[3][1][:-1] + b"\x7f"
              + CATALOGUE[4][1])
    for factory in DECODERS.values():
        check_bytewise_equals_oneshot(factory, stream)
    plain = b"".join(frame_of(kw, checksum=False) for _, kw, _ in CASES) + b"\x02"
    check_bytewise_equals_oneshot(toledo.Decoder, plain)
    check_bytewise_equals_oneshot(no_chk, plain[:-1] + b"\x02\x22")


def _with(frame: bytes, index: int, value: int) -> bytes:
    b = bytearray(frame)
    b[index] = value
    return bytes(b)


def _checksummed(body: bytes) -> bytes:
    """STX..CR plus a correct checksum, so only the field under test is wrong."""
    return body + bytes(((-sum(body)) & 0x7F,))


GOOD = CATALOGUE[0][1]  # 02 2A 30 20 "  1520" "     0" 0D CHK
MALFORMED = [
    ("bad_checksum", _with(GOOD, 17, 0x28), "bad_checksum"),
    ("no_cr", _with(GOOD, 16, 0x0A), "bad_length"),
    ("weight_not_digits", _checksummed(_with(GOOD, 7, ord("x"))[:17]), "bad_field"),
    ("weight_signed", _checksummed(_with(GOOD, 5, ord("-"))[:17]), "bad_field"),
    ("tare_embedded_space", _checksummed(_with(GOOD, 14, ord("1"))[:17].replace(
        b"    10", b"  1 00")), "bad_field"),
    # a frame cut short runs into the next one: resync on the STX inside it
    ("truncated_then_good", GOOD[:9], "bad_length"),
    ("garbage_only", b"\x01\x11abc\r", "garbage"),
]


@pytest.mark.parametrize("mode", list(DECODERS))
@pytest.mark.parametrize(("data", "kind"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed(mode: str, data: bytes, kind: str) -> None:
    good = CATALOGUE[1][1]
    out = feed_all(DECODERS[mode], data + good)
    errs = errors(out)
    assert errs and errs[0].kind == kind and errs[0].protocol == "toledo"
    assert out[-1] == CATALOGUE[1][2], "the good frame after the bad input must still decode"
    assert sum(len(e.raw) for e in errs) == len(data)


def test_auto_neither_checksum_nor_stx_is_bad_checksum() -> None:
    frame = toledo.encode_frame(5, checksum=False) + b"\x7f"
    out = feed_all(toledo.Decoder, frame + GOOD)
    assert [type(o).__name__ for o in out] == ["FrameError", "Weight"]
    assert out[0].kind == "bad_checksum" and out[0].raw == frame  # type: ignore[union-attr]


def test_truncated_at_end_of_stream_is_reported_by_flush() -> None:
    dec = toledo.Decoder()
    assert dec.feed(GOOD[:10]) == []
    (err,) = dec.flush()
    assert err.kind == "truncated" and err.raw == GOOD[:10]


def test_buffer_is_capped() -> None:
    big = toledo.MAX_BUFFER + 10
    out = toledo.Decoder().feed(b"\x00" * big)
    assert [e.kind for e in errors(out)] == ["garbage"] and len(out[0].raw) == big


# -- real frames from shared/captures --------------------------------------------------------
def test_capture_file_decodes_as_documented() -> None:
    lines = capture_lines("scale_mettler_toledo.txt")
    toledo_frames = [bytes.fromhex(ln) for ln in lines[:2]]
    printed = lines[2:4]
    # the worked example: SWA 0x22, SWB 0x30 gross/positive/stable/kg, 1520 kg, tare 0
    assert feed_all(toledo.Decoder, toledo_frames[0]) == [w(1520.0)]
    # SWB 0x39: net, in motion, kg; 1480 kg net with 40 kg tare
    assert feed_all(toledo.Decoder, toledo_frames[1]) == [
        w(1480.0, stable=False, mode="net", tare=40.0)]
    assert all(sum(f) & 0x7F == 0 for f in toledo_frames)
    assert toledo_frames[0] == toledo.encode_frame(1520, increment=None)
    assert toledo_frames[1] == toledo.encode_frame(1480, 40, net=True, motion=True,
                                                   increment=None)
    # "as apps print it": SWA '4' = code 4 (XXXX.XX), increment x2; SWB '0' gross stable kg
    assert printed == ["40    046   000", "41    144   046"]
    assert toledo.decode_printed(printed[0]) == w(0.46)  # 0.46 kg stable, as the note says
    assert toledo.decode_printed(printed[1]) == w(1.44, mode="net", tare=0.46)
    # protocols.md also quotes "49    072   046" (SWB '9' = net + motion)
    assert toledo.decode_printed("49    072   046") == w(0.72, stable=False, mode="net",
                                                          tare=0.46)
    # the app that produced these reads "1!!  1440   460" as 1440 g; the Mettler table
    # (SWA '1' = code 1, one dummy zero) makes it 14400 g -- the disagreement in protocols.md
    assert toledo.decode_printed("1!!  1440   460") == w(14400.0, "g", mode="net",
                                                          tare=4600.0, weight_kg=14.4)
    assert toledo.decode_printed("1!!  1440   460", dummy_zeros_sent=True).weight == 1440.0


def test_mtsics_lines_in_the_capture_are_not_toledo_frames() -> None:
    lines = capture_lines("scale_mettler_toledo.txt")[4:]
    assert lines[0] == "S S 100.00 g"
    out = feed_all(toledo.Decoder, "\r\n".join(lines).encode())
    assert messages(out) == [] and {e.kind for e in errors(out)} == {"garbage"}


def test_decode_printed_rejects_other_shapes() -> None:
    with pytest.raises(ValueError):
        toledo.decode_printed("40    046   00")
    with pytest.raises(ValueError):
        toledo.decode_printed("40    0x6   000")
    with pytest.raises(ValueError):
        toledo.decode_printed("40    046   0é0")


def test_decode_frame_arg() -> None:
    assert toledo.decode_frame_arg(
        "02 22 30 20 20 20 31 35 32 30 20 20 20 20 20 30 0D 27") == [w(1520.0)]
    assert toledo.decode_frame_arg(
        "02 22 30 20 20 20 31 35 32 30 20 20 20 20 20 30 0D") == [w(1520.0)]
    assert toledo.decode_frame_arg("<STX>\"0   1520     0") == [w(1520.0)]
    assert toledo.decode_frame_arg("40    046   000") == [w(0.46)]
    with pytest.raises(ValueError):
        toledo.decode_frame_arg("S", sent_by="host")


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        toledo.encode_frame(1_000_000)
    with pytest.raises(ValueError):
        toledo.encode_frame(1525, code=1)  # not a multiple of the dummy zero
    with pytest.raises(ValueError):
        toledo.encode_frame(1.234, code=4)
    with pytest.raises(ValueError):
        toledo.encode_frame(1, unit="stone")
    with pytest.raises(ValueError):
        toledo.encode_frame(1, increment=3)
    with pytest.raises(ValueError):
        toledo.encode_frame(1, tare=-1)
    with pytest.raises(ValueError):
        toledo.Decoder(checksum="maybe")  # type: ignore[arg-type]


# -- property tests ----------------------------------------------------------------------------
_frames = st.lists(st.sampled_from([c[1] for c in CATALOGUE]), min_size=1, max_size=8)
_garbage = st.binary(max_size=40).map(lambda b: b.replace(b"\x02", b"").replace(b"\x82", b""))


@given(frames=_frames, data=st.data())
def test_garbage_between_frames(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_garbage) for _ in frames]
    check_garbage_between(lambda: toledo.Decoder(checksum=True), frames, garbage)


@given(frames=st.lists(st.sampled_from([frame_of(kw, checksum=False) for _, kw, _ in CASES]),
                       min_size=1, max_size=8), data=st.data())
def test_garbage_between_frames_without_checksum(frames: list[bytes],
                                                 data: st.DataObject) -> None:
    garbage = [data.draw(_garbage) for _ in frames]
    check_garbage_between(no_chk, frames, garbage)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_arbitrary_bytes_never_raise(blob: bytes, chunk: int) -> None:
    check_never_raises(toledo.Decoder, blob, chunk)
    check_never_raises(no_chk, blob, chunk)


@given(digits=st.integers(0, 999_999), tare=st.integers(0, 999_999), code=st.integers(2, 7),
       negative=st.booleans())
def test_any_frame_roundtrips(digits: int, tare: int, code: int, negative: bool) -> None:
    value = digits / 10 ** (code - 2)
    tare_value = tare / 10 ** (code - 2)
    frame = toledo.encode_frame(-value if negative else value, tare_value, code=code)
    (msg,) = messages(feed_all(lambda: toledo.Decoder(checksum=True), frame))
    assert isinstance(msg, Weight)
    assert msg.weight == (-value if negative and digits else value)
    assert msg.tare == tare_value
