"""The simulated ranch: a herd in pens with UHF ear tags, readers at feed bunks and water
points, a walk-over or chute scale and a TMR mixer, plus the animal incidents.

Two halves:

* the *plan* (:class:`Ranch` construction): every animal's identity, tag, growth curve and
  fate (stolen, dead, tag dropped, ill) for the whole run. The truth (weights, presence,
  health) is a pure function of the plan and time, so ``World.truth()`` needs no device data.
* the *streams* (:meth:`Ranch.blocks`): device observations, generated one time block (a
  day) at a time with a random generator seeded by (seed, site, block), vectorised over the
  herd with numpy.

Figures (domain.md, with its sources):

* growth: Gompertz W = A*exp(-b*exp(-k*t)); steers A 750 kg, k 0.00341/d and heifers A 520
  kg, k 0.00457/d (cattle after weaning, sets 2 and 1, PMC7149552 table 1), with per-animal
  variation; b follows from each animal's weight at the start.
* intake: dry-matter intake 2.02-2.08 % of body weight in US feedlots and 2.7-3.0 % in the
  Australian rule of thumb (domain.md 2.2); the default 2.5 % sits between. As fed = DM / DM
  fraction (futurebeef).
* activity: lying > 55 % of the time between 20:00 and 04:00 and < 30 % at feeding times,
  individuals 29-66 % (domain.md 2.3), hence a circadian profile per animal around its own
  baseline; BRD: activity and feeding behaviour fall at least 6 days before diagnosis, most
  on day -1 (domain.md 2.3): a linear decline of activity and intake over the prodrome,
  a square-root one of feeding behaviour (:func:`prodrome_factor` has the sources).
* walk-over scale: raw walk-over weights have low repeatability before filtering and are
  filtered at +-25 % of the herd average (domain.md 2.4), hence 0 kg, half and double reads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from firmware_sim.world import layout
from firmware_sim.world.observations import AnimalWeighing, FeedDelivery, Observation, TagRead
from firmware_sim.world.scenario import (
    ANIMAL_KINDS,
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    IncidentSpec,
    RanchSpec,
    ScenarioError,
)
from protocols import iso11784

__all__ = ["FEEDING_EXPONENT", "PRODROME_EXPONENT", "Ranch", "TruthPiece", "prodrome_factor"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
NEVER: Final = float(2**62)

TAG_PLAIN, TAG_ISO, TAG_MOTION = 0, 1, 2
_TAG_NAMES: Final = ("plain", "iso", "motion")
COUNTER_MOD: Final = 1 << 16  # edge.aggregate.MOTION_COUNTER_MOD

# Gompertz parameters by sex: (A kg, k per day), domain.md 2.1 (PMC7149552 table 1)
GOMPERTZ: Final = {"M": (750.0, 0.00341), "F": (520.0, 0.00457)}
A_SPREAD: Final = 0.07  # log-sd of A between animals (assumed)
K_SPREAD: Final = 0.10  # log-sd of k between animals (assumed)
DAILY_WEIGHT_NOISE: Final = 0.006  # gut fill and water, sd of a day's true weight (assumed)

# visits: gamma-distributed gaps (shape 6, cv ~0.4), capped so a healthy animal comes by some
# reader often enough that a 4 h silence is rare and a 12 h one practically impossible
_GAP_SHAPE: Final = 6.0
_WATER_GAP_CAP_MS: Final = 75 * MINUTE_MS
_BUNK_GAP_CAP_MS: Final = 10 * HOUR_MS
_FEED_ATTENDANCE: Final = 0.92  # share of a pen that comes to the bunk at a delivery
_PEN_FEED_STEP_MS: Final = 6 * MINUTE_MS  # the mixer unloads pen after pen
_PASS_MS: Final = (2_000, 15_000)  # a pass through a read zone lasts this long
_STUCK_READ_EVERY_MS: Final = 60_000  # a tag lying in a read zone: one read a minute ...
_STUCK_READ_P: Final = 0.8  # ... most minutes
_GATE_WINDOW_MS: Final = 10 * MINUTE_MS  # stolen animals pass the gate reader before `at`

# scale noise and outliers (domain.md 2.4: raw walk-over weights are poor; see docstring)
_WALKOVER_SD: Final = 0.015
_WALKOVER_OUTLIERS: Final = (0.03, 0.04, 0.02)  # zero, half, double
_CHUTE_SD: Final = 0.005
_CHUTE_OUTLIERS: Final = (0.01, 0.0, 0.0)
_CHUTE_EVERY_DAYS: Final = 7
_CHUTE_START_MIN: Final = 8 * 60
_CHUTE_STEP_MS: Final = 45_000

_CLINICAL_LOSS_PER_DAY: Final = 0.01  # weight lost per clinical day (assumed), at most ...
_CLINICAL_LOSS_MAX: Final = 0.08
_REGAIN_MS: Final = 7 * DAY_MS
_RECOVERY_RAMP_MS: Final = 3 * DAY_MS  # activity back to baseline after recovery
HEALTH_FACTOR_ILL: Final = 0.8  # value factor while clinically ill (brief; RuleParams)
# Shape of the prodrome decline, 1 - drop * x**exponent (x: 0 at onset, 1 at the clinical
# moment): linear for activity and intake, square root for feeding behaviour (bunk visits,
# attendance at the deliveries); see prodrome_factor. Both were x**1.5 until issue 7's
# second session (helper H12); docs/health.md has the figures of both.
PRODROME_EXPONENT: Final = 1.0
FEEDING_EXPONENT: Final = 0.5


def prodrome_factor(x: float, drop: float, exponent: float = PRODROME_EXPONENT) -> float:
    """Factor (1 = normal) at the fraction ``x`` (0..1) of an illness's prodrome for an
    animal that ends it ``drop`` below normal: ``1 - drop * x ** exponent``.

    What the sources say (``shared/reference/domain.md`` 2.3):

    * activity: accelerometers on 364 feedlot calves (Pillen et al. 2016, Bovine
      Practitioner 50(1):1-8, journals.tdl.org/bovine/index.php/bovine/article/view/2883):
      reductions in step count, standing time, lying bouts and motion index "started at
      least 6 days prior to BRD diagnosis, and were more pronounced the day before";
    * feeding behaviour: CUSUM charts on growing bulls (Kayser et al., the domain.md 2.3
      "BRD from feeding behaviour" source) signalled 4.4 (bunk-visit frequency), 3.5 (visit
      duration), 4.5 (head-down time) but 2.6 days (dry-matter intake) before symptoms;
      cattle may go off feed up to 7 days before clinical BRD (producer.com 2014).

    Activity, ``PRODROME_EXPONENT`` 1 (linear): a decline under way from day -6 and deepest
    on day -1, with no acceleration, which the source does not state. Day -6 averages
    ``drop / 12`` below normal (4 % at the default 0.5), day -4 21 %, day -1 46 %; the
    former ``x ** 1.5`` gave 1.4 %, 13 % and 44 %.

    Feeding behaviour, ``FEEDING_EXPONENT`` 0.5 (square root): it changes before activity
    and intake do (feeding-behaviour charts signal 1-2 days before the intake chart), so it
    falls early: day -6 14 %, day -4 32 %, day -1 48 %. Even so the world is *harder* than
    the source: a plain daily CUSUM (k 0.5, h 4 SDs, 10-day baseline) on the simulated
    daily bunk visits signals on average 1.8-2.0 days before the clinical day (1.2-1.3 with
    a linear, 0.7-0.9 with the former curve), not 4.4; no curve that starts at the onset
    reaches 4.4 (a 50 % step at the onset gives 3.6). Intake follows the activity curve
    (the DMI chart signalled last)."""
    if x <= 0.0:
        return 1.0
    return float(1.0 - drop * min(x, 1.0) ** exponent)


def _profile(kind: str, feedings_min: Sequence[int]) -> F64:
    """Relative intensity per local hour (mean 1) of activity or of water/bunk visits."""
    feed_hours = {(m // 60 + d) % 24 for m in feedings_min for d in (0, 1)}
    p = np.ones(24)
    for h in range(24):
        night = h >= 20 or h < 4
        if kind == "activity":
            p[h] = 0.45 if night else 0.8 if h < 6 else 1.8 if h in feed_hours else 1.1
        elif kind == "water":
            p[h] = 0.8 if night else 1.3 if h in feed_hours else 1.05
        else:  # bunk, besides the deliveries themselves
            p[h] = 0.35 if night else 1.8 if h in feed_hours else 1.0
    return np.asarray(p / p.mean(), dtype=np.float64)


@dataclasses.dataclass(slots=True)
class TruthPiece:
    """A ranch's or warehouse's part of one incident line (the world adds id, kind, site)."""

    incident: IncidentSpec
    start_ms: int
    end_ms: int | None
    animals: list[str] = dataclasses.field(default_factory=list)
    lots: list[str] = dataclasses.field(default_factory=list)
    trucks: list[str] = dataclasses.field(default_factory=list)
    devices: list[str] = dataclasses.field(default_factory=list)
    pens: list[str] = dataclasses.field(default_factory=list)
    gateways: list[str] = dataclasses.field(default_factory=list)
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


class Ranch:
    """One ranch: plan at construction, device streams from :meth:`blocks`."""

    def __init__(self, spec: RanchSpec, *, site_index: int, start_ms: int, end_ms: int,
                 seed: int, incidents: Sequence[IncidentSpec], source: str) -> None:
        self.spec = spec
        self.site = spec.id
        self.site_index = site_index
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.seed = seed
        self.offset_ms = spec.utc_offset_h * HOUR_MS
        rng = np.random.default_rng([seed, 0x4A2C, site_index])
        n = self.n = spec.animals
        self.number = np.arange(n)
        self.pen_names = layout.pen_ids(spec.pens)
        self.pen = (self.number * spec.pens) // n  # contiguous blocks of animals per pen

        # -- tags ----------------------------------------------------------------------------
        u = rng.random(n)
        self.tag = np.where(u < spec.motion_fraction, TAG_MOTION,
                            np.where(u < spec.motion_fraction + spec.iso_fraction, TAG_ISO,
                                     TAG_PLAIN))
        salt = int(rng.integers(0, 1 << 24))
        iso_base = int(rng.integers(0, 10**8))
        self.identity: list[str] = []
        self.prefix: list[str] = []  # motion tags: the EPC before the counter bytes
        self.iso: list[str | None] = []
        for i in range(n):
            kind = int(self.tag[i])
            if kind == TAG_MOTION:
                # edge.aggregate convention: E7, 7-byte serial, 2 reserved bytes, counter
                pre = f"E7{site_index + 1:02X}{salt:06X}{i + 1:06X}0000"
                self.prefix.append(pre)
                self.identity.append(pre + "0000")
                self.iso.append(None)
            elif kind == TAG_ISO:
                animal = iso11784.AnimalId(spec.iso_country,
                                           (site_index + 1) * 10**9 + iso_base + i)
                self.identity.append(iso11784.to_epc(animal).hex().upper())
                self.prefix.append("")
                self.iso.append(animal.decimal)
            else:
                self.identity.append(f"E28011{site_index + 1:02X}{salt:08X}{i + 1:08X}")
                self.prefix.append("")
                self.iso.append(None)

        # -- animals -------------------------------------------------------------------------
        self.female = rng.random(n) < spec.female_fraction
        self.breed = [spec.breeds[j] for j in rng.integers(0, len(spec.breeds), n)]
        ages_d = rng.uniform(spec.age_months[0], spec.age_months[1], n) * 30.44
        self.birth_ms = (start_ms - ages_d * DAY_MS).astype(np.int64)
        a0 = np.where(self.female, GOMPERTZ["F"][0], GOMPERTZ["M"][0])
        k0 = np.where(self.female, GOMPERTZ["F"][1], GOMPERTZ["M"][1])
        self.A = a0 * np.exp(rng.normal(0.0, A_SPREAD, n))
        self.k = k0 * np.exp(rng.normal(0.0, K_SPREAD, n))
        w0 = rng.normal(spec.entry_weight_kg, spec.entry_weight_sd_kg, n)
        self.w0 = np.clip(w0, 0.25 * self.A, 0.85 * self.A)
        self.b = np.log(self.A / self.w0)
        n_days = math.ceil((end_ms - start_ms) / DAY_MS) + 2
        self.day_noise = rng.normal(0.0, DAILY_WEIGHT_NOISE, (n, n_days))
        self.day_noise[:, 0] = 0.0  # the entry weight is the true weight at the start
        self.activity_rate = spec.activity_per_hour * np.exp(rng.normal(0.0, 0.25, n))
        self.counter0 = rng.integers(0, COUNTER_MOD, n).astype(np.float64)

        # -- devices -------------------------------------------------------------------------
        self.readers = layout.ranch_readers(spec.id, spec.readers, spec.pens)
        self.reader_ids = [r[0] for r in self.readers]
        self.pen_readers: dict[str, I64] = {}  # place -> (pens, slots) table, -1 padded
        self.pen_reader_count: dict[str, I64] = {}
        for place in ("water", "bunk"):
            lists: list[list[int]] = [[] for _ in range(spec.pens)]
            for j, (_, pl, pens) in enumerate(self.readers):
                if pl == place:
                    for p in pens:
                        lists[self.pen_names.index(p)].append(j)
            width = max(1, max(len(x) for x in lists))
            table = np.full((spec.pens, width), -1, dtype=np.int64)
            for pen_no, x in enumerate(lists):
                table[pen_no, :len(x)] = x
            self.pen_readers[place] = table
            self.pen_reader_count[place] = np.array([len(x) for x in lists], dtype=np.int64)
        self.antenna_count = spec.antennas
        self.scale_device = layout.scale_id(spec.id)
        self.scale_reader = layout.scale_reader_id(spec.id)
        self.feeder_device = layout.feeder_id(spec.id)
        self.gate_device = layout.gate_reader_id(spec.id)

        self.act_profile = _profile("activity", spec.feedings_min)
        self.water_profile = _profile("water", spec.feedings_min)
        self.bunk_profile = _profile("bunk", spec.feedings_min)

        # -- fates ---------------------------------------------------------------------------
        self.gone_ms = np.full(n, NEVER)  # stolen or dead: no visits from then on
        self.dead_ms = np.full(n, NEVER)
        self.stolen_ms = np.full(n, NEVER)
        self.freeze_ms = np.full(n, NEVER)  # motion counter stops (death, tag drop)
        self.drop_ms = np.full(n, NEVER)  # the animal is no longer identified
        self.stuck: list[tuple[int, int, int, int]] = []  # (animal, reader, since, antenna)
        self.ill_idx: list[int] = []
        self.ill_onset: list[int] = []
        self.ill_clinical: list[int] = []
        self.ill_recovered: list[float] = []
        self.ill_drop: list[float] = []
        self.shortages: list[tuple[int, int, float, frozenset[int]]] = []
        self.gate_thefts: list[tuple[int, int]] = []  # (animal, at)
        self.pieces: list[TruthPiece] = []
        for inc in incidents:
            if inc.kind in ANIMAL_KINDS or inc.kind == "feed_shortage":
                self._apply(inc, source)
        self._ill = np.array(self.ill_idx, dtype=np.int64)

    # -- incidents -------------------------------------------------------------------------
    def _pick(self, inc: IncidentSpec, source: str, prefer_motion: bool) -> list[int]:
        if inc.animals:
            return list(inc.animals)
        rng = np.random.default_rng([self.seed, 0x1C1D, inc.index])
        taken = ((self.gone_ms < NEVER) | (self.drop_ms < NEVER) | (self.freeze_ms < NEVER))
        taken[self.ill_idx] = True
        for a, _ in self.gate_thefts:
            taken[a] = True
        ok = ~taken
        if inc.pen is not None:
            ok &= self.pen == self.pen_names.index(inc.pen)
        count = inc.count or 1
        pool = np.flatnonzero(ok)
        if prefer_motion:
            motion = pool[self.tag[pool] == TAG_MOTION]
            if motion.size >= count:
                pool = motion
        if pool.size < count:
            where = f" in pen {inc.pen}" if inc.pen else ""
            raise ScenarioError(source, [(f"incident[{inc.index}].count",
                                          f"{self.site!r} has only {pool.size} animals{where} "
                                          f"left for this incident, {count} asked")])
        return sorted(int(x) for x in rng.choice(pool, count, replace=False))

    def _reader_near(self, animal: int, rng: np.random.Generator) -> int:
        """A reader of the animal's pen (water first) where a dropped tag or a carcass lies."""
        for place in ("water", "bunk"):
            cands = self.pen_readers[place][self.pen[animal]]
            cands = cands[cands >= 0]
            if cands.size:
                return int(rng.choice(cands))
        return 0

    def _apply(self, inc: IncidentSpec, source: str) -> None:
        at = inc.at_ms
        rng = np.random.default_rng([self.seed, 0x1C1E, inc.index])
        if inc.kind == "feed_shortage":
            pens = (frozenset({self.pen_names.index(inc.pen)}) if inc.pen
                    else frozenset(range(self.spec.pens)))
            end = at + (inc.duration_ms or DAY_MS)
            pct = inc.percent or 0.0
            self.shortages.append((at, end, pct, pens))
            names = [self.pen_names[p] for p in sorted(pens)]
            self.pieces.append(TruthPiece(inc, at, end, devices=[self.feeder_device],
                                          pens=names, detail={"percent": pct}))
            return
        animals = self._pick(inc, source, prefer_motion=inc.kind != "theft")
        epcs = [self.identity[a] for a in animals]
        piece = TruthPiece(inc, at, None, animals=epcs,
                           pens=sorted({self.pen_names[self.pen[a]] for a in animals}))
        if inc.kind == "theft":
            for a in animals:
                self.gone_ms[a] = self.stolen_ms[a] = at
                if self.spec.gate_reader:
                    self.gate_thefts.append((a, at))
            piece.detail = {"count": len(animals)}
            if self.spec.gate_reader:
                piece.devices = [self.gate_device]
        elif inc.kind == "death":
            near: list[str | None] = []
            for a in animals:
                self.gone_ms[a] = self.dead_ms[a] = self.freeze_ms[a] = at
                if inc.near_reader:
                    r = self._reader_near(a, rng)
                    self.stuck.append((a, r, at, int(rng.integers(1, self.antenna_count + 1))))
                    near.append(self.reader_ids[r])
                else:
                    near.append(None)
            piece.devices = sorted({d for d in near if d is not None})
            piece.detail = {"near_reader": near}
        elif inc.kind == "tag_drop":
            where: list[str] = []
            for a in animals:
                self.drop_ms[a] = self.freeze_ms[a] = at
                r = (self.reader_ids.index(inc.device) if inc.device in self.reader_ids
                     else self._reader_near(a, rng))
                self.stuck.append((a, r, at, int(rng.integers(1, self.antenna_count + 1))))
                where.append(self.reader_ids[r])
            piece.devices = sorted(set(where))
            piece.detail = {"lies_at": where}
        elif inc.kind == "illness":
            prodrome = inc.prodrome_ms or 6 * DAY_MS
            clinical = at + prodrome
            recovered = clinical + inc.recovery_ms if inc.recovery_ms else None
            for a in animals:
                self.ill_idx.append(a)
                self.ill_onset.append(at)
                self.ill_clinical.append(clinical)
                self.ill_recovered.append(float(recovered) if recovered else NEVER)
                self.ill_drop.append(inc.activity_drop or 0.5)
            piece.end_ms = recovered
            piece.detail = {"clinical_ms": clinical, "recovered_ms": recovered,
                            "activity_drop": inc.activity_drop}
        self.pieces.append(piece)

    # -- truth -----------------------------------------------------------------------------
    def illness_factor(self, t: F64 | float, idx: I64 | None = None,
                       channel: str = "activity") -> F64:
        """Illness factor (1 = normal) of animals ``idx`` (all when None) at ``t`` (a scalar,
        or one time per animal) for ``channel``: ``activity`` (motion counts, intake) or
        ``feeding`` (bunk visits, attendance at the deliveries); see
        :func:`prodrome_factor`."""
        n = self.n if idx is None else len(idx)
        f = np.ones(n)
        if not self.ill_idx:
            return f
        tt = np.broadcast_to(np.asarray(t, dtype=np.float64), (n,))
        for j, a in enumerate(self.ill_idx):
            rows = [a] if idx is None else np.flatnonzero(idx == a).tolist()
            for r in rows:
                f[r] = self._ill_f(j, float(tt[r]), channel)
        return f

    def _ill_f(self, j: int, t: float, channel: str = "activity") -> float:
        onset, clinical = self.ill_onset[j], self.ill_clinical[j]
        rec, drop = self.ill_recovered[j], self.ill_drop[j]
        if t < onset:
            return 1.0
        if t < clinical:
            # progressive decline from onset, deepest on day -1 (prodrome_factor)
            return prodrome_factor((t - onset) / (clinical - onset), drop,
                                   FEEDING_EXPONENT if channel == "feeding"
                                   else PRODROME_EXPONENT)
        if t < rec:
            return 1.0 - drop
        return 1.0 - drop * max(0.0, 1.0 - (t - rec) / _RECOVERY_RAMP_MS)

    def _ill_loss(self, t: float) -> F64:
        loss = np.ones(self.n)
        for j, a in enumerate(self.ill_idx):
            c, rec = self.ill_clinical[j], self.ill_recovered[j]
            if t < c:
                continue
            lost = min(_CLINICAL_LOSS_MAX, _CLINICAL_LOSS_PER_DAY * (min(t, rec) - c) / DAY_MS)
            if t > rec:
                lost *= max(0.0, 1.0 - (t - rec) / _REGAIN_MS)
            loss[a] = 1.0 - lost
        return loss

    def true_weight(self, t: int) -> F64:
        """Every animal's true live weight (kg) at ``t``."""
        days = (t - self.start_ms) / DAY_MS
        g = self.A * np.exp(-self.b * np.exp(-self.k * days))
        d = min(max(0, int(days)), self.day_noise.shape[1] - 1)
        return np.asarray(g * (1.0 + self.day_noise[:, d]) * self._ill_loss(t), dtype=np.float64)

    def health_factor(self, t: int) -> F64:
        hf = np.ones(self.n)
        for j, a in enumerate(self.ill_idx):
            if self.ill_clinical[j] <= t < self.ill_recovered[j]:
                hf[a] = HEALTH_FACTOR_ILL
        return hf

    def present(self, t: int) -> npt.NDArray[np.bool_]:
        return self.gone_ms > t

    def value(self, t: int, price_per_kg: float, mask: npt.NDArray[np.bool_] | None = None
              ) -> float:
        """True livestock value at ``t`` of the animals in ``mask`` (all when None)."""
        v = self.true_weight(t) * self.health_factor(t) * self.present(t)
        if mask is not None:
            v = v * mask
        return float(v.sum() * price_per_kg)

    # -- streams ---------------------------------------------------------------------------
    def _local_times(self, d0: int, d1: int, minutes: Sequence[int]) -> list[int]:
        """Absolute times in [d0, d1) of the given local clock times, in order."""
        first_midnight = ((d0 + self.offset_ms) // DAY_MS) * DAY_MS - self.offset_ms
        out = []
        m = first_midnight - DAY_MS
        while m < d1:
            out += [m + x * MINUTE_MS for x in minutes if d0 <= m + x * MINUTE_MS < d1]
            m += DAY_MS
        return sorted(out)

    def _local_hour(self, t: F64) -> I64:
        return ((t + self.offset_ms) // HOUR_MS % 24).astype(np.int64)

    def blocks(self) -> Iterator[tuple[int, int, list[Observation]]]:
        """``(block start, block end, observations)`` per day from the start, each list in
        no particular order; an observation may lie after its block's end (a pass that
        crosses midnight) but never before its start."""
        spec = self.spec
        base_water = DAY_MS / spec.water_visits_per_day
        base_bunk = DAY_MS / spec.bunk_visits_per_day if spec.bunk_visits_per_day else None
        rng0 = np.random.default_rng([self.seed, 0x5EED, self.site_index])
        next_water = self.start_ms + rng0.random(self.n) * base_water
        next_bunk = (self.start_ms + rng0.random(self.n) * base_bunk if base_bunk
                     else np.full(self.n, NEVER))
        counter = self.counter0.copy()
        block = 0
        d0 = self.start_ms
        while d0 < self.end_ms:
            d1 = min(d0 + DAY_MS, self.end_ms)
            rng = np.random.default_rng([self.seed, 0xB10C, self.site_index, block])
            obs, counter = self._block(block, d0, d1, rng, next_water, next_bunk, base_water,
                                       base_bunk, counter)
            yield d0, d1, obs
            d0 = d1
            block += 1

    def _renewal(self, next_ms: F64, until: int, base: float, profile: F64, cap: float,
                 rng: np.random.Generator, ill_slows: bool) -> tuple[I64, F64]:
        idx_parts: list[I64] = []
        t_parts: list[F64] = []
        active = np.flatnonzero(next_ms < until)
        while active.size:
            t = next_ms[active]
            idx_parts.append(active)
            t_parts.append(t.copy())
            mean = base / profile[self._local_hour(t)]
            if ill_slows and self.ill_idx:
                mean = mean / np.maximum(self.illness_factor(t, active, "feeding"), 0.05)
            gap = np.minimum(rng.gamma(_GAP_SHAPE, mean / _GAP_SHAPE), cap)
            next_ms[active] = t + np.maximum(gap, 60_000.0)
            active = active[next_ms[active] < until]
        if not idx_parts:
            return np.empty(0, dtype=np.int64), np.empty(0)
        return np.concatenate(idx_parts), np.concatenate(t_parts)

    def _block(self, block: int, d0: int, d1: int, rng: np.random.Generator, next_water: F64,
               next_bunk: F64, base_water: float, base_bunk: float | None, counter: F64
               ) -> tuple[list[Observation], F64]:
        spec = self.spec
        n = self.n
        out: list[Observation] = []

        # activity counters: cumulative counts at each hour boundary of the block
        hours = math.ceil((d1 - d0) / HOUR_MS)
        h_start = d0 + np.arange(hours) * HOUR_MS
        prof = self.act_profile[self._local_hour(h_start.astype(np.float64))]
        inc = (self.activity_rate[:, None] * prof[None, :]
               * np.exp(rng.normal(0.0, 0.2, (n, hours)) - 0.02))
        if self.ill_idx:
            mids = h_start + HOUR_MS // 2
            for j, a in enumerate(self.ill_idx):
                inc[a] *= [self._ill_f(j, float(m)) for m in mids]
        cum = np.empty((n, hours + 1))
        cum[:, 0] = counter
        np.cumsum(inc, axis=1, out=cum[:, 1:])
        cum[:, 1:] += counter[:, None]

        def counter_at(animals: I64, t: F64) -> I64:
            tt = np.minimum(t, self.freeze_ms[animals])
            x = np.clip((tt - d0) / HOUR_MS, 0.0, float(hours))
            h = np.minimum(x.astype(np.int64), hours - 1)
            frac = x - h
            c0 = cum[animals, h]
            v = c0 + frac * (cum[animals, h + 1] - c0)
            return np.asarray(v.astype(np.int64) % COUNTER_MOD, dtype=np.int64)

        # visits: water and bunk renewal processes plus the deliveries
        w_idx, w_t = self._renewal(next_water, d1, base_water, self.water_profile,
                                   _WATER_GAP_CAP_MS, rng, ill_slows=False)
        if base_bunk is not None:
            b_idx, b_t = self._renewal(next_bunk, d1, base_bunk, self.bunk_profile,
                                       _BUNK_GAP_CAP_MS, rng, ill_slows=True)
        else:
            b_idx, b_t = np.empty(0, dtype=np.int64), np.empty(0)
        feed_times = self._local_times(d0, d1, spec.feedings_min)
        f_idx: list[I64] = []
        f_t: list[F64] = []
        for ft in feed_times:
            deliver = ft + self.pen * _PEN_FEED_STEP_MS
            come = rng.random(n) < _FEED_ATTENDANCE * self.illness_factor(
                deliver.astype(float), channel="feeding")
            delay = rng.gamma(2.0, 10 * MINUTE_MS / 2.0, n)
            f_idx.append(np.flatnonzero(come))
            f_t.append((deliver + delay)[come])
            out += self._feed(ft, d0, rng)
        bunk_idx = np.concatenate([b_idx, *f_idx]) if f_idx else b_idx
        bunk_t = np.concatenate([b_t, *f_t]) if f_t else b_t

        # passes -> reads
        p_idx = np.concatenate([w_idx, bunk_idx])
        p_t = np.concatenate([w_t, bunk_t])
        p_place = np.concatenate([np.zeros(w_idx.size, np.int64),
                                  np.ones(bunk_idx.size, np.int64)])
        reader = np.full(p_idx.size, -1, dtype=np.int64)
        for code, place in ((0, "water"), (1, "bunk")):
            sel = np.flatnonzero(p_place == code)
            pens = self.pen[p_idx[sel]]
            cnt = self.pen_reader_count[place][pens]
            slot = (rng.random(sel.size) * np.maximum(cnt, 1)).astype(np.int64)
            reader[sel] = np.where(cnt > 0, self.pen_readers[place][pens, slot], -1)
        ok = ((reader >= 0) & (p_t < self.gone_ms[p_idx]) & (p_t < self.drop_ms[p_idx])
              & (rng.random(p_idx.size) < spec.read_probability))
        out += self._reads(p_idx[ok], p_t[ok], reader[ok], rng, counter_at)

        # the scale
        if spec.scale == "walkover" and spec.scale_fraction > 0 and w_idx.size:
            out += self._walkover(w_idx, w_t, d0, rng, counter_at)
        elif spec.scale == "chute" and block % _CHUTE_EVERY_DAYS == 0:
            out += self._chute(d0, d1, rng, counter_at)

        # tags lying in a read zone, and the gate reader on a theft
        out += self._stuck(d0, d1, rng, counter_at)
        for a, at in self.gate_thefts:
            if d0 <= max(at - _GATE_WINDOW_MS, self.start_ms) < d1:  # the block it begins in
                k = int(rng.integers(2, 5))
                ts = at - rng.uniform(1_000, _GATE_WINDOW_MS, k)
                epc = self._epcs(np.full(k, a), counter_at(np.full(k, a), ts))
                out += [TagRead(int(t), self.site, self.gate_device, e, 1,
                                int(rng.integers(-62, -45))) for t, e in zip(ts, epc,
                                                                              strict=True)]

        # carried on unreduced (the 16-bit wrap is applied on output only)
        counter = self._continuous(cum, d0, d1, hours)
        return out, counter

    def _continuous(self, cum: F64, d0: int, d1: int, hours: int) -> F64:
        t = np.minimum(np.full(self.n, float(d1)), self.freeze_ms)
        x = np.clip((t - d0) / HOUR_MS, 0.0, float(hours))
        h = np.minimum(x.astype(np.int64), hours - 1)
        frac = x - h
        rows = np.arange(self.n)
        c0 = cum[rows, h]
        return np.asarray(c0 + frac * (cum[rows, h + 1] - c0), dtype=np.float64)

    def _epcs(self, animals: I64, counters: I64) -> list[str]:
        ident, pre, tag = self.identity, self.prefix, self.tag
        return [pre[a] + f"{c:04X}" if tag[a] == TAG_MOTION else ident[a]
                for a, c in zip(animals.tolist(), counters.tolist(), strict=True)]

    def _reads(self, animals: I64, t: F64, reader: I64, rng: np.random.Generator,
               counter_at: Any) -> list[Observation]:
        m = animals.size
        if not m:
            return []
        k = 1 + rng.poisson(self.spec.reads_per_pass - 1.0, m)
        dur = rng.uniform(*_PASS_MS, m)
        # RSSI from distance: free-space-like 20*log10(d) around -38 dBm at 1 m (assumed)
        dist = rng.uniform(0.6, 4.0, m)
        rssi0 = -38.0 - 20.0 * np.log10(dist)
        ant = rng.integers(1, self.antenna_count + 1, m)
        rep = np.repeat(np.arange(m), k)
        ts = (t[rep] + rng.random(rep.size) * dur[rep]).astype(np.int64)
        rssi = np.clip(np.rint(rssi0[rep] + rng.normal(0.0, 1.5, rep.size)), -90, -30)
        a = animals[rep]
        epcs = self._epcs(a, counter_at(a, ts.astype(np.float64)))
        ids = self.reader_ids
        site = self.site
        return [TagRead(tt, site, ids[r], e, an, rs) for tt, r, e, an, rs in zip(
            ts.tolist(), reader[rep].tolist(), epcs, ant[rep].tolist(),
            rssi.astype(np.int64).tolist(), strict=True)]

    def _weigh(self, animals: I64, t: F64, rng: np.random.Generator, sd: float,
               outliers: tuple[float, float, float]) -> F64:
        w = np.empty(animals.size)
        for j, (a, tt) in enumerate(zip(animals.tolist(), t.tolist(), strict=True)):
            w[j] = self._weight_one(a, int(tt))
        w *= 1.0 + rng.normal(0.0, sd, w.size)
        u = rng.random(w.size)
        zero, half, double = outliers
        w = np.where(u < zero, 0.0, np.where(u < zero + half, w / 2.0,
                                             np.where(u < zero + half + double, w * 2.0, w)))
        return np.round(w * 2.0) / 2.0  # 0.5 kg display division

    def _weight_one(self, a: int, t: int) -> float:
        days = (t - self.start_ms) / DAY_MS
        g = self.A[a] * math.exp(-self.b[a] * math.exp(-self.k[a] * days))
        d = min(max(0, int(days)), self.day_noise.shape[1] - 1)
        loss = 1.0
        if a in self.ill_idx:
            loss = float(self._ill_loss(t)[a])
        return float(g * (1.0 + self.day_noise[a, d]) * loss)

    def _scale_obs(self, animals: I64, t: F64, w: F64, rng: np.random.Generator,
                   counter_at: Any) -> list[Observation]:
        out: list[Observation] = []
        ts = t.astype(np.int64)
        ids = [self.identity[a] for a in animals.tolist()]
        out += [AnimalWeighing(int(tt), self.site, self.scale_device, e, float(x))
                for tt, e, x in zip(ts.tolist(), ids, w.tolist(), strict=True)]
        # the scale's own panel reader identifies the animal on the platform
        k = rng.integers(1, 4, animals.size)
        rep = np.repeat(np.arange(animals.size), k)
        rt = ts[rep] - rng.integers(0, 4_000, rep.size)
        a = animals[rep]
        epcs = self._epcs(a, counter_at(a, rt.astype(np.float64)))
        out += [TagRead(int(x), self.site, self.scale_reader, e, 1, int(r)) for x, e, r in zip(
            rt.tolist(), epcs, rng.integers(-55, -40, rep.size).tolist(), strict=True)]
        return out

    def _walkover(self, w_idx: I64, w_t: F64, d0: int, rng: np.random.Generator,
                  counter_at: Any) -> list[Observation]:
        # one random water trip per animal and day crosses the scale (if the animal is weighed)
        order = rng.permutation(w_idx.size)
        first = np.unique(w_idx[order], return_index=True)[1]
        pick = order[first]
        a, t = w_idx[pick], w_t[pick] - 20_000.0
        keep = ((rng.random(a.size) < self.spec.scale_fraction) & (t >= d0)
                & (t < self.gone_ms[a]) & (t < self.drop_ms[a]))
        a, t = a[keep], t[keep]
        w = self._weigh(a, t, rng, _WALKOVER_SD, _WALKOVER_OUTLIERS)
        return self._scale_obs(a, t, w, rng, counter_at)

    def _chute(self, d0: int, d1: int, rng: np.random.Generator, counter_at: Any
               ) -> list[Observation]:
        starts = self._local_times(d0, d1, [_CHUTE_START_MIN])
        if not starts:
            return []
        t0 = starts[0]
        order = np.lexsort((self.number, self.pen))
        t = (t0 + np.arange(self.n) * _CHUTE_STEP_MS).astype(np.float64)
        a = order
        keep = (t < self.gone_ms[a]) & (t < self.drop_ms[a])
        a, t = a[keep], t[keep]
        w = self._weigh(a, t, rng, _CHUTE_SD, _CHUTE_OUTLIERS)
        return self._scale_obs(a, t, w, rng, counter_at)

    def _feed(self, ft: int, d0: int, rng: np.random.Generator) -> list[Observation]:
        spec = self.spec
        out: list[Observation] = []
        share = 1.0 / len(spec.feedings_min)
        weights = self.true_weight(ft)
        intake = (weights * spec.dmi_fraction * self.illness_factor(float(ft))
                  * self.present(ft))
        per_pen = np.bincount(self.pen, weights=intake, minlength=spec.pens)
        for p in range(spec.pens):
            t = ft + p * _PEN_FEED_STEP_MS
            if t < d0:
                continue
            kg = per_pen[p] * share / spec.tmr_dm_fraction
            for s0, s1, pct, pens in self.shortages:
                if s0 <= t < s1 and p in pens:
                    kg *= 1.0 - pct / 100.0
            kg *= 1.0 + rng.normal(0.0, 0.02)
            if kg <= 0:
                continue
            out.append(FeedDelivery(int(t), self.site, self.feeder_device, self.pen_names[p],
                                    round(float(kg), 1)))
        return out

    def _stuck(self, d0: int, d1: int, rng: np.random.Generator, counter_at: Any
               ) -> list[Observation]:
        out: list[Observation] = []
        for a, r, since, ant in self.stuck:
            t0 = max(d0, since + 30_000)
            if t0 >= d1:
                continue
            ts = np.arange(t0, d1, _STUCK_READ_EVERY_MS, dtype=np.float64)
            ts = ts + rng.uniform(0, 20_000, ts.size)
            ts = ts[rng.random(ts.size) < _STUCK_READ_P]
            if not ts.size:
                continue
            aa = np.full(ts.size, a)
            epcs = self._epcs(aa, counter_at(aa, ts))
            rssi = np.rint(-70.0 + rng.normal(0.0, 1.5, ts.size)).astype(np.int64)
            out += [TagRead(int(t), self.site, self.reader_ids[r], e, ant, int(x))
                    for t, e, x in zip(ts.tolist(), epcs, rssi.tolist(), strict=True)]
        return out

    # -- registry helpers ------------------------------------------------------------------
    def tag_name(self, i: int) -> str:
        return _TAG_NAMES[int(self.tag[i])]
