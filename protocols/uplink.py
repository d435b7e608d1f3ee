"""The uplink contract between gateways and the cloud: readings, batches and the signed
envelope header. Stdlib only; compression (zstd), serialisation (msgpack) and signatures
(Ed25519) are done by ``gateway`` and ``cloud`` with the layouts defined here.

Envelope (the bytes POSTed to ``/v1/ingest`` or published over MQTT)::

    magic  b"PWB"            3 bytes
    version                  1 byte   (ENVELOPE_VERSION)
    gateway_id length        1 byte   (1..MAX_GATEWAY_ID)
    gateway_id               UTF-8
    seq                      8 bytes  big-endian, +1 per batch per gateway, starts at 1
    created_ms               8 bytes  big-endian, gateway clock
    body length              4 bytes  big-endian, compressed body size
    uncompressed length      4 bytes  big-endian, declared size after decompression
    signature                64 bytes Ed25519 over every header byte before it + the body
    body                     zstd(msgpack(batch dict))

The header is read and the signature verified before anything is decompressed; the declared
uncompressed size is checked against a cap first (zstd bomb protection). The batch dict must
repeat ``gateway_id`` and ``seq`` of the header.

See ``docs/uplink.md`` for the reading kinds and their fields.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "BATCH_VERSION",
    "ENVELOPE_VERSION",
    "MAGIC",
    "MAX_BODY_BYTES",
    "MAX_GATEWAY_ID",
    "MAX_READINGS",
    "MAX_UNCOMPRESSED_BYTES",
    "READING_KINDS",
    "SIGNATURE_BYTES",
    "Batch",
    "EnvelopeHeader",
    "Lane",
    "Reading",
    "UplinkError",
    "pack_header",
    "unpack_header",
]

MAGIC: Final = b"PWB"
ENVELOPE_VERSION: Final = 1
BATCH_VERSION: Final = 1
SIGNATURE_BYTES: Final = 64
MAX_GATEWAY_ID: Final = 64
MAX_BODY_BYTES: Final = 4 * 1024 * 1024  # compressed
MAX_UNCOMPRESSED_BYTES: Final = 32 * 1024 * 1024
MAX_READINGS: Final = 50_000
_FIXED: Final = struct.Struct(">QQII")  # seq, created_ms, body_len, raw_len


class UplinkError(ValueError):
    """A batch or envelope that does not follow the contract. ``reason`` is machine-readable
    (it becomes the cloud's 4xx ``reason``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Lane(enum.IntEnum):
    """Priority readings leave the gateway before bulk telemetry and are never dropped for
    the disk budget."""

    PRIORITY = 0
    BULK = 1


# kind -> (lane, required data fields with their accepted types)
_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))
_OPT_BOOL = (bool, type(None))
READING_KINDS: Final[dict[str, tuple[Lane, dict[str, tuple[type, ...]]]]] = {
    # RFID: reads of one EPC on one reader antenna, deduplicated over a window
    "tag_sighting": (Lane.BULK, {"epc": (str,), "antenna": (int, type(None)), "count": (int,),
                                 "first_ms": (int,), "last_ms": (int,),
                                 "rssi_max_dbm": _OPT_NUM}),
    "weight": (Lane.BULK, {"weight_kg": _OPT_NUM, "stable": _OPT_BOOL}),
    "weigh_event": (Lane.BULK, {"weight_kg": _NUM}),
    "weigh_ticket": (Lane.PRIORITY, {"gross_kg": _NUM, "tare_kg": _NUM, "net_kg": _NUM,
                                     "truck_id": _OPT_STR, "in_ms": (int,), "out_ms": (int,),
                                     "direction": (str,)}),
    "feed_event": (Lane.BULK, {"event": (str,), "kg": _NUM, "pen": _OPT_STR}),
    "position": (Lane.BULK, {"lat": _NUM, "lon": _NUM}),
    "device_online": (Lane.PRIORITY, {}),
    "device_offline": (Lane.PRIORITY, {"reason": (str,)}),
    "device_errors": (Lane.BULK, {"errors": (int,)}),
    "data_integrity": (Lane.PRIORITY, {"dropped": (int,), "first_ms": (int,),
                                       "last_ms": (int,), "reason": (str,)}),
    "alarm": (Lane.PRIORITY, {"alarm": (str,)}),
    "tamper": (Lane.PRIORITY, {"detail": (str,)}),
    # the gateway is alive and its bulk lane is flowing: sent when it stored nothing else
    # for a while, so the cloud tells an idle site from a dead one and its event-time
    # watermark moves on
    "heartbeat": (Lane.BULK, {"outbox_readings": (int,)}),
}


# kind -> ((field, exact types accepted), ...): the rules above as exact type sets for the
# fast path of Batch.from_wire (bool only where a field names it, as Reading.from_wire does)
_FAST_SPECS: Final = {kind: tuple((name, frozenset(types)) for name, types in fields.items())
                      for kind, (_, fields) in READING_KINDS.items()}
_INT_MAX: Final = 2**63 - 1
_MAX_DEVICE_ID: Final = 128
_STR_TYPE: Final = frozenset({str})
_missing: Final = object()


def _check_int(name: str, v: Any, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise UplinkError("bad_field", f"{name} must be an integer in {lo}..{hi}, got {v!r}")
    return v


@dataclasses.dataclass(frozen=True, slots=True)
class Reading:
    """One observation. ``ts_ms`` is when it happened by the device's clock (event time),
    ``recv_ms`` when the gateway received it (gateway clock); both ms since the epoch.
    ``data`` holds the kind's fields (scalars, strings, lists of them)."""

    kind: str
    device_id: str
    ts_ms: int
    recv_ms: int
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def lane(self) -> Lane:
        return READING_KINDS[self.kind][0] if self.kind in READING_KINDS else Lane.BULK

    def to_wire(self) -> dict[str, Any]:
        return {"k": self.kind, "d": self.device_id, "t": self.ts_ms, "r": self.recv_ms,
                "v": self.data}

    @classmethod
    def from_wire(cls, obj: Any) -> Reading:
        if not isinstance(obj, dict) or set(obj) != {"k", "d", "t", "r", "v"}:
            raise UplinkError("bad_reading", "a reading is a map with keys k, d, t, r, v")
        kind, dev, data = obj["k"], obj["d"], obj["v"]
        if not isinstance(kind, str) or kind not in READING_KINDS:
            raise UplinkError("unknown_kind", f"reading kind {kind!r}")
        if not isinstance(dev, str) or not 0 < len(dev) <= 128:
            raise UplinkError("bad_field", "device id must be a non-empty string <= 128 chars")
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise UplinkError("bad_field", "reading data must be a map with string keys")
        for field, types in READING_KINDS[kind][1].items():
            if field not in data:
                raise UplinkError("bad_field", f"{kind} reading lacks {field!r}")
            v = data[field]
            if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
                raise UplinkError("bad_field", f"{kind}.{field} has type {type(v).__name__}")
        return cls(kind, dev, _check_int("ts_ms", obj["t"]), _check_int("recv_ms", obj["r"]),
                   data)


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    gateway_id: str
    seq: int
    created_ms: int
    readings: tuple[Reading, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"v": BATCH_VERSION, "gw": self.gateway_id, "seq": self.seq,
                "created_ms": self.created_ms, "readings": [r.to_wire() for r in self.readings]}

    @classmethod
    def from_wire(cls, obj: Any) -> Batch:
        if not isinstance(obj, dict):
            raise UplinkError("malformed", "batch is not a map")
        if obj.get("v") != BATCH_VERSION:
            raise UplinkError("unsupported_version", f"batch version {obj.get('v')!r}")
        gw, readings = obj.get("gw"), obj.get("readings")
        if not isinstance(gw, str) or not 0 < len(gw.encode()) <= MAX_GATEWAY_ID:
            raise UplinkError("bad_field", "gw must be a gateway id string")
        if not isinstance(readings, list) or len(readings) > MAX_READINGS:
            raise UplinkError("bad_field", f"readings must be a list of <= {MAX_READINGS}")
        return cls(gw, _check_int("seq", obj.get("seq"), 1),
                   _check_int("created_ms", obj.get("created_ms")), _readings(readings))


def _readings(items: list[Any]) -> tuple[Reading, ...]:
    """``tuple(Reading.from_wire(r) for r in items)``, faster: a reading of exact types that
    plainly passes every rule is built here; anything else unusual (a subclass, a missing or
    extra key, a bool where a number goes, an out-of-range int ...) goes through
    :meth:`Reading.from_wire`, so the result and every error are the same
    (``tests/test_uplink_fast_path.py`` pins it)."""
    specs = _FAST_SPECS
    str_type = _STR_TYPE
    full = Reading.from_wire
    out: list[Reading] = []
    append = out.append
    for obj in items:
        if type(obj) is dict and len(obj) == 5:
            # five keys, and k, d, t, r, v all present (a missing one reads as None, which
            # no check below lets through): exactly the keys from_wire demands
            get: Callable[[str], Any] = obj.get
            kind, dev, ts, recv, data = get("k"), get("d"), get("t"), get("r"), get("v")
            spec = specs.get(kind) if type(kind) is str else None
            if (spec is not None and type(dev) is str and type(ts) is int
                    and type(recv) is int and type(data) is dict
                    and 0 < len(dev) <= _MAX_DEVICE_ID
                    and 0 <= ts <= _INT_MAX and 0 <= recv <= _INT_MAX
                    and str_type.issuperset(map(type, data))):
                dget = data.get
                for name, types in spec:
                    if type(dget(name, _missing)) not in types:
                        break
                else:
                    append(Reading(kind, dev, ts, recv, data))
                    continue
        append(full(obj))
    return tuple(out)


@dataclasses.dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    gateway_id: str
    seq: int
    created_ms: int
    body_len: int
    raw_len: int
    signature: bytes
    signed_prefix: bytes  # header bytes before the signature (signed together with the body)
    body_offset: int


def pack_header(*, gateway_id: str, seq: int, created_ms: int, body_len: int,
                raw_len: int) -> bytes:
    """Header bytes before the signature. Sign ``pack_header(...) + body`` and send
    ``pack_header(...) + signature + body``."""
    gw = gateway_id.encode("utf-8")
    if not 0 < len(gw) <= MAX_GATEWAY_ID:
        raise UplinkError("bad_field", f"gateway id must be 1..{MAX_GATEWAY_ID} bytes")
    if seq < 1:
        raise UplinkError("bad_field", "seq starts at 1")
    return (MAGIC + bytes((ENVELOPE_VERSION, len(gw))) + gw
            + _FIXED.pack(seq, created_ms, body_len, raw_len))


def unpack_header(data: bytes, *, max_body: int = MAX_BODY_BYTES,
                  max_raw: int = MAX_UNCOMPRESSED_BYTES) -> EnvelopeHeader:
    """Parse and bound-check an envelope header; raises :class:`UplinkError`."""
    if len(data) < 5 or data[:3] != MAGIC:
        raise UplinkError("malformed", "not a pledgewatch batch envelope (bad magic)")
    if data[3] != ENVELOPE_VERSION:
        raise UplinkError("unsupported_version", f"envelope version {data[3]}")
    n = data[4]
    fixed_at = 5 + n
    sig_at = fixed_at + _FIXED.size
    body_at = sig_at + SIGNATURE_BYTES
    if not 0 < n <= MAX_GATEWAY_ID or len(data) < body_at:
        raise UplinkError("malformed", "truncated envelope header")
    try:
        gw = data[5:fixed_at].decode("utf-8")
    except UnicodeDecodeError:
        raise UplinkError("malformed", "gateway id is not UTF-8") from None
    seq, created_ms, body_len, raw_len = _FIXED.unpack_from(data, fixed_at)
    if body_len > max_body:
        raise UplinkError("too_large", f"body of {body_len} bytes > {max_body}")
    if raw_len > max_raw:
        raise UplinkError("too_large", f"declared uncompressed size {raw_len} > {max_raw}")
    if len(data) != body_at + body_len:
        raise UplinkError("malformed", f"body length {len(data) - body_at} != declared "
                                       f"{body_len}")
    if seq < 1:
        raise UplinkError("bad_field", "seq starts at 1")
    return EnvelopeHeader(gw, seq, created_ms, body_len, raw_len,
                          bytes(data[sig_at:body_at]), bytes(data[:sig_at]), body_at)
