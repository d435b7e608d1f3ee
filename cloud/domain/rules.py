"""Pure rule arithmetic: the statistics and geometry behind the alert rules, with no state,
no database and no clock. :class:`cloud.domain.state.SiteState` keeps the per-site data and
calls these; the engine may call :func:`coverage_condition` and :func:`price_shock_condition`
directly. Everything is deterministic: the same inputs give the same outputs, bit for bit.

Health (``health_anomaly``), the one statistical rule (:func:`health_scores`; the whole
argument with figures is in ``docs/health.md``). Two channels per animal, both from the
readings a ranch already sends: activity (motion counter steps) and feeding behaviour (bunk
visits seen by bunk readers), in 6 h bins with the seconds each bin was observed.

1. *Baseline*, per channel: the animal's own rate per time-of-day bin over its baseline days
   (pooled counts / observed time, shrunk towards its overall rate times the herd's daily
   shape where counts are sparse), so the circadian pattern drops out. It is *screened*:
   a baseline day whose log ratio lies more than ``HEALTH_OUTLIER_SDS`` robust SDs (1.4826
   x the median absolute deviation) from the animal's median day is left out of the rate
   and the SD (a sick spell, a day of bad reads), then the rates are computed again.
2. *Ratio*: each bin's log ratio of its count to that rate times its observed time, minus
   the herd's median ratio for the same bin (a storm, a late feed truck or a feed change
   lowers everyone; an animal falling ill lowers alone).
3. *Unit*: the SD of a *day's* log ratio over the kept baseline days, shrunk towards the
   herd's (a few days make a poor SD), never below what the bins imply or counting noise.
4. *Combination*: the channels' ratios by inverse variance (a sum of standardised deficits
   in which a noisy channel cannot drown a clear one), each bin clipped at
   ``HEALTH_Z_CLIP`` bin SDs (one wild bin is not an illness).
5. *Statistic* (:func:`decline_scan`): for every possible onset in the recent span, the
   deficit since then weighted by a ramp (rising to 1 at the newest bin: the
   progressive decline of BRD) divided by its SD, which counts the bins' noise *and* the
   baseline's own error (common to every recent bin, so it grows with the window, not its
   square root). The maximum over onsets is a generalised likelihood ratio for a
   progressive decline of unknown onset; an alarm is that maximum at or above the
   threshold (``HEALTH_Z``, in SDs).

Why not the lower CUSUM used before: with a baseline of 4-10 days its error is a drift over
the whole scored span, which a CUSUM can only absorb by a larger reference value ``k``, and
that delays a slow decline by days; the scan weighs it exactly. On the same readings (1,000
head, 60 cases) the CUSUM flagged 48 % of the cases 3 days ahead at 10.7 false alerts per
1,000 animal-weeks, the scan 77 % at 3.7 (``docs/health.md``).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from cloud.domain import valuation
from cloud.domain.model import Condition, LoanInfo, RuleParams

__all__ = [
    "HEALTH_HERD_MIN",
    "HEALTH_OUTLIER_SDS",
    "HEALTH_SD_FLOOR",
    "HEALTH_SD_PRIOR_DAYS",
    "HEALTH_Z",
    "HEALTH_Z_HOLD",
    "MIN_BASELINE_DAYS",
    "HealthScores",
    "alarm_episodes",
    "coverage_condition",
    "decline_scan",
    "feed_drop",
    "health_scores",
    "herd_seen_counts",
    "point_in_polygon",
    "points_in_polygons",
    "price_shock_condition",
    "tare_deviation",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MIN_BASELINE_DAYS: Final = 4  # day windows of baseline before an animal can alarm
HEALTH_Z: Final = 3.2  # alarm threshold of the decline statistic, in its SDs (docs/health.md)
HEALTH_SD_FLOOR: Final = 0.03  # log units (~3 %): no animal is trusted to be steadier
HEALTH_SD_PRIOR_DAYS: Final = 4.0  # weight of the herd's SD when shrinking an animal's SD
HEALTH_DEFAULT_SD: Final = 0.15  # prior SD when the herd is too small to tell
HEALTH_HERD_MIN: Final = 20  # animals needed for the herd median / herd SD
HEALTH_OUTLIER_SDS: Final = 4.5  # a baseline day this far from the animal's median is dropped
_MAD_TO_SD: Final = 1.4826  # MAD of a normal sample x this = its SD
_PSEUDO_FRACTION: Final = 0.1  # log((x + c) / (mu + c)), c = 1 + 0.1 * the animal's mean
_PRIOR_COUNTS: Final = 5.0  # gamma-Poisson prior of a time-of-day rate, in events
HEALTH_Z_CLIP: Final = 2.0  # a bin's standardised value is clipped at this many bin SDs
# an alarm holds while the statistic stays above threshold - HEALTH_Z_HOLD. 0: a hold is
# judged on statistics recomputed with today's baseline, so it also revives near-misses of
# earlier bins: 0.3 / 1.0 raised false alarms from 3.9 to 4.8 / 5.3 per 1,000 animal-weeks
# (docs/health.md); the alert service's clear_after_ticks is the hysteresis instead
HEALTH_Z_HOLD: Final = 0.0


# -- health ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class HealthScores:
    """Per animal (rows of the inputs): ``score`` the decline statistic at the newest bin
    (0 where not evaluable), ``alarm``: evaluable, and the statistic reached the threshold
    and has stayed above ``threshold - HEALTH_Z_HOLD`` since, ``crossed`` the recent bin at
    which this episode reached the threshold (-1: no alarm), ``onset`` the recent bin where
    the best-fitting decline begins (-1: no alarm), ``evaluable`` whether any channel had
    enough baseline, ``stat`` the statistic as of each recent bin, ``z`` the combined
    standardised value of each recent bin (NaN: unmeasured), and per channel the baseline
    mean per day and the recent days' values (NaN: unknown)."""

    score: FloatArray
    alarm: BoolArray
    crossed: IntArray
    onset: IntArray
    evaluable: BoolArray
    stat: FloatArray  # (n, recent bins)
    z: FloatArray  # (n, recent bins)
    base_activity: FloatArray  # (n,)
    recent_activity: FloatArray  # (n, recent days)
    base_bunk: FloatArray
    recent_bunk: FloatArray


@dataclasses.dataclass(frozen=True, slots=True)
class _Channel:
    r: FloatArray  # (n, recent bins): herd-adjusted log ratio to the baseline, NaN unmeasured
    sd_day: FloatArray  # (n,): SD of a day's log ratio
    base_days: IntArray  # (n,): baseline days measured and kept
    ok: BoolArray  # (n,): enough baseline
    base_per_day: FloatArray  # (n,)
    recent_per_day: FloatArray  # (n, recent days)


def _herd_adjust(arr: FloatArray, herd_min: int) -> None:
    """Subtract, in place, the herd's median of every column measured for ``herd_min`` or
    more animals (the common mode: weather, a late feed truck, a feed change)."""
    if arr.shape[0] < herd_min:
        return
    have = np.sum(~np.isnan(arr), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are expected
        med = np.nanmedian(arr, axis=0)
    arr -= np.where(have >= herd_min, np.nan_to_num(med), 0.0)[None, :]


def _channel(count: FloatArray, obs: FloatArray, baseline_bins: int, bins_per_day: int,
             bin_s: float, herd_min: int, min_obs: float) -> _Channel:
    """One channel's standardising arithmetic (see the module docstring, steps 1-3)."""
    n, nbins = count.shape
    days = nbins // bins_per_day
    base_days = baseline_bins // bins_per_day
    seen = obs >= min_obs * bin_s
    cnt = np.where(seen, count, 0.0)
    ob = np.where(seen, obs, 0.0)
    cd = cnt.reshape(n, days, bins_per_day)
    od = ob.reshape(n, days, bins_per_day)
    day_ok = od.sum(axis=2) >= 0.5 * bins_per_day * bin_s
    keep = np.ones((n, base_days), dtype=bool)  # baseline days used
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # animals without a baseline
        # the herd's time-of-day shape, for the shrinkage of sparse rates
        c_all = cd[:, :base_days].sum(axis=1)
        o_all = od[:, :base_days].sum(axis=1)
        shape = np.ones(bins_per_day)
        if n >= herd_min:
            herd = c_all.sum(axis=0) / o_all.sum(axis=0)
            herd_level = c_all.sum() / o_all.sum()
            if herd_level > 0 and np.all(herd > 0):
                shape = herd / herd_level
        for screening in (True, False):
            k3 = keep[:, :, None]
            c_tod = np.where(k3, cd[:, :base_days], 0.0).sum(axis=1)  # (n, bins_per_day)
            o_tod = np.where(k3, od[:, :base_days], 0.0).sum(axis=1)
            level = c_tod.sum(axis=1) / o_tod.sum(axis=1)  # (n,) per second
            # gamma-Poisson shrinkage of each time-of-day rate towards the animal's level
            # times the herd's shape, worth _PRIOR_COUNTS events: matters for sparse counts
            # (bunk visits at night), not for activity counters
            prior = level[:, None] * shape[None, :]
            mu = (c_tod + _PRIOR_COUNTS) / (o_tod + _PRIOR_COUNTS / prior)  # per second
            per_tod = np.sum(np.where(k3, od[:, :base_days], 0.0) > 0, axis=1)
            expected = np.tile(mu, (1, days)) * ob  # (n, nbins)
            per_day_mean = np.nanmean(mu, axis=1) * bin_s * bins_per_day
            c = 1.0 + _PSEUDO_FRACTION * np.where(np.isnan(per_day_mean), 0.0,
                                                  per_day_mean) / bins_per_day
            # per bin and per day window: log((count + c) / (expected + c)), observed time
            r = np.where(seen, np.log((cnt + c[:, None]) / (expected + c[:, None])), np.nan)
            ed = expected.reshape(n, days, bins_per_day)
            day = np.where(day_ok, np.log((cd.sum(axis=2) + c[:, None] * bins_per_day)
                                          / (ed.sum(axis=2) + c[:, None] * bins_per_day)),
                           np.nan)
            _herd_adjust(day, herd_min)
            _herd_adjust(r, herd_min)
            bd = day[:, :base_days]
            if not screening:
                break
            # screen the baseline days: median and MAD of the animal's own days
            med = np.nanmedian(bd, axis=1)
            mad = _MAD_TO_SD * np.nanmedian(np.abs(bd - med[:, None]), axis=1)
            poisson = 1.0 / np.sqrt(np.maximum(np.nan_to_num(per_day_mean), 1.0))
            scale = np.fmax(mad, np.maximum(poisson, HEALTH_SD_FLOOR))
            far = np.abs(bd - med[:, None]) > HEALTH_OUTLIER_SDS * scale[:, None]
            if not far.any():
                break
            keep = ~far
        bd = np.where(keep, bd, np.nan)
        nb = np.sum(~np.isnan(bd), axis=1)
        sd = np.nanstd(bd, axis=1, ddof=1) if base_days > 1 else np.full(n, np.nan)
        ok = (nb >= MIN_BASELINE_DAYS) & np.all(per_tod >= 2, axis=1)
        finite_sd = sd[ok & ~np.isnan(sd)]
        herd_sd = (float(np.median(finite_sd)) if finite_sd.size >= herd_min
                   else HEALTH_DEFAULT_SD)
        # shrink towards the herd (a few baseline days make a poor SD), and never below
        # counting noise (1/sqrt(count))
        dof = np.maximum(nb - 1, 0).astype(np.float64)
        var = (dof * np.where(np.isnan(sd), 0.0, sd) ** 2
               + HEALTH_SD_PRIOR_DAYS * herd_sd ** 2) / (dof + HEALTH_SD_PRIOR_DAYS)
        poisson = 1.0 / np.sqrt(np.maximum(np.nan_to_num(per_day_mean), 1.0))
        # the bins give 4x the samples: their spread, as if independent, bounds the day SD
        # from below (a baseline of a few calm days must not make every dip look alarming)
        rb = np.where(np.repeat(keep, bins_per_day, axis=1), r[:, :baseline_bins], np.nan)
        sd_bins = np.nanstd(rb, axis=1, ddof=1) / math.sqrt(bins_per_day)
        sd_day = np.fmax(np.sqrt(var), sd_bins)
        sd_day = np.maximum(np.nan_to_num(sd_day), np.maximum(poisson, HEALTH_SD_FLOOR))
        rate_day = np.where(day_ok, cd.sum(axis=2) / od.sum(axis=2) * bin_s * bins_per_day,
                            np.nan)
    return _Channel(r=np.where(ok[:, None], r[:, baseline_bins:], np.nan), sd_day=sd_day,
                    base_days=nb.astype(np.int64), ok=ok,
                    base_per_day=np.where(ok, per_day_mean, np.nan),
                    recent_per_day=rate_day[:, base_days:])


def decline_scan(z: FloatArray, base_days: npt.ArrayLike, bins_per_day: int
                 ) -> tuple[FloatArray, IntArray]:
    """The decline statistic of each row of ``z`` (standardised bins, oldest first, in
    baseline *daily* SDs, so one bin has variance ``bins_per_day``; NaN: unmeasured) as of
    every bin: the maximum over onsets ``s`` of

        T(s, e) = sum_j w_j (-z_j) / sqrt(sum_j w_j^2 * B + (sum_j w_j)^2 * B^2 / n_b)

    over the measured bins ``j`` of ``s..e`` with ramp weights ``w_j = (j - s + 1) / (e - s +
    1)`` (the decline grows from the onset), ``B = 1 / bins_per_day`` and ``n_b`` the row's
    baseline days (the baseline mean's error, common to every bin of the window). Returns
    ``(stat, onset)``, both (rows, bins): the statistic as of bin ``e`` (``-inf`` when no bin
    up to ``e`` is measured) and the onset ``s`` of its best window. Prefix sums make it
    O(bins^2) vector operations over the rows, bit-for-bit the same for the same input."""
    z = np.asarray(z, dtype=np.float64)
    n, nbins = z.shape
    x = np.where(np.isnan(z), 0.0, -z)
    h = (~np.isnan(z)).astype(np.float64)
    j = np.arange(1.0, nbins + 1.0)

    def prefix(a: FloatArray) -> FloatArray:
        out = np.zeros((n, nbins + 1))
        np.cumsum(a, axis=1, out=out[:, 1:])
        return out

    sx, sjx = prefix(x), prefix(j * x)
    sh, sjh, sj2h = prefix(h), prefix(j * h), prefix(j * j * h)
    b = 1.0 / bins_per_day
    inv_nb = 1.0 / np.maximum(np.asarray(base_days, dtype=np.float64), 1.0)[:, None]
    stat = np.full((n, nbins), -np.inf)
    onset = np.zeros((n, nbins), dtype=np.int64)
    rows = np.arange(n)
    for e in range(1, nbins + 1):
        a = np.arange(e, dtype=np.float64)[None, :]  # window start s = a + 1, w_j = (j - a)/m
        m = e - a
        wx = ((sjx[:, e:e + 1] - sjx[:, :e]) - a * (sx[:, e:e + 1] - sx[:, :e])) / m
        s_h = sh[:, e:e + 1] - sh[:, :e]
        s_jh = sjh[:, e:e + 1] - sjh[:, :e]
        wh = (s_jh - a * s_h) / m
        w2h = ((sj2h[:, e:e + 1] - sj2h[:, :e]) - 2.0 * a * s_jh + a * a * s_h) / (m * m)
        var = w2h * b + (wh * b) ** 2 * inv_nb
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(var > 1e-12, wx * b / np.sqrt(var), -np.inf)
        best = np.argmax(t, axis=1)
        stat[:, e - 1] = t[rows, best]
        onset[:, e - 1] = best
    return stat, onset


def alarm_episodes(stat: FloatArray, threshold: float, hold: float
                   ) -> tuple[BoolArray, IntArray]:
    """Hysteresis without state, over each row of ``stat`` (oldest first): the episode is
    the trailing run of values ``>= threshold - hold``; the row alarms when a value of that
    run reached ``threshold`` (a statistic wavering around the threshold does not open and
    close alerts). Returns ``(alarm, crossed)``: ``crossed`` the index at which the episode
    first reached the threshold (-1: no alarm)."""
    stat = np.asarray(stat, dtype=np.float64)
    nbins = stat.shape[1]
    held = stat >= threshold - hold
    run_start = np.where(held.all(axis=1), 0, nbins - np.argmax(~held[:, ::-1], axis=1))
    reached = (np.arange(nbins)[None, :] >= run_start[:, None]) & (stat >= threshold)
    alarm = held[:, -1] & reached.any(axis=1) if nbins else np.zeros(len(stat), dtype=bool)
    crossed = np.where(alarm, np.argmax(reached, axis=1), -1).astype(np.int64)
    return alarm, crossed


def health_scores(activity: FloatArray, activity_obs: FloatArray, bunk: FloatArray,
                  bunk_obs: FloatArray, *, bins_per_day: int, recent_days: int, bin_s: float,
                  threshold: float = HEALTH_Z, herd_min: int = HEALTH_HERD_MIN,
                  min_obs: float = 0.5) -> HealthScores:
    """Health statistic per animal. Inputs are (animals, bins) arrays over whole days,
    oldest first: counts per bin (counter steps, bunk visits) and the seconds of each bin
    during which the channel was observed (a bin observed less than ``min_obs`` is
    unmeasured). The last ``recent_days`` days of bins are scored against the days before
    them (module docstring, steps 1-5); an alarm is the decline statistic having reached
    ``threshold`` SDs and not fallen below ``threshold - HEALTH_Z_HOLD`` since."""
    act = np.asarray(activity, dtype=np.float64)
    if not (act.shape == np.shape(activity_obs) == np.shape(bunk) == np.shape(bunk_obs)) \
            or act.ndim != 2 or act.shape[1] % bins_per_day:
        raise ValueError("inputs must be (animals, bins) arrays of one shape, whole days")
    nbins = act.shape[1]
    days = nbins // bins_per_day
    if not 0 < recent_days < days:
        raise ValueError(f"recent_days must be in 1..{days - 1}, got {recent_days}")
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    baseline_bins = (days - recent_days) * bins_per_day
    a = _channel(act, np.asarray(activity_obs, dtype=np.float64), baseline_bins, bins_per_day,
                 bin_s, herd_min, min_obs)
    b = _channel(np.asarray(bunk, dtype=np.float64), np.asarray(bunk_obs, dtype=np.float64),
                 baseline_bins, bins_per_day, bin_s, herd_min, min_obs)
    wa = np.where(np.isnan(a.r), 0.0, 1.0 / a.sd_day[:, None] ** 2)
    wb = np.where(np.isnan(b.r), 0.0, 1.0 / b.sd_day[:, None] ** 2)
    weight = wa + wb
    with np.errstate(divide="ignore", invalid="ignore"):
        # the inverse-variance mean ratio, in units of its own daily SD
        z = np.where(weight > 0, (np.nan_to_num(a.r) * wa + np.nan_to_num(b.r) * wb)
                     / np.sqrt(weight), np.nan)
    evaluable = a.ok | b.ok
    # robust: no single bin counts for more than HEALTH_Z_CLIP of its own SDs (a bin's SD
    # is sqrt(bins_per_day) day SDs when bins are independent)
    clip = HEALTH_Z_CLIP * math.sqrt(bins_per_day)
    z = np.clip(z, -clip, clip)
    nb = np.maximum(np.where(a.ok, a.base_days, 0), np.where(b.ok, b.base_days, 0))
    stat, start = decline_scan(z, nb, bins_per_day)
    stat = np.where(evaluable[:, None], stat, -np.inf)
    score = np.where(evaluable, np.maximum(stat[:, -1], 0.0), 0.0)
    alarm, crossed = alarm_episodes(stat, threshold, HEALTH_Z_HOLD)
    alarm &= evaluable
    crossed = np.where(alarm, crossed, -1)
    onset = np.where(alarm, start[:, -1], -1)
    return HealthScores(score=score, alarm=alarm, crossed=crossed.astype(np.int64),
                        onset=onset.astype(np.int64), evaluable=evaluable, stat=stat, z=z,
                        base_activity=a.base_per_day, recent_activity=a.recent_per_day,
                        base_bunk=b.base_per_day, recent_bunk=b.recent_per_day)


# -- herd counts ---------------------------------------------------------------------------
def herd_seen_counts(masks: Sequence[int], slots: Sequence[int], now_slot: int,
                     slots_per_window: int, windows: int) -> list[int]:
    """How many animals were seen in each of the last ``windows`` windows of
    ``slots_per_window`` slots (window 0 ends with slot ``now_slot``, window 1 the one
    before...). Animal ``i`` has bit ``j`` of ``masks[i]`` set when it was seen in slot
    ``slots[i] - j``. Vectorised; masks must fit 64 bits."""
    if windows * slots_per_window > 64:
        raise ValueError("windows * slots_per_window must be <= 64")
    if not masks:
        return [0] * windows
    m = np.array(masks, dtype=np.uint64)
    shift = now_slot - np.array(slots, dtype=np.int64)
    keep = (shift >= 0) & (shift < 64)
    aligned = np.where(keep, m << np.clip(shift, 0, 63).astype(np.uint64), np.uint64(0))
    window_mask = np.uint64((1 << slots_per_window) - 1)
    out = []
    for w in range(windows):
        part = (aligned >> np.uint64(w * slots_per_window)) & window_mask
        out.append(int(np.count_nonzero(part)))
    return out


# -- feed, tare ------------------------------------------------------------------------------
def feed_drop(previous_kg: Sequence[float], day_kg: float, fraction: float,
              min_days: int = 4) -> float | None:
    """The pen's reference (median of its previous days' delivered kg) when ``day_kg`` is
    below ``(1 - fraction)`` of it, else ``None``. Needs ``min_days`` previous days with a
    delivery; days without one count as 0 in the median (a pen left unfed is a drop)."""
    if sum(1 for v in previous_kg if v > 0) < min_days:
        return None
    ref = statistics.median(previous_kg)
    if ref > 0 and day_kg < (1.0 - fraction) * ref:
        return float(ref)
    return None


def tare_deviation(tare_kg: float, previous_tares: Sequence[float], tolerance: float,
                   min_previous: int = 2) -> float | None:
    """The truck's median previous tare when ``tare_kg`` differs from it by more than
    ``tolerance`` (a fraction), else ``None``. Needs ``min_previous`` earlier tares that
    agree with each other (spread within the tolerance, as an honest truck's do to a few
    tens of kg): a baseline that is itself in doubt judges nothing."""
    if len(previous_tares) < min_previous:
        return None
    med = statistics.median(previous_tares)
    if med <= 0:
        return None
    if len(previous_tares) < 3 and max(previous_tares) - min(previous_tares) > tolerance * med:
        return None
    if abs(tare_kg - med) > tolerance * med:
        return float(med)
    return None


# -- geofences -------------------------------------------------------------------------------
def point_in_polygon(lat: float, lon: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Even-odd ray casting with longitude as x and latitude as y (fine for site-sized
    polygons away from the antimeridian). Polygons of fewer than 3 points contain nothing."""
    n = len(polygon)
    if n < 3:
        return False
    inside = False
    yj, xj = polygon[-1]
    for yi, xi in polygon:
        if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            inside = not inside
        yj, xj = yi, xi
    return inside


def points_in_polygons(lat: npt.ArrayLike, lon: npt.ArrayLike,
                       polygons: Sequence[Sequence[tuple[float, float]]]) -> BoolArray:
    """Vectorised :func:`point_in_polygon` over points, for a union of polygons: True where
    a point is inside any of them. Same edge arithmetic as the scalar version."""
    y = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    x = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    inside_any = np.zeros(y.shape, dtype=bool)
    for polygon in polygons:
        if len(polygon) < 3:
            continue
        p = np.asarray(polygon, dtype=np.float64)
        yi, xi = p[:, 0], p[:, 1]
        yj, xj = np.roll(yi, 1), np.roll(xi, 1)
        crosses = (yi[None, :] > y[:, None]) != (yj[None, :] > y[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = (xj - xi)[None, :] * (y[:, None] - yi[None, :]) / (yj - yi)[None, :] \
                + xi[None, :]
        hits = crosses & (x[:, None] < x_at)
        inside_any |= (np.count_nonzero(hits, axis=1) % 2) == 1
    return inside_any


# -- coverage and prices (engine helpers) ----------------------------------------------------
_COVERAGE_SEVERITY: Final = {"warning": "warning", "margin_call": "high",
                             "liquidation": "critical"}


def coverage_condition(loan: LoanInfo, value: float, ts_ms: int, *,
                       low: float | None = None, high: float | None = None) -> Condition | None:
    """A ``coverage_breach`` condition for a loan whose collateral ``value`` (currency of
    the loan) puts its LTV above its LTV line, else ``None``. No collateral at all is a
    liquidation-level breach while anything is outstanding."""
    if loan.outstanding <= 0:
        return None
    # the status as the stored valuation has it (one definition of the lines: an LTV on a
    # line has not crossed it)
    cov = valuation.coverage(value, low if low is not None else value,
                             high if high is not None else value, loan.outstanding,
                             loan.ltv_line, loan.margin_call_line, loan.liquidation_line)
    ltv, status = cov.ltv, cov.status
    if status == "ok":
        return None
    return Condition(
        kind="coverage_breach", severity=_COVERAGE_SEVERITY[status],  # type: ignore[arg-type]
        subject_type="loan", subject_id=loan.code, site_code=None, loan_code=loan.code,
        event_time_ms=ts_ms,
        summary=(f"loan {loan.code} LTV {ltv:.0%} above its {status} line" if value > 0
                 else f"loan {loan.code} has no collateral value left"),
        evidence={"value": float(value), "low": low, "high": high,
                  "outstanding": loan.outstanding, "ltv": ltv if math.isfinite(ltv) else None,
                  "status": status, "ltv_line": loan.ltv_line,
                  "margin_call_line": loan.margin_call_line,
                  "liquidation_line": loan.liquidation_line})


def price_shock_condition(commodity: str, prev: float | None, now: float | None,
                          params: RuleParams, *, site_code: str | None, ts_ms: int,
                          loan_code: str | None = None) -> Condition | None:
    """A ``price_shock`` condition when the price per kg moved by more than
    ``params.price_shock_fraction`` between two quotes (domain.md 2.6: platforms re-price
    on moves above 5 %). A fall is ``high``, a rise ``info``. The subject is the loan when
    ``loan_code`` is given (the collateral re-priced), else the site."""
    if prev is None or now is None or not prev > 0:
        return None
    change = now / prev - 1.0
    if abs(change) <= params.price_shock_fraction:
        return None
    if loan_code is None and site_code is None:
        raise ValueError("a price shock needs a site or a loan")
    return Condition(
        kind="price_shock", severity="high" if change < 0 else "info",
        subject_type="loan" if loan_code is not None else "site",
        subject_id=loan_code if loan_code is not None else str(site_code),
        site_code=site_code, loan_code=loan_code, event_time_ms=ts_ms,
        summary=f"{commodity} price {change:+.1%}",
        evidence={"commodity": commodity, "price_before_per_kg": prev, "price_per_kg": now,
                  "change": change})
