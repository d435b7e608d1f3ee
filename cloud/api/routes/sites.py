"""``/v1/sites``: the bank's sites, their devices and their readings (viewer and up)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from cloud import read
from cloud.api.deps import SessionDep, ViewerPrincipal
from cloud.api.schemas import (
    DevicePublic,
    ErrorPublic,
    ReadingPublic,
    ReadingsPagePublic,
    SitePublic,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/sites", tags=["sites"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "No such site in your bank"}}


@router.get("", response_model=list[SitePublic])
def list_sites(session: SessionDep, principal: ViewerPrincipal) -> list[SitePublic]:
    return [SitePublic.model_validate(s)
            for s in read.list_sites(session, bank_id=principal.bank_id)]


@router.get("/{site_id}/devices", response_model=list[DevicePublic], responses=_NOT_FOUND)
def site_devices(site_id: int, session: SessionDep,
                 principal: ViewerPrincipal) -> list[DevicePublic]:
    devices = read.site_devices(session, bank_id=principal.bank_id, site_id=site_id)
    return [DevicePublic.model_validate(d) for d in devices]


@router.get("/{site_id}/readings", response_model=ReadingsPagePublic,
            responses={**_NOT_FOUND, 400: {"model": ErrorPublic, "description": "Bad cursor"}})
def site_readings(
    site_id: int,
    session: SessionDep,
    principal: ViewerPrincipal,
    since: Annotated[int | None, Query(ge=0, description="only readings with ts_ms >= since "
                                                         "(milliseconds since the epoch)")] = None,
    kind: Annotated[str | None, Query(max_length=32, description="one reading kind")] = None,
    limit: Annotated[int, Query(ge=1, le=read.MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=64,
                                        description="next_cursor of the previous page")] = None,
) -> ReadingsPagePublic:
    page = read.site_readings(
        session, bank_id=principal.bank_id, site_id=site_id, since_ms=since, kind=kind,
        limit=limit, after=read.ReadingCursor.decode(cursor) if cursor else None)
    return ReadingsPagePublic(
        items=[ReadingPublic.model_validate(r) for r in page.readings],
        next_cursor=page.next_cursor.encode() if page.next_cursor else None)

