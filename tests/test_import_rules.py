"""The import rules of DESIGN.md section 3, checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROTOCOL_MODULES = ["protocols", "protocols.r2000", "protocols.messages", "protocols._crc",
                    "protocols._cli"]
HEAVY = ["asyncio", "serial", "socket", "select", "threading", "paho", "aiomqtt", "sqlalchemy",
         "fastapi", "numpy", "firmware_sim", "edge", "gateway", "cloud"]


def _loaded_after(imports: list[str]) -> set[str]:
    code = ("import sys, json\nbefore = set(sys.modules)\n" +
            "".join(f"import {m}\n" for m in imports) +
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return set(json.loads(res.stdout))


def _all_codec_modules() -> list[str]:
    import pkgutil

    import protocols

    return ["protocols." + m.name for m in pkgutil.iter_modules(protocols.__path__)]


def test_codec_modules_are_found() -> None:
    mods = _all_codec_modules()
    assert "protocols.r2000" in mods and "protocols._base" in mods


@pytest.mark.parametrize("module", sorted(set(PROTOCOL_MODULES) | set(_all_codec_modules())))
def test_protocols_import_no_io(module: str) -> None:
    loaded = _loaded_after([module])
    bad = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not bad, f"{module} pulls in {bad}"


@pytest.mark.parametrize("package", ["edge", "gateway", "cloud", "protocols", "uplink",
                                     "edge.drivers", "gateway.app", "uplink.envelope"])
def test_nothing_imports_firmware_sim(package: str) -> None:
    loaded = _loaded_after([package])
    assert not any(m.split(".")[0] == "firmware_sim" for m in loaded)


# DESIGN.md section 3: protocols <- uplink <- gateway, cloud; protocols <- edge <- gateway;
# cloud imports protocols and uplink only.
ALLOWED = {
    "uplink.envelope": {"protocols", "uplink"},
    "edge.drivers": {"protocols", "edge"},
    "edge.mqtt_json": {"protocols", "edge"},
    "gateway.app": {"protocols", "uplink", "edge", "gateway"},
    "cloud": {"protocols", "uplink", "cloud"},
}
OURS = {"protocols", "uplink", "edge", "gateway", "cloud", "firmware_sim", "pledgewatch"}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_go_one_way(module: str) -> None:
    loaded = {m.split(".")[0] for m in _loaded_after([module])} & OURS
    assert loaded <= ALLOWED[module], f"{module} imports {sorted(loaded - ALLOWED[module])}"
