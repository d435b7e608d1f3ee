"""The app copies what it stores to InfluxDB 1.x when configured (a real ``influxd``)."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.settings import CloudSettings
from gateway.keys import generate_keypair
from protocols.uplink import Batch, Reading
from tests.cloud.bank_setup import setup_bank
from tests.services import influxd
from uplink.envelope import encode_batch


def test_stored_batches_are_written_to_influxdb(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    key = generate_keypair(tmp_path / "gw.key")
    setup_bank(tmp_path, db_url, tmp_path / "gw.key.pub")
    readings = tuple(Reading("position", "truck-1", 1_767_225_600_000 + i * 1000,
                             1_767_225_600_500 + i * 1000, {"lat": -36.6 + i / 1e4,
                                                             "lon": -64.3})
                     for i in range(5))
    envelope = encode_batch(Batch("gw-1", 1, 1_767_225_700_000, readings), key)
    with influxd(tmp_path / "influx") as influx_url:
        settings = CloudSettings(database_url=db_url, secret_key="s3cret-for-tests",
                                 influx_v1_url=influx_url, influx_v1_db="pw")
        with TestClient(create_app(settings)) as client:
            resp = client.post("/v1/ingest", content=envelope,
                               headers={"Content-Type": "application/vnd.pledgewatch.batch"})
            assert resp.status_code == 200, resp.text
            assert client.app.state.influx.written == 5  # type: ignore[attr-defined]
        got = httpx.get(f"{influx_url}/query", params={
            "db": "pw", "epoch": "ms", "q": "SELECT lat, lon, site, device FROM position"}).json()
    (series,) = got["results"][0]["series"]
    rows = [dict(zip(series["columns"], v, strict=True)) for v in series["values"]]
    assert [r["time"] for r in rows] == [r.ts_ms for r in readings]
    assert [r["lat"] for r in rows] == [r.data["lat"] for r in readings]
    assert {r["site"] for r in rows} == {"ranch-1"} and {r["device"] for r in rows} == {
        "truck-1"}
