"""``/v1/rules``: the rule parameters of the bank and of its sites (admin only).

``GET`` shows the defaults (``cloud.domain.model.RuleParams``), the bank's overrides, each
site's overrides and the effective values; ``PUT {"site_id": id|null, "params": {...}}``
replaces the overrides of one scope (``{}`` clears them). Effective parameters are defaults <
bank < site. An unknown key or a value of the wrong type or range is a 422 naming the key.
"""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request

from cloud.alerts import service
from cloud.alerts.http import ERRORS_404, ERRORS_422, as_http, now_ms
from cloud.alerts.schemas import RulesPublic, RulesPut, RulesPutResult, SiteRulesPublic
from cloud.api.deps import AdminPrincipal, SessionDep
from cloud.api.schemas import ErrorPublic

__all__ = ["router"]

router = APIRouter(prefix="/v1/rules", tags=["rules"],
                   responses={403: {"model": ErrorPublic, "description": "Needs the admin role"}})


@router.get("", response_model=RulesPublic)
def get_rules(session: SessionDep, principal: AdminPrincipal) -> RulesPublic:
    view = service.rules_view(session, bank_id=principal.bank_id)
    sites = [SiteRulesPublic(site_id=site_id, params=params,
                             effective={**view.effective, **params})
             for site_id, params in sorted(view.sites.items())]
    return RulesPublic(defaults=view.defaults, bank=view.bank, effective=view.effective,
                       sites=sites)


@router.put("", response_model=RulesPutResult, responses={**ERRORS_404, **ERRORS_422})
def put_rules(body: RulesPut, request: Request, session: SessionDep,
              principal: AdminPrincipal) -> RulesPutResult:
    try:
        effective = service.set_rule_params(
            session, bank_id=principal.bank_id, site_id=body.site_id, params=body.params,
            actor=service.user_actor(session, principal.user_id), now_ms=now_ms(request))
    except service.InvalidParamsError as exc:
        raise as_http(exc) from exc
    session.commit()
    return RulesPutResult(site_id=body.site_id, params=service.validate_params(body.params),
                          effective=dataclasses.asdict(effective))
