"""JSON-over-MQTT devices: the pure parser, and the source against a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from edge.mqtt_json import MqttJsonError, MqttJsonSource, parse_message
from tests.edge.driver_harness import MemorySink
from tests.services import mosquitto

SITE = "ranch-1"


@pytest.mark.parametrize(("topic", "payload", "kind", "data"), [
    ("dt/ranch-1/trk-7/position", {"ts": 1000, "lat": -19.5, "lon": 24.2},
     "position", {"lat": -19.5, "lon": 24.2, "speed_knots": None, "course_deg": None}),
    ("dt/ranch-1/mixer-1/weight", {"ts": 5, "weight_kg": 1520.5, "stable": True},
     "weight", {"weight_kg": 1520.5, "stable": True}),
    ("dt/ranch-1/mixer-1/feed", {"ts": 5, "event": "unload", "kg": 412.0, "pen": "P3"},
     "feed_event", {"event": "unload", "kg": 412.0, "pen": "P3"}),
    ("dt/ranch-1/hh-2/tag", {"ts": 9, "epc": "e2801170", "antenna": 1, "rssi_dbm": -55},
     "tag_sighting", {"epc": "E2801170", "antenna": 1, "count": 1, "first_ms": 9,
                      "last_ms": 9, "rssi_max_dbm": -55.0}),
    ("dt/ranch-1/trk-7/alarm", {"ts": 3, "alarm": "tamper_switch"}, "alarm",
     {"alarm": "tamper_switch"}),
], ids=["position", "weight", "feed", "tag", "alarm"])
def test_parse_valid(topic: str, payload: dict[str, object], kind: str,
                     data: dict[str, object]) -> None:
    (r,) = parse_message(topic, json.dumps(payload).encode(), site=SITE, recv_ms=77)
    assert (r.kind, r.data, r.recv_ms) == (kind, data, 77)
    assert r.ts_ms == payload["ts"] and r.device_id == topic.split("/")[2]


def test_status_topic_gives_availability() -> None:
    (r,) = parse_message("dt/ranch-1/trk-7/status", b"offline", site=SITE, recv_ms=5)
    assert r.kind == "device_offline" and r.device_id == "trk-7"


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    ("dt/ranch-1/trk/position", b"{not json", "bad_json"),
    ("dt/ranch-1/trk/position", b"[1, 2]", "bad_json"),
    ("dt/ranch-1/trk/position", b'{"lat": 95, "lon": 0}', "bad_field"),
    ("dt/ranch-1/trk/position", b'{"lat": "x", "lon": 0}', "bad_field"),
    ("dt/ranch-1/trk/position", b'{"lat": NaN, "lon": 0}', "bad_field"),
    ("dt/ranch-1/trk/weight", b'{"weight_kg": true}', "bad_field"),
    ("dt/ranch-1/trk/feed", b'{"event": "spill", "kg": 1}', "bad_field"),
    ("dt/ranch-1/trk/tag", b'{"epc": "ZZ"}', "bad_field"),
    ("dt/ranch-1/trk/position", b'{"lat": 1, "lon": 1, "ts": -4}', "bad_field"),
    ("dt/ranch-2/trk/position", b'{"lat": 1, "lon": 1}', "wrong_site"),
    ("dt/ranch-1/trk", b"{}", "bad_topic"),
    ("tele/trk/SENSOR", b"{}", "bad_topic"),
    ("dt/ranch-1/trk/status", b"sleeping", "bad_field"),
    ("dt/ranch-1/trk/position", b"\xff\xfe", "bad_json"),
    ("dt/ranch-1/trk/position", b" " * 70_000, "too_large"),
], ids=lambda v: v if isinstance(v, str) and not v.startswith("dt/") else None)
def test_parse_invalid(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(MqttJsonError) as info:
        parse_message(topic, payload, site=SITE, recv_ms=1)
    assert info.value.reason == reason


def _prime_session(port: int, client_id: str) -> None:
    """Create the gateway's persistent session and subscription up front, so the broker
    queues everything published from now on for it (no race with the source starting)."""
    done = {"sub": False}
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_subscribe = lambda *a: done.update(sub=True)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.subscribe(f"dt/{SITE}/+/+", qos=1)
        for _ in range(200):
            if done["sub"]:
                break
            time.sleep(0.05)
        assert done["sub"], "no SUBACK from mosquitto"
    finally:
        c.disconnect()
        c.loop_stop()


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        c.loop_stop()
        c.disconnect()


async def _run_source(port: int, sink: MemorySink, *, until: int, client_id: str,
                      timeout_s: float = 15.0) -> MqttJsonSource:
    src = MqttJsonSource(host="127.0.0.1", port=port, site=SITE, client_id=client_id,
                         sink=sink, clock_ms=lambda: 1, backoff=lambda a, j: 0.05)
    task = asyncio.create_task(src.run())
    deadline = asyncio.get_running_loop().time() + timeout_s
    while src.stats.messages < until and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return src


def _positions(n: int) -> list[tuple[str, bytes]]:
    return [(f"dt/{SITE}/trk-{i % 3}/position",
             json.dumps({"ts": i, "lat": -19 - i / 1000, "lon": 24}).encode()) for i in range(n)]


def test_source_stores_valid_messages_and_counts_bad_ones(tmp_path: Path) -> None:
    with mosquitto(tmp_path) as broker:
        sink = MemorySink()

        _prime_session(broker.port, "gw-a")
        msgs = _positions(50) + [(f"dt/{SITE}/trk-0/position", b"garbage"),
                                 (f"dt/{SITE}/trk-0/feed", b'{"event": "x", "kg": 1}')]
        _publish(broker.port, msgs)
        src = asyncio.run(_run_source(broker.port, sink, until=52, client_id="gw-a"))
    assert sorted(r.ts_ms for r in sink.readings) == list(range(50))
    assert src.stats.errors == 2 and src.stats.error_reasons == {"bad_json": 1, "bad_field": 1}


def test_unacknowledged_messages_are_redelivered_after_a_crash(tmp_path: Path) -> None:
    """The first gateway stores nothing (its sink never returns, like a process killed
    before the commit); the broker keeps the messages for the persistent session and the
    next gateway with the same client id gets every one of them."""
    with mosquitto(tmp_path) as broker:
        stuck = asyncio.Event()

        class HangingSink(MemorySink):
            async def __call__(self, readings: object) -> None:
                stuck.set()
                await asyncio.Event().wait()

        _prime_session(broker.port, "gw-b")
        _publish(broker.port, _positions(40))

        async def go() -> MemorySink:
            first = asyncio.create_task(_run_source(broker.port, HangingSink(), until=10**9,
                                                    client_id="gw-b", timeout_s=3))
            await asyncio.wait_for(stuck.wait(), 10)
            await first  # cancelled while holding unacknowledged messages
            sink = MemorySink()
            await _run_source(broker.port, sink, until=40, client_id="gw-b")
            return sink

        sink = asyncio.run(go())
    assert sorted(set(r.ts_ms for r in sink.readings)) == list(range(40))
