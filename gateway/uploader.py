"""Uploaders: hand one signed envelope to the cloud and return only when it took it.

* :class:`HttpUploader` POSTs to the cloud's ``/v1/ingest``; any 2xx is success.
* :class:`MqttUploader` publishes with QoS 1; success is the broker's PUBACK.

Failures raise :class:`gateway.errors.UploadError` with the HTTP status (if any), the
server's Retry-After and a machine-readable reason; httpx and aiomqtt exceptions never leak.
A 409 saying the batch's seq cannot be taken (``seq_reused``, ``replay_outside_window``)
raises :class:`SeqConflict` with the cloud's ``last_seq`` from the answer, so the gateway can
re-sign the batch above it (:meth:`gateway.outbox.Outbox.rebase`). Over MQTT there is no
answer from the cloud, only the broker's PUBACK: such a batch is refused there, counted and
logged by the cloud, and lost (docs/uplink.md).
"""

from __future__ import annotations

import contextlib
from email.utils import parsedate_to_datetime
from typing import Final, Protocol, Self

import aiomqtt
import httpx

from gateway.errors import UploadError

__all__ = ["CONTENT_TYPE", "SEQ_CONFLICT_REASONS", "HttpUploader", "MqttUploader",
           "SeqConflict", "Uploader"]

CONTENT_TYPE: Final = "application/vnd.pledgewatch.batch"
MAX_REASON_CHARS: Final = 300
# 409 reasons meaning "nothing of this batch was stored and this seq never will be": the
# readings are re-sent under a new seq above the cloud's last one
SEQ_CONFLICT_REASONS: Final = frozenset({"seq_reused", "replay_outside_window"})
_MAX_SEQ: Final = 2**63 - 1


class SeqConflict(UploadError):
    """The cloud refused the batch's seq (409 ``seq_reused`` or ``replay_outside_window``):
    nothing of it was stored. ``cloud_last_seq`` is the highest seq the cloud stored for this
    gateway, None when the answer did not say (an older cloud)."""

    def __init__(self, message: str, *, reason: str, cloud_last_seq: int | None) -> None:
        super().__init__(message, reason=reason, status=409)
        self.cloud_last_seq = cloud_last_seq


class Uploader(Protocol):
    async def send(self, envelope: bytes, *, seq: int) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


class HttpUploader:
    def __init__(self, *, url: str, timeout_s: float = 15.0, gateway_id: str = "",
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.gateway_id = gateway_id
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(timeout=self.timeout_s, transport=self._transport,
                                         headers={"User-Agent": "pledgewatch-gateway"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, envelope: bytes, *, seq: int) -> None:
        assert self._client is not None, "use HttpUploader as an async context manager"
        try:
            resp = await self._client.post(self.url, content=envelope, headers={
                "Content-Type": CONTENT_TYPE, "X-Pledgewatch-Gateway": self.gateway_id,
                "X-Pledgewatch-Seq": str(seq)})
        except httpx.TimeoutException as exc:
            raise UploadError(f"upload of batch {seq} timed out: {exc}",
                              reason="timeout") from exc
        except httpx.HTTPError as exc:
            raise UploadError(f"upload of batch {seq} failed: {exc!r}",
                              reason="network") from exc
        if 200 <= resp.status_code < 300:
            return
        reason = f"http_{resp.status_code}"
        body: object = None
        with contextlib.suppress(ValueError, AttributeError):
            body = resp.json()
            if isinstance(body, dict) and isinstance(body.get("reason"), str):
                reason = body["reason"][:MAX_REASON_CHARS]
        if resp.status_code == 409 and reason in SEQ_CONFLICT_REASONS:
            last = body.get("last_seq") if isinstance(body, dict) else None
            cloud_last_seq = (last if isinstance(last, int) and not isinstance(last, bool)
                              and 0 <= last < _MAX_SEQ else None)
            raise SeqConflict(f"cloud answered 409 to batch {seq}: {reason} (its last seq: "
                              f"{cloud_last_seq})", reason=reason,
                              cloud_last_seq=cloud_last_seq)
        raise UploadError(f"cloud answered {resp.status_code} to batch {seq}: {reason}",
                          reason=reason, status=resp.status_code,
                          retry_after_s=_retry_after(resp.headers.get("Retry-After")))


class MqttUploader:
    def __init__(self, *, host: str, port: int, topic: str, gateway_id: str,
                 timeout_s: float = 15.0) -> None:
        self.host = host
        self.port = port
        self.topic = topic.format(gateway_id=gateway_id)
        self.gateway_id = gateway_id
        self.timeout_s = timeout_s
        self._client: aiomqtt.Client | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._disconnect()

    async def _disconnect(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await stack.aclose()

    async def _connect(self) -> aiomqtt.Client:
        if self._client is not None:
            return self._client
        stack = contextlib.AsyncExitStack()
        client = aiomqtt.Client(self.host, self.port, identifier=f"pw-gw-{self.gateway_id}",
                                timeout=self.timeout_s)
        try:
            await stack.enter_async_context(client)
        except (aiomqtt.MqttError, OSError) as exc:
            await stack.aclose()
            raise UploadError(f"cannot connect to MQTT broker {self.host}:{self.port}: {exc}",
                              reason="network") from exc
        self._client, self._stack = client, stack
        return client

    async def send(self, envelope: bytes, *, seq: int) -> None:
        client = await self._connect()
        try:
            await client.publish(self.topic, envelope, qos=1, timeout=self.timeout_s)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            await self._disconnect()
            raise UploadError(f"MQTT publish of batch {seq} failed: {exc}",
                              reason="network") from exc
