"""A gateway whose outbox is replaced while the cloud remembers its old batches. The cloud
dedupes on ``(gateway_id, seq)`` alone, so a new outbox must never reuse or fall far behind
an old seq: docs/uplink.md promises that "every new outbox ... starts its seq at the current
time in ms, so the cloud never mistakes new batches for already-seen ones".

Two ways that promise breaks, found by these chaos runs (both strict xfails: they turn red
once the product is fixed, so the marker gets removed; see the lead's issue for the fix):

* the gateway clock was hours fast when the first outbox was made, and is right when a new
  one is made (NTP fixed it; the SD card was replaced): the new seqs fall below
  ``last_seq - replay_window``, the cloud answers 409 ``replay_outside_window`` to every
  batch, the gateway retries that forever and nothing it reads ever arrives;
* the gateway is restored from an image taken earlier (an SD card backup): its outbox's
  ``last_seq`` is behind the cloud's, the next batches reuse seqs the cloud already stored,
  the cloud answers 200 ``duplicate``, and the gateway deletes readings that were never
  stored - silent loss.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from gateway.app import Gateway
from protocols.uplink import Reading
from tests.chaos.support import CloudProcess, content, metric, stored, until_async
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


@pytest.mark.xfail(strict=True, reason="product bug: a new outbox made with a corrected clock "
                   "starts below last_seq - replay_window; the cloud answers 409 forever")
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
    assert metric(gw_metrics, "pledgewatch_gateway_upload_failures_total",
                  reason="replay_outside_window") == 0, "the cloud refuses every new batch"
    assert arrived


@pytest.mark.xfail(strict=True, reason="product bug: an outbox restored from a backup reuses "
                   "seqs the cloud stored; they are answered 'duplicate' and lost")
def test_outbox_restored_from_an_earlier_backup(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    data = tmp_path / "data"
    with CloudProcess(tmp_path, db_url) as cloud:
        site = _site(tmp_path, cloud)
        setup_bank(tmp_path, db_url, tmp_path / "keys" / "gw-1.key.pub")
        assert asyncio.run(_run_and_send(site, _wall_ms, _weights("wb-1", 0, 30), db_url,
                                         20))[0]
        shutil.copytree(data, tmp_path / "backup")  # the image, taken with the gateway off
        assert asyncio.run(_run_and_send(site, _wall_ms, _weights("wb-1", 100, 30), db_url,
                                         20))[0]
        shutil.rmtree(data)
        shutil.copytree(tmp_path / "backup", data)  # the card dies; the image is restored
        later = _weights("wb-1", 1000, 30)
        arrived, _ = asyncio.run(_run_and_send(site, _wall_ms, later, db_url, 6))
        got = stored(db_url).readings
    lost = {content(r) for r in later} - {content(r) for r in got}
    assert arrived and not lost, f"{len(lost)} readings acknowledged as duplicates, never stored"
