"""Gateway.store: one reading that breaks the uplink contract is dropped and counted; the good
readings beside it are stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.app import Gateway
from protocols.uplink import Reading
from tests.gateway.site_helpers import load, write_site


def test_a_bad_reading_does_not_take_good_ones_with_it(tmp_path: Path) -> None:
    path, _ = write_site(tmp_path, uplink={"kind": "http", "url": "http://127.0.0.1:9/x"})
    gw = Gateway(load(path))
    try:
        good = [Reading("weight", "wb", i, i, {"weight_kg": float(i), "stable": True})
                for i in range(3)]
        bad = Reading("weight", "wb", 9, 9, {"weight_kg": "heavy", "stable": True})
        asyncio.run(gw.store([good[0], bad, good[1], good[2]]))
        assert gw.outbox.stats().depth == 3
        assert gw.rejected_readings == 1
    finally:
        gw.outbox.close()
