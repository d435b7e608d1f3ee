"""Kill -9 at random moments: a gateway reading a simulated reader at a high rate is killed
with SIGKILL ten times and restarted. Afterwards the receiver must hold every reading the
gateway had acknowledged to its drivers (committed to the outbox; the gateway's ack log
lists them), and none twice after (gateway, seq) dedupe."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from firmware_sim import PtyLink
from firmware_sim.r2000_reader import R2000Reader, herd_tags
from gateway.app import reading_digest
from tests.gateway.site_helpers import write_site
from tests.receiver import receiver

KILLS = 10


def _start(site: Path, ack_log: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pledgewatch", "edge", "run", "--config",
                             str(site), "--ack-log", str(ack_log)],
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"),
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _acked(ack_log: Path) -> list[str]:
    if not ack_log.exists():
        return []
    return [ln for ln in ack_log.read_text().splitlines() if len(ln) == 32]


def test_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    sim = R2000Reader(tags=herd_tags(60, seed=4), seed=4)
    ack_log = tmp_path / "ack.log"
    log = tmp_path / "gateway.log"
    with PtyLink(sim) as link, receiver({}) as rec:
        site, pub = write_site(
            tmp_path, uplink={"kind": "http", "url": rec.url, "batch_max_readings": 200,
                              "batch_max_age_s": 0.1, "backoff_base_s": 0.05,
                              "backoff_cap_s": 0.2},
            devices=[{"id": "gate-1", "kind": "r2000", "port": link.path,
                      "options": {"window_s": 0.1, "poll_interval_s": 0.01}}])
        rec.keys["gw-1"] = pub
        for i in range(KILLS):
            before = len(_acked(ack_log))
            proc = _start(site, ack_log, log)
            try:
                # kill only once this run is acknowledging readings (start-up time varies
                # with the machine's load), then at a random moment within the next second
                deadline = time.monotonic() + 60
                while len(_acked(ack_log)) < before + 20 and time.monotonic() < deadline:
                    assert proc.poll() is None, f"run {i} died: {log.read_text()[-2000:]}"
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 1.0))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            assert proc.returncode == -signal.SIGKILL, f"run {i} ended by itself"
        acked_before_drain = _acked(ack_log)
        # a last, clean run drains the outbox; the field goes empty first, so the set of
        # acknowledged readings stops growing and "everything arrived" has a fixed target
        sim.tags = []
        proc = _start(site, ack_log, log)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                acked_now = _acked(ack_log)
                got = {reading_digest(r) for r in rec.readings("gw-1")}
                # (this run acknowledges its own device_online first: wait for that too)
                if len(acked_now) > len(acked_before_drain) and got >= set(acked_now):
                    break
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    acked = _acked(ack_log)
    received = Counter(reading_digest(r) for r in rec.readings("gw-1"))
    assert len(acked_before_drain) >= KILLS * 20, (
        f"too little traffic to mean anything: {log.read_text()[-2000:]}")
    missing = set(acked) - set(received)
    assert not missing, f"{len(missing)} acknowledged readings lost"
    twice = [d for d, n in received.items() if n > 1]
    assert not twice, f"{len(twice)} readings delivered twice"
    assert rec.rejected == []
    seqs = rec.seqs("gw-1")
    assert seqs == sorted(set(seqs))
