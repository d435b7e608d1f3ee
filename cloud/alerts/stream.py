"""Server-Sent Events for alert events (``GET /v1/alerts/stream``).

Each event is written as::

    id: <alert_events.id>
    event: alert
    data: <alert JSON as after the event, plus "action", "actor", "at", "event_id">

The stream polls ``alert_events`` for the caller's bank (ids only grow, and writers commit
them in id order, see ``cloud.alerts.service``), so resuming after ``Last-Event-ID`` replays
exactly what was missed. Without a Last-Event-ID a stream starts at the newest event (load
the current alerts with ``GET /v1/alerts`` first); ``last_event_id=0`` replays everything.
A comment line is sent every ``heartbeat_s`` so proxies keep the connection and a client can
tell a quiet stream from a dead one. A stream ends when the client goes away, when the app
asks streams to stop (shutdown), or after ``max_stream_s`` (the client reconnects with its
Last-Event-ID, which also rebalances long-lived connections across processes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Final

from sqlalchemy.orm import Session, sessionmaker

from cloud.alerts.service import StreamEvent, events_after, latest_event_id

__all__ = ["StreamConfig", "alert_stream", "format_event"]

RETRY_MS: Final = 2_000  # what EventSource waits before reconnecting


@dataclasses.dataclass(frozen=True, slots=True)
class StreamConfig:
    poll_s: float = 0.5
    heartbeat_s: float = 15.0
    max_stream_s: float = 3_600.0
    batch: int = 200  # events read per poll


def format_event(event: StreamEvent) -> bytes:
    data = json.dumps(event.data, separators=(",", ":"), sort_keys=True)
    return f"id: {event.id}\nevent: alert\ndata: {data}\n\n".encode()


async def alert_stream(sessions: sessionmaker[Session], *, bank_id: int,
                       after_id: int | None, config: StreamConfig,
                       stop: threading.Event) -> AsyncIterator[bytes]:
    """The SSE byte stream of ``bank_id``'s events after ``after_id`` (None: from now)."""

    def latest() -> int:
        with sessions() as s:
            return latest_event_id(s, bank_id=bank_id)

    def fetch(after: int) -> list[StreamEvent]:
        with sessions() as s:
            return events_after(s, bank_id=bank_id, after_id=after, limit=config.batch)

    last = after_id if after_id is not None else await asyncio.to_thread(latest)
    yield f"retry: {RETRY_MS}\n\n".encode()
    started = beat = time.monotonic()
    while not stop.is_set() and time.monotonic() - started < config.max_stream_s:
        events = await asyncio.to_thread(fetch, last)
        for event in events:
            yield format_event(event)
            last = event.id
        if events:
            beat = time.monotonic()
        if len(events) == config.batch:
            continue  # more waiting: no sleep
        if time.monotonic() - beat >= config.heartbeat_s:
            yield b": keep-alive\n\n"
            beat = time.monotonic()
        await asyncio.sleep(config.poll_s)
