"""Readings to InfluxDB: line protocol (pure), a writer for the 1.x HTTP API (httpx) and one
for 2.x/3.x (influxdb-client).

One point per reading: measurement = reading kind; tags ``site``, ``device`` and, for
``tag_sighting`` the ``epc``, for ``feed_event`` the ``pen``; fields = the reading's scalar data
(numbers, booleans, strings; ``None``, lists and maps are left out); timestamp = ``ts_ms`` with
``precision=ms``. A reading without fields (``device_online``) gets ``present=true``.

A field never changes type between points (InfluxDB rejects that within a shard): a field
the uplink schema types as integer-only is written as an integer (``12i``), every other number
as a float, so ``weight_kg`` is ``500.0`` whether the scale sent ``500`` or ``500.0``.

Writers translate every failure into :class:`InfluxError` (a :class:`CloudError`) with
``retryable`` telling a transient failure (unreachable, 5xx) from a rejected write (4xx).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Protocol, Self

import httpx

from cloud.errors import CloudError
from protocols.uplink import READING_KINDS, Reading

__all__ = [
    "MAX_LINES_PER_REQUEST",
    "InfluxError",
    "InfluxV1Writer",
    "InfluxV2Writer",
    "InfluxWriter",
    "open_writer",
    "to_line_protocol",
]

MAX_LINES_PER_REQUEST: Final = 5_000  # InfluxData's recommended batch size
_INT64_MAX: Final = 2**63 - 1
_RESERVED_KEYS: Final = frozenset({"time"})  # InfluxDB refuses a field or tag named "time"
# data fields promoted to tags, per kind (kept out of the fields)
_TAG_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "tag_sighting": ("epc",),
    "feed_event": ("pen",),
}
# fields the uplink schema accepts only as integers: written as InfluxDB integers
_INT_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    kind: frozenset(name for name, types in fields.items()
                    if int in types and float not in types and bool not in types)
    for kind, (_lane, fields) in READING_KINDS.items()
}

_MEASUREMENT_ESCAPES: Final = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\ ", "\r": r"\ "})
_KEY_ESCAPES: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\ ",
                                     "\r": r"\ "})
_STRING_ESCAPES: Final = str.maketrans({"\\": "\\\\", '"': '\\"'})


class InfluxError(CloudError):
    """A write to InfluxDB failed. ``status`` is the HTTP status when the server answered;
    ``retryable`` is true when the same write may succeed later (unreachable, timeout, 5xx)."""

    def __init__(self, message: str, *, status: int | None = None,
                 retryable: bool) -> None:
        super().__init__(message, reason="influx_unavailable" if retryable else "influx_rejected")
        self.status = status
        self.retryable = retryable


def _escape_key(s: str) -> str:
    """Tag keys, tag values and field keys. InfluxDB 1.x does not unescape backslashes there,
    so they stay as they are, except a trailing one, which would escape the separator."""
    out = s.translate(_KEY_ESCAPES)
    trailing = len(out) - len(out.rstrip("\\"))
    return out + "\\" if trailing % 2 else out


def _field_value(kind: str, name: str, value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if name in _INT_FIELDS.get(kind, frozenset()):
            return f"{value}i" if -_INT64_MAX - 1 <= value <= _INT64_MAX else None
        try:
            value = float(value)
        except OverflowError:
            return None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None  # no NaN/inf in line protocol
    if isinstance(value, str):
        return f'"{value.translate(_STRING_ESCAPES)}"'
    return None  # None, lists, maps, bytes: not a field


def _line(site_code: str, r: Reading) -> str:
    tag_fields = _TAG_FIELDS.get(r.kind, ())
    tags = {"site": site_code, "device": r.device_id}
    for name in tag_fields:
        v = r.data.get(name)
        if v is not None and not isinstance(v, bool) and isinstance(v, str | int | float):
            tags[name] = str(v)
    tag_part = "".join(f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(tags.items())
                       if v and k not in _RESERVED_KEYS)
    fields = []
    for name, value in r.data.items():
        if not name or name in tag_fields or name in _RESERVED_KEYS:
            continue
        rendered = _field_value(r.kind, name, value)
        if rendered is not None:
            fields.append(f"{_escape_key(name)}={rendered}")
    if not fields:
        fields.append("present=true")
    return f"{r.kind.translate(_MEASUREMENT_ESCAPES)}{tag_part} {','.join(fields)} {r.ts_ms}"


def to_line_protocol(site_code: str, readings: Sequence[Reading]) -> list[str]:
    """One line-protocol line per reading, timestamps in milliseconds (write with
    ``precision=ms``)."""
    return [_line(site_code, r) for r in readings]


class InfluxWriter(Protocol):
    """What ingest needs from an InfluxDB writer."""

    async def write(self, lines: Sequence[str]) -> None: ...

    async def aclose(self) -> None: ...


def _chunks(lines: Sequence[str], size: int) -> list[Sequence[str]]:
    return [lines[i:i + size] for i in range(0, len(lines), size)]


def _influxql_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxV1Writer:
    """Line protocol over InfluxDB 1.x's HTTP API (``/write``, ``/query``). Pass ``client``
    to share an ``httpx.AsyncClient`` (it is then not closed here); ``auth`` is HTTP basic
    (username, password) for servers with auth enabled."""

    def __init__(self, url: str, db: str, *, client: httpx.AsyncClient | None = None,
                 auth: tuple[str, str] | None = None, timeout_s: float = 10.0,
                 max_lines_per_request: int = MAX_LINES_PER_REQUEST) -> None:
        if max_lines_per_request < 1:
            raise ValueError("max_lines_per_request must be >= 1")
        self.url = url.rstrip("/")
        self.db = db
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout_s)
        self._auth = httpx.BasicAuth(*auth) if auth else None
        self._max_lines = max_lines_per_request

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _post(self, path: str, *, params: dict[str, str],
                    content: bytes | None = None) -> httpx.Response:
        try:
            return await self._client.post(f"{self.url}{path}", params=params,
                                           content=content, auth=self._auth or
                                           httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise InfluxError(f"InfluxDB at {self.url} unreachable: {exc!r}",
                              retryable=True) from exc

    async def ensure_db(self) -> None:
        """``CREATE DATABASE`` (a no-op when it exists)."""
        resp = await self._post("/query",
                                params={"q": f"CREATE DATABASE {_influxql_ident(self.db)}"})
        if resp.status_code != 200:
            raise _status_error("CREATE DATABASE", resp.status_code, resp.text)
        try:
            results = resp.json().get("results", [])
        except ValueError as exc:
            raise InfluxError(f"CREATE DATABASE: not JSON: {resp.text[:200]!r}",
                              status=resp.status_code, retryable=False) from exc
        errors = [r["error"] for r in results if isinstance(r, dict) and r.get("error")]
        if errors:
            raise InfluxError(f"CREATE DATABASE {self.db!r}: {errors[0]}",
                              status=resp.status_code, retryable=False)

    async def write(self, lines: Sequence[str]) -> None:
        """Write ``lines`` (ms precision) in requests of at most ``max_lines_per_request``;
        a missing database is created once and the write retried."""
        params = {"db": self.db, "precision": "ms"}
        for chunk in _chunks(lines, self._max_lines):
            body = "\n".join(chunk).encode("utf-8")
            resp = await self._post("/write", params=params, content=body)
            if resp.status_code == 404 and "database not found" in resp.text:
                await self.ensure_db()
                resp = await self._post("/write", params=params, content=body)
            if resp.status_code != 204:
                raise _status_error("write", resp.status_code, resp.text)


def _status_error(what: str, status: int, body: str) -> InfluxError:
    return InfluxError(f"InfluxDB {what} answered {status}: {body[:500]}", status=status,
                       retryable=status >= 500 or status == 429)


class InfluxV2Writer:
    """Line protocol through ``influxdb-client`` (InfluxDB 2.x, and 3.x's v2-compatible
    ``/api/v2/write``): ``POST /api/v2/write?org=&bucket=&precision=ms`` with
    ``Authorization: Token <token>``. The client is synchronous; each write runs in a worker
    thread so the event loop never blocks."""

    def __init__(self, url: str, token: str, org: str, bucket: str, *,
                 timeout_s: float = 10.0,
                 max_lines_per_request: int = MAX_LINES_PER_REQUEST) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        if max_lines_per_request < 1:
            raise ValueError("max_lines_per_request must be >= 1")
        self.url = url.rstrip("/")
        self.org = org
        self.bucket = bucket
        self._max_lines = max_lines_per_request
        self._client = InfluxDBClient(url=self.url, token=token, org=org,
                                      timeout=int(timeout_s * 1000))
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def _write_sync(self, lines: Sequence[str]) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        try:
            self._write_api.write(bucket=self.bucket, org=self.org, record=list(lines),
                                  # the client's stub types the "ms" constant as str
                                  write_precision="ms",  # type: ignore[arg-type]
                                  )
        except ApiException as exc:
            status = int(exc.status) if exc.status else None
            raise InfluxError(f"InfluxDB write answered {status}: {str(exc.body)[:500]}",
                              status=status,
                              retryable=status is None or status >= 500 or status == 429,
                              ) from exc
        except (Urllib3Error, OSError) as exc:
            raise InfluxError(f"InfluxDB at {self.url} unreachable: {exc!r}",
                              retryable=True) from exc

    async def write(self, lines: Sequence[str]) -> None:
        for chunk in _chunks(lines, self._max_lines):
            await asyncio.to_thread(self._write_sync, chunk)


def open_writer(*, v1_url: str | None = None, v1_db: str = "pledgewatch",
                url: str | None = None, token: str | None = None, org: str | None = None,
                bucket: str = "pledgewatch") -> InfluxWriter | None:
    """The writer the settings ask for (``influx_v1_url`` / ``influx_url``...), or ``None``
    when InfluxDB is not configured. The caller owns it (``await writer.aclose()``) and, for
    1.x, calls ``ensure_db()`` once at start-up."""
    if v1_url and url:
        raise ValueError("configure InfluxDB 1.x (influx_v1_url) or 2.x/3.x (influx_url), "
                         "not both")
    if v1_url:
        return InfluxV1Writer(v1_url, v1_db)
    if url:
        if not token or not org:
            raise ValueError("InfluxDB 2.x/3.x (influx_url) needs influx_token and influx_org")
        return InfluxV2Writer(url, token, org, bucket)
    return None
