"""Readings to InfluxDB: the line protocol (pure), the 1.x writer against a real ``influxd``,
and the request the 2.x/3.x writer (influxdb-client) sends, captured without a server."""

from __future__ import annotations

import asyncio
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.errors import CloudError
from cloud.influx import (
    InfluxError,
    InfluxV1Writer,
    InfluxV2Writer,
    open_writer,
    to_line_protocol,
)
from protocols.uplink import Reading
from tests.services import free_port, influxd

T0 = 1_700_000_000_000


def r(kind: str, data: dict[str, Any], *, device: str = "dev1", ts: int = T0) -> Reading:
    return Reading(kind, device, ts, ts + 5, data)


# --- line protocol -----------------------------------------------------------------------------

LINE_CASES = [
    pytest.param(r("position", {"lat": -23.5, "lon": -46}),
                 "position,device=dev1,site=ranch1 lat=-23.5,lon=-46.0 1700000000000",
                 id="float-fields-int-written-as-float"),
    pytest.param(r("tag_sighting", {"epc": "E200 1,2=3", "antenna": 2, "count": 7,
                                    "first_ms": T0 - 10, "last_ms": T0, "rssi_max_dbm": None}),
                 r"tag_sighting,device=dev1,epc=E200\ 1\,2\=3,site=ranch1 antenna=2i,count=7i,"
                 "first_ms=1699999999990i,last_ms=1700000000000i 1700000000000",
                 id="sighting-epc-tag-escaped-ints-none-skipped"),
    pytest.param(r("feed_event", {"event": "drop", "kg": 12.5, "pen": "P 7"}),
                 r'feed_event,device=dev1,pen=P\ 7,site=ranch1 event="drop",kg=12.5 '
                 "1700000000000", id="feed-pen-tag"),
    pytest.param(r("feed_event", {"event": "drop", "kg": 3, "pen": None}),
                 'feed_event,device=dev1,site=ranch1 event="drop",kg=3.0 1700000000000',
                 id="feed-no-pen-no-tag"),
    pytest.param(r("weight", {"weight_kg": None, "stable": True}),
                 "weight,device=dev1,site=ranch1 stable=true 1700000000000", id="bool"),
    pytest.param(r("weight", {"weight_kg": None, "stable": None}),
                 "weight,device=dev1,site=ranch1 present=true 1700000000000",
                 id="all-none-present"),
    pytest.param(r("device_online", {}),
                 "device_online,device=dev1,site=ranch1 present=true 1700000000000",
                 id="no-fields-present"),
    pytest.param(r("data_integrity", {"dropped": 3, "first_ms": 1, "last_ms": 2,
                                      "reason": 'say "hi" \\ bye, a=b c'}),
                 'data_integrity,device=dev1,site=ranch1 dropped=3i,first_ms=1i,last_ms=2i,'
                 r'reason="say \"hi\" \\ bye, a=b c" 1700000000000',
                 id="string-escapes-quote-backslash-only"),
    pytest.param(r("alarm", {"alarm": "x", "odd key,=": 1.5, "nan": float("nan"),
                             "inf": float("inf"), "list": [1, 2], "map": {"a": 1},
                             "time": 5, "": 1}, device="gate 1,a=b"),
                 r'alarm,device=gate\ 1\,a\=b,site=ranch1 alarm="x",odd\ key\,\==1.5 '
                 "1700000000000", id="keys-escaped-unsupported-values-skipped"),
    pytest.param(r("device_errors", {"errors": 2**70}),
                 "device_errors,device=dev1,site=ranch1 present=true 1700000000000",
                 id="int-out-of-int64-skipped"),
    pytest.param(r("tamper", {"detail": "open"}, device="dev\\"),
                 'tamper,device=dev\\\\,site=ranch1 detail="open" 1700000000000',
                 id="trailing-backslash-in-tag-does-not-escape-separator"),
]


@pytest.mark.parametrize(("reading", "line"), LINE_CASES)
def test_line_protocol(reading: Reading, line: str) -> None:
    assert to_line_protocol("ranch1", [reading]) == [line]


def test_site_code_is_escaped_and_order_is_kept() -> None:
    lines = to_line_protocol("my site", [r("position", {"lat": 1.0, "lon": 2.0}, ts=T0 + i)
                                         for i in range(3)])
    assert [ln.rsplit(" ", 2)[0] for ln in lines] == [r"position,device=dev1,site=my\ site"] * 3
    assert [int(ln.rsplit(" ", 1)[1]) for ln in lines] == [T0, T0 + 1, T0 + 2]


def test_no_readings_no_lines() -> None:
    assert to_line_protocol("s", []) == []


# --- InfluxDB 1.x, real influxd ----------------------------------------------------------------

@pytest.fixture
def influx_url(tmp_path: Path) -> Iterator[str]:
    with influxd(tmp_path) as url:
        yield url


def _query(url: str, db: str, q: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{url}/query", params={"db": db, "q": q, "epoch": "ms"})
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"][0]
    assert "error" not in result, result
    series: list[dict[str, Any]] = result.get("series", [])
    return [dict(zip(s["columns"], row, strict=True)) | {"_m": s["name"]} for s in series
            for row in s["values"]]


MIXED = [
    r("position", {"lat": -23.55, "lon": -46}, device="gps 1,x=y", ts=T0),
    r("position", {"lat": -23.56, "lon": -46.01}, device="gps 1,x=y", ts=T0 + 1000),
    r("position", {"lat": 10.0, "lon": 20.0}, device="gps2", ts=T0 + 2000),
    r("weight", {"weight_kg": 500, "stable": True}, device="scale", ts=T0),
    r("weight", {"weight_kg": 500.5, "stable": False}, device="scale", ts=T0 + 1),
    r("tag_sighting", {"epc": "E2 00=1", "antenna": 1, "count": 3, "first_ms": T0 - 5,
                       "last_ms": T0, "rssi_max_dbm": -61.5}, device="rfid", ts=T0),
    r("feed_event", {"event": "drop", "kg": 12, "pen": "P 7"}, device="feeder", ts=T0),
    r("device_online", {}, device="rfid", ts=T0 + 3),
    r("data_integrity", {"dropped": 4, "first_ms": 1, "last_ms": 2,
                         "reason": 'said "no" \\ twice'}, device="gw", ts=T0 + 4),
]


def test_v1_writes_readings_that_query_back(influx_url: str) -> None:
    async def go() -> None:
        async with InfluxV1Writer(influx_url, "pw test", max_lines_per_request=4) as w:
            await w.ensure_db()
            await w.ensure_db()  # idempotent
            await w.write(to_line_protocol("ranch 1", MIXED))
            await w.write([])  # nothing to send is fine

    asyncio.run(go())

    pos = _query(influx_url, "pw test",
                 "SELECT lat, lon, device, site FROM position ORDER BY time")
    assert [(p["time"], p["lat"], p["lon"], p["device"], p["site"]) for p in pos] == [
        (T0, -23.55, -46.0, "gps 1,x=y", "ranch 1"),
        (T0 + 1000, -23.56, -46.01, "gps 1,x=y", "ranch 1"),
        (T0 + 2000, 10.0, 20.0, "gps2", "ranch 1"),
    ]
    weights = _query(influx_url, "pw test", "SELECT weight_kg, stable FROM weight")
    assert [(w["weight_kg"], w["stable"]) for w in weights] == [(500.0, True), (500.5, False)]
    sight = _query(influx_url, "pw test", "SELECT * FROM tag_sighting")
    assert len(sight) == 1
    assert (sight[0]["epc"], sight[0]["antenna"], sight[0]["count"],
            sight[0]["rssi_max_dbm"]) == ("E2 00=1", 1, 3, -61.5)
    feed = _query(influx_url, "pw test", "SELECT kg, event, pen FROM feed_event")
    assert [(f["kg"], f["event"], f["pen"]) for f in feed] == [(12.0, "drop", "P 7")]
    online = _query(influx_url, "pw test", "SELECT present FROM device_online")
    assert [(o["time"], o["present"]) for o in online] == [(T0 + 3, True)]
    integrity = _query(influx_url, "pw test", "SELECT reason, dropped FROM data_integrity")
    assert [(i["reason"], i["dropped"]) for i in integrity] == [('said "no" \\ twice', 4)]


def test_v1_rewriting_the_same_readings_is_idempotent(influx_url: str) -> None:
    async def go() -> None:
        async with InfluxV1Writer(influx_url, "pw") as w:
            await w.ensure_db()
            for _ in range(2):
                await w.write(to_line_protocol("s1", MIXED[:3]))

    asyncio.run(go())
    assert len(_query(influx_url, "pw", "SELECT lat FROM position")) == 3


def test_v1_creates_a_missing_database_on_write(influx_url: str) -> None:
    async def go() -> None:
        async with InfluxV1Writer(influx_url, "fresh") as w:
            await w.write(to_line_protocol("s1", MIXED[:1]))

    asyncio.run(go())
    assert [p["lat"] for p in _query(influx_url, "fresh", "SELECT lat FROM position")] == [
        -23.55]


def test_v1_bad_line_is_a_non_retryable_influx_error(influx_url: str) -> None:
    async def go() -> None:
        async with InfluxV1Writer(influx_url, "pw") as w:
            await w.ensure_db()
            await w.write(["position,device=d lat= 1"])

    with pytest.raises(InfluxError) as info:
        asyncio.run(go())
    assert isinstance(info.value, CloudError)
    assert (info.value.status, info.value.retryable, info.value.reason) == (
        400, False, "influx_rejected")


def test_v1_unreachable_server_is_retryable() -> None:
    async def go() -> None:
        async with InfluxV1Writer(f"http://127.0.0.1:{free_port()}", "pw") as w:
            await w.write(["m f=1 1"])

    with pytest.raises(InfluxError) as info:
        asyncio.run(go())
    assert (info.value.status, info.value.retryable, info.value.reason) == (
        None, True, "influx_unavailable")


def test_v1_server_error_is_retryable_and_shared_client_stays_open() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, text="overloaded")

    async def go() -> bool:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            async with InfluxV1Writer("http://influx:8086/", "d b", client=client) as w:
                with pytest.raises(InfluxError) as info:
                    await w.write(["m f=1 1", "m f=2 2"])
                assert (info.value.status, info.value.retryable) == (503, True)
            return client.is_closed

    assert asyncio.run(go()) is False
    assert len(seen) == 1
    assert seen[0].method == "POST"
    assert seen[0].url.path == "/write"
    assert dict(seen[0].url.params) == {"db": "d b", "precision": "ms"}
    assert seen[0].content == b"m f=1 1\nm f=2 2"


# --- InfluxDB 2.x/3.x via influxdb-client: the request it sends ---------------------------------

@dataclass
class Captured:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class CaptureServer:
    """A loopback HTTP server that records requests and answers ``status``."""

    status: int = 204
    answer: bytes = b""
    requests: list[Captured] = field(default_factory=list)


@pytest.fixture
def capture() -> Iterator[tuple[str, CaptureServer]]:
    state = CaptureServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            url = urllib.parse.urlsplit(self.path)
            state.requests.append(Captured(self.command, url.path,
                                           urllib.parse.parse_qs(url.query),
                                           {k.lower(): v for k, v in self.headers.items()},
                                           body))
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.answer)))
            self.end_headers()
            self.wfile.write(state.answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = False
    thread = threading.Thread(target=server.serve_forever, name="capture-http")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_v2_request_format(capture: tuple[str, CaptureServer]) -> None:
    url, state = capture
    lines = to_line_protocol("ranch1", MIXED)

    async def go() -> None:
        async with InfluxV2Writer(url, "s3cret-token", "my org", "pw bucket",
                                  max_lines_per_request=5) as w:
            await w.write(lines)

    asyncio.run(go())
    assert len(state.requests) == 2  # 9 lines in requests of at most 5
    for req, chunk in zip(state.requests, (lines[:5], lines[5:]), strict=True):
        assert req.method == "POST"
        assert req.path == "/api/v2/write"
        assert req.query == {"org": ["my org"], "bucket": ["pw bucket"], "precision": ["ms"]}
        assert req.headers["authorization"] == "Token s3cret-token"
        assert req.headers["content-type"].startswith("text/plain")
        assert req.body.decode("utf-8").split("\n") == chunk


def test_v2_rejected_write_is_a_non_retryable_influx_error(
        capture: tuple[str, CaptureServer]) -> None:
    url, state = capture
    state.status, state.answer = 401, b'{"code":"unauthorized","message":"bad token"}'

    async def go() -> None:
        async with InfluxV2Writer(url, "wrong", "o", "b") as w:
            await w.write(["m f=1 1"])

    with pytest.raises(InfluxError) as info:
        asyncio.run(go())
    assert (info.value.status, info.value.retryable) == (401, False)
    assert "bad token" in str(info.value)


def test_v2_unreachable_server_is_retryable() -> None:
    async def go() -> None:
        async with InfluxV2Writer(f"http://127.0.0.1:{free_port()}", "t", "o", "b") as w:
            await w.write(["m f=1 1"])

    with pytest.raises(InfluxError) as info:
        asyncio.run(go())
    assert info.value.retryable is True


def test_open_writer_follows_the_settings() -> None:
    async def close(w: Any) -> None:
        await w.aclose()

    assert open_writer() is None
    v1 = open_writer(v1_url="http://h:8086", v1_db="x")
    assert isinstance(v1, InfluxV1Writer) and v1.db == "x"
    v2 = open_writer(url="http://h:8086", token="t", org="o", bucket="b")
    assert isinstance(v2, InfluxV2Writer) and (v2.org, v2.bucket) == ("o", "b")
    asyncio.run(close(v1))
    asyncio.run(close(v2))
    with pytest.raises(ValueError, match="needs influx_token"):
        open_writer(url="http://h:8086")
    with pytest.raises(ValueError, match="not both"):
        open_writer(v1_url="http://a", url="http://b", token="t", org="o")
