"""The cloud's one exception tree. Every error the cloud raises on purpose is a
:class:`CloudError` with a machine-readable ``reason``; foreign exceptions (SQLAlchemy, httpx,
cryptography ...) are translated at the adapter boundary with ``raise ... from exc``."""

from __future__ import annotations

__all__ = ["CloudError", "IngestBusy", "IngestRejected", "IngestUnavailable"]


class CloudError(Exception):
    """Root of the cloud's errors. ``reason`` is a short machine-readable word."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class IngestRejected(CloudError):
    """A batch the cloud will never take as sent (bad signature, unknown or disabled gateway,
    replay outside the window, malformed or oversized body). ``status`` is the HTTP status
    (400, 403, 409, 413, 422); nothing was written."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason, reason=reason)
        self.status = status
        self.detail = detail


class IngestBusy(CloudError):
    """The ingest write queue is full: try again after ``retry_after_s`` (HTTP 429)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"ingest queue is full; retry after {retry_after_s:g} s", reason="busy")
        self.retry_after_s = retry_after_s


class IngestUnavailable(CloudError):
    """The store failed or the service is stopping: nothing was written, the same batch may
    succeed later (HTTP 503 with ``retry_after_s``)."""

    def __init__(self, detail: str, retry_after_s: float = 5.0) -> None:
        super().__init__(f"ingest unavailable: {detail}", reason="unavailable")
        self.detail = detail
        self.retry_after_s = retry_after_s
