"""The JSON-lines records a simulation run writes (``truth.jsonl``, ``alerts.jsonl``,
``valuations.jsonl``) as strict pydantic models, and a reader that names every bad line.

Why strict: the scorer's numbers are only as good as the join keys. A lower-case EPC, a
timestamp written as a float or a misspelt field would otherwise turn into silently missed
matches (recall 0 that looks like a rules bug). So every model forbids unknown fields, takes no
type coercion (``"12"`` is not an int, ``true`` is not a number, ``NaN`` is not a value), and
animal EPCs must be upper-case hex, the edge convention.

Error policy: :func:`read_jsonl` reads the whole file and collects every problem (up to
:data:`MAX_PROBLEMS`, the rest counted), then raises one :class:`RecordError` carrying them all
as ``FILE:LINE: field: reason``. A file is either wholly valid or refused: scoring half a file
would give numbers that look real and are not. Blank lines are skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "ALERT_KINDS", "INCIDENT_KINDS", "MAX_PROBLEMS", "SEVERITIES", "SUBJECT_TYPES",
    "TRUTH_MODELS", "AlertRecord", "RecordError", "RecordProblem", "Subjects", "TruthIncident",
    "TruthLoan", "TruthOutage", "TruthRecord", "TruthValue", "ValuationRecord", "read_alerts",
    "read_jsonl", "read_truth", "read_valuations",
]

# Copies of cloud.domain.model's tuples, so the scorer does not import the cloud package;
# tests/simrun/test_score.py pins them equal to the cloud's.
ALERT_KINDS: Final = (
    "animal_missing", "herd_count_drop", "tag_inactive", "health_anomaly", "feed_intake_drop",
    "foreign_tag", "stock_below_minimum", "unauthorized_outbound", "geofence_exit",
    "weight_discrepancy", "device_offline", "site_offline", "coverage_breach", "price_shock",
    "data_integrity",
)
SEVERITIES: Final = ("info", "warning", "high", "critical")
SUBJECT_TYPES: Final = ("animal", "lot", "site", "loan", "device", "truck", "pen", "gateway")
# the scripted incident kinds of issue 6 (docs/scenarios.md)
INCIDENT_KINDS: Final = (
    "theft", "death", "tag_drop", "illness", "feed_shortage", "reader_offline",
    "network_outage", "gateway_crash", "outbound_without_release", "geofence_exit",
    "tare_fraud", "double_pledge", "price_change",
)
MAX_PROBLEMS: Final = 50  # problems kept per file; the rest are only counted
MAX_LINE_CHARS: Final = 1_000_000  # a longer line is refused without parsing

AlertKind = Literal[
    "animal_missing", "herd_count_drop", "tag_inactive", "health_anomaly", "feed_intake_drop",
    "foreign_tag", "stock_below_minimum", "unauthorized_outbound", "geofence_exit",
    "weight_discrepancy", "device_offline", "site_offline", "coverage_breach", "price_shock",
    "data_integrity",
]
SubjectType = Literal["animal", "lot", "site", "loan", "device", "truck", "pen", "gateway"]
IncidentKind = Literal[
    "theft", "death", "tag_drop", "illness", "feed_shortage", "reader_offline",
    "network_outage", "gateway_crash", "outbound_without_release", "geofence_exit",
    "tare_fraud", "double_pledge", "price_change",
]

_EPC_RE: Final = re.compile(r"(?:[0-9A-F]{2})+")
_DAY_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _check_epc(epc: str) -> str:
    if not _EPC_RE.fullmatch(epc):
        raise ValueError(f"animal EPC must be upper-case hex with an even number of digits, "
                         f"got {epc!r}")
    return epc


def _check_day(day: str) -> str:
    if not _DAY_RE.fullmatch(day):
        raise ValueError(f"day must be YYYY-MM-DD, got {day!r}")
    dt.date.fromisoformat(day)  # raises ValueError on 2026-02-30
    return day


Ms = Annotated[int, Field(ge=0)]  # ms since the epoch, UTC
Epc = Annotated[str, AfterValidator(_check_epc)]
Day = Annotated[str, AfterValidator(_check_day)]
Code = Annotated[str, Field(min_length=1)]
Money = Annotated[float, Field(ge=0)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Subjects(_Record):
    """The exact things an incident touched. ``pens`` and ``gateways`` are optional additions
    to the brief's list (feed_shortage is pen-level; a crash is a gateway's)."""

    animals: tuple[Epc, ...] = ()
    lots: tuple[Code, ...] = ()
    trucks: tuple[Code, ...] = ()
    devices: tuple[Code, ...] = ()
    loans: tuple[Code, ...] = ()
    pens: tuple[Code, ...] = ()
    gateways: tuple[Code, ...] = ()


class TruthIncident(_Record):
    """A scripted incident. ``end_ms`` null: it lasts to the end of the run (a stolen animal
    does not come back). ``site`` null: not tied to a site (a market price change)."""

    type: Literal["incident"]
    id: Code
    kind: IncidentKind
    site: Code | None
    start_ms: Ms
    end_ms: Ms | None
    subjects: Subjects = Subjects()
    detail: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _end_after_start(self) -> TruthIncident:
        if self.end_ms is not None and self.end_ms < self.start_ms:
            raise ValueError(f"end_ms {self.end_ms} is before start_ms {self.start_ms}")
        clinical = self.detail.get("clinical_ms")
        if clinical is not None and (not isinstance(clinical, int) or isinstance(clinical, bool)):
            raise ValueError(f"detail.clinical_ms must be an integer ms time, got {clinical!r}")
        return self


class TruthValue(_Record):
    """The true collateral value of one loan at the end of one simulated day."""

    type: Literal["value"]
    loan: Code
    day: Day
    ts_ms: Ms
    value: Money
    livestock: Money
    inventory: Money
    currency: Code


class TruthOutage(_Record):
    """A window in which a site's gateway could not upload (``network``) or was down
    (``crash``). ``end_ms`` null: still out when the run ended."""

    type: Literal["outage"]
    site: Code
    start_ms: Ms
    end_ms: Ms | None
    what: Literal["network", "crash"]

    @model_validator(mode="after")
    def _end_after_start(self) -> TruthOutage:
        if self.end_ms is not None and self.end_ms < self.start_ms:
            raise ValueError(f"end_ms {self.end_ms} is before start_ms {self.start_ms}")
        return self


class TruthLoan(_Record):
    """Optional: a loan's balance and lines, so ``coverage_breach`` alerts can be scored
    against the true LTV (outstanding / true value). Lines are LTV fractions, e.g. 0.70."""

    type: Literal["loan"]
    loan: Code
    outstanding: Money
    ltv_line: Annotated[float, Field(gt=0)]
    margin_call_line: Annotated[float, Field(gt=0)]
    liquidation_line: Annotated[float, Field(gt=0)]
    bank: Code | None = None
    currency: Code | None = None

    @model_validator(mode="after")
    def _lines_ordered(self) -> TruthLoan:
        if not self.ltv_line <= self.margin_call_line <= self.liquidation_line:
            raise ValueError("lines must satisfy ltv_line <= margin_call_line <= "
                             "liquidation_line")
        return self


TruthRecord = TruthIncident | TruthValue | TruthOutage | TruthLoan
TRUTH_MODELS: Final[tuple[type[_Record], ...]] = (TruthIncident, TruthValue, TruthOutage,
                                                   TruthLoan)


class AlertRecord(_Record):
    """One alert the cloud raised during the run (``alerts.jsonl``)."""

    id: int
    kind: AlertKind
    severity: Literal["info", "warning", "high", "critical"]
    bank: Code
    loan: Code | None
    site: Code | None
    subject_type: SubjectType
    subject_id: Code
    event_time_ms: Ms
    opened_at_ms: Ms
    resolved_at_ms: Ms | None
    state: Literal["open", "acknowledged", "resolved"]
    summary: str

    @model_validator(mode="after")
    def _animal_subject_is_epc(self) -> AlertRecord:
        if self.subject_type == "animal":
            _check_epc(self.subject_id)
        return self


class ValuationRecord(_Record):
    """The cloud's valuation of one loan for one simulated day (``valuations.jsonl``).
    ``coverage`` and ``ltv`` are null when undefined (nothing outstanding, or value 0)."""

    loan: Code
    day: Day
    ts_ms: Ms
    value: Money
    low: Money
    high: Money
    coverage: Annotated[float, Field(ge=0)] | None
    ltv: Annotated[float, Field(ge=0)] | None
    currency: Code


# ---------------------------------------------------------------------------------------------
# reading


class RecordProblem:
    """One bad line: where and why. ``field`` is a dotted path (``subjects.animals.0``) or
    ``<line>`` when the line as a whole is bad."""

    __slots__ = ("field", "file", "line", "reason")

    def __init__(self, file: str, line: int, field: str, reason: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"

    def __repr__(self) -> str:
        return f"RecordProblem({str(self)!r})"


class RecordError(ValueError):
    """A records file has bad lines. ``problems`` holds up to :data:`MAX_PROBLEMS` of them in
    file order; ``more`` counts the ones left out. ``str()`` lists them one per line."""

    def __init__(self, problems: Sequence[RecordProblem], more: int = 0) -> None:
        self.problems = tuple(problems)
        self.more = more
        lines = [str(p) for p in self.problems]
        if more:
            lines.append(f"... and {more} more problems")
        super().__init__("\n".join(lines))

    @property
    def count(self) -> int:
        return len(self.problems) + self.more

    def one_line(self) -> str:
        """The first problem and how many others: for a CLI's single error line."""
        first = str(self.problems[0]) if self.problems else "bad records"
        rest = self.count - 1
        return first if rest <= 0 else f"{first} (and {rest} more problems)"


class _Problems:
    """Collects problems for one file with the cap applied."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.kept: list[RecordProblem] = []
        self.more = 0

    def add(self, line: int, field: str, reason: str) -> None:
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append(RecordProblem(self.file, line, field, reason))
        else:
            self.more += 1

    def raise_if_any(self) -> None:
        if self.kept:
            raise RecordError(self.kept, self.more)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _loc(loc: Iterable[int | str]) -> str:
    return ".".join(str(part) for part in loc) or "<line>"


M = TypeVar("M", bound=BaseModel)


def _type_tag(model: type[BaseModel]) -> str | None:
    """The literal ``type`` value a truth model carries, or None for models without one."""
    field = model.model_fields.get("type")
    args: tuple[Any, ...] = getattr(field.annotation, "__args__", ()) if field else ()
    return str(args[0]) if len(args) == 1 else None


def _read_numbered(path: str | Path,
                   models: type[BaseModel] | Sequence[type[BaseModel]],
                   problems: _Problems) -> list[tuple[int, BaseModel]]:
    """Parse every non-blank line of ``path``; bad lines go to ``problems``."""
    if isinstance(models, type):
        dispatch: dict[str, type[BaseModel]] | None = None
        single: type[BaseModel] | None = models
    else:
        dispatch = {}
        for candidate in models:
            tag = _type_tag(candidate)
            if tag is None:
                raise TypeError(f"{candidate.__name__} has no literal 'type' field to "
                                f"dispatch on")
            dispatch[tag] = candidate
        single = None
    out: list[tuple[int, BaseModel]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.strip()
            if not text:
                continue
            if len(text) > MAX_LINE_CHARS:
                problems.add(lineno, "<line>", f"line longer than {MAX_LINE_CHARS} characters")
                continue
            try:
                obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
            except ValueError as exc:  # JSONDecodeError is a ValueError, as is a duplicate
                problems.add(lineno, "<line>", f"invalid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                problems.add(lineno, "<line>", f"expected a JSON object, got "
                                               f"{type(obj).__name__}")
                continue
            model: type[BaseModel] | None = single
            if dispatch is not None:
                tag = obj.get("type")
                model = dispatch.get(tag) if isinstance(tag, str) else None
                if model is None:
                    problems.add(lineno, "type", f"unknown record type {tag!r}; expected one "
                                                 f"of {', '.join(sorted(dispatch))}")
                    continue
            assert model is not None
            try:
                out.append((lineno, model.model_validate_json(text)))
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    msg = err["msg"].removeprefix("Value error, ")
                    problems.add(lineno, _loc(err["loc"]), msg)
    return out


def read_jsonl(path: str | Path,
               model_or_union: type[M] | Sequence[type[BaseModel]]) -> list[Any]:
    """Read a JSON-lines file into records of ``model_or_union``: one model class, or a
    sequence of models told apart by their literal ``type`` field (e.g. :data:`TRUTH_MODELS`).
    Raises :class:`RecordError` listing every bad line; ``OSError`` if the file is missing."""
    problems = _Problems(str(path))
    numbered = _read_numbered(path, model_or_union, problems)
    problems.raise_if_any()
    return [rec for _, rec in numbered]


def read_truth(path: str | Path) -> list[TruthRecord]:
    """``truth.jsonl``, plus the checks across lines: incident ids unique, one ``loan`` line
    per loan, one ``value`` line per (loan, day)."""
    problems = _Problems(str(path))
    numbered = _read_numbered(path, TRUTH_MODELS, problems)
    seen_ids: dict[str, int] = {}
    seen_loans: dict[str, int] = {}
    seen_days: dict[tuple[str, str], int] = {}
    for lineno, rec in numbered:
        if isinstance(rec, TruthIncident):
            if rec.id in seen_ids:
                problems.add(lineno, "id", f"duplicate incident id {rec.id!r} "
                                           f"(first on line {seen_ids[rec.id]})")
            seen_ids.setdefault(rec.id, lineno)
        elif isinstance(rec, TruthLoan):
            if rec.loan in seen_loans:
                problems.add(lineno, "loan", f"duplicate loan line for {rec.loan!r} "
                                             f"(first on line {seen_loans[rec.loan]})")
            seen_loans.setdefault(rec.loan, lineno)
        elif isinstance(rec, TruthValue):
            key = (rec.loan, rec.day)
            if key in seen_days:
                problems.add(lineno, "day", f"duplicate value for loan {rec.loan!r} on "
                                            f"{rec.day} (first on line {seen_days[key]})")
            seen_days.setdefault(key, lineno)
    problems.raise_if_any()
    return [rec for _, rec in numbered]  # type: ignore[misc]


def read_alerts(path: str | Path) -> list[AlertRecord]:
    """``alerts.jsonl``; alert ids must be unique."""
    problems = _Problems(str(path))
    numbered = _read_numbered(path, AlertRecord, problems)
    seen: dict[int, int] = {}
    for lineno, rec in numbered:
        assert isinstance(rec, AlertRecord)
        if rec.id in seen:
            problems.add(lineno, "id", f"duplicate alert id {rec.id} (first on line "
                                       f"{seen[rec.id]})")
        seen.setdefault(rec.id, lineno)
    problems.raise_if_any()
    return [rec for _, rec in numbered]  # type: ignore[misc]


def read_valuations(path: str | Path) -> list[ValuationRecord]:
    """``valuations.jsonl``; one line per (loan, day)."""
    problems = _Problems(str(path))
    numbered = _read_numbered(path, ValuationRecord, problems)
    seen: dict[tuple[str, str], int] = {}
    for lineno, rec in numbered:
        assert isinstance(rec, ValuationRecord)
        key = (rec.loan, rec.day)
        if key in seen:
            problems.add(lineno, "day", f"duplicate valuation for loan {rec.loan!r} on "
                                        f"{rec.day} (first on line {seen[key]})")
        seen.setdefault(key, lineno)
    problems.raise_if_any()
    return [rec for _, rec in numbered]  # type: ignore[misc]
