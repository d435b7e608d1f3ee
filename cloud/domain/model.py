"""The contract between the cloud's domain pieces: what the registry tells the rules about a
site, what rules return, and the tunable parameters with their defaults.

Pure data: no database, no clock. ``cloud.domain.engine`` builds a :class:`SiteRegistry` from
the database, feeds readings in event-time order to ``cloud.domain.state.SiteState``, asks it
for :class:`Condition` objects at each evaluation tick, and hands those to
``cloud.alerts.service`` which opens, updates and resolves alerts.
"""

from __future__ import annotations

import dataclasses
from typing import Final, Literal

__all__ = [
    "ALERT_KINDS", "PER_ANIMAL_KINDS", "SEVERITIES", "SUBJECT_TYPES", "AnimalInfo", "Condition",
    "LoanInfo", "LotInfo", "ReleaseInfo", "RuleParams", "SiteRegistry",
]

SEVERITIES: Final = ("info", "warning", "high", "critical")
SUBJECT_TYPES: Final = ("animal", "lot", "site", "loan", "device", "truck", "pen", "gateway")
ALERT_KINDS: Final = (
    "animal_missing", "herd_count_drop", "tag_inactive", "health_anomaly", "feed_intake_drop",
    "foreign_tag", "stock_below_minimum", "unauthorized_outbound", "geofence_exit",
    "weight_discrepancy", "device_offline", "site_offline", "coverage_breach", "price_shock",
    "data_integrity",
)
# muted while their site has an open site_offline alert
PER_ANIMAL_KINDS: Final = frozenset({"animal_missing", "herd_count_drop", "tag_inactive",
                                     "health_anomaly", "feed_intake_drop"})

DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
MINUTE_MS: Final = 60_000


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """One thing a rule finds true at an evaluation tick. The alert service keeps at most one
    active alert per (bank, subject_type, subject_id, kind); a condition for an active alert
    refreshes it (severity may rise), a new one opens an alert, and an active alert whose
    condition is absent for ``RuleParams.clear_after_ticks`` evaluations in a row resolves.

    ``event_time_ms`` is when the evidence happened (e.g. the animal's last sighting plus the
    window, the ticket's out time), not when the rule ran. ``evidence`` is JSON-able."""

    kind: str
    severity: Literal["info", "warning", "high", "critical"]
    subject_type: str
    subject_id: str
    site_code: str | None
    loan_code: str | None
    event_time_ms: int
    summary: str
    evidence: dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.subject_type, self.subject_id, self.kind)


@dataclasses.dataclass(frozen=True, slots=True)
class AnimalInfo:
    epc: str  # identity EPC, hex upper case, motion counter bytes zeroed (edge convention)
    iso11784: str | None
    loan_code: str
    breed: str | None
    sex: str | None  # "M" | "F" | None
    birth_ms: int | None
    entry_weight_kg: float | None
    pen: str | None
    entry_ms: int | None = None  # when entry_weight_kg was measured (UTC midnight of the day)


@dataclasses.dataclass(frozen=True, slots=True)
class LotInfo:
    lot_code: str
    loan_code: str
    sku: str
    commodity: str
    zone: str | None
    quantity_kg: float  # pledged (stock-take) quantity in kg


@dataclasses.dataclass(frozen=True, slots=True)
class LoanInfo:
    code: str
    currency: str
    outstanding: float
    ltv_line: float  # e.g. 0.70: outstanding / value above this is a warning
    margin_call_line: float  # e.g. 0.80
    liquidation_line: float  # e.g. 0.90
    haircut: float  # inventory haircut, 0..1


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseInfo:
    truck_id: str | None
    lot_code: str | None
    quantity_kg: float
    valid_from_ms: int
    valid_to_ms: int
    reference: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class SiteRegistry:
    """Everything the rules may know about one site besides its readings."""

    bank_id: int
    bank_code: str
    site_code: str
    kind: Literal["ranch", "warehouse"]
    animals: tuple[AnimalInfo, ...] = ()
    lots: tuple[LotInfo, ...] = ()
    loans: tuple[LoanInfo, ...] = ()
    release_orders: tuple[ReleaseInfo, ...] = ()
    geofences: tuple[tuple[tuple[float, float], ...], ...] = ()  # polygons of (lat, lon)
    # identity EPC -> pledges of the same tag elsewhere: ((bank_code, loan_code), ...)
    pledged_elsewhere: dict[str, tuple[tuple[str, str], ...]] = dataclasses.field(
        default_factory=dict)
    # every identity EPC pledged anywhere in this bank (to tell unknown tags from
    # tags pledged to another of the bank's sites)
    bank_epcs: frozenset[str] = frozenset()
    truck_ids: frozenset[str] = frozenset()  # known trucks (tags seen by a truck_reader)
    devices: dict[str, str] = dataclasses.field(default_factory=dict)  # device id -> kind


@dataclasses.dataclass(frozen=True, slots=True)
class RuleParams:
    """Rule parameters with their defaults and where each default comes from. A bank admin
    can override any of them per bank or per site (``PUT /v1/rules``)."""

    eval_interval_ms: int = 10 * MINUTE_MS  # event-time grid the rules run on
    lateness_ms: int = 10 * MINUTE_MS  # how far behind a gateway's newest reading we wait
    clear_after_ticks: int = 3  # hysteresis: absent this many evaluations -> auto-resolve
    # animal_missing: "not seen by any reader for N read cycles or 24 h" is a design choice
    # (domain.md 2.4); 12 h with readers at water and bunks, which cattle visit many times
    # a day
    missing_after_ms: int = 12 * HOUR_MS
    # herd_count_drop: heads seen in the last window vs the pledged herd
    herd_window_ms: int = 6 * HOUR_MS
    herd_drop_fraction: float = 0.02
    herd_drop_min_heads: int = 5
    # tag_inactive: no motion for 24 h (mortality sensors' default, domain.md 2.3)
    no_motion_ms: int = 24 * HOUR_MS
    # health_anomaly: activity/bunk visits vs the animal's own previous ~10 days (2.3)
    baseline_days: int = 10
    health_z: float = 3.2  # decline statistic's alarm threshold, in SDs (docs/health.md)
    cusum_k: float = 0.5  # no longer used by health_anomaly (docs/health.md); kept for the API
    cusum_h: float = 4.0  # same
    # feed_intake_drop: pen's daily delivered kg vs its own 7-day median
    feed_drop_fraction: float = 0.25
    # warehouse
    stock_tolerance: float = 0.01  # ledger below pledged quantity by more than this
    tare_tolerance: float = 0.03  # a truck's tare vs its median tare
    mixed_load_tolerance_kg: float = 50.0
    release_grace_ms: int = 30 * MINUTE_MS
    # silence between two readings of a site longer than this is not watched time (the
    # animals' missing windows do not run through it)
    coverage_gap_ms: int = 30 * MINUTE_MS
    # devices and sites
    device_offline_after_ms: int = 30 * MINUTE_MS
    site_offline_after_ms: int = 30 * MINUTE_MS  # processing time without any upload
    # prices: a move of more than 5 % re-prices the pledge (domain.md 2.6)
    price_shock_fraction: float = 0.05
    # valuation
    health_factor_sick: float = 0.8
