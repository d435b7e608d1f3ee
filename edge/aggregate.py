"""Edge aggregation: turn raw device messages into the uplink readings worth sending.

Everything here is pure and clock-free: times are integer milliseconds since the epoch passed
in by the caller (``recv_ms`` is the gateway's receive time, ``ts_ms`` the event time), and no
class reads a clock, sleeps or does I/O. Outputs are :class:`protocols.uplink.Reading` objects
whose ``data`` satisfies :data:`protocols.uplink.READING_KINDS`.

RFID sightings (:class:`TagSightingAggregator`)
    Reads of one reader are deduplicated per (identity EPC, antenna) per tumbling window of
    ``window_ms`` aligned to multiples of ``window_ms``. The window a read belongs to is
    chosen by its *receive* time, because :meth:`~TagSightingAggregator.flush` closes windows
    by the gateway clock and a reader's clock may be off; ``first_ms``/``last_ms`` are event
    times (the read's ``device_ts_ms`` when it has one, else its receive time), and the
    reading's ``ts_ms`` is ``first_ms``, its ``recv_ms`` the receive time of the last read.
    ``device_ts_ms`` must be epoch milliseconds: a driver whose reader counts from another
    origin (ThingMagic: ms since the search started) converts it first. A read's
    ``read_count`` (readers that pre-aggregate) counts that many reads. A read arriving after
    its window was flushed opens a second sighting for that window (counted in
    ``late_reads``); nothing is dropped.

    **Motion counter (pledgewatch's own convention).** Vendors encode tag motion counters in
    many incompatible ways, so the simulated motion ear tags use this layout, which no
    standard defines: a 96-bit EPC whose byte 0 is ``0xE7``, bytes 1..7 the tag serial, bytes
    8..9 reserved, bytes 10..11 a big-endian 16-bit counter that increments with movement and
    wraps at 65536. The sighting's identity EPC is the EPC with the counter bytes zeroed, so
    all reads of one animal aggregate together whatever the counter said. The sighting then
    carries ``motion`` (the last counter value read in the window) and ``motion_delta`` (the
    movement counted between the window's reads of that tag). Counter steps are read with
    serial-number arithmetic (RFC 1982): a step of 1..32767 (mod 65536) is movement across the
    wrap if need be; a step of 32768 or more is a stale read arriving late and is ignored.
    Sightings of an EPC that decodes with :func:`protocols.iso11784.from_epc` also carry
    ``iso11784``, the animal ID in its 15-digit decimal form.

Weighbridge (:class:`StableWeightDetector`, :class:`WeighTicketPairer`)
    The detector emits one ``weigh_event`` per settle: the device's stable flag when it sends
    one (and ``use_device_flag``), else ``n_equal`` consecutive readings within
    ``tolerance_kg`` of each other. It re-arms when the weight leaves that level by more than
    the tolerance or drops below ``min_weight_kg`` (the platform is empty). A *visit* is the
    time between the platform becoming occupied and empty again; each event carries its visit
    number and start. The pairer attaches a truck ID to each weigh (the latest
    :meth:`~WeighTicketPairer.set_truck` seen during the visit or up to ``ident_lead_ms``
    before it started, and after the previous visit's last weigh) and pairs a truck's weighs
    from two different visits into a ``weigh_ticket``. Every weigh ends in exactly one ticket
    or one ``weigh_event`` with ``event="unmatched"`` and a ``reason``: ``timeout`` (the truck
    did not come back within ``pair_timeout_ms``), ``no_truck_id``, ``replaced`` (the truck
    settled again in the same visit; the later weigh counts) or ``overflow`` (more than
    ``max_open`` trucks waited; the oldest gives way). A ticket's ``ts_ms`` is the second
    weigh's; ``gross_kg`` is the heavier weigh, ``tare_kg`` the lighter, ``direction``
    ``inbound`` when the truck arrived heavier (a delivery), else ``outbound``. Without a
    pairer (an animal platform scale) the detector's events are sent as they are.

TMR mixer (:class:`TmrEventDetector`)
    Plateaus are runs of readings that are not in motion (``stable`` is not ``False``), stay
    within ``tolerance_kg`` and last ``min_plateau_ms``. When a plateau differs from the last
    reference level by more than ``threshold_kg`` a ``feed_event`` fires: ``load`` (rise) or
    ``unload`` (fall, attributed to the pen that was in force for most of the movement, as
    told by :meth:`~TmrEventDetector.set_pen`). Smaller changes accumulate until they pass
    the threshold. ``ts_ms`` is the first reading of the new plateau (when the weight
    settled), ``start_ms`` the last reading on the plateau before. ``tolerance_kg`` should be
    at least one display division. An unload that spans two pens without a pause is one
    event, given to the pen in force longest.

GPS (:class:`GpsThinner`, :func:`thin_track`)
    A fix is kept when it is the first, when it lies more than ``min_distance_m`` (great-circle
    distance, as haversine gives it) from the last kept fix, or when ``max_interval_ms`` or more
    passed since the last kept fix. Fixes without a position are dropped and counted. The
    streaming class and the vectorised batch function make bit-identical decisions: both
    compare squared chord lengths between unit vectors built by the same numpy code (the
    chord is a monotone function of the haversine distance), so no rounding difference
    between ``math`` and numpy can make them disagree at the threshold.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
import re
import statistics
from collections.abc import Iterable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from protocols import iso11784
from protocols.messages import Position, TagRead, Weight
from protocols.uplink import Reading

__all__ = [
    "DEFAULT_IDENT_LEAD_MS",
    "DEFAULT_PAIR_TIMEOUT_MS",
    "EARTH_RADIUS_M",
    "MAX_EPC_CACHE",
    "MAX_IDENTS",
    "MAX_OPEN_SIGHTINGS",
    "MAX_OPEN_TRUCKS",
    "MAX_PEN_HISTORY",
    "MAX_PLATEAU_RUN",
    "MOTION_COUNTER_MOD",
    "MOTION_EPC_HEADER",
    "GpsThinner",
    "StableWeightDetector",
    "TagSightingAggregator",
    "TmrEventDetector",
    "WeighTicketPairer",
    "haversine_m",
    "motion_step",
    "split_motion_epc",
    "thin_track",
]

MOTION_EPC_HEADER: Final = 0xE7  # pledgewatch convention, see the module docstring
MOTION_COUNTER_MOD: Final = 1 << 16
_MOTION_HALF: Final = MOTION_COUNTER_MOD >> 1
_MOTION_EPC_HEX_LEN: Final = 24  # 96 bits
_MOTION_EPC_RE: Final = re.compile(r"[Ee]7[0-9A-Fa-f]{22}")
MAX_EPC_CACHE: Final = 65_536  # EPC -> (identity, counter) parses kept between reads
MAX_OPEN_SIGHTINGS: Final = 200_000  # above this the oldest window closes early
MAX_IDENTS: Final = 1024  # gate identifications kept for the pairer
MAX_OPEN_TRUCKS: Final = 10_000  # trucks waiting for their second weigh
MAX_PEN_HISTORY: Final = 256  # pen changes kept for attributing unloads
MAX_PLATEAU_RUN: Final = 4096  # readings kept while a TMR plateau is being confirmed
DEFAULT_PAIR_TIMEOUT_MS: Final = 24 * 3600 * 1000
DEFAULT_IDENT_LEAD_MS: Final = 5 * 60 * 1000
EARTH_RADIUS_M: Final = 6_371_008.8  # IUGG mean radius
_THIN_FIRST_WINDOW: Final = 16
_THIN_MAX_WINDOW: Final = 1 << 16

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_device_id(device_id: str) -> None:
    if not isinstance(device_id, str) or not 0 < len(device_id) <= 128:
        raise ValueError("device_id must be a non-empty string of at most 128 characters")


# -- RFID sightings -------------------------------------------------------------------------
def split_motion_epc(epc_hex: str) -> tuple[str, int | None]:
    """``(identity EPC, motion counter)`` of an EPC in hex. For a motion tag (see the module
    docstring) the identity is the EPC with the counter bytes zeroed; any other EPC is its own
    identity, with counter ``None``. The identity is uppercase."""
    if len(epc_hex) == _MOTION_EPC_HEX_LEN and _MOTION_EPC_RE.fullmatch(epc_hex):
        return epc_hex[:20].upper() + "0000", int(epc_hex[20:], 16)
    return epc_hex.upper(), None


def motion_step(previous: int, current: int) -> int | None:
    """Movement between two counter values, across the wrap; ``None`` when ``current`` is
    behind ``previous`` (a stale read, RFC 1982 serial-number comparison)."""
    step = (current - previous) % MOTION_COUNTER_MOD
    return step if step < _MOTION_HALF else None


class _Sighting:
    __slots__ = ("count", "delta", "first_ms", "last_ms", "motion", "recv_ms", "rssi_max")

    def __init__(self, count: int, ts: int, recv_ms: int, rssi: float | None,
                 motion: int | None) -> None:
        self.count = count
        self.first_ms = ts
        self.last_ms = ts
        self.recv_ms = recv_ms
        self.rssi_max = rssi
        self.motion = motion
        self.delta = 0


class TagSightingAggregator:
    """Deduplicate one reader's tag reads into ``tag_sighting`` readings per (identity EPC,
    antenna) per tumbling window of ``window_ms`` (see the module docstring).

    Counters: ``reads`` (reads fed, with ``read_count`` weights), ``sightings`` (emitted),
    ``late_reads`` (reads for an already flushed window), ``early_closes`` (windows closed
    before their end because more than :data:`MAX_OPEN_SIGHTINGS` were open).
    """

    def __init__(self, window_ms: int, device_id: str, *,
                 max_open: int = MAX_OPEN_SIGHTINGS) -> None:
        if type(window_ms) is not int:
            raise ValueError(f"window_ms must be an int, got {window_ms!r}")
        _check_positive("window_ms", window_ms)
        _check_positive("max_open", max_open)
        _check_device_id(device_id)
        self.window_ms = window_ms
        self.device_id = device_id
        self.max_open = max_open
        self._windows: dict[int, dict[tuple[str, int | None], _Sighting]] = {}
        self._open = 0
        self._ready: list[tuple[int, str, int | None, _Sighting]] = []
        self._flushed_until: int | None = None  # windows starting before this are closed
        self._split_cache: dict[str, tuple[str, int | None]] = {}
        self._iso_cache: dict[str, str | None] = {}
        self.reads = 0
        self.sightings = 0
        self.late_reads = 0
        self.early_closes = 0

    @property
    def open_sightings(self) -> int:
        return self._open

    def feed(self, recv_ms: int, read: TagRead) -> None:
        """Add one read received at ``recv_ms`` (gateway clock)."""
        epc = read.epc
        split = self._split_cache.get(epc)
        if split is None:
            if len(self._split_cache) >= MAX_EPC_CACHE:
                self._split_cache.clear()
            split = self._split_cache[epc] = split_motion_epc(epc)
        identity, counter = split
        ts = read.device_ts_ms if read.device_ts_ms is not None else recv_ms
        n = read.read_count if read.read_count is not None and read.read_count > 0 else 1
        self.reads += n
        start = recv_ms - recv_ms % self.window_ms
        if self._flushed_until is not None and start < self._flushed_until:
            self.late_reads += n
        window = self._windows.get(start)
        if window is None:
            window = self._windows[start] = {}
        key = (identity, read.antenna)
        s = window.get(key)
        rssi = read.rssi_dbm
        if s is None:
            window[key] = _Sighting(n, ts, recv_ms, rssi, counter)
            self._open += 1
            if self._open > self.max_open:
                self._close_oldest()
            return
        s.count += n
        if ts < s.first_ms:
            s.first_ms = ts
        if ts > s.last_ms:
            s.last_ms = ts
        if recv_ms > s.recv_ms:
            s.recv_ms = recv_ms
        if rssi is not None and (s.rssi_max is None or rssi > s.rssi_max):
            s.rssi_max = rssi
        if counter is not None:
            if s.motion is None:
                s.motion = counter
            else:
                step = motion_step(s.motion, counter)
                if step is not None:
                    s.delta += step
                    s.motion = counter

    def feed_many(self, reads: Iterable[tuple[int, TagRead]]) -> None:
        for recv_ms, read in reads:
            self.feed(recv_ms, read)

    def _close_oldest(self) -> None:
        start = min(self._windows)
        self._take(start)
        self.early_closes += 1

    def _take(self, start: int) -> None:
        window = self._windows.pop(start)
        self._open -= len(window)
        self._ready.extend((start, epc, ant, s) for (epc, ant), s in window.items())

    def flush(self, now_ms: int) -> list[Reading]:
        """Readings of every window that ended at or before ``now_ms`` (and of windows closed
        early), oldest window first, in first-read order within a window."""
        for start in sorted(self._windows):
            if start + self.window_ms > now_ms:
                break
            self._take(start)
        end = now_ms - now_ms % self.window_ms
        if self._flushed_until is None or end > self._flushed_until:
            self._flushed_until = end
        return self._emit()

    def drain(self) -> list[Reading]:
        """Readings of every open window, ended or not (shutdown)."""
        for start in sorted(self._windows):
            self._take(start)
        return self._emit()

    def _emit(self) -> list[Reading]:
        ready, self._ready = self._ready, []
        ready.sort(key=lambda item: item[0])  # stable: first-read order within a window
        out = [self._reading(epc, ant, s) for _, epc, ant, s in ready]
        self.sightings += len(out)
        return out

    def _iso(self, epc: str) -> str | None:
        if epc not in self._iso_cache:
            if len(self._iso_cache) >= MAX_EPC_CACHE:
                self._iso_cache.clear()
            animal = iso11784.from_epc(epc)
            self._iso_cache[epc] = animal.decimal if animal is not None else None
        return self._iso_cache[epc]

    def _reading(self, epc: str, antenna: int | None, s: _Sighting) -> Reading:
        data: dict[str, Any] = {"epc": epc, "antenna": antenna, "count": s.count,
                                "first_ms": s.first_ms, "last_ms": s.last_ms,
                                "rssi_max_dbm": s.rssi_max}
        if s.motion is not None:
            data["motion"] = s.motion
            data["motion_delta"] = s.delta
        iso = self._iso(epc)
        if iso is not None:
            data["iso11784"] = iso
        return Reading("tag_sighting", self.device_id, s.first_ms, s.recv_ms, data)


# -- runs of readings within a tolerance -------------------------------------------------------
class _Run:
    """The latest consecutive readings whose spread (max - min) is within ``tol``: adding a
    reading drops the oldest ones until the spread fits again. At most ``cap`` are kept."""

    __slots__ = ("cap", "hi", "items", "lo", "tol")

    def __init__(self, tol: float, cap: int) -> None:
        self.tol = tol
        self.cap = cap
        self.items: collections.deque[tuple[int, float]] = collections.deque()
        self.lo = self.hi = 0.0

    def __len__(self) -> int:
        return len(self.items)

    def clear(self) -> None:
        self.items.clear()

    def add(self, ts_ms: int, value: float) -> None:
        items = self.items
        if not items:
            self.lo = self.hi = value
        elif value < self.lo or value > self.hi:
            lo, hi = min(self.lo, value), max(self.hi, value)
            if hi - lo > self.tol:
                lo = hi = value
                keep = 0
                for _, v in reversed(items):
                    nlo, nhi = min(lo, v), max(hi, v)
                    if nhi - nlo > self.tol:
                        break
                    lo, hi = nlo, nhi
                    keep += 1
                for _ in range(len(items) - keep):
                    items.popleft()
            self.lo, self.hi = lo, hi
        items.append((ts_ms, value))
        if len(items) > self.cap:
            items.popleft()
            self.lo = min(v for _, v in items)
            self.hi = max(v for _, v in items)

    @property
    def first_ms(self) -> int:
        return self.items[0][0]

    def median_low(self) -> float:
        return statistics.median_low(v for _, v in self.items)


# -- weighbridge ----------------------------------------------------------------------------
class StableWeightDetector:
    """One ``weigh_event`` per settle of a weighbridge or platform scale (see the module
    docstring). ``feed`` returns the event or ``None``."""

    def __init__(self, *, device_id: str, n_equal: int = 5, tolerance_kg: float = 20.0,
                 min_weight_kg: float = 500.0, use_device_flag: bool = True) -> None:
        _check_device_id(device_id)
        if n_equal < 1:
            raise ValueError(f"n_equal must be >= 1, got {n_equal}")
        if not tolerance_kg >= 0:
            raise ValueError(f"tolerance_kg must be >= 0, got {tolerance_kg}")
        self.device_id = device_id
        self.n_equal = n_equal
        self.tolerance_kg = float(tolerance_kg)
        self.min_weight_kg = float(min_weight_kg)
        self.use_device_flag = use_device_flag
        self._run = _Run(self.tolerance_kg, n_equal)
        self._armed = True
        self._level: float | None = None
        self._visit = 0
        self._visit_start_ms: int | None = None  # None: the platform is empty
        self.events = 0
        self.ignored = 0  # readings without a usable weight (unknown unit, overload)

    @property
    def visit(self) -> int | None:
        """Number of the visit in progress, ``None`` while the platform is empty."""
        return self._visit if self._visit_start_ms is not None else None

    def feed(self, ts_ms: int, weight: Weight, *, recv_ms: int | None = None
             ) -> Reading | None:
        w = weight.weight_kg
        if w is None or weight.overload or not math.isfinite(w):
            self.ignored += 1
            self._run.clear()
            return None
        if w < self.min_weight_kg:
            self._visit_start_ms = None
            self._armed = True
            self._level = None
            self._run.clear()
            return None
        if self._visit_start_ms is None:
            self._visit += 1
            self._visit_start_ms = ts_ms
        if not self._armed:
            assert self._level is not None
            if abs(w - self._level) <= self.tolerance_kg:
                return None
            self._armed = True
            self._run.clear()
        if self.use_device_flag and weight.stable is not None:
            if not weight.stable:
                self._run.clear()
                return None
            return self._settle(ts_ms, w, "device", recv_ms)
        run = self._run
        run.add(ts_ms, w)
        if len(run) < self.n_equal:
            return None
        first_ts = run.first_ms
        value = run.median_low()
        return self._settle(first_ts, value, "n_equal", recv_ms if recv_ms is not None
                            else ts_ms)

    def _settle(self, ts_ms: int, weight_kg: float, by: str, recv_ms: int | None
                ) -> Reading:
        self._armed = False
        self._level = weight_kg
        self._run.clear()
        self.events += 1
        assert self._visit_start_ms is not None
        return Reading("weigh_event", self.device_id, ts_ms,
                       recv_ms if recv_ms is not None else ts_ms,
                       {"weight_kg": weight_kg, "event": "weigh", "stable_by": by,
                        "visit": self._visit, "visit_start_ms": self._visit_start_ms})


@dataclasses.dataclass(frozen=True, slots=True)
class _OpenWeigh:
    truck_id: str
    visit: int | str
    event: Reading


class WeighTicketPairer:
    """Pair the weighs of a truck into ``weigh_ticket`` readings (see the module docstring).

    Feed it the detector's ``weigh_event`` readings in time order; :meth:`feed` returns the
    event again with its ``truck_id`` (send that instead of the detector's), then any ticket
    or ``unmatched`` event it settled. Call :meth:`flush` now and then for timeouts.
    """

    def __init__(self, *, device_id: str, pair_timeout_ms: int = DEFAULT_PAIR_TIMEOUT_MS,
                 ident_lead_ms: int = DEFAULT_IDENT_LEAD_MS,
                 max_open: int = MAX_OPEN_TRUCKS) -> None:
        _check_device_id(device_id)
        _check_positive("pair_timeout_ms", pair_timeout_ms)
        _check_positive("max_open", max_open)
        if ident_lead_ms < 0:
            raise ValueError(f"ident_lead_ms must be >= 0, got {ident_lead_ms}")
        self.device_id = device_id
        self.pair_timeout_ms = pair_timeout_ms
        self.ident_lead_ms = ident_lead_ms
        self.max_open = max_open
        self._idents: list[tuple[int, int, str]] = []  # (ts_ms, arrival order, truck_id)
        self._ident_seq = 0
        self._open: dict[str, _OpenWeigh] = {}  # insertion order = in-weigh order
        self._visit: int | str | None = None
        self._visit_bound_ms: int | None = None  # idents at or before it belong to old visits
        self._last_weigh_ms: int | None = None
        self.tickets = 0
        self.unmatched = 0

    @property
    def open_trucks(self) -> list[str]:
        return list(self._open)

    def set_truck(self, truck_id: str, ts_ms: int) -> None:
        """A truck was identified at the gate (RFID tag, plate) at ``ts_ms``."""
        self._ident_seq += 1
        bisect.insort(self._idents, (ts_ms, self._ident_seq, truck_id))
        if len(self._idents) > MAX_IDENTS:
            del self._idents[0]

    def _truck_for(self, ts_ms: int, visit_start_ms: int) -> str | None:
        lo = visit_start_ms - self.ident_lead_ms
        if self._visit_bound_ms is not None:
            lo = max(lo, self._visit_bound_ms + 1)
        i = bisect.bisect_right(self._idents, (ts_ms, math.inf, ""))
        found = None
        if i > 0 and self._idents[i - 1][0] >= lo:
            found = self._idents[i - 1][2]
        # identifications before this visit's window can never be used again
        drop = bisect.bisect_left(self._idents, (lo, -1, ""))
        del self._idents[:drop]
        return found

    def feed(self, event: Reading) -> list[Reading]:
        if event.kind != "weigh_event":
            raise ValueError(f"WeighTicketPairer takes weigh_event readings, not {event.kind}")
        data = event.data
        visit: int | str = data.get("visit", f"ts:{event.ts_ms}")
        visit_start = data.get("visit_start_ms", event.ts_ms)
        if visit != self._visit:
            self._visit = visit
            self._visit_bound_ms = self._last_weigh_ms
        self._last_weigh_ms = event.ts_ms
        truck = self._truck_for(event.ts_ms, visit_start)
        weigh = dataclasses.replace(event, data={**data, "truck_id": truck})
        out = [weigh]
        if truck is None:
            out.append(self._unmatched(weigh, "no_truck_id", event.recv_ms))
            return out
        prev = self._open.pop(truck, None)
        if prev is None:
            self._open[truck] = _OpenWeigh(truck, visit, weigh)
            if len(self._open) > self.max_open:
                oldest = next(iter(self._open))
                out.append(self._unmatched(self._open.pop(oldest).event, "overflow",
                                           event.recv_ms))
        elif prev.visit == visit:
            out.append(self._unmatched(prev.event, "replaced", event.recv_ms))
            self._open[truck] = _OpenWeigh(truck, visit, weigh)
        else:
            out.append(self._ticket(truck, prev.event, weigh))
        return out

    def flush(self, now_ms: int) -> list[Reading]:
        """``unmatched`` events of trucks whose first weigh is ``pair_timeout_ms`` old."""
        out = []
        for truck, ow in list(self._open.items()):
            if ow.event.ts_ms + self.pair_timeout_ms <= now_ms:
                del self._open[truck]
                out.append(self._unmatched(ow.event, "timeout", now_ms))
        out.sort(key=lambda r: r.ts_ms)
        return out

    def _unmatched(self, weigh: Reading, reason: str, recv_ms: int) -> Reading:
        self.unmatched += 1
        data = {"weight_kg": weigh.data["weight_kg"], "event": "unmatched", "reason": reason,
                "truck_id": weigh.data.get("truck_id"), "in_ms": weigh.ts_ms}
        return Reading("weigh_event", self.device_id, weigh.ts_ms, max(recv_ms, weigh.recv_ms),
                       data)

    def _ticket(self, truck: str, first: Reading, second: Reading) -> Reading:
        self.tickets += 1
        w_in = float(first.data["weight_kg"])
        w_out = float(second.data["weight_kg"])
        gross, tare = max(w_in, w_out), min(w_in, w_out)
        data = {"gross_kg": gross, "tare_kg": tare, "net_kg": round(gross - tare, 6),
                "truck_id": truck, "in_ms": first.ts_ms, "out_ms": second.ts_ms,
                "direction": "inbound" if w_in > w_out else "outbound"}
        return Reading("weigh_ticket", self.device_id, second.ts_ms, second.recv_ms, data)


# -- TMR mixer ------------------------------------------------------------------------------
class TmrEventDetector:
    """``feed_event`` readings (``load``/``unload``) from a mixer scale's weight stream (see
    the module docstring). ``feed`` returns the event or ``None``."""

    def __init__(self, *, device_id: str, threshold_kg: float = 20.0,
                 tolerance_kg: float = 5.0, min_plateau_ms: int = 2000,
                 min_readings: int = 2) -> None:
        _check_device_id(device_id)
        if not threshold_kg > tolerance_kg >= 0:
            raise ValueError("need threshold_kg > tolerance_kg >= 0")
        if min_plateau_ms < 0 or min_readings < 1:
            raise ValueError("need min_plateau_ms >= 0 and min_readings >= 1")
        self.device_id = device_id
        self.threshold_kg = float(threshold_kg)
        self.tolerance_kg = float(tolerance_kg)
        self.min_plateau_ms = min_plateau_ms
        self.min_readings = min_readings
        self._run = _Run(self.tolerance_kg, MAX_PLATEAU_RUN)
        self._plateau: float | None = None  # the confirmed plateau the scale rests on now
        self._rested_ms: int | None = None  # last reading on a confirmed plateau
        self._level: float | None = None  # reference for the next event
        self._pens: list[tuple[int, int, str | None]] = []  # (ts_ms, order, pen)
        self._pen_seq = 0
        self.events = 0

    def set_pen(self, pen: str | None, ts_ms: int) -> None:
        """From ``ts_ms`` on, the wagon unloads into ``pen`` (``None``: no pen known)."""
        self._pen_seq += 1
        bisect.insort(self._pens, (ts_ms, self._pen_seq, pen))
        if len(self._pens) > MAX_PEN_HISTORY:
            del self._pens[0]

    def pen_during(self, start_ms: int, end_ms: int) -> str | None:
        """The pen in force for the longest time within ``[start_ms, end_ms]`` (``None``
        counts as a pen: no pen known); the later pen wins a tie. For an empty interval, the
        pen in force at ``end_ms``."""
        i = bisect.bisect_right(self._pens, (end_ms, math.inf, None))
        if end_ms <= start_ms:
            return self._pens[i - 1][2] if i else None
        totals: dict[str | None, int] = {}
        until = end_ms
        for ts, _, pen in reversed(self._pens[:i]):
            begin = max(ts, start_ms)
            totals[pen] = totals.get(pen, 0) + until - begin
            until = begin
            if until <= start_ms:
                break
        if until > start_ms:
            totals[None] = totals.get(None, 0) + until - start_ms
        best: str | None = None
        best_len = -1
        for pen, length in totals.items():  # latest first: ties keep the later pen
            if length > best_len:
                best, best_len = pen, length
        return best

    def feed(self, ts_ms: int, weight_kg: float | None, stable: bool | None, *,
             recv_ms: int | None = None) -> Reading | None:
        if weight_kg is None or not math.isfinite(weight_kg):
            return None
        if stable is False:
            self._plateau = None
            self._run.clear()
            return None
        if self._plateau is not None and abs(weight_kg - self._plateau) <= self.tolerance_kg:
            self._rested_ms = ts_ms
            return None
        self._plateau = None
        run = self._run
        run.add(ts_ms, weight_kg)
        if len(run) < self.min_readings or ts_ms - run.first_ms < self.min_plateau_ms:
            return None
        first_ms = run.first_ms
        value = run.median_low()
        run.clear()
        self._plateau = value
        start_ms = self._rested_ms if self._rested_ms is not None else first_ms
        self._rested_ms = ts_ms
        level = self._level
        if level is None:
            self._level = value
            return None
        delta = value - level
        if abs(delta) <= self.threshold_kg:
            return None
        self._level = value
        self.events += 1
        kind = "load" if delta > 0 else "unload"
        pen = self.pen_during(start_ms, first_ms) if kind == "unload" else None
        data = {"event": kind, "kg": round(abs(delta), 6), "pen": pen,
                "before_kg": level, "after_kg": value, "start_ms": start_ms}
        return Reading("feed_event", self.device_id, first_ms,
                       recv_ms if recv_ms is not None else ts_ms, data)


# -- GPS ------------------------------------------------------------------------------------
def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres on a sphere of :data:`EARTH_RADIUS_M`."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dlat, dlon = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dlat / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _chord2_threshold(min_distance_m: float) -> float:
    """Squared chord (unit sphere) of a great-circle distance."""
    half = min(min_distance_m / (2 * EARTH_RADIUS_M), math.pi / 2)
    return (2 * math.sin(half)) ** 2


def _unit_vectors(lat_deg: FloatArray, lon_deg: FloatArray
                  ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Unit vectors of points on the sphere. The trigonometry is numpy's on both paths;
    products and sums are IEEE-exact the same in numpy and Python, so :class:`GpsThinner`
    (which multiplies Python floats) gets bit-identical vectors."""
    lat = np.radians(lat_deg)
    lon = np.radians(lon_deg)
    c = np.cos(lat)
    return c * np.cos(lon), c * np.sin(lon), np.sin(lat)


def _unit_vector(lat_deg: float, lon_deg: float) -> tuple[float, float, float]:
    """:func:`_unit_vectors` of one point."""
    rad = np.radians(np.array((lat_deg, lon_deg), dtype=np.float64))
    s_lat, s_lon = np.sin(rad).tolist()
    c_lat, c_lon = np.cos(rad).tolist()
    return c_lat * c_lon, c_lat * s_lon, s_lat


def _valid(lat: float | None, lon: float | None) -> bool:
    return (lat is not None and lon is not None and math.isfinite(lat) and math.isfinite(lon)
            and -90.0 <= lat <= 90.0)


class GpsThinner:
    """Streaming GPS thinning (see the module docstring). :meth:`keep` decides for raw
    coordinates; :meth:`feed` turns a :class:`Position` into a ``position`` reading or
    ``None``. Counters: ``kept``, ``thinned``, ``dropped_no_fix``."""

    def __init__(self, min_distance_m: float, max_interval_ms: int, *, device_id: str) -> None:
        _check_device_id(device_id)
        if not min_distance_m >= 0:
            raise ValueError(f"min_distance_m must be >= 0, got {min_distance_m}")
        _check_positive("max_interval_ms", max_interval_ms)
        self.device_id = device_id
        self.min_distance_m = float(min_distance_m)
        self.max_interval_ms = max_interval_ms
        self._thr = _chord2_threshold(self.min_distance_m)
        self._last: tuple[int, float, float, float] | None = None  # ts, x, y, z
        self.kept = 0
        self.thinned = 0
        self.dropped_no_fix = 0

    def keep(self, ts_ms: int, lat: float | None, lon: float | None, fix: bool = True) -> bool:
        if not fix or not _valid(lat, lon):
            self.dropped_no_fix += 1
            return False
        assert lat is not None and lon is not None
        x, y, z = _unit_vector(lat, lon)
        last = self._last
        if last is not None and ts_ms - last[0] < self.max_interval_ms:
            dx, dy, dz = x - last[1], y - last[2], z - last[3]
            if not dx * dx + dy * dy + dz * dz > self._thr:
                self.thinned += 1
                return False
        self._last = (ts_ms, x, y, z)
        self.kept += 1
        return True

    def feed(self, ts_ms: int, pos: Position, *, recv_ms: int | None = None
             ) -> Reading | None:
        if not self.keep(ts_ms, pos.lat, pos.lon, pos.fix):
            return None
        data: dict[str, Any] = {"lat": pos.lat, "lon": pos.lon}
        for name in ("speed_knots", "course_deg", "altitude_m", "satellites", "hdop"):
            value = getattr(pos, name)
            if value is not None:
                data[name] = value
        return Reading("position", self.device_id, ts_ms,
                       recv_ms if recv_ms is not None else ts_ms, data)


def thin_track(lat: npt.ArrayLike, lon: npt.ArrayLike, ts_ms: npt.ArrayLike, *,
               min_distance_m: float, max_interval_ms: int,
               fix: npt.ArrayLike | None = None) -> BoolArray:
    """Mask of the fixes a fresh :class:`GpsThinner` would keep from this batch. NaN or
    out-of-range coordinates and ``fix=False`` entries are never kept."""
    lat_a = np.asarray(lat, dtype=np.float64)
    lon_a = np.asarray(lon, dtype=np.float64)
    ts_a = np.asarray(ts_ms, dtype=np.int64)
    if not lat_a.shape == lon_a.shape == ts_a.shape or lat_a.ndim != 1:
        raise ValueError("lat, lon and ts_ms must be 1-d arrays of one length")
    if not min_distance_m >= 0:
        raise ValueError(f"min_distance_m must be >= 0, got {min_distance_m}")
    _check_positive("max_interval_ms", max_interval_ms)
    valid = np.isfinite(lat_a) & np.isfinite(lon_a) & (np.abs(lat_a) <= 90.0)
    if fix is not None:
        valid &= np.asarray(fix, dtype=bool)
    mask = np.zeros(lat_a.shape, dtype=bool)
    idx = np.flatnonzero(valid)
    m = idx.size
    if m == 0:
        return mask
    x, y, z = _unit_vectors(lat_a[idx], lon_a[idx])
    t = ts_a[idx]
    thr = _chord2_threshold(float(min_distance_m))
    kept = [0]
    i = 0
    start = 1
    window = _THIN_FIRST_WINDOW
    while start < m:
        end = min(m, start + window)
        dx = x[start:end] - x[i]
        dy = y[start:end] - y[i]
        dz = z[start:end] - z[i]
        hit = ((dx * dx + dy * dy + dz * dz) > thr) | ((t[start:end] - t[i]) >= max_interval_ms)
        j = int(np.argmax(hit))
        if hit[j]:
            gap = j + 1
            i = start + j
            kept.append(i)
            start = i + 1
            window = max(_THIN_FIRST_WINDOW, 2 * gap)
        else:
            start = end
            window = min(2 * window, _THIN_MAX_WINDOW)
    mask[idx[kept]] = True
    return mask
