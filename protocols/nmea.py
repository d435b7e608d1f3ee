"""NMEA 0183 sentences from GNSS receivers: GGA, RMC, GLL -> Position, VTG -> Velocity.

Sentence: ``$`` + address (talker + type, e.g. ``GPGGA``) + ``,``-separated fields + ``*hh``
+ CR LF, where ``hh`` is the XOR of every character between ``$`` and ``*``. Sources: NMEA
0183 as summarised in ``shared/reference/protocols.md`` section 2; field layouts and test
sentences from Knio/pynmea2 (MIT). ``!`` starts an encapsulated sentence (AIS ``!AIVDM``);
those are framed the same way and reported as :class:`OtherSentence`.

Decisions (documented here because the standard leaves room):

* **Line end.** CR LF per the standard; a bare LF is accepted too (some USB receivers and log
  files drop the CR). A bare CR is not a terminator.
* **Length.** The standard caps a sentence at 82 characters including ``$`` and CR LF
  (:data:`NMEA_MAX_SENTENCE`). Real receivers exceed it (u-blox GSV/GNS, long proprietary
  sentences), so the decoder accepts up to :data:`MAX_SENTENCE` = 120 and reports anything
  longer without a line end as ``oversized``.
* **Missing checksum.** NMEA 0183 v1.5 made ``*hh`` optional; v2.0+ requires it on the
  sentences we use. The decoder rejects a sentence without ``*hh`` as ``bad_checksum`` by
  default, because an unchecked position on a noisy serial line can move a herd into the next
  county. ``Decoder(require_checksum=False)`` accepts such sentences and counts them in
  ``Decoder.unchecked``.
* **Interrupted sentence.** ``$`` and ``!`` are reserved characters, so a ``$``/``!`` before
  the line end means the sentence was cut short (receiver reset, buffer overrun). The partial
  sentence is reported as ``truncated`` and decoding resumes at the new start.
* **Fix.** GGA: fix quality > 0. RMC and GLL: status ``A``. A pre-2.0 GLL without a status
  field has a fix when latitude and longitude are present.
* **VTG** carries course and speed but no position, so it becomes a :class:`Velocity` (our
  own message) rather than a position-less :class:`Position` that a consumer could mistake for
  a lost fix. ``Velocity.valid`` follows the NMEA 2.3 mode indicator (A/D/P/R/F valid; N, E
  dead reckoning, M manual and S simulator not); without a mode field it is ``None``.
* **Dates.** RMC ``ddmmyy``: years 80-99 are 19xx, 00-79 are 20xx (GPS began in 1980).
* Every other well-formed sentence (GSA, GSV, ZDA, proprietary ``$P...``, any talker)
  becomes an :class:`OtherSentence` with its raw fields. Non-ASCII or control characters
  inside a sentence are ``bad_text``.

The grammar is the same in both directions, so ``Decoder(role=...)`` accepts either role for
symmetry with the other codecs and decodes identically. Encoders build the sentences a
receiver sends, from explicit values (no clock reads): :func:`encode_gga`,
:func:`encode_rmc`, :func:`encode_vtg`, :func:`encode_gll` and :func:`encode_sentence`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from collections.abc import Callable, Iterable
from typing import ClassVar, Final, Literal

from protocols._base import NEED_MORE, FrameError, Message, ParseResult, StreamDecoder
from protocols._cli import parse_text
from protocols._crc import xor8
from protocols.messages import Position

__all__ = [
    "KNOTS_TO_KMH",
    "MAX_BUFFER",
    "MAX_SENTENCE",
    "NMEA_MAX_SENTENCE",
    "Decoder",
    "OtherSentence",
    "Velocity",
    "decode_frame_arg",
    "encode_gga",
    "encode_gll",
    "encode_rmc",
    "encode_sentence",
    "encode_vtg",
]

NMEA_MAX_SENTENCE: Final = 82  # the standard's cap, including "$" and CR LF
MAX_SENTENCE: Final = 120  # what we accept from real receivers, including the line end
MAX_BUFFER: Final = 2 * MAX_SENTENCE
KNOTS_TO_KMH: Final = 1.852  # exact: one nautical mile is 1852 m
_VALID_MODES: Final = frozenset("ADPRF")
_RESERVED: Final = frozenset("$!*,\\^~\r\n")
_START_RE: Final = re.compile(rb"[$!]")
_HEX: Final = frozenset("0123456789ABCDEFabcdef")


# -- messages ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Velocity(Message):
    """Course over ground and speed from a VTG sentence (no position in it)."""

    talker: str
    course_true_deg: float | None
    course_magnetic_deg: float | None
    speed_knots: float | None
    speed_kmh: float | None
    mode: str | None = None  # NMEA 2.3 mode indicator, None in older sentences
    valid: bool | None = None

    type: ClassVar[str] = "velocity"


@dataclasses.dataclass(frozen=True, slots=True)
class OtherSentence(Message):
    """Any other checksum-valid sentence, split into fields but not interpreted.

    ``talker`` is ``"P"`` for proprietary sentences (``$PUBX,...`` -> sentence ``"UBX"``);
    ``encapsulated`` is True for ``!``-sentences (AIS).
    """

    talker: str
    sentence: str
    fields: tuple[str, ...]
    encapsulated: bool = False

    type: ClassVar[str] = "nmea_sentence"


# -- field parsing -------------------------------------------------------------------------
def _float(s: str) -> float | None:
    if not s:
        return None
    t = s[1:] if s[0] in "+-" else s
    if not t.replace(".", "", 1).isdigit():
        raise ValueError(f"not a number: {s!r}")
    return float(s)


def _int(s: str) -> int | None:
    if not s:
        return None
    if not s.isdigit():
        raise ValueError(f"not an integer: {s!r}")
    return int(s)


def _coord(value: str, hemi: str, pos: str, neg: str, max_deg: int) -> float | None:
    """``ddmm.mmmm`` / ``dddmm.mmmm`` + hemisphere -> signed decimal degrees."""
    if not value:
        return None
    if hemi != pos and hemi != neg:
        raise ValueError(f"hemisphere {hemi!r} is not {pos}/{neg}")
    dot = value.find(".")
    whole = value if dot < 0 else value[:dot]
    frac = "" if dot < 0 else value[dot + 1:]
    if len(whole) < 3 or not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not a ddmm.mmmm coordinate: {value!r}")
    degrees = int(whole[:-2])
    minutes = float(value[len(whole) - 2:])
    if minutes >= 60.0:
        raise ValueError(f"minutes >= 60 in {value!r}")
    result = degrees + minutes / 60.0
    if result > max_deg:
        raise ValueError(f"{value!r} exceeds {max_deg} degrees")
    return round(-result if hemi == neg else result, 8)


def _time(s: str) -> str | None:
    """``hhmmss(.ss)`` -> ``hh:mm:ss(.ss)``."""
    if not s:
        return None
    frac = s[6:]
    if (len(s) < 6 or not s[:6].isdigit() or (frac and (frac[0] != "." or
                                                         not frac[1:].isdigit()))
            or int(s[0:2]) > 23 or int(s[2:4]) > 59 or int(s[4:6]) > 60):
        raise ValueError(f"not a hhmmss.ss time: {s!r}")
    return f"{s[0:2]}:{s[2:4]}:{s[4:6]}{frac}"


def _date(s: str) -> str | None:
    """``ddmmyy`` -> ``YYYY-MM-DD`` (years 80-99 are 19xx)."""
    if not s:
        return None
    if len(s) != 6 or not s.isdigit():
        raise ValueError(f"not a ddmmyy date: {s!r}")
    yy = int(s[4:6])
    return _dt.date(1900 + yy if yy >= 80 else 2000 + yy, int(s[2:4]), int(s[0:2])).isoformat()


_PAD: Final = ("",) * 16  # handlers index up to field 14; missing trailing fields are empty


def _gga(talker: str, f: list[str]) -> Message:
    quality = _int(f[6])
    return Position(
        lat=_coord(f[2], f[3], "N", "S", 90),
        lon=_coord(f[4], f[5], "E", "W", 180),
        fix=bool(quality),
        sentence="GGA",
        talker=talker,
        time_utc=_time(f[1]),
        altitude_m=_float(f[9]),
        satellites=_int(f[7]),
        hdop=_float(f[8]),
        quality=quality,
    )


def _rmc(talker: str, f: list[str]) -> Message:
    return Position(
        lat=_coord(f[3], f[4], "N", "S", 90),
        lon=_coord(f[5], f[6], "E", "W", 180),
        fix=f[2] == "A",
        sentence="RMC",
        talker=talker,
        time_utc=_time(f[1]),
        date=_date(f[9]),
        speed_knots=_float(f[7]),
        course_deg=_float(f[8]),
    )


def _gll(talker: str, f: list[str]) -> Message:
    lat = _coord(f[1], f[2], "N", "S", 90)
    lon = _coord(f[3], f[4], "E", "W", 180)
    status = f[6]
    fix = status == "A" if status else (lat is not None and lon is not None)
    return Position(lat=lat, lon=lon, fix=fix, sentence="GLL", talker=talker,
                    time_utc=_time(f[5]))


def _vtg(talker: str, f: list[str]) -> Message:
    if f[2] == "T" or any(f[5:10]):  # NMEA 2.0+: value,unit pairs (+ mode in 2.3)
        true_, mag, knots, kmh = f[1], f[3], f[5], f[7]
        mode = f[9] or None
    else:  # NMEA 1.5: course true, course magnetic, knots, km/h and nothing after
        true_, mag, knots, kmh = f[1], f[2], f[3], f[4]
        mode = None
    return Velocity(talker, _float(true_), _float(mag), _float(knots), _float(kmh), mode,
                    None if mode is None else mode in _VALID_MODES)


_SENTENCES: Final[dict[str, Callable[[str, list[str]], Message]]] = {
    "GGA": _gga, "RMC": _rmc, "GLL": _gll, "VTG": _vtg,
}


# -- decoder -----------------------------------------------------------------------------
class Decoder(StreamDecoder):
    """Stateful NMEA 0183 line decoder. ``role`` is accepted for symmetry with the other
    codecs; both roles decode the same grammar."""

    PROTOCOL: ClassVar[str] = "nmea"
    MAX_BUFFER: ClassVar[int] = MAX_BUFFER

    def __init__(self, role: Literal["host", "device"] = "host", *,
                 require_checksum: bool = True) -> None:
        super().__init__()
        if role not in ("host", "device"):
            raise ValueError(f"role must be 'host' or 'device', got {role!r}")
        self.role = role
        self.require_checksum = require_checksum
        self.unchecked = 0  # sentences accepted without a checksum

    def _find_start(self, buf: bytes, pos: int) -> int:
        c = buf[pos]
        if c == 0x24 or c == 0x21:
            return pos
        m = _START_RE.search(buf, pos)
        return m.start() if m else -1

    def _parse(self, buf: bytes, start: int) -> ParseResult:
        n = len(buf)
        limit = start + MAX_SENTENCE
        nl = buf.find(b"\n", start + 1, limit)
        if nl < 0:
            nxt = _START_RE.search(buf, start + 1, limit)
            if nxt is not None:
                return self._interrupted(buf, start, nxt.start())
            if n >= limit:
                return limit, self.error("oversized", buf[start:limit], self._base + start,
                                         f"no line end within MAX_SENTENCE={MAX_SENTENCE}")
            return NEED_MORE
        end = nl + 1
        body = buf[start + 1:nl]
        if b"$" in body or b"!" in body:
            nxt = _START_RE.search(buf, start + 1, nl)
            assert nxt is not None
            return self._interrupted(buf, start, nxt.start())
        if body.endswith(b"\r"):
            body = body[:-1]
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            return end, self.error("bad_text", buf[start:end], self._base + start,
                                   "non-ASCII byte in sentence")
        if not text.isprintable():
            return end, self.error("bad_text", buf[start:end], self._base + start,
                                   "control character in sentence")
        star = text.rfind("*")
        if star < 0:
            if self.require_checksum:
                return end, self.error("bad_checksum", buf[start:end], self._base + start,
                                       "sentence has no *hh checksum")
            self.unchecked += 1
            data = text
        else:
            hh = text[star + 1:]
            data = text[:star]
            if len(hh) != 2 or hh[0] not in _HEX or hh[1] not in _HEX:
                return end, self.error("bad_checksum", buf[start:end], self._base + start,
                                       f"malformed checksum field {hh!r}")
            expected = xor8(body[:star])
            if expected != int(hh, 16):
                return end, self.error("bad_checksum", buf[start:end], self._base + start,
                                       f"expected checksum {expected:02X}, got {hh.upper()}")
        fields = data.split(",")
        address = fields[0]
        if not address.isalnum():
            return end, self.error("bad_field", buf[start:end], self._base + start,
                                   f"bad sentence address {address!r}")
        encapsulated = buf[start] == 0x21
        if address[0] == "P":
            talker, sentence = "P", address[1:]
        elif len(address) < 3:
            return end, self.error("bad_field", buf[start:end], self._base + start,
                                   f"sentence address {address!r} too short")
        else:
            talker, sentence = address[:2], address[2:]
        handler = None if encapsulated else _SENTENCES.get(sentence)
        if handler is None:
            return end, OtherSentence(talker, sentence, tuple(fields[1:]), encapsulated)
        if len(fields) < 16:
            fields += _PAD[len(fields):]
        try:
            return end, handler(talker, fields)
        except ValueError as exc:
            return end, self.error("bad_field", buf[start:end], self._base + start,
                                   f"{address}: {exc}")

    def _interrupted(self, buf: bytes, start: int, nxt: int) -> tuple[int, FrameError]:
        return nxt, self.error("truncated", buf[start:nxt], self._base + start,
                               "sentence cut short by a new '$'/'!' before its line end")


def decode_frame_arg(arg: str, *, sent_by: Literal["device", "host"] = "device"
                     ) -> list[Message | FrameError]:
    """Decode one command-line FRAME (the sentence text; CR LF is added when missing)."""
    dec = Decoder("host" if sent_by == "device" else "device")
    return dec.feed(parse_text(arg)) + dec.flush()


# -- encoders ----------------------------------------------------------------------------
def encode_sentence(talker: str, sentence: str, fields: Iterable[str | None], *,
                    encapsulated: bool = False) -> bytes:
    """``$`` + talker + sentence + fields + ``*hh`` CR LF. ``talker="P"`` for proprietary
    sentences; ``None`` fields are empty. Raises ValueError for reserved characters or a
    sentence longer than :data:`MAX_SENTENCE`."""
    address = talker + sentence
    if not (address.isascii() and address.isalnum() and address.isupper()) or (
            talker != "P" and len(talker) != 2) or not sentence:
        raise ValueError(f"bad NMEA address {talker!r} + {sentence!r}")
    parts = [address]
    for value in fields:
        s = "" if value is None else value
        if not (s.isascii() and s.isprintable()) or _RESERVED.intersection(s):
            raise ValueError(f"NMEA field {s!r} contains a reserved or non-ASCII character")
        parts.append(s)
    body = ",".join(parts).encode("ascii")
    out = b"%c%s*%02X\r\n" % (0x21 if encapsulated else 0x24, body, xor8(body))
    if len(out) > MAX_SENTENCE:
        raise ValueError(f"sentence of {len(out)} bytes exceeds MAX_SENTENCE={MAX_SENTENCE}")
    return out


def _fmt_time(t: _dt.time | str | None) -> str:
    """``datetime.time`` (hundredths of a second) or ``hh:mm:ss(.ss)`` -> ``hhmmss(.ss)``."""
    if t is None:
        return ""
    if isinstance(t, _dt.time):
        return f"{t.hour:02d}{t.minute:02d}{t.second:02d}.{t.microsecond // 10_000:02d}"
    if len(t) < 8 or t[2] != ":" or t[5] != ":":
        raise ValueError(f"time must be hh:mm:ss(.ss), got {t!r}")
    out = t[0:2] + t[3:5] + t[6:]
    _time(out)  # validates
    return out


def _fmt_date(d: _dt.date | str | None) -> str:
    if d is None:
        return ""
    if isinstance(d, str):
        d = _dt.date.fromisoformat(d)
    return f"{d.day:02d}{d.month:02d}{d.year % 100:02d}"


def _fmt_coord(value: float | None, deg_digits: int, pos: str, neg: str, max_deg: int,
               decimals: int) -> tuple[str, str]:
    if value is None:
        return "", ""
    if not -max_deg <= value <= max_deg:
        raise ValueError(f"coordinate {value} outside +-{max_deg} degrees")
    scale = 10 ** decimals
    total = round(abs(value) * 60 * scale)  # minutes x scale, rounded once
    degrees, minutes = divmod(total, 60 * scale)
    width = 3 + decimals if decimals else 2
    mm = f"{minutes / scale:0{width}.{decimals}f}"
    return f"{degrees:0{deg_digits}d}{mm}", neg if value < 0 else pos


def _fmt_num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def encode_gga(*, time_utc: _dt.time | str | None, lat: float | None, lon: float | None,
               quality: int = 1, satellites: int | None = 8, hdop: float | None = 0.9,
               altitude_m: float | None = 0.0, geoid_sep_m: float | None = 0.0,
               dgps_station: str = "", talker: str = "GP", minute_decimals: int = 4) -> bytes:
    """A GGA fix. ``lat``/``lon`` in decimal degrees (None = empty, e.g. no fix with
    ``quality=0``)."""
    la, ns = _fmt_coord(lat, 2, "N", "S", 90, minute_decimals)
    lo, ew = _fmt_coord(lon, 3, "E", "W", 180, minute_decimals)
    return encode_sentence(talker, "GGA", (
        _fmt_time(time_utc), la, ns, lo, ew, str(quality),
        "" if satellites is None else f"{satellites:02d}", _fmt_num(hdop, ".1f"),
        _fmt_num(altitude_m, ".1f"), "M", _fmt_num(geoid_sep_m, ".1f"), "M", "", dgps_station))


def encode_rmc(*, time_utc: _dt.time | str | None, date: _dt.date | str | None,
               lat: float | None, lon: float | None, valid: bool = True,
               speed_knots: float | None = 0.0, course_deg: float | None = None,
               mode: str | None = "A", talker: str = "GP", minute_decimals: int = 4) -> bytes:
    """An RMC sentence. ``mode=None`` omits the NMEA 2.3 mode field; an invalid fix gets
    status V and mode N."""
    la, ns = _fmt_coord(lat, 2, "N", "S", 90, minute_decimals)
    lo, ew = _fmt_coord(lon, 3, "E", "W", 180, minute_decimals)
    fields = [_fmt_time(time_utc), "A" if valid else "V", la, ns, lo, ew,
              _fmt_num(speed_knots, ".2f"), _fmt_num(course_deg, ".1f"), _fmt_date(date), "",
              ""]
    if mode is not None:
        fields.append(mode if valid else "N")
    return encode_sentence(talker, "RMC", fields)


def encode_vtg(*, course_true_deg: float | None, speed_knots: float | None,
               course_magnetic_deg: float | None = None, mode: str | None = "A",
               talker: str = "GP") -> bytes:
    """A VTG sentence (NMEA 2.3 layout); km/h is derived from knots."""
    kmh = None if speed_knots is None else speed_knots * KNOTS_TO_KMH
    fields = [_fmt_num(course_true_deg, ".1f"), "T", _fmt_num(course_magnetic_deg, ".1f"), "M",
              _fmt_num(speed_knots, ".2f"), "N", _fmt_num(kmh, ".2f"), "K"]
    if mode is not None:
        fields.append(mode)
    return encode_sentence(talker, "VTG", fields)


def encode_gll(*, lat: float | None, lon: float | None, time_utc: _dt.time | str | None,
               valid: bool = True, mode: str | None = "A", talker: str = "GP",
               minute_decimals: int = 4) -> bytes:
    la, ns = _fmt_coord(lat, 2, "N", "S", 90, minute_decimals)
    lo, ew = _fmt_coord(lon, 3, "E", "W", 180, minute_decimals)
    fields = [la, ns, lo, ew, _fmt_time(time_utc), "A" if valid else "V"]
    if mode is not None:
        fields.append(mode if valid else "N")
    return encode_sentence(talker, "GLL", fields)
