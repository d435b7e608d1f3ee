"""MT-SICS, the Mettler Toledo Standard Interface Command Set (balances, IND terminals).

ASCII lines, each ending CR LF, in both directions. The host sends a command (``S``, ``SI``,
``Z``, ``T``, ``I4``, ...); the device answers with the command echoed, a status and values::

    S S     100.00 g        stable weight (S, SI, SIR)
    S D     100.02 g        dynamic (unstable) weight (SI, SIR)
    S I | S + | S -         busy / overload / underload
    Z A | ZI S | ZI D       zeroed
    T S 2.486 g             tare taken (TA A <w> <u> reads the tare memory; TAC A clears it)
    I4 A "0123456789"       serial number (I0..I4 and the reply to @ are ``Info``)
    ES | ET | EL            syntax / transmission / logical error

Source: ``shared/reference/protocols.md`` section 3.2 (MT-SICS reference excerpts,
InstrumentKit's MT-SICS tests), vectors in ``shared/captures/scale_mettler_toledo.txt``.

Host role (``Decoder()``) turns responses into :class:`~protocols.messages.Weight`,
:class:`~protocols.messages.ScaleStatus`, :class:`Tare`, :class:`Info` or, for anything
well-formed but not understood, :class:`Response`. Device role (``Decoder(role="device")``)
turns command lines into :class:`Command` for the simulated scale.

Decisions: a line ends at LF, and one CR before it is dropped (bare-CR lines are not
supported: a CR alone would make every CR LF line look complete one byte early). Blank lines
are skipped. Status ``A`` on a weight (``S A 1.234 g``, InstrumentKit's fixture; not in the
MT-SICS reference) gives ``stable=None``: it says "executed", not "stable". ``I``/``+``/``-``/
``L`` after any command are busy/overload/underload/error ``ScaleStatus`` records whose
``detail`` is that code and ``command`` the echoed command.
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar, Final, Literal

from protocols._base import NEED_MORE, FrameError, Message, ParseResult, StreamDecoder
from protocols._cli import parse_text
from protocols.messages import ScaleStatus, Weight, weight_to_kg

__all__ = [
    "COMMANDS",
    "CRLF",
    "GENERAL_ERRORS",
    "MAX_BUFFER",
    "MAX_LINE",
    "Command",
    "Decoder",
    "Info",
    "Response",
    "Tare",
    "decode_frame_arg",
    "encode_clear_tare",
    "encode_command",
    "encode_error",
    "encode_info",
    "encode_info_reply",
    "encode_reset",
    "encode_status",
    "encode_tare",
    "encode_tare_reply",
    "encode_tare_value",
    "encode_weigh",
    "encode_weigh_repeat",
    "encode_weight",
    "encode_zero",
]

CRLF: Final = b"\r\n"
LF: Final = 0x0A
MAX_LINE: Final = 128  # bytes including CR LF; the longest replies (I2, I10) are far shorter
MAX_BUFFER: Final = 4 * MAX_LINE

#: commands the simulated scale understands (the device role decodes any command line)
COMMANDS: Final = frozenset({"S", "SI", "SIR", "Z", "ZI", "T", "TI", "TA", "TAC", "I0", "I1",
                             "I2", "I3", "I4", "@"})
GENERAL_ERRORS: Final = {"ES": "syntax error", "ET": "transmission error",
                         "EL": "logical error"}
_CONDITIONS: Final = {"I": "busy", "+": "overload", "-": "underload", "L": "error"}
_WEIGHT_ECHOES: Final = frozenset({"S", "SU"})
_TARE_ECHOES: Final = frozenset({"T", "TI", "TA", "PT"})
_STABILITY: Final = {"S": True, "D": False, "A": None}
_TOKEN: Final = re.compile(rb'"([^"]*)"|(\S+)')
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_PRINTABLE: Final = bytes(range(0x20, 0x7F)) + b"\t"
_INFO: Final = re.compile(r"I[0-9]+|@")


# -- messages ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Command(Message):
    """A host command line, as the simulated scale sees it."""

    name: str
    args: tuple[str, ...] = ()

    type: ClassVar[str] = "command"


@dataclasses.dataclass(frozen=True, slots=True)
class Tare(Message):
    """A tare value reported by ``T``/``TI`` (tare taken) or ``TA`` (tare memory)."""

    command: str
    tare: float
    unit: str
    tare_kg: float | None
    stable: bool | None = None  # T S / TI S -> True, TI D -> False, TA A -> None

    type: ClassVar[str] = "tare"


@dataclasses.dataclass(frozen=True, slots=True)
class Info(Message):
    """An identification reply (I0..I4, @): status ``A`` (complete) or ``B`` (more lines
    follow) and the values with their quotes removed."""

    command: str
    status: str
    values: tuple[str, ...]

    type: ClassVar[str] = "scale_info"


@dataclasses.dataclass(frozen=True, slots=True)
class Response(Message):
    """A well-formed reply this codec does not interpret further."""

    command: str
    status: str
    values: tuple[str, ...] = ()

    type: ClassVar[str] = "response"


# -- encoders ----------------------------------------------------------------------------
def _line(text: str) -> bytes:
    data = text.encode("ascii")
    if data.translate(None, _PRINTABLE) or len(data) + 2 > MAX_LINE:
        raise ValueError(f"not a printable MT-SICS line of at most {MAX_LINE - 2} "
                         f"characters: {text!r}")
    return data + CRLF


def encode_command(name: str, *args: str) -> bytes:
    """Any command line: ``name`` and its arguments separated by spaces."""
    return _line(" ".join((name, *args)))


def encode_weigh(*, immediate: bool = False) -> bytes:
    """``S`` (stable weight) or ``SI`` (weight now, stable or not)."""
    return encode_command("SI" if immediate else "S")


def encode_weigh_repeat() -> bytes:
    return encode_command("SIR")


def encode_zero(*, immediate: bool = False) -> bytes:
    return encode_command("ZI" if immediate else "Z")


def encode_tare(*, immediate: bool = False) -> bytes:
    return encode_command("TI" if immediate else "T")


def encode_tare_value(value: float | None = None, unit: str = "g", decimals: int = 2) -> bytes:
    """``TA`` reads the tare memory; ``TA <value> <unit>`` presets it."""
    if value is None:
        return encode_command("TA")
    return encode_command("TA", f"{value:.{decimals}f}", unit)


def encode_clear_tare() -> bytes:
    return encode_command("TAC")


def encode_info(number: int) -> bytes:
    """``I0`` (command list) .. ``I4`` (serial number)."""
    if not 0 <= number <= 99:
        raise ValueError(f"I-command number must be 0..99, got {number}")
    return encode_command(f"I{number}")


def encode_reset() -> bytes:
    return encode_command("@")


def encode_weight(weight: float, unit: str = "g", *, stable: bool = True, decimals: int = 2,
                  command: str = "S") -> bytes:
    """A weight reply: ``S S     100.00 g`` (value right-aligned in 10 characters)."""
    return _line(f"{command} {'S' if stable else 'D'} {weight:>10.{decimals}f} {unit}")


def encode_tare_reply(tare: float, unit: str = "g", *, decimals: int = 2, command: str = "T",
                      status: str = "S") -> bytes:
    """``T S <tare> <unit>`` (also ``TI D ...``, ``TA A ...``)."""
    if status not in _STABILITY:
        raise ValueError(f"tare reply status must be S, D or A, got {status!r}")
    return _line(f"{command} {status} {tare:>10.{decimals}f} {unit}")


def encode_status(command: str, code: str) -> bytes:
    """A reply without values: ``Z A``, ``S I``, ``S +``, ``Z -``, ``TAC A``, ``ZI D``..."""
    if code not in ("A", "S", "D", *_CONDITIONS):
        raise ValueError(f"unknown status code {code!r}")
    return _line(f"{command} {code}")


def encode_error(code: str = "ES") -> bytes:
    if code not in GENERAL_ERRORS:
        raise ValueError(f"general error must be one of {sorted(GENERAL_ERRORS)}")
    return _line(code)


def encode_info_reply(command: str, *values: str, status: str = "A",
                      quote: bool = True) -> bytes:
    """``I4 A "0123456789"``; ``quote=False`` writes values bare as some firmware does."""
    if any('"' in v for v in values) or status not in ("A", "B"):
        raise ValueError("values may not contain quotes; status is A or B")
    parts = [f'"{v}"' if quote else v for v in values]
    return _line(" ".join((command, status, *parts)))


# -- decoder -----------------------------------------------------------------------------
def _tokens(text: bytes) -> list[str]:
    """Whitespace-separated tokens; a double-quoted string is one token, quotes removed."""
    if b'"' not in text:
        return text.decode("ascii").split()
    # each match is (quoted content, bare token); a bare token is never empty
    return [(bare or quoted).decode("ascii") for quoted, bare in _TOKEN.findall(text)]


def _decode_response(tokens: list[str]) -> Message | str:
    """A device reply as a message, or the reason it is malformed."""
    cmd = tokens[0]
    if len(tokens) == 1:
        if cmd in GENERAL_ERRORS:
            return ScaleStatus("error", detail=cmd)
        return f"reply {cmd!r} has no status"
    status = tokens[1]
    values = tuple(tokens[2:])
    if not values and status in _CONDITIONS:
        return ScaleStatus(_CONDITIONS[status], detail=status, command=cmd)
    if cmd in _WEIGHT_ECHOES and status in _STABILITY:
        if len(values) != 2 or not _NUMBER.fullmatch(values[0]):
            return f"weight reply needs '<value> <unit>', got {' '.join(values)!r}"
        weight = float(values[0])
        unit = values[1]
        return Weight(weight=weight, unit=unit, weight_kg=weight_to_kg(weight, unit),
                      stable=_STABILITY[status])
    if cmd in _TARE_ECHOES and status in _STABILITY and values:
        if len(values) != 2 or not _NUMBER.fullmatch(values[0]):
            return f"tare reply needs '<value> <unit>', got {' '.join(values)!r}"
        tare = float(values[0])
        return Tare(cmd, tare, values[1], weight_to_kg(tare, values[1]), _STABILITY[status])
    if _INFO.fullmatch(cmd) and status in ("A", "B") and values:
        return Info(cmd, status, values)
    if not values and status in _STABILITY:
        return ScaleStatus("ok", detail=status, command=cmd)
    return Response(cmd, status, values)


class Decoder(StreamDecoder):
    """MT-SICS line decoder. ``role="host"`` decodes device replies (default);
    ``role="device"`` decodes host commands."""

    PROTOCOL: ClassVar[str] = "mtsics"
    MAX_BUFFER: ClassVar[int] = MAX_BUFFER

    def __init__(self, role: Literal["host", "device"] = "host") -> None:
        super().__init__()
        if role not in ("host", "device"):
            raise ValueError(f"role must be 'host' or 'device', got {role!r}")
        self.role = role
        self._discarding = False  # inside the rest of an oversized line

    def _find_start(self, buf: bytes, pos: int) -> int:
        return pos  # any byte may start a line

    def _parse(self, buf: bytes, start: int) -> ParseResult:
        n = len(buf)
        if self._discarding:
            lf = buf.find(LF, start)
            end = n if lf < 0 else lf + 1
            self._discarding = lf < 0
            return end, self.error("oversized", buf[start:end], self._base + start,
                                   "rest of an oversized line")
        lf = buf.find(LF, start, start + MAX_LINE)
        if lf < 0:
            if n - start < MAX_LINE:
                return NEED_MORE
            lf = buf.find(LF, start + MAX_LINE)
            end = n if lf < 0 else lf + 1
            self._discarding = lf < 0
            return end, self.error("oversized", buf[start:end], self._base + start,
                                   f"line longer than MAX_LINE={MAX_LINE}")
        end = lf + 1
        text = buf[start:lf - 1] if lf > start and buf[lf - 1] == 0x0D else buf[start:lf]
        if text.translate(None, _PRINTABLE):
            return end, self.error("bad_text", buf[start:end], self._base + start,
                                   "not printable ASCII")
        tokens = _tokens(text)
        if not tokens:
            return end, None  # blank line
        if self.role == "device":
            return end, Command(tokens[0], tuple(tokens[1:]))
        msg = _decode_response(tokens)
        if isinstance(msg, str):
            return end, self.error("bad_field", buf[start:end], self._base + start, msg)
        return end, msg


def decode_frame_arg(arg: str, *, sent_by: Literal["device", "host"] = "device"
                     ) -> list[Message | FrameError]:
    """Decode one command-line FRAME (the text line; CR LF added) for
    ``pledgewatch decode mtsics``."""
    dec = Decoder("host" if sent_by == "device" else "device")
    return dec.feed(parse_text(arg)) + dec.flush()
