"""A network partition between a real gateway and a real ``pledgewatch cloud serve``, through
a TCP proxy that resets connections, blackholes them (accepts, never answers: the gateway's
upload times out) and, worst of all, lets a batch reach the cloud but throws its answer
away. Three simulated days of readings from four devices are produced while the link goes
through those states with the gateway's real backoff, then it heals: every reading arrives
once, in order per device, and the batches the cloud stored without the gateway hearing of
it were recognised as duplicates when resent."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

from prometheus_client import generate_latest

from gateway.app import Gateway
from protocols.uplink import Reading
from tests.chaos.support import (
    ChaosProxy,
    CloudProcess,
    Mode,
    content,
    metric,
    stored,
    twice,
    until_async,
)
from tests.cloud.bank_setup import setup_bank
from tests.edge.driver_harness import stop_task
from tests.gateway.site_helpers import load, write_site

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00Z
MINUTE_MS = 60_000
BULK_DEVICES = ("wb-1", "gps-1", "mixer-1")
ALARM_DEVICE = "panel-1"
# (link state, simulated hours of readings produced in it, real seconds it lasts at least)
PHASES: tuple[tuple[Mode, int, float], ...] = (
    ("pass", 2, 0.0),
    ("reset", 20, 2.5),
    ("blackhole", 30, 3.5),
    ("drop_response", 10, 0.0),  # lasts until two answers were lost (see below)
    ("reset", 10, 1.0),
)


class SimClock:
    """The gateway's clock, moved by the test: three days pass in seconds."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def _minute(clock: SimClock, minute: int) -> list[Reading]:
    t = clock.ms
    out = [Reading("weight", "wb-1", t - 400, t, {"weight_kg": float(minute), "stable": True}),
           Reading("position", "gps-1", t - 300, t, {"lat": -31.4, "lon": -64.2 + minute / 1e6}),
           Reading("feed_event", "mixer-1", t - 200, t,
                   {"event": "unload", "kg": float(minute % 500), "pen": f"P{minute % 7}"})]
    if minute % 360 == 0:  # an alarm every six hours: the priority lane
        out.append(Reading("alarm", ALARM_DEVICE, t - 100, t, {"alarm": f"tamper-{minute}"}))
    return out


def test_partition_heals_with_everything_once_in_order(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cloud = CloudProcess(tmp_path, db_url)
    site, _ = write_site(tmp_path, uplink={
        "kind": "http", "url": "http://placeholder/v1/ingest", "batch_max_readings": 300,
        "batch_max_age_s": 60, "timeout_s": 1.0, "backoff_base_s": 0.05, "backoff_cap_s": 0.5})
    setup_bank(tmp_path, db_url, tmp_path / "keys" / "gw-1.key.pub")
    sent: list[Reading] = []
    clock = SimClock(T0_MS)
    outcome: dict[str, object] = {}

    async def go(proxy: ChaosProxy) -> None:
        cfg = load(site)
        cfg = cfg.model_copy(update={"uplink": cfg.uplink.model_copy(update={"url": proxy.url})})
        gw = Gateway(cfg, clock_ms=clock)
        task = asyncio.create_task(gw.run(), name="gateway")
        minute = 0
        try:
            for mode, hours, hold_s in PHASES:
                proxy.mode = mode
                for _ in range(hours * 60 // 10):  # stored ten simulated minutes at a time
                    block: list[Reading] = []
                    for _ in range(10):
                        clock.ms += MINUTE_MS
                        block += _minute(clock, minute)
                        minute += 1
                    await gw.store(block)
                    sent.extend(block)
                    await asyncio.sleep(0)
                if mode == "pass":  # the first hours go through while the link is up
                    assert await until_async(
                        lambda: len(stored(db_url).readings) == len(sent), 20), cloud.log()
                elif mode == "drop_response":
                    assert await until_async(lambda: proxy.seen["responses_dropped"] >= 2, 20)
                await asyncio.sleep(hold_s)
                assert not task.done(), "the gateway stopped during the partition"
            outcome["during"] = len(stored(db_url).readings)
            proxy.mode = "pass"  # heal
            clock.ms += 2 * MINUTE_MS  # the tail batch is now old enough to leave
            outcome["healed"] = await until_async(
                lambda: len(stored(db_url).readings) >= len(sent), 45, step_s=0.25)
            await asyncio.sleep(0.3)  # anything extra (a duplicate) would show up now
            outcome["gateway_metrics"] = generate_latest(gw.metrics.registry).decode()
            outcome["queue_depth"] = gw.outbox.stats().depth
        finally:
            await stop_task(task)

    async def main() -> None:
        async with ChaosProxy(cloud.port) as proxy:
            await go(proxy)
            outcome["seen"] = dict(proxy.seen)

    with cloud:
        asyncio.run(main())
        cloud_metrics = cloud.metrics()
    got = stored(db_url)

    assert outcome["healed"], f"{len(sent) - len(got.readings)} readings never arrived"
    assert twice(got.readings) == [], "a reading was stored twice"
    assert sorted(map(content, got.readings)) == sorted(map(content, sent))
    assert outcome["queue_depth"] == 0
    per_device_sent, per_device_got = defaultdict(list), defaultdict(list)
    for r in sent:
        per_device_sent[r.device_id].append(content(r))
    for r in got.readings:
        per_device_got[r.device_id].append(content(r))
    for device in (*BULK_DEVICES, ALARM_DEVICE):
        assert per_device_got[device] == per_device_sent[device], f"{device} out of order"
    assert got.seqs == list(range(got.seqs[0], got.seqs[0] + len(got.seqs))), \
        "seqs must be stored once each, without gaps"
    # the partition really happened in every state the test meant to put it in ...
    seen = outcome["seen"]
    assert isinstance(seen, dict)
    assert seen.get("connect:reset", 0) >= 1, seen
    assert seen.get("connect:blackhole", 0) + seen.get("chunk:blackhole", 0) >= 1, seen
    assert seen.get("responses_dropped", 0) >= 2, seen
    # ... it held most of the three days back until it healed ...
    assert isinstance(outcome["during"], int) and outcome["during"] < len(sent) // 2
    # ... the gateway saw it as failures it retries, and the cloud recognised the resends of
    # the batches whose answers were lost
    gw_metrics = str(outcome["gateway_metrics"])
    assert metric(gw_metrics, "pledgewatch_gateway_upload_failures_total", reason="network") > 0
    assert metric(gw_metrics, "pledgewatch_gateway_upload_failures_total", reason="timeout") > 0
    assert metric(cloud_metrics, "pledgewatch_ingest_duplicates_total") >= 1
    assert metric(cloud_metrics, "pledgewatch_http_requests_total", method="POST",
                  route="/v1/ingest", status="500") == 0
