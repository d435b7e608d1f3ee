"""One simulated site's gateway, in process, on the simulated clock: world observations in,
signed uplink envelopes out, through the real device protocols and the real edge and gateway
code.

    Observation --pledgewatch.simrun.wire (protocols encoders, device role)--> bytes
      --protocols decoder (host role), fed like serial reads--> messages
      --edge drivers' own pipelines (aggregators, weighing, TMR, NMEA epochs, thinning)--> Readings
      --gateway.outbox.Outbox (SQLite, WAL, on disk)--> signed envelopes (Outbox.next_batch)

What each observation becomes (device bytes -> edge pipeline -> readings):

* ``TagRead`` at a ``reader`` or ``truck_reader``: an R2000 tag frame, a ThingMagic streamed
  record or a Chafon 288 reply -> the driver's ``TagSightingAggregator`` (windows of
  ``sighting_window_ms``; truck readers ``truck_window_ms``) -> ``tag_sighting``;
* ``AnimalWeighing`` at an ``animal_scale``: the scale's R2000 reader reads the ear tag, then
  XK3190 or Toledo frames settle -> the weighing pipeline (stable-weight detection, the
  animal named through ``set_truck`` like a truck) -> ``weigh_event`` with ``epc`` (identity
  EPC) and ``weight_kg``, plus the reader's ``tag_sighting`` and the thinned ``weight``;
* ``TruckWeighing`` at a ``weighbridge``: the truck tag read by its gate reader (or a plate
  camera) and XK3190 or Toledo frames -> ``WeighbridgeMixin`` / ``WeighTicketPairer`` ->
  ``weigh_event`` per weigh and one ``weigh_ticket`` (priority) per in/out pair;
* ``FeedDelivery`` at a ``feeder``: Digi-Star display frames (load and unload plateaus, the
  pen through ``set_pen``) -> ``TmrEventDetector`` -> ``feed_event`` (``load``/``unload``);
  or Modbus RTU poll replies -> ``PenFeedTracker`` -> ``feed_event`` (``deliver``);
* ``PositionFix`` at a ``gps``: RMC + GGA -> the NMEA driver's epochs and ``GpsThinner`` ->
  ``position``;
* ``DeviceState``/``GatewayState``: availability readings; crash and restart.

**Sans-IO links, no ptys, no threads.** A device's link is the bytes handed to its decoder:
the drivers' async ``run``/``poll`` loops only move bytes between a transport and the same
synchronous pieces used here (``make_decoder``, ``on_messages``, ``flush``, ``set_truck``,
``set_pen``, the aggregators), so nothing the edge *decides* is bypassed, while a 7-day run
needs no event loop, no serial port and no wall clock. Where a driver's decision logic sits
inside its async poll (the R2000/Chafon "TagRead -> aggregator" step, the Modbus "weight
block -> thinner, counter block -> PenFeedTracker" step, the gateway's truck-reader wiring
in ``Gateway.store`` and the coordinator's availability table) this module repeats those few
lines, calling the same objects; it never re-implements an aggregator, a detector, the
outbox or the envelope. Each payload is fed to the decoder in reads of at most ``read_size``
bytes (a serial read returns what the UART buffered; tests use small reads to cross frame
boundaries).

**Time.** Everything runs on event time: a frame is decoded at the simulated time the device
sent it, aggregation windows close when the clock passes their end (as the drivers' 1 s flush
would), device timeouts fire when their time comes. Observations arrive in time order through
:meth:`SiteEdge.feed`; the frames a device sends around an observation (a truck driving on,
a wagon settling) are queued on one heap with the timers and played in time order before the
next observation, so a truck's gate-reader sighting reaches the weighbridge before the truck
settles, as on a real site.

**Crash.** :meth:`SiteEdge.crash` is ``kill -9``: drivers, decoders, aggregators and frames in
flight are dropped; what the outbox committed survives and :meth:`SiteEdge.restart` reopens
it. Readings are committed to the outbox in groups (``commit_every``) for speed; a group that
is open at a crash is committed first, because the real gateway commits every emitted reading
within milliseconds of its emission -- only aggregation still open is lost.

**Availability** follows ``edge.coordinator.AVAILABILITY``: every device sends its first good
frame as soon as its link is up (readers answer the first poll, indicators and receivers
stream), so ``device_online`` comes at start, restart and reconnection; a device whose link
goes down is declared ``device_offline`` after ``silence_timeout_ms`` without frames, with the
coordinator's reason text, after its driver's final flush. The world's own reason for the
outage is not sent: a gateway cannot know it.

**Heartbeat** (``Gateway.heartbeat_loop``, when the uplink contract has the ``heartbeat``
kind): a gateway that stored nothing for ``heartbeat_ms`` stores a ``heartbeat`` reading
(``outbox_readings``: the outbox depth), checking every quarter of that period from its
start, so an idle site's event-time watermark moves on.

**Outbox durability.** The outbox runs with ``synchronous="NORMAL"``: it survives a process
crash (what this simulates), not a power cut, and costs no fsync per commit.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.aggregate import TagSightingAggregator, split_motion_epc
from edge.coordinator import Availability, Event, transition
from edge.drivers.base import split
from edge.drivers.chafon import ChafonDriver
from edge.drivers.digistar import DigiStarDriver
from edge.drivers.modbus import ModbusDriver
from edge.drivers.nmea import EPOCH_HOLD_MS, NmeaDriver
from edge.drivers.r2000 import R2000Driver
from edge.drivers.thingmagic import ThingMagicDriver
from edge.drivers.toledo import ToledoDriver
from edge.drivers.xk3190 import Xk3190Driver
from firmware_sim.world.observations import (
    AnimalWeighing,
    DeviceState,
    FeedDelivery,
    GatewayState,
    Observation,
    PositionFix,
    TagRead,
    TruckWeighing,
)
from gateway.errors import ReadingRejected
from gateway.outbox import Outbox
from pledgewatch.simrun import wire
from protocols import modbus
from protocols._base import FrameError, Message, StreamDecoder
from protocols.messages import TagRead as DecodedTagRead
from protocols.uplink import READING_KINDS, Reading

__all__ = [
    "DEFAULT_SIGHTING_WINDOW_MS",
    "DEFAULT_TRUCK_WINDOW_MS",
    "PROTOCOLS_BY_ROLE",
    "DeviceSpec",
    "SiteEdge",
]

log = logging.getLogger(__name__)

DEFAULT_SIGHTING_WINDOW_MS: Final = 60_000
DEFAULT_TRUCK_WINDOW_MS: Final = 10_000  # the R2000 driver's default window
DEFAULT_SILENCE_TIMEOUT_MS: Final = 30_000  # the drivers' default silence_timeout_s
DEFAULT_BATCH_MAX_BYTES: Final = 1_000_000  # gateway.config default
DEFAULT_BATCH_MAX_AGE_MS: Final = 5_000  # gateway.config default
DEFAULT_DISK_BUDGET_BYTES: Final = 4 * 1024**3
COMMIT_EVERY: Final = 5_000  # readings per outbox transaction at most
PAIRER_CHECK_MS: Final = 60_000  # how often an open truck is checked for its pair timeout
DEFAULT_HEARTBEAT_MS: Final = 60_000  # gateway.config uplink.heartbeat_s default
_HEARTBEAT: Final = -1  # the heap index of the gateway's heartbeat timer
_LAST: Final = 1 << 62  # a heap sequence number after every other one
OUTBOX_FILE: Final = "outbox.sqlite"

PROTOCOLS_BY_ROLE: Final = {
    "reader": ("r2000", "thingmagic", "chafon"),
    "truck_reader": ("r2000", "thingmagic", "chafon"),
    "animal_scale": ("xk3190", "toledo"),
    "weighbridge": ("xk3190", "toledo"),
    "feeder": ("digistar", "modbus"),
    "gps": ("nmea",),
}
# Animal scales: kilograms to one decimal, settle within 1 kg, empty below 20 kg (a calf).
_ANIMAL_SCALE: Final[dict[str, Any]] = {"n_equal": 5, "tolerance_kg": 1.0, "min_weight_kg": 20.0,
                 "truck_id_source": "gate", "ident_lead_s": 60.0}
_ANIMAL_DECIMALS: Final = 1
_TIMER: Final = 0
_WIRE: Final = 1
# what an encoder raises for an observation its protocol cannot carry (bad EPC, antenna out of
# range, a weight too wide for the display, a non-finite number)
_ENCODE_ERRORS: Final = (ValueError, TypeError, OverflowError)

Counters = dict[str, int]


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """A device of the site: ``role`` (see :data:`PROTOCOLS_BY_ROLE`), the ``protocol`` it
    speaks, and ``place`` (a truck reader serves the weighbridges of its place, or every
    weighbridge of the site when it has none or no weighbridge shares it)."""

    device_id: str
    role: str
    protocol: str
    place: str | None = None


def _decode(decoder: StreamDecoder, data: bytes, read_size: int | None, c: Counters
            ) -> list[Message]:
    """Feed ``data`` in reads of at most ``read_size`` bytes; count messages and errors."""
    if read_size is None or len(data) <= read_size:
        items = decoder.feed(data)
    else:
        items = []
        for i in range(0, len(data), read_size):
            items += decoder.feed(data[i:i + read_size])
    if len(items) == 1 and type(items[0]) is not FrameError:
        c["messages_decoded"] += 1
        return items  # type: ignore[return-value]
    msgs, errs = split(items)
    c["messages_decoded"] += len(msgs)
    _count_errors(errs, c)
    return msgs


def _count_errors(kinds: list[str], c: Counters) -> None:
    if kinds:
        c["decode_errors"] += len(kinds)
        for kind in kinds:
            c[f"decode_error_{kind}"] = c.get(f"decode_error_{kind}", 0) + 1


# -- the gateway side of each device ---------------------------------------------------------
class _Port:
    """What the gateway holds for one device while it runs: the driver (decoder, aggregation)
    and the availability state. Rebuilt from nothing at every (re)start."""

    kind = ""

    def __init__(self, spec: DeviceSpec, index: int, c: Counters,
                 read_size: int | None) -> None:
        self.spec = spec
        self.device_id = spec.device_id
        self.index = index
        self.c = c
        self.read_size = read_size
        self.state = Availability.STARTING
        self.silent_due: int | None = None
        self.due: int | None = None  # the port's own next timer (a flush)
        self.scheduled: int | None = None  # the timer on the heap

    def next_due(self) -> int | None:
        if self.silent_due is None:
            return self.due
        return self.silent_due if self.due is None else min(self.due, self.silent_due)

    def connect(self, t_ms: int) -> None:
        """The link is up (start, or back after an outage): a fresh session."""

    def rx(self, t_ms: int, channel: str, payload: bytes | str) -> list[Reading]:
        raise NotImplementedError

    def on_timer(self, t_ms: int) -> list[Reading]:
        return []

    def final_flush(self) -> list[Reading]:
        """The link failed: what the driver emits on its way out (``flush(final=True)``)."""
        return []


class _Sightings:
    """A reader's decoder and sighting aggregation, with the window ends that have reads
    (the port's flush timers). The aggregator is the driver's own."""

    def __init__(self, aggregator: TagSightingAggregator, decoder: StreamDecoder,
                 encoder: wire.TagEncoder, c: Counters, read_size: int | None,
                 on_messages: Callable[[Sequence[Message], int], list[Reading]] | None = None
                 ) -> None:
        self.agg = aggregator
        self.decoder = decoder
        self.encoder = encoder
        self.c = c
        self.read_size = read_size
        self.on_messages = on_messages  # ThingMagic: its driver converts timestamps
        self.window_ms = aggregator.window_ms
        self.ends: set[int] = set()
        self.last_end = -1

    def feed_bytes(self, t_ms: int, data: bytes) -> list[DecodedTagRead]:
        """Decode and aggregate; returns the tag reads decoded."""
        return self._aggregate(t_ms, _decode(self.decoder, data, self.read_size, self.c))

    def handle(self, t_ms: int, items: list[Message | FrameError]) -> list[DecodedTagRead]:
        """:meth:`feed_bytes` for what the decoder already returned."""
        msgs, errs = split(items)
        self.c["messages_decoded"] += len(msgs)
        _count_errors(errs, self.c)
        return self._aggregate(t_ms, msgs)

    def _aggregate(self, t_ms: int, msgs: list[Message]) -> list[DecodedTagRead]:
        # (Chafon's reads are a TagRead subclass; the exact-type test is the fast path)
        reads = [m for m in msgs
                 if type(m) is DecodedTagRead or isinstance(m, DecodedTagRead)]
        if self.on_messages is not None:
            self.on_messages(msgs, t_ms)
        else:
            for m in reads:
                self.agg.feed(t_ms, m)
        if reads:
            end = t_ms - t_ms % self.window_ms + self.window_ms
            if end != self.last_end:
                self.last_end = end
                self.ends.add(end)
        return reads

    def next_end(self) -> int | None:
        return min(self.ends) if self.ends else None

    def flush(self, t_ms: int) -> list[Reading]:
        out = self.agg.flush(t_ms)
        self.ends = {e for e in self.ends if e > t_ms}
        if self.last_end <= t_ms:
            self.last_end = -1  # a late read into a closed window needs a timer again
        return out

    def drain(self) -> list[Reading]:
        self.ends.clear()
        self.last_end = -1
        return self.agg.drain()


class _ReaderPort(_Port):
    """An RFID reader (ear tags, or truck tags at the gate)."""

    def __init__(self, spec: DeviceSpec, index: int, c: Counters, read_size: int | None, *,
                 encoder: wire.TagEncoder, window_ms: int) -> None:
        super().__init__(spec, index, c, read_size)
        window_s = window_ms / 1000
        self.driver: R2000Driver | ThingMagicDriver | ChafonDriver
        if spec.protocol == "r2000":
            self.driver = R2000Driver(device_id=spec.device_id, window_s=window_s)
        elif spec.protocol == "thingmagic":
            self.driver = ThingMagicDriver(device_id=spec.device_id, window_s=window_s)
        else:
            self.driver = ChafonDriver(device_id=spec.device_id, variant="288",
                                       window_s=window_s)
        self.kind = self.driver.kind
        self.encoder = encoder
        self.sight = self._new_session()

    def _new_session(self) -> _Sightings:
        tm = self.driver if isinstance(self.driver, ThingMagicDriver) else None
        return _Sightings(self.driver.aggregator, self.driver.make_decoder(), self.encoder,
                          self.c, self.read_size, tm.on_messages if tm is not None else None)

    def connect(self, t_ms: int) -> None:
        ends = self.sight.ends
        self.sight = self._new_session()
        self.sight.ends = ends  # the aggregator (the driver's) keeps its open windows
        if isinstance(self.driver, ThingMagicDriver):
            # the driver's setup ends with the continuous-read start; the module acks it
            self.driver.note_start_sent(t_ms)
            ack = self.encoder.start_stream(t_ms)
            self.c["frames_encoded"] += 1
            self.c["bytes_encoded"] += len(ack)
            self.sight.feed_bytes(t_ms, ack)

    def tag(self, t_ms: int, epc: str, antenna: int, rssi_dbm: int) -> bool:
        """One read at ``t_ms``; True when the port's next flush moved earlier. (The hot
        path of a run: the common case -- one frame in, one tag read out -- is inlined.)"""
        data = self.encoder.encode(epc, antenna, rssi_dbm, t_ms)
        c = self.c
        c["frames_encoded"] += 1
        c["bytes_encoded"] += len(data)
        sight = self.sight
        if sight.on_messages is None and (self.read_size is None
                                          or len(data) <= self.read_size):
            items = sight.decoder.feed(data)
            if len(items) == 1 and type(items[0]) is DecodedTagRead:
                c["messages_decoded"] += 1
                sight.agg.feed(t_ms, items[0])
                end = t_ms - t_ms % sight.window_ms + sight.window_ms
                if end == sight.last_end:
                    return False  # its window already has a timer
                sight.last_end = end
                sight.ends.add(end)
                if self.due is None or end < self.due:
                    self.due = end
                    return True
                return False
            sight.handle(t_ms, items)
        else:
            sight.feed_bytes(t_ms, data)
        due = sight.next_end()
        if due != self.due:
            self.due = due
            return True
        return False

    def rx(self, t_ms: int, channel: str, payload: bytes | str) -> list[Reading]:
        assert isinstance(payload, bytes)
        self.sight.feed_bytes(t_ms, payload)
        self.due = self.sight.next_end()
        return []

    def on_timer(self, t_ms: int) -> list[Reading]:
        out = self.sight.flush(t_ms)
        self.due = self.sight.next_end()
        return out

    def final_flush(self) -> list[Reading]:
        self.due = None
        return self.sight.drain()


class _WeighbridgePort(_Port):
    """A truck weighbridge: the XK3190 or Toledo driver's weighing pipeline with its ticket
    pairer; trucks are named by the gate reader's sightings or by a plate camera."""

    def __init__(self, spec: DeviceSpec, index: int, c: Counters, read_size: int | None
                 ) -> None:
        super().__init__(spec, index, c, read_size)
        self.driver: Xk3190Driver | ToledoDriver = (
            Xk3190Driver(device_id=spec.device_id) if spec.protocol == "xk3190"
            else ToledoDriver(device_id=spec.device_id, checksum=True))
        self.kind = self.driver.kind
        self.decoder = self.driver.make_decoder()

    def connect(self, t_ms: int) -> None:
        self.decoder = self.driver.make_decoder()

    def set_truck(self, truck_id: str, ts_ms: int) -> None:
        self.driver.set_truck(truck_id, ts_ms)

    def rx(self, t_ms: int, channel: str, payload: bytes | str) -> list[Reading]:
        if channel == "ident":
            assert isinstance(payload, str)
            self.driver.set_truck(payload, t_ms)
            return []
        assert isinstance(payload, bytes)
        out = self.driver.on_messages(_decode(self.decoder, payload, self.read_size, self.c),
                                      t_ms)
        self._arm(t_ms)
        return out

    def _arm(self, t_ms: int) -> None:
        pairer = self.driver.pipeline.pairer
        if self.due is None and pairer is not None and pairer.open_trucks:
            self.due = t_ms + PAIRER_CHECK_MS

    def on_timer(self, t_ms: int) -> list[Reading]:
        self.due = None
        out = self.driver.flush(t_ms)
        self._arm(t_ms)
        return out


class _AnimalScalePort(_Port):
    """A walk-over or chute scale with its own RFID reader. The weighing is the weighbridge
    pipeline (stable-weight detection, then the pairer's identification: the scale's reads
    go to ``set_truck`` as a truck's gate reads do); its ``weigh_event`` goes out with the
    identity EPC as ``epc`` (no ``truck_id``), and what the pairer makes of two weighs of one
    animal (tickets, unmatched events) is not an animal weighing and is dropped (counted in
    ``animal_pairings_dropped``). The reader's reads are also sightings (the animal was there).
    """

    def __init__(self, spec: DeviceSpec, index: int, c: Counters, read_size: int | None, *,
                 encoder: wire.TagEncoder, window_ms: int) -> None:
        super().__init__(spec, index, c, read_size)
        self.driver: Xk3190Driver | ToledoDriver = (
            Xk3190Driver(device_id=spec.device_id, **_ANIMAL_SCALE)
            if spec.protocol == "xk3190"
            else ToledoDriver(device_id=spec.device_id, checksum=True, **_ANIMAL_SCALE))
        self.kind = self.driver.kind
        self.decoder = self.driver.make_decoder()
        self.reader = R2000Driver(device_id=spec.device_id, window_s=window_ms / 1000)
        self.sight = _Sightings(self.reader.aggregator, self.reader.make_decoder(), encoder,
                                c, read_size)

    def connect(self, t_ms: int) -> None:
        self.decoder = self.driver.make_decoder()
        ends = self.sight.ends
        self.sight = _Sightings(self.reader.aggregator, self.reader.make_decoder(),
                                self.sight.encoder, self.c, self.read_size)
        self.sight.ends = ends

    def rx(self, t_ms: int, channel: str, payload: bytes | str) -> list[Reading]:
        assert isinstance(payload, bytes)
        if channel == "tag":
            for read in self.sight.feed_bytes(t_ms, payload):
                self.driver.set_truck(split_motion_epc(read.epc)[0], t_ms)
            self.due = self.sight.next_end()
            return []
        raw = self.driver.on_messages(_decode(self.decoder, payload, self.read_size, self.c),
                                      t_ms)
        out: list[Reading] = []
        c = self.c
        for r in raw:
            if r.kind == "weigh_event" and r.data.get("event") == "weigh":
                data = {k: v for k, v in r.data.items() if k != "truck_id"}
                epc = r.data.get("truck_id")
                if epc is None:
                    c["animal_weighs_unidentified"] += 1
                else:
                    data["epc"] = epc
                out.append(Reading("weigh_event", r.device_id, r.ts_ms, r.recv_ms, data))
            elif r.kind in ("weigh_event", "weigh_ticket"):
                c["animal_pairings_dropped"] += 1
            else:
                out.append(r)
        return out

    def on_timer(self, t_ms: int) -> list[Reading]:
        out = self.sight.flush(t_ms)
        self.due = self.sight.next_end()
        return out

    def final_flush(self) -> list[Reading]:
        self.due = None
        return self.sight.drain()


class _DigiStarPort(_Port):
    """A TMR mixer wagon's Digi-Star indicator: the driver's TMR event detector; the pen
    comes from the ``pen`` channel through ``set_pen``."""

    def __init__(self, spec: DeviceSpec, index: int, c: Counters, read_size: int | None
                 ) -> None:
        super().__init__(spec, index, c, read_size)
        self.driver = DigiStarDriver(device_id=spec.device_id, unit="kg", mode="display")
        self.kind = self.driver.kind
        self.decoder = self.driver.make_decoder()

    def connect(self, t_ms: int) -> None:
        self.decoder = self.driver.make_decoder()

    def rx(self, t_ms: int, channel: str, payload: bytes | str) -> list[Reading]:
        if channel == "pen":
            assert isinstance(payload, str)
            self.driver.set_pen(payload, t_ms)
            return []
        assert isinstance(payload, bytes)
        return self.driver.on_messages(
            _decode(self.decoder, payload, self.read_size, self.c), t_ms)


class _ModbusPort(_Port):
    """A feeder controller polled over Modbus RTU: the driver's weight thinner and
    ``PenFeedTracker``, fed as its ``poll`` feeds them (weight block, then counter block)."""

    def __init__(self, spec: DeviceSpec, index: int, c: Counters, read_size: int | None, *,
                 pen_names: list[str]) -> None:
        super().__init__(spec, index, c, read_size)
        self.driver = ModbusDriver(device_id=spec.device_id, pens=wire.MODBUS_PENS,
                                   pen_names=pen_names)
        self.kind = self.driver.kind
        self.decoder = self.driver.make_decoder()
        self.counter_len = wire.MODBUS_PENS * self.driver.counter_words

    def connect(self, t_ms: int) -> None:
        self.decoder = self.driver.make_decoder()

    def rx(self, t_ms: int, channel: str, payload: bytes | str) -> list[Reading]:
        assert isinstance(payload, bytes)
        d = self.driver
        out: list[Reading] = []
        for m in _decode(self.decoder, payload, self.read_size, self.c):
            if not isinstance(m, modbus.ReadResponse):
                continue
            if len(m.registers) == d.block_len:
                try:
                    weight = modbus.registers_to_weight(m.registers, **d.weight_args)
                except ValueError:
                    d.bad_replies += 1
                    continue
                shown = d.thinner.feed(t_ms, t_ms, weight)
                if shown is not None:
                    out.append(shown)
            elif len(m.registers) == self.counter_len:  # uint16 counters, one register each
                out += d.tracker.update(list(m.registers), t_ms, t_ms)
        return out

    def final_flush(self) -> list[Reading]:
        return self.driver.flush(0, final=True)


class _GpsPort(_Port):
    """A GPS receiver: the NMEA driver's epoch merging and thinning."""

    def __init__(self, spec: DeviceSpec, index: int, c: Counters, read_size: int | None
                 ) -> None:
        super().__init__(spec, index, c, read_size)
        self.driver = NmeaDriver(device_id=spec.device_id)
        self.kind = self.driver.kind
        self.decoder = self.driver.make_decoder()

    def connect(self, t_ms: int) -> None:
        self.decoder = self.driver.make_decoder()

    def rx(self, t_ms: int, channel: str, payload: bytes | str) -> list[Reading]:
        assert isinstance(payload, bytes)
        out = self.driver.on_messages(
            _decode(self.decoder, payload, self.read_size, self.c), t_ms)
        self.due = t_ms + EPOCH_HOLD_MS  # the epoch completes then unless the next one starts
        return out

    def on_timer(self, t_ms: int) -> list[Reading]:
        self.due = None
        return self.driver.flush(t_ms)

    def final_flush(self) -> list[Reading]:
        self.due = None
        return self.driver.flush(0, final=True)


# -- the site gateway ------------------------------------------------------------------------
_COUNTER_NAMES: Final = (
    "observations", "frames_encoded", "bytes_encoded", "messages_decoded", "decode_errors",
    "encode_errors", "readings_emitted", "readings_stored", "readings_rejected",
    "outbox_commits", "dropped_while_crashed", "dropped_device_offline",
    "frames_dropped_link_down", "frames_lost_in_crash", "unknown_device", "wrong_role",
    "out_of_order", "ignored_network_state", "animal_weighs_unidentified",
    "animal_pairings_dropped", "envelopes_built", "envelopes_acked", "acks_while_crashed",
    "crashes", "restarts", "device_offline_emitted", "device_online_emitted",
)


class SiteEdge:
    """One site's gateway (see the module docstring). Not thread-safe; one per site.

    ``counters`` (a live dict): ``observations`` fed, ``frames_encoded``/``bytes_encoded`` by
    the simulated devices, ``messages_decoded`` and ``decode_errors`` (plus
    ``decode_error_<kind>``) by the decoders, ``encode_errors`` (observations a protocol
    cannot carry, e.g. an odd-length EPC), ``readings_emitted`` by the edge and
    ``readings_stored`` in the outbox (plus ``readings_<kind>``), ``readings_rejected`` (broke
    the uplink contract, dropped alone as ``Gateway.store`` does), ``dropped_while_crashed``,
    ``dropped_device_offline`` (observations of a device whose link is down),
    ``frames_dropped_link_down``, ``frames_lost_in_crash``, ``unknown_device``,
    ``wrong_role``, ``out_of_order``, ``envelopes_built``/``envelopes_acked`` and more.

    Knobs beyond the gateway's own settings (``batch_max_*``, ``heartbeat_ms``, the outbox
    ``disk_budget_bytes``): ``sighting_window_ms`` for animal readers and scales,
    ``truck_window_ms`` for gate readers, ``silence_timeout_ms`` before a silent device is
    declared offline, ``read_size`` (bytes per decoder feed; None: a whole payload at once)
    and ``commit_every`` (readings per outbox transaction at most). ``data_dir`` holds the
    outbox file, ``outbox.sqlite``; the directory is created.
    """

    def __init__(self, *, site: str, gateway_id: str, devices: Sequence[DeviceSpec],
                 data_dir: Path, private_key: Ed25519PrivateKey, start_ms: int,
                 batch_max_readings: int = 5000,
                 batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES,
                 batch_max_age_ms: int = DEFAULT_BATCH_MAX_AGE_MS,
                 sighting_window_ms: int = DEFAULT_SIGHTING_WINDOW_MS,
                 truck_window_ms: int = DEFAULT_TRUCK_WINDOW_MS,
                 silence_timeout_ms: int = DEFAULT_SILENCE_TIMEOUT_MS,
                 read_size: int | None = None, commit_every: int = COMMIT_EVERY,
                 disk_budget_bytes: int = DEFAULT_DISK_BUDGET_BYTES,
                 heartbeat_ms: int | None = DEFAULT_HEARTBEAT_MS) -> None:
        if read_size is not None and read_size < 1:
            raise ValueError("read_size must be >= 1")
        if commit_every < 1 or batch_max_readings < 1:
            raise ValueError("commit_every and batch_max_readings must be >= 1")
        self.site = site
        self.gateway_id = gateway_id
        self.data_dir = Path(data_dir)
        self.private_key = private_key
        self.batch_max_readings = batch_max_readings
        self.batch_max_bytes = batch_max_bytes
        self.batch_max_age_ms = batch_max_age_ms
        self.sighting_window_ms = sighting_window_ms
        self.truck_window_ms = truck_window_ms
        self.silence_timeout_ms = silence_timeout_ms
        self.read_size = read_size
        self.commit_every = commit_every
        self.disk_budget_bytes = disk_budget_bytes
        self.heartbeat_ms = heartbeat_ms if "heartbeat" in READING_KINDS else None
        if self.heartbeat_ms is not None and self.heartbeat_ms < 4:
            raise ValueError("heartbeat_ms must be >= 4 (or None)")
        self.counters: Counters = dict.fromkeys(_COUNTER_NAMES, 0)
        self.specs: dict[str, DeviceSpec] = {}
        for spec in devices:
            allowed = PROTOCOLS_BY_ROLE.get(spec.role)
            if allowed is None:
                raise ValueError(f"device {spec.device_id!r}: unknown role {spec.role!r}; "
                                 f"known: {', '.join(PROTOCOLS_BY_ROLE)}")
            if spec.protocol not in allowed:
                raise ValueError(f"device {spec.device_id!r}: a {spec.role} speaks "
                                 f"{' or '.join(allowed)}, not {spec.protocol!r}")
            if spec.device_id in self.specs:
                raise ValueError(f"device id {spec.device_id!r} appears twice")
            self.specs[spec.device_id] = spec
        self._gate_readers = self._wire_gate_readers()
        # device side: survives gateway crashes
        self._tag_encoders: dict[str, wire.TagEncoder] = {}
        self._displays: dict[str, wire.ScaleDisplay] = {}
        self._mixers: dict[str, wire.MixerWagon | wire.ModbusFeeder] = {}
        for spec in self.specs.values():
            if spec.role in ("reader", "truck_reader"):
                self._tag_encoders[spec.device_id] = wire.TagEncoder(spec.protocol)
            elif spec.role == "animal_scale":
                self._tag_encoders[spec.device_id] = wire.TagEncoder("r2000")
                self._displays[spec.device_id] = wire.ScaleDisplay(
                    spec.protocol, decimals=_ANIMAL_DECIMALS)
            elif spec.role == "weighbridge":
                self._displays[spec.device_id] = wire.ScaleDisplay(spec.protocol)
            elif spec.role == "feeder":
                self._mixers[spec.device_id] = (
                    wire.MixerWagon(spec.device_id) if spec.protocol == "digistar"
                    else wire.ModbusFeeder(spec.device_id))
        self._down: dict[str, int] = {}  # device -> when its link went down (world state)
        self._wire_last: dict[str, int] = {}  # device -> last time a script put bytes on it
        self._now = start_ms
        self._event_ms = start_ms  # time of what is being processed (stores are dated by it)
        self._process_start_ms = start_ms
        self._last_store_ms = start_ms
        self._heartbeat_at: int | None = None
        self._seq = 0
        self._heap: list[tuple[int, int, int, int, str, bytes | str]] = []
        self._buffer: list[Reading] = []
        self._crashed = False
        self._closed = False
        self._handlers: dict[type, Callable[[Any], None]] = {
            TagRead: self._on_tag_read, AnimalWeighing: self._on_animal_weighing,
            TruckWeighing: self._on_truck_weighing, FeedDelivery: self._on_feed_delivery,
            PositionFix: self._on_position_fix, DeviceState: self._on_device_state,
            GatewayState: self._on_gateway_state,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._outbox = self._open_outbox()
        self._ports: dict[str, _Port] = {}
        self._port_list: list[_Port] = []
        self._truck_routes: dict[str, list[_WeighbridgePort]] = {}
        self._start(start_ms)

    # -- composition ----------------------------------------------------------------------
    def _wire_gate_readers(self) -> dict[str, list[str]]:
        """truck reader -> weighbridges it names trucks for (by place, else all)."""
        bridges = [s for s in self.specs.values() if s.role == "weighbridge"]
        routes: dict[str, list[str]] = {}
        for s in self.specs.values():
            if s.role != "truck_reader":
                continue
            same = [b.device_id for b in bridges if s.place is not None and b.place == s.place]
            routes[s.device_id] = same or [b.device_id for b in bridges]
        return routes

    def _gate_reader_for(self, bridge: str) -> str | None:
        return next((r for r, bs in self._gate_readers.items() if bridge in bs), None)

    def _open_outbox(self) -> Outbox:
        return Outbox(self.data_dir / OUTBOX_FILE, gateway_id=self.gateway_id,
                      disk_budget_bytes=self.disk_budget_bytes, clock_ms=lambda: self._now,
                      synchronous="NORMAL")

    def _make_port(self, spec: DeviceSpec, index: int) -> _Port:
        c, rs = self.counters, self.read_size
        dev = spec.device_id
        if spec.role in ("reader", "truck_reader"):
            window = self.truck_window_ms if spec.role == "truck_reader" \
                else self.sighting_window_ms
            return _ReaderPort(spec, index, c, rs, encoder=self._tag_encoders[dev],
                               window_ms=window)
        if spec.role == "animal_scale":
            return _AnimalScalePort(spec, index, c, rs, encoder=self._tag_encoders[dev],
                                    window_ms=self.sighting_window_ms)
        if spec.role == "weighbridge":
            return _WeighbridgePort(spec, index, c, rs)
        if spec.role == "feeder":
            mixer = self._mixers[dev]
            if isinstance(mixer, wire.ModbusFeeder):
                return _ModbusPort(spec, index, c, rs, pen_names=mixer.pens)
            return _DigiStarPort(spec, index, c, rs)
        return _GpsPort(spec, index, c, rs)

    def _start(self, t_ms: int) -> None:
        """A gateway process starts: fresh drivers; devices that answer go online."""
        self._event_ms = self._process_start_ms = self._last_store_ms = t_ms
        self._heartbeat_at = None
        self._ports = {}
        self._port_list = []
        for i, spec in enumerate(self.specs.values()):
            port = self._make_port(spec, i)
            self._ports[spec.device_id] = port
            self._port_list.append(port)
        self._truck_routes = {
            r: [p for b in bs if isinstance(p := self._ports[b], _WeighbridgePort)]
            for r, bs in self._gate_readers.items()}
        out: list[Reading] = []
        for port in self._port_list:
            if port.device_id in self._down:
                port.silent_due = t_ms + self.silence_timeout_ms
                self._schedule(port)
            else:
                port.connect(t_ms)
                out += self._availability(port, Event.FRAME, t_ms)
        self._store(out)
        self._schedule_heartbeat()

    # -- the event heap -------------------------------------------------------------------
    def _schedule(self, port: _Port) -> None:
        due = port.next_due()
        if due is not None and due != port.scheduled:
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, _TIMER, port.index, "", b""))
            port.scheduled = due

    def _schedule_heartbeat(self) -> None:
        """The heartbeat loop checks every quarter period from the process start; the first
        check at least ``heartbeat_ms`` after the last store is when one would be stored."""
        if self.heartbeat_ms is None:
            return
        step = self.heartbeat_ms // 4
        ready = self._last_store_ms + self.heartbeat_ms
        k = max(1, -(-(ready - self._process_start_ms) // step))
        due = self._process_start_ms + k * step
        if due != self._heartbeat_at:
            self._heartbeat_at = due
            # after everything else due at the same moment: a sighting flushed at the very
            # instant of a check counts as stored (the real loop and flush are never in step)
            heapq.heappush(self._heap, (due, _LAST, _TIMER, _HEARTBEAT, "", b""))

    def _heartbeat(self, t_ms: int) -> None:
        assert self.heartbeat_ms is not None
        if t_ms - self._last_store_ms >= self.heartbeat_ms:
            self._commit()
            depth = self._outbox.stats().depth
            self._store([Reading("heartbeat", f"gateway:{self.gateway_id}", t_ms, t_ms,
                                 {"outbox_readings": depth})])
        self._schedule_heartbeat()

    def _push(self, events: list[wire.WireEvent]) -> None:
        heap = self._heap
        for ev in events:
            port = self._ports[ev.device]
            self._seq += 1
            heapq.heappush(heap, (ev.t_ms, self._seq, _WIRE, port.index, ev.channel,
                                  ev.payload))
            if isinstance(ev.payload, bytes):
                self.counters["frames_encoded"] += 1
                self.counters["bytes_encoded"] += len(ev.payload)

    def _run(self, until_ms: int) -> None:
        """Play every queued frame and timer due at or before ``until_ms``, in time order."""
        heap = self._heap
        ports = self._port_list
        while heap and heap[0][0] <= until_ms:
            t, _, what, index, channel, payload = heapq.heappop(heap)
            if t > self._event_ms:
                self._event_ms = t
            if index == _HEARTBEAT:
                if self._heartbeat_at == t:
                    self._heartbeat_at = None
                    self._heartbeat(t)
                continue
            port = ports[index]
            if what == _TIMER:
                if port.scheduled != t:
                    continue  # superseded
                port.scheduled = None
                out: list[Reading] = []
                if port.silent_due is not None and port.silent_due <= t:
                    out += self._silent(port, port.silent_due)
                if port.due is not None and port.due <= t:
                    out += port.on_timer(t)
            else:
                down = self._down.get(port.device_id)
                if down is not None and t >= down:
                    self.counters["frames_dropped_link_down"] += 1
                    continue
                out = port.rx(t, channel, payload)
            if out:
                self._store(out)
            self._schedule(port)

    def _shifted(self, device: str, events: list[wire.WireEvent]) -> list[wire.WireEvent]:
        """Keep one device's scripts from overlapping: a script starts after the last one."""
        mine = [e for e in events if e.device == device and isinstance(e.payload, bytes)]
        if not mine:
            return events
        first = min(e.t_ms for e in mine)
        last = self._wire_last.get(device)
        shift = 0 if last is None or first > last else last + wire.SETTLE_STEP_MS - first
        if shift:
            events = [e._replace(t_ms=e.t_ms + shift) if e.device == device else e
                      for e in events]
        self._wire_last[device] = max(e.t_ms for e in mine) + shift
        return events

    # -- readings -------------------------------------------------------------------------
    def _store(self, readings: list[Reading]) -> None:
        """``Gateway.store``: tell weighbridges the trucks their gate readers saw, then keep
        the readings for the outbox."""
        if not readings:
            return
        if self._event_ms > self._last_store_ms:
            self._last_store_ms = self._event_ms
        self.counters["readings_emitted"] += len(readings)
        routes = self._truck_routes
        if routes:
            for r in readings:
                if r.kind == "tag_sighting" and r.device_id in routes:
                    for bridge in routes[r.device_id]:
                        bridge.set_truck(r.data["epc"], r.ts_ms)
        self._buffer += readings
        if len(self._buffer) >= self.commit_every:
            self._commit()

    def _commit(self) -> None:
        readings, self._buffer = self._buffer, []
        c = self.counters
        while readings:
            try:
                self._outbox.append(readings)
            except ReadingRejected as exc:
                # as Gateway.store: drop the reading that breaks the contract, keep the rest
                log.error("dropped a reading that breaks the uplink contract: %s (%r)", exc,
                          readings[exc.index])
                c["readings_rejected"] += 1
                del readings[exc.index]
                continue
            c["readings_stored"] += len(readings)
            c["outbox_commits"] += 1
            for r in readings:
                key = "readings_" + r.kind
                c[key] = c.get(key, 0) + 1
            break

    def _availability(self, port: _Port, event: Event, t_ms: int,
                      reason: str = "") -> list[Reading]:
        """The coordinator's table: the reading a transition emits, if any."""
        emit, port.state = transition(port.state, event)
        if emit is None:
            return []
        self.counters[f"{emit}_emitted"] += 1
        data = {"reason": reason} if emit == "device_offline" else {"driver": port.kind}
        return [Reading(emit, port.device_id, t_ms, t_ms, data)]

    def _silent(self, port: _Port, t_ms: int) -> list[Reading]:
        port.silent_due = None
        out = port.final_flush()
        return out + self._availability(
            port, Event.SILENT, t_ms,
            f"no good frame for {self.silence_timeout_ms / 1000:.1f} s")

    # -- observations ---------------------------------------------------------------------
    def feed(self, obs: Observation) -> None:
        """Hand one observation to the site: its device says it on the wire, the gateway
        decodes and aggregates it. Observations must come in time order (an earlier one is
        still taken, at its own time, and counted in ``out_of_order``)."""
        c = self.counters
        c["observations"] += 1
        if self._crashed:
            self._while_crashed(obs)
            return
        ts = obs.ts_ms
        heap = self._heap
        if heap and heap[0][0] <= ts:
            self._run(ts)
        if ts > self._now:
            self._now = ts
        elif ts < self._now:
            c["out_of_order"] += 1
        if ts > self._event_ms:
            self._event_ms = ts
        handler = self._handlers.get(type(obs))
        if handler is None:
            c["unknown_observation"] = c.get("unknown_observation", 0) + 1
            return
        handler(obs)

    def _port_for(self, obs: Any, cls: type[_Port] | tuple[type[_Port], ...]) -> Any:
        port = self._ports.get(obs.device)
        if port is None:
            self.counters["unknown_device"] += 1
            return None
        if not isinstance(port, cls):
            self.counters["wrong_role"] += 1
            return None
        if obs.device in self._down:
            self.counters["dropped_device_offline"] += 1
            return None
        return port

    def _on_tag_read(self, obs: TagRead) -> None:
        port = self._ports.get(obs.device)
        if type(port) is not _ReaderPort or obs.device in self._down:
            port = self._port_for(obs, (_ReaderPort, _AnimalScalePort))
            if port is None:
                return
        try:
            if isinstance(port, _AnimalScalePort):  # the scale's own reader
                self._deliver(port, obs.ts_ms, "tag", port.sight.encoder.encode(
                    obs.epc, obs.antenna, obs.rssi_dbm, obs.ts_ms))
                return
            assert isinstance(port, _ReaderPort)
            moved = port.tag(obs.ts_ms, obs.epc, obs.antenna, obs.rssi_dbm)
        except _ENCODE_ERRORS:
            self.counters["encode_errors"] += 1
            return
        if moved:
            self._schedule(port)

    def _deliver(self, port: _Port, t_ms: int, channel: str, payload: bytes) -> None:
        self.counters["frames_encoded"] += 1
        self.counters["bytes_encoded"] += len(payload)
        out = port.rx(t_ms, channel, payload)
        if out:
            self._store(out)
        self._schedule(port)

    def _script(self, device: str, make: Callable[[], list[wire.WireEvent]]) -> None:
        try:
            events = make()
        except _ENCODE_ERRORS as exc:
            self.counters["encode_errors"] += 1
            log.debug("device %s cannot send this observation: %s", device, exc)
            return
        self._push(self._shifted(device, events))

    def _on_animal_weighing(self, obs: AnimalWeighing) -> None:
        port = self._port_for(obs, _AnimalScalePort)
        if port is None:
            return
        self._script(obs.device, lambda: wire.animal_script(
            device=obs.device, display=self._displays[obs.device],
            reader=self._tag_encoders[obs.device], epc_hex=obs.epc,
            weight_kg=obs.weight_kg, t_ms=obs.ts_ms))

    def _on_truck_weighing(self, obs: TruckWeighing) -> None:
        port = self._port_for(obs, _WeighbridgePort)
        if port is None:
            return
        gate = self._gate_reader_for(obs.device)
        self._script(obs.device, lambda: wire.truck_script(
            device=obs.device, display=self._displays[obs.device], weight_kg=obs.weight_kg,
            t_ms=obs.ts_ms, truck_id=obs.truck_id, gate_reader=gate,
            gate_encoder=self._tag_encoders.get(gate) if gate is not None else None,
            read_lead_ms=self.truck_window_ms + 5_000))

    def _on_feed_delivery(self, obs: FeedDelivery) -> None:
        port = self._port_for(obs, (_DigiStarPort, _ModbusPort))
        if port is None:
            self._mixer_moves(obs)
            return
        mixer = self._mixers[obs.device]
        self._script(obs.device, lambda: mixer.deliver(obs.pen, obs.kg, obs.ts_ms))

    def _mixer_moves(self, obs: FeedDelivery) -> None:
        """The wagon unloads whether or not anyone listens: its device state moves on."""
        mixer = self._mixers.get(obs.device)
        if mixer is not None:
            try:
                mixer.deliver(obs.pen, obs.kg, obs.ts_ms)
            except _ENCODE_ERRORS:
                self.counters["encode_errors"] += 1

    def _on_position_fix(self, obs: PositionFix) -> None:
        port = self._port_for(obs, _GpsPort)
        if port is None:
            return
        try:
            data = wire.gps_fix_bytes(obs.ts_ms, obs.lat, obs.lon)
        except _ENCODE_ERRORS:
            self.counters["encode_errors"] += 1
            return
        self._deliver(port, obs.ts_ms, "rx", data)

    def _on_device_state(self, obs: DeviceState) -> None:
        self.set_device_online(obs.device, obs.online, obs.ts_ms, obs.reason)

    def _on_gateway_state(self, obs: GatewayState) -> None:
        if obs.what == "crash":
            if obs.up:
                self.restart(obs.ts_ms)
            else:
                self.crash(obs.ts_ms)
        else:  # uploads are the runner's business
            self.counters["ignored_network_state"] += 1

    def _while_crashed(self, obs: Observation) -> None:
        if isinstance(obs, GatewayState):
            self._on_gateway_state(obs)
        elif isinstance(obs, DeviceState):
            self.set_device_online(obs.device, obs.online, obs.ts_ms, obs.reason)
        else:
            self.counters["dropped_while_crashed"] += 1
            if isinstance(obs, FeedDelivery):
                self._mixer_moves(obs)

    # -- the runner's controls ------------------------------------------------------------
    def advance(self, now_ms: int) -> None:
        """The clock reached ``now_ms``: close what is due (sighting windows, settles, NMEA
        epochs, device timeouts, pair timeouts) and commit the readings to the outbox."""
        if self._crashed or self._closed:
            return
        self._run(now_ms)
        self._now = max(self._now, now_ms)
        self._event_ms = max(self._event_ms, now_ms)
        self._commit()

    def pending_envelopes(self, now_ms: int, limit: int) -> list[tuple[int, bytes]]:
        """What the gateway's upload loop would send at ``now_ms``: ``[(seq, envelope)]``,
        built and signed by ``Outbox.next_batch``. At most one: the outbox keeps one batch
        in flight and hands out the same bytes until :meth:`ack` (a resend after a failed
        upload is byte-identical); ack it and ask again for the next. Empty while crashed,
        when nothing is queued, or when ``Outbox.should_flush`` says to wait (fewer than
        ``batch_max_readings`` readings, none older than ``batch_max_age_ms``, no priority
        reading)."""
        if self._crashed or self._closed or limit < 1:
            return []
        self.advance(now_ms)
        ob = self._outbox
        if not ob.should_flush(now_ms, self.batch_max_age_ms, self.batch_max_readings):
            return []
        pending = ob.pending()
        batch = ob.next_batch(self.batch_max_readings, self.batch_max_bytes, self.private_key)
        if batch is None:
            return []
        if pending is None:
            self.counters["envelopes_built"] += 1
        return [(batch.seq, batch.envelope)]

    def ack(self, seq: int) -> None:
        """The cloud took batch ``seq`` (2xx). Lost if the gateway is down: it resends."""
        if self._crashed or self._closed:
            self.counters["acks_while_crashed"] += 1
            return
        if self._outbox.ack(seq):
            self.counters["envelopes_acked"] += 1

    def crash(self, now_ms: int) -> None:
        """``kill -9`` at ``now_ms``: what the drivers emitted is committed (see the module
        docstring), everything else the process held is gone."""
        if self._crashed or self._closed:
            return
        self._run(now_ms)
        self._now = max(self._now, now_ms)
        self._commit()
        # frames the devices send meanwhile reach no one; timers die with the process
        self.counters["frames_lost_in_crash"] += sum(1 for e in self._heap if e[2] == _WIRE)
        self._heap = []
        self._ports = {}
        self._port_list = []
        self._truck_routes = {}
        self._outbox.close()
        self._crashed = True
        self.counters["crashes"] += 1

    def restart(self, now_ms: int) -> None:
        """The gateway process starts again at ``now_ms`` on the same data_dir."""
        if not self._crashed or self._closed:
            return
        self._now = max(self._now, now_ms)
        self._outbox = self._open_outbox()
        self._crashed = False
        self.counters["restarts"] += 1
        self._wire_last.clear()
        self._start(self._now)

    def set_device_online(self, device: str, online: bool, now_ms: int,
                          reason: str = "") -> None:
        """A device's link goes down or comes back at ``now_ms`` (world state; kept across
        gateway crashes). Down: its frames stop, and ``silence_timeout_ms`` later the gateway
        declares it ``device_offline`` (after its driver's final flush), unless it came back
        first. Back: ``device_online`` with its first frame, at once. ``reason`` is the
        world's and is not sent (see the module docstring)."""
        if device not in self.specs:
            self.counters["unknown_device"] += 1
            return
        if online:
            self._down.pop(device, None)
        else:
            self._down.setdefault(device, now_ms)
        if self._crashed or self._closed:
            return
        self._run(now_ms)
        self._now = max(self._now, now_ms)
        self._event_ms = max(self._event_ms, now_ms)
        port = self._ports[device]
        if online:
            port.silent_due = None
            if port.state is not Availability.ONLINE:
                port.connect(now_ms)
            self._store(self._availability(port, Event.FRAME, now_ms))
        elif port.silent_due is None and port.state is not Availability.OFFLINE:
            port.silent_due = now_ms + self.silence_timeout_ms
        self._schedule(port)

    def close(self) -> None:
        """Commit what was emitted and close the outbox (open aggregation is not drained)."""
        if self._closed:
            return
        if not self._crashed:
            self._commit()
            self._outbox.close()
        self._closed = True

    @property
    def outbox(self) -> Outbox | None:
        """The open outbox (None while crashed or closed), for inspection."""
        return None if self._crashed or self._closed else self._outbox
