"""Networked devices that publish JSON over MQTT (GPS trackers, Wi-Fi TMR mixers, handheld
readers). Topic scheme and payloads: ``docs/mqtt.md``.

``dt/<site>/<device>/<kind>`` carries one JSON object per message, QoS 1; ``<kind>`` is one of
``position``, ``weight``, ``feed``, ``tag``, ``alarm``. ``dt/<site>/<device>/status`` carries
``online``/``offline`` (retained; devices set it as their MQTT will).

The gateway subscribes with a persistent session (clean_session false, fixed client id) and
acknowledges each message to the broker only after its readings are committed to the outbox,
so a gateway killed at any moment loses nothing the broker had accepted: the broker
redelivers what was not acknowledged. aiomqtt has no manual-ack switch, so we turn on
paho-mqtt's (``manual_ack_set``/``ack``) on the client aiomqtt wraps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiomqtt

from edge.coordinator import ReadingSink
from edge.errors import EdgeError
from protocols.uplink import Reading, UplinkError

__all__ = ["MAX_PAYLOAD", "MqttJsonError", "MqttJsonSource", "parse_message"]

log = logging.getLogger("pledgewatch.edge.mqtt")

MAX_PAYLOAD: Final = 64 * 1024
_KINDS: Final = ("position", "weight", "feed", "tag", "alarm", "status")


class MqttJsonError(EdgeError):
    """A message that does not follow docs/mqtt.md. ``reason`` is machine-readable."""

    def __init__(self, message: str, *, reason: str, device_id: str = "") -> None:
        super().__init__(message, device_id=device_id)
        self.reason = reason


def _num(obj: dict[str, Any], key: str, *, required: bool = True) -> float | None:
    v = obj.get(key)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise MqttJsonError(f"{key} must be a finite number, got {v!r}", reason="bad_field")
    return float(v)


def _ts(obj: dict[str, Any], recv_ms: int) -> int:
    ts = obj.get("ts", recv_ms)
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts < 2**53:
        raise MqttJsonError(f"ts must be integer milliseconds since the epoch, got {ts!r}",
                            reason="bad_field")
    return ts


def parse_message(topic: str, payload: bytes, *, site: str, recv_ms: int) -> list[Reading]:
    """Readings for one MQTT message (pure). Raises :class:`MqttJsonError`."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "dt" or parts[3] not in _KINDS:
        raise MqttJsonError(f"topic {topic!r} is not dt/<site>/<device>/<kind>",
                            reason="bad_topic")
    _, topic_site, device, kind = parts
    if topic_site != site:
        raise MqttJsonError(f"topic {topic!r} belongs to site {topic_site!r}, not {site!r}",
                            reason="wrong_site", device_id=device)
    if len(payload) > MAX_PAYLOAD:
        raise MqttJsonError(f"payload of {len(payload)} bytes > {MAX_PAYLOAD}",
                            reason="too_large", device_id=device)
    if kind == "status":
        state = payload.decode("utf-8", "replace").strip().lower()
        if state not in ("online", "offline"):
            raise MqttJsonError(f"status must be online or offline, got {state!r}",
                                reason="bad_field", device_id=device)
        status = {"driver": "mqtt_json"} if state == "online" else {"reason": "mqtt status"}
        return [Reading(f"device_{state}", device, recv_ms, recv_ms, status)]
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MqttJsonError(f"payload is not JSON: {exc}", reason="bad_json",
                            device_id=device) from None
    if not isinstance(obj, dict):
        raise MqttJsonError("payload must be a JSON object", reason="bad_json",
                            device_id=device)
    try:
        ts = _ts(obj, recv_ms)
        data: dict[str, Any]
        if kind == "position":
            lat, lon = _num(obj, "lat"), _num(obj, "lon")
            assert lat is not None and lon is not None  # required=True
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise MqttJsonError("lat/lon out of range", reason="bad_field")
            data = {"lat": lat, "lon": lon,
                    "speed_knots": _num(obj, "speed_knots", required=False),
                    "course_deg": _num(obj, "course_deg", required=False)}
            out = "position"
        elif kind == "weight":
            stable = obj.get("stable")
            if stable is not None and not isinstance(stable, bool):
                raise MqttJsonError("stable must be true, false or null", reason="bad_field")
            data = {"weight_kg": _num(obj, "weight_kg"), "stable": stable}
            out = "weight"
        elif kind == "feed":
            event = obj.get("event")
            pen = obj.get("pen")
            if event not in ("load", "unload"):
                raise MqttJsonError("event must be load or unload", reason="bad_field")
            if pen is not None and not isinstance(pen, str):
                raise MqttJsonError("pen must be a string or null", reason="bad_field")
            data = {"event": event, "kg": _num(obj, "kg"), "pen": pen}
            out = "feed_event"
        elif kind == "tag":
            epc = obj.get("epc")
            if not isinstance(epc, str) or not epc or len(epc) > 124 or any(
                    c not in "0123456789ABCDEFabcdef" for c in epc):
                raise MqttJsonError("epc must be a hex string", reason="bad_field")
            ant = obj.get("antenna")
            if ant is not None and (isinstance(ant, bool) or not isinstance(ant, int)):
                raise MqttJsonError("antenna must be an integer or null", reason="bad_field")
            data = {"epc": epc.upper(), "antenna": ant, "count": 1, "first_ms": ts,
                    "last_ms": ts, "rssi_max_dbm": _num(obj, "rssi_dbm", required=False)}
            out = "tag_sighting"
        else:  # alarm
            alarm = obj.get("alarm")
            if not isinstance(alarm, str) or not alarm:
                raise MqttJsonError("alarm must be a non-empty string", reason="bad_field")
            data = {"alarm": alarm[:200]}
            out = "alarm"
    except MqttJsonError as exc:
        exc.device_id = device
        raise
    reading = Reading(out, device, ts, recv_ms, data)
    try:  # the same check the cloud applies: refuse here rather than poison a batch
        Reading.from_wire(reading.to_wire())
    except UplinkError as exc:
        raise MqttJsonError(str(exc), reason=exc.reason, device_id=device) from None
    return [reading]


@dataclass
class MqttSourceStats:
    messages: int = 0
    readings: int = 0
    errors: int = 0
    error_reasons: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    connected: bool = False


class MqttJsonSource:
    """Subscribes to ``dt/<site>/+/+`` and stores what arrives, acknowledging to the broker
    after the sink (the outbox) committed. Reconnects with the given backoff."""

    def __init__(self, *, host: str, port: int, site: str, client_id: str, sink: ReadingSink,
                 clock_ms: Callable[[], int], backoff: Callable[[int, float], float],
                 topic_filter: str | None = None, rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.host = host
        self.port = port
        self.site = site
        self.client_id = client_id
        self.sink = sink
        self.clock_ms = clock_ms
        self.backoff = backoff
        self.topic_filter = topic_filter or f"dt/{site}/+/+"
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.stats = MqttSourceStats()

    def _error(self, reason: str) -> None:
        self.stats.errors += 1
        self.stats.error_reasons[reason] = self.stats.error_reasons.get(reason, 0) + 1

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                client = aiomqtt.Client(self.host, self.port, identifier=self.client_id,
                                        clean_session=False, keepalive=30)
                # paho under aiomqtt: hold PUBACKs until we say the data is stored
                client._client.manual_ack_set(True)
                async with client:
                    self.stats.connects += 1
                    self.stats.connected = True
                    failures = 0
                    await client.subscribe(self.topic_filter, qos=1)
                    async for msg in client.messages:
                        await self._handle(client, msg)
            except aiomqtt.MqttError as exc:
                log.warning("MQTT source %s:%s: %s", self.host, self.port, exc)
            finally:
                self.stats.connected = False
            failures += 1
            await self.sleep(self.backoff(failures, self.rng.random()))

    async def _handle(self, client: aiomqtt.Client, msg: aiomqtt.Message) -> None:
        self.stats.messages += 1
        payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
        try:
            readings = parse_message(str(msg.topic), payload, site=self.site,
                                     recv_ms=self.clock_ms())
        except MqttJsonError as exc:
            self._error(exc.reason)
            log.debug("bad MQTT message on %s: %s", msg.topic, exc)
            readings = []
        if readings:
            await self.sink(readings)  # committed: now the broker may forget it
            self.stats.readings += len(readings)
        if msg.qos > 0:
            with contextlib.suppress(Exception):
                client._client.ack(msg.mid, msg.qos)
