"""XK3190-A9 weighbridge indicator driver (continuous output over serial).

The indicator streams what its display shows, 10 or more frames a second, with no stability
flag and no unit. The driver decodes the frames (:mod:`protocols.xk3190`), finds the stable
plateaus itself (``n_equal`` readings within ``tolerance_kg``, :class:`WeighingPipeline`) and
emits:

* ``weigh_event`` per settle of a truck on the platform (``event="weigh"``), repeated by the
  ticket pairer with the truck's ID, and ``event="unmatched"`` for a weigh that found no
  partner (see :class:`edge.aggregate.WeighTicketPairer`);
* ``weigh_ticket`` when a truck's weighs of two visits pair up (gross, tare, net, direction);
* ``weight`` at most every ``weight_interval_s`` (the live display, for dashboards).

The frames carry no time, so every reading's ``ts_ms`` is its receive time.

**Truck IDs.** The indicator knows nothing about trucks. With ``truck_id_source = "gate"``
(the default) the driver pairs weighs by the truck IDs given to :meth:`Xk3190Driver.set_truck`
(an RFID gate reader or a plate camera seeing the truck at the weighbridge, at ``ts_ms``).
The gateway wires an RFID gate reader to ``set_truck`` in a later change; until then every
weigh carries ``truck_id=None`` and ends as ``unmatched`` with reason ``no_truck_id`` (no
tickets: two weighs cannot be paired safely without knowing whose they are, because trucks
interleave on a busy site). ``truck_id_source = "none"`` (a scale with no identification
at all) skips pairing: only the ``weigh`` events are sent.

Options (``[device.options]`` in the site config; defaults in brackets):

``unit`` ["kg"]
    what the indicator displays (the frames carry none): ``kg``, ``t``, ``lb``, ``g``.
``reversed_digits`` [false]
    ``=`` frames sent least significant digit first (tF = 1 on some indicators).
``n_equal`` [5], ``tolerance_kg`` [20.0]
    a settle is ``n_equal`` consecutive readings within ``tolerance_kg`` (one division).
``min_weight_kg`` [500.0]
    below this the platform counts as empty (a visit ends).
``truck_id_source`` ["gate"]
    ``"gate"`` or ``"none"``, see above.
``pair_timeout_s`` [86400]
    a truck's first weigh waits this long for its second one, then goes out as unmatched.
``ident_lead_s`` [300]
    a gate identification counts for a visit that starts up to this long after it.
``weight_interval_s`` [10.0]
    at most one ``weight`` reading per interval (0: every frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final

from edge.aggregate import StableWeightDetector, WeighTicketPairer
from edge.drivers.base import StreamDriver
from protocols import xk3190
from protocols._base import Message, StreamDecoder
from protocols.messages import Weight
from protocols.uplink import Reading

__all__ = [
    "DEFAULT_WEIGHT_INTERVAL_S",
    "TRUCK_ID_SOURCES",
    "WeighingPipeline",
    "WeightThinner",
    "Xk3190Driver",
    "pipeline_options",
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


def pipeline_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Pop the :class:`WeighingPipeline` keyword arguments out of a driver's options."""
    keys = ("n_equal", "tolerance_kg", "min_weight_kg", "truck_id_source", "pair_timeout_s",
            "ident_lead_s", "weight_interval_s")
    return {k: opts.pop(k) for k in keys if k in opts}


class Xk3190Driver(StreamDriver):
    kind: ClassVar[str] = "xk3190"

    def __init__(self, *, device_id: str, unit: str = "kg", reversed_digits: bool = False,
                 silence_timeout_s: float = 30.0, **pipeline: Any) -> None:
        super().__init__(device_id=device_id, silence_timeout_s=silence_timeout_s)
        if unit not in ("kg", "t", "lb", "g"):
            raise ValueError(f"unit must be kg, t, lb or g, got {unit!r}")
        self.unit = unit
        self.reversed_digits = reversed_digits
        # the indicator sends no stability flag: only n_equal finds plateaus
        self.pipeline = WeighingPipeline(device_id=device_id, use_device_flag=False,
                                         **pipeline)

    @classmethod
    def from_options(cls, *, device_id: str, silence_timeout_s: float,
                     options: dict[str, Any]) -> Xk3190Driver:
        opts = dict(options)
        pipe = pipeline_options(opts)
        return cls(device_id=device_id, silence_timeout_s=silence_timeout_s, **opts, **pipe)

    def set_truck(self, truck_id: str, ts_ms: int) -> None:
        """A truck was identified at the weighbridge (RFID gate reader, plate camera) at
        ``ts_ms``. The gateway wires a gate reader to this in a later change."""
        self.pipeline.set_truck(truck_id, ts_ms)

    def make_decoder(self) -> StreamDecoder:
        return xk3190.Decoder(self.unit, reversed_digits=self.reversed_digits)

    def on_messages(self, msgs: Sequence[Message], recv_ms: int) -> list[Reading]:
        out: list[Reading] = []
        for m in msgs:
            if isinstance(m, Weight):
                out += self.pipeline.feed(recv_ms, recv_ms, m)
        return out

    def flush(self, now_ms: int, *, final: bool = False) -> list[Reading]:
        return self.pipeline.flush(now_ms)
