"""Chafon "UHFReader18" / "UHFReader288M" serial protocol (CF-RU5xxx fixed readers, modules).

Frame, both directions, no sync byte: ``Len | Adr | Cmd | [Status] | Data... | CRC16`` where
``Len`` counts the bytes after it (a frame is ``Len + 1`` bytes), ``Status`` is present in
reader replies only and the CRC is CRC-16/MCRF4XX over ``Len`` .. last data byte, sent least
significant byte first (so the CRC over a whole good frame is 0). Sources:
``shared/reference/protocols.md`` section 1.3 and wabson/chafon-rfid (MIT; layouts only).

Two reader families answer the G2 inventory (0x01) differently:

* ``"18"``  (UHFReader18): ``Num | (EpcLen EPC)*``;
* ``"288"`` (UHFReader288M): ``Ant | Num | (EpcLen EPC RSSI)*`` with ``Ant`` a bitmask
  (1, 2, 4, 8 -> antenna 1..4).

``Decoder(variant="auto")`` (the default) picks per frame the layout that consumes the data
exactly; if both do, 288M wins (it is the current product line, and the only overlap needs an
18-reply whose first EPC fits inside a 288M header). An EPC of length 0 is rejected in both
layouts: it identifies nothing, and accepting it would make the 288M "no tags" reply
``Ant=1 Num=0`` read as an 18-reply with one empty EPC.

RSSI: the 288M sends one unsigned byte whose unit no public source states (wabson's tests only
pass it through: 0x6B, 0x64, 0x6C ...). It is reported raw as :attr:`ChafonTagRead.rssi_raw`
and ``rssi_dbm`` stays ``None`` rather than a guessed conversion.

Each EPC of an inventory reply is one :class:`ChafonTagRead` (a :class:`TagRead` with the raw
RSSI added). An :class:`InventoryStatus` follows the tags when the reply carries no tags or its
status ends the round (0x01 done, 0x02 time-out, 0x04 buffer full); status 0x03 ("more frames
follow") with tags yields only the tags.

Resynchronisation without a sync byte: every offset is a candidate frame start. A candidate is
rejected when its ``Len`` is below the minimum (5 for replies, 4 for commands) or, once all its
bytes are in, when its CRC fails; rejected bytes are reported as one error per run. A candidate
whose ``Len`` claims more bytes than have arrived would make the decoder wait for up to 256
bytes, so the decoder looks past it for a complete frame that passes the CRC, carries a known
command code and (host role, once one reply was decoded) the same reader address; if one is
found the bytes before it are reported and the frame decodes at once. A stray ``0xFF`` therefore
cannot hold a good reply hostage, while a frame still arriving in pieces is cut only if a
sub-range of it passes all three checks (CRC, command, address: about 1 in 10^8). At the end of
the stream :meth:`Decoder.flush` decodes whatever complete frames remain behind a stalled
candidate before reporting the rest as ``truncated``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar, Final, Literal

from protocols._base import NEED_MORE, FrameError, Message, ParseResult, StreamDecoder
from protocols._cli import parse_hex
from protocols._crc import crc16_mcrf4xx
from protocols.messages import TagRead

__all__ = [
    "BANDS",
    "BROADCAST",
    "CMD",
    "INVENTORY_STATUS",
    "MAX_BUFFER",
    "MAX_FRAME",
    "READER_TYPES",
    "STATUS_NAMES",
    "ChafonTagRead",
    "Command",
    "CommandResult",
    "Decoder",
    "InventoryStatus",
    "ReaderError",
    "ReaderInfo",
    "Response",
    "decode_frame_arg",
    "encode_command",
    "encode_command_result",
    "encode_get_reader_info",
    "encode_inventory_18",
    "encode_inventory_288",
    "encode_inventory_reply_18",
    "encode_inventory_reply_288",
    "encode_reader_info",
    "encode_reply",
    "encode_set_power",
]

MAX_FRAME: Final = 0xFF + 1  # Len is one byte and counts everything after itself
MAX_BUFFER: Final = 4 * MAX_FRAME
MIN_COMMAND_LEN: Final = 4  # Adr Cmd CRC(2)
MIN_REPLY_LEN: Final = 5  # Adr Cmd Status CRC(2)
BROADCAST: Final = 0xFF

CMD: Final = {
    "inventory": 0x01,
    "read_data": 0x02,
    "write_data": 0x03,
    "write_epc": 0x04,
    "kill_tag": 0x05,
    "set_protection": 0x06,
    "single_tag_inventory": 0x0F,
    "get_reader_info": 0x21,
    "set_frequency": 0x22,
    "set_address": 0x24,
    "set_scan_time": 0x25,
    "set_baud_rate": 0x28,
    "set_power": 0x2F,
    "set_work_mode_18": 0x35,
    "set_buzzer": 0x40,
    "set_work_mode_288m": 0x76,
}
_CMD_NAMES: Final = {v: k for k, v in CMD.items()}

INVENTORY_STATUS: Final = {0x01: "done", 0x02: "timeout", 0x03: "more", 0x04: "buffer_full"}
STATUS_NAMES: Final = {0x00: "success", **INVENTORY_STATUS, 0xF8: "antenna_error"}
READER_TYPES: Final = {0x09: "UHFReader18", 0x0C: "UHFReader288M", 0x0F: "UHFReader86",
                       0x10: "UHFReader86"}
# band code = (dmaxfre bits 7..6) << 2 | (dminfre bits 7..6)  (wabson ReaderFrequencyBand)
BANDS: Final = {0b0001: "China2", 0b0010: "US", 0b0011: "Korea", 0b0100: "EU",
                0b0110: "Ukraine", 0b0111: "Peru", 0b1000: "China1", 0b1001: "EU3",
                0b1010: "Taiwan", 0b1100: "US3"}
_ROUND_OVER: Final = frozenset({0x01, 0x02, 0x04})

Variant = Literal["auto", "18", "288"]

_VALID: Final = 1
_INVALID: Final = 0
_INCOMPLETE: Final = -1


# -- messages ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class ChafonTagRead(TagRead):
    """A :class:`TagRead` plus the 288M's RSSI byte as sent (unit undocumented)."""

    rssi_raw: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class InventoryStatus(Message):
    """How an inventory reply frame ended: ``status`` 0x01 done, 0x02 time-out, 0x03 more
    frames follow, 0x04 reader buffer full; ``tag_count`` is the frame's ``Num``."""

    address: int
    status: int
    state: str
    tag_count: int
    antenna: int | None = None
    variant: str = ""

    type: ClassVar[str] = "inventory_status"


@dataclasses.dataclass(frozen=True, slots=True)
class CommandResult(Message):
    """Status 0x00 and no data: the command was carried out."""

    address: int
    cmd: int
    name: str

    type: ClassVar[str] = "command_result"


@dataclasses.dataclass(frozen=True, slots=True)
class ReaderError(Message):
    """A reply whose status is an error code (anything but success / inventory states)."""

    address: int
    cmd: int
    status: int
    error: str
    data: bytes = b""

    type: ClassVar[str] = "reader_error"


@dataclasses.dataclass(frozen=True, slots=True)
class ReaderInfo(Message):
    """Reply to get-reader-info (0x21). Frequencies are channel indexes within ``band``;
    ``scan_time_100ms`` is the inventory scan time in units of 100 ms; ``extra`` holds the
    bytes newer readers append (288M: antenna, beeper, ...)."""

    address: int
    firmware_major: int
    firmware_minor: int
    reader_type: int
    model: str | None
    protocols: tuple[str, ...]
    band: int
    band_name: str | None
    min_freq_index: int
    max_freq_index: int
    power_dbm: int
    scan_time_100ms: int
    extra: bytes = b""

    type: ClassVar[str] = "reader_info"


@dataclasses.dataclass(frozen=True, slots=True)
class Response(Message):
    """Any other successful reply, undecoded beyond its header."""

    address: int
    cmd: int
    status: int
    data: bytes

    type: ClassVar[str] = "response"


@dataclasses.dataclass(frozen=True, slots=True)
class Command(Message):
    """A host command, as a simulated reader sees it."""

    address: int
    cmd: int
    name: str
    data: bytes

    type: ClassVar[str] = "command"


# -- encoders ----------------------------------------------------------------------------
def _crc_le(body: bytes) -> bytes:
    return crc16_mcrf4xx(body).to_bytes(2, "little")


def encode_command(address: int, cmd: int, data: bytes = b"") -> bytes:
    """Frame a host -> reader command."""
    if len(data) > 0xFF - MIN_COMMAND_LEN:
        raise ValueError(f"Chafon command data too long: {len(data)} bytes")
    body = bytes((len(data) + MIN_COMMAND_LEN, address & 0xFF, cmd & 0xFF)) + data
    return body + _crc_le(body)


def encode_reply(address: int, cmd: int, status: int = 0x00, data: bytes = b"") -> bytes:
    """Frame a reader -> host reply (every device frame uses this)."""
    if len(data) > 0xFF - MIN_REPLY_LEN:
        raise ValueError(f"Chafon reply data too long: {len(data)} bytes")
    body = bytes((len(data) + MIN_REPLY_LEN, address & 0xFF, cmd & 0xFF, status & 0xFF)) + data
    return body + _crc_le(body)


def encode_inventory_18(address: int = BROADCAST) -> bytes:
    """G2 inventory on a UHFReader18 (no data: EPC inventory)."""
    return encode_command(address, 0x01)


def encode_inventory_288(address: int = BROADCAST, *, q: int = 15, session: int = 0,
                         mask_mem: int = 1, mask_address: int = 0, mask: bytes = b"",
                         mask_bits: int | None = None, target: int = 0, antenna: int = 1,
                         scan_time_100ms: int = 0x14) -> bytes:
    """G2 inventory on a UHFReader288M: ``Q Session MaskMem MaskAdr(2) MaskLen [Mask] Target
    Ant ScanTime``. ``antenna`` is the 1-based port (wire 0x80 + port - 1); ``session`` 0..3
    or 0xFF (smart). Defaults give wabson's vector ``0f 00 01 0000 00 00 80 14``."""
    if not 0 <= q <= 15:
        raise ValueError(f"q must be 0..15, got {q}")
    if session not in (0, 1, 2, 3, 0xFF):
        raise ValueError(f"session must be 0..3 or 0xFF, got {session}")
    if not 1 <= antenna <= 16:
        raise ValueError(f"antenna must be 1..16, got {antenna}")
    bits = len(mask) * 8 if mask_bits is None else mask_bits
    if not 0 <= bits <= 0xFF or (bits + 7) // 8 != len(mask):
        raise ValueError("mask_bits must fit one byte and match the mask length")
    data = (bytes((q, session, mask_mem)) + mask_address.to_bytes(2, "big") + bytes((bits,))
            + mask + bytes((target, 0x80 + antenna - 1, scan_time_100ms)))
    return encode_command(address, 0x01, data)


def encode_get_reader_info(address: int = BROADCAST) -> bytes:
    return encode_command(address, 0x21)


def encode_set_power(address: int = BROADCAST, power_dbm: int = 30) -> bytes:
    if not 0 <= power_dbm <= 30:
        raise ValueError(f"power must be 0..30 dBm, got {power_dbm}")
    return encode_command(address, 0x2F, bytes((power_dbm,)))


def _epc_ok(epc: bytes) -> bytes:
    if not 1 <= len(epc) <= 0xFF:
        raise ValueError(f"EPC length must be 1..255 bytes, got {len(epc)}")
    return bytes((len(epc),)) + epc


def encode_inventory_reply_18(address: int, epcs: Sequence[bytes],
                              status: int = 0x01) -> bytes:
    data = bytes((len(epcs),)) + b"".join(_epc_ok(e) for e in epcs)
    return encode_reply(address, 0x01, status, data)


def encode_inventory_reply_288(address: int, tags: Sequence[tuple[bytes, int]], *,
                               antenna: int = 1, status: int = 0x01) -> bytes:
    """``tags`` are ``(epc, rssi_raw)`` pairs; ``antenna`` 1..8 becomes the bitmask byte."""
    if not 1 <= antenna <= 8:
        raise ValueError(f"antenna must be 1..8, got {antenna}")
    data = bytes((1 << (antenna - 1), len(tags)))
    data += b"".join(_epc_ok(epc) + bytes((rssi & 0xFF,)) for epc, rssi in tags)
    return encode_reply(address, 0x01, status, data)


def encode_reader_info(address: int = 0x00, *, firmware: tuple[int, int] = (1, 0),
                       reader_type: int = 0x0C, protocols: int = 0b10, band: int = 0b0100,
                       min_freq_index: int = 0, max_freq_index: int = 14, power_dbm: int = 30,
                       scan_time_100ms: int = 10, extra: bytes = b"") -> bytes:
    """Reply to 0x21. ``protocols`` bit 0 = ISO 18000-6B, bit 1 = EPC Gen2 (6C)."""
    if not (0 <= band <= 15 and 0 <= min_freq_index <= 63 and 0 <= max_freq_index <= 63):
        raise ValueError("band is 4 bits and frequency indexes 6 bits")
    data = bytes((firmware[0], firmware[1], reader_type, protocols,
                  ((band >> 2) << 6) | max_freq_index, ((band & 0b11) << 6) | min_freq_index,
                  power_dbm, scan_time_100ms)) + extra
    return encode_reply(address, 0x21, 0x00, data)


def encode_command_result(address: int, cmd: int, status: int = 0x00) -> bytes:
    return encode_reply(address, cmd, status)


# -- decoding ----------------------------------------------------------------------------
def _antenna(mask: int) -> int | None:
    if mask and not mask & (mask - 1):
        return mask.bit_length()
    return None


def _parse_18(data: bytes) -> list[bytes] | None:
    """``Num | (EpcLen EPC)*`` consuming ``data`` exactly, else None."""
    n = len(data)
    if n < 1:
        return None
    i = 1
    epcs = []
    for _ in range(data[0]):
        if i >= n:
            return None
        j = i + 1 + data[i]
        if j == i + 1 or j > n:
            return None
        epcs.append(data[i + 1:j])
        i = j
    return epcs if i == n else None


def _parse_288(data: bytes) -> list[tuple[bytes, int]] | None:
    """``Ant | Num | (EpcLen EPC RSSI)*`` consuming ``data`` exactly, else None."""
    n = len(data)
    if n < 2:
        return None
    i = 2
    tags = []
    for _ in range(data[1]):
        if i >= n:
            return None
        j = i + 1 + data[i]
        if j == i + 1 or j >= n:
            return None
        tags.append((data[i + 1:j], data[j]))
        i = j + 1
    return tags if i == n else None


class Decoder(StreamDecoder):
    """Stateful Chafon decoder. ``role="host"`` decodes reader replies (default),
    ``role="device"`` host commands; ``variant`` selects the inventory reply layout."""

    PROTOCOL: ClassVar[str] = "chafon"
    MAX_BUFFER: ClassVar[int] = MAX_BUFFER

    def __init__(self, role: Literal["host", "device"] = "host",
                 variant: Variant = "auto") -> None:
        super().__init__()
        if role not in ("host", "device"):
            raise ValueError(f"role must be 'host' or 'device', got {role!r}")
        if variant not in ("auto", "18", "288"):
            raise ValueError(f"variant must be 'auto', '18' or '288', got {variant!r}")
        self.role = role
        self.variant = variant
        self._min_len = MIN_REPLY_LEN if role == "host" else MIN_COMMAND_LEN
        self._in_sync = False  # the previous item was a frame (names the next error's kind)
        self._address: int | None = None  # reader address of the last decoded reply
        self._invalid: set[int] = set()  # stream offsets whose complete candidate failed CRC
        self._eos = False  # set by flush(): no more bytes will come

    def feed(self, data: bytes) -> list[Message | FrameError]:
        out = StreamDecoder.feed(self, data)
        if len(self._invalid) > 4 * MAX_BUFFER:
            base = self._base
            self._invalid = {o for o in self._invalid if o >= base}
        return out

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
        self._in_sync = False
        return out + StreamDecoder.flush(self)

    # -- framing -----------------------------------------------------------------------
    def _find_start(self, buf: bytes, pos: int) -> int:
        return pos  # no sync byte: every offset may start a frame

    def _verdict(self, buf: bytes, q: int, n: int) -> int:
        length = buf[q]
        if length < self._min_len:
            return _INVALID
        end = q + length + 1
        if end > n:
            return _INVALID if self._eos else _INCOMPLETE
        pos = self._base + q
        if pos in self._invalid:
            return _INVALID
        if crc16_mcrf4xx(buf[q:end]) == 0:
            return _VALID
        self._invalid.add(pos)
        return _INVALID

    def _plausible(self, buf: bytes, r: int) -> bool:
        """Extra checks for a frame found behind an incomplete candidate."""
        if buf[r + 2] not in _CMD_NAMES:
            return False
        return self._address is None or buf[r + 1] == self._address

    def _skip(self, buf: bytes, start: int, stop: int, kind: str) -> tuple[int, FrameError]:
        self._in_sync = False
        detail = {"garbage": "no frame starts here",
                  "bad_length": f"Len={buf[start]} < {self._min_len}",
                  "bad_checksum": "CRC-16/MCRF4XX check failed",
                  "truncated": "stream ended mid-frame"}[kind]
        return stop, self.error(kind, buf[start:stop], self._base + start, detail)

    def _parse(self, buf: bytes, start: int) -> ParseResult:
        n = len(buf)
        kind = "garbage"
        q = start
        while q < n:
            v = self._verdict(buf, q, n)
            if v == _VALID:
                if q == start:
                    return self._frame(buf, start, start + buf[start] + 1)
                return self._skip(buf, start, q, kind)
            if v == _INCOMPLETE:
                r = q + 1
                while r < n and not (self._verdict(buf, r, n) == _VALID
                                     and self._plausible(buf, r)):
                    r += 1
                if r < n:
                    return self._skip(buf, start, r, kind)
                if q == start:
                    return NEED_MORE
                return self._skip(buf, start, q, kind)
            if q == start:
                if self._eos and buf[q] >= self._min_len and q + buf[q] + 1 > n:
                    kind = "truncated"
                elif self._in_sync:
                    kind = "bad_length" if buf[q] < self._min_len else "bad_checksum"
            q += 1
        return self._skip(buf, start, n, kind)

    # -- frame contents ----------------------------------------------------------------
    def _frame(self, buf: bytes, start: int,
               end: int) -> tuple[int, Message | FrameError | tuple[Message, ...]]:
        self._in_sync = True
        address = buf[start + 1]
        cmd = buf[start + 2]
        if self.role == "device":
            return end, Command(address, cmd, _CMD_NAMES.get(cmd, f"0x{cmd:02X}"),
                                buf[start + 3:end - 2])
        self._address = address
        status = buf[start + 3]
        data = buf[start + 4:end - 2]
        item: Message | tuple[Message, ...] | str
        if cmd == 0x01 and status in INVENTORY_STATUS:
            item = self._inventory(address, status, data)
        elif status not in (0x00, *INVENTORY_STATUS):
            item = ReaderError(address, cmd, status, STATUS_NAMES.get(status, f"0x{status:02X}"),
                               data)
        elif cmd == 0x21 and status == 0x00 and len(data) >= 8:
            item = _reader_info(address, data)
        elif status == 0x00 and not data:
            item = CommandResult(address, cmd, _CMD_NAMES.get(cmd, f"0x{cmd:02X}"))
        else:
            item = Response(address, cmd, status, data)
        if isinstance(item, str):
            return end, self.error("bad_field", buf[start:end], self._base + start, item)
        return end, item

    def _inventory(self, address: int, status: int,
                   data: bytes) -> Message | tuple[Message, ...] | str:
        variant = self.variant
        tags288 = _parse_288(data) if variant != "18" else None
        if variant == "auto" and tags288 is not None and _antenna(data[0]) is None:
            tags288 = None  # auto-detection insists on a single-antenna bitmask
        tags18 = _parse_18(data) if variant == "18" or (variant == "auto" and tags288 is None) \
            else None
        items: list[Message] = []
        if tags288 is not None:
            antenna = _antenna(data[0])
            items = [ChafonTagRead(epc=epc.hex().upper(), antenna=antenna,
                                   reader_address=address, rssi_raw=rssi)
                     for epc, rssi in tags288]
            count, used = data[1], "288"
        elif tags18 is not None:
            antenna = None
            items = [ChafonTagRead(epc=epc.hex().upper(), reader_address=address)
                     for epc in tags18]
            count, used = data[0], "18"
        else:
            layouts = {"auto": "the 18 or the 288M", "18": "the UHFReader18",
                       "288": "the UHFReader288M"}[variant]
            return f"inventory data of {len(data)} bytes fits not {layouts} layout"
        if count == 0 or status in _ROUND_OVER:
            items.append(InventoryStatus(address, status, INVENTORY_STATUS[status], count,
                                         antenna, used))
        if len(items) == 1:
            return items[0]
        return tuple(items)


def _reader_info(address: int, d: bytes) -> ReaderInfo:
    band = ((d[4] >> 6) << 2) | (d[5] >> 6)
    protos = tuple(name for bit, name in ((0, "6B"), (1, "6C")) if d[3] >> bit & 1)
    return ReaderInfo(address=address, firmware_major=d[0], firmware_minor=d[1],
                      reader_type=d[2], model=READER_TYPES.get(d[2]), protocols=protos,
                      band=band, band_name=BANDS.get(band), min_freq_index=d[5] & 0x3F,
                      max_freq_index=d[4] & 0x3F, power_dbm=d[6], scan_time_100ms=d[7],
                      extra=d[8:])


def decode_frame_arg(arg: str, *, sent_by: Literal["device", "host"] = "device",
                     variant: Variant = "auto") -> list[Message | FrameError]:
    """Decode one command-line FRAME (hex) for ``pledgewatch decode chafon``. Inventory
    replies are auto-detected (18 vs 288M) unless ``variant`` says otherwise."""
    data = parse_hex(arg)
    dec = Decoder("host" if sent_by == "device" else "device", variant)
    out = dec.feed(data) + dec.flush()
    # A stream decoder without a sync byte cannot tell a corrupted frame from noise, so it
    # reports the pieces; a FRAME argument is one frame, so say what is wrong with it.
    if (len(data) >= MIN_COMMAND_LEN + 1 and data[0] + 1 == len(data)
            and all(isinstance(o, FrameError) for o in out)
            and _crc_le(data[:-2]) != data[-2:]):
        return [dec.error("bad_checksum", data, 0,
                          f"expected CRC {_crc_le(data[:-2]).hex(' ').upper()}, got "
                          f"{data[-2:].hex(' ').upper()}")]
    return out
