"""The demo that ``make run`` starts. For now: a simulated Impinj R2000 reader on a real pty
pair, read with pyserial through the R2000 codec, printing each decoded tag read.

Later issues replace this with the full demo (broker, cloud, simulated ranch and warehouse).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TextIO

import serial

from firmware_sim import PtyLink, WallClock
from firmware_sim.r2000_reader import R2000Reader, herd_tags
from protocols import r2000
from protocols.messages import TagRead

__all__ = ["run_reader_demo"]

ANTENNAS = (1, 2, 3, 4)


def run_reader_demo(*, tags: int, duration: float | None, seed: int, out: TextIO,
                    err: TextIO, round_pause_s: float = 0.25) -> int:
    reader = R2000Reader(tags=herd_tags(tags, seed=seed), seed=seed, clock=WallClock())
    seen: Counter[str] = Counter()
    errors = 0
    rounds = 0
    start = time.monotonic()
    with PtyLink(reader) as link, serial.Serial(link.path, 115200, timeout=0.05) as port:
        err.write(f"simulated R2000 reader on {link.path} with {tags} ear tags; reading "
                  f"antennas {ANTENNAS} in turn. Ctrl-C to stop.\n")
        dec = r2000.Decoder()
        port.write(r2000.encode_get_firmware_version(reader.address))
        try:
            while duration is None or time.monotonic() - start < duration:
                ant = ANTENNAS[rounds % len(ANTENNAS)]
                port.write(r2000.encode_set_work_antenna(reader.address, ant))
                port.write(r2000.encode_real_time_inventory(reader.address, 1))
                deadline = time.monotonic() + 2.0
                done = False
                while not done and time.monotonic() < deadline:
                    for msg in dec.feed(port.read(port.in_waiting or 1)):
                        if isinstance(msg, TagRead):
                            seen[msg.epc] += 1
                            out.write(f"tag  epc={msg.epc}  antenna={msg.antenna}  "
                                      f"rssi={msg.rssi_dbm:.0f} dBm  "
                                      f"freq={msg.frequency_khz} kHz\n")
                        elif isinstance(msg, r2000.FirmwareVersion):
                            out.write(f"reader firmware {msg.major}.{msg.minor}\n")
                        elif isinstance(msg, r2000.InventoryDone | r2000.ReaderError):
                            done = True
                        elif msg.type == "error":
                            errors += 1
                            out.write(f"frame error: {msg.to_dict()}\n")
                out.flush()
                rounds += 1
                time.sleep(round_pause_s)
        except KeyboardInterrupt:
            pass
    err.write(f"{rounds} inventory rounds, {sum(seen.values())} tag reads, "
              f"{len(seen)}/{tags} distinct tags, {errors} frame errors\n")
    return 0
