"""One coordinator per device: opens its link, runs its driver, tracks availability and
reconnects with capped, jittered backoff.

Availability is a table-driven state machine (STYLE.md habit 4). A ``device_online`` reading
is emitted when the first good frame arrives after start or after an outage, and a
``device_offline`` reading once when the link fails or the device goes silent: on
transitions, never on every failed retry.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, Protocol

from edge.errors import DeviceSilent, EdgeError, TransportError
from edge.transport import ByteLink
from protocols.uplink import Reading

__all__ = [
    "AVAILABILITY",
    "Availability",
    "Coordinator",
    "DeviceStats",
    "Driver",
    "Event",
    "ReadingSink",
    "Session",
    "transition",
]

log = logging.getLogger("pledgewatch.edge")


class Availability(enum.Enum):
    STARTING = "starting"
    ONLINE = "online"
    OFFLINE = "offline"


class Event(enum.Enum):
    FRAME = "frame"  # a good frame was decoded
    LINK_FAILED = "link_failed"  # open failed, read/write failed, EOF
    SILENT = "silent"  # no good frame within the silence timeout


# (state, event) -> (reading kind to emit or None, next state). Every pair is listed.
AVAILABILITY: Final[dict[tuple[Availability, Event], tuple[str | None, Availability]]] = {
    (Availability.STARTING, Event.FRAME): ("device_online", Availability.ONLINE),
    (Availability.STARTING, Event.LINK_FAILED): ("device_offline", Availability.OFFLINE),
    (Availability.STARTING, Event.SILENT): ("device_offline", Availability.OFFLINE),
    (Availability.ONLINE, Event.FRAME): (None, Availability.ONLINE),
    (Availability.ONLINE, Event.LINK_FAILED): ("device_offline", Availability.OFFLINE),
    (Availability.ONLINE, Event.SILENT): ("device_offline", Availability.OFFLINE),
    (Availability.OFFLINE, Event.FRAME): ("device_online", Availability.ONLINE),
    (Availability.OFFLINE, Event.LINK_FAILED): (None, Availability.OFFLINE),
    (Availability.OFFLINE, Event.SILENT): (None, Availability.OFFLINE),
}


def transition(state: Availability, event: Event) -> tuple[str | None, Availability]:
    return AVAILABILITY[(state, event)]


class ReadingSink(Protocol):
    async def __call__(self, readings: Sequence[Reading]) -> None:
        """Store readings durably; returning is the acknowledgement."""
        ...


@dataclass
class DeviceStats:
    """Counters exported as metrics."""

    frames: int = 0
    codec_errors: int = 0
    readings: int = 0
    connects: int = 0
    link_failures: int = 0
    unexpected_errors: int = 0  # driver or sink bugs caught by the coordinator
    error_kinds: dict[str, int] = field(default_factory=dict)


class Session:
    """What a driver sees of its coordinator while a link is up."""

    def __init__(self, coordinator: Coordinator, link: ByteLink) -> None:
        self._c = coordinator
        self.link = link
        self.device_id = coordinator.device_id
        self.clock_ms = coordinator.clock_ms

    async def frame_ok(self, n: int = 1) -> None:
        """Report good frames (drives availability)."""
        self._c.stats.frames += n
        await self._c._event(Event.FRAME, "")

    def codec_errors(self, kinds: Sequence[str]) -> None:
        st = self._c.stats
        st.codec_errors += len(kinds)
        for k in kinds:
            st.error_kinds[k] = st.error_kinds.get(k, 0) + 1

    async def emit(self, readings: Sequence[Reading]) -> None:
        if readings:
            await self._c.sink(readings)
            self._c.stats.readings += len(readings)


class Driver(Protocol):
    """Transport + codec for one device kind. ``run`` returns or raises when the link is
    no longer usable; the coordinator then reconnects."""

    kind: ClassVar[str]
    device_id: str
    silence_timeout_s: float

    async def run(self, session: Session) -> None: ...


class Coordinator:
    def __init__(self, *, device_id: str, open_link: Callable[[], Awaitable[ByteLink]],
                 driver: Driver, sink: ReadingSink, clock_ms: Callable[[], int],
                 backoff: Callable[[int, float], float], rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.device_id = device_id
        self.open_link = open_link
        self.driver = driver
        self.sink = sink
        self.clock_ms = clock_ms
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.state = Availability.STARTING
        self.stats = DeviceStats()
        self.failures_in_a_row = 0
        self.last_error = ""

    @property
    def online(self) -> bool:
        return self.state is Availability.ONLINE

    async def _event(self, event: Event, reason: str) -> None:
        emit, nxt = transition(self.state, event)
        if nxt is not self.state:
            log.info("device %s: %s -> %s%s", self.device_id, self.state.value, nxt.value,
                     f" ({reason})" if reason else "")
        self.state = nxt
        if event is Event.FRAME:
            self.failures_in_a_row = 0
        if emit is not None:
            now = self.clock_ms()
            data = {"reason": reason} if emit == "device_offline" else {"driver":
                                                                         self.driver.kind}
            await self.sink([Reading(emit, self.device_id, now, now, data)])

    async def run(self) -> None:
        """Run until cancelled."""
        while True:
            link: ByteLink | None = None
            try:
                link = await self.open_link()
                self.stats.connects += 1
                await self.driver.run(Session(self, link))
                reason = "driver session ended"
                event = Event.LINK_FAILED
            except DeviceSilent as exc:
                reason, event = str(exc), Event.SILENT
            except TransportError as exc:
                reason, event = str(exc), Event.LINK_FAILED
            except EdgeError as exc:
                reason, event = f"{type(exc).__name__}: {exc}", Event.LINK_FAILED
            except Exception as exc:  # a driver or sink bug must not stop the other devices
                log.exception("device %s: unexpected error in its driver", self.device_id)
                self.stats.unexpected_errors += 1
                reason, event = f"unexpected {type(exc).__name__}: {exc}", Event.LINK_FAILED
            finally:
                if link is not None:
                    await link.close()
            self.stats.link_failures += 1
            self.last_error = reason
            try:
                await self._event(event, reason)
            except Exception:  # the sink itself failing (disk full): retry after backoff
                log.exception("device %s: could not store its availability reading",
                              self.device_id)
            self.failures_in_a_row += 1
            await self.sleep(self.backoff(self.failures_in_a_row, self.rng.random()))
