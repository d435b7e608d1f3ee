"""A simulated Impinj R2000 "0xA0" UHF reader: answers host commands with the device role of
:mod:`protocols.r2000` and reports a tag population during inventory rounds."""

from __future__ import annotations

import dataclasses
import random
from typing import ClassVar

from firmware_sim._device import Clock, Faults, SimDevice
from protocols import r2000

__all__ = ["R2000Reader", "SimTag", "herd_tags"]

# garbage that never contains the frame head 0xA0
_NO_HEAD = bytes(b for b in range(256) if b != r2000.HEAD)


@dataclasses.dataclass(slots=True)
class SimTag:
    """A tag in the field: which antenna ports see it, how strong, how reliably."""

    epc: bytes
    antennas: frozenset[int] = frozenset({1})
    rssi_dbm: int = -60
    read_probability: float = 1.0


def herd_tags(n: int, *, seed: int = 0, antennas: int = 4) -> list[SimTag]:
    """``n`` 96-bit ear-tag EPCs, each seen by one or two of ``antennas`` ports."""
    rng = random.Random(seed)
    tags = []
    for i in range(n):
        first = 1 + i % antennas
        ports = {first} | ({1 + (first % antennas)} if rng.random() < 0.2 else set())
        epc = bytes.fromhex("E2801170") + (seed & 0xFFFF).to_bytes(2, "big") + i.to_bytes(
            6, "big")
        tags.append(SimTag(epc=epc, antennas=frozenset(ports), rssi_dbm=rng.randint(-75, -40),
                           read_probability=rng.uniform(0.7, 1.0)))
    return tags


class R2000Reader(SimDevice):
    """Simulated reader. ``tags`` may be changed at any time (animals come and go).

    Supported commands: get firmware (0x72), set/get work antenna (0x74/0x75), set/get output
    power (0x76/0x77), real-time inventory (0x89), fast-switch inventory (0x8A), session
    inventory (0x8B). Others get an 0x11 command_fail reply. An inventory on an antenna not in
    ``connected_antennas`` answers 0x22 antenna_missing.
    """

    KIND: ClassVar[str] = "r2000"
    GARBAGE_ALPHABET: ClassVar[bytes | None] = _NO_HEAD

    def __init__(self, *, address: int = 1, tags: list[SimTag] | None = None,
                 connected_antennas: frozenset[int] = frozenset({1, 2, 3, 4}),
                 firmware: tuple[int, int] = (1, 9), rssi_noise_db: int = 2,
                 **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.address = address
        self.tags: list[SimTag] = list(tags or [])
        self.connected_antennas = connected_antennas
        self.firmware = firmware
        self.rssi_noise_db = rssi_noise_db
        self.work_antenna = 1
        self.power_dbm: tuple[int, ...] = (30,)
        self.decoder = r2000.Decoder("device")
        self.commands: list[r2000.Command] = []

    @classmethod
    def demo(cls, *, seed: int = 0, faults: Faults | None = None,
             clock: Clock | None = None) -> R2000Reader:
        """A reader with 4 antennas and 50 ear tags spread over them."""
        return cls(tags=herd_tags(50, seed=seed), seed=seed, faults=faults, clock=clock)

    def handle(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in self.decoder.feed(data):
            if isinstance(item, r2000.Command):
                self.commands.append(item)
                out += self._command(item)
        return out

    # -- command handlers -------------------------------------------------------------------
    def _command(self, c: r2000.Command) -> list[bytes]:
        a = self.address
        if c.address not in (a, 0xFF):
            return []
        if c.cmd == 0x72:
            return [r2000.encode_firmware_version(a, *self.firmware)]
        if c.cmd == 0x74:
            if len(c.data) != 1 or c.data[0] > 3:
                return [r2000.encode_command_result(a, c.cmd, 0x47)]
            self.work_antenna = c.data[0] + 1
            return [r2000.encode_command_result(a, c.cmd)]
        if c.cmd == 0x75:
            return [r2000.encode_frame(a, c.cmd, bytes((self.work_antenna - 1,)))]
        if c.cmd == 0x76:
            if len(c.data) not in (1, 4) or any(p > 33 for p in c.data):
                return [r2000.encode_command_result(a, c.cmd, 0x48)]
            self.power_dbm = tuple(c.data)
            return [r2000.encode_command_result(a, c.cmd)]
        if c.cmd == 0x77:
            return [r2000.encode_output_power(a, self.power_dbm)]
        if c.cmd in (0x89, 0x8B):
            repeat = c.data[-1] if c.data else 1
            return self._inventory(c.cmd, self.work_antenna, max(1, min(repeat, 8)))
        if c.cmd == 0x8A:
            return self._fast_switch(c.data)
        return [r2000.encode_command_result(a, c.cmd, 0x11)]

    def _reads(self, antenna: int, cmd: int) -> list[bytes]:
        frames = []
        rng = self.rng
        for tag in self.tags:
            if antenna in tag.antennas and rng.random() < tag.read_probability:
                rssi = tag.rssi_dbm + rng.randint(-self.rssi_noise_db, self.rssi_noise_db)
                rssi = max(-129, min(-2, rssi))
                frames.append(r2000.encode_tag(self.address, epc=tag.epc, antenna=antenna,
                                               rssi_dbm=rssi, freq_index=rng.randint(7, 59),
                                               cmd=cmd))
        return frames

    def _inventory(self, cmd: int, antenna: int, rounds: int) -> list[bytes]:
        if antenna not in self.connected_antennas:
            return [r2000.encode_error(self.address, cmd, 0x22)]
        frames: list[bytes] = []
        for _ in range(rounds):
            frames += self._reads(antenna, cmd)
        return frames + [r2000.encode_inventory_done(self.address, antenna=antenna,
                                                     read_rate=len(frames) * 10,
                                                     total_read=len(frames), cmd=cmd)]

    def _fast_switch(self, data: bytes) -> list[bytes]:
        if len(data) < 10:
            return [r2000.encode_command_result(self.address, 0x8A, 0x41)]
        frames: list[bytes] = []
        total = 0
        repeat = max(1, min(data[9], 8))
        for _ in range(repeat):
            for slot in range(4):
                port_idx, loops = data[2 * slot], data[2 * slot + 1]
                if port_idx == 0xFF or loops == 0:
                    continue
                port = port_idx + 1
                if port not in self.connected_antennas:
                    frames.append(r2000.encode_error(self.address, 0x8A, 0x22, antenna=port))
                    continue
                for _ in range(loops):
                    reads = self._reads(port, 0x8A)
                    total += len(reads)
                    frames += reads
        return frames + [r2000.encode_fast_switch_done(self.address, total_read=total,
                                                       duration_ms=25 * repeat)]
