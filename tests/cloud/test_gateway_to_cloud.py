"""The issue's "done when": a real gateway uploads to a real ``pledgewatch cloud serve`` over
HTTP and over MQTT, and killing the cloud with SIGKILL mid-ingest loses nothing the gateway
saw acknowledged (every reading the gateway committed ends up in the cloud, once)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from firmware_sim import PtyLink
from firmware_sim.r2000_reader import R2000Reader, herd_tags
from gateway.app import reading_digest
from protocols.uplink import Reading
from tests.cloud.bank_setup import setup_bank
from tests.gateway.site_helpers import write_site
from tests.services import free_port, mosquitto, wait_for_port

SECRET_ENV = {"PLEDGEWATCH_SECRET_KEY": "test-secret-not-the-default"}


class Cloud:
    def __init__(self, tmp: Path, db_url: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.db_url = db_url
        self.env = {**os.environ, **SECRET_ENV, "PLEDGEWATCH_DATABASE_URL": db_url, **env}
        self.log = (tmp / "cloud.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/ingest"

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pledgewatch", "cloud", "serve",
                                      "--port", str(self.port)], env=self.env,
                                     stdout=self.log, stderr=self.log)
        wait_for_port(self.port, timeout_s=30)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def cloud_readings(db_file: Path) -> list[Reading]:
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute("SELECT kind, device_id, ts_ms, recv_ms, data FROM readings "
                            "ORDER BY id").fetchall()
    return [Reading(k, d, t, r, json.loads(v)) for k, d, t, r, v in rows]


def acked(ack_log: Path) -> list[str]:
    return [ln for ln in ack_log.read_text().splitlines() if len(ln) == 32] \
        if ack_log.exists() else []


def run_gateway(site: Path, ack_log: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pledgewatch", "edge", "run", "--config",
                             str(site), "--ack-log", str(ack_log)],
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def _until(pred: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_gateway_uploads_over_http_and_survives_cloud_sigkill(tmp_path: Path) -> None:
    rng = random.Random(5)
    db_file = tmp_path / "cloud.db"
    db_url = f"sqlite:///{db_file}"
    sim = R2000Reader(tags=herd_tags(40, seed=2), seed=2)
    ack_log = tmp_path / "ack.log"
    with PtyLink(sim) as link:
        cloud = Cloud(tmp_path, db_url, {})
        site, _ = write_site(
            tmp_path, uplink={"kind": "http", "url": "http://placeholder/v1/ingest",
                              "batch_max_readings": 100, "batch_max_age_s": 0.2,
                              "backoff_base_s": 0.05, "backoff_cap_s": 0.5},
            devices=[{"id": "gate-1", "kind": "r2000", "port": link.path,
                      "options": {"window_s": 0.2, "poll_interval_s": 0.02}}])
        site.write_text(site.read_text().replace("http://placeholder/v1/ingest", cloud.url))
        setup_bank(tmp_path, db_url, tmp_path / "keys" / "gw-1.key.pub")
        gw = run_gateway(site, ack_log, tmp_path / "gateway.log")
        try:
            cloud.start()
            for _ in range(3):  # SIGKILL the cloud while batches keep arriving
                assert _until(lambda: len(cloud_readings(db_file)) > 20, 60)
                time.sleep(rng.uniform(0.2, 1.0))
                cloud.kill9()
                time.sleep(rng.uniform(0.2, 1.0))  # the gateway retries into a dead port
                cloud.start()
            time.sleep(1.0)
            gw.send_signal(signal.SIGTERM)  # stop producing; what it acked must arrive
            gw.wait(30)
            want = set(acked(ack_log))
            gw = run_gateway(site, ack_log, tmp_path / "gateway.log")  # drains its outbox
            gw_outbox_drained = _until(
                lambda: want <= {reading_digest(r) for r in cloud_readings(db_file)}, 60)
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(30)
            cloud.stop()
    got = Counter(reading_digest(r) for r in cloud_readings(db_file))
    assert len(want) > 50
    assert gw_outbox_drained, f"{len(want - set(got))} acknowledged readings never arrived"
    assert [d for d, n in got.items() if n > 1] == [], "a reading was stored twice"
    with sqlite3.connect(db_file) as conn:
        seqs = [s for (s,) in conn.execute("SELECT seq FROM ingested_batches ORDER BY seq")]
    assert seqs == sorted(set(seqs))


def test_gateway_uploads_over_mqtt_to_cloud_serve(tmp_path: Path) -> None:
    db_file = tmp_path / "cloud.db"
    db_url = f"sqlite:///{db_file}"
    sim = R2000Reader(tags=herd_tags(10, seed=3), seed=3)
    ack_log = tmp_path / "ack.log"
    with mosquitto(tmp_path / "mq") as broker, PtyLink(sim) as link:
        cloud = Cloud(tmp_path, db_url, {"PLEDGEWATCH_MQTT_HOST": "127.0.0.1",
                                         "PLEDGEWATCH_MQTT_PORT": str(broker.port)})
        site, _ = write_site(
            tmp_path, uplink={"kind": "mqtt", "mqtt_port": broker.port,
                              "batch_max_age_s": 0.2, "backoff_base_s": 0.05,
                              "backoff_cap_s": 0.5},
            devices=[{"id": "gate-1", "kind": "r2000", "port": link.path,
                      "options": {"window_s": 0.2, "poll_interval_s": 0.05}}])
        setup_bank(tmp_path, db_url, tmp_path / "keys" / "gw-1.key.pub")
        cloud.start()
        try:
            # (batches published before the cloud's shared subscription exists have no
            # subscriber; the reader keeps producing sightings, so the wait below still ends
            # only when every tag has come through the broker into the database)
            assert httpx.get(f"http://127.0.0.1:{cloud.port}/healthz").status_code == 200
            gw = run_gateway(site, ack_log, tmp_path / "gateway.log")
            try:
                assert _until(lambda: {r.data.get("epc") for r in cloud_readings(db_file)
                                       if r.kind == "tag_sighting"} >= {
                    t.epc.hex().upper() for t in sim.tags}, 60), (
                    (tmp_path / "gateway.log").read_text()[-2000:])
            finally:
                gw.send_signal(signal.SIGTERM)
                gw.wait(30)
        finally:
            cloud.stop()
    kinds = {r.kind for r in cloud_readings(db_file)}
    assert {"tag_sighting", "device_online"} <= kinds
