"""MT-SICS codec: the standard codec test set plus the shared captures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import mtsics
from protocols.messages import ScaleStatus, Weight, weight_to_kg
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


def weight(value: float, unit: str = "g", stable: bool | None = True) -> Weight:
    return Weight(weight=value, unit=unit, weight_kg=weight_to_kg(value, unit), stable=stable)


def device() -> mtsics.Decoder:
    return mtsics.Decoder("device")


# (id, frame, expected message) -- device -> host replies
CATALOGUE = [
    ("stable_g", mtsics.encode_weight(100.0), weight(100.0)),
    ("dynamic_g", mtsics.encode_weight(100.02, stable=False), weight(100.02, stable=False)),
    ("stable_kg_si", mtsics.encode_weight(1520.5, "kg", decimals=1), weight(1520.5, "kg")),
    ("negative_lb", mtsics.encode_weight(-3.25, "lb"), weight(-3.25, "lb")),
    ("unknown_unit", mtsics.encode_weight(5.0, "ct"), weight(5.0, "ct")),
    ("weight_display_unit", mtsics.encode_weight(7.0, "kg", command="SU"), weight(7.0, "kg")),
    ("busy", mtsics.encode_status("S", "I"), ScaleStatus("busy", "I", "S")),
    ("overload", mtsics.encode_status("S", "+"), ScaleStatus("overload", "+", "S")),
    ("underload", mtsics.encode_status("S", "-"), ScaleStatus("underload", "-", "S")),
    ("logical", mtsics.encode_status("TA", "L"), ScaleStatus("error", "L", "TA")),
    ("zero_done", mtsics.encode_status("Z", "A"), ScaleStatus("ok", "A", "Z")),
    ("zero_busy", mtsics.encode_status("Z", "I"), ScaleStatus("busy", "I", "Z")),
    ("zero_over", mtsics.encode_status("Z", "+"), ScaleStatus("overload", "+", "Z")),
    ("zero_under", mtsics.encode_status("Z", "-"), ScaleStatus("underload", "-", "Z")),
    ("zero_immediately_dynamic", mtsics.encode_status("ZI", "D"),
     ScaleStatus("ok", "D", "ZI")),
    ("tare_taken", mtsics.encode_tare_reply(2.486, decimals=3),
     mtsics.Tare("T", 2.486, "g", weight_to_kg(2.486, "g"), True)),
    ("tare_immediately_dynamic", mtsics.encode_tare_reply(10.0, "kg", command="TI",
                                                          status="D"),
     mtsics.Tare("TI", 10.0, "kg", 10.0, False)),
    ("tare_memory", mtsics.encode_tare_reply(0.5, "kg", command="TA", status="A"),
     mtsics.Tare("TA", 0.5, "kg", 0.5, None)),
    ("tare_cleared", mtsics.encode_status("TAC", "A"), ScaleStatus("ok", "A", "TAC")),
    ("serial_number", mtsics.encode_info_reply("I4", "B021002593"),
     mtsics.Info("I4", "A", ("B021002593",))),
    ("level", mtsics.encode_info_reply("I1", "01", "2.20", "2.20", "1.00", "1.50"),
     mtsics.Info("I1", "A", ("01", "2.20", "2.20", "1.00", "1.50"))),
    ("type_with_spaces", mtsics.encode_info_reply("I2", "WMS404C-L/10 WMS-Bridge 410.0 g"),
     mtsics.Info("I2", "A", ("WMS404C-L/10 WMS-Bridge 410.0 g",))),
    ("command_list_more", mtsics.encode_info_reply("I0", "0", "I0", status="B"),
     mtsics.Info("I0", "B", ("0", "I0"))),
    ("reset_reply", mtsics.encode_info_reply("I4", "0123456789"),
     mtsics.Info("I4", "A", ("0123456789",))),
    ("reset_reply_at", mtsics.encode_info_reply("@", "123456789"),
     mtsics.Info("@", "A", ("123456789",))),
    ("syntax_error", mtsics.encode_error("ES"), ScaleStatus("error", "ES")),
    ("transmission_error", mtsics.encode_error("ET"), ScaleStatus("error", "ET")),
    ("logical_error", mtsics.encode_error("EL"), ScaleStatus("error", "EL")),
    ("other_reply", mtsics.encode_command("D", "A"), ScaleStatus("ok", "A", "D")),
    ("uninterpreted", mtsics.encode_command("M01", "A", "2"),
     mtsics.Response("M01", "A", ("2",))),
]

# host -> device commands, decoded by the device role
COMMANDS = [
    ("weigh", mtsics.encode_weigh(), "S", ()),
    ("weigh_immediately", mtsics.encode_weigh(immediate=True), "SI", ()),
    ("weigh_repeat", mtsics.encode_weigh_repeat(), "SIR", ()),
    ("zero", mtsics.encode_zero(), "Z", ()),
    ("zero_immediately", mtsics.encode_zero(immediate=True), "ZI", ()),
    ("tare", mtsics.encode_tare(), "T", ()),
    ("tare_immediately", mtsics.encode_tare(immediate=True), "TI", ()),
    ("tare_read", mtsics.encode_tare_value(), "TA", ()),
    ("tare_preset", mtsics.encode_tare_value(10.0, "g"), "TA", ("10.00", "g")),
    ("tare_clear", mtsics.encode_clear_tare(), "TAC", ()),
    ("info0", mtsics.encode_info(0), "I0", ()),
    ("info4", mtsics.encode_info(4), "I4", ()),
    ("reset", mtsics.encode_reset(), "@", ()),
    ("name_quoted", mtsics.encode_command("I10", '"My Balance"'), "I10", ("My Balance",)),
]


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_roundtrip(frame: bytes, expected: object) -> None:
    check_roundtrip(mtsics.Decoder, frame, expected)  # type: ignore[arg-type]
    check_prefixes_incomplete(mtsics.Decoder, frame)


@pytest.mark.parametrize(("frame", "name", "args"), [c[1:] for c in COMMANDS],
                         ids=[c[0] for c in COMMANDS])
def test_device_role_decodes_commands(frame: bytes, name: str, args: tuple[str, ...]) -> None:
    assert feed_all(device, frame) == [mtsics.Command(name, args)]
    check_prefixes_incomplete(device, frame)
    if name != "I10":
        assert name in mtsics.COMMANDS


def test_wire_format() -> None:
    assert mtsics.encode_weight(100.0) == b"S S     100.00 g\r\n"
    assert mtsics.encode_weight(1.5, "kg", stable=False, decimals=3) == b"S D      1.500 kg\r\n"
    assert mtsics.encode_weigh() == b"S\r\n"
    assert mtsics.encode_tare_value(10, "g") == b"TA 10.00 g\r\n"
    assert mtsics.encode_info_reply("I4", "0123456789") == b'I4 A "0123456789"\r\n'
    assert mtsics.encode_info_reply("I4", "0123456789", quote=False) == b"I4 A 0123456789\r\n"


def test_line_endings_and_blank_lines() -> None:
    # LF alone ends a line too; blank lines and whitespace-only lines are skipped silently
    out = feed_all(mtsics.Decoder, b"S S 1.00 g\n\r\n   \r\nZ A\r\n")
    assert out == [weight(1.0), ScaleStatus("ok", "A", "Z")]
    # a bare CR does not end a line: the two replies run together and are rejected as one
    out = feed_all(mtsics.Decoder, b"Z A\rZ A\r\n" + CATALOGUE[0][1])
    assert [e.kind for e in errors(out)] == ["bad_text"]  # a CR inside a line is not text
    assert out[0].raw == b"Z A\rZ A\r\n"  # type: ignore[union-attr]
    assert out[1:] == [CATALOGUE[0][2]]


def test_bytewise_equals_oneshot() -> None:
    stream = (b"\xff\r\n" + b"".join(c[1] for c in CATALOGUE) + b"S S x g\r\n"
              + b"A" * (mtsics.MAX_LINE + 5) + b"\r\n" + CATALOGUE[0][1])
    check_bytewise_equals_oneshot(mtsics.Decoder, stream)
    check_bytewise_equals_oneshot(device, b"".join(c[1] for c in COMMANDS) + b"\x00\n")


MALFORMED = [
    ("non_ascii", "S S 1.00 µg\r\n".encode(), "bad_text"),
    ("control_char", b"S S 1.00\x00 g\r\n", "bad_text"),
    ("weight_not_number", b"S S 1,00 g\r\n", "bad_field"),
    ("weight_nan", b"S S nan g\r\n", "bad_field"),
    ("weight_underscore", b"S S 1_0 g\r\n", "bad_field"),
    ("weight_without_unit", b"S S 100.00\r\n", "bad_field"),
    ("tare_extra_token", b"T S 1.0 g x\r\n", "bad_field"),
    ("no_status", b"S\r\n", "bad_field"),
    ("oversized", b"S S " + b"1" * 200 + b" g\r\n", "oversized"),
]


@pytest.mark.parametrize(("data", "kind"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed(data: bytes, kind: str) -> None:
    good = CATALOGUE[0][1]
    out = feed_all(mtsics.Decoder, data + good)
    errs = errors(out)
    assert errs and errs[0].kind == kind and errs[0].protocol == "mtsics"
    assert out[-1] == CATALOGUE[0][2], "the good line after the bad input must still decode"
    assert b"".join(e.raw for e in errs) == data


def test_oversized_line_split_across_feeds() -> None:
    dec = mtsics.Decoder()
    out = dec.feed(b"x" * (mtsics.MAX_LINE + 10))
    assert [e.kind for e in errors(out)] == ["oversized"]
    out = dec.feed(b"y" * 50)
    assert [e.kind for e in errors(out)] == ["oversized"] and dec.buffered == 0
    out = dec.feed(b"zz\r\n" + CATALOGUE[0][1])
    assert [o.type for o in out] == ["error", "weight"]
    assert out[0].raw == b"zz\r\n"  # type: ignore[union-attr]


def test_truncated_at_end_of_stream_is_reported_by_flush() -> None:
    dec = mtsics.Decoder()
    assert dec.feed(b"S S 100") == []
    (err,) = dec.flush()
    assert err.kind == "truncated" and err.raw == b"S S 100"


def test_buffer_is_capped() -> None:
    dec = mtsics.Decoder()
    for _ in range(40):
        dec.feed(b"1234567")
        assert dec.buffered < mtsics.MAX_LINE


# -- real lines from shared/captures --------------------------------------------------------
def test_capture_file_decodes_as_documented() -> None:
    lines = capture_lines("scale_mettler_toledo.txt")
    sics = lines[4:]
    assert sics[0] == "S S 100.00 g"
    assert feed_all(mtsics.Decoder, sics[0].encode() + b"\r\n") == [weight(100.0)]
    pairs = [ln.split(" => ") for ln in sics[1:]]
    assert [p[0] for p in pairs] == ["S", "Z", "T", "I4"]
    commands = feed_all(device, b"".join(c.encode() + b"\r\n" for c, _ in pairs))
    assert commands == [mtsics.Command("S"), mtsics.Command("Z"), mtsics.Command("T"),
                        mtsics.Command("I4")]
    replies = feed_all(mtsics.Decoder, b"".join(r.encode() + b"\r\n" for _, r in pairs))
    assert replies == [
        # "S A" is InstrumentKit's fixture; the MT-SICS reference answers S with "S S"
        weight(1.234, stable=None),
        ScaleStatus("ok", "A", "Z"),
        mtsics.Tare("T", 2.486, "g", weight_to_kg(2.486, "g"), None),
        mtsics.Info("I4", "A", ("0123456789",)),
    ]
    assert replies[0].weight_kg == pytest.approx(0.001234)  # type: ignore[attr-defined]


def test_decode_frame_arg() -> None:
    assert mtsics.decode_frame_arg("S S     100.00 g") == [weight(100.0)]
    assert mtsics.decode_frame_arg("SI", sent_by="host") == [mtsics.Command("SI")]


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        mtsics.encode_command("S\r\nZ")
    with pytest.raises(ValueError):
        mtsics.encode_command("I10", "x" * 200)
    with pytest.raises(ValueError):
        mtsics.encode_info(100)
    with pytest.raises(ValueError):
        mtsics.encode_error("EX")
    with pytest.raises(ValueError):
        mtsics.encode_status("S", "Q")
    with pytest.raises(ValueError):
        mtsics.encode_info_reply("I2", 'a "quoted" name')
    with pytest.raises(ValueError):
        mtsics.encode_tare_reply(1.0, status="I")
    with pytest.raises(ValueError):
        mtsics.Decoder("sideways")  # type: ignore[arg-type]


# -- property tests ----------------------------------------------------------------------------
_frames = st.lists(st.sampled_from([c[1] for c in CATALOGUE]), min_size=1, max_size=8)
# garbage for a line protocol is a junk line: it cannot be glued to the next reply, so each
# chunk is empty or ends in LF and holds one non-text byte (a stray lone byte would otherwise
# merge with the line after it, which is not "garbage between frames")
_garbage = st.one_of(
    st.just(b""),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"") + b"\x80\n"),
)


@given(frames=_frames, data=st.data())
def test_garbage_between_frames(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_garbage) for _ in frames]
    check_garbage_between(mtsics.Decoder, frames, garbage)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_arbitrary_bytes_never_raise(blob: bytes, chunk: int) -> None:
    check_never_raises(mtsics.Decoder, blob, chunk)
    check_never_raises(device, blob, chunk)


@given(text=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=100))
def test_any_printable_line_decodes_or_is_reported(text: str) -> None:
    out = feed_all(mtsics.Decoder, text.encode() + b"\r\n")
    assert len(out) <= 1
    for e in errors(out):
        assert e.kind == "bad_field" and e.raw == text.encode() + b"\r\n"
    assert len(messages(feed_all(device, text.encode() + b"\r\n"))) == (1 if text.strip()
                                                                        else 0)


@given(value=st.integers(-10**7, 10**7), decimals=st.integers(0, 4), stable=st.booleans())
def test_any_weight_roundtrips(value: int, decimals: int, stable: bool) -> None:
    w = value / 10 ** decimals
    (msg,) = feed_all(mtsics.Decoder, mtsics.encode_weight(w, "kg", stable=stable,
                                                           decimals=decimals))
    assert msg == weight(w, "kg", stable)
