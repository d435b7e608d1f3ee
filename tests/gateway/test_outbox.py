"""The durable outbox: acknowledged readings survive crashes (including a real SIGKILL),
batches are byte-identical on resend, seq never repeats, priority goes first, the disk
budget drops only bulk and reports it, and a corrupt file is moved aside."""

from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gateway.errors import OutboxError, ReadingRejected
from gateway.outbox import CHUNK_OVERHEAD_BYTES, MAX_CHUNK_READINGS, Outbox
from protocols.uplink import Batch, Lane, Reading
from uplink.envelope import decode_envelope, pack_reading

REPO = Path(__file__).resolve().parents[2]
KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))
GW = "gw-test"
T = 1_767_225_600_000
BIG = 1 << 40  # a disk budget that is never reached


class Clock:
    def __init__(self, ms: int = T) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def lookup(gateway_id: str) -> Ed25519PublicKey | None:
    return KEY.public_key() if gateway_id == GW else None


def bulk(i: int, device: str = "r2000:gate1") -> Reading:
    """A bulk reading identified by ``ts_ms == T + i`` (all the same packed size)."""
    return Reading("tag_sighting", device, T + i, T + i + 5,
                   {"epc": f"E2801160600002{i:010d}", "antenna": 1, "count": 3,
                    "first_ms": T + i - 100, "last_ms": T + i, "rssi_max_dbm": -50.5})


def prio(i: int) -> Reading:
    return Reading("alarm", "modbus:feeder1", T + i, T + i + 5, {"alarm": "door_open"})


def ident(r: Reading) -> int:
    return r.ts_ms - T


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
def outbox(db: Path, clock: Clock) -> Iterator[Outbox]:
    with Outbox(db, gateway_id=GW, disk_budget_bytes=BIG, clock_ms=clock) as ob:
        yield ob


def open_outbox(db: Path, clock: Clock, budget: int = BIG) -> Outbox:
    return Outbox(db, gateway_id=GW, disk_budget_bytes=budget, clock_ms=clock)


def drain(ob: Outbox, max_readings: int = 10_000, max_bytes: int = 1 << 22) -> list[Batch]:
    batches: list[Batch] = []
    while (p := ob.next_batch(max_readings, max_bytes, KEY)) is not None:
        assert len(batches) < 10_000, "the outbox never empties"
        batch = decode_envelope(p.envelope, lookup)
        assert (batch.seq, len(batch.readings)) == (p.seq, p.readings)
        batches.append(batch)
        assert ob.ack(p.seq)
    return batches


def readings_of(batches: Sequence[Batch]) -> list[Reading]:
    return [r for b in batches for r in b.readings]


# -- durability and batches -------------------------------------------------------------------

def test_append_is_visible_to_a_second_outbox_without_closing_the_first(db: Path,
                                                                        clock: Clock) -> None:
    crashed = open_outbox(db, clock)
    assert crashed.append([bulk(1), bulk(2), prio(3)]) == 3
    claimed = crashed.next_batch(2, 1 << 20, KEY)
    assert claimed is not None
    crashed.append([bulk(4)])
    # the first process "dies" here: never closed
    with open_outbox(db, clock) as after:
        assert after.recovered_from is None
        again = after.next_batch(100, 1 << 20, KEY)
        assert again is not None and again.envelope == claimed.envelope
        assert after.stats().depth == 4
        got = readings_of(drain(after))
    crashed.close()
    assert sorted(map(ident, got)) == [1, 2, 3, 4]


def test_everything_comes_back_after_reopen_in_order(db: Path, clock: Clock) -> None:
    with open_outbox(db, clock) as ob:
        for start in range(0, 300, 30):
            ob.append([bulk(i) for i in range(start, start + 30)])
    with open_outbox(db, clock) as ob:
        assert ob.stats().depth == 300
        batches = drain(ob, max_readings=47)
    assert [ident(r) for r in readings_of(batches)] == list(range(300))
    first = batches[0].seq
    assert [b.seq for b in batches] == list(range(first, first + len(batches)))
    assert all(len(b.readings) <= 47 for b in batches)


def test_resend_is_byte_identical_until_acked(db: Path, clock: Clock) -> None:
    with open_outbox(db, clock) as ob:
        ob.append([bulk(i) for i in range(10)])
        first = ob.next_batch(4, 1 << 20, KEY)
        assert first is not None and first.readings == 4
        clock.ms += 60_000
        ob.append([prio(100)])  # newer data, even priority, does not change a built batch
        assert ob.next_batch(100, 1 << 20, KEY) == first
        assert ob.pending() == first
    with open_outbox(db, clock) as ob:
        assert ob.next_batch(1, 1, KEY) == first  # limits do not matter for a built batch
        assert ob.ack(first.seq)
        assert not ob.ack(first.seq)  # acks are idempotent
        second = ob.next_batch(100, 1 << 20, KEY)
        # reopened 60 s later: the seq went on from the clock (above first.seq + 1)
        assert second is not None and second.seq == clock.ms + 1 > first.seq + 1
        got = decode_envelope(second.envelope, lookup)
        assert [ident(r) for r in got.readings] == [100, 4, 5, 6, 7, 8, 9]
        assert second.created_ms == clock.ms


def test_seq_is_never_reused_across_restarts(db: Path, clock: Clock) -> None:
    seqs = []
    start = clock()
    for round_ in range(4):
        with open_outbox(db, clock) as ob:
            ob.append([bulk(round_)])
            seqs += [b.seq for b in drain(ob)]
            assert ob.stats().depth == 0 and ob.stats().last_seq == seqs[-1]
            assert ob.next_batch(10, 1 << 20, KEY) is None
    # a new outbox starts at the clock (see the next test); then +1 per batch, across restarts
    assert seqs == [start + 1, start + 2, start + 3, start + 4]


def test_a_new_outbox_starts_its_seq_at_the_clock(tmp_path: Path, clock: Clock) -> None:
    """A gateway reinstalled with the same id (new disk) must not reuse seqs the cloud has
    already stored, or its new batches would be taken for duplicates and dropped."""
    with open_outbox(tmp_path / "first.db", clock) as ob:
        ob.append([bulk(1)])
        first = [b.seq for b in drain(ob)]
    clock.ms += 60_000  # the reinstall happens later
    with open_outbox(tmp_path / "reinstalled.db", clock) as ob:
        ob.append([bulk(2)])
        second = [b.seq for b in drain(ob)]
    assert second[0] > first[-1] > clock() - 60_000


def test_ack_of_unknown_seq(outbox: Outbox) -> None:
    assert not outbox.ack(1)
    outbox.append([bulk(1)])
    p = outbox.next_batch(10, 1 << 20, KEY)
    assert p is not None
    assert not outbox.ack(p.seq + 1)
    assert outbox.pending() == p


def test_priority_lane_goes_first(outbox: Outbox) -> None:
    outbox.append([bulk(i) for i in range(5)])
    outbox.append([prio(10), bulk(5), prio(11)])
    outbox.append([prio(12)])
    batches = drain(outbox, max_readings=2)
    assert [[ident(r) for r in b.readings] for b in batches] == [
        [10, 11], [12, 0], [1, 2], [3, 4], [5]]
    st = outbox.stats()
    assert st.uploaded_batches == 5 and st.uploaded_readings == 9


def test_byte_limit_splits_chunks_and_sends_an_oversized_reading_alone(outbox: Outbox) -> None:
    size = len(pack_reading(bulk(0)))
    outbox.append([bulk(i) for i in range(10)])
    batches = drain(outbox, max_bytes=3 * size + 1)
    assert [len(b.readings) for b in batches] == [3, 3, 3, 1]
    outbox.append([bulk(20), bulk(21)])
    batches = drain(outbox, max_bytes=1)  # smaller than any reading: one at a time
    assert [[ident(r) for r in b.readings] for b in batches] == [[20], [21]]


def test_large_append_is_stored_in_several_chunks(outbox: Outbox) -> None:
    n = MAX_CHUNK_READINGS * 2 + 5
    outbox.append([bulk(i) for i in range(n)])
    chunks = outbox._conn.execute("SELECT n FROM queue_bulk ORDER BY id").fetchall()
    assert [c for (c,) in chunks] == [MAX_CHUNK_READINGS, MAX_CHUNK_READINGS, 5]
    assert [ident(r) for r in readings_of(drain(outbox, max_readings=999))] == list(range(n))


def test_a_bad_reading_rejects_the_whole_call(outbox: Outbox) -> None:
    outbox.append([bulk(1)])
    with pytest.raises(ReadingRejected) as err:
        outbox.append([bulk(2), Reading("alarm", "d", T, T, {}), bulk(3)])
    assert err.value.index == 1 and err.value.reason == "bad_field"
    assert outbox.stats().depth == 1
    assert outbox.append([]) == 0


def test_stats_and_should_flush(outbox: Outbox, clock: Clock) -> None:
    st = outbox.stats()
    assert (st.depth, st.oldest_unsent_ms, st.pending_seq, st.bytes_used) == (0, None, None, 0)
    assert not outbox.should_flush(T, max_age_ms=1000, min_readings=1)
    outbox.append([bulk(1)])
    outbox.append([bulk(2), bulk(3)])
    st = outbox.stats()
    assert st.depth == 3 and st.depth_by_lane == {Lane.PRIORITY: 0, Lane.BULK: 3}
    assert st.oldest_unsent_ms == T + 1 + 5  # recv_ms of the oldest
    assert st.bytes_used > 3 * len(pack_reading(bulk(1)))
    assert not outbox.should_flush(T + 1000, max_age_ms=1000, min_readings=10)
    assert outbox.should_flush(T + 1006, max_age_ms=1000, min_readings=10)
    assert outbox.should_flush(T, max_age_ms=1000, min_readings=3)
    p = outbox.next_batch(2, 1 << 20, KEY)
    assert p is not None
    st = outbox.stats()
    assert st.depth == 3 and st.pending_seq == p.seq and st.oldest_unsent_ms == T + 6
    assert outbox.should_flush(T, max_age_ms=10**9, min_readings=10**9)  # resend pending
    outbox.ack(p.seq)
    st = outbox.stats()
    assert st.depth == 1 and st.oldest_unsent_ms == T + 3 + 5 and st.pending_seq is None
    outbox.append([prio(9)])
    assert outbox.should_flush(T, max_age_ms=10**9, min_readings=10**9)  # alarms go now
    assert outbox.stats().depth_by_lane == {Lane.PRIORITY: 1, Lane.BULK: 1}


def test_byte_accounting_matches_a_recount(db: Path, clock: Clock) -> None:
    with open_outbox(db, clock) as ob:
        ob.append([bulk(i) for i in range(50)])
        ob.append([prio(100)])
        ob.next_batch(20, 1 << 20, KEY)
        used = ob.stats().bytes_used
    with open_outbox(db, clock) as ob:
        assert ob.stats().bytes_used == used


def test_closed_outbox_refuses_work(outbox: Outbox) -> None:
    outbox.close()
    outbox.close()
    with pytest.raises(OutboxError) as err:
        outbox.append([bulk(1)])
    assert err.value.reason == "closed"
    with pytest.raises(OutboxError):
        outbox.stats()


def test_concurrent_appends_from_threads(outbox: Outbox) -> None:
    def worker(k: int) -> None:
        for j in range(20):
            outbox.append([bulk(k * 1000 + j * 3 + x) for x in range(3)])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [ident(r) for r in readings_of(drain(outbox, max_readings=77))]
    assert sorted(got) == sorted(k * 1000 + i for k in range(4) for i in range(60))
    assert len(got) == len(set(got))


def test_reject_removes_the_batch_and_reports_it(outbox: Outbox, clock: Clock) -> None:
    outbox.append([bulk(i) for i in range(5)])
    p = outbox.next_batch(3, 1 << 20, KEY)
    assert p is not None
    clock.ms += 1000
    assert outbox.reject(p.seq, "bad_field") == 3
    assert outbox.reject(p.seq, "bad_field") == 0
    st = outbox.stats()
    assert (st.rejected_batches, st.rejected_readings, st.pending_seq) == (1, 3, None)
    batches = drain(outbox)
    assert batches[0].seq == p.seq + 1
    first = batches[0].readings[0]
    assert first.kind == "data_integrity" and first.device_id == f"gateway:{GW}"
    assert first.data == {"dropped": 3, "first_ms": T, "last_ms": T + 2,
                          "reason": "rejected:bad_field", "seq": p.seq}
    assert [ident(r) for r in batches[0].readings[1:]] == [3, 4]


# -- disk budget ------------------------------------------------------------------------------

def _size() -> int:
    return len(pack_reading(bulk(0)))


def _integrity(readings: Sequence[Reading]) -> list[Reading]:
    return [r for r in readings if r.kind == "data_integrity"]


def test_budget_drops_oldest_bulk_only_and_reports_once(db: Path, clock: Clock) -> None:
    per_call = _size() + CHUNK_OVERHEAD_BYTES
    budget = 40 * per_call
    with open_outbox(db, clock, budget) as ob:
        ob.append([prio(1000), prio(1001)])
        episode_began = None
        for i in range(100):  # one reading per call: one chunk each
            clock.ms = T + 10_000 + i
            ob.append([bulk(i)])
            assert ob.stats().bytes_used <= budget
            if episode_began is None and ob.stats().dropped_total:
                episode_began = clock.ms
        st = ob.stats()
        assert st.dropped_total > 0 and st.over_budget_bytes == 0
        got = readings_of(drain(ob))
        st = ob.stats()
    kept = sorted(ident(r) for r in got if r.kind == "tag_sighting")
    dropped = st.dropped_total
    assert kept == list(range(dropped, 100))  # exactly the oldest went
    assert sorted(ident(r) for r in got if r.kind == "alarm") == [1000, 1001]
    (report,) = _integrity(got)
    assert report.device_id == f"gateway:{GW}"
    assert report.data == {"dropped": dropped, "first_ms": T, "last_ms": T + dropped - 1,
                           "reason": "disk_budget"}
    assert report.ts_ms == report.recv_ms == episode_began
    assert got[0] == report or got[0].kind == "alarm"  # priority lane goes first


def test_a_claimed_report_ends_the_episode(db: Path, clock: Clock) -> None:
    per_call = _size() + CHUNK_OVERHEAD_BYTES
    with open_outbox(db, clock, 10 * per_call) as ob:
        for i in range(20):
            ob.append([bulk(i)])
        first = ob.next_batch(1, 1 << 20, KEY)  # claims the report (priority)
        assert first is not None
        (r1,) = decode_envelope(first.envelope, lookup).readings
        assert r1.kind == "data_integrity"
        n1 = r1.data["dropped"]
        ob.ack(first.seq)
        for i in range(20, 40):
            ob.append([bulk(i)])
        rest = readings_of(drain(ob))
        total = ob.stats().dropped_total
    (r2,) = _integrity(rest)
    assert r2.data["dropped"] == total - n1
    assert r2.data["first_ms"] > r1.data["last_ms"]


def test_budget_splits_a_chunk_to_drop_no_more_than_needed(db: Path, clock: Clock) -> None:
    size = _size()
    with open_outbox(db, clock, 100 * size + CHUNK_OVERHEAD_BYTES + 500) as ob:
        ob.append([bulk(i) for i in range(100)])
        assert ob.stats().dropped_total == 0
        ob.append([bulk(100 + i) for i in range(5)])
        st = ob.stats()
        assert 1 <= st.dropped_total < 10
        chunks = ob._conn.execute("SELECT n FROM queue_bulk ORDER BY id").fetchall()
        assert chunks == [(100 - st.dropped_total,), (5,)]  # the first chunk was split
        assert st.bytes_used <= ob.disk_budget_bytes
        got = readings_of(drain(ob))
    kept = [ident(r) for r in got if r.kind == "tag_sighting"]
    assert kept == list(range(st.dropped_total, 105))
    (report,) = _integrity(got)
    assert report.data["dropped"] == st.dropped_total
    assert report.data["first_ms"] == T and report.data["last_ms"] == T + st.dropped_total - 1


def test_only_priority_left_is_kept_beyond_the_budget(db: Path, clock: Clock) -> None:
    with open_outbox(db, clock, 1000) as ob:
        ob.append([prio(i) for i in range(50)])
        st = ob.stats()
        assert st.dropped_total == 0 and st.over_budget_bytes > 0
        ob.append([bulk(1)])  # the new bulk reading itself is the oldest bulk: dropped
        st = ob.stats()
        assert st.dropped_total == 1
        got = readings_of(drain(ob))
    assert sorted(ident(r) for r in got if r.kind == "alarm") == list(range(50))
    (report,) = _integrity(got)
    assert report.data["dropped"] == 1
    assert not [r for r in got if r.kind == "tag_sighting"]


def test_pending_batch_is_never_dropped(db: Path, clock: Clock) -> None:
    per_call = _size() + CHUNK_OVERHEAD_BYTES
    with open_outbox(db, clock, 8 * per_call) as ob:
        ob.append([bulk(i) for i in range(5)])
        p = ob.next_batch(5, 1 << 20, KEY)
        assert p is not None
        for i in range(5, 40):
            ob.append([bulk(i)])
        assert ob.pending() == p
        batches = drain(ob)
    assert [ident(r) for r in batches[0].readings] == [0, 1, 2, 3, 4]


# -- corrupt files ----------------------------------------------------------------------------

def _fill(db: Path, clock: Clock, n: int = 3000) -> int:
    with open_outbox(db, clock) as ob:
        for i in range(0, n, 100):
            ob.append([bulk(j) for j in range(i, i + 100)])
        ob.append([prio(n)])
        p = ob.next_batch(10, 1 << 20, KEY)
        assert p is not None
        return p.seq


def _garbage_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    rng = random.Random(7)
    for i in range(4096, len(data)):
        data[i] = rng.randrange(256)
    db.write_bytes(bytes(data))


def _other_schema(db: Path) -> None:
    db.unlink()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.commit()
    conn.close()


def _not_sqlite(db: Path) -> None:
    db.write_bytes(b"this is not a database\n" * 100)


def _truncated(db: Path) -> None:
    db.write_bytes(db.read_bytes()[:4096 * 3 + 100])


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "not-sqlite": _not_sqlite,
    "truncated": _truncated,
    "garbage-pages": _garbage_pages,
    "other-schema": _other_schema,
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_corrupt_file_is_moved_aside(db: Path, clock: Clock, corrupt: str) -> None:
    _fill(db, clock)
    CORRUPTIONS[corrupt](db)
    damaged = db.read_bytes()
    clock.ms = T + 123_456
    with open_outbox(db, clock) as ob:
        assert ob.recovered_from == db.with_name(f"{db.name}.corrupt-{T + 123_456}")
        assert ob.recovery_problem
        assert ob.recovered_from.read_bytes() == damaged
        st = ob.stats()
        assert st.depth == 0 and st.last_seq == T + 123_456
        ob.append([bulk(1)])
        (batch,) = drain(ob)
        assert batch.seq == T + 123_456 + 1  # above anything the lost file had used
    with open_outbox(db, clock) as ob:
        assert ob.recovered_from is None
        assert ob.stats().last_seq == T + 123_457


def test_schema_change_is_detected(db: Path, clock: Clock) -> None:
    _fill(db, clock, 100)
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE queue_bulk ADD COLUMN extra INTEGER")
    conn.commit()
    conn.close()
    with open_outbox(db, clock) as ob:
        assert ob.recovered_from is not None and "schema" in (ob.recovery_problem or "")


def test_wal_and_shm_move_with_the_corrupt_file(db: Path, clock: Clock) -> None:
    crashed = open_outbox(db, clock)
    crashed.append([bulk(1)])  # leaves -wal and -shm behind
    wal = db.with_name(db.name + "-wal")
    assert wal.exists()
    crashed.close()
    db.write_bytes(b"garbage" * 1000)
    wal.write_bytes(b"old wal")
    with open_outbox(db, clock) as ob:
        aside = ob.recovered_from
        assert aside is not None
        assert aside.with_name(aside.name + "-wal").read_bytes() == b"old wal"
        assert ob.stats().depth == 0


def test_empty_file_is_a_fresh_outbox(db: Path, clock: Clock) -> None:
    db.write_bytes(b"")
    with open_outbox(db, clock) as ob:
        assert ob.recovered_from is None and ob.stats().last_seq == clock()


def test_outbox_of_another_gateway_is_refused_untouched(db: Path, clock: Clock) -> None:
    _fill(db, clock, 100)
    before = db.read_bytes()
    with pytest.raises(OutboxError) as err:
        Outbox(db, gateway_id="someone-else", disk_budget_bytes=BIG, clock_ms=clock)
    assert err.value.reason == "wrong_gateway" and "gw-test" in str(err.value)
    assert db.read_bytes() == before
    assert not list(db.parent.glob("*.corrupt-*"))


HOLDER = r"""
import sys
from gateway.outbox import Outbox
ob = Outbox(sys.argv[1], gateway_id="gw-test", disk_budget_bytes=1 << 30, clock_ms=lambda: 0)
print("ready", flush=True)
sys.stdin.read()
ob.close()
"""


def test_a_second_process_is_refused(db: Path, clock: Clock) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=os.environ | {"PYTHONPATH": str(REPO)})
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        with pytest.raises(OutboxError) as err:
            open_outbox(db, clock)
        assert err.value.reason == "locked" and f"pid {proc.pid}" in str(err.value)
    finally:
        proc.communicate("", timeout=30)
    with open_outbox(db, clock) as ob:  # free again once that process is gone
        assert ob.stats().depth == 0


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"gateway_id": ""}, "gateway_id"),
    ({"gateway_id": "x" * 65}, "gateway_id"),
    ({"disk_budget_bytes": 0}, "disk_budget"),
    ({"synchronous": "OFF"}, "synchronous"),
])
def test_constructor_arguments(db: Path, clock: Clock, kwargs: dict[str, object],
                               problem: str) -> None:
    args: dict[str, object] = {"gateway_id": GW, "disk_budget_bytes": BIG, "clock_ms": clock}
    with pytest.raises(ValueError, match=problem):
        Outbox(db, **(args | kwargs))  # type: ignore[arg-type]


# -- a real kill -9 ---------------------------------------------------------------------------

CHILD = r"""
import sys, hashlib, random
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from uplink.envelope import decode_own_envelope
from gateway.outbox import Outbox
from protocols.uplink import Reading

path, start, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
T = 1_767_225_600_000
rng = random.Random(seed)
key = Ed25519PrivateKey.from_private_bytes(bytes(32))
clock = iter(range(T, T + 10**12, 7))
ob = Outbox(path, gateway_id="gw-test", disk_budget_bytes=1 << 40, clock_ms=lambda: next(clock))
out = sys.stdout
i = start
while True:
    n = rng.randint(1, 12)
    rs = []
    for j in range(i, i + n):
        if j % 9 == 0:
            rs.append(Reading("alarm", "feeder", T + j, T + j, {"alarm": "door"}))
        else:
            rs.append(Reading("weight", "scale", T + j, T + j, {"weight_kg": float(j),
                                                                "stable": True}))
    ob.append(rs)
    out.write("A " + " ".join(str(j) for j in range(i, i + n)) + "\n")
    out.flush()
    i += n
    if rng.random() < 0.3:
        b = ob.next_batch(rng.randint(1, 40), 1 << 20, key)
        if b is not None:
            ids = " ".join(str(r.ts_ms - T) for r in decode_own_envelope(b.envelope).readings)
            out.write(f"S {b.seq} {hashlib.sha256(b.envelope).hexdigest()} {ids}\n")
            out.flush()
            if rng.random() < 0.7:
                ob.ack(b.seq)
"""


class Cloud:
    """What the receiving side saw: seq -> (envelope hash, reading ids); dedupe by seq."""

    def __init__(self) -> None:
        self.batches: dict[int, tuple[str, list[int]]] = {}

    def receive(self, seq: int, digest: str, ids: list[int]) -> None:
        if seq in self.batches:
            assert self.batches[seq] == (digest, ids), f"seq {seq} resent with other bytes"
        else:
            self.batches[seq] = (digest, ids)

    def ids(self) -> collections.Counter[int]:
        return collections.Counter(i for _, ids in self.batches.values() for i in ids)


def test_sigkill_loses_no_acknowledged_reading(db: Path) -> None:
    import hashlib

    rng = random.Random()
    cloud = Cloud()
    acked: set[int] = set()
    for round_ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(round_ * 10_000_000), str(round_)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=os.environ | {"PYTHONPATH": str(REPO)})
        assert proc.stdout is not None and proc.stderr is not None
        lines: list[str] = []
        kill_after = rng.randint(5, 400)
        watchdog = threading.Timer(60.0, proc.kill)  # a hung child fails instead of hanging
        watchdog.start()
        try:
            while len(lines) < kill_after:
                line = proc.stdout.readline()
                if not line:
                    pytest.fail(f"child died: {proc.stderr.read()}")
                lines.append(line)
            os.kill(proc.pid, signal.SIGKILL)  # right after some append returned
            lines += proc.stdout.readlines()  # everything it wrote before it died
        finally:
            watchdog.cancel()
            watchdog.join()
            proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        for line in lines:
            if not line.endswith("\n"):
                continue  # cut mid-line by the kill
            kind, *rest = line.split()
            if kind == "A":
                acked.update(map(int, rest))
            elif kind == "S":
                cloud.receive(int(rest[0]), rest[1], [int(x) for x in rest[2:]])
    with Outbox(db, gateway_id=GW, disk_budget_bytes=BIG, clock_ms=Clock()) as ob:
        assert ob.recovered_from is None
        for _ in range(10_000):
            if (p := ob.next_batch(500, 1 << 20, KEY)) is None:
                break
            ids = [r.ts_ms - T for r in decode_envelope(p.envelope, lookup).readings]
            cloud.receive(p.seq, hashlib.sha256(p.envelope).hexdigest(), ids)
            ob.ack(p.seq)
        else:
            pytest.fail("the outbox never empties")
    seen = cloud.ids()
    assert acked, "the child never acknowledged anything"
    assert acked <= set(seen), f"lost {sorted(acked - set(seen))[:10]}"
    assert max(seen.values()) == 1, "a reading arrived in two different batches"


# -- model-based: nothing lost, nothing twice -------------------------------------------------

class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="pw-outbox-sm-"))
        self.db = self.dir / "outbox.db"
        self.clock = Clock()
        self.ob = open_outbox(self.db, self.clock)
        self.crashed: list[Outbox] = []
        self.next_id = 0
        self.appended: set[int] = set()
        self.lane_of: dict[int, Lane] = {}
        self.cloud: dict[int, bytes] = {}
        self.ids_of: dict[int, list[int]] = {}
        self.done: set[int] = set()  # ids in batches the cloud acknowledged

    @rule(n=st.integers(1, 25), every=st.integers(0, 4))
    def append(self, n: int, every: int) -> None:
        rs = []
        for _ in range(n):
            i = self.next_id
            self.next_id += 1
            r = prio(i) if every and i % (every + 1) == 0 else bulk(i)
            rs.append(r)
            self.lane_of[i] = r.lane
        self.clock.ms += 1
        assert self.ob.append(rs) == n
        self.appended.update(ident(r) for r in rs)

    @rule(max_readings=st.integers(1, 40), max_bytes=st.integers(1, 5000))
    def upload(self, max_readings: int, max_bytes: int) -> None:
        p = self.ob.next_batch(max_readings, max_bytes, KEY)
        if p is None:
            assert self.ob.stats().depth == 0
            return
        batch = decode_envelope(p.envelope, lookup)
        ids = [ident(r) for r in batch.readings]
        if p.seq in self.cloud:
            assert self.cloud[p.seq] == p.envelope
            return
        assert p.seq > max(self.cloud, default=0)
        lanes = [self.lane_of[i] for i in ids]
        assert lanes == sorted(lanes), "bulk before priority in one batch"
        self.cloud[p.seq] = p.envelope
        self.ids_of[p.seq] = ids

    @rule()
    def ack(self) -> None:
        p = self.ob.pending()
        if p is not None and p.seq in self.cloud:
            assert self.ob.ack(p.seq)
            self.done.update(self.ids_of[p.seq])

    @rule(max_readings=st.integers(1, 40), ahead=st.none() | st.integers(0, 10**6))
    def refused_seq(self, max_readings: int, ahead: int | None) -> None:
        """The cloud refuses a fresh batch for its seq (409 seq_reused / replay window),
        storing nothing; ``ahead``: how far its last seq is past ours (None: not said)."""
        p = self.ob.next_batch(max_readings, 1 << 20, KEY)
        if p is None or p.seq in self.cloud:
            return
        ids = [ident(r) for r in decode_envelope(p.envelope, lookup).readings]
        cloud_last = None if ahead is None else max(self.cloud, default=0) + ahead
        rebased = self.ob.rebase(p.seq, cloud_last, KEY)
        assert rebased is not None and rebased.seq > max(p.seq, cloud_last or 0)
        assert [ident(r) for r in decode_envelope(rebased.envelope, lookup).readings] == ids
        assert self.ob.pending() == rebased

    @rule(clean=st.booleans())
    def restart(self, clean: bool) -> None:
        if clean:
            self.ob.close()
        else:
            self.crashed.append(self.ob)  # a crash: the old connection is never closed
        self.ob = open_outbox(self.db, self.clock)
        assert self.ob.recovered_from is None

    @invariant()
    def accounted_for(self) -> None:
        st = self.ob.stats()
        assert st.depth == len(self.appended) - len(self.done)
        delivered = collections.Counter(i for ids in self.ids_of.values() for i in ids)
        assert not delivered or max(delivered.values()) == 1
        for lane in (Lane.PRIORITY, Lane.BULK):  # each lane leaves in append order
            order = [i for s in sorted(self.ids_of) for i in self.ids_of[s]
                     if self.lane_of[i] is lane]
            assert order == sorted(order)

    def teardown(self) -> None:
        try:
            drained = readings_of(drain(self.ob))
            delivered = [i for ids in self.ids_of.values() for i in ids]
            final = [ident(r) for r in drained]
            pending_ids = set(delivered) - self.done
            assert sorted(self.done | set(final)) == sorted(self.appended)
            assert not set(final) & self.done
            # a batch seen but not acked is resent with the same seq and bytes
            assert pending_ids <= set(final)
        finally:
            self.ob.close()
            for ob in self.crashed:
                ob.close()
            shutil.rmtree(self.dir, ignore_errors=True)


OutboxMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                           deadline=None)
test_outbox_state_machine = OutboxMachine.TestCase
