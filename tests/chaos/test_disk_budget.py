"""The gateway's disk budget fills during a long partition from a real cloud: past the budget
the outbox drops the oldest bulk readings (never the batch already built, never the priority
lane), counts them, and reports them in a ``data_integrity`` reading that reaches the cloud
once the link heals, where the bank sees it through the read API. Everything not dropped
arrives once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from gateway.app import Gateway
from protocols.uplink import Reading
from tests.chaos.support import ChaosProxy, CloudProcess, metric, stored, twice, until_async
from tests.cloud.bank_setup import admin, setup_bank
from tests.edge.driver_harness import stop_task
from tests.gateway.site_helpers import load, write_site

T0_MS = 1_767_225_600_000
N_POSITIONS = 6000  # one a simulated second: ~100 minutes, ~7x the budget below
ALARM_EVERY = 500


class SimClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_full_disk_budget_during_a_partition_drops_oldest_bulk_and_says_so(
        tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cloud = CloudProcess(tmp_path, db_url)
    site, _ = write_site(
        tmp_path, uplink={"kind": "http", "url": "http://placeholder/v1/ingest",
                          "batch_max_readings": 500, "batch_max_age_s": 5, "timeout_s": 1.0,
                          "backoff_base_s": 0.05, "backoff_cap_s": 0.3},
        gateway={"disk_budget_mb": 0.05})
    setup_bank(tmp_path, db_url, tmp_path / "keys" / "gw-1.key.pub")
    admin(db_url, "create-user", "--bank", "TB", "risk@tb.test", "--role", "viewer")
    token = admin(db_url, "create-token", "--bank", "TB", "risk@tb.test").split()[-1]
    clock = SimClock(T0_MS)
    out: dict[str, object] = {}

    async def go(proxy: ChaosProxy) -> None:
        cfg = load(site)
        cfg = cfg.model_copy(update={"uplink": cfg.uplink.model_copy(update={"url": proxy.url})})
        gw = Gateway(cfg, clock_ms=clock)
        ports: list[int] = []
        task = asyncio.create_task(gw.run(on_ready=ports.append), name="gateway")
        try:
            proxy.mode = "blackhole"
            for i in range(N_POSITIONS):
                clock.ms += 1000
                batch = [Reading("position", "gps-1", clock.ms, clock.ms,
                                 {"lat": -19.0, "lon": 24.0 + i / 1e5})]
                if i % ALARM_EVERY == 0:
                    batch.append(Reading("alarm", "panel-1", clock.ms, clock.ms,
                                         {"alarm": f"tamper-{i}"}))
                await gw.store(batch)
                if i == N_POSITIONS // 2:
                    proxy.mode = "reset"
            out["dropped_at_gateway"] = gw.outbox.stats().dropped_total
            proxy.mode = "pass"
            # the tail is old enough to leave; (a jump under the gateway's 60 s heartbeat
            # interval, so no heartbeat joins the bulk lane the counts below are about)
            clock.ms += 10_000
            out["drained"] = await until_async(lambda: gw.outbox.stats().depth == 0, 40)
            async with httpx.AsyncClient() as c:  # what an operator's scraper sees
                out["metrics"] = (await c.get(f"http://127.0.0.1:{ports[0]}/metrics")).text
        finally:
            await stop_task(task)

    async def main() -> None:
        async with ChaosProxy(cloud.port) as proxy:
            await go(proxy)
            out["seen"] = dict(proxy.seen)

    with cloud:
        asyncio.run(main())
        auth = {"Authorization": f"Bearer {token}"}
        site_id = httpx.get(f"{cloud.base}/v1/sites", headers=auth).json()[0]["id"]
        api_integrity = httpx.get(f"{cloud.base}/v1/sites/{site_id}/readings",
                                  params={"kind": "data_integrity"}, headers=auth).json()
    rs = stored(db_url).readings
    assert out["drained"], cloud.log()
    seen = out["seen"]
    assert isinstance(seen, dict) and seen.get("connect:reset", 0) >= 1
    assert seen.get("connect:blackhole", 0) + seen.get("chunk:blackhole", 0) >= 1
    assert twice(rs) == []
    # the priority lane is whole
    alarms = [r.data["alarm"] for r in rs if r.kind == "alarm"]
    assert sorted(alarms) == sorted(f"tamper-{i}" for i in range(0, N_POSITIONS, ALARM_EVERY))
    # every position is either in the cloud or counted as dropped, by gateway and cloud alike
    positions = [r for r in rs if r.kind == "position"]
    integrity = [r for r in rs if r.kind == "data_integrity"]
    dropped = sum(int(r.data["dropped"]) for r in integrity)
    assert integrity and all(r.data["reason"] == "disk_budget" for r in integrity)
    assert dropped > N_POSITIONS // 2  # the budget really was the limit
    assert len(positions) + dropped == N_POSITIONS
    assert dropped == out["dropped_at_gateway"]
    assert metric(str(out["metrics"]), "pledgewatch_gateway_dropped_readings_total") == dropped
    # what was dropped is the oldest queued bulk: after the batch that was already built when
    # the partition began, one contiguous range, whose event times the report names
    idx = [round((r.data["lon"] - 24.0) * 1e5) for r in positions]
    assert idx == sorted(idx)
    gap = next(k for k in range(len(idx)) if idx[k] != k)
    assert idx[gap:] == list(range(gap + dropped, N_POSITIONS))
    assert min(r.data["first_ms"] for r in integrity) == positions[gap - 1].ts_ms + 1000
    assert max(r.data["last_ms"] for r in integrity) == positions[gap].ts_ms - 1000
    # and the bank sees the report through the API
    assert [i["data"]["dropped"] for i in api_integrity["items"]] == \
        [r.data["dropped"] for r in integrity]
