"""What the simulated world emits: one record per thing a physical device would report, in
event-time order. The runner (``pledgewatch.simrun``) turns each record into the bytes the
device speaks (R2000 tag frames, XK3190 weights, NMEA sentences, Digi-Star feed lines ...),
pushes them through the same ``protocols`` decoders and ``edge`` aggregators the gateway uses,
and from there into a real outbox and the cloud.

Every record carries ``ts_ms`` (simulated UTC milliseconds), ``site`` (site code) and
``device`` (device id, unique within the site). Records are frozen and slotted: a 7-day,
1,000-animal world emits a few hundred thousand of them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = [
    "AnimalWeighing", "DeviceState", "FeedDelivery", "GatewayState", "Observation", "PositionFix",
    "TagRead", "TruckWeighing",
]


@dataclasses.dataclass(frozen=True, slots=True)
class TagRead:
    """One UHF read of an ear tag or truck tag by a reader antenna. ``epc`` is the hex EPC
    exactly as the tag answers (motion tags carry their counter in it, see
    ``edge.aggregate``; ISO 11784 tags use ``protocols.iso11784.to_epc``)."""

    ts_ms: int
    site: str
    device: str
    epc: str
    antenna: int
    rssi_dbm: int


@dataclasses.dataclass(frozen=True, slots=True)
class AnimalWeighing:
    """A walk-over or chute scale settled on one animal, identified by the scale's own tag
    reader. ``weight_kg`` is what the scale showed (outliers included: 0, half, double)."""

    ts_ms: int
    site: str
    device: str
    epc: str
    weight_kg: float


@dataclasses.dataclass(frozen=True, slots=True)
class FeedDelivery:
    """A TMR mixer's load-out into a pen's bunk: ``kg`` as fed (the indicator's drop)."""

    ts_ms: int
    site: str
    device: str
    pen: str
    kg: float


@dataclasses.dataclass(frozen=True, slots=True)
class TruckWeighing:
    """A truck on the weighbridge: ``phase`` ``in`` (arrival) or ``out`` (departure), the
    stable weight the indicator showed, and the truck's RFID/plate id read at the bridge."""

    ts_ms: int
    site: str
    device: str
    truck_id: str
    phase: Literal["in", "out"]
    weight_kg: float


@dataclasses.dataclass(frozen=True, slots=True)
class PositionFix:
    """A GPS fix from a tracker (truck, forklift, staff): NMEA RMC/GGA on the wire."""

    ts_ms: int
    site: str
    device: str
    lat: float
    lon: float


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceState:
    """A device's link went down (``online=False``: it stops talking) or came back."""

    ts_ms: int
    site: str
    device: str
    online: bool
    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayState:
    """The site gateway's situation changes. ``network``: uploads fail (``up=False``) or work
    again; readings keep going into its outbox. ``crash``: the gateway process dies
    (``up=False``; devices are not read, nothing unacknowledged is kept) and restarts
    (``up=True``)."""

    ts_ms: int
    site: str
    device: str  # the gateway id
    what: Literal["network", "crash"]
    up: bool


Observation = (TagRead | AnimalWeighing | FeedDelivery | TruckWeighing | PositionFix
               | DeviceState | GatewayState)
