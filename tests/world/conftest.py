"""Shared small worlds for the world tests, built once per session (each takes well under a
second): every incident kind in one 3-day world, and a quiet world for baselines."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from firmware_sim.world.observations import Observation
from firmware_sim.world.scenario import scenario_from_dict
from firmware_sim.world.world import World

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# every incident kind, spaced so that each one's effect can be checked alone
ALL_KINDS: dict[str, Any] = {
    "seed": 11,
    "start": "2026-01-05T00:00:00Z",
    "duration": "3d",
    "ranch": [{"id": "r1", "animals": 100, "pens": 2}],
    "warehouse": [{"id": "w1", "lots": 6, "trucks": 4, "inbound_per_day": 3.0,
                   "releases_per_day": 3.0}],
    "loan": [{"id": "LR", "bank": "BA", "borrower": "FARM", "sites": ["r1"]},
             {"id": "LW", "bank": "BA", "borrower": "TRADER", "sites": ["w1"],
              "haircut": 0.2}],
    "incident": [
        {"kind": "theft", "site": "r1", "at": "+1d3h", "count": 3},
        {"kind": "death", "site": "r1", "at": "+20h"},
        {"kind": "tag_drop", "site": "r1", "at": "+1d"},
        {"kind": "illness", "site": "r1", "at": "+1d", "prodrome": "36h", "count": 2,
         "recovery": "6h"},
        {"kind": "feed_shortage", "site": "r1", "at": "+1d", "pen": "P2", "percent": 50,
         "duration": "1d"},
        {"kind": "reader_offline", "site": "r1", "device": "r1-rdr-02", "at": "+10h",
         "duration": "3h"},
        {"kind": "network_outage", "site": "r1", "at": "+2d", "duration": "5h"},
        {"kind": "gateway_crash", "site": "w1", "at": "+1d5h", "duration": "10m"},
        {"kind": "outbound_without_release", "site": "w1", "at": "+1d11h",
         "quantity_kg": 20000},
        {"kind": "geofence_exit", "site": "w1", "at": "+1d9h", "duration": "40m",
         "distance_m": 300},
        {"kind": "tare_fraud", "site": "w1", "at": "+2d8h", "percent": 10},
        {"kind": "double_pledge", "site": "r1", "bank": "BB", "loan": "LB", "count": 5},
        {"kind": "double_pledge", "site": "w1", "bank": "BB", "loan": "LB-W", "count": 2},
        {"kind": "price_change", "site": "w1", "at": "+2d", "percent": -10},
    ],
}


@dataclasses.dataclass
class Run:
    world: World
    obs: list[Observation]
    truth: list[dict[str, Any]]

    def incident(self, kind: str) -> dict[str, Any]:
        return next(t for t in self.truth if t["type"] == "incident" and t["kind"] == kind)


def run_world(d: dict[str, Any]) -> Run:
    w = World(scenario_from_dict(d))
    return Run(w, list(w.observations()), w.truth())


@pytest.fixture(scope="session")
def all_kinds() -> Run:
    return run_world(ALL_KINDS)
