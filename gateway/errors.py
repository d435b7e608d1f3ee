"""The gateway exception tree, rooted in :class:`GatewayError`.

Foreign exceptions (sqlite3, OSError, cryptography, httpx, aiomqtt) are translated into these at
the adapter boundary with ``raise ... from exc``. Every error carries structured attributes so
callers (metrics, logs, the one-line start-up report) never parse messages. ``retryable`` says
whether trying the same operation again later can succeed (see :mod:`gateway.backoff`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "GatewayError",
    "KeyFileError",
    "OutboxError",
    "ReadingRejected",
    "UploadError",
]


class GatewayError(Exception):
    """Root of every gateway error. ``reason`` is a short machine-readable word."""

    retryable: bool = False

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class KeyFileError(GatewayError):
    """The gateway key file is missing, unreadable, corrupt, or readable by other users.
    ``mode`` is the file's permission bits when known (e.g. ``0o644``)."""

    def __init__(self, path: Path | str, problem: str, *, reason: str,
                 mode: int | None = None) -> None:
        super().__init__(f"key file {path}: {problem}", reason=reason)
        self.path = Path(path)
        self.problem = problem
        self.mode = mode


class OutboxError(GatewayError):
    """The outbox database cannot be used (locked, wrong gateway, disk error)."""

    def __init__(self, path: Path | str, problem: str, *, reason: str) -> None:
        super().__init__(f"outbox {path}: {problem}", reason=reason)
        self.path = Path(path)
        self.problem = problem


class ReadingRejected(GatewayError):
    """A reading handed to the outbox breaks the uplink contract (the cloud would refuse the
    whole batch holding it), so nothing of that ``append`` call was stored. ``index`` is its
    position in the call's sequence; ``reason`` the :class:`protocols.uplink.UplinkError`
    reason."""

    def __init__(self, index: int, problem: str, *, reason: str) -> None:
        super().__init__(f"reading #{index} rejected: {problem}", reason=reason)
        self.index = index
        self.problem = problem


class UploadError(GatewayError):
    """An upload attempt failed. ``status`` is the HTTP status (None: no answer, e.g. a
    network error or timeout); ``retry_after_s`` the server's Retry-After, if it sent one."""

    def __init__(self, message: str, *, reason: str, status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message, reason=reason)
        self.status = status
        self.retry_after_s = retry_after_s
        from gateway.backoff import is_retryable_status  # backoff imports this module

        self.retryable = status is None or is_retryable_status(status)
