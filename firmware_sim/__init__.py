"""Simulated devices (device role of the ``protocols`` codecs) and, later, the simulated world.

Only the CLI, tests and benchmarks import this package.
"""

from __future__ import annotations

import importlib
from typing import Final

from firmware_sim._device import (
    Clock,
    Faults,
    ManualClock,
    PtyLink,
    SentFrame,
    SimDevice,
    TcpLink,
    WallClock,
)

__all__ = [
    "DEVICE_KINDS",
    "Clock",
    "Faults",
    "ManualClock",
    "PtyLink",
    "SentFrame",
    "SimDevice",
    "TcpLink",
    "WallClock",
    "device_class",
]

# kind -> "module:Class", imported on demand so one broken simulator does not break the others
DEVICE_KINDS: Final = {
    "r2000": "firmware_sim.r2000_reader:R2000Reader",
    "thingmagic": "firmware_sim.thingmagic_reader:ThingMagicReader",
    "gps": "firmware_sim.gps_receiver:GpsReceiver",
    "xk3190": "firmware_sim.xk3190_weighbridge:Xk3190Weighbridge",
    "toledo": "firmware_sim.toledo_scale:ToledoScale",
    "digistar": "firmware_sim.digistar_indicator:DigiStarIndicator",
    "modbus": "firmware_sim.modbus_feeder:ModbusFeeder",
    "llrp": "firmware_sim.llrp_reader:LlrpReader",
    "chafon": "firmware_sim.chafon_reader:ChafonReader",
}


def device_class(kind: str) -> type[SimDevice]:
    """The simulator class for ``kind``; ``KeyError`` names the known kinds."""
    try:
        target = DEVICE_KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown device kind {kind!r}; known: {', '.join(DEVICE_KINDS)}") from None
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type) and issubclass(cls, SimDevice)
    return cls
