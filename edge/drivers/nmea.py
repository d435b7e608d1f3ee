"""NMEA 0183 GPS driver (trackers and receivers on a serial port).

The receiver streams sentences (:mod:`protocols.nmea`); each second ("epoch") usually brings
a GGA (position, altitude, satellites, HDOP), an RMC (position, date, speed, course) and
sometimes a VTG (speed, course). The driver merges the sentences of one epoch -- those with
the same UTC time -- into one fix, drops fixes without a position fix, thins the rest with
:class:`edge.aggregate.GpsThinner` (kept when ``min_distance_m`` from the last kept fix, or
``max_interval_s`` after it) and emits ``position`` readings with ``lat``, ``lon`` and, when
the receiver told them, ``speed_knots``, ``course_deg``, ``altitude_m``, ``satellites``,
``hdop``. An epoch is complete when the next one starts or ``EPOCH_HOLD_MS`` after it
arrived; a sentence without a time (pre-2.0 GLL) is an epoch of its own, dated by the
receiver's time estimated as below.

Time: ``ts_ms`` is the fix's UTC time by the receiver (:func:`nmea_time_ms`). RMC carries the
date; GGA and GLL only the time of day, which is placed on the day that puts it nearest the
receiver's clock as the last RMC told it (advanced by the receive time since), or, before
any RMC, nearest the gateway's receive time -- so a GGA at 00:00:00 after an RMC at 23:59:59
lands on the new day. ``recv_ms`` is the gateway's receive time.

Options (``[device.options]``; defaults in brackets):

``min_distance_m`` [10.0]
    keep a fix that lies this far (great-circle) from the last kept one.
``max_interval_s`` [60.0]
    keep a fix at least this often, moving or not.
``require_checksum`` [true]
    reject sentences without ``*hh`` (NMEA 0183 v1.5 receivers may omit it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any, ClassVar, Final

from edge.aggregate import GpsThinner
from edge.drivers.base import StreamDriver
from protocols import nmea
from protocols._base import Message, StreamDecoder
from protocols.messages import Position
from protocols.uplink import Reading

__all__ = ["DAY_MS", "EPOCH_HOLD_MS", "MAX_EPOCH_SENTENCES", "NmeaDriver", "nmea_time_ms"]

DAY_MS: Final = 86_400_000
EPOCH_HOLD_MS: Final = 1000  # an epoch without a successor is complete after this
MAX_EPOCH_SENTENCES: Final = 16  # sentences merged into one epoch at most
_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()


def nmea_time_ms(time_utc: str, date: str | None, *, ref_ms: int) -> int:
    """Epoch milliseconds of an NMEA fix time (``hh:mm:ss(.ss)`` as the codec gives it).

    With a ``date`` (``YYYY-MM-DD``, from RMC) the result is exact. Without one (GGA, GLL) the
    time of day is placed on the day before, of, or after ``ref_ms`` -- whichever puts it
    nearest ``ref_ms`` (pass the receiver's last known time, else the receive time). Raises
    ValueError for a malformed time or date."""
    hh, mm, ss = time_utc.split(":")
    tod_ms = (int(hh) * 3600 + int(mm) * 60) * 1000 + round(float(ss) * 1000)
    if date is not None:
        days = dt.date.fromisoformat(date).toordinal() - _EPOCH_ORDINAL
        return days * DAY_MS + tod_ms
    day_start = ref_ms - ref_ms % DAY_MS
    return min((day_start + k * DAY_MS + tod_ms for k in (-1, 0, 1)),
               key=lambda t: abs(t - ref_ms))


@dataclasses.dataclass(slots=True)
class _Epoch:
    time_utc: str | None
    recv_ms: int
    positions: list[Position]
    velocity: nmea.Velocity | None = None


class NmeaDriver(StreamDriver):
    kind: ClassVar[str] = "nmea"

    def __init__(self, *, device_id: str, min_distance_m: float = 10.0,
                 max_interval_s: float = 60.0, require_checksum: bool = True,
                 silence_timeout_s: float = 30.0) -> None:
        super().__init__(device_id=device_id, silence_timeout_s=silence_timeout_s)
        self.require_checksum = require_checksum
        self.thinner = GpsThinner(min_distance_m, round(max_interval_s * 1000),
                                  device_id=device_id)
        self._epoch: _Epoch | None = None
        self._dated: tuple[int, int] | None = None  # (receiver ms, receive ms) of the last RMC
        self.bad_times = 0  # epochs whose time could not be read

    @classmethod
    def from_options(cls, *, device_id: str, silence_timeout_s: float,
                     options: dict[str, Any]) -> NmeaDriver:
        return cls(device_id=device_id, silence_timeout_s=silence_timeout_s, **options)

    def make_decoder(self) -> StreamDecoder:
        return nmea.Decoder(require_checksum=self.require_checksum)

    def on_messages(self, msgs: Sequence[Message], recv_ms: int) -> list[Reading]:
        out: list[Reading] = []
        for m in msgs:
            if isinstance(m, Position):
                ep = self._epoch
                if ep is not None and (ep.time_utc != m.time_utc or m.time_utc is None
                                       or len(ep.positions) >= MAX_EPOCH_SENTENCES):
                    out += self._finish()
                    ep = None
                if ep is None:
                    ep = self._epoch = _Epoch(m.time_utc, recv_ms, [])
                ep.positions.append(m)
                if m.time_utc is None:  # a sentence without a time is an epoch of its own
                    out += self._finish()
            elif isinstance(m, nmea.Velocity) and self._epoch is not None:
                self._epoch.velocity = m  # VTG follows the position sentences of its epoch
        return out

    def flush(self, now_ms: int, *, final: bool = False) -> list[Reading]:
        ep = self._epoch
        if ep is not None and (final or now_ms - ep.recv_ms >= EPOCH_HOLD_MS):
            return self._finish()
        return []

    def _finish(self) -> list[Reading]:
        ep = self._epoch
        assert ep is not None
        self._epoch = None
        dated = next((p for p in ep.positions if p.date is not None), None)
        if self._dated is not None:
            ref = self._dated[0] + (ep.recv_ms - self._dated[1])
        else:
            ref = ep.recv_ms
        try:
            if ep.time_utc is None:
                ts = ref
            else:
                ts = nmea_time_ms(ep.time_utc, dated.date if dated else None, ref_ms=ref)
        except ValueError:
            self.bad_times += 1
            return []
        if dated is not None and dated.fix:
            self._dated = (ts, ep.recv_ms)
        fixes = [p for p in ep.positions if p.fix and p.lat is not None and p.lon is not None]
        if not fixes:
            self.thinner.keep(ts, None, None, fix=False)  # counted as dropped_no_fix
            return []
        merged = self._merge(fixes, ep.velocity)
        reading = self.thinner.feed(ts, merged, recv_ms=ep.recv_ms)
        return [reading] if reading is not None else []

    @staticmethod
    def _merge(fixes: list[Position], velocity: nmea.Velocity | None) -> Position:
        """One position from an epoch's sentences: the first sentence's coordinates, and
        every other field from the first sentence that has it (VTG last)."""
        base = fixes[0]
        fields: dict[str, Any] = {}
        for name in ("speed_knots", "course_deg", "altitude_m", "satellites", "hdop",
                     "quality", "date"):
            fields[name] = next((getattr(p, name) for p in fixes
                                 if getattr(p, name) is not None), None)
        if velocity is not None and velocity.valid is not False:
            if fields["speed_knots"] is None:
                fields["speed_knots"] = velocity.speed_knots
            if fields["course_deg"] is None:
                fields["course_deg"] = velocity.course_true_deg
        return dataclasses.replace(base, **fields)
