"""LLRP fixed-reader driver (Impinj Speedway/R700, Zebra FX class; TCP, ``tcp://host:5084``).

Session, per connection:

1. wait for the READER_EVENT_NOTIFICATION with the ConnectionAttemptEvent. A status other
   than success (another client holds the reader, ...) raises :class:`LlrpConnectionRefused`,
   a :class:`~edge.errors.TransportError`, so the coordinator backs off and retries;
2. DELETE_ROSPEC(0) (ROSpecs outlive connections on real readers), ADD_ROSPEC (Null start
   and stop triggers, one AISpec with a Gen2 inventory on ``antennas``, a report every
   ``report_every_n_tags`` tags with antenna, peak RSSI, first-seen time and seen count),
   ENABLE_ROSPEC, START_ROSPEC, one after the other; a response whose LLRPStatus is not
   success raises :class:`LlrpRequestFailed`, no response within ``reply_timeout_s`` is a
   silent device;
3. stream: RO_ACCESS_REPORT tag reads go to the sighting aggregator (the first-seen UTC time
   becomes the sighting's ``ts_ms``), KEEPALIVE is answered with KEEPALIVE_ACK at once. When
   the reader has said nothing for ``probe_after_s`` (an empty field reports nothing), the
   driver asks GET_READER_CAPABILITIES so a live reader is told from a dead one;
4. on the way out (shutdown, silence, a failed request) it sends CLOSE_CONNECTION and waits
   briefly for the answer, so the reader frees its client slot at once.

The device is reported online once the ROSpec started; a reader that refuses the connection
or the ROSpec stays offline (reported once) while the coordinator retries with backoff. A run
of framing errors (the peer does not speak LLRP) ends the session too: on TCP the only cure
for a lost message boundary is a new connection.

Options (``[device.options]`` in the site config):

``rospec_id``            ID of the driver's ROSpec, 1..2**32-1 (default 1)
``antennas``             antenna IDs to inventory; [0] means every antenna (default [0])
``report_every_n_tags``  tags per RO_ACCESS_REPORT, 1..65535 (default 1)
``window_s``             sighting window in seconds (default 10)
``connect_timeout_s``    wait for the reader's connection event (default 10)
``reply_timeout_s``      wait for each response (default 5)
``probe_after_s``        probe a reader that has been quiet this long (default 10; at most a
                         third of the device's silence timeout)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Final

from edge.aggregate import TagSightingAggregator
from edge.coordinator import Session
from edge.drivers.base import split
from edge.errors import DeviceSilent, EdgeError, TransportClosed, TransportError
from protocols import llrp
from protocols._base import Message
from protocols.messages import TagRead
from protocols.uplink import Reading

__all__ = [
    "CLOSE_TIMEOUT_S",
    "FRAMING_ERRORS",
    "MAX_FRAMING_ERRORS_IN_A_ROW",
    "LlrpConnectionRefused",
    "LlrpDriver",
    "LlrpProtocolError",
    "LlrpRequestFailed",
]

log = logging.getLogger("pledgewatch.edge.llrp")

CLOSE_TIMEOUT_S: Final = 1.0  # wait for CLOSE_CONNECTION_RESPONSE on the way out
MAX_FRAMING_ERRORS_IN_A_ROW: Final = 32  # then the stream is not LLRP: reconnect
FRAMING_ERRORS: Final = frozenset({"garbage", "bad_length", "oversized", "buffer_overflow"})
PROBE_REQUESTED_DATA: Final = 1  # GeneralDeviceCapabilities only: a small answer
MIN_WAIT_S: Final = 0.01


class LlrpConnectionRefused(TransportError):
    """The reader's ConnectionAttemptEvent was not a success. ``status`` is its code,
    ``status_name`` the name from :data:`protocols.llrp.CONNECTION_STATUS`."""

    def __init__(self, message: str, *, device_id: str = "", url: str = "", status: int = 0,
                 status_name: str = "") -> None:
        super().__init__(message, device_id=device_id, url=url)
        self.status = status
        self.status_name = status_name


class LlrpRequestFailed(EdgeError):
    """A request was answered with an LLRPStatus other than success (or an ERROR_MESSAGE)."""

    def __init__(self, message: str, *, device_id: str = "", request: str = "",
                 status: int = 0, status_name: str = "", description: str = "") -> None:
        super().__init__(message, device_id=device_id)
        self.request = request
        self.status = status
        self.status_name = status_name
        self.description = description


class LlrpProtocolError(EdgeError):
    """The byte stream stopped framing as LLRP. ``errors`` is the run of framing errors."""

    def __init__(self, message: str, *, device_id: str = "", errors: int = 0) -> None:
        super().__init__(message, device_id=device_id)
        self.errors = errors


class LlrpDriver:
    """Implements :class:`edge.coordinator.Driver`; see the module docstring."""

    kind: ClassVar[str] = "llrp"

    def __init__(self, *, device_id: str, rospec_id: int = 1, antennas: tuple[int, ...] = (0,),
                 report_every_n_tags: int = 1, window_s: float = 10.0,
                 connect_timeout_s: float = 10.0, reply_timeout_s: float = 5.0,
                 probe_after_s: float = 10.0, silence_timeout_s: float = 30.0,
                 flush_interval_s: float = 1.0) -> None:
        if not 1 <= report_every_n_tags <= 0xFFFF:
            raise ValueError(f"report_every_n_tags must be 1..65535, got {report_every_n_tags}")
        for name, value in (("connect_timeout_s", connect_timeout_s),
                            ("reply_timeout_s", reply_timeout_s),
                            ("probe_after_s", probe_after_s),
                            ("silence_timeout_s", silence_timeout_s),
                            ("flush_interval_s", flush_interval_s)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.device_id = device_id
        self.silence_timeout_s = silence_timeout_s
        self.flush_interval_s = flush_interval_s
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.probe_after_s = min(probe_after_s, silence_timeout_s / 3)
        self.rospec = llrp.RoSpec(rospec_id, antennas=tuple(antennas),
                                  report_trigger=llrp.REPORT_UPON_N_TAGS_OR_END_OF_ROSPEC,
                                  report_n=report_every_n_tags,
                                  report_fields=llrp.DEFAULT_REPORT_FIELDS)
        llrp.rospec_to_bytes(self.rospec)  # bad IDs and antennas fail now, not at connect
        self.aggregator = TagSightingAggregator(window_ms=round(window_s * 1000),
                                                device_id=device_id)
        self.capabilities: llrp.ReaderCapabilities | None = None
        self.keepalives = 0  # KEEPALIVEs answered
        self.probes = 0  # GET_READER_CAPABILITIES sent because the reader was quiet
        self.sessions = 0  # ROSpecs started (one per successful connection)
        self._message_id = 0

    @classmethod
    def from_options(cls, *, device_id: str, silence_timeout_s: float,
                     options: dict[str, Any]) -> LlrpDriver:
        opts = dict(options)
        if "antennas" in opts:
            opts["antennas"] = tuple(opts["antennas"])
        return cls(device_id=device_id, silence_timeout_s=silence_timeout_s, **opts)

    def next_message_id(self) -> int:
        self._message_id = self._message_id % llrp.MAX_ID + 1
        return self._message_id

    def flush(self, now_ms: int, *, final: bool = False) -> list[Reading]:
        return self.aggregator.drain() if final else self.aggregator.flush(now_ms)

    async def run(self, session: Session) -> None:
        conn = _Connection(self, session)
        try:
            await conn.open()
            await conn.stream()
        except (TransportClosed, LlrpConnectionRefused):
            await session.emit(self.flush(session.clock_ms(), final=True))
            raise
        except EdgeError:
            await conn.close()
            await session.emit(self.flush(session.clock_ms(), final=True))
            raise
        except asyncio.CancelledError:
            await conn.close()
            raise


class _Connection:
    """One TCP connection's LLRP session: decoder, framing state, availability hold."""

    def __init__(self, driver: LlrpDriver, session: Session) -> None:
        self.d = driver
        self.s = session
        self.loop = asyncio.get_running_loop()
        self.decoder = llrp.Decoder()
        self.started = False  # ROSpec running: good frames are reported from now on
        self.held_frames = 0  # good frames before that, reported when it starts
        self.framing_run = 0
        self.last_rx = self.loop.time()
        self.cancel_baseline = 0  # cancellation requests already being handled

    async def receive(self, timeout: float) -> list[Message]:
        """Read once (up to ``timeout``), decode, count, and handle what needs no caller:
        tag reads to the aggregator, KEEPALIVE answered. Returns the messages decoded."""
        data = await self.s.link.read(max(MIN_WAIT_S, timeout))
        _raise_lost_cancel(self.cancel_baseline)
        if not data:
            return []
        msgs, errs = split(self.decoder.feed(data))
        if errs:
            self.s.codec_errors(errs)
            self.framing_run += sum(1 for e in errs if e in FRAMING_ERRORS)
        if not msgs:
            if self.framing_run > MAX_FRAMING_ERRORS_IN_A_ROW:
                raise LlrpProtocolError(
                    f"{self.framing_run} framing errors in a row: the peer does not speak "
                    f"LLRP", device_id=self.d.device_id, errors=self.framing_run)
            return []
        self.framing_run = 0
        self.last_rx = self.loop.time()
        if self.started:
            await self.s.frame_ok(len(msgs))
        else:
            self.held_frames += len(msgs)
        recv_ms = self.s.clock_ms()
        for m in msgs:
            if isinstance(m, TagRead):
                self.d.aggregator.feed(recv_ms, m)
            elif isinstance(m, llrp.Keepalive):
                await self.s.link.write(llrp.encode_keepalive_ack(m.message_id))
                self.d.keepalives += 1
            elif isinstance(m, llrp.LlrpResponse) and m.capabilities is not None:
                self.d.capabilities = m.capabilities
            elif isinstance(m, llrp.ReaderEvent) and m.events:
                log.info("llrp %s: reader events %s", self.d.device_id, ", ".join(m.events))
        return msgs

    async def open(self) -> None:
        deadline = self.loop.time() + self.d.connect_timeout_s
        while (remaining := deadline - self.loop.time()) > 0:
            for m in await self.receive(remaining):
                if not (isinstance(m, llrp.ReaderEvent) and m.connection_status is not None):
                    continue
                if not m.connection_ok:
                    name = llrp.CONNECTION_STATUS.get(m.connection_status,
                                                      str(m.connection_status))
                    raise LlrpConnectionRefused(
                        f"reader refused the connection: {name}", device_id=self.d.device_id,
                        url=self.s.link.url, status=m.connection_status, status_name=name)
                await self._setup()
                return
        raise DeviceSilent(f"no READER_EVENT_NOTIFICATION within {self.d.connect_timeout_s} s",
                           device_id=self.d.device_id, silent_s=self.d.connect_timeout_s)

    async def _setup(self) -> None:
        d = self.d
        rid = d.rospec.rospec_id
        await self.call("DELETE_ROSPEC", lambda mid: llrp.encode_delete_rospec(mid, 0))
        await self.call("ADD_ROSPEC", lambda mid: llrp.encode_add_rospec(mid, d.rospec))
        await self.call("ENABLE_ROSPEC", lambda mid: llrp.encode_enable_rospec(mid, rid))
        await self.call("START_ROSPEC", lambda mid: llrp.encode_start_rospec(mid, rid))
        d.sessions += 1
        self.started = True
        await self.s.frame_ok(self.held_frames)
        log.info("llrp %s: ROSpec %d started", d.device_id, rid)

    async def call(self, name: str, build: Callable[[int], bytes]) -> llrp.LlrpResponse:
        """Send one request and wait for its response (matched by message ID)."""
        mid = self.d.next_message_id()
        await self.s.link.write(build(mid))
        deadline = self.loop.time() + self.d.reply_timeout_s
        while (remaining := deadline - self.loop.time()) > 0:
            for m in await self.receive(remaining):
                if isinstance(m, llrp.LlrpResponse) and m.message_id == mid:
                    if not m.ok:
                        raise LlrpRequestFailed(
                            f"{name} failed: {m.status_name}"
                            + (f" ({m.description})" if m.description else ""),
                            device_id=self.d.device_id, request=name, status=m.status,
                            status_name=m.status_name, description=m.description)
                    return m
        raise DeviceSilent(f"no response to {name} within {self.d.reply_timeout_s} s",
                           device_id=self.d.device_id, silent_s=self.d.reply_timeout_s)

    async def stream(self) -> None:
        d = self.d
        next_flush = self.loop.time() + d.flush_interval_s
        last_probe = self.loop.time()
        while True:
            now = self.loop.time()
            probe_at = max(self.last_rx, last_probe) + d.probe_after_s
            await self.receive(min(next_flush, probe_at) - now)
            now = self.loop.time()
            if now >= next_flush:
                next_flush = now + d.flush_interval_s
                await self.s.emit(d.flush(self.s.clock_ms()))
            quiet = now - self.last_rx
            if quiet > d.silence_timeout_s:
                raise DeviceSilent(f"no message for {quiet:.1f} s", device_id=d.device_id,
                                   silent_s=quiet)
            if quiet >= d.probe_after_s and now - last_probe >= d.probe_after_s:
                last_probe = now
                d.probes += 1
                await self.s.link.write(llrp.encode_get_reader_capabilities(
                    d.next_message_id(), PROBE_REQUESTED_DATA))

    async def close(self) -> None:
        """Best effort CLOSE_CONNECTION; never raises an :class:`EdgeError` (the session is
        ending anyway). Also runs while a cancellation is being handled."""
        task = asyncio.current_task()
        self.cancel_baseline = task.cancelling() if task is not None else 0
        deadline = self.loop.time() + CLOSE_TIMEOUT_S
        with contextlib.suppress(EdgeError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                mid = self.d.next_message_id()
                await self.s.link.write(llrp.encode_close_connection(mid))
                while (remaining := deadline - self.loop.time()) > 0:
                    for m in await self.receive(remaining):
                        if isinstance(m, llrp.LlrpResponse) and m.message_id == mid:
                            return


def _raise_lost_cancel(baseline: int) -> None:
    """Re-raise a cancellation that ``asyncio.wait_for`` swallowed. On Python 3.11 a cancel
    that lands while the awaited read has just completed is dropped by ``wait_for`` (it
    returns the data instead; fixed in 3.12), yet the task still counts the request. Without
    this check a coordinator cancelled at that instant would stream on forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling() > baseline:
        raise asyncio.CancelledError
