"""Score a simulation run: match the alerts the cloud raised to the incidents the world
scripted, and the cloud's valuations to the true collateral value.

Pure core (:func:`score`) over records from :mod:`pledgewatch.simrun.records`, a thin shell
(:func:`score_dir`, :func:`main_score`) that reads and writes files. The matching rules, every
metric and the layout of ``score.json`` are in ``docs/scoring.md``; keep the two in step.

In short: each incident becomes one or more *targets* (a stolen animal, an offline reader, a
site); an alert *matches* a target when its kind is one the target expects, its subject is the
target's, and its ``event_time_ms`` lies in ``[start - tolerance, end + grace(kind)]``. A target
matched by at least one alert is a true positive; a required target matched by none is a false
negative; an alert that matches no target is a false positive. ``coverage_breach`` alerts are
scored against the true LTV from ``loan`` truth lines instead (no loan line: unscored).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import math
import os
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from pledgewatch.simrun.records import (
    ALERT_KINDS,
    AlertRecord,
    RecordError,
    TruthIncident,
    TruthLoan,
    TruthOutage,
    TruthRecord,
    TruthValue,
    ValuationRecord,
    read_alerts,
    read_truth,
    read_valuations,
)

__all__ = [
    "EXPECTATIONS", "SCORE_FORMAT", "Expectation", "ScoreParams", "format_report", "main_score",
    "percentile", "score", "score_dir",
]

SCORE_FORMAT: Final = "pledgewatch-score/1"
MINUTE_MS: Final = 60_000
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS

# How long after an incident's end an alert may still be caused by it, per alert kind: the
# rule's own detection window (cloud.domain.model.RuleParams defaults) plus lateness and a
# couple of evaluation ticks. A late detection is still a detection (its delay shows it);
# the grace only stops an unrelated later alert on the same subject being credited.
DEFAULT_GRACE_MS: Final[Mapping[str, int]] = MappingProxyType({
    "animal_missing": 14 * HOUR_MS,  # missing_after 12 h + lateness + ticks
    "herd_count_drop": 8 * HOUR_MS,  # herd_window 6 h + ...
    "tag_inactive": 26 * HOUR_MS,  # no_motion 24 h + ...
    "health_anomaly": 2 * DAY_MS,  # daily baselines, CUSUM needs a few points
    "feed_intake_drop": 2 * DAY_MS,  # daily kg vs the pen's 7-day median
    "foreign_tag": DAY_MS,
    "stock_below_minimum": 6 * HOUR_MS,
    "unauthorized_outbound": 2 * HOUR_MS,  # release_grace 30 min + ...
    "geofence_exit": HOUR_MS,
    "weight_discrepancy": 6 * HOUR_MS,
    "device_offline": 90 * MINUTE_MS,  # device_offline_after 30 min + ...
    "site_offline": 90 * MINUTE_MS,  # site_offline_after 30 min + ...
    "coverage_breach": DAY_MS,  # valuations are compared per day
    "price_shock": DAY_MS,  # prices are daily
    "data_integrity": DAY_MS,  # drops are reported when the gateway reconnects
})


@dataclasses.dataclass(frozen=True)
class ScoreParams:
    """The scorer's knobs. Defaults and their reasons are in docs/scoring.md."""

    tolerance_ms: int = HOUR_MS  # an alert's evidence may precede the incident start this much
    grace_ms: Mapping[str, int] = dataclasses.field(default_factory=lambda: DEFAULT_GRACE_MS)
    early_ms: int = 3 * DAY_MS  # illness "early": opened this long before the clinical day
    # offline incidents shorter than the rules' offline windows (RuleParams
    # device_offline_after_ms / site_offline_after_ms, 30 min) cannot be detected: secondary
    min_offline_ms: int = 30 * MINUTE_MS
    outage_grace_ms: int = 2 * HOUR_MS  # after an outage ends, while the backlog replays
    ltv_slack: float = 0.03  # relative dead band around a loan's LTV line
    max_listed: int = 50  # ids listed per list in score.json (counts are always complete)

    def grace_for(self, kind: str) -> int:
        return self.grace_ms.get(kind, DAY_MS)

    def as_json(self) -> dict[str, Any]:
        return {"tolerance_ms": self.tolerance_ms,
                "grace_ms": {k: self.grace_ms[k] for k in sorted(self.grace_ms)},
                "early_ms": self.early_ms, "min_offline_ms": self.min_offline_ms,
                "outage_grace_ms": self.outage_grace_ms, "ltv_slack": self.ltv_slack,
                "max_listed": self.max_listed}


# ---------------------------------------------------------------------------------------------
# what each incident kind should cause


@dataclasses.dataclass(frozen=True, slots=True)
class Expectation:
    """Alerts an incident kind should (``required``) or may (secondary) cause.

    ``kinds``: any of these alert kinds satisfies it; the first is the *primary* kind, to which
    a miss is charged. ``types``: alert subject types accepted. ``per``: ``subject`` makes one
    target per listed truth subject of those types; ``incident`` makes one target per incident
    that any listed subject (or the site itself, if ``site`` is in ``types``) satisfies. With
    no listed subject of those types, either way gives one target per incident that any alert
    of the kinds and types at the incident's site satisfies (any site if the incident has
    none)."""

    kinds: tuple[str, ...]
    required: bool
    types: tuple[str, ...]
    per: Literal["subject", "incident"]


def _e(kinds: str | tuple[str, ...], required: bool, types: str | tuple[str, ...],
       per: Literal["subject", "incident"]) -> Expectation:
    return Expectation(kinds if isinstance(kinds, tuple) else (kinds,), required,
                       types if isinstance(types, tuple) else (types,), per)


REQ, SEC = True, False
EXPECTATIONS: Final[Mapping[str, tuple[Expectation, ...]]] = {
    "theft": (_e("animal_missing", REQ, "animal", "subject"),
              _e("herd_count_drop", SEC, ("site", "pen"), "incident")),
    "death": (_e(("tag_inactive", "animal_missing"), REQ, "animal", "subject"),
              _e("health_anomaly", SEC, "animal", "subject"),
              _e("herd_count_drop", SEC, ("site", "pen"), "incident")),
    "tag_drop": (_e("tag_inactive", REQ, "animal", "subject"),
                 _e("animal_missing", SEC, "animal", "subject")),
    "illness": (_e("health_anomaly", REQ, "animal", "subject"),),
    "feed_shortage": (_e("feed_intake_drop", REQ, ("pen", "site"), "incident"),),
    "reader_offline": (_e("device_offline", REQ, "device", "subject"),),
    "network_outage": (_e("site_offline", REQ, ("site", "gateway"), "incident"),
                       _e("data_integrity", SEC, ("site", "gateway", "device"), "incident")),
    "gateway_crash": (_e("site_offline", REQ, ("site", "gateway"), "incident"),
                      _e("data_integrity", SEC, ("site", "gateway", "device"), "incident")),
    "outbound_without_release": (
        _e("unauthorized_outbound", REQ, "truck", "subject"),
        _e(("stock_below_minimum", "weight_discrepancy"), SEC, ("lot", "site"), "incident")),
    "geofence_exit": (_e("geofence_exit", REQ, ("truck", "device"), "incident"),),
    "tare_fraud": (_e("weight_discrepancy", REQ, "truck", "subject"),
                   _e(("weight_discrepancy", "stock_below_minimum"), SEC, ("lot", "site"),
                      "incident")),
    "double_pledge": (_e("foreign_tag", REQ, ("animal", "lot"), "subject"),
                      _e("foreign_tag", SEC, "loan", "incident")),
    "price_change": (_e("price_shock", REQ, ("loan", "site", "lot"), "incident"),),
}
# incident kinds whose required target is an offline window: too short to detect -> secondary
OFFLINE_INCIDENTS: Final = frozenset({"reader_offline", "network_outage", "gateway_crash"})
LTV_BREACH: Final = "ltv_breach"  # pseudo incident kind for coverage_breach episodes
_SUBJECT_LISTS: Final = {"animal": "animals", "lot": "lots", "truck": "trucks",
                         "device": "devices", "loan": "loans", "pen": "pens",
                         "gateway": "gateways"}


_Mode = Literal["exact", "listed", "site_any"]


@dataclasses.dataclass(slots=True)
class _Target:
    """One thing the run should (or may) have alerted on."""

    source: str  # incident id, or "ltv:LOAN:DAY" for a breach episode
    incident_kind: str
    kinds: tuple[str, ...]
    required: bool
    start_ms: int
    end_ms: int | None
    site: str | None
    mode: _Mode
    accept: frozenset[tuple[str, str]]  # (subject_type, subject_id) for exact / listed
    types: tuple[str, ...]
    clinical_ms: int | None = None
    first_open: dict[str, int] = dataclasses.field(default_factory=dict)  # kind -> opened_at

    @property
    def matched(self) -> bool:
        return bool(self.first_open)

    def earliest(self) -> int | None:
        return min(self.first_open.values()) if self.first_open else None

    def subjects(self) -> list[str]:
        """The accepted subjects as sorted ``type:id`` strings (none for site_any)."""
        return sorted(f"{stype}:{sid}" for stype, sid in self.accept)

    def in_window(self, alert: AlertRecord, params: ScoreParams) -> bool:
        t = alert.event_time_ms
        if t < self.start_ms - params.tolerance_ms:
            return False
        return self.end_ms is None or t <= self.end_ms + params.grace_for(alert.kind)

    def accepts_subject(self, alert: AlertRecord) -> bool:
        if self.mode != "site_any":
            return (alert.subject_type, alert.subject_id) in self.accept
        if alert.subject_type not in self.types:
            return False
        return (self.site is None or alert.site == self.site
                or (alert.subject_type == "site" and alert.subject_id == self.site))


def _incident_targets(inc: TruthIncident, params: ScoreParams) -> list[_Target]:
    clinical = inc.detail.get("clinical_ms") if inc.kind == "illness" else None
    too_short = (inc.kind in OFFLINE_INCIDENTS and inc.end_ms is not None
                 and inc.end_ms - inc.start_ms < params.min_offline_ms)
    out: list[_Target] = []
    for exp in EXPECTATIONS[inc.kind]:
        listed = [(stype, sid) for stype in exp.types if stype in _SUBJECT_LISTS
                  for sid in getattr(inc.subjects, _SUBJECT_LISTS[stype])]
        if not listed:
            groups: list[tuple[_Mode, list[tuple[str, str]]]] = [("site_any", [])]
        elif exp.per == "subject":
            groups = [("exact", [pair]) for pair in dict.fromkeys(listed)]
        else:
            site = [("site", inc.site)] if "site" in exp.types and inc.site else []
            groups = [("listed", listed + site)]
        out.extend(_Target(inc.id, inc.kind, exp.kinds, exp.required and not too_short,
                           inc.start_ms, inc.end_ms, inc.site, mode, frozenset(accept),
                           exp.types, clinical if isinstance(clinical, int) else None)
                   for mode, accept in groups)
    return out


def _ltv_targets(loans: Mapping[str, TruthLoan], values: Sequence[TruthValue],
                 params: ScoreParams) -> list[_Target]:
    """Breach episodes: runs of consecutive truth days whose true LTV is at least
    ``ltv_line * (1 - slack)``; required when the run's peak exceeds the line itself."""
    by_loan: dict[str, list[TruthValue]] = defaultdict(list)
    for v in values:
        if v.loan in loans:
            by_loan[v.loan].append(v)
    out: list[_Target] = []
    for loan_code in sorted(by_loan):
        loan = loans[loan_code]
        near = loan.ltv_line * (1.0 - params.ltv_slack)
        run: list[tuple[TruthValue, float]] = []

        def close(run: list[tuple[TruthValue, float]], loan_code: str = loan_code,
                  loan: TruthLoan = loan) -> None:
            if not run:
                return
            peak = max(ltv for _, ltv in run)
            first, last = run[0][0], run[-1][0]
            out.append(_Target(f"ltv:{loan_code}:{first.day}", LTV_BREACH,
                               ("coverage_breach",), peak > loan.ltv_line,
                               max(0, first.ts_ms - DAY_MS), last.ts_ms, None, "exact",
                               frozenset({("loan", loan_code)}), ("loan",)))

        for v in sorted(by_loan[loan_code], key=lambda v: v.day):
            ltv = _true_ltv(loan.outstanding, v.value)
            if ltv >= near and ltv > 0:
                run.append((v, ltv))
            else:
                close(run)
                run = []
        close(run)
    return out


def _true_ltv(outstanding: float, value: float) -> float:
    if outstanding <= 0:
        return 0.0
    return math.inf if value <= 0 else outstanding / value


def _alert_loan(alert: AlertRecord) -> str | None:
    return alert.subject_id if alert.subject_type == "loan" else alert.loan


# ---------------------------------------------------------------------------------------------
# statistics helpers


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) by linear interpolation between closest ranks (numpy's
    default, Hyndman-Fan type 7): rank h = (n - 1) * p / 100, value = x[floor h] + (h - floor
    h) * (x[floor h + 1] - x[floor h]). None for no values."""
    if not values:
        return None
    xs = sorted(values)
    h = (len(xs) - 1) * p / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else round(num / den, 6)


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(x, digits)


def _delays(delays_ms: Sequence[int]) -> dict[str, Any]:
    secs = [d / 1000.0 for d in delays_ms]
    return {"n": len(secs), "p50": _r(percentile(secs, 50), 3), "p95": _r(percentile(secs, 95), 3),
            "max": _r(max(secs), 3) if secs else None}


# ---------------------------------------------------------------------------------------------
# the scorer


def score(truth: Sequence[TruthRecord], alerts: Sequence[AlertRecord],
          valuations: Sequence[ValuationRecord], *,
          params: ScoreParams = ScoreParams()) -> dict[str, Any]:
    """Score one run. Pure and deterministic: the same records in any order give the same
    dict. Assumes records as :mod:`~pledgewatch.simrun.records` validates them (unique
    incident ids, one value per loan and day); with duplicates the later line wins."""
    incidents = sorted((r for r in truth if isinstance(r, TruthIncident)),
                       key=lambda r: (r.start_ms, r.id))
    values = [r for r in truth if isinstance(r, TruthValue)]
    loans = {r.loan: r for r in truth if isinstance(r, TruthLoan)}
    outages = [r for r in truth if isinstance(r, TruthOutage)]
    ordered = sorted(alerts, key=lambda a: (a.opened_at_ms, a.id))

    targets = [t for inc in incidents for t in _incident_targets(inc, params)]
    targets += _ltv_targets(loans, values, params)

    # index: (kind, subject_type, subject_id) -> targets; kind -> site_any targets
    by_subject: dict[tuple[str, str, str], list[_Target]] = defaultdict(list)
    by_kind_any: dict[str, list[_Target]] = defaultdict(list)
    for t in targets:
        for kind in t.kinds:
            if t.mode == "site_any":
                by_kind_any[kind].append(t)
            else:
                for stype, sid in t.accept:
                    by_subject[(kind, stype, sid)].append(t)

    unscored: list[AlertRecord] = []
    false_pos: list[AlertRecord] = []
    matched_alerts: Counter[str] = Counter()
    for a in ordered:
        if a.kind == "coverage_breach" and _alert_loan(a) not in loans:
            unscored.append(a)
            continue
        hit = False
        for t in by_subject.get((a.kind, a.subject_type, a.subject_id), []) + by_kind_any.get(
                a.kind, []):
            if t.accepts_subject(a) and t.in_window(a, params):
                hit = True
                t.first_open.setdefault(a.kind, a.opened_at_ms)  # alerts are in opened order
        if hit:
            matched_alerts[a.kind] += 1
        else:
            false_pos.append(a)

    per_kind = _per_kind(targets, ordered, false_pos, unscored, matched_alerts, params)
    by_incident = _by_incident_kind(incidents, targets)
    early = _early(targets, params)
    outage_stats = _outages(outages, incidents, false_pos, params)
    valuation = _valuation(values, valuations)
    missed = sorted((t for t in targets if t.required and not t.matched),
                    key=lambda t: (t.start_ms, t.source, t.subjects()))

    required = [t for t in targets if t.required]
    tp = sum(k["tp"] for k in per_kind.values())
    fp = len(false_pos)
    val_loans = [v for v in valuation.values() if v["mean_abs_pct"] is not None]
    summary = {
        "incidents": len(incidents),
        "alerts": len(alerts),
        "alerts_unscored": len(unscored),
        "alerts_matched": sum(matched_alerts.values()),
        "required_targets": len(required),
        "required_detected": sum(1 for t in required if t.matched),
        "recall": _ratio(sum(1 for t in required if t.matched), len(required)),
        "tp": tp,
        "fp": fp,
        "precision": _ratio(tp, tp + fp),
        "illness_early_recall": early["early_recall"],
        "false_alerts_during_outages": outage_stats["false_alerts_during_outages"],
        "valuation_worst_mean_abs_pct": max((v["mean_abs_pct"] for v in val_loans),
                                            default=None),
        "valuation_worst_max_abs_pct": max((v["max_abs_pct"] for v in val_loans),
                                           default=None),
    }
    result = {
        "format": SCORE_FORMAT,
        "params": params.as_json(),
        "summary": summary,
        "per_kind": per_kind,
        "by_incident_kind": by_incident,
        "early_detection": {"illness": early},
        "outages": outage_stats,
        "valuation": valuation,
        "missed": {"count": len(missed),
                   "items": [_target_json(t) for t in missed[:params.max_listed]]},
        "unscored": {"count": len(unscored), "by_kind": dict(sorted(Counter(
            a.kind for a in unscored).items())),
                     "alert_ids": [a.id for a in unscored[:params.max_listed]]},
    }
    json.dumps(result, allow_nan=False)  # the contract: no NaN/inf ever reaches score.json
    return result


def _target_json(t: _Target) -> dict[str, Any]:
    return {"source": t.source, "incident_kind": t.incident_kind, "alert_kinds": list(t.kinds),
            "site": t.site, "subjects": t.subjects(), "subject_types": list(t.types),
            "start_ms": t.start_ms}


def _per_kind(targets: Sequence[_Target], ordered: Sequence[AlertRecord],
              false_pos: Sequence[AlertRecord], unscored: Sequence[AlertRecord],
              matched_alerts: Mapping[str, int], params: ScoreParams) -> dict[str, Any]:
    alerts_n = Counter(a.kind for a in ordered)
    unscored_n = Counter(a.kind for a in unscored)
    fp_ids: dict[str, list[int]] = defaultdict(list)
    for a in false_pos:
        fp_ids[a.kind].append(a.id)
    out: dict[str, Any] = {}
    for kind in ALERT_KINDS:
        tp_targets = [t for t in targets if kind in t.first_open]
        primary = [t for t in targets if t.kinds[0] == kind]
        required = [t for t in primary if t.required]
        detected = sum(1 for t in required if t.matched)
        fn = len(required) - detected
        tp, fp = len(tp_targets), len(fp_ids[kind])
        out[kind] = {
            "alerts": alerts_n[kind],
            "matched_alerts": matched_alerts.get(kind, 0),
            "unscored": unscored_n[kind],
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": _ratio(tp, tp + fp),
            "required": len(required),
            "detected": detected,
            "recall": _ratio(detected, len(required)),
            "missed_secondary": sum(1 for t in primary if not t.required and not t.matched),
            "delay_s": _delays([t.first_open[kind] - t.start_ms for t in tp_targets]),
            "fp_alert_ids": fp_ids[kind][:params.max_listed],
        }
    return out


def _by_incident_kind(incidents: Sequence[TruthIncident],
                      targets: Sequence[_Target]) -> dict[str, Any]:
    count: Counter[str] = Counter(i.kind for i in incidents)
    grouped: dict[str, list[_Target]] = defaultdict(list)
    for t in targets:
        grouped[t.incident_kind].append(t)
    episodes = {t.source for t in grouped.get(LTV_BREACH, [])}
    out: dict[str, Any] = {}
    for kind in sorted(set(count) | set(grouped)):
        ts = grouped.get(kind, [])
        req = [t for t in ts if t.required]
        sec = [t for t in ts if not t.required]
        found = [t for t in req if t.matched]
        out[kind] = {
            "incidents": len(episodes) if kind == LTV_BREACH else count[kind],
            "required_targets": len(req),
            "detected": len(found),
            "recall": _ratio(len(found), len(req)),
            "secondary_targets": len(sec),
            "secondary_detected": sum(1 for t in sec if t.matched),
            "delay_s": _delays([e - t.start_ms for t in found if (e := t.earliest()) is not None]),
        }
    return out


def _early(targets: Sequence[_Target], params: ScoreParams) -> dict[str, Any]:
    """Illness animals alerted (health_anomaly opened) at least ``early_ms`` before the
    clinical day, over illness animals whose truth gives ``detail.clinical_ms``."""
    ill = [t for t in targets if t.incident_kind == "illness" and t.required]
    with_clinical = [t for t in ill if t.clinical_ms is not None]
    early = 0
    leads: list[int] = []
    for t in with_clinical:
        opened = t.first_open.get("health_anomaly")
        if opened is None or t.clinical_ms is None:
            continue
        leads.append(t.clinical_ms - opened)
        if opened <= t.clinical_ms - params.early_ms:
            early += 1
    return {"targets": len(with_clinical), "without_clinical_ms": len(ill) - len(with_clinical),
            "early": early, "early_recall": _ratio(early, len(with_clinical)),
            "lead_time_s": _delays(leads)}


def _outages(outages: Sequence[TruthOutage], incidents: Sequence[TruthIncident],
             false_pos: Sequence[AlertRecord], params: ScoreParams) -> dict[str, Any]:
    """False positives raised while a site was out (or caused by its backlog replay)."""
    windows = {(o.site, o.start_ms, o.end_ms) for o in outages}
    windows |= {(i.site, i.start_ms, i.end_ms) for i in incidents
                if i.kind in ("network_outage", "gateway_crash") and i.site is not None}
    ordered = sorted(windows, key=lambda w: (w[1], w[0], w[2] if w[2] is not None else -1))
    hits: list[AlertRecord] = []
    for a in false_pos:
        for site, start, end in ordered:
            if a.site is not None and a.site != site:
                continue
            opened_in = a.opened_at_ms >= start and (
                end is None or a.opened_at_ms <= end + params.outage_grace_ms)
            evidence_in = a.event_time_ms >= start and (end is None or a.event_time_ms <= end)
            if opened_in or evidence_in:
                hits.append(a)
                break
    return {"windows": len(ordered),
            "false_alerts_during_outages": len(hits),
            "by_kind": dict(sorted(Counter(a.kind for a in hits).items())),
            "alert_ids": [a.id for a in hits[:params.max_listed]]}


def _valuation(values: Sequence[TruthValue],
               valuations: Sequence[ValuationRecord]) -> dict[str, Any]:
    truth = {(v.loan, v.day): v for v in values}
    est = {(v.loan, v.day): v for v in valuations}
    out: dict[str, Any] = {}
    for loan in sorted({k[0] for k in truth} | {k[0] for k in est}):
        tdays = {d for (ln, d) in truth if ln == loan}
        edays = {d for (ln, d) in est if ln == loan}
        errors: list[tuple[float, str]] = []  # (signed pct, day)
        in_band = currency = zero = 0
        for day in sorted(tdays & edays):
            t, e = truth[(loan, day)], est[(loan, day)]
            if t.currency != e.currency:
                currency += 1
                continue
            if t.value == 0:
                zero += 1
                continue
            errors.append((100.0 * (e.value - t.value) / t.value, day))
            in_band += e.low <= t.value <= e.high
        abs_err = [abs(pct) for pct, _ in errors]
        worst = max(errors, key=lambda x: (abs(x[0]), x[1])) if errors else None
        out[loan] = {
            "truth_days": len(tdays),
            "valuation_days": len(edays),
            "days_compared": len(errors),
            "missing_days": len(tdays - edays),
            "extra_days": len(edays - tdays),
            "currency_mismatch_days": currency,
            "zero_truth_days": zero,
            "mean_abs_pct": _r(sum(abs_err) / len(abs_err)) if abs_err else None,
            "max_abs_pct": _r(max(abs_err)) if abs_err else None,
            "max_abs_pct_day": worst[1] if worst else None,
            "mean_pct": _r(sum(p for p, _ in errors) / len(errors)) if errors else None,
            "within_band_days": in_band,
            "within_band_fraction": _ratio(in_band, len(errors)),
        }
    return out


# ---------------------------------------------------------------------------------------------
# the shell: files, report, CLI

TRUTH_FILE: Final = "truth.jsonl"
ALERTS_FILE: Final = "alerts.jsonl"
VALUATIONS_FILE: Final = "valuations.jsonl"
SCORE_FILE: Final = "score.json"


def score_dir(directory: str | Path, *, params: ScoreParams = ScoreParams()) -> dict[str, Any]:
    """Read DIR/truth.jsonl, alerts.jsonl and valuations.jsonl, score them, write
    DIR/score.json (atomically: a reader never sees half a file) and return the score.
    Raises ``FileNotFoundError``/``NotADirectoryError`` or :class:`RecordError`."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such run directory", str(d))
    result = score(read_truth(d / TRUTH_FILE), read_alerts(d / ALERTS_FILE),
                   read_valuations(d / VALUATIONS_FILE), params=params)
    text = json.dumps(result, indent=2, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".score.", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, d / SCORE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}%"


def _dur(seconds: float | None) -> str:
    """Seconds as a short human duration: 45s, 12m, 3h05m, 2d04h; '-' for none."""
    if seconds is None:
        return "-"
    sign, s = ("-" if seconds < 0 else ""), abs(round(seconds))
    if s < 60:
        return f"{sign}{s}s"
    if s < 3600:
        return f"{sign}{s // 60}m{s % 60:02d}s" if s % 60 else f"{sign}{s // 60}m"
    if s < 86400:
        return f"{sign}{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{sign}{s // 86400}d{(s % 86400) // 3600:02d}h"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()
    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def format_report(result: Mapping[str, Any]) -> str:
    """A plain-text report of a score: summary, per alert kind, per incident kind, early
    illness detection, outages, valuation, and the first misses. Only kinds that had alerts
    or targets are listed."""
    s = result["summary"]
    out = [f"score: {s['incidents']} incidents, {s['alerts']} alerts "
           f"({s['alerts_unscored']} unscored); required targets detected "
           f"{s['required_detected']}/{s['required_targets']} (recall {_pct(s['recall'])}); "
           f"tp {s['tp']} fp {s['fp']} (precision {_pct(s['precision'])})", ""]
    rows = []
    for kind, k in result["per_kind"].items():
        if not (k["alerts"] or k["tp"] or k["fn"] or k["required"] or k["missed_secondary"]):
            continue
        rows.append([kind, str(k["alerts"]), str(k["tp"]), str(k["fp"]), str(k["fn"]),
                     _pct(k["precision"]), _pct(k["recall"]), _dur(k["delay_s"]["p50"]),
                     _dur(k["delay_s"]["p95"])])
    out += _table(["alert kind", "alerts", "tp", "fp", "fn", "precision", "recall",
                   "delay p50", "delay p95"], rows) if rows else ["(no alerts, no targets)"]
    inc_rows = [[kind, str(k["incidents"]), f"{k['detected']}/{k['required_targets']}",
                 _pct(k["recall"]), f"{k['secondary_detected']}/{k['secondary_targets']}",
                 _dur(k["delay_s"]["p50"]), _dur(k["delay_s"]["max"])]
                for kind, k in result["by_incident_kind"].items()]
    if inc_rows:
        out += ["", *_table(["incident kind", "incidents", "detected", "recall", "secondary",
                             "delay p50", "delay max"], inc_rows)]
    ill = result["early_detection"]["illness"]
    if ill["targets"] or ill["without_clinical_ms"]:
        out += ["", f"illness: {ill['early']}/{ill['targets']} animals alerted >= "
                    f"{_dur(result['params']['early_ms'] / 1000)} before the clinical day "
                    f"(early recall {_pct(ill['early_recall'])}; lead time p50 "
                    f"{_dur(ill['lead_time_s']['p50'])})"]
    o = result["outages"]
    by = ", ".join(f"{k} {n}" for k, n in o["by_kind"].items())
    out += ["", f"outages: {o['windows']} windows, {o['false_alerts_during_outages']} false "
                f"alerts during them" + (f" ({by})" if by else "")]
    val_rows = [[loan, str(v["days_compared"]),
                 "-" if v["mean_abs_pct"] is None else f"{v['mean_abs_pct']:.2f}%",
                 "-" if v["max_abs_pct"] is None else f"{v['max_abs_pct']:.2f}%",
                 v["max_abs_pct_day"] or "-",
                 "-" if v["mean_pct"] is None else f"{v['mean_pct']:+.2f}%",
                 _pct(v["within_band_fraction"]), str(v["missing_days"])]
                for loan, v in result["valuation"].items()]
    if val_rows:
        out += ["", *_table(["loan", "days", "mean |err|", "max |err|", "worst day", "bias",
                             "in band", "missing"], val_rows)]
    missed = result["missed"]
    if missed["count"]:
        out += ["", f"missed required targets ({missed['count']}):"]
        for m in missed["items"][:10]:
            what = (", ".join(m["subjects"]) if m["subjects"] else
                    f"any {'/'.join(m['subject_types'])} at {m['site'] or 'any site'}")
            out.append(f"  {m['source']} ({m['incident_kind']}): {'/'.join(m['alert_kinds'])} "
                       f"on {what}")
        if missed["count"] > 10:
            out.append(f"  ... {missed['count'] - 10} more in score.json")
    return "\n".join(out)


def main_score(argv: Sequence[str] | None = None) -> int:
    """``pledgewatch sim score DIR [--json]``: score a run directory, write DIR/score.json,
    print the report (or the JSON). Exit 0; 2 with one error line on a missing directory or
    file or a bad record."""
    parser = argparse.ArgumentParser(prog="pledgewatch sim score",
                                     description="Match a run's alerts to its truth "
                                                 "(docs/scoring.md) and write DIR/score.json.")
    parser.add_argument("dir", metavar="DIR", help="output directory of `pledgewatch sim run`")
    parser.add_argument("--json", action="store_true", help="print score.json, not a table")
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message; hand back its code
        return exc.code if isinstance(exc.code, int) else 2
    try:
        result = score_dir(ns.dir)
    except RecordError as exc:
        print(f"pledgewatch sim score: {exc.one_line()}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pledgewatch sim score: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    if ns.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print(format_report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_score())
