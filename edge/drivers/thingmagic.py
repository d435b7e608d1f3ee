"""ThingMagic Mercury embedded-module driver (M5e, M6e Nano, M7e; serial).

After connecting the driver stops any continuous reading left running by a previous session,
boots the application firmware if the module sits in its bootloader (boot firmware 0x04: a
module already running its application answers ``invalid_opcode``), sets the region, the Gen2
protocol, the antenna port and the read power, and starts continuous reading (0x2F wrapping
0x22 with metadata: read count, RSSI, antenna, frequency, timestamp, protocol). Streamed tag
records are aggregated into per-(EPC, antenna) sightings per window.

The device is reported online once that setup succeeded: a module that answers but rejects
its configuration (a region it does not support, a power it cannot reach) stays offline and is
retried with backoff, with the module's error in the offline reason.

The stream is watched: when the module ends it (a stream-end record), or nothing arrives for
``restart_after_s`` (which is also how an empty field is told from a dead module: the module
answers the start), the driver re-issues the start command; when that answer says the module
is in its bootloader again (it was power-cycled), the whole setup runs again.

Timestamps: a record's timestamp counts milliseconds since continuous reading started; the
driver adds the gateway time at which it sent the start command (:class:`StreamClock`, which
also unwraps the 32-bit counter) so sightings carry epoch milliseconds.

Options (``[device.options]`` in the site config):

``region``            region name from ``protocols.thingmagic.REGIONS`` (``"europe"``,
                      ``"north_america"``, ...) or code; default: keep the module's setting
                      (a new module has none: set it)
``antenna``           antenna port 1..15 to read on (default 1); multi-port plans are stored
                      in the module with the vendor's tools
``read_power_dbm``    read TX power 0..32 dBm (default: keep the module's setting)
``window_s``          sighting window in seconds (default 10)
``restart_after_s``   re-issue continuous reading after this long without a frame (default 5)
``reply_timeout_s``   wait for a setup reply before resending the command (default 2; each
                      setup command is sent up to 3 times)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Final

from edge.aggregate import TagSightingAggregator
from edge.coordinator import Session
from edge.drivers.base import StreamDriver, split
from edge.errors import DeviceSilent, EdgeError
from protocols import thingmagic as tm
from protocols._base import Message, StreamDecoder
from protocols.messages import TagRead
from protocols.uplink import Reading

__all__ = [
    "SETUP_ATTEMPTS",
    "STREAM_METADATA",
    "StreamClock",
    "ThingMagicDriver",
    "ThingMagicSetupError",
]

log = logging.getLogger("pledgewatch.edge.thingmagic")

STREAM_METADATA: Final = (tm.METADATA_FLAGS["read_count"] | tm.METADATA_FLAGS["rssi"]
                          | tm.METADATA_FLAGS["antenna"] | tm.METADATA_FLAGS["frequency"]
                          | tm.METADATA_FLAGS["timestamp"] | tm.METADATA_FLAGS["protocol"])
SETUP_ATTEMPTS: Final = 3  # sends of one setup command before the module counts as silent
ST_INVALID_OPCODE: Final = 0x0101  # what a module in its bootloader answers
OP_BOOT: Final = tm.OPCODES["boot_firmware"]
OP_MULTI: Final = tm.OPCODES["multi_protocol_tag_op"]
OP_READ_MULTIPLE: Final = tm.OPCODES["read_tag_id_multiple"]
_U32: Final = 1 << 32
_U32_HALF: Final = 1 << 31


class ThingMagicSetupError(EdgeError):
    """The module refused a setup command. ``opcode``/``status``/``error`` are the module's
    reply (``error`` the Mercury API name of ``status``)."""

    def __init__(self, message: str, *, device_id: str = "", opcode: int = 0, status: int = 0,
                 error: str = "") -> None:
        super().__init__(message, device_id=device_id)
        self.opcode = opcode
        self.status = status
        self.error = error


class StreamClock:
    """Module timestamps (ms since continuous reading started, a 32-bit counter) to epoch ms.
    ``origin_ms`` is the gateway time the start command was sent. The counter wraps after
    about 49.7 days; a step back of more than half its range is read as a wrap."""

    __slots__ = ("_last", "_wraps", "origin_ms")

    def __init__(self, origin_ms: int) -> None:
        self.origin_ms = origin_ms
        self._last: int | None = None
        self._wraps = 0

    def to_epoch_ms(self, raw_ms: int) -> int:
        last = self._last
        if last is not None and last - raw_ms > _U32_HALF:
            self._wraps += 1
        elif last is not None and raw_ms - last > _U32_HALF and self._wraps:
            self._wraps -= 1  # a late record from before the wrap
        self._last = raw_ms
        return self.origin_ms + raw_ms + self._wraps * _U32


def _reply_opcode(m: Message) -> int | None:
    """The opcode a module reply answers, ``None`` for stream data."""
    if isinstance(m, tm.ContinuousRead):
        return OP_MULTI
    if isinstance(m, tm.Ack | tm.ModuleError | tm.Version | tm.Response | tm.TagsFound):
        return m.opcode
    return None


class ThingMagicDriver(StreamDriver):
    kind: ClassVar[str] = "thingmagic"

    def __init__(self, *, device_id: str, region: str | int | None = None, antenna: int = 1,
                 read_power_dbm: float | None = None, window_s: float = 10.0,
                 restart_after_s: float = 5.0, reply_timeout_s: float = 2.0,
                 silence_timeout_s: float = 30.0, flush_interval_s: float = 1.0) -> None:
        super().__init__(device_id=device_id, silence_timeout_s=silence_timeout_s,
                         flush_interval_s=flush_interval_s)
        if isinstance(region, str) and region not in tm.REGIONS:
            raise ValueError(f"unknown region {region!r}; known: {', '.join(tm.REGIONS)}")
        if restart_after_s <= 0 or reply_timeout_s <= 0:
            raise ValueError("restart_after_s and reply_timeout_s must be > 0")
        # build every setup command now so bad options fail at start, not at connect
        self._setup_commands: list[tuple[str, bytes]] = []
        if region is not None:
            self._setup_commands.append(("set_region", tm.encode_set_region(region)))
        self._setup_commands += [("set_tag_protocol", tm.encode_set_tag_protocol()),
                                 ("set_antenna_port", tm.encode_set_antenna(antenna))]
        if read_power_dbm is not None:
            self._setup_commands.append(("set_read_tx_power",
                                         tm.encode_set_read_power(read_power_dbm)))
        self.region = region
        self.antenna = antenna
        self.read_power_dbm = read_power_dbm
        self.restart_after_s = restart_after_s
        self.reply_timeout_s = reply_timeout_s
        self.aggregator = TagSightingAggregator(window_ms=round(window_s * 1000),
                                                device_id=device_id)
        self.version: tm.Version | None = None  # from boot firmware, when it booted
        self.restarts = 0  # continuous-read starts re-issued
        self.setups = 0  # full setups run
        self.module_errors: dict[str, int] = {}
        self._decoder: tm.Decoder | None = None
        self._clock: StreamClock | None = None  # timestamps of the running stream
        self._pending_origin_ms: int | None = None  # start sent, acknowledgement awaited
        self._restart_due = False
        self._setup_due = False
        self._setup_frames = 0  # good frames during a setup, reported when it succeeded
        self._rx = 0  # messages seen (the idle hook watches it move)
        self._rx_seen = 0
        self._rx_at = 0.0  # loop time the idle hook last saw _rx move

    @classmethod
    def from_options(cls, *, device_id: str, silence_timeout_s: float,
                     options: dict[str, Any]) -> ThingMagicDriver:
        return cls(device_id=device_id, silence_timeout_s=silence_timeout_s, **options)

    @property
    def restart_due(self) -> bool:
        """The module ended its stream or refused it: the next idle call starts it again."""
        return self._restart_due or self._setup_due

    def note_start_sent(self, sent_ms: int) -> None:
        """A continuous-read start was sent at gateway time ``sent_ms``: records after its
        acknowledgement count their timestamps from there."""
        self._pending_origin_ms = sent_ms

    @property
    def streaming(self) -> bool:
        """The module acknowledged continuous reading in this session."""
        return self._clock is not None

    def make_decoder(self) -> StreamDecoder:
        # the session's decoder: ``start`` and ``idle`` talk to the module through it too
        self._decoder = tm.Decoder()
        return self._decoder

    # -- stream data ----------------------------------------------------------------------
    def on_messages(self, msgs: Sequence[Message], recv_ms: int) -> list[Reading]:
        self._rx += len(msgs)
        for m in msgs:
            if isinstance(m, TagRead):
                clock = self._clock
                ts = (clock.to_epoch_ms(m.device_ts_ms)
                      if clock is not None and m.device_ts_ms is not None else None)
                if ts != m.device_ts_ms:
                    m = dataclasses.replace(m, device_ts_ms=ts)
                self.aggregator.feed(recv_ms, m)
            elif isinstance(m, tm.ContinuousRead):
                if m.running and self._pending_origin_ms is not None:
                    self._clock = StreamClock(self._pending_origin_ms)
                    self._pending_origin_ms = None
                elif not m.running:
                    self._clock = None
            elif isinstance(m, tm.StreamEnd):
                self._restart_due = True
            elif isinstance(m, tm.ModuleError):
                self.module_errors[m.error] = self.module_errors.get(m.error, 0) + 1
                if m.opcode == OP_MULTI and m.status == ST_INVALID_OPCODE:
                    self._setup_due = True  # back in the bootloader: power-cycled
                elif m.opcode == OP_MULTI:
                    self._restart_due = True
        return []

    def flush(self, now_ms: int, *, final: bool = False) -> list[Reading]:
        return self.aggregator.drain() if final else self.aggregator.flush(now_ms)

    # -- talking to the module ------------------------------------------------------------
    async def _command(self, session: Session, name: str, frame: bytes, opcode: int, *,
                       starts_stream: bool = False) -> Message:
        """Send ``frame`` and return the module's reply to ``opcode``, resending it after
        each reply timeout. Stream data arriving meanwhile is processed as usual. Good frames
        are counted but not reported: the device is online once the setup succeeded."""
        assert self._decoder is not None
        loop = asyncio.get_running_loop()
        for _ in range(SETUP_ATTEMPTS):
            if starts_stream:
                self.note_start_sent(session.clock_ms())
            await session.link.write(frame)
            deadline = loop.time() + self.reply_timeout_s
            while (remaining := deadline - loop.time()) > 0:
                data = await session.link.read(remaining)
                if not data:
                    continue
                msgs, errs = split(self._decoder.feed(data))
                if errs:
                    session.codec_errors(errs)
                if not msgs:
                    continue
                self._setup_frames += len(msgs)
                self.on_messages(msgs, session.clock_ms())
                reply = next((m for m in msgs if _reply_opcode(m) == opcode), None)
                if reply is not None:
                    return reply
        raise DeviceSilent(f"no reply to {name} after {SETUP_ATTEMPTS} attempts",
                           device_id=self.device_id,
                           silent_s=SETUP_ATTEMPTS * self.reply_timeout_s)

    def _refused(self, name: str, reply: Message) -> ThingMagicSetupError:
        if isinstance(reply, tm.ModuleError):
            return ThingMagicSetupError(
                f"module refused {name}: {reply.error} (0x{reply.status:04X})",
                device_id=self.device_id, opcode=reply.opcode, status=reply.status,
                error=reply.error)
        return ThingMagicSetupError(f"unexpected reply to {name}: {reply.type}",
                                    device_id=self.device_id)

    async def _setup(self, session: Session) -> None:
        self.setups += 1
        self._setup_frames = 0
        self._clock = None
        await self._command(session, "stop_continuous_read", tm.encode_stop_continuous_read(),
                            OP_MULTI)  # any answer will do: it was streaming, or not
        reply = await self._command(session, "boot_firmware", tm.encode_boot_firmware(),
                                    OP_BOOT)
        if isinstance(reply, tm.Version):
            self.version = reply
            log.info("thingmagic %s: booted firmware %s", self.device_id,
                     reply.firmware_version)
        elif not (isinstance(reply, tm.ModuleError) and reply.status == ST_INVALID_OPCODE):
            raise self._refused("boot_firmware", reply)
        for name, frame in self._setup_commands:
            reply = await self._command(session, name, frame, frame[2])
            if not isinstance(reply, tm.Ack):
                raise self._refused(name, reply)
        await self._start_stream(session)
        await session.frame_ok(self._setup_frames)

    async def _start_stream(self, session: Session) -> None:
        reply = await self._command(session, "start_continuous_read",
                                    tm.encode_start_continuous_read(STREAM_METADATA), OP_MULTI,
                                    starts_stream=True)
        if not (isinstance(reply, tm.ContinuousRead) and reply.running):
            raise self._refused("start_continuous_read", reply)
        self._restart_due = self._setup_due = False

    async def start(self, session: Session) -> None:
        self._restart_due = self._setup_due = False
        self._pending_origin_ms = None
        await self._setup(session)
        self._rx_seen = self._rx
        self._rx_at = asyncio.get_running_loop().time()

    async def idle(self, session: Session) -> None:
        _raise_lost_cancel()
        now = asyncio.get_running_loop().time()
        if self._rx != self._rx_seen:
            self._rx_seen, self._rx_at = self._rx, now
        if self._setup_due:
            log.info("thingmagic %s: module is in its bootloader again; setting it up",
                     self.device_id)
            await self._setup(session)
        elif self._restart_due or now - self._rx_at >= self.restart_after_s:
            self.restarts += 1
            self._restart_due = False
            self._rx_at = now  # the next restart waits a full interval again
            # fire and forget: the answer arrives through on_messages
            self.note_start_sent(session.clock_ms())
            await session.link.write(tm.encode_start_continuous_read(STREAM_METADATA))
        else:
            return
        self._rx_seen = self._rx


def _raise_lost_cancel() -> None:
    """Re-raise a cancellation that ``asyncio.wait_for`` swallowed (Python 3.11: a cancel that
    lands just as the link's read completes is dropped, though the task still counts it). The
    base loops read through ``wait_for``; this check bounds such a lost shutdown to one
    flush interval. Redundant once ``edge.transport`` reads with ``asyncio.timeout``."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
