"""Scenario files: every shipped scenario loads and builds a world; defaults; every kind of bad
input is refused with FILE: key.path: reason."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.world.scenario import (
    INCIDENT_KINDS,
    ScenarioError,
    load_scenario,
    parse_duration,
    scenario_from_dict,
)
from firmware_sim.world.truth import validate_truth_line
from firmware_sim.world.world import World

SCENARIOS = sorted((Path(__file__).parents[2] / "scenarios").glob("*.toml"))
BASE: dict[str, Any] = {"ranch": [{"id": "r1", "animals": 20}],
                        "warehouse": [{"id": "w1", "lots": 3}],
                        "loan": [{"id": "L1", "sites": ["r1", "w1"]}]}


def test_the_shipped_scenarios_are_there() -> None:
    names = {p.stem for p in SCENARIOS}
    assert {"smoke", "theft", "illness", "warehouse", "outage", "week", "demo"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenario_loads_and_builds(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.source == path.name and sc.name == path.stem and sc.description
    world = World(sc)
    reg = world.registry
    assert reg.sites and reg.gateways and reg.devices and reg.loans and reg.prices
    assert all(ln.outstanding is not None and ln.outstanding > 0 for ln in reg.loans)
    truth = world.truth()
    assert [validate_truth_line(t) for t in truth if validate_truth_line(t)] == []
    assert sum(t["type"] == "incident" for t in truth) == len(sc.incidents)


def test_week_has_every_incident_kind() -> None:
    sc = load_scenario(next(p for p in SCENARIOS if p.stem == "week"))
    assert {i.kind for i in sc.incidents} == set(INCIDENT_KINDS)
    assert sc.ranches[0].animals == 1000 and sc.warehouses[0].lots == 40
    assert sc.duration_ms == 7 * 86_400_000


def test_defaults() -> None:
    sc = scenario_from_dict({"ranch": [{"id": "r"}]})
    assert sc.seed == 0 and sc.start_ms == 1_767_225_600_000  # 2026-01-01T00:00:00Z
    assert sc.duration_ms == 86_400_000
    r = sc.ranches[0]
    assert (r.animals, r.pens, r.readers, r.read_probability) == (100, 1, 2, 0.97)
    assert r.scale == "walkover" and r.feeder == "digistar" and r.feedings_min == (390, 930)
    assert r.utc_offset_h == -4  # round(-56.1 / 15)
    # no [[loan]]: one loan of everything, outstanding resolved from the true value
    assert [(ln.id, ln.sites, ln.outstanding) for ln in sc.loans] == [("L1", ("r",), None)]
    loan = World(sc).registry.loans[0]
    assert loan.outstanding is not None and loan.outstanding > 1000
    assert sc.banks == {"BANK-A": "BANK-A"}


def test_times_absolute_relative_and_toml_datetime(tmp_path: Path) -> None:
    p = tmp_path / "t.toml"
    p.write_text('start = 2026-02-01T06:00:00+02:00\nduration = "2d"\n'
                 '[[ranch]]\nid = "r"\nanimals = 10\n'
                 '[[incident]]\nkind = "theft"\nsite = "r"\nat = "+1d2h30m"\ncount = 1\n'
                 '[[incident]]\nkind = "death"\nsite = "r"\nat = 2026-02-02T00:00:00Z\n'
                 '[[incident]]\nkind = "tag_drop"\nsite = "r"\nat = "2026-02-02T01:00:00Z"\n')
    sc = load_scenario(p)
    start = int(dt.datetime(2026, 2, 1, 4, tzinfo=dt.UTC).timestamp() * 1000)
    assert sc.start_ms == start
    assert sc.incidents[0].at_ms == start + (26 * 60 + 30) * 60_000
    assert sc.incidents[1].at_ms == start + 20 * 3_600_000
    assert sc.incidents[2].at_ms == start + 21 * 3_600_000
    assert [i.id for i in sc.incidents] == ["inc-1", "inc-2", "inc-3"]


@pytest.mark.parametrize(("text", "ms"), [("90s", 90_000), ("36h", 129_600_000),
                                          ("2d6h30m", 196_200_000), (3600, 3_600_000),
                                          ("1d1s", 86_401_000)])
def test_parse_duration(text: object, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "2x", "h", "-1h", True, 1.5, "1h2d"])
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(text)


def test_error_names_file_key_and_reason(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('[[ranch]]\nid = "r"\n' + '[[incident]]\nkind = "death"\nsite = "r"\n'
                 'at = "+1h"\n' * 2 + '[[incident]]\nkind = "theft"\nsite = "r"\n'
                 'at = "+1h"\ncount = -1\n')
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    assert str(exc.value) == "s.toml: incident[2].count: must be a positive integer, got -1"
    assert exc.value.problems == [("incident[2].count", "must be a positive integer, got -1")]


def _problems(d: dict[str, Any]) -> list[str]:
    with pytest.raises(ScenarioError) as exc:
        scenario_from_dict(d, source="x.toml")
    lines = str(exc.value).splitlines()
    assert all(line.startswith("x.toml: ") for line in lines)
    return [line.removeprefix("x.toml: ") for line in lines]


def _with(path: str, value: object) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    target: Any = d
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if k.isdigit() else target.setdefault(k, {})
    target[keys[-1]] = value
    return d


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("colour", "red", "colour: unknown key"),
    ("ranch.0.animls", 5, "ranch[0].animls: unknown key (did you mean 'animals'?)"),
    ("ranch.0.animals", 0, "ranch[0].animals: must be a positive integer up to 200000, got 0"),
    ("ranch.0.animals", "ten", "ranch[0].animals: must be a positive integer"),
    ("ranch.0.animals", True, "ranch[0].animals: must be a positive integer"),
    ("ranch.0.read_probability", 0, "ranch[0].read_probability: must be a probability in "
                                    "(0, 1], got 0"),
    ("ranch.0.read_probability", 1.5, "ranch[0].read_probability: must be a probability"),
    ("ranch.0.scale", "bathroom", "ranch[0].scale: must be one of 'walkover', 'chute', "
                                  "'none', got 'bathroom'"),
    ("ranch.0.feeder", "hand", "ranch[0].feeder: must be one of 'digistar', 'modbus'"),
    ("ranch.0.feedings", ["25:00"], "ranch[0].feedings[0]: must be a local time 'HH:MM', "
                                    "got '25:00'"),
    ("ranch.0.motion_fraction", 0.8, "ranch[0].iso_fraction: motion_fraction + "
                                     "iso_fraction must be <= 1"),
    ("ranch.0.id", "bad id!", "ranch[0].id: must be a code of 1-64 letters"),
    ("warehouse.0.commodity", "unobtainium", "warehouse[0].commodity: unknown commodity "
                                             "'unobtainium'"),
    ("warehouse.0.weighbridge", "spring", "warehouse[0].weighbridge: must be one of"),
    ("warehouse.0.working_hours", ["09:00", "10:00"], "warehouse[0].working_hours: must be "
                                                      "[open, close] at least 2 h apart"),
    ("loan.0.sites", ["r1", "nowhere"], "loan[0].sites[1]: no ranch or warehouse has id "
                                        "'nowhere'"),
    ("loan.0.currency", "EUR", "loan[0].currency: must be the market currency 'USD'"),
    ("loan.0.margin_call_line", 0.5, "loan[0].margin_call_line: lines must rise"),
    ("loan.0.haircut", 1.0, "loan[0].haircut: must be a fraction in 0..0.95, got 1.0"),
    ("start", "yesterday", "start: must be a date-time like '2026-01-01T00:00:00Z'"),
    ("start", "2026-01-01T00:00:00", "start: needs a UTC offset"),
    ("duration", "forever", "duration: must be a duration like '6h'"),
    ("duration", "400d", "duration: must be at most 366d"),
    ("market.currency", "usd", "market.currency: must be 3 capital letters (ISO 4217)"),
    ("market.price", {"maize": -3}, "market.price.maize: must be a price > 0, got -3"),
    ("ranch", {"id": "r"}, "ranch: must be an array of tables ([[ranch]]), got dict"),
])
def test_bad_values(path: str, value: object, expected: str) -> None:
    problems = _problems(_with(path, value))
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(("incident", "expected"), [
    ({"kind": "stampede", "site": "r1", "at": "+1h"}, "incident[0].kind: must be one of"),
    ({"kind": "theft", "site": "r1"}, "incident[0].at: is required"),
    ({"kind": "theft", "at": "+1h"}, "incident[0].site: is required"),
    ({"kind": "theft", "site": "r9", "at": "+1h"}, "incident[0].site: no ranch or warehouse "
                                                   "has id 'r9'"),
    ({"kind": "theft", "site": "w1", "at": "+1h"}, "incident[0].site: theft happens at a "
                                                   "ranch; 'w1' is a warehouse"),
    ({"kind": "tare_fraud", "site": "r1", "at": "+1h"}, "incident[0].site: tare_fraud happens "
                                                        "at a warehouse"),
    ({"kind": "theft", "site": "r1", "at": "+2d"}, "incident[0].at: '+2d' is outside the "
                                                   "scenario"),
    ({"kind": "theft", "site": "r1", "at": "soon"}, "incident[0].at: must be a date-time"),
    ({"kind": "theft", "site": "r1", "at": "+1h", "percent": 5}, "incident[0].percent: "
                                                                 "not a key of a theft "
                                                                 "incident"),
    ({"kind": "theft", "site": "r1", "at": "+1h", "cuont": 5}, "incident[0].cuont: unknown "
                                                               "key (did you mean 'count'?)"),
    ({"kind": "theft", "site": "r1", "at": "+1h", "count": 30}, "incident[0].count: "
                                                                "incidents at 'r1' need 30"),
    ({"kind": "theft", "site": "r1", "at": "+1h", "animals": [3, 25]},
     "incident[0].animals[1]: 'r1' has animals 0..19, not 25"),
    ({"kind": "theft", "site": "r1", "at": "+1h", "pen": "P7"}, "incident[0].pen: 'r1' has "
                                                                "pens P1..P1, not 'P7'"),
    ({"kind": "reader_offline", "site": "r1", "at": "+1h", "device": "r1-rdr-09"},
     "incident[0].device: 'r1' has no device 'r1-rdr-09'"),
    ({"kind": "reader_offline", "site": "r1", "at": "+1h", "duration": "0s"},
     "incident[0].duration: must be longer than 0"),
    ({"kind": "price_change", "at": "+1h", "percent": 0}, "incident[0].percent: must not be 0"),
    ({"kind": "price_change", "at": "+1h"}, "incident[0].percent: is required"),
    ({"kind": "price_change", "at": "+1h", "percent": 5}, "incident[0].commodity: is "
                                                          "required when no site is given"),
    ({"kind": "price_change", "at": "+1h", "percent": 5, "commodity": "wheat"},
     "incident[0].commodity: no site trades 'wheat'"),
    ({"kind": "tare_fraud", "site": "w1", "at": "+1h", "percent": 100},
     "incident[0].percent: must be below 100"),
    ({"kind": "geofence_exit", "site": "w1", "at": "+1h", "tracker": "w1-gps-fork09"},
     "incident[0].tracker: 'w1' has no tracker 'w1-gps-fork09'"),
    ({"kind": "outbound_without_release", "site": "w1", "at": "+1h", "lot": "w1-LOT009"},
     "incident[0].lot: 'w1' has lots w1-LOT001..w1-LOT003, not 'w1-LOT009'"),
    ({"kind": "double_pledge", "site": "r1", "loan": "L1"}, "incident[0].loan: loan 'L1' is "
                                                            "already declared"),
    ({"kind": "illness", "site": "r1", "at": "+1h", "activity_drop": 2},
     "incident[0].activity_drop: must be a fraction in 0.05..0.95, got 2"),
])
def test_bad_incidents(incident: dict[str, Any], expected: str) -> None:
    d = copy.deepcopy(BASE)
    d["incident"] = [incident]
    problems = _problems(d)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    d = copy.deepcopy(BASE)
    d["ranch"][0].update(animals=-1, scale="x", colour=1)
    d["loan"][0]["haircut"] = 7
    problems = _problems(d)
    assert [p.split(":")[0] for p in problems] == [
        "ranch[0].animals", "ranch[0].scale", "ranch[0].colour", "loan[0].haircut"]


def test_same_animal_in_two_incidents_is_refused() -> None:
    d = copy.deepcopy(BASE)
    d["incident"] = [{"kind": "death", "site": "r1", "at": "+1h", "animals": [4]},
                     {"kind": "theft", "site": "r1", "at": "+2h", "animals": [4]}]
    assert _problems(d) == ["incident[1].animals[0]: animal 4 is already the subject of "
                            "incident[0]"]


def test_site_pledged_twice_or_not_at_all() -> None:
    d = copy.deepcopy(BASE)
    d["loan"].append({"id": "L2", "sites": ["r1"]})
    assert _problems(d)[0].startswith("loan[1].sites[0]: site 'r1' is already pledged to "
                                      "loan 'L1'")
    d = copy.deepcopy(BASE)
    d["loan"][0]["sites"] = ["r1"]
    assert _problems(d) == ["warehouse[0].id: site 'w1' is not pledged to any loan"]


def test_duplicate_site_ids() -> None:
    d = copy.deepcopy(BASE)
    d["warehouse"][0]["id"] = "r1"
    assert any(p.startswith("warehouse[0].id: 'r1' is also the id of ranch[0]")
               for p in _problems(d))


def test_pen_without_enough_animals_is_refused_by_the_world() -> None:
    d = copy.deepcopy(BASE)
    d["ranch"][0]["pens"] = 4  # 5 animals a pen
    d["incident"] = [{"kind": "theft", "site": "r1", "at": "+1h", "pen": "P2", "count": 6}]
    with pytest.raises(ScenarioError, match=r"x.toml: incident\[0\].count: 'r1' has only 5 "
                                            r"animals in pen P2 left"):
        World(scenario_from_dict(d, source="x.toml"))


def test_toml_syntax_and_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "broken.toml"
    p.write_text("[[ranch]\nid = 1\n")
    with pytest.raises(ScenarioError, match=r"^broken.toml: \(toml\): "):
        load_scenario(p)
    with pytest.raises(ScenarioError, match=r"^missing.toml: \(file\): cannot read"):
        load_scenario(tmp_path / "missing.toml")


def test_needs_a_site() -> None:
    assert _problems({"seed": 1}) == ["ranch: a scenario needs at least one [[ranch]] or "
                                      "[[warehouse]]"]
