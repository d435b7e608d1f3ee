"""Run one driver under its coordinator against a simulated device over a real link, with an
in-memory sink that records what the driver acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from edge.coordinator import Coordinator, Driver
from edge.transport import open_link
from protocols.uplink import Reading


class MemorySink:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def __call__(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)

    def kinds(self, kind: str) -> list[Reading]:
        return [r for r in self.readings if r.kind == kind]


def wall_ms() -> int:
    return int(time.time() * 1000)


async def run_driver(driver: Driver, url: str, *, until: Callable[[MemorySink], bool],
                     timeout_s: float = 20.0, baudrate: int = 115200,
                     backoff: Callable[[int, float], float] = lambda attempt, j: 0.05,
                     clock_ms: Callable[[], int] = wall_ms) -> tuple[MemorySink, Coordinator]:
    """Run until ``until(sink)`` is true or the timeout passes; then cancel cleanly."""
    sink = MemorySink()
    coord = Coordinator(device_id=driver.device_id,  # type: ignore[attr-defined]
                        open_link=lambda: open_link(url, baudrate=baudrate,
                                                    device_id=driver.device_id),  # type: ignore[attr-defined]
                        driver=driver, sink=sink, clock_ms=clock_ms, backoff=backoff)
    task = asyncio.create_task(coord.run(), name=f"coordinator-{driver.kind}")
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while not until(sink) and asyncio.get_running_loop().time() < deadline:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
    finally:
        await stop_task(task)
    return sink, coord


async def stop_task(task: asyncio.Task[object]) -> None:
    """Cancel a background task and wait until it has finished."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

class FastClock:
    """Simulated time running ``speed`` times faster than the wall clock (thread-safe)."""

    def __init__(self, speed: float, start: float = 1_767_225_600.0) -> None:
        self.start = start
        self.speed = speed
        self._m0 = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self._m0) * self.speed

    def ms(self) -> int:
        return int(self.now() * 1000)
