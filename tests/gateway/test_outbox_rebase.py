"""When the cloud refuses a batch for its seq alone (409 ``seq_reused`` or
``replay_outside_window``: the outbox was replaced or restored from a backup), the outbox
re-signs the same readings above the cloud's ``last_seq`` (:meth:`Outbox.rebase`); and every
open raises ``last_seq`` to the clock, so a restored file starts above the seqs used since.
Plus the uploader's reading of those 409 answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.errors import UploadError
from gateway.outbox import Outbox
from gateway.uploader import HttpUploader, SeqConflict
from protocols.uplink import Lane
from tests.gateway.test_outbox import (
    BIG,
    GW,
    KEY,
    Clock,
    T,
    bulk,
    drain,
    ident,
    lookup,
    open_outbox,
    prio,
    readings_of,
)
from uplink.envelope import decode_envelope


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
def outbox(db: Path, clock: Clock) -> Iterator[Outbox]:
    with open_outbox(db, clock) as ob:
        yield ob


def _pending_ids(ob: Outbox) -> list[int]:
    p = ob.pending()
    assert p is not None
    return [ident(r) for r in decode_envelope(p.envelope, lookup).readings]


def test_rebase_resigns_the_same_readings_above_the_clouds_last_seq(db: Path,
                                                                     clock: Clock) -> None:
    with open_outbox(db, clock) as ob:
        ob.append([bulk(i) for i in range(6)] + [prio(100), prio(101)])
        refused = ob.next_batch(5, 1 << 20, KEY)
        assert refused is not None and refused.priority_readings == 2
        before = _pending_ids(ob)
        assert before == [100, 101, 0, 1, 2]
        depth = ob.stats().depth
        clock.ms += 5_000
        ob.append([prio(102)])  # newer priority data does not join the re-signed batch
        cloud_last = refused.seq + 10_000_000
        rebased = ob.rebase(refused.seq, cloud_last, KEY)
        assert rebased is not None and rebased.seq == cloud_last + 1
        assert (rebased.readings, rebased.priority_readings) == (5, 2)
        assert rebased.created_ms == clock.ms
        assert _pending_ids(ob) == before  # same readings, same order
        assert ob.stats().depth == depth + 1 and ob.stats().last_seq == cloud_last + 1
        assert not ob.ack(refused.seq)  # the refused seq is gone
        # the re-signed batch is now THE pending batch: resent byte for byte until acked
        assert ob.next_batch(100, 1 << 20, KEY) == rebased
    with open_outbox(db, clock) as ob:  # and that survives a restart
        assert ob.next_batch(1, 1, KEY) == rebased
        assert ob.ack(rebased.seq)
        rest = drain(ob)
    assert rest[0].seq == rebased.seq + 1
    assert [ident(r) for r in readings_of(rest)] == [102, 3, 4, 5]


def test_rebase_keeps_lane_order_over_several_refusals(outbox: Outbox) -> None:
    outbox.append([bulk(i) for i in range(30)])
    outbox.append([prio(100 + i) for i in range(4)])
    sent: list[int] = []
    refusals = 0
    while (p := outbox.next_batch(7, 1 << 20, KEY)) is not None:
        if p.seq % 2:  # odd: every fresh batch is refused once, its re-signed seq taken
            refusals += 1
            assert outbox.rebase(p.seq, None, KEY) is not None
            continue
        sent += [ident(r) for r in decode_envelope(p.envelope, lookup).readings]
        assert outbox.ack(p.seq)
    assert refusals == 5  # 34 readings in batches of 7
    assert sent == [100, 101, 102, 103, *range(30)]  # priority first, each lane in order


@pytest.mark.parametrize("cloud_last", [None, 0, 5])
def test_rebase_without_a_higher_cloud_seq_moves_one_up(outbox: Outbox,
                                                        cloud_last: int | None) -> None:
    outbox.append([bulk(1)])
    p = outbox.next_batch(10, 1 << 20, KEY)
    assert p is not None
    rebased = outbox.rebase(p.seq, cloud_last, KEY)
    assert rebased is not None and rebased.seq == p.seq + 1


def test_rebase_of_a_batch_no_longer_pending_only_raises_last_seq(outbox: Outbox) -> None:
    outbox.append([bulk(1), bulk(2)])
    p = outbox.next_batch(1, 1 << 20, KEY)
    assert p is not None and outbox.ack(p.seq)
    assert outbox.rebase(p.seq, p.seq + 500, KEY) is None
    assert outbox.stats().last_seq == p.seq + 500
    nxt = outbox.next_batch(10, 1 << 20, KEY)
    assert nxt is not None and nxt.seq == p.seq + 501


@pytest.mark.parametrize("bad", [-1, 2**63 - 1, 2**63])
def test_rebase_refuses_an_unusable_cloud_seq(outbox: Outbox, bad: int) -> None:
    outbox.append([bulk(1)])
    p = outbox.next_batch(10, 1 << 20, KEY)
    assert p is not None
    with pytest.raises(ValueError):
        outbox.rebase(p.seq, bad, KEY)
    assert outbox.pending() == p


def test_rebase_keeps_the_byte_accounting(db: Path, clock: Clock) -> None:
    with open_outbox(db, clock) as ob:
        ob.append([bulk(i) for i in range(200)])
        p = ob.next_batch(150, 1 << 20, KEY)
        assert p is not None
        ob.rebase(p.seq, p.seq + 77, KEY)
        used = ob.stats().bytes_used
    with open_outbox(db, clock) as ob:
        assert ob.stats().bytes_used == used  # what a recount from the file says


def test_a_rebased_batch_is_never_dropped_for_the_budget(db: Path, clock: Clock) -> None:
    with open_outbox(db, clock, budget=BIG) as ob:
        ob.append([bulk(i) for i in range(100)])
        p = ob.next_batch(40, 1 << 20, KEY)
        assert p is not None
        rebased = ob.rebase(p.seq, None, KEY)
        assert rebased is not None
    with open_outbox(db, clock, budget=20_000) as ob:  # a much smaller disk
        ob.append([bulk(i) for i in range(1000, 1100)])
        assert ob.stats().dropped_total > 0
        assert ob.pending() == rebased


# -- opening raises last_seq to the clock ---------------------------------------------------------

def test_opening_raises_last_seq_to_the_clock_and_keeps_the_pending_batch(
        db: Path, clock: Clock) -> None:
    with open_outbox(db, clock) as ob:
        ob.append([bulk(i) for i in range(4)])
        pending = ob.next_batch(2, 1 << 20, KEY)
        assert pending is not None and pending.seq == T + 1
    clock.ms = T + 3_600_000  # an hour later (or: a backup of an hour ago restored)
    with open_outbox(db, clock) as ob:
        assert ob.stats().last_seq == T + 3_600_000
        assert ob.next_batch(10, 1 << 20, KEY) == pending  # unchanged, byte for byte
        assert ob.ack(pending.seq)
        nxt = ob.next_batch(10, 1 << 20, KEY)
        assert nxt is not None and nxt.seq == T + 3_600_001


def test_a_clock_behind_the_seqs_does_not_lower_them(db: Path, clock: Clock) -> None:
    with open_outbox(db, clock) as ob:
        ob.append([bulk(1)])
        (first,) = drain(ob)
    clock.ms = T - 86_400_000  # the RTC lost a day
    with open_outbox(db, clock) as ob:
        assert ob.stats().last_seq == first.seq
        ob.append([bulk(2)])
        (second,) = drain(ob)
    assert second.seq == first.seq + 1


def test_a_restored_backup_starts_above_the_seqs_used_since(tmp_path: Path,
                                                            clock: Clock) -> None:
    db = tmp_path / "outbox.db"
    with open_outbox(db, clock) as ob:
        ob.append([bulk(1)])
        drain(ob)
    backup = tmp_path / "backup.db"
    backup.write_bytes(db.read_bytes())  # closed cleanly: the WAL was checkpointed
    clock.ms += 10_000
    used: list[int] = []
    with open_outbox(db, clock) as ob:
        for i in range(50):  # 50 batches in the ten seconds after the image
            ob.append([bulk(100 + i)])
            used += [b.seq for b in drain(ob)]
            clock.ms += 200
    db.unlink()
    db.write_bytes(backup.read_bytes())
    with open_outbox(db, clock) as ob:
        ob.append([bulk(1000)])
        (after,) = drain(ob)
    assert after.seq > max(used)


# -- the uploader's reading of 409 answers ------------------------------------------------------

def _answer(status: int, body: object) -> httpx.MockTransport:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.MockTransport(lambda request: httpx.Response(status, content=content))


async def _send(transport: httpx.MockTransport) -> UploadError:
    async with HttpUploader(url="http://cloud.test/v1/ingest", gateway_id=GW,
                            transport=transport) as up:
        with pytest.raises(UploadError) as err:
            await up.send(b"envelope", seq=7)
    return err.value


@pytest.mark.parametrize(("body", "last"), [
    ({"reason": "seq_reused", "detail": "x", "last_seq": 1_767_225_600_123}, 1_767_225_600_123),
    ({"reason": "replay_outside_window", "detail": "x", "last_seq": 0}, 0),
    ({"reason": "seq_reused", "detail": "x"}, None),  # an older cloud: no last_seq
    ({"reason": "seq_reused", "last_seq": "12"}, None),
    ({"reason": "seq_reused", "last_seq": True}, None),
    ({"reason": "seq_reused", "last_seq": -3}, None),
    ({"reason": "seq_reused", "last_seq": 2**63 - 1}, None),  # no seq above it
    ({"reason": "seq_reused", "last_seq": 1.5e3}, None),
], ids=["seq_reused", "window", "absent", "string", "bool", "negative", "max", "float"])
def test_a_409_refusing_the_seq_carries_the_clouds_last_seq(body: object,
                                                            last: int | None) -> None:
    exc = asyncio.run(_send(_answer(409, body)))
    assert isinstance(exc, SeqConflict)
    assert (exc.status, exc.reason, exc.cloud_last_seq) == (409, body["reason"], last)  # type: ignore[index]
    assert not exc.retryable


@pytest.mark.parametrize(("status", "body"), [
    (409, {"reason": "something_else", "last_seq": 5}),
    (409, b"not json"),
    (400, {"reason": "seq_reused", "last_seq": 5}),  # only a 409 means "nothing stored"
    (503, {"reason": "unavailable"}),
])
def test_other_refusals_are_plain_upload_errors(status: int, body: object) -> None:
    exc = asyncio.run(_send(_answer(status, body)))
    assert not isinstance(exc, SeqConflict) and exc.status == status


def test_lanes_of_a_rebased_batch_are_counted(outbox: Outbox) -> None:
    outbox.append([prio(1), bulk(2), bulk(3)])
    p = outbox.next_batch(10, 1 << 20, KEY)
    assert p is not None
    outbox.rebase(p.seq, None, KEY)
    assert outbox.stats().depth_by_lane == {Lane.PRIORITY: 1, Lane.BULK: 2}
