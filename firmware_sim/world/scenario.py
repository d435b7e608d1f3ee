"""Scenario files: the TOML that scripts a simulated world (docs/scenarios.md documents every
key, its default and meaning).

:func:`load_scenario` reads a file, :func:`scenario_from_dict` a dict (tests). Both check
every key and value and refuse anything unknown or out of range with a
:class:`ScenarioError` naming the file, the key path and the reason, e.g.
``s.toml: incident[2].count: must be a positive integer, got -1`` (array indices count from
0, as in ``scenario.incidents[2]``). All problems of a file are reported at once, one per line.

Times in the result are integer milliseconds since the epoch (UTC); durations milliseconds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from firmware_sim.world import layout

__all__ = [
    "COMMODITIES",
    "DEFAULT_START",
    "INCIDENT_KINDS",
    "IncidentSpec",
    "LoanSpec",
    "MarketSpec",
    "RanchSpec",
    "Scenario",
    "ScenarioError",
    "WarehouseSpec",
    "load_scenario",
    "parse_duration",
    "scenario_from_dict",
]

DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
MINUTE_MS: Final = 60_000
DEFAULT_START: Final = "2026-01-01T00:00:00Z"
MAX_DURATION_MS: Final = 366 * DAY_MS
MAX_ANIMALS: Final = 200_000
MAX_LOTS: Final = 10_000

# the cloud's code pattern (cloud.admin.service.CODE_PATTERN), so every id loads there
_CODE_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}\Z")
_DURATION_RE: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")
_CLOCK_RE: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)\Z")

# commodity -> (price unit, default start price in USD per unit, default lot size kg, SKU).
# The start prices are assumptions of the order of 2025 market quotes (live cattle about
# USD 5/kg, LME copper about USD 9,500/t, maize about USD 200/t); domain.md has no price
# figures, so set [market.price] for a scenario where the level matters.
COMMODITIES: Final[dict[str, tuple[str, float, float, str]]] = {
    "cattle_live": ("kg", 5.0, 0.0, "CATTLE"),
    "copper_cathode": ("t", 9500.0, 25_000.0, "CU-CATH-GRADE-A"),
    "aluminium_ingot": ("t", 2500.0, 25_000.0, "AL-INGOT-P1020"),
    "maize": ("t", 200.0, 50_000.0, "MAIZE-BAG-50KG"),
    "soybeans": ("t", 400.0, 50_000.0, "SOY-BAG-60KG"),
    "wheat": ("t", 230.0, 50_000.0, "WHEAT-BAG-50KG"),
}

INCIDENT_KINDS: Final = (
    "theft", "death", "tag_drop", "illness", "feed_shortage", "reader_offline",
    "network_outage", "gateway_crash", "outbound_without_release", "geofence_exit",
    "tare_fraud", "double_pledge", "price_change",
)
RANCH_KINDS: Final = frozenset({"theft", "death", "tag_drop", "illness", "feed_shortage"})
WAREHOUSE_KINDS: Final = frozenset({"outbound_without_release", "geofence_exit", "tare_fraud"})
ANIMAL_KINDS: Final = frozenset({"theft", "death", "tag_drop", "illness"})

# keys each incident kind accepts besides kind, site, at
_INCIDENT_KEYS: Final[dict[str, frozenset[str]]] = {
    "theft": frozenset({"count", "animals", "pen"}),
    "death": frozenset({"count", "animals", "pen", "near_reader"}),
    "tag_drop": frozenset({"count", "animals", "pen", "device"}),
    "illness": frozenset({"count", "animals", "pen", "prodrome", "recovery", "activity_drop"}),
    "feed_shortage": frozenset({"pen", "percent", "duration"}),
    "reader_offline": frozenset({"device", "duration"}),
    "network_outage": frozenset({"duration"}),
    "gateway_crash": frozenset({"duration"}),
    "outbound_without_release": frozenset({"truck", "lot", "quantity_kg"}),
    "geofence_exit": frozenset({"tracker", "duration", "distance_m"}),
    "tare_fraud": frozenset({"truck", "lot", "percent"}),
    "double_pledge": frozenset({"count", "bank", "loan", "borrower", "outstanding"}),
    "price_change": frozenset({"commodity", "percent"}),
}
_ALL_INCIDENT_KEYS: Final = frozenset().union(*_INCIDENT_KEYS.values())
_DEFAULT_COUNT: Final = {"theft": 5, "death": 1, "tag_drop": 1, "illness": 1}


class ScenarioError(ValueError):
    """A scenario that cannot be used. ``problems`` holds ``(key path, reason)`` pairs; the
    message is one ``FILE: key.path: reason`` line per problem."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}: {path}: {reason}"
                                   for path, reason in self.problems))


# -- specs -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class MarketSpec:
    currency: str = "USD"
    daily_volatility: float = 0.01  # sd of the daily log-return of every price
    prices: Mapping[str, float] = dataclasses.field(default_factory=dict)  # start prices

    def start_price(self, commodity: str) -> float:
        if commodity in self.prices:
            return self.prices[commodity]
        return COMMODITIES[commodity][1]


@dataclasses.dataclass(frozen=True, slots=True)
class RanchSpec:
    id: str
    name: str
    lat: float
    lon: float
    utc_offset_h: int
    animals: int
    pens: int
    readers: int
    antennas: int
    reader_protocol: str
    read_probability: float
    reads_per_pass: float
    water_visits_per_day: float
    bunk_visits_per_day: float
    scale: Literal["walkover", "chute", "none"]
    scale_fraction: float
    feeder: Literal["digistar", "modbus"]
    feedings_min: tuple[int, ...]  # local minutes after midnight
    tmr_dm_fraction: float
    dmi_fraction: float
    motion_fraction: float
    iso_fraction: float
    iso_country: int
    female_fraction: float
    breeds: tuple[str, ...]
    entry_weight_kg: float
    entry_weight_sd_kg: float
    age_months: tuple[float, float]
    activity_per_hour: float
    gate_reader: bool

    kind: Literal["ranch"] = "ranch"


@dataclasses.dataclass(frozen=True, slots=True)
class WarehouseSpec:
    id: str
    name: str
    lat: float
    lon: float
    utc_offset_h: int
    lots: int
    commodity: str
    lot_kg: float
    sku: str
    zones: int
    trucks: int
    truck_tare_kg: float
    payload_kg: float
    weighbridge: Literal["xk3190", "toledo"]
    truck_reader_protocol: str
    forklifts: int
    staff: int
    inbound_per_day: float
    releases_per_day: float
    working_hours_min: tuple[int, int]  # local minutes after midnight
    gps_interval_ms: int

    kind: Literal["warehouse"] = "warehouse"


@dataclasses.dataclass(frozen=True, slots=True)
class LoanSpec:
    id: str
    bank: str
    borrower: str
    sites: tuple[str, ...]
    outstanding: float | None  # None: 60 % of the collateral's true value at start
    currency: str
    ltv_line: float
    margin_call_line: float
    liquidation_line: float
    haircut: float
    borrower_name: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class IncidentSpec:
    """One scripted incident. ``index`` is its position in the file (from 0); only the fields
    of its kind are set (the others keep their ``None``/empty defaults)."""

    index: int
    kind: str
    site: str | None
    at_ms: int
    count: int | None = None
    animals: tuple[int, ...] = ()
    pen: str | None = None
    device: str | None = None
    duration_ms: int | None = None
    percent: float | None = None
    prodrome_ms: int | None = None
    recovery_ms: int | None = None
    activity_drop: float | None = None
    near_reader: bool | None = None
    truck: str | None = None
    lot: str | None = None
    quantity_kg: float | None = None
    tracker: str | None = None
    distance_m: float | None = None
    bank: str | None = None
    loan: str | None = None
    borrower: str | None = None
    outstanding: float | None = None
    commodity: str | None = None

    @property
    def id(self) -> str:
        """The incident id in truth.jsonl: ``inc-N``, N counted from 1 in file order."""
        return f"inc-{self.index + 1}"


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    start_ms: int
    duration_ms: int
    ranches: tuple[RanchSpec, ...]
    warehouses: tuple[WarehouseSpec, ...]
    loans: tuple[LoanSpec, ...]
    incidents: tuple[IncidentSpec, ...]
    banks: Mapping[str, str]  # code -> name
    market: MarketSpec
    name: str = ""
    description: str = ""
    source: str = "<dict>"

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.duration_ms

    @property
    def sites(self) -> tuple[RanchSpec | WarehouseSpec, ...]:
        return (*self.ranches, *self.warehouses)

    def site(self, code: str) -> RanchSpec | WarehouseSpec:
        for s in self.sites:
            if s.id == code:
                return s
        raise KeyError(code)


# -- value parsing ---------------------------------------------------------------------------
def parse_duration(value: object) -> int:
    """``"2d6h30m"``, ``"90s"``, ``"36h"`` or an integer number of seconds -> milliseconds.
    Raises ``ValueError`` with the reason."""
    if isinstance(value, bool):
        raise ValueError(f"must be a duration like '6h' or '2d12h', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value * 1000
    if isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if m and any(m.groups()):
            d, h, mi, s = (int(g) if g else 0 for g in m.groups())
            return ((d * 24 + h) * 60 + mi) * MINUTE_MS + s * 1000
    raise ValueError(f"must be a duration like '6h', '2d12h' or '90s', got {value!r}")


def _datetime_ms(value: object) -> int:
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"must be a date-time like '2026-01-01T00:00:00Z', got "
                             f"{value!r}") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("needs a UTC offset (e.g. 2026-01-01T00:00:00Z): a local time is "
                             "ambiguous")
        return int(value.timestamp() * 1000)
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day,
                               tzinfo=dt.UTC).timestamp() * 1000)
    raise ValueError(f"must be a date-time like 2026-01-01T00:00:00Z, got {value!r}")


_REQUIRED: Final = object()


class _Ctx:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[tuple[str, str]] = []

    def err(self, path: str, reason: str) -> None:
        self.problems.append((path, reason))


class _Table:
    """One TOML table being read: typed getters that record problems (and return the default
    so parsing goes on), and :meth:`finish` that reports the keys nobody asked for."""

    def __init__(self, ctx: _Ctx, data: object, path: str, *, allowed: frozenset[str] | None
                 = None) -> None:
        self.ctx = ctx
        self.path = path
        self.ok = isinstance(data, Mapping)
        if not self.ok:
            ctx.err(path, f"must be a table, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        self.used: set[str] = set()
        self.allowed = allowed

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def _raw(self, key: str, default: Any) -> tuple[bool, Any]:
        self.used.add(key)
        if key in self.data:
            return True, self.data[key]
        if default is _REQUIRED:
            self.ctx.err(self.key(key), "is required")
        return False, default

    def _bad(self, key: str, reason: str, default: Any) -> Any:
        self.ctx.err(self.key(key), reason)
        return None if default is _REQUIRED else default

    def get_int(self, key: str, default: Any, *, lo: int | None = None, hi: int | None = None,
            what: str = "an integer") -> Any:
        found, v = self._raw(key, default)
        if not found:
            return None if v is _REQUIRED else v
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (
                hi is not None and v > hi):
            return self._bad(key, f"must be {what}, got {v!r}", default)
        return v

    def get_float(self, key: str, default: Any, *, lo: float | None = None,
              hi: float | None = None, lo_open: bool = False, what: str = "a number") -> Any:
        found, v = self._raw(key, default)
        if not found:
            return None if v is _REQUIRED else v
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return self._bad(key, f"must be {what}, got {v!r}", default)
        f = float(v)
        if (lo is not None and (f <= lo if lo_open else f < lo)) or (hi is not None and f > hi):
            return self._bad(key, f"must be {what}, got {v!r}", default)
        return f

    def get_str(self, key: str, default: Any, *, pattern: re.Pattern[str] | None = None,
            choices: Sequence[str] | None = None, what: str = "a string") -> Any:
        found, v = self._raw(key, default)
        if not found:
            return None if v is _REQUIRED else v
        if not isinstance(v, str):
            return self._bad(key, f"must be {what}, got {v!r}", default)
        if choices is not None and v not in choices:
            return self._bad(key, f"must be one of {', '.join(map(repr, choices))}, got {v!r}",
                             default)
        if pattern is not None and not pattern.match(v):
            return self._bad(key, f"must be {what}, got {v!r}", default)
        return v

    def get_bool(self, key: str, default: Any) -> Any:
        found, v = self._raw(key, default)
        if found and not isinstance(v, bool):
            return self._bad(key, f"must be true or false, got {v!r}", default)
        return v

    def get_duration(self, key: str, default: Any) -> Any:
        """Milliseconds (> 0); ``None`` after a problem (parsing stops before it is used)."""
        found, v = self._raw(key, default)
        if not found:
            return None if v is _REQUIRED or v is None else parse_duration(v)
        try:
            ms = parse_duration(v)
        except ValueError as exc:
            return self._bad(key, str(exc), None)
        if ms <= 0:
            return self._bad(key, f"must be longer than 0, got {v!r}", None)
        return ms

    def get_list(self, key: str, default: Any, item: Callable[[object], object], what: str
             ) -> Any:
        found, v = self._raw(key, default)
        if not found:  # defaults go through ``item`` too
            return None if v is _REQUIRED or v is None else tuple(item(x) for x in v)
        if not isinstance(v, list):
            self.ctx.err(self.key(key), f"must be a list of {what}, got {v!r}")
            return None if default is _REQUIRED or default is None else tuple(
                item(x) for x in default)
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except ValueError as exc:
                self.ctx.err(f"{self.key(key)}[{i}]", str(exc))
        return tuple(out)

    def finish(self, *, elsewhere: frozenset[str] = frozenset(), what: str = "") -> None:
        """Report unknown keys; a key in ``elsewhere`` is known, just not ``what``'s."""
        known = self.allowed if self.allowed is not None else frozenset(self.used)
        for k in self.data:
            if k in elsewhere and k not in known:
                self.ctx.err(self.key(k), f"not a key of {what}")
            elif k not in known:
                close = difflib.get_close_matches(k, sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.ctx.err(self.key(k), f"unknown key{hint}")


def _clock(x: object) -> int:
    if isinstance(x, str):
        m = _CLOCK_RE.match(x.strip())
        if m:
            return int(m.group(1)) * 60 + int(m.group(2))
    raise ValueError(f"must be a local time 'HH:MM', got {x!r}")


def _nonempty_str(x: object) -> str:
    if isinstance(x, str) and x.strip():
        return x
    raise ValueError(f"must be a non-empty string, got {x!r}")


def _code(x: object) -> str:
    if isinstance(x, str) and _CODE_RE.match(x):
        return x
    raise ValueError(f"must be a code of 1-64 letters, digits or _.:-, got {x!r}")


def _nonneg_int(x: object) -> int:
    if isinstance(x, int) and not isinstance(x, bool) and x >= 0:
        return x
    raise ValueError(f"must be an animal number (0-based), got {x!r}")


_CODE_WHAT: Final = "a code of 1-64 letters, digits or _.:-"


# -- sections --------------------------------------------------------------------------------
def _market(ctx: _Ctx, data: object) -> MarketSpec:
    t = _Table(ctx, data, "market")
    currency = t.get_str("currency", "USD", pattern=_CURRENCY_RE,
                     what="3 capital letters (ISO 4217)")
    vol = t.get_float("daily_volatility", 0.01, lo=0.0, hi=0.5, what="a number in 0..0.5")
    prices: dict[str, float] = {}
    if t.has("price"):
        pt = _Table(ctx, t.data["price"], "market.price", allowed=frozenset())
        t.used.add("price")
        for k, v in pt.data.items():
            if not _CODE_RE.match(k):
                ctx.err(pt.key(k), f"commodity must be {_CODE_WHAT}")
            elif isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or not \
                    math.isfinite(v):
                ctx.err(pt.key(k), f"must be a price > 0, got {v!r}")
            else:
                prices[k] = float(v)
    t.finish()
    return MarketSpec(currency=currency, daily_volatility=vol, prices=prices)


def _utc_offset(t: _Table, lon: float) -> int:
    # local solar time, rounded to whole hours; feeding times and the circadian rhythm use it
    return int(t.get_int("utc_offset_hours", round(lon / 15.0), lo=-12, hi=14,
                     what="an integer number of hours in -12..14"))


def _ranch(ctx: _Ctx, data: object, path: str) -> RanchSpec | None:
    t = _Table(ctx, data, path)
    if not t.ok:
        return None
    sid = t.get_str("id", _REQUIRED, pattern=_CODE_RE, what=_CODE_WHAT)
    lat = t.get_float("lat", -15.60, lo=-89.0, hi=89.0, what="a latitude in -89..89")
    lon = t.get_float("lon", -56.10, lo=-180.0, hi=180.0, what="a longitude in -180..180")
    animals = t.get_int("animals", 100, lo=1, hi=MAX_ANIMALS,
                    what=f"a positive integer up to {MAX_ANIMALS}")
    pens = t.get_int("pens", max(1, math.ceil((animals or 1) / 100)), lo=1, hi=1000,
                 what="a positive integer up to 1000")
    readers = t.get_int("readers", 2 * (pens or 1), lo=1, hi=10_000,
                    what="a positive integer")
    motion = t.get_float("motion_fraction", 0.5, lo=0.0, hi=1.0, what="a fraction in 0..1")
    iso = t.get_float("iso_fraction", 0.3, lo=0.0, hi=1.0, what="a fraction in 0..1")
    if motion is not None and iso is not None and motion + iso > 1.0 + 1e-9:
        ctx.err(t.key("iso_fraction"), f"motion_fraction + iso_fraction must be <= 1, got "
                                       f"{motion} + {iso}")
    lo_age, hi_age = 10.0, 18.0
    ages = t.get_list("age_months", (lo_age, hi_age), _pos_float, "numbers")
    if ages is not None and (len(ages) != 2 or ages[0] > ages[1]):
        ctx.err(t.key("age_months"), f"must be [youngest, oldest] in months, got {ages!r}")
        ages = (lo_age, hi_age)
    feedings = t.get_list("feedings", ("06:30", "15:30"), _clock, "local times 'HH:MM'")
    if feedings is not None and (len(feedings) == 0 or len(feedings) > 6):
        ctx.err(t.key("feedings"), "must list 1 to 6 feeding times")
        feedings = (390, 930)
    spec = RanchSpec(
        id=sid or "?",
        name=t.get_str("name", f"Ranch {sid}", what="a string"),
        lat=lat, lon=lon,
        utc_offset_h=_utc_offset(t, lon if lon is not None else 0.0),
        animals=animals, pens=pens, readers=readers,
        antennas=t.get_int("antennas", 4, lo=1, hi=32, what="an integer in 1..32"),
        reader_protocol=t.get_str("reader_protocol", "r2000",
                              choices=("r2000", "thingmagic", "llrp", "chafon")),
        read_probability=t.get_float("read_probability", 0.97, lo=0.0, hi=1.0, lo_open=True,
                                 what="a probability in (0, 1]"),
        reads_per_pass=t.get_float("reads_per_pass", 2.5, lo=1.0, hi=100.0,
                               what="a mean number of reads in 1..100"),
        water_visits_per_day=t.get_float("water_visits_per_day", 16.0, lo=1.0, hi=96.0,
                                     what="a number in 1..96"),
        bunk_visits_per_day=t.get_float("bunk_visits_per_day", 8.0, lo=0.0, hi=96.0,
                                    what="a number in 0..96"),
        scale=t.get_str("scale", "walkover", choices=("walkover", "chute", "none")),
        scale_fraction=t.get_float("scale_fraction", 0.3, lo=0.0, hi=1.0,
                               what="a fraction in 0..1"),
        feeder=t.get_str("feeder", "digistar", choices=("digistar", "modbus")),
        feedings_min=feedings,
        tmr_dm_fraction=t.get_float("tmr_dm_fraction", 0.6, lo=0.1, hi=1.0,
                                what="a fraction in 0.1..1"),
        dmi_fraction=t.get_float("dmi_fraction", 0.025, lo=0.005, hi=0.06,
                             what="a fraction of body weight in 0.005..0.06"),
        motion_fraction=motion, iso_fraction=iso,
        iso_country=t.get_int("iso_country", 999, lo=0, hi=999, what="an integer in 0..999"),
        female_fraction=t.get_float("female_fraction", 0.3, lo=0.0, hi=1.0,
                                what="a fraction in 0..1"),
        breeds=t.get_list("breeds", ("Nellore", "Angus", "Brahman", "Hereford"), _nonempty_str,
                      "breed names") or ("Nellore",),
        entry_weight_kg=t.get_float("entry_weight_kg", 350.0, lo=50.0, hi=900.0,
                                what="a weight in 50..900 kg"),
        entry_weight_sd_kg=t.get_float("entry_weight_sd_kg", 40.0, lo=0.0, hi=300.0,
                                   what="a weight in 0..300 kg"),
        age_months=(float(ages[0]), float(ages[1])) if ages else (lo_age, hi_age),
        activity_per_hour=t.get_float("activity_per_hour", 300.0, lo=1.0, hi=5000.0,
                                  what="counts per hour in 1..5000"),
        gate_reader=t.get_bool("gate_reader", False),
    )
    t.finish()
    return spec


def _pos_float(x: object) -> float:
    if isinstance(x, int | float) and not isinstance(x, bool) and x > 0 and math.isfinite(x):
        return float(x)
    raise ValueError(f"must be a number > 0, got {x!r}")


def _warehouse(ctx: _Ctx, data: object, path: str, market: MarketSpec) -> WarehouseSpec | None:
    t = _Table(ctx, data, path)
    if not t.ok:
        return None
    sid = t.get_str("id", _REQUIRED, pattern=_CODE_RE, what=_CODE_WHAT)
    lat = t.get_float("lat", -12.80, lo=-89.0, hi=89.0, what="a latitude in -89..89")
    lon = t.get_float("lon", 28.21, lo=-180.0, hi=180.0, what="a longitude in -180..180")
    commodity = t.get_str("commodity", "copper_cathode", pattern=_CODE_RE, what=_CODE_WHAT)
    known = COMMODITIES.get(commodity or "")
    if commodity and commodity == "cattle_live":
        ctx.err(t.key("commodity"), "cattle_live is a ranch's commodity")
    elif commodity and known is None and commodity not in market.prices:
        ctx.err(t.key("commodity"), f"unknown commodity {commodity!r}: give its start price "
                                    f"in [market.price] or use one of "
                                    f"{', '.join(c for c in COMMODITIES if c != 'cattle_live')}")
    lot_default = known[2] if known else 25_000.0
    hours = t.get_list("working_hours", ("07:00", "18:00"), _clock, "local times 'HH:MM'")
    if hours is not None and (len(hours) != 2 or hours[1] - hours[0] < 120):
        ctx.err(t.key("working_hours"), "must be [open, close] at least 2 h apart, e.g. "
                                        "['07:00', '18:00']")
        hours = (420, 1080)
    gps = t.get_duration("gps_interval", "30s")
    if gps is not None and not 1000 <= gps <= 600_000:
        ctx.err(t.key("gps_interval"), "must be between 1s and 10m")
        gps = 10_000
    spec = WarehouseSpec(
        id=sid or "?",
        name=t.get_str("name", f"Warehouse {sid}"),
        lat=lat, lon=lon,
        utc_offset_h=_utc_offset(t, lon if lon is not None else 0.0),
        lots=t.get_int("lots", 10, lo=1, hi=MAX_LOTS, what=f"a positive integer up to {MAX_LOTS}"),
        commodity=commodity or "copper_cathode",
        lot_kg=t.get_float("lot_kg", lot_default, lo=100.0, hi=10_000_000.0,
                       what="a quantity in 100..10,000,000 kg"),
        sku=t.get_str("sku", known[3] if known else (commodity or "GOODS").upper(),
                  pattern=_CODE_RE, what=_CODE_WHAT),
        zones=t.get_int("zones", 4, lo=1, hi=26, what="an integer in 1..26"),
        trucks=t.get_int("trucks", 4, lo=1, hi=500, what="an integer in 1..500"),
        truck_tare_kg=t.get_float("truck_tare_kg", 15_000.0, lo=1000.0, hi=40_000.0,
                              what="a weight in 1,000..40,000 kg"),
        payload_kg=t.get_float("payload_kg", 22_000.0, lo=500.0, hi=60_000.0,
                           what="a weight in 500..60,000 kg"),
        weighbridge=t.get_str("weighbridge", "xk3190", choices=("xk3190", "toledo")),
        truck_reader_protocol=t.get_str("truck_reader_protocol", "r2000",
                                    choices=("r2000", "thingmagic", "llrp", "chafon")),
        forklifts=t.get_int("forklifts", 2, lo=0, hi=100, what="an integer in 0..100"),
        staff=t.get_int("staff", 1, lo=0, hi=100, what="an integer in 0..100"),
        inbound_per_day=t.get_float("inbound_per_day", 2.0, lo=0.0, hi=50.0,
                                what="a number in 0..50"),
        releases_per_day=t.get_float("releases_per_day", 1.0, lo=0.0, hi=50.0,
                                 what="a number in 0..50"),
        working_hours_min=(hours[0], hours[1]) if hours else (420, 1080),
        gps_interval_ms=gps or 30_000,
    )
    t.finish()
    return spec


def _loan(ctx: _Ctx, data: object, path: str, currency: str) -> LoanSpec | None:
    t = _Table(ctx, data, path)
    if not t.ok:
        return None
    lid = t.get_str("id", _REQUIRED, pattern=_CODE_RE, what=_CODE_WHAT)
    ltv = t.get_float("ltv_line", 0.70, lo=0.0, hi=2.0, lo_open=True, what="a ratio in (0, 2]")
    mc = t.get_float("margin_call_line", 0.80, lo=0.0, hi=2.0, lo_open=True,
                 what="a ratio in (0, 2]")
    liq = t.get_float("liquidation_line", 0.90, lo=0.0, hi=2.0, lo_open=True,
                  what="a ratio in (0, 2]")
    if None not in (ltv, mc, liq) and not ltv <= mc <= liq:
        ctx.err(t.key("margin_call_line"), f"lines must rise: ltv_line {ltv} <= "
                                           f"margin_call_line {mc} <= liquidation_line {liq}")
    cur = t.get_str("currency", currency, pattern=_CURRENCY_RE, what="3 capital letters")
    if cur is not None and cur != currency:
        ctx.err(t.key("currency"), f"must be the market currency {currency!r} (the simulator "
                                   f"has no exchange rates), got {cur!r}")
    sites = t.get_list("sites", _REQUIRED, _code, "site ids")
    if sites is not None and not sites:
        ctx.err(t.key("sites"), "must name at least one site")
    spec = LoanSpec(
        id=lid or "?",
        bank=t.get_str("bank", "BANK-A", pattern=_CODE_RE, what=_CODE_WHAT),
        borrower=t.get_str("borrower", f"{lid}-BORROWER", pattern=_CODE_RE, what=_CODE_WHAT),
        borrower_name=t.get_str("borrower_name", None),
        sites=tuple(sites or ()),
        outstanding=t.get_float("outstanding", None, lo=0.0, lo_open=True,
                            what="an amount > 0"),
        currency=currency,
        ltv_line=ltv or 0.7, margin_call_line=mc or 0.8, liquidation_line=liq or 0.9,
        haircut=t.get_float("haircut", 0.15, lo=0.0, hi=0.95, what="a fraction in 0..0.95"),
    )
    t.finish()
    return spec


def _at(t: _Table, key: str, start_ms: int, end_ms: int, default: Any) -> int | None:
    found, v = t._raw(key, default)
    if not found:
        return None if v is _REQUIRED else int(v)
    try:
        if isinstance(v, str) and v.strip().startswith("+"):
            ms = start_ms + parse_duration(v.strip()[1:])
        else:
            ms = _datetime_ms(v)
    except ValueError as exc:
        t.ctx.err(t.key(key), f"{exc} (or relative to start, like '+2d6h')")
        return None
    if not start_ms <= ms < end_ms:
        t.ctx.err(t.key(key), f"{v!r} is outside the scenario ({_iso(start_ms)} to "
                              f"{_iso(end_ms)})")
        return None
    return ms


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _incident(ctx: _Ctx, data: object, path: str, index: int, start_ms: int, end_ms: int,
              sites: Mapping[str, RanchSpec | WarehouseSpec]) -> IncidentSpec | None:
    raw = _Table(ctx, data, path)
    if not raw.ok:
        return None
    kind = raw.get_str("kind", _REQUIRED, choices=INCIDENT_KINDS)
    if kind is None:
        return None
    t = _Table(ctx, data, path, allowed=frozenset({"kind", "site", "at"}) | _INCIDENT_KEYS[kind])
    t.used.add("kind")
    site_needed = kind != "price_change"
    site = t.get_str("site", _REQUIRED if site_needed else None, pattern=_CODE_RE, what=_CODE_WHAT)
    spec_site = sites.get(site) if site else None
    if site and spec_site is None:
        ctx.err(t.key("site"), f"no ranch or warehouse has id {site!r}")
    elif spec_site is not None:
        if kind in RANCH_KINDS and spec_site.kind != "ranch":
            ctx.err(t.key("site"), f"{kind} happens at a ranch; {site!r} is a warehouse")
        if kind in WAREHOUSE_KINDS and spec_site.kind != "warehouse":
            ctx.err(t.key("site"), f"{kind} happens at a warehouse; {site!r} is a ranch")
    at = _at(t, "at", start_ms, end_ms, start_ms if kind == "double_pledge" else _REQUIRED)
    f: dict[str, Any] = {}
    keys = _INCIDENT_KEYS[kind]
    if "count" in keys:
        f["count"] = t.get_int("count", _DEFAULT_COUNT.get(kind), lo=1, hi=MAX_ANIMALS,
                           what="a positive integer")
    if "animals" in keys:
        f["animals"] = t.get_list("animals", (), _nonneg_int, "animal numbers") or ()
    if "pen" in keys:
        f["pen"] = t.get_str("pen", None, pattern=_CODE_RE, what="a pen id like 'P1'")
    if "device" in keys:
        f["device"] = t.get_str("device", None, pattern=_CODE_RE, what="a device id")
    if "duration" in keys:
        default = {"feed_shortage": "1d", "reader_offline": "2h", "network_outage": "4h",
                   "gateway_crash": "5m", "geofence_exit": "30m"}[kind]
        f["duration_ms"] = t.get_duration("duration", default)
    if "percent" in keys:
        if kind == "price_change":
            pct = t.get_float("percent", _REQUIRED, lo=-99.0, hi=1000.0,
                          what="a non-zero percentage in -99..1000")
            if pct == 0:
                ctx.err(t.key("percent"), "must not be 0")
        else:
            default_pct = {"feed_shortage": 30.0, "tare_fraud": 8.0}[kind]
            pct = t.get_float("percent", default_pct, lo=0.0, hi=100.0, lo_open=True,
                          what="a percentage in (0, 100]")
            if kind == "tare_fraud" and pct is not None and pct >= 100:
                ctx.err(t.key("percent"), "must be below 100 (a tare of 0 kg is no tare)")
        f["percent"] = pct
    if kind == "illness":
        f["prodrome_ms"] = t.get_duration("prodrome", "6d")
        f["recovery_ms"] = t.get_duration("recovery", None)
        f["activity_drop"] = t.get_float("activity_drop", 0.5, lo=0.05, hi=0.95,
                                     what="a fraction in 0.05..0.95")
    if kind == "death":
        f["near_reader"] = t.get_bool("near_reader", True)
    if "truck" in keys:
        f["truck"] = t.get_str("truck", None, pattern=_CODE_RE, what="a truck id or plate")
    if "lot" in keys:
        f["lot"] = t.get_str("lot", None, pattern=_CODE_RE, what="a lot code")
    if "quantity_kg" in keys:
        f["quantity_kg"] = t.get_float("quantity_kg", None, lo=0.0, lo_open=True,
                                   what="a quantity > 0 kg")
    if kind == "geofence_exit":
        f["tracker"] = t.get_str("tracker", None, pattern=_CODE_RE, what="a tracker device id")
        f["distance_m"] = t.get_float("distance_m", 400.0, lo=50.0, hi=100_000.0,
                                  what="a distance in 50..100000 m")
    if kind == "double_pledge":
        f["bank"] = t.get_str("bank", "BANK-B", pattern=_CODE_RE, what=_CODE_WHAT)
        f["loan"] = t.get_str("loan", None, pattern=_CODE_RE, what=_CODE_WHAT)
        f["borrower"] = t.get_str("borrower", None, pattern=_CODE_RE, what=_CODE_WHAT)
        f["outstanding"] = t.get_float("outstanding", None, lo=0.0, lo_open=True,
                                   what="an amount > 0")
    if kind == "price_change":
        f["commodity"] = t.get_str("commodity", None, pattern=_CODE_RE, what=_CODE_WHAT)
    t.finish(elsewhere=_ALL_INCIDENT_KEYS, what=f"a {kind} incident")
    if at is None:
        return None
    return IncidentSpec(index=index, kind=kind, site=site, at_ms=at, **f)


# -- cross checks ------------------------------------------------------------------------------
def _ranch_devices(r: RanchSpec) -> set[str]:
    ids = {layout.reader_id(r.id, n) for n in range(r.readers)}
    ids.add(layout.feeder_id(r.id))
    if r.scale != "none":
        ids |= {layout.scale_id(r.id), layout.scale_reader_id(r.id)}
    if r.gate_reader:
        ids.add(layout.gate_reader_id(r.id))
    return ids


def _warehouse_devices(w: WarehouseSpec) -> set[str]:
    ids = {layout.weighbridge_id(w.id), layout.truck_reader_id(w.id)}
    ids |= {layout.truck_tracker_id(w.id, n) for n in range(w.trucks)}
    ids |= {layout.forklift_id(w.id, n) for n in range(w.forklifts)}
    ids |= {layout.staff_id(w.id, n) for n in range(w.staff)}
    return ids


def site_devices(site: RanchSpec | WarehouseSpec) -> set[str]:
    """Every device id the world gives ``site`` (the gateway is not a device)."""
    return _ranch_devices(site) if isinstance(site, RanchSpec) else _warehouse_devices(site)


def _cross_check(ctx: _Ctx, sc: Scenario) -> None:
    codes: dict[str, str] = {}
    for i, r in enumerate(sc.ranches):
        if r.id in codes:
            ctx.err(f"ranch[{i}].id", f"{r.id!r} is also the id of {codes[r.id]}")
        codes.setdefault(r.id, f"ranch[{i}]")
    for i, w in enumerate(sc.warehouses):
        if w.id in codes:
            ctx.err(f"warehouse[{i}].id", f"{w.id!r} is also the id of {codes[w.id]}")
        codes.setdefault(w.id, f"warehouse[{i}]")
    owner: dict[str, str] = {}
    loan_ids: set[str] = set()
    for i, loan in enumerate(sc.loans):
        if loan.id in loan_ids:
            ctx.err(f"loan[{i}].id", f"loan {loan.id!r} is declared twice")
        loan_ids.add(loan.id)
        for j, s in enumerate(loan.sites):
            if s not in codes:
                ctx.err(f"loan[{i}].sites[{j}]", f"no ranch or warehouse has id {s!r}")
            elif s in owner:
                ctx.err(f"loan[{i}].sites[{j}]", f"site {s!r} is already pledged to loan "
                                                 f"{owner[s]!r} (a second pledge is a "
                                                 f"double_pledge incident)")
            else:
                owner[s] = loan.id
    if sc.loans:
        for s, where in codes.items():
            if s not in owner:
                ctx.err(f"{where}.id", f"site {s!r} is not pledged to any loan")
    used: dict[tuple[str, int], str] = {}
    picked: dict[str, int] = {}
    for inc in sc.incidents:
        path = f"incident[{inc.index}]"
        site = sc.site(inc.site) if inc.site else None
        if isinstance(site, RanchSpec):
            pens = set(layout.pen_ids(site.pens))
            if inc.pen is not None and inc.pen not in pens:
                ctx.err(f"{path}.pen", f"{site.id!r} has pens P1..P{site.pens}, not "
                                       f"{inc.pen!r}")
            if inc.kind in ANIMAL_KINDS:
                for k, a in enumerate(inc.animals):
                    if a >= site.animals:
                        ctx.err(f"{path}.animals[{k}]", f"{site.id!r} has animals 0.."
                                                        f"{site.animals - 1}, not {a}")
                    elif (site.id, a) in used:
                        ctx.err(f"{path}.animals[{k}]", f"animal {a} is already the subject "
                                                        f"of {used[site.id, a]}")
                    used[(site.id, a)] = path
                n = len(inc.animals) or inc.count or 0
                picked[site.id] = picked.get(site.id, 0) + n
                if picked[site.id] > site.animals:
                    ctx.err(f"{path}.count", f"incidents at {site.id!r} need {picked[site.id]} "
                                             f"animals, the ranch has {site.animals}")
            if inc.kind == "double_pledge" and inc.count is not None and \
                    inc.count > site.animals:
                ctx.err(f"{path}.count", f"{site.id!r} has {site.animals} animals")
        if isinstance(site, WarehouseSpec) and inc.kind == "double_pledge" and \
                inc.count is not None and inc.count > site.lots:
            ctx.err(f"{path}.count", f"{site.id!r} has {site.lots} lots")
        if site is not None and inc.device is not None and \
                inc.device not in site_devices(site):
            ctx.err(f"{path}.device", f"{site.id!r} has no device {inc.device!r}; its devices "
                                      f"are {', '.join(sorted(site_devices(site)))}")
        if isinstance(site, RanchSpec) and inc.kind == "tag_drop" and inc.device is not None \
                and not inc.device.startswith(f"{site.id}-rdr-"):
            ctx.err(f"{path}.device", "a dropped tag lies near a reader; name a reader")
        if isinstance(site, WarehouseSpec):
            trackers = {layout.truck_tracker_id(site.id, n) for n in range(site.trucks)}
            trackers |= {layout.forklift_id(site.id, n) for n in range(site.forklifts)}
            trackers |= {layout.staff_id(site.id, n) for n in range(site.staff)}
            if inc.kind == "geofence_exit":
                if not trackers:
                    ctx.err(f"{path}.site", f"{site.id!r} has no GPS tracker to leave it")
                elif inc.tracker is not None and inc.tracker not in trackers:
                    ctx.err(f"{path}.tracker", f"{site.id!r} has no tracker {inc.tracker!r}")
            lots = {layout.lot_code(site.id, n) for n in range(site.lots)}
            if inc.lot is not None and inc.lot not in lots:
                ctx.err(f"{path}.lot", f"{site.id!r} has lots {layout.lot_code(site.id, 0)}.."
                                       f"{layout.lot_code(site.id, site.lots - 1)}, not "
                                       f"{inc.lot!r}")
            trucks = {layout.truck_plate(site.id, n) for n in range(site.trucks)}
            trucks |= {layout.truck_id(_site_index(sc, site.id), n)
                       for n in range(site.trucks)}
            if inc.truck is not None and inc.truck not in trucks:
                ctx.err(f"{path}.truck", f"{site.id!r} has no truck {inc.truck!r} (trucks are "
                                         f"{site.id}-TRK01.. or their tag EPCs)")
        if inc.kind == "double_pledge":
            if inc.loan is not None and inc.loan in loan_ids:
                ctx.err(f"{path}.loan", f"loan {inc.loan!r} is already declared in [[loan]]")
            if site is not None and inc.site not in owner and sc.loans:
                ctx.err(f"{path}.site", f"{inc.site!r} is not pledged to any loan")
        if inc.kind == "price_change":
            commodity = inc.commodity
            if commodity is None and site is None:
                ctx.err(f"{path}.commodity", "is required when no site is given")
            if commodity is not None and commodity not in _commodities(sc):
                ctx.err(f"{path}.commodity", f"no site trades {commodity!r}; the world's "
                                             f"commodities are "
                                             f"{', '.join(sorted(_commodities(sc)))}")
        if inc.kind in ("network_outage", "gateway_crash", "feed_shortage",
                        "reader_offline") and inc.duration_ms is not None and \
                inc.at_ms + inc.duration_ms > sc.end_ms:
            pass  # allowed: it simply lasts past the end of the run (end_ms is still given)


def _site_index(sc: Scenario, code: str) -> int:
    return [s.id for s in sc.sites].index(code)


def _commodities(sc: Scenario) -> set[str]:
    out = {w.commodity for w in sc.warehouses}
    if sc.ranches:
        out.add("cattle_live")
    return out


# -- entry points ------------------------------------------------------------------------------
def scenario_from_dict(d: Mapping[str, Any], source: str = "<dict>") -> Scenario:
    """Check and convert a parsed scenario (the TOML's dict); see :func:`load_scenario`."""
    ctx = _Ctx(source)
    top = _Table(ctx, d, "")
    if not top.ok:
        raise ScenarioError(source, ctx.problems)
    seed = top.get_int("seed", 0, lo=0, hi=2**63 - 1, what="a non-negative integer")
    start_raw = top._raw("start", DEFAULT_START)[1]
    try:
        start_ms = _datetime_ms(start_raw)
    except ValueError as exc:
        ctx.err("start", str(exc))
        start_ms = _datetime_ms(DEFAULT_START)
    duration_ms = top.get_duration("duration", "1d")
    if duration_ms is not None and duration_ms > MAX_DURATION_MS:
        ctx.err("duration", "must be at most 366d")
    if duration_ms is None:
        duration_ms = DAY_MS
    end_ms = start_ms + duration_ms
    name = top.get_str("name", "")
    description = top.get_str("description", "")
    market = _market(ctx, top._raw("market", {})[1])
    banks: dict[str, str] = {}
    for i, b in enumerate(_array(ctx, top, "bank")):
        bt = _Table(ctx, b, f"bank[{i}]")
        code = bt.get_str("code", _REQUIRED, pattern=_CODE_RE, what=_CODE_WHAT)
        bname = bt.get_str("name", code)
        bt.finish()
        if code:
            if code in banks:
                ctx.err(f"bank[{i}].code", f"bank {code!r} is declared twice")
            banks[code] = bname or code
    ranches = [r for i, x in enumerate(_array(ctx, top, "ranch"))
               if (r := _ranch(ctx, x, f"ranch[{i}]")) is not None]
    warehouses = [w for i, x in enumerate(_array(ctx, top, "warehouse"))
                  if (w := _warehouse(ctx, x, f"warehouse[{i}]", market)) is not None]
    if not ranches and not warehouses and not ctx.problems:
        ctx.err("ranch", "a scenario needs at least one [[ranch]] or [[warehouse]]")
    loans = [ln for i, x in enumerate(_array(ctx, top, "loan"))
             if (ln := _loan(ctx, x, f"loan[{i}]", market.currency)) is not None]
    all_sites: list[RanchSpec | WarehouseSpec] = [*ranches, *warehouses]
    sites = {s.id: s for s in all_sites}
    incidents = [inc for i, x in enumerate(_array(ctx, top, "incident"))
                 if (inc := _incident(ctx, x, f"incident[{i}]", i, start_ms, end_ms,
                                      sites)) is not None]
    top.finish()
    if ctx.problems:
        raise ScenarioError(source, ctx.problems)
    if not loans:
        loans = [LoanSpec(id="L1", bank="BANK-A", borrower="L1-BORROWER",
                          sites=tuple(sites), outstanding=None, currency=market.currency,
                          ltv_line=0.7, margin_call_line=0.8, liquidation_line=0.9,
                          haircut=0.15)]
    for loan in loans:
        banks.setdefault(loan.bank, loan.bank)
    sc = Scenario(seed=seed, start_ms=start_ms, duration_ms=duration_ms,
                  ranches=tuple(ranches), warehouses=tuple(warehouses), loans=tuple(loans),
                  incidents=tuple(incidents), banks=banks, market=market, name=name or "",
                  description=description or "", source=source)
    _cross_check(ctx, sc)
    if ctx.problems:
        raise ScenarioError(source, ctx.problems)
    return sc


def _array(ctx: _Ctx, top: _Table, key: str) -> list[Any]:
    found, v = top._raw(key, [])
    if found and not isinstance(v, list):
        ctx.err(key, f"must be an array of tables ([[{key}]]), got {type(v).__name__}")
        return []
    return list(v)


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario TOML file (see docs/scenarios.md)."""
    p = Path(path)
    source = p.name
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ScenarioError(source, [("(file)", f"cannot read: {exc.strerror or exc}")]
                            ) from exc
    except UnicodeDecodeError as exc:
        raise ScenarioError(source, [("(file)", f"not UTF-8: {exc.reason}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, [("(toml)", str(exc))]) from exc
    return scenario_from_dict(data, source=source)
