"""What the read API returns (``*Public`` schemas, built from ORM rows with
``from_attributes``). Money and ratio columns are decimals, serialised as strings in JSON so
no float rounding creeps in."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = [
    "DevicePublic", "ErrorPublic", "GatewayPublic", "HealthPublic", "LoanPublic",
    "ReadingPublic", "ReadingsPagePublic", "SitePublic",
]


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class ErrorPublic(BaseModel):
    """Every error the API raises on purpose: a machine-readable ``reason`` and prose."""

    reason: str
    detail: str


class HealthPublic(BaseModel):
    status: str  # ok | degraded
    database: bool


class SitePublic(_Public):
    id: int
    code: str
    name: str
    kind: str
    lat: float | None
    lon: float | None


class DevicePublic(_Public):
    device_id: str
    kind: str | None
    online: bool | None
    last_seen_ms: int | None


class ReadingPublic(_Public):
    id: int
    device_id: str
    kind: str
    ts_ms: int
    recv_ms: int
    data: dict[str, Any]


class ReadingsPagePublic(BaseModel):
    items: list[ReadingPublic]
    # pass as ``cursor`` to get the next page; null on the last page
    next_cursor: str | None


class LoanPublic(_Public):
    id: int
    code: str
    borrower_id: int
    currency: str
    outstanding: Decimal
    ltv_line: Decimal
    margin_call_line: Decimal
    liquidation_line: Decimal
    haircut: Decimal


class GatewayPublic(_Public):
    id: int
    gateway_id: str
    site_id: int
    public_key: str  # base64 of the raw 32-byte Ed25519 key, as the gateway prints it
    disabled: bool
    last_seq: int
    last_seen_ms: int | None

    @field_validator("public_key", mode="before")
    @classmethod
    def _b64(cls, value: object) -> object:
        if isinstance(value, bytes | bytearray | memoryview):
            return base64.b64encode(bytes(value)).decode("ascii")
        return value
