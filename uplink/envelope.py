"""Batch envelopes: msgpack + zstd + Ed25519, in the layout of :mod:`protocols.uplink`.

``envelope = pack_header(...) + signature + body`` where ``body = zstd(msgpack(batch))`` and
the signature covers the header bytes before it plus the body.

This module depends only on :mod:`protocols.uplink`, msgpack, zstandard and cryptography, so
the gateway builds envelopes and the cloud's ingest verifies and decodes them with the very
same code. Everything raises :class:`protocols.uplink.UplinkError` with a machine-readable
``reason``.

Decoding order (each step only runs if the one before passed, so an attacker without a
registered key can make the cloud do no more than parse a header and check one signature):

1. :func:`protocols.uplink.unpack_header` - magic, version, size caps (``too_large``);
2. key lookup - ``unknown_gateway``;
3. Ed25519 signature over header + body - ``bad_signature``;
4. zstd: the frame must declare its content size, equal to the header's ``raw_len``
   (already capped), and decompress to exactly that many bytes with nothing after the
   frame - ``malformed`` (a zstd bomb cannot allocate more than ``raw_len``);
5. msgpack with strict limits (:data:`UNPACK_LIMITS`) - ``malformed``;
6. :meth:`protocols.uplink.Batch.from_wire` - its own reasons (``bad_field`` ...);
7. the body's ``gw``, ``seq`` and ``created_ms`` must equal the header's - ``mismatch``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.uplink import (
    BATCH_VERSION,
    MAX_BODY_BYTES,
    MAX_READINGS,
    MAX_UNCOMPRESSED_BYTES,
    READING_KINDS,
    Batch,
    EnvelopeHeader,
    Reading,
    UplinkError,
    pack_header,
    unpack_header,
)

__all__ = [
    "DEFAULT_LEVEL",
    "MAX_READING_BYTES",
    "UNPACK_LIMITS",
    "InvalidReading",
    "PublicKeyLookup",
    "decode_envelope",
    "decode_own_envelope",
    "encode_batch",
    "encode_packed",
    "pack_batch_body",
    "pack_reading",
    "unpack_limited",
    "validate_reading",
    "validate_readings",
    "verify_envelope",
]

DEFAULT_LEVEL: Final = 3
MAX_READING_BYTES: Final = 64 * 1024  # one packed reading; real ones are ~100-300 bytes
MAX_STRING_BYTES: Final = 64 * 1024
MAX_MAP_ITEMS: Final = 256
# Keyword arguments for msgpack.unpackb: str keys only, no ext types, bounded containers.
# Nesting depth is bounded by msgpack itself (StackError, a ValueError).
UNPACK_LIMITS: Final[dict[str, Any]] = {
    "raw": False,
    "strict_map_key": True,
    "max_str_len": MAX_STRING_BYTES,
    "max_bin_len": MAX_STRING_BYTES,
    "max_array_len": MAX_READINGS,
    "max_map_len": MAX_MAP_ITEMS,
    "max_ext_len": 0,
}

PublicKeyLookup = Callable[[str], Ed25519PublicKey | None]
"""``gateway_id -> registered public key``, or None for an unknown gateway."""

_BATCH_KEYS: Final = ("v", "gw", "seq", "created_ms", "readings")


def pack_reading(reading: Reading, packer: Any = None) -> bytes:
    """msgpack of ``reading.to_wire()``: the item bytes of a batch body. Pass a
    ``msgpack.Packer()`` (one per thread) when packing many readings: it is ~2x faster."""
    try:
        packed: bytes = (msgpack.packb(reading.to_wire()) if packer is None
                         else packer.pack(reading.to_wire()))
    except (TypeError, ValueError, OverflowError) as exc:
        raise UplinkError("bad_field", f"reading data cannot be serialised: {exc}") from None
    return packed


def unpack_limited(data: bytes) -> Any:
    """msgpack-decode with :data:`UNPACK_LIMITS`; ``UplinkError("malformed")`` on any
    problem (bad bytes, trailing data, too deep, a limit exceeded, non-UTF-8 text)."""
    try:
        return msgpack.unpackb(data, **UNPACK_LIMITS)
    except (ValueError, TypeError) as exc:  # msgpack's errors are all ValueError subclasses
        raise UplinkError("malformed", f"msgpack: {exc}") from None


_FLAT_TYPES: Final = frozenset({str, int, float, bool, type(None)})
_STR_TYPE: Final = frozenset({str})
_INT_MAX: Final = 2**63 - 1
_MAX_DEVICE_ID: Final = 128
# kind -> ((field, exact types accepted), ...): Reading.from_wire's rules as exact type sets
# (bool is accepted only where the contract names it, as from_wire does).
_FAST_SPECS: Final = {kind: tuple((name, frozenset(types)) for name, types in fields.items())
                      for kind, (_, fields) in READING_KINDS.items()}
_fast_missing: Final = object()


class InvalidReading(UplinkError):
    """:func:`validate_readings` found a reading the cloud would refuse; ``index`` is its
    position in the sequence."""

    def __init__(self, index: int, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.index = index


def _obviously_valid(r: Reading) -> bool:
    """A cheap check that accepts only readings :meth:`Reading.from_wire` accepts after a
    msgpack round trip: flat data of exact types, when the packed reading is at most
    :data:`MAX_READING_BYTES` (which bounds every string). False means "check the slow
    way", not "invalid"; a property test pins the implication."""
    kind, dev, ts, recv, data = r.kind, r.device_id, r.ts_ms, r.recv_ms, r.data
    spec = _FAST_SPECS.get(kind) if type(kind) is str else None
    if (spec is None or type(dev) is not str or type(ts) is not int or type(recv) is not int
            or type(data) is not dict or not 0 < len(dev) <= _MAX_DEVICE_ID
            or not (0 <= ts <= _INT_MAX and 0 <= recv <= _INT_MAX)
            or len(data) > MAX_MAP_ITEMS
            or not _FLAT_TYPES.issuperset(map(type, data.values()))
            or not _STR_TYPE.issuperset(map(type, data))):
        return False
    get = data.get
    for name, types in spec:  # noqa: SIM110 - a plain loop is faster than all(genexpr)
        if type(get(name, _fast_missing)) not in types:
            return False
    return True


def validate_reading(reading: Reading, packer: Any = None) -> bytes:
    """Pack ``reading`` and make sure the cloud will accept it (:func:`unpack_limited` then
    :meth:`Reading.from_wire`), so one bad reading can never make the cloud refuse a whole
    batch. Returns the packed bytes; raises :class:`UplinkError`. Common flat readings take
    a fast path that accepts a subset of what the full check accepts."""
    packed = pack_reading(reading, packer)
    if len(packed) > MAX_READING_BYTES:
        raise UplinkError("too_large", f"reading of {len(packed)} bytes > {MAX_READING_BYTES}")
    if not _obviously_valid(reading):
        Reading.from_wire(unpack_limited(packed))
    return packed


def validate_readings(readings: Sequence[Reading]) -> list[bytes]:
    """:func:`validate_reading` for many readings (one packer, one loop); raises
    :class:`InvalidReading` naming the first bad one."""
    pack = msgpack.Packer().pack
    fast = _obviously_valid
    out: list[bytes] = []
    append = out.append
    for i, r in enumerate(readings):
        try:
            packed = pack(r.to_wire())
            if len(packed) > MAX_READING_BYTES:
                raise UplinkError("too_large", f"reading of {len(packed)} bytes > "
                                               f"{MAX_READING_BYTES}")
            if not fast(r):
                Reading.from_wire(unpack_limited(packed))
        except UplinkError as exc:
            raise InvalidReading(i, exc.reason, exc.detail) from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidReading(i, "bad_field", f"reading data cannot be serialised: "
                                                 f"{exc}") from None
        append(packed)
    return out


def pack_batch_body(*, gateway_id: str, seq: int, created_ms: int,
                    packed_readings: Sequence[bytes], count: int | None = None) -> bytes:
    """The msgpack of ``Batch(...).to_wire()`` assembled from already packed readings
    (byte-identical to packing the dict; a test pins this). ``packed_readings`` may be
    pieces holding several packed readings each; then ``count`` is the number of readings
    (default: one per piece)."""
    p = msgpack.Packer()
    head = [p.pack_map_header(len(_BATCH_KEYS))]
    for k, v in zip(_BATCH_KEYS[:-1], (BATCH_VERSION, gateway_id, seq, created_ms),
                    strict=True):
        head.append(p.pack(k))
        head.append(p.pack(v))
    head.append(p.pack(_BATCH_KEYS[-1]))
    head.append(p.pack_array_header(len(packed_readings) if count is None else count))
    return b"".join(head) + b"".join(packed_readings)


def encode_packed(*, gateway_id: str, seq: int, created_ms: int,
                  packed_readings: Sequence[bytes], key: Ed25519PrivateKey,
                  count: int | None = None, level: int = DEFAULT_LEVEL) -> bytes:
    """Envelope of a batch whose readings are already msgpack-packed (the outbox stores
    them packed; ``count`` as in :func:`pack_batch_body`). Raises
    ``UplinkError("too_large")`` beyond the contract's caps."""
    n = len(packed_readings) if count is None else count
    if n > MAX_READINGS:
        raise UplinkError("too_large", f"{n} readings > {MAX_READINGS}")
    raw = pack_batch_body(gateway_id=gateway_id, seq=seq, created_ms=created_ms,
                          packed_readings=packed_readings, count=n)
    if len(raw) > MAX_UNCOMPRESSED_BYTES:
        raise UplinkError("too_large", f"batch of {len(raw)} bytes > {MAX_UNCOMPRESSED_BYTES}")
    body = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)
    if len(body) > MAX_BODY_BYTES:
        raise UplinkError("too_large", f"compressed batch of {len(body)} bytes > "
                                       f"{MAX_BODY_BYTES}")
    header = pack_header(gateway_id=gateway_id, seq=seq, created_ms=created_ms,
                         body_len=len(body), raw_len=len(raw))
    return header + key.sign(header + body) + body


def encode_batch(batch: Batch, key: Ed25519PrivateKey, *, level: int = DEFAULT_LEVEL) -> bytes:
    """``header + Ed25519(header + body) + body`` with ``body = zstd(msgpack(batch))``."""
    return encode_packed(gateway_id=batch.gateway_id, seq=batch.seq,
                         created_ms=batch.created_ms,
                         packed_readings=[pack_reading(r) for r in batch.readings],
                         key=key, level=level)


def verify_envelope(data: bytes, public_key_lookup: PublicKeyLookup, *,
                    max_body: int = MAX_BODY_BYTES,
                    max_raw: int = MAX_UNCOMPRESSED_BYTES) -> EnvelopeHeader:
    """Steps 1-3: parse the header and check the signature. Nothing is decompressed, so the
    cloud can answer an already-seen ``(gateway_id, seq)`` cheaply after this."""
    header = unpack_header(data, max_body=max_body, max_raw=max_raw)
    public_key = public_key_lookup(header.gateway_id)
    if public_key is None:
        raise UplinkError("unknown_gateway", f"no key registered for {header.gateway_id!r}")
    try:
        public_key.verify(header.signature, header.signed_prefix + data[header.body_offset:])
    except InvalidSignature:
        raise UplinkError("bad_signature", f"signature does not match gateway "
                                           f"{header.gateway_id!r}") from None
    return header


def _decompress(body: bytes, raw_len: int) -> bytes:
    try:
        content_size = zstandard.frame_content_size(body)
    except zstandard.ZstdError:
        raise UplinkError("malformed", "body is not a zstd frame") from None
    if content_size > MAX_UNCOMPRESSED_BYTES:
        raise UplinkError("too_large", f"zstd frame declares {content_size} bytes")
    if content_size != raw_len:  # also CONTENTSIZE_UNKNOWN (-1): no streaming frames
        raise UplinkError("malformed", f"zstd frame declares {content_size} bytes, header "
                                       f"{raw_len}")
    try:
        raw: bytes = zstandard.ZstdDecompressor().decompress(
            body, max_output_size=raw_len, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise UplinkError("malformed", f"zstd: {exc}") from None
    if len(raw) != raw_len:
        raise UplinkError("malformed", f"body decompressed to {len(raw)} bytes, header says "
                                       f"{raw_len}")
    return raw


def decode_own_envelope(data: bytes) -> Batch:
    """Decode an envelope this gateway built itself (from its outbox) WITHOUT checking the
    signature. Never use it on bytes received from elsewhere: that is :func:`decode_envelope`.
    """
    data = bytes(data)
    header = unpack_header(data)
    return Batch.from_wire(unpack_limited(_decompress(data[header.body_offset:],
                                                      header.raw_len)))


def decode_envelope(data: bytes, public_key_lookup: PublicKeyLookup, *,
                    max_body: int = MAX_BODY_BYTES,
                    max_raw: int = MAX_UNCOMPRESSED_BYTES) -> Batch:
    """Verify and decode an envelope (steps 1-7 of the module docstring)."""
    data = bytes(data)
    header = verify_envelope(data, public_key_lookup, max_body=max_body, max_raw=max_raw)
    raw = _decompress(data[header.body_offset:], header.raw_len)
    batch = Batch.from_wire(unpack_limited(raw))
    if (batch.gateway_id, batch.seq, batch.created_ms) != (header.gateway_id, header.seq,
                                                           header.created_ms):
        raise UplinkError("mismatch", f"header says {header.gateway_id!r} seq {header.seq} "
                                      f"at {header.created_ms}, body says "
                                      f"{batch.gateway_id!r} seq {batch.seq} at "
                                      f"{batch.created_ms}")
    return batch
