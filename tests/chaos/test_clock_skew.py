"""Clock skew: devices whose clocks are hours ahead or behind (or were never set: 1970), on a
gateway whose own clock is three hours fast, all feeding a real ``pledgewatch cloud serve``.

The documented behaviour (cloud/ingest/service.py, docs/uplink.md): ingest refuses nothing
for its *time*. ``ts_ms`` is the device's event time and ``recv_ms``/``created_ms`` the
gateway's clock, stored as sent; the only window is on ``seq`` (``replay_outside_window``),
which a running gateway never leaves. So every reading arrives, with the times it was sent
with, and the decision what a skewed time means is left to the domain (event-time rules).

The devices are JSON-over-MQTT trackers publishing their own ``ts`` through a real mosquitto
(docs/mqtt.md)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import paho.mqtt.publish as publish

from gateway.app import Gateway
from protocols.uplink import Reading
from tests.chaos.support import CloudProcess, stored, until_async
from tests.cloud.bank_setup import setup_bank
from tests.edge.driver_harness import stop_task
from tests.gateway.site_helpers import load, write_site
from tests.services import mosquitto

HOUR_MS = 3_600_000
GATEWAY_SKEW_MS = 3 * HOUR_MS
DEVICE_SKEW_MS = {"trk-ok": 0, "trk-ahead": 5 * HOUR_MS, "trk-behind": -7 * HOUR_MS,
                  "trk-unset": None}  # None: an RTC that was never set, counting from 1970
PER_DEVICE = 40


def test_skewed_device_and_gateway_clocks_lose_nothing(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cloud = CloudProcess(tmp_path, db_url)
    published: dict[str, list[int]] = {d: [] for d in DEVICE_SKEW_MS}
    result: dict[str, object] = {}

    def gateway_clock() -> int:
        return time.time_ns() // 1_000_000 + GATEWAY_SKEW_MS

    with mosquitto(tmp_path / "mq") as broker, cloud:
        site, _ = write_site(
            tmp_path, uplink={"kind": "http", "url": cloud.ingest_url, "batch_max_age_s": 0.2,
                              "backoff_base_s": 0.05, "backoff_cap_s": 0.5},
            devices=[{"id": "trackers", "kind": "mqtt_json", "topic": "dt/ranch-1/+/+"}],
            gateway={"device_broker_port": broker.port})
        setup_bank(tmp_path, db_url, tmp_path / "keys" / "gw-1.key.pub")

        def send(msgs: list[tuple[str, str]]) -> None:
            publish.multiple([{"topic": t, "payload": p, "qos": 1} for t, p in msgs],
                             hostname="127.0.0.1", port=broker.port)

        async def go() -> None:
            gw = Gateway(load(site), clock_ms=gateway_clock)
            task = asyncio.create_task(gw.run(), name="gateway")
            source = gw.mqtt_sources["trackers"]
            try:
                # the subscription is in place once a probe comes back through it
                while source.stats.messages == 0:
                    await asyncio.to_thread(send, [("dt/ranch-1/probe/status", "online")])
                    await asyncio.sleep(0.2)
                msgs = []
                for i in range(PER_DEVICE):
                    now = time.time_ns() // 1_000_000
                    for device, skew in DEVICE_SKEW_MS.items():
                        ts = 1_000 * (i + 1) if skew is None else now + skew + i
                        published[device].append(ts)
                        msgs.append((f"dt/ranch-1/{device}/position", json.dumps(
                            {"ts": ts, "lat": -31.4, "lon": -64.2 + i / 1e5})))
                await asyncio.to_thread(send, msgs)
                want = len(DEVICE_SKEW_MS) * PER_DEVICE
                result["arrived"] = await until_async(lambda: len(
                    [r for r in stored(db_url).readings
                     if r.device_id.startswith("trk-")]) >= want, 30)
                result["mqtt_errors"] = dict(source.stats.error_reasons)
                result["rejected"] = gw.rejected_readings
            finally:
                await stop_task(task)

        asyncio.run(go())
        got = stored(db_url)
    assert result["arrived"], cloud.log()
    assert result["mqtt_errors"] == {} and result["rejected"] == 0
    by_device: dict[str, list[Reading]] = {}
    for r in got.readings:
        by_device.setdefault(r.device_id, []).append(r)
    for device, sent_ts in published.items():
        rs = by_device[device]
        # every reading once, with the device's own time, in the order the device sent them
        assert [r.ts_ms for r in rs] == sent_ts, device
        # recv_ms is the gateway's (fast) clock, also as sent
        wall_ms = time.time_ns() // 1_000_000
        assert all(wall_ms < r.recv_ms <= wall_ms + GATEWAY_SKEW_MS for r in rs), device
