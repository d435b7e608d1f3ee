"""Retry timing and retry policy, computed and never slept (STYLE habit 7).

:func:`backoff_delay` is a pure function of the attempt number and a jitter value the caller
draws (``rng.random()``), so tests pass fixed jitter and a fake clock. :class:`Backoff` keeps
the attempt count for one retry loop. :func:`is_retryable` decides whether an upload failure is
worth retrying: network errors, timeouts, 408, 425, 429 and 5xx are; every other status
(400, 401, 403, 404, 409, 413, 422, ...) and configuration or key errors are not, because
sending the same thing again gives the same answer.

Both jitter strategies are from "Exponential Backoff And Jitter" (AWS Architecture Blog, 2015):
with ``ceiling = min(cap, base * 2 ** (attempt - 1))``,

* ``"full"``:  ``delay = ceiling * jitter``                 (uniform in ``[0, ceiling]``)
* ``"equal"``: ``delay = ceiling / 2 * (1 + jitter)``       (uniform in ``[ceiling/2, ceiling]``)

The default is ``"equal"``: its floor means a loop against a dead peer never spins at ~0 s,
while a fleet restarting together is still spread over half the window.
"""

from __future__ import annotations

import dataclasses
import email.utils
import math
import sys
from typing import Any, Final, Literal

from gateway.errors import GatewayError

__all__ = [
    "DEFAULT_BASE_S",
    "DEFAULT_CAP_S",
    "MAX_RETRY_AFTER_S",
    "RETRYABLE_STATUSES",
    "Backoff",
    "Strategy",
    "backoff_delay",
    "is_retryable",
    "is_retryable_status",
    "parse_retry_after",
    "retry_delay",
]

Strategy = Literal["full", "equal"]

DEFAULT_BASE_S: Final = 0.5
DEFAULT_CAP_S: Final = 60.0
# A server asking for a longer pause than this is obeyed only up to it, so a misconfigured
# proxy cannot park a gateway for days while its disk fills.
MAX_RETRY_AFTER_S: Final = 900.0
# 408 Request Timeout, 425 Too Early, 429 Too Many Requests; every 5xx is retryable too.
RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})
# MQTT CONNACK codes that mean "your credentials or client are wrong": retrying cannot help.
# 3.1.1: 1 protocol version, 2 client id, 4 bad user/password, 5 not authorised;
# 5.0: 0x84 version, 0x85 client id, 0x86 bad user/password, 0x87 not authorised,
# 0x8A banned, 0x8C bad authentication method.
_MQTT_FATAL_CODES: Final = frozenset({1, 2, 4, 5, 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})
_MAX_EXPONENT: Final = 62  # 2**62 * any sane base is far above any cap


def backoff_delay(attempt: int, jitter: float, *, base_s: float = DEFAULT_BASE_S,
                  cap_s: float = DEFAULT_CAP_S, strategy: Strategy = "equal") -> float:
    """Seconds to wait before retry number ``attempt`` (1 = after the first failure).

    ``jitter`` is a number in ``[0, 1]`` drawn by the caller. ``attempt <= 0`` gives 0.0
    (nothing has failed yet). Never exceeds ``cap_s``. Matches the ``(attempt, jitter)``
    callable ``edge.coordinator.Coordinator`` takes via ``functools.partial``.
    """
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], got {jitter!r}")
    if base_s <= 0 or cap_s <= 0:
        raise ValueError("base_s and cap_s must be positive")
    if attempt <= 0:
        return 0.0
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
    if strategy == "full":
        return ceiling * jitter
    if strategy == "equal":
        return ceiling / 2.0 * (1.0 + jitter)
    raise ValueError(f"unknown backoff strategy {strategy!r} (full, equal)")


def retry_delay(attempt: int, jitter: float, *, retry_after_s: float | None = None,
                base_s: float = DEFAULT_BASE_S, cap_s: float = DEFAULT_CAP_S,
                strategy: Strategy = "equal") -> float:
    """:func:`backoff_delay`, but never shorter than the server's Retry-After (itself clamped
    to :data:`MAX_RETRY_AFTER_S`)."""
    delay = backoff_delay(attempt, jitter, base_s=base_s, cap_s=cap_s, strategy=strategy)
    if retry_after_s is not None and retry_after_s > 0:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


def parse_retry_after(value: str | None, *, now_ms: int) -> float | None:
    """Seconds from a Retry-After header (RFC 9110 10.2.3: delay-seconds or an HTTP-date),
    clamped to ``[0, MAX_RETRY_AFTER_S]``; None when absent or unparseable."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # "²".isdigit() is True too
        return MAX_RETRY_AFTER_S if len(text) > 9 else min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a date without a zone is malformed
        return None
    seconds = when.timestamp() - now_ms / 1000.0
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def is_retryable_status(status: int) -> bool:
    """True for 408, 425, 429 and 5xx."""
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def is_retryable(exc_or_status: int | BaseException | None) -> bool:
    """Whether the failed upload should be tried again later.

    Accepts an HTTP status (int), None (no answer at all: retry), or an exception:
    :class:`GatewayError` says so itself (``retryable``); httpx transport errors and
    timeouts are retryable except ``UnsupportedProtocol`` (a bad URL); ``HTTPStatusError``
    follows its status; aiomqtt errors are retryable except CONNACK codes meaning bad
    credentials or a refused client; other ``OSError``/``TimeoutError`` (network) are
    retryable; anything else is a bug and is not. httpx and aiomqtt are recognised only if
    already imported, so this module stays light.
    """
    if exc_or_status is None:
        return True
    if isinstance(exc_or_status, bool):
        raise TypeError("is_retryable takes a status, None or an exception, not a bool")
    if isinstance(exc_or_status, int):
        return is_retryable_status(exc_or_status)
    exc = exc_or_status
    if isinstance(exc, GatewayError):
        return exc.retryable
    httpx: Any = sys.modules.get("httpx")
    if httpx is not None:
        if isinstance(exc, httpx.HTTPStatusError):
            return is_retryable_status(int(exc.response.status_code))
        if isinstance(exc, httpx.UnsupportedProtocol):
            return False
        if isinstance(exc, httpx.TransportError):
            return True
    aiomqtt: Any = sys.modules.get("aiomqtt")
    if aiomqtt is not None and isinstance(exc, aiomqtt.MqttError):
        rc = getattr(exc, "rc", None)
        code = getattr(rc, "value", rc)
        return not (isinstance(code, int) and code in _MQTT_FATAL_CODES)
    return isinstance(exc, OSError | TimeoutError)


@dataclasses.dataclass
class Backoff:
    """The attempt counter of one retry loop. ``failed()`` counts a failure and returns the
    delay before the next try; ``succeeded()`` resets. No clock, no sleeping::

        delay = backoff.failed(rng.random(), retry_after_s=err.retry_after_s)
        await asyncio.sleep(delay)
    """

    base_s: float = DEFAULT_BASE_S
    cap_s: float = DEFAULT_CAP_S
    strategy: Strategy = "equal"
    attempt: int = 0

    def failed(self, jitter: float, *, retry_after_s: float | None = None) -> float:
        self.attempt += 1
        return retry_delay(self.attempt, jitter, retry_after_s=retry_after_s,
                           base_s=self.base_s, cap_s=self.cap_s, strategy=self.strategy)

    def succeeded(self) -> None:
        self.attempt = 0
