"""Herd, inventory and coverage valuation (cloud.domain.valuation): hand-computed cases,
properties, and errors on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.domain.growth import PriorArrays, gompertz
from cloud.domain.valuation import (
    STATUSES,
    HerdInput,
    check_mixed_load,
    coverage,
    coverage_many,
    ledger_kg,
    ledger_kg_by_lot,
    split_herd_value,
    value_herd,
    value_inventory,
)

A, K = 750.0, 0.00341
B = math.log(A / 36.0)


def _prior(n: int) -> PriorArrays:
    return PriorArrays(np.full(n, A), np.full(n, B), np.full(n, K))


def _exact_herd(n: int, *, present: list[bool] | None = None,
                health: list[float] | float = 1.0, per: int = 4) -> HerdInput:
    """Animals on exactly the prior curve, weighed ``per`` times: the fit must return the
    curve itself, so values can be computed by hand."""
    idx = np.repeat(np.arange(n), per)
    age_now = 300.0 + 10.0 * np.arange(n)
    t = age_now[idx] - np.tile(np.arange(per, dtype=np.float64) * 3.0, n)
    return HerdInput(epc=[f"E{i:03d}" for i in range(n)],
                     present=np.array(present if present is not None else [True] * n),
                     age_days_now=age_now, prior=_prior(n), weigh_animal_idx=idx,
                     weigh_age_days=t, weigh_kg=gompertz(t, A, B, K), health_factor=health)


# -- livestock ------------------------------------------------------------------------------------
def test_value_herd_by_hand() -> None:
    h = _exact_herd(3, present=[True, True, False], health=[1.0, 0.8, 1.0])
    hv = value_herd(h, 2.5)
    w = gompertz(np.array([300.0, 310.0, 320.0]), A, B, K)
    np.testing.assert_allclose(hv.est_weight_kg, w, rtol=1e-9)
    assert hv.value == pytest.approx(w[0] * 2.5 + w[1] * 2.5 * 0.8, rel=1e-9)
    np.testing.assert_allclose(hv.per_animal_value, [w[0] * 2.5, w[1] * 2.0, 0.0], rtol=1e-9)
    assert hv.present_kg == pytest.approx(w[0] + w[1])
    assert (hv.n_present, hv.n_fitted, hv.n_prior) == (2, 2, 0)
    assert hv.low < hv.value < hv.high
    # fitted animals' bands add in quadrature
    lo = hv.per_animal_value[:2] - hv.per_animal_low[:2]
    assert hv.value - hv.low == pytest.approx(math.sqrt(float((lo**2).sum())))


def test_prior_animals_add_their_bands_linearly_and_widen_the_herd_band() -> None:
    h = _exact_herd(2)
    n = 4  # two more animals with no weighings
    h2 = HerdInput(epc=[*h.epc, "E100", "E101"], present=np.ones(n, dtype=bool),
                   age_days_now=np.array([300.0, 310.0, 400.0, 400.0]), prior=_prior(n),
                   weigh_animal_idx=h.weigh_animal_idx, weigh_age_days=h.weigh_age_days,
                   weigh_kg=h.weigh_kg)
    fitted_only = value_herd(h, 3.0)
    hv = value_herd(h2, 3.0)
    assert (hv.n_fitted, hv.n_prior) == (2, 2)
    prior_lo = hv.per_animal_value[2:] - hv.per_animal_low[2:]
    fit_lo = hv.per_animal_value[:2] - hv.per_animal_low[:2]
    assert hv.value - hv.low == pytest.approx(
        math.sqrt(float((fit_lo**2).sum())) + float(prior_lo.sum()))
    rel_width = (hv.high - hv.low) / hv.value
    assert rel_width > 5 * (fitted_only.high - fitted_only.low) / fitted_only.value


def test_value_herd_uses_intake_and_entry_for_unweighed_animals() -> None:
    n = 2
    h = HerdInput(epc=["A", "B"], present=np.ones(n, dtype=bool),
                  age_days_now=np.full(n, 400.0), prior=_prior(n),
                  weigh_animal_idx=np.array([], dtype=np.int64),
                  weigh_age_days=np.array([]), weigh_kg=np.array([]),
                  intake_dm_kg_per_head_day=np.array([np.nan, 12.0]),
                  entry_weight_kg=np.array([240.0, np.nan]),
                  entry_age_days=np.array([350.0, np.nan]))
    hv = value_herd(h, 1.0)
    prior_w = gompertz(400.0, A, B, K)
    # entry 240 kg at 350 d is 20 % below the curve there: the estimate follows it
    ratio = 240.0 / gompertz(350.0, A, B, K)
    assert ratio == pytest.approx(0.8, abs=0.005)
    assert hv.est_weight_kg[0] / prior_w == pytest.approx(ratio, abs=0.03)
    # 12 kg DM / 2.02 % = 594 kg, above the curve's ~345: pulled up part of the way
    assert prior_w < hv.est_weight_kg[1] < 12.0 / 0.0202
    assert hv.n_prior == 2


@settings(max_examples=30)
@given(p1=st.floats(0.0, 20.0), p2=st.floats(0.0, 20.0),
       health=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4))
def test_value_is_linear_and_monotone_in_price(p1: float, p2: float,
                                               health: list[float]) -> None:
    h = _exact_herd(4, health=health, present=[True, True, True, False])
    v1, v2 = value_herd(h, p1), value_herd(h, p2)
    if p1 <= p2:
        assert v1.value <= v2.value and v1.low <= v2.low and v1.high <= v2.high
    assert v1.value * p2 == pytest.approx(v2.value * p1, rel=1e-9, abs=1e-9)
    assert v1.low <= v1.value <= v1.high


@settings(max_examples=20)
@given(groups=st.lists(st.integers(0, 2), min_size=6, max_size=6))
def test_split_by_loan_adds_up(groups: list[int]) -> None:
    h = _exact_herd(6, present=[True, True, False, True, True, True])
    hv = value_herd(h, 2.0)
    parts = split_herd_value(hv, np.array(groups), 3)
    assert sum(p[0] for p in parts) == pytest.approx(hv.value)
    for value, low, high in parts:
        assert low <= value <= high
    # bands of independent animals add in quadrature: the parts' half-widths cover the whole
    assert sum(p[0] - p[1] for p in parts) >= hv.value - hv.low - 1e-9


def test_per_animal_prices() -> None:
    h = _exact_herd(2)
    hv = value_herd(h, np.array([2.0, 3.0]))
    np.testing.assert_allclose(hv.per_animal_value, hv.est_weight_kg * [2.0, 3.0])


@pytest.mark.parametrize(("price", "kwargs", "match"), [
    (-1.0, {}, "price_per_kg must be >= 0"),
    (float("nan"), {}, "price_per_kg must be finite"),
    (np.array([1.0, 2.0]), {}, "price_per_kg must be a scalar or have 3"),
    (1.0, {"present": np.array([True, False])}, "present must have 3"),
    (1.0, {"present": np.array([1, 0, 1])}, "present must be bool"),
    (1.0, {"health_factor": 1.5}, r"health_factor must be within \[0, 1\]"),
    (1.0, {"weigh_kg": np.full(12, np.nan)}, "weight_kg has 12 non-finite"),
    (1.0, {"intake_dm_kg_per_head_day": np.array([1.0, 2.0])}, "intake_dm_kg_per_head_day"),
])
def test_value_herd_bad_input(price: object, kwargs: dict[str, object], match: str) -> None:
    import dataclasses

    h = dataclasses.replace(_exact_herd(3), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        value_herd(h, price)  # type: ignore[arg-type]


# -- inventory ------------------------------------------------------------------------------------
def test_ledger_by_hand() -> None:
    assert ledger_kg(1000.0, ["in", "out", "outbound", "inbound"],
                     [500.0, 200.0, 100.0, 50.0]) == 1250.0
    assert ledger_kg(1000.0, np.array([1.0, -1.0]), [10.0, 30.0]) == 980.0
    assert ledger_kg(0.0, [], []) == 0.0
    # more out than in: a negative ledger is evidence, not an error
    assert ledger_kg(100.0, ["out"], [150.0]) == -50.0


@pytest.mark.parametrize(("opening", "dirs", "nets", "match"), [
    (100.0, ["sideways"], [1.0], "unknown direction 'sideways'"),
    (100.0, ["in", "out"], [1.0], "directions has 2 entries, net_kg has 1"),
    (100.0, ["in"], [-5.0], "net_kg must be >= 0"),
    (100.0, ["in"], [float("nan")], "net_kg has 1 NaN"),
    (float("nan"), ["in"], [1.0], "opening_kg"),
    (-1.0, [], [], "opening_kg"),
    (100.0, np.array([2.0]), [1.0], r"\+1 \(in\) or -1"),
])
def test_ledger_bad_input(opening: float, dirs: object, nets: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ledger_kg(opening, dirs, nets)  # type: ignore[arg-type]


_tickets = st.lists(st.tuples(st.sampled_from(["in", "out"]), st.floats(0.0, 40_000.0)),
                    max_size=20)


@given(opening=st.floats(0.0, 1e6), a=_tickets, b=_tickets)
def test_ledger_is_additive(opening: float, a: list[tuple[str, float]],
                            b: list[tuple[str, float]]) -> None:
    def moved(ts: list[tuple[str, float]]) -> float:
        return ledger_kg(opening, [d for d, _ in ts], [n for _, n in ts]) - opening

    assert moved(a + b) == pytest.approx(moved(a) + moved(b), abs=1e-6)


def test_ledger_by_lot_matches_per_lot_ledgers() -> None:
    opening = np.array([1000.0, 0.0, 500.0])
    lots = np.array([0, 1, 0, 2, 1])
    dirs = ["in", "in", "out", "out", "outbound"]
    nets = np.array([100.0, 300.0, 50.0, 500.0, 20.0])
    got = ledger_kg_by_lot(opening, lots, dirs, nets)
    for j in range(3):
        sel = lots == j
        assert got[j] == ledger_kg(float(opening[j]), [d for d, s in zip(dirs, sel, strict=True)
                                                       if s], nets[sel])
    np.testing.assert_allclose(got, [1050.0, 280.0, 0.0])
    with pytest.raises(ValueError, match="out of range"):
        ledger_kg_by_lot(opening, np.array([3]), ["in"], [1.0])


def test_mixed_load() -> None:
    ok = check_mixed_load(10_000.0, [6000.0, 3990.0], 50.0)
    assert ok.ok and ok.diff_kg == -10.0
    bad = check_mixed_load(10_000.0, [6000.0, 4100.0], 50.0)
    assert not bad.ok and bad.diff_kg == 100.0
    assert check_mixed_load(10_000.0, [6000.0, 4050.0], 50.0).ok  # tolerance inclusive
    with pytest.raises(ValueError, match="tol_kg"):
        check_mixed_load(1.0, [1.0], -1.0)
    with pytest.raises(ValueError, match="net_kg must be >= 0"):
        check_mixed_load(1.0, [-1.0], 1.0)


def test_value_inventory_by_hand() -> None:
    v = value_inventory(1000.0, 2.0, 0.3)
    assert v.value == pytest.approx(1400.0)
    assert (v.low, v.high) == pytest.approx((1400.0 * 0.995, 1400.0 * 1.005))
    lots = value_inventory([1000.0, -50.0, 200.0], [2.0, 5.0, 1.0], [0.3, 0.3, 0.0],
                           rel_uncertainty=0.0)
    assert lots.value == pytest.approx(1400.0 + 0.0 + 200.0)  # negative stock is worth 0
    assert lots.low == lots.value == lots.high
    for args, match in [((1.0, -2.0, 0.1), "price_per_kg must be >= 0"),
                        ((1.0, 2.0, 1.5), "haircut"),
                        ((float("nan"), 2.0, 0.1), "stock_kg"),
                        (([1.0, 2.0], [1.0, 2.0, 3.0], 0.1), "price_per_kg")]:
        with pytest.raises(ValueError, match=match):
            value_inventory(*args)  # type: ignore[arg-type]


@given(stock=st.floats(0.0, 1e7), p1=st.floats(0.0, 100.0), p2=st.floats(0.0, 100.0),
       cut=st.floats(0.0, 1.0))
def test_inventory_monotone_in_price(stock: float, p1: float, p2: float, cut: float) -> None:
    lo, hi = sorted((p1, p2))
    assert value_inventory(stock, lo, cut).value <= value_inventory(stock, hi, cut).value


# -- coverage -------------------------------------------------------------------------------------
LINES = (0.7, 0.8, 0.9)


@pytest.mark.parametrize(("outstanding", "status"), [
    (600.0, "ok"), (700.0, "ok"), (750.0, "warning"), (800.0, "warning"),
    (850.0, "margin_call"), (950.0, "liquidation"), (2000.0, "liquidation"),
])
def test_coverage_lines(outstanding: float, status: str) -> None:
    c = coverage(1000.0, 900.0, 1100.0, outstanding, *LINES)
    assert c.status == status
    assert c.ltv == pytest.approx(outstanding / 1000.0)
    assert c.coverage == pytest.approx(1000.0 / outstanding)
    assert c.ltv_low == pytest.approx(outstanding / 900.0)
    assert c.ltv_high == pytest.approx(outstanding / 1100.0)


def test_coverage_edges() -> None:
    zero = coverage(0.0, 0.0, 0.0, 100.0, *LINES)
    assert zero.ltv == math.inf and zero.status == "liquidation" and zero.coverage == 0.0
    nothing_owed = coverage(0.0, 0.0, 0.0, 0.0, *LINES)
    assert nothing_owed.status == "ok" and nothing_owed.ltv == 0.0
    assert nothing_owed.coverage == math.inf
    for args, match in [((1.0, 0.0, 2.0, -1.0, *LINES), "outstanding"),
                        ((1.0, 2.0, 3.0, 1.0, *LINES), "low <= value <= high"),
                        ((1.0, 1.0, 1.0, 1.0, 0.8, 0.7, 0.9), "lines must satisfy"),
                        ((float("nan"), 1.0, 1.0, 1.0, *LINES), "value")]:
        with pytest.raises(ValueError, match=match):
            coverage(*args)


@given(st.lists(st.tuples(st.floats(0.0, 1e7), st.floats(0.0, 1e7)), min_size=1,
                max_size=30))
def test_coverage_many_matches_coverage(loans: list[tuple[float, float]]) -> None:
    values = np.array([v for v, _ in loans])
    owed = np.array([o for _, o in loans])
    many = coverage_many(values, owed, *LINES)
    for i, (v, o) in enumerate(loans):
        one = coverage(v, v, v, o, *LINES)
        assert STATUSES[int(many.status_code[i])] == one.status == many.statuses()[i]
        assert many.ltv[i] == pytest.approx(one.ltv)
        assert many.coverage[i] == pytest.approx(one.coverage)


@given(value=st.floats(1.0, 1e7), o1=st.floats(0.0, 1e7), o2=st.floats(0.0, 1e7))
def test_status_never_improves_as_debt_grows(value: float, o1: float, o2: float) -> None:
    lo, hi = sorted((o1, o2))
    a = coverage(value, value, value, lo, *LINES)
    b = coverage(value, value, value, hi, *LINES)
    assert STATUSES.index(a.status) <= STATUSES.index(b.status)
