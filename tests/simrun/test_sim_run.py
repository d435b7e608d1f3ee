"""``pledgewatch sim run`` end to end: world -> real codecs and outbox -> signed envelopes ->
the cloud's ingest (SQLite) -> rules on event time -> alerts, valuations, score."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pledgewatch.cli import main
from pledgewatch.simrun.run import run
from pledgewatch.simrun.score import score_dir

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.toml"

# A small ranch with a night theft; the variant adds a network outage at the ranch that
# starts before the theft and ends after the missing window, so every alert about the
# stolen animals is decided from a replayed backlog.
BASE = """
seed = 11
start = 2026-04-01T00:00:00Z
duration = "2d"

[[ranch]]
id = "ranch-1"
animals = 30
pens = 1

[[loan]]
id = "L1"
bank = "BANK-A"
borrower = "B1"
sites = ["ranch-1"]

[[incident]]
kind = "theft"
site = "ranch-1"
at = "+20h"
count = 2
"""
OUTAGE = BASE + """
[[incident]]
kind = "network_outage"
site = "ranch-1"
at = "+19h"
duration = "16h"
"""


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _collateral_alerts(out: Path) -> set[tuple[object, ...]]:
    return {(a["kind"], a["subject_type"], a["subject_id"], a["event_time_ms"])
            for a in _lines(out / "alerts.jsonl")
            if a["kind"] not in ("site_offline", "device_offline", "data_integrity")}


def test_same_seed_gives_same_truth_and_alerts(tmp_path: Path) -> None:
    a = run(SMOKE, tmp_path / "a", progress=None)
    b = run(SMOKE, tmp_path / "b", progress=None)
    for name in ("truth.jsonl", "alerts.jsonl", "valuations.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a.alerts == b.alerts > 0
    assert a.readings == b.readings > 1000
    # the run's counters agree with what landed: every batch accepted, none refused
    assert a.counters["refused"] == 0
    # the theft is found: every stolen animal has an animal_missing alert
    truth = _lines(tmp_path / "a" / "truth.jsonl")
    theft = next(t for t in truth if t.get("kind") == "theft")
    stolen = set(theft["subjects"]["animals"])  # type: ignore[index]
    missing = {a["subject_id"] for a in _lines(tmp_path / "a" / "alerts.jsonl")
               if a["kind"] == "animal_missing"}
    assert stolen and stolen <= missing


def test_backlog_after_outage_gives_the_same_alerts_as_live(tmp_path: Path) -> None:
    (tmp_path / "live.toml").write_text(BASE)
    (tmp_path / "outage.toml").write_text(OUTAGE)
    run(tmp_path / "live.toml", tmp_path / "live", progress=None)
    run(tmp_path / "outage.toml", tmp_path / "outage", progress=None)
    live = _collateral_alerts(tmp_path / "live")
    replayed = _collateral_alerts(tmp_path / "outage")
    assert any(k == "animal_missing" for k, *_ in live)
    assert replayed == live
    kinds = {a["kind"] for a in _lines(tmp_path / "outage" / "alerts.jsonl")}
    assert "site_offline" in kinds  # the outage itself was seen
    report = score_dir(tmp_path / "outage")
    assert report["outages"]["false_alerts_during_outages"] == 0


def test_sim_run_cli_refuses_a_bad_scenario_with_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE.replace("count = 2", "count = -2"))
    out, err = io.StringIO(), io.StringIO()
    code = main(["sim", "run", "--scenario", str(bad), "--out", str(tmp_path / "o"),
                 "--quiet"], out=out, err=err)
    assert code == 1
    assert "bad.toml" in err.getvalue() and "count" in err.getvalue()


def test_sim_run_cli_missing_scenario_is_a_usage_error(tmp_path: Path) -> None:
    err = io.StringIO()
    code = main(["sim", "run", "--scenario", str(tmp_path / "nope.toml"), "--out",
                 str(tmp_path / "o")], out=io.StringIO(), err=err)
    assert code == 2
    assert "no scenario file" in err.getvalue()


@pytest.mark.parametrize("speed", ["0", "-3"])
def test_sim_run_cli_refuses_a_bad_speed(tmp_path: Path, speed: str) -> None:
    err = io.StringIO()
    code = main(["sim", "run", "--scenario", str(SMOKE), "--out", str(tmp_path / "o"),
                 "--speed", speed], out=io.StringIO(), err=err)
    assert code == 2
    assert "--speed" in err.getvalue()
