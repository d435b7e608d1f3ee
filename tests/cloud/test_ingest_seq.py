"""Seqs the cloud cannot take, on a SQLite file and a real PostgreSQL: a different batch under a
stored ``(gateway_id, seq)`` is refused as ``409 seq_reused`` (never answered ``duplicate``,
which made the gateway delete readings that were never stored), a true resend still is a
duplicate, both 409s carry the cloud's ``last_seq``, and a real gateway whose outbox was
restored from a backup or made with a corrected clock re-signs its batch and loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from prometheus_client import generate_latest
from sqlalchemy import insert, select

from cloud.api.routes.ingest import router
from cloud.db import models
from cloud.ingest.service import IngestResult, SeqConflict
from gateway.app import Gateway
from gateway.keys import load_private_key
from gateway.uploader import HttpUploader
from protocols.uplink import Reading, unpack_header
from tests.chaos.support import metric
from tests.cloud.conftest import T0_MS, Db
from tests.cloud.test_ingest import GW, batch_of, http_app, make_service, run
from tests.edge.driver_harness import stop_task
from tests.gateway.site_helpers import load, write_site
from uplink.envelope import encode_batch

HOUR_MS = 3_600_000


def test_another_batch_under_a_stored_seq_is_refused_and_the_resend_is_a_duplicate(
        db: Db) -> None:
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    original = encode_batch(batch_of(5), key)
    other = encode_batch(batch_of(5, n=4), key)  # what a restored outbox built as seq 5
    nine = encode_batch(batch_of(9), key)

    async def main() -> None:
        async with http_app(db) as http:
            for env in (original, nine):
                assert (await http.post(env)).json()["status"] == "stored"
            before = db.counts()
            resp = await http.post(other)
            assert resp.status_code == 409
            assert resp.json()["reason"] == "seq_reused"
            assert resp.json()["last_seq"] == 9  # so the gateway re-signs above it
            assert db.counts() == before
            resp = await http.post(original)
            assert resp.json() == {"status": "duplicate", "seq": 5, "readings": 3}
            st = http.service.stats
            assert (st.stored, st.duplicates, st.rejected) == (2, 1, {"seq_reused": 1})
            assert http.service.counters()["rejected_seq_reused"] == 1
            with pytest.raises(SeqConflict) as err:  # the service's own answer
                await http.service.submit(other)
            assert (err.value.status, err.value.last_seq) == (409, 9)

    run(main)
    with db.sessions() as s:  # each stored batch keeps the signature it came with
        rows = {seq: sig for seq, sig in s.execute(select(models.IngestedBatch.seq,
                                                          models.IngestedBatch.signature))}
    assert rows == {5: unpack_header(original).signature, 9: unpack_header(nine).signature}


def test_a_replay_outside_the_window_carries_the_last_seq(db: Db) -> None:
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)

    async def main() -> None:
        async with http_app(db, replay_window=5) as http:
            assert (await http.post(encode_batch(batch_of(20), key))).status_code == 200
            resp = await http.post(encode_batch(batch_of(3), key))
            assert resp.status_code == 409
            assert (resp.json()["reason"], resp.json()["last_seq"]) == (
                "replay_outside_window", 20)

    run(main)


def test_a_row_stored_before_signatures_were_kept_dedupes_on_the_seq_alone(db: Db) -> None:
    """Rows from before migration 0003 have no signature: any batch under their seq is
    answered duplicate, as it always was (nothing better can be known)."""
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    with db.sessions.begin() as s:
        s.execute(insert(models.IngestedBatch).values(
            gateway_id=GW, seq=7, created_ms=T0_MS, received_ms=T0_MS, readings=3,
            signature=None))

    async def main() -> None:
        async with http_app(db) as http:
            resp = await http.post(encode_batch(batch_of(7), key))
            assert resp.json() == {"status": "duplicate", "seq": 7, "readings": 3}

    run(main)
    assert db.counts()["readings"] == 0


def test_two_processes_given_different_batches_for_one_seq_store_one(db: Db) -> None:
    """As two cloud processes racing: both prechecks pass, the writers serialise on the
    gateway row and the loser is refused as seq_reused in its transaction."""
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    seqs = range(100, 110)
    first = {s: encode_batch(batch_of(s), key) for s in seqs}
    second = {s: encode_batch(batch_of(s, n=5), key) for s in seqs}

    async def main() -> None:
        a = make_service(db, sessions=db.another_sessionmaker(), queue_size=64)
        b = make_service(db, sessions=db.another_sessionmaker(), queue_size=64)
        async with a, b:
            results = await asyncio.gather(
                *(x for s in seqs for x in (a.submit(first[s]), b.submit(second[s]))),
                return_exceptions=True)
        for s, (ra, rb) in zip(seqs, zip(results[::2], results[1::2], strict=True),
                               strict=True):
            outcome = sorted(r.status if isinstance(r, IngestResult) else r.reason
                             for r in (ra, rb) if isinstance(r, IngestResult | SeqConflict))
            assert outcome == ["seq_reused", "stored"], (s, ra, rb)
        assert a.stats.duplicates + b.stats.duplicates == 0

    run(main)
    with db.sessions() as s:
        stored = s.execute(select(models.IngestedBatch.seq, models.IngestedBatch.readings,
                                  models.IngestedBatch.signature)).all()
    assert len(stored) == 10
    by_sig = {unpack_header(e).signature: n for envs, n in ((first, 3), (second, 5))
              for e in envs.values()}
    assert all(sig is not None and by_sig[bytes(sig)] == n  # each row is its batch
               for _, n, sig in stored)
    assert db.counts()["readings"] == sum(n for _, n, _ in stored)


# -- a real gateway -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _cloud(db: Db) -> AsyncIterator[httpx.ASGITransport]:
    """The ingest route in an app, with a started service: a gateway reaches it through
    httpx's ASGI transport (the real route, service and database; no socket)."""
    service = make_service(db)
    app = FastAPI()
    app.include_router(router)
    app.state.ingest = service
    async with service:
        yield httpx.ASGITransport(app=app)


def _weights(first: int, n: int, t0: int) -> list[Reading]:
    return [Reading("weight", "wb-1", t0 + i, t0 + i, {"weight_kg": float(first + i),
                                                       "stable": True}) for i in range(n)]


def _stored_weights(db: Db) -> list[float]:
    with db.sessions() as s:
        data = s.scalars(select(models.Reading.data).where(
            models.Reading.device_id == "wb-1")).all()
    return [float(d["weight_kg"]) for d in data]


async def _run_gateway(site: Path, transport: httpx.ASGITransport, clock: Callable[[], int],
                       readings: list[Reading], db: Db) -> str:
    """Run a gateway until ``readings`` are stored; returns its metrics text."""
    gw = Gateway(load(site), clock_ms=clock, uploader=HttpUploader(
        url="http://cloud.test/v1/ingest", gateway_id="gw-1", transport=transport))
    task = asyncio.create_task(gw.run(), name="gateway")
    want = {float(r.data["weight_kg"]) for r in readings}
    try:
        await gw.store(readings)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not want <= set(await asyncio.to_thread(_stored_weights, db)):
            assert loop.time() < deadline, "the readings never arrived"
            assert not task.done(), task
            await asyncio.sleep(0.05)
        return generate_latest(gw.metrics.registry).decode()
    finally:
        await stop_task(task)


def _gateway_site(tmp_path: Path, db: Db) -> Path:
    # batches of 10 leave when full: the tests' clocks stand still
    site, _ = write_site(tmp_path, uplink={"kind": "http", "url": "http://cloud.test/v1/ingest",
                                           "batch_max_readings": 10, "batch_max_age_s": 0.1,
                                           "backoff_base_s": 0.05, "backoff_cap_s": 0.3})
    db.add_gateway("gw-1", load_private_key(tmp_path / "keys" / "gw-1.key"))
    return site


def test_a_gateway_restored_from_a_backup_resigns_and_loses_nothing(db: Db,
                                                                   tmp_path: Path) -> None:
    """The clock stands still (a dead RTC, no NTP), so opening the restored outbox does not
    move its seq: its next batch reuses a seq stored after the image was taken."""
    site = _gateway_site(tmp_path, db)
    clock = lambda: T0_MS  # noqa: E731
    data = tmp_path / "data"

    async def main() -> str:
        async with _cloud(db) as transport:
            await _run_gateway(site, transport, clock, _weights(0, 30, T0_MS), db)
            shutil.copytree(data, tmp_path / "image")
            await _run_gateway(site, transport, clock, _weights(100, 30, T0_MS), db)
            shutil.rmtree(data)
            shutil.copytree(tmp_path / "image", data)
            return await _run_gateway(site, transport, clock, _weights(1000, 30, T0_MS), db)

    gw_metrics = asyncio.run(main())
    got = _stored_weights(db)
    assert sorted(got) == [*range(30), *range(100, 130), *range(1000, 1030)]  # each once
    # one refusal: the answer's last_seq lets the gateway jump past every reused seq at once
    assert metric(gw_metrics, "pledgewatch_gateway_upload_failures_total",
                  reason="seq_reused") == 1


def test_a_new_outbox_after_the_clock_was_corrected_resigns_and_loses_nothing(
        db: Db, tmp_path: Path) -> None:
    site = _gateway_site(tmp_path, db)
    data = tmp_path / "data"

    async def main() -> str:
        async with _cloud(db) as transport:  # replay window: 1000 seqs
            await _run_gateway(site, transport, lambda: T0_MS + 6 * HOUR_MS,
                               _weights(0, 30, T0_MS), db)
            shutil.rmtree(data)  # a new SD card; NTP has fixed the clock
            return await _run_gateway(site, transport, lambda: T0_MS,
                                      _weights(1000, 30, T0_MS), db)

    gw_metrics = asyncio.run(main())
    assert sorted(_stored_weights(db)) == [*range(30), *range(1000, 1030)]
    assert metric(gw_metrics, "pledgewatch_gateway_upload_failures_total",
                  reason="replay_outside_window") == 1
    with db.sessions() as s:
        seqs = s.scalars(select(models.IngestedBatch.seq).order_by(
            models.IngestedBatch.id)).all()
    assert seqs == sorted(set(seqs)) and seqs[3] == seqs[2] + 1  # re-signed above the last

