"""Names and places of a simulated site: pen and device ids, the site polygon, local metre
coordinates to latitude/longitude, and the point-in-polygon test.

The scenario loader uses the same naming functions as the world, so an incident that names a
device or pen is checked against the ids the world will really give them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

__all__ = [
    "METRES_PER_DEG_LAT",
    "RANCH_OUTLINE_M",
    "WAREHOUSE_OUTLINE_M",
    "feeder_id",
    "forklift_id",
    "gate_reader_id",
    "gateway_id",
    "local_to_latlon",
    "lot_code",
    "pen_ids",
    "point_in_polygon",
    "polygon",
    "ranch_readers",
    "reader_id",
    "scale_id",
    "scale_reader_id",
    "staff_id",
    "truck_id",
    "truck_plate",
    "truck_reader_id",
    "truck_tracker_id",
    "weighbridge_id",
]

# one degree of latitude in metres (mean; good to ~0.5 % anywhere, plenty for a simulated yard)
METRES_PER_DEG_LAT: Final = 111_320.0

# site outlines in local metres (x east, y north) around the site's lat/lon; the gate is at
# (0, south edge). A pentagon rather than a rectangle so a polygon test that only checks a
# bounding box is caught.
RANCH_OUTLINE_M: Final = ((-800.0, -500.0), (800.0, -500.0), (850.0, 300.0), (0.0, 600.0),
                          (-850.0, 300.0))
WAREHOUSE_OUTLINE_M: Final = ((-150.0, -100.0), (150.0, -100.0), (160.0, 60.0), (0.0, 120.0),
                              (-160.0, 60.0))


# -- ids -----------------------------------------------------------------------------------
def gateway_id(site: str) -> str:
    return f"gw-{site}"


def pen_ids(pens: int) -> list[str]:
    return [f"P{i + 1}" for i in range(pens)]


def reader_id(site: str, n: int) -> str:
    """The ``n``-th (from 0) pen reader of a ranch."""
    return f"{site}-rdr-{n + 1:02d}"


def gate_reader_id(site: str) -> str:
    return f"{site}-rdr-gate"


def scale_id(site: str) -> str:
    return f"{site}-scale"


def scale_reader_id(site: str) -> str:
    return f"{site}-rdr-scale"


def feeder_id(site: str) -> str:
    return f"{site}-tmr"


def weighbridge_id(site: str) -> str:
    return f"{site}-bridge"


def truck_reader_id(site: str) -> str:
    return f"{site}-rdr-bridge"


def truck_plate(site: str, n: int) -> str:
    return f"{site}-TRK{n + 1:02d}"


def truck_id(site_index: int, n: int) -> str:
    """A known truck's id is the EPC of its windscreen tag as the bridge reader reads it
    (24 hex digits, upper case): header 0x30 (SGTIN-96 style), then site and truck number."""
    return f"30{site_index + 1:06X}{0:08X}{n + 1:08X}"


def truck_tracker_id(site: str, n: int) -> str:
    return f"{site}-gps-trk{n + 1:02d}"


def forklift_id(site: str, n: int) -> str:
    return f"{site}-gps-fork{n + 1:02d}"


def staff_id(site: str, n: int) -> str:
    return f"{site}-gps-staff{n + 1:02d}"


# -- geometry --------------------------------------------------------------------------------
def local_to_latlon(lat0: float, lon0: float, x_m: float, y_m: float) -> tuple[float, float]:
    """Equirectangular projection around (lat0, lon0): fine over a few kilometres."""
    lat = lat0 + y_m / METRES_PER_DEG_LAT
    lon = lon0 + x_m / (METRES_PER_DEG_LAT * math.cos(math.radians(lat0)))
    return lat, lon


def polygon(lat0: float, lon0: float,
            outline_m: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """The site's geofence as (lat, lon) vertices, open ring (first vertex not repeated)."""
    return tuple((round(lat, 7), round(lon, 7))
                 for lat, lon in (local_to_latlon(lat0, lon0, x, y) for x, y in outline_m))


def point_in_polygon(lat: float, lon: float,
                     ring: Sequence[tuple[float, float]]) -> bool:
    """Even-odd ray casting; ``ring`` is (lat, lon) vertices, open or closed."""
    inside = False
    n = len(ring)
    j = n - 1
    for i in range(n):
        yi, xi = ring[i]
        yj, xj = ring[j]
        if (yi > lat) != (yj > lat):
            x_cross = xi + (lat - yi) * (xj - xi) / (yj - yi)
            if lon < x_cross:
                inside = not inside
        j = i
    return inside


def lot_code(site: str, n: int) -> str:
    """The ``n``-th (from 0) pledged lot of a warehouse."""
    return f"{site}-LOT{n + 1:03d}"


def ranch_readers(site: str, readers: int, pens: int) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(device id, place, pens watched)`` of a ranch's pen readers.

    With at least two readers per pen every pen gets its own bunk reader (the first ``pens``
    ids) and water reader (the next ``pens``); extra readers become second water points, pen
    by pen. With fewer, half the readers (at least one) watch bunks and the rest water points,
    each shared by pens in turn; a ranch with one reader watches the bunks only.
    """
    pen_names = pen_ids(pens)
    out: list[tuple[str, str, list[str]]] = []
    if readers >= 2 * pens:
        out += [(reader_id(site, p), "bunk", [pen_names[p]]) for p in range(pens)]
        out += [(reader_id(site, pens + p), "water", [pen_names[p]]) for p in range(pens)]
        out += [(reader_id(site, n), "water", [pen_names[(n - 2 * pens) % pens]])
                for n in range(2 * pens, readers)]
    else:
        n_bunk = max(1, readers // 2)
        n_water = readers - n_bunk
        out += [(reader_id(site, n), "bunk", []) for n in range(n_bunk)]
        out += [(reader_id(site, n_bunk + n), "water", []) for n in range(n_water)]
        for p in range(pens):
            out[p % n_bunk][2].append(pen_names[p])
            if n_water:
                out[n_bunk + p % n_water][2].append(pen_names[p])
    return [(d, place, tuple(ps)) for d, place, ps in out]
