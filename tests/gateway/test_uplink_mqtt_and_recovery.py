"""The MQTT uplink through a real mosquitto (restarted mid-run), and a corrupt outbox found
at start being moved aside and reported."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

from gateway.app import Gateway
from gateway.keys import load_private_key
from protocols.uplink import Batch, Reading
from tests.edge.driver_harness import stop_task
from tests.gateway.site_helpers import load, write_site
from tests.receiver import receiver
from tests.services import mosquitto
from uplink.envelope import decode_envelope


class Collector:
    """Subscribes to the ingest topic with a persistent session and verifies envelopes."""

    def __init__(self, port: int, pub: object) -> None:
        self.batches: dict[int, Batch] = {}
        self.lock = threading.Lock()
        self.pub = pub
        self.ready = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cloud-collector",
                             clean_session=False)
        self.c.on_connect = lambda c, *a: c.subscribe("pledgewatch/ingest/+", qos=1)
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(10)

    def _on_message(self, client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        batch = decode_envelope(msg.payload, {"gw-1": self.pub}.get)  # type: ignore[arg-type]
        with self.lock:
            self.batches[batch.seq] = batch

    def readings(self) -> list[Reading]:
        with self.lock:
            return [r for s in sorted(self.batches) for r in self.batches[s].readings]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_mqtt_uplink_survives_a_broker_restart(tmp_path: Path) -> None:
    with mosquitto(tmp_path / "mq") as broker:
        path, pub = write_site(tmp_path, uplink={
            "kind": "mqtt", "mqtt_port": broker.port, "batch_max_readings": 50,
            "batch_max_age_s": 0.1, "backoff_base_s": 0.05, "backoff_cap_s": 0.3})
        collector = Collector(broker.port, pub)
        gw = Gateway(load(path))
        n = 400

        async def go() -> None:
            task = asyncio.create_task(gw.run())
            try:
                for i in range(n):
                    await gw.store([Reading("weight", "wb", i, i, {"weight_kg": float(i),
                                                                 "stable": True})])
                    if i == n // 2:
                        await asyncio.to_thread(broker.restart)
                    await asyncio.sleep(0.002)
                deadline = time.monotonic() + 60
                while len({r.ts_ms for r in collector.readings()}) < n and (
                        time.monotonic() < deadline):
                    await asyncio.sleep(0.1)
            finally:
                await stop_task(task)

        try:
            asyncio.run(go())
        finally:
            collector.close()
    got = [r.ts_ms for r in collector.readings()]
    assert sorted(set(got)) == list(range(n))  # nothing lost across the restart
    assert got == sorted(got)  # and in order
    assert len(got) == n  # batches are keyed by seq: a redelivered batch does not double


def test_corrupt_outbox_is_moved_aside_and_reported(tmp_path: Path) -> None:
    with receiver({}) as rec:
        path, pub = write_site(tmp_path, uplink={"kind": "http", "url": rec.url,
                                                 "batch_max_age_s": 0.1})
        rec.keys["gw-1"] = pub
        data = tmp_path / "data"
        data.mkdir()
        (data / "outbox.sqlite").write_bytes(b"this is not a database" * 100)
        gw = Gateway(load(path))
        assert gw.outbox.recovered_from is not None and gw.outbox.recovered_from.exists()

        async def go() -> None:
            task = asyncio.create_task(gw.run())
            deadline = time.monotonic() + 20
            while not rec.readings() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await stop_task(task)

        asyncio.run(go())
    (r,) = rec.readings("gw-1")
    assert r.kind == "data_integrity" and r.data["reason"].startswith("outbox_corrupt")
    assert gw.outbox.recovered_from.name in r.data["reason"]
    assert load_private_key(gw.cfg.gateway.key_file) is not None
