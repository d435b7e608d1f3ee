"""CSV importers: every bad row reported as FILE:LINE: column COLUMN: reason, all of them at
once, and nothing written unless the whole file is good."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.admin import service
from cloud.admin.csv_import import (
    CsvImportError,
    import_animals,
    import_loans,
    import_lots,
    import_sites,
)
from cloud.db import models
from cloud.db.session import make_engine, make_sessionmaker, session_scope
from protocols import iso11784

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TODAY = dt.date(2025, 6, 1)
Factory = sessionmaker[Session]

SITES = """site,name,kind,lat,lon
RANCH-1,Ranch one,ranch,-36.6,-64.3
RANCH-2,Ranch two,ranch,,
WH-1,Warehouse,warehouse,-32.9,-60.6
"""
LOANS = ("loan,borrower,borrower_name,currency,outstanding,ltv_line,margin_call_line,"
         "liquidation_line,haircut,sites\n"
         "L1,B1,Borrower one,USD,1000.00,0.70,0.80,0.90,0.1,RANCH-1\n"
         "L2,B2,Borrower two,USD,2000,0.6,0.7,0.8,,WH-1\n"
         "L3,B1,,EUR,0,0.5,0.5,0.5,0,RANCH-1;RANCH-2\n")
ANIMAL_HEADER = "epc,iso11784,loan,site,breed,sex,birth_date,entry_weight_kg,pen\n"
LOT_HEADER = "lot,loan,site,sku,commodity,zone,quantity,unit\n"
EPC1 = "E28011700001000000000001"
EPC2 = "E28011700001000000000002"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[Factory]:
    engine = make_engine(f"sqlite:///{tmp_path / 'reg.db'}")
    models.Base.metadata.create_all(engine)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@pytest.fixture
def bank(factory: Factory, tmp_path: Path) -> str:
    """Bank DEMO with sites RANCH-1, RANCH-2 (ranches), WH-1 and loans L1 (RANCH-1),
    L2 (WH-1), L3 (RANCH-1 and RANCH-2)."""
    with session_scope(factory) as s:
        service.create_bank(s, code="DEMO", name="Demo bank")
        service.create_bank(s, code="OTHER", name="Other bank")
        import_sites(s, bank_code="DEMO", path=write(tmp_path, "s.csv", SITES))
        import_loans(s, bank_code="DEMO", path=write(tmp_path, "l.csv", LOANS))
    return "DEMO"


def count(factory: Factory, model: type[models.Base]) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def refused(factory: Factory, fn: Callable[..., object], path: Path,
            **kw: object) -> CsvImportError:
    with pytest.raises(CsvImportError) as info, session_scope(factory) as s:
        fn(s, bank_code="DEMO", path=path, display=path.name, **kw)
    return info.value


# -- the good path ---------------------------------------------------------------------------
def test_sites_and_loans_with_borrowers_created_on_the_fly(factory: Factory, bank: str) -> None:
    with factory() as s:
        loans = {x.code: x for x in service.list_loans(s, bank_code="DEMO")}
        sites = {x.code: x for x in service.list_sites(s, bank_code="DEMO")}
        borrowers = s.scalars(select(models.Borrower).order_by(models.Borrower.code)).all()
    assert loans["L3"].sites == ("RANCH-1", "RANCH-2") and loans["L3"].borrower == "B1"
    assert loans["L1"].outstanding == Decimal("1000.00") and loans["L3"].currency == "EUR"
    assert [(b.code, b.name) for b in borrowers] == [("B1", "Borrower one"),
                                                     ("B2", "Borrower two")]
    assert sites["WH-1"].kind == "warehouse" and set(sites) == {"RANCH-1", "RANCH-2", "WH-1"}


def test_animals_import_normalises_and_fills_the_iso_id_from_an_iso_epc(
        factory: Factory, bank: str, tmp_path: Path) -> None:
    animal = iso11784.AnimalId(999, 123456789012)
    iso_epc = iso11784.to_epc(animal).hex()  # lower case on purpose
    path = write(tmp_path, "a.csv", ANIMAL_HEADER.upper()
                 + f" {EPC1.lower()} ,999-000000000007,L1,RANCH-1,Angus,female,2023-01-02,"
                   "250.5,P1\n\n"
                 + f"{iso_epc},,L1,RANCH-1,,M,,,\n"
                 + ",3E7.0000000009,L3,RANCH-2,,,,,\n")
    with session_scope(factory) as s:
        result = import_animals(s, bank_code="DEMO", path=path, today=TODAY)
    assert result.created == 3 and result.warnings == []
    with factory() as s:
        rows = s.scalars(select(models.PledgedAnimal).order_by(models.PledgedAnimal.id)).all()
    assert [(r.epc, r.iso11784, r.sex) for r in rows] == [
        (EPC1, "999000000000007", "F"),
        (iso_epc.upper(), animal.decimal, "M"),
        (None, "999000000000009", None)]
    assert rows[0].birth_date == dt.date(2023, 1, 2) and rows[0].entry_weight_kg == 250.5


def test_lots_import(factory: Factory, bank: str, tmp_path: Path) -> None:
    path = write(tmp_path, "lots.csv", LOT_HEADER + "LOT-1,L2,WH-1,SOY-BULK,soybean,A1,"
                                                    "120.5,t\nLOT-2,L2,WH-1,SOY,soybean,,10,bag\n")
    with session_scope(factory) as s:
        assert import_lots(s, bank_code="DEMO", path=path).created == 2
    with factory() as s:
        lots = s.scalars(select(models.PledgedLot).order_by(models.PledgedLot.lot_code)).all()
    assert [(x.lot_code, x.quantity, x.unit, x.zone) for x in lots] == [
        ("LOT-1", Decimal("120.500"), "t", "A1"), ("LOT-2", Decimal("10.000"), "bag", None)]


def test_bom_crlf_quoted_newlines_and_line_numbers(factory: Factory, bank: str,
                                                   tmp_path: Path) -> None:
    """Line numbers are physical lines: a quoted field spanning two lines moves the rest."""
    path = tmp_path / "lots.csv"
    path.write_bytes(("\ufeff" + LOT_HEADER + 'LOT-1,L2,WH-1,"SKU\nTWO",soybean,,1,t\n'
                      "LOT-2,L2,WH-1,SKU,soybean,,-1,t\n").replace("\n", "\r\n")
                     .encode("utf-8"))
    err = refused(factory, import_lots, path)
    assert [str(e) for e in err.errors] == [
        "lots.csv:4: column quantity: -1 must be > 0 and <= 999999999999999.999"]


# -- bad rows --------------------------------------------------------------------------------
BAD_ANIMALS = [
    ("epc-not-hex", f"ZZ{EPC1[2:]},,L1,RANCH-1,,,,,",
     f"a.csv:2: column epc: 'ZZ{EPC1[2:]}' is not hexadecimal"),
    ("epc-odd-length", "E2801170000,,L1,RANCH-1,,,,,",
     "a.csv:2: column epc: 11 hex digits; an EPC is whole 16-bit words, 8-62 hex digits "
     "(96-bit tags: 24)"),
    ("no-id", ",,L1,RANCH-1,,,,,",
     "a.csv:2: column epc: give an epc or an iso11784 ID (or both)"),
    ("iso-bad", ",12345,L1,RANCH-1,,,,,",
     "a.csv:2: column iso11784: not an ISO 11784 animal ID: '12345': not a 15-digit decimal, "
     "dot-hex or 16-digit raw hex ISO 11784 code"),
    ("iso-country-range", ",3FF.0000000001,L1,RANCH-1,,,,,",
     "a.csv:2: column iso11784: not an ISO 11784 animal ID: country_code 1023 outside 0..999"),
    ("iso-epc-mismatch",
     f"{iso11784.to_epc(iso11784.AnimalId(999, 1)).hex()},999000000000002,L1,RANCH-1,,,,,",
     "a.csv:2: column iso11784: 999000000000002 differs from the ID 999000000000001 carried "
     "in the EPC"),
    ("unknown-loan", f"{EPC1},,L9,RANCH-1,,,,,",
     "a.csv:2: column loan: no loan 'L9' (import loans first)"),
    ("unknown-site", f"{EPC1},,L1,RANCH-9,,,,,",
     "a.csv:2: column site: no site 'RANCH-9' (import sites first)"),
    ("site-not-of-loan", f"{EPC1},,L1,RANCH-2,,,,,",
     "a.csv:2: column site: site 'RANCH-2' is not among loan 'L1''s sites (the sites column "
     "of loans.csv)"),
    ("warehouse-site", f"{EPC1},,L2,WH-1,,,,,",
     "a.csv:2: column site: site 'WH-1' is a warehouse; this file needs a ranch"),
    ("sex", f"{EPC1},,L1,RANCH-1,,X,,,",
     "a.csv:2: column sex: 'X' is not one of f, female, m, male"),
    ("birth-future", f"{EPC1},,L1,RANCH-1,,,2025-06-02,,",
     "a.csv:2: column birth_date: 2025-06-02 is in the future"),
    ("birth-not-date", f"{EPC1},,L1,RANCH-1,,,02/01/2023,,",
     "a.csv:2: column birth_date: '02/01/2023' is not a date (YYYY-MM-DD)"),
    ("weight-zero", f"{EPC1},,L1,RANCH-1,,,,0,",
     "a.csv:2: column entry_weight_kg: 0 must be > 0 and <= 3000"),
    ("weight-text", f"{EPC1},,L1,RANCH-1,,,,heavy,",
     "a.csv:2: column entry_weight_kg: 'heavy' is not a number"),
    ("too-few-fields", f"{EPC1},,L1,RANCH-1",
     "a.csv:2: 4 fields, the header has 9"),
    ("loan-empty", f"{EPC1},,,RANCH-1,,,,,", "a.csv:2: column loan: is empty"),
]


@pytest.mark.parametrize(("line", "expected"), [(b[1], b[2]) for b in BAD_ANIMALS],
                         ids=[b[0] for b in BAD_ANIMALS])
def test_bad_animal_rows(factory: Factory, bank: str, tmp_path: Path, line: str,
                         expected: str) -> None:
    path = write(tmp_path, "a.csv", ANIMAL_HEADER + line + "\n")
    err = refused(factory, import_animals, path, today=TODAY)
    assert [str(e) for e in err.errors] == [expected]
    assert count(factory, models.PledgedAnimal) == 0


BAD_LOANS = [
    ("ltv-percent", "L9,B1,,USD,1,70,0.8,0.9,,",
     "l.csv:2: column ltv_line: 70 must be > 0 and <= 1 (a fraction of the collateral value, "
     "e.g. 0.70)"),
    ("lines-order", "L9,B1,,USD,1,0.8,0.7,0.9,,",
     "l.csv:2: column margin_call_line: 0.7 is below ltv_line 0.8"),
    ("liquidation-order", "L9,B1,,USD,1,0.5,0.7,0.6,,",
     "l.csv:2: column liquidation_line: 0.6 is below margin_call_line 0.7"),
    ("currency", "L9,B1,,usd,1,0.5,0.6,0.7,,", "l.csv:2: column currency: 'usd' must be 3 "
                                              "capital letters (ISO 4217)"),
    ("outstanding-cents", "L9,B1,,USD,1.001,0.5,0.6,0.7,,",
     "l.csv:2: column outstanding: 1.001 has more than 2 decimal places"),
    ("outstanding-nan", "L9,B1,,USD,NaN,0.5,0.6,0.7,,",
     "l.csv:2: column outstanding: 'NaN' is not a finite number"),
    ("haircut", "L9,B1,,USD,1,0.5,0.6,0.7,1,",
     "l.csv:2: column haircut: 1 must be >= 0 and <= 0.9999"),
    ("exists", "L1,B1,,USD,1,0.5,0.6,0.7,,", "l.csv:2: column loan: loan 'L1' already exists"),
    ("new-borrower-no-name", "L9,B9,,USD,1,0.5,0.6,0.7,,",
     "l.csv:2: column borrower_name: borrower 'B9' is new, so its name is needed"),
    ("unknown-site", "L9,B1,,USD,1,0.5,0.6,0.7,,RANCH-1;NOPE",
     "l.csv:2: column sites: no site 'NOPE' (import sites first)"),
    ("site-twice", "L9,B1,,USD,1,0.5,0.6,0.7,,RANCH-1; RANCH-1",
     "l.csv:2: column sites: site 'RANCH-1' listed twice"),
    ("bad-code", "L 9,B1,,USD,1,0.5,0.6,0.7,,",
     "l.csv:2: column loan: loan code 'L 9' must be 1-64 characters of A-Z a-z 0-9 _ . : -"),
]


@pytest.mark.parametrize(("line", "expected"), [(b[1], b[2]) for b in BAD_LOANS],
                         ids=[b[0] for b in BAD_LOANS])
def test_bad_loan_rows(factory: Factory, bank: str, tmp_path: Path, line: str,
                       expected: str) -> None:
    path = write(tmp_path, "l.csv", LOANS.splitlines()[0] + "\n" + line + "\n")
    err = refused(factory, import_loans, path)
    assert [str(e) for e in err.errors] == [expected]
    assert count(factory, models.Loan) == 3


BAD_SITES = [
    ("kind", "S9,Name,farm,,", "s.csv:2: column kind: 'farm' is not one of ranch, warehouse"),
    ("lat-range", "S9,Name,ranch,91,0", "s.csv:2: column lat: 91 must be >= -90 and <= 90"),
    ("lat-only", "S9,Name,ranch,10,", "s.csv:2: column lon: give both lat and lon, or neither"),
    ("no-name", "S9,,ranch,,", "s.csv:2: column name: is empty"),
    ("exists", "WH-1,Name,warehouse,,", "s.csv:2: column site: site 'WH-1' already exists"),
]


@pytest.mark.parametrize(("line", "expected"), [(b[1], b[2]) for b in BAD_SITES],
                         ids=[b[0] for b in BAD_SITES])
def test_bad_site_rows(factory: Factory, bank: str, tmp_path: Path, line: str,
                       expected: str) -> None:
    path = write(tmp_path, "s.csv", "site,name,kind,lat,lon\n" + line + "\n")
    err = refused(factory, import_sites, path)
    assert [str(e) for e in err.errors] == [expected]
    assert count(factory, models.Site) == 3


BAD_LOTS = [
    ("unit", "LOT-1,L2,WH-1,SKU,soybean,,1,tons", "x.csv:2: column unit: 'tons' is not one of "
                                                  "kg, t, bag, bale, unit"),
    ("quantity-zero", "LOT-1,L2,WH-1,SKU,soybean,,0,t",
     "x.csv:2: column quantity: 0 must be > 0 and <= 999999999999999.999"),
    ("commodity-space", "LOT-1,L2,WH-1,SKU,soy bean,,1,t",
     "x.csv:2: column commodity: commodity code 'soy bean' must be 1-64 characters of "
     "A-Z a-z 0-9 _ . : -"),
    ("ranch-site", "LOT-1,L1,RANCH-1,SKU,soybean,,1,t",
     "x.csv:2: column site: site 'RANCH-1' is a ranch; this file needs a warehouse"),
    ("no-sku", "LOT-1,L2,WH-1,,soybean,,1,t", "x.csv:2: column sku: is empty"),
    ("no-unit", "LOT-1,L2,WH-1,S,soybean,,1,", "x.csv:2: column unit: is empty; one of kg, t, "
                                               "bag, bale, unit"),
]


@pytest.mark.parametrize(("line", "expected"), [(b[1], b[2]) for b in BAD_LOTS],
                         ids=[b[0] for b in BAD_LOTS])
def test_bad_lot_rows(factory: Factory, bank: str, tmp_path: Path, line: str,
                      expected: str) -> None:
    path = write(tmp_path, "x.csv", LOT_HEADER + line + "\n")
    err = refused(factory, import_lots, path)
    assert [str(e) for e in err.errors] == [expected]
    assert count(factory, models.PledgedLot) == 0


BAD_FILES = [
    ("empty", "", "x.csv:1: no header row (the file is empty); expected columns: lot, loan, "
                  "site, sku, commodity, quantity, unit, zone"),
    ("missing-column", "lot,loan,site,sku,commodity,quantity\n",
     "x.csv:1: column unit: missing from the header"),
    ("unknown-column", LOT_HEADER.strip() + ",colour\n",
     "x.csv:1: column colour: unknown column; expected lot, loan, site, sku, commodity, "
     "quantity, unit, zone"),
    ("duplicate-column", LOT_HEADER.strip() + ",unit\n",
     "x.csv:1: column unit: appears twice in the header"),
    ("unterminated-quote", LOT_HEADER + 'LOT-1,"L2,WH-1\n',
     "x.csv:2: not CSV: unexpected end of data"),
]


@pytest.mark.parametrize(("text", "expected"), [(b[1], b[2]) for b in BAD_FILES],
                         ids=[b[0] for b in BAD_FILES])
def test_bad_files(factory: Factory, bank: str, tmp_path: Path, text: str,
                   expected: str) -> None:
    err = refused(factory, import_lots, write(tmp_path, "x.csv", text))
    assert [str(e) for e in err.errors] == [expected]


def test_not_utf8_names_the_line(factory: Factory, bank: str, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(LOT_HEADER.encode() + b"LOT-1,L2,WH-1,Caf\xe9,coffee,,1,t\n")
    assert [str(e) for e in refused(factory, import_lots, path).errors] == [
        "x.csv:2: not UTF-8 text"]


def test_all_errors_listed_and_nothing_imported(factory: Factory, bank: str,
                                                tmp_path: Path) -> None:
    """999 good rows and three bad ones spread through the file: all three are reported, in
    line order, and not one animal is written."""
    lines = [f"E28011700001FFFF0000{i:04X},,L1,RANCH-1,,,,,\n" for i in range(1002)]
    lines[0] = f"{EPC1},,L1,RANCH-1,,,,,\n"
    lines[500] = "XYZ,,L1,RANCH-1,,,,,\n"
    lines[700] = f"{EPC1},,L1,RANCH-1,,,,,\n"  # same EPC as line 2, same loan
    lines[1001] = f"{EPC2},,L1,RANCH-1,,U,,-5,\n"  # two bad cells in one row
    err = refused(factory, import_animals, write(tmp_path, "a.csv", ANIMAL_HEADER
                                                   + "".join(lines)), today=TODAY)
    assert [str(e) for e in err.errors] == [
        "a.csv:502: column epc: 'XYZ' is not hexadecimal",
        f"a.csv:702: column epc: duplicate {EPC1} (also on line 2)",
        "a.csv:1003: column sex: 'U' is not one of f, female, m, male",
        "a.csv:1003: column entry_weight_kg: -5 must be > 0 and <= 3000",
    ]
    assert str(err) == "a.csv: 4 error(s); nothing imported"
    assert count(factory, models.PledgedAnimal) == 0


def test_duplicates_inside_the_file(factory: Factory, bank: str, tmp_path: Path) -> None:
    sites = refused(factory, import_sites, write(tmp_path, "s.csv", "site,name,kind\n"
                                                 "S9,A,ranch\nS9,B,ranch\n"))
    assert [str(e) for e in sites.errors] == [
        "s.csv:3: column site: duplicate site 'S9' (first on line 2)"]
    lots = refused(factory, import_lots, write(tmp_path, "x.csv", LOT_HEADER
                                               + "LOT-1,L2,WH-1,S,soy,,1,t\n" * 2))
    assert [str(e) for e in lots.errors] == [
        "x.csv:3: column lot: duplicate lot 'LOT-1' at site 'WH-1' (first on line 2)"]
    loans = refused(factory, import_loans, write(tmp_path, "l.csv", LOANS.splitlines()[0]
                                                 + "\nL8,B8,Name A,USD,1,0.5,0.6,0.7,,"
                                                   "\nL8,B8,Name B,USD,1,0.5,0.6,0.7,,\n"))
    assert [str(e) for e in loans.errors] == [
        "l.csv:3: column loan: duplicate loan 'L8' (first on line 2)",
        "l.csv:3: column borrower_name: 'Name B' differs from 'Name A' given for borrower "
        "'B8' on line 2"]


def test_duplicates_against_the_database(factory: Factory, bank: str, tmp_path: Path) -> None:
    good = write(tmp_path, "a.csv", ANIMAL_HEADER + f"{EPC1},,L1,RANCH-1,,,,,\n")
    with session_scope(factory) as s:
        import_animals(s, bank_code="DEMO", path=good, today=TODAY)
    err = refused(factory, import_animals, good, today=TODAY)
    assert [str(e) for e in err.errors] == [
        f"a.csv:2: column epc: {EPC1} is already pledged to loan 'L1'"]
    lot = write(tmp_path, "x.csv", LOT_HEADER + "LOT-1,L2,WH-1,S,soy,,1,t\n")
    with session_scope(factory) as s:
        import_lots(s, bank_code="DEMO", path=lot)
    assert [str(e) for e in refused(factory, import_lots, lot).errors] == [
        "x.csv:2: column lot: site 'WH-1' already has lot 'LOT-1'"]
    assert count(factory, models.PledgedAnimal) == 1 and count(factory, models.PledgedLot) == 1


def test_double_pledge_is_a_warning_not_a_refusal(factory: Factory, bank: str,
                                                  tmp_path: Path) -> None:
    with session_scope(factory) as s:
        import_animals(s, bank_code="DEMO", today=TODAY, path=write(
            tmp_path, "first.csv", ANIMAL_HEADER + f"{EPC1},,L1,RANCH-1,,,,,\n"))
        # the other bank pledges EPC2 too
        other = s.scalar(select(models.Bank).where(models.Bank.code == "OTHER"))
        assert other is not None
        site = models.Site(bank_id=other.id, code="R", name="R", kind="ranch")
        borrower = models.Borrower(bank_id=other.id, code="X", name="X")
        s.add_all([site, borrower])
        s.flush()
        loan = models.Loan(bank_id=other.id, borrower_id=borrower.id, code="OL",
                           currency="USD", outstanding=1, ltv_line=Decimal("0.5"),
                           margin_call_line=Decimal("0.6"), liquidation_line=Decimal("0.7"))
        s.add(loan)
        s.flush()
        s.add(models.PledgedAnimal(loan_id=loan.id, site_id=site.id, epc=EPC2))
    path = write(tmp_path, "a.csv", ANIMAL_HEADER + f"{EPC1},,L3,RANCH-1,,,,,\n"
                                                    f"{EPC2},,L1,RANCH-1,,,,,\n"
                                                    f"{EPC2},,L3,RANCH-2,,,,,\n")
    with session_scope(factory) as s:
        result = import_animals(s, bank_code="DEMO", path=path, display="a.csv", today=TODAY)
    assert result.created == 3
    assert [str(w) for w in result.warnings] == [
        f"a.csv:2: column epc: warning: {EPC1} is already pledged to loan 'L1' (double pledge)",
        f"a.csv:3: column epc: warning: {EPC2} is already pledged to a loan of another bank "
        "(double pledge)",
        f"a.csv:4: column epc: warning: {EPC2} is also pledged to loan 'L1' on line 3 "
        "(double pledge)",
        f"a.csv:4: column epc: warning: {EPC2} is already pledged to a loan of another bank "
        "(double pledge)",
    ]
    assert count(factory, models.PledgedAnimal) == 5


def test_known_borrower_with_another_name_keeps_its_name_with_a_warning(
        factory: Factory, bank: str, tmp_path: Path) -> None:
    path = write(tmp_path, "l.csv", LOANS.splitlines()[0] + "\nL9,B1,Renamed,USD,1,0.5,0.6,"
                                                            "0.7,,\n")
    with session_scope(factory) as s:
        result = import_loans(s, bank_code="DEMO", path=path, display="l.csv")
    assert (result.created, result.borrowers_created) == (1, 0)
    assert [str(w) for w in result.warnings] == [
        "l.csv:2: column borrower_name: warning: borrower 'B1' is already known as "
        "'Borrower one'; that name is kept"]


def test_unknown_bank_is_refused(factory: Factory, bank: str, tmp_path: Path) -> None:
    with pytest.raises(service.AdminError) as info, \
            session_scope(factory) as s:
        import_sites(s, bank_code="NOPE", path=write(tmp_path, "s.csv", SITES))
    assert info.value.reason == "not_found"


def test_examples_import_on_sqlite_and_postgresql(db_url: str) -> None:
    """The shipped examples import the same way into SQLite and a real PostgreSQL."""
    engine = make_engine(db_url)
    try:
        factory = make_sessionmaker(engine)
        with session_scope(factory) as s:
            service.create_bank(s, code="DEMO", name="Demo bank")
            for fn, name in ((import_sites, "sites.csv"), (import_loans, "loans.csv"),
                             (import_animals, "animals.csv"), (import_lots, "lots.csv")):
                assert fn(s, bank_code="DEMO", path=EXAMPLES / name).warnings == []
        with pytest.raises(CsvImportError) as info, session_scope(factory) as s:
            import_animals(s, bank_code="DEMO", path=EXAMPLES / "animals.csv")
        assert len(info.value.errors) == 2000  # every EPC and ISO ID already pledged
        with factory() as s:
            counts = {m.__tablename__: s.scalar(select(func.count()).select_from(m))
                      for m in (models.Site, models.Loan, models.Borrower, models.LoanSite,
                                models.PledgedAnimal, models.PledgedLot)}
            weight = s.scalar(select(func.sum(models.PledgedLot.quantity))
                              .where(models.PledgedLot.unit == "t"))
    finally:
        engine.dispose()
    assert counts == {"sites": 2, "loans": 2, "borrowers": 2, "loan_sites": 2,
                      "pledged_animals": 1000, "pledged_lots": 40}
    assert weight is not None and weight > 0


def test_animal_entry_date_defaults_to_the_import_day_and_is_checked(
        factory: Factory, bank: str, tmp_path: Path) -> None:
    header = "epc,loan,site,birth_date,entry_weight_kg,entry_date\n"
    path = write(tmp_path, "a.csv", header + f"{EPC1},L1,RANCH-1,2024-01-01,300,\n"
                 + "E2801170000000000000BEEF,L1,RANCH-1,2024-01-01,310,2025-03-01\n")
    with session_scope(factory) as s:
        assert import_animals(s, bank_code="DEMO", path=path, today=TODAY).created == 2
    with factory() as s:
        rows = s.scalars(select(models.PledgedAnimal).order_by(models.PledgedAnimal.id)).all()
    assert [r.entry_date for r in rows] == [TODAY, dt.date(2025, 3, 1)]
    bad = write(tmp_path, "b.csv", header + f"{EPC1},L1,RANCH-1,2024-01-01,300,2023-12-31\n")
    err = refused(factory, import_animals, bad, today=TODAY)
    assert [str(e) for e in err.errors] == [
        "b.csv:2: column entry_date: 2023-12-31 is before the birth date 2024-01-01"]
