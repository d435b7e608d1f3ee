"""LLRP subset codec: the standard codec test set plus the shared captures."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import llrp
from protocols._base import Message
from protocols.messages import TagRead
from tests.codec_harness import (
    capture_lines,
    check_bytewise_equals_oneshot,
    check_garbage_between,
    check_never_raises,
    check_prefixes_incomplete,
    errors,
    feed_all,
    messages,
)

EPC96 = bytes.fromhex("3005FB63AC1F3841EC880467")
EPC144 = bytes.fromhex("1FB41F712AC9C37AB79D618173188324001A")
T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def _reader(role: str = "client") -> llrp.Decoder:
    return llrp.Decoder(role)  # type: ignore[arg-type]


def _read(epc: bytes, **kw: object) -> TagRead:
    return TagRead(epc=epc.hex().upper(), **kw)  # type: ignore[arg-type]


# (id, frame, expected messages) -- reader -> client, decoded by the client role
CATALOGUE: list[tuple[str, bytes, list[Message]]] = [
    ("event_connection_ok", llrp.encode_reader_event_notification(7, T0_US),
     [llrp.ReaderEvent(7, T0_US, True, 0, ("ConnectionAttemptEvent",))]),
    ("event_connection_refused", llrp.encode_reader_event_notification(8, T0_US,
                                                                       connection_status=2),
     [llrp.ReaderEvent(8, T0_US, True, 2, ("ConnectionAttemptEvent",))]),
    ("event_connection_close", llrp.encode_reader_event_notification(
        9, T0_US, connection_status=None, connection_close=True),
     [llrp.ReaderEvent(9, T0_US, True, None, ("ConnectionCloseEvent",))]),
    ("report_epc96_all_fields", llrp.encode_ro_access_report(1, [llrp.TagReport(
        EPC96, antenna=3, peak_rssi_dbm=-61, first_seen_us=T0_US + 1_999, seen_count=4,
        pc=0x3000)]),
     [_read(EPC96, antenna=3, rssi_dbm=-61.0, read_count=4, device_ts_ms=T0_US // 1000 + 1,
            pc=0x3000)]),
    ("report_epcdata_144bit", llrp.encode_ro_access_report(2, [llrp.TagReport(
        EPC144, antenna=1, peak_rssi_dbm=-17, first_seen_us=T0_US, seen_count=1)]),
     [_read(EPC144, antenna=1, rssi_dbm=-17.0, read_count=1, device_ts_ms=T0_US // 1000)]),
    ("report_epc_only", llrp.encode_ro_access_report(3, [llrp.TagReport(b"\x01\x02")]),
     [_read(b"\x01\x02")]),
    ("report_positive_rssi_and_big_antenna", llrp.encode_ro_access_report(
        4, [llrp.TagReport(EPC96, antenna=0xFFFF, peak_rssi_dbm=5)]),
     [_read(EPC96, antenna=0xFFFF, rssi_dbm=5.0)]),
    ("report_three_tags", llrp.encode_ro_access_report(5, [
        llrp.TagReport(EPC96, antenna=1, peak_rssi_dbm=-40),
        llrp.TagReport(EPC144, antenna=2, peak_rssi_dbm=-50),
        llrp.TagReport(bytes(12), antenna=4, peak_rssi_dbm=-128)]),
     [_read(EPC96, antenna=1, rssi_dbm=-40.0), _read(EPC144, antenna=2, rssi_dbm=-50.0),
      _read(bytes(12), antenna=4, rssi_dbm=-128.0)]),
    ("report_empty", llrp.encode_ro_access_report(6, []), []),
    ("keepalive", llrp.encode_keepalive(0xFFFFFFFF), [llrp.Keepalive(0xFFFFFFFF)]),
    ("add_rospec_ok", llrp.encode_response("ADD_ROSPEC_RESPONSE", 11),
     [llrp.LlrpResponse("ADD_ROSPEC_RESPONSE", 11, 0, "", "M_Success")]),
    ("start_rospec_refused", llrp.encode_response("START_ROSPEC_RESPONSE", 12, 300,
                                                  "ROSpec 9 is not enabled"),
     [llrp.LlrpResponse("START_ROSPEC_RESPONSE", 12, 300, "ROSpec 9 is not enabled",
                        "A_Invalid")]),
    ("close_connection_ok", llrp.encode_response("CLOSE_CONNECTION_RESPONSE", 13),
     [llrp.LlrpResponse("CLOSE_CONNECTION_RESPONSE", 13, 0, "", "M_Success")]),
    ("error_message_utf8", llrp.encode_error_message(14, 109, "unsupported — message"),
     [llrp.LlrpResponse("ERROR_MESSAGE", 14, 109, "unsupported — message",
                        "M_UnsupportedMessage")]),
    ("capabilities", llrp.encode_get_reader_capabilities_response(
        15, max_antennas=2, manufacturer=25882, model=2001, firmware="7.1.0"),
     [llrp.LlrpResponse("GET_READER_CAPABILITIES_RESPONSE", 15, 0, "", "M_Success",
                        llrp.ReaderCapabilities(2, 25882, 2001, "7.1.0", True))]),
    ("custom_message_is_generic", llrp.encode_message("CUSTOM_MESSAGE", 16, b"\x00\x00\x65\x1a"
                                                      b"\x15"),
     [llrp.LlrpMessage(1023, 16, b"\x00\x00\x65\x1a\x15", "CUSTOM_MESSAGE")]),
    ("unnamed_type_is_generic", llrp.encode_message(900, 17, b"\xab"),
     [llrp.LlrpMessage(900, 17, b"\xab", "")]),
    ("request_seen_by_client_is_generic", llrp.encode_start_rospec(18, 1),
     [llrp.LlrpMessage(22, 18, b"\x00\x00\x00\x01", "START_ROSPEC")]),
]

SPEC_DEFAULT = llrp.RoSpec(1)
SPEC_CUSTOM = llrp.RoSpec(0xDEADBEEF, priority=3, start_trigger=llrp.START_TRIGGER_IMMEDIATE,
                          stop_trigger=1, stop_duration_ms=5000, antennas=(1, 2, 4),
                          inventory_parameter_spec_id=9, report_trigger=1, report_n=0,
                          report_fields=llrp.REPORT_FIELDS)

# (id, frame, expected) -- client -> reader, decoded by the reader role
REQUESTS: list[tuple[str, bytes, Message]] = [
    ("get_capabilities", llrp.encode_get_reader_capabilities(1),
     llrp.LlrpRequest("GET_READER_CAPABILITIES", 1, requested_data=0)),
    ("get_capabilities_general", llrp.encode_get_reader_capabilities(2, 1),
     llrp.LlrpRequest("GET_READER_CAPABILITIES", 2, requested_data=1)),
    ("delete_all", llrp.encode_delete_rospec(3), llrp.LlrpRequest("DELETE_ROSPEC", 3,
                                                                   rospec_id=0)),
    ("add_default", llrp.encode_add_rospec(4, SPEC_DEFAULT),
     llrp.LlrpRequest("ADD_ROSPEC", 4, rospec=SPEC_DEFAULT)),
    ("add_custom", llrp.encode_add_rospec(5, SPEC_CUSTOM),
     llrp.LlrpRequest("ADD_ROSPEC", 5, rospec=SPEC_CUSTOM)),
    ("enable", llrp.encode_enable_rospec(6, 1), llrp.LlrpRequest("ENABLE_ROSPEC", 6,
                                                                  rospec_id=1)),
    ("start", llrp.encode_start_rospec(7, 1), llrp.LlrpRequest("START_ROSPEC", 7,
                                                                rospec_id=1)),
    ("stop", llrp.encode_stop_rospec(8, 1), llrp.LlrpRequest("STOP_ROSPEC", 8, rospec_id=1)),
    ("disable", llrp.encode_disable_rospec(9, 1), llrp.LlrpRequest("DISABLE_ROSPEC", 9,
                                                                    rospec_id=1)),
    ("keepalive_ack", llrp.encode_keepalive_ack(10), llrp.LlrpRequest("KEEPALIVE_ACK", 10)),
    ("close", llrp.encode_close_connection(11), llrp.LlrpRequest("CLOSE_CONNECTION", 11)),
    ("enable_events", llrp.encode_enable_events_and_reports(12),
     llrp.LlrpRequest("ENABLE_EVENTS_AND_REPORTS", 12)),
    ("set_reader_config_is_generic", llrp.encode_message("SET_READER_CONFIG", 13, b"\x80"),
     llrp.LlrpMessage(3, 13, b"\x80", "SET_READER_CONFIG")),
]


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_roundtrip(frame: bytes, expected: list[Message]) -> None:
    out = feed_all(llrp.Decoder, frame)
    assert out == expected, f"{frame.hex(' ')} decoded to {out!r}"
    check_prefixes_incomplete(llrp.Decoder, frame)


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in REQUESTS],
                         ids=[c[0] for c in REQUESTS])
def test_reader_role_decodes_requests(frame: bytes, expected: Message) -> None:
    assert feed_all(lambda: _reader("reader"), frame) == [expected]
    check_prefixes_incomplete(lambda: _reader("reader"), frame)


def test_add_rospec_layout_matches_the_standard() -> None:
    """Byte-level check of the ROSpec tree against the LLRP 1.0.1 parameter layouts."""
    frame = llrp.encode_add_rospec(5, SPEC_DEFAULT)
    assert frame[:10] == bytes.fromhex("0414 0000004b 00000005")  # ver 1, type 20
    assert frame[10:20] == bytes.fromhex("00b1 0041 00000001 00 00")  # ROSpec id 1, Disabled
    # ROBoundarySpec(178) { ROSpecStartTrigger(179) Null, ROSpecStopTrigger(182) Null, 0 ms }
    assert frame[20:38] == bytes.fromhex("00b2 0012 00b3 0005 00 00b6 0009 00 00000000")
    # AISpec(183) antennas [0] { AISpecStopTrigger(184) Null, InventoryParameterSpec(186)
    # id 1 EPCGlobalClass1Gen2 }
    assert frame[38:62] == bytes.fromhex(
        "00b7 0018 0001 0000 00b8 0009 00 00000000 00ba 0007 0001 01")
    # ROReportSpec(237) Upon_N_Tags_Or_End_Of_ROSpec, N=1 { TagReportContentSelector(238):
    # antenna ID, peak RSSI, first seen, seen count = bits 3, 5, 6, 8 from the top }
    assert frame[62:] == bytes.fromhex("00ed 000d 02 0001 00ee 0006 1680")


def test_bytewise_equals_oneshot() -> None:
    stream = (b"\xff\x20" + b"".join(c[1] for c in CATALOGUE)
              + bytes.fromhex("04 3d 00 00 00 05") + CATALOGUE[3][1]
              + bytes.fromhex("08 3d 00 00 00 0a 00 00 00 01") + CATALOGUE[0][1])
    check_bytewise_equals_oneshot(llrp.Decoder, stream)
    check_bytewise_equals_oneshot(lambda: _reader("reader"), b"".join(r[1] for r in REQUESTS))


def _report_body(tag_data: bytes) -> bytes:
    return llrp.encode_message("RO_ACCESS_REPORT", 1,
                               struct.pack(">HH", 240, 4 + len(tag_data)) + tag_data)


MALFORMED = [
    ("length_below_header", bytes.fromhex("04 3d 00 00 00 05 00 00 00 01"), "bad_length"),
    ("length_zero", bytes.fromhex("04 3d 00 00 00 00"), "bad_length"),
    ("length_over_cap", bytes.fromhex("04 3d 7f ff ff ff 00 00 00 01"), "oversized"),
    ("version_2_skipped_by_length", bytes.fromhex("08 3d 00 00 00 0c 00 00 00 01 ab cd"),
     "bad_field"),
    ("garbage_only", b"\xff\xee\x20\x00", "garbage"),
    ("tlv_overruns_message",
     llrp.encode_message("RO_ACCESS_REPORT", 1, bytes.fromhex("00f0 0040 8d") + EPC96),
     "bad_field"),
    ("tlv_length_below_header", llrp.encode_message("RO_ACCESS_REPORT", 1,
                                                    bytes.fromhex("00f0 0002")), "bad_field"),
    ("unknown_tv_type", _report_body(b"\x8d" + EPC96 + b"\xff\x00"), "bad_field"),
    ("tv_overruns_tag_report", _report_body(b"\x8d" + EPC96 + b"\x82\x00\x01"), "bad_field"),
    ("tag_report_without_epc", _report_body(b"\x81\x00\x01"), "bad_field"),
    ("epcdata_claims_too_many_bits", _report_body(bytes.fromhex("00f1 0008 0060 1234")),
     "bad_field"),
    ("response_without_status", llrp.encode_message("ADD_ROSPEC_RESPONSE", 1), "bad_field"),
    ("status_description_overruns", llrp.encode_message(
        "ADD_ROSPEC_RESPONSE", 1, bytes.fromhex("011f 0008 0000 0009")), "bad_field"),
    ("event_without_notification_data",
     llrp.encode_message("READER_EVENT_NOTIFICATION", 1), "bad_field"),
    ("event_without_timestamp", llrp.encode_message(
        "READER_EVENT_NOTIFICATION", 1, bytes.fromhex("00f6 000a 0100 0006 0000")),
     "bad_field"),
]


@pytest.mark.parametrize(("data", "kind"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed(data: bytes, kind: str) -> None:
    good = CATALOGUE[3][1]
    out = feed_all(llrp.Decoder, data + good)
    errs = errors(out)
    assert errs and errs[0].kind == kind and errs[0].protocol == "llrp"
    assert errs[0].offset == 0
    assert b"".join(e.raw for e in errs) == data, "exactly the bad bytes are reported"
    assert out[-1] == CATALOGUE[3][2][0], "the good frame after the bad input must still decode"


MALFORMED_REQUESTS = [
    ("rospec_id_missing", llrp.encode_message("START_ROSPEC", 1, b"\x00\x01")),
    ("add_without_rospec", llrp.encode_message("ADD_ROSPEC", 1)),
    ("rospec_without_aispec", llrp.encode_message("ADD_ROSPEC", 1, bytes.fromhex(
        "00b1 001c 00000001 00 00 00b2 0012 00b3 0005 00 00b6 0009 00 00000000"))),
    ("capabilities_without_requested_data",
     llrp.encode_message("GET_READER_CAPABILITIES", 1)),
]


@pytest.mark.parametrize("data", [m[1] for m in MALFORMED_REQUESTS],
                         ids=[m[0] for m in MALFORMED_REQUESTS])
def test_malformed_requests(data: bytes) -> None:
    good = REQUESTS[3][1]
    out = feed_all(lambda: _reader("reader"), data + good)
    (err,) = errors(out)
    assert err.kind == "bad_field" and err.raw == data
    assert out[-1] == REQUESTS[3][2]


def test_bad_header_resyncs_on_the_next_possible_start() -> None:
    # a header with a bad length followed by a byte that can start a header: the error covers
    # only the bytes before it, and decoding resumes there
    bad = bytes.fromhex("04 3d 00 00 00 02 ee ee")
    out = feed_all(llrp.Decoder, bad + CATALOGUE[0][1])
    assert [e.raw for e in errors(out)] == [bad]
    assert messages(out) == CATALOGUE[0][2]


def test_hunting_skips_unknown_types_but_sync_decodes_them() -> None:
    unnamed = CATALOGUE[16][1]
    # in sync (after a good message) an unknown type decodes as a generic message ...
    out = feed_all(llrp.Decoder, CATALOGUE[9][1] + unnamed)
    assert out == [llrp.Keepalive(0xFFFFFFFF), llrp.LlrpMessage(900, 17, b"\xab", "")]
    # ... while after garbage the hunt only trusts known message types
    out = feed_all(llrp.Decoder, b"\xff" + unnamed + CATALOGUE[9][1])
    assert b"".join(e.raw for e in errors(out)) == b"\xff" + unnamed
    assert messages(out) == [llrp.Keepalive(0xFFFFFFFF)]


def test_truncated_at_end_of_stream_is_reported_by_flush() -> None:
    frame = CATALOGUE[3][1]
    dec = llrp.Decoder()
    assert dec.feed(frame[:-3]) == []
    (err,) = errors(dec.flush())
    assert err.kind == "truncated" and err.raw == frame[:-3]
    assert dec.flush() == []


def test_buffer_is_capped() -> None:
    dec = llrp.Decoder()
    # a header announcing the largest allowed message: the decoder waits for it
    out = dec.feed(struct.pack(">HII", 0x043D, llrp.MAX_MESSAGE, 1) + b"\x00" * 100)
    assert out == [] and dec.buffered == 110 and dec.buffered <= dec.MAX_BUFFER
    # one byte more than the cap is rejected at once, not buffered
    out = llrp.Decoder().feed(struct.pack(">HII", 0x043D, llrp.MAX_MESSAGE + 1, 1))
    assert [e.kind for e in errors(out)] == ["oversized"]
    big = llrp.MAX_BUFFER + 10
    dec = llrp.Decoder()
    out = dec.feed(b"\xff" * big)
    assert [(e.kind, len(e.raw)) for e in errors(out)] == [("garbage", big)]
    assert dec.buffered == 0


def test_counters() -> None:
    dec = llrp.Decoder()
    dec.feed(CATALOGUE[7][1] + b"\xff" + CATALOGUE[0][1])
    assert (dec.messages, dec.errors) == (4, 1)


# -- real frames from shared/captures --------------------------------------------------------
def _capture_frames() -> list[bytes]:
    return [bytes.fromhex(line) for line in capture_lines("rfid_llrp.txt")]


def test_capture_reader_event_notification() -> None:
    frame = _capture_frames()[0]
    assert feed_all(llrp.Decoder, frame) == [
        llrp.ReaderEvent(0x0AB288C9, 0x0004F8535BAADAFF, True, 0, ("ConnectionAttemptEvent",))]
    (event,) = feed_all(llrp.Decoder, frame)
    assert isinstance(event, llrp.ReaderEvent) and event.connection_ok
    assert event.timestamp_us == 1_398_936_810_740_479  # 2014-05-01T09:33:30.740479Z


def test_capture_encoder_expectation_reproduced_exactly() -> None:
    assert llrp.encode_reader_event_notification(0, 0) == _capture_frames()[1]
    assert feed_all(llrp.Decoder, _capture_frames()[1]) == [
        llrp.ReaderEvent(0, 0, True, 0, ("ConnectionAttemptEvent",))]


def test_capture_ro_access_report_epc96() -> None:
    frame = _capture_frames()[2]
    assert feed_all(llrp.Decoder, frame) == [TagRead(
        epc="3005FB63AC1F3841EC880467", antenna=1, rssi_dbm=-50.0, read_count=1,
        device_ts_ms=1_385_585_041_558)]  # 0x0004EC2EA8354C09 us = 2013-11-27T20:44:01.558537Z
    assert llrp.encode_ro_access_report(0x4095892F, [llrp.TagReport(
        EPC96, antenna=1, peak_rssi_dbm=-50, first_seen_us=0x0004EC2EA8354C09,
        seen_count=1)]) == frame


def test_capture_ro_access_report_second_tag() -> None:
    frame = _capture_frames()[3]
    assert feed_all(llrp.Decoder, frame) == [TagRead(
        epc="300833B2DDD906C000000000", antenna=1, rssi_dbm=-58.0, read_count=1,
        device_ts_ms=1_385_585_041_562)]
    assert llrp.encode_ro_access_report(0x40958930, [llrp.TagReport(
        bytes.fromhex("300833B2DDD906C000000000"), antenna=1, peak_rssi_dbm=-58,
        first_seen_us=0x0004EC2EA8355AF2, seen_count=1)]) == frame


def test_capture_ro_access_report_epcdata_144_bits() -> None:
    frame = _capture_frames()[4]
    assert feed_all(llrp.Decoder, frame) == [TagRead(
        epc="1FB41F712AC9C37AB79D618173188324001A", antenna=1, rssi_dbm=-17.0, read_count=1,
        device_ts_ms=1_385_585_041_743)]
    assert llrp.encode_ro_access_report(0x40958941, [llrp.TagReport(
        EPC144, antenna=1, peak_rssi_dbm=-17, first_seen_us=0x0004EC2EA8381F57,
        seen_count=1)]) == frame


def test_capture_file_as_one_stream() -> None:
    frames = _capture_frames()
    assert len(frames) == 5
    out = feed_all(llrp.Decoder, b"".join(frames))
    assert not errors(out)
    assert [m.type for m in out] == ["reader_event", "reader_event", "tag_read", "tag_read",
                                     "tag_read"]
    check_bytewise_equals_oneshot(llrp.Decoder, b"".join(frames))


def test_capture_frames_cut_short_are_incomplete_not_errors() -> None:
    # negative vectors built from the captures: a frame whose tail never arrives
    for frame in _capture_frames():
        check_prefixes_incomplete(llrp.Decoder, frame)
        (err,) = errors(feed_all(llrp.Decoder, frame[:-1]))
        assert err.kind == "truncated"


def test_decode_frame_arg() -> None:
    hexframe = capture_lines("rfid_llrp.txt")[2]
    for sent_by in ("reader", "device"):
        (tag,) = llrp.decode_frame_arg(hexframe, sent_by=sent_by)
        assert isinstance(tag, TagRead) and tag.epc == "3005FB63AC1F3841EC880467"
    for who in ("client", "host"):
        (req,) = llrp.decode_frame_arg(llrp.encode_start_rospec(3, 7).hex(" "), sent_by=who)
        assert req == llrp.LlrpRequest("START_ROSPEC", 3, rospec_id=7)
    (err,) = errors(llrp.decode_frame_arg("04 3d 00"))
    assert err.kind == "truncated"
    with pytest.raises(ValueError):
        llrp.decode_frame_arg("zz")
    with pytest.raises(ValueError):
        llrp.decode_frame_arg("043d", sent_by="sideways")  # type: ignore[arg-type]


def test_to_dict_is_json_ready() -> None:
    (resp,) = feed_all(llrp.Decoder, CATALOGUE[14][1])
    d = resp.to_dict()
    assert d["type"] == "llrp_response" and d["capabilities"]["firmware"] == "7.1.0"
    (req,) = feed_all(lambda: _reader("reader"), REQUESTS[3][1])
    assert req.to_dict()["rospec"]["report_fields"] == list(llrp.DEFAULT_REPORT_FIELDS)


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        llrp.encode_keepalive(-1)
    with pytest.raises(ValueError):
        llrp.encode_keepalive(1 << 32)
    with pytest.raises(ValueError):
        llrp.encode_add_rospec(1, llrp.RoSpec(0))
    with pytest.raises(ValueError):
        llrp.encode_add_rospec(1, llrp.RoSpec(1, antennas=()))
    with pytest.raises(ValueError):
        llrp.encode_add_rospec(1, llrp.RoSpec(1, report_fields=("colour",)))
    with pytest.raises(ValueError):
        llrp.encode_ro_access_report(1, [llrp.TagReport(EPC96, peak_rssi_dbm=-129)])
    with pytest.raises(ValueError):
        llrp.encode_response("ADD_ROSPEC", 1)
    with pytest.raises(ValueError):
        llrp.encode_message(1024, 1)
    with pytest.raises(ValueError):
        llrp.encode_message("CUSTOM_MESSAGE", 1, bytes(llrp.MAX_MESSAGE))
    with pytest.raises(ValueError):
        llrp.Decoder("sideways")  # type: ignore[arg-type]


# -- property tests ----------------------------------------------------------------------------
# after garbage the decoder hunts for a header of a *known* message type (module docstring),
# so the unnamed-type frame is left out here and covered by the test below
_frames = st.lists(st.sampled_from([c[1] for c in CATALOGUE
                                    if c[2] and c[0] != "unnamed_type_is_generic"]),
                   min_size=1, max_size=8)
# bytes 0x04..0x1F can start a header (reserved bits 0, version 1..7); garbage never holds one
_garbage = st.binary(max_size=40).map(lambda b: bytes(x for x in b if not 0x04 <= x <= 0x1F))


@given(frames=_frames, data=st.data())
def test_garbage_between_frames(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_garbage) for _ in frames]
    check_garbage_between(llrp.Decoder, frames, garbage)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_arbitrary_bytes_never_raise(blob: bytes, chunk: int) -> None:
    check_never_raises(llrp.Decoder, blob, chunk)
    check_never_raises(lambda: _reader("reader"), blob, chunk)


@given(body=st.binary(max_size=200), msg_type=st.sampled_from(sorted(llrp.MESSAGE_TYPES.values())),
       role=st.sampled_from(["client", "reader"]))
def test_any_body_in_a_valid_header_gives_one_item(body: bytes, msg_type: int,
                                                   role: str) -> None:
    """Whatever the body, a well-framed message yields messages or exactly one error, and the
    decoder is at a frame boundary afterwards."""
    frame = llrp.encode_message(msg_type, 1, body)
    dec = _reader(role)
    out = dec.feed(frame + CATALOGUE[9][1])
    assert dec.buffered == 0
    assert len(errors(out)) <= 1
    assert all(e.raw == frame for e in errors(out))
    assert out[-1] == llrp.Keepalive(0xFFFFFFFF) or role == "reader"


_tags = st.builds(
    llrp.TagReport,
    epc=st.binary(min_size=2, max_size=62).filter(lambda b: len(b) % 2 == 0),
    antenna=st.none() | st.integers(1, 0xFFFF),
    peak_rssi_dbm=st.none() | st.integers(-128, 127),
    first_seen_us=st.none() | st.integers(0, (1 << 64) - 1),
    seen_count=st.none() | st.integers(0, 0xFFFF),
    pc=st.none() | st.integers(0, 0xFFFF),
)


@given(tags=st.lists(_tags, max_size=20), message_id=st.integers(0, 0xFFFFFFFF))
def test_report_roundtrip_property(tags: list[llrp.TagReport], message_id: int) -> None:
    out = feed_all(llrp.Decoder, llrp.encode_ro_access_report(message_id, tags))
    assert out == [TagRead(epc=t.epc.hex().upper(), antenna=t.antenna,
                           rssi_dbm=None if t.peak_rssi_dbm is None else float(t.peak_rssi_dbm),
                           pc=t.pc, read_count=t.seen_count,
                           device_ts_ms=None if t.first_seen_us is None
                           else t.first_seen_us // 1000) for t in tags]


_specs = st.builds(
    llrp.RoSpec,
    rospec_id=st.integers(1, 0xFFFFFFFF),
    priority=st.integers(0, 7),
    start_trigger=st.integers(0, 1),
    stop_trigger=st.integers(0, 1),
    stop_duration_ms=st.integers(0, 0xFFFFFFFF),
    antennas=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8).map(tuple),
    inventory_parameter_spec_id=st.integers(0, 0xFFFF),
    report_trigger=st.integers(0, 2),
    report_n=st.integers(0, 0xFFFF),
    report_fields=st.lists(st.sampled_from(llrp.REPORT_FIELDS), unique=True).map(
        lambda fs: tuple(f for f in llrp.REPORT_FIELDS if f in fs)),
)


@given(spec=_specs, message_id=st.integers(0, 0xFFFFFFFF))
def test_rospec_roundtrip_property(spec: llrp.RoSpec, message_id: int) -> None:
    out = feed_all(lambda: _reader("reader"), llrp.encode_add_rospec(message_id, spec))
    assert out == [llrp.LlrpRequest("ADD_ROSPEC", message_id, rospec=spec)]
