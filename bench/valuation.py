"""Herd valuation throughput: animals per second through :func:`cloud.domain.valuation.
value_herd` (outlier filter + per-animal growth fit + value with band), next to a plain numpy
pass over the same arrays done in the same run: the breed curve evaluated at every weighing
and at every animal's age now, times the price, summed (the least work that touches the
same data).

* ``valuation.herd_100k``: 100,000 animals, 5 walk-over weighings each over the last 30
  days, 10 % outliers (0 kg, half, double), 2 % scale noise, every animal its own curve
  (A +-10 %, k +-10 %); 2 % of the animals never weighed (prior + entry weight). Histories
  this short take the closed-form path only.
* ``valuation.herd_refine``: 500 animals (``REFINE_MAX_ANIMALS``) with 30 weighings over
  250 days, all of which qualify for the ``scipy.optimize.least_squares`` refinement (the
  cost of that path, per animal).

Each row also carries the herd value's error against the synthetic truth and how often the
per-animal 90 % band held the true weight.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cloud.domain.growth import PriorArrays, gompertz
from cloud.domain.valuation import HerdInput, HerdValue, value_herd

A, K, BIRTH = 750.0, 0.00341, 36.0  # beef steer prior (cloud.domain.growth.PRIORS)
PRICE = 4.2  # per kg live weight; any positive number does


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best = math.inf
    result: Any = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _herd(n: int, per: int, span_days: float, *, unweighed: float, seed: int
          ) -> tuple[HerdInput, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = A * np.exp(rng.normal(0, 0.1, n))
    k = K * np.exp(rng.normal(0, 0.1, n))
    b = np.log(a / BIRTH) * np.exp(rng.normal(0, 0.05, n))
    age_now = rng.uniform(span_days + 250, span_days + 600, n)
    weighed = rng.random(n) >= unweighed
    ids = np.flatnonzero(weighed)
    idx = np.repeat(ids, per)
    t = age_now[idx] - rng.uniform(0, span_days, idx.size)
    w = gompertz(t, a[idx], b[idx], k[idx]) * np.exp(rng.normal(0, 0.02, idx.size))
    u = rng.random(w.size)
    w = np.where(u < 0.0333, 0.0, np.where(u < 0.0667, w / 2, np.where(u < 0.1, w * 2, w)))
    entry_age = age_now - span_days - 60.0
    entry_w = gompertz(entry_age, a, b, k) * np.exp(rng.normal(0, 0.02, n))
    prior = PriorArrays(np.full(n, A), np.full(n, math.log(A / BIRTH)), np.full(n, K))
    h = HerdInput(epc=[f"E7{i:022X}" for i in range(n)], present=rng.random(n) < 0.99,
                  age_days_now=age_now, prior=prior, weigh_animal_idx=idx, weigh_age_days=t,
                  weigh_kg=w, health_factor=np.where(rng.random(n) < 0.02, 0.8, 1.0),
                  entry_weight_kg=entry_w, entry_age_days=entry_age)
    return h, gompertz(age_now, a, b, k)


def _baseline(h: HerdInput) -> float:
    """Breed curve at every weighing and at every animal's age now, times price, summed."""
    p = h.prior
    idx = np.asarray(h.weigh_animal_idx)
    at_weighings = gompertz(np.asarray(h.weigh_age_days), p.mature_kg[idx], p.b[idx],
                            p.k_per_day[idx])
    now = gompertz(np.asarray(h.age_days_now), p.mature_kg, p.b, p.k_per_day)
    return float(at_weighings.sum()) + float((now * PRICE).sum())


def _row(name: str, h: HerdInput, truth: np.ndarray, repeats: int) -> dict[str, Any]:
    n = len(h)
    value_herd(h, PRICE)  # warm-up: first use imports scipy
    t_impl, hv = _best(lambda: value_herd(h, PRICE), repeats)
    t_base, _ = _best(lambda: _baseline(h), repeats)
    assert isinstance(hv, HerdValue)
    present = np.asarray(h.present)
    health = np.asarray(h.health_factor)
    true_value = float((truth * PRICE * health)[present].sum())
    fit = hv.growth
    covered = (truth >= fit.low_kg) & (truth <= fit.high_kg)
    return {"bench": name, "animals": n, "weighings": int(np.asarray(h.weigh_kg).size),
            "animals_per_s": n / t_impl, "fit_value_ms": t_impl * 1000,
            "baseline": "numpy: breed curve at weighings + now, x price, sum",
            "baseline_animals_per_s": n / t_base, "ratio_vs_baseline": t_base / t_impl,
            "herd_value_error": hv.value / true_value - 1,
            "band_rel_width": (hv.high - hv.low) / hv.value,
            "animal_band_coverage": float(covered.mean()),
            "n_fitted": hv.n_fitted, "n_prior": hv.n_prior,
            "n_refined": int(fit.refined.sum()), "sigma_log": fit.sigma_log}


def run(animals: int = 100_000, repeats: int = 3) -> list[dict[str, Any]]:
    h, truth = _herd(animals, 5, 30.0, unweighed=0.02, seed=7)
    rows = [_row("valuation.herd_100k" if animals == 100_000 else "valuation.herd", h, truth,
                 repeats)]
    h, truth = _herd(max(1, animals // 200), 30, 250.0, unweighed=0.0, seed=8)
    rows.append(_row("valuation.herd_refine", h, truth, repeats))
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['bench']:<24} {row['animals_per_s']:>12,.0f} animals/s "
              f"({row['fit_value_ms']:.0f} ms)  baseline {row['baseline_animals_per_s']:>12,.0f}"
              f"/s  ratio {row['ratio_vs_baseline']:.3f}  value error "
              f"{row['herd_value_error']:+.4%}  band coverage {row['animal_band_coverage']:.3f}")
