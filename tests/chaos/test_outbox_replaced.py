"""A gateway whose outbox is replaced while the cloud remembers its old batches, against a
real ``pledgewatch cloud serve``. The cloud dedupes on ``(gateway_id, seq)``, so a new or
restored outbox must never reuse a stored seq nor stay stuck below the replay window.

Three ways that went wrong before (found by these chaos runs), each now a regression test:

* the gateway clock was hours fast when the first outbox was made, and is right when a new
  one is made (NTP fixed it; the SD card was replaced): the new seqs fall below
  ``last_seq - replay_window``. The cloud answers 409 ``replay_outside_window`` with its
  ``last_seq``; the gateway re-signs the batch above it (``Outbox.rebase``) - once, not
  forever;
* the gateway is restored from an image taken earlier (an SD card backup): its outbox's
  ``last_seq`` is behind the cloud's. Opening the outbox raises ``last_seq`` to the clock,
  above every seq used since the backup, so nothing collides;
* the same with the clock behind since the image was taken (a dead RTC battery, no NTP):
  the next batches reuse seqs the cloud stored. They used to be answered 200 ``duplicate``
  and deleted unstored (silent loss); now the cloud compares the batch's signature with the
  stored one, answers 409 ``seq_reused`` with its ``last_seq``, and the gateway re-signs.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import generate_latest

from gateway.app import Gateway
from protocols.uplink import Reading
from tests.chaos.support import CloudProcess, Stored, content, metric, stored, twice, until_async
from tests.cloud.bank_setup import setup_bank
from tests.edge.driver_harness import stop_task
from tests.gateway.site_helpers import load, write_site

HOUR_MS = 3_600_000


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def _run_and_send(site: Path, clock: Callable[[], int], readings: list[Reading],
                        db_url: str, timeout_s: float) -> tuple[bool, str]:
    """Run a gateway until ``readings`` are stored in the cloud (or ``timeout_s``); returns
    (arrived, the gateway's metrics text)."""
    gw = Gateway(load(site), clock_ms=clock)
    task = asyncio.create_task(gw.run(), name="gateway")
    want = {content(r) for r in readings}
    try:
        await gw.store(readings)
        arrived = await until_async(
            lambda: want <= {content(r) for r in stored(db_url).readings}, timeout_s)
        return arrived, generate_latest(gw.metrics.registry).decode()
    finally:
        await stop_task(task)


def _weights(device: str, first: int, n: int) -> list[Reading]:
    t = _wall_ms()
    return [Reading("weight", device, t + i, t + i, {"weight_kg": float(first + i),
                                                     "stable": True}) for i in range(n)]


def _site(tmp_path: Path, cloud: CloudProcess) -> Path:
    site, _ = write_site(tmp_path, uplink={"kind": "http", "url": cloud.ingest_url,
                                           "batch_max_readings": 10, "batch_max_age_s": 0.1,
                                           "backoff_base_s": 0.05, "backoff_cap_s": 0.3})
    return site


def test_new_outbox_after_the_clock_was_corrected(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    with CloudProcess(tmp_path, db_url) as cloud:
        site = _site(tmp_path, cloud)
        setup_bank(tmp_path, db_url, tmp_path / "keys" / "gw-1.key.pub")
        fast = lambda: _wall_ms() + 6 * HOUR_MS  # noqa: E731 - the clock before NTP fixed it
        first, _ = asyncio.run(_run_and_send(site, fast, _weights("wb-1", 0, 30), db_url, 20))
        assert first, cloud.log()
        shutil.rmtree(tmp_path / "data")  # a new SD card: the outbox starts afresh
        later = _weights("wb-1", 1000, 30)
        arrived, gw_metrics = asyncio.run(_run_and_send(site, _wall_ms, later, db_url, 6))
        got = stored(db_url)
    # refused once (the gateway cannot know the cloud's last seq before it is told), then
    # the batch re-signed above it and everything after it taken
    assert metric(gw_metrics, "pledgewatch_gateway_upload_failures_total",
                  reason="replay_outside_window") == 1, "the cloud refuses every new batch"
    assert arrived
    assert twice(got.readings) == []
    assert got.seqs == sorted(set(got.seqs))


def _restore_and_send(tmp_path: Path, clock: Callable[[], int]) -> tuple[
        bool, str, str, set[tuple[str, str, int, int, str]], Stored]:
    """A run with the real clock, an image of the data dir, a second run on ``clock``, the
    image restored, a third run on ``clock``: (arrived, gateway metrics of the third run,
    the cloud's metrics, readings of the third run never stored, what the cloud stored)."""
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    data = tmp_path / "data"
    with CloudProcess(tmp_path, db_url) as cloud:
        site = _site(tmp_path, cloud)
        setup_bank(tmp_path, db_url, tmp_path / "keys" / "gw-1.key.pub")
        assert asyncio.run(_run_and_send(site, _wall_ms, _weights("wb-1", 0, 30), db_url,
                                         20))[0], cloud.log()
        shutil.copytree(data, tmp_path / "backup")  # the image, taken with the gateway off
        assert asyncio.run(_run_and_send(site, clock, _weights("wb-1", 100, 30), db_url,
                                         20))[0]
        shutil.rmtree(data)
        shutil.copytree(tmp_path / "backup", data)  # the card dies; the image is restored
        later = _weights("wb-1", 1000, 30)
        arrived, gw_metrics = asyncio.run(_run_and_send(site, clock, later, db_url, 6))
        cloud_metrics = cloud.metrics()
        got = stored(db_url)
    lost = {content(r) for r in later} - {content(r) for r in got.readings}
    return arrived, gw_metrics, cloud_metrics, lost, got


def test_outbox_restored_from_an_earlier_backup(tmp_path: Path) -> None:
    arrived, gw_metrics, _, lost, got = _restore_and_send(tmp_path, _wall_ms)
    assert arrived and not lost, f"{len(lost)} readings acknowledged as duplicates, never stored"
    # the restored outbox started above the seqs used since the image: nothing collided
    assert metric(gw_metrics, "pledgewatch_gateway_upload_failures_total",
                  reason="seq_reused") == 0
    assert twice(got.readings) == [] and got.seqs == sorted(set(got.seqs))


def test_outbox_restored_from_a_backup_with_the_clock_behind(tmp_path: Path) -> None:
    """The RTC battery died after the image was taken and NTP is out of reach: the clock is
    a day behind in the runs after it, so opening the outbox does not move its seq."""
    behind = lambda: _wall_ms() - 24 * HOUR_MS  # noqa: E731
    arrived, gw_metrics, cloud_metrics, lost, got = _restore_and_send(tmp_path, behind)
    assert arrived and not lost, f"{len(lost)} readings acknowledged as duplicates, never stored"
    # the first batch reused a stored seq: refused once, re-signed above the cloud's last seq
    assert metric(gw_metrics, "pledgewatch_gateway_upload_failures_total",
                  reason="seq_reused") == 1
    assert metric(cloud_metrics, "pledgewatch_ingest_rejected_total", reason="seq_reused") == 1
    assert "pledgewatch_ingest_duplicates_total " in cloud_metrics
    assert metric(cloud_metrics, "pledgewatch_ingest_duplicates_total") == 0  # not "taken"
    assert twice(got.readings) == [] and got.seqs == sorted(set(got.seqs))
