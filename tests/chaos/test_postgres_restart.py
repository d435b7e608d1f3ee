"""PostgreSQL restarted under a running gateway -> cloud ingest: once crashed
(``pg_ctl stop -m immediate``: no checkpoint, open transactions cut, crash recovery at start)
and once stopped cleanly, each time kept down for a few seconds while the gateway keeps
uploading. The cloud answers 503 with Retry-After meanwhile, the gateway keeps every batch
and retries, and afterwards every reading the gateway acknowledged to its reader is stored in
PostgreSQL exactly once.

The gateway is a real ``pledgewatch edge run`` reading a simulated R2000 reader on a pty;
what it acknowledged (committed to its outbox) is its ``--ack-log``."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import httpx
import pytest
from sqlalchemy import text

from cloud.db.session import make_engine, make_sessionmaker
from cloud.errors import IngestUnavailable
from cloud.ingest.service import IngestService
from firmware_sim import PtyLink
from firmware_sim.r2000_reader import R2000Reader, herd_tags
from gateway.app import reading_digest
from gateway.keys import generate_keypair
from protocols.uplink import Batch, Reading
from tests.chaos.support import CloudProcess, PgControl, acked, edge_run, metric, stored, until
from tests.cloud.bank_setup import setup_bank
from tests.gateway.site_helpers import write_site
from tests.services import postgres
from uplink.envelope import encode_batch


def _count(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM readings")).scalar_one())
    except Exception:  # the server is down: nothing new is visible
        return -1
    finally:
        engine.dispose()


def test_postgresql_restart_mid_ingest_stores_every_acknowledged_reading_once(
        tmp_path: Path) -> None:
    sim = R2000Reader(tags=herd_tags(40, seed=11), seed=11)
    ack_log = tmp_path / "ack.log"
    health_while_down: list[int] = []
    with postgres(tmp_path / "pg") as db_url, PtyLink(sim) as link:
        pg = PgControl(db_url)
        cloud = CloudProcess(tmp_path, db_url)
        site, _ = write_site(
            tmp_path, uplink={"kind": "http", "url": cloud.ingest_url,
                              "batch_max_readings": 100, "batch_max_age_s": 0.2,
                              "backoff_base_s": 0.05, "backoff_cap_s": 0.5, "timeout_s": 5},
            devices=[{"id": "gate-1", "kind": "r2000", "port": link.path,
                      "options": {"window_s": 0.2, "poll_interval_s": 0.02}}])
        setup_bank(tmp_path, db_url, tmp_path / "keys" / "gw-1.key.pub")
        with cloud, edge_run(site, ack_log, tmp_path / "gateway.log") as gw:
            modes: tuple[Literal["immediate", "fast"], ...] = ("immediate", "fast")
            for mode in modes:
                before = _count(db_url)

                def grew(before: int = before) -> bool:
                    return _count(db_url) > before + 40

                assert until(grew, 40), f"nothing arrives before the {mode} stop:\n{cloud.log()}"
                pg.stop(mode)
                down_until = time.monotonic() + 3.0  # the gateway keeps uploading into it
                while time.monotonic() < down_until:
                    health_while_down.append(
                        httpx.get(f"{cloud.base}/healthz", timeout=5).status_code)
                    time.sleep(0.5)
                pg.start()
                assert gw.poll() is None, "the gateway died during the outage"
            after = _count(db_url)
            assert until(lambda: _count(db_url) > after + 40, 40), (
                f"ingest did not resume after the restart:\n{cloud.log()}")
            sim.tags = []  # the field goes quiet: the acknowledged set stops growing
            time.sleep(0.5)
            want = set(acked(ack_log))
            arrived = until(lambda: want <= {reading_digest(r) for r in stored(
                db_url, exclude=frozenset()).readings}, 45, step_s=0.5)
            metrics = cloud.metrics()
        got = stored(db_url, exclude=frozenset())  # all: heartbeats are acknowledged too
    counts = Counter(reading_digest(r) for r in got.readings)
    assert len(want) > 100, "too little traffic to mean anything"
    assert arrived, f"{len(want - set(counts))} acknowledged readings never stored"
    assert [d for d, n in counts.items() if n > 1] == [], "a reading was stored twice"
    assert got.seqs == sorted(set(got.seqs)), "a batch was stored twice or out of order"
    # the outage was real and answered as documented: 503 (retry later), health degraded
    assert 503 in health_while_down
    assert metric(metrics, "pledgewatch_http_requests_total", method="POST",
                  route="/v1/ingest", status="503") > 0
    assert metric(metrics, "pledgewatch_http_requests_total", method="POST",
                  route="/v1/ingest", status="500") == 0


def test_every_unavailable_answer_is_counted(tmp_path: Path) -> None:
    """The restart above answers 503s that the ingest counters never see (found there:
    ``http_requests_total{status="503"}`` grew, ``ingest_unavailable_total`` stayed 0)."""
    key = generate_keypair(tmp_path / "gw.key")
    envelope = encode_batch(Batch("gw-1", 1, 1, (Reading("weight", "wb", 1, 1, {
        "weight_kg": 1.0, "stable": True}),)), key)
    engine = make_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'cloud.db'}")  # unreachable

    async def go() -> IngestService:
        async with IngestService(sessions=make_sessionmaker(engine), clock_ms=lambda: 0,
                                 queue_size=4, replay_window=10) as service:
            with pytest.raises(IngestUnavailable):
                await service.submit(envelope)
        return service

    try:
        service = asyncio.run(go())
    finally:
        engine.dispose()
    assert service.counters()["unavailable"] == 1
