"""ISO 11784 animal identification codes: the 64-bit code in LF (134.2 kHz) ear tags and
boluses, its display forms, and pledgewatch's convention for carrying it in a UHF EPC.

Code layout, bit 1 first (source: ISO 11784 as summarised in ``shared/reference/protocols.md``
section 1.5; ICAR's bit table; graemediack/ISO11784Tools for the display forms)::

    bit 1       animal flag (1 = animal application)
    bits 2-15   reserved, 14 bits (later amendments use some of them for a retagging counter
                and user information; we keep them as ``reserved`` without interpreting them)
    bit 16      additional data block follows
    bits 17-26  country (ISO 3166 numeric) or manufacturer code, 10 bits, 0..999
    bits 27-64  national identification code, 38 bits, 0..274877906943

Display forms, all for the same test animal (manufacturer code 999 is reserved for tests):

* ``decimal`` ``999123456789012``: 3-digit country + 12-digit national ID. ``999-123456789012``
  and Proxmark's ``0999-123456789012`` are accepted too.
* ``dot_hex`` ``3E7.1CBE991A14``: 3 hex digits country, 10 hex digits national ID.
* ``hex_msb`` ``8000F9DCBE991A14``: the 64-bit code with bit 1 as the most significant bit
  (ISO11784Tools' "left" flavour).
* ``hex_lsb`` ``2858997D3B9F0001``: the same 64 bits reversed, as tags transmit them (LSB
  first) and as some readers print them ("right" flavour).

:func:`parse` detects the form from its shape. A 16-digit hex string could be either bit
order, so both readings are checked: a reading is plausible when its reserved bits are zero
and its country code is at most 999. When exactly one is plausible it wins; when both are, the
one with the animal flag set wins, then the MSB order (ISO's own bit numbering). When neither
is (a tag that uses the reserved bits), :func:`parse` refuses and the caller passes
``raw_order="msb"`` or ``"lsb"`` explicitly.

Country codes 1000-1023 fit the 10-bit field but have no 3-digit decimal form and are not
assigned, so they are rejected everywhere (:class:`Iso11784RangeError`).

Proxmark's FDX-B source prints a sample as ``985121004515220  [ 37FF65B88EF94 ]``: the
bracketed hex is the 15-digit decimal number itself in hexadecimal (0x37FF65B88EF94 ==
985121004515220), not the 64-bit code, so it is not one of the forms above.

**UHF EPC convention (pledgewatch's own).** ISO 6881 defines how an animal ID sits in the EPC
bank of a UHF tag, but its text is paywalled, so the simulated UHF ear tags use this layout,
which no standard defines: a 96-bit EPC of header byte ``0xE9``, one reserved byte ``0x00``,
the 64-bit code in MSB order, and two zero bytes. :func:`to_epc` writes it and
:func:`from_epc` reads it (``None`` for any other EPC). Replace it with ISO 6881 once the
layout is known; real fleets need a per-site decoder chain anyway.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar, Final, Literal

from protocols._base import FrameError, Message

__all__ = [
    "EPC_HEADER",
    "MAX_COUNTRY",
    "MAX_NATIONAL_ID",
    "MAX_RESERVED",
    "AnimalId",
    "Iso11784Error",
    "Iso11784FormatError",
    "Iso11784RangeError",
    "decode_frame_arg",
    "from_code",
    "from_epc",
    "parse",
    "to_epc",
]

MAX_COUNTRY: Final = 999
MAX_NATIONAL_ID: Final = (1 << 38) - 1  # 274877906943
MAX_RESERVED: Final = (1 << 14) - 1
EPC_HEADER: Final = 0xE9  # pledgewatch convention, see the module docstring
_EPC_LEN: Final = 12
_MASK64: Final = (1 << 64) - 1

_DECIMAL_RE: Final = re.compile(r"([0-9]{3})[- ]?([0-9]{12})\Z|0([0-9]{3})[- ]([0-9]{12})\Z")
_DOT_HEX_RE: Final = re.compile(r"([0-9A-Fa-f]{3})\.([0-9A-Fa-f]{10})\Z")
_RAW_HEX_RE: Final = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{16})\Z")
_RAW_SEPARATORS: Final = str.maketrans("", "", " :-")

RawOrder = Literal["msb", "lsb"]


# -- errors ------------------------------------------------------------------------------
class Iso11784Error(ValueError):
    """Root of this module's errors."""


class Iso11784FormatError(Iso11784Error):
    """Text that is none of the display forms (or an undecidable raw hex)."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"{text!r}: {reason}")
        self.text = text
        self.reason = reason


class Iso11784RangeError(Iso11784Error):
    """A code field outside its range."""

    def __init__(self, field: str, value: int, maximum: int) -> None:
        super().__init__(f"{field} {value} outside 0..{maximum}")
        self.field = field
        self.value = value
        self.maximum = maximum


def _reverse64(value: int) -> int:
    return int(f"{value:064b}"[::-1], 2)


# -- the code ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class AnimalId(Message):
    """One ISO 11784 code. Build it from (country, national ID); read the display forms
    from its properties."""

    country_code: int
    national_id: int
    animal_flag: bool = True
    data_block_flag: bool = False
    reserved: int = 0

    type: ClassVar[str] = "animal_id"

    def __post_init__(self) -> None:
        for name, value, maximum in (("country_code", self.country_code, MAX_COUNTRY),
                                     ("national_id", self.national_id, MAX_NATIONAL_ID),
                                     ("reserved", self.reserved, MAX_RESERVED)):
            if not 0 <= value <= maximum:
                raise Iso11784RangeError(name, value, maximum)

    @property
    def code(self) -> int:
        """The 64-bit code as an integer, bit 1 most significant."""
        return ((self.animal_flag << 63) | (self.reserved << 49) | (self.data_block_flag << 48)
                | (self.country_code << 38) | self.national_id)

    @property
    def decimal(self) -> str:
        return f"{self.country_code:03d}{self.national_id:012d}"

    @property
    def dot_hex(self) -> str:
        return f"{self.country_code:03X}.{self.national_id:010X}"

    @property
    def hex_msb(self) -> str:
        return f"{self.code:016X}"

    @property
    def hex_lsb(self) -> str:
        return f"{_reverse64(self.code):016X}"

    def to_dict(self) -> dict[str, Any]:
        out = Message.to_dict(self)
        out.update(decimal=self.decimal, dot_hex=self.dot_hex, hex_msb=self.hex_msb,
                   hex_lsb=self.hex_lsb)
        return out


def from_code(code: int, *, order: RawOrder = "msb") -> AnimalId:
    """Split a 64-bit code; ``order="lsb"`` when its bits are in transmission order."""
    if not 0 <= code <= _MASK64:
        raise Iso11784RangeError("code", code, _MASK64)
    if order == "lsb":
        code = _reverse64(code)
    elif order != "msb":
        raise ValueError(f"order must be 'msb' or 'lsb', got {order!r}")
    return AnimalId(
        country_code=(code >> 38) & 0x3FF,
        national_id=code & MAX_NATIONAL_ID,
        animal_flag=bool(code >> 63),
        data_block_flag=bool((code >> 48) & 1),
        reserved=(code >> 49) & MAX_RESERVED,
    )


def _plausible(code: int) -> bool:
    return (code >> 49) & MAX_RESERVED == 0 and (code >> 38) & 0x3FF <= MAX_COUNTRY


def parse(text: str, *, raw_order: RawOrder | None = None) -> AnimalId:
    """Parse any display form (see the module docstring). ``raw_order`` forces the bit order
    of a 16-digit raw hex instead of detecting it."""
    s = text.strip()
    m = _DECIMAL_RE.match(s)
    if m:
        country, national = (m.group(1), m.group(2)) if m.group(1) else (m.group(3),
                                                                           m.group(4))
        return AnimalId(int(country), int(national))
    m = _DOT_HEX_RE.match(s)
    if m:
        return AnimalId(int(m.group(1), 16), int(m.group(2), 16))
    m = _RAW_HEX_RE.match(s.translate(_RAW_SEPARATORS))
    if not m:
        raise Iso11784FormatError(text, "not a 15-digit decimal, dot-hex or 16-digit raw hex "
                                        "ISO 11784 code")
    value = int(m.group(1), 16)
    if raw_order is not None:
        return from_code(value, order=raw_order)
    reversed_value = _reverse64(value)
    msb_ok, lsb_ok = _plausible(value), _plausible(reversed_value)
    if msb_ok and lsb_ok and not value >> 63 and reversed_value >> 63:
        msb_ok = False  # both readings fit; only the LSB one has the animal flag set
    if msb_ok:
        return from_code(value)
    if lsb_ok:
        return from_code(reversed_value)
    raise Iso11784FormatError(text, "neither bit order has zero reserved bits and a country "
                                    "code <= 999; pass raw_order='msb' or 'lsb'")


# -- pledgewatch's EPC convention -----------------------------------------------------------
def to_epc(animal: AnimalId) -> bytes:
    """The 96-bit EPC of a simulated UHF ear tag: ``E9 00`` + code (MSB order) + ``00 00``.
    pledgewatch's own convention, not ISO 6881."""
    return bytes((EPC_HEADER, 0)) + animal.code.to_bytes(8, "big") + b"\x00\x00"


def from_epc(epc: str | bytes) -> AnimalId | None:
    """The animal ID in an EPC written by :func:`to_epc`, or ``None`` when the EPC does not
    follow that convention (any other header, length or content)."""
    if isinstance(epc, str):
        try:
            epc = bytes.fromhex(epc)
        except ValueError:
            return None
    if (len(epc) != _EPC_LEN or epc[0] != EPC_HEADER or epc[1] != 0
            or epc[10] != 0 or epc[11] != 0):
        return None
    try:
        return from_code(int.from_bytes(epc[2:10], "big"))
    except Iso11784Error:
        return None


def decode_frame_arg(arg: str, *, sent_by: str = "device") -> list[Message | FrameError]:
    """``pledgewatch decode iso11784 TEXT``: any display form, or a 24-hex-digit EPC in
    pledgewatch's convention. ``sent_by`` is accepted for CLI symmetry and ignored."""
    del sent_by
    compact = "".join(arg.split())
    if len(compact) == 2 * _EPC_LEN:
        animal = from_epc(compact)
        if animal is not None:
            return [animal]
    try:
        return [parse(arg)]
    except Iso11784Error as exc:
        return [FrameError("bad_field", arg.encode("utf-8", "surrogateescape"), 0, str(exc),
                           "iso11784")]
