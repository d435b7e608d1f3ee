"""A simulated XK3190-A9 truck weighbridge: continuous output with the device role of
:mod:`protocols.xk3190`, driven by a schedule of trucks that drive on, settle, wait and drive
off.

Every truck visit is weighed twice -- once on the way in, once on the way out -- so a gateway
can pair the two weighings of one truck into gross, tare and net (a delivery comes in loaded
and leaves empty; a pick-up the other way round). The indicator itself knows nothing about
trucks: like the real one it only streams what its display shows, with no stability flag, so
the gateway has to find the stable plateau itself. :attr:`Xk3190Weighbridge.weighings` is the
ground truth a test compares that with.

One weighing, relative to the moment the truck starts to drive on::

    0 .. drive_on_s        weight ramps up with motion noise (axles arriving)
    .. + settle_s          decaying oscillation around the final weight
    .. + dwell_s           steady at the truck's weight (the plateau to capture)
    .. + drive_off_s       ramps down with motion noise
    then                   empty platform (0) until the next weighing
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import ClassVar, Final, Literal

from firmware_sim._device import Clock, Faults, SimDevice
from protocols import xk3190

__all__ = ["TruckVisit", "Weighing", "Xk3190Weighbridge", "truck_schedule"]

QUEUE_GAP_S: Final = 5.0  # empty platform between two trucks
MAX_BACKLOG_S: Final = 5.0  # an indicator does not queue output: after a clock jump it skips
_NO_SYNC: Final = bytes(b for b in range(256) if b not in (xk3190.STX, xk3190.EQ))


@dataclasses.dataclass(frozen=True, slots=True)
class TruckVisit:
    """One truck coming to the site: weighed on arrival and again before it leaves."""

    truck: str
    arrive_s: float  # seconds after the simulation starts
    loaded_kg: float
    empty_kg: float
    delivering: bool = True  # True: in loaded, out empty; False: in empty, out loaded
    on_site_s: float = 600.0  # from the start of the first weighing to the second one


@dataclasses.dataclass(frozen=True, slots=True)
class Weighing:
    """Ground truth of one weighing: the displayed weight is ``weight_kg`` (rounded to the
    division) and motionless from ``stable_from_s`` to ``stable_until_s`` (seconds after the
    simulation starts)."""

    truck: str
    direction: Literal["in", "out"]
    weight_kg: float
    start_s: float
    stable_from_s: float
    stable_until_s: float
    end_s: float


def truck_schedule(n: int, *, seed: int = 0, first_s: float = 5.0,
                   gap_s: tuple[float, float] = (60.0, 240.0),
                   on_site_s: tuple[float, float] = (300.0, 900.0)) -> list[TruckVisit]:
    """``n`` plausible visits: 8-16 t empty trucks carrying 10-28 t, mostly deliveries."""
    rng = random.Random(seed)
    visits = []
    t = first_s
    for i in range(n):
        empty = rng.randrange(8000, 16000, 20)
        load = rng.randrange(10000, 28000, 20)
        visits.append(TruckVisit(truck=f"TRK-{seed % 1000:03d}-{i:03d}", arrive_s=t,
                                 loaded_kg=empty + load, empty_kg=empty,
                                 delivering=rng.random() < 0.7,
                                 on_site_s=rng.uniform(*on_site_s)))
        t += rng.uniform(*gap_s)
    return visits


class Xk3190Weighbridge(SimDevice):
    """Simulated weighbridge indicator streaming A9 frames (or ``=`` frames) at ``rate_hz``.

    ``division_kg`` is the display resolution; ``frame_format`` ``"a9"`` (12-byte frames with
    XOR, the default), ``"eq"`` (``=   1520C\\r`` style) or ``"eq_reversed"`` (the unconfirmed
    tF = 1 order). ``loop`` repeats the schedule forever (for the demo). Host bytes are
    ignored: the indicator has no command set in continuous mode.
    """

    KIND: ClassVar[str] = "xk3190"
    GARBAGE_ALPHABET: ClassVar[bytes | None] = _NO_SYNC

    def __init__(self, *, visits: Sequence[TruckVisit] = (), rate_hz: float = 10.0,
                 division_kg: float = 20.0, decimals: int = 0,
                 frame_format: Literal["a9", "eq", "eq_reversed"] = "a9",
                 drive_on_s: float = 8.0, settle_s: float = 4.0, dwell_s: float = 12.0,
                 drive_off_s: float = 6.0, motion_noise: float = 0.03, loop: bool = False,
                 **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        if rate_hz <= 0 or division_kg <= 0:
            raise ValueError("rate_hz and division_kg must be positive")
        if frame_format not in ("a9", "eq", "eq_reversed"):
            raise ValueError(f"unknown frame format {frame_format!r}")
        self.period_s = 1.0 / rate_hz
        self.division_kg = division_kg
        self.decimals = decimals
        self.frame_format = frame_format
        self.phases = (drive_on_s, settle_s, dwell_s, drive_off_s)
        self.motion_noise = motion_noise
        self.loop = loop
        self.visits = sorted(visits, key=lambda v: v.arrive_s)
        self.weighings = self._plan(self.visits)
        self.cycle_s = (self.weighings[-1].end_s + 30.0) if self.weighings else 0.0
        self.start: float | None = None  # clock time of the first tick
        self._n = 0  # index of the next frame

    @classmethod
    def demo(cls, *, seed: int = 0, faults: Faults | None = None,
             clock: Clock | None = None) -> Xk3190Weighbridge:
        """Twenty trucks, one every one to four minutes, repeated forever."""
        return cls(visits=truck_schedule(20, seed=seed), loop=True, seed=seed, faults=faults,
                   clock=clock)

    # -- schedule ---------------------------------------------------------------------------
    def _plan(self, visits: Sequence[TruckVisit]) -> list[Weighing]:
        """Lay the weighings on the time line. One truck at a time fits on the platform: a
        truck that arrives while another is being weighed queues behind it."""
        on, settle, dwell, off = self.phases
        requests: list[tuple[float, str, Literal["in", "out"], float]] = []
        for v in visits:
            first, second = ((v.loaded_kg, v.empty_kg) if v.delivering
                             else (v.empty_kg, v.loaded_kg))
            requests.append((v.arrive_s, v.truck, "in", first))
            requests.append((v.arrive_s + v.on_site_s, v.truck, "out", second))
        requests.sort(key=lambda r: r[0])
        weighings: list[Weighing] = []
        free_at = -math.inf
        for wanted, truck, direction, kg in requests:
            start = max(wanted, free_at + QUEUE_GAP_S)
            weighings.append(Weighing(truck, direction, self._display(kg), start,
                                      start + on + settle, start + on + settle + dwell,
                                      start + on + settle + dwell + off))
            free_at = weighings[-1].end_s
        return weighings

    def _display(self, kg: float) -> float:
        d = self.division_kg
        return round(round(kg / d) * d, self.decimals)

    def weighing_at(self, t: float) -> Weighing | None:
        """The weighing in progress ``t`` seconds after the start (``None``: empty)."""
        if self.loop and self.cycle_s:
            t %= self.cycle_s
        for w in self.weighings:
            if w.start_s <= t < w.end_s:
                return w
            if w.start_s > t:
                break
        return None

    def true_weight(self, t: float) -> tuple[float, bool]:
        """(weight on the platform before noise and rounding, in motion?) at ``t``."""
        w = self.weighing_at(t)
        if w is None:
            return 0.0, False
        if self.loop and self.cycle_s:
            t %= self.cycle_s
        on, settle, dwell, _ = self.phases
        x = t - w.start_s
        kg = w.weight_kg
        if x < on:
            f = x / on
            return kg * f * f * (3 - 2 * f), True
        x -= on
        if x < settle:
            s = x / settle
            return kg + 0.02 * kg * (1 - s) ** 2 * math.sin(2 * math.pi * 1.5 * x), True
        x -= settle
        if x < dwell:
            return kg, False
        f = (x - dwell) / self.phases[3]
        return kg * (1 - f * f * (3 - 2 * f)), True

    # -- continuous output -------------------------------------------------------------------
    def displayed_weight(self, t: float) -> float:
        """What the display shows at ``t``: the true weight plus motion noise, rounded to the
        division. Draws from the device RNG while in motion."""
        kg, moving = self.true_weight(t)
        if moving:
            kg += self.rng.gauss(0.0, self.motion_noise * max(kg, 1000.0))
            kg = max(kg, -5 * self.division_kg)
        return self._display(kg)

    def frame_for(self, weight: float) -> bytes:
        if self.frame_format == "a9":
            return xk3190.encode_a9(weight, self.decimals)
        return xk3190.encode_eq(weight, self.decimals,
                                reversed_digits=self.frame_format == "eq_reversed")

    @property
    def next_frame_at(self) -> float | None:
        """Clock time the next frame is due (``None`` before the first tick)."""
        return None if self.start is None else self.start + self._n * self.period_s

    def tick(self, now: float) -> list[bytes]:
        # frame n is due at start + n * period and shows the platform at n * period: the
        # stream depends on the seed and the clock only, never on when the link polls
        if self.start is None:
            self.start = now
        behind = now - self.start - self._n * self.period_s
        if behind > MAX_BACKLOG_S:
            self._n += int((behind - MAX_BACKLOG_S) / self.period_s)
        frames = []
        while self.start + self._n * self.period_s <= now:
            frames.append(self.frame_for(self.displayed_weight(self._n * self.period_s)))
            self._n += 1
        return frames

    def corrupt(self, frame: bytes) -> bytes:
        """A9: flip a digit bit so the XOR fails. ``=`` frames carry no check, so a corrupted
        one gets a character that is not part of a number (what a decoder can notice)."""
        if self.frame_format == "a9":
            return SimDevice.corrupt(self, frame)
        return frame[:2] + b"#" + frame[3:]
