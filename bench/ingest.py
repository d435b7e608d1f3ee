"""Cloud ingest throughput and memory under a burst.

* ``ingest.sqlite``: readings/s through :class:`cloud.ingest.service.IngestService` (verify
  signature, dedupe lookup, zstd + msgpack decode and validation, one transaction per batch:
  batch row, readings executemany, projections, devices, gateway) for signed zstd batches of
  1,000 readings, 8 batches in flight, into a SQLite file (WAL, synchronous=NORMAL as
  ``make_engine`` sets it) - next to the raw limit measured in the same run on the same
  envelopes: zstd + msgpack decode and a plain ``sqlite3`` executemany of the same reading rows
  (JSON data, same columns and indexes), one commit per batch, no app (goal: >= 100k
  readings/s and >= 50% of the raw limit).
* ``ingest.postgresql``: the same readings/s through the same service into a throwaway
  PostgreSQL cluster (:func:`tests.services.postgres`, fsync ON as in production), per
  process, next to that cluster's raw limit in the same run: zstd + msgpack decode and a
  plain psycopg executemany of the same reading rows (JSON data, same columns and indexes, no
  foreign keys), one commit per batch.
* ``ingest.burst_rss``: resident memory of a fresh process while 10x ``queue_size`` batches
  are submitted at once, wave after wave, against the same process at 1x: the excess is
  answered 429 (counted), memory stays flat (ratio = RSS at 1x / RSS at 10x, 1.0 = no growth).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import zstandard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.orm import Session

from bench.outbox import T0_MS, reading_mix
from cloud.db import models
from cloud.db.session import make_engine, make_sessionmaker
from cloud.errors import IngestBusy
from cloud.ingest.service import IngestService
from protocols.uplink import Batch, unpack_header
from uplink.envelope import UNPACK_LIMITS, encode_batch

BATCH = 1000
IN_FLIGHT = 8
GW = "bench-gw"


def _envelopes(n_batches: int, key: Ed25519PrivateKey, seed: int = 7,
               per_batch: int = BATCH) -> list[bytes]:
    import random

    mix = reading_mix(n_batches * per_batch, random.Random(seed))
    return [encode_batch(Batch(GW, seq, T0_MS + seq, tuple(mix[i:i + per_batch])), key)
            for seq, i in enumerate(range(0, len(mix), per_batch), start=1)]


def _setup_db(url: str, key: Ed25519PrivateKey) -> None:
    engine = create_engine(url)
    try:
        models.Base.metadata.create_all(engine)
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        with Session(engine) as s, s.begin():
            bank = models.Bank(code="b", name="Bank")
            s.add(bank)
            s.flush()
            site = models.Site(bank_id=bank.id, code="s", name="Ranch", kind="ranch")
            s.add(site)
            s.flush()
            s.add(models.Gateway(gateway_id=GW, site_id=site.id, public_key=raw,
                                 disabled=False, last_seq=0))
    finally:
        engine.dispose()


async def _pump(service: IngestService, envelopes: list[bytes], in_flight: int) -> None:
    sem = asyncio.Semaphore(in_flight)

    async def one(env: bytes) -> None:
        async with sem:
            result = await service.submit(env)
            if result.status != "stored":
                raise AssertionError(f"batch {result.seq} was {result.status}")

    await asyncio.gather(*(one(e) for e in envelopes))


def _app_run(url: str, envelopes: list[bytes]) -> float:
    engine = make_engine(url)
    try:
        service = IngestService(sessions=make_sessionmaker(engine), clock_ms=lambda: T0_MS,
                                queue_size=IN_FLIGHT, replay_window=10**9)

        async def main() -> float:
            async with service:
                t0 = time.perf_counter()
                await _pump(service, envelopes, IN_FLIGHT)
                return time.perf_counter() - t0

        return asyncio.run(main())
    finally:
        engine.dispose()


def _raw_run(path: Path, envelopes: list[bytes]) -> float:
    """The limit: decode and executemany the same rows with nothing else."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL,"
                     " batch_id INTEGER NOT NULL, device_id VARCHAR(128) NOT NULL,"
                     " kind VARCHAR(32) NOT NULL, ts_ms BIGINT NOT NULL,"
                     " recv_ms BIGINT NOT NULL, data JSON NOT NULL)")
        conn.execute("CREATE INDEX ix1 ON readings (site_id, ts_ms)")
        conn.execute("CREATE INDEX ix2 ON readings (site_id, kind, ts_ms)")
        dctx = zstandard.ZstdDecompressor()
        dumps = json.dumps
        t0 = time.perf_counter()
        for batch_id, env in enumerate(envelopes, start=1):
            h = unpack_header(env)
            obj = msgpack.unpackb(dctx.decompress(env[h.body_offset:]), **UNPACK_LIMITS)
            rows = [(1, batch_id, r["d"], r["k"], r["t"], r["r"], dumps(r["v"]))
                    for r in obj["readings"]]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO readings (site_id, batch_id, device_id, kind, ts_ms,"
                             " recv_ms, data) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()


_RAW_PG_SCHEMA = (
    "CREATE TABLE readings (id BIGSERIAL PRIMARY KEY, site_id INTEGER NOT NULL,"
    " batch_id BIGINT NOT NULL, device_id VARCHAR(128) NOT NULL, kind VARCHAR(32) NOT NULL,"
    " ts_ms BIGINT NOT NULL, recv_ms BIGINT NOT NULL, data JSON NOT NULL)",
    "CREATE INDEX ix1 ON readings (site_id, ts_ms)",
    "CREATE INDEX ix2 ON readings (site_id, kind, ts_ms)",
)


def _pg_raw_run(url: str, envelopes: list[bytes]) -> float:
    """The PostgreSQL limit: decode and executemany the same rows through psycopg with
    nothing else, one transaction per batch."""
    import psycopg

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for ddl in _RAW_PG_SCHEMA:
            conn.execute(ddl)
        dctx = zstandard.ZstdDecompressor()
        dumps = json.dumps
        sql = ("INSERT INTO readings (site_id, batch_id, device_id, kind, ts_ms, recv_ms, data)"
               " VALUES (%s, %s, %s, %s, %s, %s, %s)")
        t0 = time.perf_counter()
        for batch_id, env in enumerate(envelopes, start=1):
            h = unpack_header(env)
            obj = msgpack.unpackb(dctx.decompress(env[h.body_offset:]), **UNPACK_LIMITS)
            rows = [(1, batch_id, r["d"], r["k"], r["t"], r["r"], dumps(r["v"]))
                    for r in obj["readings"]]
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(sql, rows)
        return time.perf_counter() - t0


def _pg_database(server: str, name: str) -> str:
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def _postgresql(d: Path, key: Ed25519PrivateKey, envelopes: list[bytes],
                repeats: int) -> dict[str, Any]:
    from tests.services import postgres  # the test suite's throwaway cluster

    n = len(envelopes) * BATCH
    best_app = best_raw = float("inf")
    (d / "pg").mkdir()
    with postgres(d / "pg", fsync=True) as server:
        for rep in range(repeats):
            url = _pg_database(server, f"app_{rep}")
            _setup_db(url, key)
            best_app = min(best_app, _app_run(url, envelopes))
            best_raw = min(best_raw, _pg_raw_run(_pg_database(server, f"raw_{rep}"),
                                                 envelopes))
    return {
        "bench": "ingest.postgresql", "readings": n, "batch_readings": BATCH,
        "readings_per_s": n / best_app,
        "baseline": "zstd+msgpack decode and psycopg executemany of the same rows, one "
                    "commit per batch, same PostgreSQL cluster (fsync on)",
        "baseline_readings_per_s": n / best_raw,
        "ratio_vs_baseline": best_raw / best_app,
    }


SMALL_BATCH = 20  # what a slow gateway (0.4 readings/s, batch_max_age_s 60) sends


def _small_batches(d: Path, key: Ed25519PrivateKey, batches: int = 1000) -> list[dict[str, Any]]:
    """Batches/s of small batches (the per-batch cost: signature, dedupe lookup, one
    transaction and commit) into SQLite and PostgreSQL; baseline: the same readings in
    batches of 1,000 through the same service, same database kind."""
    from tests.services import postgres

    small = _envelopes(batches, key, seed=11, per_batch=SMALL_BATCH)
    large = _envelopes(batches * SMALL_BATCH // BATCH, key, seed=11)
    n = batches * SMALL_BATCH
    rows = []

    def row(kind: str, t_small: float, t_large: float) -> dict[str, Any]:
        return {"bench": f"ingest.small_batches.{kind}", "readings": n,
                "batch_readings": SMALL_BATCH, "batches_per_s": batches / t_small,
                "readings_per_s": n / t_small,
                "baseline": f"the same readings in batches of {BATCH}, same service",
                "baseline_readings_per_s": n / t_large, "ratio_vs_baseline": t_large / t_small}

    for name in ("small", "large"):
        _setup_db(f"sqlite:///{d / f'sb-{name}.db'}", key)
    rows.append(row("sqlite", _app_run(f"sqlite:///{d / 'sb-small.db'}", small),
                    _app_run(f"sqlite:///{d / 'sb-large.db'}", large)))
    (d / "pg-small").mkdir()
    with postgres(d / "pg-small", fsync=True) as server:
        urls = {name: _pg_database(server, f"sb_{name}") for name in ("small", "large")}
        for url in urls.values():
            _setup_db(url, key)
        rows.append(row("postgresql", _app_run(urls["small"], small),
                        _app_run(urls["large"], large)))
    return rows


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _burst_child(url: str, envelopes: list[bytes], queue_size: int, waves: int,
                 out: Any) -> None:
    engine = make_engine(url)
    service = IngestService(sessions=make_sessionmaker(engine), clock_ms=lambda: T0_MS,
                            queue_size=queue_size, replay_window=10**9)
    peaks = {"1x": 0.0, "10x": 0.0}
    busy = {"1x": 0, "10x": 0}
    stored = 0

    async def sample(phase: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            peaks[phase] = max(peaks[phase], _rss_mb())
            await asyncio.sleep(0.005)

    async def submit(phase: str, env: bytes) -> None:
        nonlocal stored
        try:
            await service.submit(env)
            stored += 1
        except IngestBusy:
            busy[phase] += 1

    async def phase(name: str, factor: int, batches: list[bytes]) -> None:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(name, stop))
        for w in range(waves):
            wave = batches[w * factor * queue_size:(w + 1) * factor * queue_size]
            await asyncio.gather(*(submit(name, e) for e in wave))
        stop.set()
        await sampler

    async def main() -> None:
        async with service:
            n = waves * queue_size
            # warm up: fill caches, pools and the allocator as the steady state would
            await phase("1x", 1, envelopes[:n])
            peaks["1x"] = 0.0
            await phase("1x", 1, envelopes[n:2 * n])
            await phase("10x", 10, envelopes[2 * n:])

    try:
        asyncio.run(main())
    finally:
        engine.dispose()
    out.send({"peaks": peaks, "busy": busy, "stored": stored})


def _burst(d: Path, key: Ed25519PrivateKey, queue_size: int = 8,
           waves: int = 4) -> dict[str, Any]:
    url = f"sqlite:///{d / 'burst.db'}"
    _setup_db(url, key)
    envelopes = _envelopes(2 * waves * queue_size + 10 * waves * queue_size, key, seed=9)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_burst_child, args=(url, envelopes, queue_size, waves, child))
    proc.start()
    child.close()  # so a child that dies reads as EOFError here, not a hang
    try:
        res = parent.recv()
    finally:
        proc.join()
    peaks, busy = res["peaks"], res["busy"]
    return {"bench": "ingest.burst_rss", "queue_size": queue_size,
            "burst_batches": 10 * waves * queue_size, "batch_readings": BATCH,
            "rss_mb": peaks["10x"], "baseline": f"peak RSS at 1x ({queue_size} batches in "
                                                f"flight), same process",
            "baseline_rss_mb": peaks["1x"], "ratio_vs_baseline": peaks["1x"] / peaks["10x"],
            "answered_429": busy["10x"], "answered_429_at_1x": busy["1x"],
            "stored": res["stored"]}


def run(batches: int = 100, repeats: int = 3) -> list[dict[str, Any]]:
    key = Ed25519PrivateKey.generate()
    envelopes = _envelopes(batches, key)
    n = batches * BATCH
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pw-bench-ingest-") as tmp:
        d = Path(tmp)
        best_app = best_raw = float("inf")
        for rep in range(repeats):
            url = f"sqlite:///{d / f'app-{rep}.db'}"
            _setup_db(url, key)
            best_app = min(best_app, _app_run(url, envelopes))
            best_raw = min(best_raw, _raw_run(d / f"raw-{rep}.db", envelopes))
        results.append({
            "bench": "ingest.sqlite", "readings": n, "batch_readings": BATCH,
            "readings_per_s": n / best_app,
            "baseline": "zstd+msgpack decode and sqlite3 executemany of the same rows, one "
                        "commit per batch, WAL, synchronous=NORMAL",
            "baseline_readings_per_s": n / best_raw,
            "ratio_vs_baseline": best_raw / best_app,
        })
        results.append(_postgresql(d, key, envelopes, repeats))
        results += _small_batches(d, key)
        results.append(_burst(d, key))
    return results


if __name__ == "__main__":
    for r in run():
        print(json.dumps(r))
