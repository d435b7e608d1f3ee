"""A simulated Digi-Star EZ indicator on a TMR feed-mixer wagon.

The wagon follows a script: ingredients are loaded one after another (the weight rises while the
loader tips, with motion), the ration is mixed, then it is unloaded pen by pen (the weight
falls one pen at a time, settling between pens). The indicator streams the weight in one SCOREM
output mode of :mod:`protocols.digistar` at the manual's rate and answers escape commands with
``<ACK>``/``<NAK>``.

The script is the ground truth: every step that finishes is appended to
:attr:`DigiStarIndicator.events` as a :class:`FeedEvent` (what was loaded or delivered, when,
and the settled weights before and after), so tests can compare feed events derived from the
wire with what really happened.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import ClassVar, Final, Literal

from firmware_sim._device import Clock, Faults, SimDevice
from protocols import digistar
from protocols._base import FrameError
from protocols.messages import weight_to_kg

__all__ = [
    "CONTROL_MODE_TIMEOUT_S",
    "MESSAGE_DISPLAY_S",
    "OUTPUT_INTERVAL_S",
    "DigiStarIndicator",
    "FeedEvent",
    "FeedStep",
    "demo_ration",
]

# seconds between frames per SCOREM setting (manual D3648 pp. 29-32)
OUTPUT_INTERVAL_S: Final = {
    1: 1.0, 21: 1.0, 31: 1.0,
    7: 1.0, 8: 5.0,
    11: 0.5, 12: 0.1,
    37: 5.0, 38: 1.0, 39: 0.1,
}
CONTROL_MODE_TIMEOUT_S: Final = 15.0  # the indicator leaves control mode after 15 s idle
MESSAGE_DISPLAY_S: Final = 3.0  # Cm: second ACK once the message has been shown
MAX_CATCH_UP: Final = 600  # frames emitted at most per tick after a clock jump
EID_FIELDS: Final = 20
MIXER_RPM: Final = 30.0  # auger turns per minute while the mixer runs

# The manual shows one date, "03JL03" (JL = July). The other month codes are a plausible
# guess used only by the simulator; the codec keeps the date as text.
_MONTHS: Final = ("JA", "FE", "MR", "AP", "MY", "JN", "JL", "AU", "SE", "OC", "NO", "DE")

# bytes that can never start a host-role Digi-Star frame
_GARBAGE: Final = bytes(b for b in range(256) if b not in (
    digistar.STX, digistar.ACK, digistar.NAK, 0x0A, 0x0D) and not 0x20 <= b <= 0x7E)


@dataclasses.dataclass(frozen=True, slots=True)
class FeedStep:
    """One step of the script. ``kind`` is ``load`` (an ingredient goes in), ``unload`` (a pen
    is fed), ``mix`` (the wagon runs without a weight change, the scale vibrates) or ``idle``
    (parked: stable, nothing changes). ``amount`` is in the
    indicator's unit and always positive; ``duration_s`` is the time the weight moves,
    ``settle_s`` the stable time after it."""

    kind: Literal["load", "unload", "mix", "idle"]
    label: str
    amount: float = 0.0
    duration_s: float = 20.0
    settle_s: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in ("load", "unload", "mix", "idle"):
            raise ValueError(f"unknown step kind {self.kind!r}")
        if self.amount < 0 or self.duration_s <= 0 or self.settle_s < 0:
            raise ValueError("amount must be >= 0, duration_s > 0 and settle_s >= 0")


@dataclasses.dataclass(frozen=True, slots=True)
class FeedEvent:
    """Ground truth: a finished step. Weights are the settled (true, unrounded) wagon
    weights in ``unit``; ``start``/``settled`` are clock times (s)."""

    kind: str
    label: str
    amount: float
    unit: str
    amount_kg: float | None
    start: float
    settled: float
    weight_before: float
    weight_after: float


def demo_ration() -> list[FeedStep]:
    """A dairy TMR batch in lb: parked, four ingredients, a mix, three pens."""
    return [
        FeedStep("idle", "PARKED", 0, 10, 0),
        FeedStep("load", "HAY", 1200, 25, 10),
        FeedStep("load", "SILAGE", 6000, 40, 10),
        FeedStep("load", "CORN", 1500, 20, 10),
        FeedStep("load", "PROTEIN", 400, 10, 10),
        FeedStep("mix", "MIX", 0, 60, 5),
        FeedStep("unload", "PEN1", 3000, 45, 15),
        FeedStep("unload", "PEN2", 3100, 45, 15),
        FeedStep("unload", "PEN3", 2900, 45, 30),
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class _Span:
    step: FeedStep
    start: float  # relative to the script start
    moved: float
    end: float
    before: float
    after: float


class DigiStarIndicator(SimDevice):
    """Simulated indicator. ``output_mode`` is the SCOREM setting (1/21/31, 7/8, 11/12,
    37-39); ``unit`` ``"lb"`` or ``"kg"``; ``resolution`` the display increment (a mixer
    usually counts in 10 lb, so a motion ``-`` hides only a ``0``); ``noise`` the peak
    vibration (in ``unit``) while the weight moves; ``other_scales`` fixed weights of scales
    B, C shown by the multi-scale modes; ``repeat`` starts the script again when it ends.
    """

    KIND: ClassVar[str] = "digistar"
    GARBAGE_ALPHABET: ClassVar[bytes | None] = _GARBAGE

    def __init__(self, *, script: Sequence[FeedStep] | None = None, output_mode: int = 1,
                 unit: Literal["lb", "kg"] = "lb", resolution: int = 10,
                 start_weight: float = 0.0, noise: float = 40.0,
                 other_scales: Sequence[float] = (), repeat: bool = False,
                 **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        if output_mode not in OUTPUT_INTERVAL_S:
            raise ValueError(f"unsupported SCOREM {output_mode}; choose one of "
                             f"{sorted(OUTPUT_INTERVAL_S)}")
        if unit not in ("lb", "kg") or resolution < 1 or len(other_scales) > 2:
            raise ValueError("unit is lb or kg, resolution >= 1, at most two other scales")
        self.script: tuple[FeedStep, ...] = tuple(script if script is not None else
                                                  demo_ration())
        self.output_mode = output_mode
        self.family = digistar.family_of(output_mode)
        self.interval_s = OUTPUT_INTERVAL_S[output_mode]
        self.unit = unit
        self.resolution = resolution
        self.start_weight = start_weight
        self.noise = noise
        self.other_scales = tuple(other_scales)
        self.repeat = repeat
        self.decoder = digistar.Decoder("device")
        # ground truth and state
        self.events: list[FeedEvent] = []
        self.commands: list[digistar.EscapeCommand] = []
        self.control_mode = False
        self.message: str | None = None
        self.feedlines: list[str] = []
        self.eid_fields: list[str] = [""] * EID_FIELDS
        self.rotations = 0.0
        self._spans, self._cycle_s = self._plan(self.script, start_weight)
        self._t0: float | None = None
        self._emit_k = 0  # frames are due at t0 + k * interval (no float drift)
        self._last_emit: float | None = None
        self._next_event = 0  # index of the next span to record, over all cycles
        self._last_command = 0.0
        self._pending: list[tuple[float, bytes]] = []  # (due time, frame)

    @classmethod
    def demo(cls, *, seed: int = 0, faults: Faults | None = None,
             clock: Clock | None = None) -> DigiStarIndicator:
        """The demo ration, repeated, streamed in SCOREM 1 (display, motion flag) in lb."""
        return cls(script=demo_ration(), repeat=True, seed=seed, faults=faults, clock=clock)

    # -- the script -------------------------------------------------------------------------
    @staticmethod
    def _plan(script: Sequence[FeedStep], start_weight: float) -> tuple[list[_Span], float]:
        spans = []
        t = 0.0
        w = start_weight
        for step in script:
            delta = {"load": step.amount, "unload": -step.amount}.get(step.kind, 0.0)
            moved = t + step.duration_s
            spans.append(_Span(step, t, moved, moved + step.settle_s, w, w + delta))
            t = moved + step.settle_s
            w += delta
        return spans, t

    @property
    def started_at(self) -> float | None:
        """Clock time of the script start (the first tick), ``None`` before it."""
        return self._t0

    def _locate(self, t: float) -> tuple[int, _Span | None, float]:
        """(cycle, span or None when the script is over, seconds into the span)."""
        assert self._t0 is not None
        rel = t - self._t0
        cycle = 0
        if self.repeat and self._cycle_s > 0:
            cycle = int(rel // self._cycle_s)
            rel -= cycle * self._cycle_s
        for span in self._spans:
            if span.start <= rel < span.end:
                return cycle, span, rel - span.start
        return cycle, None, 0.0

    def true_weight(self, t: float) -> tuple[float, bool]:
        """(weight in ``unit`` without vibration, moving?) at clock time ``t``. The weight
        moves linearly while a load or unload step runs; mixing vibrates without a change."""
        if self._t0 is None:
            return self.start_weight, False
        _, span, into = self._locate(t)
        if span is None:
            return (self._spans[-1].after if self._spans else self.start_weight), False
        if into < span.step.duration_s and span.step.kind != "idle":  # the scale vibrates
            frac = into / span.step.duration_s
            return span.before + (span.after - span.before) * frac, True
        return span.after, False

    def _mixer_running(self, t: float) -> bool:
        if self._t0 is None:
            return False
        _, span, into = self._locate(t)
        return span is not None and into < span.step.duration_s and span.step.kind != "idle"

    def _record_events(self, t: float) -> None:
        assert self._t0 is not None
        n = len(self._spans)
        if not n:
            return
        while True:
            cycle, i = divmod(self._next_event, n)
            if cycle and not self.repeat:
                return
            span = self._spans[i]
            base = self._t0 + cycle * self._cycle_s
            if base + span.moved > t:
                return
            step = span.step
            self.events.append(FeedEvent(
                kind=step.kind, label=step.label, amount=step.amount, unit=self.unit,
                amount_kg=weight_to_kg(step.amount, self.unit), start=base + span.start,
                settled=base + span.moved, weight_before=span.before, weight_after=span.after))
            self._next_event += 1

    # -- output -----------------------------------------------------------------------------
    def displayed(self, weight: float) -> int:
        """``weight`` rounded to the display resolution."""
        r = self.resolution
        return int(round(weight / r) * r)

    def _frame(self, t: float) -> bytes:
        weight, moving = self.true_weight(t)
        if moving and self.noise:
            weight += self.rng.uniform(-self.noise, self.noise)
        shown = self.displayed(weight)
        fam = self.family
        if fam == "display":
            shown = max(-99999, min(999999, shown))
            return digistar.encode_display(shown, motion=moving)
        if fam == "csv":
            tm = time.gmtime(t)
            date = f"{tm.tm_mday:02d}{_MONTHS[tm.tm_mon - 1]}{tm.tm_year % 100:02d}"
            clock = f"{tm.tm_hour}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
            return digistar.encode_csv(shown, unit=self.unit, tag="GR",
                                       rotations=int(self.rotations), date=date, time=clock)
        if fam == "serial_gross":
            return digistar.encode_serial_gross(max(-99999, min(999999, shown)), unit=self.unit)
        entries = [(float(shown), self.unit, "GR")] + [
            (float(self.displayed(w)), self.unit, "GR") for w in self.other_scales]
        return digistar.encode_multi_scale(entries, selected=0)

    def tick(self, now: float) -> list[bytes]:
        if self._t0 is None:
            self._t0 = self._last_command = now
        out: list[bytes] = []
        due = [f for f in self._pending if f[0] <= now]
        if due:
            self._pending = [f for f in self._pending if f[0] > now]
            out += [f for _, f in due]
        if self.control_mode and now - self._last_command > CONTROL_MODE_TIMEOUT_S:
            self.control_mode = False
            self.message = None
        emitted = 0
        while (t := self._t0 + self._emit_k * self.interval_s) <= now:
            if self._last_emit is not None and self._mixer_running(t):
                self.rotations += (t - self._last_emit) * MIXER_RPM / 60.0
            self._last_emit = t
            self._record_events(t)
            if emitted < MAX_CATCH_UP:
                out.append(self._frame(t))
                emitted += 1
            self._emit_k += 1
        self._record_events(now)
        return out

    def corrupt(self, frame: bytes) -> bytes:
        """Frames with a check character get a flipped payload bit (the check fails). The
        display and CSV frames have no check, so a flipped bit would pass as a wrong weight;
        here they are damaged so the decoder must reject them (a digit becomes ``x``, a CSV
        comma a ``;``)."""
        if frame[:1] == b"\x02" and b"\x03" not in frame:
            i = len(frame) - 3
            return frame[:i] + b"x" + frame[i + 1:]
        if frame.endswith(b"\r\n") and b"," in frame and frame.count(b",") > 1:
            return frame.replace(b",", b";", 1)
        return super().corrupt(frame)

    # -- escape commands --------------------------------------------------------------------
    def handle(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in self.decoder.feed(data):
            if isinstance(item, digistar.EscapeCommand):
                self.commands.append(item)
                self._last_command = self.clock.now()
                out += self._command(item)
            elif isinstance(item, FrameError) and item.kind != "garbage":
                out.append(digistar.encode_nak())  # a damaged command is refused
        return out

    def _command(self, c: digistar.EscapeCommand) -> list[bytes]:
        ack, nak = [digistar.encode_ack()], [digistar.encode_nak()]
        if c.command == "Cc" and c.data in ("E", "D") and c.text is None:
            self.control_mode = c.data == "E"
            if not self.control_mode:
                self.message = None
            return ack
        if c.command == "Cm":
            if not self.control_mode or c.data or not c.text or len(c.text) > 60:
                return nak
            self.message = c.text
            self._pending.append((self._last_command + MESSAGE_DISPLAY_S,
                                  digistar.encode_ack()))
            return ack
        if c.command == "Rd" and not c.data and c.text:
            self.feedlines.append(c.text)
            return ack
        if c.command == "Ea" and c.data.isdigit() and 1 <= int(c.data) <= EID_FIELDS and (
                c.text is not None and len(c.text) == digistar.EID_FIELD_LEN):
            self.eid_fields[int(c.data) - 1] = c.text
            return ack
        if c.command == "Eb" and c.data == "-99999" and c.text is None:
            return [digistar.encode_eid_data_field(f) for f in self.eid_fields] + ack
        return nak
