"""LLRP (EPCglobal Low Level Reader Protocol), the subset a fixed UHF reader gateway needs.

Transport: TCP 5084, all integers big-endian. Every message starts with a 10-byte header::

    [rsvd:3 | version:3 | type:10]  (2 bytes)   version is 1 for LLRP 1.0.1
    length                          (4 bytes)   the whole message, header included
    message ID                      (4 bytes)   a response echoes its request's ID

followed by parameters. A TLV parameter is ``[rsvd:6 | type:10]`` (2 bytes), a length
(2 bytes, header included) and a body; a TV parameter is one byte ``1 | type:7`` and a value
whose size is fixed by the type (:data:`TV_LENGTHS`).

Sources: LLRP 1.0.1 (EPCglobal ratified standard, 2007-08-13) and 1.1 (2010-10-13), chapter
"Binary Encoding"; the message and parameter type numbers, field layouts and enumerations
were checked against the LLRP Toolkit binary definition (llrp.org/ltk/schema/core/encoding/
binary/1.0, as rendered in llrpjs/llrpjs ``src/def-td.ts``) and summarised in
``shared/reference/protocols.md`` section 1.4. The capture vectors in
``shared/captures/rfid_llrp.txt`` are byte strings only; no code was taken from any library.

Subset. Client role (``Decoder()``, the default) decodes what a reader sends:
READER_EVENT_NOTIFICATION -> :class:`ReaderEvent`; RO_ACCESS_REPORT -> one
:class:`~protocols.messages.TagRead` per TagReportData; KEEPALIVE -> :class:`Keepalive`; the
``*_RESPONSE`` messages and ERROR_MESSAGE -> :class:`LlrpResponse` (with
:class:`ReaderCapabilities` for GET_READER_CAPABILITIES_RESPONSE). Reader role
(``Decoder("reader")``) decodes client requests into :class:`LlrpRequest` (ADD_ROSPEC carries
a parsed :class:`RoSpec`). Any other message type is an :class:`LlrpMessage` (type, ID, raw
body): not an error, LLRP has many messages we do not need.

Framing and resync policy. LLRP has no sync byte or checksum; TCP delivers the bytes intact,
so the length field frames everything. The decoder starts *in sync* (a connection begins at a
message boundary) and stays in sync after every message it framed; there the next bytes must
be a header and are judged strictly:

* a first byte with reserved bits set or version 0 -> ``garbage``; length < 10 ->
  ``bad_length``; length > :data:`MAX_MESSAGE` -> ``oversized``. The length cannot be trusted,
  so the decoder *hunts*: it reports everything up to the next plausible header (reserved
  bits 0, version 1, a known message type, a length within 10..MAX_MESSAGE) and resumes
  there. On a TCP stream this means the peer is not speaking LLRP (or a bug upstream): drivers
  should count the error and, if it repeats, reconnect.
* version != 1 with a sane length -> ``bad_field``, and the whole message is skipped by its
  length (the header is well formed; only the version was not negotiated).
* a body whose parameters do not parse (a TLV length that overruns its container, an unknown
  TV type, a report without an EPC, a response without LLRPStatus) -> ``bad_field`` with the
  whole message as ``raw``; the decoder stays in sync and the next message decodes.

While hunting, a message of an unknown type is not recognised as a header (it is reported
with the garbage before it); in sync, unknown types decode as :class:`LlrpMessage`.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from collections.abc import Sequence
from typing import ClassVar, Final, Literal

from protocols._base import NEED_MORE, FrameError, Message, ParseResult, StreamDecoder
from protocols._cli import parse_hex
from protocols.messages import TagRead

__all__ = [
    "CONNECTION_STATUS",
    "DEFAULT_REPORT_FIELDS",
    "HEADER_LEN",
    "MAX_BUFFER",
    "MAX_ID",
    "MAX_MESSAGE",
    "MESSAGE_TYPES",
    "PARAM",
    "PROTOCOL_EPC_C1G2",
    "REPORT_FIELDS",
    "REPORT_UPON_N_TAGS_OR_END_OF_ROSPEC",
    "RESPONSE_TYPES",
    "ROSPEC_DISABLED",
    "START_TRIGGER_IMMEDIATE",
    "START_TRIGGER_NULL",
    "STATUS_CODES",
    "TV_LENGTHS",
    "VERSION",
    "Decoder",
    "Keepalive",
    "LlrpMessage",
    "LlrpRequest",
    "LlrpResponse",
    "ReaderCapabilities",
    "ReaderEvent",
    "RoSpec",
    "TagReport",
    "decode_frame_arg",
    "encode_add_rospec",
    "encode_close_connection",
    "encode_delete_rospec",
    "encode_disable_rospec",
    "encode_enable_events_and_reports",
    "encode_enable_rospec",
    "encode_error_message",
    "encode_get_reader_capabilities",
    "encode_get_reader_capabilities_response",
    "encode_keepalive",
    "encode_keepalive_ack",
    "encode_message",
    "encode_reader_event_notification",
    "encode_response",
    "encode_ro_access_report",
    "encode_start_rospec",
    "encode_stop_rospec",
    "rospec_to_bytes",
]

VERSION: Final = 1  # LLRP 1.0.1; 1.1 readers speak it until SET_PROTOCOL_VERSION says otherwise
HEADER_LEN: Final = 10
MAX_MESSAGE: Final = 1024 * 1024  # a larger length field is treated as a framing error
MAX_BUFFER: Final = MAX_MESSAGE
MAX_ID: Final = 0xFFFF_FFFF
_MIN_START: Final = 0x04  # rsvd=0, version=1
_MAX_START: Final = 0x1F  # rsvd=0, version=7
_HUNT_BYTE: Final = re.compile(b"[\\x04-\\x07]")  # rsvd=0, version=1
_HEADER: Final = struct.Struct(">HII")
_TLV: Final = struct.Struct(">HH")

MESSAGE_TYPES: Final = {
    "GET_READER_CAPABILITIES": 1,
    "GET_READER_CONFIG": 2,
    "SET_READER_CONFIG": 3,
    "CLOSE_CONNECTION_RESPONSE": 4,
    "GET_READER_CAPABILITIES_RESPONSE": 11,
    "GET_READER_CONFIG_RESPONSE": 12,
    "SET_READER_CONFIG_RESPONSE": 13,
    "CLOSE_CONNECTION": 14,
    "ADD_ROSPEC": 20,
    "DELETE_ROSPEC": 21,
    "START_ROSPEC": 22,
    "STOP_ROSPEC": 23,
    "ENABLE_ROSPEC": 24,
    "DISABLE_ROSPEC": 25,
    "GET_ROSPECS": 26,
    "ADD_ROSPEC_RESPONSE": 30,
    "DELETE_ROSPEC_RESPONSE": 31,
    "START_ROSPEC_RESPONSE": 32,
    "STOP_ROSPEC_RESPONSE": 33,
    "ENABLE_ROSPEC_RESPONSE": 34,
    "DISABLE_ROSPEC_RESPONSE": 35,
    "GET_ROSPECS_RESPONSE": 36,
    "ADD_ACCESSSPEC": 40,
    "DELETE_ACCESSSPEC": 41,
    "ENABLE_ACCESSSPEC": 42,
    "DISABLE_ACCESSSPEC": 43,
    "GET_ACCESSSPECS": 44,
    "ADD_ACCESSSPEC_RESPONSE": 50,
    "DELETE_ACCESSSPEC_RESPONSE": 51,
    "ENABLE_ACCESSSPEC_RESPONSE": 52,
    "DISABLE_ACCESSSPEC_RESPONSE": 53,
    "GET_ACCESSSPECS_RESPONSE": 54,
    "GET_REPORT": 60,
    "RO_ACCESS_REPORT": 61,
    "KEEPALIVE": 62,
    "READER_EVENT_NOTIFICATION": 63,
    "ENABLE_EVENTS_AND_REPORTS": 64,
    "KEEPALIVE_ACK": 72,
    "ERROR_MESSAGE": 100,
    "CUSTOM_MESSAGE": 1023,
}
_MESSAGE_NAMES: Final = {v: k for k, v in MESSAGE_TYPES.items()}

# messages whose body starts with an LLRPStatus parameter
RESPONSE_TYPES: Final = frozenset(
    v for k, v in MESSAGE_TYPES.items() if k.endswith("_RESPONSE") or k == "ERROR_MESSAGE")
# client requests the reader role decodes into LlrpRequest
_ROSPEC_ID_REQUESTS: Final = frozenset({21, 22, 23, 24, 25})
_EMPTY_REQUESTS: Final = frozenset({14, 26, 60, 64, 72})

PARAM: Final = {
    "UTCTimestamp": 128,
    "Uptime": 129,
    "GeneralDeviceCapabilities": 137,
    "ReceiveSensitivityTableEntry": 139,
    "PerAntennaAirProtocol": 140,
    "GPIOCapabilities": 141,
    "LLRPCapabilities": 142,
    "RegulatoryCapabilities": 143,
    "ROSpec": 177,
    "ROBoundarySpec": 178,
    "ROSpecStartTrigger": 179,
    "PeriodicTriggerValue": 180,
    "GPITriggerValue": 181,
    "ROSpecStopTrigger": 182,
    "AISpec": 183,
    "AISpecStopTrigger": 184,
    "InventoryParameterSpec": 186,
    "ROReportSpec": 237,
    "TagReportContentSelector": 238,
    "TagReportData": 240,
    "EPCData": 241,
    "ReaderEventNotificationData": 246,
    "HoppingEvent": 247,
    "GPIEvent": 248,
    "ROSpecEvent": 249,
    "ReportBufferLevelWarningEvent": 250,
    "ReportBufferOverflowErrorEvent": 251,
    "ReaderExceptionEvent": 252,
    "RFSurveyEvent": 253,
    "AISpecEvent": 254,
    "AntennaEvent": 255,
    "ConnectionAttemptEvent": 256,
    "ConnectionCloseEvent": 257,
    "LLRPStatus": 287,
    "FieldError": 288,
    "ParameterError": 289,
    "Custom": 1023,
}
_PARAM_NAMES: Final = {v: k for k, v in PARAM.items()}
_EVENT_PARAMS: Final = frozenset(range(247, 258))

# TV parameter type -> value size in bytes (the TagReportData members and friends)
TV_LENGTHS: Final = {
    1: 2,  # AntennaID
    2: 8,  # FirstSeenTimestampUTC, microseconds
    3: 8,  # FirstSeenTimestampUptime
    4: 8,  # LastSeenTimestampUTC
    5: 8,  # LastSeenTimestampUptime
    6: 1,  # PeakRSSI, signed dBm
    7: 2,  # ChannelIndex
    8: 2,  # TagSeenCount
    9: 4,  # ROSpecID
    10: 2,  # InventoryParameterSpecID
    11: 2,  # C1G2_CRC
    12: 2,  # C1G2_PC
    13: 12,  # EPC-96
    14: 2,  # SpecIndex
    15: 2,  # ClientRequestOpSpecResult
    16: 4,  # AccessSpecID
    17: 2,  # OpSpecID
    18: 4,  # C1G2SingulationDetails
}
_TV_ANTENNA: Final = 1
_TV_FIRST_SEEN_UTC: Final = 2
_TV_PEAK_RSSI: Final = 6
_TV_SEEN_COUNT: Final = 8
_TV_PC: Final = 12
_TV_EPC96: Final = 13
_EPC_DATA: Final = 241
_TAG_REPORT_DATA: Final = 240

STATUS_CODES: Final = {
    0: "M_Success",
    100: "M_ParameterError",
    101: "M_FieldError",
    102: "M_UnexpectedParameter",
    103: "M_MissingParameter",
    104: "M_DuplicateParameter",
    105: "M_OverflowParameter",
    106: "M_OverflowField",
    107: "M_UnknownParameter",
    108: "M_UnknownField",
    109: "M_UnsupportedMessage",
    110: "M_UnsupportedVersion",
    111: "M_UnsupportedParameter",
    200: "P_ParameterError",
    201: "P_FieldError",
    202: "P_UnexpectedParameter",
    203: "P_MissingParameter",
    204: "P_DuplicateParameter",
    205: "P_OverflowParameter",
    206: "P_OverflowField",
    207: "P_UnknownParameter",
    208: "P_UnknownField",
    209: "P_UnsupportedParameter",
    300: "A_Invalid",
    301: "A_OutOfRange",
    401: "R_DeviceError",
}

CONNECTION_STATUS: Final = {
    0: "success",
    1: "failed_reader_initiated_connection_exists",
    2: "failed_client_initiated_connection_exists",
    3: "failed_other_reason",
    4: "another_connection_attempted",
}

# TagReportContentSelector flags, most significant bit first (then 6 reserved bits)
REPORT_FIELDS: Final = (
    "rospec_id",
    "spec_index",
    "inventory_parameter_spec_id",
    "antenna_id",
    "channel_index",
    "peak_rssi",
    "first_seen_timestamp",
    "last_seen_timestamp",
    "tag_seen_count",
    "access_spec_id",
)
DEFAULT_REPORT_FIELDS: Final = ("antenna_id", "peak_rssi", "first_seen_timestamp",
                                "tag_seen_count")

START_TRIGGER_NULL: Final = 0
START_TRIGGER_IMMEDIATE: Final = 1
ROSPEC_DISABLED: Final = 0
REPORT_UPON_N_TAGS_OR_END_OF_ROSPEC: Final = 2
PROTOCOL_EPC_C1G2: Final = 1


# -- messages ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class ReaderEvent(Message):
    """READER_EVENT_NOTIFICATION. ``timestamp_us`` is UTC microseconds when ``utc`` is True,
    reader uptime otherwise; ``events`` names the event parameters present."""

    message_id: int
    timestamp_us: int
    utc: bool = True
    connection_status: int | None = None  # ConnectionAttemptEvent, 0 = success
    events: tuple[str, ...] = ()

    type: ClassVar[str] = "reader_event"

    @property
    def connection_ok(self) -> bool:
        return self.connection_status == 0


@dataclasses.dataclass(frozen=True, slots=True)
class Keepalive(Message):
    """KEEPALIVE: the client must answer with KEEPALIVE_ACK (:func:`encode_keepalive_ack`)."""

    message_id: int

    type: ClassVar[str] = "keepalive"


@dataclasses.dataclass(frozen=True, slots=True)
class ReaderCapabilities(Message):
    """The GeneralDeviceCapabilities part of GET_READER_CAPABILITIES_RESPONSE."""

    max_antennas: int
    manufacturer: int  # IANA private enterprise number (Impinj 25882)
    model: int
    firmware: str
    has_utc_clock: bool

    type: ClassVar[str] = "reader_capabilities"


@dataclasses.dataclass(frozen=True, slots=True)
class LlrpResponse(Message):
    """A ``*_RESPONSE`` or ERROR_MESSAGE with its LLRPStatus (``status`` 0 = success)."""

    type_name: str
    message_id: int
    status: int
    description: str = ""
    status_name: str = "M_Success"
    capabilities: ReaderCapabilities | None = None

    type: ClassVar[str] = "llrp_response"

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclasses.dataclass(frozen=True, slots=True)
class RoSpec(Message):
    """The minimal ROSpec this codec writes and reads: one AISpec with a Gen2 inventory and an
    ROReportSpec. ``antennas`` (0 = every antenna of the reader); ``report_n`` tags per
    report (0 = unlimited); ``report_fields`` are names from :data:`REPORT_FIELDS`."""

    rospec_id: int
    priority: int = 0
    current_state: int = ROSPEC_DISABLED
    start_trigger: int = START_TRIGGER_NULL  # 0 Null (START_ROSPEC), 1 Immediate
    stop_trigger: int = 0  # 0 Null, 1 Duration
    stop_duration_ms: int = 0
    antennas: tuple[int, ...] = (0,)
    inventory_parameter_spec_id: int = 1
    protocol_id: int = PROTOCOL_EPC_C1G2
    report_trigger: int = REPORT_UPON_N_TAGS_OR_END_OF_ROSPEC
    report_n: int = 1
    report_fields: tuple[str, ...] = DEFAULT_REPORT_FIELDS

    type: ClassVar[str] = "rospec"


@dataclasses.dataclass(frozen=True, slots=True)
class LlrpRequest(Message):
    """A client request as the (simulated) reader sees it."""

    type_name: str
    message_id: int
    rospec_id: int | None = None  # DELETE/START/STOP/ENABLE/DISABLE_ROSPEC
    rospec: RoSpec | None = None  # ADD_ROSPEC
    requested_data: int | None = None  # GET_READER_CAPABILITIES

    type: ClassVar[str] = "llrp_request"


@dataclasses.dataclass(frozen=True, slots=True)
class LlrpMessage(Message):
    """Any message outside the subset: its type number, ID and undecoded body."""

    msg_type: int
    message_id: int
    body: bytes
    type_name: str = ""

    type: ClassVar[str] = "llrp_message"


@dataclasses.dataclass(frozen=True, slots=True)
class TagReport:
    """One TagReportData for :func:`encode_ro_access_report`; ``None`` fields are left out."""

    epc: bytes
    antenna: int | None = None
    peak_rssi_dbm: int | None = None
    first_seen_us: int | None = None
    seen_count: int | None = None
    pc: int | None = None


# -- encoders ----------------------------------------------------------------------------
def _check_id(message_id: int) -> None:
    if not 0 <= message_id <= MAX_ID:
        raise ValueError(f"LLRP message ID must be 0..{MAX_ID}, got {message_id}")


def encode_message(msg_type: int | str, message_id: int, body: bytes = b"") -> bytes:
    """Frame ``body`` as one LLRP message (version 1)."""
    t = MESSAGE_TYPES[msg_type] if isinstance(msg_type, str) else msg_type
    if not 0 <= t <= 0x3FF:
        raise ValueError(f"LLRP message type must be 0..1023, got {t}")
    _check_id(message_id)
    length = HEADER_LEN + len(body)
    if length > MAX_MESSAGE:
        raise ValueError(f"LLRP message of {length} bytes exceeds MAX_MESSAGE={MAX_MESSAGE}")
    return _HEADER.pack((VERSION << 10) | t, length, message_id) + body


def _tlv(param_type: int, body: bytes) -> bytes:
    length = 4 + len(body)
    if length > 0xFFFF:
        raise ValueError(f"LLRP parameter {param_type} too long: {length} bytes")
    return _TLV.pack(param_type, length) + body


def _utf8v(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">H", len(data)) + data


def _status(status: int, description: str) -> bytes:
    return _tlv(PARAM["LLRPStatus"], struct.pack(">H", status) + _utf8v(description))


def _rospec_id_message(name: str, message_id: int, rospec_id: int) -> bytes:
    if not 0 <= rospec_id <= MAX_ID:
        raise ValueError(f"ROSpecID must be 0..{MAX_ID}, got {rospec_id}")
    return encode_message(name, message_id, struct.pack(">I", rospec_id))


def encode_get_reader_capabilities(message_id: int, requested_data: int = 0) -> bytes:
    """``requested_data`` 0 = all, 1 general device, 2 LLRP, 3 regulatory, 4 air protocol."""
    return encode_message("GET_READER_CAPABILITIES", message_id, bytes((requested_data,)))


def encode_delete_rospec(message_id: int, rospec_id: int = 0) -> bytes:
    """ROSpecID 0 deletes every ROSpec on the reader."""
    return _rospec_id_message("DELETE_ROSPEC", message_id, rospec_id)


def encode_enable_rospec(message_id: int, rospec_id: int) -> bytes:
    return _rospec_id_message("ENABLE_ROSPEC", message_id, rospec_id)


def encode_disable_rospec(message_id: int, rospec_id: int) -> bytes:
    return _rospec_id_message("DISABLE_ROSPEC", message_id, rospec_id)


def encode_start_rospec(message_id: int, rospec_id: int) -> bytes:
    return _rospec_id_message("START_ROSPEC", message_id, rospec_id)


def encode_stop_rospec(message_id: int, rospec_id: int) -> bytes:
    return _rospec_id_message("STOP_ROSPEC", message_id, rospec_id)


def encode_keepalive_ack(message_id: int) -> bytes:
    return encode_message("KEEPALIVE_ACK", message_id)


def encode_close_connection(message_id: int) -> bytes:
    return encode_message("CLOSE_CONNECTION", message_id)


def encode_enable_events_and_reports(message_id: int) -> bytes:
    return encode_message("ENABLE_EVENTS_AND_REPORTS", message_id)


def _content_selector(fields: Sequence[str]) -> int:
    flags = 0
    for name in fields:
        try:
            bit = REPORT_FIELDS.index(name)
        except ValueError:
            raise ValueError(f"unknown report field {name!r}; known: {REPORT_FIELDS}") from None
        flags |= 0x8000 >> bit
    return flags


def rospec_to_bytes(spec: RoSpec) -> bytes:
    """The ROSpec parameter (type 177) for ``spec``."""
    if not 1 <= spec.rospec_id <= MAX_ID:
        raise ValueError(f"ROSpecID must be 1..{MAX_ID} (0 is reserved), got {spec.rospec_id}")
    if not spec.antennas or not all(0 <= a <= 0xFFFF for a in spec.antennas):
        raise ValueError("an AISpec needs at least one antenna ID in 0..65535 (0 = all)")
    start = _tlv(PARAM["ROSpecStartTrigger"], bytes((spec.start_trigger,)))
    stop = _tlv(PARAM["ROSpecStopTrigger"], struct.pack(">BI", spec.stop_trigger,
                                                        spec.stop_duration_ms))
    boundary = _tlv(PARAM["ROBoundarySpec"], start + stop)
    ai_stop = _tlv(PARAM["AISpecStopTrigger"], struct.pack(">BI", 0, 0))
    inventory = _tlv(PARAM["InventoryParameterSpec"],
                     struct.pack(">HB", spec.inventory_parameter_spec_id, spec.protocol_id))
    antennas = struct.pack(f">H{len(spec.antennas)}H", len(spec.antennas), *spec.antennas)
    aispec = _tlv(PARAM["AISpec"], antennas + ai_stop + inventory)
    selector = _tlv(PARAM["TagReportContentSelector"],
                    struct.pack(">H", _content_selector(spec.report_fields)))
    report = _tlv(PARAM["ROReportSpec"], struct.pack(">BH", spec.report_trigger, spec.report_n)
                  + selector)
    return _tlv(PARAM["ROSpec"], struct.pack(">IBB", spec.rospec_id, spec.priority,
                                             spec.current_state) + boundary + aispec + report)


def encode_add_rospec(message_id: int, spec: RoSpec) -> bytes:
    return encode_message("ADD_ROSPEC", message_id, rospec_to_bytes(spec))


# reader side
def encode_reader_event_notification(message_id: int, timestamp_us: int, *,
                                     connection_status: int | None = 0,
                                     connection_close: bool = False) -> bytes:
    """A READER_EVENT_NOTIFICATION with a UTCTimestamp and, by default, a successful
    ConnectionAttemptEvent (what a reader sends first on every new connection)."""
    body = _tlv(PARAM["UTCTimestamp"], struct.pack(">Q", timestamp_us))
    if connection_status is not None:
        body += _tlv(PARAM["ConnectionAttemptEvent"], struct.pack(">H", connection_status))
    if connection_close:
        body += _tlv(PARAM["ConnectionCloseEvent"], b"")
    return encode_message("READER_EVENT_NOTIFICATION", message_id,
                          _tlv(PARAM["ReaderEventNotificationData"], body))


def _tag_report_data(tag: TagReport) -> bytes:
    epc = tag.epc
    if len(epc) == 12:
        body = bytes((0x80 | _TV_EPC96,)) + epc
    else:
        body = _tlv(PARAM["EPCData"], struct.pack(">H", len(epc) * 8) + epc)
    if tag.antenna is not None:
        body += struct.pack(">BH", 0x80 | _TV_ANTENNA, tag.antenna)
    if tag.peak_rssi_dbm is not None:
        if not -128 <= tag.peak_rssi_dbm <= 127:
            raise ValueError(f"PeakRSSI is a signed byte, got {tag.peak_rssi_dbm}")
        body += struct.pack(">Bb", 0x80 | _TV_PEAK_RSSI, tag.peak_rssi_dbm)
    if tag.first_seen_us is not None:
        body += struct.pack(">BQ", 0x80 | _TV_FIRST_SEEN_UTC, tag.first_seen_us)
    if tag.seen_count is not None:
        body += struct.pack(">BH", 0x80 | _TV_SEEN_COUNT, tag.seen_count)
    if tag.pc is not None:
        body += struct.pack(">BH", 0x80 | _TV_PC, tag.pc)
    return _tlv(PARAM["TagReportData"], body)


def encode_ro_access_report(message_id: int, tags: Sequence[TagReport]) -> bytes:
    """An RO_ACCESS_REPORT: EPC-96 as a TV parameter when the EPC is 12 bytes, EPCData TLV
    otherwise, then AntennaID, PeakRSSI, FirstSeenTimestampUTC, TagSeenCount, C1G2_PC in the
    order the standard lists them."""
    return encode_message("RO_ACCESS_REPORT", message_id,
                          b"".join(_tag_report_data(t) for t in tags))


def encode_keepalive(message_id: int) -> bytes:
    return encode_message("KEEPALIVE", message_id)


def encode_response(type_name: str, message_id: int, status: int = 0,
                    description: str = "") -> bytes:
    """Any ``*_RESPONSE`` whose body is just an LLRPStatus."""
    if MESSAGE_TYPES.get(type_name) not in RESPONSE_TYPES:
        raise ValueError(f"{type_name!r} is not an LLRP response message")
    return encode_message(type_name, message_id, _status(status, description))


def encode_error_message(message_id: int, status: int, description: str = "") -> bytes:
    return encode_message("ERROR_MESSAGE", message_id, _status(status, description))


def encode_get_reader_capabilities_response(message_id: int, *, max_antennas: int = 4,
                                            manufacturer: int = 0, model: int = 0,
                                            firmware: str = "", has_utc_clock: bool = True,
                                            status: int = 0, description: str = "") -> bytes:
    """LLRPStatus plus a minimal but complete GeneralDeviceCapabilities (one receive
    sensitivity entry, no GPIO, Gen2 on every antenna)."""
    flags = 0x4000 if has_utc_clock else 0
    sensitivity = _tlv(PARAM["ReceiveSensitivityTableEntry"], struct.pack(">Hh", 1, 0))
    gpio = _tlv(PARAM["GPIOCapabilities"], struct.pack(">HH", 0, 0))
    air = b"".join(_tlv(PARAM["PerAntennaAirProtocol"],
                        struct.pack(">HHB", ant, 1, PROTOCOL_EPC_C1G2))
                   for ant in range(1, max_antennas + 1))
    general = _tlv(PARAM["GeneralDeviceCapabilities"],
                   struct.pack(">HHII", max_antennas, flags, manufacturer, model)
                   + _utf8v(firmware) + sensitivity + gpio + air)
    return encode_message("GET_READER_CAPABILITIES_RESPONSE", message_id,
                          _status(status, description) + general)


# -- parameter parsing -------------------------------------------------------------------
class _BadBody(Exception):
    """Internal: a message body that does not parse (becomes a bad_field FrameError)."""


def _tlvs(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int]]:
    """(type, value start, value end) of the TLV parameters in ``buf[pos:end]``; TV
    parameters are returned with their type and value span too."""
    out = []
    while pos < end:
        b0 = buf[pos]
        if b0 & 0x80:
            t = b0 & 0x7F
            size = TV_LENGTHS.get(t)
            if size is None:
                raise _BadBody(f"unknown TV parameter type {t} at byte {pos}")
            if pos + 1 + size > end:
                raise _BadBody(f"TV parameter {t} overruns its container")
            out.append((t, pos + 1, pos + 1 + size))
            pos += 1 + size
            continue
        if pos + 4 > end:
            raise _BadBody(f"truncated parameter header at byte {pos}")
        t, length = _TLV.unpack_from(buf, pos)
        if length < 4 or pos + length > end:
            raise _BadBody(f"parameter {t & 0x3FF} length {length} overruns its container")
        out.append((t & 0x3FF, pos + 4, pos + length))
        pos += length
    return out


def _find(params: list[tuple[int, int, int]], ptype: int) -> tuple[int, int] | None:
    for t, s, e in params:
        if t == ptype:
            return s, e
    return None


def _need(params: list[tuple[int, int, int]], ptype: int, where: str) -> tuple[int, int]:
    span = _find(params, ptype)
    if span is None:
        raise _BadBody(f"{where} lacks {_PARAM_NAMES.get(ptype, ptype)}")
    return span


def _u(buf: bytes, s: int, n: int, e: int) -> int:
    if s + n > e:
        raise _BadBody("parameter too short for its fields")
    return int.from_bytes(buf[s:s + n], "big")


def _parse_status(buf: bytes, s: int, e: int) -> tuple[int, str]:
    code = _u(buf, s, 2, e)
    n = _u(buf, s + 2, 2, e)
    if s + 4 + n > e:
        raise _BadBody("LLRPStatus ErrorDescription overruns the parameter")
    return code, buf[s + 4:s + 4 + n].decode("utf-8", "replace")


def _parse_tag(buf: bytes, pos: int, end: int) -> TagRead:
    """One TagReportData body. The parameter walk is inlined: this is the hot path."""
    epc: str | None = None
    antenna = count = pc = first_seen = None
    rssi: float | None = None
    tv_lengths = TV_LENGTHS
    while pos < end:
        b0 = buf[pos]
        if b0 & 0x80:
            t = b0 & 0x7F
            size = tv_lengths.get(t)
            if size is None:
                raise _BadBody(f"unknown TV parameter type {t} at byte {pos}")
            vs = pos + 1
            pos = vs + size
            if pos > end:
                raise _BadBody(f"TV parameter {t} overruns TagReportData")
            if t == _TV_EPC96:
                epc = buf[vs:pos].hex().upper()
            elif t == _TV_ANTENNA:
                antenna = (buf[vs] << 8) | buf[vs + 1]
            elif t == _TV_PEAK_RSSI:
                v = buf[vs]
                rssi = float(v - 256 if v & 0x80 else v)
            elif t == _TV_FIRST_SEEN_UTC:
                first_seen = int.from_bytes(buf[vs:pos], "big") // 1000
            elif t == _TV_SEEN_COUNT:
                count = (buf[vs] << 8) | buf[vs + 1]
            elif t == _TV_PC:
                pc = (buf[vs] << 8) | buf[vs + 1]
            continue
        if pos + 4 > end:
            raise _BadBody(f"truncated parameter header at byte {pos}")
        t, length = _TLV.unpack_from(buf, pos)
        if length < 4 or pos + length > end:
            raise _BadBody(f"parameter {t & 0x3FF} length {length} overruns TagReportData")
        if t & 0x3FF == _EPC_DATA:  # bit count, then the bits
            bits = _u(buf, pos + 4, 2, pos + length)
            nbytes = (bits + 7) // 8
            if 6 + nbytes > length:
                raise _BadBody(f"EPCData claims {bits} bits, parameter is shorter")
            epc = buf[pos + 6:pos + 6 + nbytes].hex().upper()
        pos += length  # other TLVs (Custom, op results) are skipped
    if epc is None:
        raise _BadBody("TagReportData without EPCData or EPC-96")
    return TagRead(epc=epc, antenna=antenna, rssi_dbm=rssi, pc=pc, read_count=count,
                   device_ts_ms=first_seen)


def _parse_report(buf: bytes, s: int, e: int) -> tuple[TagRead, ...]:
    return tuple(_parse_tag(buf, vs, ve) for t, vs, ve in _tlvs(buf, s, e)
                 if t == _TAG_REPORT_DATA)


def _parse_event(message_id: int, buf: bytes, s: int, e: int) -> ReaderEvent:
    ds, de = _need(_tlvs(buf, s, e), PARAM["ReaderEventNotificationData"],
                   "READER_EVENT_NOTIFICATION")
    params = _tlvs(buf, ds, de)
    ts = _find(params, PARAM["UTCTimestamp"])
    utc = ts is not None
    if ts is None:
        ts = _need(params, PARAM["Uptime"], "ReaderEventNotificationData")
    timestamp = _u(buf, ts[0], 8, ts[1])
    status = None
    conn = _find(params, PARAM["ConnectionAttemptEvent"])
    if conn is not None:
        status = _u(buf, conn[0], 2, conn[1])
    events = tuple(_PARAM_NAMES.get(t, str(t)) for t, _, _ in params if t in _EVENT_PARAMS)
    return ReaderEvent(message_id, timestamp, utc, status, events)


def _parse_capabilities(buf: bytes, s: int, e: int) -> ReaderCapabilities:
    max_ant = _u(buf, s, 2, e)
    flags = _u(buf, s + 2, 2, e)
    manufacturer = _u(buf, s + 4, 4, e)
    model = _u(buf, s + 8, 4, e)
    n = _u(buf, s + 12, 2, e)
    if s + 14 + n > e:
        raise _BadBody("ReaderFirmwareVersion overruns GeneralDeviceCapabilities")
    firmware = buf[s + 14:s + 14 + n].decode("utf-8", "replace")
    return ReaderCapabilities(max_ant, manufacturer, model, firmware, bool(flags & 0x4000))


def _parse_response(msg_type: int, message_id: int, buf: bytes, s: int,
                    e: int) -> LlrpResponse:
    name = _MESSAGE_NAMES[msg_type]
    params = _tlvs(buf, s, e)
    if not params or params[0][0] != PARAM["LLRPStatus"]:
        raise _BadBody(f"{name} does not start with LLRPStatus")
    code, description = _parse_status(buf, params[0][1], params[0][2])
    caps = None
    general = _find(params, PARAM["GeneralDeviceCapabilities"])
    if general is not None and msg_type == 11:
        caps = _parse_capabilities(buf, *general)
    return LlrpResponse(name, message_id, code, description,
                        STATUS_CODES.get(code, str(code)), caps)


def _parse_rospec(buf: bytes, s: int, e: int) -> RoSpec:
    rospec_id = _u(buf, s, 4, e)
    priority = _u(buf, s + 4, 1, e)
    state = _u(buf, s + 5, 1, e)
    params = _tlvs(buf, s + 6, e)
    bs, be = _need(params, PARAM["ROBoundarySpec"], "ROSpec")
    boundary = _tlvs(buf, bs, be)
    ss, se = _need(boundary, PARAM["ROSpecStartTrigger"], "ROBoundarySpec")
    ps, pe = _need(boundary, PARAM["ROSpecStopTrigger"], "ROBoundarySpec")
    a_s, a_e = _need(params, PARAM["AISpec"], "ROSpec")
    count = _u(buf, a_s, 2, a_e)
    antennas = tuple(_u(buf, a_s + 2 + 2 * i, 2, a_e) for i in range(count))
    ai = _tlvs(buf, a_s + 2 + 2 * count, a_e)
    _need(ai, PARAM["AISpecStopTrigger"], "AISpec")
    is_, ie = _need(ai, PARAM["InventoryParameterSpec"], "AISpec")
    # without an ROReportSpec the reader's configured default applies; we report "none"
    trigger, report_n = 0, 0
    fields: tuple[str, ...] = ()
    report = _find(params, PARAM["ROReportSpec"])
    if report is not None:
        rs, re_ = report
        trigger = _u(buf, rs, 1, re_)
        report_n = _u(buf, rs + 1, 2, re_)
        cs, ce = _need(_tlvs(buf, rs + 3, re_), PARAM["TagReportContentSelector"],
                       "ROReportSpec")
        flags = _u(buf, cs, 2, ce)
        fields = tuple(n for i, n in enumerate(REPORT_FIELDS) if flags & (0x8000 >> i))
    return RoSpec(rospec_id, priority, state, start_trigger=_u(buf, ss, 1, se),
                  stop_trigger=_u(buf, ps, 1, pe), stop_duration_ms=_u(buf, ps + 1, 4, pe),
                  antennas=antennas, inventory_parameter_spec_id=_u(buf, is_, 2, ie),
                  protocol_id=_u(buf, is_ + 2, 1, ie), report_trigger=trigger,
                  report_n=report_n, report_fields=fields)


def _parse_request(msg_type: int, message_id: int, buf: bytes, s: int,
                   e: int) -> LlrpRequest | None:
    name = _MESSAGE_NAMES.get(msg_type, "")
    if msg_type in _ROSPEC_ID_REQUESTS:
        return LlrpRequest(name, message_id, rospec_id=_u(buf, s, 4, e))
    if msg_type == 20:
        rs, re_ = _need(_tlvs(buf, s, e), PARAM["ROSpec"], "ADD_ROSPEC")
        return LlrpRequest(name, message_id, rospec=_parse_rospec(buf, rs, re_))
    if msg_type == 1:
        return LlrpRequest(name, message_id, requested_data=_u(buf, s, 1, e))
    if msg_type in _EMPTY_REQUESTS:
        return LlrpRequest(name, message_id)
    return None


# -- decoder -----------------------------------------------------------------------------
def _hunt(buf: bytes, pos: int) -> int:
    """Index of the first plausible version-1 header at or after ``pos``, or -1. Plausible:
    reserved bits 0, version 1, a known message type and a length within 10..MAX_MESSAGE,
    each checked as far as the buffer reaches (a header cut by the buffer end is kept)."""
    n = len(buf)
    names = _MESSAGE_NAMES
    while True:
        m = _HUNT_BYTE.search(buf, pos)
        if m is None:
            return -1
        i = m.start()
        if i + 2 <= n and (((buf[i] & 0x03) << 8) | buf[i + 1]) not in names:
            pos = i + 1
            continue
        if i + 6 <= n and not HEADER_LEN <= int.from_bytes(buf[i + 2:i + 6], "big") \
                <= MAX_MESSAGE:
            pos = i + 1
            continue
        return i


class Decoder(StreamDecoder):
    """Stateful LLRP message decoder. ``role="client"`` (default) decodes what a reader
    sends; ``role="reader"`` decodes client requests (for the simulated reader).

    The decoder is *in sync* at the start of a stream, after every message it framed and
    after :meth:`flush`: the next bytes must be a header, judged strictly (``bad_length``,
    ``oversized``, ``garbage`` when the first byte cannot start a header). After such an
    error it *hunts*: everything up to the next plausible version-1 header (see
    :func:`_hunt`) is reported, and decoding resumes there.
    """

    PROTOCOL: ClassVar[str] = "llrp"
    MAX_BUFFER: ClassVar[int] = MAX_BUFFER

    def __init__(self, role: Literal["client", "reader"] = "client") -> None:
        super().__init__()
        if role not in ("client", "reader"):
            raise ValueError(f"role must be 'client' or 'reader', got {role!r}")
        self.role = role
        self.in_sync = True

    def flush(self) -> list[Message | FrameError]:
        out = super().flush()
        self.in_sync = True  # whatever comes next is a new stream
        return out

    def _find_start(self, buf: bytes, pos: int) -> int:
        return pos if self.in_sync else _hunt(buf, pos)

    def _lost(self, buf: bytes, start: int, kind: str, detail: str) -> ParseResult:
        self.in_sync = False
        nxt = _hunt(buf, start + 1)
        stop = len(buf) if nxt < 0 else nxt
        return stop, self.error(kind, buf[start:stop], self._base + start, detail)

    def _parse(self, buf: bytes, start: int) -> ParseResult:
        n = len(buf)
        b0 = buf[start]
        if not _MIN_START <= b0 <= _MAX_START:  # only reachable in sync
            return self._lost(buf, start, "garbage",
                              f"0x{b0:02X} cannot start an LLRP header (reserved bits or "
                              "version 0)")
        if start + 6 > n:
            return NEED_MORE
        head, length = struct.unpack_from(">HI", buf, start)
        if length < HEADER_LEN:
            return self._lost(buf, start, "bad_length",
                              f"length {length} < header size {HEADER_LEN}")
        if length > MAX_MESSAGE:
            return self._lost(buf, start, "oversized",
                              f"length {length} > MAX_MESSAGE={MAX_MESSAGE}")
        end = start + length
        if end > n:
            return NEED_MORE
        self.in_sync = True
        version = (head >> 10) & 0x07
        msg_type = head & 0x3FF
        message_id = int.from_bytes(buf[start + 6:start + 10], "big")
        if version != VERSION:
            return end, self.error("bad_field", buf[start:end], self._base + start,
                                   f"LLRP version {version} not supported (expected "
                                   f"{VERSION}), message type {msg_type} skipped")
        body = start + HEADER_LEN
        try:
            item = self._decode(msg_type, message_id, buf, body, end)
        except _BadBody as exc:
            name = _MESSAGE_NAMES.get(msg_type, f"type {msg_type}")
            return end, self.error("bad_field", buf[start:end], self._base + start,
                                   f"{name}: {exc}")
        return end, item

    def _decode(self, msg_type: int, message_id: int, buf: bytes, s: int,
                e: int) -> Message | tuple[Message, ...]:
        if self.role == "client":
            if msg_type == 61:
                return _parse_report(buf, s, e)
            if msg_type == 63:
                return _parse_event(message_id, buf, s, e)
            if msg_type == 62:
                return Keepalive(message_id)
            if msg_type in RESPONSE_TYPES:
                return _parse_response(msg_type, message_id, buf, s, e)
        else:
            req = _parse_request(msg_type, message_id, buf, s, e)
            if req is not None:
                return req
        return LlrpMessage(msg_type, message_id, buf[s:e], _MESSAGE_NAMES.get(msg_type, ""))


def decode_frame_arg(arg: str, *,
                     sent_by: Literal["reader", "client", "device", "host"] = "reader"
                     ) -> list[Message | FrameError]:
    """Decode one command-line FRAME (hex) for ``pledgewatch decode llrp``. ``sent_by``
    "reader" (alias "device") decodes reader output; "client" (alias "host") requests."""
    data = parse_hex(arg)
    if sent_by not in ("reader", "client", "device", "host"):
        raise ValueError(f"sent_by must be 'reader' or 'client', got {sent_by!r}")
    dec = Decoder("client" if sent_by in ("reader", "device") else "reader")
    return dec.feed(data) + dec.flush()
