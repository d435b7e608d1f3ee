"""Impinj R2000 "0xA0" reader driver (serial, or TCP through the reader's network port).

The reader runs one inventory per command, so the driver polls: for each configured antenna
it selects the antenna (0x74), runs a real-time inventory (0x89) and collects tag frames until
the round-complete or error frame. Reads are aggregated into per-(EPC, antenna) sightings per
window. Options (``[device.options]`` in the site config): ``address`` (default 1),
``antennas`` (default [1, 2, 3, 4]), ``repeat`` (rounds per inventory, default 1),
``window_s`` (sighting window, default 10), ``poll_interval_s`` (default 0.5).
"""

from __future__ import annotations

from typing import Any, ClassVar

from edge.aggregate import TagSightingAggregator
from edge.coordinator import Session
from edge.drivers.base import PollDriver
from protocols import r2000
from protocols._base import StreamDecoder
from protocols.messages import TagRead
from protocols.uplink import Reading

__all__ = ["R2000Driver"]


class R2000Driver(PollDriver):
    kind: ClassVar[str] = "r2000"

    def __init__(self, *, device_id: str, address: int = 1,
                 antennas: tuple[int, ...] = (1, 2, 3, 4), repeat: int = 1,
                 window_s: float = 10.0, poll_interval_s: float = 0.5,
                 silence_timeout_s: float = 30.0, reply_timeout_s: float = 2.0) -> None:
        super().__init__(device_id=device_id, silence_timeout_s=silence_timeout_s,
                         poll_interval_s=poll_interval_s, reply_timeout_s=reply_timeout_s)
        if not antennas or not all(1 <= a <= 4 for a in antennas):
            raise ValueError("antennas must be a non-empty list of ports 1..4")
        self.address = address
        self.antennas = tuple(antennas)
        self.repeat = repeat
        self.aggregator = TagSightingAggregator(window_ms=int(window_s * 1000),
                                                device_id=device_id)
        self.missing_antennas: set[int] = set()

    @classmethod
    def from_options(cls, *, device_id: str, silence_timeout_s: float,
                     options: dict[str, Any]) -> R2000Driver:
        opts = dict(options)
        if "antennas" in opts:
            opts["antennas"] = tuple(opts["antennas"])
        return cls(device_id=device_id, silence_timeout_s=silence_timeout_s, **opts)

    def make_decoder(self) -> StreamDecoder:
        return r2000.Decoder()

    async def poll(self, session: Session) -> None:
        for ant in self.antennas:
            await self.exchange(session, r2000.encode_set_work_antenna(self.address, ant),
                                until=(r2000.CommandResult, r2000.ReaderError))
            msgs = await self.exchange(
                session, r2000.encode_real_time_inventory(self.address, self.repeat),
                until=(r2000.InventoryDone, r2000.ReaderError))
            recv_ms = session.clock_ms()
            for m in msgs:
                if isinstance(m, TagRead):
                    self.aggregator.feed(recv_ms, m)
                elif isinstance(m, r2000.ReaderError) and m.code == 0x22:
                    self.missing_antennas.add(ant)

    def flush(self, now_ms: int, *, final: bool = False) -> list[Reading]:
        return self.aggregator.drain() if final else self.aggregator.flush(now_ms)
