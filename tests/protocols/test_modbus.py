"""Modbus RTU codec: the standard codec test set plus the shared captures."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import modbus
from protocols._base import FrameError, Message
from protocols._crc import crc16_modbus
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


def client() -> modbus.Decoder:
    return modbus.Decoder("client")


def server() -> modbus.Decoder:
    return modbus.Decoder("server")


# Device ids 17, 32 and 100 are not function codes either role frames, so the garbage
# alphabets below can never make a garbage byte + device id look like a frame header.
# (id, frame, expected message) -- server -> client responses
RESPONSES = [
    ("read_holding_2", modbus.encode_read_response(17, [0x008D, 0x008E]),
     modbus.ReadResponse(17, 3, (0x8D, 0x8E))),
    ("read_input_1", modbus.encode_read_response(32, [0xFFFF], function=4),
     modbus.ReadResponse(32, 4, (0xFFFF,))),
    ("read_holding_max_125", modbus.encode_read_response(100, list(range(125))),
     modbus.ReadResponse(100, 3, tuple(range(125)))),
    ("write_single_echo", modbus.encode_write_single(17, 2, 0x1234),
     modbus.WriteSingle(17, 2, 0x1234)),
    ("write_multiple_response", modbus.encode_write_multiple_response(17, 10, 4),
     modbus.WriteMultipleResponse(17, 10, 4)),
    ("exception_illegal_function", modbus.encode_exception(17, 1, 1),
     modbus.ExceptionResponse(17, 1, 1, "illegal_function")),
    ("exception_illegal_address", modbus.encode_exception(32, 3, 2),
     modbus.ExceptionResponse(32, 3, 2, "illegal_data_address")),
    ("exception_illegal_value", modbus.encode_exception(17, 16, 3),
     modbus.ExceptionResponse(17, 16, 3, "illegal_data_value")),
    ("exception_device_failure", modbus.encode_exception(17, 4, 4),
     modbus.ExceptionResponse(17, 4, 4, "server_device_failure")),
    ("exception_unknown_code", modbus.encode_exception(17, 0x2B, 0x0C),
     modbus.ExceptionResponse(17, 0x2B, 0x0C, "0x0C")),
]

# client -> server requests
REQUESTS = [
    ("read_holding", modbus.encode_read_request(17, 0x6B, 3), modbus.ReadRequest(17, 3, 107, 3)),
    ("read_input", modbus.encode_read_request(32, 0, 125, function=4),
     modbus.ReadRequest(32, 4, 0, 125)),
    ("write_single", modbus.encode_write_single(100, 0xFFFF, 0),
     modbus.WriteSingle(100, 0xFFFF, 0)),
    ("write_multiple_1", modbus.encode_write_multiple(17, 10, [7]),
     modbus.WriteMultiple(17, 10, (7,))),
    ("write_multiple_123", modbus.encode_write_multiple(17, 0, list(range(123))),
     modbus.WriteMultiple(17, 0, tuple(range(123)))),
    ("read_coils_other", modbus.encode_frame(17, bytes.fromhex("01 0013 0025")),
     modbus.OtherRequest(17, 1, bytes.fromhex("0013 0025"))),
    ("read_discrete_other", modbus.encode_frame(17, bytes.fromhex("02 00C4 0016")),
     modbus.OtherRequest(17, 2, bytes.fromhex("00C4 0016"))),
    ("write_coil_other", modbus.encode_frame(17, bytes.fromhex("05 00AC FF00")),
     modbus.OtherRequest(17, 5, bytes.fromhex("00AC FF00"))),
    ("write_coils_other", modbus.encode_frame(17, bytes.fromhex("0F 0013 000A 02 CD01")),
     modbus.OtherRequest(17, 15, bytes.fromhex("0013 000A 02 CD01"))),
]


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in RESPONSES],
                         ids=[c[0] for c in RESPONSES])
def test_roundtrip_responses(frame: bytes, expected: Message) -> None:
    check_roundtrip(client, frame, expected)
    check_prefixes_incomplete(client, frame)
    assert modbus.encode_message(expected) == frame


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in REQUESTS],
                         ids=[c[0] for c in REQUESTS])
def test_roundtrip_requests(frame: bytes, expected: Message) -> None:
    check_roundtrip(server, frame, expected)
    check_prefixes_incomplete(server, frame)
    assert modbus.encode_message(expected) == frame


def test_role_aliases() -> None:
    frame = REQUESTS[0][1]
    assert feed_all(lambda: modbus.Decoder("device"), frame) == [REQUESTS[0][2]]
    assert feed_all(lambda: modbus.Decoder("host"), RESPONSES[0][1]) == [RESPONSES[0][2]]
    with pytest.raises(ValueError):
        modbus.Decoder("sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        modbus.Decoder("server", expect=(1, 3))


def test_bytewise_equals_oneshot() -> None:
    bad_crc = bytearray(RESPONSES[0][1])
    bad_crc[-1] ^= 0xFF
    stream = (b"\x00\x11\x99" + b"".join(c[1] for c in RESPONSES) + bytes(bad_crc)
              + b"\x20\x03\x05" + RESPONSES[2][1] + b"\x20\x03\xfa" + RESPONSES[0][1])
    check_bytewise_equals_oneshot(client, stream)
    stream = b"\x01\x02" + b"".join(c[1] for c in REQUESTS) + b"\x11\x10\x00\x00"
    check_bytewise_equals_oneshot(server, stream)


def _corrupt_crc(frame: bytes) -> bytes:
    return frame[:-1] + bytes((frame[-1] ^ 0x5A,))


def _with_crc(body: bytes) -> bytes:
    return body + crc16_modbus(body).to_bytes(2, "little")


# (id, role, bad input, first error kind) -- each followed by a good frame of that role
MALFORMED = [
    ("bad_crc_response", "client", _corrupt_crc(RESPONSES[0][1]), "bad_checksum"),
    ("bad_crc_exception", "client", bytes.fromhex("00 83 02 91 21"), "bad_checksum"),
    ("unknown_function", "client", _with_crc(b"\x11\x2b\x0e\x01"), "bad_field"),
    ("client_sees_request_fc1", "client", REQUESTS[5][1], "bad_field"),
    ("byte_count_zero", "client", _with_crc(b"\x11\x03\x00"), "bad_length"),
    ("byte_count_odd", "client", _with_crc(b"\x11\x03\x03\x00\x01\x02"), "bad_length"),
    ("byte_count_over_250", "client", _with_crc(b"\x11\x03\xfc" + b"\x00" * 252),
     "bad_length"),
    ("bad_crc_request", "server", _corrupt_crc(REQUESTS[0][1]), "bad_checksum"),
    ("request_unknown_function", "server", _with_crc(b"\x11\x2b\x0e\x01\x00"), "bad_field"),
    ("fc16_byte_count_odd", "server", _with_crc(b"\x11\x10\x00\x00\x00\x01\x03\x00\x01\x02"),
     "bad_length"),
    ("fc16_byte_count_over_246", "server",
     _with_crc(b"\x11\x10\x00\x00\x00\x7c\xf8" + b"\x00" * 248), "bad_length"),
    ("fc16_quantity_mismatch", "server",
     _with_crc(b"\x11\x10\x00\x00\x00\x02\x02\x00\x01"), "bad_field"),
    ("fc15_byte_count_zero", "server", _with_crc(b"\x11\x0f\x00\x00\x00\x01\x00"),
     "bad_length"),
]


@pytest.mark.parametrize(("role", "data", "kind"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed(role: str, data: bytes, kind: str) -> None:
    factory, (good, expected) = ((client, RESPONSES[0][1:]) if role == "client"
                                 else (server, REQUESTS[0][1:]))
    out = feed_all(factory, data + good)
    errs = errors(out)
    assert errs and errs[0].kind == kind and errs[0].protocol == "modbus"
    assert messages(out) == [expected], "the good frame after the bad input must still decode"
    # every byte of the bad input is reported, none of the good frame is
    assert b"".join(e.raw for e in errs) == data


def test_bad_crc_error_names_the_expected_crc() -> None:
    (err, *_rest) = feed_all(client, bytes.fromhex("00 83 02 91 21"))
    assert err.kind == "bad_checksum" and "91 31" in err.detail and "91 21" in err.detail


def test_expect_skips_other_devices_and_functions() -> None:
    other_device = modbus.encode_read_response(32, [1, 2])
    other_function = modbus.encode_write_single(17, 1, 1)
    wanted = modbus.encode_read_response(17, [5, 6])
    dec = modbus.Decoder(expect=(17, 3))
    out = dec.feed(other_device + other_function + wanted + modbus.encode_exception(17, 3, 2))
    assert messages(out) == [modbus.ReadResponse(17, 3, (5, 6)),
                             modbus.ExceptionResponse(17, 3, 2, "illegal_data_address")]
    assert b"".join(e.raw for e in errors(out)) == other_device + other_function
    dec.expect = (32, 3)
    assert dec.feed(other_device) == [modbus.ReadResponse(32, 3, (1, 2))]


def test_flush_recovers_a_frame_behind_noise_that_looked_like_a_long_frame() -> None:
    # 20 03 FA: device 0x20, FC 3, byte count 250 -> the decoder waits for 255 bytes
    noise = b"\x20\x03\xfa"
    dec = client()
    assert dec.feed(noise + RESPONSES[0][1] + RESPONSES[3][1] + b"\x11") == []
    out = dec.flush()
    assert messages(out) == [RESPONSES[0][2], RESPONSES[3][2]]
    assert [(e.kind, e.raw) for e in errors(out)] == [("garbage", noise),
                                                      ("truncated", b"\x11")]
    assert dec.buffered == 0 and dec.flush() == []


def test_truncated_at_end_of_stream_is_reported_by_flush() -> None:
    dec = client()
    assert dec.feed(RESPONSES[0][1][:-1]) == []
    (err,) = dec.flush()
    assert err.kind == "truncated" and err.raw == RESPONSES[0][1][:-1]


def test_buffer_is_capped() -> None:
    dec = client()
    # device 0x20, FC 3, byte count 250: a plausible header, then fewer bytes than it needs
    out = dec.feed(b"\x20\x03\xfa" + b"\x00" * 200)
    assert out == [] and dec.buffered == 203
    check_never_raises(client, b"\x20\x03\xfa" * 2000, 700)


# -- real frames from shared/captures --------------------------------------------------------
def test_capture_file_decodes_as_documented() -> None:
    frames = [bytes.fromhex(ln) for ln in capture_lines("modbus_rtu.txt")]
    assert len(frames) == 12
    requests = feed_all(server, b"".join(frames[0:3]))
    assert requests == [modbus.ReadRequest(dev, 3, 0x7C, 2) for dev in (0, 17, 255)]
    responses = feed_all(client, b"".join(frames[3:9]))
    assert responses == ([modbus.ReadResponse(dev, 3, (0x8D, 0x8E)) for dev in (0, 17, 255)]
                         + [modbus.ExceptionResponse(dev, 3, 2, "illegal_data_address")
                            for dev in (0, 17, 255)])
    # the bad-CRC negative vector: 00 83 02 91 21 (91 31 expected)
    bad = feed_all(client, frames[9])
    assert bad[0].kind == "bad_checksum" and not messages(bad)
    assert b"".join(e.raw for e in errors(bad)) == frames[9]
    # Modbus spec example and the worked example from the reference notes
    assert feed_all(server, frames[10]) == [modbus.ReadRequest(17, 3, 107, 3)]
    assert feed_all(server, frames[11]) == [modbus.ReadRequest(1, 3, 0, 2)]


def test_encoders_match_capture_bytes() -> None:
    assert modbus.encode_read_request(17, 0x6B, 3) == bytes.fromhex("11 03 00 6b 00 03 76 87")
    assert modbus.encode_read_request(1, 0, 2) == bytes.fromhex("01 03 00 00 00 02 c4 0b")
    assert modbus.encode_read_request(255, 0x7C, 2) == bytes.fromhex("ff 03 00 7c 00 02 10 0d")
    assert modbus.encode_read_response(0, [0x8D, 0x8E]) == bytes.fromhex(
        "00 03 04 00 8d 00 8e fa bc")
    assert modbus.encode_exception(17, 3, 2) == bytes.fromhex("11 83 02 c1 34")


def test_crc_matches_pymodbus_vector() -> None:
    # pymodbus FramerRTU.compute_CRC(12 34 23 45 34 56 45 67) == 0xE2DB is the wire order;
    # the CRC-16/MODBUS value is 0xDBE2, sent low byte first.
    data = bytes.fromhex("12 34 23 45 34 56 45 67")
    assert crc16_modbus(data) == 0xDBE2
    assert modbus.encode_frame(0x12, data[1:])[-2:] == bytes.fromhex("E2 DB")


def test_encoder_rejects_bad_arguments() -> None:
    bad_calls = [
        lambda: modbus.encode_read_request(1, 0, 0),
        lambda: modbus.encode_read_request(1, 0, 126),
        lambda: modbus.encode_read_request(1, 0x10000, 1),
        lambda: modbus.encode_read_request(1, 0, 1, function=6),
        lambda: modbus.encode_read_request(256, 0, 1),
        lambda: modbus.encode_read_response(1, []),
        lambda: modbus.encode_read_response(1, [0x10000]),
        lambda: modbus.encode_read_response(1, [-1]),
        lambda: modbus.encode_write_single(1, 0, 0x10000),
        lambda: modbus.encode_write_multiple(1, 0, list(range(124))),
        lambda: modbus.encode_write_multiple(1, 0, [70000]),
        lambda: modbus.encode_write_multiple_response(1, 0, 0),
        lambda: modbus.encode_exception(1, 0x83, 2),
        lambda: modbus.encode_exception(1, 3, 0),
        lambda: modbus.encode_frame(1, b""),
        lambda: modbus.encode_frame(1, b"\x03" * 254),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()
    with pytest.raises(TypeError):
        modbus.encode_message(Weight(1.0, "kg", 1.0, True))


def test_decode_frame_arg() -> None:
    # the CLI default (sent_by="device"): a response when it decodes cleanly as one ...
    assert modbus.decode_frame_arg("11 03 04 00 8d 00 8e fb bd") == [
        modbus.ReadResponse(17, 3, (0x8D, 0x8E))]
    assert modbus.decode_frame_arg("11 83 02 c1 34") == [
        modbus.ExceptionResponse(17, 3, 2, "illegal_data_address")]
    # ... else a request
    assert modbus.decode_frame_arg("11 03 00 6b 00 03 76 87") == [
        modbus.ReadRequest(17, 3, 107, 3)]
    fc16 = modbus.encode_write_multiple(17, 1, [2, 3]).hex(" ")
    assert modbus.decode_frame_arg(fc16) == [modbus.WriteMultiple(17, 1, (2, 3))]
    # --from-host decodes requests only
    assert modbus.decode_frame_arg("11 03 00 6b 00 03 76 87", sent_by="host") == [
        modbus.ReadRequest(17, 3, 107, 3)]
    (err, *_) = modbus.decode_frame_arg("11 03 04 00 8d 00 8e fb bd", sent_by="host")
    assert isinstance(err, FrameError)
    # FC 6 is the same bytes both ways and the same message
    fc6 = modbus.encode_write_single(17, 2, 0x1234).hex(" ")
    for sent_by in ("device", "host"):
        assert modbus.decode_frame_arg(fc6, sent_by=sent_by) == [  # type: ignore[arg-type]
            modbus.WriteSingle(17, 2, 0x1234)]
    # neither direction: the response attempt's errors are returned
    (err,) = modbus.decode_frame_arg("00 83 02 91 21")
    assert isinstance(err, FrameError) and err.kind == "bad_checksum"
    assert err.raw == bytes.fromhex("00 83 02 91 21") and "91 31" in err.detail


# -- registers -> Weight --------------------------------------------------------------------
def test_registers_to_weight_int32_big_endian_with_decimals() -> None:
    regs = modbus.value_to_registers(123456)
    assert regs == (0x0001, 0xE240)
    w = modbus.registers_to_weight(regs, decimals=1)
    assert w == Weight(weight=12345.6, unit="kg", weight_kg=12345.6, stable=None)


def test_registers_to_weight_word_orders_differ() -> None:
    regs = (0x0001, 0xE240)
    assert modbus.registers_to_weight(regs).weight == 123456
    assert modbus.registers_to_weight(regs, word_order="little").weight == 0xE2400001 - 2**32
    assert modbus.registers_to_weight(regs, word_order="little",
                                      value_type="uint32").weight == 0xE2400001


def test_registers_to_weight_negative_and_16_bit() -> None:
    assert modbus.registers_to_weight(modbus.value_to_registers(-250), decimals=1).weight == -25.0
    assert modbus.registers_to_weight((0xFFFF,), value_type="int16").weight == -1
    assert modbus.registers_to_weight((0xFFFF,), value_type="uint16").weight == 65535
    assert modbus.registers_to_weight((0, 0, 500), value_type="uint16", value_index=2,
                                      decimals=2).weight == 5.0


def test_registers_to_weight_float32_and_units() -> None:
    regs = modbus.value_to_registers(1530.5, value_type="float32", word_order="little")
    w = modbus.registers_to_weight(regs, value_type="float32", word_order="little", unit="lb")
    assert w.weight == 1530.5 and w.unit == "lb"
    assert w.weight_kg == pytest.approx(1530.5 * 0.45359237)
    assert modbus.registers_to_weight((0, 100), factor=2, decimals=1).weight == 20.0
    assert modbus.registers_to_weight((0, 3), factor=0.1).weight == 0.3
    assert modbus.registers_to_weight((0, 3), unit=None).weight_kg is None


def test_registers_to_weight_status_bits() -> None:
    # Tuna ID551PN style: status word with bit 11 = net, bit 12 = motion
    regs = (*modbus.value_to_registers(1000), 0, 0, 1 << 12)
    w = modbus.registers_to_weight(regs, status_index=4, motion_bit=12, net_bit=11)
    assert (w.stable, w.mode, w.overload) == (False, "gross", False)
    regs = (*regs[:4], 1 << 11)
    w = modbus.registers_to_weight(regs, status_index=4, motion_bit=12, net_bit=11)
    assert (w.stable, w.mode) == (True, "net")
    w = modbus.registers_to_weight((0, 1, 0b101), status_index=2, stable_bit=0, overload_bit=2)
    assert (w.stable, w.mode, w.overload) == (True, None, True)


def test_registers_to_weight_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        modbus.registers_to_weight((1,))
    with pytest.raises(ValueError):
        modbus.registers_to_weight((1, 2), word_order="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        modbus.registers_to_weight((1, 0x10000))
    with pytest.raises(ValueError):
        modbus.registers_to_weight((1, 2), value_type="int64")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        modbus.registers_to_weight((1, 2), status_index=5, stable_bit=0)
    nan = modbus.value_to_registers(math.nan, value_type="float32")
    with pytest.raises(ValueError):
        modbus.registers_to_weight(nan, value_type="float32")
    with pytest.raises(ValueError):
        modbus.value_to_registers(2**31)


@given(raw=st.integers(-(2**31), 2**31 - 1), order=st.sampled_from(["big", "little"]))
def test_int32_registers_roundtrip(raw: int, order: str) -> None:
    regs = modbus.value_to_registers(raw, word_order=order)  # type: ignore[arg-type]
    assert modbus.registers_to_weight(regs, word_order=order).weight == raw  # type: ignore[arg-type]
    assert struct.pack(">2H", *(regs if order == "big" else regs[::-1])) == struct.pack(">i", raw)


# -- property tests ----------------------------------------------------------------------------
_CLIENT_FCS = {3, 4, 6, 16, *range(0x81, 0x100)}
_SERVER_FCS = {1, 2, 3, 4, 5, 6, 15, 16}
_client_garbage = st.lists(st.sampled_from(sorted(set(range(256)) - _CLIENT_FCS)),
                           max_size=40).map(bytes)
_server_garbage = st.lists(st.sampled_from(sorted(set(range(256)) - _SERVER_FCS)),
                           max_size=40).map(bytes)


@given(frames=st.lists(st.sampled_from([c[1] for c in RESPONSES]), min_size=1, max_size=8),
       data=st.data())
def test_garbage_between_responses(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_client_garbage) for _ in frames]
    check_garbage_between(client, frames, garbage)


@given(frames=st.lists(st.sampled_from([c[1] for c in REQUESTS]), min_size=1, max_size=8),
       data=st.data())
def test_garbage_between_requests(frames: list[bytes], data: st.DataObject) -> None:
    garbage = [data.draw(_server_garbage) for _ in frames]
    check_garbage_between(server, frames, garbage)


@given(blob=st.binary(max_size=2000), chunk=st.integers(1, 300),
       role=st.sampled_from(["client", "server"]))
def test_arbitrary_bytes_never_raise(blob: bytes, chunk: int, role: str) -> None:
    check_never_raises(lambda: modbus.Decoder(role), blob, chunk)  # type: ignore[arg-type]
    # and flush accounts for every byte that was still buffered
    dec = modbus.Decoder(role)  # type: ignore[arg-type]
    out = dec.feed(blob)
    out += dec.flush()
    assert dec.buffered == 0
    assert all(isinstance(o, Message | FrameError) for o in out)


_pieces = st.lists(st.one_of(st.sampled_from([c[1] for c in RESPONSES + REQUESTS]),
                             st.binary(max_size=12)), max_size=8).map(b"".join)


@given(stream=_pieces, role=st.sampled_from(["client", "server"]))
def test_bytewise_equals_oneshot_on_mixed_streams(stream: bytes, role: str) -> None:
    check_bytewise_equals_oneshot(lambda: modbus.Decoder(role), stream)  # type: ignore[arg-type]
