"""truth.jsonl: what really happened in a simulated world, one JSON object per line with
``type`` first (docs/scenarios.md, "truth.jsonl"):

* ``incident``: id, kind, site, start_ms, end_ms (null = lasts), subjects (animals, lots,
  trucks, devices, loans, and the optional pens and gateways: lists of ids), detail
  (kind-specific);
* ``outage``: site, start_ms, end_ms, what (``network`` or ``crash``);
* ``loan``: loan, outstanding, ltv_line, margin_call_line, liquidation_line, bank, currency
  (so the scorer can judge coverage alerts against the true LTV);
* ``value``: loan, day, ts_ms (end of that UTC day or of the run), value = livestock +
  inventory, currency.

:func:`validate_truth_line` checks one object against that schema.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from firmware_sim.world.scenario import INCIDENT_KINDS

__all__ = ["OPTIONAL_SUBJECT_KEYS", "SUBJECT_KEYS", "TRUTH_TYPES", "validate_truth_line",
           "write_truth_lines"]

TRUTH_TYPES: Final = ("incident", "value", "outage", "loan")
SUBJECT_KEYS: Final = ("animals", "lots", "trucks", "devices", "loans")
OPTIONAL_SUBJECT_KEYS: Final = ("pens", "gateways")
_KEYS: Final = {
    "incident": ("type", "id", "kind", "site", "start_ms", "end_ms", "subjects", "detail"),
    "value": ("type", "loan", "day", "ts_ms", "value", "livestock", "inventory", "currency"),
    "outage": ("type", "site", "start_ms", "end_ms", "what"),
    "loan": ("type", "loan", "outstanding", "ltv_line", "margin_call_line", "liquidation_line",
             "bank", "currency"),
}
_ID_RE: Final = re.compile(r"inc-[1-9][0-9]*\Z")
_DAY_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}\Z")


def _is_ms(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53


def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def validate_truth_line(obj: Any) -> list[str]:
    """Problems of one truth.jsonl object (empty when it is valid)."""
    if not isinstance(obj, dict):
        return [f"a truth line must be an object, got {type(obj).__name__}"]
    kind = obj.get("type")
    if kind not in TRUTH_TYPES:
        return [f"type must be one of {', '.join(TRUTH_TYPES)}, got {kind!r}"]
    errs: list[str] = []
    if next(iter(obj)) != "type":
        errs.append("type must be the first key")
    want = _KEYS[kind]
    missing = [k for k in want if k not in obj]
    extra = [k for k in obj if k not in want]
    if missing:
        errs.append(f"missing keys: {', '.join(missing)}")
    if extra:
        errs.append(f"unknown keys: {', '.join(extra)}")
    if missing:
        return errs
    if kind == "incident":
        if not isinstance(obj["id"], str) or not _ID_RE.match(obj["id"]):
            errs.append(f"id must look like 'inc-3', got {obj['id']!r}")
        if obj["kind"] not in INCIDENT_KINDS:
            errs.append(f"kind {obj['kind']!r} is not an incident kind")
        if not (obj["site"] is None or (isinstance(obj["site"], str) and obj["site"])):
            errs.append("site must be a site code or null")
        elif obj["site"] is None and obj["kind"] != "price_change":
            errs.append(f"a {obj['kind']} incident needs a site")
        errs += _times(obj, end_nullable=True)
        subjects = obj["subjects"]
        if not isinstance(subjects, dict) or not set(SUBJECT_KEYS) <= set(subjects) or not \
                set(subjects) <= set(SUBJECT_KEYS + OPTIONAL_SUBJECT_KEYS):
            errs.append(f"subjects must be an object with {', '.join(SUBJECT_KEYS)} and "
                        f"optionally {', '.join(OPTIONAL_SUBJECT_KEYS)}")
        else:
            for k in subjects:
                v = subjects[k]
                if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                    errs.append(f"subjects.{k} must be a list of ids")
                elif len(set(v)) != len(v):
                    errs.append(f"subjects.{k} lists an id twice")
            if isinstance(subjects["animals"], list) and any(
                    isinstance(x, str) and x != x.upper() for x in subjects["animals"]):
                errs.append("subjects.animals must be upper-case EPCs")
        if not isinstance(obj["detail"], dict):
            errs.append("detail must be an object")
    elif kind == "outage":
        if not isinstance(obj["site"], str) or not obj["site"]:
            errs.append("site must be a site code")
        if obj["what"] not in ("network", "crash"):
            errs.append(f"what must be 'network' or 'crash', got {obj['what']!r}")
        errs += _times(obj, end_nullable=False)
    elif kind == "loan":
        for k in ("loan", "bank"):
            if not isinstance(obj[k], str) or not obj[k]:
                errs.append(f"{k} must be a code")
        lines = [obj[k] for k in ("ltv_line", "margin_call_line", "liquidation_line")]
        if not _is_num(obj["outstanding"]) or obj["outstanding"] <= 0:
            errs.append("outstanding must be a number > 0")
        if not all(_is_num(x) and x > 0 for x in lines):
            errs.append("ltv_line, margin_call_line, liquidation_line must be numbers > 0")
        elif not lines[0] <= lines[1] <= lines[2]:
            errs.append("lines must satisfy ltv_line <= margin_call_line <= liquidation_line")
        if not isinstance(obj["currency"], str) or not _CURRENCY_RE.match(obj["currency"]):
            errs.append("currency must be 3 capital letters")
    else:
        if not isinstance(obj["loan"], str) or not obj["loan"]:
            errs.append("loan must be a loan code")
        day = obj["day"]
        if not isinstance(day, str) or not _DAY_RE.match(day):
            errs.append(f"day must be YYYY-MM-DD, got {day!r}")
        else:
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                errs.append(f"day {day!r} is not a date")
        if not _is_ms(obj["ts_ms"]):
            errs.append("ts_ms must be integer milliseconds since the epoch")
        nums = [k for k in ("value", "livestock", "inventory") if not _is_num(obj[k])
                or obj[k] < 0]
        if nums:
            errs.append(f"{', '.join(nums)} must be finite numbers >= 0")
        elif not math.isclose(obj["value"], obj["livestock"] + obj["inventory"],
                              rel_tol=1e-9, abs_tol=0.01):
            errs.append("value must equal livestock + inventory")
        if not isinstance(obj["currency"], str) or not _CURRENCY_RE.match(obj["currency"]):
            errs.append("currency must be 3 capital letters")
    return errs


def _times(obj: dict[str, Any], *, end_nullable: bool) -> list[str]:
    errs = []
    if not _is_ms(obj["start_ms"]):
        errs.append("start_ms must be integer milliseconds since the epoch")
    end = obj["end_ms"]
    if end is None and end_nullable:
        return errs
    if not _is_ms(end):
        errs.append("end_ms must be integer milliseconds since the epoch"
                    + (" or null" if end_nullable else ""))
    elif _is_ms(obj["start_ms"]) and end < obj["start_ms"]:
        errs.append("end_ms must not be before start_ms")
    return errs


def write_truth_lines(path: str | Path, lines: Iterable[dict[str, Any]]) -> int:
    """Write truth objects as JSON lines; returns how many."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for obj in lines:
            f.write(json.dumps(obj, separators=(",", ":")) + "\n")
            n += 1
    return n
