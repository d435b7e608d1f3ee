"""The gateway's durable outbox: readings wait here, on disk, until the cloud took them.

One SQLite file (stdlib ``sqlite3``, WAL journal). Three promises:

1. **Nothing acknowledged is lost.** :meth:`Outbox.append` returns only after its transaction
   committed; that return is the acknowledgement to the driver. With the default
   ``synchronous="FULL"`` the commit is on stable storage, so it survives a power cut as
   well as ``kill -9``. (WAL with ``NORMAL`` survives a process crash - the commit is in the
   OS page cache - but can lose the last transactions on power loss; a ranch gateway loses
   power more often than its process crashes, and the benchmark shows what ``FULL`` costs.)
2. **A batch, once built, never changes.** :meth:`Outbox.next_batch` claims readings
   (priority lane first, then bulk, oldest first), builds the signed envelope with
   ``seq = last seq + 1`` and stores envelope, new ``last_seq`` and the removal of the claimed
   readings in ONE transaction, before anything is sent. Until :meth:`Outbox.ack` it returns
   that same envelope, byte for byte, so a resend after a crash or timeout is a duplicate the
   cloud recognises by ``(gateway_id, seq)`` and its identical signature. ``last_seq`` is
   never lowered, so a seq is never reused, even when the outbox is empty. The one exception
   to "never changes" is :meth:`Outbox.rebase`: when the cloud answers that it cannot take
   the batch's seq at all (409 ``seq_reused`` / ``replay_outside_window``: nothing of it was
   stored), the same readings, in the same order, are re-signed under a seq above the
   cloud's ``last_seq``.
3. **A full disk loses only bulk data, and says so.** Past ``disk_budget_bytes`` the oldest
   unclaimed *bulk* readings are deleted (never priority ones), counted in
   ``dropped_total``, and summarised by one ``data_integrity`` priority reading per drop
   episode (``dropped``, ``first_ms``/``last_ms`` = event-time range of what was lost,
   ``reason="disk_budget"``). An episode lasts until that reading is claimed into a batch;
   further drops before then update it in place, so a 72 h outage gives one reading, not
   thousands. When only priority readings are left they are still accepted beyond the
   budget (losing an alarm is worse than overshooting) and ``over_budget_bytes`` reports it.

Readings are stored packed (msgpack, exactly the bytes that go into a batch body), one row
per lane per ``append`` call (a *chunk*, at most :data:`MAX_CHUNK_READINGS`), so SQLite work
is per call, not per reading; claiming and dropping split a chunk where a batch or a drop
ends. The budget counts logical bytes: packed readings plus :data:`CHUNK_OVERHEAD_BYTES` per
chunk, and each stored envelope plus :data:`BATCH_OVERHEAD_BYTES`. The file itself is
larger by SQLite's page slack and the WAL (up to ~4 MB between checkpoints); give the budget
~20% headroom below the real free space.

A file that is not a SQLite database, fails ``PRAGMA quick_check``, or has another schema is
moved aside to ``<name>.corrupt-<ms>`` (with its ``-wal``/``-shm``) and a fresh outbox is
started; :attr:`Outbox.recovered_from` names the moved file so the gateway reports it. The
fresh outbox starts its seq at the clock's milliseconds, above any seq the lost file can
have used, so the cloud cannot mistake new batches for old ones. Every open of an existing
file also raises ``last_seq`` to at least the clock's milliseconds (a batch takes far more
than a millisecond, so the clock outruns the seqs): a file restored from an older backup then
starts above every seq its gateway used since the backup, even over MQTT, where the cloud
cannot answer ``seq_reused``. Seqs therefore grow by one per batch and jump at a restart.
Neither helps when the clock is behind the seqs (a clock that was fast when they were
made): then the cloud's 409 and :meth:`Outbox.rebase` do. (``quick_check`` is
``integrity_check`` without the index-versus-table comparison; these tables have no
secondary indexes, so it finds the same damage, faster.)

Thread safety: one connection guarded by a lock; every public method may be called from any
thread (the gateway calls it through ``asyncio.to_thread``). One process per outbox file: a
second process opening it gets ``OutboxError(reason="locked")`` (``<name>.lock``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import msgpack  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import OutboxError, ReadingRejected
from protocols.uplink import (
    MAX_BODY_BYTES,
    MAX_GATEWAY_ID,
    MAX_READINGS,
    READING_KINDS,
    Lane,
    Reading,
    UplinkError,
)
from uplink.envelope import (
    DEFAULT_LEVEL,
    MAX_READING_BYTES,
    UNPACK_LIMITS,
    InvalidReading,
    decode_own_envelope,
    encode_packed,
    pack_reading,
    unpack_limited,
    validate_readings,
)

__all__ = [
    "APPLICATION_ID",
    "BATCH_OVERHEAD_BYTES",
    "CHUNK_OVERHEAD_BYTES",
    "MAX_CHUNK_BYTES",
    "MAX_CHUNK_READINGS",
    "SCHEMA_VERSION",
    "Outbox",
    "OutboxStats",
    "PendingBatch",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
APPLICATION_ID: Final = 0x50574F42  # "PWOB" in the SQLite header: this file is an outbox
# Logical bytes a stored chunk / envelope costs beyond its payload (row, b-tree cell, page
# slack); bench/outbox.py compares the accounting with the real file size.
CHUNK_OVERHEAD_BYTES: Final = 64
BATCH_OVERHEAD_BYTES: Final = 64
MAX_CHUNK_READINGS: Final = 1000
MAX_CHUNK_BYTES: Final = 256 * 1024
BUSY_TIMEOUT_S: Final = 10.0
# Room left in a batch for the msgpack batch header and the envelope header; a batch body
# stays below MAX_BODY_BYTES even if nothing compresses.
_BATCH_SLACK_BYTES: Final = 4096
DISK_BUDGET_REASON: Final = "disk_budget"
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
# SQLite result codes meaning "the file is damaged / not a database" (not "busy", "I/O").
_CORRUPT_CODES: Final = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})

_LANE_TABLE: Final = {Lane.PRIORITY: "queue_priority", Lane.BULK: "queue_bulk"}
_LANE_OF: Final = {kind: lane for kind, (lane, _) in READING_KINDS.items()}
_SCHEMA: Final = {
    "state": """CREATE TABLE state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    gateway_id TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    dropped_total INTEGER NOT NULL,
    uploaded_batches INTEGER NOT NULL,
    uploaded_readings INTEGER NOT NULL,
    rejected_batches INTEGER NOT NULL,
    rejected_readings INTEGER NOT NULL,
    integrity_id INTEGER
)""",
    # one row per chunk: n packed readings concatenated, oldest first; ids increase
    "queue_priority": """CREATE TABLE queue_priority (
    id INTEGER PRIMARY KEY,
    n INTEGER NOT NULL CHECK (n > 0),
    body BLOB NOT NULL
)""",
    "queue_bulk": """CREATE TABLE queue_bulk (
    id INTEGER PRIMARY KEY,
    n INTEGER NOT NULL CHECK (n > 0),
    body BLOB NOT NULL
)""",
    "batch": """CREATE TABLE batch (
    seq INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    priority_readings INTEGER NOT NULL,
    oldest_recv_ms INTEGER,
    envelope BLOB NOT NULL
)""",
}

Synchronous = Literal["FULL", "NORMAL"]


@dataclasses.dataclass(frozen=True, slots=True)
class PendingBatch:
    """A built, signed batch waiting for the cloud's 2xx. ``envelope`` is what to send."""

    seq: int
    created_ms: int
    envelope: bytes
    readings: int
    priority_readings: int


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # readings not yet acknowledged by the cloud (queued + in the pending batch)
    depth_by_lane: dict[Lane, int]
    oldest_unsent_ms: int | None  # recv_ms (gateway clock) of the oldest of them
    pending_seq: int | None  # seq of the built batch awaiting ack, if any
    last_seq: int
    bytes_used: int
    disk_budget_bytes: int
    over_budget_bytes: int  # > 0 only when priority readings alone exceed the budget
    dropped_total: int  # bulk readings deleted for the budget, ever
    uploaded_batches: int
    uploaded_readings: int
    rejected_batches: int  # batches the cloud refused for good (see Outbox.reject)
    rejected_readings: int


class _Corrupt(Exception):
    """Internal: the existing file must be moved aside; the message says why."""


def _chunk_cost(body_len: int) -> int:
    return body_len + CHUNK_OVERHEAD_BYTES


def _unpacker(body: bytes) -> Any:
    u = msgpack.Unpacker(**UNPACK_LIMITS)
    u.feed(body)
    return u


def _first_item(body: bytes) -> Any:
    return _unpacker(body[:MAX_READING_BYTES]).unpack()  # a packed reading is never longer


def _item_ends(body: bytes, count: int) -> list[int]:
    """Offsets just past each of the first ``count`` packed readings of a chunk."""
    u = _unpacker(body)
    ends = []
    for _ in range(count):
        u.skip()
        ends.append(u.tell())
    return ends


class Outbox:
    """The durable store-and-forward queue of one gateway. See the module docstring.

    ``clock_ms`` gives the gateway clock in ms since the epoch (batch ``created_ms``, drop
    episode times, the name of a moved-aside corrupt file). ``synchronous`` is SQLite's
    setting for commits that acknowledge data (appends, batch claims); acks of uploaded
    batches always use ``NORMAL``, since losing one only causes a duplicate resend.
    """

    def __init__(self, path: Path | str, *, gateway_id: str, disk_budget_bytes: int,
                 clock_ms: Callable[[], int], synchronous: Synchronous = "FULL") -> None:
        if not 0 < len(gateway_id.encode("utf-8")) <= MAX_GATEWAY_ID:
            raise ValueError(f"gateway_id must be 1..{MAX_GATEWAY_ID} bytes of UTF-8")
        if disk_budget_bytes <= 0:
            raise ValueError("disk_budget_bytes must be positive")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be 'FULL' or 'NORMAL'")
        self.path = Path(path)
        self.gateway_id = gateway_id
        self.disk_budget_bytes = disk_budget_bytes
        self.clock_ms = clock_ms
        self.synchronous: Synchronous = synchronous
        self.recovered_from: Path | None = None
        self.recovery_problem: str | None = None
        self._lock = threading.Lock()
        self._integrity_device = f"gateway:{gateway_id}"
        self._closed = False
        self._lock_fd = self._take_process_lock()
        try:
            self._conn = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise
        # In-memory mirrors of what the file holds (rebuilt from it after any failure).
        self._count = {Lane.PRIORITY: 0, Lane.BULK: 0}
        self._bytes = 0
        self._recount()
        try:
            self._raise_seq_to_clock()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
                os.close(self._lock_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _take_process_lock(self) -> int:
        """Hold a POSIX lock on ``<name>.lock`` for the outbox's lifetime so a second gateway
        process on the same data_dir is refused. (POSIX locks belong to the process: the
        kernel drops it when the process dies, even by SIGKILL, and a second Outbox in the
        same process - a test simulating a crash - is not refused.)"""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutboxError(self.path, f"cannot create {lock_path.name}: "
                              f"{exc.strerror or exc}", reason="unopenable") from exc
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise OutboxError(self.path, f"is in use by another process (pid {holder})",
                              reason="locked") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return fd

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise OutboxError(self.path, f"cannot open: {exc}", reason="unopenable") from exc
        return conn

    def _open(self) -> sqlite3.Connection:
        fresh = True
        if self.path.exists() and self.path.stat().st_size > 0:
            try:
                self._check_existing()
                fresh = False
            except _Corrupt as exc:
                self.recovery_problem = str(exc)
                self.recovered_from = self._move_aside()
                log.error("outbox %s is unusable (%s); moved it to %s and started a fresh "
                          "one", self.path, exc, self.recovered_from)
        conn = self._connect()
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(self.path, f"cannot use WAL (journal_mode={mode})",
                                  reason="no_wal")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            if fresh:
                self._create_schema(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise OutboxError(self.path, f"cannot initialise: {exc}", reason="io") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_existing(self) -> None:
        """Raise :class:`_Corrupt` if the file must be moved aside, :class:`OutboxError` if
        it cannot be used for another reason (locked, unreadable, another gateway's)."""
        try:
            with self.path.open("rb") as f:
                magic = f.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise OutboxError(self.path, f"cannot read: {exc.strerror or exc}",
                              reason="unreadable") from exc
        if magic != _SQLITE_MAGIC:
            raise _Corrupt("not a SQLite database")
        conn = self._connect()
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                raise _Corrupt(f"integrity check failed: {rows[0][0]}")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if (app_id, version) != (APPLICATION_ID, SCHEMA_VERSION):
                raise _Corrupt(f"not an outbox of schema {SCHEMA_VERSION} (application_id "
                               f"{app_id:#x}, user_version {version})")
            tables = dict(conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
            if tables != _SCHEMA:
                raise _Corrupt("schema mismatch (tables differ from this version's)")
            state = conn.execute("SELECT gateway_id FROM state").fetchall()
            if len(state) != 1:
                raise _Corrupt(f"state table has {len(state)} rows, expected 1")
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", None) in _CORRUPT_CODES:
                raise _Corrupt(str(exc)) from exc
            raise OutboxError(self.path, f"cannot check: {exc}", reason="io") from exc
        finally:
            conn.close()
        if state[0][0] != self.gateway_id:
            raise OutboxError(self.path, f"belongs to gateway {state[0][0]!r}, not "
                              f"{self.gateway_id!r}; point data_dir elsewhere or restore the "
                              "gateway id", reason="wrong_gateway")

    def _move_aside(self) -> Path:
        stamp = self.clock_ms()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 0
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm", "-journal"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    os.replace(side, aside.with_name(aside.name + suffix))
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OutboxError(self.path, f"is corrupt and cannot be moved aside: "
                              f"{exc.strerror or exc}", reason="corrupt") from exc
        return aside

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        # A new outbox (first start, a replaced disk, a reinstalled gateway with the same id,
        # or a recovery from a corrupt file) starts its seq at the clock's milliseconds, above
        # anything an earlier outbox of this gateway can have used: the cloud would otherwise
        # take the new batches for already-seen ones and drop them as duplicates.
        first_seq = self.clock_ms()
        conn.execute("BEGIN IMMEDIATE")
        for sql in _SCHEMA.values():
            conn.execute(sql)
        conn.execute("INSERT INTO state VALUES (1, ?, ?, 0, 0, 0, 0, 0, NULL)",
                     (self.gateway_id, max(0, first_seq)))
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")

    def _raise_seq_to_clock(self) -> None:
        """``last_seq = max(last_seq, clock)`` (see the module docstring); a pending batch
        keeps its seq and bytes."""
        now = self.clock_ms()
        with self._lock, self._transaction() as conn:
            conn.execute("UPDATE state SET last_seq = ? WHERE last_seq < ?", (now, now))

    # -- transactions ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(self.path, "is closed", reason="closed")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (call with the lock held); on any failure roll
        back and rebuild the in-memory counters from the file. sqlite3 errors become
        :class:`OutboxError`."""
        self._check_open()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._recount()
                raise
        except sqlite3.Error as exc:
            raise OutboxError(self.path, f"database error: {exc}", reason="io") from exc

    def _recount(self) -> None:
        total = 0
        for lane, table in _LANE_TABLE.items():
            chunks, n, size = self._conn.execute(
                f"SELECT count(*), coalesce(sum(n), 0), coalesce(sum(length(body)), 0) "
                f"FROM {table}").fetchone()
            self._count[lane] = n
            total += size + chunks * CHUNK_OVERHEAD_BYTES
        n, size = self._conn.execute(
            "SELECT count(*), coalesce(sum(length(envelope)), 0) FROM batch").fetchone()
        self._bytes = total + size + n * BATCH_OVERHEAD_BYTES

    # -- append ---------------------------------------------------------------------------
    def append(self, readings: Sequence[Reading]) -> int:
        """Store ``readings`` durably; returns how many were stored (all of them) once the
        transaction has committed - the acknowledgement to the driver.

        Every reading is first checked as the cloud will check it; if one breaks the uplink
        contract, :class:`ReadingRejected` is raised and none of this call is stored.
        May drop older bulk readings to stay within the budget (see the module docstring).
        Call it with as many readings at once as you have: one commit per call.
        """
        if not readings:
            return 0
        try:
            packed = validate_readings(readings)
        except InvalidReading as exc:
            raise ReadingRejected(exc.index, str(exc), reason=exc.reason) from None
        parts: dict[Lane, list[bytes]] = {Lane.PRIORITY: [], Lane.BULK: []}
        priority, bulk = parts[Lane.PRIORITY].append, parts[Lane.BULK].append
        lane_of = _LANE_OF.get
        for reading, body in zip(readings, packed, strict=True):
            if lane_of(reading.kind) is Lane.PRIORITY:
                priority(body)
            else:
                bulk(body)
        rows = {lane: _chunks(p) for lane, p in parts.items()}
        added = sum(_chunk_cost(len(body)) for lane_rows in rows.values()
                    for _, body in lane_rows)
        with self._lock, self._transaction() as conn:
            for lane, lane_rows in rows.items():
                if lane_rows:
                    conn.executemany(f"INSERT INTO {_LANE_TABLE[lane]} (n, body) VALUES (?, ?)",
                                     lane_rows)
                    self._count[lane] += len(parts[lane])
            self._bytes += added
            if self._bytes > self.disk_budget_bytes:
                self._enforce_budget(conn)
        return len(readings)

    def _enforce_budget(self, conn: sqlite3.Connection) -> None:
        for _ in range(3):  # drop, record the episode (which takes bytes), maybe drop again
            n, lo, hi = self._drop_oldest_bulk(conn, self._bytes - self.disk_budget_bytes)
            if n == 0:
                break
            self._record_drop_episode(conn, n, lo, hi)
            if self._bytes <= self.disk_budget_bytes:
                break

    def _drop_oldest_bulk(self, conn: sqlite3.Connection,
                          need: int) -> tuple[int, int, int]:
        """Delete the oldest bulk readings until ``need`` bytes are freed (or none is left).
        Returns (count, min ts_ms, max ts_ms) of what was deleted."""
        table = _LANE_TABLE[Lane.BULK]
        freed = dropped = 0
        lo, hi = 2**63, -1
        whole_last_id: int | None = None
        split: tuple[int, bytes, int] | None = None
        cur = conn.execute(f"SELECT id, n, body FROM {table} ORDER BY id")
        for row_id, n, body in cur:
            if freed >= need:
                break
            u = _unpacker(body)
            k = prev = 0
            for item in u:
                end = u.tell()
                freed += end - prev
                prev = end
                k += 1
                lo, hi = min(lo, item["t"]), max(hi, item["t"])
                if k == n:
                    freed += CHUNK_OVERHEAD_BYTES
                elif freed >= need:
                    break
            dropped += k
            if k == n:
                whole_last_id = row_id
            else:
                split = (n - k, body[prev:], row_id)
                break
        cur.close()
        if whole_last_id is not None:
            conn.execute(f"DELETE FROM {table} WHERE id <= ?", (whole_last_id,))
        if split is not None:
            conn.execute(f"UPDATE {table} SET n = ?, body = ? WHERE id = ?", split)
        if dropped:
            conn.execute("UPDATE state SET dropped_total = dropped_total + ?", (dropped,))
        self._count[Lane.BULK] -= dropped
        self._bytes -= freed
        return dropped, lo, hi

    def _record_drop_episode(self, conn: sqlite3.Connection, n: int, lo: int,
                             hi: int) -> None:
        table = _LANE_TABLE[Lane.PRIORITY]
        (integrity_id,) = conn.execute("SELECT integrity_id FROM state").fetchone()
        row = None
        if integrity_id is not None:
            row = conn.execute(f"SELECT body FROM {table} WHERE id = ?",
                               (integrity_id,)).fetchone()
        if row is not None:  # the episode's reading is still queued: fold this drop into it
            old = Reading.from_wire(unpack_limited(row[0]))
            data = dict(old.data)
            data["dropped"] = int(data["dropped"]) + n
            data["first_ms"] = min(int(data["first_ms"]), lo)
            data["last_ms"] = max(int(data["last_ms"]), hi)
            body = pack_reading(dataclasses.replace(old, data=data))
            conn.execute(f"UPDATE {table} SET body = ? WHERE id = ?", (body, integrity_id))
            self._bytes += len(body) - len(row[0])
            return
        now = self.clock_ms()
        log.warning("outbox %s reached its %d-byte budget: dropping the oldest bulk readings "
                    "(reported as one data_integrity reading)", self.path,
                    self.disk_budget_bytes)
        body = pack_reading(Reading("data_integrity", self._integrity_device, now, now,
                                    {"dropped": n, "first_ms": lo, "last_ms": hi,
                                     "reason": DISK_BUDGET_REASON}))
        cur = conn.execute(f"INSERT INTO {table} (n, body) VALUES (1, ?)", (body,))
        conn.execute("UPDATE state SET integrity_id = ?", (cur.lastrowid,))
        self._count[Lane.PRIORITY] += 1
        self._bytes += _chunk_cost(len(body))

    # -- batches --------------------------------------------------------------------------
    def pending(self) -> PendingBatch | None:
        """The built batch awaiting ack, if any (what :meth:`next_batch` would return)."""
        with self._lock:
            return self._pending()

    def _pending(self) -> PendingBatch | None:
        self._check_open()
        row = self._conn.execute("SELECT seq, created_ms, envelope, readings, "
                                 "priority_readings FROM batch ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            return None
        return PendingBatch(seq=row[0], created_ms=row[1], envelope=row[2], readings=row[3],
                            priority_readings=row[4])

    def next_batch(self, max_readings: int, max_bytes: int, key: Ed25519PrivateKey, *,
                   level: int = DEFAULT_LEVEL) -> PendingBatch | None:
        """The batch to upload now: the pending one unchanged if there is one, else a new
        one of up to ``max_readings`` readings and ``max_bytes`` packed bytes (at least one
        reading; both clamped to the uplink caps), or None when nothing is queued.
        """
        if max_readings < 1 or max_bytes < 1:
            raise ValueError("max_readings and max_bytes must be positive")
        max_readings = min(max_readings, MAX_READINGS)
        max_bytes = min(max_bytes, MAX_BODY_BYTES - MAX_READING_BYTES - _BATCH_SLACK_BYTES)
        with self._lock:
            pending = self._pending()
            if pending is not None:
                return pending
            if not (self._count[Lane.PRIORITY] or self._count[Lane.BULK]):
                return None
            with self._transaction() as conn:
                return self._claim(conn, max_readings, max_bytes, key, level)

    def _claim(self, conn: sqlite3.Connection, max_readings: int, max_bytes: int,
               key: Ed25519PrivateKey, level: int) -> PendingBatch | None:
        last_seq, integrity_id = conn.execute(
            "SELECT last_seq, integrity_id FROM state").fetchone()
        parts: list[bytes] = []
        taken = {Lane.PRIORITY: 0, Lane.BULK: 0}
        size = 0
        oldest: int | None = None
        full = False
        for lane in (Lane.PRIORITY, Lane.BULK):
            room = max_readings - sum(taken.values())
            if room <= 0 or full:
                break
            table = _LANE_TABLE[lane]
            whole_last_id: int | None = None
            split: tuple[int, bytes, int] | None = None
            first_body: bytes | None = None
            freed = 0
            cur = conn.execute(f"SELECT id, n, body FROM {table} ORDER BY id")
            for row_id, n, body in cur:
                room = max_readings - sum(taken.values())
                if n <= room and size + len(body) <= max_bytes:  # the whole chunk fits
                    k, cut = n, len(body)
                else:
                    ends = _item_ends(body, min(n, room))
                    k = sum(1 for end in ends if size + end <= max_bytes)
                    if k == 0 and not parts:
                        k = 1  # one reading larger than max_bytes still goes, alone
                    cut = ends[k - 1] if k else 0
                    full = True
                if k:
                    first_body = first_body or body
                    parts.append(body if k == n else body[:cut])
                    size += cut
                    taken[lane] += k
                    if k == n:
                        whole_last_id = row_id
                        freed += _chunk_cost(len(body))
                    else:
                        split = (n - k, body[cut:], row_id)
                        freed += cut
                if full:
                    break
            cur.close()
            if whole_last_id is not None:
                conn.execute(f"DELETE FROM {table} WHERE id <= ?", (whole_last_id,))
                if lane is Lane.PRIORITY and integrity_id is not None \
                        and integrity_id <= whole_last_id:
                    conn.execute("UPDATE state SET integrity_id = NULL")
            if split is not None:
                conn.execute(f"UPDATE {table} SET n = ?, body = ? WHERE id = ?", split)
            if first_body is not None:
                recv = int(_first_item(first_body)["r"])
                oldest = recv if oldest is None else min(oldest, recv)
            self._count[lane] -= taken[lane]
            self._bytes -= freed
        count = sum(taken.values())
        if not count:
            return None
        seq = last_seq + 1
        created_ms = self.clock_ms()
        envelope = encode_packed(gateway_id=self.gateway_id, seq=seq, created_ms=created_ms,
                                 packed_readings=parts, count=count, key=key, level=level)
        conn.execute("INSERT INTO batch VALUES (?, ?, ?, ?, ?, ?)",
                     (seq, created_ms, count, taken[Lane.PRIORITY], oldest, envelope))
        conn.execute("UPDATE state SET last_seq = ?", (seq,))
        self._bytes += len(envelope) + BATCH_OVERHEAD_BYTES
        return PendingBatch(seq=seq, created_ms=created_ms, envelope=envelope,
                            readings=count, priority_readings=taken[Lane.PRIORITY])

    def ack(self, seq: int) -> bool:
        """The cloud answered 2xx for batch ``seq``: forget it. Returns False if no such
        batch is pending (already acked: acks are idempotent)."""
        with self._lock:
            self._check_open()
            # Losing an ack to a power cut only makes the batch go out once more (the cloud
            # dedupes it), so this commit need not wait for the disk.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._transaction() as conn:
                    row = conn.execute("SELECT readings, length(envelope) FROM batch "
                                       "WHERE seq = ?", (seq,)).fetchone()
                    if row is None:
                        return False
                    conn.execute("DELETE FROM batch WHERE seq = ?", (seq,))
                    conn.execute("UPDATE state SET uploaded_batches = uploaded_batches + 1, "
                                 "uploaded_readings = uploaded_readings + ?", (row[0],))
                    self._bytes -= row[1] + BATCH_OVERHEAD_BYTES
            finally:
                self._conn.execute(f"PRAGMA synchronous={self.synchronous}")
            return True

    def rebase(self, seq: int, cloud_last_seq: int | None, key: Ed25519PrivateKey, *,
               level: int = DEFAULT_LEVEL) -> PendingBatch | None:
        """The cloud refused pending batch ``seq`` for its seq alone (409 ``seq_reused`` or
        ``replay_outside_window``, which store nothing): its readings must not be deleted
        (a 200 ``duplicate`` would have lost them) nor resent under that seq (refused
        forever). Raises ``last_seq`` to ``max(last_seq, cloud_last_seq)`` and, in the same
        transaction, replaces the batch by one holding the same readings in the same order
        (priority ones first, as claimed), signed under ``last_seq + 1``; returns it, to be
        resent byte for byte until acked like any batch. ``cloud_last_seq`` None (the cloud
        did not say) moves one seq up. If ``seq`` is not pending (already acked or rebased),
        only ``last_seq`` is raised and None returned."""
        if cloud_last_seq is not None and not 0 <= cloud_last_seq < 2**63 - 1:
            raise ValueError(f"cloud_last_seq {cloud_last_seq} is not a usable seq")
        with self._lock, self._transaction() as conn:
            (last_seq,) = conn.execute("SELECT last_seq FROM state").fetchone()
            last_seq = max(last_seq, cloud_last_seq or 0)
            row = conn.execute("SELECT readings, priority_readings, oldest_recv_ms, envelope "
                               "FROM batch WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                conn.execute("UPDATE state SET last_seq = ?", (last_seq,))
                return None
            n, priority, oldest, old = row
            try:
                readings = decode_own_envelope(old).readings
            except UplinkError as exc:  # our own committed bytes: the file is damaged
                raise OutboxError(self.path, f"batch {seq} cannot be decoded: {exc}",
                                  reason="corrupt") from exc
            new_seq = last_seq + 1
            created_ms = self.clock_ms()
            envelope = encode_packed(gateway_id=self.gateway_id, seq=new_seq,
                                     created_ms=created_ms,
                                     packed_readings=[pack_reading(r) for r in readings],
                                     count=n, key=key, level=level)
            conn.execute("DELETE FROM batch WHERE seq = ?", (seq,))
            conn.execute("INSERT INTO batch VALUES (?, ?, ?, ?, ?, ?)",
                         (new_seq, created_ms, n, priority, oldest, envelope))
            conn.execute("UPDATE state SET last_seq = ?", (new_seq,))
            self._bytes += len(envelope) - len(old)
        log.warning("cloud refused the seq of batch %d (its last seq: %s): its %d readings "
                    "are re-signed as batch %d", seq, cloud_last_seq, n, new_seq)
        return PendingBatch(seq=new_seq, created_ms=created_ms, envelope=envelope,
                            readings=n, priority_readings=priority)

    def reject(self, seq: int, reason: str) -> int:
        """The cloud refused batch ``seq`` for good because of its content (400, 413, 422:
        NOT for 401/403, which mean this gateway's key or registration is wrong and the data
        must be kept). Removes the batch so later data can flow, counts it, and queues a
        ``data_integrity`` priority reading (``reason="rejected:<reason>"``, ``dropped``,
        ``first_ms``/``last_ms``, ``seq``) so the loss is reported. Returns the readings
        discarded (0 if no such batch is pending). The seq stays used.
        """
        with self._lock, self._transaction() as conn:
            row = conn.execute("SELECT readings, envelope FROM batch WHERE seq = ?",
                               (seq,)).fetchone()
            if row is None:
                return 0
            n, envelope = row
            try:
                stamps = [r.ts_ms for r in decode_own_envelope(envelope).readings]
            except UplinkError:  # cannot happen for envelopes we built; report no range
                stamps = []
            conn.execute("DELETE FROM batch WHERE seq = ?", (seq,))
            conn.execute("UPDATE state SET rejected_batches = rejected_batches + 1, "
                         "rejected_readings = rejected_readings + ?", (n,))
            self._bytes -= len(envelope) + BATCH_OVERHEAD_BYTES
            now = self.clock_ms()
            body = pack_reading(Reading(
                "data_integrity", self._integrity_device, now, now,
                {"dropped": n, "first_ms": min(stamps, default=0),
                 "last_ms": max(stamps, default=0), "reason": f"rejected:{reason}"[:200],
                 "seq": seq}))
            conn.execute(f"INSERT INTO {_LANE_TABLE[Lane.PRIORITY]} (n, body) VALUES (1, ?)",
                         (body,))
            self._count[Lane.PRIORITY] += 1
            self._bytes += _chunk_cost(len(body))
        log.error("cloud rejected batch %d (%s): %d readings discarded", seq, reason, n)
        return int(n)

    # -- observation ----------------------------------------------------------------------
    def stats(self) -> OutboxStats:
        with self._lock:
            pending = self._pending()
            conn = self._conn
            state = conn.execute(
                "SELECT last_seq, dropped_total, uploaded_batches, uploaded_readings, "
                "rejected_batches, rejected_readings FROM state").fetchone()
            by_lane = dict(self._count)
            oldest: int | None = None
            if pending is not None:
                by_lane[Lane.PRIORITY] += pending.priority_readings
                by_lane[Lane.BULK] += pending.readings - pending.priority_readings
                oldest = conn.execute("SELECT oldest_recv_ms FROM batch WHERE seq = ?",
                                      (pending.seq,)).fetchone()[0]
            for table in _LANE_TABLE.values():
                row = conn.execute(f"SELECT body FROM {table} ORDER BY id LIMIT 1").fetchone()
                if row is not None:
                    recv = int(_first_item(row[0])["r"])
                    oldest = recv if oldest is None else min(oldest, recv)
            return OutboxStats(
                depth=sum(by_lane.values()), depth_by_lane=by_lane, oldest_unsent_ms=oldest,
                pending_seq=None if pending is None else pending.seq, last_seq=state[0],
                bytes_used=self._bytes, disk_budget_bytes=self.disk_budget_bytes,
                over_budget_bytes=max(0, self._bytes - self.disk_budget_bytes),
                dropped_total=state[1], uploaded_batches=state[2], uploaded_readings=state[3],
                rejected_batches=state[4], rejected_readings=state[5])

    def should_flush(self, now_ms: int, max_age_ms: int, min_readings: int) -> bool:
        """Whether to upload now: a batch is pending (resend), a priority reading waits
        (alarms do not wait for a batch to fill), ``min_readings`` are queued, or the oldest
        unsent reading is ``max_age_ms`` old."""
        st = self.stats()
        if st.pending_seq is not None or st.depth_by_lane[Lane.PRIORITY]:
            return True
        if st.depth >= min_readings:
            return True
        return st.oldest_unsent_ms is not None and now_ms - st.oldest_unsent_ms >= max_age_ms


def _chunks(packed: list[bytes]) -> list[tuple[int, bytes]]:
    """Group packed readings (in order) into ``(n, body)`` chunks within the chunk caps."""
    if len(packed) <= MAX_CHUNK_READINGS and sum(map(len, packed)) <= MAX_CHUNK_BYTES:
        return [(len(packed), b"".join(packed))] if packed else []
    out: list[tuple[int, bytes]] = []
    start = size = 0
    for i, p in enumerate(packed):
        if i > start and (i - start >= MAX_CHUNK_READINGS or size + len(p) > MAX_CHUNK_BYTES):
            out.append((i - start, b"".join(packed[start:i])))
            start, size = i, 0
        size += len(p)
    if start < len(packed):
        out.append((len(packed) - start, b"".join(packed[start:])))
    return out
