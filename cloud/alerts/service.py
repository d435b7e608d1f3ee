"""The alert lifecycle, rule parameters and valuation history: a synchronous service over one
SQLAlchemy ``Session`` owned by the caller (the domain engine's worker thread, or an API
request). Nothing here commits: the caller commits once its whole step is done.

Lifecycle (a table, :data:`TRANSITIONS`)::

    (none) --condition--> open --ack--> acknowledged
      open | acknowledged --resolve (analyst)--> resolved
      open | acknowledged --absent clear_after_ticks evaluations--> resolved (actor "system")

* At most one *active* (open or acknowledged) alert per (bank, subject_type, subject_id,
  kind): the UNIQUE ``alerts.active_key`` enforces it in the database. :func:`reconcile`
  reads the active alert first and inserts only when there is none; an insert that loses a
  race to a concurrent opener fails on the constraint inside a SAVEPOINT, which is rolled
  back, and the winner's alert is refreshed instead.
* Severity only rises while an alert is active (its peak is what risk staff must see); a
  lower severity reported later is kept in the evidence (``evidence["severity_now"]``).
* A manual resolve of a condition that is still true ends that alert; the next evaluation
  opens a new one (the old one stays resolved with its audit trail).
* Acknowledged alerts still auto-resolve when their condition clears.
* Every transition and comment writes an ``alert_events`` row (the audit trail, and the event
  SSE and webhooks carry) with its actor and time: the caller's ``now_ms`` (the simulated
  clock under the simulator). Refreshes without a severity change write none, so a steady
  condition does not flood the audit, the stream or the webhooks.

Ordering of events: every writer first bumps the one ``alert_write_lock`` row. That
serialises alert writers (a row lock held to commit on PostgreSQL; the database write lock on
SQLite), so an event id is only handed out after every smaller id committed, and a poller
that reads ``id > last_seen`` never skips an event that commits late. Keep transactions that
write alerts short: the lock is held until the caller commits.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Select, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.alerts.models import (
    Alert,
    AlertComment,
    AlertEvent,
    AlertWriteLock,
    RuleConfig,
    Valuation,
    Webhook,
    WebhookDelivery,
)
from cloud.alerts.timefmt import iso, iso_or_none
from cloud.db.models import Loan, Site, User
from cloud.domain.model import SEVERITIES, Condition, RuleParams
from cloud.errors import CloudError
from cloud.read import BadCursorError, NotFoundError

__all__ = [
    "ACTIONS", "MAX_PAGE", "TRANSITIONS", "VALUATION_STATUSES", "AlertError", "AlertPage",
    "InvalidConditionError", "InvalidParamsError", "InvalidTransitionError",
    "InvalidValuationError", "ReconcileResult", "RulesView", "StreamEvent", "ValuationPoint",
    "ValuationView", "acknowledge", "active_key", "alert_public", "begin_write", "comment",
    "events_after",
    "get_alert", "latest_event_id", "list_alerts", "next_state", "reconcile",
    "record_valuation", "resolve", "rule_params", "rules_view", "set_rule_params",
    "user_actor", "validate_params", "valuation_history",
]

log = logging.getLogger(__name__)

MAX_PAGE: Final = 500
_SEVERITY_RANK: Final = {s: i for i, s in enumerate(SEVERITIES)}
VALUATION_STATUSES: Final = ("ok", "warning", "margin_call", "liquidation")

# (state, command) -> next state; a pair absent here is an invalid transition (409)
TRANSITIONS: Final[Mapping[tuple[str, str], str]] = {
    ("open", "acknowledge"): "acknowledged",
    ("open", "resolve"): "resolved",
    ("open", "auto_resolve"): "resolved",
    ("open", "refresh"): "open",
    ("acknowledged", "resolve"): "resolved",
    ("acknowledged", "auto_resolve"): "resolved",
    ("acknowledged", "refresh"): "acknowledged",
}
COMMANDS: Final = ("acknowledge", "resolve", "auto_resolve", "refresh")
# what an event says happened (SSE ``action``, audit ``action``)
ACTIONS: Final = ("opened", "updated", "acknowledged", "resolved", "commented")
SYSTEM_ACTOR: Final = "system"
AUTO_RESOLVER: Final = "auto"


# -- errors -----------------------------------------------------------------------------------


class AlertError(CloudError):
    """Root of the alert service's errors."""


class InvalidTransitionError(AlertError):
    """The command does not apply to the alert's state (HTTP 409)."""

    def __init__(self, state: str, command: str) -> None:
        super().__init__(f"cannot {command.replace('_', ' ')} an alert that is {state}",
                         reason="invalid_transition")
        self.state = state
        self.command = command


class InvalidParamsError(AlertError):
    """A rule parameter override that is unknown or of the wrong type/range (HTTP 422)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}", reason="invalid_params")
        self.key = key


class InvalidConditionError(AlertError):
    """A condition the engine handed over that breaks the contract (unknown severity, kind
    outside the scope ...). Nothing of that reconcile call was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="invalid_condition")


class InvalidValuationError(AlertError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="invalid_valuation")


def next_state(state: str, command: str) -> str:
    """The state after ``command``, or :class:`InvalidTransitionError`."""
    try:
        return TRANSITIONS[(state, command)]
    except KeyError:
        raise InvalidTransitionError(state, command) from None


def active_key(bank_id: int, subject_type: str, subject_id: str, kind: str) -> str:
    return f"{bank_id}:{subject_type}:{subject_id}:{kind}"


# -- the public shape of an alert -------------------------------------------------------------


def alert_public(alert: Alert, *, site_code: str | None, loan_code: str | None) -> dict[str, Any]:
    """The alert as the API shows it (docs/alerts.md "Alert")."""
    return {
        "id": alert.id, "kind": alert.kind, "severity": alert.severity, "state": alert.state,
        "site_id": alert.site_id, "site": site_code, "loan_id": alert.loan_id,
        "loan": loan_code, "subject_type": alert.subject_type,
        "subject_id": alert.subject_id, "summary": alert.summary,
        "event_time": iso(alert.event_time_ms), "opened_at": iso(alert.opened_at_ms),
        "last_seen_at": iso(alert.last_seen_ms),
        "acknowledged_at": iso_or_none(alert.acknowledged_at_ms),
        "resolved_at": iso_or_none(alert.resolved_at_ms), "resolved_by": alert.resolved_by,
    }


class _Writer:
    """One transaction's alert writes: takes the write lock once, numbers each alert's events,
    snapshots the alert into the event, and queues a delivery for each matching webhook."""

    def __init__(self, session: Session, bank_id: int, *,
                 site_codes: dict[int, str] | None = None,
                 loan_codes: dict[int, str] | None = None) -> None:
        self.session = session
        self.bank_id = bank_id
        self.site_codes = dict(site_codes or {})
        self.loan_codes = dict(loan_codes or {})
        self._webhooks: list[tuple[int, frozenset[str] | None]] | None = None
        _take_write_lock(session)

    def codes(self, alert: Alert) -> tuple[str | None, str | None]:
        site = loan = None
        if alert.site_id is not None:
            site = self.site_codes.get(alert.site_id)
            if site is None:
                site = self.session.scalar(select(Site.code).where(Site.id == alert.site_id))
                if site is not None:
                    self.site_codes[alert.site_id] = site
        if alert.loan_id is not None:
            loan = self.loan_codes.get(alert.loan_id)
            if loan is None:
                loan = self.session.scalar(select(Loan.code).where(Loan.id == alert.loan_id))
                if loan is not None:
                    self.loan_codes[alert.loan_id] = loan
        return site, loan

    def webhooks(self) -> list[tuple[int, frozenset[str] | None]]:
        if self._webhooks is None:
            rows = self.session.execute(
                select(Webhook.id, Webhook.kinds)
                .where(Webhook.bank_id == self.bank_id, Webhook.active.is_(True))).all()
            self._webhooks = [(wid, None if kinds is None else frozenset(kinds))
                              for wid, kinds in rows]
        return self._webhooks

    def event(self, alert: Alert, *, action: str, actor: str, at_ms: int,
              from_state: str | None, note: str | None = None,
              first: bool = False) -> AlertEvent:
        assert action in ACTIONS
        self.session.flush()  # the alert's id and current columns
        if first:
            seq = 1
        else:
            last = self.session.scalar(select(func.max(AlertEvent.seq))
                                       .where(AlertEvent.alert_id == alert.id))
            seq = (last or 0) + 1
        site, loan = self.codes(alert)
        payload = alert_public(alert, site_code=site, loan_code=loan)
        payload["action"] = action
        payload["actor"] = actor
        payload["at"] = iso(at_ms)
        row = AlertEvent(alert_id=alert.id, bank_id=alert.bank_id, seq=seq, at_ms=at_ms,
                         actor=actor, action=action, from_state=from_state,
                         to_state=alert.state, note=note, payload=payload)
        self.session.add(row)
        self.session.flush()
        deliveries = [{"webhook_id": wid, "event_id": row.id, "state": "pending",
                       "attempts": 0, "next_attempt_ms": 0}
                      for wid, kinds in self.webhooks() if kinds is None or alert.kind in kinds]
        if deliveries:
            self.session.execute(insert(WebhookDelivery), deliveries)
        return row


def begin_write(session: Session) -> None:
    """Make sure the session's connection is inside a real database transaction before a
    read-then-write or a SAVEPOINT. Python's sqlite3 driver only opens a transaction at the
    first INSERT/UPDATE/DELETE, and a SAVEPOINT issued outside one *becomes* the transaction,
    so releasing it would commit everything early. On SQLite this opens ``BEGIN IMMEDIATE``
    (the write lock now, waiting on the busy timeout, instead of failing later when a read
    snapshot goes stale); PostgreSQL needs nothing."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return
    raw = conn.connection.driver_connection
    if raw is not None and not raw.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _fresh(model: type[Alert]) -> Select[Alert]:
    """A select that overwrites what the session's identity map holds: sessions here do not
    expire on commit, and a write must start from the committed state, not a stale copy."""
    return select(model).execution_options(populate_existing=True)


def _take_write_lock(session: Session) -> None:
    """Bump the lock row (see the module docstring). Recreates the row if a schema built
    without the migration (``create_all``) lacks it."""
    begin_write(session)
    bump = (update(AlertWriteLock).where(AlertWriteLock.id == 1)
            .values(generation=AlertWriteLock.generation + 1))
    if session.execute(bump).rowcount == 1:  # type: ignore[attr-defined]
        return
    try:
        with session.begin_nested():
            session.add(AlertWriteLock(id=1, generation=0))
    except IntegrityError:
        pass  # someone else created it first
    session.execute(bump)


# -- reconcile: conditions in, alerts opened / refreshed / resolved ---------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ReconcileResult:
    """Alert ids this reconcile opened, refreshed (condition present again) and resolved
    (condition absent long enough). ``unknown_refs``: conditions whose site or loan code was
    not in the maps given (the alert is kept, without that link; logged)."""

    opened: tuple[int, ...] = ()
    updated: tuple[int, ...] = ()
    resolved: tuple[int, ...] = ()
    unknown_refs: int = 0


def _check_conditions(conditions: Sequence[Condition],
                      scope_kinds: Collection[str]) -> dict[tuple[str, str, str], Condition]:
    """Validate and de-duplicate by (subject_type, subject_id, kind): the highest severity
    wins, the later one on a tie (its evidence is newer)."""
    out: dict[tuple[str, str, str], Condition] = {}
    for cond in conditions:
        if cond.kind not in scope_kinds:
            raise InvalidConditionError(f"condition kind {cond.kind!r} is outside this "
                                        f"reconcile's scope {sorted(scope_kinds)}")
        if cond.severity not in _SEVERITY_RANK:
            raise InvalidConditionError(f"unknown severity {cond.severity!r} "
                                        f"(one of {SEVERITIES})")
        if not cond.subject_type or not cond.subject_id:
            raise InvalidConditionError(f"{cond.kind} condition without a subject")
        if len(cond.subject_id) > 128 or len(cond.subject_type) > 16:
            raise InvalidConditionError(f"subject {cond.subject_type}:{cond.subject_id!r} is "
                                        f"too long")
        prior = out.get(cond.key)
        if prior is None or _SEVERITY_RANK[cond.severity] >= _SEVERITY_RANK[prior.severity]:
            out[cond.key] = cond
    return out


def reconcile(session: Session, *, bank_id: int, site_id: int | None,
              scope_kinds: Collection[str], conditions: Sequence[Condition], now_ms: int,
              clear_after_ticks: int, site_ids: Mapping[str, int],
              loan_ids: Mapping[str, int],
              muted_kinds: frozenset[str] = frozenset(),
              loan_id: int | None = None) -> ReconcileResult:
    """Make the alerts of one evaluation scope match ``conditions`` found at ``now_ms``.
    ``loan_id`` narrows the scope to one loan (loan-level rules judge one loan at a time, so
    another loan's evaluation must not count as this loan's condition being absent).

    The scope is (``bank_id``, ``site_id`` - None for loan/bank level rules -, the kinds in
    ``scope_kinds``): an active alert in that scope whose condition is absent counts one more
    absent evaluation, and resolves (actor "system", ``resolved_by`` "auto") after
    ``clear_after_ticks`` in a row. A condition opens an alert, or refreshes the active one
    of its (subject, kind), wherever it was opened. Kinds in ``muted_kinds`` are frozen: no
    alert of theirs opens or counts an absence (e.g. per-animal kinds while the site is
    offline). ``site_ids``/``loan_ids`` map the conditions' codes to ids.

    Raises :class:`InvalidConditionError` before writing anything if a condition breaks the
    contract. Does not commit."""
    if clear_after_ticks < 1:
        raise InvalidConditionError("clear_after_ticks must be >= 1")
    wanted = _check_conditions(conditions, scope_kinds)
    writer = _Writer(session, bank_id,
                     site_codes={v: k for k, v in site_ids.items()},
                     loan_codes={v: k for k, v in loan_ids.items()})
    scope = [k for k in scope_kinds if k not in muted_kinds]
    query = _fresh(Alert).where(Alert.bank_id == bank_id, Alert.active_key.is_not(None),
                                Alert.kind.in_(scope))
    query = query.where(Alert.site_id.is_(None) if site_id is None else Alert.site_id == site_id)
    if loan_id is not None:
        query = query.where(Alert.loan_id == loan_id)
    in_scope = {a.active_key: a for a in session.scalars(query)} if scope else {}

    opened: list[int] = []
    updated: list[int] = []
    resolved: list[int] = []
    unknown = 0
    seen: set[str] = set()
    for cond in wanted.values():
        if cond.kind in muted_kinds:
            continue
        key = active_key(bank_id, cond.subject_type, cond.subject_id, cond.kind)
        seen.add(key)
        alert = in_scope.get(key) or session.scalar(_fresh(Alert).where(Alert.active_key == key))
        if alert is None:
            alert_site, alert_loan, missing = _links(cond, site_id, site_ids, loan_ids)
            unknown += missing
            alert = _insert_alert(session, bank_id, key, cond, site_id=alert_site,
                                  loan_id=alert_loan, now_ms=now_ms)
            if alert is not None:
                writer.event(alert, action="opened", actor=SYSTEM_ACTOR, at_ms=now_ms,
                             from_state=None, note=None, first=True)
                opened.append(alert.id)
                continue
            # a concurrent writer opened it between our read and our insert: refresh theirs
            alert = session.scalar(_fresh(Alert).where(Alert.active_key == key))
            if alert is None:  # pragma: no cover - the insert failed for another reason
                raise InvalidConditionError(f"could not open {key}")
        _refresh(writer, alert, cond, now_ms)
        updated.append(alert.id)

    for scoped_key, alert in in_scope.items():
        if scoped_key in seen:
            continue
        alert.absent_ticks += 1
        if alert.absent_ticks >= clear_after_ticks:
            before = alert.state
            alert.state = next_state(before, "auto_resolve")
            alert.resolved_at_ms = now_ms
            alert.resolved_by = AUTO_RESOLVER
            alert.active_key = None
            writer.event(alert, action="resolved", actor=SYSTEM_ACTOR, at_ms=now_ms,
                         from_state=before,
                         note=f"condition absent for {alert.absent_ticks} evaluations")
            resolved.append(alert.id)
    session.flush()
    if unknown:
        log.warning("reconcile bank %s site %s: %d condition(s) named a site or loan code not "
                    "in the registry maps", bank_id, site_id, unknown)
    return ReconcileResult(tuple(opened), tuple(updated), tuple(resolved), unknown)


def _links(cond: Condition, scope_site: int | None, site_ids: Mapping[str, int],
           loan_ids: Mapping[str, int]) -> tuple[int | None, int | None, int]:
    missing = 0
    site = scope_site
    if cond.site_code is not None:
        found = site_ids.get(cond.site_code)
        if found is None:
            missing = 1
        else:
            site = found
    loan = None
    if cond.loan_code is not None:
        loan = loan_ids.get(cond.loan_code)
        if loan is None:
            missing = 1
    return site, loan, missing


def _insert_alert(session: Session, bank_id: int, key: str, cond: Condition, *,
                  site_id: int | None, loan_id: int | None, now_ms: int) -> Alert | None:
    """Insert a new active alert inside a SAVEPOINT; None if the UNIQUE ``active_key`` says
    another writer got there first (the savepoint is rolled back, the transaction goes on)."""
    alert = Alert(bank_id=bank_id, site_id=site_id, loan_id=loan_id, kind=cond.kind,
                  severity=cond.severity, state="open", subject_type=cond.subject_type,
                  subject_id=cond.subject_id, summary=cond.summary[:1000],
                  evidence=dict(cond.evidence), event_time_ms=cond.event_time_ms,
                  opened_at_ms=now_ms, last_seen_ms=now_ms, absent_ticks=0, active_key=key)
    try:
        with session.begin_nested():
            session.add(alert)
            session.flush()
    except IntegrityError:
        return None
    return alert


def _refresh(writer: _Writer, alert: Alert, cond: Condition, now_ms: int) -> None:
    state = next_state(alert.state, "refresh")
    old = alert.severity
    peak = max(old, cond.severity, key=_SEVERITY_RANK.__getitem__)
    evidence = dict(cond.evidence)
    if peak != cond.severity:
        evidence["severity_now"] = cond.severity
    alert.state = state
    alert.severity = peak
    alert.summary = cond.summary[:1000]
    alert.evidence = evidence
    alert.last_seen_ms = max(alert.last_seen_ms, now_ms)
    alert.absent_ticks = 0
    if peak != old:
        writer.event(alert, action="updated", actor=SYSTEM_ACTOR, at_ms=now_ms,
                     from_state=state, note=f"severity {old} -> {peak}")


# -- commands from people ---------------------------------------------------------------------


def user_actor(session: Session, user_id: int) -> str:
    """How a user appears in the audit trail: their e-mail (``user:<id>`` if gone)."""
    email = session.scalar(select(User.email).where(User.id == user_id))
    return email if email is not None else f"user:{user_id}"


def _own_alert(session: Session, alert_id: int, bank_id: int) -> Alert:
    alert = session.scalar(_fresh(Alert).where(Alert.id == alert_id, Alert.bank_id == bank_id))
    if alert is None:
        raise NotFoundError("alert")
    return alert


def acknowledge(session: Session, alert_id: int, *, bank_id: int, actor: str, now_ms: int,
                note: str | None = None) -> dict[str, Any]:
    """open -> acknowledged. :class:`NotFoundError` for another bank's alert,
    :class:`InvalidTransitionError` from any other state. Returns the alert (public form)."""
    writer = _Writer(session, bank_id)
    alert = _own_alert(session, alert_id, bank_id)
    before = alert.state
    alert.state = next_state(before, "acknowledge")
    alert.acknowledged_at_ms = now_ms
    event = writer.event(alert, action="acknowledged", actor=actor, at_ms=now_ms,
                         from_state=before, note=note)
    return _strip_event(event.payload)


def resolve(session: Session, alert_id: int, *, bank_id: int, actor: str, now_ms: int,
            note: str | None = None) -> dict[str, Any]:
    """open | acknowledged -> resolved by ``actor``. If the condition is still true, the next
    evaluation opens a new alert."""
    writer = _Writer(session, bank_id)
    alert = _own_alert(session, alert_id, bank_id)
    before = alert.state
    alert.state = next_state(before, "resolve")
    alert.resolved_at_ms = now_ms
    alert.resolved_by = actor
    alert.active_key = None
    event = writer.event(alert, action="resolved", actor=actor, at_ms=now_ms,
                         from_state=before, note=note)
    return _strip_event(event.payload)


def comment(session: Session, alert_id: int, *, bank_id: int, actor: str, now_ms: int,
            text: str) -> dict[str, Any]:
    """Add a comment (any state, resolved included). Returns ``{"at","author","text"}``."""
    if not text.strip():
        raise InvalidParamsError("text", "a comment needs some text")
    writer = _Writer(session, bank_id)
    alert = _own_alert(session, alert_id, bank_id)
    session.add(AlertComment(alert_id=alert.id, at_ms=now_ms, author=actor, text=text[:4000]))
    writer.event(alert, action="commented", actor=actor, at_ms=now_ms, from_state=alert.state,
                 note=text[:2000])
    return {"at": iso(now_ms), "author": actor, "text": text[:4000]}


def _strip_event(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ("action", "actor", "at")}


# -- reading alerts ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class AlertPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _encode_cursor(opened_at_ms: int, alert_id: int) -> str:
    raw = f"a:{opened_at_ms}:{alert_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        tag, ms, alert_id = raw.split(":")
        if tag != "a":
            raise ValueError(tag)
        return int(ms), int(alert_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursorError() from exc


def _split(values: str | Iterable[str] | None) -> list[str]:
    if values is None:
        return []
    items = values.split(",") if isinstance(values, str) else list(values)
    return [v.strip() for v in items if v.strip()]


def list_alerts(session: Session, *, bank_id: int, state: str | None = None,
                kind: str | None = None, severity: str | None = None,
                site_id: int | None = None, loan_id: int | None = None,
                since_ms: int | None = None, limit: int = 50,
                cursor: str | None = None) -> AlertPage:
    """The bank's alerts, newest first (by ``opened_at``, then id), keyset-paged.

    ``state``, ``kind`` and ``severity`` take one value or a comma-separated list; ``state``
    also takes ``active`` (open or acknowledged). ``since_ms``: opened at or after."""
    limit = max(1, min(limit, MAX_PAGE))
    query = (select(Alert, Site.code, Loan.code)
             .outerjoin(Site, Site.id == Alert.site_id)
             .outerjoin(Loan, Loan.id == Alert.loan_id)
             .where(Alert.bank_id == bank_id))
    states = _split(state)
    if "active" in states:
        states = [s for s in states if s != "active"] + ["open", "acknowledged"]
    if states:
        query = query.where(Alert.state.in_(states))
    if kinds := _split(kind):
        query = query.where(Alert.kind.in_(kinds))
    if severities := _split(severity):
        query = query.where(Alert.severity.in_(severities))
    if site_id is not None:
        query = query.where(Alert.site_id == site_id)
    if loan_id is not None:
        query = query.where(Alert.loan_id == loan_id)
    if since_ms is not None:
        query = query.where(Alert.opened_at_ms >= since_ms)
    if cursor:
        ms, last_id = _decode_cursor(cursor)
        query = query.where(or_(Alert.opened_at_ms < ms,
                                and_(Alert.opened_at_ms == ms, Alert.id < last_id)))
    rows = session.execute(query.order_by(Alert.opened_at_ms.desc(), Alert.id.desc())
                           .limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [alert_public(a, site_code=s, loan_code=lo) for a, s, lo in rows]
    next_cursor = _encode_cursor(rows[-1][0].opened_at_ms, rows[-1][0].id) if more else None
    return AlertPage(items, next_cursor)


def get_alert(session: Session, alert_id: int, *, bank_id: int) -> dict[str, Any]:
    """One alert with its evidence, audit trail (oldest first) and comments."""
    row = session.execute(
        select(Alert, Site.code, Loan.code)
        .outerjoin(Site, Site.id == Alert.site_id)
        .outerjoin(Loan, Loan.id == Alert.loan_id)
        .where(Alert.id == alert_id, Alert.bank_id == bank_id)).one_or_none()
    if row is None:
        raise NotFoundError("alert")
    alert, site, loan = row
    out = alert_public(alert, site_code=site, loan_code=loan)
    out["evidence"] = alert.evidence
    out["audit"] = [
        {"at": iso(e.at_ms), "actor": e.actor, "action": e.action,
         "from_state": e.from_state, "to_state": e.to_state, "note": e.note}
        for e in session.scalars(select(AlertEvent).where(AlertEvent.alert_id == alert.id)
                                 .order_by(AlertEvent.seq))]
    out["comments"] = [
        {"at": iso(c.at_ms), "author": c.author, "text": c.text}
        for c in session.scalars(select(AlertComment).where(AlertComment.alert_id == alert.id)
                                 .order_by(AlertComment.id))]
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEvent:
    id: int  # the SSE event id
    data: dict[str, Any]  # the alert as it was after the event, plus action, actor, at


def events_after(session: Session, *, bank_id: int, after_id: int,
                 limit: int = 100) -> list[StreamEvent]:
    """The bank's events with id > ``after_id``, oldest first, at most ``limit``."""
    rows = session.execute(
        select(AlertEvent.id, AlertEvent.payload)
        .where(AlertEvent.bank_id == bank_id, AlertEvent.id > after_id)
        .order_by(AlertEvent.id).limit(limit)).all()
    return [StreamEvent(event_id, {**payload, "event_id": event_id})
            for event_id, payload in rows]


def latest_event_id(session: Session, *, bank_id: int) -> int:
    """The newest event id of the bank (0 if none): where a fresh stream starts."""
    return int(session.scalar(select(func.max(AlertEvent.id))
                              .where(AlertEvent.bank_id == bank_id)) or 0)


# -- rule parameters --------------------------------------------------------------------------

_PARAM_FIELDS: Final = {f.name: f for f in dataclasses.fields(RuleParams)}
_DEFAULTS: Final = RuleParams()
# at least one: intervals, windows and counts that a zero would break
_POSITIVE: Final = frozenset(name for name in _PARAM_FIELDS
                             if name.endswith("_ms") or name in (
                                 "clear_after_ticks", "baseline_days", "herd_drop_min_heads",
                                 "cusum_h", "health_z"))
# fractions of a whole
_UNIT_INTERVAL: Final = frozenset(name for name in _PARAM_FIELDS
                                  if name.endswith("_fraction") or name in (
                                      "stock_tolerance", "tare_tolerance",
                                      "health_factor_sick"))


_MAX_DURATION_MS: Final = 30 * 86_400_000
_MAX_BASELINE_DAYS: Final = 60


def validate_params(params: Mapping[str, object]) -> dict[str, int | float]:
    """Check overrides against :class:`RuleParams`: known keys, the field's type (an int field
    takes integers only; a float field takes any finite number), and range (durations and
    counts >= 1, fractions in [0, 1], everything else >= 0; durations at most 30 days,
    baseline_days at most 60, eval_interval_ms a divisor of an hour of 1 s or more). Raises
    :class:`InvalidParamsError` naming the first bad key."""
    out: dict[str, int | float] = {}
    for key, value in params.items():
        if key not in _PARAM_FIELDS:
            raise InvalidParamsError(key, f"unknown parameter (known: {sorted(_PARAM_FIELDS)})")
        default = getattr(_DEFAULTS, key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidParamsError(key, f"must be a number, got {type(value).__name__}")
        number: int | float
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise InvalidParamsError(key, f"must be an integer, got {value!r}")
            number = int(value)
        else:
            if not math.isfinite(value):
                raise InvalidParamsError(key, "must be finite")
            number = float(value)
        if key in _POSITIVE and number < 1:
            raise InvalidParamsError(key, f"must be >= 1, got {value!r}")
        if key in _UNIT_INTERVAL and not 0 <= number <= 1:
            raise InvalidParamsError(key, f"must be between 0 and 1, got {value!r}")
        if number < 0:
            raise InvalidParamsError(key, f"must be >= 0, got {value!r}")
        # the rules engine is shared by every bank: no override may make it evaluate
        # without end or allocate without bound
        if key == "eval_interval_ms" and (number < 1_000 or 3_600_000 % number):
            raise InvalidParamsError(key, "must be at least 1000 (1 s) and divide an hour "
                                          f"(valuations run on whole hours), got {value!r}")
        if key.endswith("_ms") and number > _MAX_DURATION_MS:
            raise InvalidParamsError(key, f"must be <= {_MAX_DURATION_MS} (30 days), "
                                          f"got {value!r}")
        if key == "baseline_days" and number > _MAX_BASELINE_DAYS:
            raise InvalidParamsError(key, f"must be <= {_MAX_BASELINE_DAYS}, got {value!r}")
        out[key] = number
    return out


def _scope_key(bank_id: int, site_id: int | None) -> str:
    return f"bank:{bank_id}" if site_id is None else f"site:{site_id}"


def _valid_stored(params: Mapping[str, object], where: str) -> dict[str, int | float]:
    """Stored overrides, skipping any a newer RuleParams no longer accepts (logged)."""
    out: dict[str, int | float] = {}
    for key, value in params.items():
        try:
            out.update(validate_params({key: value}))
        except InvalidParamsError as exc:
            log.warning("ignoring stored rule override %s of %s: %s", key, where, exc)
    return out


def rule_params(session: Session, bank_id: int, site_id: int | None = None) -> RuleParams:
    """Effective parameters: defaults, then the bank's overrides, then the site's."""
    keys = [_scope_key(bank_id, None)]
    if site_id is not None:
        keys.append(_scope_key(bank_id, site_id))
    rows = {r.scope_key: r for r in session.scalars(
        select(RuleConfig).where(RuleConfig.bank_id == bank_id,
                                 RuleConfig.scope_key.in_(keys)))}
    merged: dict[str, int | float] = {}
    for key in keys:
        if key in rows:
            merged.update(_valid_stored(rows[key].params, key))
    return dataclasses.replace(_DEFAULTS, **merged)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True, slots=True)
class RulesView:
    defaults: dict[str, int | float]
    bank: dict[str, int | float]  # the bank's overrides
    sites: dict[int, dict[str, int | float]]  # site id -> its overrides
    effective: dict[str, int | float]  # defaults < bank (sites add to this per site)


def rules_view(session: Session, *, bank_id: int) -> RulesView:
    rows = session.scalars(select(RuleConfig).where(RuleConfig.bank_id == bank_id)
                           .order_by(RuleConfig.id)).all()
    bank: dict[str, int | float] = {}
    sites: dict[int, dict[str, int | float]] = {}
    for row in rows:
        params = _valid_stored(row.params, row.scope_key)
        if row.site_id is None:
            bank = params
        else:
            sites[row.site_id] = params
    defaults = dataclasses.asdict(_DEFAULTS)
    return RulesView(defaults=defaults, bank=bank, sites=sites, effective={**defaults, **bank})


def set_rule_params(session: Session, *, bank_id: int, site_id: int | None,
                    params: Mapping[str, object], actor: str, now_ms: int) -> RuleParams:
    """Replace the overrides of the bank (``site_id`` None) or of one of its sites
    (:class:`NotFoundError` for another bank's site); ``{}`` clears them. Returns the
    effective parameters of that scope."""
    clean = validate_params(params)
    if site_id is not None and session.scalar(
            select(Site.id).where(Site.id == site_id, Site.bank_id == bank_id)) is None:
        raise NotFoundError("site")
    key = _scope_key(bank_id, site_id)
    begin_write(session)
    row = session.scalar(select(RuleConfig).where(RuleConfig.scope_key == key))
    if row is None:
        try:
            with session.begin_nested():
                session.add(RuleConfig(bank_id=bank_id, site_id=site_id, scope_key=key,
                                       params=clean, updated_at_ms=now_ms, updated_by=actor))
                session.flush()
        except IntegrityError:  # a concurrent admin created the row: overwrite it
            row = session.scalar(select(RuleConfig).where(RuleConfig.scope_key == key))
            if row is None:  # pragma: no cover - the insert failed for another reason
                raise
    if row is not None:
        row.params = clean
        row.updated_at_ms = now_ms
        row.updated_by = actor
    session.flush()
    return rule_params(session, bank_id, site_id)


# -- valuation history ------------------------------------------------------------------------

_CENT: Final = Decimal("0.01")


def _money(name: str, value: float | Decimal) -> Decimal:
    number = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    if not number.is_finite():
        raise InvalidValuationError(f"{name} must be finite, got {value!r}")
    return number.quantize(_CENT)


def _ratio(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def record_valuation(session: Session, loan_id: int, ts_ms: int, *, value: float,
                     low: float, high: float, coverage: float | None, ltv: float | None,
                     status: str, livestock: float, inventory: float) -> None:
    """Store (or overwrite: a replay recomputes the same instant) the valuation of
    ``loan_id`` at event time ``ts_ms``. Money is stored to the cent; a coverage or LTV that
    is not finite (nothing outstanding, or no collateral) is stored as NULL."""
    if status not in VALUATION_STATUSES:
        raise InvalidValuationError(f"status {status!r} is not one of {VALUATION_STATUSES}")
    columns = {"value": _money("value", value), "low": _money("low", low),
               "high": _money("high", high), "livestock": _money("livestock", livestock),
               "inventory": _money("inventory", inventory), "coverage": _ratio(coverage),
               "ltv": _ratio(ltv), "status": status}
    query = select(Valuation).where(Valuation.loan_id == loan_id, Valuation.ts_ms == ts_ms)
    begin_write(session)
    row = session.scalar(query)
    if row is None:
        try:
            with session.begin_nested():
                session.add(Valuation(loan_id=loan_id, ts_ms=ts_ms, **columns))
                session.flush()
            return
        except IntegrityError:
            row = session.scalar(query)
            if row is None:
                raise
    for name, val in columns.items():
        setattr(row, name, val)
    session.flush()


@dataclasses.dataclass(frozen=True, slots=True)
class ValuationPoint:
    as_of: str
    value: float
    low: float
    high: float
    coverage: float | None
    ltv: float | None
    status: str
    livestock: float
    inventory: float


@dataclasses.dataclass(frozen=True, slots=True)
class ValuationView:
    loan_id: int
    loan: str
    currency: str
    now: ValuationPoint | None
    history: list[ValuationPoint]


def _point(v: Valuation) -> ValuationPoint:
    return ValuationPoint(as_of=iso(v.ts_ms), value=float(v.value), low=float(v.low),
                          high=float(v.high), coverage=v.coverage, ltv=v.ltv, status=v.status,
                          livestock=float(v.livestock), inventory=float(v.inventory))


def valuation_history(session: Session, *, bank_id: int, loan_id: int,
                      since_ms: int | None = None, until_ms: int | None = None,
                      limit: int = 1000) -> ValuationView:
    """The loan's newest valuation (``now``) and its history in time order: the newest
    ``limit`` points with ``since_ms <= ts <= until_ms``. Another bank's loan: NotFound."""
    loan = session.scalar(select(Loan).where(Loan.id == loan_id, Loan.bank_id == bank_id))
    if loan is None:
        raise NotFoundError("loan")
    latest = session.scalar(select(Valuation).where(Valuation.loan_id == loan_id)
                            .order_by(Valuation.ts_ms.desc()).limit(1))
    query = select(Valuation).where(Valuation.loan_id == loan_id)
    if since_ms is not None:
        query = query.where(Valuation.ts_ms >= since_ms)
    if until_ms is not None:
        query = query.where(Valuation.ts_ms <= until_ms)
    rows = session.scalars(query.order_by(Valuation.ts_ms.desc())
                           .limit(max(1, min(limit, 10_000)))).all()
    return ValuationView(loan_id=loan.id, loan=loan.code, currency=loan.currency,
                         now=_point(latest) if latest is not None else None,
                         history=[_point(v) for v in reversed(rows)])
