"""``/v1/alerts``: list and read the bank's alerts (viewer), acknowledge, resolve and comment
(analyst), and follow them live over Server-Sent Events (``/v1/alerts/stream``).

Thin: parse, authorise, call ``cloud.alerts.service``, commit, answer. Another bank's alert
is a 404 (never 403), like every other id in the API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from cloud.alerts import service
from cloud.alerts.http import ERRORS_404, ERRORS_409, ERRORS_422, as_http, now_ms, time_param
from cloud.alerts.runtime import alerts_config, streams_stop_flag
from cloud.alerts.schemas import (
    AlertDetailPublic,
    AlertPublic,
    AlertsPagePublic,
    CommentCreate,
    CommentPublic,
    NoteBody,
)
from cloud.alerts.stream import alert_stream
from cloud.api.deps import AnalystPrincipal, SessionDep, ViewerPrincipal, unauthorized
from cloud.api.schemas import ErrorPublic
from cloud.auth import has_role
from cloud.read import AuthenticationError, Principal, authenticate

__all__ = ["router"]

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

_bearer = HTTPBearer(auto_error=False, description="API token: `pw_<prefix>_<secret>`")


@router.get("", response_model=AlertsPagePublic,
            responses={400: {"model": ErrorPublic, "description": "Bad cursor"}, **ERRORS_422})
def list_alerts(
    request: Request,
    session: SessionDep,
    principal: ViewerPrincipal,
    state: Annotated[str | None, Query(max_length=64, description=(
        "open, acknowledged, resolved or active (open + acknowledged); comma-separated "
        "for several"))] = None,
    kind: Annotated[str | None, Query(max_length=400, description="kind(s), "
                                      "comma-separated")] = None,
    severity: Annotated[str | None, Query(max_length=64)] = None,
    site_id: int | None = None,
    loan_id: int | None = None,
    since: Annotated[str | None, Query(max_length=40, description=(
        "opened at or after: ISO-8601 or ms since the epoch"))] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AlertsPagePublic:
    page = service.list_alerts(
        session, bank_id=principal.bank_id, state=state, kind=kind, severity=severity,
        site_id=site_id, loan_id=loan_id, since_ms=time_param("since", since), limit=limit,
        cursor=cursor)
    return AlertsPagePublic.model_validate({"items": page.items,
                                            "next_cursor": page.next_cursor})


def _stream_principal(sessions: sessionmaker[Session], token: str | None) -> Principal:
    if not token:
        raise unauthorized("missing bearer token")
    with sessions() as s:
        try:
            principal = authenticate(s, token, now=dt.datetime.now(dt.UTC))
        except AuthenticationError as exc:
            raise unauthorized(str(exc)) from exc
    if not has_role(principal.role, "viewer"):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail={"reason": "forbidden", "detail": "this needs the viewer "
                                                                     "role"})
    return principal


def _event_id(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            detail={"reason": "bad_request",
                                    "detail": f"{name} must be a non-negative integer"})
    return int(value)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    summary="Alert events as Server-Sent Events (resumable with Last-Event-ID)",
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`id: <event id>` / `event: alert` / `data: <Alert JSON "
                                    "+ action>`, and `: keep-alive` comments"},
               400: {"model": ErrorPublic, "description": "Bad Last-Event-ID"}},
)
async def stream_alerts(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID",
                                                       max_length=20)] = None,
    last_event_id: Annotated[str | None, Query(max_length=20, description=(
        "resume after this event id (0: replay everything); the Last-Event-ID header "
        "wins"))] = None,
    access_token: Annotated[str | None, Query(max_length=200, description=(
        "the bearer token, for EventSource clients that cannot send headers; prefer the "
        "Authorization header (a query string can end up in access logs)"))] = None,
) -> StreamingResponse:
    sessions: sessionmaker[Session] = request.app.state.sessionmaker
    token = credentials.credentials if credentials is not None else access_token
    principal = await asyncio.to_thread(_stream_principal, sessions, token)
    after = _event_id(last_event_id_header, "Last-Event-ID")
    if after is None:
        after = _event_id(last_event_id, "last_event_id")
    body = alert_stream(sessions, bank_id=principal.bank_id, after_id=after,
                        config=alerts_config(request.app).stream,
                        stop=streams_stop_flag(request.app))
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{alert_id}", response_model=AlertDetailPublic, responses=ERRORS_404)
def get_alert(alert_id: int, session: SessionDep,
              principal: ViewerPrincipal) -> AlertDetailPublic:
    return AlertDetailPublic.model_validate(
        service.get_alert(session, alert_id, bank_id=principal.bank_id))


def _transition(action: Any, alert_id: int, request: Request, session: Session,
                principal: Principal, body: NoteBody | None) -> AlertPublic:
    """Acknowledge or resolve: the same checks, audit actor and answer for both."""
    try:
        alert = action(session, alert_id, bank_id=principal.bank_id,
                       actor=service.user_actor(session, principal.user_id),
                       now_ms=now_ms(request), note=body.note if body else None)
    except service.InvalidTransitionError as exc:
        raise as_http(exc) from exc
    session.commit()
    return AlertPublic.model_validate(alert)


@router.post("/{alert_id}/ack", response_model=AlertPublic,
             responses={**ERRORS_404, **ERRORS_409})
def acknowledge(alert_id: int, request: Request, session: SessionDep,
                principal: AnalystPrincipal, body: NoteBody | None = None) -> AlertPublic:
    return _transition(service.acknowledge, alert_id, request, session, principal, body)


@router.post("/{alert_id}/resolve", response_model=AlertPublic,
             responses={**ERRORS_404, **ERRORS_409})
def resolve(alert_id: int, request: Request, session: SessionDep,
            principal: AnalystPrincipal, body: NoteBody | None = None) -> AlertPublic:
    return _transition(service.resolve, alert_id, request, session, principal, body)


@router.post("/{alert_id}/comments", response_model=CommentPublic,
             status_code=status.HTTP_201_CREATED, responses={**ERRORS_404, **ERRORS_422})
def add_comment(alert_id: int, body: CommentCreate, request: Request, session: SessionDep,
                principal: AnalystPrincipal) -> CommentPublic:
    try:
        out = service.comment(session, alert_id, bank_id=principal.bank_id,
                              actor=service.user_actor(session, principal.user_id),
                              now_ms=now_ms(request), text=body.text)
    except service.InvalidParamsError as exc:
        raise as_http(exc) from exc
    session.commit()
    return CommentPublic.model_validate(out)
