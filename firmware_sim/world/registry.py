"""What the bank and the cloud know about a simulated world before any device speaks: banks,
borrowers, loans, sites with their geofences, gateways, devices, pledged animals and lots,
release orders, daily prices and the known trucks. The sim runner loads this into the cloud
(admin service and CSV importers); tests read it to know what to expect.

All records are frozen. Ids follow :mod:`firmware_sim.world.layout`.

The cloud keeps one registry per bank (tenancy), so records carry the ``bank`` that knows
them: a site appears once per bank that lends against it (twice for a double pledge by
another bank), its gateway and devices under the bank of the site's first loan, pledged
animals and lots under their loan's bank, and every price once per bank.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

from firmware_sim.world.scenario import LoanSpec

__all__ = [
    "AnimalRecord", "BankRecord", "BorrowerRecord", "DeviceRecord", "GatewayRecord",
    "LotRecord", "PriceRecord", "ReleaseOrderRecord", "SiteRecord", "TruckRecord",
    "WorldRegistry",
]

DeviceRole = Literal["reader", "animal_scale", "feeder", "weighbridge", "truck_reader", "gps"]
ReaderPlace = Literal["water", "bunk", "gate", "scale"]


@dataclasses.dataclass(frozen=True, slots=True)
class BankRecord:
    code: str
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class BorrowerRecord:
    code: str
    name: str
    bank: str


@dataclasses.dataclass(frozen=True, slots=True)
class SiteRecord:
    code: str
    kind: Literal["ranch", "warehouse"]
    name: str
    lat: float
    lon: float
    geofence: tuple[tuple[float, float], ...]  # (lat, lon) vertices, open ring
    utc_offset_h: int  # local solar time used for feedings and working hours
    bank: str


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayRecord:
    gateway_id: str
    site: str
    bank: str


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One device. ``protocol`` is what it speaks on the wire (``r2000``, ``thingmagic``,
    ``llrp``, ``chafon``, ``toledo``, ``xk3190``, ``digistar``, ``modbus``, ``nmea``).
    Readers have a ``place`` and the ``pens`` they watch; GPS trackers say what they are
    ``attached_to`` (``truck:<truck id>``, ``forklift``, ``staff``)."""

    device_id: str
    site: str
    bank: str
    role: DeviceRole
    protocol: str
    place: ReaderPlace | None = None
    pens: tuple[str, ...] = ()
    antennas: int = 0
    attached_to: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AnimalRecord:
    """A pledged animal. ``epc`` is the identity EPC as the edge emits it (hex, upper case,
    motion counter bytes zeroed); ``tag`` says which kind of ear tag it wears."""

    epc: str
    iso11784: str | None
    loan: str
    site: str
    breed: str
    sex: Literal["M", "F"]
    birth_ms: int
    entry_weight_kg: float
    pen: str
    tag: Literal["motion", "iso", "plain"]
    number: int  # position in the ranch (the ``animals = [...]`` numbers of incidents)
    bank: str


@dataclasses.dataclass(frozen=True, slots=True)
class LotRecord:
    code: str
    loan: str
    site: str
    sku: str
    commodity: str
    zone: str
    quantity_kg: float  # pledged at the initial stock-take
    bank: str


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseOrderRecord:
    site: str
    truck_id: str
    lot: str
    quantity_kg: float
    valid_from_ms: int
    valid_to_ms: int
    reference: str
    bank: str


@dataclasses.dataclass(frozen=True, slots=True)
class PriceRecord:
    date: dt.date  # UTC day the price is valid for
    commodity: str
    unit: Literal["kg", "t"]
    currency: str
    price: float  # per unit, rounded to 4 decimals (the cloud stores 4)
    bank: str


@dataclasses.dataclass(frozen=True, slots=True)
class TruckRecord:
    """A known truck. ``truck_id`` is its windscreen tag's EPC as the bridge reader reads it
    (what ``TruckWeighing.truck_id`` carries); ``plate`` is for people."""

    truck_id: str
    site: str
    plate: str
    tare_kg: float  # true tare
    tracker: str | None  # device id of its GPS tracker


@dataclasses.dataclass(frozen=True, slots=True)
class WorldRegistry:
    banks: tuple[BankRecord, ...]
    borrowers: tuple[BorrowerRecord, ...]
    loans: tuple[LoanSpec, ...]  # outstanding resolved (never None here)
    sites: tuple[SiteRecord, ...]
    gateways: tuple[GatewayRecord, ...]
    devices: tuple[DeviceRecord, ...]
    animals: tuple[AnimalRecord, ...]  # a double-pledged animal appears once per loan
    lots: tuple[LotRecord, ...]  # likewise
    release_orders: tuple[ReleaseOrderRecord, ...]
    prices: tuple[PriceRecord, ...]
    trucks: tuple[TruckRecord, ...]

    def site(self, code: str, bank: str | None = None) -> SiteRecord:
        """The site's record (for ``bank``; default: the bank owning its gateway)."""
        for s in self.sites:
            if s.code == code and (bank is None or s.bank == bank):
                return s
        raise KeyError(code)

    def loan(self, code: str) -> LoanSpec:
        for ln in self.loans:
            if ln.id == code:
                return ln
        raise KeyError(code)

    def devices_at(self, site: str, role: str | None = None) -> list[DeviceRecord]:
        return [d for d in self.devices if d.site == site and (role is None or d.role == role)]

    def gateway_of(self, site: str) -> str:
        for g in self.gateways:
            if g.site == site:
                return g.gateway_id
        raise KeyError(site)

    def loans_of_site(self, site: str) -> list[str]:
        return [ln.id for ln in self.loans if site in ln.sites]
