"""FastAPI dependencies, as ``Annotated`` aliases for route signatures.

- :data:`SettingsDep` - the :class:`CloudSettings` the app was built with;
- :data:`SessionDep` - one SQLAlchemy session per request, closed (rolled back if nothing
  committed) when the request ends;
- :data:`CurrentPrincipal` - the caller from ``Authorization: Bearer <token>``; 401 with
  ``WWW-Authenticate: Bearer`` when the token is missing, unknown, revoked or expired; 429
  with ``Retry-After`` beyond the token's rate (:mod:`cloud.ratelimit`);
- :func:`require_role` - ``Annotated[Principal, require_role("admin")]``: 403 below that role.
  :data:`ViewerPrincipal`, :data:`AnalystPrincipal`, :data:`AdminPrincipal` are the three.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from cloud.auth import ROLES, has_role
from cloud.ratelimit import TokenBuckets
from cloud.read import AuthenticationError, Principal, authenticate
from cloud.settings import CloudSettings

__all__ = [
    "AdminPrincipal", "AnalystPrincipal", "CurrentPrincipal", "Principal", "SessionDep",
    "SettingsDep", "ViewerPrincipal", "get_session", "get_settings", "require_role",
]

_bearer = HTTPBearer(auto_error=False, description="API token: `pw_<prefix>_<secret>`")


def get_settings(request: Request) -> CloudSettings:
    settings: CloudSettings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        yield session


SettingsDep = Annotated[CloudSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


def unauthorized(detail: str = "invalid or missing bearer token") -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED,
                         detail={"reason": "unauthorized", "detail": detail},
                         headers={"WWW-Authenticate": "Bearer"})


def current_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise unauthorized("missing bearer token")
    try:
        principal = authenticate(session, credentials.credentials, now=dt.datetime.now(dt.UTC))
    except AuthenticationError as exc:
        raise unauthorized(str(exc)) from exc
    buckets: TokenBuckets | None = getattr(request.app.state, "rate_limit", None)
    if buckets is not None:
        wait = buckets.take(principal.token_id)
        if wait > 0:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                                detail={"reason": "rate_limited",
                                        "detail": "too many requests for this token; retry "
                                                  "after the Retry-After seconds"},
                                headers={"Retry-After": TokenBuckets.retry_after(wait)})
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_role(needed: str) -> Any:
    """A ``Depends`` that yields the caller if their role is at least ``needed``, else 403."""
    if needed not in ROLES:
        raise ValueError(f"unknown role {needed!r}; roles are {ROLES}")

    def check(principal: CurrentPrincipal) -> Principal:
        if not has_role(principal.role, needed):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                detail={"reason": "forbidden",
                                        "detail": f"this needs the {needed} role"})
        return principal

    check.__name__ = f"require_{needed}"
    dependency: Callable[..., Principal] = check
    return Depends(dependency)


ViewerPrincipal = Annotated[Principal, require_role("viewer")]
AnalystPrincipal = Annotated[Principal, require_role("analyst")]
AdminPrincipal = Annotated[Principal, require_role("admin")]
