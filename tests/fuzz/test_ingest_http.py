"""Hostile bodies at ``POST /v1/ingest`` of a real ``pledgewatch cloud serve``, over real HTTP:
random bytes, random msgpack, envelopes with huge declared sizes, truncated or foreign zstd,
bit-flipped signatures, the wrong key, an unknown gateway, seqs replayed from outside the
window, and signed envelopes around arbitrary msgpack (Hypothesis).

Every answer must be a 4xx with a JSON ``{"reason", "detail"}`` body (never a 5xx, never a
traceback; a replay inside the window is the documented 200 ``duplicate``), nothing must be
stored, and the cloud's counters (``pledgewatch_ingest_rejected_total{reason}``) must count
every refusal the ingest service made."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack  # type: ignore[import-untyped]
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.keys import generate_keypair
from protocols.uplink import MAX_BODY_BYTES, Batch, Reading, pack_header
from tests.chaos.support import CloudProcess, metric, stored
from tests.cloud.bank_setup import admin, setup_bank
from tests.fuzz.catalogue import random_msgpack
from uplink.envelope import encode_batch

CT = {"Content-Type": "application/vnd.pledgewatch.batch"}
FRESH_SEQ = 10**9  # above anything stored: the decode path is reached, not the replay check


@dataclass(repr=False)
class Target:
    cloud: CloudProcess
    db_url: str
    key: Ed25519PrivateKey  # gw-1's registered key
    replay_key: Ed25519PrivateKey  # gw-2's: the replay checks move its last_seq
    client: httpx.Client
    answers: list[tuple[int, dict[str, Any]]]
    next_seq: int = FRESH_SEQ + 1_000

    def fresh_seq(self) -> int:
        self.next_seq += 1
        return self.next_seq

    def post(self, body: bytes) -> httpx.Response:
        resp = self.client.post(self.cloud.ingest_url, content=body, headers=CT)
        assert resp.status_code < 500, (resp.status_code, resp.text)
        payload = resp.json()
        assert isinstance(payload, dict), resp.text
        if resp.status_code != 200:
            assert 400 <= resp.status_code < 500
            assert resp.headers["content-type"].startswith("application/json")
            assert isinstance(payload.get("reason"), str) and payload["reason"], resp.text
            assert isinstance(payload.get("detail"), str), resp.text
            assert "Traceback" not in resp.text
        self.answers.append((resp.status_code, payload))
        return resp


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("ingest-fuzz")
    db_url = f"sqlite:///{tmp / 'cloud.db'}"
    key = generate_keypair(tmp / "gw-1.key")
    replay_key = generate_keypair(tmp / "gw-2.key")
    setup_bank(tmp, db_url, tmp / "gw-1.key.pub")
    admin(db_url, "register-gateway", "--bank", "TB", "--site", "ranch-1", "gw-2",
          "--public-key-file", str(tmp / "gw-2.key.pub"))
    with CloudProcess(tmp, db_url) as cloud, httpx.Client(timeout=30) as client:
        yield Target(cloud, db_url, key, replay_key, client, [])


def envelope(key: Ed25519PrivateKey, body: bytes, *, gateway_id: str = "gw-1",
             seq: int = FRESH_SEQ, created_ms: int = 1, body_len: int | None = None,
             raw_len: int = 0) -> bytes:
    """A header + signature + body, signed over whatever it is given (lies included)."""
    prefix = pack_header(gateway_id=gateway_id, seq=seq, created_ms=created_ms,
                         body_len=len(body) if body_len is None else body_len,
                         raw_len=raw_len)
    return prefix + key.sign(prefix + body) + body


def zstd(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(raw)


def signed_raw(key: Ed25519PrivateKey, raw: bytes, **kw: Any) -> bytes:
    return envelope(key, zstd(raw), raw_len=len(raw), **kw)


def good_batch(seq: int, gateway_id: str = "gw-1", n: int = 3) -> Batch:
    return Batch(gateway_id, seq, 1_767_225_600_000, tuple(
        Reading("weight", "wb-1", seq * 10 + i, seq * 10 + i,
                {"weight_kg": float(i), "stable": True}) for i in range(n)))


def hostile_bodies(target: Target, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    key, other = target.key, Ed25519PrivateKey.generate()
    good = encode_batch(good_batch(FRESH_SEQ), key)
    for _ in range(60):
        yield "random_bytes", rng.randbytes(rng.randint(0, 3000))
    for _ in range(60):
        yield "random_msgpack", msgpack.packb(random_msgpack(rng))
    for _ in range(20):  # a valid-looking start, then garbage
        yield "random_header", b"PWB\x01" + rng.randbytes(rng.randint(0, 200))
    yield "huge_body_len", envelope(key, b"x" * 10, body_len=2**32 - 1)
    yield "body_len_past_cap", envelope(key, b"x" * 10, body_len=MAX_BODY_BYTES + 1)
    yield "huge_raw_len", envelope(key, zstd(b"x"), raw_len=2**32 - 1)
    yield "zstd_declares_more", envelope(key, zstd(b"\x00" * 100_000), raw_len=10)
    yield "zstd_bomb_declared_small", envelope(key, zstd(b"\x00" * 10_000_000), raw_len=100)
    for cut in (1, 5, 17, len(good) // 2):
        body = good[-(len(good) - 140):]  # roughly the zstd body of the good envelope
        yield "truncated_zstd", envelope(key, body[:-cut], raw_len=1000)
    yield "truncated_envelope", good[:-3]
    yield "extra_after_envelope", good + b"\x00"
    for _ in range(20):
        flipped = bytearray(good)
        i = rng.randrange(5, len(flipped))
        flipped[i] ^= 1 << rng.randrange(8)
        yield "bit_flip", bytes(flipped)
    yield "wrong_key", encode_batch(good_batch(FRESH_SEQ), other)
    yield "unknown_gateway", encode_batch(good_batch(FRESH_SEQ, "gw-nobody"), key)
    yield "not_zstd", envelope(key, b"hello, not zstd at all", raw_len=22)
    for _ in range(40):
        yield "signed_random_msgpack", signed_raw(key, msgpack.packb(random_msgpack(rng)))
    for _ in range(10):
        yield "signed_random_bytes", signed_raw(key, rng.randbytes(rng.randint(0, 500)))
    yield "mismatch_seq", signed_raw(key, msgpack.packb(
        {"v": 1, "gw": "gw-1", "seq": FRESH_SEQ + 1, "created_ms": 1, "readings": []}))
    zero = bytearray(pack_header(gateway_id="gw-1", seq=1, created_ms=1, body_len=10,
                                 raw_len=1))
    zero[9:17] = bytes(8)  # seq 0: the encoder refuses to write it, a sender may not
    yield "seq_zero", bytes(zero) + key.sign(bytes(zero) + zstd(b"\x90")) + zstd(b"\x90")
    yield "too_big_for_the_route", b"PWB" + b"\x00" * (MAX_BODY_BYTES + 8192)


def test_hostile_bodies_get_a_4xx_with_a_reason_and_are_counted(target: Target) -> None:
    rng = random.Random(20261209)
    before = target.answers[:]
    kinds: Counter[str] = Counter()
    for kind, body in hostile_bodies(target, rng):
        resp = target.post(body)
        assert resp.status_code != 200, (kind, resp.text)
        kinds[f"{kind}:{resp.json()['reason']}"] += 1
    assert len(target.answers) > len(before)
    # a few answers pinned: each hostile class gets the reason docs/cloud.md names
    reasons: dict[str, set[str]] = {}
    for k in kinds:
        reasons.setdefault(k.split(":")[0], set()).add(k.split(":")[1])
    assert reasons["huge_body_len"] == reasons["huge_raw_len"] == {"too_large"}
    assert reasons["wrong_key"] == {"bad_signature"}
    assert "bad_signature" in reasons["bit_flip"]  # (a flip in the header fails earlier)
    assert reasons["unknown_gateway"] == {"unknown_gateway"}
    assert reasons["truncated_zstd"] == reasons["not_zstd"] == {"malformed"}
    assert reasons["mismatch_seq"] == {"mismatch"}
    assert reasons["too_big_for_the_route"] == {"too_large"}
    assert stored(target.db_url).readings == []  # nothing half-written


def test_replays_outside_the_window_are_refused_inside_answered_duplicate(
        target: Target) -> None:
    key = target.replay_key
    first = target.post(encode_batch(good_batch(500_000, "gw-2"), key))
    assert first.json()["status"] == "stored"
    again = target.post(encode_batch(good_batch(500_000, "gw-2"), key))
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    inside = target.post(encode_batch(good_batch(450_000, "gw-2"), key))
    assert inside.json()["status"] == "stored"  # a gap inside the window is filled
    for seq in (1, 2, 399_999):
        old = target.post(encode_batch(good_batch(seq, "gw-2"), key))
        assert (old.status_code, old.json()["reason"]) == (409, "replay_outside_window")


_json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obj=_json_like, readings=st.lists(_json_like, min_size=1, max_size=3))
def test_signed_arbitrary_msgpack_is_refused_cleanly(target: Target, obj: Any,
                                                     readings: list[Any]) -> None:
    """(A batch with no readings is valid: hence ``min_size=1``. Each document gets a seq of
    its own: a seen seq is answered ``duplicate`` before anything is decoded.)"""
    seq = target.fresh_seq()
    for doc in (obj, {"v": 1, "gw": "gw-1", "seq": seq, "created_ms": 1,
                      "readings": readings}):
        resp = target.post(signed_raw(target.key, msgpack.packb(doc), seq=seq))
        assert resp.status_code in (400, 422), resp.text


def test_counters_count_every_refusal(target: Target) -> None:
    """Runs last in this module: every refusal above was answered by the ingest service
    (counted by reason) or, for bodies over the HTTP limit, by the route before it."""
    assert target.answers, "the other tests of this module ran first"
    text = target.cloud.metrics()
    by_reason: Counter[str] = Counter()
    for status, payload in target.answers:
        if status == 200:
            continue
        detail = payload["detail"]
        if payload["reason"] == "too_large" and detail.startswith(("Content-Length",
                                                                     "request body")):
            continue  # refused by the route from the HTTP length: the service never saw it
        by_reason[payload["reason"]] += 1
    for reason, n in by_reason.items():
        assert metric(text, "pledgewatch_ingest_rejected_total", reason=reason) == n, reason
    assert metric(text, "pledgewatch_http_requests_total", method="POST", route="/v1/ingest",
                  status="500") == 0
