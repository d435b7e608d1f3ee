"""Request and response bodies of the alert, webhook, rule and valuation routes (the JSON the
dashboard consumes; docs/alerts.md). Times are ISO-8601 UTC strings; money in valuations is a
JSON number rounded to the cent (it is stored as an exact decimal)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AlertDetailPublic", "AlertPublic", "AlertsPagePublic", "AuditEntryPublic",
    "CommentCreate", "CommentPublic", "GeofencePublic", "HerdAnimalPublic", "HerdPublic",
    "InventoryPublic", "LotPublic", "NoteBody", "PositionPublic", "PositionsPagePublic",
    "RulesPublic", "RulesPut", "RulesPutResult", "SiteRulesPublic", "ValuationPointPublic",
    "ValuationPublic", "WebhookCreate", "WebhookPublic", "WeighTicketPublic",
    "WeighTicketsPagePublic",
]

State = Literal["open", "acknowledged", "resolved"]


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class AlertPublic(_Public):
    id: int
    kind: str
    severity: str
    state: State
    site_id: int | None
    site: str | None
    loan_id: int | None
    loan: str | None
    subject_type: str
    subject_id: str
    summary: str
    event_time: str  # when the evidence happened
    opened_at: str
    last_seen_at: str  # last evaluation that found the condition
    acknowledged_at: str | None
    resolved_at: str | None
    resolved_by: str | None  # "auto" for an automatic resolve, else the user


class AuditEntryPublic(_Public):
    at: str
    actor: str
    action: str  # opened | updated | acknowledged | resolved | commented
    from_state: str | None
    to_state: str
    note: str | None


class CommentPublic(_Public):
    at: str
    author: str
    text: str


class AlertDetailPublic(AlertPublic):
    evidence: dict[str, Any]
    audit: list[AuditEntryPublic]
    comments: list[CommentPublic]


class AlertsPagePublic(_Public):
    items: list[AlertPublic]
    next_cursor: str | None  # pass as ``cursor`` for the next (older) page; null at the end


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Annotated[str | None, Field(max_length=2000)] = None


class CommentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Annotated[str, Field(min_length=1, max_length=4000)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, Field(max_length=2000)]
    secret: Annotated[str, Field(min_length=16, max_length=200)]
    kinds: list[str] | None = None  # null: every kind


class WebhookPublic(_Public):
    id: int
    url: str
    kinds: list[str] | None
    active: bool
    created_at: str


class SiteRulesPublic(_Public):
    site_id: int
    params: dict[str, int | float]  # the site's overrides
    effective: dict[str, int | float]


class RulesPublic(_Public):
    defaults: dict[str, int | float]
    bank: dict[str, int | float]  # the bank's overrides
    effective: dict[str, int | float]  # defaults < bank
    sites: list[SiteRulesPublic]


class RulesPut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site_id: int | None = None  # null: the bank's overrides
    params: dict[str, Any]  # checked against RuleParams (422 naming the bad key)


class RulesPutResult(_Public):
    site_id: int | None
    params: dict[str, int | float]
    effective: dict[str, int | float]


class ValuationPointPublic(_Public):
    as_of: str
    value: float
    low: float
    high: float
    coverage: float | None  # value / outstanding
    ltv: float | None  # outstanding / value
    status: Literal["ok", "warning", "margin_call", "liquidation"]
    livestock: float
    inventory: float


class ValuationPublic(_Public):
    loan_id: int
    loan: str
    currency: str
    now: ValuationPointPublic | None
    history: list[ValuationPointPublic]


class HerdAnimalPublic(_Public):
    epc: str
    loan: str
    last_seen: str | None
    est_weight_kg: float | None
    health: str | None


class HerdPublic(_Public):
    pledged: int
    present: int
    missing: list[str]
    animals: list[HerdAnimalPublic]
    next_cursor: str | None


class LotPublic(_Public):
    lot: str
    commodity: str
    pledged_kg: float | None  # null: the lot's unit has no weight (bags, pallets)


class InventoryPublic(_Public):
    lots: list[LotPublic]
    ledger_kg: float
    opening_kg: float
    in_kg: float
    out_kg: float


class PositionPublic(_Public):
    device_id: str
    lat: float
    lon: float
    ts_ms: int
    at: str


class GeofencePublic(_Public):
    name: str
    points: list[tuple[float, float]]  # [[lat, lon], ...] in order; the ring closes itself


class PositionsPagePublic(_Public):
    items: list[PositionPublic]
    next_cursor: str | None
    geofences: list[GeofencePublic]  # the site's geofences, the same on every page


class WeighTicketPublic(_Public):
    id: int
    device_id: str
    truck_id: str | None
    direction: str
    gross_kg: float
    tare_kg: float
    net_kg: float
    in_at: str
    out_at: str
    in_ms: int
    out_ms: int


class WeighTicketsPagePublic(_Public):
    items: list[WeighTicketPublic]
    next_cursor: str | None
