"""Chafon UHFReader18 / UHFReader288M reader driver (serial or RS-485, or TCP through a
serial-to-Ethernet bridge).

The reader runs one G2 inventory per command, so the driver polls. After connecting it asks
for the reader information (0x21) and, when ``variant`` is ``"auto"``, picks the inventory form
from the reader type: UHFReader288M (type 0x0C) gets the 288M form, one inventory per
configured antenna; UHFReader18 (0x09) and unknown types get the bare 18 form, which every
reader of the family accepts. Replies split over several frames (status 0x03, "more frames
follow") are collected up to the frame that ends the round. Reads are aggregated into
per-(EPC, antenna) sightings per window.

Antennas and RSSI: a 288M reply names its antenna; an 18 reply does not, so its sightings
carry ``antenna = None``. The 288M's RSSI byte has no documented unit, so sightings carry
``rssi_max_dbm = None`` (see :mod:`protocols.chafon`).

Options (``[device.options]`` in the site config):

``address``          reader address, 0..254, or 255 to address any reader (default 255)
``variant``          ``"auto"`` (default: from the reader type), ``"18"`` or ``"288"``
``antennas``         ports inventoried in turn, 288M form only (default [1])
``power_dbm``        RF power 0..30 dBm set after connecting (default: leave as configured)
``scan_time_100ms``  288M inventory time per antenna in units of 100 ms (default 10 = 1 s)
``q``                Gen2 Q, 288M form only (default 4; about 2**q slots per round)
``session``          Gen2 session 0..3, 288M form only (default 0)
``window_s``         sighting window in seconds (default 10)
``poll_interval_s``  pause between inventory cycles (default 0.5)
``reply_timeout_s``  wait for a reply frame (default 2; an inventory waits its scan time more)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Final, Literal

from edge.aggregate import TagSightingAggregator
from edge.coordinator import Session
from edge.drivers.base import PollDriver
from protocols import chafon as cf
from protocols._base import Message, StreamDecoder
from protocols.messages import TagRead
from protocols.uplink import Reading

__all__ = ["FORM_BY_READER_TYPE", "INFO_ATTEMPTS", "ChafonDriver"]

log = logging.getLogger("pledgewatch.edge.chafon")

# reader type (0x21 reply) -> inventory form; anything else gets the 18 form
FORM_BY_READER_TYPE: Final = {0x09: "18", 0x0C: "288"}
INFO_ATTEMPTS: Final = 3  # get-reader-info tries before giving up on auto-detection
MAX_MORE_FRAMES: Final = 64  # "more frames follow" replies collected per inventory
ST_ANTENNA_ERROR: Final = 0xF8
ST_MORE: Final = 0x03

Form = Literal["18", "288"]


class ChafonDriver(PollDriver):
    kind: ClassVar[str] = "chafon"

    def __init__(self, *, device_id: str, address: int = cf.BROADCAST,
                 variant: Literal["auto", "18", "288"] = "auto",
                 antennas: tuple[int, ...] = (1,), power_dbm: int | None = None,
                 scan_time_100ms: int = 10, q: int = 4, session: int = 0,
                 window_s: float = 10.0, poll_interval_s: float = 0.5,
                 silence_timeout_s: float = 30.0, reply_timeout_s: float = 2.0) -> None:
        super().__init__(device_id=device_id, silence_timeout_s=silence_timeout_s,
                         poll_interval_s=poll_interval_s, reply_timeout_s=reply_timeout_s)
        if not 0 <= address <= 0xFF:
            raise ValueError(f"address must be 0..255, got {address}")
        if variant not in ("auto", "18", "288"):
            raise ValueError(f"variant must be 'auto', '18' or '288', got {variant!r}")
        if not antennas or not all(1 <= a <= 16 for a in antennas):
            raise ValueError("antennas must be a non-empty list of ports 1..16")
        if not 0 <= scan_time_100ms <= 0xFF:
            raise ValueError(f"scan_time_100ms must be 0..255, got {scan_time_100ms}")
        self.address = address
        self.variant = variant
        self.antennas = tuple(antennas)
        self.scan_time_100ms = scan_time_100ms
        self.q = q
        self.session = session
        self._power_cmd = None if power_dbm is None else cf.encode_set_power(address, power_dbm)
        # validate the 288M parameters now, not at the first poll
        cf.encode_inventory_288(address, q=q, session=session, antenna=self.antennas[0],
                                scan_time_100ms=scan_time_100ms)
        self.aggregator = TagSightingAggregator(window_ms=round(window_s * 1000),
                                                device_id=device_id)
        self.form: Form | None = None  # the inventory form in use (set after connecting)
        self.reader_info: cf.ReaderInfo | None = None
        self.missing_antennas: set[int] = set()
        self.reader_errors: dict[str, int] = {}

    @classmethod
    def from_options(cls, *, device_id: str, silence_timeout_s: float,
                     options: dict[str, Any]) -> ChafonDriver:
        opts = dict(options)
        if "antennas" in opts:
            opts["antennas"] = tuple(opts["antennas"])
        return cls(device_id=device_id, silence_timeout_s=silence_timeout_s, **opts)

    def make_decoder(self) -> StreamDecoder:
        return cf.Decoder("host", "auto" if self.variant == "auto" else self.variant)

    async def start(self, session: Session) -> None:
        info: cf.ReaderInfo | None = None
        for _ in range(INFO_ATTEMPTS):
            msgs = await self.exchange(session, cf.encode_get_reader_info(self.address),
                                       until=(cf.ReaderInfo, cf.ReaderError))
            info = next((m for m in msgs if isinstance(m, cf.ReaderInfo)), None)
            if info is not None or any(isinstance(m, cf.ReaderError) for m in msgs):
                break
        self.reader_info = info
        if self.variant != "auto":
            self.form = self.variant
        else:
            self.form = "288" if info is not None and FORM_BY_READER_TYPE.get(
                info.reader_type) == "288" else "18"
            # the layout is known now: decode strictly rather than guess per frame
            assert isinstance(self._decoder, cf.Decoder)
            self._decoder.variant = self.form
        log.info("chafon %s: reader %s, inventory form %s", self.device_id,
                 info.model if info is not None else "unknown", self.form)
        if self._power_cmd is not None:
            await self.exchange(session, self._power_cmd, until=(cf.CommandResult,
                                                                 cf.ReaderError))

    def _inventory_commands(self) -> list[tuple[int | None, bytes]]:
        if self.form == "288":
            return [(ant, cf.encode_inventory_288(self.address, q=self.q, session=self.session,
                                                  antenna=ant,
                                                  scan_time_100ms=self.scan_time_100ms))
                    for ant in self.antennas]
        return [(None, cf.encode_inventory_18(self.address))]

    async def poll(self, session: Session) -> None:
        _raise_lost_cancel()
        timeout = self.reply_timeout_s + self.scan_time_100ms / 10
        for ant, command in self._inventory_commands():
            msgs: list[Message] = []
            for _ in range(MAX_MORE_FRAMES):
                got = await self.exchange(session, command, until=(cf.InventoryStatus,
                                                                   cf.ReaderError),
                                          timeout_s=timeout)
                msgs += got
                command = b""  # further frames of the same round need no new command
                last = next((m for m in reversed(got) if isinstance(
                    m, cf.InventoryStatus | cf.ReaderError)), None)
                if not (isinstance(last, cf.InventoryStatus) and last.status == ST_MORE):
                    break
            recv_ms = session.clock_ms()
            for m in msgs:
                if isinstance(m, TagRead):
                    self.aggregator.feed(recv_ms, m)
                elif isinstance(m, cf.ReaderError):
                    self.reader_errors[m.error] = self.reader_errors.get(m.error, 0) + 1
                    if m.status == ST_ANTENNA_ERROR and ant is not None:
                        self.missing_antennas.add(ant)

    def flush(self, now_ms: int, *, final: bool = False) -> list[Reading]:
        return self.aggregator.drain() if final else self.aggregator.flush(now_ms)


def _raise_lost_cancel() -> None:
    """Re-raise a cancellation that ``asyncio.wait_for`` swallowed (Python 3.11: a cancel that
    lands just as the link's read completes is dropped, though the task still counts it). The
    base loops read through ``wait_for``; this check bounds such a lost shutdown to one
    poll cycle. Redundant once ``edge.transport`` reads with ``asyncio.timeout``."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
