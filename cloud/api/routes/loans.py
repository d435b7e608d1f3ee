"""``/v1/loans``: the bank's loans with their lines (viewer and up)."""

from __future__ import annotations

from fastapi import APIRouter

from cloud import read
from cloud.api.deps import SessionDep, ViewerPrincipal
from cloud.api.schemas import LoanPublic

__all__ = ["router"]

router = APIRouter(prefix="/v1/loans", tags=["loans"])


@router.get("", response_model=list[LoanPublic])
def list_loans(session: SessionDep, principal: ViewerPrincipal) -> list[LoanPublic]:
    return [LoanPublic.model_validate(loan)
            for loan in read.list_loans(session, bank_id=principal.bank_id)]
