"""A simulated Chafon UHF reader (CF-RU5xxx class) in either protocol family: the device role of
:mod:`protocols.chafon`.

``variant="288"`` is a UHFReader288M (multi-port, answers the G2 inventory with an antenna
bitmask and one RSSI byte per tag); ``variant="18"`` a UHFReader18 (one port, EPCs only). The
reader answers get-reader-info (0x21) with its type, so a host can tell the two apart, set RF
power (0x2F) and the G2 inventory (0x01). An inventory reply that would not fit one frame is
split into frames with status 0x03 ("more frames follow") and ends with status 0x01 (done).

Status codes beyond those of :data:`protocols.chafon.STATUS_NAMES` follow the UHFReader18
user manual as commonly reproduced: 0xFE for a command the reader does not know, 0xFF for a
parameter out of range. The reader keeps quiet when a command is addressed to another reader
(neither its own address nor broadcast 0xFF), as an RS-485 drop does.
"""

from __future__ import annotations

from typing import ClassVar, Final, Literal

from firmware_sim._device import Clock, Faults, SimDevice
from firmware_sim.r2000_reader import SimTag, herd_tags
from protocols import chafon as cf

__all__ = ["MAX_REPLY_DATA", "ST_ILLEGAL_COMMAND", "ST_PARAMETER_ERROR", "ChafonReader"]

ST_DONE: Final = 0x01
ST_MORE: Final = 0x03
ST_ANTENNA_ERROR: Final = 0xF8
ST_ILLEGAL_COMMAND: Final = 0xFE
ST_PARAMETER_ERROR: Final = 0xFF
MAX_REPLY_DATA: Final = 0xFF - 5 - 4  # Len byte budget minus Adr/Cmd/Status/CRC, a margin
READER_TYPE: Final = {"18": 0x09, "288": 0x0C}
MAX_PORTS: Final = 4

Variant = Literal["18", "288"]


class ChafonReader(SimDevice):
    """Simulated Chafon reader. ``tags`` may be changed at any time (animals come and go).

    A UHFReader18 has one port: it reads the tags whose ``antennas`` include port 1. A 288M
    reads on the port its inventory command names (0x80 + port - 1), or port 1 when the
    command carries no parameters. ``max_tags_per_frame`` caps the tags per reply frame (the
    rest follow with status 0x03); 0 means as many as fit.
    """

    KIND: ClassVar[str] = "chafon"

    def __init__(self, *, variant: Variant = "288", address: int = 0x00,
                 tags: list[SimTag] | None = None,
                 connected_antennas: frozenset[int] = frozenset({1}),
                 max_tags_per_frame: int = 0, rssi_noise: int = 3, power_dbm: int = 30,
                 firmware: tuple[int, int] = (3, 2), **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        if variant not in READER_TYPE:
            raise ValueError(f"variant must be '18' or '288', got {variant!r}")
        if not 0 <= address <= 0xFE:
            raise ValueError(f"a reader address is 0x00..0xFE, got {address}")
        if max_tags_per_frame < 0:
            raise ValueError("max_tags_per_frame must be >= 0")
        self.variant: Variant = variant
        self.address = address
        self.tags: list[SimTag] = list(tags or [])
        self.connected_antennas = connected_antennas
        self.max_tags_per_frame = max_tags_per_frame
        self.rssi_noise = rssi_noise
        self.power_dbm = power_dbm
        self.firmware = firmware
        self.decoder = cf.Decoder("device")
        self.commands: list[cf.Command] = []
        self.inventories: list[int] = []  # port of every inventory run, in order

    @classmethod
    def demo(cls, *, seed: int = 0, faults: Faults | None = None,
             clock: Clock | None = None) -> ChafonReader:
        """A 4-port UHFReader288M with 50 ear tags spread over its ports."""
        return cls(tags=herd_tags(50, seed=seed), connected_antennas=frozenset({1, 2, 3, 4}),
                   seed=seed, faults=faults, clock=clock)

    def handle(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in self.decoder.feed(data):
            if isinstance(item, cf.Command) and item.address in (self.address, cf.BROADCAST):
                self.commands.append(item)
                out += self._command(item)
        return out

    # -- command handlers -------------------------------------------------------------------
    def _command(self, c: cf.Command) -> list[bytes]:
        a = self.address
        if c.cmd == 0x21:
            return [cf.encode_reader_info(a, firmware=self.firmware,
                                          reader_type=READER_TYPE[self.variant],
                                          power_dbm=self.power_dbm)]
        if c.cmd == 0x2F:
            if len(c.data) != 1 or c.data[0] > 30:
                return [cf.encode_command_result(a, c.cmd, ST_PARAMETER_ERROR)]
            self.power_dbm = c.data[0]
            return [cf.encode_command_result(a, c.cmd)]
        if c.cmd == 0x01:
            return self._inventory(c.data)
        return [cf.encode_command_result(a, c.cmd, ST_ILLEGAL_COMMAND)]

    def _inventory(self, data: bytes) -> list[bytes]:
        port = 1
        if self.variant == "288" and data:
            # Q Session MaskMem MaskAdr(2) MaskLen [Mask] Target Ant ScanTime
            if len(data) < 9 or len(data) != 9 + (data[5] + 7) // 8:
                return [cf.encode_command_result(self.address, 0x01, ST_PARAMETER_ERROR)]
            ant = data[-2]
            if not 0x80 <= ant < 0x80 + MAX_PORTS:
                return [cf.encode_command_result(self.address, 0x01, ST_PARAMETER_ERROR)]
            port = ant - 0x80 + 1
        self.inventories.append(port)
        if port not in self.connected_antennas:
            return [cf.encode_command_result(self.address, 0x01, ST_ANTENNA_ERROR)]
        reads = self._reads(port)
        chunks = self._chunks(reads)
        frames = []
        for i, chunk in enumerate(chunks):
            status = ST_DONE if i == len(chunks) - 1 else ST_MORE
            if self.variant == "288":
                frames.append(cf.encode_inventory_reply_288(self.address, chunk, antenna=port,
                                                            status=status))
            else:
                frames.append(cf.encode_inventory_reply_18(
                    self.address, [epc for epc, _ in chunk], status=status))
        return frames

    def _reads(self, port: int) -> list[tuple[bytes, int]]:
        """``(epc, rssi_raw)`` of the tags that answered on ``port``. The raw RSSI byte grows
        with signal strength (the 288M's unit is undocumented; the codec passes it through)."""
        rng = self.rng
        out = []
        for tag in self.tags:
            if port in tag.antennas and rng.random() < tag.read_probability:
                raw = 128 + tag.rssi_dbm + rng.randint(-self.rssi_noise, self.rssi_noise)
                out.append((tag.epc, max(0, min(255, raw))))
        return out

    def _chunks(self, reads: list[tuple[bytes, int]]) -> list[list[tuple[bytes, int]]]:
        per_tag = 2 if self.variant == "288" else 1  # EpcLen (+ RSSI)
        header = 2 if self.variant == "288" else 1  # (Ant) Num
        chunks: list[list[tuple[bytes, int]]] = [[]]
        used = header
        for epc, rssi in reads:
            size = per_tag + len(epc)
            full = self.max_tags_per_frame and len(chunks[-1]) >= self.max_tags_per_frame
            if chunks[-1] and (full or used + size > MAX_REPLY_DATA):
                chunks.append([])
                used = header
            chunks[-1].append((epc, rssi))
            used += size
        return chunks
