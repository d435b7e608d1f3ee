"""``/v1/gateways``: the bank's registered gateways (admin only).

Admin only because this is the registry admins manage (public keys, disabled flag, the last
accepted sequence number): operational detail that risk staff (viewer, analyst) do not need;
they see device health under ``/v1/sites/{id}/devices``.
"""

from __future__ import annotations

from fastapi import APIRouter

from cloud import read
from cloud.api.deps import AdminPrincipal, SessionDep
from cloud.api.schemas import ErrorPublic, GatewayPublic

__all__ = ["router"]

router = APIRouter(prefix="/v1/gateways", tags=["gateways"])


@router.get("", response_model=list[GatewayPublic],
            responses={403: {"model": ErrorPublic, "description": "Needs the admin role"}})
def list_gateways(session: SessionDep, principal: AdminPrincipal) -> list[GatewayPublic]:
    return [GatewayPublic.model_validate(g)
            for g in read.list_gateways(session, bank_id=principal.bank_id)]
