"""Edge aggregation throughput: readings per second through each aggregator (one core),
next to the least work of the same shape done in the same run on the same data:

* ``aggregate.sightings``: tag reads -> ``tag_sighting`` readings (flushed every second of
  receive time), against a plain ``dict`` count per (EPC, antenna, window).
* ``aggregate.weigh``: weighbridge weights -> weigh events (N-equal detection), against a
  loop that only counts runs of equal consecutive weights.
* ``aggregate.tmr``: mixer weights -> feed events, against a loop that only takes the delta
  to the previous stable weight.
* ``aggregate.gps_stream`` / ``aggregate.gps_batch``: GPS thinning with :class:`GpsThinner`
  and with the vectorised :func:`thin_track`, against the textbook loop (``math`` haversine
  to the last kept point).

``ratio_vs_baseline`` = time(baseline) / time(aggregator): 1.0 means no slower than the
baseline, 0.25 four times slower.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge.aggregate import (
    GpsThinner,
    StableWeightDetector,
    TagSightingAggregator,
    TmrEventDetector,
    haversine_m,
    thin_track,
)
from protocols.messages import TagRead, Weight

WINDOW_MS = 1000
FLUSH_EVERY = 1000  # reads between flushes (one second of receive time at 1 kHz)


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best = math.inf
    result: Any = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _row(name: str, n: int, t_impl: float, baseline: str, t_base: float,
         **extra: Any) -> dict[str, Any]:
    return {"bench": name, "readings": n, "readings_per_s": n / t_impl, "baseline": baseline,
            "baseline_readings_per_s": n / t_base, "ratio_vs_baseline": t_base / t_impl,
            **extra}


# -- sightings ------------------------------------------------------------------------------------
def _tag_reads(n: int, rng: random.Random) -> list[tuple[int, TagRead]]:
    """A busy race: a herd of 2000 tags (half with a motion counter) files past 4 antennas,
    about 50 in the field at a time (the group moves on one tag every 200 ms), 1000 reads/s,
    so a sighting merges about 5 reads."""
    epcs = [f"E7{rng.getrandbits(56):014X}0000{rng.getrandbits(16):04X}" if i % 2 else
            f"{rng.getrandbits(96):024X}" for i in range(2000)]
    out = []
    for i in range(n):
        epc = epcs[(i // 200 + rng.randrange(50)) % len(epcs)]
        if epc.startswith("E7"):
            epc = epc[:20] + f"{(int(epc[20:], 16) + i // 5000) & 0xFFFF:04X}"
        out.append((1_767_225_600_000 + i, TagRead(epc=epc, antenna=1 + i % 4,
                                                   rssi_dbm=float(rng.randint(-80, -30)))))
    return out


def _run_sightings(reads: list[tuple[int, TagRead]]) -> int:
    agg = TagSightingAggregator(WINDOW_MS, "bench-reader")
    emitted = 0
    for i, (recv, read) in enumerate(reads):
        agg.feed(recv, read)
        if i % FLUSH_EVERY == FLUSH_EVERY - 1:
            emitted += len(agg.flush(recv))
    emitted += len(agg.drain())
    if agg.reads != len(reads):
        raise AssertionError(f"aggregated {agg.reads} reads of {len(reads)}")
    return emitted


def _count_sightings(reads: list[tuple[int, TagRead]]) -> int:
    counts: dict[tuple[str, int | None, int], int] = {}
    for recv, read in reads:
        key = (read.epc, read.antenna, recv // WINDOW_MS)
        counts[key] = counts.get(key, 0) + 1
    return len(counts)


# -- weighbridge ----------------------------------------------------------------------------------
def _weights(n: int, rng: random.Random) -> list[tuple[int, Weight]]:
    """10 Hz weighbridge output: empty, ramp with noise, plateau, ramp down, over and over."""
    out: list[tuple[int, Weight]] = []
    ts = 1_767_225_600_000
    while len(out) < n:
        truck = rng.randrange(8000, 44000, 20)
        phases = ([0.0] * 50 + [truck * f / 80 + rng.gauss(0, 300) for f in range(80)]
                  + [float(truck)] * 120 + [truck * (1 - f / 60) for f in range(60)])
        for w in phases:
            kg = float(round(w / 20) * 20)
            out.append((ts, Weight(weight=kg, unit="kg", weight_kg=kg, stable=None)))
            ts += 100
    return out[:n]


def _run_weigh(stream: list[tuple[int, Weight]]) -> int:
    det = StableWeightDetector(device_id="bench-wb", n_equal=10, tolerance_kg=0)
    return sum(det.feed(ts, w) is not None for ts, w in stream)


def _count_runs(stream: list[tuple[int, Weight]]) -> int:
    runs, prev, same = 0, None, 0
    for _, w in stream:
        kg = w.weight_kg
        same = same + 1 if kg == prev else 0
        runs += same == 9
        prev = kg
    return runs


# -- TMR ------------------------------------------------------------------------------------------
def _mixer(n: int, rng: random.Random) -> list[tuple[int, float, bool]]:
    out: list[tuple[int, float, bool]] = []
    ts, w = 1_767_225_600_000, 0.0
    while len(out) < n:
        target = w + rng.choice([1, -1]) * rng.uniform(100, 2000) if w > 2000 else w + 2000
        for f in range(20):
            out.append((ts, round(w + (target - w) * f / 20 + rng.uniform(-20, 20), 1), False))
            ts += 1000
        w = target
        out.extend((ts + k * 1000, round(w, 1), True) for k in range(10))
        ts += 10_000
    return out[:n]


def _run_tmr(stream: list[tuple[int, float, bool]]) -> int:
    det = TmrEventDetector(device_id="bench-mixer")
    det.set_pen("P1", 0)
    return sum(det.feed(ts, kg, stable) is not None for ts, kg, stable in stream)


def _deltas(stream: list[tuple[int, float, bool]]) -> int:
    changes, prev = 0, None
    for _, kg, stable in stream:
        if stable:
            if prev is not None and abs(kg - prev) > 20:
                changes += 1
            prev = kg
    return changes


# -- GPS ------------------------------------------------------------------------------------------
def _track(n: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1 Hz fixes of a vehicle wandering at 0..15 m/s with GPS jitter."""
    lat = -20.0 + np.cumsum(rng.uniform(0, 1) * np.random.default_rng(1).normal(0, 4e-5, n))
    lon = 30.0 + np.cumsum(np.random.default_rng(2).normal(0, 4e-5, n))
    ts = 1_767_225_600_000 + np.arange(n, dtype=np.int64) * 1000
    return lat, lon, ts


def _thin_stream(lat: list[float], lon: list[float], ts: list[int]) -> int:
    th = GpsThinner(25.0, 60_000, device_id="bench-gps")
    return sum(th.keep(t, a, b) for a, b, t in zip(lat, lon, ts, strict=True))


def _thin_textbook(lat: list[float], lon: list[float], ts: list[int]) -> int:
    kept = 0
    last: tuple[int, float, float] | None = None
    for a, b, t in zip(lat, lon, ts, strict=True):
        if last is None or t - last[0] >= 60_000 or haversine_m(last[1], last[2], a, b) > 25.0:
            last = (t, a, b)
            kept += 1
    return kept


def run(readings: int = 200_000, repeats: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(42)
    results = []

    reads = _tag_reads(readings, rng)
    t_impl, sightings = _best(lambda: _run_sightings(reads), repeats)
    t_base, groups = _best(lambda: _count_sightings(reads), repeats)
    results.append(_row("aggregate.sightings", len(reads), t_impl,
                        "dict count per (epc, antenna, window)", t_base,
                        sightings=sightings, baseline_groups=groups))

    weights = _weights(readings, rng)
    t_impl, events = _best(lambda: _run_weigh(weights), repeats)
    t_base, _ = _best(lambda: _count_runs(weights), repeats)
    results.append(_row("aggregate.weigh", len(weights), t_impl,
                        "count runs of equal weights", t_base, events=events))

    mixer = _mixer(readings, rng)
    t_impl, events = _best(lambda: _run_tmr(mixer), repeats)
    t_base, _ = _best(lambda: _deltas(mixer), repeats)
    results.append(_row("aggregate.tmr", len(mixer), t_impl,
                        "delta to the previous stable weight", t_base, events=events))

    n_gps = max(1, readings // 4)
    lat, lon, ts = _track(n_gps, rng)
    lat_l, lon_l, ts_l = lat.tolist(), lon.tolist(), ts.tolist()
    t_base, kept_base = _best(lambda: _thin_textbook(lat_l, lon_l, ts_l), repeats)
    t_impl, kept = _best(lambda: _thin_stream(lat_l, lon_l, ts_l), repeats)
    t_vec, mask = _best(lambda: thin_track(lat, lon, ts, min_distance_m=25.0,
                                           max_interval_ms=60_000), repeats)
    if int(mask.sum()) != kept:
        raise AssertionError(f"thin_track kept {int(mask.sum())}, GpsThinner {kept}")
    for name, t in (("aggregate.gps_stream", t_impl), ("aggregate.gps_batch", t_vec)):
        results.append(_row(name, n_gps, t, "python loop, math haversine to last kept",
                            t_base, kept=kept, baseline_kept=kept_base))
    return results


if __name__ == "__main__":
    for row in run():
        print(f"{row['bench']:<24} {row['readings_per_s']:>12,.0f}/s  baseline "
              f"{row['baseline_readings_per_s']:>12,.0f}/s  ratio {row['ratio_vs_baseline']:.3f}")
