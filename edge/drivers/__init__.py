"""Device drivers: one per device kind, each a transport + a ``protocols`` codec.

``DRIVERS`` maps the ``kind`` of a ``[[device]]`` in the site config to "module:Class"; every
driver class has ``from_options(device_id=..., silence_timeout_s=..., options={...})``.
"""

from __future__ import annotations

import importlib
from typing import Any, Final

from edge.coordinator import Driver

__all__ = ["DRIVERS", "build_driver"]

DRIVERS: Final = {
    "r2000": "edge.drivers.r2000:R2000Driver",
    "thingmagic": "edge.drivers.thingmagic:ThingMagicDriver",
    "chafon": "edge.drivers.chafon:ChafonDriver",
    "llrp": "edge.drivers.llrp:LlrpDriver",
    "nmea": "edge.drivers.nmea:NmeaDriver",
    "xk3190": "edge.drivers.xk3190:Xk3190Driver",
    "toledo": "edge.drivers.toledo:ToledoDriver",
    "mtsics": "edge.drivers.mtsics:MtSicsDriver",
    "digistar": "edge.drivers.digistar:DigiStarDriver",
    "modbus": "edge.drivers.modbus:ModbusDriver",
}


def build_driver(kind: str, *, device_id: str, silence_timeout_s: float,
                 options: dict[str, Any]) -> Driver:
    """Instantiate the driver for ``kind``; ``ValueError``/``TypeError`` for bad options."""
    try:
        target = DRIVERS[kind]
    except KeyError:
        raise ValueError(f"no driver for device kind {kind!r}; known: {', '.join(DRIVERS)}"
                         ) from None
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    driver: Driver = cls.from_options(device_id=device_id, silence_timeout_s=silence_timeout_s,
                                      options=options)
    return driver
