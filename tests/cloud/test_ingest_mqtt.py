"""MQTT ingest through a real mosquitto: two consumers on the shared subscription (as two cloud
processes) split the load, and every batch is stored once; rejected ones (a reused seq too)
are counted and acknowledged; a restarted cloud resumes its own persistent session."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from pydantic import ValidationError

from cloud.api.app import create_app
from cloud.ingest.mqtt import MqttIngest, reconnect_delay_s
from cloud.ingest.service import IngestService
from cloud.settings import CloudSettings
from protocols.uplink import unpack_header
from tests.cloud.conftest import T0_MS, Db, gateway_envelopes, reading_mix
from tests.cloud.test_ingest import batch_of
from tests.services import mosquitto
from uplink.envelope import encode_batch

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


def test_a_batch_reusing_a_stored_seq_is_refused_not_counted_as_a_duplicate(
        db: Db, tmp_path: Path) -> None:
    """Over MQTT the refusal cannot reach the gateway (the broker acknowledged it already):
    the cloud at least refuses it, counts it by reason and logs it, instead of taking it
    for a resend and losing it silently."""
    key = Ed25519PrivateKey.generate()
    db.add_gateway("gw-a", key)
    original = encode_batch(batch_of(42, gateway_id="gw-a"), key)
    reused = encode_batch(batch_of(42, n=5, gateway_id="gw-a"), key)

    async def main(port: int) -> MqttIngest:
        service = IngestService(sessions=db.sessions, clock_ms=lambda: T0_MS, queue_size=8,
                                replay_window=1000)
        consumer = MqttIngest(host="127.0.0.1", port=port, service=service,
                              client_id="pw-cloud-seq")
        async with service:
            task = asyncio.create_task(consumer.run(), name="mqtt-ingest")
            try:
                await _until(lambda: consumer.stats.subscribed)
                async with aiomqtt.Client("127.0.0.1", port, identifier="pw-test-pub") as pub:
                    for env in (original, reused, original):
                        await pub.publish("pledgewatch/ingest/gw-a", env, qos=1)
                await _until(lambda: consumer.stats.messages == 3 and (
                    consumer.stats.stored + consumer.stats.duplicates
                    + sum(consumer.stats.rejected.values())) == 3)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert service.stats.rejected == {"seq_reused": 1}
        return consumer

    with mosquitto(tmp_path / "mqtt") as broker:
        consumer = asyncio.run(main(broker.port))
    st = consumer.stats
    assert (st.stored, st.duplicates, st.rejected) == (1, 1, {"seq_reused": 1})
    assert db.counts()["readings"] == 3  # the original's, not the reused batch's five


# -- the consumer's client id: one persistent session per process, resumed at a restart ---------


def test_the_mqtt_client_id_defaults_to_the_host_name_and_can_be_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEDGEWATCH_SECRET_KEY", "test-secret-not-the-default")
    first = CloudSettings(_env_file=None)  # type: ignore[call-arg]
    again = CloudSettings(_env_file=None)  # type: ignore[call-arg]
    assert first.mqtt_client_id == again.mqtt_client_id == \
        f"pledgewatch-cloud-{socket.gethostname()}"  # the same after a restart
    monkeypatch.setenv("PLEDGEWATCH_MQTT_CLIENT_ID", "cloud-b")  # a second process
    assert CloudSettings(_env_file=None).mqtt_client_id == "cloud-b"  # type: ignore[call-arg]
    monkeypatch.setenv("PLEDGEWATCH_MQTT_CLIENT_ID", "")
    with pytest.raises(ValidationError):
        CloudSettings(_env_file=None)  # type: ignore[call-arg]


def test_a_restarted_cloud_resumes_its_own_mqtt_session(db: Db, tmp_path: Path) -> None:
    """The served app consumes as ``mqtt_client_id`` with a persistent session: batches
    published while it is down wait in that session and are stored when it comes back,
    instead of sitting in a dead session of the shared group (what a new id per start made
    of every restart). The session is made beforehand under the configured id, so a cloud
    consuming under any other id would never see the first batches."""
    key = Ed25519PrivateKey.generate()
    db.add_gateway("gw-a", key)
    envelopes = gateway_envelopes(tmp_path / "gw-a.db", "gw-a", key,
                                  reading_mix(80, seed=7), per_batch=10)
    client_id = "pledgewatch-cloud-test-host"

    def publish(port: int, envs: list[bytes]) -> None:
        async def go() -> None:
            async with aiomqtt.Client("127.0.0.1", port, identifier="pw-test-pub") as pub:
                for env in envs:
                    await pub.publish("pledgewatch/ingest/gw-a", env, qos=1)
        asyncio.run(go())

    def serve_until(port: int, batches: int) -> None:
        settings = CloudSettings(  # type: ignore[call-arg]
            _env_file=None, database_url=db.url, secret_key="test-secret-not-the-default",
            mqtt_host="127.0.0.1", mqtt_port=port, mqtt_client_id=client_id,
            rules_enabled=False)
        app = create_app(settings)
        with TestClient(app):
            assert app.state.mqtt.client_id == client_id
            deadline = time.monotonic() + DEADLINE_S
            while db.counts()["ingested_batches"] < batches:
                assert time.monotonic() < deadline, db.counts()
                time.sleep(0.05)

    async def make_session(port: int, topic: str) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=client_id,
                                  clean_session=False) as c:
            await c.subscribe(topic, qos=1)

    with mosquitto(tmp_path / "mqtt") as broker:
        asyncio.run(make_session(broker.port, CloudSettings.model_fields[
            "mqtt_topic"].default))
        publish(broker.port, envelopes[:4])  # before the first start: queued in the session
        serve_until(broker.port, 4)
        publish(broker.port, envelopes[4:])  # while the cloud restarts
        serve_until(broker.port, 8)
    assert db.counts()["readings"] == 80
