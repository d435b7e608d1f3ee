"""Write the demo bank's CSV files beside this script (deterministic: same bytes every run).

    python examples/make_examples.py            # rewrite examples/*.csv
    python examples/make_examples.py --out DIR  # write them somewhere else

The 1,000 animals carry the ear-tag EPCs that the simulated UHF reader reports with
``pledgewatch demo --tags 1000 --seed 1`` (``firmware_sim.r2000_reader.herd_tags(1000,
seed=1)``: ``E2801170`` + the seed as 2 bytes + the tag number as 6 bytes), so the simulator's
herd is the pledged herd. This script builds the EPCs itself rather than importing the
simulator; ``tests/cloud/test_admin.py`` checks that the two agree.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
ANIMALS = 1000
LOTS = 40
HERD_SEED = 1  # the seed of `pledgewatch demo`

RANCH, WAREHOUSE = "RANCH-1", "WH-1"
RANCH_LOAN, WAREHOUSE_LOAN = "L-2025-001", "L-2025-002"


def herd_epc(i: int, *, seed: int = HERD_SEED) -> str:
    """The EPC of simulated ear tag number ``i`` (as ``herd_tags`` makes it)."""
    return (bytes.fromhex("E2801170") + (seed & 0xFFFF).to_bytes(2, "big")
            + i.to_bytes(6, "big")).hex().upper()


def _csv(header: list[str], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def sites_csv() -> str:
    return _csv(["site", "name", "kind", "lat", "lon"], [
        [RANCH, "Estancia La Pampa", "ranch", -36.6167, -64.2833],
        [WAREHOUSE, "Rosario bonded warehouse", "warehouse", -32.9468, -60.6393],
    ])


def loans_csv() -> str:
    return _csv(["loan", "borrower", "borrower_name", "currency", "outstanding", "ltv_line",
                 "margin_call_line", "liquidation_line", "haircut", "sites"], [
        [RANCH_LOAN, "B-PAMPA", "Ganadera La Pampa S.A.", "USD", "850000.00", "0.70", "0.80",
         "0.90", "0.10", RANCH],
        [WAREHOUSE_LOAN, "B-GRANOS", "Granos del Litoral S.R.L.", "USD", "1200000.00", "0.65",
         "0.75", "0.85", "0.15", WAREHOUSE],
    ])


def animals_csv() -> str:
    rng = random.Random(2025)
    breeds = ["Angus", "Hereford", "Brangus", "Braford"]
    rows: list[list[object]] = []
    for i in range(ANIMALS):
        born = 19_000 + rng.randrange(0, 700)  # days since 1970-01-01: 2022-01 .. 2023-12
        rows.append([
            herd_epc(i),
            f"999{100_000_000 + i:012d}",  # test country code 999 (ISO 11784)
            RANCH_LOAN, RANCH, rng.choice(breeds), rng.choice("FM"),
            _iso_day(born), f"{rng.uniform(180.0, 420.0):.1f}", f"P{1 + i % 10:02d}",
        ])
    return _csv(["epc", "iso11784", "loan", "site", "breed", "sex", "birth_date",
                 "entry_weight_kg", "pen"], rows)


def _iso_day(days: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=days)).isoformat()


def lots_csv() -> str:
    rng = random.Random(7)
    kinds = [("soybean", "SOY-BULK", "t"), ("maize", "MAIZE-BULK", "t"),
             ("soybean", "SOY-BAG-50KG", "bag"), ("coffee_green", "COFFEE-BAG-60KG", "bag")]
    rows: list[list[object]] = []
    for i in range(LOTS):
        commodity, sku, unit = kinds[i % len(kinds)]
        qty = (f"{rng.uniform(80, 600):.3f}" if unit == "t" else str(rng.randrange(200, 2000)))
        zone = f"{'ABCD'[i // 10]}{1 + i % 10}"
        rows.append([f"LOT-{i + 1:04d}", WAREHOUSE_LOAN, WAREHOUSE, sku, commodity, zone, qty,
                     unit])
    return _csv(["lot", "loan", "site", "sku", "commodity", "zone", "quantity", "unit"], rows)


FILES = {"sites.csv": sites_csv, "loans.csv": loans_csv, "animals.csv": animals_csv,
         "lots.csv": lots_csv}


def write_examples(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in FILES.items():
        path = out / name
        path.write_text(make(), encoding="utf-8", newline="")
        written.append(path)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE)
    for path in write_examples(p.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
