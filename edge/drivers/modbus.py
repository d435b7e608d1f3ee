"""Modbus RTU driver for feeder controllers and scale indicators (serial, or TCP to a
serial bridge carrying RTU frames).

Every ``poll_interval_s`` the driver reads two register blocks with FC 3 (or FC 4): the
*weight block* (weight, status bits, pen count) and the *counter block* (feed delivered per
pen). It emits

* a ``weight`` reading at most every ``weight_interval_s``, from the weight registers
  through :func:`protocols.modbus.registers_to_weight` (``stable`` from the status bits);
* a ``feed_event`` (``event="deliver"``, ``kg``, ``pen``) per delivery: while a pen's
  counter keeps rising the increases are summed; the poll that finds it unchanged closes the
  delivery. ``ts_ms`` is the last poll that saw it rise, ``start_ms`` the first. Nothing is
  counted twice or lost across reconnects: the last counter values stay with the driver, so
  feed delivered while the link was down arrives with the first poll after it.

Counter steps (:func:`counter_delta`): a rise is feed; a fall from near the top of the
counter range to near its bottom is a wrap (``modulus`` - old + new); any other fall is a
reset (someone cleared the counters: the new value is feed since the reset). The first read
after the driver starts is the baseline and emits nothing.

Replies carry no time: ``ts_ms`` is the gateway's receive time.

**Why our own codec and not pymodbus.** :mod:`protocols.modbus` is the one codec shared by
the driver, the simulated feeder (:mod:`firmware_sim.modbus_feeder`) and the tests, so the
register layout and the CRC the gateway reads are exactly those the simulator writes. On a
point-to-point serial line one request is outstanding at a time, so a poll is "send a
request, collect the reply through the decoder" -- the :class:`PollDriver` exchange every
other polled driver uses, with the same timeouts, error counts and availability handling;
pymodbus's framer, transaction manager and async client would add a second I/O stack, its
own retry and logging policy and a heavy dependency for two read requests. pymodbus remains
the better choice for a multi-drop RS-485 bus with many slaves, Modbus TCP (MBAP) devices or
write-heavy control, where its transaction handling pays off.

Options (``[device.options]``; defaults match :mod:`firmware_sim.modbus_feeder`):

``unit_id`` [1]
    the Modbus device address (1..247).
``function`` [3]
    3 (holding registers) or 4 (input registers) for both blocks.
``weight_register`` [0], ``value_type`` ["int32"], ``word_order`` ["big"], ``decimals`` [1],
``factor`` [1.0], ``unit`` ["kg"]
    the weight: ``raw * factor / 10**decimals`` in ``unit`` (int32 at 0.1 kg by default).
``status_register`` [2], ``stable_bit`` [0], ``motion_bit`` [none], ``net_bit`` [1],
``overload_bit`` [2]
    status bits (``status_register = -1`` when the device has none).
``pens`` [none]
    number of pen counters; none: read ``pen_count_register`` [5] every poll.
``pen_counter_register`` [10]
    first pen counter (``-1``: no counters, weight only).
``counter_type`` ["uint16"], ``counter_kg`` [1.0]
    counter width (``uint16`` or ``uint32``, high word first) and kg per count.
``pen_names`` [["1", "2", ...]]
    the ``pen`` of each counter's feed events.
``wrap_window_kg`` [4096.0]
    how close to the top and bottom of the range a fall must be to count as a wrap.
``poll_interval_s`` [1.0], ``reply_timeout_s`` [1.0], ``weight_interval_s`` [10.0]
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Final, Literal

from edge.coordinator import Session
from edge.drivers._weighing import DEFAULT_WEIGHT_INTERVAL_S, WeightThinner
from edge.drivers.base import PollDriver
from protocols import modbus
from protocols._base import StreamDecoder
from protocols.uplink import Reading

__all__ = ["CounterStep", "ModbusDriver", "PenFeedTracker", "counter_delta"]

MAX_PENS: Final = 60  # pen counters read at most (one FC 3 request of uint32 counters)
DEFAULT_WRAP_WINDOW_KG: Final = 4096.0


@dataclasses.dataclass(frozen=True, slots=True)
class CounterStep:
    """How a counter moved between two reads: ``kind`` is ``same``, ``rise``, ``wrap`` or
    ``reset``; ``delta`` the counts delivered in between."""

    kind: str
    delta: int


def counter_delta(prev: int, cur: int, *, modulus: int = 1 << 16,
                  wrap_window: int = 4096) -> CounterStep:
    """Classify a counter step (pure). A fall counts as a wrap only when ``prev`` is within
    ``wrap_window`` of ``modulus`` and ``cur`` within ``wrap_window`` of zero; any other fall
    is a reset, and ``cur`` is what was counted since it."""
    if not (0 <= prev < modulus and 0 <= cur < modulus):
        raise ValueError(f"counter values must be 0..{modulus - 1}: {prev}, {cur}")
    if cur == prev:
        return CounterStep("same", 0)
    if cur > prev:
        return CounterStep("rise", cur - prev)
    if prev >= modulus - wrap_window and cur < wrap_window:
        return CounterStep("wrap", modulus - prev + cur)
    return CounterStep("reset", cur)


@dataclasses.dataclass(slots=True)
class _Delivery:
    kg: float
    start_ms: int
    last_ms: int
    recv_ms: int


class PenFeedTracker:
    """Per-pen delivery counters -> ``feed_event`` readings (pure, times passed in).

    :meth:`update` takes the counter values of one poll; a pen whose counter rose joins (or
    opens) its delivery, a pen whose counter did not rise closes it. Counters: ``wraps``,
    ``resets``."""

    def __init__(self, *, device_id: str, pen_names: list[str] | None = None,
                 modulus: int = 1 << 16, counter_kg: float = 1.0,
                 wrap_window: int = 4096) -> None:
        self.device_id = device_id
        self.pen_names = pen_names
        self.modulus = modulus
        self.counter_kg = counter_kg
        self.wrap_window = wrap_window
        self._last: list[int] | None = None
        self._open: dict[int, _Delivery] = {}
        self.wraps = 0
        self.resets = 0

    def pen_name(self, i: int) -> str:
        if self.pen_names is not None and i < len(self.pen_names):
            return self.pen_names[i]
        return str(i + 1)

    def update(self, counters: list[int], ts_ms: int, recv_ms: int) -> list[Reading]:
        out: list[Reading] = []
        last = self._last
        self._last = list(counters)
        if last is None:
            return out
        if len(last) != len(counters):  # the number of pens changed: rebaseline
            return self.drain()
        for i, (prev, cur) in enumerate(zip(last, counters, strict=True)):
            step = counter_delta(prev, cur, modulus=self.modulus, wrap_window=self.wrap_window)
            if step.kind == "wrap":
                self.wraps += 1
            elif step.kind == "reset":
                self.resets += 1
            if step.delta > 0:
                kg = step.delta * self.counter_kg
                d = self._open.get(i)
                if d is None:
                    self._open[i] = _Delivery(kg, ts_ms, ts_ms, recv_ms)
                else:
                    d.kg += kg
                    d.last_ms = ts_ms
                    d.recv_ms = recv_ms
            elif i in self._open:
                out.append(self._event(i, self._open.pop(i)))
        return out

    def drain(self) -> list[Reading]:
        """Close every open delivery (shutdown, or the pen layout changed)."""
        out = [self._event(i, d) for i, d in sorted(self._open.items())]
        self._open.clear()
        return out

    def _event(self, i: int, d: _Delivery) -> Reading:
        return Reading("feed_event", self.device_id, d.last_ms, d.recv_ms,
                       {"event": "deliver", "kg": round(d.kg, 6), "pen": self.pen_name(i),
                        "start_ms": d.start_ms})


class ModbusDriver(PollDriver):
    kind: ClassVar[str] = "modbus"

    def __init__(self, *, device_id: str, unit_id: int = 1, function: int = 3,
                 weight_register: int = 0, value_type: modbus.ValueType = "int32",
                 word_order: modbus.WordOrder = "big", decimals: int = 1, factor: float = 1.0,
                 unit: str = "kg", status_register: int = 2, stable_bit: int | None = 0,
                 motion_bit: int | None = None, net_bit: int | None = 1,
                 overload_bit: int | None = 2, pens: int | None = None,
                 pen_count_register: int = 5, pen_counter_register: int = 10,
                 counter_type: Literal["uint16", "uint32"] = "uint16",
                 counter_kg: float = 1.0, pen_names: list[str] | None = None,
                 wrap_window_kg: float = DEFAULT_WRAP_WINDOW_KG,
                 weight_interval_s: float = DEFAULT_WEIGHT_INTERVAL_S,
                 poll_interval_s: float = 1.0, reply_timeout_s: float = 1.0,
                 silence_timeout_s: float = 30.0) -> None:
        super().__init__(device_id=device_id, silence_timeout_s=silence_timeout_s,
                         poll_interval_s=poll_interval_s, reply_timeout_s=reply_timeout_s)
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit_id must be 1..247, got {unit_id}")
        if function not in (modbus.READ_HOLDING_REGISTERS, modbus.READ_INPUT_REGISTERS):
            raise ValueError(f"function must be 3 or 4, got {function}")
        if counter_type not in ("uint16", "uint32"):
            raise ValueError(f"counter_type must be uint16 or uint32, got {counter_type!r}")
        if pens is not None and not 0 <= pens <= MAX_PENS:
            raise ValueError(f"pens must be 0..{MAX_PENS}, got {pens}")
        if not counter_kg > 0 or not weight_interval_s >= 0:
            raise ValueError("counter_kg must be > 0 and weight_interval_s >= 0")
        words = 1 if value_type in ("int16", "uint16") else 2
        self.unit_id = unit_id
        self.function = function
        self.pens = pens
        self.counter_words = 1 if counter_type == "uint16" else 2
        self.pen_counter_register = pen_counter_register
        # the weight block spans the weight, the status and (without ``pens``) the pen count
        used = [weight_register, weight_register + words - 1]
        if status_register >= 0:
            used.append(status_register)
        if pens is None and pen_counter_register >= 0:
            used.append(pen_count_register)
        self.block_start = min(used)
        self.block_len = max(used) - self.block_start + 1
        if self.block_start < 0 or self.block_len > modbus.MAX_READ_QUANTITY:
            raise ValueError("weight, status and pen count registers must lie within one "
                             f"read of {modbus.MAX_READ_QUANTITY} registers")
        self.pen_count_index = pen_count_register - self.block_start
        self.weight_args: dict[str, Any] = {
            "value_type": value_type, "word_order": word_order,
            "value_index": weight_register - self.block_start, "decimals": decimals,
            "factor": factor, "unit": unit,
            "status_index": status_register - self.block_start if status_register >= 0
            else None,
            "stable_bit": stable_bit, "motion_bit": motion_bit, "net_bit": net_bit,
            "overload_bit": overload_bit}
        modbus.registers_to_weight([0] * self.block_len, **self.weight_args)  # check the map
        modulus = 1 << (16 * self.counter_words)
        self.tracker = PenFeedTracker(device_id=device_id, pen_names=pen_names,
                                      modulus=modulus, counter_kg=counter_kg,
                                      wrap_window=max(1, round(wrap_window_kg / counter_kg)))
        self.thinner = WeightThinner(device_id=device_id,
                                     interval_ms=round(weight_interval_s * 1000))
        self.bad_replies = 0  # replies that did not fit the request or the register map

    @classmethod
    def from_options(cls, *, device_id: str, silence_timeout_s: float,
                     options: dict[str, Any]) -> ModbusDriver:
        return cls(device_id=device_id, silence_timeout_s=silence_timeout_s, **options)

    def make_decoder(self) -> StreamDecoder:
        return modbus.Decoder("client", expect=(self.unit_id, self.function))

    async def read(self, session: Session, start: int, quantity: int) -> tuple[int, ...] | None:
        """Registers ``start..start+quantity-1``, or ``None`` (no reply, an exception reply,
        or a reply of another length -- e.g. a late answer to an earlier request)."""
        msgs = await self.exchange(
            session, modbus.encode_read_request(self.unit_id, start, quantity,
                                                function=self.function),
            until=(modbus.ReadResponse, modbus.ExceptionResponse))
        for m in reversed(msgs):
            if isinstance(m, modbus.ReadResponse) and len(m.registers) == quantity:
                return m.registers
        for m in msgs:
            self.bad_replies += 1
            session.codec_errors([f"exception_{m.name}" if isinstance(
                m, modbus.ExceptionResponse) else "unexpected_reply"])
        return None

    async def poll(self, session: Session) -> None:
        regs = await self.read(session, self.block_start, self.block_len)
        if regs is None:
            return
        recv_ms = session.clock_ms()
        out: list[Reading] = []
        try:
            weight = modbus.registers_to_weight(regs, **self.weight_args)
        except ValueError:
            self.bad_replies += 1
            weight = None
        if weight is not None:
            shown = self.thinner.feed(recv_ms, recv_ms, weight)
            if shown is not None:
                out.append(shown)
        pens = self.pens if self.pens is not None else regs[self.pen_count_index]
        if self.pen_counter_register >= 0 and 0 < pens <= MAX_PENS:
            counters = await self.read(session, self.pen_counter_register,
                                       pens * self.counter_words)
            if counters is not None:
                recv_ms = session.clock_ms()
                out += self.tracker.update(self._counters(counters), recv_ms, recv_ms)
        await session.emit(out)

    def _counters(self, regs: tuple[int, ...]) -> list[int]:
        if self.counter_words == 1:
            return list(regs)
        return [regs[i] << 16 | regs[i + 1] for i in range(0, len(regs), 2)]

    def flush(self, now_ms: int, *, final: bool = False) -> list[Reading]:
        return self.tracker.drain() if final else []
