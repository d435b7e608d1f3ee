"""Base of every simulated device: clock, seeded randomness, fault injection and the links
(a real pty pair or a TCP socket) that carry its bytes to a driver.

A simulated device is a small state machine in the device role of a ``protocols`` codec:

* :meth:`SimDevice.handle` gets bytes the host wrote and returns reply frames;
* :meth:`SimDevice.tick` gets the current (injected) time and returns frames due by then
  (continuous output: scales, GPS);

and never does I/O itself. :class:`PtyLink` and :class:`TcpLink` pump bytes between a device
and a file descriptor or socket in a background thread, applying :class:`Faults` on the way
out. Every clean frame a device produced is kept in :attr:`SimDevice.sent` together with the
faults applied to it, so tests compare what a driver decoded with what was really sent.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import select
import socket
import threading
import time
import tty
from collections.abc import Callable
from typing import ClassVar, Final, Protocol, Self

__all__ = [
    "Clock",
    "Emission",
    "FaultInjector",
    "Faults",
    "ManualClock",
    "PtyLink",
    "SentFrame",
    "SimDevice",
    "TcpLink",
    "WallClock",
]

READ_CHUNK: Final = 4096
POLL_INTERVAL_S: Final = 0.005


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch (simulated or real)."""
        ...


class WallClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to (tests, simulated worlds)."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._t += seconds
            return self._t


@dataclasses.dataclass(frozen=True, slots=True)
class Faults:
    """Per-frame fault probabilities (0..1). All draws come from the device's seeded RNG."""

    split: float = 0.0  # write the frame in two or more pieces with a short gap
    garbage: float = 0.0  # write random garbage before the frame
    bad_checksum: float = 0.0  # corrupt the frame (SimDevice.corrupt) so its check fails
    stall: float = 0.0  # go silent for ``stall_s`` before the frame
    disconnect: float = 0.0  # drop the link before the frame (TCP: close; pty: go silent)
    stall_s: float = 0.2
    split_gap_s: float = 0.002
    garbage_max: int = 16

    def __post_init__(self) -> None:
        for f in ("split", "garbage", "bad_checksum", "stall", "disconnect"):
            p = getattr(self, f)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault probability {f}={p} is not within 0..1")

    @property
    def any(self) -> bool:
        return any((self.split, self.garbage, self.bad_checksum, self.stall, self.disconnect))


@dataclasses.dataclass(frozen=True, slots=True)
class Emission:
    """One step of what goes on the wire: bytes, a pause, or a disconnect."""

    kind: str  # "data" | "pause" | "disconnect"
    data: bytes = b""
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class SentFrame:
    """Ground truth: a clean frame the device produced and the faults applied to it."""

    frame: bytes
    corrupted: bool = False
    garbage_before: bytes = b""
    split: bool = False
    dropped: bool = False  # not delivered (link down or nobody listening)


class FaultInjector:
    """Turns a clean frame into emissions according to :class:`Faults`."""

    def __init__(self, faults: Faults, rng: random.Random,
                 corrupt: Callable[[bytes], bytes],
                 garbage_alphabet: bytes | None = None) -> None:
        self.faults = faults
        self.rng = rng
        self.corrupt = corrupt
        self.garbage_alphabet = garbage_alphabet
        self.counts = {"split": 0, "garbage": 0, "bad_checksum": 0, "stall": 0,
                       "disconnect": 0}

    def _garbage(self) -> bytes:
        n = self.rng.randint(1, self.faults.garbage_max)
        if self.garbage_alphabet:
            return bytes(self.rng.choice(self.garbage_alphabet) for _ in range(n))
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def apply(self, frame: bytes) -> tuple[list[Emission], SentFrame]:
        f = self.faults
        rng = self.rng
        out: list[Emission] = []
        if not f.any:
            return [Emission("data", frame)], SentFrame(frame)
        if f.disconnect and rng.random() < f.disconnect:
            self.counts["disconnect"] += 1
            out.append(Emission("disconnect"))
        if f.stall and rng.random() < f.stall:
            self.counts["stall"] += 1
            out.append(Emission("pause", seconds=f.stall_s))
        garbage = b""
        if f.garbage and rng.random() < f.garbage:
            self.counts["garbage"] += 1
            garbage = self._garbage()
            out.append(Emission("data", garbage))
        wire = frame
        corrupted = False
        if f.bad_checksum and rng.random() < f.bad_checksum:
            self.counts["bad_checksum"] += 1
            wire = self.corrupt(frame)
            corrupted = True
        split = False
        if f.split and len(wire) > 1 and rng.random() < f.split:
            self.counts["split"] += 1
            split = True
            cut = rng.randint(1, len(wire) - 1)
            out += [Emission("data", wire[:cut]), Emission("pause", seconds=f.split_gap_s),
                    Emission("data", wire[cut:])]
        else:
            out.append(Emission("data", wire))
        return out, SentFrame(frame, corrupted, garbage, split)


class SimDevice:
    """Base class of simulated devices. Subclasses set ``KIND`` and override ``handle`` and/or
    ``tick``; they build frames only with ``protocols`` encoders."""

    KIND: ClassVar[str] = "device"
    # bytes that random garbage may contain without forming a frame start (None = any byte)
    GARBAGE_ALPHABET: ClassVar[bytes | None] = None

    def __init__(self, *, clock: Clock | None = None, seed: int = 0,
                 faults: Faults | None = None) -> None:
        self.clock: Clock = clock if clock is not None else WallClock()
        self.seed = seed
        self.rng = random.Random(seed)
        # faults draw from their own stream so enabling them does not change the device's data
        self.faults = faults or Faults()
        self.injector = FaultInjector(self.faults, random.Random(seed ^ 0x5EED), self.corrupt,
                                      self.GARBAGE_ALPHABET)
        self.sent: list[SentFrame] = []
        self.received = 0  # host bytes seen

    @classmethod
    def demo(cls, *, seed: int = 0, faults: Faults | None = None,
             clock: Clock | None = None) -> SimDevice:
        """A ready-to-serve instance with a plausible default setup, used by
        ``pledgewatch sim device KIND``. Subclasses that need more arguments (a tag
        population, a truck schedule) override this."""
        return cls(seed=seed, faults=faults, clock=clock)

    # -- behaviour (override) ----------------------------------------------------------
    def handle(self, data: bytes) -> list[bytes]:
        """Bytes written by the host; return reply frames."""
        return []

    def tick(self, now: float) -> list[bytes]:
        """Frames due by ``now`` (continuous output)."""
        return []

    def on_connect(self) -> list[bytes]:
        """A host connected (:class:`TcpLink` only); return frames to send before anything
        else, e.g. an LLRP reader's READER_EVENT_NOTIFICATION. Default: none."""
        return []

    def corrupt(self, frame: bytes) -> bytes:
        """A copy of ``frame`` whose integrity check fails. Default: flip the low bit of the
        byte in the middle, which changes an ASCII digit or a payload byte."""
        if not frame:
            return frame
        i = len(frame) // 2
        return frame[:i] + bytes((frame[i] ^ 0x01,)) + frame[i + 1:]

    # -- plumbing used by links ---------------------------------------------------------
    def emissions(self, frames: list[bytes]) -> list[Emission]:
        out: list[Emission] = []
        for frame in frames:
            ems, record = self.injector.apply(frame)
            self.sent.append(record)
            out += ems
        return out

    def clean_frames(self, *, delivered_only: bool = True) -> list[bytes]:
        """Frames sent intact (not corrupted, not dropped): what a driver must decode."""
        return [s.frame for s in self.sent if not s.corrupted and not (delivered_only and
                                                                       s.dropped)]


class _Link:
    """Background pump between a device and a byte endpoint."""

    def __init__(self, device: SimDevice, *, poll_interval: float = POLL_INTERVAL_S) -> None:
        self.device = device
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # device state is touched by the pump thread only
        self.written = 0
        self.error: BaseException | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._open()
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.device.KIND}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._close()

    # endpoint hooks
    def _open(self) -> None: ...
    def _close(self) -> None: ...
    def _wait_readable(self, timeout: float) -> bytes | None:
        raise NotImplementedError

    def _write(self, data: bytes) -> bool:
        raise NotImplementedError

    def _disconnect(self) -> None: ...

    def _run(self) -> None:
        dev = self.device
        try:
            while not self._stop.is_set():
                data = self._wait_readable(self.poll_interval)
                frames: list[bytes] = []
                if data:
                    dev.received += len(data)
                    frames += dev.handle(data)
                frames += dev.tick(dev.clock.now())
                if frames:
                    self._send(frames)
        except BaseException as exc:  # surfaced to tests through .error
            self.error = exc
            raise

    def _send(self, frames: list[bytes]) -> None:
        dev = self.device
        start = len(dev.sent)
        ok = True
        for em in dev.emissions(frames):
            if self._stop.is_set():
                return
            if em.kind == "pause":
                self._stop.wait(em.seconds)
            elif em.kind == "disconnect":
                self._disconnect()
            elif not self._write(em.data):
                ok = False
        if not ok:
            # the endpoint refused bytes: mark this batch as not delivered (honest ground truth)
            for i in range(start, len(dev.sent)):
                dev.sent[i] = dataclasses.replace(dev.sent[i], dropped=True)


class PtyLink(_Link):
    """Serve a device on a pseudo-terminal pair; a driver opens :attr:`path` like a serial
    port. The slave side is put in raw mode so bytes pass unchanged."""

    def __init__(self, device: SimDevice, **kw: float) -> None:
        super().__init__(device, **kw)
        self._master = -1
        self._slave = -1
        self.path = ""

    def _open(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)

    def _close(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def _wait_readable(self, timeout: float) -> bytes | None:
        r, _, _ = select.select([self._master], [], [], timeout)
        if not r:
            return None
        try:
            return os.read(self._master, READ_CHUNK)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EIO):
                return None
            raise

    def _write(self, data: bytes) -> bool:
        view = memoryview(data)
        deadline = time.monotonic() + 1.0
        while view:
            try:
                n = os.write(self._master, view)
                view = view[n:]
                self.written += n
            except BlockingIOError:
                # nobody is draining the port: a real UART would overrun; give up after 1 s
                if time.monotonic() > deadline or self._stop.is_set():
                    return False
                select.select([], [self._master], [], 0.05)
        return True

    def _disconnect(self) -> None:
        # A serial line cannot be unplugged from here; model a power cycle: go quiet and
        # lose whatever the host had sent.
        self._stop.wait(self.device.faults.stall_s)
        try:
            while os.read(self._master, READ_CHUNK):
                pass
        except OSError:
            pass


class TcpLink(_Link):
    """Serve a device on a TCP port (a serial-to-Ethernet bridge). One client at a time; a
    ``disconnect`` fault closes the connection and waits for the next one."""

    def __init__(self, device: SimDevice, *, host: str = "127.0.0.1", port: int = 0,
                 **kw: float) -> None:
        super().__init__(device, **kw)
        self.host = host
        self._port = port
        self._server: socket.socket | None = None
        self._conn: socket.socket | None = None
        self.connections = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.getsockname()[1])

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def _open(self) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self.host, self._port))
        srv.listen(1)
        srv.setblocking(False)
        self._server = srv

    def _close(self) -> None:
        self._disconnect()
        if self._server is not None:
            self._server.close()
            self._server = None

    def _wait_readable(self, timeout: float) -> bytes | None:
        assert self._server is not None
        if self._conn is None:
            r, _, _ = select.select([self._server], [], [], timeout)
            if r:
                conn, _ = self._server.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._conn = conn
                self.connections += 1
                greeting = self.device.on_connect()
                if greeting:
                    self._send(greeting)
            return None
        r, _, _ = select.select([self._conn], [], [], timeout)
        if not r:
            return None
        try:
            data = self._conn.recv(READ_CHUNK)
        except OSError:
            data = b""
        if not data:
            self._disconnect()
            return None
        return data

    def _write(self, data: bytes) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.sendall(data)
            self.written += len(data)
            return True
        except OSError:
            self._disconnect()
            return False

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
