"""``/v1/webhooks``: the bank's webhook endpoints (admin only). Secrets are write-only: they
are needed in clear to sign deliveries, but never shown again after the POST."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from cloud.alerts import webhooks
from cloud.alerts.http import ERRORS_404, ERRORS_422, as_http, now_ms
from cloud.alerts.schemas import WebhookCreate, WebhookPublic
from cloud.alerts.service import InvalidParamsError
from cloud.api.deps import AdminPrincipal, SessionDep
from cloud.api.schemas import ErrorPublic

__all__ = ["router"]

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"],
                   responses={403: {"model": ErrorPublic, "description": "Needs the admin role"}})


@router.get("", response_model=list[WebhookPublic])
def list_webhooks(session: SessionDep, principal: AdminPrincipal) -> list[WebhookPublic]:
    return [WebhookPublic.model_validate(h)
            for h in webhooks.list_webhooks(session, bank_id=principal.bank_id)]


@router.post("", response_model=WebhookPublic, status_code=status.HTTP_201_CREATED,
             responses=ERRORS_422)
def create_webhook(body: WebhookCreate, request: Request, session: SessionDep,
                   principal: AdminPrincipal) -> WebhookPublic:
    try:
        hook = webhooks.create_webhook(session, bank_id=principal.bank_id, url=body.url,
                                       secret=body.secret, kinds=body.kinds,
                                       now_ms=now_ms(request))
    except InvalidParamsError as exc:
        raise as_http(exc) from exc
    session.commit()
    return WebhookPublic.model_validate(hook)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response, responses=ERRORS_404)
def delete_webhook(webhook_id: int, session: SessionDep, principal: AdminPrincipal) -> Response:
    webhooks.delete_webhook(session, bank_id=principal.bank_id, webhook_id=webhook_id)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
