"""What the collateral is worth now, and how that compares with what is owed.

Pure functions over numpy arrays (functional core, STYLE.md habit 8): the engine loads the
herd, the weighings, the ledger and the prices, calls these, and stores the result. No
database, no clock.

Livestock (:func:`value_herd`)
    Per animal: estimated live weight now (:func:`cloud.domain.growth.fit_growth`) x price
    per kg x health factor, summed over the animals present. The band adds the per-animal
    bands in two ways: animals with their own fitted curve have errors that are independent
    of each other (their own scale readings), so their half-widths add in quadrature; animals
    valued from the breed prior share that prior's error (if the curve is 10 % high for one
    it is 10 % high for all), so their half-widths add linearly. The two parts add linearly.

Inventory (:func:`ledger_kg`, :func:`check_mixed_load`, :func:`value_inventory`)
    The weighbridge ledger: opening stock-take + net in - net out (domain.md 2.6, the
    initial joint stock-take fixes the starting quantity); value = kg x price x (1 - haircut)
    with a relative band for weighbridge and stock-take error.

Coverage (:func:`coverage`, :func:`coverage_many`)
    coverage = value / outstanding, ltv = outstanding / value. Status by ltv: above the LTV
    line ``warning``, above the margin-call line ``margin_call``, above the liquidation line
    ``liquidation`` (lines as on :class:`cloud.domain.model.LoanInfo`). Nothing owed is
    ``ok`` whatever the value; something owed against no value is ``liquidation``.

Bad input (negative or NaN prices, mismatched lengths, NaN weights) raises ``ValueError``
with a message that names the argument.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from cloud.domain.growth import (
    BAND_Z_90,
    DMI_FRACTION_FEEDLOT_STEER,
    GrowthFit,
    PriorArrays,
    fit_growth,
    weight_from_intake,
)

__all__ = [
    "STATUSES", "Coverage", "CoverageMany", "HerdInput", "HerdValue", "InventoryValue",
    "MixedLoadCheck", "check_mixed_load", "coverage", "coverage_many", "ledger_kg",
    "ledger_kg_by_lot", "split_herd_value", "value_herd", "value_inventory",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Status = Literal["ok", "warning", "margin_call", "liquidation"]
STATUSES: Final[tuple[Status, ...]] = ("ok", "warning", "margin_call", "liquidation")

# Weighbridge and stock-take error of a ledger, relative. domain.md gives no figure; half a
# percent sits inside the +-1 % the scorer allows for stock value and is a design choice.
INVENTORY_REL_UNCERTAINTY: Final = 0.005


def _check_finite(name: str, a: FloatArray) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} NaN or infinite entries "
                         f"(first at index {int(np.flatnonzero(bad)[0])})")


def _vector(name: str, x: npt.ArrayLike, n: int, *, allow_nan: bool = False) -> FloatArray:
    """A float array of length ``n``; a scalar is broadcast."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        if not (allow_nan or math.isfinite(float(a))) or math.isinf(float(a)):
            raise ValueError(f"{name} must be finite, got {float(a)}")
        a = np.full(n, float(a))
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be a scalar or have {n} entries, got shape {a.shape}")
    if allow_nan:
        if np.isinf(a).any():
            raise ValueError(f"{name} has infinite entries")
    else:
        _check_finite(name, a)
    return a


def _price(name: str, x: npt.ArrayLike, n: int) -> FloatArray:
    a = _vector(name, x, n)
    if (a < 0).any():
        raise ValueError(f"{name} must be >= 0, got {float(a.min())}")
    return a


# -- livestock ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class HerdInput:
    """One herd (a site, or a loan's animals) as flat arrays, one entry per pledged animal
    (length ``n``), and its weighings flat (``weigh_*``, one entry per weighing).

    ``age_days_now`` must be known for every animal: for animals registered without a birth
    date the caller imputes it (:func:`cloud.domain.growth.impute_age_days` from the entry
    weight). Optional per-animal arrays use NaN for unknown."""

    epc: Sequence[str]
    present: npt.ArrayLike  # bool: seen in the presence window (only these are valued)
    age_days_now: npt.ArrayLike
    prior: PriorArrays  # see cloud.domain.growth.prior_arrays(breeds, sexes)
    weigh_animal_idx: npt.ArrayLike  # int index into the animal arrays
    weigh_age_days: npt.ArrayLike
    weigh_kg: npt.ArrayLike  # as the scale showed it: 0, half and double included
    health_factor: npt.ArrayLike | float = 1.0  # 0..1, e.g. RuleParams.health_factor_sick
    entry_weight_kg: npt.ArrayLike | None = None
    entry_age_days: npt.ArrayLike | None = None
    intake_dm_kg_per_head_day: npt.ArrayLike | None = None  # pen DM intake per head
    dmi_fraction: float = DMI_FRACTION_FEEDLOT_STEER

    def __len__(self) -> int:
        return len(self.epc)


@dataclasses.dataclass(frozen=True, slots=True)
class HerdValue:
    """``value``/``low``/``high`` are sums over present animals (90 % band by default).
    Per-animal arrays cover every animal, present or not; ``per_animal_value`` is 0 for the
    absent ones."""

    value: float
    low: float
    high: float
    est_weight_kg: FloatArray
    low_kg: FloatArray
    high_kg: FloatArray
    per_animal_value: FloatArray
    per_animal_low: FloatArray
    per_animal_high: FloatArray
    n_present: int
    n_fitted: int  # present animals with their own fitted curve (>= 2 good weighings)
    n_prior: int  # present animals valued from the breed prior (+ entry weight / intake)
    present_kg: float
    growth: GrowthFit


def _band_sum(value: FloatArray, low: FloatArray, high: FloatArray, independent: BoolArray
              ) -> tuple[float, float, float]:
    """Sum of per-item values with a band: independent items' half-widths in quadrature,
    the others' linearly (see the module docstring)."""
    total = float(value.sum())
    lo_h = value - low
    hi_h = high - value
    ind = independent
    lo = math.sqrt(float(np.square(lo_h[ind]).sum())) + float(lo_h[~ind].sum())
    hi = math.sqrt(float(np.square(hi_h[ind]).sum())) + float(hi_h[~ind].sum())
    return total, max(total - lo, 0.0), total + hi


def value_herd(h: HerdInput, price_per_kg: npt.ArrayLike, *, band_z: float = BAND_Z_90,
               refine: bool = True) -> HerdValue:
    """Value the present animals of a herd at ``price_per_kg`` (a scalar, or one price per
    animal for herds with classes priced differently)."""
    n = len(h.epc)
    present = np.asarray(h.present)
    if present.shape != (n,):
        raise ValueError(f"present must have {n} entries, got shape {present.shape}")
    if present.dtype != np.bool_:
        raise ValueError(f"present must be bool, got {present.dtype}")
    price = _price("price_per_kg", price_per_kg, n)
    health = _vector("health_factor", h.health_factor, n)
    if ((health < 0) | (health > 1)).any():
        raise ValueError("health_factor must be within [0, 1]")
    intake_w = None
    if h.intake_dm_kg_per_head_day is not None:
        dm = _vector("intake_dm_kg_per_head_day", h.intake_dm_kg_per_head_day, n,
                     allow_nan=True)
        intake_w = weight_from_intake(dm, dmi_fraction=h.dmi_fraction)
    entry_w = (None if h.entry_weight_kg is None
               else _vector("entry_weight_kg", h.entry_weight_kg, n, allow_nan=True))
    entry_a = (None if h.entry_age_days is None
               else _vector("entry_age_days", h.entry_age_days, n, allow_nan=True))
    fit = fit_growth(n, h.weigh_animal_idx, h.weigh_age_days, h.weigh_kg, h.age_days_now,
                     h.prior, entry_weight_kg=entry_w, entry_age_days=entry_a,
                     intake_weight_kg=intake_w, band_z=band_z, refine=refine)
    per_kg = np.where(present, price * health, 0.0)
    v = fit.weight_kg * per_kg
    v_lo = fit.low_kg * per_kg
    v_hi = fit.high_kg * per_kg
    value, low, high = _band_sum(v[present], v_lo[present], v_hi[present], fit.fitted[present])
    n_fitted = int((fit.fitted & present).sum())
    n_present = int(present.sum())
    return HerdValue(
        value=value, low=low, high=high, est_weight_kg=fit.weight_kg, low_kg=fit.low_kg,
        high_kg=fit.high_kg, per_animal_value=v, per_animal_low=v_lo, per_animal_high=v_hi,
        n_present=n_present, n_fitted=n_fitted, n_prior=n_present - n_fitted,
        present_kg=float(fit.weight_kg[present].sum()), growth=fit)


def split_herd_value(hv: HerdValue, group_idx: npt.ArrayLike, n_groups: int
                     ) -> list[tuple[float, float, float]]:
    """``(value, low, high)`` per group (e.g. per loan when one site's herd is pledged under
    several loans): fit once per site, so the herd's noise estimate pools all its animals,
    then split. ``group_idx`` has one int per animal in ``[0, n_groups)``."""
    g = np.asarray(group_idx)
    n = hv.est_weight_kg.shape[0]
    if g.shape != (n,) or (n and not np.issubdtype(g.dtype, np.integer)):
        raise ValueError(f"group_idx must be {n} integers")
    if n and (g.min() < 0 or g.max() >= n_groups):
        raise ValueError(f"group_idx out of range [0, {n_groups})")
    ind = hv.growth.fitted
    out = []
    for j in range(n_groups):
        sel = g == j
        out.append(_band_sum(hv.per_animal_value[sel], hv.per_animal_low[sel],
                             hv.per_animal_high[sel], ind[sel]))
    return out


# -- inventory ------------------------------------------------------------------------------------
_DIRECTION_SIGN: Final = {"in": 1.0, "inbound": 1.0, "out": -1.0, "outbound": -1.0}


def _signs(directions: Sequence[str] | npt.ArrayLike, m: int) -> FloatArray:
    if isinstance(directions, np.ndarray) and np.issubdtype(directions.dtype, np.number):
        s = directions.astype(np.float64)
        if s.shape != (m,) or not np.isin(s, (-1.0, 1.0)).all():
            raise ValueError("numeric directions must be +1 (in) or -1 (out), one per ticket")
        return s
    dirs = list(directions)  # type: ignore[arg-type]
    if len(dirs) != m:
        raise ValueError(f"directions has {len(dirs)} entries, net_kg has {m}")
    try:
        return np.fromiter((_DIRECTION_SIGN[str(d)] for d in dirs), dtype=np.float64, count=m)
    except KeyError as exc:
        raise ValueError(f"unknown direction {exc.args[0]!r}; expected one of "
                         f"{sorted(_DIRECTION_SIGN)}") from exc


def _nets(net_kg: npt.ArrayLike) -> FloatArray:
    net = np.asarray(net_kg, dtype=np.float64)
    if net.ndim != 1:
        raise ValueError(f"net_kg must be 1-d, got shape {net.shape}")
    _check_finite("net_kg", net)
    if (net < 0).any():
        raise ValueError("net_kg must be >= 0 (the direction gives the sign)")
    return net


def ledger_kg(opening_kg: float, directions: Sequence[str] | npt.ArrayLike,
              net_kg: npt.ArrayLike) -> float:
    """Opening stock-take + net in - net out. ``directions`` per ticket: ``"in"``/
    ``"inbound"`` or ``"out"``/``"outbound"`` (or +1/-1); ``net_kg`` >= 0 per ticket. The
    result may be negative: more went out than the ledger held, which is evidence for a
    ``weight_discrepancy`` rule, not an input error."""
    if not math.isfinite(opening_kg) or opening_kg < 0:
        raise ValueError(f"opening_kg must be finite and >= 0, got {opening_kg}")
    net = _nets(net_kg)
    return float(opening_kg + float(np.dot(_signs(directions, net.shape[0]), net)))


def ledger_kg_by_lot(opening_kg: npt.ArrayLike, lot_idx: npt.ArrayLike,
                     directions: Sequence[str] | npt.ArrayLike, net_kg: npt.ArrayLike
                     ) -> FloatArray:
    """:func:`ledger_kg` for many lots at once: ``opening_kg`` per lot, ``lot_idx`` (int
    into it) per ticket."""
    opening = np.asarray(opening_kg, dtype=np.float64)
    if opening.ndim != 1:
        raise ValueError("opening_kg must be 1-d (one per lot)")
    _check_finite("opening_kg", opening)
    if (opening < 0).any():
        raise ValueError("opening_kg must be >= 0")
    net = _nets(net_kg)
    lots = np.asarray(lot_idx)
    if lots.shape != net.shape or (lots.size and not np.issubdtype(lots.dtype, np.integer)):
        raise ValueError("lot_idx must hold one integer per ticket")
    if lots.size and (lots.min() < 0 or lots.max() >= opening.shape[0]):
        raise ValueError(f"lot_idx out of range [0, {opening.shape[0]})")
    signed = _signs(directions, net.shape[0]) * net
    return np.asarray(opening + np.bincount(lots.astype(np.int64), weights=signed,
                                            minlength=opening.shape[0]), dtype=np.float64)


@dataclasses.dataclass(frozen=True, slots=True)
class MixedLoadCheck:
    ok: bool
    diff_kg: float  # sum of the lots' nets - the truck's net (positive: lots claim more)


def check_mixed_load(truck_net_kg: float, lot_nets_kg: npt.ArrayLike, tol_kg: float
                     ) -> MixedLoadCheck:
    """A mixed load's check weight: the lots' warehouse net weights must add up to the
    truck's net weight within ``tol_kg`` (domain.md 2.6, weighbridge tickets)."""
    if not math.isfinite(truck_net_kg) or truck_net_kg < 0:
        raise ValueError(f"truck_net_kg must be finite and >= 0, got {truck_net_kg}")
    if not math.isfinite(tol_kg) or tol_kg < 0:
        raise ValueError(f"tol_kg must be finite and >= 0, got {tol_kg}")
    lots = _nets(lot_nets_kg)
    diff = float(lots.sum()) - float(truck_net_kg)
    return MixedLoadCheck(ok=abs(diff) <= tol_kg, diff_kg=diff)


@dataclasses.dataclass(frozen=True, slots=True)
class InventoryValue:
    value: float
    low: float
    high: float


def value_inventory(stock_kg: npt.ArrayLike, price_per_kg: npt.ArrayLike,
                    haircut: npt.ArrayLike, *,
                    rel_uncertainty: float = INVENTORY_REL_UNCERTAINTY) -> InventoryValue:
    """kg x price x (1 - haircut), summed (scalars or one entry per lot; a scalar price or
    haircut applies to every lot). Negative stock (a ledger gone below zero) is worth
    nothing, not a negative amount; the band is ``+- rel_uncertainty`` of the value (all
    lots share the weighbridge, so their errors add linearly)."""
    stock = np.atleast_1d(np.asarray(stock_kg, dtype=np.float64))
    if stock.ndim != 1:
        raise ValueError(f"stock_kg must be a scalar or 1-d, got shape {stock.shape}")
    _check_finite("stock_kg", stock)
    n = stock.shape[0]
    price = _price("price_per_kg", price_per_kg, n)
    cut = _vector("haircut", haircut, n)
    if ((cut < 0) | (cut > 1)).any():
        raise ValueError("haircut must be within [0, 1]")
    if not (math.isfinite(rel_uncertainty) and 0 <= rel_uncertainty < 1):
        raise ValueError(f"rel_uncertainty must be in [0, 1), got {rel_uncertainty}")
    value = float((np.maximum(stock, 0.0) * price * (1.0 - cut)).sum())
    return InventoryValue(value=value, low=value * (1.0 - rel_uncertainty),
                          high=value * (1.0 + rel_uncertainty))


# -- coverage -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Coverage:
    coverage: float  # value / outstanding (inf when nothing is owed)
    ltv: float  # outstanding / value (inf when something is owed against no value)
    status: Status
    ltv_low: float  # ltv at the band's low value: how bad it may be
    ltv_high: float  # ltv at the band's high value


def _check_lines(ltv_line: npt.ArrayLike, margin_call_line: npt.ArrayLike,
                 liquidation_line: npt.ArrayLike, n: int
                 ) -> tuple[FloatArray, FloatArray, FloatArray]:
    a = _vector("ltv_line", ltv_line, n)
    b = _vector("margin_call_line", margin_call_line, n)
    c = _vector("liquidation_line", liquidation_line, n)
    if (a <= 0).any() or (a > b).any() or (b > c).any():
        raise ValueError("lines must satisfy 0 < ltv_line <= margin_call_line <= "
                         "liquidation_line")
    return a, b, c


def _ltv(outstanding: FloatArray, value: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.where(outstanding == 0, 0.0, outstanding / value)
    return np.asarray(np.where((outstanding > 0) & (value == 0), np.inf, out), np.float64)


def _status_codes(ltv: FloatArray, a: FloatArray, b: FloatArray, c: FloatArray) -> IntArray:
    return ((ltv > a).astype(np.int64) + (ltv > b).astype(np.int64)
            + (ltv > c).astype(np.int64))


def coverage(value: float, low: float, high: float, outstanding: float, ltv_line: float,
             margin_call_line: float, liquidation_line: float) -> Coverage:
    """Coverage and status of one loan (see the module docstring). ``low <= value <= high``
    is the collateral band."""
    for name, x in (("value", value), ("low", low), ("high", high),
                    ("outstanding", outstanding)):
        if not math.isfinite(x) or x < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {x}")
    if not low <= value <= high:
        raise ValueError(f"need low <= value <= high, got {low}, {value}, {high}")
    a, b, c = _check_lines(ltv_line, margin_call_line, liquidation_line, 1)
    vals = np.array([value, low, high])
    ltv = _ltv(np.full(3, float(outstanding)), vals)
    code = int(_status_codes(ltv[:1], a, b, c)[0])
    cov = math.inf if outstanding == 0 else value / outstanding
    return Coverage(coverage=cov, ltv=float(ltv[0]), status=STATUSES[code],
                    ltv_low=float(ltv[1]), ltv_high=float(ltv[2]))


@dataclasses.dataclass(frozen=True, slots=True)
class CoverageMany:
    coverage: FloatArray
    ltv: FloatArray
    status_code: IntArray  # index into STATUSES

    def statuses(self) -> list[Status]:
        return [STATUSES[int(c)] for c in self.status_code]


def coverage_many(value: npt.ArrayLike, outstanding: npt.ArrayLike, ltv_line: npt.ArrayLike,
                  margin_call_line: npt.ArrayLike, liquidation_line: npt.ArrayLike
                  ) -> CoverageMany:
    """:func:`coverage` for many loans at once (lines may be scalars)."""
    v = np.asarray(value, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"value must be 1-d, got shape {v.shape}")
    n = v.shape[0]
    v = _vector("value", v, n)
    o = _vector("outstanding", outstanding, n)
    if (v < 0).any() or (o < 0).any():
        raise ValueError("value and outstanding must be >= 0")
    a, b, c = _check_lines(ltv_line, margin_call_line, liquidation_line, n)
    ltv = _ltv(o, v)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cov = np.where(o == 0, np.inf, v / o)
    return CoverageMany(coverage=np.asarray(cov, np.float64), ltv=ltv,
                        status_code=_status_codes(ltv, a, b, c))
