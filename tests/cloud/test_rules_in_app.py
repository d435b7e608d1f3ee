"""The rules engine runs inside the served cloud: a batch ingested over HTTP becomes an alert
in the alert API, with no other process involved."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.settings import CloudSettings
from protocols.uplink import Batch, Reading
from tests.cloud.bank_setup import admin, setup_bank
from uplink.envelope import encode_batch

UNKNOWN_EPC = "E28011700000000000ABCDEF"


def _settings(tmp_path: Path, **kw: Any) -> CloudSettings:
    return CloudSettings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'c.db'}",  # type: ignore[call-arg]
                         secret_key="test-secret-not-the-default", **kw)


def _token(db_url: str) -> str:
    admin(db_url, "create-user", "--bank", "TB", "risk@tb.example", "--role", "analyst")
    out = admin(db_url, "create-token", "--bank", "TB", "risk@tb.example")
    return next(w for w in out.split() if w.startswith("pw_"))


def _envelope(key: Ed25519PrivateKey, seq: int, now_ms: int) -> bytes:
    hour = 3_600_000
    readings = (
        # a tag this bank never pledged, read two hours ago
        Reading("tag_sighting", "water-1", now_ms - 2 * hour, now_ms - 2 * hour + 60_000,
                {"epc": UNKNOWN_EPC, "antenna": 1, "count": 4, "first_ms": now_ms - 2 * hour,
                 "last_ms": now_ms - 2 * hour + 5_000, "rssi_max_dbm": -55}),
        # and the gateway is alive now: its watermark passes the sighting
        Reading("heartbeat", "gateway:gw-1", now_ms, now_ms, {"outbox_readings": 0}),
    )
    return encode_batch(Batch("gw-1", seq, now_ms, readings), key)


def _alerts(client: TestClient, token: str) -> list[dict[str, Any]]:
    r = client.get("/v1/alerts", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_an_ingested_batch_becomes_an_alert(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "gw.pub"
    pub.write_text(base64.b64encode(key.public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)).decode() + "\n")
    settings = _settings(tmp_path, rules_interval_s=0.1)
    app = create_app(settings)
    with TestClient(app) as client:  # the lifespan migrates the database
        setup_bank(tmp_path, settings.database_url, pub)
        token = _token(settings.database_url)
        assert _alerts(client, token) == []
        r = client.post("/v1/ingest", content=_envelope(key, 1, int(time.time() * 1000)),
                        headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 30
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not found:
            found = [a for a in _alerts(client, token) if a["kind"] == "foreign_tag"]
            time.sleep(0.2)
        assert found, "no foreign_tag alert within 30 s"
        assert found[0]["subject_id"] == UNKNOWN_EPC
        assert found[0]["site"] == "ranch-1"
        assert app.state.rules.errors == 0


def test_rules_can_be_switched_off(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, rules_enabled=False))
    with TestClient(app):
        assert app.state.rules is None
