"""The ingest pipeline over HTTP, against a SQLite file and a real PostgreSQL: real gateway-built
envelopes are stored once; resends, forgeries, replays and malformed bodies each get their
answer and write nothing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import msgpack  # type: ignore[import-untyped]
import pytest
import zstandard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import cloud.ingest.service as service_module
from cloud.api.routes.ingest import router
from cloud.db import models
from cloud.errors import CloudError, IngestBusy, IngestRejected
from cloud.ingest.service import IngestResult, IngestService
from protocols.uplink import MAX_UNCOMPRESSED_BYTES, Batch, Reading, pack_header, unpack_header
from tests.cloud.conftest import T0_MS, Db, gateway_envelopes, reading_mix
from uplink.envelope import encode_batch

GW = "gw-ranch-1"
NOW_MS = T0_MS + 86_400_000


def clock() -> int:
    return NOW_MS


def make_service(db: Db, **kw: Any) -> IngestService:
    args: dict[str, Any] = {"sessions": db.sessions, "clock_ms": clock, "queue_size": 8,
                            "replay_window": 1000}
    args.update(kw)
    return IngestService(**args)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


class Http:
    """The ingest route in a minimal app, with the service it calls."""

    def __init__(self, service: IngestService) -> None:
        app = FastAPI()
        app.include_router(router)
        app.state.ingest = service
        self.service = service
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                        base_url="http://cloud.test")

    async def post(self, body: Any, **kw: Any) -> httpx.Response:
        return await self.client.post("/v1/ingest", content=body, headers={
            "Content-Type": "application/vnd.pledgewatch.batch"}, **kw)


@contextlib.asynccontextmanager
async def http_app(db: Db, **kw: Any) -> AsyncIterator[Http]:
    service = make_service(db, **kw)
    await service.start()
    http = Http(service)
    try:
        yield http
    finally:
        await http.client.aclose()
        await service.stop()


def signed(key: Ed25519PrivateKey, *, body: bytes, raw_len: int, seq: int = 1,
           gateway_id: str = GW, created_ms: int = T0_MS) -> bytes:
    """An envelope with a valid signature over whatever body we choose."""
    header = pack_header(gateway_id=gateway_id, seq=seq, created_ms=created_ms,
                         body_len=len(body), raw_len=raw_len)
    return header + key.sign(header + body) + body


def signed_raw(key: Ed25519PrivateKey, raw: bytes, *, seq: int = 1) -> bytes:
    body = zstandard.ZstdCompressor(write_content_size=True).compress(raw)
    return signed(key, body=body, raw_len=len(raw), seq=seq)


def batch_of(seq: int, n: int = 3, gateway_id: str = GW) -> Batch:
    return Batch(gateway_id, seq, T0_MS + seq, tuple(reading_mix(n, seed=seq,
                                                                 t0_ms=T0_MS + seq * 10_000)))


# --- stored once ------------------------------------------------------------------------------


def test_gateway_batches_are_stored_once_and_resends_change_nothing(db: Db,
                                                                    tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    site_id = db.add_gateway(GW, key)
    readings = reading_mix(300)
    envelopes = gateway_envelopes(tmp_path / "outbox.db", GW, key, readings, per_batch=100)
    assert len(envelopes) == 3

    async def main() -> None:
        async with http_app(db) as http:
            for env in envelopes:
                resp = await http.post(env)
                assert resp.status_code == 200, resp.text
                assert resp.json()["status"] == "stored"
            after_store = db.counts()
            for env in envelopes:
                resp = await http.post(env)
                assert resp.status_code == 200
                assert resp.json() == {"status": "duplicate",
                                       "seq": resp.json()["seq"], "readings": 100}
            assert db.counts() == after_store
            assert http.service.stats.stored == 3 and http.service.stats.duplicates == 3

    run(main)
    counts = db.counts()
    kinds = [r.kind for r in readings]
    assert counts["ingested_batches"] == 3
    assert counts["readings"] == 300
    assert counts["positions"] == kinds.count("position") == 15
    assert counts["feed_events"] == kinds.count("feed_event")
    assert counts["weigh_tickets"] == kinds.count("weigh_ticket")
    assert counts["devices"] == len({r.device_id for r in readings})
    seqs = [unpack_header(e).seq for e in envelopes]
    assert seqs == list(range(seqs[0], seqs[0] + 3))  # a new outbox starts at its clock
    assert counts[f"last_seq:{GW}"] == seqs[-1]
    assert counts[f"last_seen:{GW}"] == NOW_MS
    with db.sessions() as s:
        stored = sorted((r.device_id, r.kind, r.ts_ms, r.recv_ms, r.data)
                        for r in s.scalars(select(models.Reading)))
        assert {r.site_id for r in s.scalars(select(models.Reading))} == {site_id}
        devices = {d.device_id: d for d in s.scalars(select(models.Device))}
        ticket = s.scalars(select(models.WeighTicket).order_by(models.WeighTicket.in_ms)).first()
    assert stored == sorted((r.device_id, r.kind, r.ts_ms, r.recv_ms, r.data)
                            for r in readings)
    newest: dict[str, int] = {}
    for r in readings:
        newest[r.device_id] = max(newest.get(r.device_id, 0), r.ts_ms)
    assert {d: dev.last_seen_ms for d, dev in devices.items()} == newest
    assert devices["r2000:gate1"].online is True  # it sent device_online
    assert devices["r2000:gate0"].online is None  # it never said
    assert devices["r2000:gate0"].kind == "r2000"
    first_ticket = next(r for r in readings if r.kind == "weigh_ticket")
    assert ticket is not None and ticket.truck_id == first_ticket.data["truck_id"]
    assert ticket.net_kg == first_ticket.data["net_kg"]


def test_a_seen_seq_is_answered_without_decompressing(db: Db) -> None:
    """A seen (gateway, seq) is decided from the signed header alone: the resend (same
    bytes, same signature) answers duplicate, and another body under that seq is refused as
    seq_reused - here one that does not even decompress (400 if it were decoded)."""
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    envelope = encode_batch(batch_of(1), key)

    async def main() -> None:
        async with http_app(db) as http:
            assert (await http.post(envelope)).status_code == 200
            before = db.counts()
            resp = await http.post(envelope)
            assert resp.status_code == 200
            assert resp.json() == {"status": "duplicate", "seq": 1, "readings": 3}
            garbage = signed(key, body=b"\x00" * 50, raw_len=10, seq=1)
            resp = await http.post(garbage)
            assert (resp.status_code, resp.json()["reason"]) == (409, "seq_reused")
            assert db.counts() == before
            resp = await http.post(signed(key, body=b"\x00" * 50, raw_len=10, seq=2))
            assert (resp.status_code, resp.json()["reason"]) == (400, "malformed")

    run(main)


def test_device_state_follows_the_newest_news(db: Db) -> None:
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    dev = "r2000:gate9"

    def batch(seq: int, *readings: Reading) -> bytes:
        return encode_batch(Batch(GW, seq, T0_MS, readings), key)

    async def main() -> None:
        async with http_app(db) as http:
            await http.post(batch(1, Reading("device_offline", dev, T0_MS + 100, T0_MS + 100,
                                             {"reason": "timeout"})))
            assert _device(db, dev) == (False, T0_MS + 100)
            # a late, older "online" (a backlog resent after an outage) does not flip it
            await http.post(batch(2, Reading("device_online", dev, T0_MS + 50, T0_MS + 50,
                                             {})))
            assert _device(db, dev) == (False, T0_MS + 100)
            await http.post(batch(3, Reading("device_online", dev, T0_MS + 200, T0_MS + 200,
                                             {})))
            assert _device(db, dev) == (True, T0_MS + 200)
            # other readings move last_seen, never backwards
            await http.post(batch(4, Reading("device_errors", dev, T0_MS + 150, T0_MS + 150,
                                             {"errors": 1})))
            assert _device(db, dev) == (True, T0_MS + 200)

    run(main)


def _device(db: Db, device_id: str) -> tuple[bool | None, int | None]:
    with db.sessions() as s:
        d = s.scalars(select(models.Device).where(models.Device.device_id == device_id)).one()
        return d.online, d.last_seen_ms


# --- refused, nothing written -------------------------------------------------------------


def _wrong_types(key: Ed25519PrivateKey) -> bytes:
    batch = batch_of(1).to_wire()
    batch["readings"][0]["v"] = {"weight_kg": "heavy", "stable": "yes"}
    batch["readings"][0]["k"] = "weight"
    return signed_raw(key, msgpack.packb(batch))


def _seq_as_text(key: Ed25519PrivateKey) -> bytes:
    batch = batch_of(1).to_wire()
    batch["seq"] = "1"
    return signed_raw(key, msgpack.packb(batch))


def _mismatch(key: Ed25519PrivateKey) -> bytes:
    return signed_raw(key, msgpack.packb(batch_of(7).to_wire()), seq=1)


def _truncated_zstd(key: Ed25519PrivateKey) -> bytes:
    raw = msgpack.packb(batch_of(1, n=200).to_wire())
    body = zstandard.ZstdCompressor(write_content_size=True).compress(raw)
    return signed(key, body=body[: len(body) // 2], raw_len=len(raw))


def _bomb_declared(key: Ed25519PrivateKey) -> bytes:
    raw = b"\x00" * (MAX_UNCOMPRESSED_BYTES + 1)
    body = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(raw)
    return signed(key, body=body, raw_len=len(raw))


def _bomb_in_frame(key: Ed25519PrivateKey) -> bytes:
    """The signed header claims 1 kB, the zstd frame inflates to 64 MB."""
    raw = b"\x00" * (64 * 1024 * 1024)
    body = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(raw)
    return signed(key, body=body, raw_len=1024)


def _bomb_streaming_frame(key: Ed25519PrivateKey) -> bytes:
    """A frame without a declared size (streaming): refused before inflating anything."""
    raw = b"\x00" * (64 * 1024 * 1024)
    cobj = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    body = cobj.compress(raw) + cobj.flush()
    return signed(key, body=body, raw_len=1024)


def _garbage_msgpack(key: Ed25519PrivateKey) -> bytes:
    return signed_raw(key, b"\xc1\xc1\xc1")


def _forged(key: Ed25519PrivateKey) -> bytes:
    env = bytearray(encode_batch(batch_of(1), key))
    env[-1] ^= 0x01  # one bit of the body
    return bytes(env)


def _wrong_key(key: Ed25519PrivateKey) -> bytes:
    return encode_batch(batch_of(1), Ed25519PrivateKey.generate())


def _unknown_gateway(key: Ed25519PrivateKey) -> bytes:
    return encode_batch(batch_of(1, gateway_id="gw-nobody"), key)


def _disabled_gateway(key: Ed25519PrivateKey) -> bytes:
    return encode_batch(batch_of(1, gateway_id="gw-disabled"), key)


def _bad_magic(key: Ed25519PrivateKey) -> bytes:
    return b"GET / HTTP/1.0\r\n\r\n" + b"x" * 200


REFUSED: list[tuple[str, Callable[[Ed25519PrivateKey], bytes], int, str]] = [
    ("forged_signature", _forged, 403, "bad_signature"),
    ("wrong_key", _wrong_key, 403, "bad_signature"),
    ("unknown_gateway", _unknown_gateway, 403, "unknown_gateway"),
    ("disabled_gateway", _disabled_gateway, 403, "gateway_disabled"),
    ("not_an_envelope", _bad_magic, 400, "malformed"),
    ("truncated_zstd", _truncated_zstd, 400, "malformed"),
    ("zstd_bomb_declared", _bomb_declared, 413, "too_large"),
    ("zstd_bomb_in_frame", _bomb_in_frame, 413, "too_large"),
    ("zstd_streaming_frame", _bomb_streaming_frame, 400, "malformed"),
    ("msgpack_garbage", _garbage_msgpack, 400, "malformed"),
    ("msgpack_wrong_types", _wrong_types, 422, "bad_field"),
    ("msgpack_seq_as_text", _seq_as_text, 422, "bad_field"),
    ("body_header_mismatch", _mismatch, 422, "mismatch"),
]


@pytest.mark.parametrize(("build", "status", "reason"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_refused_batches_get_their_4xx_and_write_nothing(
        db: Db, build: Callable[[Ed25519PrivateKey], bytes], status: int, reason: str) -> None:
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    db.add_gateway("gw-disabled", key, disabled=True)
    envelope = build(key)

    async def main() -> None:
        async with http_app(db) as http:
            before = db.counts()
            resp = await http.post(envelope)
            assert (resp.status_code, resp.json()["reason"]) == (status, reason), resp.text
            assert resp.json()["detail"]
            assert db.counts() == before
            assert before["ingested_batches"] == before["readings"] == 0
            assert http.service.stats.rejected == {reason: 1}

    run(main)


def test_ten_megabyte_bodies_are_refused_before_reading_them(db: Db) -> None:
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    big = encode_batch(batch_of(1), key) + b"\x00" * (10 * 1024 * 1024)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while streaming
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    async def main() -> None:
        async with http_app(db) as http:
            before = db.counts()
            resp = await http.post(big)
            assert (resp.status_code, resp.json()["reason"]) == (413, "too_large")
            resp = await http.post(chunks())
            assert (resp.status_code, resp.json()["reason"]) == (413, "too_large")
            with pytest.raises(IngestRejected) as err:  # and the service's own check
                await http.service.submit(big)
            assert (err.value.status, err.value.reason) == (413, "too_large")
            assert db.counts() == before
            assert before["readings"] == 0

    run(main)


def test_replay_outside_the_window_is_refused_and_gaps_inside_it_are_filled(db: Db) -> None:
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)

    async def main() -> None:
        async with http_app(db, replay_window=5) as http:
            # a gateway whose outbox was replaced jumps forward: accepted
            assert (await http.post(encode_batch(batch_of(20), key))).json()["status"] == \
                "stored"
            before = db.counts()
            resp = await http.post(encode_batch(batch_of(14), key))
            assert (resp.status_code, resp.json()["reason"]) == (409, "replay_outside_window")
            assert db.counts() == before
            resp = await http.post(encode_batch(batch_of(15), key))
            assert resp.json()["status"] == "stored"
            assert db.counts()[f"last_seq:{GW}"] == 20

    run(main)


def test_disabling_a_gateway_takes_effect_although_its_key_is_cached(db: Db) -> None:
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)

    async def main() -> None:
        async with http_app(db, key_cache_ms=10**9) as http:
            assert (await http.post(encode_batch(batch_of(1), key))).status_code == 200
            db.set_disabled(GW, True)
            before = db.counts()
            resp = await http.post(encode_batch(batch_of(2), key))
            assert (resp.status_code, resp.json()["reason"]) == (403, "gateway_disabled")
            assert db.counts() == before
            db.set_disabled(GW, False)
            assert (await http.post(encode_batch(batch_of(2), key))).status_code == 200

    run(main)


def test_a_failure_mid_transaction_writes_nothing_and_the_resend_succeeds(
        db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    envelope = encode_batch(batch_of(1, n=40), key)
    real = service_module._upsert_devices

    def broken(*args: Any) -> None:  # after readings and projections were inserted
        raise OperationalError("UPDATE devices", {}, Exception("disk I/O error"))

    async def main() -> None:
        async with http_app(db) as http:
            monkeypatch.setattr(service_module, "_upsert_devices", broken)
            before = db.counts()
            resp = await http.post(envelope)
            assert (resp.status_code, resp.json()["reason"]) == (503, "unavailable")
            assert int(resp.headers["Retry-After"]) >= 1
            assert db.counts() == before
            monkeypatch.setattr(service_module, "_upsert_devices", real)
            resp = await http.post(envelope)
            assert resp.json() == {"status": "stored", "seq": 1, "readings": 40}
            assert db.counts()["readings"] == 40

    run(main)


# --- backpressure -------------------------------------------------------------------------


def test_a_full_queue_answers_429_with_retry_after(db: Db) -> None:
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    release = asyncio.Event()
    stored: list[tuple[str, int]] = []

    async def slow_hook(gateway_id: str, batch: Batch) -> None:
        stored.append((gateway_id, batch.seq))
        await release.wait()

    async def main() -> None:
        async with http_app(db, queue_size=2, on_stored=slow_hook,
                            busy_retry_after_s=2.5) as http:
            first = [asyncio.create_task(http.post(encode_batch(batch_of(s), key)))
                     for s in (1, 2)]
            while len(stored) < 2:  # both admitted, stored, and held in the hook
                await asyncio.sleep(0.01)
            assert http.service.depth == 2
            resp = await http.post(encode_batch(batch_of(3), key))
            assert resp.status_code == 429
            assert resp.json()["reason"] == "busy"
            assert resp.headers["Retry-After"] == "3"
            assert http.service.stats.busy == 1
            release.set()
            assert [(await t).status_code for t in first] == [200, 200]
            assert (await http.post(encode_batch(batch_of(3), key))).status_code == 200
            assert db.counts()["ingested_batches"] == 3
            assert sorted(stored) == [(GW, 1), (GW, 2), (GW, 3)]  # after each commit

    run(main)


def test_service_refuses_before_start_and_after_stop(db: Db) -> None:
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)

    async def main() -> None:
        service = make_service(db)
        with pytest.raises(CloudError) as err:
            await service.submit(encode_batch(batch_of(1), key))
        assert err.value.reason == "unavailable"
        async with service:
            assert (await service.submit(encode_batch(batch_of(1), key))).status == "stored"
        with pytest.raises(CloudError):
            await service.submit(encode_batch(batch_of(2), key))
        assert not isinstance(err.value, IngestBusy)

    run(main)


# --- concurrency --------------------------------------------------------------------------


def test_two_services_on_one_database_store_interleaved_duplicates_once(
        db: Db, tmp_path: Path) -> None:
    """Two ingest services (own engines, own connections: as two processes) get every batch,
    in opposite orders, at the same time."""
    key = Ed25519PrivateKey.generate()
    other_key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    db.add_gateway("gw-2", other_key)
    envelopes = (gateway_envelopes(tmp_path / "a.db", GW, key, reading_mix(1200, seed=3), 60)
                 + gateway_envelopes(tmp_path / "b.db", "gw-2", other_key,
                                     reading_mix(600, seed=4), 60))
    assert len(envelopes) == 30

    async def main() -> None:
        a = make_service(db, sessions=db.another_sessionmaker(), queue_size=64)
        b = make_service(db, sessions=db.another_sessionmaker(), queue_size=64)
        async with a, b:
            results: list[IngestResult] = await asyncio.gather(
                *itertools.chain.from_iterable(
                    (a.submit(x), b.submit(y))
                    for x, y in zip(envelopes, reversed(envelopes), strict=True)),
                *(a.submit(x) for x in envelopes[::3]))
        per_batch: dict[tuple[str, int], list[str]] = {}
        for r in results:
            per_batch.setdefault((r.gateway_id, r.seq), []).append(r.status)
        assert len(per_batch) == 30
        assert all(s.count("stored") == 1 for s in per_batch.values()), per_batch
        assert a.stats.stored + b.stats.stored == 30

    run(main)
    counts = db.counts()
    assert counts["ingested_batches"] == 30
    assert counts["readings"] == 1800
    with db.sessions() as s:
        rows = s.execute(select(models.Reading.site_id, models.Reading.device_id,
                                models.Reading.ts_ms, models.Reading.kind)).all()
    assert len(set(rows)) == len(rows) == 1800


def test_non_finite_numbers_are_stored_as_null_and_not_projected(db: Db) -> None:
    """msgpack carries NaN/Infinity, which the contract does not forbid; PostgreSQL's JSON
    and SQLite's NOT NULL REAL refuse them. The batch is stored, not refused forever."""
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    nan = float("nan")
    readings = (Reading("position", "gps:t1", T0_MS, T0_MS, {"lat": nan, "lon": 1.0}),
                Reading("position", "gps:t1", T0_MS + 1, T0_MS + 1, {"lat": 2.0, "lon": 1.0}),
                Reading("feed_event", "digistar:m1", T0_MS, T0_MS,
                        {"event": "load", "kg": float("inf"), "pen": None}),
                Reading("weight", "toledo:c1", T0_MS, T0_MS,
                        {"weight_kg": nan, "stable": False, "extra": [nan, 1.5]}))

    async def main() -> None:
        async with http_app(db) as http:
            resp = await http.post(encode_batch(Batch(GW, 1, T0_MS, readings), key))
            assert resp.json()["status"] == "stored", resp.text

    run(main)
    counts = db.counts()
    assert (counts["readings"], counts["positions"], counts["feed_events"]) == (4, 1, 0)
    with db.sessions() as s:
        weight = s.scalars(select(models.Reading).where(models.Reading.kind == "weight")).one()
    assert weight.data == {"weight_kg": None, "stable": False, "extra": [None, 1.5]}


def test_a_rotated_key_is_picked_up_at_once_although_the_old_one_is_cached(db: Db) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    db.add_gateway(GW, old)

    async def main() -> None:
        async with http_app(db, key_cache_ms=10**9) as http:
            assert (await http.post(encode_batch(batch_of(1), old))).status_code == 200
            raw = new.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
            with db.sessions.begin() as s:  # the operator registers the rotated key
                gw = s.scalar(select(models.Gateway).where(models.Gateway.gateway_id == GW))
                assert gw is not None
                gw.public_key = raw
            resp = await http.post(encode_batch(batch_of(2), new))
            assert resp.status_code == 200, resp.text
            forged = Ed25519PrivateKey.generate()  # still refused: the lookup is fresh
            resp = await http.post(encode_batch(batch_of(3), forged))
            assert (resp.status_code, resp.json()["reason"]) == (403, "bad_signature")

    run(main)


def test_fields_too_big_for_their_columns_are_stored_raw_not_refused(db: Db) -> None:
    """A reading the contract allows but a projection column cannot hold (a long pen name,
    a 256-bit EPC as truck id, an unsigned 64-bit integer) must not block its gateway with
    endless 503s: the batch is stored, the raw reading kept, only the projection skipped."""
    key = Ed25519PrivateKey.generate()
    db.add_gateway(GW, key)
    t = T0_MS
    readings = (
        Reading("feed_event", "mixer-1", t, t, {"event": "unload", "kg": 400.0,
                                                "pen": "P" * 40}),
        Reading("weigh_ticket", "wb-1", t, t, {
            "gross_kg": 30_000.0, "tare_kg": 12_000.0, "net_kg": 18_000.0,
            "truck_id": "E2" * 40, "in_ms": t, "out_ms": t, "direction": "inbound"}),
        Reading("weigh_ticket", "wb-1", t, t, {
            "gross_kg": 30_000.0, "tare_kg": 12_000.0, "net_kg": 18_000.0,
            "truck_id": "T1", "in_ms": 2**63 + 5, "out_ms": t, "direction": "inbound"}),
        Reading("feed_event", "mixer-1", t + 1, t + 1, {"event": "load", "kg": 50.0,
                                                        "pen": "P3"}),
    )

    async def main() -> None:
        async with http_app(db) as http:
            resp = await http.post(encode_batch(Batch(GW, 1, t, readings), key))
            assert resp.status_code == 200, resp.text

    run(main)
    counts = db.counts()
    assert counts["readings"] == 4
    assert counts["feed_events"] == 1 and counts["weigh_tickets"] == 0
