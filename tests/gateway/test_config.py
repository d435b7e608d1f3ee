"""Site config validation: every problem is one line naming the file, the key and the
problem, and the gateway does not start."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import ConfigError, load_config
from pledgewatch.cli import main
from protocols.messages import Weight
from protocols.uplink import Reading
from tests.gateway.site_helpers import write_site

UPLINK = {"kind": "http", "url": "http://127.0.0.1:9/v1/ingest"}


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_valid_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    path, _ = write_site(tmp_path, uplink=UPLINK, devices=[
        {"id": "gate-1", "kind": "r2000", "port": "/dev/ttyUSB0"}])
    cfg = load_config(path)
    assert cfg.gateway.id == "gw-1" and cfg.device[0].baudrate == 115200
    assert cfg.gateway.key_file.is_absolute()


@pytest.mark.parametrize(("devices", "gateway", "expected"), [
    ([{"id": "r", "kind": "r2000", "port": "/dev/x", "colour": "red"}], {},
     ["device[0](id=r).colour: unknown key"]),
    ([{"id": "r", "kind": "r2000", "port": "/dev/x", "baudrate": "fast"}], {},
     ["device[0](id=r).baudrate: Input should be a valid integer"]),
    ([{"id": "r", "kind": "r2000"}], {}, ["needs a port"]),
    ([{"id": "r", "kind": "toaster", "port": "/dev/x"}], {}, ["device[0](id=r).kind: Input "
                                                               "should be"]),
    ([{"id": "r", "kind": "r2000", "port": "/dev/x"},
      {"id": "r", "kind": "nmea", "port": "/dev/y"}], {}, ["device id 'r' is used twice"]),
    ([{"id": "a", "kind": "r2000", "port": "/dev/x"},
      {"id": "b", "kind": "nmea", "port": "/dev/x"}], {}, ["one port has one owner"]),
    ([{"id": "wb", "kind": "xk3190", "port": "/dev/x", "truck_reader": "nope"}], {},
     ["truck_reader 'nope' is not a device"]),
    ([{"id": "q", "kind": "mqtt_json"}], {}, ["needs a topic"]),
    ([], {"disk_budget_mb": -1}, ["gateway.disk_budget_mb: Input should be greater than 0"]),
    ([], {"bogus": 1, "device_broker_port": 70000},
     ["gateway.device_broker_port: Input should be less", "gateway.bogus: unknown key"]),
], ids=["unknown_key", "wrong_type", "missing_port", "unknown_kind", "duplicate_id",
        "shared_port", "bad_truck_reader", "mqtt_without_topic", "negative_budget",
        "two_problems"])
def test_each_problem_is_one_line(tmp_path: Path, devices: list[dict[str, object]],
                                  gateway: dict[str, object], expected: list[str]) -> None:
    path, _ = write_site(tmp_path, uplink=UPLINK, devices=devices, gateway=gateway)
    got = problems(path)
    assert len(got) == len(expected), got
    for line, want in zip(got, expected, strict=True):
        assert line.startswith(f"{path}: ") and want in line and "\n" not in line


def test_missing_file_bad_toml_and_missing_key(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.toml") == [f"{tmp_path / 'nope.toml'}: file not found"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\nid=1")
    assert "not valid TOML" in problems(bad)[0]
    path, _ = write_site(tmp_path, uplink=UPLINK)
    (tmp_path / "keys" / "gw-1.key").unlink()
    (line,) = problems(path)
    assert "gateway.key_file" in line and "pledgewatch edge keygen" in line


def test_cli_check_and_run_refuse_a_readable_key(tmp_path: Path) -> None:
    path, _ = write_site(tmp_path, uplink=UPLINK)
    out, err = io.StringIO(), io.StringIO()
    assert main(["edge", "check", "--config", str(path)], out=out, err=err) == 0
    assert "ok: gateway gw-1" in out.getvalue()
    os.chmod(tmp_path / "keys" / "gw-1.key", 0o644)
    for cmd in ("check", "run"):
        err = io.StringIO()
        assert main(["edge", cmd, "--config", str(path)], out=io.StringIO(), err=err) == 1
        (line,) = err.getvalue().strip().splitlines()
        assert "gw-1.key" in line and "Traceback" not in line


def test_rfid_sightings_identify_trucks_on_the_weighbridge(tmp_path: Path) -> None:
    """``truck_reader`` wires an RFID reader's sightings to the weighbridge's ticket pairer."""
    path, _ = write_site(tmp_path, uplink=UPLINK, devices=[
        {"id": "gate-rfid", "kind": "r2000", "port": "/dev/null-a"},
        {"id": "wb", "kind": "xk3190", "port": "/dev/null-b", "truck_reader": "gate-rfid",
         "options": {"n_equal": 3}}])
    gw = Gateway(load_config(path))
    try:
        wb = gw.coordinators["wb"].driver
        truck = "E2801170000100000000ABCD"

        def weigh(t0: int, kg: float) -> list[Reading]:
            out: list[Reading] = []
            for i, w in enumerate([0.0, kg / 2, kg, kg, kg, kg, 0.0, 0.0]):
                out += wb.pipeline.feed(t0 + i * 1000, t0 + i * 1000,  # type: ignore[attr-defined]
                                        Weight(weight=w, unit="kg", weight_kg=w, stable=None))
            return out

        def sighting(ts: int) -> Reading:
            return Reading("tag_sighting", "gate-rfid", ts, ts,
                           {"epc": truck, "antenna": 1, "count": 3, "first_ms": ts,
                            "last_ms": ts, "rssi_max_dbm": -50.0})

        asyncio.run(gw.store([sighting(1_000_000)]))
        first = weigh(1_001_000, 32_000.0)
        asyncio.run(gw.store([sighting(2_000_000)]))
        second = weigh(2_001_000, 12_000.0)
    finally:
        gw.outbox.close()
    tickets = [r for r in first + second if r.kind == "weigh_ticket"]
    assert len(tickets) == 1
    t = tickets[0].data
    assert (t["truck_id"], t["gross_kg"], t["tare_kg"], t["net_kg"], t["direction"]) == (
        truck, 32_000.0, 12_000.0, 20_000.0, "inbound")
