"""A simulated ThingMagic Mercury module (M6e Nano class): answers host commands with the device
role of :mod:`protocols.thingmagic` and streams 0x22 tag records with metadata while continuous
reading is on."""

from __future__ import annotations

from typing import ClassVar, Final

from firmware_sim._device import Clock, Faults, SimDevice
from firmware_sim.r2000_reader import SimTag, herd_tags
from protocols import thingmagic as tm

__all__ = ["HOP_TABLES_KHZ", "ThingMagicReader"]

# garbage that never contains the frame head 0xFF
_NO_HEAD: Final = bytes(range(0xFF))

# channel plans (kHz) by region code; unknown regions use North America's
HOP_TABLES_KHZ: Final = {
    tm.REGIONS["north_america"]: tuple(range(902_750, 927_251, 500)),
    tm.REGIONS["europe"]: (865_700, 866_300, 866_900, 867_500),
    tm.REGIONS["india"]: (865_700, 866_300, 866_900),
    tm.REGIONS["japan"]: (916_800, 918_000, 919_200, 920_400),
    tm.REGIONS["korea"]: tuple(range(917_300, 920_301, 600)),
    tm.REGIONS["australia"]: tuple(range(920_250, 925_751, 500)),
    tm.REGIONS["new_zealand"]: tuple(range(922_250, 927_251, 500)),
    tm.REGIONS["china"]: tuple(range(920_625, 924_376, 250)),
}

ST_INVALID_OPCODE: Final = 0x0101
ST_UNIMPLEMENTED_OPCODE: Final = 0x0102
ST_POWER_TOO_HIGH: Final = 0x0103
ST_WRONG_DATA: Final = 0x0100
ST_INVALID_PARAMETER: Final = 0x0105
ST_INVALID_REGION: Final = 0x010B
ST_NO_TAGS: Final = 0x0400
ST_INVALID_PROTOCOL: Final = 0x0402
ST_ANTENNA_NOT_CONNECTED: Final = 0x0503

MAX_CATCH_UP_ROUNDS: Final = 50  # a clock jump does not unleash an unbounded burst
MAX_PORTS: Final = 4


class ThingMagicReader(SimDevice):
    """Simulated module. ``tags`` may be changed at any time (animals come and go).

    Commands: version (0x03), boot firmware (0x04), read tag single (0x21, answered with the
    strongest tag in the legacy ``EPC | tag CRC`` layout), read tag multiple (0x22, into the tag
    buffer), get / clear tag buffer (0x29 / 0x2A), continuous reading on / off (0x2F wrapping
    0x22 with metadata), get / set antenna (0x61 / 0x91), get / set read power (0x62 / 0x92),
    get / set tag protocol (0x63 / 0x93, Gen2 only) and get / set region (0x67 / 0x97).
    Other known opcodes answer ``unimplemented_opcode``, unknown ones ``invalid_opcode``.

    While continuous reading is on, :meth:`tick` runs one inventory round every
    ``round_interval_s`` on the next port of ``antenna_plan`` (default: the selected antenna)
    and streams one 0x22 record per tag read, with the metadata flags the host asked for.
    Started ``in_bootloader``, every command but version and boot firmware answers
    ``invalid_opcode`` (status 0x0101) until boot firmware is sent, as a real module does.
    """

    KIND: ClassVar[str] = "thingmagic"
    GARBAGE_ALPHABET: ClassVar[bytes | None] = _NO_HEAD

    def __init__(self, *, tags: list[SimTag] | None = None,
                 connected_antennas: frozenset[int] = frozenset({1}),
                 antenna_plan: tuple[int, ...] | None = None,
                 round_interval_s: float = 0.05, rssi_noise_db: int = 2,
                 in_bootloader: bool = False, max_power_cdbm: int = 2700,
                 firmware_version: str = "01.07.02.09", **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        if round_interval_s <= 0:
            raise ValueError("round_interval_s must be positive")
        self.tags: list[SimTag] = list(tags or [])
        self.connected_antennas = connected_antennas
        self.antenna_plan = antenna_plan
        self.round_interval_s = round_interval_s
        self.rssi_noise_db = rssi_noise_db
        self.in_bootloader = in_bootloader
        self.max_power_cdbm = max_power_cdbm
        self.firmware_version = firmware_version
        self.region = tm.REGIONS["north_america"]
        self.tag_protocol = tm.PROTOCOL_GEN2
        self.antenna = (1, 1)  # (tx, rx)
        self.power_cdbm = 2000
        self.streaming = False
        self.metadata_flags = tm.METADATA_ALL
        self._stream_start = 0.0
        self._next_round = 0.0
        self._plan_index = 0
        self.tag_buffer: dict[bytes, tm.TagRecord] = {}
        self.decoder = tm.Decoder("device")
        self.commands: list[tm.Command] = []

    @classmethod
    def demo(cls, *, seed: int = 0, faults: Faults | None = None,
             clock: Clock | None = None) -> ThingMagicReader:
        """A 4-port module with 50 ear tags, reading all ports in turn."""
        return cls(tags=herd_tags(50, seed=seed), connected_antennas=frozenset({1, 2, 3, 4}),
                   antenna_plan=(1, 2, 3, 4), seed=seed, faults=faults, clock=clock)

    # -- host bytes -------------------------------------------------------------------------
    def handle(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in self.decoder.feed(data):
            if isinstance(item, tm.Command):
                self.commands.append(item)
                out += self._command(item)
        return out

    def tick(self, now: float) -> list[bytes]:
        if not self.streaming or now < self._next_round:
            return []
        frames: list[bytes] = []
        rounds = 0
        while now >= self._next_round and rounds < MAX_CATCH_UP_ROUNDS:
            frames += self._stream_round(self._next_round)
            self._next_round += self.round_interval_s
            rounds += 1
        if now >= self._next_round:  # skip what could not be caught up
            self._next_round = now + self.round_interval_s
        return frames

    # -- command handlers ---------------------------------------------------------------------
    def _command(self, c: tm.Command) -> list[bytes]:
        op, d = c.opcode, c.data
        if op == 0x03:
            return [tm.encode_version(firmware_version=self.firmware_version)]
        if op == 0x04:
            if not self.in_bootloader:
                return [tm.encode_error(op, ST_INVALID_OPCODE)]
            self.in_bootloader = False
            return [tm.encode_version(firmware_version=self.firmware_version, opcode=0x04)]
        if self.in_bootloader:
            return [tm.encode_error(op, ST_INVALID_OPCODE)]
        handler = _HANDLERS.get(op)
        if handler is None:
            status = ST_UNIMPLEMENTED_OPCODE if c.name in tm.OPCODES else ST_INVALID_OPCODE
            return [tm.encode_error(op, status)]
        return handler(self, d)

    def _set_region(self, d: bytes) -> list[bytes]:
        if len(d) != 1:
            return [tm.encode_error(0x97, ST_WRONG_DATA)]
        if d[0] not in tm.REGIONS.values():
            return [tm.encode_error(0x97, ST_INVALID_REGION)]
        self.region = d[0]
        return [tm.encode_ack(0x97)]

    def _get_region(self, d: bytes) -> list[bytes]:
        return [tm.encode_reply(0x67, bytes((self.region,)))]

    def _set_protocol(self, d: bytes) -> list[bytes]:
        if len(d) != 2:
            return [tm.encode_error(0x93, ST_WRONG_DATA)]
        if int.from_bytes(d, "big") != tm.PROTOCOL_GEN2:
            return [tm.encode_error(0x93, ST_INVALID_PROTOCOL)]
        self.tag_protocol = tm.PROTOCOL_GEN2
        return [tm.encode_ack(0x93)]

    def _get_protocol(self, d: bytes) -> list[bytes]:
        return [tm.encode_reply(0x63, self.tag_protocol.to_bytes(2, "big"))]

    def _set_antenna(self, d: bytes) -> list[bytes]:
        if len(d) != 2:
            return [tm.encode_error(0x91, ST_WRONG_DATA)]
        if not (1 <= d[0] <= MAX_PORTS and 1 <= d[1] <= MAX_PORTS):
            return [tm.encode_error(0x91, ST_INVALID_PARAMETER)]
        self.antenna = (d[0], d[1])
        return [tm.encode_ack(0x91)]

    def _get_antenna(self, d: bytes) -> list[bytes]:
        return [tm.encode_reply(0x61, bytes(self.antenna))]

    def _set_power(self, d: bytes) -> list[bytes]:
        if len(d) != 2:
            return [tm.encode_error(0x92, ST_WRONG_DATA)]
        cdbm = int.from_bytes(d, "big")
        if cdbm > self.max_power_cdbm:
            return [tm.encode_error(0x92, ST_POWER_TOO_HIGH)]
        self.power_cdbm = cdbm
        return [tm.encode_ack(0x92)]

    def _get_power(self, d: bytes) -> list[bytes]:
        return [tm.encode_reply(0x62, b"\x00" + self.power_cdbm.to_bytes(2, "big"))]

    def _read_single(self, d: bytes) -> list[bytes]:
        port = self.antenna[0]
        if port not in self.connected_antennas:
            return [tm.encode_error(0x21, ST_ANTENNA_NOT_CONNECTED)]
        seen = self._round(port, 0.0)
        if not seen:
            return [tm.encode_error(0x21, ST_NO_TAGS)]
        best = max(seen, key=lambda r: r.rssi_dbm)
        return [tm.encode_single_read(best.epc)]

    def _read_multiple(self, d: bytes) -> list[bytes]:
        port = self.antenna[0]
        if port not in self.connected_antennas:
            return [tm.encode_error(0x22, ST_ANTENNA_NOT_CONNECTED)]
        for rec in self._round(port, 0.0):
            old = self.tag_buffer.get(rec.epc)
            if old is None:
                self.tag_buffer[rec.epc] = rec
            else:
                self.tag_buffer[rec.epc] = _merge(old, rec)
        if not self.tag_buffer:
            return [tm.encode_error(0x22, ST_NO_TAGS)]
        return [tm.encode_tags_found(len(self.tag_buffer))]

    def _get_tag_buffer(self, d: bytes) -> list[bytes]:
        flags = int.from_bytes(d[0:2], "big") if len(d) >= 2 else tm.METADATA_ALL
        if flags & ~tm.METADATA_ALL:
            return [tm.encode_error(0x29, ST_INVALID_PARAMETER)]
        if not self.tag_buffer:
            return [tm.encode_error(0x29, 0x0600)]  # not enough tags available
        # as many records as fit one frame; the rest stay for the next 0x29
        frame_records: list[tm.TagRecord] = []
        for epc in list(self.tag_buffer):
            trial = [*frame_records, self.tag_buffer[epc]]
            try:
                tm.encode_tag_buffer(trial, metadata_flags=flags)
            except ValueError:
                break
            frame_records = trial
            del self.tag_buffer[epc]
        return [tm.encode_tag_buffer(frame_records, metadata_flags=flags)]

    def _clear_tag_buffer(self, d: bytes) -> list[bytes]:
        self.tag_buffer.clear()
        return [tm.encode_ack(0x2A)]

    def _multi_protocol(self, d: bytes) -> list[bytes]:
        req = tm.parse_continuous_read(d)
        if req is None:
            return [tm.encode_error(0x2F, ST_INVALID_PARAMETER)]
        start, flags = req
        if not start:
            self.streaming = False
            return [tm.encode_continuous_read_stopped()]
        if flags & ~tm.METADATA_ALL:
            return [tm.encode_error(0x2F, ST_INVALID_PARAMETER)]
        self.streaming = True
        self.metadata_flags = flags
        now = self.clock.now()
        self._stream_start = now
        self._next_round = now + self.round_interval_s
        self._plan_index = 0
        return [tm.encode_continuous_read_started()]

    # -- the RF world -------------------------------------------------------------------------
    def _round(self, port: int, elapsed_s: float) -> list[tm.TagRecord]:
        """One inventory round on ``port``: a record per tag that answered."""
        rng = self.rng
        hops = HOP_TABLES_KHZ.get(self.region, HOP_TABLES_KHZ[tm.REGIONS["north_america"]])
        # more power, a little more signal (and the reverse), as a reader shows it
        power_offset = (self.power_cdbm - 2000) // 300
        out = []
        for tag in self.tags:
            if port in tag.antennas and rng.random() < tag.read_probability:
                rssi = tag.rssi_dbm + power_offset + rng.randint(-self.rssi_noise_db,
                                                                 self.rssi_noise_db)
                out.append(tm.TagRecord(
                    epc=tag.epc, read_count=1, rssi_dbm=max(-128, min(-1, rssi)),
                    antenna=port, frequency_khz=rng.choice(hops),
                    timestamp_ms=round(elapsed_s * 1000) & 0xFFFFFFFF,
                    phase=rng.randint(0, 180), gpio=0))
        return out

    def _stream_round(self, at: float) -> list[bytes]:
        plan = self.antenna_plan or (self.antenna[0],)
        port = plan[self._plan_index % len(plan)]
        self._plan_index += 1
        if port not in self.connected_antennas:
            return []
        return [tm.encode_stream_tag(rec, metadata_flags=self.metadata_flags)
                for rec in self._round(port, at - self._stream_start)]


def _merge(old: tm.TagRecord, new: tm.TagRecord) -> tm.TagRecord:
    """How the module folds a repeated read of one EPC into its tag buffer."""
    return tm.TagRecord(epc=old.epc, read_count=min(255, old.read_count + new.read_count),
                        rssi_dbm=max(old.rssi_dbm, new.rssi_dbm), antenna=old.antenna,
                        frequency_khz=old.frequency_khz, timestamp_ms=old.timestamp_ms,
                        phase=old.phase, gpio=old.gpio)


_HANDLERS: Final = {
    0x21: ThingMagicReader._read_single,
    0x22: ThingMagicReader._read_multiple,
    0x29: ThingMagicReader._get_tag_buffer,
    0x2A: ThingMagicReader._clear_tag_buffer,
    0x2F: ThingMagicReader._multi_protocol,
    0x61: ThingMagicReader._get_antenna,
    0x62: ThingMagicReader._get_power,
    0x63: ThingMagicReader._get_protocol,
    0x67: ThingMagicReader._get_region,
    0x91: ThingMagicReader._set_antenna,
    0x92: ThingMagicReader._set_power,
    0x93: ThingMagicReader._set_protocol,
    0x97: ThingMagicReader._set_region,
}
