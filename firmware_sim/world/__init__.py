"""The simulated world: scenario TOML -> :class:`World` -> device observations in time order,
the registry the bank knows up front, and the ground truth (docs/scenarios.md).

Only the CLI, the sim runner, tests and benchmarks import this package.
"""

from __future__ import annotations

from firmware_sim.world.registry import WorldRegistry
from firmware_sim.world.scenario import (
    INCIDENT_KINDS,
    Scenario,
    ScenarioError,
    load_scenario,
    scenario_from_dict,
)
from firmware_sim.world.truth import validate_truth_line
from firmware_sim.world.world import World

__all__ = [
    "INCIDENT_KINDS",
    "Scenario",
    "ScenarioError",
    "World",
    "WorldRegistry",
    "load_scenario",
    "scenario_from_dict",
    "validate_truth_line",
]
