"""MT-SICS scale driver (Mettler Toledo balances and IND terminals in SICS mode, serial).

A SICS port is silent until asked, so the driver polls: every ``poll_interval_s`` it sends
``SI`` (the weight now, stable or dynamic) and waits for the reply (:mod:`protocols.mtsics`).
``S S``/``S D`` weights go through the weighing pipeline of the XK3190 driver
(:class:`edge.drivers._weighing.WeighingPipeline`): ``weight`` readings at most every
``weight_interval_s``, a ``weigh_event`` per settle (the scale's own S/D stability flag), and
tickets only when ``truck_id_source = "gate"`` (default ``"none"``: a SICS scale is usually a
livestock, platform or bench scale, where weighs are not paired).

Conditions instead of a weight are counted in :attr:`MtSicsDriver.status_counts` (``busy``,
``overload``, ``underload``, ``error``). The transition *into* overload emits one ``alarm``
reading (priority lane) with ``alarm = "scale_overload"``, the transition into underload one
with ``"scale_underload"``; staying overloaded poll after poll emits nothing more, and the
next weight reply ends the condition. Replies carry no time: ``ts_ms`` is the receive time.

Options (``[device.options]``; defaults in brackets):

``poll_interval_s`` [0.5], ``reply_timeout_s`` [1.0]
    how often ``SI`` is sent and how long a reply may take.
``n_equal`` [5], ``tolerance_kg`` [20.0], ``use_device_flag`` [true]
    settle on the scale's stability flag, or on ``n_equal`` readings within ``tolerance_kg``.
``min_weight_kg`` [500.0]
    below this the platform counts as empty.
``truck_id_source`` ["none"], ``pair_timeout_s`` [86400], ``ident_lead_s`` [300],
``weight_interval_s`` [10.0]
    as for the XK3190 driver.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from edge.coordinator import Session
from edge.drivers._weighing import WeighbridgeMixin, WeighingPipeline
from edge.drivers.base import PollDriver
from protocols import mtsics
from protocols._base import StreamDecoder
from protocols.messages import ScaleStatus, Weight
from protocols.uplink import Reading

__all__ = ["ALARMS", "MtSicsDriver"]

#: scale condition -> alarm raised on the transition into it
ALARMS: Final = {"overload": "scale_overload", "underload": "scale_underload"}


class MtSicsDriver(WeighbridgeMixin, PollDriver):
    kind: ClassVar[str] = "mtsics"

    def __init__(self, *, device_id: str, poll_interval_s: float = 0.5,
                 reply_timeout_s: float = 1.0, silence_timeout_s: float = 30.0,
                 use_device_flag: bool = True, truck_id_source: str = "none",
                 **pipeline: Any) -> None:
        super().__init__(device_id=device_id, silence_timeout_s=silence_timeout_s,
                         poll_interval_s=poll_interval_s, reply_timeout_s=reply_timeout_s)
        self.pipeline = WeighingPipeline(device_id=device_id, use_device_flag=use_device_flag,
                                         truck_id_source=truck_id_source, **pipeline)
        self.condition: str | None = None  # overload / underload while it lasts
        self.status_counts: dict[str, int] = {}
        self.alarms = 0

    def make_decoder(self) -> StreamDecoder:
        return mtsics.Decoder()

    def on_reply(self, reply: Weight | ScaleStatus, recv_ms: int) -> list[Reading]:
        """Readings for one reply to ``SI`` (pure apart from the driver's own state)."""
        if isinstance(reply, Weight):
            self.condition = None
            return self.pipeline.feed(recv_ms, recv_ms, reply)
        status = reply.status
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        if status not in ALARMS:
            return []  # busy, error: counted; the condition in force does not change
        if status == self.condition:
            return []
        self.condition = status
        self.alarms += 1
        return [Reading("alarm", self.device_id, recv_ms, recv_ms,
                        {"alarm": ALARMS[status], "detail": reply.detail,
                         "command": reply.command})]

    async def poll(self, session: Session) -> None:
        msgs = await self.exchange(session, mtsics.encode_weigh(immediate=True),
                                   until=(Weight, ScaleStatus))
        recv_ms = session.clock_ms()
        out: list[Reading] = []
        for m in msgs:
            if isinstance(m, Weight | ScaleStatus):
                out += self.on_reply(m, recv_ms)
        await session.emit(out)
