"""Random bytes and random rows through the four CSV importers (sites, loans, animals, lots).

The contract (cloud/admin/csv_import.py): a file is imported whole, or refused with a
:class:`CsvImportError` listing every problem as ``FILE:LINE: column COLUMN: reason``, and
then nothing is written. Never another exception, never part of a file. The CLI prints the
same lines and exits 1, never with a traceback."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.admin import service
from cloud.admin.csv_import import COLUMNS, IMPORTERS, CsvImportError, ImportResult
from cloud.db import models
from cloud.db.migrate import upgrade
from cloud.db.session import make_engine, make_sessionmaker, session_scope
from pledgewatch.cli import main
from tests.fuzz.catalogue import INVALID, VALID, VALID_FOR

TODAY = dt.date(2026, 1, 1)
TABLES = (models.Site, models.Loan, models.Borrower, models.LoanSite, models.PledgedAnimal,
          models.PledgedLot)
DISPLAY = "upload.csv"
PROBLEM = re.compile(rf"^{re.escape(DISPLAY)}:(\d+:)? \S")

@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    """Bank DEMO: ranch RANCH-1, warehouse WH-1, loan L1 on RANCH-1, loan L2 on WH-1."""
    tmp = tmp_path_factory.mktemp("csv-fuzz")
    url = f"sqlite:///{tmp / 'reg.db'}"
    upgrade(url)  # the schema as the CLI expects it (alembic head)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    sites = tmp / "sites.csv"
    sites.write_text("site,name,kind\nRANCH-1,Ranch,ranch\nWH-1,Warehouse,warehouse\n")
    loans = tmp / "loans.csv"
    loans.write_text("loan,borrower,borrower_name,currency,outstanding,ltv_line,"
                     "margin_call_line,liquidation_line,sites\n"
                     "L1,B1,Borrower,USD,1000,0.7,0.8,0.9,RANCH-1\n"
                     "L2,B1,,USD,1000,0.7,0.8,0.9,WH-1\n")
    with session_scope(factory) as s:
        service.create_bank(s, code="DEMO", name="Demo bank")
        IMPORTERS["sites"](s, bank_code="DEMO", path=sites)
        IMPORTERS["loans"](s, bank_code="DEMO", path=loans)
    try:
        yield factory
    finally:
        engine.dispose()


def _counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as s:
        return {m.__tablename__: int(s.scalar(select(func.count()).select_from(m)) or 0)
                for m in TABLES}


_WRITTEN = {"sites": "sites", "loans": "loans", "animals": "pledged_animals",
            "lots": "pledged_lots"}


def _import(factory: sessionmaker[Session], kind: str, path: Path) -> None:
    """Run one import and check the all-or-nothing contract, whatever the file holds."""
    before = _counts(factory)
    lines = path.read_bytes().count(b"\n") + 1
    result: ImportResult | None = None
    try:
        with session_scope(factory) as s:
            kw = {"today": TODAY} if kind == "animals" else {}
            result = IMPORTERS[kind](s, bank_code="DEMO", path=path, display=DISPLAY, **kw)
    except CsvImportError as exc:
        assert exc.errors, "refused without a reason"
        for problem in [*exc.errors, *exc.warnings]:
            assert PROBLEM.match(str(problem)), str(problem)
            assert 0 <= problem.line <= lines, str(problem)
            assert problem.reason.strip()
        assert _counts(factory) == before, "a refused file wrote something"
        return
    after = _counts(factory)
    assert result is not None
    assert after[_WRITTEN[kind]] == before[_WRITTEN[kind]] + result.created
    if kind != "loans":  # loans may create borrowers and loan-site links beside them
        assert {k: v for k, v in after.items() if k != _WRITTEN[kind]} == \
            {k: v for k, v in before.items() if k != _WRITTEN[kind]}


@st.composite
def csv_files(draw: st.DrawFn, kind: str) -> bytes:
    required, optional = COLUMNS[kind]
    columns = list(required) + draw(st.lists(st.sampled_from(optional), unique=True))
    if draw(st.integers(0, 19)) == 0:
        columns.remove(draw(st.sampled_from(columns)))  # a required column missing
    if draw(st.integers(0, 19)) == 0:
        columns.append(draw(st.sampled_from(["colour", "", "LOAN", "site"])))  # odd header
    columns = draw(st.permutations(columns))
    n = draw(st.integers(0, 6))
    garbage_rate = draw(st.sampled_from([0.0, 0.0, 0.05, 0.3]))
    base = draw(st.integers(0, 10**9))
    rows = []
    for i in range(n):
        row = []
        for col in columns:
            name = col.lower()
            if draw(st.floats(0, 1)) < garbage_rate:
                row.append(draw(st.sampled_from(INVALID.get(name, [""])) | st.text(max_size=12)))
            else:
                valid = VALID_FOR.get(kind, {}).get(name, VALID.get(name, ""))
                row.append(valid.format(n=base + i))
        if draw(st.integers(0, 11)) == 0:
            row = row[:-1] or ["x", "y"]  # a short or odd row
        rows.append(row)
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
                        lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(columns)
    writer.writerows(rows)
    text = buf.getvalue()
    if draw(st.booleans()):
        text = "\ufeff" + text  # a BOM, as spreadsheets write
    return text.encode("utf-8")


@pytest.mark.parametrize("kind", sorted(IMPORTERS))
@settings(max_examples=35, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_rows_import_whole_or_not_at_all(factory: sessionmaker[Session], kind: str,
                                                tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "upload.csv"
    path.write_bytes(data.draw(csv_files(kind)))
    _import(factory, kind, path)


@pytest.mark.parametrize("kind", sorted(IMPORTERS))
def test_random_bytes_are_refused_with_a_line(factory: sessionmaker[Session], kind: str,
                                              tmp_path: Path) -> None:
    rng = random.Random(f"csv-{kind}")
    header = ",".join(COLUMNS[kind][0]).encode() + b"\n"
    for i in range(30):
        junk = rng.randbytes(rng.randint(0, 400))
        body = header + junk if i % 2 else junk
        if i % 3 == 0:
            body = body.replace(b"\x00", b"")  # text-like junk, so the CSV parser is reached
        path = tmp_path / f"junk-{i}.csv"
        path.write_bytes(body)
        _import(factory, kind, path)


@pytest.mark.parametrize("kind", sorted(IMPORTERS))
def test_cli_refuses_junk_without_a_traceback(factory: sessionmaker[Session], kind: str,
                                              tmp_path: Path) -> None:
    rng = random.Random(f"cli-{kind}")
    engine = factory.kw["bind"]
    url = engine.url.render_as_string(hide_password=False)
    for i in range(5):
        path = tmp_path / f"junk-{i}.csv"
        path.write_bytes(",".join(COLUMNS[kind][0]).encode() + b"\n" + rng.randbytes(200))
        out, err = io.StringIO(), io.StringIO()
        code = main(["cloud", "admin", f"import-{kind}", "--bank", "DEMO", str(path),
                     "--database-url", url], out=out, err=err)
        assert code == 1, (out.getvalue(), err.getvalue())
        assert "Traceback" not in err.getvalue()
        lines = err.getvalue().splitlines()
        assert lines and all(ln.startswith(str(path)) for ln in lines), lines
