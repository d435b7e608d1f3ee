"""Digi-Star EZ indicators (TMR feed-mixer wagons): SCOREM continuous output and escape commands.

Source: Digi-Star "EZII Escape Computer Command Set" D3648 Rev G (2009), pp. 29-32 (continuous
output chosen by SCOREM, D.A.N. 213) and pp. 23, 38-41 (escape commands), as summarised in
``shared/reference/protocols.md`` section 4.1. Frames in the manual and in
``shared/captures/digistar_indicator.txt`` are written with ``<STX>``-style names.

Indicator -> host (host role, ``Decoder()``), one frame family per SCOREM setting:

* ``display`` (SCOREM 1/21/31, and 6/26/36 "on change"): ``<STX>ABBBCD<CR>``, the six display
  positions (a ``.`` may be added). ``A`` is a digit, space, ``-`` (negative) or ``$`` (weight
  "locked on"); a ``-`` in position ``C`` means a TR command is active, a ``-`` in the last
  position ``D`` means motion. The flag *replaces* that digit on the wire (manual: ``" 1530"``
  normal, ``" 153-"`` in motion, ``" 15-0"`` TR active), so the hidden digit is unknown: this
  decoder reads it as ``0`` (the weight is then exact to the ten / hundred in that place, never
  too large in magnitude) and reports ``stable=False`` for motion. Positions are counted from the
  right over digits only, so the capture's whitespace-collapsed frames (``" 1530"``, five
  characters) decode as well. The manual also prints ``" 142-5"`` as a *decimal* value in
  motion (the ``-`` sits where the decimal point was); with the default ``decimals=None`` that
  frame reads as TR active on ``14205``, so a decimal display must be configured with
  ``Decoder(decimals=1)``. The display carries no unit: ``Decoder(unit="lb"|"kg")`` supplies it.
* ``csv`` (SCOREM 7/8): ``" 280,LB,GR, 187,03JL03, 3:41:21"<CR><LF>`` -> a :class:`Weight`
  then a :class:`MixerRecord` with the weight tag, the total rotation count and the indicator's
  own date and time kept as text (``03JL03`` is not converted: the manual does not say whether
  it is day-month-year).
* ``serial_gross`` (SCOREM 11/12): ``<STX>123456LB SG<ETX>C<CR>``, a whole-number gross weight.
* ``multi_scale`` (SCOREM 37-39): ``<STX> 280LB GR,> 11300LB NE<ETX>C<CR>``, one entry per
  scale platform, left to right scale A, B, C; ``>`` marks the scale selected at the indicator.
  Each entry gives a :class:`Weight` with ``scale="A"``, ``"B"``, ``"C"`` (the manual's names),
  the selected one suffixed ``*`` (``"B*"``); tag ``ES`` (setup menus) gives
  ``ScaleStatus("busy")`` and ``ER`` (weighing error) ``ScaleStatus("error")``, with
  ``detail="B*:ER"``.

Checksum (``C`` above, also in ``Rd``/``Ea`` commands and ``Eb`` replies): XOR of the characters
after ``<STX>`` up to but not including ``<ETX>``, AND 0x3F, OR 0x40 (manual pp. 31-32, 38).
The manual's ``C`` is a placeholder (its legend reads "C = Checksum"): the capture frames that
carry a literal ``C`` fail (``123456LB SG`` needs ``}``, the multi-scale example ``E``), and no
other choice of characters (with or without ``<STX>``/``<ETX>``) gives ``C``. The manual's
worked value -- ``LOADS THIS DATA INTO SCALE`` -> ``G`` -- verifies.

Host -> indicator (device role, ``Decoder(role="device")``): ``<ESC>`` + two command letters +
data + ``<EOT>``, decoded as :class:`EscapeCommand`; the indicator answers ``<ACK>`` (0x06) or
``<NAK>`` (0x15), decoded in the host role as :class:`Ack` / :class:`Nak`. ``Eb`` replies
(``26 characters,C<CR><LF>``) decode as :class:`EidDataField`.

A host-role decoder takes ``mode="auto"`` (every family, detected per frame) or one SCOREM
setting (``mode=11``) or family name (``mode="serial_gross"``); in an explicit mode a frame of
another family is a ``bad_field`` error. Acks, naks and ``Eb`` replies are accepted in any mode.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import ClassVar, Final, Literal

from protocols._base import NEED_MORE, FrameError, Message, ParseResult, StreamDecoder
from protocols._cli import looks_like_hex, parse_hex, parse_text
from protocols._crc import xor8
from protocols.messages import ScaleStatus, Weight, weight_to_kg

__all__ = [
    "ACK",
    "EID_FIELD_LEN",
    "EOT",
    "ESC",
    "ETX",
    "FAMILIES",
    "MAX_BUFFER",
    "MAX_COMMAND",
    "MAX_DISPLAY",
    "MAX_FRAME",
    "MAX_LINE",
    "MAX_SCALES",
    "NAK",
    "STX",
    "Ack",
    "Decoder",
    "EidDataField",
    "EscapeCommand",
    "MixerRecord",
    "Nak",
    "checksum",
    "decode_frame_arg",
    "encode_ack",
    "encode_control_message",
    "encode_control_mode",
    "encode_csv",
    "encode_display",
    "encode_dump_eid",
    "encode_eid_data_field",
    "encode_escape",
    "encode_multi_scale",
    "encode_nak",
    "encode_serial_gross",
    "encode_upload_eid_field",
    "encode_upload_feedline",
    "family_of",
]

STX: Final = 0x02
ETX: Final = 0x03
EOT: Final = 0x04
ACK: Final = 0x06
LF: Final = 0x0A
CR: Final = 0x0D
NAK: Final = 0x15
ESC: Final = 0x1B

MAX_DISPLAY: Final = 8  # six display positions, a decimal point, one spare
MAX_FRAME: Final = 80  # <STX>..<CR>; three multi-scale entries need ~45
MAX_LINE: Final = 128  # CSV line / Eb reply before <CR><LF>
MAX_COMMAND: Final = 256  # <ESC>..<EOT>; an Rd feedline is ~120 characters
MAX_BUFFER: Final = 1024
MAX_SCALES: Final = 3  # scales A, B, C
MAX_MESSAGE: Final = 60  # Cm control message length
EID_FIELD_LEN: Final = 26

# SCOREM settings per frame family (manual pp. 29-32)
FAMILIES: Final = {
    "display": (1, 6, 21, 26, 31, 36),
    "csv": (7, 8),
    "serial_gross": (11, 12),
    "multi_scale": (37, 38, 39),
}
_SCOREM_FAMILY: Final = {n: fam for fam, ns in FAMILIES.items() for n in ns}
_UNITS: Final = {"LB": "lb", "KG": "kg"}
# weight tag -> Weight.mode; GC/NC are GR/NE during internal temperature calibration. Other
# tags (LU/LC, M+, ...) are not explained by the manual and give mode None.
_MODES: Final = {"GR": "gross", "GC": "gross", "NE": "net", "NC": "net"}
_SCALE_NAMES: Final = "ABC"
_STATUS_TAGS: Final = {"ES": "busy", "ER": "error"}

# frame starts in the host role: STX frame, ACK, NAK, a printable line start, stray CR/LF
_HOST_START: Final = re.compile(rb"[\x02\x06\x15\x0a\x0d\x20-\x7e]")
_FRAME_STOP: Final = re.compile(rb"[^\x03\x20-\x7f]")  # first byte that cannot be in STX..CR
_LINE_STOP: Final = re.compile(rb"[^\x20-\x7e]")
_CMD_STOP: Final = re.compile(rb"[^\x02\x03\x0d\x20-\x7f]")
_DISPLAY_CHARS: Final = frozenset(" 0123456789.-$")
_NUMBER: Final = re.compile(r"\d+(?:\.\d+)?")
_ENTRY: Final = re.compile(r"(>?)([ 0-9.\-]+?)(LB|KG) ([A-Z+]{2})")
_CSV_TIME: Final = re.compile(r"\d{1,2}:\d\d:\d\d")


def checksum(data: bytes) -> int:
    """Digi-Star check character: XOR of ``data``, AND 0x3F, OR 0x40 (always printable)."""
    return (xor8(data) & 0x3F) | 0x40


def family_of(mode: str | int) -> str | None:
    """Frame family for a SCOREM setting or family name; ``None`` for ``"auto"``."""
    if mode == "auto":
        return None
    if isinstance(mode, int) and mode in _SCOREM_FAMILY:
        return _SCOREM_FAMILY[mode]
    if isinstance(mode, str):
        if mode in FAMILIES:
            return mode
        if mode.isdigit() and int(mode) in _SCOREM_FAMILY:
            return _SCOREM_FAMILY[int(mode)]
    raise ValueError(f"unknown Digi-Star output mode {mode!r}: use 'auto', a SCOREM number "
                     f"{sorted(_SCOREM_FAMILY)} or one of {sorted(FAMILIES)}")


# -- messages ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class MixerRecord(Message):
    """The rest of a SCOREM 7/8 line after its weight: weight tag (``GR``, ``NE``, ``M+``...),
    total mixer rotation count and the indicator's own date and time, as printed."""

    tag: str
    rotations: int | None
    date: str
    time: str

    type: ClassVar[str] = "mixer_record"


@dataclasses.dataclass(frozen=True, slots=True)
class EscapeCommand(Message):
    """A host command: ``command`` is the two letters after ``<ESC>``, ``data`` what follows
    them up to ``<STX>`` (or ``<EOT>``), ``text`` the ``<STX>`` block without its
    ``<ETX>``, check character and trailing ``<CR>`` (``None`` when there is none)."""

    command: str
    data: str = ""
    text: str | None = None

    type: ClassVar[str] = "escape_command"


@dataclasses.dataclass(frozen=True, slots=True)
class Ack(Message):
    """``<ACK>``: the indicator accepted the last escape command."""

    type: ClassVar[str] = "ack"


@dataclasses.dataclass(frozen=True, slots=True)
class Nak(Message):
    """``<NAK>``: the indicator rejected the last escape command."""

    type: ClassVar[str] = "nak"


@dataclasses.dataclass(frozen=True, slots=True)
class EidDataField(Message):
    """One ``Eb`` reply line: a 26-character EID "DATA" field (trailing spaces kept)."""

    text: str

    type: ClassVar[str] = "eid_data_field"


# -- encoders: indicator -> host -----------------------------------------------------------
def _fmt_number(weight: float) -> str:
    w = float(weight)
    return str(int(w)) if w.is_integer() else repr(w)


def _unit_code(unit: str) -> str:
    code = unit.upper()
    if code not in _UNITS:
        raise ValueError(f"unit must be 'lb' or 'kg', got {unit!r}")
    return code


def encode_display(weight: float, *, decimals: int = 0, motion: bool = False,
                   locked: bool = False, tr: bool = False) -> bytes:
    """SCOREM 1/21/31 frame: six right-justified display positions (plus ``.`` when
    ``decimals``); ``motion`` / ``tr`` overwrite the last / second-last digit with ``-``."""
    if not 0 <= decimals <= 4:
        raise ValueError("decimals must be 0..4")
    if locked and weight < 0:
        raise ValueError("a locked-on weight is never negative")
    digits = f"{abs(weight):.{decimals}f}".replace(".", "")
    flag = "$" if locked else ("-" if weight < 0 else "")
    room = 6 - len(flag)
    if len(digits) > room:
        raise ValueError(f"{weight} does not fit the six-position display")
    pos = list(flag + digits.rjust(room))
    if tr:
        pos[4] = "-"
    if motion:
        pos[5] = "-"
    text = "".join(pos)
    if decimals:
        text = text[:6 - decimals] + "." + text[6 - decimals:]
    return bytes((STX,)) + text.encode("ascii") + bytes((CR,))


def encode_csv(weight: float, *, unit: str = "lb", tag: str = "GR", rotations: int = 0,
               date: str, time: str) -> bytes:
    """SCOREM 7/8 line. ``date``/``time`` are the indicator's own text (``03JL03``,
    ``3:41:21``); the caller supplies them, nothing here reads a clock."""
    fields = (_fmt_number(weight).rjust(6), _unit_code(unit), tag, str(rotations).rjust(4),
              date, time.rjust(8))
    if any("," in f or not f.isascii() for f in fields):
        raise ValueError("CSV fields must be ASCII without commas")
    return ",".join(fields).encode("ascii") + b"\r\n"


def _stx_frame(payload: str) -> bytes:
    data = payload.encode("ascii")
    return bytes((STX,)) + data + bytes((ETX, checksum(data), CR))


def encode_serial_gross(weight: int, *, unit: str = "lb") -> bytes:
    """SCOREM 11/12 frame: six-position whole-number gross weight, ``LB``/``KG``, `` SG``."""
    if not -99999 <= weight <= 999999:
        raise ValueError(f"serial gross weight {weight} does not fit six positions")
    return _stx_frame(f"{int(weight):>6}{_unit_code(unit)} SG")


def encode_multi_scale(entries: Sequence[tuple[float, str, str]], *,
                       selected: int | None = 0) -> bytes:
    """SCOREM 37-39 frame. ``entries`` are ``(weight, unit, tag)`` for scales A, B, C in that
    order (tag ``GR``/``NE``/``LU``..., or ``ES``/``ER`` with weight 999999); ``selected`` is
    the 0-based index of the scale shown on the indicator, marked with ``>``."""
    if not 1 <= len(entries) <= MAX_SCALES:
        raise ValueError(f"a multi-scale frame carries 1..{MAX_SCALES} scales")
    parts = []
    for i, (weight, unit, tag) in enumerate(entries):
        if len(tag) != 2 or tag == "SG":
            raise ValueError(f"bad weight tag {tag!r}")
        mark = ">" if i == selected else " "
        parts.append(f"{mark}{_fmt_number(weight):>6}{_unit_code(unit)} {tag}")
    return _stx_frame(",".join(parts))


def encode_ack() -> bytes:
    return bytes((ACK,))


def encode_nak() -> bytes:
    return bytes((NAK,))


def encode_eid_data_field(text: str) -> bytes:
    """One ``Eb`` reply line: the field padded to 26 characters, ``,``, check, CR LF."""
    field = _ascii_field(text, EID_FIELD_LEN).ljust(EID_FIELD_LEN).encode("ascii")
    return field + b"," + bytes((checksum(field), CR, LF))


# -- encoders: host -> indicator -----------------------------------------------------------
def _ascii_field(text: str, max_len: int, min_len: int = 0) -> str:
    if not min_len <= len(text) <= max_len:
        raise ValueError(f"text must be {min_len}..{max_len} characters, got {len(text)}")
    if any(not 0x20 <= ord(c) <= 0x7A for c in text):
        raise ValueError("text characters must be in the range space..'z' (0x20..0x7A)")
    return text


def encode_escape(command: str, data: str = "", text: str | None = None, *,
                  with_checksum: bool = False) -> bytes:
    """``<ESC>`` + command + data [+ ``<STX>`` text [+ ``<ETX>`` check]] + ``<EOT>``."""
    if len(command) != 2 or not command.isascii() or not command.isalpha():
        raise ValueError(f"command must be two ASCII letters, got {command!r}")
    out = bytes((ESC,)) + (command + data).encode("ascii")
    if text is not None:
        block = text.encode("ascii")
        out += bytes((STX,)) + block
        if with_checksum:
            out += bytes((ETX, checksum(block)))
    return out + bytes((EOT,))


def encode_control_mode(enable: bool = True) -> bytes:
    """``Cc``: enter (``E``) or leave (``D``) control mode; the indicator leaves it by itself
    after 15 s without commands."""
    return encode_escape("Cc", "E" if enable else "D")


def encode_control_message(text: str) -> bytes:
    """``Cm``: show (scroll) a 1..60 character message while in control mode."""
    return encode_escape("Cm", "", _ascii_field(text, MAX_MESSAGE, 1))


def encode_upload_feedline(feedline: str) -> bytes:
    """``Rd``: upload one feedline (ration line), sent as ``<STX>line<CR><ETX>check``. The
    check covers everything between ``<STX>`` and ``<ETX>``, the ``<CR>`` included (the rule
    the manual states for ``Ea``; its ``Rd`` example prints the check only as ``C``)."""
    if not 1 <= len(feedline) <= MAX_COMMAND - 10 or any(
            not 0x20 <= ord(c) <= 0x7E for c in feedline):
        raise ValueError("feedline must be printable ASCII and fit one command")
    return encode_escape("Rd", "", feedline + "\r", with_checksum=True)


def encode_upload_eid_field(index: int, text: str) -> bytes:
    """``Ea``: load a 26-character EID data field (1..20) on an SW4600."""
    if not 1 <= index <= 20:
        raise ValueError("EID data field index must be 1..20")
    return encode_escape("Ea", f"{index:02d}", _ascii_field(text, EID_FIELD_LEN, EID_FIELD_LEN),
                         with_checksum=True)


def encode_dump_eid() -> bytes:
    """``Eb-99999``: send all twenty EID data fields, then ``<ACK>``."""
    return encode_escape("Eb", "-99999")


# -- frame body parsers (pure; return a message or a _Bad) ----------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class _Bad:
    """Why a frame body was rejected: the FrameError kind and detail."""

    detail: str
    kind: str = "bad_field"


def _parse_display(body: str, unit: str | None, decimals: int | None) -> Message | _Bad:
    if not 1 <= len(body) <= MAX_DISPLAY or not set(body) <= _DISPLAY_CHARS:
        return _Bad(f"display field {body!r} is not 1..{MAX_DISPLAY} of ' 0-9.-$'")
    locked = negative = False
    rest = body
    if len(body) >= 3 and body[0] in "$-":
        locked, negative = body[0] == "$", body[0] == "-"
        rest = body[1:]
    motion = False
    if decimals and "." not in rest:
        dp = len(rest) - 1 - decimals
        if dp >= 0 and rest[dp] == "-":  # motion shown in the decimal point's place
            motion = True
            rest = rest[:dp] + "." + rest[dp + 1:]
    digit_pos = [i for i, c in enumerate(rest) if c != "."]
    chars = list(rest)
    if digit_pos and chars[digit_pos[-1]] == "-":
        motion = True
        chars[digit_pos[-1]] = "0"
    tr = len(digit_pos) >= 2 and chars[digit_pos[-2]] == "-"
    if tr:
        chars[digit_pos[-2]] = "0"
    number = "".join(chars).strip(" ")
    if not _NUMBER.fullmatch(number):
        return _Bad(f"display field {body!r} holds no number")
    weight = float(number)
    if negative:
        weight = -weight
    note = ",".join(n for n, on in (("locked", locked), ("tr", tr)) if on) or None
    return Weight(weight=weight, unit=unit, weight_kg=weight_to_kg(weight, unit),
                  stable=not motion, scale=note)


def _number(text: str) -> float | None:
    s = text.replace(" ", "")
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    if not _NUMBER.fullmatch(s):
        return None
    return -float(s) if neg else float(s)


def _parse_entries(payload: str) -> tuple[str, Message | tuple[Message, ...]] | _Bad:
    """Payload of an ``<STX>..<ETX>`` frame -> (family, message or batch)."""
    parts = payload.split(",")
    if len(parts) > MAX_SCALES:
        return _Bad(f"{len(parts)} scale entries > {MAX_SCALES}")
    out: list[Message] = []
    for i, part in enumerate(parts):
        m = _ENTRY.fullmatch(part)
        if m is None:
            return _Bad(f"entry {part!r} is not '[>]weight LB|KG TAG'")
        sel, num, unit_code, tag = m.groups()
        weight = _number(num)
        if weight is None:
            return _Bad(f"entry {part!r} holds no number")
        unit = _UNITS[unit_code]
        if tag == "SG":
            if len(parts) != 1 or sel:
                return _Bad("an SG (serial gross) frame carries exactly one unselected weight")
            return "serial_gross", Weight(weight=weight, unit=unit,
                                          weight_kg=weight_to_kg(weight, unit), stable=None,
                                          mode="gross")
        scale = _SCALE_NAMES[i] + ("*" if sel else "")
        if tag in _STATUS_TAGS:
            out.append(ScaleStatus(status=_STATUS_TAGS[tag], detail=f"{scale}:{tag}"))
        else:
            out.append(Weight(weight=weight, unit=unit, weight_kg=weight_to_kg(weight, unit),
                              stable=None, mode=_MODES.get(tag),
                              scale=scale))
    return "multi_scale", out[0] if len(out) == 1 else tuple(out)


def _parse_line(line: str) -> tuple[str, Message | tuple[Message, ...]] | _Bad:
    """A CR LF line: SCOREM 7/8 CSV, or an ``Eb`` reply."""
    fields = line.split(",")
    if len(fields) == 6:
        weight = _number(fields[0])
        unit = _UNITS.get(fields[1].strip())
        tag, rot, date, time = (f.strip() for f in fields[2:])
        if weight is not None and unit is not None and tag and date and (
                _CSV_TIME.fullmatch(time)) and (rot.isdigit() or not rot):
            return "csv", (
                Weight(weight=weight, unit=unit, weight_kg=weight_to_kg(weight, unit),
                       stable=None, mode=_MODES.get(tag)),
                MixerRecord(tag=tag, rotations=int(rot) if rot else None, date=date,
                            time=time))
    if len(line) == EID_FIELD_LEN + 2 and line[EID_FIELD_LEN] == ",":
        field = line[:EID_FIELD_LEN]
        expected = checksum(field.encode("ascii"))
        if ord(line[-1]) != expected:
            return _Bad(f"expected check {chr(expected)!r}, got {line[-1]!r}", "bad_checksum")
        return "eid", EidDataField(field)
    return _Bad(f"line with {len(fields)} comma fields is neither a SCOREM 7/8 record "
                "(weight,unit,tag,rotations,date,time) nor an Eb data field")


# -- decoder -------------------------------------------------------------------------------
class Decoder(StreamDecoder):
    """Digi-Star stream decoder. ``role="host"`` (default) decodes indicator output in
    ``mode`` (``"auto"``, a SCOREM number or a family name); ``unit`` names the unit of the
    unit-less display frames, ``decimals`` the display's decimal places (see module doc).
    ``role="device"`` decodes escape commands for the simulated indicator."""

    PROTOCOL: ClassVar[str] = "digistar"
    MAX_BUFFER: ClassVar[int] = MAX_BUFFER

    def __init__(self, role: Literal["host", "device"] = "host", *, mode: str | int = "auto",
                 unit: Literal["lb", "kg"] | None = None, decimals: int | None = None) -> None:
        super().__init__()
        if role not in ("host", "device"):
            raise ValueError(f"role must be 'host' or 'device', got {role!r}")
        if unit not in (None, "lb", "kg"):
            raise ValueError(f"unit must be 'lb', 'kg' or None, got {unit!r}")
        if decimals is not None and not 0 <= decimals <= 4:
            raise ValueError("decimals must be 0..4")
        self.role = role
        self.family = family_of(mode)
        self.unit = unit
        self.decimals = decimals

    def _find_start(self, buf: bytes, pos: int) -> int:
        if self.role == "device":
            return buf.find(ESC, pos)
        m = _HOST_START.search(buf, pos)
        return -1 if m is None else m.start()

    def _parse(self, buf: bytes, start: int) -> ParseResult:
        if self.role == "device":
            return self._parse_command(buf, start)
        b = buf[start]
        if b == STX:
            return self._parse_stx(buf, start)
        if b == ACK:
            return start + 1, Ack()
        if b == NAK:
            return start + 1, Nak()
        if b in (CR, LF):  # a stray terminator (e.g. LF after an STX..CR frame): skip it
            return start + 1, None
        return self._parse_text_line(buf, start)

    def _accept(self, family: str, msg: Message | tuple[Message, ...], end: int, raw: bytes,
                offset: int) -> ParseResult:
        if family != "eid" and self.family is not None and family != self.family:
            return end, self.error("bad_field", raw, offset,
                                   f"{family} frame while the decoder expects {self.family}")
        return end, msg

    def _interrupted(self, buf: bytes, start: int, stop: int) -> ParseResult:
        return stop, self.error("truncated", buf[start:stop], self._base + start,
                                f"frame interrupted by byte 0x{buf[stop]:02X}")

    def _parse_stx(self, buf: bytes, start: int) -> ParseResult:
        m = _FRAME_STOP.search(buf, start + 1, start + MAX_FRAME + 1)
        if m is None:
            if len(buf) - start > MAX_FRAME:
                end = start + MAX_FRAME + 1
                return end, self.error("oversized", buf[start:end], self._base + start,
                                       f"no <CR> within MAX_FRAME={MAX_FRAME} bytes")
            return NEED_MORE
        i = m.start()
        if buf[i] != CR:
            return self._interrupted(buf, start, i)
        end = i + 1
        raw = buf[start:end]
        offset = self._base + start
        body = buf[start + 1:i]
        etx = body.find(ETX)
        if etx < 0:
            res = _parse_display(body.decode("ascii"), self.unit, self.decimals)
            if isinstance(res, _Bad):
                return end, self.error(res.kind, raw, offset, res.detail)
            return self._accept("display", res, end, raw, offset)
        if etx != len(body) - 2:
            return end, self.error("bad_length", raw, offset,
                                   "<ETX> must be followed by exactly one check character")
        payload = body[:etx]
        expected = checksum(payload)
        if body[-1] != expected:
            return end, self.error("bad_checksum", raw, offset,
                                   f"expected check {chr(expected)!r} (0x{expected:02X}), got "
                                   f"{chr(body[-1])!r} (0x{body[-1]:02X})")
        if 0x7F in payload:
            return end, self.error("bad_text", raw, offset, "DEL inside the data")
        parsed = _parse_entries(payload.decode("ascii"))
        if isinstance(parsed, _Bad):
            return end, self.error(parsed.kind, raw, offset, parsed.detail)
        return self._accept(parsed[0], parsed[1], end, raw, offset)

    def _parse_text_line(self, buf: bytes, start: int) -> ParseResult:
        m = _LINE_STOP.search(buf, start, start + MAX_LINE + 1)
        if m is None:
            if len(buf) - start > MAX_LINE:
                end = start + MAX_LINE + 1
                return end, self.error("oversized", buf[start:end], self._base + start,
                                       f"no line end within MAX_LINE={MAX_LINE} bytes")
            return NEED_MORE
        i = m.start()
        if buf[i] == CR:
            if i + 1 >= len(buf):
                return NEED_MORE  # wait for the LF
            end = i + 2 if buf[i + 1] == LF else i + 1
        elif buf[i] == LF:
            end = i + 1
        else:
            return self._interrupted(buf, start, i)
        raw = buf[start:end]
        offset = self._base + start
        parsed = _parse_line(buf[start:i].decode("ascii"))
        if isinstance(parsed, _Bad):
            return end, self.error(parsed.kind, raw, offset, parsed.detail)
        return self._accept(parsed[0], parsed[1], end, raw, offset)

    def _parse_command(self, buf: bytes, start: int) -> ParseResult:
        m = _CMD_STOP.search(buf, start + 1, start + MAX_COMMAND + 1)
        if m is None:
            if len(buf) - start > MAX_COMMAND:
                end = start + MAX_COMMAND + 1
                return end, self.error("oversized", buf[start:end], self._base + start,
                                       f"no <EOT> within MAX_COMMAND={MAX_COMMAND} bytes")
            return NEED_MORE
        i = m.start()
        if buf[i] != EOT:
            return self._interrupted(buf, start, i)
        end = i + 1
        raw = buf[start:end]
        offset = self._base + start
        body = buf[start + 1:i].decode("ascii")
        command = body[:2]
        if len(command) != 2 or not command.isalpha():
            return end, self.error("bad_field", raw, offset,
                                   f"command {command!r} is not two letters")
        rest = body[2:]
        stx = rest.find("\x02")
        if stx < 0:
            data, text = rest, None
        else:
            data, block = rest[:stx], rest[stx + 1:]
            etx = block.find("\x03")
            if etx >= 0:
                if etx != len(block) - 2:
                    return end, self.error("bad_length", raw, offset,
                                           "<ETX> must be followed by exactly one check "
                                           "character")
                text = block[:etx]
                expected = checksum(text.encode("ascii"))
                if ord(block[-1]) != expected:
                    return end, self.error("bad_checksum", raw, offset,
                                           f"expected check {chr(expected)!r}, got "
                                           f"{block[-1]!r}")
                if text.endswith("\r"):
                    text = text[:-1]
            else:
                text = block
        if any(c in "\x02\x03\r\x7f" for c in data) or (
                text is not None and any(c in "\x02\x03\r\x7f" for c in text)):
            return end, self.error("bad_field", raw, offset,
                                   "control character out of place in the command")
        return end, EscapeCommand(command, data, text)


def decode_frame_arg(arg: str, *, sent_by: Literal["device", "host"] = "device"
                     ) -> list[Message | FrameError]:
    """Decode one command-line FRAME for ``pledgewatch decode digistar``: hex, or text with
    ``<STX>``-style names. A text frame without a terminator gets ``<CR>`` (STX frames) or
    ``<CR><LF>`` (CSV lines); host commands and ``<ACK>``/``<NAK>`` get none."""
    if looks_like_hex(arg):
        data = parse_hex(arg)
    else:
        data = parse_text(arg, terminator=b"")
        if sent_by == "device" and data and data not in (b"\x06", b"\x15") and not (
                data.endswith((b"\r", b"\n"))):
            data += b"\r" if data[0] == STX else b"\r\n"
    dec = Decoder("host" if sent_by == "device" else "device")
    return dec.feed(data) + dec.flush()
