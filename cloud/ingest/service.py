"""Verified, idempotent ingest of gateway batches (the pipeline behind ``POST /v1/ingest`` and
the MQTT consumer).

Order of work for one envelope, cheapest first, so that a sender without a registered key can
make the cloud do no more than check a length, parse a header and verify one signature:

1. length of the envelope against ``max_envelope_bytes`` - ``too_large`` (413);
2. admission: at most ``queue_size`` batches are between here and their commit; beyond that
   :class:`~cloud.errors.IngestBusy` (429 with Retry-After), so a burst costs bounded memory;
3. header + Ed25519 signature (:func:`uplink.envelope.verify_envelope`) against the key
   registered in ``gateways`` (cached for ``key_cache_ms``) - ``unknown_gateway``,
   ``gateway_disabled``, ``bad_signature`` (403), header problems (400/413);
4. ``(gateway_id, seq)`` already stored: with the same Ed25519 signature it is a resend,
   answered ``duplicate`` WITHOUT decompressing; with another signature it is a different
   batch reusing a seen seq (an outbox restored from an older backup) - ``seq_reused`` (409:
   answering ``duplicate`` would make the gateway delete readings that were never stored);
   ``seq < last_seq - replay_window`` - ``replay_outside_window`` (409). Both 409s carry the
   gateway's ``last_seq`` (:class:`SeqConflict`) so the gateway re-signs the batch above it;
5. decompress (size capped by the signed header) and decode - ``malformed`` (400),
   ``bad_field``/``unknown_kind``/``mismatch`` ... (422);
6. the single writer task stores the batch in ONE transaction: the ``ingested_batches`` row
   with the batch's signature (its unique ``(gateway_id, seq)`` is the dedupe between
   processes: a conflict means another process stored that seq, answered ``duplicate`` or
   ``seq_reused`` by the signature as in 4.), every reading (one executemany), the typed
   projections (weigh tickets, feed events, positions), the ``devices`` rows and the gateway's
   ``last_seq``/``last_seen_ms``. The gateway row is re-read and re-checked inside the
   transaction (locked on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so disabling a gateway
   takes effect at once for writes even while its key is cached.

Database work runs on two small thread pools (reads and decode; one writer) so the event loop
stays responsive; stop() drains the queue and joins them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring as _encode_basestring
from typing import Any, Final, Literal, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Table, case, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import bindparam

from cloud.db.models import Device, FeedEvent, Gateway, IngestedBatch, Position, WeighTicket
from cloud.db.models import Reading as ReadingRow
from cloud.errors import IngestBusy, IngestRejected, IngestUnavailable
from cloud.settings import CloudSettings
from protocols.uplink import MAX_BODY_BYTES, MAX_GATEWAY_ID, Batch, EnvelopeHeader, UplinkError
from uplink.envelope import decode_envelope, verify_envelope

__all__ = [
    "DEFAULT_MAX_ENVELOPE_BYTES",
    "REASON_STATUS",
    "IngestResult",
    "IngestService",
    "IngestStats",
    "OnStored",
    "SeqConflict",
]

log = logging.getLogger("pledgewatch.cloud.ingest")

# header (at most 3+1+1+64+24 bytes) + signature + the largest body the contract allows
DEFAULT_MAX_ENVELOPE_BYTES: Final = MAX_BODY_BYTES + 5 + MAX_GATEWAY_ID + 24 + 64
DEFAULT_KEY_CACHE_MS: Final = 10_000
MAX_KEY_CACHE_ENTRIES: Final = 10_000
MAX_STORE_ATTEMPTS: Final = 3

# UplinkError / ingest reason -> HTTP status. Anything not listed is a 422 (the body decoded
# but its content breaks the contract).
REASON_STATUS: Final[dict[str, int]] = {
    "too_large": 413,
    "malformed": 400,
    "unsupported_version": 400,
    "unknown_gateway": 403,
    "gateway_disabled": 403,
    "bad_signature": 403,
    "replay_outside_window": 409,
    "seq_reused": 409,
}

_READINGS: Final = cast(Table, ReadingRow.__table__)
_DEVICES: Final = cast(Table, Device.__table__)
_PROJECTIONS: Final = {kind: cast(Table, model.__table__) for kind, model in
                       (("position", Position), ("weigh_ticket", WeighTicket),
                        ("feed_event", FeedEvent))}

_isfinite: Final = math.isfinite
_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# _JSON.encode without its per-call set-up: the C encoder it uses, built once (no circular
# check: decoded msgpack cannot be circular). Same output; None where the C module is absent.
_C_JSON: Final[Callable[[Any, int], list[str]] | None] = (
    None if _c_make_encoder is None else
    _c_make_encoder(None, _JSON.default, _encode_basestring, None, _JSON.key_separator,
                    _JSON.item_separator, _JSON.sort_keys, _JSON.skipkeys, _JSON.allow_nan))
_READING_COLUMNS: Final = "site_id, batch_id, device_id, kind, ts_ms, recv_ms, data"
# SQLite: driver-level executemany (qmark); PostgreSQL: COPY (see _copy_rows)
_INSERT_READINGS: Final = (f"INSERT INTO {_READINGS.name} ({_READING_COLUMNS}) "
                           f"VALUES ({', '.join(['?'] * 7)})")
_COPY_READINGS: Final = f"COPY {_READINGS.name} ({_READING_COLUMNS}) FROM STDIN"
# kind -> projection columns, in the order _insert_readings builds its row tuples
_PROJECTION_COLUMNS: Final = {
    "position": ("site_id", "device_id", "lat", "lon", "ts_ms"),
    "weigh_ticket": ("site_id", "device_id", "truck_id", "direction", "gross_kg", "tare_kg",
                     "net_kg", "in_ms", "out_ms"),
    "feed_event": ("site_id", "device_id", "event", "kg", "pen", "ts_ms"),
}
# kind -> (sqlite driver-level INSERT, PostgreSQL COPY), like the readings'
_STORE_PROJECTIONS: Final = {
    kind: (f"INSERT INTO {_PROJECTIONS[kind].name} ({', '.join(cols)}) "
           f"VALUES ({', '.join(['?'] * len(cols))})",
           f"COPY {_PROJECTIONS[kind].name} ({', '.join(cols)}) FROM STDIN")
    for kind, cols in _PROJECTION_COLUMNS.items()}

OnStored = Callable[[str, Batch], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class IngestResult:
    status: Literal["stored", "duplicate"]
    gateway_id: str
    seq: int
    readings: int


@dataclasses.dataclass
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    readings: int = 0
    busy: int = 0
    unavailable: int = 0
    hook_errors: int = 0
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class _GatewayKey:
    public_key: Ed25519PublicKey | None  # None: not registered
    disabled: bool
    fetched_ms: int


@dataclasses.dataclass(slots=True)
class _Job:
    batch: Batch
    signature: bytes
    future: asyncio.Future[IngestResult]


class SeqConflict(IngestRejected):
    """409: the batch's seq cannot be taken - ``seq_reused`` (a different batch under a seq
    already stored) or ``replay_outside_window``. Nothing of it was stored. ``last_seq`` is
    the gateway's highest stored seq, which the answer carries so the gateway can re-sign
    the same readings above it (only ever told to a sender holding the gateway's key: the
    signature is checked first)."""

    def __init__(self, reason: str, detail: str, *, last_seq: int) -> None:
        super().__init__(409, reason, detail)
        self.last_seq = last_seq


class _Duplicate(Exception):
    def __init__(self, readings: int) -> None:
        self.readings = readings


def _rejected(exc: UplinkError) -> IngestRejected:
    return IngestRejected(REASON_STATUS.get(exc.reason, 422), exc.reason, exc.detail)


class IngestService:
    """See the module docstring. ``clock_ms`` is the cloud's clock (``last_seen_ms``,
    ``received_ms``, key cache age)."""

    def __init__(self, *, sessions: sessionmaker[Session], clock_ms: Callable[[], int],
                 queue_size: int, replay_window: int, on_stored: OnStored | None = None,
                 max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
                 key_cache_ms: int = DEFAULT_KEY_CACHE_MS, busy_retry_after_s: float = 1.0,
                 read_workers: int = 2) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.sessions = sessions
        self.clock_ms = clock_ms
        self.queue_size = queue_size
        self.replay_window = replay_window
        self.on_stored = on_stored
        self.max_envelope_bytes = max_envelope_bytes
        self.key_cache_ms = key_cache_ms
        self.busy_retry_after_s = busy_retry_after_s
        self.read_workers = read_workers
        self.stats = IngestStats()
        self._keys: dict[str, _GatewayKey] = {}
        self._pending = 0  # admitted, not yet answered
        self._queue: asyncio.Queue[_Job] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._reads: ThreadPoolExecutor | None = None
        self._write: ThreadPoolExecutor | None = None
        self._stopping = False

    # -- lifetime -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._writer is not None:
            raise RuntimeError("IngestService already started")
        self._stopping = False
        self._queue = asyncio.Queue(self.queue_size)
        self._reads = ThreadPoolExecutor(self.read_workers, thread_name_prefix="ingest-read")
        self._write = ThreadPoolExecutor(1, thread_name_prefix="ingest-write")
        self._writer = asyncio.create_task(self._write_loop(), name="ingest-writer")

    async def stop(self) -> None:
        """Refuse new batches, finish the admitted ones, join the threads."""
        if self._writer is None:
            return
        self._stopping = True
        assert self._queue is not None
        while self._pending:
            await asyncio.sleep(0.01)
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None
        for pool in (self._reads, self._write):
            if pool is not None:
                pool.shutdown(wait=True)
        self._reads = self._write = None

    async def __aenter__(self) -> IngestService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def depth(self) -> int:
        """Batches admitted and not yet answered (at most ``queue_size``)."""
        return self._pending

    @classmethod
    def from_settings(cls, settings: CloudSettings, sessions: sessionmaker[Session], *,
                      clock_ms: Callable[[], int] | None = None,
                      on_stored: OnStored | None = None) -> IngestService:
        """The service as ``pledgewatch cloud serve`` configures it."""
        return cls(sessions=sessions, clock_ms=clock_ms or _wall_clock_ms,
                   queue_size=settings.ingest_queue_size,
                   replay_window=settings.replay_window, on_stored=on_stored,
                   max_envelope_bytes=settings.max_body_bytes)

    def counters(self) -> dict[str, int]:
        """Monotonic counts for ``/metrics`` (``pledgewatch_ingest_<name>_total``)."""
        st = self.stats
        out = {"batches_stored": st.stored, "batches_duplicate": st.duplicates,
               "readings_stored": st.readings, "busy": st.busy,
               "unavailable": st.unavailable, "hook_errors": st.hook_errors}
        for reason, n in st.rejected.items():
            out[f"rejected_{reason}"] = n
        return out

    def gauges(self) -> dict[str, int]:
        return {"pending_batches": self._pending, "queue_size": self.queue_size}

    def forget_key(self, gateway_id: str | None = None) -> None:
        """Drop one cached gateway key (or all), e.g. after the admin changed it."""
        if gateway_id is None:
            self._keys.clear()
        else:
            self._keys.pop(gateway_id, None)

    # -- the pipeline ---------------------------------------------------------------------

    def _reject(self, exc: IngestRejected) -> IngestRejected:
        self.stats.rejected[exc.reason] = self.stats.rejected.get(exc.reason, 0) + 1
        if isinstance(exc, SeqConflict):  # a gateway's outbox was replaced or restored
            log.warning("refused a batch (%s): %s; the gateway's last stored seq is %d",
                        exc.reason, exc.detail, exc.last_seq)
        return exc

    async def submit(self, envelope: bytes) -> IngestResult:
        """Verify, dedupe, decode and store one envelope. Raises
        :class:`~cloud.errors.IngestRejected` (never succeeds as sent),
        :class:`~cloud.errors.IngestBusy` (queue full) or
        :class:`~cloud.errors.IngestUnavailable` (store failed or stopping)."""
        if len(envelope) > self.max_envelope_bytes:
            raise self._reject(IngestRejected(413, "too_large", f"envelope of {len(envelope)} "
                                              f"bytes > {self.max_envelope_bytes}"))
        if self._writer is None or self._stopping:
            self.stats.unavailable += 1
            raise IngestUnavailable("ingest is not running")
        if self._pending >= self.queue_size:
            self.stats.busy += 1
            raise IngestBusy(self.busy_retry_after_s)
        self._pending += 1
        try:
            result = await self._submit(bytes(envelope))
        finally:
            self._pending -= 1
        return result

    async def _submit(self, envelope: bytes) -> IngestResult:
        loop = asyncio.get_running_loop()
        assert self._reads is not None and self._queue is not None
        try:
            header, public = await self._verify(envelope)
            seen = await loop.run_in_executor(self._reads, self._precheck, header)
        except IngestRejected as exc:
            raise self._reject(exc) from None
        except IngestUnavailable:  # key or dedupe lookup failed: the database is away
            self.stats.unavailable += 1
            raise
        if seen is not None:
            self.stats.duplicates += 1
            return IngestResult("duplicate", header.gateway_id, header.seq, seen)
        try:
            batch = await loop.run_in_executor(self._reads, self._decode, envelope, public)
        except IngestRejected as exc:
            raise self._reject(exc) from None
        job = _Job(batch, header.signature, loop.create_future())
        self._queue.put_nowait(job)  # cannot overflow: admission keeps _pending <= maxsize
        try:
            result = await job.future
        except IngestRejected as exc:
            raise self._reject(exc) from None
        except IngestUnavailable:
            self.stats.unavailable += 1
            raise
        if result.status == "duplicate":
            self.stats.duplicates += 1
            return result
        self.stats.stored += 1
        self.stats.readings += result.readings
        if self.on_stored is not None:
            try:
                await self.on_stored(batch.gateway_id, batch)
            except Exception:  # the batch is stored; a hook failure must not make it resend
                self.stats.hook_errors += 1
                log.exception("on_stored hook failed for %s seq %d", batch.gateway_id,
                              batch.seq)
        return result

    async def _verify(self, envelope: bytes) -> tuple[EnvelopeHeader, Ed25519PublicKey]:
        loop = asyncio.get_running_loop()
        gateway_id = _peek_gateway_id(envelope)
        key = self._cached_key(gateway_id) if gateway_id is not None else None
        from_cache = key is not None
        while True:
            if key is None and gateway_id is not None:
                assert self._reads is not None
                key = await loop.run_in_executor(self._reads, self._load_key, gateway_id)
                if len(self._keys) >= MAX_KEY_CACHE_ENTRIES:
                    self._keys.clear()
                self._keys[gateway_id] = key
            found = key

            def lookup(gw: str, found: _GatewayKey | None = found) -> Ed25519PublicKey | None:
                if found is None or gw != gateway_id:
                    return None
                if found.disabled and found.public_key is not None:
                    raise IngestRejected(403, "gateway_disabled",
                                         f"gateway {gw!r} is disabled")
                return found.public_key

            try:
                header = verify_envelope(envelope, lookup)
            except UplinkError as exc:
                if from_cache and exc.reason in ("unknown_gateway", "bad_signature"):
                    # the cached key may be stale (a key just rotated or registered): look
                    # it up again once before refusing
                    from_cache, key = False, None
                    continue
                raise _rejected(exc) from None
            assert found is not None and found.public_key is not None
            return header, found.public_key

    def _cached_key(self, gateway_id: str) -> _GatewayKey | None:
        key = self._keys.get(gateway_id)
        if key is not None and self.clock_ms() - key.fetched_ms < self.key_cache_ms:
            return key
        return None

    def _load_key(self, gateway_id: str) -> _GatewayKey:
        try:
            with self.sessions() as s:
                row = s.execute(select(Gateway.public_key, Gateway.disabled)
                                .where(Gateway.gateway_id == gateway_id)).one_or_none()
        except SQLAlchemyError as exc:
            raise IngestUnavailable(f"gateway lookup failed: {exc}") from exc
        now = self.clock_ms()
        if row is None:
            return _GatewayKey(None, False, now)
        try:
            public = Ed25519PublicKey.from_public_bytes(bytes(row.public_key))
        except ValueError:
            log.error("gateway %r has an invalid public key registered", gateway_id)
            return _GatewayKey(None, bool(row.disabled), now)
        return _GatewayKey(public, bool(row.disabled), now)

    def _precheck(self, header: EnvelopeHeader) -> int | None:
        """Readings of the already stored ``(gateway_id, seq)`` if this is a resend of it,
        or None if new; raises ``seq_reused`` and the replay rejection. Read-only: the writer
        re-checks in its transaction."""
        try:
            with self.sessions() as s:
                conn = s.connection()  # Core statements: skip the ORM execution path
                seen = _seen(conn, header.gateway_id, header.seq)
                if seen is not None and _same_batch(seen, header.signature):
                    return seen[0]
                gw = conn.execute(select(Gateway.last_seq, Gateway.disabled).where(
                    Gateway.gateway_id == header.gateway_id)).one_or_none()
        except SQLAlchemyError as exc:
            raise IngestUnavailable(f"dedupe lookup failed: {exc}") from exc
        if seen is not None:
            raise _seq_reused(header.gateway_id, header.seq,
                              0 if gw is None else int(gw.last_seq or 0))
        self._check_gateway(header.gateway_id, gw)
        self._check_window(header.gateway_id, header.seq, gw)
        return None

    @staticmethod
    def _check_gateway(gateway_id: str, gw: Any) -> None:
        if gw is None:
            raise IngestRejected(403, "unknown_gateway", f"no gateway {gateway_id!r}")
        if gw.disabled:
            raise IngestRejected(403, "gateway_disabled", f"gateway {gateway_id!r} is "
                                                          f"disabled")

    def _check_window(self, gateway_id: str, seq: int, gw: Any) -> None:
        """A new seq far below the gateway's last one: an old envelope replayed, or an
        outbox made with a clock behind the one that made the last batches."""
        last_seq = int(gw.last_seq or 0)
        if seq < last_seq - self.replay_window:
            raise SeqConflict("replay_outside_window",
                              f"seq {seq} of gateway {gateway_id!r} < last seq {last_seq} - "
                              f"window {self.replay_window}", last_seq=last_seq)

    def _decode(self, envelope: bytes, public: Ed25519PublicKey) -> Batch:
        """Full decode; the signature is checked again (cheap next to decompression) so a
        decode can never run on bytes whose signature was not checked."""
        try:
            return decode_envelope(envelope, lambda gw: public)
        except UplinkError as exc:
            raise _rejected(exc) from None

    # -- the writer -----------------------------------------------------------------------

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            try:
                result = await loop.run_in_executor(self._write, self._store_with_retry,
                                                    job.batch, job.signature)
            except (IngestRejected, IngestUnavailable) as exc:
                if not job.future.done():
                    job.future.set_exception(exc)
            except Exception as exc:  # never let the writer die: answer and go on
                log.exception("ingest writer failed on %s seq %d", job.batch.gateway_id,
                              job.batch.seq)
                if not job.future.done():
                    job.future.set_exception(IngestUnavailable(f"store failed: {exc!r}"))
            else:
                if not job.future.done():
                    job.future.set_result(result)
            finally:
                self._queue.task_done()

    def _store_with_retry(self, batch: Batch, signature: bytes) -> IngestResult:
        for attempt in range(1, MAX_STORE_ATTEMPTS + 1):
            try:
                return self._store(batch, signature)
            except _Duplicate as dup:
                return IngestResult("duplicate", batch.gateway_id, batch.seq, dup.readings)
            except IntegrityError as exc:
                # another process stored this (gateway, seq) first - or raced us on a new
                # device row (then a retry succeeds)
                readings = self._stored_readings(batch, signature)
                if readings is not None:
                    return IngestResult("duplicate", batch.gateway_id, batch.seq, readings)
                if attempt == MAX_STORE_ATTEMPTS:
                    raise IngestUnavailable(f"store conflict: {exc.orig!r}") from exc
            except SQLAlchemyError as exc:
                if attempt == MAX_STORE_ATTEMPTS:
                    raise IngestUnavailable(f"store failed: {exc}") from exc
                log.warning("ingest store of %s seq %d failed (attempt %d): %s",
                            batch.gateway_id, batch.seq, attempt, exc)
        raise AssertionError("unreachable")

    def _stored_readings(self, batch: Batch, signature: bytes) -> int | None:
        """After a unique conflict: the readings of the (gateway, seq) another process
        stored if it is this very batch, None if nothing is stored (a device-row race);
        raises ``seq_reused`` if another batch took the seq."""
        with self.sessions() as s:
            conn = s.connection()
            seen = _seen(conn, batch.gateway_id, batch.seq)
            if seen is None:
                return None
            if _same_batch(seen, signature):
                return seen[0]
            last_seq = conn.execute(select(Gateway.last_seq).where(
                Gateway.gateway_id == batch.gateway_id)).scalar_one_or_none()
        raise _seq_reused(batch.gateway_id, batch.seq, int(last_seq or 0))

    def _store(self, batch: Batch, signature: bytes) -> IngestResult:
        now = self.clock_ms()
        with self.sessions() as s, s.begin():
            dialect = s.get_bind().dialect.name
            # Core statements on the session's connection: the ORM execution path adds
            # per-statement work and nothing this transaction needs (no ORM objects here)
            conn = s.connection()
            if dialect == "sqlite":
                # take the write lock now: a deferred transaction that read first could not
                # upgrade after another process committed (SQLITE_BUSY_SNAPSHOT)
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            gw = conn.execute(select(Gateway.id, Gateway.site_id, Gateway.last_seq,
                                  Gateway.disabled)
                           .where(Gateway.gateway_id == batch.gateway_id)
                           .with_for_update()).one_or_none()
            self._check_gateway(batch.gateway_id, gw)
            assert gw is not None
            seen = _seen(conn, batch.gateway_id, batch.seq)
            if seen is not None:
                if not _same_batch(seen, signature):
                    raise _seq_reused(batch.gateway_id, batch.seq, int(gw.last_seq or 0))
                raise _Duplicate(seen[0])
            self._check_window(batch.gateway_id, batch.seq, gw)
            batch_id = conn.execute(insert(IngestedBatch).values(
                gateway_id=batch.gateway_id, seq=batch.seq, created_ms=batch.created_ms,
                received_ms=now, readings=len(batch.readings), signature=signature)
                .returning(IngestedBatch.id)).scalar_one()
            _insert_readings(conn, dialect, batch, site_id=int(gw.site_id),
                             batch_id=batch_id)
            conn.execute(update(Gateway).where(Gateway.id == gw.id).values(
                last_seq=max(int(gw.last_seq or 0), batch.seq), last_seen_ms=now))
        return IngestResult("stored", batch.gateway_id, batch.seq, len(batch.readings))


def _seen(conn: Connection, gateway_id: str, seq: int) -> tuple[int, bytes | None] | None:
    """(readings, signature) of the stored ``(gateway_id, seq)``, None if not stored."""
    row = conn.execute(select(IngestedBatch.readings, IngestedBatch.signature).where(
        IngestedBatch.gateway_id == gateway_id, IngestedBatch.seq == seq)).one_or_none()
    return None if row is None else (int(row[0]), None if row[1] is None else bytes(row[1]))


def _same_batch(seen: tuple[int, bytes | None], signature: bytes) -> bool:
    """Whether a stored batch is the one being sent again: a true resend is byte-identical,
    so its (deterministic) Ed25519 signature is the same. A row from before the signature
    was kept (NULL) cannot tell: it is taken as the same batch, as it always was."""
    return seen[1] is None or seen[1] == signature


def _seq_reused(gateway_id: str, seq: int, last_seq: int) -> SeqConflict:
    return SeqConflict("seq_reused", f"seq {seq} of gateway {gateway_id!r} is already stored "
                                     f"for another batch (a restored or replaced outbox?)",
                       last_seq=last_seq)


def _insert_readings(conn: Connection, dialect: str, batch: Batch, *, site_id: int,
                     batch_id: int) -> None:
    readings = batch.readings
    if not readings:
        return
    # the hot path: one driver-level executemany of tuples (SQLite) or one COPY (PostgreSQL),
    # the JSON encoded once here (SQLAlchemy's per-row parameter processing would cost more
    # than the insert itself)
    pg = dialect == "postgresql"
    rows = [(site_id, batch_id, r.device_id, r.kind, r.ts_ms, r.recv_ms, _json(r.data))
            for r in readings]
    if pg:
        _copy_rows(conn, _COPY_READINGS, rows)
    else:
        conn.exec_driver_sql(_INSERT_READINGS, rows)
    tickets: list[tuple[Any, ...]] = []
    feeds: list[tuple[Any, ...]] = []
    positions: list[tuple[Any, ...]] = []
    seen: dict[str, int] = {}  # device -> newest ts_ms in the batch
    state: dict[str, tuple[int, bool]] = {}  # device -> (ts_ms, online) of its newest change
    for r in readings:
        dev, ts, kind = r.device_id, r.ts_ms, r.kind
        if seen.get(dev, -1) < ts:
            seen[dev] = ts
        if kind == "tag_sighting":
            continue
        d = r.data
        if kind == "position":
            lat, lon = float(d["lat"]), float(d["lon"])
            if _isfinite(lat) and _isfinite(lon):  # the raw reading is kept either way
                positions.append((site_id, dev, lat, lon, ts))
        elif kind == "weigh_ticket":
            kg = float(d["gross_kg"]), float(d["tare_kg"]), float(d["net_kg"])
            if (all(map(_isfinite, kg)) and _fits(d["truck_id"], 64)
                    and _fits(d["direction"], 16) and _fits_int64(d["in_ms"])
                    and _fits_int64(d["out_ms"])):
                tickets.append((site_id, dev, d["truck_id"], d["direction"], kg[0], kg[1],
                                kg[2], d["in_ms"], d["out_ms"]))
        elif kind == "feed_event":
            feed_kg = float(d["kg"])
            if _isfinite(feed_kg) and _fits(d["event"], 16) and _fits(d["pen"], 32):
                feeds.append((site_id, dev, d["event"], feed_kg, d["pen"], ts))
        elif kind in ("device_online", "device_offline"):
            prev = state.get(dev)
            if prev is None or prev[0] <= ts:
                state[dev] = (ts, kind == "device_online")
    for kind, projected in (("position", positions), ("weigh_ticket", tickets),
                            ("feed_event", feeds)):
        if projected and pg:
            _copy_rows(conn, _STORE_PROJECTIONS[kind][1], projected)
        elif projected:
            conn.exec_driver_sql(_STORE_PROJECTIONS[kind][0], projected)
    _upsert_devices(conn, dialect, site_id, seen, state)


def _copy_rows(conn: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: the rows through ``COPY ... FROM STDIN`` on the transaction's connection,
    several times cheaper than psycopg's executemany (which spends ~20 us of Python per row).
    The same rows, defaults and constraints; a driver error comes out as the SQLAlchemy
    exception executemany would have raised (so the retry/rejection logic is unchanged)."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    raw: Any = conn.connection.driver_connection
    try:
        with raw.cursor() as cur, cur.copy(sql) as copy:
            write = copy.write_row
            for row in rows:
                write(row)
    except dbapi_error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi_error,
                                  dialect=conn.dialect) from exc


def _json(data: dict[str, Any]) -> str:
    """Strict JSON (PostgreSQL refuses NaN/Infinity, which msgpack can carry): non-finite
    numbers are stored as null rather than losing the batch."""
    try:
        return "".join(_C_JSON(data, 0)) if _C_JSON is not None else _JSON.encode(data)
    except ValueError:
        return _JSON.encode(_finite(data))


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def _fits(value: str | None, max_len: int) -> bool:
    """Whether a string fits its projection column. A reading whose fields do not fit is
    kept (raw JSON) but not projected: refusing it would block its gateway for good."""
    return value is None or len(value) <= max_len


def _fits_int64(value: int) -> bool:
    return -(2**63) <= value < 2**63


def _upsert_devices(conn: Connection, dialect: str, site_id: int, seen: dict[str, int],
                    state: dict[str, tuple[int, bool]]) -> None:
    table = _DEVICES
    new = [{"site_id": site_id, "device_id": dev,
            "kind": dev.split(":", 1)[0][:32] if ":" in dev else None,
            "online": None, "last_seen_ms": None} for dev in seen]
    ins: Any = (postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table))
    conn.execute(ins.on_conflict_do_nothing(index_elements=["site_id", "device_id"]), new)
    col = table.c
    newer = col.last_seen_ms.is_(None) | (col.last_seen_ms < bindparam("b_ts"))
    where = (col.site_id == bindparam("b_site")) & (col.device_id == bindparam("b_dev"))
    plain = [{"b_site": site_id, "b_dev": dev, "b_ts": ts} for dev, ts in seen.items()
             if dev not in state]
    if plain:
        conn.execute(update(table).where(where).values(
            last_seen_ms=case((newer, bindparam("b_ts")), else_=col.last_seen_ms)), plain)
    changed = [{"b_site": site_id, "b_dev": dev, "b_ts": seen[dev], "b_state_ts": st_ts,
                "b_online": online} for dev, (st_ts, online) in state.items()]
    if changed:
        # the state applies unless the store already knows something newer of the device
        apply = col.last_seen_ms.is_(None) | (col.last_seen_ms <= bindparam("b_state_ts"))
        conn.execute(update(table).where(where).values(
            online=case((apply, bindparam("b_online")), else_=col.online),
            last_seen_ms=case((newer, bindparam("b_ts")), else_=col.last_seen_ms)), changed)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _peek_gateway_id(envelope: bytes) -> str | None:
    """The gateway id of a header, without checks (verify_envelope does them)."""
    if len(envelope) < 5:
        return None
    n = envelope[4]
    if not 0 < n <= MAX_GATEWAY_ID or len(envelope) < 5 + n:
        return None
    try:
        return envelope[5:5 + n].decode("utf-8")
    except UnicodeDecodeError:
        return None


def retry_after_header(seconds: float) -> str:
    """Retry-After as whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
