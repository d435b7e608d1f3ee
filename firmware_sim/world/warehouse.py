"""The simulated bonded warehouse: pledged lots in zones, trucks that deliver and collect
goods over a weighbridge with a tag reader, release orders for legitimate shipments, GPS
trackers on trucks, forklifts and staff, and the warehouse incidents.

As for the ranch, everything that decides the truth (every truck visit, its weights, the
stock of every lot, every path) is planned at construction; :meth:`Warehouse.blocks` turns
the plan into device observations one day at a time.

Weighbridge tickets follow domain.md 2.6: net = gross - tare; a delivery weighs in loaded
and out empty (net = in - out), a shipment weighs in empty and out loaded (net = out - in).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Iterator, Sequence
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from firmware_sim.world import layout
from firmware_sim.world.observations import Observation, PositionFix, TagRead, TruckWeighing
from firmware_sim.world.ranch import NEVER, TruthPiece
from firmware_sim.world.registry import ReleaseOrderRecord
from firmware_sim.world.scenario import (
    DAY_MS,
    MINUTE_MS,
    IncidentSpec,
    WarehouseSpec,
)

__all__ = ["Visit", "Warehouse"]

F64 = npt.NDArray[np.float64]

BRIDGE_DIVISION_KG: Final = 10.0  # display division of the weighbridge indicator (assumed)
_BRIDGE_GAP_MS: Final = 3 * MINUTE_MS  # one truck on the bridge at a time
_LOAD_MS: Final = (35 * MINUTE_MS, 70 * MINUTE_MS)
_YARD_DRIVE_MS: Final = 4 * MINUTE_MS  # bridge <-> zone
_GATE_TO_BRIDGE_MS: Final = 2 * MINUTE_MS
_TRUCK_BUSY_MS: Final = 4 * 3600_000  # a truck is not sent twice within this window
_GPS_NOISE_M: Final = 2.0
_GPS_NOISE_CAP_M: Final = 6.0  # every on-site waypoint is >= 15 m inside the fence
_FORKLIFT_SPEED: Final = 2.5  # m/s
_STAFF_SPEED: Final = 1.3
_TRUCK_SPEED: Final = 4.0

# places in local metres (x east, y north); see layout.WAREHOUSE_OUTLINE_M
_GATE: Final = (0.0, -85.0)
_FENCE_GATE: Final = (0.0, -100.0)  # on the fence line: the way out
_BRIDGE: Final = (0.0, -60.0)
_DEPOT: Final = (-120.0, -60.0)
_OFFICE: Final = (120.0, -70.0)


def _zone_xy(z: int, zones: int) -> tuple[float, float]:
    cols = min(zones, 4)
    rows = math.ceil(zones / cols)
    c, r = z % cols, z // cols
    x = -105.0 + (210.0 * (c + 0.5) / cols)
    y = -25.0 + (75.0 * (r + 0.5) / rows)
    return x, y


@dataclasses.dataclass(slots=True)
class Visit:
    """One truck visit. ``direction`` ``in`` delivers goods, ``out`` collects them."""

    direction: Literal["in", "out"]
    truck: int
    arrive_ms: int
    lot: int = -1
    in_ms: int = 0
    out_ms: int = 0
    load_ms: int = 0
    payload_kg: float = 0.0  # true goods moved
    w_in: float = 0.0  # recorded first weigh
    w_out: float = 0.0  # recorded second weigh
    release: str | None = None
    incident: IncidentSpec | None = None
    dropped: bool = False


class _Path:
    """A piecewise-linear track in local metres: keyframes (t, x, y)."""

    def __init__(self, t: float, xy: tuple[float, float]) -> None:
        self.t = [float(t)]
        self.x = [xy[0]]
        self.y = [xy[1]]

    @property
    def end(self) -> float:
        return self.t[-1]

    @property
    def here(self) -> tuple[float, float]:
        return self.x[-1], self.y[-1]

    def go(self, xy: tuple[float, float], speed: float) -> None:
        d = math.hypot(xy[0] - self.x[-1], xy[1] - self.y[-1])
        self.t.append(self.t[-1] + max(1.0, d / speed * 1000.0))
        self.x.append(xy[0])
        self.y.append(xy[1])

    def wait_until(self, t: float) -> None:
        if t > self.t[-1]:
            self.t.append(t)
            self.x.append(self.x[-1])
            self.y.append(self.y[-1])

    def at(self, ts: F64) -> tuple[F64, F64]:
        return np.interp(ts, self.t, self.x), np.interp(ts, self.t, self.y)


class Warehouse:
    def __init__(self, spec: WarehouseSpec, *, site_index: int, start_ms: int, end_ms: int,
                 seed: int, incidents: Sequence[IncidentSpec], bank: str) -> None:
        self.spec = spec
        self.site = spec.id
        self.site_index = site_index
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.seed = seed
        self.bank = bank
        self.offset_ms = spec.utc_offset_h * 3_600_000
        rng = np.random.default_rng([seed, 0x3A4E, site_index])
        self.lot_codes = [layout.lot_code(spec.id, n) for n in range(spec.lots)]
        self.lot_zone = [n % spec.zones for n in range(spec.lots)]
        self.zone_names = [f"Z{chr(ord('A') + z)}" for z in range(spec.zones)]
        self.lot_kg0 = np.round(spec.lot_kg * rng.uniform(0.9, 1.1, spec.lots), -1)
        self.truck_ids = [layout.truck_id(site_index, n) for n in range(spec.trucks)]
        self.plates = [layout.truck_plate(spec.id, n) for n in range(spec.trucks)]
        self.trackers = [layout.truck_tracker_id(spec.id, n) for n in range(spec.trucks)]
        self.tare = np.round(spec.truck_tare_kg * rng.uniform(0.9, 1.1, spec.trucks), -1)
        self.bridge = layout.weighbridge_id(spec.id)
        self.truck_reader = layout.truck_reader_id(spec.id)
        self.forklifts = [layout.forklift_id(spec.id, n) for n in range(spec.forklifts)]
        self.staff = [layout.staff_id(spec.id, n) for n in range(spec.staff)]
        self.polygon = layout.polygon(spec.lat, spec.lon, layout.WAREHOUSE_OUTLINE_M)
        self.pieces: list[TruthPiece] = []
        self.release_orders: list[ReleaseOrderRecord] = []
        # tracker -> excursions (start, end, speed m/s, distance beyond the fence m)
        self.excursions: dict[str, list[tuple[int, int, float, float]]] = {}
        self.visits = self._plan_visits(rng, incidents)
        self._plan_stock(rng)
        for inc in incidents:
            if inc.kind == "geofence_exit":
                self._plan_excursion(inc)

    # -- plan ------------------------------------------------------------------------------
    def _local_windows(self) -> list[tuple[int, int, int]]:
        """(local midnight, open, close) of every local day the run touches."""
        out = []
        m = ((self.start_ms + self.offset_ms) // DAY_MS) * DAY_MS - self.offset_ms
        o, c = self.spec.working_hours_min
        while m < self.end_ms:
            out.append((m, m + o * MINUTE_MS, m + c * MINUTE_MS))
            m += DAY_MS
        return out

    def _truck_of(self, name: str | None, rng: np.random.Generator) -> int:
        if name is None:
            return int(rng.integers(0, self.spec.trucks))
        if name in self.truck_ids:
            return self.truck_ids.index(name)
        return self.plates.index(name)

    def _plan_visits(self, rng: np.random.Generator, incidents: Sequence[IncidentSpec]
                     ) -> list[Visit]:
        spec = self.spec
        fixed: list[Visit] = []
        for inc in incidents:
            irng = np.random.default_rng([self.seed, 0x1C1D, inc.index])
            if inc.kind == "outbound_without_release":
                fixed.append(Visit("out", self._truck_of(inc.truck, irng), inc.at_ms,
                                   incident=inc))
            elif inc.kind == "tare_fraud":
                fixed.append(Visit("in", self._truck_of(inc.truck, irng), inc.at_ms,
                                   incident=inc))
        regular: list[Visit] = []
        for _, open_ms, close_ms in self._local_windows():
            lo = max(open_ms, self.start_ms)
            hi = min(close_ms - 90 * MINUTE_MS, self.end_ms - 3 * 3_600_000)
            if hi <= lo:
                continue
            share = (hi - lo) / (close_ms - 90 * MINUTE_MS - open_ms)
            for direction, rate in (("in", spec.inbound_per_day),
                                    ("out", spec.releases_per_day)):
                for _ in range(int(rng.poisson(rate * share))):
                    regular.append(Visit(direction, -1, int(rng.integers(lo, hi))))  # type: ignore[arg-type]
        regular.sort(key=lambda v: v.arrive_ms)
        busy: list[list[tuple[int, int]]] = [[] for _ in range(spec.trucks)]
        for v in fixed:
            busy[v.truck].append((v.arrive_ms - _TRUCK_BUSY_MS, v.arrive_ms + _TRUCK_BUSY_MS))
        for v in regular:
            free = [t for t in range(spec.trucks)
                    if all(not (a <= v.arrive_ms < b) for a, b in busy[t])]
            if not free:
                v.dropped = True
                continue
            v.truck = int(free[int(rng.integers(0, len(free)))])
            busy[v.truck].append((v.arrive_ms - _TRUCK_BUSY_MS // 2,
                                  v.arrive_ms + _TRUCK_BUSY_MS // 2))
        visits = sorted([*fixed, *(v for v in regular if not v.dropped)],
                        key=lambda v: (v.arrive_ms, v.truck))
        # the bridge takes one truck at a time: first weighs in arrival order, each second
        # weigh after the load; every weigh at least _BRIDGE_GAP_MS after the previous one
        heap: list[tuple[int, int, int]] = []  # (desired ms, visit, phase)
        for i, v in enumerate(visits):
            v.load_ms = int(rng.integers(*_LOAD_MS))
            heapq.heappush(heap, (v.arrive_ms + _GATE_TO_BRIDGE_MS, i, 0))
        last = -NEVER
        while heap:
            want, i, phase = heapq.heappop(heap)
            t = int(max(want, last + _BRIDGE_GAP_MS))
            v = visits[i]
            if phase == 0:
                v.in_ms = t
                heapq.heappush(heap, (t + 2 * _YARD_DRIVE_MS + v.load_ms, i, 1))
            else:
                v.out_ms = t
            last = t
        return visits

    def _plan_stock(self, rng: np.random.Generator) -> None:
        spec = self.spec
        stock = self.lot_kg0.astype(np.float64).copy()
        events: list[list[tuple[int, float]]] = [[] for _ in range(spec.lots)]
        # no release order of a legitimate shipment may cover a shipment without a release
        # (same truck or same lot), so the cloud cannot match it to a real order
        blocked: list[tuple[int, int, int]] = []  # (out ms, truck, lot)
        for v in self.visits:
            if v.incident is not None and v.direction == "out":
                v.lot = (self.lot_codes.index(v.incident.lot) if v.incident.lot
                         else int(np.argmax(self.lot_kg0)))
                blocked.append((v.out_ms, v.truck, v.lot))
        # ... and legitimate shipments leave enough in its lot for it
        reserved = [(v.out_ms, v.lot, v.incident.quantity_kg or spec.payload_kg)
                    for v in self.visits if v.incident is not None and v.direction == "out"]
        order = sorted(range(len(self.visits)), key=lambda i: self.visits[i].out_ms)
        n_release = 0
        for i in order:
            v = self.visits[i]
            inc = v.incident
            tare = float(self.tare[v.truck])
            if v.direction == "in":
                v.lot = (self.lot_codes.index(inc.lot) if inc is not None and inc.lot
                         else int(rng.integers(0, spec.lots)))
                v.payload_kg = float(np.round(spec.payload_kg * rng.uniform(0.85, 1.1), -1))
                v.w_in = _div(tare + v.payload_kg + rng.normal(0, 15))
                v.w_out = _div(tare + rng.normal(0, 15))
                if inc is not None:  # tare_fraud: the empty weigh-out recorded light
                    v.w_out = _div(tare * (1.0 - (inc.percent or 8.0) / 100.0))
                    self.pieces.append(TruthPiece(
                        inc, v.out_ms, v.out_ms, lots=[self.lot_codes[v.lot]],
                        trucks=[self.truck_ids[v.truck]], devices=[self.bridge], detail={
                            "percent": inc.percent, "true_tare_kg": tare,
                            "recorded_tare_kg": v.w_out, "gross_kg": v.w_in,
                            "true_net_kg": v.payload_kg, "ticket_net_kg": v.w_in - v.w_out,
                            "in_ms": v.in_ms, "out_ms": v.out_ms}))
                stock[v.lot] += v.payload_kg
                events[v.lot].append((v.out_ms, v.payload_kg))
                continue
            if inc is not None:  # outbound_without_release (lot chosen above)
                want = inc.quantity_kg or float(np.round(spec.payload_kg, -1))
                v.payload_kg = float(min(want, stock[v.lot]))
                self.pieces.append(TruthPiece(
                    inc, v.out_ms, v.out_ms, lots=[self.lot_codes[v.lot]],
                    trucks=[self.truck_ids[v.truck]], devices=[self.bridge], detail={
                        "quantity_kg": v.payload_kg, "in_ms": v.in_ms, "out_ms": v.out_ms,
                        "plate": self.plates[v.truck]}))
            else:
                day0 = self._local_midnight(v.arrive_ms)
                valid = (day0, max(day0 + DAY_MS, v.out_ms + 3_600_000))
                covered = [(t, lot) for ms, t, lot in blocked if valid[0] <= ms <= valid[1]]
                bad_lots = {lot for _, lot in covered}
                if any(t == v.truck for t, _ in covered):
                    v.dropped = True
                    continue
                want = float(np.round(spec.payload_kg * rng.uniform(0.8, 1.05), -3))
                keep = np.zeros(spec.lots)
                for ms, lot, kg in reserved:
                    if ms > v.out_ms:
                        keep[lot] += kg
                ok = [n for n in range(spec.lots)
                      if stock[n] - keep[n] >= want + 1000.0 and n not in bad_lots]
                if not ok:
                    v.dropped = True
                    continue
                v.lot = int(ok[int(rng.integers(0, len(ok)))])
                n_release += 1
                ref = f"RO-{self.site}-{n_release:04d}"
                self.release_orders.append(ReleaseOrderRecord(
                    site=self.site, truck_id=self.truck_ids[v.truck],
                    lot=self.lot_codes[v.lot], quantity_kg=want, valid_from_ms=valid[0],
                    valid_to_ms=valid[1], reference=ref, bank=self.bank))
                v.release = ref
                # loaded to the order, a little under (never over) it
                v.payload_kg = float(np.round(want * (1.0 - abs(rng.normal(0, 0.002))), -1))
            v.w_in = _div(tare + rng.normal(0, 15))
            v.w_out = _div(tare + v.payload_kg + rng.normal(0, 15))
            stock[v.lot] -= v.payload_kg
            events[v.lot].append((v.out_ms, -v.payload_kg))
        self.visits = [v for v in self.visits if not v.dropped]
        self.stock_events = events

    def _local_midnight(self, t: int) -> int:
        return ((t + self.offset_ms) // DAY_MS) * DAY_MS - self.offset_ms

    def _plan_excursion(self, inc: IncidentSpec) -> None:
        tracker = inc.tracker or (self.forklifts + self.staff + self.trackers)[0]
        speed = (_FORKLIFT_SPEED if tracker in self.forklifts else
                 _STAFF_SPEED if tracker in self.staff else _TRUCK_SPEED)
        dist = inc.distance_m or 400.0
        dur = inc.duration_ms or 30 * MINUTE_MS
        self.excursions.setdefault(tracker, []).append((inc.at_ms, inc.at_ms + dur, speed,
                                                        dist))
        _, (exit_ms, return_ms) = self._excursion_path(tracker, inc.at_ms, inc.at_ms + dur,
                                                       speed, dist)
        self.pieces.append(TruthPiece(inc, exit_ms, return_ms, devices=[tracker], detail={
            "distance_m": dist, "exit_ms": exit_ms, "return_ms": return_ms,
            "attached_to": self._attached(tracker)}))

    def _attached(self, tracker: str) -> str:
        if tracker in self.forklifts:
            return "forklift"
        if tracker in self.staff:
            return "staff"
        return f"truck:{self.truck_ids[self.trackers.index(tracker)]}"

    def _home(self, tracker: str) -> tuple[float, float]:
        if tracker in self.forklifts:
            return _DEPOT
        if tracker in self.staff:
            return _OFFICE
        return _BRIDGE

    def _excursion_path(self, tracker: str, t0: int, t1: int, speed: float, dist: float
                        ) -> tuple[_Path, tuple[int, int]]:
        """From home out through the gate to ``dist`` m beyond the fence, wait, and back
        home by ``t1``; returns the path and (fence crossing out, fence crossing back)."""
        home = self._home(tracker)
        p = _Path(t0, home)
        p.go(_GATE, speed)
        p.go(_FENCE_GATE, speed)
        exit_ms = int(p.end)
        outside = (_FENCE_GATE[0], _FENCE_GATE[1] - dist)
        p.go(outside, speed)
        back = _Path(0.0, outside)  # time the way back to fit it before t1
        back.go(_FENCE_GATE, speed)
        to_fence = back.end
        back.go(_GATE, speed)
        back.go(home, speed)
        total_back = back.end
        p.wait_until(max(p.end, t1 - total_back))
        return_ms = int(p.end + to_fence)
        p.go(_FENCE_GATE, speed)
        p.go(_GATE, speed)
        p.go(home, speed)
        return p, (exit_ms, return_ms)

    # -- truth -----------------------------------------------------------------------------
    def stock_at(self, t: int) -> F64:
        """True stock of every lot (kg) at ``t`` (goods move at the second weigh)."""
        s = self.lot_kg0.astype(np.float64).copy()
        for n, ev in enumerate(self.stock_events):
            s[n] += sum(d for ts, d in ev if ts <= t)
        return s

    def value(self, t: int, price_per_kg: float, haircut: float,
              mask: npt.NDArray[np.bool_] | None = None) -> float:
        s = self.stock_at(t)
        if mask is not None:
            s = s * mask
        return float(s.sum() * price_per_kg * (1.0 - haircut))

    # -- streams ---------------------------------------------------------------------------
    def blocks(self) -> Iterator[tuple[int, int, list[Observation]]]:
        block = 0
        d0 = self.start_ms
        while d0 < self.end_ms:
            d1 = min(d0 + DAY_MS, self.end_ms)
            rng = np.random.default_rng([self.seed, 0xB10D, self.site_index, block])
            out: list[Observation] = []
            for v in self.visits:
                if d0 <= v.arrive_ms < d1:
                    out += self._visit_obs(v, rng)
            out += self._yard_obs(d0, d1, rng)
            yield d0, d1, out
            d0 = d1
            block += 1

    def _fixes(self, device: str, path: _Path, t0: float, t1: float,
               rng: np.random.Generator) -> list[Observation]:
        step = self.spec.gps_interval_ms
        first = math.ceil(t0 / step) * step  # trackers report on whole intervals
        ts = np.arange(first, t1, step, dtype=np.float64)
        if not ts.size:
            return []
        x, y = path.at(ts)
        noise = np.clip(rng.normal(0.0, _GPS_NOISE_M, (2, ts.size)), -_GPS_NOISE_CAP_M,
                        _GPS_NOISE_CAP_M)
        x = x + noise[0]
        y = y + noise[1]
        lat0, lon0 = self.spec.lat, self.spec.lon
        lat = lat0 + y / layout.METRES_PER_DEG_LAT
        lon = lon0 + x / (layout.METRES_PER_DEG_LAT * math.cos(math.radians(lat0)))
        return [PositionFix(int(t), self.site, device, round(a, 7), round(o, 7))
                for t, a, o in zip(ts.tolist(), lat.tolist(), lon.tolist(), strict=True)]

    def _visit_obs(self, v: Visit, rng: np.random.Generator) -> list[Observation]:
        out: list[Observation] = []
        tid = self.truck_ids[v.truck]
        for t, phase, w in ((v.in_ms, "in", v.w_in), (v.out_ms, "out", v.w_out)):
            k = int(rng.integers(3, 7))
            reads = t - 60_000 + rng.integers(0, 20_000, k)
            out += [TagRead(int(r), self.site, self.truck_reader, tid, 1,
                            int(rng.integers(-62, -48))) for r in np.sort(reads)]
            out.append(TruckWeighing(int(t), self.site, self.bridge, tid, phase,  # type: ignore[arg-type]
                                     float(w)))
        zone = _zone_xy(self.lot_zone[v.lot], self.spec.zones)
        p = _Path(v.arrive_ms, _GATE)
        p.go(_BRIDGE, _TRUCK_SPEED)
        p.wait_until(v.in_ms + 60_000)
        p.go(zone, _TRUCK_SPEED)
        p.wait_until(v.out_ms - 60_000 - _YARD_DRIVE_MS // 4)
        p.go(_BRIDGE, _TRUCK_SPEED)
        p.wait_until(v.out_ms + 60_000)
        p.go(_GATE, _TRUCK_SPEED)
        out += self._fixes(self.trackers[v.truck], p, v.arrive_ms, p.end, rng)
        return out

    def _yard_obs(self, d0: int, d1: int, rng: np.random.Generator) -> list[Observation]:
        """Forklifts and staff during working hours, and geofence excursions."""
        out: list[Observation] = []
        spec = self.spec
        for device, speed, dwell in (
                *((d, _FORKLIFT_SPEED, (2, 12)) for d in self.forklifts),
                *((d, _STAFF_SPEED, (5, 25)) for d in self.staff)):
            home = self._home(device)
            for _, open_ms, close_ms in self._local_windows():
                if not d0 <= open_ms < d1:
                    continue
                p = _Path(open_ms, home)
                while p.end < close_ms - 20 * MINUTE_MS:
                    z = int(rng.integers(0, spec.zones + 1))
                    target = _BRIDGE if z == spec.zones else _zone_xy(z, spec.zones)
                    j = rng.normal(0.0, 8.0, 2)
                    p.go((target[0] + j[0], target[1] + j[1]), speed)
                    p.wait_until(p.end + rng.uniform(*dwell) * MINUTE_MS)
                p.go(home, speed)
                out += self._excursion_fixes(device, p, open_ms, max(p.end, close_ms), rng)
            # excursions outside working hours
            for t0, t1, sp, dist in self.excursions.get(device, []):
                if d0 <= t0 < d1 and not self._in_hours(t0):
                    path, _ = self._excursion_path(device, t0, t1, sp, dist)
                    out += self._fixes(device, path, t0, path.end, rng)
        for device in self.trackers:  # a truck tracker named by a geofence_exit
            for t0, t1, sp, dist in self.excursions.get(device, []):
                if d0 <= t0 < d1:
                    path, _ = self._excursion_path(device, t0, t1, sp, dist)
                    out += self._fixes(device, path, t0, path.end, rng)
        return out

    def _in_hours(self, t: int) -> bool:
        m = self._local_midnight(t)
        o, c = self.spec.working_hours_min
        return m + o * MINUTE_MS <= t < m + c * MINUTE_MS

    def _excursion_fixes(self, device: str, p: _Path, t0: int, t1: float,
                         rng: np.random.Generator) -> list[Observation]:
        """Fixes of a working-day path, with any excursion that starts inside it spliced
        in (it leaves from where the tracker is and comes back home)."""
        windows = [e for e in self.excursions.get(device, []) if t0 <= e[0] < t1]
        if not windows:
            return self._fixes(device, p, t0, t1, rng)
        out: list[Observation] = []
        cursor = float(t0)
        for a, b, sp, dist in sorted(windows):
            out += self._fixes(device, p, cursor, a, rng)
            # the excursion leaves from home (as if the tracker was taken there unseen), so
            # its fence crossings do not depend on the day's random path
            path, _ = self._excursion_path(device, a, b, sp, dist)
            out += self._fixes(device, path, a, path.end, rng)
            cursor = path.end
        out += self._fixes(device, p, cursor, t1, rng)
        return out


def _div(w: float) -> float:
    return float(round(w / BRIDGE_DIVISION_KG) * BRIDGE_DIVISION_KG)
