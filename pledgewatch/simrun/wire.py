"""The device side of the simulated links: what each device puts on the wire, and when, for
an observation of the world.

Every byte here comes from a ``protocols`` encoder in its device role (``r2000.encode_tag``,
``xk3190.encode_a9``, ``toledo.encode_frame``, ``digistar.encode_display``,
``modbus.encode_read_response``, ``nmea.encode_rmc``/``encode_gga``, ...), so the gateway side
(:mod:`pledgewatch.simrun.edge`) decodes exactly what a real device of that kind would send.

An observation is a *moment* (an animal settled on the scale at ``ts_ms``); a device says it
over several seconds (the animal walks on, the display settles, the animal walks off). The
scripts below turn one observation into timed :data:`WireEvent` s around that moment, placed
so that the moment itself is what the edge reports: a weigh's ``ts_ms`` is the first settled
frame, which the scripts put at the observation's ``ts_ms``; a feed event's ``ts_ms`` is the
first frame of the new plateau, also put there. Lead-in frames (a truck driving on) lie a few
seconds before it, confirmation frames (the plateau that proves the settle) a few seconds
after; the gateway side plays them in time order.

Device state that is physical survives a gateway crash and lives here: the mixer wagon's load,
the feeder controller's delivery counters. Idle output between events (an empty platform
streaming zeros, a receiver streaming the same fix) is not generated: it changes no reading
except the thinned live ``weight`` display, and generating it would cost most of the run.

Timing figures are this simulator's choices, not measured device behaviour; they are named
constants so a scenario that needs other ones can change them in one place.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, NamedTuple

from protocols import chafon, digistar, modbus, nmea, r2000, thingmagic, toledo, xk3190

__all__ = [
    "ANIMAL_READ_LEAD_MS",
    "FEED_STEP_MS",
    "MODBUS_PENS",
    "SETTLE_STEP_MS",
    "TRUCK_READ_LEAD_MS",
    "MixerWagon",
    "ModbusFeeder",
    "ScaleDisplay",
    "TagEncoder",
    "WireEvent",
    "animal_script",
    "gps_fix_bytes",
    "is_epc_hex",
    "truck_script",
]

SETTLE_STEP_MS: Final = 200  # indicator frames while a weight settles (XK3190: >= 10/s)
SETTLE_FRAMES: Final = 5  # settled frames sent: n_equal of the weighing pipeline (5)
TRUCK_RAMP: Final = (0.3, 0.6, 0.9)  # fractions of the weight shown while driving on, 1 s apart
TRUCK_READ_LEAD_MS: Final = 15_000  # the gate reader sees the truck this long before it settles
TRUCK_LEAVE_MS: Final = 4_000  # after the settle the truck drives off: 0 kg this long after
ANIMAL_READ_LEAD_MS: Final = 2_000  # the scale's reader reads the ear tag as the animal steps on
ANIMAL_LEAVE_MS: Final = 2_500
FEED_STEP_MS: Final = 1_000  # Digi-Star display frames while the wagon rests or moves
WAGON_CAPACITY_KG: Final = 6_000.0  # the wagon loads up to this (or the delivery) when short
MODBUS_PENS: Final = 60  # pen counters the simulated feeder controller exposes (driver max)
MODBUS_POLL_MS: Final = 1_000  # the Modbus driver's default poll interval
TAG_FRAME_MEMO: Final = 1 << 18  # encoded tag frames remembered per reader at most
_U32: Final = 1 << 32
_U16: Final = 1 << 16


class WireEvent(NamedTuple):
    """Something that happens on a device's link at ``t_ms``. ``channel``:

    ``rx``
        ``payload`` bytes the device sent on its link;
    ``tag``
        bytes from the R2000 reader built into an animal scale (it identifies the animal);
    ``pen``
        ``payload`` is the pen the mixer wagon unloads into from now on (what a bunk tag or
        the operator tells the gateway; the Digi-Star wire carries no pen);
    ``ident``
        ``payload`` is a truck id seen by a plate camera (no protocol: trucks whose id is not
        an EPC, or a weighbridge without an RFID gate reader).
    """

    t_ms: int
    device: str
    channel: str
    payload: bytes | str


def is_epc_hex(text: str) -> bool:
    """Whether ``text`` is an EPC as readers report it: hex, whole 16-bit words, 2..62 bytes."""
    if not 4 <= len(text) <= 124 or len(text) % 4:
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


# -- RFID readers ----------------------------------------------------------------------------
class TagEncoder:
    """One reader's tag-read frames in its protocol: ``r2000`` (real-time inventory tag frame),
    ``thingmagic`` (streamed 0x22 record with metadata; its timestamp counts from the start of
    continuous reading, see :meth:`start_stream`) or ``chafon`` (288M inventory reply, one tag).
    Raises ValueError for a read the protocol cannot carry (odd EPC length, antenna or RSSI out
    of range)."""

    def __init__(self, protocol: str, *, address: int = 1) -> None:
        if protocol not in ("r2000", "thingmagic", "chafon"):
            raise ValueError(f"no tag encoder for protocol {protocol!r}")
        self.protocol = protocol
        self.address = address
        self.origin_ms = 0
        # R2000 and Chafon frames depend only on (EPC, antenna, RSSI): a herd's reads repeat
        # them, so the encoder's output is remembered (bounded; ThingMagic frames carry time)
        self._memo: dict[tuple[str, int, int], bytes] | None = (
            None if protocol == "thingmagic" else {})

    def start_stream(self, t_ms: int) -> bytes:
        """The module's answer to a continuous-read start sent at ``t_ms`` (ThingMagic only;
        other protocols answer nothing the edge needs)."""
        self.origin_ms = t_ms
        return thingmagic.encode_continuous_read_started() if self.protocol == "thingmagic" \
            else b""

    def encode(self, epc_hex: str, antenna: int, rssi_dbm: int, t_ms: int) -> bytes:
        memo = self._memo
        if memo is None:
            return self._encode(epc_hex, antenna, rssi_dbm, t_ms)
        key = (epc_hex, antenna, rssi_dbm)
        data = memo.get(key)
        if data is None:
            if len(memo) >= TAG_FRAME_MEMO:
                memo.clear()
            data = memo[key] = self._encode(epc_hex, antenna, rssi_dbm, t_ms)
        return data

    def _encode(self, epc_hex: str, antenna: int, rssi_dbm: int, t_ms: int) -> bytes:
        epc = bytes.fromhex(epc_hex)
        if self.protocol == "r2000":
            return r2000.encode_tag(self.address, epc=epc, antenna=antenna, rssi_dbm=rssi_dbm)
        if self.protocol == "thingmagic":
            rec = thingmagic.TagRecord(epc=epc, rssi_dbm=rssi_dbm, antenna=antenna,
                                       timestamp_ms=(t_ms - self.origin_ms) % _U32)
            return thingmagic.encode_stream_tag(rec)
        # Chafon reports raw RSSI bytes whose scale is vendor-specific (the edge keeps them
        # raw); the R2000 offset gives plausible raw values.
        raw = min(0xFF, max(0, rssi_dbm + r2000.RSSI_OFFSET_DBM))
        return chafon.encode_inventory_reply_288(self.address, [(epc, raw)], antenna=antenna)


# -- scale indicators ------------------------------------------------------------------------
class ScaleDisplay:
    """A weight indicator's continuous output: ``xk3190`` (A9 frames, no motion flag) or
    ``toledo`` (18-byte frames with the motion bit). ``decimals`` is what the display shows;
    weights are rounded to it, as the indicator would."""

    def __init__(self, protocol: str, *, decimals: int = 0) -> None:
        if protocol not in ("xk3190", "toledo"):
            raise ValueError(f"no scale display for protocol {protocol!r}")
        if not 0 <= decimals <= 3:
            raise ValueError("decimals must be 0..3")
        self.protocol = protocol
        self.decimals = decimals

    def frame(self, weight_kg: float, *, motion: bool = False) -> bytes:
        w = round(max(0.0, weight_kg), self.decimals)
        if self.protocol == "xk3190":
            return xk3190.encode_a9(w, self.decimals)
        return toledo.encode_frame(w, code=2 + self.decimals, motion=motion)


def _settle(device: str, display: ScaleDisplay, weight_kg: float, t_ms: int, *,
            ramp: tuple[float, ...], ramp_step_ms: int, leave_ms: int) -> list[WireEvent]:
    """Frames of one platform visit: ``ramp`` fractions of the weight (in motion) before
    ``t_ms``, ``SETTLE_FRAMES`` settled frames from ``t_ms``, then the empty platform."""
    out = [WireEvent(t_ms - (len(ramp) - i) * ramp_step_ms, device, "rx",
                     display.frame(weight_kg * f, motion=True)) for i, f in enumerate(ramp)]
    settled = display.frame(weight_kg)
    out += [WireEvent(t_ms + i * SETTLE_STEP_MS, device, "rx", settled)
            for i in range(SETTLE_FRAMES)]
    out.append(WireEvent(t_ms + leave_ms, device, "rx", display.frame(0.0)))
    return out


def truck_script(*, device: str, display: ScaleDisplay, weight_kg: float, t_ms: int,
                 truck_id: str, gate_reader: str | None, gate_encoder: TagEncoder | None,
                 read_lead_ms: int = TRUCK_READ_LEAD_MS) -> list[WireEvent]:
    """A truck's weighing at ``t_ms`` (the settle). With an RFID ``gate_reader`` and an EPC
    ``truck_id`` the truck's tag is read by that reader ``read_lead_ms`` before (the gateway
    then tells the weighbridge from the reader's sighting, as ``gateway.app`` does, so the
    lead must exceed the reader's sighting window plus the 3 s drive-on); otherwise a plate
    camera reports ``truck_id`` at the same moment."""
    read_ms = t_ms - read_lead_ms
    if gate_reader is not None and gate_encoder is not None and is_epc_hex(truck_id):
        ident = WireEvent(read_ms, gate_reader, "rx",
                          gate_encoder.encode(truck_id, 1, -55, read_ms))
    else:
        ident = WireEvent(read_ms, device, "ident", truck_id)
    return [ident, *_settle(device, display, weight_kg, t_ms, ramp=TRUCK_RAMP,
                            ramp_step_ms=1_000, leave_ms=TRUCK_LEAVE_MS)]


def animal_script(*, device: str, display: ScaleDisplay, reader: TagEncoder, epc_hex: str,
                  weight_kg: float, t_ms: int) -> list[WireEvent]:
    """An animal on a walk-over or chute scale: its ear tag read by the scale's reader
    :data:`ANIMAL_READ_LEAD_MS` before the settle at ``t_ms``, then the weight frames."""
    read_ms = t_ms - ANIMAL_READ_LEAD_MS
    tag = WireEvent(read_ms, device, "tag", reader.encode(epc_hex, 1, -50, read_ms))
    return [tag, *_settle(device, display, weight_kg, t_ms, ramp=(0.5,), ramp_step_ms=1_000,
                          leave_ms=ANIMAL_LEAVE_MS)]


# -- TMR mixer -------------------------------------------------------------------------------
class MixerWagon:
    """A TMR mixer wagon with a Digi-Star indicator streaming display frames (SCOREM 1, kg,
    whole kilograms). Its load is physical state: it survives a gateway crash."""

    def __init__(self, device: str, *, capacity_kg: float = WAGON_CAPACITY_KG) -> None:
        self.device = device
        self.capacity_kg = capacity_kg
        self.level_kg = 0.0

    def _frame(self, level_kg: float, motion: bool) -> bytes:
        return digistar.encode_display(round(level_kg), decimals=0, motion=motion)

    def _plateau(self, t_ms: int, level_kg: float) -> list[WireEvent]:
        """Three resting frames over two seconds: long enough for the edge's plateau rule
        (``min_plateau_s`` 2, ``min_readings`` 2), and within tolerance of a plateau the edge
        already rests on, so they fire nothing on their own."""
        frame = self._frame(level_kg, False)
        return [WireEvent(t_ms + i * FEED_STEP_MS, self.device, "rx", frame) for i in range(3)]

    def _moving(self, t_ms: int, start_kg: float, end_kg: float) -> list[WireEvent]:
        mid = (start_kg + end_kg) / 2
        return [WireEvent(t_ms, self.device, "rx", self._frame(mid, True)),
                WireEvent(t_ms + FEED_STEP_MS, self.device, "rx", self._frame(end_kg, True))]

    def deliver(self, pen: str, kg: float, t_ms: int) -> list[WireEvent]:
        """Unload ``kg`` into ``pen`` so that the new plateau starts at ``t_ms``; load first
        (up to the capacity) when the wagon holds less. The wagon's rest before the unload is
        shown first, so an edge that restarted meanwhile learns the level it starts from."""
        kg = max(0.0, kg)
        load = kg > self.level_kg
        # times before t_ms: [load: plateau(3) moving(2)] plateau(3) pen moving(2) | plateau(3)
        t = t_ms - 2 * FEED_STEP_MS - 3 * FEED_STEP_MS - (5 * FEED_STEP_MS if load else 0)
        out: list[WireEvent] = []
        if load:
            out += self._plateau(t, self.level_kg)
            target = max(self.capacity_kg, kg)
            out += self._moving(t + 3 * FEED_STEP_MS, self.level_kg, target)
            self.level_kg = target
            t += 5 * FEED_STEP_MS
        out += self._plateau(t, self.level_kg)
        out.append(WireEvent(t + 2 * FEED_STEP_MS, self.device, "pen", pen))
        after = self.level_kg - kg
        out += self._moving(t + 3 * FEED_STEP_MS, self.level_kg, after)
        self.level_kg = after
        out += self._plateau(t_ms, after)
        return out


class ModbusFeeder:
    """A feeder controller polled over Modbus RTU in the register layout of the edge's Modbus
    driver defaults (weight int32 at 0.1 kg in registers 0-1, status in 2, one uint16 counter
    per pen from register 10 at 1 kg a count). ``poll`` answers a poll cycle (the weight
    block, then the counter block); pens get counters in order of first delivery. Counters
    and the fraction of a kilogram not yet counted are physical state."""

    def __init__(self, device: str, *, unit_id: int = 1) -> None:
        self.device = device
        self.unit_id = unit_id
        self.pens: list[str] = []
        self._kg = [0.0] * MODBUS_PENS  # delivered per pen, ever

    def pen_index(self, pen: str) -> int | None:
        if pen in self.pens:
            return self.pens.index(pen)
        if len(self.pens) >= MODBUS_PENS:
            return None
        self.pens.append(pen)
        return len(self.pens) - 1

    def poll(self, t_ms: int) -> WireEvent:
        weight = modbus.encode_read_response(self.unit_id, [0, 0, 0b1])  # empty, stable
        counters = modbus.encode_read_response(
            self.unit_id, [int(kg) % _U16 for kg in self._kg])
        return WireEvent(t_ms, self.device, "rx", weight + counters)

    def deliver(self, pen: str, kg: float, t_ms: int) -> list[WireEvent]:
        """Polls before, at and after a delivery of ``kg`` into ``pen`` at ``t_ms``: the
        driver closes a delivery at the first poll that finds its counter unchanged.
        ValueError when the controller has no counter left for a new pen."""
        i = self.pen_index(pen)
        if i is None:
            raise ValueError(f"feeder {self.device} has no counter left for pen {pen!r} "
                             f"({MODBUS_PENS} pens)")
        before = self.poll(t_ms - MODBUS_POLL_MS)
        self._kg[i] += max(0.0, kg)
        return [before, self.poll(t_ms), self.poll(t_ms + MODBUS_POLL_MS)]


# -- GPS -------------------------------------------------------------------------------------
def gps_fix_bytes(t_ms: int, lat: float, lon: float) -> bytes:
    """One receiver epoch: RMC (date, time, position) then GGA (fix quality, satellites)."""
    when = dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.UTC)
    return (nmea.encode_rmc(time_utc=when.time(), date=when.date(), lat=lat, lon=lon,
                            speed_knots=None)
            + nmea.encode_gga(time_utc=when.time(), lat=lat, lon=lon))
