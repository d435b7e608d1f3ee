"""Event-time state of one site, and the alert rules evaluated on it.

:class:`SiteState` is a pure reducer: the engine feeds it the site's readings in event-time
order (:meth:`SiteState.apply`) up to an evaluation tick and then asks which conditions hold
at that tick (:meth:`SiteState.evaluate`). Nothing here reads a clock, a database or the
environment; every condition is a function of the readings applied and the tick, so a backlog
replayed after an outage, in whatever chunks, gives the same conditions at the same ticks.
Readings must be applied in non-decreasing ``ts_ms`` order and all ``<=`` the tick evaluated
next; a reading older than the newest one applied is still used where it can be (counted in
``counters["late_readings"]``). Malformed readings and unknown kinds are counted in
``counters`` and never raise.

Memory is bounded by the registry (per pledged animal: a few scalars, ``WEIGHINGS_KEPT``
weighings and ``(baseline_days + HEALTH_RECENT_DAYS + 2) * 4`` six-hour bins of activity,
observed time and bunk visits as float32, ~800 bytes at the defaults) plus fixed caps on
everything keyed by what readings say (foreign tags, devices, trucks, pens, tickets,
coverage gaps).

Site coverage (why a crash does not make the herd "missing")
    The site *reports* while readings of any kind from any of its devices (the gateway's
    ``heartbeat`` included: an idle but live gateway) keep arriving. A
    silence of more than ``COVERAGE_GAP_MS`` (30 min; ``RuleParams.coverage_gap_ms`` if the
    parameters grow one) between two readings is a coverage gap: the time is not counted.
    The *covered clock* is the event time elapsed while the site reported; it only moves
    with readings (silence after the newest reading is not credited until the next reading
    shows it was short), so ticks evaluated during a gap see a frozen clock. Missing-animal
    and device-silence windows are measured on this clock: an animal is missing when it was
    unseen for ``missing_after_ms`` of *covered* time. Gaps are also excluded from herd
    windows, pen feed days and health bins (rates are per observed time).

The rules (kinds of ``model.ALERT_KINDS``; ``site_offline``, ``coverage_breach`` and
``price_shock`` are the engine's, see :mod:`cloud.domain.rules` for helpers):

``animal_missing`` (animal, high)
    A pledged animal unseen by any reader for ``missing_after_ms`` of covered time;
    ``event_time`` = the moment that much covered time had passed since it was last seen
    (last seen + window when there was no gap). Animals never seen count from the state's
    first reading, or from when a registry change added them.
``herd_count_drop`` (site, high)
    Heads seen in the current herd window (``herd_window_ms``, counted in twelfths of it)
    against the most seen in any of the four windows before it (the last day) and against
    the pledged count: fires when both shortfalls reach ``max(herd_drop_min_heads,
    ceil(herd_drop_fraction * pledged))``. An early warning for a mass theft; it clears once
    the day before the drop has left the look-back, by when ``animal_missing`` names each
    animal. Only windows fully inside covered time count, and nothing is said while the site
    is silent for more than the coverage gap.
``tag_inactive`` (animal, high)
    A motion tag read again after ``no_motion_ms`` without its counter moving (dead animal,
    or a tag cut off and lying by one reader); evidence: reads without motion since it last
    moved and the readers of those reads (one reader suggests a dropped tag), last counter.
    Holds until it moves.
``health_anomaly`` (animal, warning)
    Activity (motion counter steps, spread in proportion to time over the span between two
    reads of the counter, per 6 h UTC bin, with the seconds of each bin so observed; a
    counter of exactly 0 is ignored: it is what an identity EPC, counter bytes zeroed, looks
    like when a scale's tag identification passes one on) and bunk visits (sightings by
    *bunk readers* - a device whose registry kind or id contains ``bunk`` or ``feed`` - more
    than ``BUNK_VISIT_GAP_MS`` apart, per bin, over the site's covered time) against the
    animal's own previous ``baseline_days`` (screened for outlier days), same time of
    day, herd common mode removed, both channels combined by inverse variance; the alarm is
    the decline statistic over the last ``HEALTH_RECENT_DAYS`` days of bins (a ramp-weighted
    deficit of unknown onset, in SDs that include the baseline's own error) at or above
    ``RuleParams.health_z`` if the parameters carry it, else ``rules.HEALTH_Z`` (3.2); see
    :mod:`cloud.domain.rules` and ``docs/health.md``. ``cusum_k``/``cusum_h`` are no longer
    used. A bin takes data until the newest reading is ``HEALTH_SETTLE_MS`` past its end,
    then it is frozen (later data for it is dropped and counted), so the score at a tick
    depends only on the readings up to it and is computed once per bin. Needs
    ``rules.MIN_BASELINE_DAYS`` days of baseline. A motion tag whose counter has not moved
    for a whole bin is left to ``tag_inactive`` (dead or dropped, not ill). ``event_time``
    = end of the bin from which the statistic has stayed at or above the threshold;
    evidence: ``score``, ``threshold``, ``decline_from_ms`` (start of the best-fitting
    decline), ``score_per_bin``, ``z_per_bin``, baseline and recent rates per day.
``feed_intake_drop`` (pen, warning)
    A pen's delivered feed on the last complete UTC day (``feed_event`` ``unload`` from
    ``edge.aggregate.TmrEventDetector``; ``deliver``/``drop``/``load_out`` are taken too)
    below ``1 - feed_drop_fraction`` of the median of its previous 7 days. Days that are
    not fully observed (before the first reading, or with more than an hour of coverage
    gap) are left out. Holds for the day after.
``foreign_tag`` (animal or lot)
    A pledged animal of this site that is pledged elsewhere too (``pledged_elsewhere``)
    and is read here: double pledge, ``high``; a pledged lot in ``pledged_elsewhere``:
    ``high`` (a registry fact, no read needed); a tag pledged to another of the bank's sites
    (``bank_epcs``): ``info`` (the bank's collateral in the wrong place; its own site raises
    ``animal_missing``); an unknown tag read ``FOREIGN_MIN_READS`` times or more at a ranch:
    ``warning`` (warehouses carry pallet tags, which are not animals). Truck tags
    (``truck_ids``) and tags read by truck readers (kind or id containing ``truck``) are
    ignored. Holds ``HOLD_MS`` after the last read.
``stock_below_minimum`` (site, high)
    Weighbridge ledger (pledged lot quantities as the opening stock-take + net in - net
    out) below the pledge's minimum by more than ``stock_tolerance``. The minimum starts at
    the pledged quantity and drops by what left under release orders (the bank consented
    to it); deliveries above it are free to leave under a dynamic pledge (domain.md 2.6), so
    only unauthorized outbound beyond that cushion, or shrinkage, breaks it. Site-level
    because tickets do not name lots. ``event_time`` = the ticket that took it below;
    holds while below. The newest ``MAX_TICKETS`` tickets are kept; older ones count as
    they were (outbound as released with consent).
``unauthorized_outbound`` (truck, high)
    An outbound ``weigh_ticket`` (``outbound``/``out``: the truck left heavier) without a
    release order for that truck (or for any truck, when the order names none) valid at
    the ticket's out time within ``release_grace_ms``, or taking more than the order's
    remaining quantity plus ``mixed_load_tolerance_kg`` (an order with quantity 0 has no
    limit). Checked against the registry at each tick, so a release order registered late
    clears it. Holds ``HOLD_MS`` after the ticket.
``geofence_exit`` (device, high)
    A device whose latest position is outside every geofence polygon of the site; holds
    until a fix inside. ``event_time`` = its first fix outside.
``weight_discrepancy`` (truck, warning/high)
    A ticket whose tare differs from the truck's median previous tare (3+ tickets) by more
    than ``tare_tolerance``: ``high`` when the difference favours the borrower (inbound tare
    low: delivery overstated; outbound tare high: shipment understated); and a ticket whose
    ``lines`` (or ``items``) kg add up to more than ``mixed_load_tolerance_kg`` away from
    its net (mixed load). Holds ``HOLD_MS`` after the ticket.
``device_offline`` (device, warning)
    A ``device_offline`` reading not followed by ``device_online`` or any other reading of
    that device; or a registry RFID reader of animal tags (kind or id containing
    ``reader``/``rfid``, not ``truck``) with a rhythm (``DEVICE_MIN_READINGS`` readings and
    ``DEVICE_LEARN_MS`` of covered time since its first) silent, in covered time, for
    ``max(device_offline_after_ms, 2 x its longest silence so far)``. Quiet readers have
    long normal silences, so the threshold learns them; devices without a rhythm, and those
    that report when something happens (GPS trackers parked overnight, scales,
    weighbridges, mixers, truck and gate readers), are left to their own ``device_offline``
    reports.
``data_integrity`` (gateway, warning/high)
    ``data_integrity`` readings (outbox drops, refused batches, corrupt outbox), subject the
    reading's device id (the gateway); ``high`` from ``INTEGRITY_HIGH_DROPPED`` readings or
    a corrupt outbox. Holds ``HOLD_MS`` after the last one.
"""

from __future__ import annotations

import array
import bisect
import collections
import dataclasses
import math
from collections.abc import Iterable
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from cloud.domain import rules
from cloud.domain.model import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    AnimalInfo,
    Condition,
    LotInfo,
    RuleParams,
    SiteRegistry,
)
from protocols.uplink import READING_KINDS, Reading

__all__ = [
    "BINS_PER_DAY",
    "BUNK_VISIT_GAP_MS",
    "COVERAGE_GAP_MS",
    "DEVICE_LEARN_MS",
    "DEVICE_MIN_READINGS",
    "FOREIGN_MIN_READS",
    "HEALTH_BIN_MS",
    "HEALTH_RECENT_DAYS",
    "HEALTH_SETTLE_MS",
    "HOLD_MS",
    "INTEGRITY_HIGH_DROPPED",
    "WEIGHINGS_KEPT",
    "HerdSnapshot",
    "SiteState",
    "StockSnapshot",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Severity = Literal["info", "warning", "high", "critical"]

COVERAGE_GAP_MS: Final = 30 * MINUTE_MS
HEALTH_BIN_MS: Final = 6 * HOUR_MS
BINS_PER_DAY: Final = DAY_MS // HEALTH_BIN_MS
HEALTH_RECENT_DAYS: Final = 4  # day windows scored by the CUSUM; the ones before: baseline
HEALTH_SETTLE_MS: Final = 0  # a bin takes data until this long after it ends
BUNK_VISIT_GAP_MS: Final = 5 * MINUTE_MS  # bunk sightings closer than this: one visit
HEALTH_MAX_SPAN_MS: Final = 12 * HOUR_MS  # counter steps over longer spans are not binned
STALE_COUNTER_MS: Final = 10 * MINUTE_MS  # a counter behind the last one, older than this, re-bases
HERD_SLOTS_PER_WINDOW: Final = 12
HERD_WINDOWS: Final = 5  # the current window and four before it
HOLD_MS: Final = DAY_MS  # event-like conditions stay true this long
DEVICE_LEARN_MS: Final = DAY_MS
DEVICE_MIN_READINGS: Final = 24  # readings in the learning day before silence is judged
FOREIGN_MIN_READS: Final = 2
INTEGRITY_HIGH_DROPPED: Final = 1000
FEED_PREVIOUS_DAYS: Final = 7
FEED_MAX_GAP_MS: Final = HOUR_MS  # a day with more coverage gap than this is not judged
WEIGHINGS_KEPT: Final = 32
MAX_FOREIGN_TAGS: Final = 10_000
MAX_DEVICES: Final = 10_000
MAX_TRUCKS: Final = 10_000
MAX_TICKETS: Final = 10_000
MAX_PENS: Final = 1_000
MAX_GAPS: Final = 4_096
MAX_EVENTS: Final = 1_000
DEVICES_LISTED: Final = 8
_COUNTER_MOD: Final = 1 << 16
_COUNTER_HALF: Final = 1 << 15
_HEX: Final = frozenset("0123456789ABCDEF")
_OUT_DIRECTIONS: Final = frozenset({"outbound", "out"})
_IN_DIRECTIONS: Final = frozenset({"inbound", "in"})
_DELIVERY_EVENTS: Final = frozenset({"unload", "deliver", "drop", "load_out"})
_SEVERITY_RANK: Final = {"info": 0, "warning": 1, "high": 2, "critical": 3}


_DEFAULT_PARAMS: Final = RuleParams()


class _BadReading(Exception):
    """A reading whose data breaks the contract; counted, never raised out of apply."""


def _identity_epc(epc: str) -> str:
    """Identity EPC as edge emits it: upper case, and for a motion tag (byte 0 ``E7``, 96
    bits) the counter bytes 10..11 zeroed (``edge.aggregate`` convention)."""
    up = epc.upper()
    if len(up) == 24 and up.startswith("E7") and set(up) <= _HEX:
        return up[:20] + "0000"
    return up


def _role(registry: SiteRegistry, device_id: str) -> tuple[bool, bool]:
    """``(bunk reader, truck reader)`` from the registry kind and the device id."""
    text = f"{registry.devices.get(device_id, '')} {device_id}".lower()
    return ("bunk" in text or "feed" in text), ("truck" in text)


def _animal_reader(registry: SiteRegistry, device_id: str) -> bool:
    """An RFID reader of animal tags at a place animals visit all day: kind or id says
    ``reader`` or ``rfid``, not ``truck`` or ``gate`` (GPS trackers, scales, weighbridges,
    mixers, truck readers and gate readers report when something happens - animals moved
    through a gate - so their silence means nothing)."""
    text = f"{registry.devices.get(device_id, '')} {device_id}".lower()
    return ("reader" in text or "rfid" in text) and "truck" not in text and "gate" not in text


def _health_threshold(params: RuleParams) -> float:
    """The health_anomaly alarm threshold: ``RuleParams.health_z`` when the parameters have
    it, else ``rules.HEALTH_Z`` (the decline statistic replaced the CUSUM whose
    ``cusum_k``/``cusum_h`` the parameters still carry; docs/health.md)."""
    value: Any = getattr(params, "health_z", None)
    if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
        return float(value)
    return rules.HEALTH_Z


def _num(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _BadReading(f"not a finite number: {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True, slots=True)
class HerdSnapshot:
    """The pledged herd of a site at ``ts_ms``, for valuation and the herd API. Row ``i``
    of every array is ``animals[i]``. Weighings are flat arrays grouped by animal (oldest
    first): animal ``i``'s are ``weigh_ts_ms[weigh_start[i]:weigh_start[i + 1]]``.
    ``present``: not missing (seen within the missing window of covered time, or not yet
    unseen that long) and not judged dead (``tag_inactive``). ``health_factor``:
    ``RuleParams.health_factor_sick`` while a health anomaly holds, else 1.0.
    ``intake_kg_per_head``: pen -> mean delivered kg per day over its fully observed days
    (up to 7) divided by the present pledged heads in the pen."""

    ts_ms: int
    site_code: str
    animals: tuple[AnimalInfo, ...]
    present: BoolArray
    missing: BoolArray
    dead: BoolArray
    last_seen_ms: IntArray  # -1: never seen
    health_factor: FloatArray
    weigh_start: IntArray  # (n + 1,)
    weigh_ts_ms: IntArray
    weigh_kg: FloatArray
    intake_kg_per_head: dict[str, float]

    @property
    def epcs(self) -> list[str]:
        return [a.epc for a in self.animals]

    @property
    def loans(self) -> list[str]:
        return [a.loan_code for a in self.animals]

    def weighings(self, i: int) -> list[tuple[int, float]]:
        lo, hi = int(self.weigh_start[i]), int(self.weigh_start[i + 1])
        return list(zip(self.weigh_ts_ms[lo:hi].tolist(), self.weigh_kg[lo:hi].tolist(),
                        strict=True))


@dataclasses.dataclass(frozen=True, slots=True)
class StockSnapshot:
    """A warehouse site's weighbridge ledger at ``ts_ms``: ``opening_kg`` (the pledged lot
    quantities, taken as the opening stock-take) + ``in_kg`` (net of inbound tickets) -
    ``out_kg`` (net of outbound tickets) = ``ledger_kg``; ``pledged_kg`` is the minimum the
    pledge requires (the same lot quantities)."""

    ts_ms: int
    site_code: str
    lots: tuple[LotInfo, ...]
    opening_kg: float
    in_kg: float
    out_kg: float
    ledger_kg: float
    pledged_kg: float
    tickets: int


@dataclasses.dataclass(slots=True)
class _Ticket:
    ts_ms: int
    device: str
    truck: str | None
    direction: str  # "in" | "out"
    gross_kg: float
    tare_kg: float
    net_kg: float
    in_ms: int
    out_ms: int

    def evidence(self) -> dict[str, object]:
        return {"device": self.device, "truck_id": self.truck, "direction": self.direction,
                "gross_kg": self.gross_kg, "tare_kg": self.tare_kg, "net_kg": self.net_kg,
                "in_ms": self.in_ms, "out_ms": self.out_ms}


@dataclasses.dataclass(slots=True)
class _Flag:
    """An event-like finding kept for ``HOLD_MS``."""

    ts_ms: int
    subject: str
    severity: Severity
    summary: str
    evidence: dict[str, object]


class SiteState:
    """Event-time state of one site (see the module docstring for every rule).

    ``counters``: readings by kind (``tag_sighting`` counts sightings of pledged animals,
    ``foreign_sightings`` the others), ``bad_readings`` and ``bad_<kind>``,
    ``unknown_kind``, ``late_readings`` (older than the newest applied), and what caps or
    rules dropped (``foreign_tags_evicted``, ``devices_over_cap``, ``health_frozen_drops``,
    ``stale_counters``, ...)."""

    def __init__(self, registry: SiteRegistry, params: RuleParams = _DEFAULT_PARAMS) -> None:
        self.counters: dict[str, int] = collections.defaultdict(int)
        self.params = params
        self._gap_ms = int(getattr(params, "coverage_gap_ms", COVERAGE_GAP_MS))
        # site coverage
        self._origin_ts: int | None = None
        self._last_ts = -1
        self._covered = 0
        self._gap_covs: list[int] = []  # covered clock at each gap (non-decreasing)
        self._gap_starts: list[int] = []
        self._gap_ends: list[int] = []
        self._ref_ts = 0  # (time, covered) where the clock is linear back to (trimmed gaps)
        self._ref_cov = 0
        # per device: [first_ts, last_ts, covered at last, longest covered silence, readings,
        # covered at first]
        self._devices: dict[str, list[int]] = {}
        self._offline: dict[str, tuple[int, str]] = {}
        self._roles: dict[str, tuple[bool, bool]] = {}
        self._bunk_visits = 0
        # foreign tags: epc -> [first_ts, last_ts, reads, devices]
        self._foreign: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        # warehouse
        self._in_kg = 0.0
        self._out_kg = 0.0
        self._ticket_count = 0
        self._tickets: collections.deque[_Ticket] = collections.deque()  # <= MAX_TICKETS
        self._evicted_in_kg = 0.0  # tickets that left the deque: settled as they were
        self._evicted_out_kg = 0.0
        self._tares: dict[str, collections.deque[float]] = {}
        self._weight_flags: collections.deque[_Flag] = collections.deque(maxlen=MAX_EVENTS)
        self._integrity: collections.deque[_Flag] = collections.deque(maxlen=MAX_EVENTS)
        # pens: pen -> {day: kg}
        self._feed: dict[str, dict[int, float]] = {}
        # positions: device -> [ts, lat, lon, outside_since or -1]
        self._positions: dict[str, list[Any]] = {}
        self._health_cache: tuple[int, int, rules.HealthScores | None, int, int] | None = None
        self._version = 0  # registry/parameter changes (the health cache depends on them)
        self._frozen = -(1 << 62)  # health bins up to this one take no more data
        self._alloc_rings()
        self._registry = registry
        self._animals: tuple[AnimalInfo, ...] = ()
        self._index: dict[str, int] = {}
        self._n = 0
        self._init_animal_lists(0)
        self.set_registry(registry)

    # -- setup -----------------------------------------------------------------------------
    def _alloc_rings(self) -> None:
        self._nb = (self.params.baseline_days + HEALTH_RECENT_DAYS + 2) * BINS_PER_DAY
        self._ring_bin: list[int] = [-1] * self._nb
        self._site_obs = np.zeros(self._nb, dtype=np.float64)  # seconds covered per bin
        self._slot_ms = max(1, self.params.herd_window_ms // HERD_SLOTS_PER_WINDOW)

    def _init_animal_lists(self, n: int) -> None:
        self._last_seen = [-1] * n
        self._last_dev: list[str | None] = [None] * n
        self._seen_cov = [0] * n
        self._first_seen = [-1] * n
        self._slot = [0] * n
        self._mask = [0] * n
        self._m_last = [-1] * n
        self._m_ts = [-1] * n
        self._m_moved = [-1] * n
        self._m_reads = [0] * n
        self._m_devs: list[list[str]] = [[] for _ in range(n)]
        self._bunk_last = [-BUNK_VISIT_GAP_MS - 1] * n
        self._w_n = [0] * n
        self._w_ts = np.zeros((n, WEIGHINGS_KEPT), dtype=np.int64)
        self._w_kg = np.zeros((n, WEIGHINGS_KEPT), dtype=np.float64)
        # flat (animal, ring slot) float32 grids, index i * nb + slot: array.array item access
        # is several times faster than numpy's in the per-reading path; numpy views them
        self._act = array.array("f", bytes(4 * n * self._nb))  # counter steps
        self._obs = array.array("f", bytes(4 * n * self._nb))  # seconds observed
        self._bunk = array.array("f", bytes(4 * n * self._nb))  # bunk reader sightings

    def set_registry(self, registry: SiteRegistry) -> None:
        """Take a new registry (new pledges, releases, devices); state is kept for animals
        still pledged, new animals start as if just put under watch."""
        old_index = self._index
        animals = tuple(a for a in registry.animals if a.epc)
        index: dict[str, int] = {}
        for a in animals:
            index.setdefault(a.epc.upper(), len(index))
        if len(index) != len(animals):  # the same tag twice in one site: keep the first
            seen: set[str] = set()
            deduped = []
            for a in animals:
                if a.epc.upper() not in seen:
                    seen.add(a.epc.upper())
                    deduped.append(a)
            animals = tuple(deduped)
            self.counters["duplicate_pledges"] += 1
        mapping = [old_index.get(a.epc.upper(), -1) for a in animals]
        self._remap(mapping)
        self._animals = animals
        self._index = index
        self._iso_index = {a.iso11784: i for i, a in enumerate(animals) if a.iso11784}
        self._registry = registry
        self._roles = {}
        self._elsewhere = registry.pledged_elsewhere
        self._pledged_kg = float(sum(lot.quantity_kg for lot in registry.lots))
        self._site_loan = registry.loans[0].code if len(registry.loans) == 1 else None
        self._version += 1

    def set_params(self, params: RuleParams) -> None:
        """New rule parameters. Changing ``baseline_days`` or ``herd_window_ms`` restarts
        the health bins or herd windows (their layout depends on them)."""
        old = self.params
        self.params = params
        self._gap_ms = int(getattr(params, "coverage_gap_ms", COVERAGE_GAP_MS))
        if (old.baseline_days != params.baseline_days
                or old.herd_window_ms != params.herd_window_ms):
            kept = (self._last_seen, self._last_dev, self._seen_cov, self._first_seen,
                    self._m_last, self._m_ts, self._m_moved, self._m_reads, self._m_devs,
                    self._w_n, self._w_ts, self._w_kg)
            self._alloc_rings()
            self._init_animal_lists(self._n)
            (self._last_seen, self._last_dev, self._seen_cov, self._first_seen,
             self._m_last, self._m_ts, self._m_moved, self._m_reads, self._m_devs,
             self._w_n, self._w_ts, self._w_kg) = kept
            self._bunk_visits = 0
        self._version += 1

    def _remap(self, mapping: list[int]) -> None:
        n = len(mapping)
        src = np.array(mapping, dtype=np.int64)
        has = src >= 0
        cov = self._covered

        def lst(old: list[Any], default: Any) -> list[Any]:
            return [old[j] if j >= 0 else default for j in mapping]

        self._last_seen = lst(self._last_seen, -1)
        self._last_dev = lst(self._last_dev, None)
        self._seen_cov = lst(self._seen_cov, cov)
        self._first_seen = lst(self._first_seen, -1)
        self._slot = lst(self._slot, 0)
        self._mask = lst(self._mask, 0)
        self._m_last = lst(self._m_last, -1)
        self._m_ts = lst(self._m_ts, -1)
        self._m_moved = lst(self._m_moved, -1)
        self._m_reads = lst(self._m_reads, 0)
        self._m_devs = [list(self._m_devs[j]) if j >= 0 else [] for j in mapping]
        self._bunk_last = lst(self._bunk_last, -BUNK_VISIT_GAP_MS - 1)
        self._w_n = lst(self._w_n, 0)

        def arr(old: npt.NDArray[Any]) -> npt.NDArray[Any]:
            new = np.zeros((n, old.shape[1]), dtype=old.dtype)
            if old.shape[0]:
                new[has] = old[src[has]]
            return new

        self._w_ts = arr(self._w_ts)
        self._w_kg = arr(self._w_kg)
        self._act = array.array("f", arr(self._grid(self._act)).tobytes())
        self._obs = array.array("f", arr(self._grid(self._obs)).tobytes())
        self._bunk = array.array("f", arr(self._grid(self._bunk)).tobytes())
        self._n = n

    def _grid(self, flat: array.array[float]) -> npt.NDArray[np.float32]:
        """(animals, ring slots) numpy view of a flat grid (no copy)."""
        if not len(flat):
            return np.zeros((len(flat) // self._nb if self._nb else 0, self._nb),
                            dtype=np.float32)
        return np.frombuffer(flat, dtype=np.float32).reshape(-1, self._nb)

    # -- input -----------------------------------------------------------------------------
    def apply(self, readings: Iterable[Reading]) -> None:
        """Fold readings (non-decreasing ``ts_ms``) into the state. Never raises for bad
        data: it is counted in ``counters`` (``bad_readings``, ``bad_<kind>``,
        ``unknown_kind``)."""
        counters = self.counters
        for r in readings:
            try:
                kind = r.kind
                ts = r.ts_ms
                dev = r.device_id
                if type(ts) is not int or type(dev) is not str or not isinstance(r.data, dict):
                    raise _BadReading("reading without int ts_ms, str device_id, dict data")
                if kind == "tag_sighting":
                    self._clock(ts, dev)
                    self._sighting(r, ts, dev)
                    continue
                if kind not in READING_KINDS:
                    counters["unknown_kind"] += 1
                    continue
                self._clock(ts, dev)
                counters[kind] += 1
                handler = _HANDLERS.get(kind)
                if handler is not None:
                    handler(self, r, ts, dev)
            except (_BadReading, KeyError, TypeError, ValueError, AttributeError,
                    OverflowError):
                counters["bad_readings"] += 1
                counters[f"bad_{getattr(r, 'kind', '?')}"[:40]] += 1

    def _clock(self, ts: int, dev: str) -> None:
        """Advance the covered clock and the device's activity record."""
        last = self._last_ts
        if ts > last:
            # bins that ended HEALTH_SETTLE_MS before this reading take no more data, its
            # own share of the silence before it included
            self._frozen = (ts - HEALTH_SETTLE_MS) // HEALTH_BIN_MS - 1
            if self._origin_ts is None:
                self._origin_ts = ts
                self._ref_ts = ts
            else:
                d = ts - last
                if d <= self._gap_ms:
                    self._covered += d
                    self._observe_site(last, ts)
                else:
                    self._gap_covs.append(self._covered)
                    self._gap_starts.append(last)
                    self._gap_ends.append(ts)
                    if len(self._gap_covs) > MAX_GAPS:
                        half = MAX_GAPS // 2
                        self._ref_ts = self._gap_ends[half - 1]
                        self._ref_cov = self._gap_covs[half - 1]
                        del self._gap_covs[:half], self._gap_starts[:half]
                        del self._gap_ends[:half]
            self._last_ts = ts
            cov = self._covered
        else:
            if ts < last:
                self.counters["late_readings"] += 1
            cov = self._cov_at(ts)
        st = self._devices.get(dev)
        if st is None:
            if len(self._devices) >= MAX_DEVICES:
                self.counters["devices_over_cap"] += 1
                return
            self._devices[dev] = [ts, ts, cov, 0, 1, cov]
            return
        st[4] += 1
        if ts > st[1]:
            silence = cov - st[2]
            if silence > st[3]:
                st[3] = silence
            st[1] = ts
            st[2] = cov

    def _cov_at(self, ts: int) -> int:
        """Covered clock at an event time before the newest reading (late readings)."""
        if ts >= self._last_ts:
            return self._covered
        i = bisect.bisect_right(self._gap_ends, ts)
        if i < len(self._gap_ends) and self._gap_starts[i] <= ts:
            return self._gap_covs[i]  # inside a gap
        if i == 0:
            return max(0, self._ref_cov + ts - self._ref_ts)
        return self._gap_covs[i - 1] + ts - self._gap_ends[i - 1]

    def _time_at_cov(self, cov: int) -> int:
        """Event time at which the covered clock reached ``cov`` (inverse of the clock)."""
        i = bisect.bisect_left(self._gap_covs, cov)
        if i == 0:
            return self._ref_ts + cov - self._ref_cov
        return self._gap_ends[i - 1] + cov - self._gap_covs[i - 1]

    def _slot_for(self, b: int, count: bool = True) -> int:
        """Ring slot of absolute health bin ``b``, clearing it when ``b`` is newer than what
        it held; -1 when ``b`` is frozen or has left the ring (counted if ``count``)."""
        if b <= self._frozen:
            if count:
                self.counters["health_frozen_drops"] += 1
            return -1
        slot = b % self._nb
        held = self._ring_bin[slot]
        if held == b:
            return slot
        if held > b:
            self.counters["health_frozen_drops"] += 1
            return -1
        for flat in (self._act, self._obs, self._bunk):
            if len(flat):
                self._grid(flat)[:, slot] = 0.0
        self._site_obs[slot] = 0.0
        self._ring_bin[slot] = b
        return slot

    def _observe_site(self, t0: int, t1: int) -> None:
        b0, b1 = t0 // HEALTH_BIN_MS, t1 // HEALTH_BIN_MS
        if b0 == b1:
            slot = b1 % self._nb
            if self._ring_bin[slot] != b1 or b1 <= self._frozen:
                slot = self._slot_for(b1, count=False)
            if slot >= 0:
                self._site_obs[slot] += (t1 - t0) / 1000.0
            return
        for b in range(b0, b1 + 1):
            lo, hi = max(t0, b * HEALTH_BIN_MS), min(t1, (b + 1) * HEALTH_BIN_MS)
            if hi > lo:
                slot = self._slot_for(b, count=False)
                if slot >= 0:
                    self._site_obs[slot] += (hi - lo) / 1000.0

    def _role_of(self, dev: str) -> tuple[bool, bool]:
        role = self._roles.get(dev)
        if role is None:
            role = _role(self._registry, dev)
            if len(self._roles) < MAX_DEVICES:
                self._roles[dev] = role
        return role

    def _sighting(self, r: Reading, ts: int, dev: str) -> None:
        data = r.data
        epc = data["epc"]
        i = self._index.get(epc)
        if i is None:
            if type(epc) is not str:
                raise _BadReading("epc must be a string")
            i = self._resolve(epc, data, ts, dev)
            if i is None:
                return
        self.counters["tag_sighting"] += 1
        if ts >= self._last_seen[i]:
            self._last_seen[i] = ts
            self._last_dev[i] = dev
            self._seen_cov[i] = self._covered if ts >= self._last_ts else self._cov_at(ts)
            if self._first_seen[i] < 0:
                self._first_seen[i] = ts
        # herd windows: bit j of the mask = seen in slot (slot - j)
        s = ts // self._slot_ms
        ps = self._slot[i]
        if s != ps:
            if s > ps:
                step = s - ps
                self._mask[i] = (((self._mask[i] << step) | 1) & 0xFFFFFFFFFFFFFFFF
                                 if step < 64 else 1)
                self._slot[i] = s
            elif ps - s < 64:
                self._mask[i] |= 1 << (ps - s)
        elif not self._mask[i] & 1:
            self._mask[i] |= 1
        role = self._roles.get(dev)
        if role is None:
            role = self._role_of(dev)
        if role[0] and ts - self._bunk_last[i] > BUNK_VISIT_GAP_MS:
            self._bunk_last[i] = ts
            self._bunk_visits += 1
            b = ts // HEALTH_BIN_MS
            slot = b % self._nb
            if self._ring_bin[slot] != b or b <= self._frozen:
                slot = self._slot_for(b)
            if slot >= 0:
                self._bunk[i * self._nb + slot] += 1.0
        motion = data.get("motion")
        if motion is not None:
            if type(motion) is not int or not 0 <= motion < _COUNTER_MOD:
                self.counters["bad_motion"] += 1
            elif motion == 0:  # what an identity EPC (counter bytes zeroed) reads as
                self.counters["zero_counters"] += 1
            else:
                self._motion(i, motion, data.get("motion_delta"), ts, dev)

    def _motion(self, i: int, m: int, delta: Any, ts: int, dev: str) -> None:
        last = self._m_last[i]
        if last < 0:
            self._m_last[i] = m
            self._m_ts[i] = ts
            self._m_moved[i] = ts
            self._m_reads[i] = 0
            self._m_devs[i] = []
            return
        tp = self._m_ts[i]
        step = (m - last) % _COUNTER_MOD
        if step >= _COUNTER_HALF:  # behind the last counter
            if ts - tp > STALE_COUNTER_MS:  # not a late read: the counter restarted/wrapped
                self._m_last[i] = m
                self._m_ts[i] = ts
                self._m_moved[i] = ts
                self._m_reads[i] = 0
                self._m_devs[i] = []
            else:
                self.counters["stale_counters"] += 1
            return
        moved = step > 0 or (type(delta) is int and delta > 0)
        if ts >= tp:
            if ts - tp <= HEALTH_MAX_SPAN_MS:
                self._attribute(i, tp, ts, step)
            self._m_ts[i] = ts
        elif step:
            self.counters["late_counters"] += 1  # movement before the last read: not binned
        if moved:
            self._m_last[i] = m
            if ts > self._m_moved[i]:
                self._m_moved[i] = ts
            self._m_reads[i] = 0  # reads and readers *without* motion since
            self._m_devs[i] = []
        else:
            self._m_reads[i] += 1
            devs = self._m_devs[i]
            if dev not in devs and len(devs) < DEVICES_LISTED:
                devs.append(dev)

    def _attribute(self, i: int, t0: int, t1: int, step: int) -> None:
        """Spread a counter step over the bins of ``(t0, t1]`` in proportion to time, and
        count that time as observed."""
        b0, b1 = t0 // HEALTH_BIN_MS, t1 // HEALTH_BIN_MS
        if b0 == b1:
            slot = b1 % self._nb
            if self._ring_bin[slot] != b1 or b1 <= self._frozen:
                slot = self._slot_for(b1)
            if slot >= 0:
                j = i * self._nb + slot
                self._act[j] += step
                self._obs[j] += (t1 - t0) / 1000.0
            return
        span = t1 - t0
        for b in range(b0, b1 + 1):
            lo, hi = max(t0, b * HEALTH_BIN_MS), min(t1, (b + 1) * HEALTH_BIN_MS)
            if hi > lo:
                slot = self._slot_for(b)
                if slot >= 0:
                    j = i * self._nb + slot
                    self._act[j] += step * (hi - lo) / span
                    self._obs[j] += (hi - lo) / 1000.0

    def _resolve(self, epc: str, data: dict[str, Any], ts: int, dev: str) -> int | None:
        """Index of a pledged animal for an EPC not found as is (case, motion bytes, ISO
        11784 id), else note it as a foreign tag and return None."""
        ident = _identity_epc(epc)
        i = self._index.get(ident)
        if i is not None:
            return i
        iso = data.get("iso11784")
        if type(iso) is str:
            i = self._iso_index.get(iso)
            if i is not None:
                return i
        self.counters["foreign_sightings"] += 1
        if ident in self._registry.truck_ids or self._role_of(dev)[1]:
            return None
        count = data.get("count", 1)
        reads = count if type(count) is int and count > 0 else 1
        entry = self._foreign.get(ident)
        if entry is None:
            if len(self._foreign) >= MAX_FOREIGN_TAGS:
                self._foreign.popitem(last=False)
                self.counters["foreign_tags_evicted"] += 1
            self._foreign[ident] = [ts, ts, reads, [dev]]
            return None
        self._foreign.move_to_end(ident)
        entry[1] = max(entry[1], ts)
        entry[2] += reads
        if dev not in entry[3] and len(entry[3]) < DEVICES_LISTED:
            entry[3].append(dev)
        return None

    def _weigh_event(self, r: Reading, ts: int, dev: str) -> None:
        data = r.data
        epc = data.get("epc")
        if epc is None:
            return  # truck weighs end up in tickets
        if type(epc) is not str:
            raise _BadReading("epc must be a string")
        kg = _num(data["weight_kg"])
        i = self._index.get(epc)
        if i is None:
            i = self._index.get(_identity_epc(epc))
        if i is None:
            self.counters["weighings_unpledged"] += 1
            return
        n = self._w_n[i]
        pos = n % WEIGHINGS_KEPT
        self._w_ts[i, pos] = ts
        self._w_kg[i, pos] = kg
        self._w_n[i] = n + 1

    def _weigh_ticket(self, r: Reading, ts: int, dev: str) -> None:
        data = r.data
        direction = data["direction"]
        if direction in _OUT_DIRECTIONS:
            d = "out"
        elif direction in _IN_DIRECTIONS:
            d = "in"
        else:
            raise _BadReading(f"ticket direction {direction!r}")
        truck = data.get("truck_id")
        if truck is not None and type(truck) is not str:
            raise _BadReading("truck_id must be a string")
        t = _Ticket(ts_ms=ts, device=dev, truck=truck, direction=d,
                    gross_kg=_num(data["gross_kg"]), tare_kg=_num(data["tare_kg"]),
                    net_kg=_num(data["net_kg"]), in_ms=int(data["in_ms"]),
                    out_ms=int(data["out_ms"]))
        if t.net_kg < 0:
            raise _BadReading("negative net")
        self._ticket_count += 1
        if d == "out":
            self._out_kg += t.net_kg
        else:
            self._in_kg += t.net_kg
        if len(self._tickets) >= MAX_TICKETS:
            old = self._tickets.popleft()
            if old.direction == "out":
                self._evicted_out_kg += old.net_kg  # taken as released with consent
            else:
                self._evicted_in_kg += old.net_kg
            self.counters["tickets_settled"] += 1
        self._tickets.append(t)
        if truck is not None:
            self._check_tare(t, truck)
        lines = data.get("lines", data.get("items"))
        if isinstance(lines, list) and lines:
            self._check_mixed(t, lines)

    def _check_tare(self, t: _Ticket, truck: str) -> None:
        tares = self._tares.get(truck)
        if tares is None:
            if len(self._tares) >= MAX_TRUCKS:
                self.counters["trucks_over_cap"] += 1
                return
            tares = self._tares[truck] = collections.deque(maxlen=20)
        median = rules.tare_deviation(t.tare_kg, tares, self.params.tare_tolerance)
        tares.append(t.tare_kg)
        if median is None:
            return
        favours = (t.tare_kg < median) == (t.direction == "in")
        sev: Severity = "high" if favours else "warning"
        self._weight_flags.append(_Flag(
            ts_ms=t.ts_ms, subject=truck, severity=sev,
            summary=(f"truck {truck} tare {t.tare_kg:.0f} kg vs its median {median:.0f} kg "
                     f"({t.tare_kg / median - 1:+.1%})"),
            evidence={"check": "tare", "tare_kg": t.tare_kg, "median_tare_kg": median,
                      "previous_tares": len(tares) - 1, "ticket": t.evidence()}))

    def _check_mixed(self, t: _Ticket, lines: list[Any]) -> None:
        total = 0.0
        for line in lines:
            if not isinstance(line, dict):
                raise _BadReading("ticket line must be a map")
            total += _num(line.get("kg", line.get("net_kg")))
        if abs(total - t.net_kg) > self.params.mixed_load_tolerance_kg:
            subject = t.truck or t.device
            self._weight_flags.append(_Flag(
                ts_ms=t.ts_ms, subject=subject, severity="warning",
                summary=(f"mixed load on {subject}: lines add up to {total:.0f} kg, "
                         f"truck net {t.net_kg:.0f} kg"),
                evidence={"check": "mixed_load", "lines_kg": total, "lines": len(lines),
                          "ticket": t.evidence()}))

    def _feed_event(self, r: Reading, ts: int, dev: str) -> None:
        data = r.data
        event = data["event"]
        if type(event) is not str:
            raise _BadReading("event must be a string")
        kg = _num(data["kg"])
        pen = data.get("pen")
        if event not in _DELIVERY_EVENTS:
            return
        if pen is None:
            self.counters["feed_without_pen"] += 1
            return
        if type(pen) is not str:
            raise _BadReading("pen must be a string")
        days = self._feed.get(pen)
        if days is None:
            if len(self._feed) >= MAX_PENS:
                self.counters["pens_over_cap"] += 1
                return
            days = self._feed[pen] = {}
        day = ts // DAY_MS
        days[day] = days.get(day, 0.0) + kg
        if len(days) > FEED_PREVIOUS_DAYS + 3:
            del days[min(days)]

    def _position(self, r: Reading, ts: int, dev: str) -> None:
        lat, lon = _num(r.data["lat"]), _num(r.data["lon"])
        if not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 180.0:
            raise _BadReading("position out of range")
        fences = self._registry.geofences
        if not fences:
            return
        inside = any(rules.point_in_polygon(lat, lon, poly) for poly in fences)
        st = self._positions.get(dev)
        if st is None:
            if len(self._positions) >= MAX_DEVICES:
                self.counters["devices_over_cap"] += 1
                return
            st = self._positions[dev] = [ts, lat, lon, -1]
        elif ts < st[0]:
            return  # a late fix does not replace a newer one
        st[0], st[1], st[2] = ts, lat, lon
        if inside:
            st[3] = -1
        elif st[3] < 0:
            st[3] = ts

    def _device_online(self, r: Reading, ts: int, dev: str) -> None:
        off = self._offline.get(dev)
        if off is not None and ts >= off[0]:
            del self._offline[dev]

    def _device_offline(self, r: Reading, ts: int, dev: str) -> None:
        reason = r.data["reason"]
        if type(reason) is not str:
            raise _BadReading("reason must be a string")
        off = self._offline.get(dev)
        if off is None and len(self._offline) >= MAX_DEVICES:
            return
        if off is None or ts >= off[0]:
            self._offline[dev] = (ts, reason)

    def _data_integrity(self, r: Reading, ts: int, dev: str) -> None:
        data = r.data
        dropped = data["dropped"]
        reason = data["reason"]
        if type(dropped) is not int or type(reason) is not str:
            raise _BadReading("dropped must be an int and reason a string")
        corrupt = reason.startswith("outbox_corrupt")
        sev: Severity = "high" if corrupt or dropped >= INTEGRITY_HIGH_DROPPED else "warning"
        self._integrity.append(_Flag(
            ts_ms=ts, subject=dev, severity=sev,
            summary=f"gateway {dev} lost {dropped} readings ({reason})",
            evidence={"dropped": dropped, "reason": reason[:200],
                      "first_ms": data.get("first_ms"), "last_ms": data.get("last_ms")}))

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, tick_ms: int) -> list[Condition]:
        """Every condition true at ``tick_ms`` (readings up to it applied), one per
        (subject, kind), sorted by kind then subject."""
        out: list[Condition] = []
        missing = self._missing_mask()
        out += self._animal_missing(missing)
        out += self._herd_count_drop(tick_ms)
        out += self._tag_inactive()
        out += self._health_anomaly(tick_ms)
        out += self._feed_intake_drop(tick_ms)
        out += self._foreign_tag(tick_ms)
        matched = self._releases() if self._tickets else []
        out += self._stock_below_minimum(matched)
        out += self._unauthorized_outbound(tick_ms, matched)
        out += self._geofence_exit()
        out += self._held(self._weight_flags, "weight_discrepancy", "truck", tick_ms)
        out += self._device_offline_conditions()
        out += self._held(self._integrity, "data_integrity", "gateway", tick_ms)
        best: dict[tuple[str, str, str], Condition] = {}
        for c in out:
            prior = best.get(c.key)
            if prior is None or _SEVERITY_RANK[c.severity] > _SEVERITY_RANK[prior.severity]:
                best[c.key] = c
        return sorted(best.values(), key=lambda c: (c.kind, c.subject_type, c.subject_id))

    def _cond(self, kind: str, severity: Severity, subject_type: str, subject_id: str,
              event_time_ms: int, summary: str, evidence: dict[str, object],
              loan_code: str | None = None) -> Condition:
        return Condition(kind=kind, severity=severity, subject_type=subject_type,
                         subject_id=subject_id[:128], site_code=self._registry.site_code,
                         loan_code=loan_code if loan_code is not None else self._site_loan,
                         event_time_ms=int(event_time_ms), summary=summary, evidence=evidence)

    def _missing_mask(self) -> BoolArray:
        if self._origin_ts is None or not self._n:
            return np.zeros(self._n, dtype=bool)
        seen = np.array(self._seen_cov, dtype=np.int64)
        return (self._covered - seen) >= self.params.missing_after_ms

    def _animal_missing(self, missing: BoolArray) -> list[Condition]:
        out = []
        window = self.params.missing_after_ms
        for i in np.flatnonzero(missing).tolist():
            a = self._animals[i]
            last = self._last_seen[i]
            unseen_cov = self._covered - self._seen_cov[i]
            when = self._time_at_cov(self._seen_cov[i] + window)
            out.append(self._cond(
                "animal_missing", "high", "animal", a.epc, when,
                (f"animal {a.epc} not seen for {unseen_cov / HOUR_MS:.1f} h of reader coverage"
                 if last >= 0 else
                 f"animal {a.epc} never seen in {unseen_cov / HOUR_MS:.1f} h of reader "
                 f"coverage"),
                {"last_seen_ms": last if last >= 0 else None, "last_device": self._last_dev[i],
                 "unseen_covered_ms": unseen_cov, "window_ms": window,
                 "coverage_gap_ms": self._gap_ms, "pen": a.pen},
                loan_code=a.loan_code))
        return out

    def _herd_windows(self, tick: int) -> tuple[list[int], list[bool]] | None:
        if self._origin_ts is None or not self._n or tick - self._last_ts > self._gap_ms:
            return None
        now_slot = tick // self._slot_ms
        spw = HERD_SLOTS_PER_WINDOW
        since = max(self._origin_ts, self._gap_ends[-1] if self._gap_ends else self._origin_ts)
        valid = [(now_slot - spw * k - spw + 1) * self._slot_ms >= since
                 for k in range(HERD_WINDOWS)]
        counts = rules.herd_seen_counts(self._mask, self._slot, now_slot, spw, HERD_WINDOWS)
        return counts, valid

    def _herd_count_drop(self, tick: int) -> list[Condition]:
        got = self._herd_windows(tick)
        if got is None:
            return []
        counts, valid = got
        refs = [c for c, ok in zip(counts[1:], valid[1:], strict=True) if ok]
        if not valid[0] or not refs:
            return []
        p = self.params
        pledged = self._n
        seen = counts[0]
        ref = max(refs)
        threshold = max(p.herd_drop_min_heads, math.ceil(p.herd_drop_fraction * pledged))
        if pledged - seen < threshold or ref - seen < threshold:
            return []
        site = self._registry.site_code
        return [self._cond(
            "herd_count_drop", "high", "site", site, tick,
            f"{seen} of {pledged} pledged heads seen in the last "
            f"{p.herd_window_ms / HOUR_MS:g} h, against {ref} in the day before",
            {"seen": seen, "pledged": pledged, "reference_seen": ref, "threshold": threshold,
             "window_ms": p.herd_window_ms,
             "previous_windows": [c for c, ok in zip(counts[1:], valid[1:], strict=True)
                                  if ok]})]

    def _dead_mask(self) -> BoolArray:
        if not self._n:
            return np.zeros(0, dtype=bool)
        ts = np.array(self._m_ts, dtype=np.int64)
        moved = np.array(self._m_moved, dtype=np.int64)
        return (moved >= 0) & (ts - moved >= self.params.no_motion_ms)

    def _tag_inactive(self) -> list[Condition]:
        out = []
        window = self.params.no_motion_ms
        for i in np.flatnonzero(self._dead_mask()).tolist():
            a = self._animals[i]
            still = self._m_ts[i] - self._m_moved[i]
            devs = sorted(self._m_devs[i])
            out.append(self._cond(
                "tag_inactive", "high", "animal", a.epc, self._m_moved[i] + window,
                (f"tag {a.epc} read {self._m_reads[i]} times without motion for "
                 f"{still / HOUR_MS:.1f} h" + (f", only at {devs[0]}" if len(devs) == 1
                                               else "")),
                {"last_motion_ms": self._m_moved[i], "last_read_ms": self._m_ts[i],
                 "reads_since_motion": self._m_reads[i], "devices": devs,
                 "counter": self._m_last[i], "window_ms": window,
                 "likely": "dropped_tag" if len(devs) == 1 else "dead_or_immobile"},
                loan_code=a.loan_code))
        return out

    # -- health --------------------------------------------------------------------------------
    def _health(self, tick: int) -> tuple[rules.HealthScores | None, int, int]:
        """Health scores at ``tick``: (scores or None, last bin scored, recent windows)."""
        end_bin = (tick - HEALTH_SETTLE_MS) // HEALTH_BIN_MS - 1
        cache = self._health_cache
        if cache is not None and cache[0] == end_bin and cache[1] == self._version:
            return cache[2], cache[3], cache[4]
        result = self._health_compute(end_bin)
        self._health_cache = (end_bin, self._version, *result)
        return result

    def _health_compute(self, end_bin: int) -> tuple[rules.HealthScores | None, int, int]:
        if self._origin_ts is None or not self._n:
            return None, end_bin, 0
        p = self.params
        first_bin = -(-self._origin_ts // HEALTH_BIN_MS)  # first bin fully after the start
        avail_days = min((end_bin - first_bin + 1) // BINS_PER_DAY,
                         p.baseline_days + HEALTH_RECENT_DAYS)
        if avail_days < rules.MIN_BASELINE_DAYS + 1:
            return None, end_bin, 0
        recent = min(HEALTH_RECENT_DAYS, avail_days - rules.MIN_BASELINE_DAYS)
        days = min(avail_days, p.baseline_days + recent)
        nbins = days * BINS_PER_DAY
        bins = np.arange(end_bin - nbins + 1, end_bin + 1, dtype=np.int64)
        slots = bins % self._nb
        ring = np.array(self._ring_bin, dtype=np.int64)
        held = (ring[slots] == bins)[None, :]
        obs = np.where(held, self._grid(self._obs)[:, slots], 0.0)
        act = np.where(held, self._grid(self._act)[:, slots], 0.0)
        if self._bunk_visits:
            first = np.array(self._first_seen, dtype=np.int64)
            known = (first[:, None] >= 0) & (first[:, None] <= bins[None, :] * HEALTH_BIN_MS)
            bunk_obs = np.where(known & held, self._site_obs[slots][None, :], 0.0)
            bunk = np.where(held, self._grid(self._bunk)[:, slots], 0.0)
        else:
            bunk_obs = np.zeros(obs.shape)
            bunk = bunk_obs
        scores = rules.health_scores(act, obs, bunk, bunk_obs, bins_per_day=BINS_PER_DAY,
                                     recent_days=recent, bin_s=HEALTH_BIN_MS / 1000.0,
                                     threshold=_health_threshold(p))
        return scores, end_bin, recent

    def _immobile_mask(self) -> BoolArray:
        """Motion tags whose counter has not moved for a health bin: a dead animal or a
        dropped tag (``tag_inactive``'s business), not a sick one."""
        ts = np.array(self._m_ts, dtype=np.int64)
        moved = np.array(self._m_moved, dtype=np.int64)
        return (moved >= 0) & (ts - moved >= HEALTH_BIN_MS)

    def _health_alarm(self, scores: Any) -> BoolArray:
        """Animals the health score flags, less those not read at all: a missing or dead
        animal's empty bins say nothing about its health (they are animal_missing's or
        tag_inactive's business)."""
        alarm: BoolArray = scores.alarm & ~self._immobile_mask() & ~self._missing_mask()
        return alarm

    def _health_anomaly(self, tick: int) -> list[Condition]:
        scores, end_bin, recent = self._health(tick)
        if scores is None:
            return []
        out = []
        threshold = _health_threshold(self.params)
        alarm = self._health_alarm(scores)
        recent_bins = recent * BINS_PER_DAY
        first_recent = end_bin - recent_bins + 1  # absolute bin of the first recent bin
        for i in np.flatnonzero(alarm).tolist():
            a = self._animals[i]
            when = (first_recent + int(scores.crossed[i]) + 1) * HEALTH_BIN_MS
            out.append(self._cond(
                "health_anomaly", "warning", "animal", a.epc, when,
                f"animal {a.epc} activity/bunk visits declining below its own baseline "
                f"(decline score {float(scores.score[i]):.1f}, threshold {threshold:g} SDs)",
                {"score": _f(scores.score[i]), "threshold": threshold,
                 "decline_from_ms": (first_recent + int(scores.onset[i])) * HEALTH_BIN_MS,
                 "score_per_bin": [_f(v) for v in scores.stat[i].tolist()],
                 "z_per_bin": [_f(v) for v in scores.z[i].tolist()],
                 "bin_ms": HEALTH_BIN_MS,
                 "baseline_activity_per_day": _f(scores.base_activity[i]),
                 "recent_activity_per_day": [_f(v) for v in scores.recent_activity[i]],
                 "baseline_bunk_visits_per_day": _f(scores.base_bunk[i]),
                 "recent_bunk_visits_per_day": [_f(v) for v in scores.recent_bunk[i]],
                 "scored_until_ms": (end_bin + 1) * HEALTH_BIN_MS},
                loan_code=a.loan_code))
        return out

    # -- pens --------------------------------------------------------------------------------
    def _day_observed(self, day: int) -> bool:
        """A whole UTC day after the first reading with at most ``FEED_MAX_GAP_MS`` of gap."""
        start, end = day * DAY_MS, (day + 1) * DAY_MS
        if self._origin_ts is None or start < self._origin_ts or end > self._last_ts:
            return False
        gap = 0
        i = bisect.bisect_right(self._gap_ends, start)
        while i < len(self._gap_starts) and self._gap_starts[i] < end:
            gap += min(end, self._gap_ends[i]) - max(start, self._gap_starts[i])
            i += 1
        return gap <= FEED_MAX_GAP_MS

    def _feed_intake_drop(self, tick: int) -> list[Condition]:
        day = tick // DAY_MS - 1
        if not self._feed or not self._day_observed(day):
            return []
        observed = [d for d in range(day - FEED_PREVIOUS_DAYS, day) if self._day_observed(d)]
        out = []
        for pen in sorted(self._feed):
            kg_days = self._feed[pen]
            previous = [kg_days.get(d, 0.0) for d in observed]
            today = kg_days.get(day, 0.0)
            ref = rules.feed_drop(previous, today, self.params.feed_drop_fraction)
            if ref is None:
                continue
            out.append(self._cond(
                "feed_intake_drop", "warning", "pen", pen, (day + 1) * DAY_MS,
                f"pen {pen} got {today:.0f} kg of feed on day {day}, "
                f"{today / ref - 1:+.0%} vs its median {ref:.0f} kg",
                {"day_start_ms": day * DAY_MS, "kg": today, "median_kg": ref,
                 "previous_kg": previous, "fraction": self.params.feed_drop_fraction}))
        return out

    # -- tags ----------------------------------------------------------------------------------
    def _foreign_tag(self, tick: int) -> list[Condition]:
        out = []
        reg = self._registry
        since = tick - HOLD_MS
        for epc, pledges in sorted(self._elsewhere.items()):
            i = self._index.get(epc)
            where = [f"{b}/{ln}" if ln else b for b, ln in pledges]
            if i is None:
                lot = next((lot for lot in reg.lots if lot.lot_code == epc), None)
                if lot is None:
                    continue
                out.append(self._cond(
                    "foreign_tag", "high", "lot", epc, self._origin_ts or tick,
                    f"lot {epc} is also pledged to {', '.join(where)}: double pledge",
                    {"category": "double_pledge", "pledged_elsewhere": where},
                    loan_code=lot.loan_code))
                continue
            last = self._last_seen[i]
            if last < 0 or last <= since:
                continue
            a = self._animals[i]
            out.append(self._cond(
                "foreign_tag", "high", "animal", epc, last,
                f"animal {epc} read here is also pledged to {', '.join(where)}: double pledge",
                {"category": "double_pledge", "pledged_elsewhere": where, "last_seen_ms": last,
                 "device": self._last_dev[i]}, loan_code=a.loan_code))
        for epc, (first, last, reads, devs) in self._foreign.items():
            if last <= since or epc in self._index:
                continue
            if epc in reg.bank_epcs:
                sev: Severity = "info"
                category = "other_site"
                text = f"tag {epc}, pledged at another of the bank's sites, read here"
            elif reg.kind == "ranch" and reads >= FOREIGN_MIN_READS:
                sev = "warning"
                category = "unknown"
                text = f"unknown tag {epc} read here {reads} times"
            else:
                continue
            out.append(self._cond(
                "foreign_tag", sev, "animal", epc, first, text,
                {"category": category, "first_seen_ms": first, "last_seen_ms": last,
                 "reads": reads, "devices": list(devs)}))
        return out

    # -- warehouse ------------------------------------------------------------------------------
    def _releases(self) -> list[tuple[_Ticket, float, float, str]]:
        """Every kept ticket in order with ``(authorized kg, unauthorized kg, release
        reference)`` for outbound ones (0, 0, "" for inbound): release orders valid at the
        ticket's out time (+- ``release_grace_ms``) for its truck, or for any truck, are used
        up by the earlier tickets first; excess within ``mixed_load_tolerance_kg`` is
        forgiven. Against the registry as it is now, so late paperwork counts."""
        p = self.params
        orders = self._registry.release_orders
        remaining = [o.quantity_kg for o in orders]
        out = []
        for t in self._tickets:
            if t.direction != "out":
                out.append((t, 0.0, 0.0, ""))
                continue
            need = t.net_kg
            ref = ""
            for j, o in enumerate(orders):
                if o.truck_id is not None and o.truck_id != t.truck:
                    continue
                if not o.valid_from_ms - p.release_grace_ms <= t.out_ms <= \
                        o.valid_to_ms + p.release_grace_ms:
                    continue
                if o.quantity_kg <= 0:  # no quantity limit
                    need = 0.0
                    ref = o.reference or f"release #{j}"
                    break
                take = min(need, remaining[j])
                if take > 0:
                    remaining[j] -= take
                    need -= take
                    ref = o.reference or f"release #{j}"
                if need <= p.mixed_load_tolerance_kg:
                    break
            if need <= p.mixed_load_tolerance_kg:
                need = 0.0
            out.append((t, t.net_kg - need, need, ref))
        return out

    def _stock_below_minimum(self, matched: list[tuple[_Ticket, float, float, str]]
                             ) -> list[Condition]:
        if not self._registry.lots:
            return []
        pledged = self._pledged_kg
        tol = self.params.stock_tolerance
        ledger = pledged + self._evicted_in_kg - self._evicted_out_kg
        minimum = pledged - self._evicted_out_kg
        released = self._evicted_out_kg
        since: int | None = None
        below = ledger < max(minimum, 0.0) * (1.0 - tol)
        for t, authorized, _, _ in matched:
            if t.direction == "in":
                ledger += t.net_kg
            else:
                ledger -= t.net_kg
                minimum -= authorized
                released += authorized
            below = ledger < max(minimum, 0.0) * (1.0 - tol)
            if not below:
                since = None
            elif since is None:
                since = t.ts_ms
        if not below:
            return []
        minimum = max(minimum, 0.0)
        site = self._registry.site_code
        return [self._cond(
            "stock_below_minimum", "high", "site", site,
            since if since is not None else (self._origin_ts or 0),
            (f"ledger {ledger:,.0f} kg is {1 - ledger / minimum:.1%} below the pledged "
             f"minimum of {minimum:,.0f} kg" if minimum > 0
             else f"ledger {ledger:,.0f} kg is negative"),
            {"ledger_kg": ledger, "minimum_kg": minimum, "pledged_kg": pledged,
             "released_kg": released, "in_kg": self._in_kg, "out_kg": self._out_kg,
             "tolerance": tol, "lots": [lot.lot_code for lot in self._registry.lots]})]

    def _unauthorized_outbound(self, tick: int, matched: list[tuple[_Ticket, float, float, str]]
                               ) -> list[Condition]:
        since = tick - HOLD_MS
        found: dict[str, tuple[_Ticket, float, str, int]] = {}
        for t, _, excess, ref in matched:
            if excess <= 0 or t.ts_ms <= since:
                continue
            subject = t.truck or "unknown"
            prior = found.get(subject)
            found[subject] = (t, excess, ref, prior[3] + 1 if prior else 1)
        out = []
        for subject, (t, excess, ref, count) in sorted(found.items()):
            if ref:
                text = (f"truck {subject} left with {t.net_kg:,.0f} kg, {excess:,.0f} kg more "
                        f"than release order {ref} allows")
            else:
                text = f"truck {subject} left with {t.net_kg:,.0f} kg without a release order"
            out.append(self._cond(
                "unauthorized_outbound", "high", "truck", subject, t.out_ms, text,
                {"ticket": t.evidence(), "unauthorized_kg": excess, "release": ref or None,
                 "tickets_in_hold": count, "hold_ms": HOLD_MS}))
        return out

    def _geofence_exit(self) -> list[Condition]:
        out = []
        for dev, (ts, lat, lon, outside_since) in sorted(self._positions.items()):
            if outside_since < 0:
                continue
            out.append(self._cond(
                "geofence_exit", "high", "device", dev, outside_since,
                f"{dev} is outside the site's geofences since its fix at {outside_since}",
                {"lat": lat, "lon": lon, "fix_ms": ts, "outside_since_ms": outside_since}))
        return out

    def _held(self, flags: collections.deque[_Flag], kind: str, subject_type: str,
              tick: int) -> list[Condition]:
        """Event-like findings within ``HOLD_MS`` of the tick, one per subject: the worst,
        with how many there were."""
        since = tick - HOLD_MS
        by: dict[str, list[_Flag]] = {}
        for f in flags:
            if since < f.ts_ms <= tick:
                by.setdefault(f.subject, []).append(f)
        out = []
        for subject, fs in sorted(by.items()):
            worst = max(fs, key=lambda f: (_SEVERITY_RANK[f.severity], f.ts_ms))
            evidence = dict(worst.evidence)
            evidence["findings_in_hold"] = len(fs)
            evidence["first_ms"] = fs[0].ts_ms
            evidence["hold_ms"] = HOLD_MS
            out.append(self._cond(kind, worst.severity, subject_type, subject, fs[0].ts_ms,
                                  worst.summary, evidence))
        return out

    # -- devices ----------------------------------------------------------------------------
    def _device_offline_conditions(self) -> list[Condition]:
        out = []
        for dev, (ts, reason) in sorted(self._offline.items()):
            st = self._devices.get(dev)
            if st is not None and st[1] > ts:  # it spoke since (readings after the report)
                continue
            out.append(self._cond(
                "device_offline", "warning", "device", dev, ts,
                f"{dev} reported offline ({reason})",
                {"reason": reason[:200], "offline_ms": ts, "source": "device_offline"}))
        if self._origin_ts is None:
            return out
        p = self.params
        for dev in sorted(self._registry.devices):
            if not _animal_reader(self._registry, dev):
                continue
            st = self._devices.get(dev)
            # only devices that showed a regular rhythm: a gate reader that sees animals on
            # move days, a weighbridge between trucks or a device never heard from are not
            # judged by silence (they report their own offline state, or device_online)
            if (dev in self._offline or st is None or st[4] < DEVICE_MIN_READINGS
                    or self._covered - st[5] < DEVICE_LEARN_MS):
                continue
            silent = self._covered - st[2]
            threshold = max(p.device_offline_after_ms, 2 * st[3])
            if silent < threshold:
                continue
            out.append(self._cond(
                "device_offline", "warning", "device", dev, self._time_at_cov(st[2] + threshold),
                f"{dev} silent for {silent / MINUTE_MS:.0f} min while the site reports",
                {"last_reading_ms": st[1], "silent_covered_ms": silent,
                 "threshold_ms": threshold, "longest_silence_before_ms": st[3],
                 "source": "silence"}))
        return out

    # -- snapshots ------------------------------------------------------------------------------
    def herd_snapshot(self, tick_ms: int) -> HerdSnapshot:
        """The pledged herd at ``tick_ms`` (see :class:`HerdSnapshot`)."""
        n = self._n
        missing = self._missing_mask()
        dead = self._dead_mask()
        scores, _, _ = self._health(tick_ms)
        factor = np.ones(n, dtype=np.float64)
        if scores is not None:
            factor[self._health_alarm(scores)] = self.params.health_factor_sick
        counts = np.minimum(np.array(self._w_n, dtype=np.int64), WEIGHINGS_KEPT)
        totals = np.array(self._w_n, dtype=np.int64)
        start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=start[1:])
        k = np.arange(WEIGHINGS_KEPT, dtype=np.int64)
        pos = (totals[:, None] - counts[:, None] + k[None, :]) % WEIGHINGS_KEPT
        keep = k[None, :] < counts[:, None]
        rows = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], (n, WEIGHINGS_KEPT))
        weigh_ts = self._w_ts[rows[keep], pos[keep]]
        weigh_kg = self._w_kg[rows[keep], pos[keep]]
        present = ~missing & ~dead
        return HerdSnapshot(
            ts_ms=tick_ms, site_code=self._registry.site_code, animals=self._animals,
            present=present, missing=missing, dead=dead,
            last_seen_ms=np.array(self._last_seen, dtype=np.int64), health_factor=factor,
            weigh_start=start, weigh_ts_ms=weigh_ts.astype(np.int64),
            weigh_kg=weigh_kg.astype(np.float64),
            intake_kg_per_head=self._intake_per_head(tick_ms, present))

    def _intake_per_head(self, tick: int, present: BoolArray) -> dict[str, float]:
        if not self._feed:
            return {}
        day = tick // DAY_MS - 1
        observed = [d for d in range(day - FEED_PREVIOUS_DAYS + 1, day + 1)
                    if self._day_observed(d)]
        if not observed:
            return {}
        heads: dict[str, int] = collections.Counter(
            a.pen for a, ok in zip(self._animals, present.tolist(), strict=True)
            if ok and a.pen)
        out = {}
        for pen, kg_days in self._feed.items():
            if heads.get(pen):
                mean = sum(kg_days.get(d, 0.0) for d in observed) / len(observed)
                out[pen] = mean / heads[pen]
        return out

    def stock_snapshot(self, tick_ms: int) -> StockSnapshot:
        """The weighbridge ledger at ``tick_ms`` (see :class:`StockSnapshot`)."""
        pledged = self._pledged_kg
        return StockSnapshot(
            ts_ms=tick_ms, site_code=self._registry.site_code, lots=self._registry.lots,
            opening_kg=pledged, in_kg=self._in_kg, out_kg=self._out_kg,
            ledger_kg=pledged + self._in_kg - self._out_kg, pledged_kg=pledged,
            tickets=self._ticket_count)


def _f(value: Any) -> float | None:
    """JSON-safe float (NaN and infinities -> None)."""
    v = float(value)
    return round(v, 4) if math.isfinite(v) else None


_HANDLERS: Final = {
    "weigh_event": SiteState._weigh_event,
    "weigh_ticket": SiteState._weigh_ticket,
    "feed_event": SiteState._feed_event,
    "position": SiteState._position,
    "device_online": SiteState._device_online,
    "device_offline": SiteState._device_offline,
    "data_integrity": SiteState._data_integrity,
}
