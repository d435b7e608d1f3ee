"""Retry timing and policy: pure functions, fixed jitter, no sleeping."""

from __future__ import annotations

import functools

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.backoff import (
    MAX_RETRY_AFTER_S,
    Backoff,
    backoff_delay,
    is_retryable,
    is_retryable_status,
    parse_retry_after,
    retry_delay,
)
from gateway.errors import KeyFileError, OutboxError, UploadError

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(("attempt", "jitter", "strategy", "expected"), [
    (0, 0.7, "full", 0.0),
    (0, 0.7, "equal", 0.0),
    (1, 1.0, "full", 0.5),
    (1, 0.0, "full", 0.0),
    (1, 0.0, "equal", 0.25),
    (1, 1.0, "equal", 0.5),
    (2, 1.0, "full", 1.0),
    (3, 0.5, "full", 1.0),
    (4, 0.5, "equal", 3.0),
    (8, 1.0, "full", 60.0),  # 0.5 * 128 = 64, capped
    (8, 0.0, "equal", 30.0),
    (10_000, 1.0, "equal", 60.0),  # huge attempts do not overflow
], ids=lambda v: str(v))
def test_delay_table(attempt: int, jitter: float, strategy: str, expected: float) -> None:
    assert backoff_delay(attempt, jitter, strategy=strategy) == pytest.approx(expected)  # type: ignore[arg-type]


@given(attempt=st.integers(1, 200), jitter=st.floats(0, 1),
       base=st.floats(0.01, 10), cap=st.floats(0.1, 600))
def test_delay_bounds(attempt: int, jitter: float, base: float, cap: float) -> None:
    ceiling = min(cap, base * 2 ** min(attempt - 1, 62))
    full = backoff_delay(attempt, jitter, base_s=base, cap_s=cap, strategy="full")
    equal = backoff_delay(attempt, jitter, base_s=base, cap_s=cap, strategy="equal")
    assert 0 <= full <= ceiling * (1 + 1e-12)
    assert ceiling / 2 * (1 - 1e-12) <= equal <= ceiling * (1 + 1e-12)
    assert full <= cap * (1 + 1e-12) and equal <= cap * (1 + 1e-12)


@given(jitter=st.floats(0, 1))
def test_ceiling_grows_until_cap(jitter: float) -> None:
    delays = [backoff_delay(a, jitter, strategy="equal") for a in range(1, 20)]
    assert delays == sorted(delays)
    assert delays[-1] == pytest.approx(30.0 * (1 + jitter))


@pytest.mark.parametrize(("kwargs", "exc"), [
    ({"jitter": -0.1}, ValueError),
    ({"jitter": 1.5}, ValueError),
    ({"jitter": 0.5, "base_s": 0.0}, ValueError),
    ({"jitter": 0.5, "strategy": "decorrelated"}, ValueError),
])
def test_delay_rejects_bad_arguments(kwargs: dict[str, object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        backoff_delay(3, **kwargs)  # type: ignore[arg-type]


def test_fits_the_coordinator_callable() -> None:
    """edge.coordinator takes ``Callable[[int, float], float]`` (attempt, jitter)."""
    fn = functools.partial(backoff_delay, base_s=1.0, cap_s=10.0, strategy="full")
    assert fn(3, 0.5) == 2.0


@pytest.mark.parametrize(("status", "retry"), [
    (408, True), (425, True), (429, True), (500, True), (502, True), (503, True), (504, True),
    (599, True), (400, False), (401, False), (403, False), (404, False), (409, False),
    (413, False), (422, False), (200, False), (301, False),
])
def test_status_policy(status: int, retry: bool) -> None:
    assert is_retryable_status(status) is retry
    assert is_retryable(status) is retry


def _response(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", "https://cloud/v1/ingest"))


@pytest.mark.parametrize(("exc", "retry"), [
    (None, True),
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (OSError(101, "Network is unreachable"), True),
    (httpx.ConnectError("refused"), True),
    (httpx.ReadTimeout("slow"), True),
    (httpx.RemoteProtocolError("peer closed"), True),
    (httpx.UnsupportedProtocol("ftp://"), False),
    (httpx.HTTPStatusError("x", request=httpx.Request("POST", "https://c"),
                           response=_response(503)), True),
    (httpx.HTTPStatusError("x", request=httpx.Request("POST", "https://c"),
                           response=_response(401)), False),
    (UploadError("no answer", reason="network"), True),
    (UploadError("busy", reason="http", status=429, retry_after_s=5), True),
    (UploadError("bad key", reason="http", status=401), False),
    (KeyFileError("/k", "missing", reason="missing"), False),
    (OutboxError("/o", "locked", reason="io"), False),
    (ValueError("a bug"), False),
], ids=lambda v: type(v).__name__ if not isinstance(v, bool) else str(v))
def test_exception_policy(exc: BaseException | None, retry: bool) -> None:
    assert is_retryable(exc) is retry


def test_mqtt_policy() -> None:
    import aiomqtt
    from aiomqtt.exceptions import MqttConnectError

    assert is_retryable(aiomqtt.MqttError("connection lost")) is True
    assert is_retryable(aiomqtt.MqttCodeError(3, "server unavailable")) is True
    assert is_retryable(aiomqtt.MqttCodeError(5, "not authorised")) is False
    assert is_retryable(MqttConnectError(4)) is False


def test_bool_is_not_a_status() -> None:
    with pytest.raises(TypeError):
        is_retryable(True)


@pytest.mark.parametrize(("header", "expected"), [
    (None, None),
    ("120", 120.0),
    (" 7 ", 7.0),
    ("0", 0.0),
    ("999999", MAX_RETRY_AFTER_S),
    ("Thu, 01 Jan 2026 00:01:00 GMT", 60.0),
    ("Wed, 31 Dec 2025 23:00:00 GMT", 0.0),  # in the past: retry now
    ("soon", None),
    ("-5", None),
    ("1.5", None),
    ("²", None),
    ("9" * 5000, MAX_RETRY_AFTER_S),
    ("", None),
])
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    got = parse_retry_after(header, now_ms=NOW_MS)
    assert got == (pytest.approx(expected) if expected is not None else None)


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(header: str) -> None:
    got = parse_retry_after(header, now_ms=NOW_MS)
    assert got is None or 0.0 <= got <= MAX_RETRY_AFTER_S


def test_retry_after_is_a_floor_not_a_ceiling() -> None:
    assert retry_delay(1, 1.0, retry_after_s=30.0) == 30.0
    assert retry_delay(10, 1.0, retry_after_s=2.0) == 60.0
    assert retry_delay(1, 1.0, retry_after_s=10**6) == MAX_RETRY_AFTER_S


def test_backoff_counts_and_resets() -> None:
    b = Backoff(base_s=1.0, cap_s=8.0, strategy="full")
    assert [b.failed(1.0) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert b.attempt == 5
    b.succeeded()
    assert b.attempt == 0
    assert b.failed(1.0) == 1.0
    assert b.failed(0.0, retry_after_s=12.0) == 12.0
