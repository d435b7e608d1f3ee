"""Digi-Star EZ indicator codec: the standard codec test set plus the shared capture."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import digistar as ds
from protocols._base import Message
from protocols._cli import parse_text
from protocols.messages import LB_TO_KG, ScaleStatus, Weight
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


def lb(weight: float, *, stable: bool | None = None, mode: str | None = None,
       scale: str | None = None) -> Weight:
    return Weight(weight=weight, unit="lb", weight_kg=round(weight * LB_TO_KG, 6),
                  stable=stable, mode=mode, scale=scale)


def shown(weight: float, *, stable: bool = True, scale: str | None = None) -> Weight:
    """A SCOREM 1 display weight: no unit on the wire."""
    return Weight(weight=weight, unit=None, weight_kg=None, stable=stable, scale=scale)


# (id, frame, expected message) -- indicator -> host frames giving exactly one message
CATALOGUE: list[tuple[str, bytes, Message]] = [
    ("display", ds.encode_display(1530), shown(1530.0)),
    ("display_zero", ds.encode_display(0), shown(0.0)),
    ("display_six_digits", ds.encode_display(123450), shown(123450.0)),
    ("display_negative", ds.encode_display(-1530), shown(-1530.0)),
    ("display_locked", ds.encode_display(1530, locked=True), shown(1530.0, scale="locked")),
    # motion overwrites the ones digit: 1537 in motion goes out as "  153-" and reads 1530
    ("display_motion", ds.encode_display(1537, motion=True), shown(1530.0, stable=False)),
    ("display_negative_motion", ds.encode_display(-1537, motion=True),
     shown(-1530.0, stable=False)),
    ("display_tr", ds.encode_display(1530, tr=True), shown(1500.0, scale="tr")),
    ("display_locked_tr", ds.encode_display(1530, locked=True, tr=True),
     shown(1500.0, scale="locked,tr")),
    ("display_decimal", ds.encode_display(142.5, decimals=1), shown(142.5)),
    ("display_decimal_negative", ds.encode_display(-142.5, decimals=1), shown(-142.5)),
    ("display_decimal_motion", ds.encode_display(142.5, decimals=1, motion=True),
     shown(142.0, stable=False)),
    ("display_decimal_tr", ds.encode_display(142.5, decimals=1, tr=True),
     shown(140.5, scale="tr")),
    ("serial_gross_lb", ds.encode_serial_gross(123456), lb(123456.0, mode="gross")),
    ("serial_gross_kg", ds.encode_serial_gross(8120, unit="kg"),
     Weight(weight=8120.0, unit="kg", weight_kg=8120.0, stable=None, mode="gross")),
    ("serial_gross_negative", ds.encode_serial_gross(-40), lb(-40.0, mode="gross")),
    ("multi_one_scale_selected", ds.encode_multi_scale([(280, "lb", "GR")]),
     lb(280.0, mode="gross", scale="A*")),
    ("multi_one_scale_unselected", ds.encode_multi_scale([(11300, "kg", "NE")], selected=None),
     Weight(weight=11300.0, unit="kg", weight_kg=11300.0, stable=None, mode="net",
            scale="A")),
    ("multi_one_scale_setup", ds.encode_multi_scale([(999999, "lb", "ES")]),
     ScaleStatus(status="busy", detail="A*:ES")),
    ("multi_one_scale_error", ds.encode_multi_scale([(999999, "lb", "ER")], selected=None),
     ScaleStatus(status="error", detail="A:ER")),
    ("ack", ds.encode_ack(), ds.Ack()),
    ("nak", ds.encode_nak(), ds.Nak()),
    ("eid_data_field", ds.encode_eid_data_field("LOADS THIS DATA INTO SCALE"),
     ds.EidDataField("LOADS THIS DATA INTO SCALE")),
    ("eid_data_field_padded", ds.encode_eid_data_field("PEN 4"),
     ds.EidDataField("PEN 4".ljust(26))),
]

# frames that give several messages, in wire order
MULTI: list[tuple[str, bytes, list[Message]]] = [
    ("csv_gross", ds.encode_csv(280, rotations=187, date="03JL03", time="3:41:21"),
     [lb(280.0, mode="gross"), ds.MixerRecord("GR", 187, "03JL03", "3:41:21")]),
    ("csv_net_kg", ds.encode_csv(-15.5, unit="kg", tag="NE", rotations=0, date="14FE24",
                                 time="23:59:59"),
     [Weight(weight=-15.5, unit="kg", weight_kg=-15.5, stable=None, mode="net"),
      ds.MixerRecord("NE", 0, "14FE24", "23:59:59")]),
    ("csv_other_tag", ds.encode_csv(9000, tag="M+", rotations=12, date="01JA09", time="0:00:01"),
     [lb(9000.0), ds.MixerRecord("M+", 12, "01JA09", "0:00:01")]),
    ("multi_two_scales", ds.encode_multi_scale([(280, "lb", "GR"), (11300, "lb", "NE")],
                                               selected=1),
     [lb(280.0, mode="gross", scale="A"), lb(11300.0, mode="net", scale="B*")]),
    ("multi_three_scales_calibrating_and_error",
     ds.encode_multi_scale([(280, "lb", "GC"), (11300, "lb", "NC"), (999999, "lb", "ER")]),
     [lb(280.0, mode="gross", scale="A*"), lb(11300.0, mode="net", scale="B"),
      ScaleStatus(status="error", detail="C:ER")]),
    ("multi_setup_and_load_tag", ds.encode_multi_scale([(999999, "kg", "ES"), (50, "kg", "LU")],
                                                       selected=1),
     [ScaleStatus(status="busy", detail="A:ES"),
      Weight(weight=50.0, unit="kg", weight_kg=50.0, stable=None, mode=None, scale="B*")]),
]

# host -> indicator commands, decoded by the device role
COMMANDS: list[tuple[str, bytes, ds.EscapeCommand]] = [
    ("control_mode_enter", ds.encode_control_mode(), ds.EscapeCommand("Cc", "E")),
    ("control_mode_leave", ds.encode_control_mode(False), ds.EscapeCommand("Cc", "D")),
    ("control_message", ds.encode_control_message("LOAD CORN"),
     ds.EscapeCommand("Cm", "", "LOAD CORN")),
    ("control_message_60", ds.encode_control_message("X" * 60),
     ds.EscapeCommand("Cm", "", "X" * 60)),
    ("upload_feedline",
     ds.encode_upload_feedline("000001,U,I,T,1001,CORN  ,HICOW , 2500,      , 7350"),
     ds.EscapeCommand("Rd", "", "000001,U,I,T,1001,CORN  ,HICOW , 2500,      , 7350")),
    ("dump_eid", ds.encode_dump_eid(), ds.EscapeCommand("Eb", "-99999")),
    ("upload_eid_field", ds.encode_upload_eid_field(10, "LOADS THIS DATA INTO SCALE"),
     ds.EscapeCommand("Ea", "10", "LOADS THIS DATA INTO SCALE")),
    ("select_scale", ds.encode_escape("GA"), ds.EscapeCommand("GA")),
]


def host() -> ds.Decoder:
    return ds.Decoder()


def device() -> ds.Decoder:
    return ds.Decoder("device")


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_roundtrip(frame: bytes, expected: Message) -> None:
    check_roundtrip(host, frame, expected)
    check_prefixes_incomplete(host, frame)


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in MULTI], ids=[c[0] for c in MULTI])
def test_roundtrip_multi_message_frames(frame: bytes, expected: list[Message]) -> None:
    dec = host()
    assert dec.feed(frame) + dec.flush() == expected
    assert dec.messages == len(expected) and dec.errors == 0
    check_prefixes_incomplete(host, frame)


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in COMMANDS],
                         ids=[c[0] for c in COMMANDS])
def test_device_role_decodes_commands(frame: bytes, expected: ds.EscapeCommand) -> None:
    check_roundtrip(device, frame, expected)
    check_prefixes_incomplete(device, frame)


def test_display_unit_option_sets_unit_and_kg() -> None:
    (msg,) = feed_all(lambda: ds.Decoder(unit="lb"), ds.encode_display(1530))
    assert msg == lb(1530.0, stable=True)
    (msg,) = feed_all(lambda: ds.Decoder(unit="kg"), ds.encode_display(-142.5, decimals=1))
    assert msg == Weight(weight=-142.5, unit="kg", weight_kg=-142.5, stable=True)
    # frames that carry their own unit ignore the option
    (msg,) = feed_all(lambda: ds.Decoder(unit="kg"), ds.encode_serial_gross(100))
    assert msg == lb(100.0, mode="gross")


def test_manual_display_examples() -> None:
    """The manual's SCOREM 1 examples (p. 29), six positions, and as whitespace-collapsed in
    the capture. TR / motion overwrite a digit, read as 0."""
    cases = {
        b"  1530": shown(1530.0), b"- 1530": shown(-1530.0),
        b"$ 1530": shown(1530.0, scale="locked"), b"  15-0": shown(1500.0, scale="tr"),
        b"  153-": shown(1530.0, stable=False), b"  142.5": shown(142.5),
        b"- 142.5": shown(-142.5), b"$ 142.5": shown(142.5, scale="locked"),
        b"  14-.5": shown(140.5, scale="tr"), b" 153-": shown(1530.0, stable=False),
        b" 15-0": shown(1500.0, scale="tr"), b"-  153-": shown(-1530.0, stable=False),
        b"999999": shown(999999.0),
    }
    for body, expected in cases.items():
        assert feed_all(host, b"\x02" + body + b"\r") == [expected], body


def test_decimal_motion_in_decimal_point_place_needs_decimals_option() -> None:
    """The manual prints a decimal value in motion as " 142-5": the '-' stands where the
    decimal point was. Without knowing the display has one decimal that frame is the TR
    form of an integer display; with ``decimals=1`` it reads 142.5 in motion."""
    frame = b"\x02 142-5\r"
    assert feed_all(host, frame) == [shown(14205.0, scale="tr")]
    assert feed_all(lambda: ds.Decoder(decimals=1), frame) == [shown(142.5, stable=False)]
    # with decimals=1 the other forms are unchanged
    assert feed_all(lambda: ds.Decoder(decimals=1), b"\x02 14-.5\r") == [
        shown(140.5, scale="tr")]
    assert feed_all(lambda: ds.Decoder(decimals=1), b"\x02 142.-\r") == [
        shown(142.0, stable=False)]


def test_checksum_matches_manual_example() -> None:
    assert ds.checksum(b"LOADS THIS DATA INTO SCALE") == ord("G")
    assert ds.encode_upload_eid_field(10, "LOADS THIS DATA INTO SCALE") == (
        b"\x1bEa10\x02LOADS THIS DATA INTO SCALE\x03G\x04")
    assert all(0x40 <= ds.checksum(bytes((b,))) <= 0x7F for b in range(256))


def test_encoders_match_manual_bytes() -> None:
    assert ds.encode_control_mode() == b"\x1bCcE\x04"
    assert ds.encode_control_mode(False) == b"\x1bCcD\x04"
    assert ds.encode_control_message("LOAD CORN") == b"\x1bCm\x02LOAD CORN\x04"
    assert ds.encode_dump_eid() == b"\x1bEb-99999\x04"
    assert ds.encode_serial_gross(123456) == b"\x02123456LB SG\x03}\r"
    assert ds.encode_display(1530) == b"\x02  1530\r"
    assert ds.encode_display(1537, motion=True) == b"\x02  153-\r"
    assert ds.encode_display(1530, tr=True) == b"\x02  15-0\r"
    assert ds.encode_display(142.5, decimals=1) == b"\x02  142.5\r"
    assert ds.encode_display(142.5, decimals=1, tr=True) == b"\x02  14-.5\r"
    assert ds.encode_csv(280, rotations=187, date="03JL03", time="3:41:21") == (
        b"   280,LB,GR, 187,03JL03, 3:41:21\r\n")
    feed = ds.encode_upload_feedline("0001,CORN")
    assert feed[:4] == b"\x1bRd\x02" and feed[-4:-2] == b"\r\x03"
    assert feed[-2] == ds.checksum(b"0001,CORN\r") and feed[-1] == ds.EOT


def test_bytewise_equals_oneshot() -> None:
    stream = (b"\x80\x81" + b"".join(c[1] for c in CATALOGUE) + b"".join(c[1] for c in MULTI)
              + b"\x02123456LB SG\x03C\r" + b" 280,LB" + b"\x02 15" + CATALOGUE[0][1]
              + b"\r\n\n" + b"A" * 300 + b"\r\n" + MULTI[0][1])
    check_bytewise_equals_oneshot(host, stream)
    cmds = b"\x00" + b"".join(c[1] for c in COMMANDS) + b"\x1bCm\x02AB" + COMMANDS[0][1]
    check_bytewise_equals_oneshot(device, cmds)


GOOD = CATALOGUE[0][1]

MALFORMED = [
    ("placeholder_checksum", b"\x02123456LB SG\x03C\r", "bad_checksum"),
    ("two_chars_after_etx", b"\x02123456LB SG\x03}}\r", "bad_length"),
    ("nothing_after_etx", b"\x02123456LB SG\x03\r", "bad_length"),
    ("display_letters", b"\x02  HOLD\r", "bad_field"),
    ("display_empty", b"\x02\r", "bad_field"),
    ("display_blank", b"\x02      \r", "bad_field"),
    ("display_dash_inside", b"\x02 1-530\r", "bad_field"),
    ("display_too_long", b"\x02 1234567890\r", "bad_field"),
    ("multi_four_scales", ds._stx_frame(",".join([" 1LB GR"] * 4)), "bad_field"),
    ("multi_bad_unit", ds._stx_frame(" 280OZ GR"), "bad_field"),
    ("multi_no_number", ds._stx_frame(">   .LB GR"), "bad_field"),
    ("serial_gross_selected", ds._stx_frame(">123456LB SG"), "bad_field"),
    ("serial_gross_with_second_scale", ds._stx_frame("123456LB SG, 280LB GR"), "bad_field"),
    ("csv_bad_unit", b" 280,OZ,GR, 187,03JL03, 3:41:21\r\n", "bad_field"),
    ("csv_bad_time", b" 280,LB,GR, 187,03JL03, 3.41.21\r\n", "bad_field"),
    ("csv_bad_rotations", b" 280,LB,GR, x87,03JL03, 3:41:21\r\n", "bad_field"),
    ("csv_no_weight", b" abc,LB,GR, 187,03JL03, 3:41:21\r\n", "bad_field"),
    ("line_three_fields", b"280,LB,GR\r\n", "bad_field"),
    ("eid_field_bad_check", b"LOADS THIS DATA INTO SCALE,C\r\n", "bad_checksum"),
    ("stx_frame_interrupted", b"\x02 15", "truncated"),
    ("csv_line_interrupted", b" 280,LB", "truncated"),
    ("high_byte_inside_frame", b"\x02 15\x8030\r", "truncated"),
    ("garbage_only", b"\x80\x81\x00", "garbage"),
    ("oversized_stx_frame", b"\x02" + b"1" * 100 + b"\r", "oversized"),
    ("oversized_line", b"1" * 200 + b"\r\n", "oversized"),
]


@pytest.mark.parametrize(("data", "kind"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed(data: bytes, kind: str) -> None:
    out = feed_all(host, data + GOOD)
    errs = errors(out)
    assert errs and errs[0].kind == kind and errs[0].protocol == "digistar"
    assert out[-1] == CATALOGUE[0][2], "the good frame after the bad input must still decode"


GOOD_CMD = COMMANDS[0][1]

MALFORMED_COMMANDS = [
    ("command_not_letters", b"\x1b1cE\x04", "bad_field"),
    ("command_too_short", b"\x1bC\x04", "bad_field"),
    ("feedline_bad_check", b"\x1bRd\x02LINE\r\x03A\x04", "bad_checksum"),
    ("two_chars_after_etx", b"\x1bRd\x02LINE\r\x03AA\x04", "bad_length"),
    ("cr_outside_text", b"\x1bCc\rE\x04", "bad_field"),
    ("interrupted", b"\x1bCm\x02LOAD", "truncated"),
    ("high_byte", b"\x1bCm\x02LO\xc3\x84D\x04", "truncated"),
    ("oversized", b"\x1bCm\x02" + b"X" * 300 + b"\x04", "oversized"),
    ("garbage_only", b"\x06\x15 ok\r\n", "garbage"),
]


@pytest.mark.parametrize(("data", "kind"), [m[1:] for m in MALFORMED_COMMANDS],
                         ids=[m[0] for m in MALFORMED_COMMANDS])
def test_malformed_commands(data: bytes, kind: str) -> None:
    out = feed_all(device, data + GOOD_CMD)
    errs = errors(out)
    assert errs and errs[0].kind == kind and errs[0].protocol == "digistar"
    assert out[-1] == COMMANDS[0][2]


@pytest.mark.parametrize(("mode", "ok", "wrong"), [
    (1, ds.encode_display(1530), ds.encode_serial_gross(1530)),
    ("display", ds.encode_display(1530), MULTI[0][1]),
    (8, MULTI[0][1], ds.encode_display(1530)),
    (11, ds.encode_serial_gross(1530), MULTI[3][1]),
    ("12", ds.encode_serial_gross(1530), ds.encode_display(1530)),
    (38, MULTI[3][1], ds.encode_serial_gross(1530)),
])
def test_explicit_mode_rejects_other_families(mode: str | int, ok: bytes, wrong: bytes) -> None:
    factory = lambda: ds.Decoder(mode=mode)  # noqa: E731
    assert errors(feed_all(factory, ok)) == []
    out = feed_all(factory, wrong + ok + ds.encode_ack() + ds.encode_eid_data_field("X"))
    assert out[0].kind == "bad_field" and "expects" in out[0].detail
    assert errors(out[1:]) == []
    assert out[-2:] == [ds.Ack(), ds.EidDataField("X".ljust(26))]


def test_stray_line_ends_are_skipped() -> None:
    out = feed_all(host, GOOD + b"\n" + GOOD + b"\r\n\r\n" + GOOD)
    assert out == [CATALOGUE[0][2]] * 3


def test_csv_line_ended_by_cr_only_or_lf_only() -> None:
    line = MULTI[0][1][:-2]
    for end in (b"\r", b"\n"):
        out = feed_all(host, line + end + GOOD)
        assert out == [*MULTI[0][2], CATALOGUE[0][2]]
    # at the very end of the stream a line still waiting for its LF is truncated
    dec = host()
    assert dec.feed(line + b"\r") == []
    (err,) = errors(dec.flush())
    assert err.kind == "truncated" and err.raw == line + b"\r"


def test_buffer_is_capped() -> None:
    dec = host()
    assert dec.feed(b"\x02" + b"1" * 50) == [] and dec.buffered == 51
    out = host().feed(b"\x80" * (ds.MAX_BUFFER + 10))
    assert [e.kind for e in errors(out)] == ["garbage"]
    dec = device()
    errs = errors(dec.feed(b"\x1bCm\x02" + b"X" * 2000))
    assert [e.kind for e in errs] == ["oversized", "garbage"] and dec.buffered == 0
    assert len(errs[0].raw) == ds.MAX_COMMAND + 1


def test_batch_counts_every_message() -> None:
    dec = host()
    out = dec.feed(MULTI[4][1] + GOOD)
    assert len(out) == 4 and dec.messages == 4 and dec.errors == 0
    assert not any(type(o).__name__ == "_Batch" for o in out)


# -- the shared capture -----------------------------------------------------------------------
def _capture() -> list[bytes]:
    return [parse_text(ln, terminator=b"") for ln in capture_lines("digistar_indicator.txt")]


def test_capture_file_decodes_as_documented() -> None:
    frames = _capture()
    assert len(frames) == 8
    display, locked, decimal, csv, serial_gross, multi, cc, cm = frames
    assert feed_all(host, display) == [shown(1530.0)]
    assert feed_all(host, locked) == [shown(1530.0, scale="locked")]
    assert feed_all(host, decimal) == [shown(142.5)]
    assert feed_all(host, csv) == [lb(280.0, mode="gross"),
                                   ds.MixerRecord("GR", 187, "03JL03", "3:41:21")]
    assert feed_all(lambda: ds.Decoder(mode=7), csv)[0] == lb(280.0, mode="gross")
    # the manual's "C" is a placeholder for the check character: these two frames fail
    (err,) = feed_all(host, serial_gross)
    assert err.kind == "bad_checksum" and "'}'" in err.detail
    (err,) = feed_all(host, multi)
    assert err.kind == "bad_checksum" and "'E'" in err.detail
    # ... and decode once the real check character is put in its place
    assert feed_all(host, serial_gross.replace(b"\x03C", b"\x03}")) == [
        lb(123456.0, mode="gross")]
    assert feed_all(host, multi.replace(b"\x03C", b"\x03E")) == [
        lb(280.0, mode="gross", scale="A"), lb(11300.0, mode="net", scale="B*")]
    assert feed_all(device, cc) == [ds.EscapeCommand("Cc", "E")]
    assert feed_all(device, cm) == [ds.EscapeCommand("Cm", "", "LOAD CORN")]
    # the whole indicator side as one stream: good frames survive the bad ones
    out = feed_all(host, b"".join(frames[:6]))
    assert [o.type for o in out] == ["weight"] * 4 + ["mixer_record", "error", "error"]


def test_no_placement_of_stx_etx_gives_the_capture_checksum() -> None:
    payload = b"123456LB SG"
    variants = [payload, b"\x02" + payload, payload + b"\x03", b"\x02" + payload + b"\x03"]
    assert ord("C") not in {ds.checksum(v) for v in variants}


# -- command-line FRAME argument -----------------------------------------------------------
def test_decode_frame_arg() -> None:
    assert ds.decode_frame_arg("<STX> 1530<CR>") == [shown(1530.0)]
    assert ds.decode_frame_arg("<STX> 153-") == [shown(1530.0, stable=False)]
    assert ds.decode_frame_arg(" 280,LB,GR, 187,03JL03, 3:41:21")[1] == ds.MixerRecord(
        "GR", 187, "03JL03", "3:41:21")
    assert ds.decode_frame_arg("<ACK>") == [ds.Ack()]
    assert ds.decode_frame_arg("15") == [ds.Nak()]  # hex
    assert ds.decode_frame_arg("02 20 31 35 33 30 0D") == [shown(1530.0)]
    assert ds.decode_frame_arg("<ESC>CcE<EOT>", sent_by="host") == [ds.EscapeCommand("Cc", "E")]
    assert ds.decode_frame_arg("1B 45 62 2D 39 39 39 39 39 04", sent_by="host") == [
        ds.EscapeCommand("Eb", "-99999")]
    (err,) = ds.decode_frame_arg("<STX>123456LB SG<ETX>C<CR>")
    assert err.kind == "bad_checksum"  # type: ignore[union-attr]
    assert ds.decode_frame_arg("<ESC>CcE", sent_by="host")[0].kind == "truncated"  # type: ignore[union-attr]


# -- argument checks ------------------------------------------------------------------------
def test_constructor_and_encoders_reject_bad_arguments() -> None:
    for bad in ({"mode": 2}, {"mode": "scoreboard"}, {"unit": "g"}, {"decimals": 7}):
        with pytest.raises(ValueError):
            ds.Decoder(**bad)
    with pytest.raises(ValueError):
        ds.Decoder("sideways")  # type: ignore[arg-type]
    assert ds.family_of("auto") is None and ds.family_of(31) == "display"
    assert ds.family_of("39") == "multi_scale"
    bad_calls: list[Callable[[], object]] = [
        lambda: ds.encode_display(1234567), lambda: ds.encode_display(-123456),
        lambda: ds.encode_display(-5, locked=True), lambda: ds.encode_display(1, decimals=9),
        lambda: ds.encode_serial_gross(1_000_000), lambda: ds.encode_serial_gross(1, unit="g"),
        lambda: ds.encode_multi_scale([]), lambda: ds.encode_multi_scale([(1, "lb", "GR")] * 4),
        lambda: ds.encode_multi_scale([(1, "lb", "SG")]),
        lambda: ds.encode_control_message(""), lambda: ds.encode_control_message("X" * 61),
        lambda: ds.encode_control_message("{braces}"), lambda: ds.encode_escape("C"),
        lambda: ds.encode_upload_eid_field(21, "X" * 26),
        lambda: ds.encode_upload_eid_field(1, "short"),
        lambda: ds.encode_upload_feedline(""), lambda: ds.encode_eid_data_field("X" * 27),
        lambda: ds.encode_csv(1, date="03,JL", time="1:00:00"),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()


# -- property tests ----------------------------------------------------------------------------
_HOST_SYNC = frozenset({0x02, 0x06, 0x15, 0x0A, 0x0D, *range(0x20, 0x7F)})
_host_frames = st.lists(st.sampled_from([c[1] for c in CATALOGUE] + [c[1] for c in MULTI]),
                        min_size=1, max_size=8)
_host_garbage = st.binary(max_size=40).map(lambda b: bytes(x for x in b if x not in _HOST_SYNC))
_cmd_frames = st.lists(st.sampled_from([c[1] for c in COMMANDS]), min_size=1, max_size=8)
_cmd_garbage = st.binary(max_size=40).map(lambda b: b.replace(b"\x1b", b""))


@given(frames=_host_frames, data=st.data())
def test_garbage_between_frames(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_host_garbage) for _ in frames]
    check_garbage_between(host, frames, garbage)


@given(frames=_cmd_frames, data=st.data())
def test_garbage_between_commands(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_cmd_garbage) for _ in frames]
    check_garbage_between(device, frames, garbage)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_arbitrary_bytes_never_raise(blob: bytes, chunk: int) -> None:
    check_never_raises(host, blob, chunk)
    check_never_raises(device, blob, chunk)


_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


@given(body=_printable, mode=st.sampled_from(["auto", 1, 7, 11, 37]))
def test_arbitrary_text_frames_never_raise(body: str, mode: str | int) -> None:
    """Printable junk inside real framing reaches every body parser."""
    raw = body.encode("ascii")
    factory = lambda: ds.Decoder(mode=mode, decimals=1)  # noqa: E731
    for frame in (b"\x02" + raw + b"\r", ds._stx_frame(body), raw + b"\r\n",
                  b"\x1bCm" + raw + b"\x04"):
        out = feed_all(factory, frame) + feed_all(device, frame)
        assert all(isinstance(o, Message) or o.kind for o in out)
    assert messages(feed_all(factory, ds._stx_frame(body) + ds.encode_ack()))[-1] == ds.Ack()
