"""XK3190-A9 weighing indicator continuous output (Yaohua and its many clones).

Two frame shapes share this decoder; their first bytes (``02`` and ``=``) never occur inside
the other shape, so one stream may be decoded without configuration:

``A9`` frame (tF = 0), 12 bytes, device to host only::

    02 | sign '+'/'-' | 6 ASCII digits, MSD first | decimals '0'..'4' | XOR hi | XOR lo | 03

``XOR`` is the XOR of the 8 bytes sign..decimals, sent as two upper-case ASCII hex digits.
No unit and no stability flag are sent: the unit is a decoder setting (truck scales are set
up in kg) and ``stable`` is always ``None`` -- the gateway must derive stability itself.
Source: ``shared/reference/protocols.md`` section 3.3, vectors in
``shared/captures/scale_xk3190_a9.txt``.

``=`` frame, ASCII: ``'=' | weight, right-justified, optional '-' and '.' | [status letter] |
CR`` (e.g. ``=   0.00C\\r``, hahuyquyen/CMA_1). The width of the weight field is not fixed
(7 characters in the only capture); a frame ends at CR or at the next ``=`` (some indicators
send no CR). The meaning of the trailing letter (``@``, ``A``, ``B``, ``C`` seen) is not
documented anywhere we found, so it is kept verbatim in ``Weight.scale`` as ``"status=C"``
and ``stable`` stays ``None``.

``reversed_digits=True`` reads ``=`` frames whose characters are sent least significant first
(the tF = 1 mode of some indicators: ``=43.2100`` is 12.34). This mode has not been confirmed
on hardware or in a public capture, hence an explicit constructor option.

There are no host commands in continuous mode, so the decoder has only the host role.
"""

from __future__ import annotations

import re
from typing import ClassVar, Final, Literal

from protocols._base import NEED_MORE, FrameError, Message, ParseResult, StreamDecoder
from protocols._cli import looks_like_hex, parse_hex, parse_text
from protocols._crc import xor8
from protocols.messages import Weight, weight_to_kg

__all__ = [
    "A9_LEN",
    "EQ",
    "ETX",
    "MAX_BUFFER",
    "MAX_DECIMALS",
    "MAX_EQ_BODY",
    "STX",
    "Decoder",
    "decode_frame_arg",
    "encode_a9",
    "encode_eq",
]

STX: Final = 0x02
ETX: Final = 0x03
EQ: Final = 0x3D  # '='
CR: Final = 0x0D
A9_LEN: Final = 12
MAX_DECIMALS: Final = 4
MAX_A9_DIGITS: Final = 999_999
MAX_EQ_BODY: Final = 12  # characters between '=' and its terminator (weight + status letter)
MAX_BUFFER: Final = 4 * A9_LEN + MAX_EQ_BODY + 2

_HEX: Final = b"0123456789ABCDEF"
_HEX_VALUE: Final = {c: i for i, c in enumerate(_HEX)} | {
    c: 10 + i for i, c in enumerate(b"abcdef")}
_SIGNS: Final = frozenset(b"+-")
# number part of an '=' frame: optional sign, digits, optional fraction (spaces around allowed)
_EQ_NUMBER: Final = re.compile(rb" *(-?) *([0-9]+)(?:\.([0-9]*))? *")
_EQ_END: Final = re.compile(rb"[\r=\x02]")  # what ends the body of an '=' frame
_STATUS_LETTERS: Final = frozenset(range(0x40, 0x5B))  # '@' and 'A'..'Z'


def _scaled(digits: int, decimals: int, negative: bool) -> float:
    value = float(digits) if decimals == 0 else digits / 10 ** decimals
    if negative and digits:
        return -value
    return value


# -- encoders (device role: what the indicator sends) ----------------------------------------
def encode_a9(weight: float, decimals: int = 0) -> bytes:
    """An A9 continuous frame for ``weight`` shown with ``decimals`` decimal places."""
    if not 0 <= decimals <= MAX_DECIMALS:
        raise ValueError(f"decimals must be 0..{MAX_DECIMALS}, got {decimals}")
    digits = round(abs(weight) * 10 ** decimals)
    if digits > MAX_A9_DIGITS:
        raise ValueError(f"weight {weight} does not fit 6 digits with {decimals} decimals")
    body = (b"-" if weight < 0 else b"+") + b"%06d%d" % (digits, decimals)
    x = xor8(body)
    return bytes((STX,)) + body + bytes((_HEX[x >> 4], _HEX[x & 0x0F], ETX))


def encode_eq(weight: float, decimals: int = 2, *, status: str = "", width: int = 7,
              reversed_digits: bool = False, terminator: bytes = b"\r") -> bytes:
    """An ``=`` frame: ``=`` + weight right-justified in ``width`` characters + optional
    status letter + ``terminator`` (``b""`` for indicators that send none). With
    ``reversed_digits`` the weight characters are sent least significant first."""
    if status and (len(status) != 1 or ord(status) not in _STATUS_LETTERS):
        raise ValueError(f"status must be one letter '@'..'Z', got {status!r}")
    text = f"{weight:.{decimals}f}".rjust(width)
    if len(text) + len(status) > MAX_EQ_BODY:
        raise ValueError(f"weight {weight} is wider than an '=' frame allows")
    if reversed_digits:
        text = text[::-1]
    return b"=" + text.encode("ascii") + status.encode("ascii") + terminator


# -- decoder ---------------------------------------------------------------------------------
class Decoder(StreamDecoder):
    """XK3190 continuous-output decoder (A9 frames and ``=`` frames), host role only.

    ``unit`` is what the indicator is configured to display (the frames carry none).
    ``reversed_digits`` reads ``=`` frames sent least significant character first.
    """

    PROTOCOL: ClassVar[str] = "xk3190"
    MAX_BUFFER: ClassVar[int] = MAX_BUFFER

    def __init__(self, unit: str | None = "kg", *, reversed_digits: bool = False) -> None:
        super().__init__()
        self.unit = unit
        self.reversed_digits = reversed_digits

    def _find_start(self, buf: bytes, pos: int) -> int:
        i = buf.find(STX, pos)
        j = buf.find(EQ, pos, i if i >= 0 else len(buf))
        return j if j >= 0 else i

    def _next_sync(self, buf: bytes, start: int, stop: int) -> int:
        """End of a rejected frame: the next sync byte inside it, or ``stop``."""
        i = self._find_start(buf[:stop], start + 1)
        return stop if i < 0 else i

    def _parse(self, buf: bytes, start: int) -> ParseResult:
        if buf[start] == STX:
            return self._parse_a9(buf, start)
        return self._parse_eq(buf, start)

    def _parse_a9(self, buf: bytes, start: int) -> ParseResult:
        end = start + A9_LEN
        if end > len(buf):
            return NEED_MORE
        frame = buf[start:end]
        if frame[11] != ETX:
            stop = self._next_sync(buf, start, end)
            return stop, self.error("bad_length", buf[start:stop], self._base + start,
                                    "A9 frame: no ETX at byte 12")
        # a rejected frame ends at the next sync byte inside it (a frame cut short by a
        # glitch must not take the good frame after it down with it)
        sign = frame[1]
        digits = frame[2:8]
        dec = frame[8] - 0x30
        hi = _HEX_VALUE.get(frame[9])
        lo = _HEX_VALUE.get(frame[10])
        if (sign not in _SIGNS or not digits.isdigit() or not 0 <= dec <= MAX_DECIMALS
                or hi is None or lo is None):
            stop = self._next_sync(buf, start, end)
            return stop, self.error("bad_field", buf[start:stop], self._base + start,
                                    "A9 frame: sign, digits, decimals or checksum characters "
                                    "out of range")
        x = xor8(frame[1:9])
        if x != (hi << 4) | lo:
            stop = self._next_sync(buf, start, end)
            return stop, self.error("bad_checksum", buf[start:stop], self._base + start,
                                    f"expected XOR {x:02X}, got {frame[9:11].decode()}")
        weight = _scaled(int(digits), dec, sign == 0x2D)
        return end, Weight(weight=weight, unit=self.unit,
                           weight_kg=weight_to_kg(weight, self.unit), stable=None)

    def _parse_eq(self, buf: bytes, start: int) -> ParseResult:
        limit = min(len(buf), start + 2 + MAX_EQ_BODY)
        m = _EQ_END.search(buf, start + 1, limit)
        if m is not None:
            body_end = m.start()
            # CR is part of this frame; '=' or STX is the start of the next one
            end = body_end + 1 if buf[body_end] == CR else body_end
        elif limit - start < 2 + MAX_EQ_BODY:
            return NEED_MORE
        else:
            stop = self._next_sync(buf, start, limit)
            return stop, self.error("oversized", buf[start:stop], self._base + start,
                                    f"'=' frame without CR within {MAX_EQ_BODY} characters")
        body = buf[start + 1:body_end]
        status = ""
        if body and body[-1] in _STATUS_LETTERS:
            status = chr(body[-1])
            body = body[:-1]
        if self.reversed_digits:
            body = body[::-1]
        m = _EQ_NUMBER.fullmatch(body)
        if m is None:
            return end, self.error("bad_field", buf[start:end], self._base + start,
                                   "'=' frame: weight is not a decimal number")
        sign, whole, frac = m.groups()
        frac = frac or b""
        weight = _scaled(int(whole + frac), len(frac), sign == b"-")
        return end, Weight(weight=weight, unit=self.unit,
                           weight_kg=weight_to_kg(weight, self.unit), stable=None,
                           scale=f"status={status}" if status else None)


def decode_frame_arg(arg: str, *, sent_by: Literal["device", "host"] = "device"
                     ) -> list[Message | FrameError]:
    """Decode one command-line FRAME for ``pledgewatch decode xk3190``: hex for an A9 frame,
    or the text of an ``=`` frame (CR appended when missing)."""
    if sent_by != "device":
        raise ValueError("XK3190 continuous output has no host-to-device frames")
    data = parse_hex(arg) if looks_like_hex(arg) else parse_text(arg, terminator=b"\r")
    dec = Decoder()
    return dec.feed(data) + dec.flush()
