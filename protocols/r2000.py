"""Impinj R2000 "0xA0" serial protocol (IND903/YR903 modules and many fixed UHF readers).

Frame, both directions: ``A0 | Len | Address | Cmd | Data... | Check`` where ``Len`` counts the
bytes after it (Address..Check) and ``Check`` is the two's complement of the 8-bit sum of every
byte before it. Source: UHF RFID Reader Serial Interface Protocol V3.x, as summarised in
``shared/reference/protocols.md`` section 1.1.

Host role (``Decoder()``, the default) decodes what a reader sends: tag reads, inventory
completion, error codes and command replies. Device role (``Decoder(role="device")``) decodes
host commands, for the simulated reader.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Final, Literal

from protocols._base import NEED_MORE, FrameError, Message, ParseResult, StreamDecoder
from protocols._cli import parse_hex
from protocols._crc import sum8_twos_complement
from protocols.messages import TagRead

__all__ = [
    "CMD",
    "ERROR_CODES",
    "HEAD",
    "MAX_BUFFER",
    "MAX_FRAME",
    "RSSI_OFFSET_DBM",
    "Command",
    "CommandResult",
    "Decoder",
    "FirmwareVersion",
    "InventoryDone",
    "OutputPower",
    "ReaderError",
    "Response",
    "decode_frame_arg",
    "encode_command",
    "encode_command_result",
    "encode_custom_session_inventory",
    "encode_error",
    "encode_fast_switch_done",
    "encode_fast_switch_inventory",
    "encode_firmware_version",
    "encode_frame",
    "encode_get_firmware_version",
    "encode_get_output_power",
    "encode_inventory_done",
    "encode_output_power",
    "encode_real_time_inventory",
    "encode_set_output_power",
    "encode_set_work_antenna",
    "encode_tag",
    "frequency_khz",
]

HEAD: Final = 0xA0
MIN_LEN: Final = 3  # Address + Cmd + Check
MAX_FRAME: Final = 0xFF + 2  # Len is one byte
MAX_BUFFER: Final = 4 * MAX_FRAME
RSSI_OFFSET_DBM: Final = 129  # dBm ~= raw RSSI - 129 (pyImpinj)
SUCCESS: Final = 0x10

CMD: Final = {
    "reset": 0x70,
    "set_uart_baudrate": 0x71,
    "get_firmware_version": 0x72,
    "set_reader_address": 0x73,
    "set_work_antenna": 0x74,
    "get_work_antenna": 0x75,
    "set_output_power": 0x76,
    "get_output_power": 0x77,
    "set_frequency_region": 0x78,
    "get_frequency_region": 0x79,
    "set_beeper_mode": 0x7A,
    "get_reader_temperature": 0x7B,
    "inventory": 0x80,
    "real_time_inventory": 0x89,
    "fast_switch_ant_inventory": 0x8A,
    "customized_session_target_inventory": 0x8B,
}
_CMD_NAMES: Final = {v: k for k, v in CMD.items()}
_INVENTORY_CMDS: Final = frozenset({0x89, 0x8A, 0x8B})

ERROR_CODES: Final = {
    0x10: "command_success",
    0x11: "command_fail",
    0x20: "mcu_reset_error",
    0x21: "cw_on_error",
    0x22: "antenna_missing_error",
    0x23: "write_flash_error",
    0x24: "read_flash_error",
    0x25: "set_output_power_error",
    0x31: "tag_inventory_error",
    0x32: "tag_read_error",
    0x33: "tag_write_error",
    0x34: "tag_lock_error",
    0x35: "tag_kill_error",
    0x36: "no_tag_error",
    0x37: "inventory_ok_but_access_fail",
    0x38: "buffer_is_empty_error",
    0x40: "access_or_password_error",
    0x41: "parameter_invalid",
    0x42: "parameter_invalid_wordcnt_too_long",
    0x43: "parameter_invalid_membank_out_of_range",
    0x44: "parameter_invalid_lock_region_out_of_range",
    0x45: "parameter_invalid_lock_action_out_of_range",
    0x46: "parameter_reader_address_invalid",
    0x47: "parameter_invalid_antenna_id_out_of_range",
    0x48: "parameter_invalid_output_power_out_of_range",
    0x49: "parameter_invalid_frequency_region_out_of_range",
    0x4A: "parameter_invalid_baudrate_out_of_range",
    0x4B: "parameter_beeper_mode_out_of_range",
    0x4C: "parameter_epc_match_len_too_long",
    0x4D: "parameter_epc_match_len_error",
    0x4E: "parameter_invalid_epc_match_mode",
    0x4F: "parameter_invalid_frequency_range",
    0x50: "fail_to_get_rn16_from_tag",
    0x51: "parameter_invalid_drm_mode",
    0x52: "pll_lock_fail",
    0x53: "rf_chip_fail_to_response",
    0x54: "fail_to_achieve_desired_output_power",
    0x55: "copyright_authentication_fail",
    0x56: "spectrum_regulation_error",
    0x57: "output_power_too_low",
}


def frequency_khz(index: int) -> int | None:
    """Channel frequency for an R2000 frequency index (pyImpinj constant table)."""
    if 0 <= index <= 6:
        return 865_000 + 500 * index
    if 7 <= index <= 59:
        return 902_000 + 500 * (index - 7)
    return None


# -- messages ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class InventoryDone(Message):
    """End of an inventory round. 0x89/0x8B carry antenna, read rate and total reads;
    0x8A carries total reads and the command duration."""

    address: int
    cmd: int
    total_read: int
    antenna: int | None = None
    read_rate: int | None = None
    duration_ms: int | None = None

    type: ClassVar[str] = "inventory_done"


@dataclasses.dataclass(frozen=True, slots=True)
class ReaderError(Message):
    """The reader answered a command with an error code (0x10 success is a CommandResult)."""

    address: int
    cmd: int
    code: int
    error: str
    antenna: int | None = None

    type: ClassVar[str] = "reader_error"


@dataclasses.dataclass(frozen=True, slots=True)
class CommandResult(Message):
    """A one-byte status reply to a set-command that reported success."""

    address: int
    cmd: int
    code: int

    type: ClassVar[str] = "command_result"


@dataclasses.dataclass(frozen=True, slots=True)
class FirmwareVersion(Message):
    address: int
    major: int
    minor: int

    type: ClassVar[str] = "firmware_version"


@dataclasses.dataclass(frozen=True, slots=True)
class OutputPower(Message):
    """RF output power in dBm, one value for all antennas or one per antenna."""

    address: int
    power_dbm: tuple[int, ...]

    type: ClassVar[str] = "output_power"


@dataclasses.dataclass(frozen=True, slots=True)
class Response(Message):
    """Any other reply, undecoded beyond its header."""

    address: int
    cmd: int
    data: bytes

    type: ClassVar[str] = "response"


@dataclasses.dataclass(frozen=True, slots=True)
class Command(Message):
    """A host command, as the simulated reader sees it."""

    address: int
    cmd: int
    name: str
    data: bytes

    type: ClassVar[str] = "command"


# -- encoders ----------------------------------------------------------------------------
def encode_frame(address: int, cmd: int, data: bytes = b"") -> bytes:
    """Frame ``data`` for ``cmd``: the one framing used in both directions."""
    if len(data) > 0xFF - MIN_LEN:
        raise ValueError(f"R2000 data too long: {len(data)} bytes > {0xFF - MIN_LEN}")
    body = bytes((HEAD, len(data) + MIN_LEN, address & 0xFF, cmd & 0xFF)) + data
    return body + bytes((sum8_twos_complement(body),))


encode_command = encode_frame


def encode_real_time_inventory(address: int = 1, repeat: int = 0xFF) -> bytes:
    return encode_frame(address, 0x89, bytes((repeat,)))


def encode_custom_session_inventory(address: int = 1, *, session: int, target: int,
                                    repeat: int = 1) -> bytes:
    if not 0 <= session <= 3 or target not in (0, 1):
        raise ValueError("session must be 0..3 and target 0 (A) or 1 (B)")
    return encode_frame(address, 0x8B, bytes((session, target, repeat)))


def encode_fast_switch_inventory(address: int = 1, *,
                                 antennas: tuple[tuple[int, int], ...] = ((1, 1), (2, 1),
                                                                          (3, 1), (4, 1)),
                                 interval_ms: int = 0, repeat: int = 1) -> bytes:
    """``antennas`` are up to four (1-based port, loops) pairs; unused slots are disabled."""
    if len(antennas) > 4:
        raise ValueError("fast switch inventory takes at most 4 antenna slots")
    data = bytearray()
    for port, loops in antennas:
        data += bytes((port - 1, loops))
    while len(data) < 8:
        data += b"\xff\x00"
    data += bytes((interval_ms, repeat))
    return encode_frame(address, 0x8A, bytes(data))


def encode_get_firmware_version(address: int = 1) -> bytes:
    return encode_frame(address, 0x72)


def encode_set_work_antenna(address: int = 1, antenna: int = 1) -> bytes:
    """Select the working antenna (1-based port; the wire uses 0..3)."""
    if not 1 <= antenna <= 4:
        raise ValueError(f"antenna must be 1..4, got {antenna}")
    return encode_frame(address, 0x74, bytes((antenna - 1,)))


def encode_get_output_power(address: int = 1) -> bytes:
    return encode_frame(address, 0x77)


def encode_set_output_power(address: int = 1, power_dbm: int | tuple[int, ...] = 30) -> bytes:
    """One power for all antennas, or a tuple of four (one per antenna), 0..33 dBm."""
    powers = (power_dbm,) if isinstance(power_dbm, int) else tuple(power_dbm)
    if len(powers) not in (1, 4) or not all(0 <= p <= 33 for p in powers):
        raise ValueError("output power is one value or four values, each 0..33 dBm")
    return encode_frame(address, 0x76, bytes(powers))


def encode_tag(address: int, *, epc: bytes, antenna: int = 1, rssi_dbm: int = -60,
               freq_index: int = 0, pc: int | None = None, cmd: int = 0x89) -> bytes:
    """A tag frame as the reader streams it during inventory."""
    if len(epc) % 2:
        raise ValueError("EPC length must be a whole number of 16-bit words")
    if not 1 <= antenna <= 4:
        raise ValueError(f"antenna must be 1..4, got {antenna}")
    if pc is None:
        pc = (len(epc) // 2) << 11
    raw_rssi = rssi_dbm + RSSI_OFFSET_DBM
    if not 0 <= raw_rssi <= 0x7F:
        raise ValueError(f"rssi_dbm out of range: {rssi_dbm}")
    data = bytes(((freq_index << 2) | (antenna - 1), pc >> 8, pc & 0xFF)) + epc + bytes(
        (raw_rssi,))
    return encode_frame(address, cmd, data)


def encode_inventory_done(address: int, *, antenna: int, read_rate: int, total_read: int,
                          cmd: int = 0x89) -> bytes:
    return encode_frame(address, cmd, bytes((antenna - 1,)) + read_rate.to_bytes(2, "big")
                        + total_read.to_bytes(4, "big"))


def encode_fast_switch_done(address: int, *, total_read: int, duration_ms: int) -> bytes:
    return encode_frame(address, 0x8A, total_read.to_bytes(3, "big")
                        + duration_ms.to_bytes(4, "big"))


def encode_error(address: int, cmd: int, code: int, antenna: int | None = None) -> bytes:
    """An error reply; with ``antenna`` the 0x8A "antenna missing" form."""
    data = bytes((code,)) if antenna is None else bytes((antenna - 1, code))
    return encode_frame(address, cmd, data)


def encode_command_result(address: int, cmd: int, code: int = SUCCESS) -> bytes:
    return encode_frame(address, cmd, bytes((code,)))


def encode_firmware_version(address: int, major: int, minor: int) -> bytes:
    return encode_frame(address, 0x72, bytes((major, minor)))


def encode_output_power(address: int, power_dbm: tuple[int, ...]) -> bytes:
    return encode_frame(address, 0x77, bytes(power_dbm))


# -- decoder -----------------------------------------------------------------------------
def _decode_reply(address: int, cmd: int, data: bytes) -> Message | None:
    """Interpret a reader->host frame; None when the data does not fit its command."""
    n = len(data)
    if cmd in _INVENTORY_CMDS:
        if n >= 4 and n % 2 == 0:
            pc = (data[1] << 8) | data[2]
            epc_len = (pc >> 11) * 2
            if n == epc_len + 4 and epc_len:
                fa = data[0]
                return TagRead(
                    epc=data[3:3 + epc_len].hex().upper(),
                    antenna=(fa & 0x03) + 1,
                    rssi_dbm=float((data[-1] & 0x7F) - RSSI_OFFSET_DBM),
                    pc=pc,
                    frequency_khz=frequency_khz(fa >> 2),
                    reader_address=address,
                )
        if n == 7:
            if cmd == 0x8A:
                return InventoryDone(address, cmd,
                                     total_read=int.from_bytes(data[0:3], "big"),
                                     duration_ms=int.from_bytes(data[3:7], "big"))
            return InventoryDone(address, cmd, total_read=int.from_bytes(data[3:7], "big"),
                                 antenna=data[0] + 1,
                                 read_rate=int.from_bytes(data[1:3], "big"))
        if n == 1:
            code = data[0]
            return ReaderError(address, cmd, code, ERROR_CODES.get(code, f"0x{code:02X}"))
        if n == 2 and cmd == 0x8A:
            code = data[1]
            return ReaderError(address, cmd, code, ERROR_CODES.get(code, f"0x{code:02X}"),
                               antenna=data[0] + 1)
        return None
    if cmd == 0x72 and n == 2:
        return FirmwareVersion(address, data[0], data[1])
    if cmd == 0x77 and n in (1, 4, 8):
        return OutputPower(address, tuple(data))
    if n == 1 and cmd in _CMD_NAMES:
        code = data[0]
        if code == SUCCESS:
            return CommandResult(address, cmd, code)
        return ReaderError(address, cmd, code, ERROR_CODES.get(code, f"0x{code:02X}"))
    return Response(address, cmd, data)


class Decoder(StreamDecoder):
    """Stateful R2000 frame decoder. ``role="host"`` decodes reader output (default);
    ``role="device"`` decodes host commands."""

    PROTOCOL: ClassVar[str] = "r2000"
    MAX_BUFFER: ClassVar[int] = MAX_BUFFER

    def __init__(self, role: Literal["host", "device"] = "host") -> None:
        super().__init__()
        if role not in ("host", "device"):
            raise ValueError(f"role must be 'host' or 'device', got {role!r}")
        self.role = role

    def _find_start(self, buf: bytes, pos: int) -> int:
        return buf.find(HEAD, pos)

    def _parse(self, buf: bytes, start: int) -> ParseResult:
        n = len(buf)
        if start + 2 > n:
            return NEED_MORE
        length = buf[start + 1]
        if length < MIN_LEN:
            return start + 2, self.error("bad_length", buf[start:start + 2], self._base + start,
                                         f"Len={length} < {MIN_LEN}")
        end = start + 2 + length
        if end > n:
            return NEED_MORE
        frame = buf[start:end]
        if sum(frame) & 0xFF:
            resync = buf.find(HEAD, start + 1, end)
            stop = end if resync < 0 else resync
            return stop, self.error("bad_checksum", buf[start:stop], self._base + start,
                                    f"expected check 0x{sum8_twos_complement(frame[:-1]):02X}, "
                                    f"got 0x{frame[-1]:02X}")
        address = frame[2]
        cmd = frame[3]
        data = frame[4:-1]
        if self.role == "device":
            return end, Command(address, cmd, _CMD_NAMES.get(cmd, f"0x{cmd:02X}"), data)
        msg = _decode_reply(address, cmd, data)
        if msg is None:
            return end, self.error("bad_field", frame, self._base + start,
                                   f"cmd 0x{cmd:02X} reply with {len(data)} data bytes fits no "
                                   "known layout")
        return end, msg


def decode_frame_arg(arg: str, *, sent_by: Literal["device", "host"] = "device"
                     ) -> list[Message | FrameError]:
    """Decode one command-line FRAME (hex) for ``pledgewatch decode r2000``."""
    data = parse_hex(arg)
    dec = Decoder("host" if sent_by == "device" else "device")
    return dec.feed(data) + dec.flush()
