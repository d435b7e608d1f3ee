"""CSV importers for the registry: sites, loans (with borrowers), pledged animals and lots.

Every importer reads the whole file, checks every row (cells, references to what is already in
the database, duplicates inside the file and against the database) and only then writes; if
any row is bad it raises :class:`CsvImportError` listing *all* problems, each one line
``FILE:LINE: column COLUMN: reason``, and writes nothing. The caller's transaction makes the
write itself all-or-nothing.

A header row is required; column names are case-insensitive, optional columns may be left
out, unknown columns are errors (they are usually typos). Blank lines are skipped. Line numbers
are the file's physical lines, counted from 1 (the header).

An animal tag (EPC or ISO 11784 ID) pledged to two loans is not refused here: it is reported
as a warning line (``... warning: ...``) and later raised by the double-pledge alert.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.admin.service import CODE_PATTERN, CURRENCY_PATTERN, AdminError, get_bank
from cloud.db.models import (
    Bank,
    Borrower,
    Loan,
    LoanSite,
    PledgedAnimal,
    PledgedLot,
    Site,
)
from protocols import iso11784

__all__ = [
    "COLUMNS",
    "IMPORTERS",
    "LOT_UNITS",
    "MAX_CSV_BYTES",
    "SITE_KINDS",
    "CsvImportError",
    "ImportResult",
    "RowProblem",
    "import_animals",
    "import_loans",
    "import_lots",
    "import_sites",
]

MAX_CSV_BYTES: Final = 64 * 1024 * 1024
SITE_KINDS: Final = ("ranch", "warehouse")
LOT_UNITS: Final = ("kg", "t", "bag", "bale", "unit")
SEXES: Final = {"f": "F", "female": "F", "m": "M", "male": "M"}
MAX_ENTRY_WEIGHT_KG: Final = 3000.0
EPC_HEX_MIN: Final = 8  # 32 bits
EPC_HEX_MAX: Final = 62  # 496 bits, the most a PC word can announce
_IN_CHUNK: Final = 500  # keys per IN (...) query
_HEX: Final = re.compile(r"[0-9A-F]+\Z")

# kind -> (required columns, optional columns), in the order they are documented
COLUMNS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "sites": (("site", "name", "kind"), ("lat", "lon")),
    "loans": (("loan", "borrower", "currency", "outstanding", "ltv_line", "margin_call_line",
               "liquidation_line"), ("borrower_name", "haircut", "sites")),
    "animals": (("loan", "site"), ("epc", "iso11784", "breed", "sex", "birth_date",
                                   "entry_weight_kg", "entry_date", "pen")),
    "lots": (("lot", "loan", "site", "sku", "commodity", "quantity", "unit"), ("zone",)),
}


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One bad cell or row (``column`` is ``None`` when the whole line is at fault, ``line``
    0 when the whole file is)."""

    path: str
    line: int
    column: str | None
    reason: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        if self.column is not None:
            where += f"column {self.column}: "
        return where + ("warning: " if self.warning else "") + self.reason


class CsvImportError(AdminError):
    """The file was refused; ``errors`` lists every problem (and ``warnings`` the rest)."""

    def __init__(self, path: str, errors: list[RowProblem],
                 warnings: list[RowProblem]) -> None:
        super().__init__(f"{path}: {len(errors)} error(s); nothing imported",
                         reason="invalid_csv")
        self.path = path
        self.errors = errors
        self.warnings = warnings


@dataclass(slots=True)
class ImportResult:
    kind: str
    path: str
    created: int = 0
    borrowers_created: int = 0
    warnings: list[RowProblem] = field(default_factory=list)


# -- reading ---------------------------------------------------------------------------------
class _Row:
    """The cells of one data line, with checkers that record problems and return ``None``."""

    def __init__(self, path: str, line: int, cells: dict[str, str],
                 problems: list[RowProblem]) -> None:
        self.path = path
        self.line = line
        self.cells = cells
        self.problems = problems
        self.bad = False

    def error(self, column: str | None, reason: str) -> None:
        self.bad = True
        self.problems.append(RowProblem(self.path, self.line, column, reason))

    def warn(self, column: str | None, reason: str) -> None:
        self.problems.append(RowProblem(self.path, self.line, column, reason, warning=True))

    def raw(self, column: str) -> str:
        return self.cells.get(column, "").strip()

    def text(self, column: str, *, required: bool = False, max_len: int = 64) -> str | None:
        value = self.raw(column)
        if not value:
            if required:
                self.error(column, "is empty")
            return None
        if len(value) > max_len:
            self.error(column, f"longer than {max_len} characters")
            return None
        return value

    def code(self, column: str, what: str) -> str | None:
        value = self.raw(column)
        if not value:
            self.error(column, "is empty")
            return None
        if not CODE_PATTERN.match(value):
            self.error(column, f"{what} code {value!r} must be 1-64 characters of "
                               "A-Z a-z 0-9 _ . : -")
            return None
        return value

    def choice(self, column: str, choices: Iterable[str], *, required: bool = True) -> str | None:
        value = self.raw(column)
        options = tuple(choices)
        if not value:
            if required:
                self.error(column, f"is empty; one of {', '.join(options)}")
            return None
        if value.lower() not in options:
            self.error(column, f"{value!r} is not one of {', '.join(options)}")
            return None
        return value.lower()

    def decimal(self, column: str, *, places: int, low: Decimal, high: Decimal | None = None,
                low_open: bool = False, required: bool = True,
                hint: str = "") -> Decimal | None:
        value = self.raw(column)
        if not value:
            if required:
                self.error(column, "is empty")
            return None
        try:
            d = Decimal(value)
        except InvalidOperation:
            self.error(column, f"{value!r} is not a number")
            return None
        exponent = d.as_tuple().exponent
        if not isinstance(exponent, int):  # NaN, Infinity
            self.error(column, f"{value!r} is not a finite number")
            return None
        if -exponent > places:
            self.error(column, f"{value} has more than {places} decimal places")
            return None
        if d < low or (low_open and d == low) or (high is not None and d > high):
            lo = f"{'>' if low_open else '>='} {low}"
            span = lo if high is None else f"{lo} and <= {high}"
            self.error(column, f"{value} must be {span}{hint}")
            return None
        return d

    def number(self, column: str, *, low: float, high: float, low_open: bool = False,
               ) -> float | None:
        value = self.raw(column)
        if not value:
            return None
        try:
            x = float(value)
        except ValueError:
            self.error(column, f"{value!r} is not a number")
            return None
        if not (low < x if low_open else low <= x) or not x <= high:
            self.error(column, f"{value} must be {'>' if low_open else '>='} {low:g} and "
                               f"<= {high:g}")
            return None
        return x

    def date(self, column: str, *, not_after: dt.date) -> dt.date | None:
        value = self.raw(column)
        if not value:
            return None
        try:
            d = dt.date.fromisoformat(value)
        except ValueError:
            self.error(column, f"{value!r} is not a date (YYYY-MM-DD)")
            return None
        if d > not_after:
            self.error(column, f"{value} is in the future")
            return None
        return d


def _read_rows(path: Path, display: str, kind: str,
               problems: list[RowProblem]) -> list[_Row]:
    """Parse ``path`` into rows; problems with the file, the header or a line's shape are
    appended to ``problems``."""
    required, optional = COLUMNS[kind]
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            problems.append(RowProblem(display, 1, None, f"file is {size} bytes, more than "
                                                         f"{MAX_CSV_BYTES}"))
            return []
        data = path.read_bytes()
    except OSError as exc:
        problems.append(RowProblem(display, 0, None, f"cannot read: {exc.strerror or exc}"))
        return []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        problems.append(RowProblem(display, line, None, "not UTF-8 text"))
        return []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[_Row] = []
    last_line = 0
    while True:
        start = last_line + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(RowProblem(display, start, None, f"not CSV: {exc}"))
            return []
        last_line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in record]
            if not _check_header(display, start, header, required, optional, problems):
                return []
            continue
        if len(record) != len(header):
            problems.append(RowProblem(display, start, None, f"{len(record)} fields, the "
                                                             f"header has {len(header)}"))
            continue
        rows.append(_Row(display, start, dict(zip(header, record, strict=True)), problems))
    if header is None:
        problems.append(RowProblem(display, 1, None, "no header row (the file is empty); "
                                                     f"expected columns: "
                                                     f"{', '.join(required + optional)}"))
    return rows


def _check_header(display: str, line: int, header: list[str], required: tuple[str, ...],
                  optional: tuple[str, ...], problems: list[RowProblem]) -> bool:
    ok = True
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.append(RowProblem(display, line, name, "appears twice in the header"))
            ok = False
        seen.add(name)
        if name not in required and name not in optional:
            problems.append(RowProblem(display, line, name or "(empty)",
                                       "unknown column; expected "
                                       f"{', '.join(required + optional)}"))
            ok = False
    for name in required:
        if name not in seen:
            problems.append(RowProblem(display, line, name, "missing from the header"))
            ok = False
    return ok


def _finish(display: str, problems: list[RowProblem]) -> list[RowProblem]:
    """Raise if any problem is an error; else return the warnings."""
    problems.sort(key=lambda p: (p.line, p.warning))
    errors = [p for p in problems if not p.warning]
    warnings = [p for p in problems if p.warning]
    if errors:
        raise CsvImportError(display, errors, warnings)
    return warnings


def _flush(session: Session, display: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:  # someone else wrote the same keys meanwhile
        raise AdminError(f"{display}: conflicts with a concurrent change; nothing imported",
                         reason="conflict") from exc


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(keys), _IN_CHUNK):
        yield keys[i:i + _IN_CHUNK]


def _sites(session: Session, bank: Bank) -> dict[str, Site]:
    return {s.code: s for s in session.scalars(select(Site).where(Site.bank_id == bank.id))}


def _loans(session: Session, bank: Bank) -> dict[str, Loan]:
    return {x.code: x for x in session.scalars(select(Loan).where(Loan.bank_id == bank.id))}


def _loan_sites(session: Session, bank: Bank) -> set[tuple[int, int]]:
    rows = session.execute(select(LoanSite.loan_id, LoanSite.site_id)
                           .join(Loan, LoanSite.loan_id == Loan.id)
                           .where(Loan.bank_id == bank.id))
    return set(rows)


def _pledge_target(row: _Row, loans: dict[str, Loan], sites: dict[str, Site],
                   links: set[tuple[int, int]], kind: str) -> tuple[Loan, Site] | None:
    """The loan and site a pledged asset row names, checked against each other."""
    loan_code = row.code("loan", "loan")
    site_code = row.code("site", "site")
    loan = loans.get(loan_code) if loan_code else None
    site = sites.get(site_code) if site_code else None
    if loan_code and loan is None:
        row.error("loan", f"no loan {loan_code!r} (import loans first)")
    if site_code and site is None:
        row.error("site", f"no site {site_code!r} (import sites first)")
    if loan is None or site is None:
        return None
    if site.kind != kind:
        row.error("site", f"site {site.code!r} is a {site.kind}; this file needs a {kind}")
        return None
    if (loan.id, site.id) not in links:
        row.error("site", f"site {site.code!r} is not among loan {loan.code!r}'s sites "
                          "(the sites column of loans.csv)")
        return None
    return loan, site


# -- importers -------------------------------------------------------------------------------
def import_sites(session: Session, *, bank_code: str, path: Path,
                 display: str | None = None) -> ImportResult:
    """``sites.csv``: site, name, kind (ranch|warehouse), lat, lon."""
    display = display or str(path)
    bank = get_bank(session, bank_code)
    problems: list[RowProblem] = []
    rows = _read_rows(path, display, "sites", problems)
    existing = set(_sites(session, bank))
    first: dict[str, int] = {}
    new: list[Site] = []
    for row in rows:
        code = row.code("site", "site")
        name = row.text("name", required=True, max_len=200)
        kind = row.choice("kind", SITE_KINDS)
        lat = row.number("lat", low=-90, high=90)
        lon = row.number("lon", low=-180, high=180)
        if (row.raw("lat") == "") != (row.raw("lon") == ""):
            row.error("lat" if not row.raw("lat") else "lon", "give both lat and lon, or "
                                                              "neither")
        if code is not None:
            if code in first:
                row.error("site", f"duplicate site {code!r} (first on line {first[code]})")
            elif code in existing:
                row.error("site", f"site {code!r} already exists")
            first.setdefault(code, row.line)
        if not row.bad and code and name and kind:
            new.append(Site(bank_id=bank.id, code=code, name=name, kind=kind, lat=lat, lon=lon))
    warnings = _finish(display, problems)
    session.add_all(new)
    _flush(session, display)
    return ImportResult("sites", display, created=len(new), warnings=warnings)


_LINE_HINT: Final = " (a fraction of the collateral value, e.g. 0.70)"


def import_loans(session: Session, *, bank_code: str, path: Path,
                 display: str | None = None) -> ImportResult:
    """``loans.csv``: loan, borrower, borrower_name, currency, outstanding, ltv_line,
    margin_call_line, liquidation_line, haircut, sites (``;``-separated site codes).
    Borrowers not yet known are created (``borrower_name`` is then required)."""
    display = display or str(path)
    bank = get_bank(session, bank_code)
    problems: list[RowProblem] = []
    rows = _read_rows(path, display, "loans", problems)
    sites = _sites(session, bank)
    existing_loans = set(_loans(session, bank))
    borrowers = {b.code: b for b in session.scalars(select(Borrower)
                                                     .where(Borrower.bank_id == bank.id))}
    new_borrowers: dict[str, tuple[str, int]] = {}  # code -> (name, first line)
    first: dict[str, int] = {}
    planned: list[tuple[dict[str, object], str, list[Site]]] = []
    one = Decimal(1)
    for row in rows:
        code = row.code("loan", "loan")
        borrower = row.code("borrower", "borrower")
        name = row.text("borrower_name", max_len=200)
        currency = row.raw("currency")
        if not CURRENCY_PATTERN.match(currency):
            row.error("currency", f"{currency!r} must be 3 capital letters (ISO 4217)")
        outstanding = row.decimal("outstanding", places=2, low=Decimal(0),
                                  high=Decimal("9999999999999999.99"))
        lines = [row.decimal(col, places=4, low=Decimal(0), high=one, low_open=True,
                             hint=_LINE_HINT)
                 for col in ("ltv_line", "margin_call_line", "liquidation_line")]
        haircut = row.decimal("haircut", places=4, low=Decimal(0), high=Decimal("0.9999"),
                              required=False)
        ltv, margin, liquidation = lines
        if ltv is not None and margin is not None and margin < ltv:
            row.error("margin_call_line", f"{margin} is below ltv_line {ltv}")
        if margin is not None and liquidation is not None and liquidation < margin:
            row.error("liquidation_line", f"{liquidation} is below margin_call_line {margin}")
        site_rows: list[Site] = []
        codes = [c.strip() for c in row.raw("sites").split(";") if c.strip()]
        for c in codes:
            if c not in sites:
                row.error("sites", f"no site {c!r} (import sites first)")
            elif sites[c] in site_rows:
                row.error("sites", f"site {c!r} listed twice")
            else:
                site_rows.append(sites[c])
        if code is not None:
            if code in first:
                row.error("loan", f"duplicate loan {code!r} (first on line {first[code]})")
            elif code in existing_loans:
                row.error("loan", f"loan {code!r} already exists")
            first.setdefault(code, row.line)
        if borrower is not None:
            if borrower in borrowers:
                known = borrowers[borrower].name
                if name is not None and name != known:
                    row.warn("borrower_name", f"borrower {borrower!r} is already known as "
                                              f"{known!r}; that name is kept")
            elif borrower in new_borrowers:
                earlier, line = new_borrowers[borrower]
                if name is not None and name != earlier:
                    row.error("borrower_name", f"{name!r} differs from {earlier!r} given for "
                                               f"borrower {borrower!r} on line {line}")
            elif name is None:
                row.error("borrower_name", f"borrower {borrower!r} is new, so its name is "
                                           "needed")
            else:
                new_borrowers[borrower] = (name, row.line)
        if not row.bad and code and borrower and outstanding is not None and ltv is not None \
                and margin is not None and liquidation is not None:
            planned.append(({"bank_id": bank.id, "code": code, "currency": currency,
                             "outstanding": outstanding, "ltv_line": ltv,
                             "margin_call_line": margin, "liquidation_line": liquidation,
                             "haircut": haircut if haircut is not None else Decimal(0)},
                            borrower, site_rows))
    warnings = _finish(display, problems)
    made = [Borrower(bank_id=bank.id, code=c, name=n) for c, (n, _) in new_borrowers.items()]
    session.add_all(made)
    _flush(session, display)
    borrowers.update({b.code: b for b in made})
    loans = []
    for values, borrower_code, site_rows in planned:
        loan = Loan(borrower_id=borrowers[borrower_code].id, **values)
        loans.append((loan, site_rows))
    session.add_all([loan for loan, _ in loans])
    _flush(session, display)
    session.add_all([LoanSite(loan_id=loan.id, site_id=s.id) for loan, ss in loans for s in ss])
    _flush(session, display)
    return ImportResult("loans", display, created=len(loans), borrowers_created=len(made),
                        warnings=warnings)


def _epc(row: _Row) -> str | None:
    value = "".join(row.raw("epc").split()).upper()
    if not value:
        return None
    if value.startswith("0X"):
        value = value[2:]
    if not _HEX.match(value):
        row.error("epc", f"{row.raw('epc')!r} is not hexadecimal")
        return None
    if len(value) % 4 or not EPC_HEX_MIN <= len(value) <= EPC_HEX_MAX:
        row.error("epc", f"{len(value)} hex digits; an EPC is whole 16-bit words, "
                         f"{EPC_HEX_MIN}-{EPC_HEX_MAX} hex digits (96-bit tags: 24)")
        return None
    return value


def _animal_ids(row: _Row) -> tuple[str | None, str | None]:
    """(EPC as upper-case hex, ISO 11784 ID as its 15-digit decimal form)."""
    epc = _epc(row)
    in_epc = iso11784.from_epc(epc) if epc else None
    iso = None
    text = row.raw("iso11784")
    if text:
        try:
            iso = iso11784.parse(text).decimal
        except iso11784.Iso11784Error as exc:
            row.error("iso11784", f"not an ISO 11784 animal ID: {exc}")
            return epc, None
        if in_epc is not None and in_epc.decimal != iso:
            row.error("iso11784", f"{iso} differs from the ID {in_epc.decimal} carried in the "
                                  "EPC")
    elif in_epc is not None:
        iso = in_epc.decimal
    if epc is None and iso is None and not row.bad:
        row.error("epc", "give an epc or an iso11784 ID (or both)")
    return epc, iso


def _other_pledges(session: Session, column: str, keys: set[str],
                   ) -> dict[str, list[tuple[int, int, str]]]:
    """key -> [(loan id, bank id, loan code)] of animals already pledged with that key."""
    attr = PledgedAnimal.epc if column == "epc" else PledgedAnimal.iso11784
    found: dict[str, list[tuple[int, int, str]]] = {}
    for chunk in _chunks(sorted(keys)):
        rows = session.execute(select(attr, Loan.id, Loan.bank_id, Loan.code)
                               .join(Loan, PledgedAnimal.loan_id == Loan.id)
                               .where(attr.in_(chunk)))
        for key, loan_id, bank_id, code in rows:
            if key is not None:
                found.setdefault(key, []).append((loan_id, bank_id, code))
    return found


def import_animals(session: Session, *, bank_code: str, path: Path,
                   display: str | None = None, today: dt.date | None = None) -> ImportResult:
    """``animals.csv``: epc, iso11784, loan, site, breed, sex, birth_date, entry_weight_kg,
    entry_date (the day the entry weight was taken; default: the import day), pen. An EPC in
    pledgewatch's ISO-in-EPC layout fills (or must match) ``iso11784``."""
    display = display or str(path)
    today = today or dt.date.today()
    bank = get_bank(session, bank_code)
    problems: list[RowProblem] = []
    rows = _read_rows(path, display, "animals", problems)
    loans, sites, links = _loans(session, bank), _sites(session, bank), _loan_sites(session,
                                                                                      bank)
    seen: dict[tuple[str, str], list[tuple[int, Loan]]] = {}
    planned: list[tuple[_Row, PledgedAnimal]] = []
    for row in rows:
        epc, iso = _animal_ids(row)
        target = _pledge_target(row, loans, sites, links, "ranch")
        breed = row.text("breed", max_len=64)
        sex = row.choice("sex", SEXES, required=False)
        birth = row.date("birth_date", not_after=today)
        weight = row.number("entry_weight_kg", low=0, high=MAX_ENTRY_WEIGHT_KG, low_open=True)
        entry_date = row.date("entry_date", not_after=today)
        if entry_date is not None and birth is not None and entry_date < birth:
            row.error("entry_date", f"{entry_date} is before the birth date {birth}")
        if weight is not None and entry_date is None:
            entry_date = today
        pen = row.text("pen", max_len=32)
        if target is None:
            continue
        loan, site = target
        for column, key in (("epc", epc), ("iso11784", iso)):
            if key is None:
                continue
            for line, other in seen.get((column, key), []):
                if other.id == loan.id:
                    row.error(column, f"duplicate {key} (also on line {line})")
                else:
                    row.warn(column, f"{key} is also pledged to loan {other.code!r} on line "
                                     f"{line} (double pledge)")
            seen.setdefault((column, key), []).append((row.line, loan))
        if not row.bad:
            planned.append((row, PledgedAnimal(
                loan_id=loan.id, site_id=site.id, epc=epc, iso11784=iso, breed=breed,
                sex=SEXES[sex] if sex else None, birth_date=birth, entry_weight_kg=weight,
                entry_date=entry_date, pen=pen)))
    for column in ("epc", "iso11784"):
        keys = {getattr(a, column) for _, a in planned} - {None}
        pledged = _other_pledges(session, column, keys)
        for row, animal in planned:
            key = getattr(animal, column)
            for loan_id, bank_id, code in pledged.get(key, []):
                if loan_id == animal.loan_id:
                    row.error(column, f"{key} is already pledged to loan {code!r}")
                elif bank_id == bank.id:
                    row.warn(column, f"{key} is already pledged to loan {code!r} (double "
                                     "pledge)")
                else:
                    row.warn(column, f"{key} is already pledged to a loan of another bank "
                                     "(double pledge)")
    warnings = _finish(display, problems)
    session.add_all([a for _, a in planned])
    _flush(session, display)
    return ImportResult("animals", display, created=len(planned), warnings=warnings)


def import_lots(session: Session, *, bank_code: str, path: Path,
                display: str | None = None) -> ImportResult:
    """``lots.csv``: lot, loan, site, sku, commodity, zone, quantity, unit."""
    display = display or str(path)
    bank = get_bank(session, bank_code)
    problems: list[RowProblem] = []
    rows = _read_rows(path, display, "lots", problems)
    loans, sites, links = _loans(session, bank), _sites(session, bank), _loan_sites(session,
                                                                                      bank)
    existing = set(session.execute(select(PledgedLot.site_id, PledgedLot.lot_code)
                                   .join(Site, PledgedLot.site_id == Site.id)
                                   .where(Site.bank_id == bank.id)).all())
    first: dict[tuple[int, str], int] = {}
    new: list[PledgedLot] = []
    for row in rows:
        code = row.code("lot", "lot")
        target = _pledge_target(row, loans, sites, links, "warehouse")
        sku = row.text("sku", required=True, max_len=64)
        commodity = row.code("commodity", "commodity")
        zone = row.text("zone", max_len=32)
        quantity = row.decimal("quantity", places=3, low=Decimal(0), low_open=True,
                               high=Decimal("999999999999999.999"))
        unit = row.choice("unit", LOT_UNITS)
        if target is None or code is None:
            continue
        loan, site = target
        key = (site.id, code)
        if key in first:
            row.error("lot", f"duplicate lot {code!r} at site {site.code!r} (first on line "
                             f"{first[key]})")
        elif key in existing:
            row.error("lot", f"site {site.code!r} already has lot {code!r}")
        first.setdefault(key, row.line)
        if not row.bad and sku and commodity and quantity is not None and unit:
            new.append(PledgedLot(loan_id=loan.id, site_id=site.id, lot_code=code, sku=sku,
                                  commodity=commodity, zone=zone, quantity=quantity, unit=unit))
    warnings = _finish(display, problems)
    session.add_all(new)
    _flush(session, display)
    return ImportResult("lots", display, created=len(new), warnings=warnings)


IMPORTERS: Final[dict[str, Callable[..., ImportResult]]] = {
    "sites": import_sites,
    "loans": import_loans,
    "animals": import_animals,
    "lots": import_lots,
}
