"""Mettler Toledo continuous-output driver (truck or livestock scale terminals over serial).

The terminal streams 17- or 18-byte frames (:mod:`protocols.toledo`) on every display update,
with a motion bit, so a settle is the first frame without motion (the device's flag); the
weighing pipeline is the XK3190 driver's (:class:`edge.drivers._weighing.WeighingPipeline`):
``weight`` readings at most every ``weight_interval_s``, a ``weigh_event`` per settle and
``weigh_ticket`` readings for trucks identified through :meth:`ToledoDriver.set_truck` (the
gateway wires an RFID gate reader to it in a later change; until then weighs carry
``truck_id=None`` and end as ``unmatched``). A frame with the out-of-range bit is reported
in the ``weight`` reading (``overload``) but never settles. Frames carry no time: ``ts_ms``
is the receive time.

Port settings: Toledo terminals usually run 7E1. Set ``bytesize = 7`` and ``parity = "E"``
in the device's port settings of the site config; a port left at 8N1 still works because the
decoder masks the parity bit off every byte.

Options (``[device.options]``; defaults in brackets):

``checksum`` ["auto"]
    ``"auto"`` (decided from the first frames), ``true`` (18-byte frames) or ``false``.
``dummy_zeros_sent`` [false]
    the six digits already include the dummy zeros of decimal codes 0 and 1.
``n_equal`` [5], ``tolerance_kg`` [20.0]
    plateau rule for frames without a usable motion bit (``use_device_flag = false``).
``use_device_flag`` [true]
    settle on the terminal's motion bit.
``min_weight_kg`` [500.0], ``truck_id_source`` ["gate"], ``pair_timeout_s`` [86400],
``ident_lead_s`` [300], ``weight_interval_s`` [10.0]
    as for the XK3190 driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from edge.drivers._weighing import WeighbridgeMixin, WeighingPipeline
from edge.drivers.base import StreamDriver
from protocols import toledo
from protocols._base import Message, StreamDecoder
from protocols.uplink import Reading

__all__ = ["ToledoDriver"]


class ToledoDriver(WeighbridgeMixin, StreamDriver):
    kind: ClassVar[str] = "toledo"

    def __init__(self, *, device_id: str, checksum: bool | Literal["auto"] = "auto",
                 dummy_zeros_sent: bool = False, use_device_flag: bool = True,
                 silence_timeout_s: float = 30.0, **pipeline: Any) -> None:
        super().__init__(device_id=device_id, silence_timeout_s=silence_timeout_s)
        if checksum not in (True, False, "auto"):
            raise ValueError(f"checksum must be true, false or \"auto\", got {checksum!r}")
        self.checksum: bool | Literal["auto"] = checksum
        self.dummy_zeros_sent = dummy_zeros_sent
        self.pipeline = WeighingPipeline(device_id=device_id, use_device_flag=use_device_flag,
                                         **pipeline)
        self.decoder: toledo.Decoder | None = None

    def make_decoder(self) -> StreamDecoder:
        # a fresh decoder per connection: in auto mode it re-detects the checksum setting,
        # which an operator may have changed while the link was down
        self.decoder = toledo.Decoder(self.checksum, dummy_zeros_sent=self.dummy_zeros_sent)
        return self.decoder

    def on_messages(self, msgs: Sequence[Message], recv_ms: int) -> list[Reading]:
        return self.weights(msgs, recv_ms)
