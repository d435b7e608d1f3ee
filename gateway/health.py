"""The gateway's local HTTP endpoint: ``GET /healthz`` (JSON) and ``GET /metrics``
(Prometheus text format). A tiny asyncio server; it binds to loopback by default."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["GatewayMetrics", "HealthServer"]

MAX_REQUEST_LINE: Final = 4096


class GatewayMetrics:
    """Every metric the gateway exports, in its own registry (no global state)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.queue_depth = Gauge("pledgewatch_gateway_queue_depth",
                                 "Readings in the outbox not yet acknowledged by the cloud",
                                 ["lane"], registry=r)
        self.oldest_unsent_age = Gauge("pledgewatch_gateway_oldest_unsent_age_seconds",
                                       "Age of the oldest reading not yet uploaded",
                                       registry=r)
        self.dropped = Gauge("pledgewatch_gateway_dropped_readings_total",
                             "Bulk readings dropped to stay within the disk budget", registry=r)
        self.outbox_bytes = Gauge("pledgewatch_gateway_outbox_bytes",
                                  "Bytes the outbox holds against its budget", registry=r)
        self.uploaded_batches = Counter("pledgewatch_gateway_uploaded_batches",
                                        "Batches the cloud acknowledged", registry=r)
        self.uploaded_readings = Counter("pledgewatch_gateway_uploaded_readings",
                                         "Readings in batches the cloud acknowledged",
                                         registry=r)
        self.upload_failures = Counter("pledgewatch_gateway_upload_failures",
                                       "Upload attempts that failed", ["reason"], registry=r)
        self.device_online = Gauge("pledgewatch_device_online",
                                   "1 while the device answers, else 0", ["device"],
                                   registry=r)
        self.device_frames = Gauge("pledgewatch_device_frames_total",
                                   "Good frames decoded from the device", ["device"],
                                   registry=r)
        self.device_errors = Gauge("pledgewatch_device_codec_errors_total",
                                   "Bad frames, garbage and checksum errors from the device",
                                   ["device"], registry=r)
        self.device_readings = Gauge("pledgewatch_device_readings_total",
                                     "Readings the device's driver stored", ["device"],
                                     registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    def __init__(self, *, host: str, port: int, metrics: GatewayMetrics,
                 health: Callable[[], dict[str, Any]],
                 refresh: Callable[[], None] | None = None) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.health = health
        self.refresh = refresh
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HealthServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line[:MAX_REQUEST_LINE].decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if parts[:1] != ["GET"]:
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/healthz":
                h = self.health()
                status = "200 OK" if h.get("ok") else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(h).encode()
            elif path == "/metrics":
                if self.refresh:
                    self.refresh()
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, self.metrics.render()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"try /healthz or /metrics\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                         f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
