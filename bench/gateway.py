"""Gateway benchmarks.

* ``gateway.decode_aggregate``: R2000 tag frames decoded and aggregated into sightings per
  second on one core, next to decoding alone over the same bytes (the baseline).
* ``gateway.rss_200_devices``: resident memory of a real ``pledgewatch edge run`` process
  reading 200 simulated devices over ptys (100 R2000 readers, 100 GPS receivers) and
  uploading to a local receiver, next to the RSS of a process that only imports the gateway.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.codecs import CHUNK
from edge.aggregate import TagSightingAggregator
from protocols import r2000
from protocols.messages import TagRead

DEVICES = 200
RUN_S = 25.0


def _decode_only(data: bytes) -> tuple[float, int]:
    dec = r2000.Decoder()
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(data), CHUNK):
        n += len(dec.feed(data[i:i + CHUNK]))
    return time.perf_counter() - t0, n


def _decode_aggregate(data: bytes, reads_per_ms: int) -> tuple[float, int, int]:
    dec = r2000.Decoder()
    agg = TagSightingAggregator(10_000, "gate-1")
    t0 = time.perf_counter()
    reads = 0
    sightings = 0
    now = 1_767_225_600_000
    for i in range(0, len(data), CHUNK):
        for m in dec.feed(data[i:i + CHUNK]):
            if isinstance(m, TagRead):
                reads += 1
                agg.feed(now + reads // reads_per_ms, m)
        sightings += len(agg.flush(now + reads // reads_per_ms))
    sightings += len(agg.drain())
    return time.perf_counter() - t0, reads, sightings


def bench_decode_aggregate(frames: int = 100_000, repeats: int = 3) -> dict[str, Any]:
    rng = random.Random(7)
    # a herd of 400 tags read over and over, as at a water point
    epcs = [rng.getrandbits(96).to_bytes(12, "big") for _ in range(400)]
    parts = [r2000.encode_tag(1, epc=epcs[rng.randrange(400)], antenna=1 + i % 4,
                              rssi_dbm=rng.randint(-80, -30), freq_index=rng.randint(7, 59))
             for i in range(frames)]
    data = b"".join(parts)
    base = min(_decode_only(data)[0] for _ in range(repeats))
    runs = [_decode_aggregate(data, reads_per_ms=2) for _ in range(repeats)]
    best = min(r[0] for r in runs)
    _, reads, sightings = runs[0]
    assert reads == frames, (reads, frames)
    return {"bench": "gateway.decode_aggregate", "readings": reads,
            "sightings": sightings, "readings_per_s": reads / best,
            "baseline": "R2000 decode alone, same bytes",
            "baseline_readings_per_s": frames / base, "ratio_vs_baseline": base / best}


def _rss_kb(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def bench_rss_200_devices(run_s: float = RUN_S) -> dict[str, Any]:
    from firmware_sim import PtyLink
    from firmware_sim.gps_receiver import GpsReceiver
    from firmware_sim.r2000_reader import R2000Reader, herd_tags
    from gateway.keys import generate_keypair
    from tests.receiver import receiver

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        key = tmp / "gw.key"
        pub = generate_keypair(key).public_key()
        sims = [R2000Reader(tags=herd_tags(20, seed=i), seed=i) if i % 2 == 0
                else GpsReceiver.demo(seed=i) for i in range(DEVICES)]
        links = [PtyLink(s) for s in sims]
        for link in links:
            link.start()
        try:
            with receiver({"gw-bench": pub}) as rec:
                lines = ["[gateway]", 'id = "gw-bench"', 'site = "bench"',
                         f'key_file = "{key}"', f'data_dir = "{tmp / "data"}"',
                         "http_port = 0", "", "[uplink]", 'kind = "http"',
                         f'url = "{rec.url}"', "batch_max_age_s = 1"]
                for i, link in enumerate(links):
                    kind = "r2000" if i % 2 == 0 else "nmea"
                    lines += ["", "[[device]]", f'id = "dev-{i}"', f'kind = "{kind}"',
                              f'port = "{link.path}"']
                    if kind == "r2000":
                        lines += ["[device.options]", "poll_interval_s = 1.0",
                                  "antennas = [1, 2]"]
                site = tmp / "site.toml"
                site.write_text("\n".join(lines) + "\n")
                proc = subprocess.Popen([sys.executable, "-m", "pledgewatch", "edge", "run",
                                         "--config", str(site)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                base = subprocess.Popen([sys.executable, "-c",
                                         "import gateway.app, sys; sys.stdin.read()"],
                                        stdin=subprocess.PIPE)
                try:
                    time.sleep(run_s)
                    rss, hwm = _rss_kb(proc.pid)
                    base_rss, _ = _rss_kb(base.pid)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    base.communicate(b"", timeout=30)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                received = len(rec.readings("gw-bench"))
        finally:
            for link in links:
                link.close()
    return {"bench": "gateway.rss_200_devices", "devices": DEVICES, "run_s": run_s,
            "rss_mb": rss / 1024, "peak_rss_mb": hwm / 1024, "readings_uploaded": received,
            "readings_per_s": received / run_s,
            "baseline": "RSS of a process that only imports the gateway",
            "baseline_rss_mb": base_rss / 1024, "ratio_vs_baseline": base_rss / max(rss, 1),
            "goal_rss_mb": 100, "goal_met": hwm / 1024 < 100}


def run() -> list[dict[str, Any]]:
    return [bench_decode_aggregate(), bench_rss_200_devices()]
