"""A simulated LLRP fixed reader (Impinj Speedway / Zebra FX class) on TCP: the reader role of
:mod:`protocols.llrp`.

Session, as a real reader runs it: on every new connection it sends READER_EVENT_NOTIFICATION
with a successful ConnectionAttemptEvent (:meth:`LlrpReader.on_connect`, called by
:class:`~firmware_sim.TcpLink`); it answers GET_READER_CAPABILITIES and the ROSpec messages
with their responses and LLRPStatus; while a ROSpec is active it runs one inventory round per
``report_interval_s`` of the injected clock and sends RO_ACCESS_REPORTs (``report_n`` tags per
report, only the fields the ROSpec's TagReportContentSelector asks for, FirstSeenTimestampUTC
= the round's clock time); every ``keepalive_interval_s`` it sends a KEEPALIVE; on
CLOSE_CONNECTION it answers and goes quiet until the next connection (the client closes the
socket). ROSpecs outlive connections, as on real readers; that is why clients start with
DELETE_ROSPEC(0).

ROSpec states follow the LLRP state table :data:`TRANSITIONS`; a request that is not in the
table for the ROSpec's state is answered with A_Invalid and changes nothing.

Fault ``bad_checksum`` has no checksum to break in LLRP (TCP carries it); the simulator
instead sets the header's version to 2, which a client must reject (the codec reports
``bad_field`` and skips the message by its length).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Final

from firmware_sim._device import Clock, Faults, SimDevice
from firmware_sim.r2000_reader import SimTag, herd_tags
from protocols import llrp
from protocols._base import FrameError

__all__ = [
    "ACTIVE",
    "DELETED",
    "DISABLED",
    "INACTIVE",
    "MAX_ROUNDS_PER_TICK",
    "TRANSITIONS",
    "LlrpReader",
]

DISABLED: Final = 0
INACTIVE: Final = 1
ACTIVE: Final = 2
DELETED: Final = -1

# (request, ROSpec state) -> next state; anything absent is refused with A_Invalid
TRANSITIONS: Final = {
    ("ENABLE_ROSPEC", DISABLED): INACTIVE,
    ("START_ROSPEC", INACTIVE): ACTIVE,
    ("STOP_ROSPEC", ACTIVE): INACTIVE,
    ("DISABLE_ROSPEC", INACTIVE): DISABLED,
    ("DISABLE_ROSPEC", ACTIVE): DISABLED,
    ("DELETE_ROSPEC", DISABLED): DELETED,
    ("DELETE_ROSPEC", INACTIVE): DELETED,
    ("DELETE_ROSPEC", ACTIVE): DELETED,
}
ROSPEC_REQUESTS: Final = ("ENABLE_ROSPEC", "START_ROSPEC", "STOP_ROSPEC", "DISABLE_ROSPEC",
                          "DELETE_ROSPEC")
MAX_ROUNDS_PER_TICK: Final = 10  # after a clock jump, later missed rounds are skipped
A_INVALID: Final = 300
M_PARAMETER_ERROR: Final = 100
M_UNSUPPORTED_MESSAGE: Final = 109
_US: Final = 1_000_000

# garbage never holds a byte that could start an LLRP header
_NO_HEADER_START = bytes(b for b in range(256) if not 0x04 <= b <= 0x1F)


@dataclasses.dataclass(slots=True)
class _Spec:
    spec: llrp.RoSpec
    state: int = DISABLED
    active_since: float = 0.0


class LlrpReader(SimDevice):
    """Simulated LLRP reader. ``tags`` may be changed at any time (animals come and go)."""

    KIND: ClassVar[str] = "llrp"
    GARBAGE_ALPHABET: ClassVar[bytes | None] = _NO_HEADER_START

    def __init__(self, *, tags: list[SimTag] | None = None, max_antennas: int = 4,
                 connected_antennas: frozenset[int] = frozenset({1, 2, 3, 4}),
                 report_interval_s: float = 1.0, keepalive_interval_s: float | None = None,
                 reads_per_round: int = 3, rssi_noise_db: int = 2, manufacturer: int = 0,
                 model: int = 0, firmware: str = "pledgewatch-sim 1.0",
                 **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        if report_interval_s <= 0:
            raise ValueError("report_interval_s must be > 0")
        if keepalive_interval_s is not None and keepalive_interval_s <= 0:
            raise ValueError("keepalive_interval_s must be > 0 or None")
        self.tags: list[SimTag] = list(tags or [])
        self.max_antennas = max_antennas
        self.connected_antennas = connected_antennas
        self.report_interval_s = report_interval_s
        self.keepalive_interval_s = keepalive_interval_s
        self.reads_per_round = reads_per_round
        self.rssi_noise_db = rssi_noise_db
        self.manufacturer = manufacturer
        self.model = model
        self.firmware = firmware
        self.rospecs: dict[int, _Spec] = {}
        self.session_open = False
        self.requests: list[llrp.LlrpRequest | llrp.LlrpMessage] = []
        self.bad_requests: list[FrameError] = []
        self.keepalive_acks = 0
        self.rounds = 0
        self.skipped_rounds = 0
        self.decoder = llrp.Decoder("reader")
        self._message_id = 0
        self._next_round: float | None = None
        self._next_keepalive: float | None = None

    @classmethod
    def demo(cls, *, seed: int = 0, faults: Faults | None = None,
             clock: Clock | None = None) -> LlrpReader:
        """A 4-antenna reader with 50 ear tags, a report per second and a keepalive every
        10 s."""
        return cls(tags=herd_tags(50, seed=seed), keepalive_interval_s=10.0, seed=seed,
                   faults=faults, clock=clock)

    # -- session ------------------------------------------------------------------------
    def _next_id(self) -> int:
        self._message_id = (self._message_id + 1) & llrp.MAX_ID
        return self._message_id

    def on_connect(self) -> list[bytes]:
        now = self.clock.now()
        self.decoder = llrp.Decoder("reader")  # a new TCP stream
        self.session_open = True
        self._next_keepalive = (None if self.keepalive_interval_s is None
                                else now + self.keepalive_interval_s)
        return [llrp.encode_reader_event_notification(self._next_id(), round(now * _US))]

    def handle(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in self.decoder.feed(data):
            if isinstance(item, FrameError):
                self.bad_requests.append(item)
                mid = int.from_bytes(item.raw[6:10], "big") if len(item.raw) >= 10 else 0
                out.append(llrp.encode_error_message(mid, M_PARAMETER_ERROR,
                                                     f"{item.kind}: {item.detail}"))
            elif isinstance(item, llrp.LlrpRequest | llrp.LlrpMessage):
                self.requests.append(item)
                out += self._request(item)
        return out

    def _request(self, req: llrp.LlrpRequest | llrp.LlrpMessage) -> list[bytes]:
        if isinstance(req, llrp.LlrpMessage):
            return [llrp.encode_error_message(req.message_id, M_UNSUPPORTED_MESSAGE,
                                              f"message type {req.msg_type} not supported")]
        name, mid = req.type_name, req.message_id
        if name == "GET_READER_CAPABILITIES":
            return [llrp.encode_get_reader_capabilities_response(
                mid, max_antennas=self.max_antennas, manufacturer=self.manufacturer,
                model=self.model, firmware=self.firmware)]
        if name == "ADD_ROSPEC":
            assert req.rospec is not None
            return [self._add(mid, req.rospec)]
        if name in ROSPEC_REQUESTS:
            assert req.rospec_id is not None
            return [self._transition(name, mid, req.rospec_id)]
        if name == "KEEPALIVE_ACK":
            self.keepalive_acks += 1
            return []
        if name == "ENABLE_EVENTS_AND_REPORTS":  # no response message exists
            return []
        if name == "CLOSE_CONNECTION":
            self.session_open = False
            return [llrp.encode_response("CLOSE_CONNECTION_RESPONSE", mid)]
        return [llrp.encode_error_message(mid, M_UNSUPPORTED_MESSAGE,
                                          f"{name} not supported by this simulator")]

    def _add(self, mid: int, spec: llrp.RoSpec) -> bytes:
        problem = ""
        if spec.rospec_id == 0:
            problem = "ROSpecID 0 is reserved"
        elif spec.rospec_id in self.rospecs:
            problem = f"ROSpec {spec.rospec_id} already exists"
        elif spec.current_state != DISABLED:
            problem = "a new ROSpec must be in the Disabled state"
        elif spec.protocol_id != llrp.PROTOCOL_EPC_C1G2:
            problem = f"air protocol {spec.protocol_id} not supported"
        elif any(a > self.max_antennas for a in spec.antennas):
            problem = f"antenna IDs must be 0..{self.max_antennas}"
        if problem:
            return llrp.encode_response("ADD_ROSPEC_RESPONSE", mid, A_INVALID, problem)
        self.rospecs[spec.rospec_id] = _Spec(spec)
        return llrp.encode_response("ADD_ROSPEC_RESPONSE", mid)

    def _transition(self, name: str, mid: int, rospec_id: int) -> bytes:
        response = f"{name}_RESPONSE"
        targets = list(self.rospecs) if rospec_id == 0 and name == "DELETE_ROSPEC" else [
            rospec_id]
        for rid in targets:
            entry = self.rospecs.get(rid)
            if entry is None:
                return llrp.encode_response(response, mid, A_INVALID, f"no ROSpec {rid}")
            if (name, entry.state) not in TRANSITIONS:
                return llrp.encode_response(response, mid, A_INVALID,
                                            f"ROSpec {rid} is in state {entry.state}")
        for rid in targets:
            entry = self.rospecs[rid]
            new = TRANSITIONS[(name, entry.state)]
            if new == INACTIVE and entry.spec.start_trigger == llrp.START_TRIGGER_IMMEDIATE \
                    and entry.state == DISABLED:
                new = ACTIVE
            self._set_state(rid, entry, new)
        return llrp.encode_response(response, mid)

    def _set_state(self, rid: int, entry: _Spec, new: int) -> None:
        if new == DELETED:
            del self.rospecs[rid]
        else:
            if new == ACTIVE and entry.state != ACTIVE:
                entry.active_since = self.clock.now()
                if self._next_round is None:
                    self._next_round = entry.active_since
            entry.state = new
        if not any(e.state == ACTIVE for e in self.rospecs.values()):
            self._next_round = None

    # -- continuous output --------------------------------------------------------------
    def tick(self, now: float) -> list[bytes]:
        if not self.session_open:
            return []
        out: list[bytes] = []
        if self._next_keepalive is not None and now >= self._next_keepalive:
            assert self.keepalive_interval_s is not None
            out.append(llrp.encode_keepalive(self._next_id()))
            self._next_keepalive = now + self.keepalive_interval_s
        for rid, entry in list(self.rospecs.items()):
            spec = entry.spec
            if entry.state == ACTIVE and spec.stop_trigger == 1 and \
                    now >= entry.active_since + spec.stop_duration_ms / 1000:
                self._set_state(rid, entry, INACTIVE)
        rounds = 0
        while self._next_round is not None and self._next_round <= now:
            if rounds == MAX_ROUNDS_PER_TICK:
                missed = int((now - self._next_round) // self.report_interval_s) + 1
                self.skipped_rounds += missed
                self._next_round += missed * self.report_interval_s
                break
            t = self._next_round
            for entry in self.rospecs.values():
                if entry.state == ACTIVE:
                    out += self._reports(entry.spec, t)
            self.rounds += 1
            rounds += 1
            self._next_round = t + self.report_interval_s
        return out

    def _antennas(self, spec: llrp.RoSpec) -> list[int]:
        wanted = range(1, self.max_antennas + 1) if 0 in spec.antennas else spec.antennas
        return sorted(a for a in set(wanted) if a in self.connected_antennas)

    def _reports(self, spec: llrp.RoSpec, t: float) -> list[bytes]:
        fields = set(spec.report_fields)
        rng = self.rng
        noise = self.rssi_noise_db
        first_seen = round(t * _US)
        reads: list[llrp.TagReport] = []
        for antenna in self._antennas(spec):
            for tag in self.tags:
                if antenna not in tag.antennas:
                    continue
                seen = sum(rng.random() < tag.read_probability
                           for _ in range(self.reads_per_round))
                if not seen:
                    continue
                rssi = max(-128, min(127, tag.rssi_dbm + rng.randint(-noise, noise)))
                reads.append(llrp.TagReport(
                    tag.epc,
                    antenna=antenna if "antenna_id" in fields else None,
                    peak_rssi_dbm=rssi if "peak_rssi" in fields else None,
                    first_seen_us=first_seen if "first_seen_timestamp" in fields else None,
                    seen_count=seen if "tag_seen_count" in fields else None))
        if not reads:
            return []
        n = spec.report_n if spec.report_trigger and spec.report_n else len(reads)
        return [llrp.encode_ro_access_report(self._next_id(), reads[i:i + n])
                for i in range(0, len(reads), n)]

    def corrupt(self, frame: bytes) -> bytes:
        """Mark the message as LLRP version 2 (not negotiated): the client must reject it."""
        return bytes(((frame[0] & 0xE3) | (2 << 2),)) + frame[1:]
