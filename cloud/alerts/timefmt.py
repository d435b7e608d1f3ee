"""Times at the API edge: the store keeps integer milliseconds since the epoch (UTC); the alert
API speaks ISO-8601 UTC (``2026-01-03T04:05:06.789Z``) and accepts either form in ``since``."""

from __future__ import annotations

import datetime as dt

__all__ = ["BadTimeError", "iso", "iso_or_none", "parse_time_ms"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class BadTimeError(ValueError):
    """A ``since``/``until`` value that is neither ISO-8601 nor integer milliseconds."""


def iso(ms: int) -> str:
    """``ms`` since the epoch as ISO-8601 UTC with milliseconds and a ``Z``."""
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_or_none(ms: int | None) -> str | None:
    return None if ms is None else iso(ms)


def parse_time_ms(text: str) -> int:
    """ISO-8601 (a naive time is read as UTC) or integer milliseconds -> ms since the epoch."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadTimeError(f"{text!r} is neither ISO-8601 nor milliseconds since the "
                           f"epoch") from exc
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return (stamp - _EPOCH) // dt.timedelta(milliseconds=1)  # exact, no float
