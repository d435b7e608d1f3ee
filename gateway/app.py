"""The gateway's composition root: drivers -> outbox -> batches -> uploader, plus the local
``/healthz`` and ``/metrics`` endpoint. ``pledgewatch edge run --config site.toml`` runs it.

Background work runs in one ``TaskGroup`` with named tasks; cancelling :meth:`Gateway.run`
(Ctrl-C, SIGTERM) stops everything and closes the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.coordinator import Coordinator
from edge.drivers import build_driver
from edge.mqtt_json import MqttJsonSource
from edge.transport import open_link
from gateway.backoff import Backoff, backoff_delay
from gateway.config import DeviceConfig, SiteConfig
from gateway.errors import ReadingRejected, UploadError
from gateway.health import GatewayMetrics, HealthServer
from gateway.keys import load_private_key
from gateway.outbox import Outbox
from gateway.uploader import HttpUploader, MqttUploader, SeqConflict, Uploader
from protocols.uplink import Lane, Reading
from uplink.envelope import pack_reading

__all__ = ["Gateway", "reading_digest", "wall_clock_ms"]

log = logging.getLogger("pledgewatch.gateway")

IDLE_POLL_S = 0.2
# 400/413/422: the cloud will never take this batch; 401/403 mean our key or registration is
# wrong, which an operator fixes, so that data is kept and retried.
_REJECTING_STATUSES = frozenset({400, 413, 422})


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def reading_digest(reading: Reading) -> str:
    """A stable id of a reading's content (used by the acknowledgement log)."""
    return hashlib.sha256(pack_reading(reading)).hexdigest()[:32]


class Gateway:
    def __init__(self, cfg: SiteConfig, *, clock_ms: Callable[[], int] = wall_clock_ms,
                 key: Ed25519PrivateKey | None = None, uploader: Uploader | None = None,
                 ack_log: Path | None = None, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.clock_ms = clock_ms
        self.key = key if key is not None else load_private_key(cfg.gateway.key_file)
        self.rng = rng or random.Random()
        gw = cfg.gateway
        gw.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(gw.data_dir / "outbox.sqlite", gateway_id=gw.id,
                             disk_budget_bytes=int(gw.disk_budget_mb * 1024 * 1024),
                             clock_ms=clock_ms)
        up = cfg.uplink
        self.uploader: Uploader = uploader or (
            HttpUploader(url=up.url or "", timeout_s=up.timeout_s, gateway_id=gw.id)
            if up.kind == "http" else
            MqttUploader(host=up.mqtt_host, port=up.mqtt_port, topic=up.mqtt_topic,
                         gateway_id=gw.id, timeout_s=up.timeout_s))
        self.metrics = GatewayMetrics()
        self.ack_log = ack_log
        self._ack_file: Any = None
        self._wake = asyncio.Event()
        self.backoff = functools.partial(self._device_backoff, cap_s=up.backoff_cap_s)
        self.coordinators: dict[str, Coordinator] = {}
        # RFID reader id -> weighbridge drivers it identifies trucks for
        self.truck_readers: dict[str, list[Any]] = {}
        self.mqtt_sources: dict[str, MqttJsonSource] = {}
        for dev in cfg.device:
            self._add_device(dev)
        self.upload_backoff = Backoff(base_s=up.backoff_base_s, cap_s=up.backoff_cap_s)
        self.last_upload_error = ""
        self.rejected_readings = 0  # readings a driver produced that break the contract
        self._last_store_ms = clock_ms()
        self.last_upload_ok_ms: int | None = None

    @staticmethod
    def _device_backoff(attempt: int, jitter: float, *, cap_s: float) -> float:
        return backoff_delay(attempt, jitter, base_s=0.5, cap_s=cap_s)

    def _add_device(self, dev: DeviceConfig) -> None:
        if dev.kind == "mqtt_json":
            self.mqtt_sources[dev.id] = MqttJsonSource(
                host=self.cfg.gateway.device_broker_host,
                port=self.cfg.gateway.device_broker_port,
                site=self.cfg.gateway.site, client_id=f"pw-{self.cfg.gateway.id}-{dev.id}",
                sink=self.store, clock_ms=self.clock_ms, backoff=self.backoff,
                topic_filter=dev.topic, rng=random.Random(self.rng.random()))
            return
        driver = build_driver(dev.kind, device_id=dev.id,
                              silence_timeout_s=dev.silence_timeout_s, options=dev.options)
        port = dev.port or ""
        opener = functools.partial(open_link, port, baudrate=dev.baudrate,
                                   bytesize=dev.bytesize, parity=dev.parity,
                                   stopbits=dev.stopbits, device_id=dev.id)
        if dev.truck_reader is not None:
            self.truck_readers.setdefault(dev.truck_reader, []).append(driver)
        self.coordinators[dev.id] = Coordinator(
            device_id=dev.id, open_link=opener, driver=driver, sink=self.store,
            clock_ms=self.clock_ms, backoff=self.backoff,
            rng=random.Random(self.rng.random()))

    # -- the sink every driver writes to ---------------------------------------------------
    async def store(self, readings: Sequence[Reading]) -> None:
        """Commit readings to the outbox; returning acknowledges them to the driver."""
        if not readings:
            return
        if self.truck_readers:
            for r in readings:
                if r.kind == "tag_sighting" and r.device_id in self.truck_readers:
                    for weighbridge in self.truck_readers[r.device_id]:
                        weighbridge.set_truck(r.data["epc"], r.ts_ms)
        readings = list(readings)
        self._last_store_ms = self.clock_ms()
        while True:
            try:
                await asyncio.to_thread(self.outbox.append, readings)
                break
            except ReadingRejected as exc:
                # a driver produced a reading the cloud would refuse: drop that one reading
                # (counted, logged) and store the good ones beside it
                log.error("dropped a reading that breaks the uplink contract: %s (%r)", exc,
                          readings[exc.index])
                self.rejected_readings += 1
                del readings[exc.index]
                if not readings:
                    return
        if self._ack_file is not None:
            self._ack_file.write("".join(reading_digest(r) + "\n" for r in readings))
            self._ack_file.flush()
        if any(r.lane is Lane.PRIORITY for r in readings):
            self._wake.set()

    async def heartbeat_loop(self) -> None:
        """Store a ``heartbeat`` reading whenever nothing was stored for ``heartbeat_s``."""
        every_ms = int(self.cfg.uplink.heartbeat_s * 1000)
        while True:
            await asyncio.sleep(self.cfg.uplink.heartbeat_s / 4)
            now = self.clock_ms()
            if now - self._last_store_ms >= every_ms:
                pending = (await asyncio.to_thread(self.outbox.stats)).depth
                await self.store([Reading("heartbeat", f"gateway:{self.cfg.gateway.id}", now,
                                          now, {"outbox_readings": pending})])

    # -- upload loop -----------------------------------------------------------------------
    async def upload_loop(self) -> None:
        """Upload the outbox's batches one at a time, oldest first; a batch leaves the
        outbox only after a 2xx (or PUBACK). A 409 refusing the batch's seq (the outbox was
        replaced or restored: see :meth:`Outbox.rebase`) re-signs the same readings above
        the cloud's ``last_seq`` and sends them again at once; a second refusal in a row
        backs off like any failure."""
        up = self.cfg.uplink
        max_age_ms = int(up.batch_max_age_s * 1000)
        seq_refusals = 0  # consecutive 409s refusing a seq
        while True:
            due = await asyncio.to_thread(self.outbox.should_flush, self.clock_ms(),
                                          max_age_ms, up.batch_max_readings)
            if not due:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
                continue
            batch = await asyncio.to_thread(self.outbox.next_batch, up.batch_max_readings,
                                            up.batch_max_bytes, self.key)
            if batch is None:
                continue
            try:
                await self.uploader.send(batch.envelope, seq=batch.seq)
            except UploadError as exc:
                self.metrics.upload_failures.labels(reason=exc.reason).inc()
                self.last_upload_error = str(exc)
                if isinstance(exc, SeqConflict):
                    # nothing of the batch was stored: same readings, new seq (counted
                    # above by reason: one rebase per such failure)
                    await asyncio.to_thread(self.outbox.rebase, batch.seq,
                                            exc.cloud_last_seq, self.key)
                    seq_refusals += 1
                    if seq_refusals > 1:
                        await asyncio.sleep(self.upload_backoff.failed(self.rng.random()))
                    continue
                if exc.status in _REJECTING_STATUSES:
                    await asyncio.to_thread(self.outbox.reject, batch.seq, exc.reason)
                    continue
                delay = self.upload_backoff.failed(self.rng.random(),
                                                   retry_after_s=exc.retry_after_s)
                log.warning("upload of batch %d failed (%s); retrying in %.1f s", batch.seq,
                            exc.reason, delay)
                await asyncio.sleep(delay)
                continue
            await asyncio.to_thread(self.outbox.ack, batch.seq)
            seq_refusals = 0
            self.upload_backoff.succeeded()
            self.last_upload_ok_ms = self.clock_ms()
            self.metrics.uploaded_batches.inc()
            self.metrics.uploaded_readings.inc(batch.readings)

    # -- health ----------------------------------------------------------------------------
    def refresh_metrics(self) -> None:
        st = self.outbox.stats()
        m = self.metrics
        for lane in Lane:
            m.queue_depth.labels(lane=lane.name.lower()).set(st.depth_by_lane[lane])
        m.oldest_unsent_age.set(0 if st.oldest_unsent_ms is None else
                                max(0, self.clock_ms() - st.oldest_unsent_ms) / 1000)
        m.dropped.set(st.dropped_total)
        m.outbox_bytes.set(st.bytes_used)
        for dev_id, c in self.coordinators.items():
            m.device_online.labels(device=dev_id).set(1 if c.online else 0)
            m.device_frames.labels(device=dev_id).set(c.stats.frames)
            m.device_errors.labels(device=dev_id).set(c.stats.codec_errors)
            m.device_readings.labels(device=dev_id).set(c.stats.readings)
        for dev_id, s in self.mqtt_sources.items():
            m.device_online.labels(device=dev_id).set(1 if s.stats.connected else 0)
            m.device_frames.labels(device=dev_id).set(s.stats.messages)
            m.device_errors.labels(device=dev_id).set(s.stats.errors)
            m.device_readings.labels(device=dev_id).set(s.stats.readings)

    def health(self) -> dict[str, Any]:
        st = self.outbox.stats()
        return {
            "ok": True,
            "gateway": self.cfg.gateway.id,
            "queue_depth": st.depth,
            "oldest_unsent_ms": st.oldest_unsent_ms,
            "dropped_total": st.dropped_total,
            "last_seq": st.last_seq,
            "last_upload_ok_ms": self.last_upload_ok_ms,
            "last_upload_error": self.last_upload_error,
            "devices": {d: {"online": c.online, "frames": c.stats.frames,
                            "codec_errors": c.stats.codec_errors,
                            "last_error": c.last_error}
                        for d, c in self.coordinators.items()}
                       | {d: {"online": s.stats.connected, "frames": s.stats.messages,
                              "codec_errors": s.stats.errors, "last_error": ""}
                          for d, s in self.mqtt_sources.items()},
        }

    # -- lifetime --------------------------------------------------------------------------
    async def run(self, *, on_ready: Callable[[int], None] | None = None) -> None:
        """Run until cancelled. ``on_ready(port)`` is called once the health endpoint
        listens (with its real port when configured as 0)."""
        if self.outbox.recovered_from is not None:
            now = self.clock_ms()
            await self.store([Reading(
                "data_integrity", f"gateway:{self.cfg.gateway.id}", now, now,
                {"dropped": 0, "first_ms": now, "last_ms": now,
                 "reason": f"outbox_corrupt: moved to {self.outbox.recovered_from.name}"})])
        if self.ack_log is not None:
            self._ack_file = self.ack_log.open("a", encoding="ascii")
        gw = self.cfg.gateway
        try:
            async with self.uploader, HealthServer(
                    host=gw.http_host, port=gw.http_port, metrics=self.metrics,
                    health=self.health, refresh=self.refresh_metrics) as server:
                if on_ready is not None:
                    on_ready(server.port)
                log.info("gateway %s up: %d devices, health on http://%s:%d/healthz", gw.id,
                         len(self.cfg.device), gw.http_host, server.port)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self.upload_loop(), name="uploader")
                    tg.create_task(self.heartbeat_loop(), name="heartbeat")
                    for dev_id, c in self.coordinators.items():
                        tg.create_task(c.run(), name=f"device:{dev_id}")
                    for dev_id, s in self.mqtt_sources.items():
                        tg.create_task(s.run(), name=f"mqtt:{dev_id}")
        finally:
            if self._ack_file is not None:
                self._ack_file.close()
                self._ack_file = None
            self.outbox.close()
