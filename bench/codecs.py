"""Codec throughput: messages decoded per second from a realistic mixed stream fed in 4 KiB
chunks, next to the cost of only scanning the same chunks with ``bytes.find`` for the frame
start (the least any framer must do), measured in the same run.

Every stream is built with the codec's own device-role encoders, as the simulated devices
build them, and says how many messages of each type it must decode to; :func:`run` checks
that (and that no frame was reported bad) before it reports a figure. ``frames`` in the result
counts decoded messages: a Chafon reply carrying eight EPCs is eight tag reads, so
``wire_frames`` gives the number of frames on the wire as well.

Streams (one per codec; ISO 11784 has no stream, LLRP is benchmarked with its own codec):

* ``r2000``: continuous inventory, tag frames with an inventory-done frame after every 50.
* ``thingmagic``: continuous reading (0x2F wrapping 0x22) with every metadata field, a herd of
  tags read repeatedly, a "no tags found" status reply after every 64 records, the start and
  stop acknowledgements at the ends.
* ``chafon``: UHFReader288M answer-mode inventory rounds, each 1..5 replies of 1..8 tags with
  status 0x03 ("more frames follow") and a closing ``Num=0`` reply with status 0x01.
* ``nmea``: a receiver at 1 Hz: GGA, RMC, VTG and three GSV sentences a second, a lost fix now
  and then.
* ``xk3190``: A9 frames from a weighbridge as trucks drive on and off (some with decimals,
  negative near zero).
* ``toledo``: 18-byte frames with checksum, gross/net, motion while the load changes.
* ``mtsics``: ``SIR`` output, ``S S``/``S D`` lines, an ``S I`` (busy) now and then.
* ``digistar``: SCOREM 1 display frames (motion, locked-on) and SCOREM 11/12 ``SG`` frames
  with checksums, as a mixer wagon is loaded.
* ``modbus``: FC 3 responses (client role) of an indicator polled for 2..10 registers, an
  exception response now and then.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from protocols import chafon, digistar, modbus, mtsics, nmea, r2000, thingmagic, toledo, xk3190
from protocols._base import StreamDecoder

CHUNK: Final = 4096
R2000_GOAL_FRAMES_PER_S: Final = 200_000  # issue 3: >= 200k R2000 tag frames/s per core


@dataclass
class Stream:
    data: bytes
    frames: int  # messages the decoder must yield
    sync: bytes  # what the baseline scans for
    decoder: Callable[[], StreamDecoder]
    wire_frames: int = 0  # frames on the wire (a frame may carry several messages)
    expected: dict[str, int] = field(default_factory=dict)  # message type -> count


def _stream(parts: list[bytes], expected: Counter[str], sync: bytes,
            decoder: Callable[[], StreamDecoder]) -> Stream:
    return Stream(b"".join(parts), sum(expected.values()), sync, decoder,
                  wire_frames=len(parts), expected=dict(expected))


def _herd(rng: random.Random, n: int) -> list[bytes]:
    return [rng.getrandbits(96).to_bytes(12, "big") for _ in range(n)]


# -- RFID ------------------------------------------------------------------------------------
def r2000_stream(n: int, rng: random.Random) -> Stream:
    """A reader in continuous inventory: mostly tag frames, an inventory-done per 50 tags."""
    parts = []
    want: Counter[str] = Counter()
    for i in range(n):
        epc = rng.getrandbits(96).to_bytes(12, "big")
        parts.append(r2000.encode_tag(1, epc=epc, antenna=1 + i % 4,
                                      rssi_dbm=rng.randint(-80, -30),
                                      freq_index=rng.randint(7, 59)))
        want["tag_read"] += 1
        if i % 50 == 49:
            parts.append(r2000.encode_inventory_done(1, antenna=1, read_rate=500,
                                                     total_read=50))
            want["inventory_done"] += 1
    return _stream(parts, want, bytes((r2000.HEAD,)), r2000.Decoder)


_HOPS_KHZ: Final = tuple(902_750 + 500 * k for k in range(50))  # North America hop channels


def thingmagic_stream(n: int, rng: random.Random) -> Stream:
    """Continuous reading with all metadata; a no-tags-found status reply every 64 records."""
    herd = _herd(rng, 300)
    parts = [thingmagic.encode_continuous_read_started()]
    want: Counter[str] = Counter(continuous_read=1)
    ts_ms = 0
    for i in range(n):
        ts_ms += rng.randint(1, 40)
        rec = thingmagic.TagRecord(epc=rng.choice(herd), read_count=rng.randint(1, 3),
                                   rssi_dbm=rng.randint(-75, -35), antenna=1 + i % 4,
                                   frequency_khz=rng.choice(_HOPS_KHZ), timestamp_ms=ts_ms,
                                   phase=rng.randint(0, 180))
        parts.append(thingmagic.encode_stream_tag(rec))
        want["tag_read"] += 1
        if i % 64 == 63:
            parts.append(thingmagic.encode_error(0x22, 0x0400))
            want["module_error"] += 1
    parts.append(thingmagic.encode_continuous_read_stopped())
    want["continuous_read"] += 1
    return _stream(parts, want, bytes((thingmagic.HEAD,)), thingmagic.Decoder)


def chafon_stream(n: int, rng: random.Random) -> Stream:
    """UHFReader288M inventory rounds: replies of 1..8 tags (status 0x03), then ``Num=0``
    with status 0x01 (done). Reader address 0x00, as the captured replies use."""
    herd = _herd(rng, 300)
    parts = []
    want: Counter[str] = Counter()
    while want["tag_read"] < n:
        antenna = rng.randint(1, 4)
        for _ in range(rng.randint(1, 5)):
            k = min(rng.randint(1, 8), n - want["tag_read"])
            if k <= 0:
                break
            tags = [(rng.choice(herd), rng.randint(0x40, 0x70)) for _ in range(k)]
            parts.append(chafon.encode_inventory_reply_288(0x00, tags, antenna=antenna,
                                                           status=0x03))
            want["tag_read"] += k
        parts.append(chafon.encode_inventory_reply_288(0x00, [], antenna=antenna,
                                                       status=0x01))
        want["inventory_status"] += 1
    # no sync byte: the baseline scans for address + command of a reply
    return _stream(parts, want, b"\x00\x01", chafon.Decoder)


# -- GPS -------------------------------------------------------------------------------------
def _gsv(rng: random.Random) -> list[bytes]:
    sats = rng.sample(range(1, 33), 12)
    out = []
    for msg in range(3):
        fields = ["3", str(msg + 1), "12"]
        for prn in sats[4 * msg:4 * msg + 4]:
            fields += [f"{prn:02d}", f"{rng.randint(5, 89):02d}", f"{rng.randint(0, 359):03d}",
                       f"{rng.randint(15, 48):02d}"]
        out.append(nmea.encode_sentence("GP", "GSV", fields))
    return out


def nmea_stream(n: int, rng: random.Random) -> Stream:
    """A receiver at 1 Hz on a slow-moving feed truck: GGA, RMC, VTG, 3 x GSV each second;
    about one second in 100 without a fix."""
    lat, lon = -19.484083, 24.175100
    parts: list[bytes] = []
    want: Counter[str] = Counter()
    second = 0
    while len(parts) < n:
        t = f"{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}.00"
        fix = rng.random() > 0.01
        lat += rng.uniform(-2e-5, 2e-5)
        lon += rng.uniform(-2e-5, 2e-5)
        speed = round(rng.uniform(0.0, 6.0), 2)
        course = round(rng.uniform(0.0, 359.9), 1)
        parts.append(nmea.encode_gga(time_utc=t, lat=lat if fix else None,
                                     lon=lon if fix else None, quality=1 if fix else 0,
                                     satellites=9, hdop=0.9, altitude_m=1081.3))
        parts.append(nmea.encode_rmc(time_utc=t, date="2024-05-17", lat=lat if fix else None,
                                     lon=lon if fix else None, valid=fix, speed_knots=speed,
                                     course_deg=course))
        parts.append(nmea.encode_vtg(course_true_deg=course, speed_knots=speed))
        parts += _gsv(rng)
        want["position"] += 2
        want["velocity"] += 1
        want["nmea_sentence"] += 3
        second += 1
    return _stream(parts, want, b"$", nmea.Decoder)


# -- scales ----------------------------------------------------------------------------------
def _load_profile(rng: random.Random, n: int, full: float, step: float) -> list[float]:
    """``n`` successive displayed weights: a load rises to about ``full``, stays, falls."""
    out: list[float] = []
    while len(out) < n:
        target = round(rng.uniform(0.3, 1.0) * full / step) * step
        w = 0.0
        while w < target and len(out) < n:
            w = min(target, w + step * rng.randint(1, 40))
            out.append(w)
        out += [target] * min(rng.randint(20, 80), n - len(out))
        while w > 0 and len(out) < n:
            w = max(0.0, w - step * rng.randint(1, 60))
            out.append(w)
        out += [0.0] * min(rng.randint(5, 30), n - len(out))
    return out[:n]


def xk3190_stream(n: int, rng: random.Random) -> Stream:
    """A truck weighbridge in kg (20 kg division); a 0.1 kg test platform now and then, and a
    slightly negative empty platform."""
    parts = []
    for i, w in enumerate(_load_profile(rng, n, 40_000, 20)):
        if i % 97 == 0:
            parts.append(xk3190.encode_a9(round(rng.uniform(0, 999), 1), 1))
        elif w == 0 and i % 5 == 0:
            parts.append(xk3190.encode_a9(-20))
        else:
            parts.append(xk3190.encode_a9(w))
    return _stream(parts, Counter(weight=len(parts)), bytes((xk3190.STX,)), xk3190.Decoder)


def toledo_stream(n: int, rng: random.Random) -> Stream:
    """A livestock scale in kg (increment x5): gross while loading, in motion while the weight
    changes, net with a tare in some passes; every frame with its checksum."""
    parts = []
    prev = 0.0
    tare = 0.0
    for w in _load_profile(rng, n, 2_500, 5):
        if w == 0:
            tare = 40.0 if rng.random() < 0.3 else 0.0
        net = tare > 0
        shown = max(0.0, w - tare) if net else w
        parts.append(toledo.encode_frame(shown, tare, code=2, increment=5, net=net,
                                         motion=w != prev, unit="kg"))
        prev = w
    return _stream(parts, Counter(weight=len(parts)), bytes((toledo.STX,)), toledo.Decoder)


def mtsics_stream(n: int, rng: random.Random) -> Stream:
    """``SIR`` output of a platform scale: ``S S``/``S D`` lines, ``S I`` about 1 in 200."""
    parts = []
    want: Counter[str] = Counter()
    prev = 0.0
    for w in _load_profile(rng, n, 150, 0.02):
        if rng.random() < 0.005:
            parts.append(mtsics.encode_status("S", "I"))
            want["scale_status"] += 1
        else:
            parts.append(mtsics.encode_weight(w, "kg", stable=w == prev, decimals=2))
            want["weight"] += 1
        prev = w
    # no sync byte: every line ends in LF, the cheapest delimiter to scan for
    return _stream(parts, want, b"\n", mtsics.Decoder)


def digistar_stream(n: int, rng: random.Random) -> Stream:
    """A mixer wagon being loaded: an SG frame (SCOREM 11/12, checksum) for every weight, a
    SCOREM 1 display frame (motion while loading, locked-on now and then) every fourth."""
    parts: list[bytes] = []
    prev = 0.0
    profile = _load_profile(rng, n, 30_000, 10)
    for i, w in enumerate(profile):
        if len(parts) >= n:
            break
        parts.append(digistar.encode_serial_gross(int(w), unit="lb"))
        if i % 4 == 3 and len(parts) < n:
            parts.append(digistar.encode_display(w, motion=w != prev,
                                                 locked=w == prev and rng.random() < 0.1))
        prev = w
    return _stream(parts, Counter(weight=len(parts)), bytes((digistar.STX,)),
                   digistar.Decoder)


def modbus_stream(n: int, rng: random.Random) -> Stream:
    """FC 3 responses from indicator 1 (weight int32, status word, 2..10 registers); an
    illegal-data-address exception about 1 in 250."""
    parts = []
    want: Counter[str] = Counter()
    for w in _load_profile(rng, n, 30_000, 10):
        if rng.random() < 0.004:
            parts.append(modbus.encode_exception(1, 3, 2))
            want["modbus_exception"] += 1
            continue
        regs = list(modbus.value_to_registers(int(w))) + [0x8000 | (w > 0) << 12]
        regs += [rng.randint(0, 0xFFFF) for _ in range(rng.randint(0, 7))]
        parts.append(modbus.encode_read_response(1, regs))
        want["modbus_read_response"] += 1
    # no sync byte: the baseline scans for device id + function code
    return _stream(parts, want, b"\x01\x03", modbus.Decoder)


STREAMS: dict[str, Callable[[int, random.Random], Stream]] = {
    "r2000": r2000_stream,
    "thingmagic": thingmagic_stream,
    "chafon": chafon_stream,
    "nmea": nmea_stream,
    "xk3190": xk3190_stream,
    "toledo": toledo_stream,
    "mtsics": mtsics_stream,
    "digistar": digistar_stream,
    "modbus": modbus_stream,
}


def _time_decode(stream: Stream) -> tuple[float, int]:
    dec = stream.decoder()
    data = stream.data
    t0 = time.perf_counter()
    got = 0
    for i in range(0, len(data), CHUNK):
        got += len(dec.feed(data[i:i + CHUNK]))
    return time.perf_counter() - t0, got


def _check_decode(name: str, stream: Stream) -> None:
    """Untimed pass: every expected message, of the expected types, and no errors."""
    dec = stream.decoder()
    data = stream.data
    items = []
    for i in range(0, len(data), CHUNK):
        items += dec.feed(data[i:i + CHUNK])
    items += dec.flush()
    errors = [it for it in items if it.type == "error"]
    if errors:
        raise AssertionError(f"{name}: {len(errors)} errors, first {errors[0]!r}")
    got = Counter(it.type for it in items)
    if len(items) != stream.frames or got != Counter(stream.expected):
        raise AssertionError(f"{name}: decoded {len(items)} items {dict(got)}, expected "
                             f"{stream.frames} {stream.expected}")


def _time_find(stream: Stream) -> float:
    data = stream.data
    sync = stream.sync
    t0 = time.perf_counter()
    hits = 0
    for i in range(0, len(data), CHUNK):
        chunk = data[i:i + CHUNK]
        pos = chunk.find(sync)
        while pos >= 0:
            hits += 1
            pos = chunk.find(sync, pos + 1)
    return time.perf_counter() - t0


def run(frames: int = 100_000, repeats: int = 3) -> list[dict[str, object]]:
    results = []
    for name, build in STREAMS.items():
        stream = build(frames, random.Random(42))
        _check_decode(name, stream)
        best_dec = min(_time_decode(stream)[0] for _ in range(repeats))
        _, got = _time_decode(stream)
        if got != stream.frames:
            raise AssertionError(f"{name}: decoded {got} items, expected {stream.frames}")
        best_find = min(_time_find(stream) for _ in range(repeats))
        result: dict[str, object] = {
            "bench": f"codec.{name}",
            "frames": stream.frames,
            "bytes": len(stream.data),
            "frames_per_s": stream.frames / best_dec,
            "mb_per_s": len(stream.data) / best_dec / 1e6,
            "baseline": f"bytes.find({stream.sync!r}) over the same chunks",
            "baseline_frames_per_s": stream.frames / best_find,
            "ratio_vs_baseline": best_find / best_dec,
            "wire_frames": stream.wire_frames,
            "messages": stream.expected,
            "sync": stream.sync.hex().upper(),
        }
        if name == "r2000":
            tag_s = stream.expected["tag_read"] / best_dec
            result["tag_frames_per_s"] = tag_s
            result["goal_tag_frames_per_s"] = R2000_GOAL_FRAMES_PER_S
            result["goal_met"] = tag_s >= R2000_GOAL_FRAMES_PER_S
        results.append(result)
    return results
