"""What the bank's collateral is worth and where it is: ``/v1/loans/{id}/valuation`` and
``/v1/sites/{id}/herd|inventory|positions|weigh-tickets`` (viewer and up).

A router of its own (not part of ``loans``/``sites``) because it reads the alert package's
tables (valuations, animal status); the paths sit under the same prefixes.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Query

from cloud.alerts import service, site_views
from cloud.alerts.http import ERRORS_404, ERRORS_422, time_param
from cloud.alerts.schemas import (
    HerdPublic,
    InventoryPublic,
    PositionsPagePublic,
    ValuationPublic,
    WeighTicketsPagePublic,
)
from cloud.api.deps import SessionDep, ViewerPrincipal
from cloud.api.schemas import ErrorPublic

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["valuation"])

_PAGED = {**ERRORS_404, **ERRORS_422,
          400: {"model": ErrorPublic, "description": "Bad cursor"}}
Since = Annotated[str | None, Query(max_length=40, description=(
    "ISO-8601 or milliseconds since the epoch"))]
Cursor = Annotated[str | None, Query(max_length=200, description=(
    "next_cursor of the previous page"))]


@router.get("/loans/{loan_id}/valuation", response_model=ValuationPublic,
            responses={**ERRORS_404, **ERRORS_422})
def loan_valuation(loan_id: int, session: SessionDep, principal: ViewerPrincipal,
                   since: Since = None, until: Since = None,
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> ValuationPublic:
    view = service.valuation_history(
        session, bank_id=principal.bank_id, loan_id=loan_id,
        since_ms=time_param("since", since), until_ms=time_param("until", until), limit=limit)
    return ValuationPublic.model_validate(dataclasses.asdict(view))


@router.get("/sites/{site_id}/herd", response_model=HerdPublic, responses=_PAGED)
def site_herd(site_id: int, session: SessionDep, principal: ViewerPrincipal,
              limit: Annotated[int, Query(ge=1, le=site_views.MAX_PAGE)] = 200,
              cursor: Cursor = None) -> HerdPublic:
    return HerdPublic.model_validate(site_views.site_herd(
        session, bank_id=principal.bank_id, site_id=site_id, limit=limit, cursor=cursor))


@router.get("/sites/{site_id}/inventory", response_model=InventoryPublic,
            responses=ERRORS_404)
def site_inventory(site_id: int, session: SessionDep,
                   principal: ViewerPrincipal) -> InventoryPublic:
    return InventoryPublic.model_validate(site_views.site_inventory(
        session, bank_id=principal.bank_id, site_id=site_id))


@router.get("/sites/{site_id}/positions", response_model=PositionsPagePublic,
            responses=_PAGED)
def site_positions(site_id: int, session: SessionDep, principal: ViewerPrincipal,
                   since: Since = None,
                   limit: Annotated[int, Query(ge=1, le=site_views.MAX_PAGE)] = 500,
                   cursor: Cursor = None) -> PositionsPagePublic:
    """GPS fixes of the site in time order, paged by ``next_cursor``, and the site's
    geofences (``[{"name", "points": [[lat, lon], ...]}]``, the same on every page)."""
    page = site_views.site_positions(session, bank_id=principal.bank_id, site_id=site_id,
                                     since_ms=time_param("since", since), limit=limit,
                                     cursor=cursor)
    return PositionsPagePublic.model_validate(dataclasses.asdict(page))


@router.get("/sites/{site_id}/weigh-tickets", response_model=WeighTicketsPagePublic,
            responses=_PAGED)
def site_weigh_tickets(site_id: int, session: SessionDep, principal: ViewerPrincipal,
                       since: Since = None,
                       limit: Annotated[int, Query(ge=1, le=site_views.MAX_PAGE)] = 500,
                       cursor: Cursor = None) -> WeighTicketsPagePublic:
    page = site_views.site_weigh_tickets(session, bank_id=principal.bank_id,
                                         site_id=site_id,
                                         since_ms=time_param("since", since), limit=limit,
                                         cursor=cursor)
    return WeighTicketsPagePublic.model_validate(dataclasses.asdict(page))
