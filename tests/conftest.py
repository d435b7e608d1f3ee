"""Suite-wide fixtures. Every test must clean up after itself: a test that leaves threads or
child processes running fails (STYLE.md habit 6)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow],
                          derandomize=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _children() -> set[int]:
    me = str(os.getpid())
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            kids.add(int(stat.parent.name))
    return kids


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    threads_before = set(threading.enumerate())
    kids_before = _children()
    yield
    deadline = time.monotonic() + 2.0
    while True:
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        kids = _children() - kids_before
        if not threads and not kids:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"test left behind threads {[t.name for t in threads]} "
                        f"and child processes {sorted(kids)}")
        time.sleep(0.05)
