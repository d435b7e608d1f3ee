"""The two driver shapes: a stream driver (the device talks continuously; the driver decodes
and aggregates) and a poll driver (the driver asks, the device answers). Both report good
frames and codec errors to their coordinator and emit readings through it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from edge.coordinator import Session
from edge.errors import DeviceSilent, EdgeError
from protocols._base import FrameError, Message, StreamDecoder
from protocols.uplink import Reading

__all__ = ["Decoded", "PollDriver", "StreamDriver", "split"]

Decoded = list[Message | FrameError]


def split(items: Decoded) -> tuple[list[Message], list[str]]:
    msgs: list[Message] = []
    errs: list[str] = []
    for i in items:
        if isinstance(i, FrameError):
            errs.append(i.kind)
        else:
            msgs.append(i)
    return msgs, errs


class StreamDriver:
    """Base of drivers for devices that stream (scales in continuous mode, GPS, readers in
    continuous inventory). Subclasses implement :meth:`make_decoder` and
    :meth:`on_messages`, and may override :meth:`start` (commands sent after connecting),
    :meth:`flush` (readings held by aggregation) and :meth:`idle` (periodic work)."""

    kind: ClassVar[str] = "stream"

    def __init__(self, *, device_id: str, silence_timeout_s: float = 30.0,
                 flush_interval_s: float = 1.0) -> None:
        self.device_id = device_id
        self.silence_timeout_s = silence_timeout_s
        self.flush_interval_s = flush_interval_s

    def make_decoder(self) -> StreamDecoder:
        raise NotImplementedError

    def on_messages(self, msgs: Sequence[Message], recv_ms: int) -> list[Reading]:
        raise NotImplementedError

    def flush(self, now_ms: int, *, final: bool = False) -> list[Reading]:
        return []

    async def start(self, session: Session) -> None:
        """Commands to send after the link opens (e.g. start continuous reading)."""

    async def idle(self, session: Session) -> None:
        """Called about every ``flush_interval_s`` (e.g. to re-issue a command)."""

    async def run(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        dec = self.make_decoder()
        await self.start(session)
        last_good = loop.time()
        next_flush = loop.time() + self.flush_interval_s
        try:
            while True:
                data = await session.link.read(max(0.01, next_flush - loop.time()))
                if data:
                    msgs, errs = split(dec.feed(data))
                    if errs:
                        session.codec_errors(errs)
                    if msgs:
                        last_good = loop.time()
                        await session.frame_ok(len(msgs))
                        await session.emit(self.on_messages(msgs, session.clock_ms()))
                now = loop.time()
                if now >= next_flush:
                    next_flush = now + self.flush_interval_s
                    await session.emit(self.flush(session.clock_ms()))
                    await self.idle(session)
                if now - last_good > self.silence_timeout_s:
                    raise DeviceSilent(f"no good frame for {now - last_good:.1f} s",
                                       device_id=self.device_id, silent_s=now - last_good)
        except EdgeError:
            # the link is gone: what aggregation holds is still good data
            await session.emit(self.flush(session.clock_ms(), final=True))
            raise


class PollDriver(StreamDriver):
    """Base of drivers that ask and wait for answers. Subclasses implement :meth:`poll`,
    which sends commands with :meth:`exchange` and emits readings."""

    kind: ClassVar[str] = "poll"
    poll_interval_s: float = 1.0

    def __init__(self, *, device_id: str, silence_timeout_s: float = 30.0,
                 poll_interval_s: float = 1.0, reply_timeout_s: float = 2.0) -> None:
        super().__init__(device_id=device_id, silence_timeout_s=silence_timeout_s)
        self.poll_interval_s = poll_interval_s
        self.reply_timeout_s = reply_timeout_s
        self._decoder: StreamDecoder | None = None
        self._last_good = 0.0

    async def poll(self, session: Session) -> None:
        raise NotImplementedError

    async def exchange(self, session: Session, command: bytes, *,
                       until: type[Message] | tuple[type[Message], ...],
                       timeout_s: float | None = None) -> list[Message]:
        """Send ``command`` and collect decoded messages until one of type ``until`` arrives
        or the reply timeout passes. Returns every message collected (possibly none)."""
        assert self._decoder is not None
        loop = asyncio.get_running_loop()
        if command:
            await session.link.write(command)
        deadline = loop.time() + (timeout_s or self.reply_timeout_s)
        out: list[Message] = []
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            data = await session.link.read(remaining)
            if not data:
                continue
            msgs, errs = split(self._decoder.feed(data))
            if errs:
                session.codec_errors(errs)
            if msgs:
                self._last_good = loop.time()
                await session.frame_ok(len(msgs))
                out += msgs
                if any(isinstance(m, until) for m in msgs):
                    break
        if loop.time() - self._last_good > self.silence_timeout_s:
            raise DeviceSilent(f"no answer for {loop.time() - self._last_good:.1f} s",
                               device_id=self.device_id,
                               silent_s=loop.time() - self._last_good)
        return out

    async def run(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        self._decoder = self.make_decoder()
        self._last_good = loop.time()
        await self.start(session)
        try:
            while True:
                started = loop.time()
                await self.poll(session)
                await session.emit(self.flush(session.clock_ms()))
                await asyncio.sleep(max(0.0, self.poll_interval_s - (loop.time() - started)))
        except EdgeError:
            await session.emit(self.flush(session.clock_ms(), final=True))
            raise
