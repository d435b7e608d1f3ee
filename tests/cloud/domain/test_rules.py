"""The pure helpers of cloud.domain.rules (health has its own module)."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.domain import rules
from cloud.domain.model import LoanInfo, RuleParams

SQUARE = ((0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0))
L_SHAPE = ((0.0, 0.0), (0.0, 2.0), (1.0, 2.0), (1.0, 1.0), (2.0, 1.0), (2.0, 0.0))


@pytest.mark.parametrize(("lat", "lon", "inside"), [
    (0.5, 0.5, True), (1.5, 0.5, True), (0.5, 1.5, True), (1.5, 1.5, False),
    (-0.1, 0.5, False), (0.5, 2.1, False), (3.0, 3.0, False)])
def test_point_in_polygon(lat: float, lon: float, inside: bool) -> None:
    assert rules.point_in_polygon(lat, lon, L_SHAPE) is inside
    assert bool(rules.points_in_polygons([lat], [lon], [L_SHAPE])[0]) is inside


def test_vectorised_agrees_with_scalar_on_random_points() -> None:
    rng = np.random.default_rng(3)
    lat = rng.uniform(-0.5, 2.5, 5000)
    lon = rng.uniform(-0.5, 2.5, 5000)
    shifted = tuple((a + 1.2, b + 1.2) for a, b in SQUARE)
    fences = [L_SHAPE, shifted]
    vec = rules.points_in_polygons(lat, lon, fences)
    scalar = [any(rules.point_in_polygon(a, b, f) for f in fences)
              for a, b in zip(lat.tolist(), lon.tolist(), strict=True)]
    assert vec.tolist() == scalar
    assert 0.2 < vec.mean() < 0.6  # both outcomes well represented


def test_degenerate_polygons_contain_nothing() -> None:
    assert not rules.point_in_polygon(0.0, 0.0, ((0.0, 0.0), (1.0, 1.0)))
    assert not rules.points_in_polygons([0.0], [0.0], [()]).any()


def test_herd_seen_counts() -> None:
    # animal 0 seen in slots 10 and 3; animal 1 in slot 9 only; animal 2 long ago
    masks = [(1 << 0) | (1 << 7), 1, 1]
    slots = [10, 9, -100]
    assert rules.herd_seen_counts(masks, slots, now_slot=10, slots_per_window=4,
                                  windows=3) == [2, 1, 0]
    assert rules.herd_seen_counts([], [], 5, 4, 3) == [0, 0, 0]
    with pytest.raises(ValueError):
        rules.herd_seen_counts([1], [0], 0, 13, 5)


def test_feed_drop() -> None:
    assert rules.feed_drop([1000.0] * 7, 700.0, 0.25) == 1000.0
    assert rules.feed_drop([1000.0] * 7, 760.0, 0.25) is None
    assert rules.feed_drop([1000.0] * 3, 0.0, 0.25) is None  # too little history
    assert rules.feed_drop([0.0, 0.0, 0.0, 900.0, 1000.0, 1100.0, 1000.0], 100.0, 0.25) == 900.0


def test_tare_deviation() -> None:
    assert rules.tare_deviation(11_500.0, [12_000.0, 12_100.0, 11_900.0], 0.03) == 12_000.0
    assert rules.tare_deviation(11_700.0, [12_000.0, 12_100.0, 11_900.0], 0.03) is None
    assert rules.tare_deviation(13_000.0, [12_000.0, 12_000.0, 12_000.0], 0.03) == 12_000.0
    assert rules.tare_deviation(11_000.0, [12_000.0, 12_020.0], 0.03) == 12_010.0
    assert rules.tare_deviation(5_000.0, [12_000.0], 0.03) is None  # too few
    assert rules.tare_deviation(5_000.0, [12_000.0, 9_000.0], 0.03) is None  # no baseline


LOAN = LoanInfo(code="L1", currency="USD", outstanding=700.0, ltv_line=0.7,
                margin_call_line=0.8, liquidation_line=0.9, haircut=0.1)


@pytest.mark.parametrize(("value", "status", "severity"), [
    (1100.0, None, None), (1000.0, None, None), (950.0, "warning", "warning"),
    (850.0, "margin_call", "high"), (700.0, "liquidation", "critical"),
    (0.0, "liquidation", "critical")])
def test_coverage_condition(value: float, status: str | None, severity: str | None) -> None:
    cond = rules.coverage_condition(LOAN, value, 1000)
    if status is None:
        assert cond is None
        return
    assert cond is not None
    assert (cond.kind, cond.severity, cond.subject_type, cond.subject_id) == \
        ("coverage_breach", severity, "loan", "L1")
    assert cond.evidence["status"] == status and cond.event_time_ms == 1000


def test_price_shock_condition() -> None:
    p = RuleParams()
    assert rules.price_shock_condition("copper", 100.0, 104.0, p, site_code="w", ts_ms=1) is None
    fall = rules.price_shock_condition("copper", 100.0, 90.0, p, site_code="w", ts_ms=1)
    assert fall is not None and fall.severity == "high"
    assert fall.evidence["change"] == pytest.approx(-0.1)
    rise = rules.price_shock_condition("copper", 100.0, 110.0, p, site_code="w", ts_ms=1)
    assert rise is not None and rise.severity == "info"
    assert rules.price_shock_condition("copper", None, 1.0, p, site_code="w", ts_ms=1) is None
    assert rules.price_shock_condition("copper", 0.0, 1.0, p, site_code="w", ts_ms=1) is None
    per_loan = rules.price_shock_condition("copper", 100.0, 90.0, p, site_code=None, ts_ms=1,
                                           loan_code="L-WH")
    assert per_loan is not None
    assert (per_loan.subject_type, per_loan.subject_id) == ("loan", "L-WH")
    with pytest.raises(ValueError):
        rules.price_shock_condition("copper", 100.0, 90.0, p, site_code=None, ts_ms=1)
