"""Normalised messages shared by several codecs.

Every RFID codec reports a :class:`TagRead`, every scale codec a :class:`Weight` (or a
:class:`ScaleStatus` when the scale answers with a condition instead of a weight), every GPS
codec a :class:`Position`. Edge drivers turn these into uplink readings without knowing which
wire protocol produced them. Codec-specific control messages live in each codec module.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Final

from protocols._base import Message

__all__ = [
    "LB_TO_KG",
    "Position",
    "ScaleStatus",
    "TagRead",
    "Weight",
    "weight_to_kg",
]

LB_TO_KG: Final = 0.45359237  # exact, by the 1959 international yard and pound agreement


def weight_to_kg(weight: float | None, unit: str | None) -> float | None:
    """Convert a displayed weight to kilograms; ``None`` when the unit is unknown."""
    if weight is None or unit is None:
        return None
    if unit == "kg":
        return weight
    if unit == "lb":
        return round(weight * LB_TO_KG, 6)
    if unit == "g":
        return round(weight / 1000.0, 9)
    if unit == "t":
        return weight * 1000.0
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class TagRead(Message):
    """One read of one RFID tag.

    ``epc`` is uppercase hex of the EPC bank (without PC word and tag CRC); ``antenna`` is the
    1-based reader port; ``rssi_dbm`` may be ``None`` when the protocol carries no RSSI.
    """

    epc: str
    antenna: int | None = None
    rssi_dbm: float | None = None
    pc: int | None = None
    frequency_khz: int | None = None
    read_count: int | None = None
    device_ts_ms: int | None = None
    reader_address: int | None = None

    type: ClassVar[str] = "tag_read"


@dataclasses.dataclass(frozen=True, slots=True)
class Weight(Message):
    """A weight as the scale displayed it, with decimals and dummy zeros applied."""

    weight: float
    unit: str | None
    weight_kg: float | None
    stable: bool | None
    mode: str | None = None  # "gross" | "net" | None
    tare: float | None = None
    overload: bool = False
    scale: str | None = None  # which scale of a multi-scale indicator, or a locked/flag note

    type: ClassVar[str] = "weight"


@dataclasses.dataclass(frozen=True, slots=True)
class ScaleStatus(Message):
    """A scale answered with a condition instead of a weight.

    ``status`` is one of ``overload``, ``underload``, ``busy``, ``error``, ``ok`` (command
    acknowledged) or a protocol-specific word; ``detail`` keeps the scale's own code.
    """

    status: str
    detail: str = ""
    command: str = ""

    type: ClassVar[str] = "scale_status"


@dataclasses.dataclass(frozen=True, slots=True)
class Position(Message):
    """A position fix (or the lack of one) from a GNSS receiver."""

    lat: float | None
    lon: float | None
    fix: bool
    sentence: str
    talker: str = ""
    time_utc: str | None = None  # hh:mm:ss(.ss)
    date: str | None = None  # YYYY-MM-DD
    speed_knots: float | None = None
    course_deg: float | None = None
    altitude_m: float | None = None
    satellites: int | None = None
    hdop: float | None = None
    quality: int | None = None

    type: ClassVar[str] = "position"
