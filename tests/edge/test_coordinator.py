"""The coordinator survives a driver bug: the device is reported offline once, retried with
backoff, and the other devices are not affected."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from edge.coordinator import AVAILABILITY, Availability, Coordinator, Event, Session
from tests.edge.driver_harness import MemorySink, stop_task


class FakeLink:
    url = "fake://"

    async def read(self, timeout: float) -> bytes:
        await asyncio.sleep(timeout)
        return b""

    async def write(self, data: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


class BuggyThenFine:
    kind: ClassVar[str] = "buggy"
    device_id = "dev-1"
    silence_timeout_s = 30.0

    def __init__(self) -> None:
        self.sessions = 0

    async def run(self, session: Session) -> None:
        self.sessions += 1
        if self.sessions == 1:
            raise KeyError("field the device never sent")  # a driver bug, not an EdgeError
        await session.frame_ok()
        await asyncio.Event().wait()


def test_every_state_event_pair_is_in_the_table() -> None:
    assert set(AVAILABILITY) == {(s, e) for s in Availability for e in Event}


def test_unexpected_driver_error_is_contained_and_retried() -> None:
    sink = MemorySink()
    driver = BuggyThenFine()
    delays: list[int] = []

    def backoff(attempt: int, jitter: float) -> float:
        delays.append(attempt)
        return 0.01

    async def go() -> Coordinator:
        async def open_link() -> FakeLink:
            return FakeLink()

        coord = Coordinator(device_id="dev-1", open_link=open_link, driver=driver, sink=sink,
                            clock_ms=lambda: 5, backoff=backoff)
        task = asyncio.create_task(coord.run())
        for _ in range(200):
            if coord.online:
                break
            await asyncio.sleep(0.01)
        await stop_task(task)
        return coord

    coord = asyncio.run(go())
    assert coord.online and driver.sessions == 2 and delays == [1]
    assert coord.stats.unexpected_errors == 1
    assert [r.kind for r in sink.readings] == ["device_offline", "device_online"]
    assert "KeyError" in sink.readings[0].data["reason"]
