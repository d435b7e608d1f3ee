"""A simulated feeder controller with load cells, polled over Modbus RTU.

The feeder repeats a ration cycle: its hopper is filled (the weight rises, in motion), settles,
then delivers to each pen in turn (the weight falls, in motion) and settles between pens. It
answers requests with the server role of :mod:`protocols.modbus`; it never talks unasked.

Register map (all registers 16 bits; 32-bit values high word first; "RO" writes get
exception 02 illegal data address):

=====  ==========================================================================  =====
addr   holding register (FC 3 read; FC 6/16 write where RW/W)                       access
=====  ==========================================================================  =====
0-1    hopper weight, int32, 0.1 kg: gross, or net when a tare is active              RO
2      status bits: 0 stable, 1 net mode (tare active), 2 overload, 3 delivering      RO
3      tare, uint16, 0.1 kg                                                           RO
4      command, reads 0: write 1 = tare, 2 = clear tare, 3 = reset feed counters      W
5      number of pens                                                                 RO
6      pen being fed now, 1-based, 0 = none                                           RO
10..   feed delivered to pen 1, 2, ... since the last reset, uint16, whole kg          RW
30-31  feed delivered to all pens since the last reset, uint32, whole kg              RO
=====  ==========================================================================  =====

Input registers (FC 4) 0-6 mirror holding registers 0-6. Any other address in a request is
exception 02; a quantity outside 1..125 (read) or 1..123 (write), or an unknown command
value, is exception 03 illegal data value; function codes other than 3, 4, 6, 16 get
exception 01 illegal function. Requests to device id 0 (broadcast) are executed without a
reply; requests to other device ids and frames with a bad CRC are ignored, as on a real bus.

Ground truth: every finished fill or delivery is appended to :attr:`ModbusFeeder.events` as a
:class:`FeederEvent`; :meth:`ModbusFeeder.gross_kg` gives the true hopper weight at any time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar, Final

from firmware_sim._device import Clock, Faults, SimDevice
from protocols import modbus
from protocols._base import Message

__all__ = [
    "COMMAND_CLEAR_TARE",
    "COMMAND_RESET_COUNTERS",
    "COMMAND_TARE",
    "REG_COMMAND",
    "REG_PEN_COUNT",
    "REG_PEN_FEED",
    "REG_PEN_NOW",
    "REG_STATUS",
    "REG_TARE",
    "REG_TOTAL_FEED",
    "REG_WEIGHT",
    "STATUS_DELIVERING",
    "STATUS_NET",
    "STATUS_OVERLOAD",
    "STATUS_STABLE",
    "FeederEvent",
    "ModbusFeeder",
]

REG_WEIGHT: Final = 0
REG_STATUS: Final = 2
REG_TARE: Final = 3
REG_COMMAND: Final = 4
REG_PEN_COUNT: Final = 5
REG_PEN_NOW: Final = 6
REG_PEN_FEED: Final = 10
REG_TOTAL_FEED: Final = 30
MAX_PENS: Final = REG_TOTAL_FEED - REG_PEN_FEED

STATUS_STABLE: Final = 0
STATUS_NET: Final = 1
STATUS_OVERLOAD: Final = 2
STATUS_DELIVERING: Final = 3

COMMAND_TARE: Final = 1
COMMAND_CLEAR_TARE: Final = 2
COMMAND_RESET_COUNTERS: Final = 3

_INPUT_REGISTERS: Final = frozenset(range(0, 7))

# bytes that never make a client-role frame header (function code position)
_GARBAGE: Final = bytes(b for b in range(256) if b not in (3, 4, 6, 16) and b < 0x81)


@dataclasses.dataclass(frozen=True, slots=True)
class FeederEvent:
    """Ground truth: a finished step. ``kind`` is ``fill`` or ``deliver``; ``pen`` is 1-based
    (0 for a fill); times are clock seconds; ``amount_kg`` is always positive."""

    kind: str
    pen: int
    amount_kg: float
    start: float
    end: float


@dataclasses.dataclass(frozen=True, slots=True)
class _Span:
    kind: str
    pen: int  # 1-based, 0 for the fill
    start: float  # relative to the cycle start
    moved: float  # the weight stops moving here
    end: float  # settled until here
    before: float
    after: float


class ModbusFeeder(SimDevice):
    """Simulated feeder. ``pens_kg``: ration per pen and cycle; ``fill_rate_kg_s`` and
    ``deliver_rate_kg_s`` set how fast the weight moves; ``settle_s`` the stable time after
    each step; ``noise_kg`` the peak vibration while the weight moves; ``capacity_kg`` the
    load above which the overload bit is set; ``repeat`` starts the cycle again."""

    KIND: ClassVar[str] = "modbus"
    GARBAGE_ALPHABET: ClassVar[bytes | None] = _GARBAGE

    def __init__(self, *, device_id: int = 1, pens_kg: Sequence[float] = (1200, 900, 1500, 600),
                 fill_rate_kg_s: float = 50.0, deliver_rate_kg_s: float = 25.0,
                 settle_s: float = 10.0, noise_kg: float = 15.0, capacity_kg: float = 5000.0,
                 repeat: bool = True, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        if not 1 <= device_id <= 247:
            raise ValueError(f"device_id must be 1..247, got {device_id}")
        if not 1 <= len(pens_kg) <= MAX_PENS or any(a <= 0 for a in pens_kg):
            raise ValueError(f"1..{MAX_PENS} pens, each with a positive amount")
        if fill_rate_kg_s <= 0 or deliver_rate_kg_s <= 0 or settle_s < 0 or noise_kg < 0:
            raise ValueError("rates must be > 0, settle_s and noise_kg >= 0")
        self.device_id = device_id
        self.pens_kg = tuple(float(a) for a in pens_kg)
        self.noise_kg = noise_kg
        self.capacity_kg = capacity_kg
        self.repeat = repeat
        self.decoder = modbus.Decoder("server")
        self.requests: list[Message] = []
        self.events: list[FeederEvent] = []
        self.tare_kg: float | None = None
        self._spans = self._plan(self.pens_kg, fill_rate_kg_s, deliver_rate_kg_s, settle_s)
        self._cycle_s = self._spans[-1].end
        self._t0: float | None = None
        self._next_event = 0
        self._pen_offset = [0.0] * len(self.pens_kg)  # counter = delivered + offset

    @classmethod
    def demo(cls, *, seed: int = 0, faults: Faults | None = None,
             clock: Clock | None = None) -> ModbusFeeder:
        """Device id 1, four pens, the default ration, repeating."""
        return cls(seed=seed, faults=faults, clock=clock)

    # -- the ration cycle -------------------------------------------------------------------
    @staticmethod
    def _plan(pens: tuple[float, ...], fill_rate: float, deliver_rate: float,
              settle_s: float) -> list[_Span]:
        total = sum(pens)
        spans = [_Span("fill", 0, 0.0, total / fill_rate, total / fill_rate + settle_s, 0.0,
                       total)]
        t, w = spans[0].end, total
        for i, amount in enumerate(pens, start=1):
            moved = t + amount / deliver_rate
            spans.append(_Span("deliver", i, t, moved, moved + settle_s, w, w - amount))
            t, w = moved + settle_s, w - amount
        return spans

    @property
    def started_at(self) -> float | None:
        return self._t0

    def _locate(self, t: float) -> tuple[int, _Span | None, float]:
        """(cycle, span or None after a non-repeating cycle ended, seconds into the span)."""
        assert self._t0 is not None
        rel = max(0.0, t - self._t0)
        cycle = int(rel // self._cycle_s)
        if cycle and not self.repeat:
            return cycle, None, 0.0
        rel -= cycle * self._cycle_s
        for span in self._spans:
            if span.start <= rel < span.end:
                return cycle, span, rel - span.start
        return cycle, self._spans[-1], rel - self._spans[-1].start  # float edge

    def gross_kg(self, t: float) -> tuple[float, bool]:
        """(true hopper weight without vibration, moving?) at clock time ``t``."""
        if self._t0 is None:
            return 0.0, False
        _, span, into = self._locate(t)
        if span is None:
            return self._spans[-1].after, False
        length = span.moved - span.start
        if into < length:
            return span.before + (span.after - span.before) * into / length, True
        return span.after, False

    def delivered_kg(self, pen: int, t: float) -> float:
        """True feed delivered to ``pen`` (1-based) from the start up to ``t``."""
        if self._t0 is None:
            return 0.0
        span = self._spans[pen]
        amount = self.pens_kg[pen - 1]
        cycle, current, into = self._locate(t)
        if current is None:  # a single cycle that has ended
            return amount
        done = cycle * amount
        rel = current.start + into
        if rel >= span.moved:
            return done + amount
        if rel > span.start:
            return done + amount * (rel - span.start) / (span.moved - span.start)
        return done

    def _advance(self, now: float) -> None:
        if self._t0 is None:
            self._t0 = now
        n = len(self._spans)
        while True:
            cycle, i = divmod(self._next_event, n)
            if cycle and not self.repeat:
                return
            span = self._spans[i]
            base = self._t0 + cycle * self._cycle_s
            if base + span.moved > now:
                return
            self.events.append(FeederEvent(span.kind, span.pen, abs(span.after - span.before),
                                           base + span.start, base + span.moved))
            self._next_event += 1

    # -- registers --------------------------------------------------------------------------
    def registers(self, now: float) -> dict[int, int]:
        """The holding-register image at ``now`` (weight noise drawn once per call)."""
        gross, moving = self.gross_kg(now)
        if moving and self.noise_kg:
            gross += self.rng.uniform(-self.noise_kg, self.noise_kg)
        shown = gross - (self.tare_kg or 0.0)
        weight = modbus.value_to_registers(round(shown * 10))
        _, span, _ = self._locate(now) if self._t0 is not None else (0, None, 0.0)
        pen_now = span.pen if span is not None and span.kind == "deliver" and moving else 0
        status = ((not moving) << STATUS_STABLE | (self.tare_kg is not None) << STATUS_NET
                  | (gross > self.capacity_kg) << STATUS_OVERLOAD
                  | bool(pen_now) << STATUS_DELIVERING)
        regs = {REG_WEIGHT: weight[0], REG_WEIGHT + 1: weight[1], REG_STATUS: status,
                REG_TARE: min(0xFFFF, round((self.tare_kg or 0.0) * 10)), REG_COMMAND: 0,
                REG_PEN_COUNT: len(self.pens_kg), REG_PEN_NOW: pen_now}
        total = 0
        for i in range(len(self.pens_kg)):
            value = self._pen_counter(i, now)
            regs[REG_PEN_FEED + i] = value
            total += value
        regs[REG_TOTAL_FEED], regs[REG_TOTAL_FEED + 1] = modbus.value_to_registers(
            total, value_type="uint32")
        return regs

    def _pen_counter(self, i: int, now: float) -> int:
        return max(0, min(0xFFFF, int(self.delivered_kg(i + 1, now) + self._pen_offset[i])))

    def _writable(self, address: int) -> bool:
        return address == REG_COMMAND or REG_PEN_FEED <= address < REG_PEN_FEED + len(
            self.pens_kg)

    def _write(self, address: int, value: int, now: float) -> int | None:
        """Apply one register write; an exception code when it is refused."""
        if not self._writable(address):
            return 2
        if address == REG_COMMAND:
            if value == COMMAND_TARE:
                self.tare_kg, _ = self.gross_kg(now)
            elif value == COMMAND_CLEAR_TARE:
                self.tare_kg = None
            elif value == COMMAND_RESET_COUNTERS:
                for i in range(len(self.pens_kg)):
                    self._pen_offset[i] = -self.delivered_kg(i + 1, now)
            else:
                return 3
            return None
        i = address - REG_PEN_FEED
        self._pen_offset[i] = value - self.delivered_kg(i + 1, now)
        return None

    # -- requests ---------------------------------------------------------------------------
    def tick(self, now: float) -> list[bytes]:
        self._advance(now)
        return []

    def handle(self, data: bytes) -> list[bytes]:
        now = self.clock.now()
        self._advance(now)
        out: list[bytes] = []
        for item in self.decoder.feed(data):
            if not isinstance(item, Message):
                continue  # a slave stays silent on CRC errors and noise
            dev = getattr(item, "device_id", None)
            if dev not in (self.device_id, 0):
                continue
            self.requests.append(item)
            reply = self._request(item, now)
            if reply is not None and dev != 0:
                out.append(reply)
        return out

    def _request(self, req: Message, now: float) -> bytes | None:
        d = self.device_id
        if isinstance(req, modbus.ReadRequest):
            if not 1 <= req.quantity <= modbus.MAX_READ_QUANTITY:
                return modbus.encode_exception(d, req.function, 3)
            regs = self.registers(now)
            wanted = range(req.start, req.start + req.quantity)
            allowed = regs.keys() if req.function == 3 else _INPUT_REGISTERS
            if any(a not in allowed for a in wanted):
                return modbus.encode_exception(d, req.function, 2)
            return modbus.encode_read_response(d, [regs[a] for a in wanted],
                                               function=req.function)
        if isinstance(req, modbus.WriteSingle):
            code = self._write(req.register, req.value, now)
            if code is not None:
                return modbus.encode_exception(d, modbus.WRITE_SINGLE_REGISTER, code)
            return modbus.encode_write_single(d, req.register, req.value)
        if isinstance(req, modbus.WriteMultiple):
            addresses = range(req.start, req.start + len(req.registers))
            if not all(self._writable(a) for a in addresses):
                return modbus.encode_exception(d, modbus.WRITE_MULTIPLE_REGISTERS, 2)
            if REG_COMMAND in addresses and req.registers[REG_COMMAND - req.start] not in (
                    COMMAND_TARE, COMMAND_CLEAR_TARE, COMMAND_RESET_COUNTERS):
                return modbus.encode_exception(d, modbus.WRITE_MULTIPLE_REGISTERS, 3)
            for a, v in zip(addresses, req.registers, strict=True):
                self._write(a, v, now)
            return modbus.encode_write_multiple_response(d, req.start, len(req.registers))
        if isinstance(req, modbus.OtherRequest):
            return modbus.encode_exception(d, req.function, 1)
        return None
