"""Live weight of every animal now, from its own weighings and its breed's growth curve.

Pure and vectorised: flat numpy arrays in, flat arrays out; no database, no clock (ages are
arguments, in days). The curve is Gompertz, ``W(t) = A * exp(-b * exp(-k * t))`` with ``A``
the mature weight (kg), ``b`` the integration constant and ``k`` the maturing rate per day
(``t`` = age in days; domain.md 2.1).

How one animal's weight is estimated (:func:`fit_growth`)
    1. **Outlier filter.** Walk-over scales report 0 kg, half and double weights. Readings
       that are not positive are dropped; the others are compared with the animal's own
       robust level: the median of its readings' log ratio to the breed curve (so growth
       between weighings does not count as disagreement). A reading more than +-25 % from
       that level is dropped (the walk-over-weighing filter of domain.md 2.4). An animal with
       only one or two readings cannot out-vote a bad one, so the breed curve takes part in
       its median as one more vote: of {400, 200 (half)} with a curve saying 380, 400 stays.
    2. **Robust per-animal curve, closed form.** With ``k`` from the prior, ``log W = a -
       b * x`` with ``a = log A`` and ``x = exp(-k t)`` is linear in ``(a, b)``. Each animal
       gets a Bayesian linear fit of its good weighings with the breed prior on ``(a, b)``
       (so two weighings a week apart cannot pull the mature weight anywhere absurd), solved
       for all animals at once from grouped sums (``np.bincount``) as 2x2 systems. A first
       pass gives residuals from which ``sigma`` (the scale's noise in log space) is
       estimated for the whole herd (median absolute leverage-corrected residual); two
       reweighted passes with soft-L1 weights ``1/sqrt(1 + (r/sigma)^2)`` (the loss of
       ``scipy.optimize.least_squares(loss="soft_l1")``) take the sting out of readings the
       +-25 % filter let through. Weighings count less the older they are (``memory_days``):
       a literature curve fits one animal over months, not over its whole life.
    3. **Refinement.** Animals with at least ``refine_min_weighings`` good weighings over at
       least ``refine_min_span_days`` also get their own maturing rate: one batched
       ``scipy.optimize.least_squares`` call (soft-L1 loss, sparse block Jacobian) fits
       ``(log A, b, log k)`` for all of them together, with the breed prior as extra
       residuals so ``k`` stays near the breed's unless the data say otherwise.
    4. **Fallback.** An animal with fewer than two good weighings still gets the same fit,
       which then leans on the prior: the breed curve at its age, moved by its entry weight
       (a pseudo-weighing at the entry age) and, if given, by the weight implied by its pen's
       feed intake (:func:`weight_from_intake`, a pseudo-weighing now with a wide error).
    5. **Band.** The posterior variance of ``log W`` now (prior, data, leverage), inflated
       where an animal's residuals are worse than the herd's, gives a central band of
       ``band_z`` standard deviations (1.645: 90 %). Animals on the prior alone get the
       prior's width, which is wide on purpose.

Why not a nonlinear fit per animal for everyone: 100k animals must value in well under a
second, and ``least_squares`` per animal costs about a millisecond. The closed form costs a few
grouped sums over the weighings; the scipy step is kept for the animals whose history can
actually tell their maturing rate apart from the breed's.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BAND_Z_90", "DMI_FRACTION_FEEDLOT_HEIFER", "DMI_FRACTION_FEEDLOT_STEER",
    "DMI_FRACTION_RULE_OF_THUMB", "PRIORS",
    "GrowthFit", "GrowthPrior", "PriorArrays", "b_for", "fit_growth", "gompertz",
    "impute_age_days", "prior_arrays", "prior_for", "weight_from_intake",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# -- priors ---------------------------------------------------------------------------------------
# Birth weights anchor b = ln(A / birth weight). Angus/Hereford calves average ~34-39 kg and
# Holstein calves 34-45 kg at birth (https://biologyinsights.com/how-much-does-a-calf-weigh-at-
# birth-and-beyond ; low authority, a popular summary; domain.md has no birth weights).
BIRTH_KG_BEEF: Final = 36.0
BIRTH_KG_HOLSTEIN: Final = 40.0
# Mature-weight ratio female/male, Brahman in Mexico: 592.1 / 787.2 (domain.md 2.1,
# https://www.jarts.info/index.php/jarts/article/view/202306128204); used only where a source
# gives one sex of a breed.
FEMALE_TO_MALE_MATURE: Final = 592.1 / 787.2


@dataclasses.dataclass(frozen=True, slots=True)
class GrowthPrior:
    """A breed/sex Gompertz curve: ``mature_kg`` = A, ``k_per_day`` = k, and the birth weight
    that fixes ``b``."""

    name: str
    mature_kg: float
    k_per_day: float
    birth_kg: float
    source: str

    @property
    def b(self) -> float:
        return math.log(self.mature_kg / self.birth_kg)


_PMC = "https://pmc.ncbi.nlm.nih.gov/articles/PMC7149552/table/T1"
# Keyed by (breed, sex). Only Gompertz fits are used (Brody/vB parameters of domain.md 2.1 are
# not interchangeable: same letters, different curves).
PRIORS: Final[dict[tuple[str, str], GrowthPrior]] = {
    # "Cattle after weaning, set 2" (A 750 kg, k 0.00341/d): the larger frame, close to US
    # steers marketed at ~630 kg (domain.md 2.2); the default for males and unknown sex.
    ("beef", "M"): GrowthPrior("beef steer", 750.0, 0.00341, BIRTH_KG_BEEF, _PMC + " set 2"),
    # "set 1" (A 520 kg, k 0.00457/d): the smaller frame; 520/750 = 0.69 is near the Brahman
    # female/male mature-weight ratio 0.75, so it stands in for heifers.
    ("beef", "F"): GrowthPrior("beef heifer", 520.0, 0.00457, BIRTH_KG_BEEF, _PMC + " set 1"),
    # intact Holstein steers on pasture, Gompertz best: A 795 kg, k 0.0047/d
    ("holstein", "M"): GrowthPrior("holstein steer", 795.0, 0.0047, BIRTH_KG_HOLSTEIN,
                                   "https://scholar.archive.org/work/gffbviiywrffpkr2kxugfisvga"),
    ("holstein", "F"): GrowthPrior("holstein heifer", 795.0 * FEMALE_TO_MALE_MATURE, 0.0047,
                                   BIRTH_KG_HOLSTEIN, "holstein steer x Brahman F/M ratio"),
    # crossbred taurus x indicus cows (BR), Gompertz: A 479.7 kg, k 0.00353/d
    ("crossbred", "F"): GrowthPrior(
        "crossbred cow", 479.7, 0.00353, BIRTH_KG_BEEF,
        "https://libmast.utm.my/Record/doaj.art-e8944eae091a492cb5fbe3d0e76033a7/Description"),
    ("crossbred", "M"): GrowthPrior("crossbred steer", 479.7 / FEMALE_TO_MALE_MATURE, 0.00353,
                                    BIRTH_KG_BEEF, "crossbred cow / Brahman F/M ratio"),
}
# breed names as registries spell them -> the curve family used
_BREED_ALIASES: Final = {
    "beef": "beef", "angus": "beef", "hereford": "beef", "charolais": "beef",
    "simmental": "beef", "limousin": "beef", "holstein": "holstein", "friesian": "holstein",
    "holstein-friesian": "holstein", "crossbred": "crossbred", "brahman": "crossbred",
    "nellore": "crossbred", "taurus x indicus": "crossbred",
}


def prior_for(breed: str | None, sex: str | None) -> GrowthPrior:
    """The curve for a breed and sex ("M"/"F"); unknown breeds use the beef curve, unknown
    sex the male (larger) one, since castrated feedlot males are the common pledge."""
    family = _BREED_ALIASES.get((breed or "").strip().lower(), "beef")
    s = (sex or "").strip().upper()[:1]
    return PRIORS[(family, "F" if s == "F" else "M")]


@dataclasses.dataclass(frozen=True, slots=True)
class PriorArrays:
    """Per-animal prior curve parameters (``b`` from the birth-weight anchor)."""

    mature_kg: FloatArray
    b: FloatArray
    k_per_day: FloatArray


def prior_arrays(breeds: Sequence[str | None], sexes: Sequence[str | None]) -> PriorArrays:
    if len(breeds) != len(sexes):
        raise ValueError(f"breeds ({len(breeds)}) and sexes ({len(sexes)}) differ in length")
    cache: dict[tuple[str | None, str | None], GrowthPrior] = {}
    rows = []
    for key in zip(breeds, sexes, strict=True):
        p = cache.get(key)
        if p is None:
            p = cache[key] = prior_for(*key)
        rows.append((p.mature_kg, p.b, p.k_per_day))
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return PriorArrays(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy())


# -- curve ----------------------------------------------------------------------------------------
def gompertz(t: npt.ArrayLike, mature_kg: npt.ArrayLike, b: npt.ArrayLike,
             k: npt.ArrayLike) -> FloatArray:
    """``A * exp(-b * exp(-k t))``, broadcast over its arguments."""
    t_a = np.asarray(t, dtype=np.float64)
    return np.asarray(np.asarray(mature_kg, dtype=np.float64)
                      * np.exp(-np.asarray(b, dtype=np.float64)
                               * np.exp(-np.asarray(k, dtype=np.float64) * t_a)),
                      dtype=np.float64)


def b_for(weight_kg: npt.ArrayLike, age_days: npt.ArrayLike, mature_kg: npt.ArrayLike,
          k: npt.ArrayLike) -> FloatArray:
    """The ``b`` that puts a curve with this ``A`` and ``k`` through (age, weight):
    ``b = -ln(W/A) * exp(k t)``. NaN where the weight is not in (0, A)."""
    w = np.asarray(weight_kg, dtype=np.float64)
    a = np.asarray(mature_kg, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -np.log(w / a) * np.exp(np.asarray(k, dtype=np.float64)
                                      * np.asarray(age_days, dtype=np.float64))
    return np.asarray(np.where((w > 0) & (w < a), out, np.nan), dtype=np.float64)


def impute_age_days(weight_kg: npt.ArrayLike, mature_kg: npt.ArrayLike, b: npt.ArrayLike,
                    k: npt.ArrayLike) -> FloatArray:
    """The age at which the curve reaches this weight (the inverse of :func:`gompertz`), for
    animals registered without a birth date. Clipped to >= 0; NaN at or above ``A``."""
    w = np.asarray(weight_kg, dtype=np.float64)
    a = np.asarray(mature_kg, dtype=np.float64)
    b_a = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -np.log(-np.log(w / a) / b_a) / np.asarray(k, dtype=np.float64)
    return np.asarray(np.where((w > 0) & (w < a), np.maximum(t, 0.0), np.nan),
                      dtype=np.float64)


# -- feed intake ----------------------------------------------------------------------------------
# US feedlot norms, 43,629 lots 2014-16: intake 2.02 % of body weight for steers, 2.08 % for
# heifers (domain.md 2.2, https://discovery.researcher.life/topic/daily-feed-consumption/
# 6078725?page=6). This is the default: the TMR-fed pens we monitor are feedlots.
DMI_FRACTION_FEEDLOT_STEER: Final = 0.0202
DMI_FRACTION_FEEDLOT_HEIFER: Final = 0.0208
# The Australian rule of thumb, 2.7-3.0 % of liveweight (domain.md 2.2,
# https://futurebeef.com.au/resources/feed-intake-and-liveweight-gain/), fits pasture and
# young or lean stock; with a feedlot TMR it would put weights ~30 % low.
DMI_FRACTION_RULE_OF_THUMB: Final = 0.0285


def weight_from_intake(dm_kg_per_head_day: npt.ArrayLike, *,
                       dmi_fraction: float = DMI_FRACTION_FEEDLOT_STEER) -> FloatArray:
    """Live weight implied by dry-matter intake per head per day: ``DMI / fraction``.
    Non-positive or NaN intake gives NaN (no information)."""
    if not 0.0 < dmi_fraction < 1.0:
        raise ValueError(f"dmi_fraction must be in (0, 1), got {dmi_fraction}")
    dm = np.asarray(dm_kg_per_head_day, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray(np.where(dm > 0, dm / dmi_fraction, np.nan), dtype=np.float64)


# -- the fit --------------------------------------------------------------------------------------
BAND_Z_90: Final = 1.6448536269514722  # standard normal 95th percentile: a 90 % central band
OUTLIER_FRACTION: Final = 0.25  # walk-over filter, domain.md 2.4
HERD_SHIFT_MIN_WEIGHINGS: Final = 20  # weighings a prior group needs to move its curve
# Between-animal spread of the prior in log space. No source gives it directly: mature
# weights of the populations in domain.md 2.1 differ by +-20 % and more; 0.15 (about +-15 %,
# one sd) for an animal of a known breed and 0.3 for b (the timing of its growth) are
# assumptions, wide enough that a handful of weighings overrides them.
PRIOR_SD_LOG_MATURE: Final = 0.15
PRIOR_SD_B: Final = 0.3
PRIOR_SD_LOG_K: Final = 0.25  # refinement only
SIGMA_DEFAULT: Final = 0.04  # scale noise in log space until the herd's residuals tell
SIGMA_FLOOR: Final = 0.005
SIGMA_ENTRY: Final = 0.03  # an entry weight is a deliberate chute weighing
SIGMA_INTAKE: Final = 0.2  # DMI % of body weight differs 2.0-3.0 % between sources (2.2)
MIN_RESIDUALS_FOR_SIGMA: Final = 20
MAX_INFLATION: Final = 25.0
# Weighings older than now by d days weigh exp(-d / MEMORY_DAYS) in the closed-form fit. A
# design choice, tuned on synthetic herds whose animals' k differs from the breed's by 10 %
# (tests/cloud/domain/test_growth.py): 120 d keeps the 90 % band's coverage near 90-95 % for
# histories of 20 to 300 days; without it, 300-day histories fall to ~80 %.
MEMORY_DAYS: Final = 120.0
# The refinement costs about 0.2-0.8 ms per animal with 30 weighings (bench/valuation.py,
# valuation.herd_refine, on a busy 2-core machine), so it takes the longest histories first
# and at most this many per fit_growth call ...
REFINE_MAX_ANIMALS: Final = 500
# ... in chunks of at most this many weighings per least_squares call. LSMR's vector norms go
# through BLAS; one call over 15,000 weighings took 1.7 s instead of 0.1 s when OpenBLAS
# threaded them on a busy 2-core machine. Vectors this short stay below OpenBLAS's threading
# threshold, and a chunk's shared trust region is held back by fewer animals.
REFINE_CHUNK_ROWS: Final = 6000
# Over a few weeks an animal's own k cannot be told from its b: on synthetic 60-day
# histories the refinement did not beat the closed form; on 250-day ones it did (MAE 0.63 %
# vs 0.69 %; 0.64 % vs 1.06 % for a herd maturing 25 % faster than its breed curve). So only
# histories of a season or longer are refined.
REFINE_MIN_SPAN_DAYS: Final = 90.0
_LOG_CLIP: Final = 8.0


@dataclasses.dataclass(frozen=True, slots=True)
class GrowthFit:
    """Per-animal results (length ``n_animals``) and per-weighing masks (length of the
    weighing arrays)."""

    weight_kg: FloatArray  # estimated live weight at age_days_now (posterior median)
    low_kg: FloatArray
    high_kg: FloatArray
    log_sd: FloatArray  # predictive sd of log weight now (after inflation)
    mature_kg: FloatArray  # the fitted curve (A, b, k) of each animal
    b: FloatArray
    k_per_day: FloatArray
    n_good: IntArray  # good weighings per animal
    n_rejected: IntArray  # weighings the filter dropped, per animal
    fitted: BoolArray  # >= 2 good weighings: the animal's own curve
    refined: BoolArray  # also fitted by scipy least_squares (own k)
    good: BoolArray  # per weighing: kept by the filter
    sigma_log: float  # herd's scale noise in log space


def _float_array(name: str, x: npt.ArrayLike, n: int | None = None, *,
                 allow_nan: bool = False) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} entries, expected {n}")
    bad = ~np.isfinite(a) if not allow_nan else np.isinf(a)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} non-finite entries "
                         f"(first at index {int(np.flatnonzero(bad)[0])})")
    return a


def _grouped_median(group: IntArray, values: FloatArray, n_groups: int) -> FloatArray:
    """Median of ``values`` per group, NaN for empty groups, with one sort: groups are
    separated by an offset larger than the (clipped) value range."""
    out = np.full(n_groups, np.nan)
    if values.size == 0:
        return out
    span = 4.0 * _LOG_CLIP
    key = group.astype(np.float64) * span + (np.clip(values, -_LOG_CLIP, _LOG_CLIP)
                                             + 2.0 * _LOG_CLIP)
    order = np.argsort(key, kind="stable")
    v = values[order]
    counts = np.bincount(group, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    out[has] = 0.5 * (v[lo] + v[hi])
    return out


def _solve_2x2(idx: IntArray, x: FloatArray, y: FloatArray, lam: FloatArray, n: int,
               mu_a: FloatArray, mu_b: FloatArray
               ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Posterior of ``(a, b)`` in ``y = a - b x`` per animal: returns a, b and the covariance
    entries s11, s12, s22."""
    pa = 1.0 / PRIOR_SD_LOG_MATURE**2
    pb = 1.0 / PRIOR_SD_B**2
    lx = lam * x
    p11 = pa + np.bincount(idx, weights=lam, minlength=n)
    p12 = -np.bincount(idx, weights=lx, minlength=n)
    p22 = pb + np.bincount(idx, weights=lx * x, minlength=n)
    r1 = pa * mu_a + np.bincount(idx, weights=lam * y, minlength=n)
    r2 = pb * mu_b - np.bincount(idx, weights=lx * y, minlength=n)
    det = p11 * p22 - p12 * p12
    s11, s12, s22 = p22 / det, -p12 / det, p11 / det
    return s11 * r1 + s12 * r2, s12 * r1 + s22 * r2, s11, s12, s22


@dataclasses.dataclass(frozen=True, slots=True)
class _Refined:
    ok: BoolArray
    a: FloatArray
    b: FloatArray
    k: FloatArray
    log_w_now: FloatArray
    var_now: FloatArray


def _runs(labels: IntArray) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of equal consecutive labels."""
    if labels.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(labels)) + 1
    bounds = np.concatenate([[0], cuts, [labels.size]])
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds.tolist())]


def _refine(p: IntArray, t: FloatArray, y: FloatArray, sigma: float, ma: FloatArray,
            mb: FloatArray, k0: FloatArray, a_init: FloatArray, b_init: FloatArray,
            tr: FloatArray) -> _Refined:
    """One ``least_squares`` call for all candidate animals, soft-L1 loss. Per animal the
    parameters are ``(c, b, log k)`` with ``c`` the log weight *now*: ``log W(t) = c - b *
    (exp(-k t) - exp(-k t_now))``. Parametrised by ``log A`` instead, ``A`` and ``b`` are
    almost collinear for grown animals and the sparse trust-region solver (LSMR) needs
    hundreds of inner iterations per step; with ``c`` it needs a few. Residuals: the good
    weighings in units of ``sigma``, and the prior on ``(log A, b, log k)`` in units of its
    sd. The Jacobian is block diagonal and given analytically as a sparse matrix. ``p`` is
    each weighing's animal as an index into the other arrays (one entry per animal)."""
    from scipy.optimize import least_squares
    from scipy.sparse import csr_matrix

    q = ma.size
    nd = p.size
    mk = np.log(k0)
    sd_a, sd_b, sd_k = PRIOR_SD_LOG_MATURE, PRIOR_SD_B, PRIOR_SD_LOG_K
    three = np.arange(3)
    # rows: data (3 entries: c, b, log k), then per animal the priors on log A (3 entries),
    # b (1) and log k (1)
    cols = np.concatenate([(3 * p[:, None] + three).ravel(),
                           np.column_stack([3 * np.arange(q)[:, None] + three,
                                            3 * np.arange(q) + 1,
                                            3 * np.arange(q) + 2]).ravel()])
    row_len = np.concatenate([np.full(nd, 3), np.tile([3, 1, 1], q)])
    indptr = np.concatenate([[0], np.cumsum(row_len)])

    def unpack(theta: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        c, b, k = theta[0::3], theta[1::3], np.exp(theta[2::3])
        return c, b, k, np.exp(-k * tr)

    def fun(theta: FloatArray) -> FloatArray:
        c, b, k, xr = unpack(theta)
        model = c[p] - b[p] * (np.exp(-k[p] * t) - xr[p])
        prior_r = np.column_stack([(c + b * xr - ma) / sd_a, (b - mb) / sd_b,
                                   (theta[2::3] - mk) / sd_k]).ravel()
        return np.concatenate([(y - model) / sigma, prior_r])

    def jac_parts(theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        _, b, k, xr = unpack(theta)
        x = np.exp(-k[p] * t)
        data = np.column_stack([np.full(nd, -1.0 / sigma), (x - xr[p]) / sigma,
                                -b[p] * k[p] * (t * x - tr[p] * xr[p]) / sigma])
        prior_a = np.column_stack([np.full(q, 1.0 / sd_a), xr / sd_a, -b * tr * k * xr / sd_a])
        return data, prior_a

    def jac(theta: FloatArray) -> csr_matrix:
        data, prior_a = jac_parts(theta)
        prior = np.column_stack([prior_a, np.full(q, 1.0 / sd_b), np.full(q, 1.0 / sd_k)])
        return csr_matrix((np.concatenate([data.ravel(), prior.ravel()]), cols, indptr),
                          shape=(nd + 3 * q, 3 * q))

    c0 = a_init - b_init * np.exp(-k0 * tr)
    theta0 = np.column_stack([c0, b_init, mk]).ravel()
    sol = least_squares(fun, theta0, jac=jac, method="trf", loss="soft_l1", f_scale=1.0,
                        tr_solver="lsmr", x_scale="jac", max_nfev=50)
    theta = np.asarray(sol.x, dtype=np.float64)
    c, b, k, xr = unpack(theta)
    # Gauss-Newton covariance per animal, data rows with their soft-L1 weights at the
    # solution; c is the log weight now, so its variance is the answer's
    r = fun(theta)[:nd]
    wgt = 1.0 / np.sqrt(1.0 + r * r)
    jd, ja = jac_parts(theta)
    h = np.einsum("qi,qj->qij", ja, ja)
    for u in range(3):
        for v in range(u, 3):
            acc = np.bincount(p, weights=wgt * jd[:, u] * jd[:, v], minlength=q)
            h[:, u, v] += acc
            if v != u:
                h[:, v, u] += acc
    h[:, 1, 1] += 1.0 / sd_b**2
    h[:, 2, 2] += 1.0 / sd_k**2
    var = np.linalg.inv(h)[:, 0, 0]
    a = c + b * xr
    ok = np.isfinite(c) & np.isfinite(var) & (var >= 0) & (b > 0) & np.isfinite(a)
    return _Refined(ok=ok, a=a, b=b, k=k, log_w_now=c, var_now=var)


def fit_growth(n_animals: int, animal_idx: npt.ArrayLike, age_days: npt.ArrayLike,
               weight_kg: npt.ArrayLike, age_days_now: npt.ArrayLike, prior: PriorArrays, *,
               entry_weight_kg: npt.ArrayLike | None = None,
               entry_age_days: npt.ArrayLike | None = None,
               intake_weight_kg: npt.ArrayLike | None = None,
               band_z: float = BAND_Z_90, memory_days: float = MEMORY_DAYS,
               refine: bool = True, refine_min_weighings: int = 8,
               refine_min_span_days: float = REFINE_MIN_SPAN_DAYS,
               refine_max_animals: int = REFINE_MAX_ANIMALS) -> GrowthFit:
    """Estimate every animal's weight at ``age_days_now`` (see the module docstring).

    ``animal_idx``/``age_days``/``weight_kg`` are the weighings of all animals, flat, in any
    order; 0 and negative weights are outliers, not errors. ``entry_weight_kg`` and
    ``entry_age_days`` (per animal, NaN unknown; an entry weight without its age is not
    used) and ``intake_weight_kg`` (per animal, NaN unknown: see
    :func:`weight_from_intake`; used only for animals with fewer than two good weighings)
    move the prior. Raises ``ValueError`` on mismatched lengths, NaN or infinite values, an
    ``animal_idx`` out of range, or a non-positive prior."""
    n = int(n_animals)
    if n < 0:
        raise ValueError(f"n_animals must be >= 0, got {n_animals}")
    if not band_z > 0:
        raise ValueError(f"band_z must be > 0, got {band_z}")
    if not memory_days > 0:
        raise ValueError(f"memory_days must be > 0, got {memory_days}")
    idx_raw = np.asarray(animal_idx)
    if idx_raw.ndim != 1:
        raise ValueError(f"animal_idx must be a 1-d array, got shape {idx_raw.shape}")
    if idx_raw.size and not np.issubdtype(idx_raw.dtype, np.integer):
        raise ValueError(f"animal_idx must hold integers, got {idx_raw.dtype}")
    idx = idx_raw.astype(np.int64, copy=False)
    m = idx.shape[0]
    t = _float_array("age_days", age_days, m)
    w = _float_array("weight_kg", weight_kg, m)
    if m and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"animal_idx out of range [0, {n})")
    t_now = _float_array("age_days_now", age_days_now, n)
    big_a = _float_array("prior.mature_kg", prior.mature_kg, n)
    b0 = _float_array("prior.b", prior.b, n)
    k0 = _float_array("prior.k_per_day", prior.k_per_day, n)
    if n and (big_a.min() <= 0 or b0.min() <= 0 or k0.min() <= 0):
        raise ValueError("prior mature_kg, b and k_per_day must be > 0")
    if (t < 0).any() or (t_now < 0).any():
        raise ValueError("ages must be >= 0 days")
    mu_a = np.log(big_a)

    # 1. outlier filter: log ratio to the breed curve, robust level per animal
    pos = w > 0
    pidx = idx[pos]
    with np.errstate(divide="ignore"):
        s = np.log(w[pos]) - (mu_a[pidx] - b0[pidx] * np.exp(-k0[pidx] * t[pos]))
    n_pos = np.bincount(pidx, minlength=n)
    few = np.flatnonzero((n_pos > 0) & (n_pos <= 2))  # the breed curve votes too
    level = _grouped_median(np.concatenate([pidx, few]), np.concatenate([s, np.zeros(few.size)]),
                            n)
    keep_pos = np.abs(np.expm1(s - level[pidx])) <= OUTLIER_FRACTION
    good = np.zeros(m, dtype=bool)
    good[np.flatnonzero(pos)[keep_pos]] = True
    n_good = np.bincount(idx[good], minlength=n).astype(np.int64)
    n_rejected = (np.bincount(idx, minlength=n) - n_good).astype(np.int64)
    fitted = n_good >= 2

    # 1b. herd level: a literature curve describes a population, and this herd may sit above
    # or below it (breed line, feeding, age at entry). Each prior group (same A, b, k) moves
    # by the median log ratio of its good weighings to the curve, so animals not weighed yet
    # are not all wrong in the same direction (their errors would add up in the herd value).
    good_s = s[keep_pos]
    if good_s.size >= HERD_SHIFT_MIN_WEIGHINGS:
        group_key = np.stack([big_a, b0, k0], axis=1)
        _, group = np.unique(group_key, axis=0, return_inverse=True)
        group = group.reshape(-1)
        w_group = group[pidx[keep_pos]]
        for g in np.unique(w_group):
            vals = good_s[w_group == g]
            if vals.size >= HERD_SHIFT_MIN_WEIGHINGS:
                mu_a = np.where(group == g, mu_a + float(np.median(vals)), mu_a)

    # 2. rows for the linear fit: good weighings (+ entry, + intake pseudo-weighings)
    gi, gt, gy = idx[good], t[good], np.log(w[good])
    n_scale = gi.size
    rows_i, rows_t, rows_y, rows_sd = [gi], [gt], [gy], [np.full(n_scale, np.nan)]
    if entry_weight_kg is not None:
        ew = _float_array("entry_weight_kg", entry_weight_kg, n, allow_nan=True)
        ea = (_float_array("entry_age_days", entry_age_days, n, allow_nan=True)
              if entry_age_days is not None else np.full(n, np.nan))
        use = np.flatnonzero(np.isfinite(ew) & (ew > 0) & np.isfinite(ea) & (ea >= 0))
        rows_i.append(use)
        rows_t.append(ea[use])
        rows_y.append(np.log(ew[use]))
        rows_sd.append(np.full(use.size, SIGMA_ENTRY))
    if intake_weight_kg is not None:
        iw = _float_array("intake_weight_kg", intake_weight_kg, n, allow_nan=True)
        use = np.flatnonzero(np.isfinite(iw) & (iw > 0) & ~fitted)
        rows_i.append(use)
        rows_t.append(t_now[use])
        rows_y.append(np.log(iw[use]))
        rows_sd.append(np.full(use.size, SIGMA_INTAKE))
    ri = np.concatenate(rows_i).astype(np.int64, copy=False)
    rt = np.concatenate(rows_t)
    ry = np.concatenate(rows_y)
    rsd = np.concatenate(rows_sd)
    is_scale = np.zeros(ri.size, dtype=bool)
    is_scale[:n_scale] = True
    rx = np.exp(-k0[ri] * rt)

    # IRLS: pass 0 with the default sigma; then sigma from the residuals; then two soft-L1
    # reweighted passes
    sigma = SIGMA_DEFAULT
    # older weighings count less: a literature curve describes one animal well over months,
    # not over its life, and it is the weight now that is asked for
    decay = np.exp(-np.maximum(t_now[ri] - rt, 0.0) / memory_days)
    sigma_rows_mask = is_scale & (n_good[ri] >= 3)
    sd = np.where(is_scale, sigma, rsd)
    base = decay / (sd * sd)
    lam = base
    for it in range(3):
        a_hat, b_hat, s11, s12, s22 = _solve_2x2(ri, rx, ry, lam, n, mu_a, b0)
        resid = ry - (a_hat[ri] - b_hat[ri] * rx)
        if it != 1:  # leverage: for sigma (first pass) and the fit quality (last pass)
            lev = lam * (s11[ri] - 2.0 * rx * s12[ri] + rx * rx * s22[ri])
            std_resid = resid / np.sqrt(np.clip(1.0 - lev, 0.05, None))
        if it == 0:
            if int(sigma_rows_mask.sum()) >= MIN_RESIDUALS_FOR_SIGMA:
                sigma = max(SIGMA_FLOOR,
                            1.4826 * float(np.median(np.abs(std_resid[sigma_rows_mask]))))
            sd[is_scale] = sigma
            base = decay / (sd * sd)
        lam = base / np.sqrt(1.0 + (resid / sd) ** 2)  # soft-L1 weights

    # fit quality: animals whose residuals are worse than the herd's get a wider band (old
    # weighings count as little here as in the fit)
    si, sdec = ri[is_scale], decay[is_scale]
    chi = np.bincount(si, weights=sdec * (std_resid[is_scale] / sigma) ** 2, minlength=n)
    dec_sum = np.bincount(si, weights=sdec, minlength=n)
    inflation = np.ones(n)
    many = (n_good >= 3) & (dec_sum > 0)
    inflation[many] = np.clip(chi[many] / dec_sum[many], 1.0, MAX_INFLATION)

    x_now = np.exp(-k0 * t_now)
    log_w = a_hat - b_hat * x_now
    var = (s11 - 2.0 * x_now * s12 + x_now * x_now * s22) * inflation
    a_out, b_out, k_out = a_hat.copy(), b_hat.copy(), k0.copy()

    # 3. refinement of long histories with scipy least_squares
    refined = np.zeros(n, dtype=bool)
    if refine and n_scale:
        first = np.full(n, np.inf)
        last = np.full(n, -np.inf)
        np.minimum.at(first, gi, gt)
        np.maximum.at(last, gi, gt)
        span = last - first
        cand = np.flatnonzero((n_good >= refine_min_weighings) & (span >= refine_min_span_days))
        if cand.size > refine_max_animals:
            longest = np.argsort(-span[cand], kind="stable")[:max(refine_max_animals, 0)]
            cand = np.sort(cand[longest])
        # the candidates' weighings grouped by candidate, cut into chunks of at most
        # REFINE_CHUNK_ROWS weighings, one least_squares call each
        pos = np.full(n, -1, dtype=np.int64)
        pos[cand] = np.arange(cand.size)
        rows = np.flatnonzero(pos[gi] >= 0)
        rows = rows[np.argsort(pos[gi[rows]], kind="stable")]
        row_end = np.cumsum(n_good[cand])
        chunk_of = row_end // REFINE_CHUNK_ROWS
        for lo, hi in _runs(chunk_of):
            ch = cand[lo:hi]
            r_lo = int(row_end[lo - 1]) if lo else 0
            sel = rows[r_lo:int(row_end[hi - 1])]
            res = _refine(pos[gi[sel]] - lo, gt[sel], gy[sel], sigma, mu_a[ch], b0[ch], k0[ch],
                          a_hat[ch], b_hat[ch], t_now[ch])
            ok = res.ok
            c = ch[ok]
            a_out[c], b_out[c], k_out[c] = res.a[ok], res.b[ok], res.k[ok]
            # keep the wider of the two variances: the refined fit trades bias for variance
            log_w[c] = res.log_w_now[ok]
            var[c] = np.maximum(var[c], res.var_now[ok] * inflation[c])
            refined[c] = True

    sd_now = np.sqrt(np.maximum(var, 0.0))
    return GrowthFit(
        weight_kg=np.exp(log_w), low_kg=np.exp(log_w - band_z * sd_now),
        high_kg=np.exp(log_w + band_z * sd_now), log_sd=sd_now, mature_kg=np.exp(a_out),
        b=b_out, k_per_day=k_out, n_good=n_good, n_rejected=n_rejected, fitted=fitted,
        refined=refined, good=good, sigma_log=float(sigma))
