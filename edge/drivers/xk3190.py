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
from typing import Any, ClassVar

from edge.drivers._weighing import WeighbridgeMixin, WeighingPipeline
from edge.drivers.base import StreamDriver
from protocols import xk3190
from protocols._base import Message, StreamDecoder
from protocols.uplink import Reading

__all__ = ["Xk3190Driver"]

class Xk3190Driver(WeighbridgeMixin, StreamDriver):
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

    def make_decoder(self) -> StreamDecoder:
        return xk3190.Decoder(self.unit, reversed_digits=self.reversed_digits)

    def on_messages(self, msgs: Sequence[Message], recv_ms: int) -> list[Reading]:
        return self.weights(msgs, recv_ms)
