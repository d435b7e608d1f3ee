"""Real services for tests, started on free loopback ports and stopped afterwards.

A missing service binary is a test failure with the command that installs it, never a skip.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in MOSQUITTO_CANDIDATES if os.access(p, os.X_OK)), None)
    if not found:
        pytest.fail("mosquitto is not installed: run `sudo bash scripts/setup-system.sh` "
                    "(apt-get install mosquitto)")
    return found


@dataclass
class Mosquitto:
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        # as root, mosquitto drops to user "mosquitto", which cannot write the test's private
        # tmp dir; stay root there (ignored when not started as root)
        conf.write_text(f"user {getpass.getuser()}\n"
                        f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        f"persistence true\npersistence_location {self.data_dir}/\n"
                        "autosave_interval 1\nmax_queued_messages 100000\n")
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(port=free_port(), data_dir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
