"""Pure helpers that turn a command-line FRAME argument into bytes (used by ``decode``).

Binary protocols take hex with optional spaces (``A0 04 01 89 01 D1``). Text protocols take
the line itself; control characters may be written in angle-bracket notation as device
manuals print them (``<STX> 1530<CR>``), and a missing line terminator is added.
"""

from __future__ import annotations

import re
import string
from typing import Final

__all__ = ["CONTROL_NAMES", "HexFrameError", "looks_like_hex", "parse_hex", "parse_text"]

CONTROL_NAMES: Final = {
    "NUL": 0x00, "SOH": 0x01, "STX": 0x02, "ETX": 0x03, "EOT": 0x04, "ENQ": 0x05, "ACK": 0x06,
    "BEL": 0x07, "BS": 0x08, "HT": 0x09, "TAB": 0x09, "LF": 0x0A, "VT": 0x0B, "FF": 0x0C,
    "CR": 0x0D, "SO": 0x0E, "SI": 0x0F, "DLE": 0x10, "XON": 0x11, "XOFF": 0x13, "NAK": 0x15,
    "SYN": 0x16, "ETB": 0x17, "CAN": 0x18, "SUB": 0x1A, "ESC": 0x1B,
}
_TOKEN: Final = re.compile(r"<(" + "|".join(sorted(CONTROL_NAMES, key=len, reverse=True)) + r")>")
_HEXDIGITS: Final = frozenset(string.hexdigits)


class HexFrameError(ValueError):
    """The FRAME argument is not valid hex."""


def looks_like_hex(arg: str) -> bool:
    s = "".join(arg.split())
    return bool(s) and len(s) % 2 == 0 and set(s) <= _HEXDIGITS


def parse_hex(arg: str) -> bytes:
    s = "".join(arg.split())
    if s.lower().startswith("0x"):
        s = s[2:]
    try:
        return bytes.fromhex(s)
    except ValueError as exc:
        raise HexFrameError(f"not hex: {arg!r}") from exc


def parse_text(arg: str, *, terminator: bytes = b"\r\n") -> bytes:
    """Expand ``<STX>``-style names; append ``terminator`` unless the line already ends in
    CR or LF (after expansion). Non-ASCII text is kept as UTF-8 so the codec can reject it."""
    data = _TOKEN.sub(lambda m: chr(CONTROL_NAMES[m.group(1)]), arg).encode("utf-8",
                                                                            "surrogateescape")
    if terminator and not data.endswith((b"\r", b"\n")):
        data += terminator
    return data
