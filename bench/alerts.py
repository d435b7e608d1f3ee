"""Alert latency (issue 7): from the ingest answer to the alert visible in the alert API, under
~10,000 readings/s.

* ``alerts.latency``: a real ``pledgewatch cloud serve`` in a child process (SQLite in a
  temporary directory, ``PLEDGEWATCH_RULES_INTERVAL_S=0.2``, a random secret) on a free
  loopback port, with a bank, a ranch site, a loan pledging 1,000 animals, a gateway and an
  admin token set up through ``pledgewatch cloud admin``. A load generator (this process)
  posts signed batches (``uplink.envelope.encode_batch``) over HTTP: 1,000 readings every
  100 ms (tag sightings of the pledged animals, stamped now, and a gateway heartbeat, so the
  site's watermark follows the wall clock). Every ``INJECT_EVERY``-th batch also carries a
  sighting of a new unknown tag (read 4 times), which the ``foreign_tag`` rule turns into a
  new alert. For each injected tag: latency = the moment its alert is in the answer of
  ``GET /v1/alerts?kind=foreign_tag`` (polled every 20 ms) minus the moment the ingest
  answered 200 for its batch (the commit). Also how long until the alert arrives on
  ``GET /v1/alerts/stream`` (SSE; the stream polls the database every 0.5 s).

  Baseline, same run: the round trip of that same ``GET /v1/alerts`` (p50 of the polls,
  under the same load). Ratio = baseline p50 / latency p50.

  **What the latency is made of.** The rules run on an event-time grid: a reading stamped
  ``t`` is evaluated with the tick ``T = ceil(t / eval_interval) * eval_interval``, once
  the site's watermark (newest reading the gateway stored - ``lateness``) passes ``T``;
  then the next rules step (every ``rules_interval_s``) evaluates and commits the alert;
  then a poll sees it. So latency ~ U(0, eval_interval) + lateness + U(0, rules_interval_s)
  + step + poll.
  The defaults (``RuleParams``: eval_interval 10 min, lateness 10 min) would make that
  10-20 minutes, which a 30-second benchmark cannot show; the benchmark sets
  ``eval_interval_ms`` and ``lateness_ms`` to ``EVAL_MS``/``LATENESS_MS`` for the bank with
  ``PUT /v1/rules`` and reports, besides the total, the part after the watermark allowed
  the tick (the engine's and the API's own share).

  The engine inside ``cloud serve`` (:class:`cloud.domain.runner.RulesRunner`) reads a
  site's parameters when it first hears of the site's gateway and re-reads them with the
  registry; the benchmark therefore puts the rules before it registers the gateway, and
  checks with ``GET /v1/rules`` that they are stored (alerts within seconds, not 10-20
  minutes, show the engine uses them).

The row also carries the achieved readings/s, the cloud process's CPU seconds per wall second
while loaded (from ``/proc``), its RSS (idle, at the end and peak) and how many batches were
refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocols.uplink import Batch, Reading
from uplink.envelope import encode_batch

ROOT = Path(__file__).resolve().parent.parent
BANK, SITE, LOAN, GW = "BENCH", "ranch-1", "L-BENCH-1", "gw-bench"
ANIMALS = 1000
READERS = 20
BATCH = 1000  # readings per batch (with the heartbeat)
BATCH_INTERVAL_S = 0.1  # -> 10,000 readings/s
INJECT_EVERY = 2  # batches
POLL_S = 0.02
RULES_INTERVAL_S = 0.2
EVAL_MS = 1000
LATENESS_MS = 1000


# -- the served cloud (child process) -------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin(db_url: str, *args: str) -> str:
    from pledgewatch.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = main(["cloud", "admin", *args, "--database-url", db_url], out=out, err=err)
    if code != 0:
        raise RuntimeError(f"cloud admin {args[0]} failed: {err.getvalue()}")
    return out.getvalue()


def _epc(i: int) -> str:
    return f"E280117000BE{i:012X}"


def _unknown_epc(i: int) -> str:
    return f"E2801170DEAD{i:012X}"


def _setup_bank(d: Path, db_url: str) -> str:
    """Bank, ranch, loan, 1,000 pledged animals, an admin; returns the admin's token."""
    (d / "sites.csv").write_text(f"site,name,kind,lat,lon\n{SITE},Bench ranch,ranch,-36.6,"
                                 "-64.3\n")
    (d / "loans.csv").write_text(
        "loan,borrower,borrower_name,currency,outstanding,ltv_line,margin_call_line,"
        f"liquidation_line,sites\n{LOAN},B-1,Bench Ranch Ltd,USD,1000000.00,0.70,0.80,0.90,"
        f"{SITE}\n")
    (d / "animals.csv").write_text("epc,loan,site,breed,sex\n" + "".join(
        f"{_epc(i)},{LOAN},{SITE},Angus,M\n" for i in range(ANIMALS)))
    _admin(db_url, "create-bank", BANK, "--name", "Bench Bank")
    for kind in ("sites", "loans", "animals"):
        _admin(db_url, f"import-{kind}", "--bank", BANK, str(d / f"{kind}.csv"))
    _admin(db_url, "create-user", "--bank", BANK, "risk@bench.example", "--role", "admin")
    out = _admin(db_url, "create-token", "--bank", BANK, "risk@bench.example")
    return next(w for w in out.split() if w.startswith("pw_"))


def _register_gateway(d: Path, db_url: str, key: Ed25519PrivateKey) -> None:
    pub = d / "gw.pub"
    pub.write_text(base64.b64encode(key.public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)).decode() + "\n")
    _admin(db_url, "register-gateway", "--bank", BANK, "--site", SITE, GW,
           "--public-key-file", str(pub))


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/PID/stat`` fields 14, 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# -- load, polls, stream -----------------------------------------------------------------------

def _envelope(key: Ed25519PrivateKey, seq: int, now_ms: int, unknown: str | None) -> bytes:
    n = BATCH - 1 - (unknown is not None)
    readings = [Reading("tag_sighting", f"water-reader-{(seq + j) % READERS:02d}", now_ms,
                        now_ms, {"epc": _epc((seq * n + j) % ANIMALS), "antenna": 1 + j % 4,
                                 "count": 3, "first_ms": now_ms - 2_000, "last_ms": now_ms,
                                 "rssi_max_dbm": -58})
                for j in range(n)]
    if unknown is not None:
        readings.append(Reading("tag_sighting", "water-reader-00", now_ms, now_ms,
                                {"epc": unknown, "antenna": 1, "count": 4,
                                 "first_ms": now_ms - 2_000, "last_ms": now_ms,
                                 "rssi_max_dbm": -61}))
    readings.append(Reading("heartbeat", f"gateway:{GW}", now_ms, now_ms,
                            {"outbox_readings": 0}))
    return encode_batch(Batch(GW, seq, now_ms, tuple(readings)), key)


class _Run:
    def __init__(self, base: str, token: str, key: Ed25519PrivateKey, pid: int) -> None:
        self.base, self.token, self.key, self.pid = base, token, key, pid
        self.committed: dict[str, tuple[float, int]] = {}  # epc -> (answer time, ts_ms)
        self.visible: dict[str, float] = {}
        self.streamed: dict[str, float] = {}
        self.rtt_s: list[float] = []
        self.readings = 0
        self.batches = 0
        self.refused: dict[int, int] = {}
        self.rss_peak_kb = 0
        self.cloud_cpu_s = 0.0
        self.injecting = True
        self.done = asyncio.Event()

    async def load(self, seconds: float, drain_s: float) -> float:
        """Post a batch every BATCH_INTERVAL_S for ``seconds`` (injecting), then keep the
        watermark moving without injections until every alert is seen or ``drain_s``."""
        headers = {"Content-Type": "application/octet-stream"}
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            t0 = time.perf_counter()
            cpu0 = _proc_cpu_s(self.pid)
            seq, k = 0, 0
            elapsed = 0.0
            deadline = t0 + seconds + drain_s
            while time.perf_counter() < deadline:
                loading = time.perf_counter() - t0 < seconds
                if not loading:
                    self.injecting = False
                    if set(self.committed) <= set(self.visible) \
                            and set(self.committed) <= set(self.streamed):
                        break
                due = t0 + k * BATCH_INTERVAL_S
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                k += 1
                seq += 1
                unknown = (_unknown_epc(seq) if loading and seq > 20 and seq % INJECT_EVERY == 0
                           else None)
                now_ms = time.time_ns() // 1_000_000
                env = _envelope(self.key, seq, now_ms, unknown)
                r = await client.post("/v1/ingest", content=env, headers=headers)
                answered = time.time()
                if r.status_code != 200:
                    self.refused[r.status_code] = self.refused.get(r.status_code, 0) + 1
                    continue
                if loading:
                    self.readings += BATCH
                    self.batches += 1
                if unknown is not None:
                    self.committed[unknown] = (answered, now_ms)
                self.rss_peak_kb = max(self.rss_peak_kb, _proc_kb(self.pid, "VmRSS"))
                if loading:
                    elapsed = time.perf_counter() - t0
                    self.cloud_cpu_s = _proc_cpu_s(self.pid) - cpu0
            self.done.set()
            return elapsed

    async def poll(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        params = {"kind": "foreign_tag", "limit": "100"}
        async with httpx.AsyncClient(base_url=self.base, timeout=30, headers=headers) as client:
            while not self.done.is_set():
                t_send = time.perf_counter()
                r = await client.get("/v1/alerts", params=params)
                t_answer = time.perf_counter()
                seen_at = time.time()
                r.raise_for_status()
                self.rtt_s.append(t_answer - t_send)
                for item in r.json()["items"]:
                    epc = item["subject_id"]
                    if epc in self.committed and epc not in self.visible:
                        self.visible[epc] = seen_at
                await asyncio.sleep(max(0.0, t_send + POLL_S - time.perf_counter()))

    async def stream(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        async with httpx.AsyncClient(base_url=self.base, timeout=None, headers=headers) as client, \
                client.stream("GET", "/v1/alerts/stream") as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                    epc = data.get("subject_id")
                    if data.get("kind") == "foreign_tag" and epc not in self.streamed:
                        self.streamed[epc] = time.time()


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


async def _drive(base: str, token: str, key: Ed25519PrivateKey, pid: int, seconds: float,
                 drain_s: float) -> tuple[_Run, float]:
    run = _Run(base, token, key, pid)
    async with asyncio.TaskGroup() as tg:  # a failing poll or stream ends the run
        stream = tg.create_task(run.stream(), name="sse")
        tg.create_task(run.poll(), name="poll")  # ends when the load is done
        elapsed = await run.load(seconds, drain_s)
        stream.cancel()
    return run, elapsed


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cloud serve exited {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"cloud serve not healthy within 90 s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(seconds: float = 25.0, drain_s: float = 15.0) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="pw-bench-alerts-") as tmp:
        d = Path(tmp)
        db_url = f"sqlite:///{d / 'cloud.db'}"
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PLEDGEWATCH_DATABASE_URL": db_url,
               "PLEDGEWATCH_SECRET_KEY": secrets.token_urlsafe(32),
               "PLEDGEWATCH_RULES_INTERVAL_S": str(RULES_INTERVAL_S),
               # the poll below asks every 20 ms: above the default per-token rate limit
               "PLEDGEWATCH_API_RATE_PER_S": "1000", "PLEDGEWATCH_API_BURST": "1000",
               "PYTHONPATH": str(ROOT)}
        log = d / "cloud.log"
        with log.open("wb") as log_f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pledgewatch", "cloud", "serve", "--host", "127.0.0.1",
                 "--port", str(port)], cwd=d, env=env, stdout=log_f, stderr=log_f)
        try:
            _wait_healthy(base, proc, log)
            token = _setup_bank(d, db_url)
            auth = {"Authorization": f"Bearer {token}"}
            r = httpx.put(f"{base}/v1/rules", headers=auth, timeout=10, json={
                "site_id": None, "params": {"eval_interval_ms": EVAL_MS,
                                            "lateness_ms": LATENESS_MS}})
            r.raise_for_status()
            key = Ed25519PrivateKey.generate()
            # after the rules: the engine loads the site's parameters when it first hears
            # of this gateway (its first batch)
            _register_gateway(d, db_url, key)
            rss_idle_kb = _proc_kb(proc.pid, "VmRSS")
            the_run, elapsed = asyncio.run(_drive(base, token, key, proc.pid, seconds, drain_s))
            rss_kb, hwm_kb = _proc_kb(proc.pid, "VmRSS"), _proc_kb(proc.pid, "VmHWM")
            rules = httpx.get(f"{base}/v1/rules", headers=auth, timeout=10).json()
        finally:
            _stop(proc)
    return [_row(the_run, elapsed, rss_idle_kb, rss_kb, hwm_kb, rules)]


def _row(r: _Run, elapsed: float, rss_idle_kb: int, rss_kb: int, hwm_kb: int,
         rules: dict[str, Any]) -> dict[str, Any]:
    lat, after_mark, sse = [], [], []
    for epc, (answered, ts_ms) in r.committed.items():
        if epc in r.visible:
            lat.append(r.visible[epc] - answered)
            tick_ms = -(-ts_ms // EVAL_MS) * EVAL_MS
            allowed = (tick_ms + LATENESS_MS) / 1000  # the wall moment the watermark passes
            after_mark.append(r.visible[epc] - max(answered, allowed))
        if epc in r.streamed:
            sse.append(r.streamed[epc] - answered)
    missing = len(r.committed) - len(lat)
    effective = rules.get("effective", {})
    if (effective.get("eval_interval_ms"), effective.get("lateness_ms")) != (EVAL_MS,
                                                                           LATENESS_MS):
        raise RuntimeError(f"the rule parameters did not take: {effective}")
    if not lat:
        raise RuntimeError("no injected alert became visible")
    ms = [x * 1000 for x in lat]
    rtt = [x * 1000 for x in r.rtt_s]
    return {
        "bench": "alerts.latency",
        "latency_p50_ms": _pct(ms, 50),
        "latency_p99_ms": _pct(ms, 99),
        "latency_max_ms": max(ms),
        "after_watermark_p50_ms": _pct([x * 1000 for x in after_mark], 50),
        "after_watermark_p99_ms": _pct([x * 1000 for x in after_mark], 99),
        "sse_p50_ms": _pct([x * 1000 for x in sse], 50) if sse else None,
        "sse_p99_ms": _pct([x * 1000 for x in sse], 99) if sse else None,
        "alerts_injected": len(r.committed),
        "alerts_seen": len(lat),
        "alerts_missing": missing,
        "readings_per_s": r.readings / elapsed,
        "target_readings_per_s": BATCH / BATCH_INTERVAL_S,
        "batch_readings": BATCH,
        "batches_refused": r.refused,
        "cloud_cpu_s_per_wall_s": r.cloud_cpu_s / elapsed,
        "cloud_rss_mb": rss_kb / 1024,
        "cloud_rss_peak_mb": max(hwm_kb, r.rss_peak_kb) / 1024,
        "cloud_rss_idle_mb": rss_idle_kb / 1024,
        "eval_interval_ms": effective.get("eval_interval_ms"),
        "lateness_ms": effective.get("lateness_ms"),
        "rules_interval_s": RULES_INTERVAL_S,
        "poll_interval_ms": POLL_S * 1000,
        "baseline": "round trip of the same GET /v1/alerts?kind=foreign_tag, p50, same run",
        "baseline_ms": _pct(rtt, 50),
        "baseline_p99_ms": _pct(rtt, 99),
        "ratio_vs_baseline": _pct(rtt, 50) / _pct(ms, 50),
        "notes": (f"PUT /v1/rules eval_interval_ms={EVAL_MS}, lateness_ms={LATENESS_MS} "
                  "(defaults 10 min / 10 min: latency would be 10-20 min); latency = "
                  "wait for the tick + lateness + rules step (every "
                  f"{RULES_INTERVAL_S} s) + poll ({POLL_S * 1000:.0f} ms)"),
    }


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row, indent=1))
