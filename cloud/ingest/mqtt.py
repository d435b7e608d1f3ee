"""Batches published over MQTT (``pledgewatch/ingest/<gateway_id>``, QoS 1, docs/uplink.md)
go through the same :class:`~cloud.ingest.service.IngestService` as ``POST /v1/ingest``.

* A shared subscription (``$share/pledgewatch-cloud/...``) lets several cloud processes split
  the load: the broker hands each message to one of them.
* The PUBACK is sent only after the service answered: stored (committed), duplicate (already
  committed), or rejected (it will never succeed, so it is counted per reason and dropped).
  aiomqtt has no manual-ack switch, so we turn on that of the paho-mqtt client it wraps. While
  the service is busy or its store unavailable, the message is held unacknowledged and
  retried after the service's Retry-After; a process that dies meanwhile never acknowledged
  it, and the broker redelivers it (persistent session: ``clean_session`` false and a
  ``client_id`` that stays the same across restarts of this process - ``CloudSettings.
  mqtt_client_id``, by default from the host name - so a restarted process resumes its own
  session; a new id at every start would leave a dead session in the shared-subscription
  group, which mosquitto keeps handing its share of the messages to).
* A batch refused because its seq cannot be taken (``seq_reused``: another batch under a
  seq already stored, e.g. from an outbox restored from a backup; ``replay_outside_window``)
  is NOT a duplicate: it is counted by reason and logged as a warning. Over MQTT the answer
  cannot reach the gateway (it deleted the batch at the broker's PUBACK), so those readings
  are lost - loudly; over HTTP the gateway re-signs them above the cloud's ``last_seq``.
* The connection is re-established with capped, jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final

import aiomqtt

from cloud.errors import IngestBusy, IngestRejected, IngestUnavailable
from cloud.ingest.service import IngestService, SeqConflict

__all__ = ["DEFAULT_TOPIC", "MqttIngest", "MqttIngestStats", "reconnect_delay_s"]

log = logging.getLogger("pledgewatch.cloud.ingest.mqtt")

DEFAULT_TOPIC: Final = "$share/pledgewatch-cloud/pledgewatch/ingest/+"
BACKOFF_BASE_S: Final = 0.5
BACKOFF_CAP_S: Final = 30.0
MAX_HOLD_RETRY_S: Final = 30.0


def reconnect_delay_s(attempt: int, jitter: float, *, base_s: float = BACKOFF_BASE_S,
                      cap_s: float = BACKOFF_CAP_S) -> float:
    """Equal-jitter exponential backoff: uniform in ``[ceiling/2, ceiling]`` with
    ``ceiling = min(cap, base * 2**(attempt-1))``; ``jitter`` in ``[0, 1)``."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempt, 1) - 1, 62))
    return ceiling / 2.0 * (1.0 + jitter)


@dataclasses.dataclass
class MqttIngestStats:
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    held_retries: int = 0  # busy / unavailable answers while holding a message
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    connects: int = 0
    connected: bool = False
    subscribed: bool = False


class MqttIngest:
    """Consume envelopes from ``topic`` into ``service`` until cancelled."""

    def __init__(self, *, host: str, port: int, service: IngestService, client_id: str,
                 topic: str = DEFAULT_TOPIC, keepalive_s: int = 30,
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.host = host
        self.port = port
        self.service = service
        self.client_id = client_id
        self.topic = topic
        self.keepalive_s = keepalive_s
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.stats = MqttIngestStats()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                client = aiomqtt.Client(self.host, self.port, identifier=self.client_id,
                                        clean_session=False, keepalive=self.keepalive_s)
                # paho under aiomqtt: hold PUBACKs until the batch is committed
                client._client.manual_ack_set(True)
                async with client:
                    self.stats.connects += 1
                    self.stats.connected = True
                    failures = 0
                    await client.subscribe(self.topic, qos=1)
                    self.stats.subscribed = True
                    log.info("MQTT ingest %s subscribed to %s on %s:%s", self.client_id,
                             self.topic, self.host, self.port)
                    async for msg in client.messages:
                        await self._handle(client, msg)
            except aiomqtt.MqttError as exc:
                if self.stats.connected:
                    log.warning("MQTT ingest %s lost %s:%s: %s", self.client_id, self.host,
                                self.port, exc)
            finally:
                self.stats.connected = self.stats.subscribed = False
            failures += 1
            await self.sleep(reconnect_delay_s(failures, self.rng.random()))

    async def _handle(self, client: aiomqtt.Client, msg: aiomqtt.Message) -> None:
        self.stats.messages += 1
        payload = msg.payload
        data = (bytes(payload) if isinstance(payload, bytes | bytearray)
                else str(payload or "").encode())
        while True:
            try:
                result = await self.service.submit(data)
            except IngestRejected as exc:
                self.stats.rejected[exc.reason] = self.stats.rejected.get(exc.reason, 0) + 1
                if isinstance(exc, SeqConflict):
                    log.warning("MQTT batch on %s refused (%s): %s; the gateway cannot be "
                                "told over MQTT, so its readings are lost (the gateway's "
                                "last stored seq is %d)", msg.topic, exc.reason, exc.detail,
                                exc.last_seq)
                else:
                    log.info("MQTT batch on %s rejected: %s", msg.topic, exc)
                break
            except (IngestBusy, IngestUnavailable) as exc:
                self.stats.held_retries += 1
                await self.sleep(min(exc.retry_after_s, MAX_HOLD_RETRY_S))
                continue
            if result.status == "stored":
                self.stats.stored += 1
            else:
                self.stats.duplicates += 1
            break
        if msg.qos > 0:
            with contextlib.suppress(Exception):  # a lost connection: the broker redelivers
                client._client.ack(msg.mid, msg.qos)
