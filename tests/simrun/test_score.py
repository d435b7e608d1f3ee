"""The scorer on hand-written truth/alert/valuation files whose numbers are worked out by hand
below, plus the record reader's refusals and the CLI's exit codes (docs/scoring.md)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from pledgewatch.simrun.records import (
    ALERT_KINDS,
    INCIDENT_KINDS,
    MAX_PROBLEMS,
    SEVERITIES,
    SUBJECT_TYPES,
    AlertRecord,
    RecordError,
    TruthIncident,
    TruthLoan,
    TruthOutage,
    TruthRecord,
    TruthValue,
    ValuationRecord,
    read_alerts,
    read_jsonl,
    read_truth,
    read_valuations,
)
from pledgewatch.simrun.score import (
    DEFAULT_GRACE_MS,
    EXPECTATIONS,
    SCORE_FORMAT,
    ScoreParams,
    format_report,
    main_score,
    percentile,
    score,
    score_dir,
)

DATA = Path(__file__).parent / "data"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000


@pytest.fixture
def basic(tmp_path: Path) -> Path:
    """A copy of data/basic, so score.json is written outside the source tree."""
    dst = tmp_path / "basic"
    shutil.copytree(DATA / "basic", dst)
    return dst


# ---------------------------------------------------------------------------------------------
# data/basic, by hand. T0 = 2026-01-01 00:00Z. Incidents:
#   inc-1 theft at T0+1d (S1) of A1, A2, A3; alerts: animal_missing A1 opened S1+600 s, A2
#     S1+1800 s; A3's only alert has event_time S1-2h, outside [S1 - 1h tolerance, ...] -> not
#     matched -> FP, and A3 is a FN. herd_count_drop on ranch-1 at S1+1h: secondary TP.
#   inc-2/inc-3 illness of B1/B2 from T0+2d, clinical T0+8d; health_anomaly B1 opened T0+4d
#     (<= clinical - 3d = T0+5d: early), B2 opened T0+6d (not early).
#   inc-4 reader_offline rdr-1 2 h from T0+3d; device_offline rdr-1 opened T0+3d+40min.
#   inc-5 reader_offline rdr-2 for 10 min (< 30 min): secondary, no alert -> missed_secondary.
#   inc-6 network_outage ranch-1 T0+5d..+6h (also an outage line); site_offline opened +35 min.
#   loan L1 outstanding 80, line 0.70: true LTV day 1 = 80/100 = 0.80 (breach, required),
#     day 2 = 0.40, day 3 = 0.08.
# Other alerts: 8 device_offline rdr-9 at ranch-2 during the outage (FP, other site);
#   10 animal_missing C1 at ranch-1 opened at outage end + 1 h (FP, inside the 2 h grace: the
#   one false alert during outages); 11 tag_inactive C2 at T0+9d (FP); 12 coverage_breach L1
#   at T0+20h (TP, delay 20 h + 60 s = 72060 s); 13 coverage_breach L1 at T0+2.5d (day 2,
#   LTV 0.40, after the episode's end T0+1d + 1d grace: FP); 14 coverage_breach L9 (no loan
#   line: unscored).
# Valuation L1: 01-01 103 vs 100 (+3 %, true value in band 95..105), 01-02 190 vs 200 (-5 %,
#   200 outside 180..199), 01-03 has no valuation (missing), 01-04 no truth (extra).


def test_basic_per_kind(basic: Path) -> None:
    res = score_dir(basic)
    am = res["per_kind"]["animal_missing"]
    # 4 alerts (1, 2, 3, 10): A1 and A2 matched; 3 (outside tolerance) and 10 (C1) unmatched
    assert (am["alerts"], am["tp"], am["fp"], am["fn"]) == (4, 2, 2, 1)
    assert am["precision"] == 0.5  # 2 / (2 + 2)
    assert am["recall"] == round(2 / 3, 6)  # A1, A2 of A1, A2, A3
    # delays 600 s and 1800 s; linear interpolation: p50 = 600 + 0.5 * 1200 = 1200,
    # p95 = 600 + 0.95 * 1200 = 1740
    assert am["delay_s"] == {"n": 2, "p50": 1200.0, "p95": 1740.0, "max": 1800.0}
    assert am["fp_alert_ids"] == [3, 10]

    herd = res["per_kind"]["herd_count_drop"]  # secondary: a TP, never a FN
    assert (herd["tp"], herd["fp"], herd["fn"], herd["recall"]) == (1, 0, 0, None)

    ha = res["per_kind"]["health_anomaly"]
    assert (ha["tp"], ha["fp"], ha["fn"], ha["recall"]) == (2, 0, 0, 1.0)
    # delays 2 d = 172800 s and 4 d = 345600 s: p50 259200, p95 172800 + 0.95 * 172800
    assert ha["delay_s"]["p50"] == 259_200.0 and ha["delay_s"]["p95"] == 336_960.0

    dev = res["per_kind"]["device_offline"]
    assert (dev["tp"], dev["fp"], dev["fn"], dev["missed_secondary"]) == (1, 1, 0, 1)
    assert dev["delay_s"]["p50"] == 2400.0 and dev["fp_alert_ids"] == [8]

    so = res["per_kind"]["site_offline"]
    assert (so["tp"], so["fp"], so["fn"], so["delay_s"]["p50"]) == (1, 0, 0, 2100.0)
    assert res["per_kind"]["data_integrity"]["missed_secondary"] == 1  # outage, no drops alerted

    ti = res["per_kind"]["tag_inactive"]
    assert (ti["tp"], ti["fp"], ti["precision"], ti["recall"]) == (0, 1, 0.0, None)

    cb = res["per_kind"]["coverage_breach"]
    assert (cb["alerts"], cb["unscored"], cb["tp"], cb["fp"], cb["fn"]) == (3, 1, 1, 1, 0)
    assert cb["delay_s"]["p50"] == 72_060.0 and cb["fp_alert_ids"] == [13]

    quiet = res["per_kind"]["price_shock"]
    assert (quiet["precision"], quiet["recall"], quiet["delay_s"]["p50"]) == (None, None, None)
    assert set(res["per_kind"]) == set(ALERT_KINDS)


def test_basic_summary_and_sections(basic: Path) -> None:
    res = score_dir(basic)
    s = res["summary"]
    assert res["format"] == SCORE_FORMAT
    # required targets: A1 A2 A3, B1 B2, rdr-1, site ranch-1, L1 episode = 8; all but A3 found
    assert (s["required_targets"], s["required_detected"], s["recall"]) == (8, 7, 0.875)
    # tp = 2 am + 1 herd + 2 health + 1 device + 1 site + 1 coverage = 8;
    # fp = alerts 3, 10, 8, 11, 13 = 5; precision 8 / 13
    assert (s["tp"], s["fp"], s["precision"]) == (8, 5, round(8 / 13, 6))
    assert (s["alerts"], s["alerts_unscored"], s["alerts_matched"]) == (14, 1, 8)
    assert s["false_alerts_during_outages"] == 1
    assert s["illness_early_recall"] == 0.5

    theft = res["by_incident_kind"]["theft"]
    assert (theft["required_targets"], theft["detected"], theft["secondary_detected"]) == (3, 2, 1)
    ro = res["by_incident_kind"]["reader_offline"]
    assert (ro["incidents"], ro["required_targets"], ro["secondary_targets"]) == (2, 1, 1)
    assert res["by_incident_kind"]["ltv_breach"]["detected"] == 1

    ill = res["early_detection"]["illness"]
    assert (ill["targets"], ill["early"], ill["early_recall"]) == (2, 1, 0.5)
    assert ill["lead_time_s"]["p50"] == 3 * 86_400.0  # leads 4 d and 2 d

    assert res["outages"] == {"windows": 1, "false_alerts_during_outages": 1,
                              "by_kind": {"animal_missing": 1}, "alert_ids": [10]}
    assert res["unscored"] == {"count": 1, "by_kind": {"coverage_breach": 1},
                               "alert_ids": [14]}
    assert res["missed"]["count"] == 1
    assert res["missed"]["items"][0]["subjects"] == ["animal:E20000000003"]


def test_basic_valuation(basic: Path) -> None:
    v = score_dir(basic)["valuation"]["L1"]
    assert (v["truth_days"], v["valuation_days"], v["days_compared"]) == (3, 3, 2)
    assert (v["missing_days"], v["extra_days"]) == (1, 1)
    assert v["mean_abs_pct"] == 4.0  # (3 + 5) / 2
    assert v["max_abs_pct"] == 5.0 and v["max_abs_pct_day"] == "2026-01-02"
    assert v["mean_pct"] == -1.0  # (+3 - 5) / 2
    assert (v["within_band_days"], v["within_band_fraction"]) == (1, 0.5)


def test_score_json_written_and_deterministic(basic: Path) -> None:
    first = score_dir(basic)
    text1 = (basic / "score.json").read_text()
    assert json.loads(text1) == first
    score_dir(basic)
    assert (basic / "score.json").read_text() == text1
    assert not [p for p in basic.iterdir() if p.name.startswith(".score.")]  # no temp left


def test_input_order_does_not_matter(basic: Path) -> None:
    truth = read_truth(basic / "truth.jsonl")
    alerts = read_alerts(basic / "alerts.jsonl")
    vals = read_valuations(basic / "valuations.jsonl")
    ref = score(truth, alerts, vals)
    rng = random.Random(6)
    for _ in range(5):
        t, a, v = list(truth), list(alerts), list(vals)
        rng.shuffle(t)
        rng.shuffle(a)
        rng.shuffle(v)
        assert score(t, a, v) == ref


def test_report_is_readable(basic: Path) -> None:
    text = format_report(score_dir(basic))
    lines = text.splitlines()
    row = next(ln for ln in lines if ln.startswith("animal_missing "))
    assert row.split() == ["animal_missing", "4", "2", "2", "1", "50.0%", "66.7%", "20m", "29m"]
    assert "recall 87.5%" in lines[0]
    assert "1 false alerts during them (animal_missing 1)" in text
    assert any(ln.split()[:3] == ["L1", "2", "4.00%"] for ln in lines)
    assert "inc-1 (theft): animal_missing on animal:E20000000003" in text
    assert "price_shock" not in text  # kinds with nothing to say are left out


# ---------------------------------------------------------------------------------------------
# windows, expectations and outages on records built in the test


def _inc(id: str, kind: str, start: int, end: int | None = None, site: str | None = "r1",
         **subjects: list[str]) -> TruthIncident:
    return TruthIncident.model_validate_json(json.dumps({
        "type": "incident", "id": id, "kind": kind, "site": site, "start_ms": start,
        "end_ms": end, "subjects": subjects, "detail": {}}))


def _alert(id: int, kind: str, stype: str, sid: str, event: int, opened: int | None = None,
           site: str | None = "r1", loan: str | None = None) -> AlertRecord:
    return AlertRecord.model_validate_json(json.dumps({
        "id": id, "kind": kind, "severity": "warning", "bank": "b", "loan": loan, "site": site,
        "subject_type": stype, "subject_id": sid, "event_time_ms": event,
        "opened_at_ms": event if opened is None else opened, "resolved_at_ms": None,
        "state": "open", "summary": ""}))


def _fp_ids(res: dict[str, Any]) -> list[int]:
    return sorted(i for k in res["per_kind"].values() for i in k["fp_alert_ids"])


def test_tolerance_and_grace_edges() -> None:
    params = ScoreParams()
    tol = params.tolerance_ms
    grace = DEFAULT_GRACE_MS["device_offline"]
    start, end = T0 + DAY, T0 + DAY + 2 * HOUR
    truth: list[TruthRecord] = [_inc("i1", "reader_offline", start, end, devices=["d1"])]
    inside = [_alert(1, "device_offline", "device", "d1", start - tol),
              _alert(2, "device_offline", "device", "d1", end + grace)]
    outside = [_alert(3, "device_offline", "device", "d1", start - tol - 1),
               _alert(4, "device_offline", "device", "d1", end + grace + 1)]
    res = score(truth, inside + outside, [])
    assert _fp_ids(res) == [3, 4]
    assert res["per_kind"]["device_offline"]["tp"] == 1  # one target, two matching alerts
    assert res["per_kind"]["device_offline"]["matched_alerts"] == 2
    only_outside = score(truth, outside, [])
    assert only_outside["per_kind"]["device_offline"]["fn"] == 1
    # an incident without end takes anything after its start
    open_ended = [_inc("i2", "theft", start, None, animals=["AA01"])]
    late = _alert(5, "animal_missing", "animal", "AA01", start + 30 * DAY)
    assert score(open_ended, [late], [])["per_kind"]["animal_missing"]["tp"] == 1


def test_subject_and_kind_must_match() -> None:
    truth: list[TruthRecord] = [_inc("i1", "theft", T0, animals=["AA01", "AA02"])]
    alerts = [_alert(1, "animal_missing", "animal", "AA03", T0 + HOUR),  # other animal
              _alert(2, "tag_inactive", "animal", "AA01", T0 + HOUR),  # not expected by theft
              _alert(3, "animal_missing", "animal", "AA02", T0 + HOUR, site="r9")]  # id wins
    res = score(truth, alerts, [])
    assert _fp_ids(res) == [1, 2]
    assert res["per_kind"]["animal_missing"]["tp"] == 1
    assert res["per_kind"]["animal_missing"]["fn"] == 1


def test_death_is_either_kind_charged_to_tag_inactive() -> None:
    # D1 found by animal_missing only, D2 by tag_inactive only, D3 by nothing
    truth: list[TruthRecord] = [_inc("i1", "death", T0, animals=["D1", "D2", "D3"])]
    alerts = [_alert(1, "animal_missing", "animal", "D1", T0 + HOUR),
              _alert(2, "tag_inactive", "animal", "D2", T0 + 2 * HOUR)]
    res = score(truth, alerts, [])
    death = res["by_incident_kind"]["death"]
    assert (death["required_targets"], death["detected"]) == (3, 2)
    ti, am = res["per_kind"]["tag_inactive"], res["per_kind"]["animal_missing"]
    assert (ti["required"], ti["detected"], ti["fn"], ti["tp"]) == (3, 2, 1, 1)
    assert (am["required"], am["fn"], am["tp"], am["fp"]) == (0, 0, 1, 0)


def test_incident_level_and_site_level_targets() -> None:
    truth: list[TruthRecord] = [
        _inc("g", "geofence_exit", T0, T0 + HOUR, site="w1", trucks=["T1"], devices=["gps-1"]),
        _inc("f", "feed_shortage", T0, T0 + DAY, site="r1"),  # no pens listed: any pen at r1
        _inc("p", "price_change", T0, T0, site=None, loans=["L1"]),
        _inc("c", "gateway_crash", T0, T0 + 10 * MIN, site="r2"),  # too short: secondary
    ]
    alerts = [
        _alert(1, "geofence_exit", "device", "gps-1", T0 + MIN, site="w1"),
        _alert(2, "geofence_exit", "truck", "T1", T0 + 2 * MIN, site="w1"),  # same target
        _alert(3, "geofence_exit", "truck", "T2", T0 + 2 * MIN, site="w1"),  # not listed
        _alert(4, "feed_intake_drop", "pen", "pen-3", T0 + HOUR, site="r1"),
        _alert(5, "feed_intake_drop", "pen", "pen-3", T0 + HOUR, site="r2"),  # other site
        _alert(6, "price_shock", "loan", "L1", T0 + HOUR, site=None, loan="L1"),
    ]
    res = score(truth, alerts, [])
    assert _fp_ids(res) == [3, 5]
    geo = res["per_kind"]["geofence_exit"]
    assert (geo["tp"], geo["matched_alerts"], geo["fn"]) == (1, 2, 0)
    assert res["per_kind"]["feed_intake_drop"]["tp"] == 1
    assert res["per_kind"]["price_shock"]["recall"] == 1.0
    crash = res["by_incident_kind"]["gateway_crash"]
    assert (crash["required_targets"], crash["secondary_targets"]) == (0, 2)


def test_near_breach_is_secondary_and_breach_without_alert_is_missed() -> None:
    loan = TruthLoan(type="loan", loan="L1", outstanding=68.5, ltv_line=0.7,
                     margin_call_line=0.8, liquidation_line=0.9)

    def value(day: int, v: float) -> TruthValue:
        return TruthValue(type="value", loan="L1", day=f"2026-01-{day:02d}",
                          ts_ms=T0 + day * DAY, value=v, livestock=v, inventory=0.0,
                          currency="USD")

    # LTVs: 68.5/100 = 0.685 (>= 0.7 * 0.97 = 0.679: near, below the line) -> a secondary
    # episode; 68.5/200 = 0.3425; 68.5/50 = 1.37 (breach, required, no alert -> missed)
    truth: list[TruthRecord] = [loan, value(1, 100.0), value(2, 200.0), value(3, 50.0)]
    res = score(truth, [], [])
    ep = res["by_incident_kind"]["ltv_breach"]
    assert (ep["incidents"], ep["required_targets"], ep["secondary_targets"]) == (2, 1, 1)
    assert res["per_kind"]["coverage_breach"]["fn"] == 1
    near_alert = _alert(1, "coverage_breach", "loan", "L1", T0 + 12 * HOUR, site=None)
    res2 = score(truth, [near_alert], [])
    assert res2["per_kind"]["coverage_breach"]["fp"] == 0  # the near breach excuses it
    assert res2["per_kind"]["coverage_breach"]["fn"] == 1


def test_outage_counts_site_and_siteless_false_alerts_only() -> None:
    out = TruthOutage(type="outage", site="r1", start_ms=T0, end_ms=T0 + 4 * HOUR,
                      what="crash")
    grace = ScoreParams().outage_grace_ms
    alerts = [
        _alert(1, "animal_missing", "animal", "AA01", T0 + HOUR),  # at r1, during: counts
        _alert(2, "price_shock", "site", "w1", T0 + HOUR, site=None),  # no site: counts
        _alert(3, "animal_missing", "animal", "AA02", T0 + HOUR, site="r2"),  # other site
        _alert(4, "animal_missing", "animal", "AA03", T0 + 4 * HOUR + grace),  # replay edge
        _alert(5, "animal_missing", "animal", "AA04", T0 + 4 * HOUR + grace + 1),  # after
        # evidence inside the outage, opened a day later: caused by it, counts
        _alert(6, "animal_missing", "animal", "AA05", T0 + 2 * HOUR, opened=T0 + DAY),
    ]
    res = score([out], alerts, [])
    assert res["outages"]["alert_ids"] == [1, 2, 4, 6]
    assert res["summary"]["false_alerts_during_outages"] == 4
    # a site_offline alert matched to the outage's incident is not a false alert
    inc = _inc("o", "gateway_crash", T0, T0 + 4 * HOUR)
    ok = score([out, inc], [_alert(7, "site_offline", "site", "r1", T0 + 40 * MIN)], [])
    assert ok["summary"]["false_alerts_during_outages"] == 0
    assert ok["per_kind"]["site_offline"]["tp"] == 1


def test_valuation_skips_zero_truth_and_currency_mismatch() -> None:
    def tv(day: str, v: float, cur: str = "USD") -> TruthValue:
        return TruthValue(type="value", loan="L2", day=day, ts_ms=T0, value=v, livestock=v,
                          inventory=0.0, currency=cur)

    def ev(day: str, v: float, cur: str = "USD") -> ValuationRecord:
        return ValuationRecord(loan="L2", day=day, ts_ms=T0, value=v, low=v, high=v,
                               coverage=None, ltv=None, currency=cur)

    truth: list[TruthRecord] = [tv("2026-01-01", 0.0), tv("2026-01-02", 50.0, "CNY"),
                                tv("2026-01-03", 80.0)]
    vals = [ev("2026-01-01", 10.0), ev("2026-01-02", 50.0), ev("2026-01-03", 84.0)]
    v = score(truth, [], vals)["valuation"]["L2"]
    assert (v["zero_truth_days"], v["currency_mismatch_days"], v["days_compared"]) == (1, 1, 1)
    assert v["mean_abs_pct"] == 5.0  # 4 / 80
    only_est = score([], [], vals)["valuation"]["L2"]
    assert (only_est["days_compared"], only_est["mean_abs_pct"]) == (0, None)


def test_empty_run(tmp_path: Path) -> None:
    shutil.copytree(DATA / "empty", tmp_path / "run")
    res = score_dir(tmp_path / "run")
    s = res["summary"]
    assert (s["incidents"], s["alerts"], s["tp"], s["fp"]) == (0, 0, 0, 0)
    assert (s["precision"], s["recall"], s["valuation_worst_mean_abs_pct"]) == (None, None, None)
    assert res["valuation"] == {} and res["missed"] == {"count": 0, "items": []}
    assert "no alerts, no targets" in format_report(res)


def test_recall_is_zero_before_rules_exist() -> None:
    # issue 6: the scorer lands before the alerts do; a run without alerts reports recall 0
    truth: list[TruthRecord] = [_inc("i", "theft", T0, animals=["AA01"])]
    res = score(truth, [], [])
    assert res["summary"]["recall"] == 0.0 and res["summary"]["precision"] is None


def test_percentile_method() -> None:
    assert percentile([1800, 600], 50) == 1200
    assert percentile([600, 1800], 95) == pytest.approx(1740)
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([7], 95) == 7 and percentile([], 50) is None


# ---------------------------------------------------------------------------------------------
# records


def test_bad_truth_lines_are_all_reported() -> None:
    path = DATA / "bad_truth" / "truth.jsonl"
    with pytest.raises(RecordError) as err:
        read_truth(path)
    got = [(p.line, p.field) for p in err.value.problems]
    # line 2 is blank (skipped); 3 lacks start_ms; 4 has a lower-case EPC; 5 a string ts;
    # 6 an unknown type; 7 is cut short
    assert got == [(3, "start_ms"), (4, "subjects.animals.0"), (5, "ts_ms"), (6, "type"),
                   (7, "<line>")]
    assert str(err.value).splitlines()[0] == f"{path}:3: start_ms: Field required"
    assert "upper-case hex" in err.value.problems[1].reason
    assert err.value.one_line().endswith("(and 4 more problems)")


@pytest.mark.parametrize(("line", "field", "reason"), [
    ('{"type":"outage","site":"r","start_ms":5,"end_ms":4,"what":"crash"}', "<line>",
     "before start_ms"),
    ('{"type":"outage","site":"r","start_ms":1.5,"end_ms":4,"what":"crash"}', "start_ms",
     "integer"),
    ('{"type":"outage","site":"r","start_ms":1,"end_ms":4,"what":"crash","x":1}', "x",
     "Extra inputs"),
    ('{"type":"outage","site":"r","site":"q","start_ms":1,"end_ms":4,"what":"crash"}',
     "<line>", "duplicate key"),
    ('{"type":"value","loan":"L","day":"2026-02-30","ts_ms":1,"value":1,"livestock":1,'
     '"inventory":0,"currency":"USD"}', "day", "day is out of range"),
    ('{"type":"value","loan":"L","day":"2026-01-01","ts_ms":1,"value":NaN,"livestock":1,'
     '"inventory":0,"currency":"USD"}', "value", "finite number"),
    ('{"type":"value","loan":"L","day":"2026-01-01","ts_ms":1,"value":true,"livestock":1,'
     '"inventory":0,"currency":"USD"}', "value", "number"),
    ('{"type":"loan","loan":"L","outstanding":1,"ltv_line":0.9,"margin_call_line":0.8,'
     '"liquidation_line":0.95}', "<line>", "ltv_line <= margin_call_line"),
    ('{"type":"incident","id":"i","kind":"alien_abduction","site":null,"start_ms":1,'
     '"end_ms":null}', "kind", "Input should be"),
    ('[1, 2]', "<line>", "JSON object"),
])
def test_bad_truth_line(tmp_path: Path, line: str, field: str, reason: str) -> None:
    path = tmp_path / "truth.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(RecordError) as err:
        read_truth(path)
    (problem,) = err.value.problems
    assert (problem.line, problem.field) == (1, field)
    assert reason in problem.reason


def test_duplicates_across_lines_are_refused(tmp_path: Path) -> None:
    src = (DATA / "basic" / "alerts.jsonl").read_text().splitlines()
    path = tmp_path / "alerts.jsonl"
    path.write_text("\n".join([*src, src[0]]) + "\n")
    with pytest.raises(RecordError) as err:
        read_alerts(path)
    assert str(err.value) == (f"{path}:{len(src) + 1}: id: duplicate alert id 1 "
                              f"(first on line 1)")
    inc = (DATA / "basic" / "truth.jsonl").read_text().splitlines()[0]
    tpath = tmp_path / "truth.jsonl"
    tpath.write_text(inc + "\n" + inc + "\n")
    with pytest.raises(RecordError, match=r"truth.jsonl:2: id: duplicate incident id"):
        read_truth(tpath)


def test_alert_animal_subject_must_be_upper_hex(tmp_path: Path) -> None:
    line = (DATA / "basic" / "alerts.jsonl").read_text().splitlines()[0]
    path = tmp_path / "alerts.jsonl"
    path.write_text(line.replace("E20000000001", "e20000000001") + "\n")
    with pytest.raises(RecordError, match=r"alerts.jsonl:1: <line>: animal EPC"):
        read_alerts(path)


def test_problems_are_capped_but_counted(tmp_path: Path) -> None:
    path = tmp_path / "valuations.jsonl"
    path.write_text("{}\n" * (MAX_PROBLEMS + 7))
    with pytest.raises(RecordError) as err:
        read_valuations(path)
    assert len(err.value.problems) == MAX_PROBLEMS
    # each "{}" misses all 9 fields: 9 problems a line, the first 50 kept, all counted
    assert err.value.count == 9 * (MAX_PROBLEMS + 7)
    assert err.value.more == 9 * (MAX_PROBLEMS + 7) - MAX_PROBLEMS


def test_read_jsonl_with_one_model_and_a_union(basic: Path) -> None:
    vals = read_jsonl(basic / "valuations.jsonl", ValuationRecord)
    assert [v.day for v in vals] == ["2026-01-01", "2026-01-02", "2026-01-04"]
    truth = read_jsonl(basic / "truth.jsonl", (TruthIncident, TruthValue, TruthOutage,
                                               TruthLoan))
    assert [type(r).__name__ for r in truth].count("TruthValue") == 3
    with pytest.raises(TypeError):
        read_jsonl(basic / "truth.jsonl", (ValuationRecord,))


# ---------------------------------------------------------------------------------------------
# CLI and contracts


def test_cli_table_json_and_errors(basic: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main_score([str(basic)]) == 0
    assert "animal_missing" in capsys.readouterr().out
    assert main_score([str(basic), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((basic / "score.json").read_text())

    assert main_score([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope: no such run directory" in err

    bad = tmp_path / "bad"
    shutil.copytree(DATA / "bad_truth", bad)
    assert main_score([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "truth.jsonl:3: start_ms: Field required (and 4 more problems)" in err
    assert not (bad / "score.json").exists()

    (basic / "valuations.jsonl").unlink()
    assert main_score([str(basic)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valuations.jsonl" in err
    assert main_score([]) == 2  # argparse usage error


def test_vocabulary_matches_the_cloud_contract() -> None:
    from cloud.domain.model import ALERT_KINDS as CLOUD_KINDS
    from cloud.domain.model import SEVERITIES as CLOUD_SEVERITIES
    from cloud.domain.model import SUBJECT_TYPES as CLOUD_SUBJECTS
    from cloud.domain.model import RuleParams

    assert (ALERT_KINDS, SEVERITIES, SUBJECT_TYPES) == (CLOUD_KINDS, CLOUD_SEVERITIES,
                                                        CLOUD_SUBJECTS)
    assert set(EXPECTATIONS) == set(INCIDENT_KINDS)
    for exps in EXPECTATIONS.values():
        for exp in exps:
            assert set(exp.kinds) <= set(ALERT_KINDS) and set(exp.types) <= set(SUBJECT_TYPES)
    assert set(DEFAULT_GRACE_MS) == set(ALERT_KINDS)
    # the grace after an incident must cover the rule's own window
    rp, params = RuleParams(), ScoreParams()
    assert DEFAULT_GRACE_MS["animal_missing"] > rp.missing_after_ms + rp.lateness_ms
    assert DEFAULT_GRACE_MS["tag_inactive"] > rp.no_motion_ms + rp.lateness_ms
    assert DEFAULT_GRACE_MS["herd_count_drop"] > rp.herd_window_ms + rp.lateness_ms
    assert DEFAULT_GRACE_MS["device_offline"] > rp.device_offline_after_ms + rp.lateness_ms
    assert DEFAULT_GRACE_MS["site_offline"] > rp.site_offline_after_ms + rp.lateness_ms
    assert DEFAULT_GRACE_MS["unauthorized_outbound"] > rp.release_grace_ms + rp.lateness_ms
    assert params.min_offline_ms == rp.site_offline_after_ms == rp.device_offline_after_ms
