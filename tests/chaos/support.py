"""Fault injection for the chaos tests: a real ``pledgewatch cloud serve`` process, a TCP proxy
that can pass, reset or blackhole the gateway's connections, a PostgreSQL that can be stopped
and started on its own data directory and port, and readers of what the cloud stored.

Everything runs on loopback; every process and task started here is stopped by its context
manager (tests/conftest.py fails a test that leaves any behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from sqlalchemy import text

from cloud.db.session import make_engine
from protocols.uplink import Reading
from tests.services import _as_postgres_user, free_port, postgres_bindir

SECRET_ENV = {"PLEDGEWATCH_SECRET_KEY": "chaos-test-secret-not-the-default"}

# -- the cloud as a process ---------------------------------------------------------------------


class CloudProcess:
    """``pledgewatch cloud serve`` on a free loopback port; ``start`` returns once /healthz
    answers (whatever its status: a cloud whose database is down still serves)."""

    def __init__(self, tmp: Path, db_url: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.db_url = db_url
        self.env = {**os.environ, **SECRET_ENV, "PLEDGEWATCH_DATABASE_URL": db_url,
                    **(env or {})}
        self.log_path = tmp / f"cloud-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ingest_url(self) -> str:
        return f"{self.base}/v1/ingest"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pledgewatch", "cloud", "serve", "--port",
                 str(self.port)], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cloud exited with {self.proc.returncode}:\n"
                                   f"{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.base}/healthz", timeout=1)
                return
            time.sleep(0.1)
        raise TimeoutError(f"cloud did not answer /healthz:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() \
            else ""

    def metrics(self) -> str:
        return httpx.get(f"{self.base}/metrics", timeout=5).text

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> CloudProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def metric(text_: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0.0 when absent: counters start there)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text_.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


# -- what the cloud stored ----------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    readings: list[Reading]  # in insertion (id) order
    seqs: list[int]  # ingested batch seqs of the gateway, in id order


# readings a gateway makes up by itself when idle: not something a device sent
HEARTBEAT_KINDS = frozenset({"heartbeat"})


def stored(db_url: str, gateway_id: str = "gw-1", *,
           exclude: frozenset[str] = HEARTBEAT_KINDS) -> Stored:
    """What ingest wrote, read straight from the database (SQLite or PostgreSQL), without
    the kinds in ``exclude`` (by default the gateway's idle heartbeats, which a test that
    moves a simulated clock in jumps may provoke at any time)."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT kind, device_id, ts_ms, recv_ms, data FROM "
                                     "readings ORDER BY id")).all()
            seqs = [int(s) for (s,) in conn.execute(text(
                "SELECT seq FROM ingested_batches WHERE gateway_id = :g ORDER BY id"),
                {"g": gateway_id})]
    finally:
        engine.dispose()
    readings = [Reading(k, d, int(t), int(r), v if isinstance(v, dict) else json.loads(v))
                for k, d, t, r, v in rows if k not in exclude]
    return Stored(readings, seqs)


def content(r: Reading) -> tuple[str, str, int, int, str]:
    """A reading's identity for comparisons (data as sorted JSON: the store may reorder)."""
    return (r.kind, r.device_id, r.ts_ms, r.recv_ms, json.dumps(r.data, sort_keys=True))


def twice(readings: list[Reading]) -> list[tuple[str, str, int, int, str]]:
    return [k for k, n in Counter(map(content, readings)).items() if n > 1]


def until(pred: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return pred()


async def until_async(pred: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> bool:
    """``until`` for a test that runs the gateway in its own event loop: ``pred`` runs in a
    thread so a blocking database read does not stall the gateway."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await asyncio.to_thread(pred):
            return True
        await asyncio.sleep(step_s)
    return await asyncio.to_thread(pred)


# -- a network partition ------------------------------------------------------------------------

Mode = Literal["pass", "reset", "blackhole", "drop_response"]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a middlebox dropping the flow does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ChaosProxy:
    """A TCP proxy between gateway and cloud, in the test's event loop. ``mode``:

    * ``pass``: bytes flow both ways;
    * ``reset``: new connections are accepted and reset at once, open ones reset on their
      next bytes (a firewall rejecting the flow);
    * ``blackhole``: new connections are accepted and read, nothing is ever answered; open
      ones stop carrying bytes (a cable cut or a dead route: the sender times out);
    * ``drop_response``: the request reaches the cloud, its answer is thrown away and the
      gateway's connection reset (the worst case for exactly-once: stored, never confirmed).

    ``seen[mode]`` counts connections and chunks handled in each mode, so a test can check it
    really exercised what it meant to.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode: Mode = "pass"
        self.seen: Counter[str] = Counter()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/ingest"

    async def __aenter__(self) -> ChaosProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_w: asyncio.StreamWriter | None = None
        try:
            mode = self.mode
            self.seen[f"connect:{mode}"] += 1
            if mode == "reset":
                _reset(writer)
                return
            if mode == "blackhole":
                while await reader.read(65536):
                    pass
                return
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(up_w)
            await asyncio.gather(self._pipe(reader, up_w, writer, up_w, upward=True),
                                 self._pipe(up_r, writer, writer, up_w, upward=False))
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (writer, up_w):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    client: asyncio.StreamWriter, upstream: asyncio.StreamWriter, *,
                    upward: bool) -> None:
        while data := await src.read(65536):
            mode = self.mode
            self.seen[f"chunk:{mode}"] += 1
            if mode == "pass" or (mode == "drop_response" and upward):
                dst.write(data)
                await dst.drain()
            elif mode == "drop_response":  # the cloud's answer: lose it
                self.seen["responses_dropped"] += 1
                _reset(client)
                _reset(upstream)
                return
            elif mode == "reset":
                _reset(client)
                _reset(upstream)
                return
            # blackhole: the bytes vanish
        with contextlib.suppress(OSError, RuntimeError):
            dst.write_eof()


# -- a PostgreSQL that can be stopped and started again -----------------------------------------


class PgControl:
    """Stop and start the cluster behind ``url`` (made by :func:`tests.services.postgres`) on
    the same data directory and port: ``pg_ctl stop -m immediate`` is a crash of the server
    (no checkpoint, crash recovery at the next start), ``-m fast`` a clean restart."""

    def __init__(self, url: str) -> None:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                self.data_dir = Path(conn.execute(text("SHOW data_directory")).scalar_one())
                self.port = int(conn.execute(text("SHOW port")).scalar_one())
                self.socket_dir = conn.execute(
                    text("SHOW unix_socket_directories")).scalar_one()
        finally:
            engine.dispose()
        self.bindir = postgres_bindir()
        self.log = self.data_dir.parent / "server.log"

    def _pg_ctl(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        cmd = _as_postgres_user([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args])
        proc = subprocess.run(cmd, cwd=self.data_dir.parent, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stdout}{proc.stderr}\n"
                               f"{self.log.read_text(errors='replace')[-2000:]}")

    def stop(self, mode: Literal["immediate", "fast"]) -> None:
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def start(self) -> None:
        # the options tests.services.postgres started it with (fsync stays on: a crash must
        # not lose what the server acknowledged)
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=200")
        self._pg_ctl("-l", str(self.log), "-o", options, "-w", "-t", "60", "start")


@contextlib.contextmanager
def process(cmd: list[str], log: Path, env: dict[str, str] | None = None,
            stop_signal: int = signal.SIGTERM) -> Iterator[subprocess.Popen[bytes]]:
    """A child process stopped (``stop_signal``, then SIGKILL) when the block ends."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=out,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(stop_signal)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def edge_run(site: Path, ack_log: Path, log: Path) -> contextlib.AbstractContextManager[
        subprocess.Popen[bytes]]:
    """``pledgewatch edge run`` with an acknowledgement log (one digest per committed
    reading), stopped with SIGTERM."""
    return process([sys.executable, "-m", "pledgewatch", "edge", "run", "--config", str(site),
                    "--ack-log", str(ack_log)], log)


def acked(ack_log: Path) -> list[str]:
    if not ack_log.exists():
        return []
    return [ln for ln in ack_log.read_text().splitlines() if len(ln) == 32]

