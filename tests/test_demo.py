"""``pledgewatch demo``: the whole chain in one process, driven as a user would.

* the wiring alone (no world): the embedded amqtt broker, the cloud served by uvicorn in the
  same loop and its MQTT ingest, fed one signed envelope the way a gateway publishes it;
* the real demo as a subprocess on scenarios/demo.toml at high speed: URL and token printed,
  alerts printed as they open and the same alerts over HTTP with the printed token, SIGINT
  ends it cleanly;
* bad input: an unreachable --postgres, a --port in use: one line, exit 1, no traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from cloud.settings import CloudSettings
from gateway.keys import generate_keypair
from pledgewatch.demo import (
    DEFAULT_SCENARIO,
    PLAIN_TOPIC,
    MqttSubmit,
    embedded_broker,
    format_alert,
    served_cloud,
)
from protocols.uplink import Batch, Reading
from tests.cloud.bank_setup import setup_bank
from tests.services import free_port
from uplink.envelope import encode_batch

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
ALERT_LINE = re.compile(r"^\[sim (\d{4}-\d\d-\d\d \d\d:\d\d)\] (INFO|WARNING|HIGH|CRITICAL) +"
                        r"(\w+) +(\S+) +(\w+) (\S+)  (.*)$")


def _demo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pledgewatch", "demo", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


# -- the wiring, without a world ---------------------------------------------------------------
def test_broker_cloud_and_mqtt_ingest_in_one_loop(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    key = generate_keypair(tmp_path / "gw.key")
    setup_bank(tmp_path, db_url, tmp_path / "gw.key.pub")
    readings = tuple(Reading("position", "truck-1", T0_MS + i * 1000, T0_MS + i * 1000 + 500,
                             {"lat": -36.6 + i / 1e4, "lon": -64.3}) for i in range(5))
    seq = T0_MS  # a new outbox starts its seq at the clock
    envelope = encode_batch(Batch("gw-1", seq, T0_MS + 10_000, readings), key)
    stored: list[tuple[str, int, int]] = []
    sim_clock = [T0_MS + 60_000]

    def ingest(settings: Any, sessions: Any, hook: Any) -> Any:
        from cloud.ingest.service import IngestService

        async def on_stored(gateway_id: str, batch: Any) -> None:
            stored.append((gateway_id, batch.seq, len(batch.readings)))

        return IngestService(sessions=sessions, clock_ms=lambda: sim_clock[0], queue_size=8,
                             replay_window=1_000_000, on_stored=on_stored)

    async def scenario() -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
        async with embedded_broker(None) as mqtt_port:
            settings = CloudSettings(database_url=db_url, demo=True, mqtt_host="127.0.0.1",
                                     mqtt_port=mqtt_port, mqtt_topic=PLAIN_TOPIC,
                                     rules_enabled=False)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            async with served_cloud(settings, sock, ingest=ingest) as cloud:
                submit = MqttSubmit(host="127.0.0.1", port=mqtt_port, cloud=cloud)
                try:
                    await submit("gw-1", envelope)  # returns once the cloud answered it
                    await submit("gw-1", envelope)  # the broker delivers it again: duplicate
                finally:
                    await submit.aclose()
                async with httpx.AsyncClient(base_url=cloud.url) as http:
                    health = (await http.get("/healthz")).json()
                    status = (await http.get("/dashboard/", follow_redirects=True)).status_code
                stats = cloud.mqtt_stats()
                return status, health, [{"stored": stats.stored,
                                         "duplicates": stats.duplicates,
                                         "rejected": dict(stats.rejected)}]

    status, health, (stats,) = asyncio.run(scenario())
    assert stored == [("gw-1", seq, 5)]  # the hook saw the batch once, after its commit
    assert stats == {"stored": 1, "duplicates": 1, "rejected": {}}
    assert health == {"status": "ok", "database": True}
    assert status == 200

    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            n, last_seen = conn.execute(text(
                "SELECT (SELECT count(*) FROM readings), last_seen_ms FROM gateways "
                "WHERE gateway_id = 'gw-1'")).one()
    finally:
        engine.dispose()
    assert n == 5
    assert last_seen == T0_MS + 60_000  # stamped by the simulated clock, not the wall clock


def test_alert_line_format() -> None:
    alert = {"id": 3, "kind": "animal_missing", "severity": "high", "subject_type": "animal",
             "subject_id": "E28011700000000000000042", "event_time_ms": T0_MS,
             "opened_at_ms": T0_MS + 97 * 3_600_000 // 10,
             "summary": "animal E28011700000000000000042 not seen\nfor 12 h"}
    m = ALERT_LINE.match(format_alert(alert, where="ranch-1"))
    assert m, format_alert(alert, where="ranch-1")
    # simulated open time; the subject once, not again at the start of the summary
    assert m.groups() == ("2026-01-01 09:42", "HIGH", "animal_missing", "ranch-1", "animal",
                          "E28011700000000000000042", "not seen for 12 h")
    device = {**alert, "kind": "device_offline", "severity": "warning", "subject_type":
              "device", "subject_id": "wh-1-bridge", "summary": "wh-1-bridge silent for 9 min"}
    m = ALERT_LINE.match(format_alert(device, where=None))
    assert m and m.group(4) == "-" and m.group(7) == "silent for 9 min", m
    other = {**alert, "summary": "copper price -10% day over day"}
    assert format_alert(other, where="wh-1").endswith("  copper price -10% day over day")


# -- bad input ---------------------------------------------------------------------------------
def _assert_one_line_error(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pledgewatch demo: "), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for word in words:
        assert word in lines[0], lines[0]


def test_unreachable_postgres_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    res = subprocess.run(_demo_cmd("--postgres", f"postgresql://demo:secret@127.0.0.1:{port}/pw",
                                   "--port", str(free_port()), "--data-dir", str(tmp_path)),
                         capture_output=True, text=True, timeout=60, env=_env())
    _assert_one_line_error(res, "PostgreSQL", f"127.0.0.1:{port}")
    assert "secret" not in res.stderr  # the password is never echoed


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run(_demo_cmd("--port", str(port), "--data-dir", str(tmp_path)),
                             capture_output=True, text=True, timeout=60, env=_env())
    _assert_one_line_error(res, f"127.0.0.1:{port}")


def test_unreachable_mosquitto_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_port()
    res = subprocess.run(_demo_cmd("--mosquitto", f"127.0.0.1:{port}", "--port",
                                   str(free_port()), "--data-dir", str(tmp_path)),
                         capture_output=True, text=True, timeout=60, env=_env())
    _assert_one_line_error(res, "MQTT broker", f"127.0.0.1:{port}")


# -- the real demo -----------------------------------------------------------------------------
class _Lines:
    """Collects a pipe's lines on a thread, so the test can wait for one without blocking."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True,
                                        name="demo-pipe")
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("\0EOF")
            self._cond.notify_all()

    def wait_for(self, pred: Any, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not pred(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or "\0EOF" in self.lines:
                    break
                self._cond.wait(left)
            return list(self.lines)

    def join(self) -> None:
        self._thread.join(10)


def test_demo_prints_url_token_and_alerts_and_stops_on_sigint(tmp_path: Path) -> None:
    assert DEFAULT_SCENARIO.is_file(), f"{DEFAULT_SCENARIO} is the demo's story"
    port = free_port()
    proc = subprocess.Popen(_demo_cmd("--duration", "50", "--data-dir", str(tmp_path / "data"),
                                      "--port", str(port), "--speed", "20000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), start_new_session=True)
    out, err = _Lines(proc.stdout), _Lines(proc.stderr)
    try:
        lines = out.wait_for(lambda ls: any(ALERT_LINE.match(ln) for ln in ls), 45)
        text = "\n".join(lines)
        assert f"http://127.0.0.1:{port}/dashboard" in text, (text, err.lines)
        assert f"http://127.0.0.1:{port}/docs" in text
        token_lines = [ln for ln in lines if ln.strip().startswith("token ")]
        assert len(token_lines) == 1, text
        token = token_lines[0].split()[-1]
        assert "shown once" in text and str(tmp_path / "data") in text
        lines = out.wait_for(lambda ls: sum(bool(ALERT_LINE.match(ln)) for ln in ls) >= 3, 30)
        printed = [m.groups() for ln in lines if (m := ALERT_LINE.match(ln))]
        assert len(printed) >= 3, (lines, err.lines)

        # the alerts printed are the cloud's: same kind and subject over HTTP, with the token
        resp = httpx.get(f"http://127.0.0.1:{port}/v1/alerts", params={"limit": 500},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert resp.status_code == 200, resp.text
        served = {(a["kind"], a["site"] or a["loan"], a["subject_type"], a["subject_id"])
                  for a in resp.json()["items"]}
        assert {(k, where, st, sid) for _, _, k, where, st, sid, _ in printed} <= served
        bad = httpx.get(f"http://127.0.0.1:{port}/v1/alerts",
                        headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert bad.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        out.join()
        err.join()
    assert proc.returncode in (0, 130), err.lines
    assert not any("Traceback" in ln for ln in out.lines + err.lines), err.lines
    # nothing of the demo's process group is left
    try:
        os.killpg(proc.pid, 0)
        leftover = True
    except ProcessLookupError:
        leftover = False
    assert not leftover


def test_demo_story_ends_outputs_agree_and_sigterm_stops_it(tmp_path: Path) -> None:
    """A short scenario played to its end: the alerts printed are those the run wrote to
    alerts.jsonl; the cloud keeps serving afterwards; SIGTERM stops it with status 0."""
    scenario = DEFAULT_SCENARIO.parent / "smoke.toml"
    data = tmp_path / "data"
    port = free_port()
    proc = subprocess.Popen(_demo_cmd("--scenario", str(scenario), "--speed", "1000000",
                                      "--duration", "58", "--data-dir", str(data),
                                      "--port", str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), start_new_session=True)
    out, err = _Lines(proc.stdout), _Lines(proc.stderr)
    try:
        notes = err.wait_for(lambda ls: any(ln.startswith("story finished") for ln in ls), 50)
        assert any(ln.startswith("story finished") for ln in notes), notes
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert health.status_code == 200  # still serving after the story
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        out.join()
        err.join()
    assert proc.returncode == 0, err.lines
    assert not any("Traceback" in ln for ln in out.lines + err.lines), err.lines
    printed = sorted((k, where, st, sid) for ln in out.lines if (m := ALERT_LINE.match(ln))
                     for _, _, k, where, st, sid, _ in [m.groups()])
    rows = [json.loads(ln) for ln in (data / "alerts.jsonl").read_text().splitlines()]
    written = sorted((a["kind"], a["site"] or a["loan"], a["subject_type"], a["subject_id"])
                     for a in rows)
    assert printed and printed == written
    # every alert was judged on the simulated clock (smoke.toml: 2 days from 2026-03-02),
    # none by a rules runner on the wall clock
    start_ms = 1_772_409_600_000
    assert all(start_ms <= a["opened_at_ms"] <= start_ms + 2 * 86_400_000 for a in rows), rows
    assert (data / "work" / "cloud.db").is_file()  # a given --data-dir is kept
