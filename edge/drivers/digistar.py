"""Digi-Star EZ indicator driver (TMR feed-mixer wagon scale, continuous SCOREM output).

The indicator streams its weight in one of the SCOREM output formats (:mod:`protocols.digistar`:
display frames with a motion flag, CSV records, serial gross, multi-scale). The driver turns
the weight stream into ``feed_event`` readings with :class:`edge.aggregate.TmrEventDetector`:
``load`` when the wagon settles at a level more than ``threshold_kg`` above the previous one,
``unload`` when below, with ``kg`` the difference between the two settled levels. An unload is
attributed to the pen set by :meth:`DigiStarDriver.set_pen` for most of the movement (later an
RFID tag at the bunk tells the gateway which pen the wagon is at; until that is wired the pen
is ``None``). A ``weight`` reading of the live display goes out at most every
``weight_interval_s``. Display frames carry no time and the CSV record's own date is not
trusted (its month codes are undocumented), so ``ts_ms`` is the receive time.

Multi-scale frames (SCOREM 37-39) carry up to three platforms; only ``scale`` is used.

Options (``[device.options]``; defaults in brackets):

``unit`` ["lb"]
    unit of the display frames (SCOREM 1/6/21/26/31/36 send none; the other formats name
    theirs): ``"lb"`` or ``"kg"``.
``mode`` ["auto"]
    SCOREM number or frame family (``display``, ``csv``, ``serial_gross``, ``multi_scale``);
    ``"auto"`` accepts any.
``decimals`` [none]
    decimal places of a display that shows them (needed to read a motion ``-`` in the
    decimal point's place).
``scale`` ["A"]
    the platform of a multi-scale indicator that is the mixer.
``threshold_kg`` [20.0], ``tolerance_kg`` [5.0], ``min_plateau_s`` [2.0], ``min_readings`` [2]
    a plateau is ``min_readings`` readings within ``tolerance_kg`` lasting ``min_plateau_s``;
    a change of more than ``threshold_kg`` between plateaus is an event.
``weight_interval_s`` [10.0]
    at most one ``weight`` reading per interval (0: every frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from edge.aggregate import TmrEventDetector
from edge.drivers._weighing import DEFAULT_WEIGHT_INTERVAL_S, WeightThinner
from edge.drivers.base import StreamDriver
from protocols import digistar
from protocols._base import Message, StreamDecoder
from protocols.messages import ScaleStatus, Weight
from protocols.uplink import Reading

__all__ = ["DigiStarDriver"]

_SCALES = ("A", "B", "C")


class DigiStarDriver(StreamDriver):
    kind: ClassVar[str] = "digistar"

    def __init__(self, *, device_id: str, unit: Literal["lb", "kg"] = "lb",
                 mode: str | int = "auto", decimals: int | None = None, scale: str = "A",
                 threshold_kg: float = 20.0, tolerance_kg: float = 5.0,
                 min_plateau_s: float = 2.0, min_readings: int = 2,
                 weight_interval_s: float = DEFAULT_WEIGHT_INTERVAL_S,
                 silence_timeout_s: float = 30.0) -> None:
        super().__init__(device_id=device_id, silence_timeout_s=silence_timeout_s)
        if unit not in ("lb", "kg"):
            raise ValueError(f"unit must be \"lb\" or \"kg\", got {unit!r}")
        if scale not in _SCALES:
            raise ValueError(f"scale must be one of {_SCALES}, got {scale!r}")
        digistar.family_of(mode)  # ValueError for an unknown mode
        if decimals is not None and not 0 <= decimals <= 4:
            raise ValueError(f"decimals must be 0..4, got {decimals}")
        if not weight_interval_s >= 0:
            raise ValueError(f"weight_interval_s must be >= 0, got {weight_interval_s!r}")
        self.unit: Literal["lb", "kg"] = unit
        self.mode = mode
        self.decimals = decimals
        self.scale = scale
        self.detector = TmrEventDetector(device_id=device_id, threshold_kg=threshold_kg,
                                         tolerance_kg=tolerance_kg,
                                         min_plateau_ms=round(min_plateau_s * 1000),
                                         min_readings=min_readings)
        self.thinner = WeightThinner(device_id=device_id,
                                     interval_ms=round(weight_interval_s * 1000))
        self.status_counts: dict[str, int] = {}

    @classmethod
    def from_options(cls, *, device_id: str, silence_timeout_s: float,
                     options: dict[str, Any]) -> DigiStarDriver:
        return cls(device_id=device_id, silence_timeout_s=silence_timeout_s, **options)

    def set_pen(self, pen: str | None, ts_ms: int) -> None:
        """From ``ts_ms`` on the wagon unloads into ``pen`` (``None``: unknown)."""
        self.detector.set_pen(pen, ts_ms)

    def make_decoder(self) -> StreamDecoder:
        return digistar.Decoder(mode=self.mode, unit=self.unit, decimals=self.decimals)

    def _ours(self, w: Weight) -> bool:
        """Multi-scale entries name their platform (``"B"``, ``"A*"`` when selected); other
        frames use ``scale`` for notes (``locked``, ``tr``) and are the mixer's."""
        name = (w.scale or "").rstrip("*")
        return name not in _SCALES or name == self.scale

    def on_messages(self, msgs: Sequence[Message], recv_ms: int) -> list[Reading]:
        out: list[Reading] = []
        for m in msgs:
            if isinstance(m, Weight):
                if not self._ours(m):
                    continue
                shown = self.thinner.feed(recv_ms, recv_ms, m)
                if shown is not None:
                    out.append(shown)
                event = self.detector.feed(recv_ms, m.weight_kg, m.stable, recv_ms=recv_ms)
                if event is not None:
                    out.append(event)
            elif isinstance(m, ScaleStatus) and m.detail.split(":")[0].rstrip("*") in (
                    self.scale, ""):
                self.status_counts[m.status] = self.status_counts.get(m.status, 0) + 1
        return out
