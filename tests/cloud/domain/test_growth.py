"""Growth curves and the per-animal weight fit (cloud.domain.growth): pure, synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.domain import growth
from cloud.domain.growth import (
    BAND_Z_90,
    DMI_FRACTION_FEEDLOT_STEER,
    PRIORS,
    GrowthFit,
    PriorArrays,
    b_for,
    fit_growth,
    gompertz,
    impute_age_days,
    prior_arrays,
    prior_for,
    weight_from_intake,
)

A, K = 750.0, 0.00341  # the beef steer prior
B = math.log(A / 36.0)


def _prior(n: int, a: float = A, b: float = B, k: float = K) -> PriorArrays:
    return PriorArrays(np.full(n, a), np.full(n, b), np.full(n, k))


def _herd(n: int, per: int, span_days: float, *, outliers: float = 0.1, noise: float = 0.02,
          k_spread: float = 0.1, seed: int = 1
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic herd whose animals differ from the breed curve (A +-10 %, k +-k_spread,
    b +-5 %), weighed ``per`` times over the last ``span_days`` with multiplicative noise and
    a fraction of walk-over outliers split evenly between 0 kg, half and double."""
    rng = np.random.default_rng(seed)
    a = A * np.exp(rng.normal(0, 0.1, n))
    k = K * np.exp(rng.normal(0, k_spread, n))
    b = np.log(a / 36.0) * np.exp(rng.normal(0, 0.05, n))
    age_now = rng.uniform(span_days + 250, span_days + 600, n)
    idx = np.repeat(np.arange(n), per)
    t = age_now[idx] - rng.uniform(0, span_days, n * per)
    w = gompertz(t, a[idx], b[idx], k[idx]) * np.exp(rng.normal(0, noise, n * per))
    u = rng.random(w.size)
    third = outliers / 3
    w = np.where(u < third, 0.0, np.where(u < 2 * third, w / 2,
                                          np.where(u < outliers, w * 2, w)))
    return idx, t, w, age_now, gompertz(age_now, a, b, k), u < outliers


# -- curve and priors -----------------------------------------------------------------------------
def test_gompertz_values_by_hand() -> None:
    assert gompertz(0.0, 750.0, B, K) == pytest.approx(36.0)
    # t = 1/k: exp(-b/e)
    assert gompertz(1 / K, 750.0, B, K) == pytest.approx(750.0 * math.exp(-B / math.e))
    assert gompertz(1e6, 750.0, B, K) == pytest.approx(750.0)


def test_b_for_and_impute_age_invert_the_curve() -> None:
    t = np.array([0.0, 100.0, 365.0, 800.0])
    w = gompertz(t, A, B, K)
    np.testing.assert_allclose(b_for(w, t, A, K), B)
    np.testing.assert_allclose(impute_age_days(w, A, B, K), t, atol=1e-6)
    assert np.isnan(b_for([0.0, 750.0, 800.0], 100.0, A, K)).all()
    assert np.isnan(impute_age_days([0.0, 750.0], A, B, K)).all()


def test_priors_by_breed_and_sex() -> None:
    assert prior_for(None, None) is PRIORS[("beef", "M")]
    assert prior_for("Angus", "F") is PRIORS[("beef", "F")]
    assert prior_for("Holstein", "m") is PRIORS[("holstein", "M")]
    assert prior_for("unheard-of", "F") is PRIORS[("beef", "F")]
    assert prior_for("Brahman", "F").mature_kg == pytest.approx(479.7)
    for p in PRIORS.values():
        assert p.mature_kg > p.birth_kg > 0 and 0 < p.k_per_day < 0.01 and p.b > 0
    pa = prior_arrays(["angus", None, "holstein"], ["F", "M", None])
    np.testing.assert_allclose(pa.mature_kg, [520.0, 750.0, 795.0])
    np.testing.assert_allclose(pa.b, [PRIORS[("beef", "F")].b, B, PRIORS[("holstein", "M")].b])
    with pytest.raises(ValueError, match="differ in length"):
        prior_arrays(["angus"], [])


def test_weight_from_intake() -> None:
    # 10 kg DM/head/day at 2.02 % of body weight (US feedlot steers) -> 495 kg
    np.testing.assert_allclose(weight_from_intake([10.0]), [10.0 / 0.0202])
    assert DMI_FRACTION_FEEDLOT_STEER == 0.0202
    np.testing.assert_allclose(weight_from_intake([9.0], dmi_fraction=0.03), [300.0])
    assert np.isnan(weight_from_intake([0.0, np.nan, -1.0])).all()
    with pytest.raises(ValueError, match="dmi_fraction"):
        weight_from_intake([10.0], dmi_fraction=2.0)


# -- filter ---------------------------------------------------------------------------------------
def test_filter_drops_zero_half_and_double_of_one_animal() -> None:
    ages = np.array([400.0, 401, 402, 403, 404, 405])
    true = gompertz(ages, A, B, K)
    w = true * np.array([1.0, 0.5, 0.0, 2.0, 1.01, 0.99])
    f = fit_growth(1, np.zeros(6, dtype=np.int64), ages, w, np.array([410.0]), _prior(1))
    assert f.good.tolist() == [True, False, False, False, True, True]
    assert f.n_good.tolist() == [3] and f.n_rejected.tolist() == [3]
    assert f.weight_kg[0] == pytest.approx(gompertz(410.0, A, B, K), rel=0.01)


def test_two_readings_one_half_the_breed_curve_breaks_the_tie() -> None:
    # truth 8 % below the breed curve; one reading is a half weight
    true = 0.92 * gompertz(np.array([500.0, 502.0]), A, B, K)
    w = np.array([true[0], true[1] / 2])
    f = fit_growth(1, np.array([0, 0]), np.array([500.0, 502.0]), w, np.array([503.0]),
                   _prior(1))
    assert f.good.tolist() == [True, False]
    assert not f.fitted[0]  # one good weighing: leans on the prior
    assert f.weight_kg[0] == pytest.approx(0.92 * gompertz(503.0, A, B, K), rel=0.03)


# -- recovery -------------------------------------------------------------------------------------
def test_fit_recovers_weights_with_noise_and_ten_percent_outliers() -> None:
    idx, t, w, age_now, truth, was_outlier = _herd(3000, 6, 30.0)
    f = fit_growth(3000, idx, t, w, age_now, _prior(3000))
    # every 0 / half / double reading is caught, almost no good one is lost
    assert not (f.good & was_outlier).any()
    assert (f.good | was_outlier).mean() > 0.998
    err = f.weight_kg / truth - 1
    assert np.median(np.abs(err)) < 0.015  # 2 % scale noise, 5 readings left on average
    assert abs(f.weight_kg.sum() / truth.sum() - 1) < 0.005  # herd total
    assert f.sigma_log == pytest.approx(0.02, rel=0.25)  # the scale's noise is learnt
    cover = ((truth >= f.low_kg) & (truth <= f.high_kg)).mean()
    assert 0.85 <= cover <= 0.99  # a 90 % band


def test_long_histories_are_refined_and_recover_their_own_k() -> None:
    rng = np.random.default_rng(5)
    n, per = 200, 30
    k_true = K * 1.25  # these animals mature 25 % faster than the breed curve says
    age_now = rng.uniform(450, 550, n)
    idx = np.repeat(np.arange(n), per)
    t = age_now[idx] - rng.uniform(0, 300, n * per)
    w = gompertz(t, A, B, k_true) * np.exp(rng.normal(0, 0.02, n * per))
    truth = gompertz(age_now, A, B, k_true)
    f = fit_growth(n, idx, t, w, age_now, _prior(n))
    plain = fit_growth(n, idx, t, w, age_now, _prior(n), refine=False)
    assert f.refined.all() and not plain.refined.any()
    assert np.median(np.abs(np.log(f.k_per_day / k_true))) < 0.1  # prior was 0.22 off
    assert np.abs(f.weight_kg / truth - 1).mean() < np.abs(plain.weight_kg / truth - 1).mean()
    assert ((truth >= f.low_kg) & (truth <= f.high_kg)).mean() >= 0.85


def test_refinement_in_chunks_matches_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    n, per = 100, 30
    age_now = rng.uniform(450, 550, n)
    idx = np.repeat(np.arange(n), per)[rng.permutation(n * per)]  # any order
    t = age_now[idx] - rng.uniform(0, 300, n * per)
    w = gompertz(t, A, B, K * np.exp(rng.normal(0, 0.15, n))[idx])
    w = w * np.exp(rng.normal(0, 0.02, n * per))
    monkeypatch.setattr(growth, "REFINE_CHUNK_ROWS", 400)  # 8 chunks
    chunked = fit_growth(n, idx, t, w, age_now, _prior(n))
    monkeypatch.setattr(growth, "REFINE_CHUNK_ROWS", 10**9)
    whole = fit_growth(n, idx, t, w, age_now, _prior(n))
    assert chunked.refined.all() and whole.refined.all()
    np.testing.assert_allclose(chunked.weight_kg, whole.weight_kg, rtol=2e-3)
    np.testing.assert_allclose(chunked.k_per_day, whole.k_per_day, rtol=0.05)


def test_refinement_is_capped_to_the_longest_histories() -> None:
    n = 50
    age_now = np.full(n, 600.0)
    idx = np.repeat(np.arange(n), 12)
    span = np.where(np.arange(n) < 10, 250.0, 100.0 + np.arange(n))  # 0..9 the longest
    t = age_now[idx] - np.tile(np.linspace(0, 1, 12), n) * span[idx]
    w = gompertz(t, A, B, K) * np.exp(np.random.default_rng(2).normal(0, 0.02, idx.size))
    f = fit_growth(50, idx, t, w, age_now, _prior(50), refine_max_animals=10)
    assert f.refined.sum() == 10 and f.refined[:10].all()
    none = fit_growth(50, idx, t, w, age_now, _prior(50), refine_min_span_days=1e4)
    assert not none.refined.any()


# -- fallback -------------------------------------------------------------------------------------
def test_no_weighings_gives_the_breed_curve_with_a_wide_band() -> None:
    idx, t, w, age_now, _, _ = _herd(100, 6, 30.0, outliers=0.0)
    # animal 100 and 101 have no weighings
    n = 102
    ages = np.concatenate([age_now, [500.0, 500.0]])
    f = fit_growth(n, idx, t, w, ages, _prior(n))
    assert not f.fitted[100:].any() and f.fitted[:100].all()
    # the breed curve, moved by the herd's own level (this herd varies around the curve, so
    # by little): the median log ratio of the good weighings to the curve
    shift = f.weight_kg[100] / gompertz(500.0, A, B, K)
    assert 0.95 < shift < 1.05
    assert f.weight_kg[101] == pytest.approx(f.weight_kg[100])
    assert f.log_sd[100] > 5 * np.median(f.log_sd[:100])
    # a 90 % band of about +-15 % x 1.645
    assert f.high_kg[100] / f.weight_kg[100] == pytest.approx(
        math.exp(BAND_Z_90 * f.log_sd[100]))
    assert 0.1 < f.log_sd[100] < 0.25


def test_entry_weight_and_intake_move_the_prior() -> None:
    empty = np.array([], dtype=np.int64)
    none = np.array([], dtype=np.float64)
    prior_w = gompertz(300.0, A, B, K)
    entry = np.array([1.2 * gompertz(250.0, A, B, K), np.nan, np.nan])
    f = fit_growth(3, empty, none, none, np.full(3, 300.0), _prior(3),
                   entry_weight_kg=entry, entry_age_days=np.array([250.0, np.nan, np.nan]),
                   intake_weight_kg=np.array([np.nan, 1.2 * prior_w, np.nan]))
    # entry weighing 20 % above the curve: estimate follows it (entry sd 3 % vs prior 15 %)
    assert f.weight_kg[0] / prior_w == pytest.approx(1.2, abs=0.03)
    # intake says 20 % above, but intake is rough (sd 20 %): moves part of the way
    assert 1.03 < f.weight_kg[1] / prior_w < 1.15
    assert f.weight_kg[2] == pytest.approx(prior_w)
    assert f.log_sd[0] < f.log_sd[1] < f.log_sd[2]


def test_intake_is_ignored_for_animals_with_their_own_curve() -> None:
    idx, t, w, age_now, _, _ = _herd(20, 6, 30.0, outliers=0.0)
    base = fit_growth(20, idx, t, w, age_now, _prior(20))
    with_intake = fit_growth(20, idx, t, w, age_now, _prior(20),
                             intake_weight_kg=np.full(20, 900.0))
    np.testing.assert_allclose(with_intake.weight_kg, base.weight_kg)


# -- properties and errors ------------------------------------------------------------------------
@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.5, 2.0))
def test_order_does_not_matter_and_weights_scale(seed: int, scale: float) -> None:
    idx, t, w, age_now, _, _ = _herd(15, 5, 40.0, seed=seed)
    base = fit_growth(15, idx, t, w, age_now, _prior(15), refine=False)
    perm = np.random.default_rng(seed).permutation(idx.size)
    shuffled = fit_growth(15, idx[perm], t[perm], w[perm], age_now, _prior(15), refine=False)
    np.testing.assert_allclose(shuffled.weight_kg, base.weight_kg, rtol=1e-9)
    # weights and mature weight x scale -> estimates x scale (log-space model)
    scaled = fit_growth(15, idx, t, w * scale, age_now, _prior(15, a=A * scale), refine=False)
    np.testing.assert_allclose(scaled.weight_kg, base.weight_kg * scale, rtol=1e-6)
    assert (base.low_kg <= base.weight_kg).all() and (base.weight_kg <= base.high_kg).all()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"weight_kg": [400.0, np.nan]}, "weight_kg has 1 non-finite"),
    ({"age_days": [400.0]}, "age_days has 1 entries, expected 2"),
    ({"animal_idx": [0, 5]}, "out of range"),
    ({"animal_idx": [0.0, 1.0]}, "integers"),
    ({"age_days": [-1.0, 400.0]}, ">= 0 days"),
    ({"prior": PriorArrays(np.array([750.0, 0.0]), np.full(2, B), np.full(2, K))}, "> 0"),
    ({"age_days_now": [400.0]}, "age_days_now has 1 entries"),
    ({"entry_weight_kg": [np.inf, 1.0]}, "entry_weight_kg"),
])
def test_bad_input_is_a_value_error(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"animal_idx": [0, 1], "age_days": [400.0, 410.0],
                               "weight_kg": [400.0, 410.0], "age_days_now": [420.0, 420.0],
                               "prior": _prior(2)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_growth(2, **args)  # type: ignore[arg-type]


def test_empty_herd() -> None:
    f = fit_growth(0, [], [], [], [], _prior(0))
    assert isinstance(f, GrowthFit) and f.weight_kg.size == 0


def test_a_herd_above_the_breed_curve_moves_its_unweighed_animals_up() -> None:
    """The prior is a population curve; a herd 12 % heavier than it at every age moves the
    animals it has not weighed yet by about as much (their errors would otherwise all point
    the same way and bias the herd value)."""
    rng = np.random.default_rng(5)
    n_weighed, per = 60, 3
    ages = rng.uniform(300, 600, n_weighed)
    idx = np.repeat(np.arange(n_weighed), per)
    t = ages[idx] - rng.uniform(0, 20, idx.size)
    w = 1.12 * gompertz(t, A, B, K) * np.exp(rng.normal(0, 0.015, idx.size))
    n = n_weighed + 1
    f = fit_growth(n, idx, t, w, np.concatenate([ages, [450.0]]), _prior(n))
    assert not f.fitted[-1]
    assert f.weight_kg[-1] / gompertz(450.0, A, B, K) == pytest.approx(1.12, rel=0.02)
    # and a herd that sits on the curve leaves it where it is
    w0 = gompertz(t, A, B, K) * np.exp(rng.normal(0, 0.015, idx.size))
    f0 = fit_growth(n, idx, t, w0, np.concatenate([ages, [450.0]]), _prior(n))
    assert f0.weight_kg[-1] / gompertz(450.0, A, B, K) == pytest.approx(1.0, abs=0.01)
