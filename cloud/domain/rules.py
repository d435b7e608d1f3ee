"""Pure rule arithmetic: the statistics and geometry behind the alert rules, with no state,
no database and no clock. :class:`cloud.domain.state.SiteState` keeps the per-site data and
calls these; the engine may call :func:`coverage_condition` and :func:`price_shock_condition`
directly. Everything is deterministic: the same inputs give the same outputs, bit for bit.

Health (``health_anomaly``), the one statistical rule (:func:`health_scores`), per animal
and per channel (activity counter steps; bunk visits):

1. *Baseline*: the animal's own rate per 6 h time-of-day bin over its baseline days (pooled
   counts / observed time, shrunk a little towards its overall rate times the herd's daily
   shape where counts are sparse), so the circadian pattern drops out: each bin is compared
   with the same time of day.
2. *Ratio*: each bin's log ratio of its count to that rate times the bin's observed time,
   minus the herd's median ratio for the same bin (a storm, a late feed truck or a pen move
   lowers everyone; an animal falling ill lowers alone).
3. *Unit*: the standard deviation of a *day's* log ratio over the baseline days, shrunk
   towards the herd's (a baseline of a few calm days is a poor SD), never below what the
   bins imply or below counting noise.
4. *Chart*: channels combined by inverse variance (a noisy channel cannot drown a clear
   one), each bin's value clipped at ``HEALTH_Z_CLIP`` bin SDs (one wild bin is not an
   illness), then a one-sided lower CUSUM (Page 1954) stepping every bin by a quarter of
   ``(-z - k)``: ``k`` and ``h`` are in baseline *daily* SDs as ``RuleParams`` says, yet it
   reacts every 6 h. ``k`` grows by ``1/sqrt(baseline days)``: the baseline mean is itself
   that far off, and its error is a drift over the whole scored span, not noise.

Why this shape: activity falls at least 6 days before BRD diagnosis, most on day -1, and
CUSUM charts on feeding behaviour signal ~3.7 days before symptoms (``shared/reference/
domain.md`` 2.3). What it reaches is bounded by the noise: with the simulated ranch's
activity noise (log-normal, sd 0.2 per hour, so ~4.5 % per day) and its illness (a ``1 -
0.5 x^1.5`` decline over 6 days) even an ideal chart with a perfectly known baseline flags
only about half the cases 3 days ahead at a 1-2 % weekly false-alarm rate; the defaults here
keep false alarms under 1 % of healthy animals per week and flag every case before its
clinical day (figures in the helper's report and ``tests/cloud/domain/test_rules_health``).
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

from cloud.domain.model import Condition, LoanInfo, RuleParams

__all__ = [
    "HEALTH_HERD_MIN",
    "HEALTH_SD_FLOOR",
    "HEALTH_SD_PRIOR_DAYS",
    "MIN_BASELINE_DAYS",
    "HealthScores",
    "coverage_condition",
    "coverage_status",
    "feed_drop",
    "health_scores",
    "herd_seen_counts",
    "lower_cusum",
    "point_in_polygon",
    "points_in_polygons",
    "price_shock_condition",
    "tare_deviation",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MIN_BASELINE_DAYS: Final = 4  # day windows of baseline before an animal can alarm
HEALTH_SD_FLOOR: Final = 0.03  # log units (~3 %): no animal is trusted to be steadier
HEALTH_SD_PRIOR_DAYS: Final = 4.0  # weight of the herd's SD when shrinking an animal's SD
HEALTH_DEFAULT_SD: Final = 0.15  # prior SD when the herd is too small to tell
HEALTH_HERD_MIN: Final = 20  # animals needed for the herd median / herd SD
_MIN_BINS_PER_DAY: Final = 2  # of 4: a day window with fewer measured bins is unknown
_PSEUDO_FRACTION: Final = 0.1  # log((x + c) / (mu + c)), c = 1 + 0.1 * the animal's mean
_PRIOR_COUNTS: Final = 5.0  # gamma-Poisson prior of a time-of-day rate, in events
HEALTH_Z_CLIP: Final = 2.0  # a bin's standardised value is clipped at this many bin SDs


# -- CUSUM and health ----------------------------------------------------------------------
def lower_cusum(z: FloatArray, k: float | FloatArray, h: float = math.inf, *,
                step: float = 1.0) -> tuple[FloatArray, IntArray]:
    """One-sided lower CUSUM over the last axis of ``z`` (rows are series, oldest first):
    ``S_t = max(0, S_{t-1} + step * (-z_t - k))`` from ``S_0 = 0``. NaN steps leave ``S``
    unchanged (an unmeasured period is no evidence either way). Returns the final ``S`` per
    row and the index of the first step at which ``S >= h`` (-1: never). ``step`` < 1 runs
    the chart on fractions of the unit ``k`` and ``h`` are expressed in (4 six-hour steps of
    0.25 make a daily chart that reacts every 6 h)."""
    z = np.asarray(z, dtype=np.float64)
    s = np.zeros(z.shape[:-1], dtype=np.float64)
    first = np.full(z.shape[:-1], -1, dtype=np.int64)
    kk = np.asarray(k, dtype=np.float64)
    if kk.ndim:
        kk = kk.reshape(kk.shape[:-1]) if kk.shape[-1:] == (1,) else kk
    for j in range(z.shape[-1]):
        zj = z[..., j]
        s = np.where(np.isnan(zj), s, np.maximum(0.0, s + step * (-zj - kk)))
        first = np.where((first < 0) & (s >= h), j, first)
    return s, first


@dataclasses.dataclass(frozen=True, slots=True)
class HealthScores:
    """Per animal (rows of the inputs): ``score`` the CUSUM statistic (0 where not
    evaluable), ``alarm`` = ``score >= h``, ``crossed`` the recent bin at which it first
    reached ``h`` (-1: not in the scored span), ``evaluable`` whether any channel had enough
    baseline, ``z`` the combined standardised value of each recent bin (NaN: unmeasured),
    and per channel the baseline mean per day and the recent days' values (NaN: unknown)."""

    score: FloatArray
    alarm: BoolArray
    crossed: IntArray
    evaluable: BoolArray
    z: FloatArray  # (n, recent bins)
    base_activity: FloatArray  # (n,)
    recent_activity: FloatArray  # (n, recent days)
    base_bunk: FloatArray
    recent_bunk: FloatArray


@dataclasses.dataclass(frozen=True, slots=True)
class _Channel:
    r: FloatArray  # (n, recent bins): herd-adjusted log ratio to the baseline, NaN unmeasured
    sd_day: FloatArray  # (n,): SD of a day's log ratio
    base_days: IntArray  # (n,): baseline days measured
    ok: BoolArray  # (n,): enough baseline
    base_per_day: FloatArray  # (n,)
    recent_per_day: FloatArray  # (n, recent days)


def _channel(count: FloatArray, obs: FloatArray, baseline_bins: int, bins_per_day: int,
             bin_s: float, herd_min: int, min_obs: float) -> _Channel:
    """One channel's standardising arithmetic (see :func:`health_scores`)."""
    n, nbins = count.shape
    days = nbins // bins_per_day
    base_days = baseline_bins // bins_per_day
    seen = obs >= min_obs * bin_s
    cnt = np.where(seen, count, 0.0)
    ob = np.where(seen, obs, 0.0)
    # baseline rate per time-of-day bin: pooled counts / pooled observed time
    cb = cnt[:, :baseline_bins].reshape(n, base_days, bins_per_day)
    ob_b = ob[:, :baseline_bins].reshape(n, base_days, bins_per_day)
    with np.errstate(divide="ignore", invalid="ignore"):
        c_tod, o_tod = cb.sum(axis=1), ob_b.sum(axis=1)  # (n, bins_per_day)
        level = c_tod.sum(axis=1) / o_tod.sum(axis=1)  # (n,) per second
        shape = np.ones(bins_per_day)
        if n >= herd_min:  # the herd's time-of-day shape
            herd = c_tod.sum(axis=0) / o_tod.sum(axis=0)
            herd_level = c_tod.sum() / o_tod.sum()
            if herd_level > 0 and np.all(herd > 0):
                shape = herd / herd_level
        # gamma-Poisson shrinkage of each time-of-day rate towards the animal's level times
        # the herd's shape, worth _PRIOR_COUNTS events: matters for sparse counts (bunk
        # visits at night), not for activity counters
        prior = level[:, None] * shape[None, :]
        mu = (c_tod + _PRIOR_COUNTS) / (o_tod + _PRIOR_COUNTS / prior)  # per second
        per_tod = np.sum(ob_b > 0, axis=1)
        mu_bins = np.tile(mu, (1, days))  # (n, nbins)
        expected = mu_bins * ob
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # animals without a baseline
            per_day_mean = np.nanmean(mu, axis=1) * bin_s * bins_per_day
        c = 1.0 + _PSEUDO_FRACTION * np.where(np.isnan(per_day_mean), 0.0,
                                              per_day_mean) / bins_per_day
        # per bin and per day window: log((count + c) / (expected + c)) over observed time
        r = np.where(seen, np.log((cnt + c[:, None]) / (expected + c[:, None])), np.nan)
        cd = cnt.reshape(n, days, bins_per_day)
        ed = expected.reshape(n, days, bins_per_day)
        od = ob.reshape(n, days, bins_per_day)
        day_ok = od.sum(axis=2) >= 0.5 * bins_per_day * bin_s
        day = np.where(day_ok, np.log((cd.sum(axis=2) + c[:, None] * bins_per_day)
                                      / (ed.sum(axis=2) + c[:, None] * bins_per_day)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are expected
        # common mode: the herd's median of every day window and every bin
        if n >= herd_min:
            for arr in (day, r):
                have = np.sum(~np.isnan(arr), axis=0)
                med = np.nanmedian(arr, axis=0)
                arr -= np.where(have >= herd_min, np.nan_to_num(med), 0.0)[None, :]
        bd = day[:, :base_days]
        nb = np.sum(~np.isnan(bd), axis=1)
        sd = np.nanstd(bd, axis=1, ddof=1) if base_days > 1 else np.full(n, np.nan)
        ok = (nb >= MIN_BASELINE_DAYS) & np.all(per_tod >= 2, axis=1)
        finite_sd = sd[ok & ~np.isnan(sd)]
        herd_sd = (float(np.median(finite_sd)) if finite_sd.size >= herd_min
                   else HEALTH_DEFAULT_SD)
        # shrink towards the herd (a few baseline days make a poor SD), widen for a new day
        # predicted from a mean of nb days, and never below counting noise (1/sqrt(count))
        dof = np.maximum(nb - 1, 0).astype(np.float64)
        var = (dof * np.where(np.isnan(sd), 0.0, sd) ** 2
               + HEALTH_SD_PRIOR_DAYS * herd_sd ** 2) / (dof + HEALTH_SD_PRIOR_DAYS)
        poisson = 1.0 / np.sqrt(np.maximum(np.nan_to_num(per_day_mean), 1.0))
        # the bins give 4x the samples: their spread, as if independent, bounds the day SD
        # from below (a baseline of a few calm days must not make every dip look alarming)
        rb = r[:, :baseline_bins]
        nbins_seen = np.sum(~np.isnan(rb), axis=1)
        sd_bins = np.nanstd(rb, axis=1, ddof=1) / math.sqrt(bins_per_day)
        del nbins_seen
        sd_day = np.fmax(np.sqrt(var), sd_bins)
        sd_day = np.maximum(np.nan_to_num(sd_day), np.maximum(poisson, HEALTH_SD_FLOOR))
        recent_days = days - base_days
        rate_day = np.where(day_ok, cd.sum(axis=2) / od.sum(axis=2) * bin_s * bins_per_day,
                            np.nan)
    return _Channel(r=np.where(ok[:, None], r[:, baseline_bins:], np.nan), sd_day=sd_day,
                    base_days=nb.astype(np.int64), ok=ok,
                    base_per_day=np.where(ok, per_day_mean, np.nan),
                    recent_per_day=rate_day[:, base_days:base_days + recent_days])


def health_scores(activity: FloatArray, activity_obs: FloatArray, bunk: FloatArray,
                  bunk_obs: FloatArray, *, bins_per_day: int, recent_days: int, bin_s: float,
                  k: float, h: float, herd_min: int = HEALTH_HERD_MIN,
                  min_obs: float = 0.5) -> HealthScores:
    """Health CUSUM per animal. Inputs are (animals, bins) arrays over whole days, oldest
    first: counts per bin (counter steps, bunk visits) and the seconds of each bin during
    which the channel was observed (a bin observed less than ``min_obs`` is unmeasured).
    The last ``recent_days`` days of bins are scored against the days before them.

    Per channel: the animal's baseline rate per time-of-day bin (pooled), each bin's log
    ratio of its count to that rate times its observed time, minus the herd's median for
    the same bin; the SD unit is the predictive SD of a *day's* log ratio over the baseline
    days (shrunk towards the herd's, floored at ``HEALTH_SD_FLOOR`` and at counting noise).
    Channels are combined by inverse variance. The chart steps once per bin by ``1 /
    bins_per_day`` of ``(-z - k)``, where ``z`` is the bin's ratio in day SDs: ``k`` and
    ``h`` are in baseline *daily* SDs (a day of ``z = -1`` moves it by ``1 - k``) while it
    reacts every bin, and a bad 6 h stretch weighs as a quarter of a bad day."""
    act = np.asarray(activity, dtype=np.float64)
    if not (act.shape == np.shape(activity_obs) == np.shape(bunk) == np.shape(bunk_obs)) \
            or act.ndim != 2 or act.shape[1] % bins_per_day:
        raise ValueError("inputs must be (animals, bins) arrays of one shape, whole days")
    n, nbins = act.shape
    days = nbins // bins_per_day
    if not 0 < recent_days < days:
        raise ValueError(f"recent_days must be in 1..{days - 1}, got {recent_days}")
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
    # robust chart: no single bin counts for more than HEALTH_Z_CLIP of its own SDs (a bin's
    # SD is sqrt(bins_per_day) day SDs when bins are independent)
    clip = HEALTH_Z_CLIP * math.sqrt(bins_per_day)
    z = np.clip(z, -clip, clip)
    # the baseline mean is itself off by ~1/sqrt(days) day SDs, and that error lasts through
    # the whole scored span (a drift, not noise): k grows by it
    nb = np.maximum(np.where(a.ok, a.base_days, 0), np.where(b.ok, b.base_days, 0))
    k_eff = k + 1.0 / np.sqrt(np.maximum(nb, 1))
    if n:
        score, crossed = lower_cusum(z, k_eff[:, None] if z.ndim == 2 else k_eff, h,
                                     step=1.0 / bins_per_day)
    else:
        score, crossed = np.zeros(0), np.zeros(0, dtype=np.int64)
    score = np.where(evaluable, score, 0.0)
    alarm = evaluable & (score >= h)
    return HealthScores(score=score, alarm=alarm, crossed=np.where(alarm, crossed, -1),
                        evaluable=evaluable, z=z, base_activity=a.base_per_day,
                        recent_activity=a.recent_per_day, base_bunk=b.base_per_day,
                        recent_bunk=b.recent_per_day)


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
def coverage_status(ltv: float, loan: LoanInfo) -> str:
    """``ok`` / ``warning`` / ``margin_call`` / ``liquidation`` for a loan-to-value ratio
    (outstanding / collateral value) against the loan's lines."""
    if ltv >= loan.liquidation_line:
        return "liquidation"
    if ltv >= loan.margin_call_line:
        return "margin_call"
    if ltv > loan.ltv_line:
        return "warning"
    return "ok"


_COVERAGE_SEVERITY: Final = {"warning": "warning", "margin_call": "high",
                             "liquidation": "critical"}


def coverage_condition(loan: LoanInfo, value: float, ts_ms: int, *,
                       low: float | None = None, high: float | None = None) -> Condition | None:
    """A ``coverage_breach`` condition for a loan whose collateral ``value`` (currency of
    the loan) puts its LTV above its LTV line, else ``None``. No collateral at all is a
    liquidation-level breach while anything is outstanding."""
    if loan.outstanding <= 0:
        return None
    ltv = loan.outstanding / value if value > 0 else math.inf
    status = coverage_status(ltv, loan)
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
