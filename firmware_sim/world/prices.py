"""Daily prices: a geometric random walk per commodity with scripted shocks.

The price of a UTC date is the settlement the bank marks collateral to that day. A
``price_change`` incident multiplies the price of the date containing its ``at`` by
``1 + percent/100``; the walk continues from the shocked level, so the shock persists.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from firmware_sim.world.scenario import COMMODITIES, DAY_MS, MarketSpec

__all__ = ["PriceBook", "Shock", "utc_date", "utc_dates"]


def utc_date(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).date()


def utc_dates(start_ms: int, end_ms: int) -> list[dt.date]:
    """Every UTC date that has at least one millisecond in ``[start_ms, end_ms)``."""
    first, last = utc_date(start_ms), utc_date(end_ms - 1)
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def midnight_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Shock:
    commodity: str
    at_ms: int
    percent: float


def price_unit(commodity: str) -> str:
    """``kg`` for live cattle, ``t`` for everything in a warehouse."""
    known = COMMODITIES.get(commodity)
    return known[0] if known else "t"


class PriceBook:
    """Prices per (commodity, date) for the whole run, fixed at construction."""

    def __init__(self, market: MarketSpec, commodities: Iterable[str], start_ms: int,
                 end_ms: int, seed: int, shocks: Sequence[Shock] = ()) -> None:
        self.currency = market.currency
        self.dates = utc_dates(start_ms, end_ms)
        self._index = {d: i for i, d in enumerate(self.dates)}
        self.series: dict[str, np.ndarray] = {}
        n = len(self.dates)
        for c in sorted(set(commodities)):
            # one stream per commodity, keyed by a stable hash of its name, so adding a
            # commodity to a scenario does not change the others' paths
            rng = np.random.default_rng([seed, 0x9A1CE, zlib.crc32(c.encode())])
            steps = rng.normal(0.0, market.daily_volatility, n)
            steps[0] = 0.0
            for s in shocks:
                if s.commodity == c:
                    steps[self._index[utc_date(s.at_ms)]] += np.log1p(s.percent / 100.0)
            # rounded as a price list would be, so registry prices and truth values agree
            self.series[c] = np.round(market.start_price(c) * np.exp(np.cumsum(steps)), 4)

    def price(self, commodity: str, day: dt.date) -> float:
        """Price per unit (:func:`price_unit`) on ``day`` (clamped to the run's dates)."""
        i = self._index.get(day)
        if i is None:
            i = 0 if day < self.dates[0] else len(self.dates) - 1
        return float(self.series[commodity][i])

    def price_per_kg(self, commodity: str, day: dt.date) -> float:
        p = self.price(commodity, day)
        return p / 1000.0 if price_unit(commodity) == "t" else p

    def at_ms(self, commodity: str, ms: int) -> float:
        return self.price(commodity, utc_date(ms))


def day_end_ms(day: dt.date) -> int:
    return midnight_ms(day) + DAY_MS
