"""Modbus RTU framing for register access: FC 3, 4, 6, 16 and exception responses.

ADU: ``device_id | function | data | CRC`` with CRC-16/MODBUS sent low byte first. Sources:
Modbus Application Protocol V1.1b3 and Modbus over Serial Line V1.02, as summarised in
``shared/reference/protocols.md`` section 4.2; test frames from pymodbus (BSD-3-Clause).

**Why hand-written.** The reference notes recommend pymodbus for talking to indicators, and
the edge driver may still use it for I/O and retries. But this package holds sans-IO codecs
that the driver, the simulated feeder and the tests share (stdlib only, no asyncio, no clock):
pymodbus's RTU framer is bound to its transaction manager and transport and brings its own
logging and async machinery. The subset needed here, four function codes and the exception
reply over RTU, is about a page of code checked against the pymodbus vectors.

**Framing without a sync byte.** RTU delimits frames by 3.5 character times of silence, which
a byte stream does not carry, so the length comes from the function code and the direction:

* ``Decoder(role="client")`` reads what a server sends: FC 3/4 ``id fc bytecount data crc``;
  FC 6 the 8-byte echo; FC 16 ``id fc start qty crc`` (8 bytes); exception ``id fc|0x80 code
  crc`` (5 bytes, any function).
* ``Decoder(role="server")`` reads requests: FC 3/4/6 are 8 bytes; FC 16 is ``id fc start
  qty bytecount data crc``. FC 1, 2, 5 and 15 requests are framed too and reported as
  :class:`OtherRequest` so a server can answer them with "illegal function".

A candidate frame with an unknown function code, an impossible byte count or a bad CRC is
rejected; the decoder then looks for the next offset at which a frame could start (CRC-valid
or still incomplete) and reports the bytes in between as one error. The client decoder is
stateless, but a driver that knows which reply it waits for may set ``expect=(device_id,
function)``; frames from other devices or for other functions are then skipped as garbage.
``role="host"`` and ``role="device"`` are accepted as aliases of client and server.

At end of stream, :meth:`Decoder.flush` still recovers a complete CRC-valid frame that sits
behind bytes which looked like the start of a longer frame (e.g. line noise before a reply).

Scale indicators: :func:`registers_to_weight` turns registers into a :class:`Weight` with
per-device word order, scaling and status bits (protocols.md 4.2: word order varies).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Sequence
from typing import ClassVar, Final, Literal

from protocols._base import NEED_MORE, FrameError, Message, NeedMore, ParseResult, StreamDecoder
from protocols._cli import parse_hex
from protocols._crc import crc16_modbus
from protocols.messages import Weight, weight_to_kg

__all__ = [
    "EXCEPTION_CODES",
    "MAX_BUFFER",
    "MAX_FRAME",
    "MAX_READ_QUANTITY",
    "MAX_WRITE_QUANTITY",
    "READ_HOLDING_REGISTERS",
    "READ_INPUT_REGISTERS",
    "WRITE_MULTIPLE_REGISTERS",
    "WRITE_SINGLE_REGISTER",
    "Decoder",
    "ExceptionResponse",
    "OtherRequest",
    "ReadRequest",
    "ReadResponse",
    "WriteMultiple",
    "WriteMultipleResponse",
    "WriteSingle",
    "decode_frame_arg",
    "encode_exception",
    "encode_frame",
    "encode_message",
    "encode_read_request",
    "encode_read_response",
    "encode_write_multiple",
    "encode_write_multiple_response",
    "encode_write_single",
    "registers_to_weight",
    "value_to_registers",
]

READ_HOLDING_REGISTERS: Final = 3
READ_INPUT_REGISTERS: Final = 4
WRITE_SINGLE_REGISTER: Final = 6
WRITE_MULTIPLE_REGISTERS: Final = 16
MAX_FRAME: Final = 256  # RTU ADU limit
MAX_BUFFER: Final = 4 * MAX_FRAME
MAX_READ_QUANTITY: Final = 125  # registers per FC 3/4 request
MAX_WRITE_QUANTITY: Final = 123  # registers per FC 16 request
_MAX_READ_BYTES: Final = 2 * MAX_READ_QUANTITY
_MAX_WRITE_BYTES: Final = 2 * MAX_WRITE_QUANTITY
_MAX_COIL_BYTES: Final = 246  # FC 15: 1968 coils
_FIXED_REQUESTS: Final = frozenset({1, 2, 3, 4, 5, 6})  # 8-byte requests
_OTHER_REQUESTS: Final = frozenset({1, 2, 5, 15})

EXCEPTION_CODES: Final = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "server_device_failure",
    5: "acknowledge",
    6: "server_device_busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_device_failed_to_respond",
}


# -- messages ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class ReadRequest(Message):
    """FC 3 (holding) or FC 4 (input) register read. ``start`` is the 0-based offset
    ("40001" in a manual is holding register 0)."""

    device_id: int
    function: int
    start: int
    quantity: int

    type: ClassVar[str] = "modbus_read_request"


@dataclasses.dataclass(frozen=True, slots=True)
class ReadResponse(Message):
    device_id: int
    function: int
    registers: tuple[int, ...]

    type: ClassVar[str] = "modbus_read_response"


@dataclasses.dataclass(frozen=True, slots=True)
class WriteSingle(Message):
    """FC 6. The request and its normal response are the same bytes."""

    device_id: int
    register: int
    value: int

    type: ClassVar[str] = "modbus_write_single"


@dataclasses.dataclass(frozen=True, slots=True)
class WriteMultiple(Message):
    """FC 16 request."""

    device_id: int
    start: int
    registers: tuple[int, ...]

    type: ClassVar[str] = "modbus_write_multiple"


@dataclasses.dataclass(frozen=True, slots=True)
class WriteMultipleResponse(Message):
    device_id: int
    start: int
    quantity: int

    type: ClassVar[str] = "modbus_write_multiple_response"


@dataclasses.dataclass(frozen=True, slots=True)
class ExceptionResponse(Message):
    """``function`` is the request's function code (without the 0x80 bit)."""

    device_id: int
    function: int
    code: int
    name: str

    type: ClassVar[str] = "modbus_exception"


@dataclasses.dataclass(frozen=True, slots=True)
class OtherRequest(Message):
    """A well-framed request this codec does not interpret (FC 1, 2, 5, 15); ``data`` is the
    PDU after the function code."""

    device_id: int
    function: int
    data: bytes

    type: ClassVar[str] = "modbus_other_request"


def _exception_name(code: int) -> str:
    return EXCEPTION_CODES.get(code, f"0x{code:02X}")


# -- encoders ----------------------------------------------------------------------------
def _check(name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be {lo}..{hi}, got {value}")


def encode_frame(device_id: int, pdu: bytes) -> bytes:
    """``device_id + pdu + CRC`` (low byte first)."""
    _check("device_id", device_id, 0, 0xFF)
    if not 1 <= len(pdu) <= MAX_FRAME - 3:
        raise ValueError(f"PDU must be 1..{MAX_FRAME - 3} bytes, got {len(pdu)}")
    adu = bytes((device_id,)) + pdu
    return adu + crc16_modbus(adu).to_bytes(2, "little")


def encode_read_request(device_id: int, start: int, quantity: int, *,
                        function: int = READ_HOLDING_REGISTERS) -> bytes:
    if function not in (READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS):
        raise ValueError(f"read function must be 3 or 4, got {function}")
    _check("start", start, 0, 0xFFFF)
    _check("quantity", quantity, 1, MAX_READ_QUANTITY)
    return encode_frame(device_id, struct.pack(">BHH", function, start, quantity))


def encode_read_response(device_id: int, registers: Sequence[int], *,
                         function: int = READ_HOLDING_REGISTERS) -> bytes:
    if function not in (READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS):
        raise ValueError(f"read function must be 3 or 4, got {function}")
    _check("register count", len(registers), 1, MAX_READ_QUANTITY)
    try:
        data = struct.pack(f">BB{len(registers)}H", function, 2 * len(registers), *registers)
    except struct.error as exc:
        raise ValueError(f"register values must be 0..65535: {exc}") from exc
    return encode_frame(device_id, data)


def encode_write_single(device_id: int, register: int, value: int) -> bytes:
    """FC 6 request, and the server's echo response."""
    _check("register", register, 0, 0xFFFF)
    _check("value", value, 0, 0xFFFF)
    return encode_frame(device_id, struct.pack(">BHH", WRITE_SINGLE_REGISTER, register, value))


def encode_write_multiple(device_id: int, start: int, registers: Sequence[int]) -> bytes:
    _check("start", start, 0, 0xFFFF)
    n = len(registers)
    _check("register count", n, 1, MAX_WRITE_QUANTITY)
    try:
        data = struct.pack(f">BHHB{n}H", WRITE_MULTIPLE_REGISTERS, start, n, 2 * n, *registers)
    except struct.error as exc:
        raise ValueError(f"register values must be 0..65535: {exc}") from exc
    return encode_frame(device_id, data)


def encode_write_multiple_response(device_id: int, start: int, quantity: int) -> bytes:
    _check("start", start, 0, 0xFFFF)
    _check("quantity", quantity, 1, MAX_WRITE_QUANTITY)
    return encode_frame(device_id, struct.pack(">BHH", WRITE_MULTIPLE_REGISTERS, start,
                                               quantity))


def encode_exception(device_id: int, function: int, code: int) -> bytes:
    """Exception response to a request with ``function`` (1..127)."""
    _check("function", function, 1, 0x7F)
    _check("exception code", code, 1, 0xFF)
    return encode_frame(device_id, bytes((function | 0x80, code)))


def encode_message(msg: Message) -> bytes:
    """Encode any message this module decodes (used by the simulator and the tests)."""
    if isinstance(msg, ReadRequest):
        return encode_read_request(msg.device_id, msg.start, msg.quantity,
                                   function=msg.function)
    if isinstance(msg, ReadResponse):
        return encode_read_response(msg.device_id, msg.registers, function=msg.function)
    if isinstance(msg, WriteSingle):
        return encode_write_single(msg.device_id, msg.register, msg.value)
    if isinstance(msg, WriteMultiple):
        return encode_write_multiple(msg.device_id, msg.start, msg.registers)
    if isinstance(msg, WriteMultipleResponse):
        return encode_write_multiple_response(msg.device_id, msg.start, msg.quantity)
    if isinstance(msg, ExceptionResponse):
        return encode_exception(msg.device_id, msg.function, msg.code)
    if isinstance(msg, OtherRequest):
        return encode_frame(msg.device_id, bytes((msg.function,)) + msg.data)
    raise TypeError(f"not a Modbus message: {msg!r}")


# -- decoder -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class _Reject:
    """A candidate frame whose boundaries cannot be trusted: resynchronise after it."""

    kind: str
    detail: str


_Candidate = NeedMore | _Reject | tuple[int, "Message | FrameError"]

_ROLES: Final = {"client": "client", "host": "client", "server": "server", "device": "server"}


class Decoder(StreamDecoder):
    """Modbus RTU decoder. ``role="client"`` (default) decodes server responses,
    ``role="server"`` decodes requests. ``expect=(device_id, function)`` (client role)
    restricts decoding to the reply of one outstanding request; it may be reassigned between
    requests."""

    PROTOCOL: ClassVar[str] = "modbus"
    MAX_BUFFER: ClassVar[int] = MAX_BUFFER

    def __init__(self, role: Literal["client", "server", "host", "device"] = "client", *,
                 expect: tuple[int, int] | None = None) -> None:
        super().__init__()
        if role not in _ROLES:
            raise ValueError(f"role must be 'client' or 'server', got {role!r}")
        self.role = _ROLES[role]
        if expect is not None and self.role == "server":
            raise ValueError("expect= filters replies; it is for the client role")
        self._candidate = self._response if self.role == "client" else self._request
        self.expect = expect

    # -- framing --------------------------------------------------------------------------
    def _find_start(self, buf: bytes, pos: int) -> int:
        if self.expect is None:
            return pos
        return buf.find(self.expect[0], pos)

    def _parse(self, buf: bytes, start: int) -> ParseResult:
        res = self._candidate(buf, start)
        if not isinstance(res, _Reject):
            return res
        # resynchronise: the next offset where a frame could start
        n = len(buf)
        candidate = self._candidate
        k = start + 1
        while k < n and isinstance(candidate(buf, k), _Reject):
            k += 1
        return k, self.error(res.kind, buf[start:k], self._base + start, res.detail)

    def _response(self, buf: bytes, k: int) -> _Candidate:
        n = len(buf)
        if k + 2 > n:
            return NEED_MORE
        dev = buf[k]
        fc = buf[k + 1]
        if self.expect is not None and (dev != self.expect[0]
                                        or fc & 0x7F != self.expect[1]):
            return _Reject("garbage", "not the expected device/function")
        if fc == 3 or fc == 4:
            if k + 3 > n:
                return NEED_MORE
            count = buf[k + 2]
            if count == 0 or count & 1 or count > _MAX_READ_BYTES:
                return _Reject("bad_length", f"FC {fc} byte count {count}")
            end = k + 5 + count
        elif fc == 6 or fc == 16:
            end = k + 8
        elif fc > 0x80:
            end = k + 5
        else:
            return _Reject("bad_field", f"function 0x{fc:02X} is not decoded by a client")
        if end > n:
            return NEED_MORE
        frame = buf[k:end]
        if crc16_modbus(frame):
            return self._bad_crc(frame)
        if fc == 3 or fc == 4:
            return end, ReadResponse(dev, fc, struct.unpack(f">{count >> 1}H", frame[3:-2]))
        if fc == 6:
            reg, value = struct.unpack(">HH", frame[2:6])
            return end, WriteSingle(dev, reg, value)
        if fc == 16:
            reg, qty = struct.unpack(">HH", frame[2:6])
            return end, WriteMultipleResponse(dev, reg, qty)
        code = frame[2]
        return end, ExceptionResponse(dev, fc & 0x7F, code, _exception_name(code))

    def _request(self, buf: bytes, k: int) -> _Candidate:
        n = len(buf)
        if k + 2 > n:
            return NEED_MORE
        dev = buf[k]
        fc = buf[k + 1]
        if fc in _FIXED_REQUESTS:
            end = k + 8
        elif fc == 16 or fc == 15:
            if k + 7 > n:
                return NEED_MORE
            count = buf[k + 6]
            if fc == 16 and (count == 0 or count & 1 or count > _MAX_WRITE_BYTES):
                return _Reject("bad_length", f"FC 16 byte count {count}")
            if fc == 15 and (count == 0 or count > _MAX_COIL_BYTES):
                return _Reject("bad_length", f"FC 15 byte count {count}")
            end = k + 9 + count
        else:
            return _Reject("bad_field", f"function 0x{fc:02X} is not a request we frame")
        if end > n:
            return NEED_MORE
        frame = buf[k:end]
        if crc16_modbus(frame):
            return self._bad_crc(frame)
        if fc in _OTHER_REQUESTS:
            return end, OtherRequest(dev, fc, frame[2:-2])
        a, b = struct.unpack(">HH", frame[2:6])
        if fc == 6:
            return end, WriteSingle(dev, a, b)
        if fc != 16:
            return end, ReadRequest(dev, fc, a, b)
        if count != 2 * b:
            return end, self.error("bad_field", frame, self._base + k,
                                   f"FC 16 quantity {b} does not match byte count {count}")
        return end, WriteMultiple(dev, a, struct.unpack(f">{b}H", frame[7:-2]))

    @staticmethod
    def _bad_crc(frame: bytes) -> _Reject:
        crc = crc16_modbus(frame[:-2])
        return _Reject("bad_checksum", f"expected CRC {crc & 0xFF:02X} {crc >> 8:02X}, got "
                                       f"{frame[-2]:02X} {frame[-1]:02X}")

    # -- end of stream --------------------------------------------------------------------
    def flush(self) -> list[Message | FrameError]:
        """Report the buffered remainder, first recovering any complete CRC-valid frame that
        waited behind a candidate which never completed."""
        buf = bytes(self._buf)
        out: list[Message | FrameError] = []
        pos = 0
        k = 1
        while k < len(buf):
            res = self._candidate(buf, k)
            if isinstance(res, tuple):
                if k > pos:
                    out.append(self.error("garbage", buf[pos:k], self._base + pos,
                                          "bytes before a frame recovered at end of stream"))
                out.append(res[1])
                pos = k = res[0]
            else:
                k += 1
        if pos:
            del self._buf[:pos]
            self._base += pos
            errs = sum(1 for o in out if isinstance(o, FrameError))
            self.errors += errs
            self.messages += len(out) - errs
        return out + super().flush()


def decode_frame_arg(arg: str, *, sent_by: Literal["device", "host"] = "device"
                     ) -> list[Message | FrameError]:
    """Decode one command-line FRAME (hex) for ``pledgewatch decode modbus``.

    ``sent_by="host"`` (``--from-host``) decodes a request. The CLI default ``"device"`` tries
    a server response first and falls back to a request when the bytes do not decode cleanly
    as a response, because an installer pasting a frame often does not know its direction
    (a request and a response of FC 3 differ only in their layout). If neither reading is
    clean, the response attempt's errors are returned. An FC 6 frame is the same bytes either
    way and gives the same :class:`WriteSingle`.
    """
    data = parse_hex(arg)
    if sent_by == "host":
        server = Decoder("server")
        return _merge_errors(server.feed(data) + server.flush())
    client = Decoder("client")
    as_response = client.feed(data) + client.flush()
    if as_response and not any(isinstance(o, FrameError) for o in as_response):
        return as_response
    server = Decoder("server")
    as_request = server.feed(data) + server.flush()
    if as_request and not any(isinstance(o, FrameError) for o in as_request):
        return as_request
    return _merge_errors(as_response)


def _merge_errors(items: list[Message | FrameError]) -> list[Message | FrameError]:
    """Join adjacent errors (a bad frame resynchronised in pieces) into one, keeping the
    first one's kind and detail: one bad FRAME argument reads as one error."""
    out: list[Message | FrameError] = []
    for item in items:
        prev = out[-1] if out else None
        if (isinstance(item, FrameError) and isinstance(prev, FrameError)
                and prev.offset + len(prev.raw) == item.offset):
            out[-1] = dataclasses.replace(prev, raw=prev.raw + item.raw)
        else:
            out.append(item)
    return out


# -- register helpers for scale indicators -------------------------------------------------
ValueType = Literal["int16", "uint16", "int32", "uint32", "float32"]
WordOrder = Literal["big", "little"]


def _words(value_type: ValueType) -> int:
    if value_type in ("int16", "uint16"):
        return 1
    if value_type in ("int32", "uint32", "float32"):
        return 2
    raise ValueError(f"unknown value_type {value_type!r}")


def value_to_registers(raw: float, *, value_type: ValueType = "int32",
                       word_order: WordOrder = "big") -> tuple[int, ...]:
    """The registers a device stores ``raw`` in (inverse of the raw part of
    :func:`registers_to_weight`). ``word_order="big"`` puts the high word first."""
    words = _words(value_type)
    if word_order not in ("big", "little"):
        raise ValueError(f"word_order must be 'big' or 'little', got {word_order!r}")
    fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
    try:
        packed = struct.pack(fmt[value_type], raw if value_type == "float32" else int(raw))
    except struct.error as exc:
        raise ValueError(f"{raw} does not fit {value_type}: {exc}") from exc
    regs = struct.unpack(f">{words}H", packed)
    return regs[::-1] if word_order == "little" else regs


def registers_to_weight(registers: Sequence[int], *, value_type: ValueType = "int32",
                        word_order: WordOrder = "big", value_index: int = 0,
                        decimals: int = 0, factor: float = 1.0, unit: str | None = "kg",
                        status_index: int | None = None, stable_bit: int | None = None,
                        motion_bit: int | None = None, net_bit: int | None = None,
                        overload_bit: int | None = None) -> Weight:
    """Interpret indicator registers as a displayed weight.

    The value is ``registers[value_index]`` (16-bit types) or the pair starting there
    (32-bit; ``word_order="big"`` = high word first, "little" = low word first; bytes within
    a register are always big-endian). ``weight = raw * factor / 10**decimals``. Status bits
    (0 = least significant) are read from ``registers[status_index]``: ``stable_bit`` set
    means stable, or ``motion_bit`` set means not stable; ``net_bit`` gives mode net/gross;
    ``overload_bit`` sets ``overload``. Unconfigured status reads as unknown (``None``).
    Raises ValueError when a register is missing or out of range or a float is not finite.
    """
    words = _words(value_type)
    if word_order not in ("big", "little"):
        raise ValueError(f"word_order must be 'big' or 'little', got {word_order!r}")
    regs = tuple(registers[value_index:value_index + words])
    if len(regs) != words or value_index < 0:
        raise ValueError(f"{value_type} at register {value_index} needs {words} registers")
    if any(not 0 <= r <= 0xFFFF for r in regs):
        raise ValueError(f"register values must be 0..65535: {regs}")
    if word_order == "little":
        regs = regs[::-1]
    fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
    (raw,) = struct.unpack(fmt[value_type], struct.pack(f">{words}H", *regs))
    if value_type == "float32":
        if not math.isfinite(raw):
            raise ValueError(f"indicator reports a non-finite weight: {raw}")
        weight = float(raw) * factor / 10 ** decimals
    else:
        weight = round(raw * factor / 10 ** decimals, max(decimals, 0) + 6)
    stable: bool | None = None
    mode: str | None = None
    overload = False
    if status_index is not None:
        if not 0 <= status_index < len(registers):
            raise ValueError(f"status register {status_index} not in the {len(registers)} read")
        status = registers[status_index]
        if stable_bit is not None:
            stable = bool(status >> stable_bit & 1)
        elif motion_bit is not None:
            stable = not status >> motion_bit & 1
        if net_bit is not None:
            mode = "net" if status >> net_bit & 1 else "gross"
        if overload_bit is not None:
            overload = bool(status >> overload_bit & 1)
    return Weight(weight=weight, unit=unit, weight_kg=weight_to_kg(weight, unit), stable=stable,
                  mode=mode, overload=overload)
