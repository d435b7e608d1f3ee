"""``python -m bench.fuzz``: at least 10^6 random and garbage bytes through each target, with
throughput and error counts. It must not crash; a target that raises anything but its
documented error is counted as ``unexpected`` and the run exits 1 (first traceback printed).

Targets:

* every ``protocols`` decoder in every role (``tests/fuzz/catalogue.py``): uniform bytes,
  bytes biased to the codec's own frame bytes, and valid frames with bytes flipped, cut or
  inserted, fed in chunks of 1..4096 bytes; the documented error path is a ``FrameError``
  record (``feed`` itself must never raise). Afterwards the decoder must still decode a
  valid frame (``recovers``);
* the cloud's ingest verification path (:meth:`cloud.ingest.service.IngestService.submit`
  on a real SQLite database with one registered gateway): random bytes, random msgpack,
  bit-flipped envelopes, envelopes signed with the right key around truncated zstd, random
  msgpack and random bytes (the decompress/decode/validate steps), lying size fields; the
  documented error path is ``IngestRejected`` (counted by reason in ``service.stats``);
* the four CSV importers (``cloud.admin.csv_import``) on random files and random rows; the
  documented error path is ``CsvImportError`` with FILE:LINE problems, and a refused file
  writes nothing.

``run()`` returns rows in the format of ``bench/results.json`` (``bench``, ``bytes``,
``bytes_per_s``, counts), so ``python -m bench fuzz`` can list it with the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]
import zstandard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from cloud.admin import service as admin_service
from cloud.admin.csv_import import COLUMNS, IMPORTERS, CsvImportError
from cloud.db import models
from cloud.db.session import make_engine, make_sessionmaker, session_scope
from cloud.errors import IngestRejected
from cloud.ingest.service import IngestService
from protocols._base import FrameError
from protocols.uplink import Batch, Reading, pack_header
from tests.fuzz.catalogue import CODECS, Codec, random_csv, random_msgpack, random_stream
from uplink.envelope import encode_batch

DEFAULT_BYTES: Final = 1_000_000
GW: Final = "fuzz-gw"
SEQ: Final = 10**9  # above anything stored: the decode path runs, not the replay check
CHUNKS: Final = (1, 3, 16, 64, 256, 1024, 4096)


class Unexpected:
    """Anything a target raised outside its documented error path."""

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def record(self, what: str) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"{what}\n{traceback.format_exc()}"


# -- codecs ---------------------------------------------------------------------------------


def fuzz_codec(codec: Codec, n_bytes: int, seed: int, bad: Unexpected) -> dict[str, Any]:
    rng = random.Random(f"{seed}-{codec.name}")
    data = random_stream(rng, codec, n_bytes)
    kinds: Counter[str] = Counter()
    messages = 0
    dec = codec.decoder()
    t0 = time.perf_counter()
    pos = 0
    try:
        while pos < len(data):
            step = rng.choice(CHUNKS)
            for item in dec.feed(data[pos:pos + step]):
                if isinstance(item, FrameError):
                    kinds[item.kind] += 1
                else:
                    messages += 1
            pos += step
        for item in dec.flush():
            kinds[item.kind if isinstance(item, FrameError) else "message"] += 1
    except Exception:
        bad.record(f"{codec.name}: feed raised at stream offset {pos}")
    elapsed = time.perf_counter() - t0
    expected = codec.decoder().feed(codec.frame)
    recovers = False
    try:  # a valid frame after all that garbage (bounded by the decoder's buffer cap)
        fed = 0
        while fed <= dec.MAX_BUFFER + 2 * len(codec.frame):
            out = dec.feed(codec.frame)
            fed += len(codec.frame)
            if out[-len(expected):] == expected and dec.buffered == 0:
                recovers = dec.feed(codec.frame) == expected
                break
    except Exception:
        bad.record(f"{codec.name}: feed raised on valid frames after the fuzz")
    return {"bench": f"fuzz.codec.{codec.name}", "bytes": len(data),
            "bytes_per_s": len(data) / elapsed, "messages": messages,
            "errors": sum(kinds.values()), "error_kinds": dict(sorted(kinds.items())),
            "recovers": recovers}


# -- ingest ---------------------------------------------------------------------------------


def _envelope(key: Ed25519PrivateKey, body: bytes, *, raw_len: int, seq: int = SEQ,
              body_len: int | None = None) -> bytes:
    prefix = pack_header(gateway_id=GW, seq=seq, created_ms=1,
                         body_len=len(body) if body_len is None else body_len, raw_len=raw_len)
    return prefix + key.sign(prefix + body) + body


def _hostile(rng: random.Random, key: Ed25519PrivateKey, good: bytes) -> tuple[str, bytes]:
    """One hostile envelope and its class."""
    pick = rng.randrange(9)
    if pick == 0:
        return "random_bytes", rng.randbytes(rng.randint(0, 4000))
    if pick == 1:
        return "random_msgpack", msgpack.packb(random_msgpack(rng))
    if pick == 2:
        flipped = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return "bit_flip", bytes(flipped)
    if pick == 3:
        return "truncated", good[:rng.randrange(len(good))]
    if pick == 4:
        raw = msgpack.packb(random_msgpack(rng))
        return "signed_random_msgpack", _envelope(key, zstandard.compress(raw),
                                                  raw_len=len(raw))
    if pick == 5:
        raw = rng.randbytes(rng.randint(0, 3000))
        return "signed_random_bytes", _envelope(key, zstandard.compress(raw), raw_len=len(raw))
    if pick == 6:
        body = good[good.index(b"\x28\xb5\x2f\xfd"):]  # the zstd frame of a good envelope
        cut = body[:rng.randrange(1, len(body))]
        return "signed_truncated_zstd", _envelope(key, cut, raw_len=rng.randint(0, 10_000))
    if pick == 7:
        return "lying_sizes", _envelope(key, rng.randbytes(rng.randint(0, 200)),
                                        raw_len=rng.randrange(2**32),
                                        body_len=rng.randrange(2**32))
    body = rng.randbytes(rng.randint(0, 2000))
    return "signed_not_zstd", _envelope(key, body, raw_len=rng.randint(0, 5000))


def fuzz_ingest(n_bytes: int, seed: int, bad: Unexpected, workdir: Path) -> dict[str, Any]:
    rng = random.Random(f"{seed}-ingest")
    key = Ed25519PrivateKey.generate()
    url = f"sqlite:///{workdir / 'ingest.db'}"
    engine = make_engine(url)
    models.Base.metadata.create_all(engine)
    sessions = make_sessionmaker(engine)
    raw_key = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    with sessions.begin() as s:
        bank = models.Bank(code="fuzz", name="Fuzz")
        s.add(bank)
        s.flush()
        site = models.Site(bank_id=bank.id, code="s", name="Ranch", kind="ranch")
        s.add(site)
        s.flush()
        s.add(models.Gateway(gateway_id=GW, site_id=site.id, public_key=raw_key,
                             disabled=False, last_seq=0))
    good = encode_batch(Batch(GW, SEQ, 1, tuple(
        Reading("weight", "wb", i, i, {"weight_kg": float(i), "stable": True})
        for i in range(50))), key)
    classes: Counter[str] = Counter()
    total = 0
    stored = 0

    async def go() -> IngestService:
        nonlocal total, stored
        async with IngestService(sessions=sessions, clock_ms=lambda: 0, queue_size=8,
                                 replay_window=100_000) as svc:
            while total < n_bytes:
                kind, body = _hostile(rng, key, good)
                total += len(body)
                classes[kind] += 1
                try:
                    await svc.submit(body)
                    stored += 1  # possible only for a valid batch: counted, not an error
                except IngestRejected:
                    pass
                except Exception:
                    bad.record(f"ingest: {kind} raised outside IngestRejected")
        return svc

    t0 = time.perf_counter()
    try:
        svc = asyncio.run(go())
    finally:
        engine.dispose()
    elapsed = time.perf_counter() - t0
    return {"bench": "fuzz.ingest", "bytes": total, "bytes_per_s": total / elapsed,
            "envelopes": sum(classes.values()), "stored": stored,
            "errors": sum(svc.stats.rejected.values()),
            "error_kinds": dict(sorted(svc.stats.rejected.items())),
            "classes": dict(sorted(classes.items()))}


# -- CSV importers --------------------------------------------------------------------------


def _table_counts(sessions: Any) -> tuple[int, ...]:
    with sessions() as s:
        return tuple(int(s.scalar(select(func.count()).select_from(m)) or 0) for m in (
            models.Site, models.Loan, models.Borrower, models.LoanSite, models.PledgedAnimal,
            models.PledgedLot))


def fuzz_csv(kind: str, n_bytes: int, seed: int, bad: Unexpected,
             workdir: Path) -> dict[str, Any]:
    rng = random.Random(f"{seed}-csv-{kind}")
    engine = make_engine(f"sqlite:///{workdir / f'csv-{kind}.db'}")
    models.Base.metadata.create_all(engine)
    sessions = make_sessionmaker(engine)
    sites, loans = workdir / "sites.csv", workdir / "loans.csv"
    sites.write_text("site,name,kind\nRANCH-1,Ranch,ranch\nWH-1,Warehouse,warehouse\n")
    loans.write_text("loan,borrower,borrower_name,currency,outstanding,ltv_line,"
                     "margin_call_line,liquidation_line,sites\n"
                     "L1,B1,Borrower,USD,1000,0.7,0.8,0.9,RANCH-1\n"
                     "L2,B1,,USD,1000,0.7,0.8,0.9,WH-1\n")
    with session_scope(sessions) as s:
        admin_service.create_bank(s, code="DEMO", name="Demo")
        IMPORTERS["sites"](s, bank_code="DEMO", path=sites)
        IMPORTERS["loans"](s, bank_code="DEMO", path=loans)
    path = workdir / f"fuzz-{kind}.csv"
    total = files = imported = refused = problems = partial = 0
    t0 = time.perf_counter()
    try:
        while total < n_bytes:
            data = random_csv(rng, kind, COLUMNS)
            path.write_bytes(data)
            total += len(data)
            files += 1
            before = _table_counts(sessions)
            try:
                with session_scope(sessions) as s:
                    IMPORTERS[kind](s, bank_code="DEMO", path=path, display="fuzz.csv")
                imported += 1
            except CsvImportError as exc:
                refused += 1
                problems += len(exc.errors)
                if _table_counts(sessions) != before:
                    partial += 1
                if not all(str(p).startswith("fuzz.csv:") for p in exc.errors):
                    bad.record(f"csv {kind}: a problem without FILE:LINE")
            except Exception:
                bad.record(f"csv {kind}: import raised outside CsvImportError")
    finally:
        engine.dispose()
    elapsed = time.perf_counter() - t0
    if partial:
        bad.count += partial
        bad.first = bad.first or f"csv {kind}: {partial} refused files wrote rows"
    return {"bench": f"fuzz.csv.{kind}", "bytes": total, "bytes_per_s": total / elapsed,
            "files": files, "imported": imported, "refused": refused, "errors": problems,
            "partial_imports": partial}


# -- driver ---------------------------------------------------------------------------------


def run(n_bytes: int = DEFAULT_BYTES, seed: int = 1,
        only: Callable[[str], bool] = lambda name: True) -> list[dict[str, Any]]:
    """Every target with ``n_bytes`` each; rows as in bench/results.json plus ``unexpected``
    (must be 0)."""
    bad = Unexpected()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pw-fuzz-") as tmp:
        work = Path(tmp)
        for codec in CODECS:
            if only(f"codec.{codec.name}"):
                rows.append(fuzz_codec(codec, n_bytes, seed, bad))
        if only("ingest"):
            rows.append(fuzz_ingest(n_bytes, seed, bad, work))
        for kind in sorted(IMPORTERS):
            if only(f"csv.{kind}"):
                rows.append(fuzz_csv(kind, n_bytes, seed, bad, work))
    for row in rows:
        row["unexpected"] = 0
    if bad.count:
        rows.append({"bench": "fuzz.unexpected", "unexpected": bad.count,
                     "first": bad.first})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--bytes", type=int, default=DEFAULT_BYTES,
                   help="bytes per target (default 10^6)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", default="", help="run targets whose name contains this")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    ns = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(ns.bytes, ns.seed, lambda name: ns.only in name)
    print(f"{'target':<30} {'bytes':>10} {'MB/s':>7} {'errors':>8} {'messages':>9}  notes")
    unexpected = 0
    for r in rows:
        if r["bench"] == "fuzz.unexpected":
            unexpected = int(r["unexpected"])
            continue
        notes = ""
        if "recovers" in r:
            notes = "recovers" if r["recovers"] else "DOES NOT RECOVER"
            unexpected += 0 if r["recovers"] else 1
        elif "files" in r:
            notes = f"{r['files']} files: {r['imported']} imported, {r['refused']} refused"
        else:
            notes = f"{r['envelopes']} envelopes, {r['stored']} stored"
        print(f"{r['bench'].removeprefix('fuzz.'):<30} {r['bytes']:>10,} "
              f"{r['bytes_per_s'] / 1e6:>7.2f} {r['errors']:>8,} "
              f"{r.get('messages', r.get('imported', r.get('stored', 0))):>9,}  {notes}")
    print(f"{time.perf_counter() - t0:.1f} s; unexpected exceptions: {unexpected}")
    if ns.out:
        ns.out.write_text(json.dumps(rows, indent=2))
    for r in rows:
        if r["bench"] == "fuzz.unexpected":
            print(r["first"], file=sys.stderr)
    return 1 if unexpected else 0


if __name__ == "__main__":
    raise SystemExit(main())
