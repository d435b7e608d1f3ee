"""Small pieces the alert routes share: translating the alert service's errors into HTTP
answers (``{"reason", "detail"}`` bodies), the request clock, and ``since``/``until`` parsing.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException, Request, status

from cloud.alerts.service import InvalidParamsError, InvalidTransitionError
from cloud.alerts.timefmt import BadTimeError, parse_time_ms
from cloud.api.schemas import ErrorPublic

__all__ = ["ERRORS_404", "ERRORS_409", "ERRORS_422", "as_http", "now_ms", "time_param"]

ERRORS_404: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "Not found in your bank"}}
ERRORS_409: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorPublic, "description": "Not allowed in the alert's state"}}
ERRORS_422: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorPublic, "description": "A value the service refuses (names the key)"}}


def as_http(exc: InvalidParamsError | InvalidTransitionError) -> HTTPException:
    code = (status.HTTP_409_CONFLICT if isinstance(exc, InvalidTransitionError)
            else status.HTTP_422_UNPROCESSABLE_CONTENT)
    return HTTPException(code, detail={"reason": exc.reason, "detail": str(exc)})


def now_ms(request: Request) -> int:
    """Wall clock in ms, or ``app.state.clock_ms()`` when the app was given one."""
    clock = getattr(request.app.state, "clock_ms", None)
    return int(clock()) if callable(clock) else time.time_ns() // 1_000_000


def time_param(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_time_ms(value)
    except BadTimeError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail={"reason": "invalid_time", "detail": f"{name}: {exc}"}) \
            from exc
