"""ThingMagic Mercury embedded-module serial protocol (M5e, M6e Nano, M7e Hecto, SparkFun boards).

Frames (``shared/reference/protocols.md`` section 1.2; Mercury API ``serial_reader_l3.c``):

* host -> module: ``FF | Len | Opcode | Data(Len) | CRC16`` (``Len + 5`` bytes);
* module -> host: ``FF | Len | Opcode | Status(2) | Data(Len) | CRC16`` (``Len + 7`` bytes).

``Len`` counts only the data bytes. The CRC is ThingMagic's CalcCRC (:func:`crc16_thingmagic`)
over ``Len`` .. last data byte, sent most significant byte first. Status ``0x0000`` is success.

Host role (``Decoder()``) decodes what a module sends: version, acknowledgements, tag reads
(single read 0x21, streamed 0x22 records with metadata, tag-buffer 0x29 records), continuous-read
start/stop acknowledgements and error statuses. Device role (``Decoder(role="device")``)
decodes host commands for the simulated reader.

Decisions where the sources leave room (see the module tests for the vectors):

* Tag metadata fields follow flag bit order (read count 1 B, RSSI 1 B signed dBm, antenna 1 B,
  frequency 3 B kHz, timestamp 4 B ms, phase 2 B, protocol 1 B, data 2 B bit-length + bytes,
  GPIO 1 B). Unknown flag bits (above 0x0100) have unknown sizes: such a frame is a
  ``bad_field`` error rather than a guess.
* The antenna byte holds TX port (high nibble) and RX port (low nibble). The Mercury API maps
  the pair through its TX/RX map, whose default for a monostatic module is "antenna n = TX n,
  RX n", so ``antenna`` is the TX nibble (``0x11`` -> 1); a zero TX nibble falls back to the RX
  nibble, and ``0x00`` gives ``None``.
* The EPC field of a Gen2 record is ``PC(2) | EPC | tag CRC(2)``; its bit length includes all
  three. When the protocol metadata is absent the record is taken as Gen2 (the only protocol
  this project configures). The tag CRC (:func:`crc16_gen2` over PC + EPC) is checked; a
  mismatch is a ``bad_field`` error, because a corrupted EPC must not become a reading.
* The legacy single-read reply (0x21 sent with only a timeout, as M5e modules answer) carries
  ``EPC | tag CRC`` without the PC word. The PC is recovered from the CRC (the Gen2 CRC is an
  invertible affine map of the PC for a fixed EPC) and the read is accepted only when the
  recovered PC's length field matches the EPC length.
* A streamed 0x22 frame is ``option(0x10) | search flags(2) | metadata flags(2) |
  response type(1) | record``; response type 1 carries one tag record, 0 ends the stream
  (Mercury API ``TMR_SR_hasMoreTags``).
* A host sends a ``Len = 0xFF`` command never (the API's packet limit is 256 bytes), but the
  Mercury API sends runs of ``FF`` bytes to wake a sleeping module; the device role therefore
  skips ``FF FF`` silently. The host role treats every length as possible.
* A stray head byte makes the bytes after it look like a long frame. Rather than wait for up
  to 262 bytes, a decoder whose candidate is incomplete looks at the later head bytes already
  buffered: a complete frame there with a good CRC, a known opcode and (replies) a known
  status wins, and the bytes before it are reported as ``bad_length``. At the end of the
  stream :meth:`Decoder.flush` decodes any complete frame behind a stalled candidate (the CRC
  alone decides: nothing is arriving any more) and reports the rest as ``truncated``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar, Final, Literal

from protocols._base import NEED_MORE, FrameError, Message, ParseResult, StreamDecoder
from protocols._cli import parse_hex
from protocols._crc import crc16_gen2, crc16_thingmagic
from protocols.messages import TagRead

__all__ = [
    "ERROR_CODES",
    "HEAD",
    "MAX_BUFFER",
    "MAX_FRAME",
    "METADATA_ALL",
    "METADATA_FLAGS",
    "OPCODES",
    "PROTOCOL_GEN2",
    "REGIONS",
    "Ack",
    "Command",
    "ContinuousRead",
    "Decoder",
    "ModuleError",
    "Response",
    "StreamEnd",
    "TagRecord",
    "TagsFound",
    "Version",
    "decode_frame_arg",
    "encode_ack",
    "encode_boot_firmware",
    "encode_clear_tag_buffer",
    "encode_command",
    "encode_continuous_read_started",
    "encode_continuous_read_stopped",
    "encode_error",
    "encode_get_tag_buffer",
    "encode_get_version",
    "encode_read_tag_multiple",
    "encode_read_tag_single",
    "encode_reply",
    "encode_set_antenna",
    "encode_set_read_power",
    "encode_set_region",
    "encode_set_tag_protocol",
    "encode_single_read",
    "encode_start_continuous_read",
    "encode_stop_continuous_read",
    "encode_stream_end",
    "encode_stream_tag",
    "encode_tag_buffer",
    "encode_tags_found",
    "encode_version",
    "parse_continuous_read",
]

HEAD: Final = 0xFF
MAX_FRAME: Final = 0xFF + 7  # Len is one byte; a reply adds head, len, opcode, status, CRC
MAX_BUFFER: Final = 4 * MAX_FRAME
STATUS_OK: Final = 0x0000
PROTOCOL_GEN2: Final = 0x05

OPCODES: Final = {
    "version": 0x03,
    "boot_firmware": 0x04,
    "set_baud_rate": 0x06,
    "get_current_program": 0x0C,
    "hardware_version": 0x10,
    "read_tag_id_single": 0x21,
    "read_tag_id_multiple": 0x22,
    "read_tag_data": 0x28,
    "get_tag_id_buffer": 0x29,
    "clear_tag_id_buffer": 0x2A,
    "multi_protocol_tag_op": 0x2F,
    "get_antenna_port": 0x61,
    "get_read_tx_power": 0x62,
    "get_tag_protocol": 0x63,
    "get_freq_hop_table": 0x65,
    "get_region": 0x67,
    "get_power_mode": 0x68,
    "get_reader_optional_params": 0x6A,
    "get_protocol_param": 0x6B,
    "get_available_protocols": 0x70,
    "get_available_regions": 0x71,
    "get_temperature": 0x72,
    "set_antenna_port": 0x91,
    "set_read_tx_power": 0x92,
    "set_tag_protocol": 0x93,
    "set_region": 0x97,
    "set_power_mode": 0x98,
    "set_reader_optional_params": 0x9A,
    "set_protocol_param": 0x9B,
}
_OP_NAMES: Final = {v: k for k, v in OPCODES.items()}

# M6e/M7e region codes (SparkFun library); older M5e firmware uses other codes (0x02 = EU).
REGIONS: Final = {
    "india": 0x04,
    "japan": 0x05,
    "china": 0x06,
    "europe": 0x08,
    "korea": 0x09,
    "australia": 0x0B,
    "new_zealand": 0x0C,
    "north_america": 0x0D,
    "open": 0xFF,
}

META_READ_COUNT: Final = 0x0001
META_RSSI: Final = 0x0002
META_ANTENNA: Final = 0x0004
META_FREQUENCY: Final = 0x0008
META_TIMESTAMP: Final = 0x0010
META_PHASE: Final = 0x0020
META_PROTOCOL: Final = 0x0040
META_DATA: Final = 0x0080
META_GPIO: Final = 0x0100
METADATA_ALL: Final = 0x01FF
METADATA_FLAGS: Final = {
    "read_count": META_READ_COUNT, "rssi": META_RSSI, "antenna": META_ANTENNA,
    "frequency": META_FREQUENCY, "timestamp": META_TIMESTAMP, "phase": META_PHASE,
    "protocol": META_PROTOCOL, "data": META_DATA, "gpio": META_GPIO,
}

OPTION_METADATA: Final = 0x10
CONTINUOUS_START: Final = 0x01
CONTINUOUS_STOP: Final = 0x02
DEFAULT_SEARCH_FLAGS: Final = 0x001B  # as the SparkFun library sends for continuous reading

# Mercury API tmr_status.h (status word of a module reply).
ERROR_CODES: Final = {
    0x0100: "msg_wrong_number_of_data",
    0x0101: "invalid_opcode",
    0x0102: "unimplemented_opcode",
    0x0103: "msg_power_too_high",
    0x0104: "msg_invalid_freq_received",
    0x0105: "msg_invalid_parameter_value",
    0x0106: "msg_power_too_low",
    0x0109: "unimplemented_feature",
    0x010A: "invalid_baud_rate",
    0x010B: "invalid_region",
    0x010C: "invalid_license_key",
    0x0200: "bl_invalid_image_crc",
    0x0201: "bl_invalid_app_end_addr",
    0x0300: "flash_bad_erase_password",
    0x0301: "flash_bad_write_password",
    0x0302: "flash_undefined_sector",
    0x0303: "flash_illegal_sector",
    0x0304: "flash_write_to_non_erased_area",
    0x0305: "flash_write_to_illegal_sector",
    0x0306: "flash_verify_failed",
    0x0400: "no_tags_found",
    0x0401: "no_protocol_defined",
    0x0402: "invalid_protocol_specified",
    0x0403: "write_passed_lock_failed",
    0x0404: "protocol_no_data_read",
    0x0405: "afe_not_on",
    0x0406: "protocol_write_failed",
    0x0407: "not_implemented_for_this_protocol",
    0x0408: "protocol_invalid_write_data",
    0x0409: "protocol_invalid_address",
    0x040A: "general_tag_error",
    0x040B: "data_too_large",
    0x040C: "protocol_invalid_kill_password",
    0x040E: "protocol_kill_failed",
    0x040F: "protocol_bit_decoding_failed",
    0x0410: "protocol_invalid_epc",
    0x0411: "protocol_invalid_num_data",
    0x0420: "gen2_protocol_other_error",
    0x0423: "gen2_protocol_memory_overrun_bad_pc",
    0x0424: "gen2_protocol_memory_locked",
    0x042B: "gen2_protocol_insufficient_power",
    0x042F: "gen2_protocol_non_specific_error",
    0x0430: "gen2_protocol_unknown_error",
    0x0500: "ahal_invalid_freq",
    0x0501: "ahal_channel_occupied",
    0x0502: "ahal_transmitter_on",
    0x0503: "antenna_not_connected",
    0x0504: "temperature_exceed_limits",
    0x0505: "high_return_loss",
    0x0507: "invalid_antenna_config",
    0x0600: "tag_id_buffer_not_enough_tags_available",
    0x0601: "tag_id_buffer_full",
    0x0602: "tag_id_buffer_repeated_tag_id",
    0x0603: "tag_id_buffer_num_tag_too_large",
    0x7F00: "system_unknown_error",
    0x7F01: "tm_assert_failed",
}


def _op_name(opcode: int) -> str:
    return _OP_NAMES.get(opcode, f"0x{opcode:02X}")


def _error_name(status: int) -> str:
    return ERROR_CODES.get(status, f"0x{status:04X}")


# -- messages ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Version(Message):
    """Version reply (0x03; boot-firmware 0x04 answers with the same layout). Byte groups are
    shown as dotted hex, the firmware date as ``YYYY-MM-DD`` (BCD on the wire); ``protocols``
    lists the supported protocol codes (bit n-1 of the mask = protocol n, 5 = Gen2)."""

    opcode: int
    bootloader: str
    hardware: str
    firmware_date: str
    firmware_version: str
    protocols: tuple[int, ...]

    type: ClassVar[str] = "version"


@dataclasses.dataclass(frozen=True, slots=True)
class Ack(Message):
    """Success status and no data: a set/clear command was accepted."""

    opcode: int
    name: str

    type: ClassVar[str] = "ack"


@dataclasses.dataclass(frozen=True, slots=True)
class ModuleError(Message):
    """A reply with a non-zero status (``0x0400`` = no tags found)."""

    opcode: int
    status: int
    error: str
    data: bytes = b""

    type: ClassVar[str] = "module_error"


@dataclasses.dataclass(frozen=True, slots=True)
class ContinuousRead(Message):
    """Acknowledgement of continuous reading switched on (``running``) or off (0x2F)."""

    running: bool
    sub_opcode: int | None = None

    type: ClassVar[str] = "continuous_read"


@dataclasses.dataclass(frozen=True, slots=True)
class TagsFound(Message):
    """A tag count: the reply to a non-streaming 0x22 search, or an empty 0x29 buffer."""

    opcode: int
    count: int

    type: ClassVar[str] = "tags_found"


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEnd(Message):
    """A streamed 0x22 frame with response type 0: the module ended the tag stream."""

    search_flags: int
    metadata_flags: int
    data: bytes = b""

    type: ClassVar[str] = "stream_end"


@dataclasses.dataclass(frozen=True, slots=True)
class Response(Message):
    """Any other successful reply, undecoded beyond its header."""

    opcode: int
    status: int
    data: bytes

    type: ClassVar[str] = "response"


@dataclasses.dataclass(frozen=True, slots=True)
class Command(Message):
    """A host command, as the simulated module sees it."""

    opcode: int
    name: str
    data: bytes

    type: ClassVar[str] = "command"


@dataclasses.dataclass(frozen=True, slots=True)
class TagRecord:
    """One tag record to encode (device side). ``None`` metadata is encoded as zero."""

    epc: bytes
    read_count: int = 1
    rssi_dbm: int = -60
    antenna: int = 1
    frequency_khz: int = 915_000
    timestamp_ms: int = 0
    phase: int = 0
    protocol: int = PROTOCOL_GEN2
    data: bytes = b""
    gpio: int = 0
    pc: int | None = None  # default: EPC length in words, no other PC bits
    tag_crc: int | None = None  # default: the correct Gen2 CRC


# -- encoders: framing -------------------------------------------------------------------
def _crc_bytes(body: bytes) -> bytes:
    return crc16_thingmagic(body).to_bytes(2, "big")


def encode_command(opcode: int, data: bytes = b"") -> bytes:
    """Frame a host -> module command."""
    if len(data) > 0xFF:
        raise ValueError(f"ThingMagic data too long: {len(data)} bytes > 255")
    body = bytes((len(data), opcode & 0xFF)) + data
    return b"\xff" + body + _crc_bytes(body)


def encode_reply(opcode: int, data: bytes = b"", status: int = STATUS_OK) -> bytes:
    """Frame a module -> host reply (the one framing every device frame uses)."""
    if len(data) > 0xFF:
        raise ValueError(f"ThingMagic data too long: {len(data)} bytes > 255")
    body = bytes((len(data), opcode & 0xFF, (status >> 8) & 0xFF, status & 0xFF)) + data
    return b"\xff" + body + _crc_bytes(body)


# -- encoders: host commands -------------------------------------------------------------
def encode_get_version() -> bytes:
    return encode_command(0x03)


def encode_boot_firmware() -> bytes:
    """Leave the bootloader and start the application firmware (send after power-up)."""
    return encode_command(0x04)


def encode_set_region(region: int | str) -> bytes:
    """Region by code or by name from :data:`REGIONS` (M6e/M7e codes)."""
    code = REGIONS[region] if isinstance(region, str) else region
    if not 0 <= code <= 0xFF:
        raise ValueError(f"region code must be one byte, got {code}")
    return encode_command(0x97, bytes((code,)))


def encode_set_tag_protocol(protocol: int = PROTOCOL_GEN2) -> bytes:
    return encode_command(0x93, protocol.to_bytes(2, "big"))


def encode_set_antenna(tx: int = 1, rx: int | None = None) -> bytes:
    """Select the TX and RX ports (monostatic: RX = TX)."""
    rx = tx if rx is None else rx
    if not (1 <= tx <= 15 and 1 <= rx <= 15):
        raise ValueError(f"antenna ports must be 1..15, got tx={tx} rx={rx}")
    return encode_command(0x91, bytes((tx, rx)))


def encode_set_read_power(power_dbm: float) -> bytes:
    """Read TX power, sent in centi-dBm (27 dBm -> 2700)."""
    centi = round(power_dbm * 100)
    if not 0 <= centi <= 3200:
        raise ValueError(f"read power must be 0..32 dBm, got {power_dbm}")
    return encode_command(0x92, centi.to_bytes(2, "big"))


def encode_read_tag_single(timeout_ms: int = 1000) -> bytes:
    return encode_command(0x21, _u16(timeout_ms, "timeout_ms"))


def encode_read_tag_multiple(timeout_ms: int = 1000, search_flags: int = 0) -> bytes:
    """Search for tags into the module's tag buffer; the reply is a :class:`TagsFound`."""
    return encode_command(0x22, b"\x00" + _u16(search_flags, "search_flags")
                          + _u16(timeout_ms, "timeout_ms"))


def encode_start_continuous_read(metadata_flags: int = METADATA_ALL, *, timeout_ms: int = 1000,
                                 search_flags: int = DEFAULT_SEARCH_FLAGS,
                                 protocol: int = PROTOCOL_GEN2) -> bytes:
    """0x2F (multi-protocol tag op, continuous) wrapping a 0x22 read with metadata; the
    sub-command length byte excludes the sub-command's opcode (Mercury API convention)."""
    _check_flags(metadata_flags)
    sub = (b"\x22" + bytes((OPTION_METADATA,)) + _u16(search_flags, "search_flags")
           + _u16(timeout_ms, "timeout_ms") + _u16(metadata_flags, "metadata_flags"))
    data = (b"\x00\x00" + bytes((CONTINUOUS_START, 0x22)) + b"\x00\x00"
            + bytes((protocol, len(sub) - 1)) + sub)
    return encode_command(0x2F, data)


def encode_stop_continuous_read() -> bytes:
    return encode_command(0x2F, b"\x00\x00" + bytes((CONTINUOUS_STOP,)))


def encode_get_tag_buffer(metadata_flags: int = METADATA_ALL) -> bytes:
    _check_flags(metadata_flags)
    return encode_command(0x29, _u16(metadata_flags, "metadata_flags") + b"\x00")


def encode_clear_tag_buffer() -> bytes:
    return encode_command(0x2A)


# -- encoders: module replies ------------------------------------------------------------
def encode_ack(opcode: int) -> bytes:
    return encode_reply(opcode)


def encode_error(opcode: int, status: int, data: bytes = b"") -> bytes:
    if status == STATUS_OK:
        raise ValueError("an error reply needs a non-zero status")
    return encode_reply(opcode, data, status)


def _dotted(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text.replace(".", "").replace("-", ""))
    except ValueError as exc:
        raise ValueError(f"{what} must be four hex bytes, got {text!r}") from exc
    if len(raw) != 4:
        raise ValueError(f"{what} must be four hex bytes, got {text!r}")
    return raw


def encode_version(*, bootloader: str = "07.10.23.00", hardware: str = "01.00.00.03",
                   firmware_date: str = "2014-10-07", firmware_version: str = "01.07.02.09",
                   protocols: Sequence[int] = (PROTOCOL_GEN2,), opcode: int = 0x03) -> bytes:
    """Version reply; the defaults are the M5e of the shared capture."""
    mask = 0
    for p in protocols:
        if not 1 <= p <= 32:
            raise ValueError(f"protocol codes are 1..32, got {p}")
        mask |= 1 << (p - 1)
    data = (_dotted(bootloader, "bootloader") + _dotted(hardware, "hardware")
            + _dotted(firmware_date, "firmware_date")
            + _dotted(firmware_version, "firmware_version") + mask.to_bytes(4, "big"))
    return encode_reply(opcode, data)


def _epc_field(rec: TagRecord) -> bytes:
    epc = rec.epc
    if rec.protocol != PROTOCOL_GEN2:
        crc = 0 if rec.tag_crc is None else rec.tag_crc
        return epc + crc.to_bytes(2, "big")
    if len(epc) % 2:
        raise ValueError("a Gen2 EPC is a whole number of 16-bit words")
    pc = (len(epc) // 2) << 11 if rec.pc is None else rec.pc
    pc_epc = pc.to_bytes(2, "big") + epc
    crc = crc16_gen2(pc_epc) if rec.tag_crc is None else rec.tag_crc
    return pc_epc + crc.to_bytes(2, "big")


def _record(rec: TagRecord, flags: int) -> bytes:
    out = bytearray()
    if flags & META_READ_COUNT:
        out.append(rec.read_count & 0xFF)
    if flags & META_RSSI:
        if not -128 <= rec.rssi_dbm <= 127:
            raise ValueError(f"rssi_dbm out of range: {rec.rssi_dbm}")
        out.append(rec.rssi_dbm & 0xFF)
    if flags & META_ANTENNA:
        if not 1 <= rec.antenna <= 15:
            raise ValueError(f"antenna must be 1..15, got {rec.antenna}")
        out.append((rec.antenna << 4) | rec.antenna)
    if flags & META_FREQUENCY:
        out += rec.frequency_khz.to_bytes(3, "big")
    if flags & META_TIMESTAMP:
        out += rec.timestamp_ms.to_bytes(4, "big")
    if flags & META_PHASE:
        out += rec.phase.to_bytes(2, "big")
    if flags & META_PROTOCOL:
        out.append(rec.protocol)
    if flags & META_DATA:
        out += (len(rec.data) * 8).to_bytes(2, "big") + rec.data
    if flags & META_GPIO:
        out.append(rec.gpio & 0xFF)
    field = _epc_field(rec)
    out += (len(field) * 8).to_bytes(2, "big") + field
    return bytes(out)


def encode_stream_tag(rec: TagRecord, *, metadata_flags: int = METADATA_ALL,
                      search_flags: int = DEFAULT_SEARCH_FLAGS) -> bytes:
    """One streamed tag record (0x22) as a module sends it in continuous reading."""
    _check_flags(metadata_flags)
    head = (bytes((OPTION_METADATA,)) + _u16(search_flags, "search_flags")
            + _u16(metadata_flags, "metadata_flags") + b"\x01")
    return encode_reply(0x22, head + _record(rec, metadata_flags))


def encode_stream_end(*, metadata_flags: int = METADATA_ALL,
                      search_flags: int = DEFAULT_SEARCH_FLAGS) -> bytes:
    return encode_reply(0x22, bytes((OPTION_METADATA,)) + _u16(search_flags, "search_flags")
                        + _u16(metadata_flags, "metadata_flags") + b"\x00")


def encode_tags_found(count: int, *, search_flags: int = 0, wide: bool = False) -> bytes:
    """Reply to a non-streaming 0x22: one-byte count, or four bytes with ``wide``."""
    if wide or count > 0xFF:
        return encode_reply(0x22, b"\x00" + _u16(search_flags, "search_flags")
                            + count.to_bytes(4, "big"))
    return encode_reply(0x22, b"\x00" + _u16(search_flags, "search_flags") + bytes((count,)))


def encode_tag_buffer(records: Sequence[TagRecord], *,
                      metadata_flags: int = METADATA_ALL) -> bytes:
    """Reply to 0x29: metadata flags, read options, tag count, then the records."""
    _check_flags(metadata_flags)
    if len(records) > 0xFF:
        raise ValueError("at most 255 records per tag-buffer reply")
    data = _u16(metadata_flags, "metadata_flags") + b"\x00" + bytes((len(records),))
    data += b"".join(_record(r, metadata_flags) for r in records)
    return encode_reply(0x29, data)


def encode_single_read(epc: bytes, *, pc: int | None = None,
                       tag_crc: int | None = None) -> bytes:
    """Legacy reply to 0x21 (timeout only): ``EPC | tag CRC``, no PC on the wire."""
    field = _epc_field(TagRecord(epc=epc, pc=pc, tag_crc=tag_crc))
    return encode_reply(0x21, field[2:])


def encode_continuous_read_started(search_flags: int = 0) -> bytes:
    return encode_reply(0x2F, bytes((CONTINUOUS_START, 0x22)) + _u16(search_flags,
                                                                     "search_flags"))


def encode_continuous_read_stopped() -> bytes:
    return encode_reply(0x2F, bytes((CONTINUOUS_STOP,)))


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} must fit in 16 bits, got {value}")
    return value.to_bytes(2, "big")


def _check_flags(flags: int) -> None:
    if flags & ~METADATA_ALL & 0xFFFF or not 0 <= flags <= 0xFFFF:
        raise ValueError(f"unsupported metadata flags 0x{flags:04X} (known: 0x{METADATA_ALL:04X})")


# -- device-side command helpers ---------------------------------------------------------
def parse_continuous_read(data: bytes) -> tuple[bool, int] | None:
    """Interpret 0x2F command data: ``(True, metadata_flags)`` for a continuous-read start
    wrapping 0x22 with metadata, ``(False, 0)`` for stop, ``None`` for anything else."""
    if len(data) >= 3 and data[2] == CONTINUOUS_STOP:
        return False, 0
    if len(data) >= 8 and data[2] == CONTINUOUS_START and data[3] == 0x22:
        sub = data[8:]
        if len(sub) >= 8 and sub[0] == 0x22 and sub[1] & OPTION_METADATA:
            return True, int.from_bytes(sub[6:8], "big")
        return True, 0
    return None


# -- decoding ----------------------------------------------------------------------------
_solver_cache: dict[int, tuple[int, ...]] = {}


def _pc_solver(epc_len: int) -> tuple[int, ...]:
    """Columns of the inverse of PC -> crc16_gen2(PC || 0 * epc_len) (affine part removed),
    a bijection over GF(2)^16, so the PC that produced a tag CRC can be recovered."""
    cols = _solver_cache.get(epc_len)
    if cols is not None:
        return cols
    zero = bytes(epc_len)
    base = crc16_gen2(b"\x00\x00" + zero)
    rows = [[crc16_gen2((1 << k).to_bytes(2, "big") + zero) ^ base, 1 << k] for k in range(16)]
    inv = [0] * 16
    for bit in range(16):
        pivot = next(r for r in rows if r[0] >> bit & 1 and r[0] & ((1 << bit) - 1) == 0)
        for r in rows:
            if r is not pivot and r[0] >> bit & 1:
                r[0] ^= pivot[0]
                r[1] ^= pivot[1]
    for vec, comb in rows:
        inv[vec.bit_length() - 1] = comb
    cols = tuple(inv)
    if len(_solver_cache) < 64:
        _solver_cache[epc_len] = cols
    return cols


def _recover_pc(epc: bytes, tag_crc: int) -> int:
    target = tag_crc ^ crc16_gen2(b"\x00\x00" + epc)
    pc = 0
    for k, col in enumerate(_pc_solver(len(epc))):
        if target >> k & 1:
            pc ^= col
    return pc


def _antenna(byte: int) -> int | None:
    tx = byte >> 4
    if tx:
        return tx
    return (byte & 0x0F) or None


def _parse_record(data: bytes, i: int, flags: int) -> tuple[int, TagRead | str, bool]:
    """Parse one tag record at ``data[i:]``: ``(end, TagRead, True)``, or ``(end, reason,
    known)`` where ``known`` tells whether ``end`` (the record boundary) is still trustworthy
    (a tag CRC mismatch) or not (a malformed record)."""
    n = len(data)
    try:
        read_count = rssi = antenna = freq = ts = None
        protocol = PROTOCOL_GEN2
        if flags & META_READ_COUNT:
            read_count = data[i]
            i += 1
        if flags & META_RSSI:
            b = data[i]
            rssi = float(b - 256 if b > 127 else b)
            i += 1
        if flags & META_ANTENNA:
            antenna = _antenna(data[i])
            i += 1
        if flags & META_FREQUENCY:
            freq = int.from_bytes(data[i:i + 3], "big")
            i += 3
        if flags & META_TIMESTAMP:
            ts = int.from_bytes(data[i:i + 4], "big")
            i += 4
        if flags & META_PHASE:
            i += 2
        if flags & META_PROTOCOL:
            protocol = data[i]
            i += 1
        if flags & META_DATA:
            bits = (data[i] << 8) | data[i + 1]
            i += 2 + (bits + 7) // 8
        if flags & META_GPIO:
            i += 1
        bits = (data[i] << 8) | data[i + 1]
        i += 2
    except IndexError:
        return i, "tag record ends inside its metadata", False
    if bits % 8:
        return i, f"EPC field of {bits} bits is not whole bytes", False
    end = i + bits // 8
    if end > n:
        return i, f"EPC field of {bits // 8} bytes overruns the frame", False
    if protocol == PROTOCOL_GEN2:
        if bits < 32:
            return i, f"Gen2 EPC field of {bits} bits cannot hold PC and CRC", False
        pc = (data[i] << 8) | data[i + 1]
        epc = data[i + 2:end - 2]
        crc = (data[end - 2] << 8) | data[end - 1]
        calc = crc16_gen2(data[i:end - 2])
        if calc != crc:
            return end, f"tag CRC 0x{crc:04X} does not match PC+EPC (0x{calc:04X})", True
        return end, TagRead(epc=epc.hex().upper(), antenna=antenna, rssi_dbm=rssi, pc=pc,
                            frequency_khz=freq, read_count=read_count,
                            device_ts_ms=ts), True
    if bits < 16:
        return i, f"EPC field of {bits} bits cannot hold the tag CRC", False
    return end, TagRead(epc=data[i:end - 2].hex().upper(), antenna=antenna, rssi_dbm=rssi,
                        frequency_khz=freq, read_count=read_count, device_ts_ms=ts), True


def _version(opcode: int, d: bytes) -> Version:
    mask = int.from_bytes(d[16:20], "big")
    return Version(
        opcode=opcode,
        bootloader=d[0:4].hex(".").upper(),
        hardware=d[4:8].hex(".").upper(),
        firmware_date=f"{d[8]:02X}{d[9]:02X}-{d[10]:02X}-{d[11]:02X}",
        firmware_version=d[12:16].hex(".").upper(),
        protocols=tuple(b + 1 for b in range(32) if mask >> b & 1),
    )


class Decoder(StreamDecoder):
    """Stateful ThingMagic frame decoder. ``role="host"`` decodes module output (default);
    ``role="device"`` decodes host commands."""

    PROTOCOL: ClassVar[str] = "thingmagic"
    MAX_BUFFER: ClassVar[int] = MAX_BUFFER

    def __init__(self, role: Literal["host", "device"] = "host") -> None:
        super().__init__()
        if role not in ("host", "device"):
            raise ValueError(f"role must be 'host' or 'device', got {role!r}")
        self.role = role
        self._overhead = 7 if role == "host" else 5
        self._eos = False  # set by flush(): no more bytes will come

    def _find_start(self, buf: bytes, pos: int) -> int:
        return buf.find(HEAD, pos)

    def _parse(self, buf: bytes, start: int) -> ParseResult:
        n = len(buf)
        if start + 2 > n:
            return NEED_MORE
        length = buf[start + 1]
        if length == 0xFF and self.role == "device":
            return start + 1, None  # wake-up preamble (a run of FF bytes)
        end = start + length + self._overhead
        if end > n:
            return self._stalled(buf, start, n)
        got = (buf[end - 2] << 8) | buf[end - 1]
        calc = crc16_thingmagic(buf[start + 1:end - 2])
        if got != calc:
            resync = buf.find(HEAD, start + 1, end)
            stop = end if resync < 0 else resync
            return stop, self.error("bad_checksum", buf[start:stop], self._base + start,
                                    f"expected CRC 0x{calc:04X}, got 0x{got:04X}")
        opcode = buf[start + 2]
        if self.role == "device":
            return end, Command(opcode, _op_name(opcode), buf[start + 3:end - 2])
        status = (buf[start + 3] << 8) | buf[start + 4]
        data = buf[start + 5:end - 2]
        if status != STATUS_OK:
            return end, ModuleError(opcode, status, _error_name(status), data)
        if opcode == 0x29:
            return end, self._tag_buffer(buf[start:end], self._base + start)
        item = self._reply(opcode, data)
        if isinstance(item, str):
            return end, self.error("bad_field", buf[start:end], self._base + start,
                                   f"opcode 0x{opcode:02X}: {item}")
        return end, item

    def _stalled(self, buf: bytes, start: int, n: int) -> ParseResult:
        """The frame at ``start`` is longer than what arrived. Wait for it, unless a complete,
        plausible frame already starts at a later head byte (then the Len byte was garbage,
        e.g. a stray ``FF``), or the stream has ended (:meth:`flush`)."""
        eos = self._eos
        r = buf.find(HEAD, start + 1)
        while r >= 0 and r + 2 <= n:
            e = r + buf[r + 1] + self._overhead
            if e <= n and (eos or self._plausible(buf, r)) and crc16_thingmagic(
                    buf[r + 1:e - 2]) == ((buf[e - 2] << 8) | buf[e - 1]):
                if eos:
                    return r, self.error("truncated", buf[start:r], self._base + start,
                                         "stream ended mid-frame")
                return r, self.error("bad_length", buf[start:r], self._base + start,
                                     f"Len={buf[start + 1]} overruns a complete frame")
            r = buf.find(HEAD, r + 1)
        if eos:
            return n, self.error("truncated", buf[start:n], self._base + start,
                                 "stream ended mid-frame")
        return NEED_MORE

    def _plausible(self, buf: bytes, r: int) -> bool:
        """Checks beyond the CRC for a frame found behind an incomplete one: a known opcode
        and (replies) a known status, so a frame still arriving is not cut by chance."""
        if buf[r + 2] not in _OP_NAMES:
            return False
        if self.role == "device":
            return True
        status = (buf[r + 3] << 8) | buf[r + 4]
        return status == STATUS_OK or status in ERROR_CODES

    def flush(self) -> list[Message | FrameError]:
        """End of stream: decode complete frames left behind a stalled candidate, then report
        the remaining bytes as ``truncated``."""
        if not self._buf:
            return []
        self._eos = True
        try:
            out = self.feed(b"")
        finally:
            self._eos = False
        return out + StreamDecoder.flush(self)

    def _reply(self, opcode: int, data: bytes) -> Message | str:
        """Interpret a successful module reply; a string is the reason it fits no layout."""
        n = len(data)
        if opcode == 0x22:
            if n >= 6 and data[0] & OPTION_METADATA:
                flags = (data[3] << 8) | data[4]
                if flags & ~METADATA_ALL:
                    return f"unknown metadata flags 0x{flags:04X}"
                rtype = data[5]
                if rtype == 0x01:
                    end, rec, _ = _parse_record(data, 6, flags)
                    if isinstance(rec, str):
                        return rec
                    if end != n:
                        return f"{n - end} bytes after the tag record"
                    return rec
                if rtype == 0x00:
                    return StreamEnd((data[1] << 8) | data[2], flags, data[6:])
                return f"unknown stream response type 0x{rtype:02X}"
            if n in (4, 5):
                return TagsFound(opcode, data[n - 1])
            if n in (7, 8):
                return TagsFound(opcode, int.from_bytes(data[n - 4:], "big"))
            return f"read-multiple reply of {n} bytes fits no layout"
        if opcode == 0x21:
            if n < 4 or n % 2:
                return f"single-read reply of {n} bytes is not EPC words + tag CRC"
            epc = data[:-2]
            crc = (data[-2] << 8) | data[-1]
            pc = _recover_pc(epc, crc)
            if pc >> 11 != len(epc) // 2:
                return (f"tag CRC 0x{crc:04X} implies PC 0x{pc:04X}, whose length does not "
                        f"match the {len(epc)}-byte EPC")
            return TagRead(epc=epc.hex().upper(), pc=pc)
        if opcode in (0x03, 0x04) and n == 20:
            return _version(opcode, data)
        if opcode == 0x2F:
            if n == 4 and data[0] == CONTINUOUS_START:
                return ContinuousRead(True, data[1])
            if n == 1 and data[0] == CONTINUOUS_STOP:
                return ContinuousRead(False)
        if n == 0:
            return Ack(opcode, _op_name(opcode))
        return Response(opcode, STATUS_OK, data)

    def _tag_buffer(self, frame: bytes,
                    offset: int) -> Message | FrameError | tuple[Message | FrameError, ...]:
        """A 0x29 reply: ``flags(2) | read options(1) | count(1) | records``. A record whose tag
        CRC fails is reported alone; a record that breaks the layout fails the frame."""
        data = frame[5:-2]
        n = len(data)

        def bad(detail: str) -> FrameError:
            return self.error("bad_field", frame, offset, f"opcode 0x29: {detail}")

        if n < 4:
            return bad(f"reply of {n} bytes is shorter than its header")
        flags = (data[0] << 8) | data[1]
        if flags & ~METADATA_ALL:
            return bad(f"unknown metadata flags 0x{flags:04X}")
        count = data[3]
        if count == 0:
            return bad(f"{n - 4} bytes after an empty tag buffer") if n != 4 else TagsFound(
                0x29, 0)
        items: list[Message | FrameError] = []
        i = 4
        for k in range(count):
            end, rec, known = _parse_record(data, i, flags)
            if isinstance(rec, str):
                if not known:
                    return bad(f"record {k + 1} of {count}: {rec}")
                items.append(bad(f"record {k + 1} of {count}: {rec}"))
            else:
                items.append(rec)
            i = end
        if i != n:
            return bad(f"{n - i} bytes after {count} tag records")
        if len(items) == 1:
            return items[0]
        return tuple(items)


def decode_frame_arg(arg: str, *, sent_by: Literal["device", "host"] = "device"
                     ) -> list[Message | FrameError]:
    """Decode one command-line FRAME (hex) for ``pledgewatch decode thingmagic``."""
    data = parse_hex(arg)
    dec = Decoder("host" if sent_by == "device" else "device")
    return dec.feed(data) + dec.flush()
