"""Times at the alert API's edge: ISO-8601 UTC out, ISO-8601 or milliseconds in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.alerts.timefmt import BadTimeError, iso, parse_time_ms


def test_iso_and_back() -> None:
    assert iso(1_767_225_600_123) == "2026-01-01T00:00:00.123Z"
    assert parse_time_ms("2026-01-01T00:00:00.123Z") == 1_767_225_600_123
    assert parse_time_ms("2026-01-01T01:00:00+01:00") == 1_767_225_600_000
    assert parse_time_ms("2026-01-01T00:00:00") == 1_767_225_600_000  # naive is UTC
    assert parse_time_ms("2026-01-01") == 1_767_225_600_000
    assert parse_time_ms(" 1767225600123 ") == 1_767_225_600_123


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "12:00", "1.5e12"])
def test_bad_times_are_refused(text: str) -> None:
    with pytest.raises(BadTimeError):
        parse_time_ms(text)


@given(st.integers(min_value=0, max_value=4_102_444_800_000))  # up to 2100
def test_roundtrip_is_exact(ms: int) -> None:
    assert parse_time_ms(iso(ms)) == ms
