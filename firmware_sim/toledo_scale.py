"""A simulated Mettler Toledo terminal (livestock or platform scale) in one of the two port
modes such terminals offer:

* ``mode="continuous"``: Toledo continuous output, 18-byte (or 17-byte without checksum)
  frames at ``rate_hz`` with the motion bit set while the load settles
  (:mod:`protocols.toledo`, device role). Host bytes are ignored.
* ``mode="sics"``: silent until asked; answers MT-SICS commands (:mod:`protocols.mtsics`
  device-role decoder, device-role encoders): S, SI, SIR, Z, ZI, T, TI, TA, TAC, I0-I4, @;
  anything else is ``ES``.

One class with a mode flag rather than two simulators: a real terminal is one weighing
engine (load, zero, tare, capacity) whose serial port is configured for one protocol or the
other, and both modes must agree on what the scale shows.

The load on the platform follows a list of :class:`Placement` (an animal steps on, the next
steps off...). After each change the reading is in motion for ``settle_s`` and then steady:
that is the ground truth tests compare with (:meth:`ToledoScale.true_load`).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import ClassVar, Final, Literal

from firmware_sim._device import Clock, FaultInjector, Faults, SimDevice
from protocols import mtsics, toledo
from protocols._base import FrameError

__all__ = ["Placement", "ToledoScale", "animal_placements"]

MAX_BACKLOG_S: Final = 5.0
_NO_STX: Final = bytes(b for b in range(256) if b & 0x7F != toledo.STX)
_SICS_LEVELS: Final = {"@": "0", "I0": "0", "I1": "0", "I2": "0", "I3": "0", "I4": "0",
                       "S": "0", "SI": "0", "SIR": "0", "Z": "0", "T": "1", "TA": "1",
                       "TAC": "1", "TI": "1", "ZI": "1"}


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    """From ``at_s`` seconds after the start the platform carries ``weight_kg`` (gross, before
    zeroing); the reading moves towards it for ``settle_s`` seconds."""

    at_s: float
    weight_kg: float
    settle_s: float = 3.0


def animal_placements(n: int, *, seed: int = 0, first_s: float = 3.0,
                      on_s: tuple[float, float] = (8.0, 20.0),
                      off_s: tuple[float, float] = (4.0, 12.0)) -> list[Placement]:
    """``n`` cattle crossing a livestock scale one by one: 300-650 kg each, on then off."""
    rng = random.Random(seed)
    out = []
    t = first_s
    for _ in range(n):
        out.append(Placement(t, round(rng.uniform(300.0, 650.0), 1), rng.uniform(2.0, 4.0)))
        t += rng.uniform(*on_s)
        out.append(Placement(t, 0.0, 1.5))
        t += rng.uniform(*off_s)
    return out


class _JunkLineInjector(FaultInjector):
    """Garbage for a line protocol: a junk line (non-ASCII bytes, CR LF) between replies,
    rather than bytes glued to the front of the next reply."""

    def _garbage(self) -> bytes:
        n = self.rng.randint(1, self.faults.garbage_max)
        return bytes(self.rng.randint(0x80, 0xFF) for _ in range(n)) + b"\r\n"


class ToledoScale(SimDevice):
    """Simulated terminal. ``code`` is the Toledo decimal code (2 = whole units, 3 = one
    decimal, ...), ``increment`` the display step in those units (1, 2 or 5)."""

    KIND: ClassVar[str] = "toledo"
    GARBAGE_ALPHABET: ClassVar[bytes | None] = _NO_STX

    def __init__(self, *, mode: Literal["continuous", "sics"] = "continuous",
                 placements: Sequence[Placement] = (), rate_hz: float = 10.0, code: int = 3,
                 increment: int = 1, unit: Literal["kg", "lb"] = "kg",
                 capacity: float = 3000.0, checksum: bool = True, parity: bool = False,
                 motion_noise: float = 3.0, loop: bool = False,
                 serial_number: str = "0123456789", model: str = "IND-SIM",
                 firmware: str = "1.00.0000", **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        if mode not in ("continuous", "sics"):
            raise ValueError(f"mode must be 'continuous' or 'sics', got {mode!r}")
        if not 2 <= code <= 7 or increment not in (1, 2, 5) or rate_hz <= 0:
            raise ValueError("code must be 2..7, increment 1, 2 or 5, rate_hz positive")
        self.mode = mode
        self.placements = sorted(placements, key=lambda p: p.at_s)
        self.period_s = 1.0 / rate_hz
        self.code = code
        self.increment = increment
        self.decimals = code - 2
        self.step = increment / 10 ** self.decimals
        self.unit = unit
        self.capacity = capacity
        self.zero_range = 0.02 * capacity  # +-2 % of capacity may be zeroed
        self.checksum = checksum
        self.parity = parity
        self.motion_noise = motion_noise
        self.loop = loop
        self.cycle_s = (self.placements[-1].at_s + self.placements[-1].settle_s + 5.0
                        if self.placements else 0.0)
        self.serial_number = serial_number
        self.model = model
        self.firmware = firmware
        self.zero_offset = 0.0
        self.tare = 0.0
        self.repeat = False  # SIR active
        self.start: float | None = None  # clock time of the first tick or command
        self._n = 0  # index of the next continuous frame / SIR reply
        self.decoder = mtsics.Decoder("device")
        self.commands: list[mtsics.Command] = []
        if mode == "sics":
            self.injector = _JunkLineInjector(self.faults, self.injector.rng, self.corrupt)

    @classmethod
    def demo(cls, *, seed: int = 0, faults: Faults | None = None,
             clock: Clock | None = None) -> ToledoScale:
        """A livestock scale streaming Toledo frames while 30 animals cross it, forever."""
        return cls(placements=animal_placements(30, seed=seed), loop=True, seed=seed,
                   faults=faults, clock=clock)

    # -- the weighing engine ----------------------------------------------------------------
    def true_load(self, t: float) -> tuple[float, bool]:
        """(gross load before noise, zeroing and rounding, still settling?) at ``t`` seconds
        after the start."""
        if self.loop and self.cycle_s:
            t %= self.cycle_s
        prev, cur = 0.0, None
        for p in self.placements:
            if p.at_s > t:
                break
            if cur is not None:
                prev = cur.weight_kg
            cur = p
        if cur is None:
            return 0.0, False
        s = (t - cur.at_s) / cur.settle_s
        if s >= 1.0:
            return cur.weight_kg, False
        approach = 1.0 - math.exp(-5.0 * s)
        wobble = 0.03 * abs(cur.weight_kg - prev) * (1.0 - s) * math.sin(2 * math.pi * 2 * s)
        return prev + (cur.weight_kg - prev) * approach + wobble, True

    def _reading(self, t: float) -> tuple[float, bool]:
        """(gross as displayed, in motion?); draws motion noise from the device RNG."""
        kg, moving = self.true_load(t)
        if moving:
            kg += self.rng.gauss(0.0, self.motion_noise)
        return self._round(kg - self.zero_offset), moving

    def _round(self, value: float) -> float:
        return float(round(round(value / self.step) * self.step, self.decimals))

    def _state(self, t: float) -> tuple[float, float, bool, int]:
        """(shown weight: net when tared, gross, moving, range: +1 over / -1 under / 0)."""
        gross, moving = self._reading(t)
        shown = self._round(gross - self.tare) if self.tare else gross
        rng = 1 if gross > self.capacity else -1 if gross < -self.zero_range else 0
        return shown, gross, moving, rng

    # -- continuous output -------------------------------------------------------------------
    def continuous_frame(self, t: float) -> bytes:
        shown, _, moving, out_of_range = self._state(t)
        limit = 999_999 / 10 ** self.decimals
        shown = max(-limit, min(limit, shown))
        return toledo.encode_frame(abs(shown), self.tare, code=self.code,
                                   increment=self.increment, net=bool(self.tare),
                                   motion=moving, unit=self.unit, overload=bool(out_of_range),
                                   negative=shown < 0, checksum=self.checksum,
                                   parity=self.parity)

    @property
    def next_frame_at(self) -> float | None:
        """Clock time the next frame is due (``None`` before the first tick)."""
        return None if self.start is None else self.start + self._n * self.period_s

    def tick(self, now: float) -> list[bytes]:
        # frame n is due at start + n * period and shows the load at n * period: the stream
        # depends on the seed and the clock only, never on when the link polls
        if self.start is None:
            self.start = now
        if self.mode == "sics" and not self.repeat:
            self._skip_to(now)
            return []
        behind = now - self.start - self._n * self.period_s
        if behind > MAX_BACKLOG_S:
            self._n += int((behind - MAX_BACKLOG_S) / self.period_s)
        frames = []
        while self.start + self._n * self.period_s <= now:
            t = self._n * self.period_s
            frames.append(self.continuous_frame(t) if self.mode == "continuous"
                          else self._weigh("SI", t))
            self._n += 1
        return frames

    def _skip_to(self, now: float) -> None:
        """Make the next frame due one period after ``now``."""
        assert self.start is not None
        self._n = max(self._n, math.floor((now - self.start) / self.period_s) + 1)
        while self.start + self._n * self.period_s <= now:
            self._n += 1

    # -- MT-SICS -----------------------------------------------------------------------------
    def handle(self, data: bytes) -> list[bytes]:
        if self.mode != "sics":
            return []
        out: list[bytes] = []
        now = self.clock.now()
        if self.start is None:
            self.start = now
        for item in self.decoder.feed(data):
            if isinstance(item, mtsics.Command):
                self.commands.append(item)
                out += self.command(item, now - self.start)
            elif isinstance(item, FrameError) and item.kind == "bad_text":
                out.append(mtsics.encode_error("ET"))  # garbled line: transmission error
        return out

    def command(self, c: mtsics.Command, t: float) -> list[bytes]:
        """Replies to one command at ``t`` seconds after the start."""
        name = c.name
        if name != "SIR":
            self.repeat = False
        if name not in _SICS_LEVELS:
            return [mtsics.encode_error("ES")]
        if c.args and name not in ("TA",):
            return [mtsics.encode_error("ES")]
        if name in ("S", "SI"):
            return [self._weigh(name, t)]
        if name == "SIR":
            self.repeat = True
            self._skip_to((self.start or 0.0) + t)
            return [self._weigh("SI", t)]
        if name in ("Z", "ZI"):
            return [self._zero(name, t)]
        if name in ("T", "TI"):
            return [self._tare(name, t)]
        if name == "TA":
            return [self._tare_memory(c.args)]
        if name == "TAC":
            self.tare = 0.0
            return [mtsics.encode_status("TAC", "A")]
        if name == "@":
            self.tare = 0.0
            return [mtsics.encode_info_reply("I4", self.serial_number)]
        return self._info(name)

    def _weigh(self, name: str, t: float) -> bytes:
        shown, _, moving, out_of_range = self._state(t)
        if out_of_range:
            return mtsics.encode_status("S", "+" if out_of_range > 0 else "-")
        if name == "S" and moving:
            return mtsics.encode_status("S", "I")  # no stable weight within the time-out
        return mtsics.encode_weight(shown, self.unit, stable=not moving,
                                    decimals=self.decimals)

    def _zero(self, name: str, t: float) -> bytes:
        _, gross, moving, _ = self._state(t)
        if name == "Z" and moving:
            return mtsics.encode_status(name, "I")
        if gross > self.zero_range:
            return mtsics.encode_status(name, "+")
        if gross < -self.zero_range:
            return mtsics.encode_status(name, "-")
        self.zero_offset += gross
        self.tare = 0.0
        if name == "Z":
            return mtsics.encode_status(name, "A")
        return mtsics.encode_status(name, "D" if moving else "S")

    def _tare(self, name: str, t: float) -> bytes:
        _, gross, moving, out_of_range = self._state(t)
        if name == "T" and moving:
            return mtsics.encode_status(name, "I")
        if out_of_range > 0:
            return mtsics.encode_status(name, "+")
        if gross <= 0:
            return mtsics.encode_status(name, "-")
        self.tare = gross
        return mtsics.encode_tare_reply(gross, self.unit, decimals=self.decimals, command=name,
                                        status="D" if moving else "S")

    def _tare_memory(self, args: tuple[str, ...]) -> bytes:
        if args:
            try:
                value = float(args[0])
            except ValueError:
                return mtsics.encode_status("TA", "L")
            if len(args) != 2 or args[1] != self.unit or not 0 <= value <= self.capacity:
                return mtsics.encode_status("TA", "L")
            self.tare = self._round(value)
        return mtsics.encode_tare_reply(self.tare, self.unit, decimals=self.decimals,
                                        command="TA", status="A")

    def _info(self, name: str) -> list[bytes]:
        if name == "I0":
            names = sorted(_SICS_LEVELS)
            return [mtsics.encode_info_reply("I0", _SICS_LEVELS[n], n,
                                             status="A" if i == len(names) - 1 else "B")
                    for i, n in enumerate(names)]
        if name == "I1":
            return [mtsics.encode_info_reply("I1", "01", "2.20", "2.20", "1.00", "1.50")]
        if name == "I2":
            cap = f"{self.capacity:.{self.decimals}f}"
            return [mtsics.encode_info_reply("I2", f"{self.model} {cap} {self.unit}")]
        if name == "I3":
            return [mtsics.encode_info_reply("I3", self.firmware)]
        return [mtsics.encode_info_reply("I4", self.serial_number)]

    def corrupt(self, frame: bytes) -> bytes:
        """Continuous with checksum: flip a bit (the checksum fails). Without checksum: lose
        the CR (the frame length is wrong). MT-SICS: a non-ASCII byte in the line."""
        if self.mode == "sics":
            return frame[:1] + b"\xff" + frame[1:]
        if self.checksum:
            return SimDevice.corrupt(self, frame)
        return frame[:16] + b"\n" + frame[17:]
