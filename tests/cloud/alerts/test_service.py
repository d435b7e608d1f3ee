"""The alert lifecycle service against real SQLite and PostgreSQL: open -> ack -> resolve with
audit rows, auto-resolve with hysteresis, muted kinds, severity escalation, tenancy, the
database's one-active-alert rule under concurrent openers, rule parameters, valuations."""

from __future__ import annotations

import itertools
import threading
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.exc import IntegrityError

from cloud.alerts import service
from cloud.alerts.models import Alert, AlertComment, AlertEvent, Valuation
from cloud.domain.model import RuleParams
from cloud.read import BadCursorError, NotFoundError
from tests.cloud.alerts.helpers import EPCS, T0, SeededBank, cond, run
from tests.cloud.conftest import Db

MIN = 60_000


def _events(db: Db, alert_id: int) -> list[tuple[int, str, str | None, str, str]]:
    with db.sessions() as s:
        return [(e.seq, e.action, e.from_state, e.to_state, e.actor)
                for e in s.scalars(select(AlertEvent).where(AlertEvent.alert_id == alert_id)
                                   .order_by(AlertEvent.seq))]


def _alert(db: Db, alert_id: int) -> Alert:
    with db.sessions() as s:
        alert = s.get(Alert, alert_id)
        assert alert is not None
        return alert


def test_open_ack_resolve_writes_the_audit_trail(db: Db, world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    first = run(db.sessions, alpha, [cond(site=alpha.ranch, loan=alpha.loan, seen=3)],
                now=T0)
    assert len(first.opened) == 1 and not first.updated and not first.resolved
    alert_id = first.opened[0]
    again = run(db.sessions, alpha, [cond(site=alpha.ranch, loan=alpha.loan, seen=4)],
                now=T0 + 10 * MIN)
    assert again.opened == () and again.updated == (alert_id,)

    with db.sessions.begin() as s:
        acked = service.acknowledge(s, alert_id, bank_id=alpha.id, actor="ana@alpha.test",
                                    now_ms=T0 + 11 * MIN, note="on it")
    assert acked["state"] == "acknowledged"
    assert acked["acknowledged_at"] == "2026-01-01T00:11:00.000Z"
    with db.sessions.begin() as s:
        service.comment(s, alert_id, bank_id=alpha.id, actor="ana@alpha.test",
                        now_ms=T0 + 12 * MIN, text="called the ranch")
        done = service.resolve(s, alert_id, bank_id=alpha.id, actor="ana@alpha.test",
                               now_ms=T0 + 13 * MIN, note="animal found")
    assert done["state"] == "resolved" and done["resolved_by"] == "ana@alpha.test"

    assert _events(db, alert_id) == [
        (1, "opened", None, "open", "system"),
        (2, "acknowledged", "open", "acknowledged", "ana@alpha.test"),
        (3, "commented", "acknowledged", "acknowledged", "ana@alpha.test"),
        (4, "resolved", "acknowledged", "resolved", "ana@alpha.test"),
    ]
    alert = _alert(db, alert_id)
    assert alert.active_key is None and alert.resolved_at_ms == T0 + 13 * MIN
    assert alert.evidence == {"seen": 4}  # refreshed by the second evaluation
    assert alert.last_seen_ms == T0 + 10 * MIN and alert.opened_at_ms == T0
    with db.sessions() as s:
        detail = service.get_alert(s, alert_id, bank_id=alpha.id)
    assert detail["site"] == alpha.ranch and detail["loan"] == alpha.loan
    assert [a["action"] for a in detail["audit"]] == [
        "opened", "acknowledged", "commented", "resolved"]
    assert detail["audit"][1]["note"] == "on it"
    assert detail["comments"] == [{"at": "2026-01-01T00:12:00.000Z",
                                   "author": "ana@alpha.test", "text": "called the ranch"}]

    # the condition is still true after a manual resolve: the next evaluation opens anew
    reopened = run(db.sessions, alpha, [cond(site=alpha.ranch, loan=alpha.loan)],
                   now=T0 + 20 * MIN)
    assert len(reopened.opened) == 1 and reopened.opened[0] != alert_id


def test_invalid_transitions_are_conflicts(db: Db, world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    alert_id = run(db.sessions, alpha, [cond(site=alpha.ranch)], now=T0).opened[0]
    with db.sessions.begin() as s:
        service.acknowledge(s, alert_id, bank_id=alpha.id, actor="a", now_ms=T0)
    with db.sessions() as s, pytest.raises(service.InvalidTransitionError) as info:
        service.acknowledge(s, alert_id, bank_id=alpha.id, actor="a", now_ms=T0)
    assert info.value.reason == "invalid_transition"
    with db.sessions.begin() as s:
        service.resolve(s, alert_id, bank_id=alpha.id, actor="a", now_ms=T0)
    for action in (service.acknowledge, service.resolve):
        with db.sessions() as s, pytest.raises(service.InvalidTransitionError):
            action(s, alert_id, bank_id=alpha.id, actor="a", now_ms=T0)
    with db.sessions.begin() as s:  # a resolved alert still takes comments
        service.comment(s, alert_id, bank_id=alpha.id, actor="a", now_ms=T0, text="post mortem")
    assert [e[1] for e in _events(db, alert_id)] == [
        "opened", "acknowledged", "resolved", "commented"]


def test_another_banks_alert_is_not_found(db: Db, world: dict[str, SeededBank]) -> None:
    alpha, beta = world["alpha"], world["beta"]
    alert_id = run(db.sessions, alpha, [cond(site=alpha.ranch)], now=T0).opened[0]
    calls: list[Any] = [
        lambda s: service.acknowledge(s, alert_id, bank_id=beta.id, actor="x", now_ms=T0),
        lambda s: service.resolve(s, alert_id, bank_id=beta.id, actor="x", now_ms=T0),
        lambda s: service.comment(s, alert_id, bank_id=beta.id, actor="x", now_ms=T0,
                                  text="hi"),
        lambda s: service.get_alert(s, alert_id, bank_id=beta.id),
    ]
    for call in calls:
        with db.sessions() as s, pytest.raises(NotFoundError):
            call(s)
    with db.sessions() as s:
        assert service.list_alerts(s, bank_id=beta.id).items == []
        assert service.events_after(s, bank_id=beta.id, after_id=0) == []
    assert _alert(db, alert_id).state == "open"


def test_auto_resolve_after_clear_after_ticks_absences(db: Db,
                                                       world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    alert_id = run(db.sessions, alpha, [cond(site=alpha.ranch)], now=T0, clear=3).opened[0]
    with db.sessions.begin() as s:  # acknowledged alerts auto-resolve too
        service.acknowledge(s, alert_id, bank_id=alpha.id, actor="a", now_ms=T0 + 1)
    assert run(db.sessions, alpha, [], now=T0 + 10 * MIN, clear=3).resolved == ()
    assert run(db.sessions, alpha, [], now=T0 + 20 * MIN, clear=3).resolved == ()
    assert _alert(db, alert_id).absent_ticks == 2
    # present again: the count starts over (hysteresis, not a sum of absences)
    assert run(db.sessions, alpha, [cond(site=alpha.ranch)], now=T0 + 30 * MIN,
               clear=3).updated == (alert_id,)
    assert _alert(db, alert_id).absent_ticks == 0
    for k in (4, 5):
        assert run(db.sessions, alpha, [], now=T0 + k * 10 * MIN, clear=3).resolved == ()
    result = run(db.sessions, alpha, [], now=T0 + 60 * MIN, clear=3)
    assert result.resolved == (alert_id,)
    alert = _alert(db, alert_id)
    assert (alert.state, alert.resolved_by, alert.resolved_at_ms, alert.active_key) == (
        "resolved", "auto", T0 + 60 * MIN, None)
    assert _events(db, alert_id)[-1] == (3, "resolved", "acknowledged", "resolved", "system")


def test_absence_counts_only_inside_the_scope(db: Db, world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    ranch = run(db.sessions, alpha, [cond(site=alpha.ranch)], now=T0, clear=1).opened[0]
    loan_level = run(db.sessions, alpha, [cond("coverage_breach", alpha.loan, site=None,
                                               loan=alpha.loan, subject_type="loan")],
                     now=T0, site_id=None, clear=1).opened[0]
    # another site's evaluation, and a kind outside the scope, leave both alone
    run(db.sessions, alpha, [], now=T0 + MIN, site_id=alpha.warehouse_id, clear=1)
    run(db.sessions, alpha, [], now=T0 + MIN, kinds=("tag_inactive",), clear=1)
    assert _alert(db, ranch).state == "open"
    assert _alert(db, loan_level).state == "open"
    assert _alert(db, loan_level).site_id is None
    assert run(db.sessions, alpha, [], now=T0 + 2 * MIN, site_id=None,
               kinds=("coverage_breach",), clear=1).resolved == (loan_level,)
    assert _alert(db, ranch).state == "open"


def test_muted_kinds_neither_open_nor_count_absence(db: Db,
                                                    world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    muted = frozenset({"animal_missing"})
    active = run(db.sessions, alpha, [cond(subject=EPCS[3], site=alpha.ranch)], now=T0,
                 clear=1).opened[0]
    result = run(db.sessions, alpha, [cond(subject=EPCS[4], site=alpha.ranch),
                                      cond("tag_inactive", EPCS[5], site=alpha.ranch)],
                 now=T0 + MIN, clear=1, muted=muted)
    assert len(result.opened) == 1  # the tag_inactive one only
    assert result.resolved == ()
    assert _alert(db, active).state == "open" and _alert(db, active).absent_ticks == 0
    with db.sessions() as s:
        kinds = s.scalars(select(Alert.kind).where(Alert.bank_id == alpha.id)).all()
    assert sorted(kinds) == ["animal_missing", "tag_inactive"]
    # unmuted: the absence counts again
    assert run(db.sessions, alpha, [cond("tag_inactive", EPCS[5], site=alpha.ranch)],
               now=T0 + 2 * MIN, clear=1).resolved == (active,)


def test_severity_escalates_and_never_silently_drops(db: Db,
                                                     world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    c = cond("coverage_breach", alpha.loan, site=None, loan=alpha.loan, subject_type="loan",
             severity="warning")
    alert_id = run(db.sessions, alpha, [c], now=T0, site_id=None).opened[0]
    run(db.sessions, alpha, [cond("coverage_breach", alpha.loan, site=None, loan=alpha.loan,
                                  subject_type="loan", severity="critical")],
        now=T0 + MIN, site_id=None)
    run(db.sessions, alpha, [c], now=T0 + 2 * MIN, site_id=None)
    alert = _alert(db, alert_id)
    assert alert.severity == "critical"
    assert alert.evidence == {"severity_now": "warning"}
    # one "updated" event for the escalation; refreshes at the same severity write none
    assert [e[1] for e in _events(db, alert_id)] == ["opened", "updated"]


def test_duplicate_conditions_in_one_call_give_one_alert(db: Db,
                                                         world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    result = run(db.sessions, alpha, [cond(site=alpha.ranch, severity="warning"),
                                      cond(site=alpha.ranch, severity="critical"),
                                      cond(site=alpha.ranch, severity="high")], now=T0)
    assert len(result.opened) == 1
    assert _alert(db, result.opened[0]).severity == "critical"


def test_bad_conditions_are_refused_before_anything_is_written(
        db: Db, world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    bad = [
        [cond(site=alpha.ranch, severity="apocalyptic")],
        [cond("animal_missing", "", site=alpha.ranch)],
        [cond("coverage_breach", alpha.loan, site=None)],  # outside the scope below
    ]
    for conditions in bad:
        with db.sessions() as s, pytest.raises(service.InvalidConditionError):
            service.reconcile(s, bank_id=alpha.id, site_id=alpha.ranch_id,
                              scope_kinds=("animal_missing",), conditions=conditions,
                              now_ms=T0, clear_after_ticks=2, site_ids={}, loan_ids={})
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Alert)) == 0


def test_unknown_codes_keep_the_alert_without_the_link(db: Db,
                                                       world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    result = run(db.sessions, alpha, [cond(site="nowhere", loan="no-loan")], now=T0)
    assert result.unknown_refs == 1
    alert = _alert(db, result.opened[0])
    assert (alert.site_id, alert.loan_id) == (alpha.ranch_id, None)


def test_the_database_refuses_a_second_active_alert(db: Db,
                                                    world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    alert_id = run(db.sessions, alpha, [cond(site=alpha.ranch)], now=T0).opened[0]
    key = _alert(db, alert_id).active_key
    assert key == f"{alpha.id}:animal:{EPCS[2]}:animal_missing"
    fields: dict[str, Any] = dict(
        bank_id=alpha.id, kind="animal_missing", severity="high", subject_type="animal",
        subject_id=EPCS[2], summary="dup", evidence={}, event_time_ms=T0, opened_at_ms=T0,
        last_seen_ms=T0, absent_ticks=0)
    with pytest.raises(IntegrityError), db.sessions.begin() as s:
        s.add(Alert(state="open", active_key=key, **fields))
    with pytest.raises(IntegrityError), db.sessions.begin() as s:  # state and key agree
        s.add(Alert(state="resolved", active_key="other", **fields))
    with db.sessions.begin() as s:  # resolved ones pile up freely
        s.add_all(Alert(state="resolved", active_key=None, **fields) for _ in range(2))


def test_concurrent_openers_make_one_alert(db: Db, world: dict[str, SeededBank]) -> None:
    """Two processes' worth of writers (own engines) reconcile the same conditions at once,
    several rounds: every subject ends with exactly one active alert and one "opened"."""
    alpha = world["alpha"]
    factories = [db.another_sessionmaker(), db.another_sessionmaker()]
    rounds = 4
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    results: list[service.ReconcileResult] = []

    def writer(i: int) -> None:
        try:
            for r in range(rounds):
                conditions = [cond(subject=f"RACE{r}", site=alpha.ranch),
                              cond("tag_inactive", f"RACE{r}", site=alpha.ranch)]
                barrier.wait(timeout=30)
                results.append(run(factories[i], alpha, conditions, now=T0 + r * MIN,
                                   clear=99))
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(i,), name=f"writer-{i}")
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    opened = list(itertools.chain.from_iterable(r.opened for r in results))
    assert len(opened) == 2 * rounds == len(set(opened))
    with db.sessions() as s:
        rows = s.execute(select(Alert.subject_id, Alert.kind, func.count())
                         .where(Alert.active_key.is_not(None))
                         .group_by(Alert.subject_id, Alert.kind)).all()
        assert sorted(rows) == sorted(
            (f"RACE{r}", k, 1) for r in range(rounds) for k in ("animal_missing",
                                                                "tag_inactive"))
        opened_events = s.scalar(select(func.count()).select_from(AlertEvent)
                                 .where(AlertEvent.action == "opened"))
    assert opened_events == 2 * rounds


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_losing_the_insert_race_refreshes_the_winner(db: Db,
                                                     world: dict[str, SeededBank]) -> None:
    """A writer that does not take the alert write lock (an older process, a manual fix)
    commits the same active alert between reconcile's read and its insert: the UNIQUE key
    refuses the insert, the SAVEPOINT is rolled back, the winner is refreshed and the rest
    of the transaction commits. PostgreSQL only: on SQLite the reconciler holds the
    database's single write lock from its first statement, so no other writer can get in
    between."""
    alpha = world["alpha"]
    other = create_engine(db.url, isolation_level="AUTOCOMMIT")
    db.engines.append(other)
    key = f"{alpha.id}:animal:{EPCS[2]}:animal_missing"
    winner: list[int] = []

    def sneak_in(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO alerts") and not winner:
            with other.connect() as c:
                winner.append(c.execute(text(
                    "INSERT INTO alerts (bank_id, kind, severity, state, subject_type, "
                    "subject_id, summary, evidence, event_time_ms, opened_at_ms, "
                    "last_seen_ms, absent_ticks, active_key) VALUES (:b, 'animal_missing', "
                    "'warning', 'open', 'animal', :s, 'theirs', '{}', 1, 1, 1, 0, :k) "
                    "RETURNING id"), {"b": alpha.id, "s": EPCS[2], "k": key}).scalar_one())

    event.listen(db.engine, "before_cursor_execute", sneak_in)
    try:
        result = run(db.sessions, alpha, [cond(site=alpha.ranch, severity="critical"),
                                          cond("tag_inactive", EPCS[3], site=alpha.ranch)],
                     now=T0)
    finally:
        event.remove(db.engine, "before_cursor_execute", sneak_in)
    assert winner and result.updated == (winner[0],)
    assert len(result.opened) == 1  # the other condition's alert, same transaction
    alert = _alert(db, winner[0])
    assert (alert.severity, alert.last_seen_ms, alert.summary) == (
        "critical", T0, f"animal_missing {EPCS[2]}")
    assert [e[1] for e in _events(db, winner[0])] == ["updated"]


def test_state_machine_table_covers_every_pair() -> None:
    for state in ("open", "acknowledged", "resolved"):
        for command in service.COMMANDS:
            if (state, command) in service.TRANSITIONS:
                assert service.next_state(state, command) == service.TRANSITIONS[
                    (state, command)]
            else:
                with pytest.raises(service.InvalidTransitionError):
                    service.next_state(state, command)
    assert all(to in ("open", "acknowledged", "resolved")
               for to in service.TRANSITIONS.values())
    assert not any(state == "resolved" for state, _ in service.TRANSITIONS)


# -- listing ----------------------------------------------------------------------------------


def test_list_filters_and_cursor_pages(db: Db, world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    ids = []
    for i in range(7):  # opened at T0 + i min; pairs share a time so the id breaks ties
        kind = "animal_missing" if i % 2 else "tag_inactive"
        ids.append(run(db.sessions, alpha, [cond(kind, f"A{i}", site=alpha.ranch,
                                                 severity="high" if i < 4 else "warning")],
                       now=T0 + (i // 2) * MIN, clear=99, kinds=(kind,)).opened[0])
    with db.sessions.begin() as s:
        service.acknowledge(s, ids[0], bank_id=alpha.id, actor="a", now_ms=T0)
        service.resolve(s, ids[1], bank_id=alpha.id, actor="a", now_ms=T0)
    newest_first = sorted(ids, key=lambda i: ((ids.index(i)) // 2, i), reverse=True)

    def pages(**filters: Any) -> list[int]:
        out, cursor, n = [], None, 0
        with db.sessions() as s:
            while True:
                page = service.list_alerts(s, bank_id=alpha.id, limit=2, cursor=cursor,
                                           **filters)
                out += [a["id"] for a in page.items]
                n += 1
                cursor = page.next_cursor
                if cursor is None:
                    return out
                assert n < 10

    assert pages() == newest_first
    assert pages(state="open") == [i for i in newest_first if i not in ids[:2]]
    assert pages(state="active") == [i for i in newest_first if i != ids[1]]
    assert pages(state="acknowledged,resolved") == [ids[1], ids[0]]
    assert pages(kind="animal_missing") == [i for i in newest_first if ids.index(i) % 2]
    assert pages(severity="warning") == [i for i in newest_first if ids.index(i) >= 4]
    assert pages(since_ms=T0 + 2 * MIN) == [i for i in newest_first if ids.index(i) >= 4]
    assert pages(site_id=alpha.warehouse_id) == []
    assert pages(loan_id=alpha.loan_ids[alpha.loan]) == []
    with db.sessions() as s, pytest.raises(BadCursorError):
        service.list_alerts(s, bank_id=alpha.id, cursor="bm9wZQ")


# -- rule parameters --------------------------------------------------------------------------


def test_rule_params_merge_defaults_bank_site(db: Db, world: dict[str, SeededBank]) -> None:
    alpha, beta = world["alpha"], world["beta"]
    with db.sessions.begin() as s:
        service.set_rule_params(s, bank_id=alpha.id, site_id=None, actor="admin",
                                now_ms=T0, params={"missing_after_ms": 6 * 3_600_000,
                                                   "clear_after_ticks": 5})
        eff = service.set_rule_params(s, bank_id=alpha.id, site_id=alpha.ranch_id,
                                      actor="admin", now_ms=T0,
                                      params={"clear_after_ticks": 2, "cusum_h": 5})
    assert (eff.missing_after_ms, eff.clear_after_ticks, eff.cusum_h) == (
        6 * 3_600_000, 2, 5.0)
    assert isinstance(eff.cusum_h, float)
    with db.sessions() as s:
        assert service.rule_params(s, alpha.id, alpha.warehouse_id).clear_after_ticks == 5
        assert service.rule_params(s, alpha.id).clear_after_ticks == 5
        assert service.rule_params(s, beta.id, beta.ranch_id) == RuleParams()
        with pytest.raises(NotFoundError):
            service.set_rule_params(s, bank_id=beta.id, site_id=alpha.ranch_id, params={},
                                    actor="x", now_ms=T0)
    with db.sessions.begin() as s:  # {} clears the site's overrides
        service.set_rule_params(s, bank_id=alpha.id, site_id=alpha.ranch_id, params={},
                                actor="admin", now_ms=T0)
    with db.sessions() as s:
        assert service.rule_params(s, alpha.id, alpha.ranch_id).clear_after_ticks == 5
        view = service.rules_view(s, bank_id=alpha.id)
    assert view.bank == {"missing_after_ms": 6 * 3_600_000, "clear_after_ticks": 5}
    assert view.sites == {alpha.ranch_id: {}}


@pytest.mark.parametrize("params,key", [
    ({"no_such_rule": 1}, "no_such_rule"),
    ({"clear_after_ticks": 1.5}, "clear_after_ticks"),
    ({"clear_after_ticks": 0}, "clear_after_ticks"),
    ({"clear_after_ticks": True}, "clear_after_ticks"),
    ({"missing_after_ms": "12h"}, "missing_after_ms"),
    ({"herd_drop_fraction": 1.5}, "herd_drop_fraction"),
    ({"cusum_k": -1}, "cusum_k"),
    ({"cusum_k": float("nan")}, "cusum_k"),
    ({"mixed_load_tolerance_kg": None}, "mixed_load_tolerance_kg"),
])
def test_validate_params_names_the_bad_key(params: dict[str, object], key: str) -> None:
    with pytest.raises(service.InvalidParamsError) as info:
        service.validate_params(params)
    assert info.value.key == key and key in str(info.value)


def test_validate_params_accepts_numbers_of_the_right_kind() -> None:
    assert service.validate_params({"clear_after_ticks": 4.0, "cusum_k": 1,
                                    "herd_drop_fraction": 0}) == {
        "clear_after_ticks": 4, "cusum_k": 1.0, "herd_drop_fraction": 0.0}


# -- valuations -------------------------------------------------------------------------------


def test_record_valuation_upserts_and_history_reads_back(db: Db,
                                                        world: dict[str, SeededBank]) -> None:
    alpha, beta = world["alpha"], world["beta"]
    loan = alpha.loan_ids[alpha.loan]
    hour = 3_600_000
    with db.sessions.begin() as s:
        for i in range(5):
            service.record_valuation(s, loan, T0 + i * hour, value=1_000_000.0 - i,
                                     low=900_000.004, high=1_100_000.5, coverage=1.0,
                                     ltv=1.0, status="ok", livestock=700_000.0,
                                     inventory=300_000.0 - i)
        # the same instant again (a replay): overwritten, not duplicated
        service.record_valuation(s, loan, T0 + 4 * hour, value=800_000.0, low=700_000.0,
                                 high=900_000.0, coverage=0.8, ltv=1.25,
                                 status="liquidation", livestock=500_000.0,
                                 inventory=300_000.0)
        service.record_valuation(s, alpha.loan_ids["alpha-L2"], T0, value=1.0, low=1.0,
                                 high=1.0, coverage=float("inf"), ltv=0.0, status="ok",
                                 livestock=1.0, inventory=0.0)
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Valuation)
                        .where(Valuation.loan_id == loan)) == 5
        row = s.scalar(select(Valuation).where(Valuation.ts_ms == T0))
        assert row is not None and row.low == Decimal("900000.00")
        view = service.valuation_history(s, bank_id=alpha.id, loan_id=loan)
        assert view.now is not None and view.now.status == "liquidation"
        assert view.now.value == 800_000.0 and view.now.as_of == "2026-01-01T04:00:00.000Z"
        assert [p.as_of[11:13] for p in view.history] == ["00", "01", "02", "03", "04"]
        window = service.valuation_history(s, bank_id=alpha.id, loan_id=loan,
                                           since_ms=T0 + hour, until_ms=T0 + 3 * hour,
                                           limit=2)
        assert [p.value for p in window.history] == [999_998.0, 999_997.0]
        other = service.valuation_history(s, bank_id=alpha.id, loan_id=alpha.loan_ids[
            "alpha-L2"])
        assert other.now is not None and other.now.coverage is None  # inf stored as NULL
        with pytest.raises(NotFoundError):
            service.valuation_history(s, bank_id=beta.id, loan_id=loan)
    with db.sessions() as s, pytest.raises(service.InvalidValuationError):
        service.record_valuation(s, loan, T0, value=float("nan"), low=0, high=0,
                                 coverage=None, ltv=None, status="ok", livestock=0,
                                 inventory=0)
    with db.sessions() as s, pytest.raises(service.InvalidValuationError):
        service.record_valuation(s, loan, T0, value=1, low=0, high=0, coverage=None,
                                 ltv=None, status="fine", livestock=0, inventory=0)


def test_comments_are_stored(db: Db, world: dict[str, SeededBank]) -> None:
    alpha = world["alpha"]
    alert_id = run(db.sessions, alpha, [cond(site=alpha.ranch)], now=T0).opened[0]
    with db.sessions.begin() as s:
        service.comment(s, alert_id, bank_id=alpha.id, actor="a", now_ms=T0, text="x" * 5000)
    with db.sessions() as s:
        stored = s.scalar(select(AlertComment.text))
        assert stored is not None and len(stored) == 4000
        with pytest.raises(service.InvalidParamsError):
            service.comment(s, alert_id, bank_id=alpha.id, actor="a", now_ms=T0, text="  ")


def test_a_callers_rollback_undoes_every_write(db: Db, world: dict[str, SeededBank]) -> None:
    """The service never commits, and its SAVEPOINTs stay inside the caller's transaction
    (Python's sqlite3 would otherwise let a released SAVEPOINT commit on its own)."""
    alpha = world["alpha"]
    loan = alpha.loan_ids[alpha.loan]
    with db.sessions() as s:
        service.record_valuation(s, loan, T0, value=1, low=1, high=1, coverage=1, ltv=1,
                                 status="ok", livestock=1, inventory=0)
        service.set_rule_params(s, bank_id=alpha.id, site_id=alpha.ranch_id,
                                params={"cusum_h": 9}, actor="a", now_ms=T0)
        service.reconcile(s, bank_id=alpha.id, site_id=alpha.ranch_id,
                          scope_kinds=("animal_missing",), conditions=[cond(site=alpha.ranch)],
                          now_ms=T0, clear_after_ticks=2, site_ids=alpha.site_ids,
                          loan_ids=alpha.loan_ids)
        s.rollback()
    with db.sessions() as s:
        for model in (Valuation, Alert, AlertEvent):
            assert s.scalar(select(func.count()).select_from(model)) == 0, model
        assert service.rule_params(s, alpha.id, alpha.ranch_id) == RuleParams()


def test_a_reused_session_does_not_act_on_a_stale_alert(db: Db,
                                                        world: dict[str, SeededBank]) -> None:
    """Sessions do not expire on commit: the service must re-read the committed state."""
    alpha = world["alpha"]
    alert_id = run(db.sessions, alpha, [cond(site=alpha.ranch)], now=T0).opened[0]
    with db.sessions() as mine:
        assert service.get_alert(mine, alert_id, bank_id=alpha.id)["state"] == "open"
        mine.commit()
        with db.sessions.begin() as other:
            service.resolve(other, alert_id, bank_id=alpha.id, actor="b", now_ms=T0)
        with pytest.raises(service.InvalidTransitionError):
            service.acknowledge(mine, alert_id, bank_id=alpha.id, actor="a", now_ms=T0)
        mine.rollback()
        # and reconcile, in the same session, opens a new alert instead of reviving it
        result = service.reconcile(
            mine, bank_id=alpha.id, site_id=alpha.ranch_id, scope_kinds=("animal_missing",),
            conditions=[cond(site=alpha.ranch)], now_ms=T0 + 1, clear_after_ticks=2,
            site_ids=alpha.site_ids, loan_ids=alpha.loan_ids)
        mine.commit()
    assert len(result.opened) == 1 and result.opened[0] != alert_id
