"""Signed batch envelopes: byte-exact encoding, and a decoder that checks in order (header
caps, key, signature, zstd, msgpack limits, contract, header/body agreement) and fails only
with UplinkError reasons."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.uplink import (
    MAX_READINGS,
    MAX_UNCOMPRESSED_BYTES,
    READING_KINDS,
    SIGNATURE_BYTES,
    Batch,
    Reading,
    UplinkError,
    pack_header,
    unpack_header,
)
from uplink import envelope
from uplink.envelope import (
    InvalidReading,
    decode_envelope,
    decode_own_envelope,
    encode_batch,
    encode_packed,
    pack_batch_body,
    pack_reading,
    unpack_limited,
    validate_reading,
    validate_readings,
    verify_envelope,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
GW = "ranch-7"
T = 1_767_225_600_000

READINGS = (
    Reading("tag_sighting", "r2000:gate1", T, T + 40,
            {"epc": "E28011606000020849A1B2C3", "antenna": 2, "count": 14, "first_ms": T - 900,
             "last_ms": T, "rssi_max_dbm": -51.5, "motion": 1234}),
    Reading("weight", "xk3190:bridge", T + 1, T + 41, {"weight_kg": 23_480.0, "stable": True}),
    Reading("weight", "xk3190:bridge", T + 2, T + 42, {"weight_kg": None, "stable": None}),
    Reading("position", "gps:truck-3", T + 3, T + 43,
            {"lat": -31.420083, "lon": -64.188776, "sats": [3, 7, 19]}),
    Reading("alarm", "modbus:feeder-1", T + 4, T + 44, {"alarm": "motor_overload"}),
    Reading("device_offline", "r2000:gate1", T + 5, T + 45, {"reason": "silent 30 s"}),
    Reading("data_integrity", "gateway:ranch-7", T + 6, T + 46,
            {"dropped": 17, "first_ms": T - 10, "last_ms": T - 1, "reason": "disk_budget"}),
    Reading("weigh_ticket", "xk3190:bridge", T + 7, T + 47,
            {"gross_kg": 38_120, "tare_kg": 14_640, "net_kg": 23_480, "truck_id": "AB123CD",
             "in_ms": T - 600_000, "out_ms": T, "direction": "out", "notes": {"lot": "L-9"}}),
)
BATCH = Batch(GW, 42, T + 100, READINGS)


def lookup(gateway_id: str) -> Ed25519PublicKey | None:
    return KEY.public_key() if gateway_id == GW else None


def forge(raw: bytes | None = None, *, body: bytes | None = None, raw_len: int | None = None,
          gw: str = GW, seq: int = 42, created_ms: int = T + 100,
          key: Ed25519PrivateKey = KEY) -> bytes:
    """A correctly signed envelope around arbitrary content (to test what follows the
    signature check)."""
    if body is None:
        assert raw is not None
        body = zstandard.ZstdCompressor().compress(raw)
    header = pack_header(gateway_id=gw, seq=seq, created_ms=created_ms, body_len=len(body),
                         raw_len=len(raw) if raw_len is None and raw is not None
                         else int(raw_len or 0))
    return header + key.sign(header + body) + body


def reason_of(data: bytes) -> str:
    with pytest.raises(UplinkError) as err:
        decode_envelope(data, lookup)
    return err.value.reason


# -- encoding ------------------------------------------------------------------------------

def test_roundtrip() -> None:
    data = encode_batch(BATCH, KEY)
    assert decode_envelope(data, lookup) == BATCH
    assert decode_own_envelope(data) == BATCH


def test_encoding_is_deterministic_and_laid_out_as_documented() -> None:
    data = encode_batch(BATCH, KEY)
    assert encode_batch(BATCH, KEY) == data  # Ed25519 is deterministic: resends are identical
    h = unpack_header(data)
    assert (h.gateway_id, h.seq, h.created_ms) == (GW, 42, T + 100)
    assert data[:3] == b"PWB" and data[3] == 1 and data[4] == len(GW)
    body = data[h.body_offset:]
    assert len(body) == h.body_len
    assert h.body_offset == len(h.signed_prefix) + SIGNATURE_BYTES
    raw = zstandard.ZstdDecompressor().decompress(body)
    assert len(raw) == h.raw_len
    assert raw == msgpack.packb(BATCH.to_wire())
    KEY.public_key().verify(h.signature, h.signed_prefix + body)


def test_batch_body_from_packed_pieces_equals_packing_the_dict() -> None:
    packed = [pack_reading(r) for r in READINGS]
    expected = msgpack.packb(BATCH.to_wire())
    assert pack_batch_body(gateway_id=GW, seq=42, created_ms=T + 100,
                           packed_readings=packed) == expected
    # chunks holding several readings each, as the outbox stores them
    pieces = [b"".join(packed[:3]), b"".join(packed[3:5]), b"".join(packed[5:])]
    assert pack_batch_body(gateway_id=GW, seq=42, created_ms=T + 100, packed_readings=pieces,
                           count=len(READINGS)) == expected
    assert encode_packed(gateway_id=GW, seq=42, created_ms=T + 100, packed_readings=pieces,
                         count=len(READINGS), key=KEY) == encode_batch(BATCH, KEY)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65_535, 65_536])
def test_batch_body_array_header_sizes(n: int) -> None:
    one = pack_reading(READINGS[4])
    body = pack_batch_body(gateway_id=GW, seq=1, created_ms=0, packed_readings=[one] * n)
    assert msgpack.unpackb(body)["readings"] == [READINGS[4].to_wire()] * n


def test_encode_refuses_more_than_the_contract_allows() -> None:
    one = pack_reading(READINGS[4])
    with pytest.raises(UplinkError) as err:
        encode_packed(gateway_id=GW, seq=1, created_ms=0, packed_readings=[one],
                      count=MAX_READINGS + 1, key=KEY)
    assert err.value.reason == "too_large"


def test_verify_checks_signature_without_decompressing() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"\0" * 1_000_000)
    data = forge(body=bomb, raw_len=1_000_000)
    header = verify_envelope(data, lookup)
    assert header.seq == 42
    assert reason_of(data) == "malformed"  # 1e6 zero bytes are not msgpack batch


# -- decoding: every failure has a reason ----------------------------------------------------

def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


GOOD = encode_batch(BATCH, KEY)
HDR = unpack_header(GOOD)


def _with_batch(**changes: Any) -> bytes:
    wire = BATCH.to_wire() | changes
    return forge(msgpack.packb(wire))


def _with_reading(reading: dict[str, Any]) -> bytes:
    wire = BATCH.to_wire()
    wire["readings"] = [reading]
    return forge(msgpack.packb(wire))


MALFORMED: list[tuple[str, bytes, str]] = [
    ("bad-magic", b"XWB" + GOOD[3:], "malformed"),
    ("empty", b"", "malformed"),
    ("version-2", GOOD[:3] + b"\x02" + GOOD[4:], "unsupported_version"),
    ("truncated-header", GOOD[:HDR.body_offset - 1], "malformed"),
    ("truncated-body", GOOD[:-1], "malformed"),
    ("trailing-byte", GOOD + b"\0", "malformed"),
    ("declared-raw-over-cap", forge(body=b"x", raw_len=MAX_UNCOMPRESSED_BYTES + 1),
     "too_large"),
    ("unknown-gateway", forge(msgpack.packb(BATCH.to_wire()), gw="stranger"),
     "unknown_gateway"),
    ("signed-by-other-key", forge(msgpack.packb(BATCH.to_wire()), key=OTHER), "bad_signature"),
    ("flipped-body-bit", _flip(GOOD, len(GOOD) - 5), "bad_signature"),
    ("flipped-seq-bit", _flip(GOOD, 5 + len(GW) + 7), "bad_signature"),
    ("flipped-signature-bit", _flip(GOOD, len(HDR.signed_prefix) + 3), "bad_signature"),
    ("body-not-zstd", forge(body=b"not zstd at all", raw_len=10), "malformed"),
    ("zstd-without-content-size",
     forge(body=zstandard.ZstdCompressor(write_content_size=False).compress(
         msgpack.packb(BATCH.to_wire())), raw_len=len(msgpack.packb(BATCH.to_wire()))),
     "malformed"),
    ("zstd-bomb-lies-about-size",
     forge(body=zstandard.ZstdCompressor().compress(b"\0" * (40 * 1024 * 1024)), raw_len=100),
     "too_large"),
    ("content-size-differs-from-header",
     forge(body=zstandard.ZstdCompressor().compress(b"\x90" * 50), raw_len=49), "malformed"),
    ("second-zstd-frame",
     forge(body=zstandard.ZstdCompressor().compress(msgpack.packb(BATCH.to_wire()))
           + zstandard.ZstdCompressor().compress(b"more"),
           raw_len=len(msgpack.packb(BATCH.to_wire()))), "malformed"),
    ("msgpack-garbage", forge(b"\xc1\xc1\xc1"), "malformed"),
    ("msgpack-trailing-data", forge(msgpack.packb(BATCH.to_wire()) + b"\x00"), "malformed"),
    ("msgpack-deep-nesting", forge(b"\x91" * 5000 + b"\xc0"), "malformed"),
    ("msgpack-ext-type", forge(msgpack.packb(msgpack.ExtType(5, b"xx"))), "malformed"),
    ("msgpack-int-map-key", forge(msgpack.packb({1: 2})), "malformed"),
    ("msgpack-huge-string", forge(msgpack.packb("x" * 70_000)), "malformed"),
    ("msgpack-bad-utf8", forge(b"\xa2\xff\xfe"), "malformed"),
    ("batch-is-a-list", forge(msgpack.packb([1, 2])), "malformed"),
    ("batch-version-2", _with_batch(v=2), "unsupported_version"),
    ("readings-not-a-list", _with_batch(readings={"a": 1}), "bad_field"),
    ("seq-zero-in-body", _with_batch(seq=0), "bad_field"),
    ("unknown-kind", _with_reading({"k": "teleport", "d": "x", "t": 1, "r": 1, "v": {}}),
     "unknown_kind"),
    ("reading-lacks-field", _with_reading({"k": "alarm", "d": "x", "t": 1, "r": 1, "v": {}}),
     "bad_field"),
    ("reading-negative-ts",
     _with_reading({"k": "alarm", "d": "x", "t": -1, "r": 1, "v": {"alarm": "a"}}),
     "bad_field"),
    ("body-other-gateway", _with_batch(gw="ranch-8"), "mismatch"),
    ("body-other-seq", _with_batch(seq=43), "mismatch"),
    ("body-other-created", _with_batch(created_ms=T), "mismatch"),
]


@pytest.mark.parametrize(("data", "reason"), [(d, r) for _, d, r in MALFORMED],
                         ids=[i for i, _, _ in MALFORMED])
def test_rejections(data: bytes, reason: str) -> None:
    assert reason_of(data) == reason


def test_unknown_gateway_is_decided_before_the_signature() -> None:
    calls: list[str] = []

    def recording(gw: str) -> Ed25519PublicKey | None:
        calls.append(gw)
        return None

    with pytest.raises(UplinkError) as err:
        decode_envelope(_flip(GOOD, len(GOOD) - 1), recording)
    assert err.value.reason == "unknown_gateway" and calls == [GW]


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_uplink_errors(data: bytes) -> None:
    with pytest.raises(UplinkError):
        decode_envelope(data, lookup)


@settings(max_examples=300)
@given(index=st.integers(0, len(GOOD) - 1), bit=st.integers(0, 7))
def test_any_single_bit_flip_is_refused(index: int, bit: int) -> None:
    b = bytearray(GOOD)
    b[index] ^= 1 << bit
    with pytest.raises(UplinkError):
        decode_envelope(bytes(b), lookup)


# -- readings: validated as the cloud will validate them --------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                     st.floats(allow_nan=False), st.text(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(st.text(max_size=5), st.integers()),
                                                 inner, max_size=3)), max_leaves=6)
_kinds = st.sampled_from([*READING_KINDS, "bogus"])


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    kind = draw(_kinds)
    spec = READING_KINDS.get(kind, (None, {}))[1]
    data: dict[Any, Any] = {}
    for name in spec:
        if draw(st.integers(0, 9)):  # usually present, sometimes missing
            data[name] = draw(_values)
    data.update(draw(st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 3)),
                                     _values, max_size=3)))
    ts = draw(st.one_of(st.integers(0, 2**63 - 1), st.integers(-5, 2**64), st.booleans()))
    dev = draw(st.one_of(st.text(min_size=0, max_size=130), st.just("dev-1")))
    return Reading(kind, dev, ts, draw(st.integers(0, 2**63 - 1)), data)


@st.composite
def valid_readings(draw: st.DrawFn) -> Reading:
    kind = draw(st.sampled_from(list(READING_KINDS)))
    data: dict[str, Any] = {}
    for name, types in READING_KINDS[kind][1].items():
        t = draw(st.sampled_from([t for t in types if t is not bool]
                                 or list(types)))
        data[name] = draw({int: st.integers(0, 2**40), float: st.floats(-1e9, 1e9),
                           str: st.text(max_size=12), bool: st.booleans(),
                           type(None): st.none()}[t])
    data.update(draw(st.dictionaries(st.text(max_size=6).filter(lambda k: k not in data),
                                     st.one_of(_scalars, st.lists(_scalars, max_size=3)),
                                     max_size=3)))
    return Reading(kind, draw(st.text(min_size=1, max_size=20)), draw(st.integers(0, 2**50)),
                   draw(st.integers(0, 2**50)), data)


def _slow_verdict(r: Reading) -> bool:
    try:
        packed = msgpack.packb(r.to_wire())
        if len(packed) > envelope.MAX_READING_BYTES:
            return False
        Reading.from_wire(unpack_limited(packed))
    except (UplinkError, TypeError, ValueError, OverflowError):
        return False
    return True


@settings(max_examples=500)
@given(readings())
def test_fast_validation_agrees_with_the_cloud_check(r: Reading) -> None:
    slow = _slow_verdict(r)
    if envelope._obviously_valid(r):
        assert slow, "fast path accepted a reading the cloud would refuse"
    try:
        validate_reading(r)
        fast = True
    except UplinkError:
        fast = False
    assert fast == slow
    try:
        validate_readings([READINGS[0], r])
        many = True
    except InvalidReading as exc:
        assert exc.index == 1
        many = False
    assert many == slow


@settings(max_examples=200)
@given(st.lists(valid_readings(), min_size=1, max_size=20), st.integers(1, 2**40))
def test_valid_readings_roundtrip(rs: list[Reading], seq: int) -> None:
    for r in rs:
        validate_reading(r)
    batch = Batch(GW, seq, T, tuple(rs))
    got = decode_envelope(encode_batch(batch, KEY), lookup)
    assert got.seq == seq and len(got.readings) == len(rs)
    for a, b in zip(got.readings, rs, strict=True):
        assert a.to_wire() == msgpack.unpackb(msgpack.packb(b.to_wire()))


@pytest.mark.parametrize(("reading", "reason"), [
    (Reading("teleport", "d", 1, 1, {}), "unknown_kind"),
    (Reading("alarm", "d", 1, 1, {}), "bad_field"),
    (Reading("alarm", "d", 1, 1, {"alarm": 3}), "bad_field"),
    (Reading("weight", "d", 1, 1, {"weight_kg": True, "stable": None}), "bad_field"),
    (Reading("alarm", "", 1, 1, {"alarm": "a"}), "bad_field"),
    (Reading("alarm", "d" * 129, 1, 1, {"alarm": "a"}), "bad_field"),
    (Reading("alarm", "d", -1, 1, {"alarm": "a"}), "bad_field"),
    (Reading("alarm", "d", 1, 2**63, {"alarm": "a"}), "bad_field"),
    (Reading("alarm", "d", 1, 1, {"alarm": "a", "x": object()}), "bad_field"),
    (Reading("alarm", "d", 1, 1, {"alarm": "a", "x": 2**64}), "bad_field"),
    (Reading("alarm", "d", 1, 1, {"alarm": "a", "x": {1: "int key"}}), "malformed"),
    (Reading("alarm", "d", 1, 1, {"alarm": "a", "x": "y" * 70_000}), "too_large"),
    (Reading("alarm", "d", 1, 1, {"alarm": "\udc80"}), "bad_field"),
], ids=["kind", "missing", "type", "bool-for-number", "empty-device", "long-device",
        "negative-ts", "ts-overflow", "unserialisable", "int-too-big", "int-map-key",
        "too-large", "lone-surrogate"])
def test_validate_reading_rejects(reading: Reading, reason: str) -> None:
    with pytest.raises(UplinkError) as err:
        validate_reading(reading)
    assert err.value.reason == reason


def test_validate_returns_the_packed_bytes() -> None:
    packer = msgpack.Packer()
    for r in READINGS:
        assert validate_reading(r, packer) == msgpack.packb(r.to_wire())
    assert validate_readings(READINGS) == [msgpack.packb(r.to_wire()) for r in READINGS]
    assert validate_readings([]) == []


def test_validate_readings_names_the_first_bad_one() -> None:
    bad = Reading("alarm", "d", 1, 1, {"alarm": "a", "x": object()})
    with pytest.raises(InvalidReading) as err:
        validate_readings([READINGS[0], READINGS[1], bad, Reading("nope", "d", 1, 1, {})])
    assert err.value.index == 2 and err.value.reason == "bad_field"
    assert isinstance(err.value, UplinkError)


def test_reading_dataclass_is_unchanged_by_validation() -> None:
    r = dataclasses.replace(READINGS[0])
    validate_reading(r)
    assert r == READINGS[0]


def test_header_layout_constants() -> None:
    assert struct.calcsize(">QQII") == 24
    assert len(HDR.signed_prefix) == 3 + 1 + 1 + len(GW) + 24
