"""``POST /v1/ingest``: one signed gateway batch envelope per request (docs/uplink.md).

Thin: read the raw body under a hard cap (refused from ``Content-Length`` before reading, and
again while streaming, so a lying or absent length cannot make us buffer more), hand it to
``app.state.ingest`` (:class:`cloud.ingest.service.IngestService`) and translate its answer:

* 200 ``{"status": "stored"|"duplicate", "seq": n, "readings": n}``;
* 4xx ``{"reason": ..., "detail": ...}`` for a batch that will never be taken as sent; a 409
  (``seq_reused``, ``replay_outside_window``) also carries ``"last_seq"``, the gateway's
  highest stored seq, so the gateway re-signs the batch above it;
* 429 / 503 with ``Retry-After`` when the write queue is full or the store is unavailable.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cloud.errors import IngestBusy, IngestRejected, IngestUnavailable
from cloud.ingest.service import IngestService, SeqConflict, retry_after_header

__all__ = ["router"]

router = APIRouter(tags=["ingest"])


def _error(status: int, reason: str, detail: str,
           headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"reason": reason, "detail": detail, **extra}, status_code=status,
                        headers=headers)


def _too_large(limit: int, what: str) -> JSONResponse:
    # the body is not read further: close the connection instead of draining it
    return _error(413, "too_large", f"{what} > {limit} bytes", {"Connection": "close"})


@router.post(
    "/v1/ingest",
    summary="Store one signed gateway batch (application/vnd.pledgewatch.batch)",
    responses={400: {}, 403: {}, 409: {}, 413: {}, 422: {}, 429: {}, 503: {}},
)
async def ingest(request: Request) -> Any:
    service: IngestService = request.app.state.ingest
    limit = service.max_envelope_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            return _error(400, "malformed", "Content-Length is not a number")
        if length > limit:
            return _too_large(limit, f"Content-Length {length}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return _too_large(limit, "request body")
    try:
        result = await service.submit(bytes(body))
    except SeqConflict as exc:
        return _error(exc.status, exc.reason, exc.detail, last_seq=exc.last_seq)
    except IngestRejected as exc:
        return _error(exc.status, exc.reason, exc.detail)
    except IngestBusy as exc:
        return _error(429, exc.reason, str(exc),
                      {"Retry-After": retry_after_header(exc.retry_after_s)})
    except IngestUnavailable as exc:
        return _error(503, exc.reason, exc.detail,
                      {"Retry-After": retry_after_header(exc.retry_after_s)})
    return {"status": result.status, "seq": result.seq, "readings": result.readings}
