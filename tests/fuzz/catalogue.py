"""What the fuzz tests and ``python -m bench.fuzz`` throw at the product, in one place:

* :data:`CODECS`: every stream decoder in ``protocols/``, in every role it has, with one valid
  frame for it (built with the codec's own encoders); a decoder added to ``protocols/`` must
  be added here (tests/fuzz/test_codecs.py checks); :func:`random_stream` makes garbage for
  one of them;
* :func:`random_msgpack`: values for the ingest decoder;
* :data:`VALID` / :data:`INVALID` cells and :func:`random_csv`: files for the CSV importers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocols import (
    chafon,
    digistar,
    llrp,
    modbus,
    mtsics,
    nmea,
    r2000,
    thingmagic,
    toledo,
    xk3190,
)
from protocols._base import StreamDecoder

EPC = bytes.fromhex("E28011700000020A1B2C3D4E")


@dataclass(frozen=True)
class Codec:
    name: str  # module.role
    decoder: Callable[[], StreamDecoder]
    frame: bytes  # one valid frame: decodes to at least one message and no error


CODECS: tuple[Codec, ...] = (
    Codec("r2000.host", r2000.Decoder, r2000.encode_tag(1, epc=EPC, antenna=2, rssi_dbm=-55)),
    Codec("r2000.device", lambda: r2000.Decoder("device"), r2000.encode_real_time_inventory(1)),
    Codec("thingmagic.host", thingmagic.Decoder,
          thingmagic.encode_stream_tag(thingmagic.TagRecord(epc=EPC, antenna=1))),
    Codec("thingmagic.device", lambda: thingmagic.Decoder("device"),
          thingmagic.encode_get_version()),
    Codec("chafon.host", chafon.Decoder,
          chafon.encode_inventory_reply_288(0x00, [(EPC, 0x50)], antenna=1, status=0x01)),
    Codec("chafon.device", lambda: chafon.Decoder("device"), chafon.encode_inventory_288()),
    Codec("llrp.client", llrp.Decoder,
          llrp.encode_ro_access_report(7, [llrp.TagReport(epc=EPC, antenna=1,
                                                          peak_rssi_dbm=-50)])),
    Codec("llrp.reader", lambda: llrp.Decoder("reader"), llrp.encode_get_reader_capabilities(7)),
    Codec("nmea.host", nmea.Decoder,
          nmea.encode_gga(time_utc="12:00:00.00", lat=-19.48, lon=24.17, quality=1,
                          satellites=8, hdop=0.9, altitude_m=1000.0)),
    Codec("xk3190.host", xk3190.Decoder, xk3190.encode_a9(12340.0)),
    Codec("toledo.host", toledo.Decoder, toledo.encode_frame(12340.0)),
    Codec("mtsics.host", mtsics.Decoder, mtsics.encode_weight(1234.5)),
    Codec("mtsics.device", lambda: mtsics.Decoder("device"), mtsics.encode_weigh()),
    Codec("digistar.host", digistar.Decoder, digistar.encode_display(1234.0)),
    Codec("digistar.device", lambda: digistar.Decoder("device"), digistar.encode_dump_eid()),
    Codec("modbus.client", modbus.Decoder, modbus.encode_read_response(1, [100, 200, 300])),
    Codec("modbus.server", lambda: modbus.Decoder("server"), modbus.encode_read_request(1, 0, 3)),
)

MODULES = ("chafon", "digistar", "llrp", "modbus", "mtsics", "nmea", "r2000", "thingmagic",
           "toledo", "xk3190")


def random_stream(rng: random.Random, codec: Codec, size: int) -> bytes:
    """Garbage of several flavours: uniform bytes, bytes biased to this codec's frame bytes
    (so partial headers, sync bytes and plausible lengths turn up), and valid frames with
    bytes flipped, cut or inserted."""
    frame = codec.frame
    alphabet = bytes(sorted(set(frame))) + b"\x00\xff\r\n$!\x02\x03\x1b"
    out = bytearray()
    while len(out) < size:
        flavour = rng.randrange(4)
        n = rng.randint(1, 512)
        if flavour == 0:
            out += rng.randbytes(n)
        elif flavour == 1:
            out += bytes(rng.choice(alphabet) for _ in range(n))
        elif flavour == 2:
            out += frame
        else:
            f = bytearray(frame * rng.randint(1, 3))
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(f))
                op = rng.randrange(3)
                if op == 0:
                    f[i] ^= 1 << rng.randrange(8)
                elif op == 1:
                    del f[i:i + rng.randint(1, 4)]
                else:
                    f[i:i] = rng.randbytes(rng.randint(1, 4))
                if not f:
                    break
            out += f
    return bytes(out[:size])


def random_msgpack(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-able value, biased towards the shapes of a batch map (its keys,
    a dict with ``readings``) so the decoder gets past the first type check."""
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return rng.randint(-2**63, 2**64 - 1)
    if pick == 1:
        return rng.random() * 10 ** rng.randint(-5, 300)
    if pick == 2:
        return rng.randbytes(rng.randint(0, 40)).decode("latin-1")
    if pick == 3:
        return rng.randbytes(rng.randint(0, 40))
    if pick == 4:
        return rng.choice([None, True, False])
    if pick == 5:
        return rng.choice(["gw-1", "v", "readings", "k", "weight", "seq"])
    if pick == 6:
        return [random_msgpack(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if pick == 7:
        return {rng.choice(["v", "gw", "seq", "created_ms", "readings", "k", "d", "t", "r",
                            "x"]): random_msgpack(rng, depth + 1)
                for _ in range(rng.randint(0, 6))}
    return {"v": 1, "gw": "gw-1", "seq": 10**9, "created_ms": 1,
            "readings": [random_msgpack(rng, depth + 1) for _ in range(rng.randint(1, 4))]}


# per column: a valid cell (``{n}`` makes codes unique) and invalid ones, so files range from
# importable to hopeless and every check of the importers gets exercised
VALID: dict[str, str] = {
    "site": "S-{n}", "name": "Ranch {n}", "kind": "ranch", "lat": "-36.6", "lon": "-64.3",
    "loan": "L-{n}", "borrower": "B1", "borrower_name": "Borrower", "currency": "USD",
    "outstanding": "1000.00", "ltv_line": "0.7", "margin_call_line": "0.8",
    "liquidation_line": "0.9", "haircut": "0.1", "sites": "RANCH-1",
    "epc": "E28011700001{n:012X}", "iso11784": "", "breed": "Angus", "sex": "F",
    "birth_date": "2024-01-01", "entry_weight_kg": "250", "pen": "P1",
    "lot": "LOT-{n}", "sku": "SKU-1", "commodity": "SOY", "zone": "Z1", "quantity": "100",
    "unit": "kg",
}
# animals and lots name the seeded loan and site of the right kind
VALID_FOR = {"animals": {"loan": "L1", "site": "RANCH-1"},
             "lots": {"loan": "L2", "site": "WH-1"}}
INVALID: dict[str, list[str]] = {
    "site": ["RANCH-1", "RANCH-9", "", "bad code!", "x" * 80],
    "name": ["", "y" * 300],
    "kind": ["Ranch", "farm", ""],
    "lat": ["91", "nan", "1e400", "abc"],
    "lon": ["181", "inf", ""],
    "loan": ["L1", "L2", "LX", "", "L 1"],
    "borrower": ["B-new", "", "b!"],
    "borrower_name": ["", "z" * 300],
    "currency": ["usd", "EURO", ""],
    "outstanding": ["-1", "1e30", "12.345", "abc", ""],
    "ltv_line": ["1.5", "-0.1", ""],
    "margin_call_line": ["0.6", "2", ""],
    "liquidation_line": ["0.5", "x", ""],
    "haircut": ["1", "-1", "abc"],
    "sites": ["WH-1", "RANCH-1;WH-1", "NOPE", ";;"],
    "epc": ["E2801170000100000000000", "ZZ", "", "e2" * 40],
    "iso11784": ["982 000123456789", "1000000000000000", "abc"],
    "breed": ["w" * 100],
    "sex": ["m", "female", "x"],
    "birth_date": ["2099-01-01", "01/02/2024", "2024-02-30"],
    "entry_weight_kg": ["-1", "5000", "nan"],
    "pen": ["p" * 50],
    "lot": ["", "lot 1"],
    "sku": ["", "s" * 100],
    "commodity": ["soy", ""],
    "zone": ["z" * 40],
    "quantity": ["0", "-5", "1.2345", "1e20", ""],
    "unit": ["ton", ""],
}


def random_csv(rng: random.Random, kind: str, columns: dict[str, tuple[tuple[str, ...],
                                                                      tuple[str, ...]]]) -> bytes:
    """A CSV file for importer ``kind`` (``columns`` = cloud.admin.csv_import.COLUMNS): a
    header of its columns (now and then one missing or one unknown), rows of valid cells
    with a file-wide share of invalid ones, sometimes a short row, a BOM or CRLF; or, one
    time in eight, plain random bytes after the header."""
    required, optional = columns[kind]
    cols = list(required) + rng.sample(optional, rng.randint(0, len(optional)))
    if rng.random() < 0.05:
        cols.remove(rng.choice(cols))
    if rng.random() < 0.05:
        cols.append(rng.choice(["colour", "", "LOAN"]))
    rng.shuffle(cols)
    lines = [",".join(cols)]
    if rng.random() < 0.125:
        return ("\n".join(lines) + "\n").encode() + rng.randbytes(rng.randint(0, 2000))
    garbage = rng.choice([0.0, 0.0, 0.05, 0.3])
    base = rng.randrange(10**9)
    for i in range(rng.randint(0, 40)):
        row = []
        for col in cols:
            name = col.lower()
            if rng.random() < garbage:
                cell = rng.choice(INVALID.get(name, [""]) + [
                    rng.randbytes(rng.randint(0, 8)).decode("latin-1")])
            else:
                cell = VALID_FOR.get(kind, {}).get(name, VALID.get(name, "")).format(
                    n=base + i)
            row.append('"' + cell.replace('"', '""') + '"' if any(
                ch in cell for ch in ',"\r\n') else cell)
        if rng.random() < 0.08:
            row = row[:-1] or ["x", "y"]
        lines.append(",".join(row))
    text = ("\r\n" if rng.random() < 0.3 else "\n").join(lines) + "\n"
    return (("\ufeff" if rng.random() < 0.3 else "") + text).encode("utf-8")
