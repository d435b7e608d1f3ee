"""Mettler Toledo "Toledo continuous" output (and the many indicators that clone it).

Frame, device to host only, sent on every display update::

    STX | SWA | SWB | SWC | 6 ASCII weight digits | 6 ASCII tare digits | CR | [CHK]

Weight and tare carry no sign or decimal point; leading zeros may be spaces. ``CHK`` is
optional (a terminal setting): the two's complement of the 7-bit sum of STX..CR, so the 7-bit
sum of all 18 bytes is zero. Terminals often run 7E1; a port opened 8N1 then sees the parity in
bit 7, so every byte is masked to 7 bits before it is interpreted (``raw`` in errors keeps the
bytes as received). Source: ``shared/reference/protocols.md`` section 3.1 (Mettler WILDCAT
manual tables 6-9..6-11), vectors in ``shared/captures/scale_mettler_toledo.txt``.

Status words:

* SWA bits 0-2: decimal point / dummy-zero code; the displayed value is
  ``digits * 10 ** (2 - code)`` (0 = XXXX00, 1 = XXXXX0, 2 = XXXXXX, 3 = XXXXX.X, ...
  7 = X.XXXXX). Bits 3-4: increment size (1 = x1, 2 = x2, 3 = x5; 0 = not given).
* SWB bit 0 net, bit 1 negative, bit 2 out of range, bit 3 motion, bit 4 kg (else lb),
  bit 6 power-up not zeroed.
* SWC bits 0-2: unit code (0 = lb/kg from SWB bit 4, 1 = g; 2..7 = t, oz, ozt, dwt, ton,
  custom on newer terminals -- older ones only use bit 0), bit 3 print request, bit 4 expanded
  display.

Decisions (documented here because the sources disagree or are silent):

* Dummy zeros: by default the six digits do *not* include the dummy zeros of codes 0 and 1
  and are multiplied (the Mettler table). One public app reads ``1!!  1440   460`` as 1440 g,
  i.e. it believes the field already contains the dummy zero; ``dummy_zeros_sent=True``
  selects that reading.
* Out of range (SWB bit 2) is reported as ``Weight(overload=True)``; the sign bit says
  whether it is over (positive) or under (negative) range.
* ``stable`` is ``not motion``; ``mode`` is ``"net"``/``"gross"``; ``tare`` uses the same
  decimal rule as the weight. SWB bit 6 and SWC bits 3/4 are listed in ``Weight.scale`` as
  comma-separated notes (``not_zeroed``, ``print``, ``expanded``).
* The status words' "always 1" bit 5 is not checked: some clones (Fairbanks) document it 0.
* Checksum: ``Decoder(checksum=True)`` expects 18-byte frames, ``False`` 17-byte frames,
  ``"auto"`` (the default) decides from the first frame and then keeps that decision
  (``checksum_detected``): after CR, a byte that makes the 7-bit sum zero is a checksum, an
  STX is the next frame (no checksum). When the byte after CR is an STX that *also* makes the
  sum zero, the byte after it decides (an STX there means the first was a checksum; a status
  word, never 0x02, means it was the next frame). A byte that is neither is a
  ``bad_checksum`` and the decision waits for the next frame.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Final, Literal

from protocols._base import NEED_MORE, FrameError, Message, ParseResult, StreamDecoder
from protocols._cli import looks_like_hex, parse_hex, parse_text
from protocols.messages import Weight, weight_to_kg

__all__ = [
    "CR",
    "FRAME_LEN",
    "MAX_BUFFER",
    "STX",
    "SWC_UNITS",
    "Decoder",
    "StatusWords",
    "decode_frame_arg",
    "decode_printed",
    "decode_status",
    "encode_frame",
    "encode_status",
]

STX: Final = 0x02
CR: Final = 0x0D
FRAME_LEN: Final = 17  # STX..CR; 18 with the checksum
MAX_BUFFER: Final = 4 * (FRAME_LEN + 1)
PRINTED_LEN: Final = 15  # SWA SWB SWC + weight + tare, as apps print a frame
MAX_DIGITS: Final = 999_999

_POW10: Final = (1, 10, 100, 1000, 10_000, 100_000)
_MASK7: Final = bytes(i & 0x7F for i in range(256))
_INCREMENTS: Final = (None, 1, 2, 5)  # SWA bits 3-4
_INCREMENT_CODES: Final = {None: 0, 1: 1, 2: 2, 5: 3}
SWC_UNITS: Final = (None, "g", "t", "oz", "ozt", "dwt", "ton", None)  # SWC bits 0-2; 0 = SWB
_UNIT_SWC: Final = {"kg": 0, "lb": 0, "g": 1, "t": 2, "oz": 3, "ozt": 4, "dwt": 5, "ton": 6}


@dataclasses.dataclass(frozen=True, slots=True)
class StatusWords:
    """The three status words of a frame, bit by bit."""

    code: int = 2  # SWA bits 0-2: decimal point / dummy zeros
    increment: int | None = 1  # SWA bits 3-4: 1, 2, 5 or None
    net: bool = False
    negative: bool = False
    out_of_range: bool = False
    motion: bool = False
    kg: bool = True  # SWB bit 4 (lb when False)
    not_zeroed: bool = False  # SWB bit 6: power-up not zeroed
    unit_code: int = 0  # SWC bits 0-2
    print_request: bool = False
    expanded: bool = False

    @property
    def unit(self) -> str | None:
        if self.unit_code:
            return SWC_UNITS[self.unit_code]
        return "kg" if self.kg else "lb"

    def scale(self, digits: int, *, dummy_zeros_sent: bool = False) -> float:
        """The displayed magnitude for the six ASCII digits."""
        return _scaled(digits, self.code, dummy_zeros_sent)


def decode_status(swa: int, swb: int, swc: int) -> StatusWords:
    """Split the status words (parity bit 7 ignored)."""
    return StatusWords(
        code=swa & 0x07,
        increment=_INCREMENTS[(swa >> 3) & 0x03],
        net=bool(swb & 0x01),
        negative=bool(swb & 0x02),
        out_of_range=bool(swb & 0x04),
        motion=bool(swb & 0x08),
        kg=bool(swb & 0x10),
        not_zeroed=bool(swb & 0x40),
        unit_code=swc & 0x07,
        print_request=bool(swc & 0x08),
        expanded=bool(swc & 0x10),
    )


def encode_status(sw: StatusWords) -> bytes:
    """SWA, SWB, SWC with the always-1 bit 5 set."""
    if not 0 <= sw.code <= 7 or not 0 <= sw.unit_code <= 7:
        raise ValueError("decimal code and unit code are 0..7")
    if sw.increment not in _INCREMENT_CODES:
        raise ValueError(f"increment must be 1, 2, 5 or None, got {sw.increment}")
    swa = 0x20 | sw.code | (_INCREMENT_CODES[sw.increment] << 3)
    swb = (0x20 | sw.net | (sw.negative << 1) | (sw.out_of_range << 2) | (sw.motion << 3)
           | (sw.kg << 4) | (sw.not_zeroed << 6))
    swc = 0x20 | sw.unit_code | (sw.print_request << 3) | (sw.expanded << 4)
    return bytes((swa, swb, swc))


def _field(value: float, code: int) -> bytes:
    """Six ASCII digits (space padded) showing ``value`` (>= 0) with decimal code ``code``."""
    exact = value * 10 ** (code - 2)
    digits = round(exact)
    if abs(exact - digits) > 1e-6 * max(1.0, abs(exact)):
        raise ValueError(f"{value} cannot be shown with decimal code {code}")
    if digits > MAX_DIGITS:
        raise ValueError(f"{value} does not fit six digits with decimal code {code}")
    text = str(digits).zfill(code - 1) if code > 2 else str(digits)
    return text.rjust(6).encode("ascii")


def _parity7e(b: int) -> int:
    return b | 0x80 if bin(b).count("1") % 2 else b


def encode_frame(weight: float, tare: float = 0.0, *, code: int = 2, increment: int | None = 1,
                 net: bool = False, motion: bool = False, unit: str = "kg",
                 overload: bool = False, not_zeroed: bool = False,
                 negative: bool | None = None, print_request: bool = False,
                 checksum: bool = True, parity: bool = False) -> bytes:
    """A device frame. ``weight`` may be negative (or pass ``negative`` to force the sign bit,
    e.g. for -0); ``overload`` sets the out-of-range bit. ``parity=True`` sets bit 7 for even
    parity, i.e. the bytes a 7E1 terminal puts on a port read as 8N1."""
    if unit not in _UNIT_SWC:
        raise ValueError(f"unit must be one of {sorted(_UNIT_SWC)}, got {unit!r}")
    if tare < 0:
        raise ValueError("tare is sent without a sign and cannot be negative")
    sw = StatusWords(code=code, increment=increment, net=net,
                     negative=weight < 0 if negative is None else negative,
                     out_of_range=overload, motion=motion, kg=unit != "lb",
                     not_zeroed=not_zeroed, unit_code=_UNIT_SWC[unit],
                     print_request=print_request)
    body = (bytes((STX,)) + encode_status(sw) + _field(abs(weight), code) + _field(tare, code)
            + bytes((CR,)))
    if checksum:
        body += bytes(((-sum(body)) & 0x7F,))
    if parity:
        body = bytes(_parity7e(b) for b in body)
    return body


def _digits(field: bytes) -> int | None:
    s = field.lstrip(b" ")
    if not s:
        return 0  # a blank field (some terminals blank the display when out of range)
    return int(s) if s.isdigit() else None


def _scaled(digits: int, code: int, dummy_zeros_sent: bool) -> float:
    if code > 2:
        return digits / _POW10[code - 2]
    if code == 2 or dummy_zeros_sent:
        return float(digits)
    return float(digits * _POW10[2 - code])


def _weight(masked: bytes, *, dummy_zeros_sent: bool) -> Weight | None:
    """``masked`` is SWA SWB SWC + 6 weight + 6 tare, bit 7 already cleared. Reads the bits
    directly (not via :class:`StatusWords`): this runs for every frame."""
    weight_digits = _digits(masked[3:9])
    tare_digits = _digits(masked[9:15])
    if weight_digits is None or tare_digits is None:
        return None
    code = masked[0] & 0x07
    swb = masked[1]
    swc = masked[2]
    value = _scaled(weight_digits, code, dummy_zeros_sent)
    if swb & 0x02 and value:
        value = -value
    unit_code = swc & 0x07
    unit = SWC_UNITS[unit_code] if unit_code else ("kg" if swb & 0x10 else "lb")
    notes = None
    if swb & 0x40 or swc & 0x18:
        notes = ",".join(name for name, on in (("not_zeroed", swb & 0x40),
                                               ("print", swc & 0x08),
                                               ("expanded", swc & 0x10)) if on)
    return Weight(weight=value, unit=unit, weight_kg=weight_to_kg(value, unit),
                  stable=not swb & 0x08, mode="net" if swb & 0x01 else "gross",
                  tare=_scaled(tare_digits, code, dummy_zeros_sent),
                  overload=bool(swb & 0x04), scale=notes)


def decode_printed(text: str, *, dummy_zeros_sent: bool = False) -> Weight:
    """Decode a frame as apps print it with STX, CR and CHK stripped: the three status words
    followed by six weight and six tare characters (``40    046   000`` is 0.46 kg, stable).
    Raises ``ValueError`` when ``text`` is not that shape."""
    if len(text) != PRINTED_LEN or not text.isascii():
        raise ValueError(f"expected {PRINTED_LEN} ASCII characters, got {text!r}")
    w = _weight(text.encode("ascii").translate(_MASK7), dummy_zeros_sent=dummy_zeros_sent)
    if w is None:
        raise ValueError(f"weight or tare field is not digits: {text!r}")
    return w


class Decoder(StreamDecoder):
    """Toledo continuous output decoder (host role only: the terminal just talks)."""

    PROTOCOL: ClassVar[str] = "toledo"
    MAX_BUFFER: ClassVar[int] = MAX_BUFFER

    def __init__(self, checksum: bool | Literal["auto"] = "auto", *,
                 dummy_zeros_sent: bool = False) -> None:
        super().__init__()
        if checksum not in (True, False, "auto"):
            raise ValueError(f"checksum must be True, False or 'auto', got {checksum!r}")
        self.checksum = checksum
        self.dummy_zeros_sent = dummy_zeros_sent
        #: whether frames carry a checksum: fixed by ``checksum``, or detected in auto mode
        self.checksum_detected: bool | None = None if checksum == "auto" else bool(checksum)

    def _find_start(self, buf: bytes, pos: int) -> int:
        i = buf.find(STX, pos)
        j = buf.find(STX | 0x80, pos, i if i >= 0 else len(buf))
        return j if j >= 0 else i

    def _resync(self, buf: bytes, start: int, stop: int, kind: str, detail: str) -> ParseResult:
        """Reject the frame at ``start``; it ends at the next STX inside it, or at ``stop``."""
        i = self._find_start(buf[:stop], start + 1)
        end = stop if i < 0 else i
        return end, self.error(kind, buf[start:end], self._base + start, detail)

    def _parse(self, buf: bytes, start: int) -> ParseResult:
        n = len(buf)
        end = start + FRAME_LEN
        if end > n:
            return NEED_MORE
        frame = buf[start:end].translate(_MASK7)
        if frame[16] != CR:
            return self._resync(buf, start, end, "bad_length", "no CR at byte 17")
        with_chk = self.checksum_detected
        if with_chk is None:  # auto mode, not decided yet
            if end >= n:
                return NEED_MORE
            after = buf[end] & 0x7F
            sums_to_zero = not (sum(frame) + after) & 0x7F
            if after == STX and sums_to_zero:
                if end + 1 >= n:
                    return NEED_MORE
                with_chk = (buf[end + 1] & 0x7F) == STX
            elif after == STX:
                with_chk = False
            elif sums_to_zero:
                with_chk = True
            else:
                return self._resync(buf, start, end + 1, "bad_checksum",
                                    "auto: the byte after CR is neither a checksum nor STX")
            self.checksum_detected = with_chk
        if with_chk:
            if end >= n:
                return NEED_MORE
            if (sum(frame) + buf[end]) & 0x7F:
                return self._resync(buf, start, end + 1, "bad_checksum",
                                    f"expected CHK 0x{(-sum(frame)) & 0x7F:02X}, "
                                    f"got 0x{buf[end] & 0x7F:02X}")
            end += 1
        msg = _weight(frame[1:16], dummy_zeros_sent=self.dummy_zeros_sent)
        if msg is None:
            return self._resync(buf, start, end, "bad_field",
                                "weight or tare field is not digits")
        return end, msg


def decode_frame_arg(arg: str, *, sent_by: Literal["device", "host"] = "device"
                     ) -> list[Message | FrameError]:
    """Decode one command-line FRAME for ``pledgewatch decode toledo``: hex of a 17- or
    18-byte frame, a frame in ``<STX>`` notation, or the 15-character form apps print."""
    if sent_by != "device":
        raise ValueError("Toledo continuous output has no host-to-device frames")
    if len(arg) == PRINTED_LEN:
        try:
            return [decode_printed(arg)]
        except ValueError:
            pass
    data = parse_hex(arg) if looks_like_hex(arg) else parse_text(arg, terminator=b"\r")
    checksum: bool | Literal["auto"] = {FRAME_LEN: False, FRAME_LEN + 1: True}.get(
        len(data), "auto")
    dec = Decoder(checksum)
    return dec.feed(data) + dec.flush()
