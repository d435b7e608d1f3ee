"""The gateway end to end: simulated devices over real ptys and a real mosquitto, the
durable outbox, signed batches, and a receiver that verifies and dedupes them."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import paho.mqtt.client as paho

from firmware_sim import PtyLink
from firmware_sim.r2000_reader import R2000Reader, SimTag
from gateway.app import Gateway
from protocols.uplink import Lane, Reading
from tests.edge.driver_harness import stop_task
from tests.gateway.site_helpers import load, write_site
from tests.receiver import Receiver, receiver
from tests.services import mosquitto

EPCS = [bytes.fromhex(f"E28011700001000000{i:06X}") for i in range(8)]


async def run_gateway(gw: Gateway, until: Callable[[], bool], timeout_s: float = 30.0,
                      on_ready: Callable[[int], None] | None = None) -> None:
    task = asyncio.create_task(gw.run(on_ready=on_ready))
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while not until() and asyncio.get_running_loop().time() < deadline:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    finally:
        await stop_task(task)


def test_reader_and_mqtt_tracker_reach_the_receiver(tmp_path: Path) -> None:
    sim = R2000Reader(tags=[SimTag(epc=e, antennas=frozenset({1})) for e in EPCS], seed=1)
    with PtyLink(sim) as link, mosquitto(tmp_path / "mq") as broker:
        path, pub = write_site(
            tmp_path, uplink={"kind": "http", "url": "http://placeholder/v1/ingest",
                              "batch_max_age_s": 0.2},
            devices=[{"id": "gate-1", "kind": "r2000", "port": link.path,
                      "options": {"antennas": [1], "window_s": 0.2, "poll_interval_s": 0.05}},
                     {"id": "trackers", "kind": "mqtt_json", "topic": "dt/ranch-1/+/+"}],
            gateway={"device_broker_port": broker.port})
        with receiver({"gw-1": pub}) as rec:
            cfg = load(path)
            cfg = cfg.model_copy(update={"uplink": cfg.uplink.model_copy(
                update={"url": rec.url})})
            gw = Gateway(cfg)
            health: dict[str, object] = {}

            def publish_positions() -> None:
                c = paho.Client(paho.CallbackAPIVersion.VERSION2)
                c.connect("127.0.0.1", broker.port)
                c.loop_start()
                for i in range(5):
                    c.publish("dt/ranch-1/truck-9/position",
                              json.dumps({"ts": 1000 + i, "lat": -19.0, "lon": 24.0 + i}),
                              qos=1).wait_for_publish(10)
                c.loop_stop()
                c.disconnect()

            def done() -> bool:
                rs = rec.readings("gw-1")
                epcs = {r.data["epc"] for r in rs if r.kind == "tag_sighting"}
                pos = [r for r in rs if r.kind == "position"]
                if not pos and gw.mqtt_sources["trackers"].stats.connected and not health:
                    health["published"] = True
                    threading.Thread(target=publish_positions).start()
                return epcs >= {e.hex().upper() for e in EPCS} and len(pos) == 5

            async def go_with_probe() -> None:
                ports: list[int] = []
                t = asyncio.create_task(run_gateway(
                    gw, lambda: done() and "metrics" in health, on_ready=ports.append))
                while not ports:
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.5)
                async with httpx.AsyncClient() as c:
                    health["healthz"] = (await c.get(
                        f"http://127.0.0.1:{ports[0]}/healthz")).json()
                    health["metrics"] = (await c.get(
                        f"http://127.0.0.1:{ports[0]}/metrics")).text
                await t

            asyncio.run(go_with_probe())
    rs = rec.readings("gw-1")
    assert {r.data["epc"] for r in rs if r.kind == "tag_sighting"} == {
        e.hex().upper() for e in EPCS}
    assert sorted(r.data["lon"] for r in rs if r.kind == "position") == [24.0, 25.0, 26.0,
                                                                         27.0, 28.0]
    assert [r.device_id for r in rs if r.kind == "device_online"] == ["gate-1"]
    assert rec.rejected == []
    seqs = rec.seqs("gw-1")
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gaps, no reuse
    h = health["healthz"]
    assert isinstance(h, dict) and h["ok"] and h["devices"]["gate-1"]["online"] is True
    assert 'pledgewatch_device_online{device="gate-1"} 1.0' in str(health["metrics"])


class SimClock:
    def __init__(self, start_ms: int) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms


def _site(tmp_path: Path, rec: Receiver, **gateway: object) -> Gateway:
    path, _ = write_site(tmp_path, uplink={"kind": "http", "url": rec.url,
                                           "batch_max_readings": 500, "batch_max_age_s": 60,
                                           "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
                         gateway=dict(gateway))
    return Gateway(load(path), clock_ms=SimClock(1_767_225_600_000))


def test_72h_outage_everything_arrives_in_order_per_device(tmp_path: Path) -> None:
    with receiver({}) as rec:
        gw = _site(tmp_path, rec)
        from gateway.keys import load_private_key

        rec.keys["gw-1"] = load_private_key(gw.cfg.gateway.key_file).public_key()
        clock: SimClock = gw.clock_ms  # type: ignore[assignment]
        rec.mode = "down"
        devices = ["wb-1", "gps-1", "mixer-1"]
        minutes = 72 * 60

        async def go() -> None:
            task = asyncio.create_task(gw.run())
            try:
                for minute in range(minutes):  # one reading per device per simulated minute
                    clock.ms += 60_000
                    await gw.store([Reading("weight", d, clock.ms - 500, clock.ms,
                                            {"weight_kg": float(minute), "stable": True})
                                    for d in devices])
                    if minute % 500 == 0:
                        await asyncio.sleep(0)
                assert rec.readings() == []  # nothing got through during the outage
                depth = gw.outbox.stats().depth
                assert depth == minutes * len(devices)
                rec.mode = "up"
                deadline = asyncio.get_running_loop().time() + 60
                while (len(rec.readings()) < depth
                       and asyncio.get_running_loop().time() < deadline):
                    await asyncio.sleep(0.05)
            finally:
                await stop_task(task)

        asyncio.run(go())
    per_device: dict[str, list[float]] = defaultdict(list)
    for r in rec.readings("gw-1"):
        per_device[r.device_id].append(r.data["weight_kg"])
    assert set(per_device) == set(devices)
    for d in devices:
        assert per_device[d] == [float(m) for m in range(minutes)], d


def test_disk_budget_drops_oldest_bulk_only_and_reports_it(tmp_path: Path) -> None:
    with receiver({}) as rec:
        gw = _site(tmp_path, rec, disk_budget_mb=0.05)
        from gateway.keys import load_private_key

        rec.keys["gw-1"] = load_private_key(gw.cfg.gateway.key_file).public_key()
        clock: SimClock = gw.clock_ms  # type: ignore[assignment]
        rec.mode = "down"
        n = 6000

        async def go() -> None:
            task = asyncio.create_task(gw.run())
            try:
                for i in range(n):
                    clock.ms += 1000
                    batch = [Reading("position", "gps-1", clock.ms, clock.ms,
                                     {"lat": -19.0, "lon": 24.0 + i / 1e5})]
                    if i % 1000 == 0:
                        batch.append(Reading("alarm", "gps-1", clock.ms, clock.ms,
                                             {"alarm": f"tamper-{i}"}))
                    await gw.store(batch)
                rec.mode = "up"
                deadline = asyncio.get_running_loop().time() + 60
                while (gw.outbox.stats().depth
                       and asyncio.get_running_loop().time() < deadline):
                    await asyncio.sleep(0.05)
            finally:
                await stop_task(task)

        asyncio.run(go())
    rs = rec.readings("gw-1")
    alarms = [r.data["alarm"] for r in rs if r.kind == "alarm"]
    assert sorted(alarms) == sorted(f"tamper-{i}" for i in range(0, n, 1000))  # none dropped
    positions = [r for r in rs if r.kind == "position"]
    integrity = [r for r in rs if r.kind == "data_integrity"]
    dropped = sum(r.data["dropped"] for r in integrity)
    assert dropped > 0 and len(positions) + dropped == n
    # What was dropped is the oldest *queued* bulk: the batch already built and waiting for
    # the cloud when the outage began is kept whole (resends must be byte-identical), so the
    # survivors are that first batch plus the newest readings, and the loss is one contiguous
    # range in between, whose event-time range the data_integrity readings report.
    idx = [round((r.data["lon"] - 24.0) * 1e5) for r in positions]
    assert idx == sorted(idx)
    gap = next(k for k in range(len(idx)) if idx[k] != k)  # first missing index
    assert idx[gap:] == list(range(gap + dropped, n))
    first_lost_ms = positions[gap - 1].ts_ms + 1000
    last_lost_ms = positions[gap].ts_ms - 1000
    assert min(r.data["first_ms"] for r in integrity) == first_lost_ms
    assert max(r.data["last_ms"] for r in integrity) == last_lost_ms
    assert all(r.lane is Lane.PRIORITY for r in integrity)
