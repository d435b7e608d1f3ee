"""A simulated NMEA 0183 GNSS receiver (a tracker on a truck, a forklift or a collar).

Once per simulated second (on whole UTC seconds) it emits GGA and RMC, and VTG every
``vtg_every`` seconds, built with the device-role encoders of :mod:`protocols.nmea`. The
position follows either a track of waypoints (driven at ``speed_knots``, looping) or a seeded
random walk. The receiver can lose its fix: always (``fix=False``), during scripted
``outages`` (seconds after the first report), or when a test flips
:attr:`GpsReceiver.fix`. Without a fix it sends what real receivers send: GGA with quality 0
and empty coordinates, RMC status V, VTG mode N.

Ground truth: every emitted second is appended to :attr:`GpsReceiver.fixes` as a
:class:`TruthFix` with the position that was encoded, so tests compare what a driver decoded
with what the receiver meant to say. Host sentences (e.g. ``$PMTK...`` configuration) are
decoded and kept in :attr:`GpsReceiver.commands`; the simulated receiver does not answer them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from typing import ClassVar, Final

from firmware_sim._device import Clock, Faults, SimDevice
from protocols import nmea

__all__ = ["KNOT_M_S", "MAX_CATCH_UP", "GpsReceiver", "TruthFix", "demo_track"]

KNOT_M_S: Final = 1852.0 / 3600.0
M_PER_DEG: Final = 6_371_000.0 * math.pi / 180.0  # spherical Earth, metres per degree of lat
MAX_CATCH_UP: Final = 600  # seconds of sentences emitted at most per tick after a clock jump

# bytes that can never start an NMEA sentence
_GARBAGE: Final = bytes(b for b in range(256) if b not in (0x24, 0x21))


@dataclasses.dataclass(frozen=True, slots=True)
class TruthFix:
    """What the receiver reported for one second. ``lat``/``lon`` are the encoded values
    (true position plus jitter) or None without a fix."""

    t: float
    lat: float | None
    lon: float | None
    fix: bool
    speed_knots: float
    course_deg: float
    true_lat: float
    true_lon: float


def demo_track() -> list[tuple[float, float]]:
    """A loop around a feedlot near Amarillo, Texas (about 1.6 km)."""
    return [(35.1900, -101.8500), (35.1900, -101.8450), (35.1945, -101.8450),
            (35.1945, -101.8500)]


def _move(lat: float, lon: float, course_deg: float, metres: float) -> tuple[float, float]:
    """Flat-Earth step; fine for the few metres a receiver moves in a second."""
    rad = math.radians(course_deg)
    lat2 = lat + metres * math.cos(rad) / M_PER_DEG
    lon2 = lon + metres * math.sin(rad) / (M_PER_DEG * max(math.cos(math.radians(lat)), 1e-6))
    lat2 = max(-89.9, min(89.9, lat2))
    lon2 = (lon2 + 180.0) % 360.0 - 180.0
    return lat2, lon2


def _distance_course(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """(metres, course in degrees true) from a to b on a local flat projection."""
    dy = (b[0] - a[0]) * M_PER_DEG
    dx = (b[1] - a[1]) * M_PER_DEG * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(dx, dy), math.degrees(math.atan2(dx, dy)) % 360.0


class GpsReceiver(SimDevice):
    """Simulated receiver.

    ``track``: waypoints (lat, lon) driven in order at ``speed_knots`` and looped; without a
    track, a random walk from ``start`` whose heading drifts by ``turn_sd_deg`` per second.
    ``jitter_m``: standard deviation of the reported position around the true one.
    ``vtg_every``: seconds between VTG sentences (0 = never). ``talker``: "GP", "GN", ...
    """

    KIND: ClassVar[str] = "gps"
    GARBAGE_ALPHABET: ClassVar[bytes | None] = _GARBAGE

    def __init__(self, *, track: Sequence[tuple[float, float]] | None = None,
                 start: tuple[float, float] = (35.19, -101.85), speed_knots: float = 2.0,
                 turn_sd_deg: float = 20.0, jitter_m: float = 0.0, vtg_every: int = 5,
                 fix: bool = True, outages: Sequence[tuple[float, float]] = (),
                 talker: str = "GP", altitude_m: float = 1100.0, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        if track is not None and len(track) < 2:
            raise ValueError("a track needs at least two waypoints")
        if speed_knots < 0 or jitter_m < 0 or vtg_every < 0:
            raise ValueError("speed_knots, jitter_m and vtg_every must be >= 0")
        for lat, lon in (track or [start]):
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"waypoint ({lat}, {lon}) is not a position")
        self.track = tuple(track) if track is not None else None
        self.speed_knots = speed_knots
        self.turn_sd_deg = turn_sd_deg
        self.jitter_m = jitter_m
        self.vtg_every = vtg_every
        self.fix = fix
        self.outages = tuple(outages)
        self.talker = talker
        self.altitude_m = altitude_m
        self.decoder = nmea.Decoder("device")
        self.commands: list[nmea.OtherSentence] = []
        self.fixes: list[TruthFix] = []
        self._lat, self._lon = self.track[0] if self.track else start
        self._course = 0.0 if self.track is None else _distance_course(*self.track[:2])[1]
        self._leg = 0  # index of the waypoint we are leaving
        self._t0: float | None = None
        self._k = 0  # seconds emitted so far; sentence k is due at t0 + k

    @classmethod
    def demo(cls, *, seed: int = 0, faults: Faults | None = None,
             clock: Clock | None = None) -> GpsReceiver:
        """A feed truck circling the demo feedlot at 10 knots, 2 m jitter, VTG every 5 s."""
        return cls(track=demo_track(), speed_knots=10.0, jitter_m=2.0, seed=seed,
                   faults=faults, clock=clock)

    # -- motion -----------------------------------------------------------------------------
    def position(self) -> tuple[float, float]:
        """The true position now (after the last emitted second)."""
        return self._lat, self._lon

    def _step(self) -> None:
        """Move one second along the track or the walk."""
        metres = self.speed_knots * KNOT_M_S
        if self.track is None:
            self._course = (self._course + self.rng.gauss(0.0, self.turn_sd_deg)) % 360.0
            self._lat, self._lon = _move(self._lat, self._lon, self._course, metres)
            return
        pos = (self._lat, self._lon)
        n = len(self.track)
        for _ in range(4 * n):  # bounded: at most a few legs per second
            target = self.track[(self._leg + 1) % n]
            dist, course = _distance_course(pos, target)
            if metres < dist:
                self._course = course
                pos = _move(pos[0], pos[1], course, metres)
                break
            metres -= dist
            pos = target
            self._leg = (self._leg + 1) % n
            if metres <= 0:
                break
        self._lat, self._lon = pos

    def _has_fix(self, t: float) -> bool:
        if not self.fix:
            return False
        assert self._t0 is not None
        rel = t - self._t0
        return not any(a <= rel < b for a, b in self.outages)

    # -- output -----------------------------------------------------------------------------
    def _sentences(self, t: float) -> list[bytes]:
        has_fix = self._has_fix(t)
        lat, lon = self._lat, self._lon
        if self.jitter_m:
            lat, lon = _move(lat, lon, self.rng.uniform(0, 360),
                             abs(self.rng.gauss(0.0, self.jitter_m)))
        speed = self.speed_knots
        course = round(self._course, 1) % 360.0
        when = dt.datetime.fromtimestamp(t, tz=dt.UTC)
        self.fixes.append(TruthFix(t, lat if has_fix else None, lon if has_fix else None,
                                   has_fix, speed, course, self._lat, self._lon))
        sats = self.rng.randint(7, 12) if has_fix else self.rng.randint(0, 3)
        talker = self.talker
        out = [
            nmea.encode_gga(time_utc=when.time(), lat=lat if has_fix else None,
                            lon=lon if has_fix else None, quality=1 if has_fix else 0,
                            satellites=sats,
                            hdop=round(self.rng.uniform(0.7, 1.6), 1) if has_fix else None,
                            altitude_m=self.altitude_m if has_fix else None,
                            geoid_sep_m=-26.0, talker=talker, minute_decimals=5),
            nmea.encode_rmc(time_utc=when.time(), date=when.date(),
                            lat=lat if has_fix else None, lon=lon if has_fix else None,
                            valid=has_fix, speed_knots=speed if has_fix else None,
                            course_deg=course if has_fix else None, talker=talker,
                            minute_decimals=5),
        ]
        if self.vtg_every and self._k % self.vtg_every == 0:
            out.append(nmea.encode_vtg(course_true_deg=course if has_fix else None,
                                       speed_knots=speed if has_fix else None,
                                       mode="A" if has_fix else "N", talker=talker))
        return out

    def tick(self, now: float) -> list[bytes]:
        if self._t0 is None:
            self._t0 = float(math.ceil(now))  # receivers report on whole UTC seconds
        out: list[bytes] = []
        emitted = 0
        while (t := self._t0 + self._k) <= now:
            if self._k:
                self._step()
            if emitted < MAX_CATCH_UP:
                out += self._sentences(t)
                emitted += 1
            self._k += 1
        return out

    def handle(self, data: bytes) -> list[bytes]:
        for item in self.decoder.feed(data):
            if isinstance(item, nmea.OtherSentence):
                self.commands.append(item)
        return []
