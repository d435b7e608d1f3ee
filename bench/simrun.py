"""Simulator speed (issue 6): simulated seconds per wall second of ``pledgewatch sim run``.

* ``simrun.week``: ``scenarios/week.toml`` (a 1,000-head ranch with 20 readers, a walk-over
  scale and a TMR mixer, and a 40-lot warehouse with trucks, a weighbridge and GPS, 7
  simulated days, every incident kind once) through :func:`pledgewatch.simrun.run.run`: the
  world, every device's bytes through the real protocol decoders and edge aggregators, the
  gateways' SQLite outboxes, signed envelopes, the cloud's ``IngestService`` into SQLite and
  the domain engine (rules every 10 simulated minutes, valuation hourly), into a temporary
  directory. ``sim_s_per_s`` is the run's own figure (simulated span / wall time of the
  loop, as the progress bar shows it); ``end_to_end_sim_s_per_s`` also counts loading the
  scenario, building the world and registry and writing truth/alerts/valuations.

  Baseline, same run, same scenario, same simulated span: the world alone
  (``World(load_scenario(week)).observations()`` consumed and nothing done with them), the
  least any run of this scenario must do. Ratio = world-alone time / full-run time, so it
  says what share of the run the world's generation is. The issue's goal: >= 10,000x real
  time on one core.

  The row also carries the process CPU time (``resource.getrusage``) over the run: CPU
  seconds per wall second near 1.0 means one core did the work (the ingest's thread pools
  and SQLite do not add a second core's worth); well below 1.0 means the machine gave the
  run less than a core, and ``sim_s_per_cpu_s`` (simulated seconds per CPU second) is then
  the better guess of the speed on an idle core.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from firmware_sim.world.scenario import load_scenario
from firmware_sim.world.world import World
from pledgewatch.simrun.run import run as sim_run

WEEK = Path(__file__).resolve().parent.parent / "scenarios" / "week.toml"


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _world_alone(path: Path) -> tuple[float, int, int]:
    """(seconds to consume the observations, observations, simulated ms): construction is
    not timed, as the run's loop time does not include it either."""
    world = World(load_scenario(path))
    n = 0
    t0 = time.perf_counter()
    for _ in world.observations():
        n += 1
    return time.perf_counter() - t0, n, world.end_ms - world.start_ms


def run(scenario: Path = WEEK) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="pw-bench-simrun-") as tmp:
        cpu0, t0 = _cpu_s(), time.perf_counter()
        res = sim_run(scenario, Path(tmp) / "out", progress=None)
        total_wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    t_world, n_world, span_ms = _world_alone(scenario)
    sim_s = res.sim_ms / 1000
    return [{
        "bench": f"simrun.{scenario.stem}",
        "scenario": scenario.name,
        "sim_s": sim_s,
        "sim_s_per_s": res.speedup,
        "wall_s": res.wall_s,
        "end_to_end_wall_s": total_wall,
        "end_to_end_sim_s_per_s": sim_s / total_wall,
        "cpu_s": cpu,
        "cpu_s_per_wall_s": cpu / total_wall,
        "sim_s_per_cpu_s": sim_s / cpu,
        "observations": res.observations,
        "readings": res.readings,
        "batches": res.batches,
        "alerts": res.alerts,
        "baseline": "the world alone: World(week).observations() consumed, same span",
        "baseline_sim_s_per_s": span_ms / 1000 / t_world,
        "baseline_observations": n_world,
        "ratio_vs_baseline": t_world / res.wall_s,
        "goal_sim_s_per_s": 10_000,
    }]


if __name__ == "__main__":
    for row in run():
        print(f"{row['bench']}: x{row['sim_s_per_s']:,.0f} real time ({row['wall_s']:.1f} s "
              f"for {row['sim_s'] / 86400:.0f} simulated days; end to end "
              f"x{row['end_to_end_sim_s_per_s']:,.0f}), {row['cpu_s_per_wall_s']:.2f} CPU s "
              f"per wall s; world alone x{row['baseline_sim_s_per_s']:,.0f}, ratio "
              f"{row['ratio_vs_baseline']:.3f}; {row['observations']:,} observations, "
              f"{row['readings']:,} readings, {row['alerts']} alerts")
