"""Codec throughput: frames decoded per second from a realistic mixed stream fed in 4 KiB
chunks, next to the cost of only scanning the same bytes with ``bytes.find`` for the frame
start (the least any framer must do)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from protocols import r2000

CHUNK = 4096


@dataclass
class Stream:
    data: bytes
    frames: int  # frames (messages) expected
    sync: bytes  # what the baseline scans for
    decoder: Callable[[], object]


def r2000_stream(n: int, rng: random.Random) -> Stream:
    """A reader in continuous inventory: mostly tag frames, an inventory-done per 50 tags."""
    parts = []
    frames = 0
    for i in range(n):
        epc = rng.getrandbits(96).to_bytes(12, "big")
        parts.append(r2000.encode_tag(1, epc=epc, antenna=1 + i % 4,
                                      rssi_dbm=rng.randint(-80, -30),
                                      freq_index=rng.randint(7, 59)))
        frames += 1
        if i % 50 == 49:
            parts.append(r2000.encode_inventory_done(1, antenna=1, read_rate=500,
                                                     total_read=50))
            frames += 1
    return Stream(b"".join(parts), frames, bytes((r2000.HEAD,)), r2000.Decoder)


STREAMS: dict[str, Callable[[int, random.Random], Stream]] = {
    "r2000": r2000_stream,
}


def _time_decode(stream: Stream) -> tuple[float, int]:
    dec = stream.decoder()
    data = stream.data
    t0 = time.perf_counter()
    got = 0
    for i in range(0, len(data), CHUNK):
        got += len(dec.feed(data[i:i + CHUNK]))  # type: ignore[attr-defined]
    return time.perf_counter() - t0, got


def _time_find(stream: Stream) -> float:
    data = stream.data
    sync = stream.sync
    t0 = time.perf_counter()
    hits = 0
    for i in range(0, len(data), CHUNK):
        chunk = data[i:i + CHUNK]
        pos = chunk.find(sync)
        while pos >= 0:
            hits += 1
            pos = chunk.find(sync, pos + 1)
    return time.perf_counter() - t0


def run(frames: int = 100_000, repeats: int = 3) -> list[dict[str, object]]:
    results = []
    for name, build in STREAMS.items():
        stream = build(frames, random.Random(42))
        best_dec = min(_time_decode(stream)[0] for _ in range(repeats))
        _, got = _time_decode(stream)
        if got != stream.frames:
            raise AssertionError(f"{name}: decoded {got} items, expected {stream.frames}")
        best_find = min(_time_find(stream) for _ in range(repeats))
        results.append({
            "bench": f"codec.{name}",
            "frames": stream.frames,
            "bytes": len(stream.data),
            "frames_per_s": stream.frames / best_dec,
            "mb_per_s": len(stream.data) / best_dec / 1e6,
            "baseline": "bytes.find over the same chunks",
            "baseline_frames_per_s": stream.frames / best_find,
            "ratio_vs_baseline": best_find / best_dec,
        })
    return results
