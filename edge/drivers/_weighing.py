"""The weighing pipeline shared by the weighbridge drivers (XK3190, Toledo, MT-SICS) and the
weight thinning also used by the Digi-Star and Modbus drivers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Self, cast

from edge.aggregate import StableWeightDetector, WeighTicketPairer
from protocols._base import Message
from protocols.messages import Weight
from protocols.uplink import Reading

__all__ = [
    "DEFAULT_WEIGHT_INTERVAL_S",
    "TRUCK_ID_SOURCES",
    "WeighbridgeMixin",
    "WeighingPipeline",
    "WeightThinner",
]

DEFAULT_WEIGHT_INTERVAL_S: Final = 10.0
TRUCK_ID_SOURCES: Final = ("gate", "none")


class WeightThinner:
    """At most one ``weight`` reading per ``interval_ms`` of receive time (0: every one).
    Pure: times are passed in. Counters: ``kept``, ``thinned``."""

    def __init__(self, *, device_id: str, interval_ms: int) -> None:
        if interval_ms < 0:
            raise ValueError(f"weight interval must be >= 0, got {interval_ms}")
        self.device_id = device_id
        self.interval_ms = interval_ms
        self._last_ms: int | None = None
        self.kept = 0
        self.thinned = 0

    def feed(self, ts_ms: int, recv_ms: int, weight: Weight) -> Reading | None:
        if self._last_ms is not None and recv_ms - self._last_ms < self.interval_ms:
            self.thinned += 1
            return None
        self._last_ms = recv_ms
        self.kept += 1
        data: dict[str, Any] = {"weight_kg": weight.weight_kg, "stable": weight.stable}
        if weight.mode is not None:
            data["mode"] = weight.mode
        if weight.overload:
            data["overload"] = True
        return Reading("weight", self.device_id, ts_ms, recv_ms, data)


class WeighingPipeline:
    """Weight messages -> thinned ``weight`` readings, ``weigh_event`` per settle
    (:class:`StableWeightDetector`) and, with ``truck_id_source="gate"``, ``weigh_ticket``
    readings (:class:`WeighTicketPairer`). Shared by the XK3190, Toledo and MT-SICS drivers.
    Pure: no clock, no I/O."""

    def __init__(self, *, device_id: str, n_equal: int = 5, tolerance_kg: float = 20.0,
                 min_weight_kg: float = 500.0, use_device_flag: bool = True,
                 truck_id_source: str = "gate", pair_timeout_s: float = 86_400.0,
                 ident_lead_s: float = 300.0,
                 weight_interval_s: float = DEFAULT_WEIGHT_INTERVAL_S) -> None:
        if truck_id_source not in TRUCK_ID_SOURCES:
            raise ValueError(f"truck_id_source must be one of {TRUCK_ID_SOURCES}, "
                             f"got {truck_id_source!r}")
        if not weight_interval_s >= 0:
            raise ValueError(f"weight_interval_s must be >= 0, got {weight_interval_s!r}")
        self.detector = StableWeightDetector(device_id=device_id, n_equal=n_equal,
                                             tolerance_kg=tolerance_kg,
                                             min_weight_kg=min_weight_kg,
                                             use_device_flag=use_device_flag)
        self.pairer: WeighTicketPairer | None = None
        if truck_id_source == "gate":
            self.pairer = WeighTicketPairer(device_id=device_id,
                                            pair_timeout_ms=round(pair_timeout_s * 1000),
                                            ident_lead_ms=round(ident_lead_s * 1000))
        self.thinner = WeightThinner(device_id=device_id,
                                     interval_ms=round(weight_interval_s * 1000))

    def set_truck(self, truck_id: str, ts_ms: int) -> None:
        """A truck was identified at the weighbridge at ``ts_ms``; ignored without pairing."""
        if self.pairer is not None:
            self.pairer.set_truck(truck_id, ts_ms)

    def feed(self, ts_ms: int, recv_ms: int, weight: Weight) -> list[Reading]:
        out: list[Reading] = []
        shown = self.thinner.feed(ts_ms, recv_ms, weight)
        if shown is not None:
            out.append(shown)
        event = self.detector.feed(ts_ms, weight, recv_ms=recv_ms)
        if event is not None:
            out += self.pairer.feed(event) if self.pairer is not None else [event]
        return out

    def flush(self, now_ms: int) -> list[Reading]:
        """``unmatched`` events of trucks that did not come back in time."""
        return self.pairer.flush(now_ms) if self.pairer is not None else []


class WeighbridgeMixin:
    """What the weighbridge drivers share: construction from site options, truck
    identification, and Weight messages through the :class:`WeighingPipeline`."""

    pipeline: WeighingPipeline

    @classmethod
    def from_options(cls, *, device_id: str, silence_timeout_s: float,
                     options: dict[str, Any]) -> Self:
        make = cast("Callable[..., Self]", cls)  # the driver class's own keyword arguments
        return make(device_id=device_id, silence_timeout_s=silence_timeout_s, **options)

    def set_truck(self, truck_id: str, ts_ms: int) -> None:
        """A truck was identified at the weighbridge (RFID gate reader, plate camera) at
        ``ts_ms``; the gateway calls this for the device's ``truck_reader``."""
        self.pipeline.set_truck(truck_id, ts_ms)

    def weights(self, msgs: Sequence[Message], recv_ms: int) -> list[Reading]:
        out: list[Reading] = []
        for m in msgs:
            if isinstance(m, Weight):
                out += self.pipeline.feed(recv_ms, recv_ms, m)
        return out

    def flush(self, now_ms: int, *, final: bool = False) -> list[Reading]:
        return self.pipeline.flush(now_ms)
