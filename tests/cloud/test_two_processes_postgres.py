"""Scale-out: two ``pledgewatch cloud serve`` processes on one PostgreSQL receive the same
batches interleaved (and each batch twice); every reading ends up stored exactly once."""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import func, select

from cloud.db.models import IngestedBatch
from cloud.db.models import Reading as ReadingRow
from cloud.db.session import make_engine, make_sessionmaker
from gateway.keys import generate_keypair
from protocols.uplink import Batch, Reading
from tests.cloud.bank_setup import setup_bank
from tests.services import free_port, postgres, wait_for_port
from uplink.envelope import encode_batch

BATCHES = 60
PER_BATCH = 50


def test_two_cloud_processes_share_one_postgresql(tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "gw.key")
    envelopes = [encode_batch(Batch("gw-1", seq, 1_767_225_600_000 + seq, tuple(
        Reading("weight", "wb-1", seq * 1000 + i, seq * 1000 + i,
                {"weight_kg": float(seq * 1000 + i), "stable": True})
        for i in range(PER_BATCH))), key) for seq in range(1, BATCHES + 1)]
    with postgres(tmp_path / "pg") as db_url:
        setup_bank(tmp_path, db_url, tmp_path / "gw.key.pub")
        ports = [free_port(), free_port()]
        env = {**os.environ, "PLEDGEWATCH_SECRET_KEY": "two-process-test",
               "PLEDGEWATCH_DATABASE_URL": db_url}
        procs = [subprocess.Popen([sys.executable, "-m", "pledgewatch", "cloud", "serve",
                                   "--port", str(p)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=(tmp_path / f"cloud-{p}.log").open("wb"))
                 for p in ports]
        try:
            for p in ports:
                wait_for_port(p, timeout_s=30)
            # every batch goes to both processes, in a shuffled interleaving, concurrently
            jobs = [(env_, ports[i % 2]) for env_ in envelopes for i in range(2)]
            random.Random(3).shuffle(jobs)

            def post(job: tuple[bytes, int]) -> int:
                body, port = job
                for _ in range(20):  # 429/503 mean "try again later"
                    r = httpx.post(f"http://127.0.0.1:{port}/v1/ingest", content=body,
                                   timeout=30)
                    if r.status_code not in (429, 503):
                        return r.status_code
                return r.status_code

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(post, jobs))
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(30)
        engine = make_engine(db_url)
        try:
            with make_sessionmaker(engine)() as s:
                n_batches = s.scalar(select(func.count()).select_from(IngestedBatch))
                n_readings = s.scalar(select(func.count()).select_from(ReadingRow))
                distinct = s.scalar(select(func.count(func.distinct(ReadingRow.ts_ms))))
        finally:
            engine.dispose()
    assert statuses == [200] * len(jobs)
    assert n_batches == BATCHES
    assert n_readings == distinct == BATCHES * PER_BATCH
