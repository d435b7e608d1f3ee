"""MQTT ingest through a real mosquitto: two consumers on the shared subscription (as two cloud
processes) split the load, and every batch is stored once; rejected ones are counted and
acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.ingest.mqtt import MqttIngest, reconnect_delay_s
from cloud.ingest.service import IngestService
from protocols.uplink import unpack_header
from tests.cloud.conftest import T0_MS, Db, gateway_envelopes, reading_mix
from tests.services import mosquitto

DEADLINE_S = 60.0


def test_reconnect_delay_is_capped_and_jittered() -> None:
    assert reconnect_delay_s(1, 0.0) == 0.25
    assert reconnect_delay_s(1, 0.999) < 0.5
    assert reconnect_delay_s(3, 0.0) == 1.0
    assert reconnect_delay_s(1000, 0.0) == 15.0
    assert reconnect_delay_s(1000, 0.999) <= 30.0


def test_two_consumers_split_the_load_and_store_every_batch_once(db: Db,
                                                                 tmp_path: Path) -> None:
    keys = {gw: Ed25519PrivateKey.generate() for gw in ("gw-a", "gw-b")}
    for gw, key in keys.items():
        db.add_gateway(gw, key)
    envelopes = {gw: gateway_envelopes(tmp_path / f"{gw}.db", gw, key,
                                       reading_mix(1000, seed=len(gw) + i), per_batch=50)
                 for i, (gw, key) in enumerate(keys.items())}
    assert all(len(v) == 20 for v in envelopes.values())
    forged = bytearray(envelopes["gw-a"][0])
    forged[-1] ^= 1

    async def main(port: int) -> None:
        services = [IngestService(sessions=db.another_sessionmaker(), clock_ms=lambda: T0_MS,
                                  queue_size=8, replay_window=1000) for _ in range(2)]
        consumers = [MqttIngest(host="127.0.0.1", port=port, service=s,
                                client_id=f"pw-cloud-{i}") for i, s in enumerate(services)]
        async with contextlib.AsyncExitStack() as stack:
            for s in services:
                await stack.enter_async_context(s)
            tasks = [asyncio.create_task(c.run(), name=f"mqtt-ingest-{i}")
                     for i, c in enumerate(consumers)]
            try:
                await _until(lambda: all(c.stats.subscribed for c in consumers))
                async with aiomqtt.Client("127.0.0.1", port, identifier="pw-test-pub") as pub:
                    for gw, envs in envelopes.items():
                        for env in envs + envs[:5]:  # five resent
                            await pub.publish(f"pledgewatch/ingest/{gw}", env, qos=1)
                    await pub.publish("pledgewatch/ingest/gw-a", bytes(forged), qos=1)
                await _until(lambda: sum(c.stats.messages for c in consumers) == 51)
                await _until(lambda: sum(c.stats.stored + c.stats.duplicates
                                         + sum(c.stats.rejected.values())
                                         for c in consumers) == 51)
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
        assert sum(c.stats.stored for c in consumers) == 40
        assert sum(c.stats.duplicates for c in consumers) == 10
        assert [c.stats.rejected for c in consumers if c.stats.rejected] == [
            {"bad_signature": 1}]
        assert all(c.stats.messages > 0 for c in consumers), [c.stats for c in consumers]

    with mosquitto(tmp_path / "mqtt") as broker:
        asyncio.run(main(broker.port))
    counts = db.counts()
    assert counts["ingested_batches"] == 40
    assert counts["readings"] == 2000
    for gw, envs in envelopes.items():  # 20 batches each, seqs from the outbox's clock
        assert counts[f"last_seq:{gw}"] == unpack_header(envs[-1]).seq
        assert len(envs) == 20


async def _until(cond: object, timeout_s: float = DEADLINE_S) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)
