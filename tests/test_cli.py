"""The ``pledgewatch`` command as a user runs it."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from pledgewatch.cli import DECODE_PROTOCOLS, main
from protocols import r2000


def run(*argv: str, stdin: str = "") -> tuple[int, list[dict[str, object]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, stdin=io.StringIO(stdin))
    lines = [json.loads(ln) for ln in out.getvalue().splitlines() if ln.startswith("{")]
    return code, lines, err.getvalue()


TAG = "A0 13 01 89 01 30 00 E2 80 68 94 00 00 50 1E 5A 7C 12 34 52 58"


def test_decode_tag_frame_prints_contract_fields() -> None:
    code, lines, _ = run("decode", "r2000", TAG)
    assert code == 0
    assert lines == [{"type": "tag_read", "epc": "E28068940000501E5A7C1234", "antenna": 2,
                      "rssi_dbm": -47.0, "pc": 0x3000, "frequency_khz": 865000,
                      "read_count": None, "device_ts_ms": None, "reader_address": 1}]


def test_decode_bad_frame_exits_1_and_keeps_going() -> None:
    code, lines, _ = run("decode", "r2000", "A0 0A 01 89 00 00 1D 00 00 00 01 BC", "zz", TAG)
    assert code == 1
    assert [ln["type"] for ln in lines] == ["error", "error", "tag_read"]
    assert lines[0]["error"] == "bad_checksum" and lines[1]["error"] == "bad_input"


def test_decode_incomplete_frame_is_an_error() -> None:
    code, lines, _ = run("decode", "r2000", "A0 13 01 89")
    assert code == 1 and lines[0]["error"] == "truncated"


def test_decode_reads_stdin_with_direction_markers_and_comments() -> None:
    stdin = "# a comment\n> A0 04 01 89 01 D1\n< " + TAG + "\n\n"
    code, lines, _ = run("decode", "r2000", stdin=stdin)
    assert code == 0
    assert [ln["type"] for ln in lines] == ["command", "tag_read"]


def test_decode_from_host_flag() -> None:
    code, lines, _ = run("decode", "--from-host", "r2000", "A0 04 01 89 01 D1")
    assert code == 0 and lines[0]["name"] == "real_time_inventory"


@pytest.mark.parametrize("argv", [("decode", "nosuch", "00"), ("decode", "r2000"),
                                  ("decode",), ("sim", "device", "toaster"), ()],
                         ids=["unknown_protocol", "no_frames", "no_protocol",
                              "unknown_device", "no_command"])
def test_usage_errors_exit_2_without_traceback(argv: tuple[str, ...]) -> None:
    code, lines, err = run(*argv)
    assert code == 2 and lines == []
    assert "Traceback" not in err and err.strip()


def test_usage_error_as_a_real_process() -> None:
    res = subprocess.run([sys.executable, "-m", "pledgewatch", "decode", "nosuch", "00"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "unknown protocol 'nosuch'" in res.stderr and "Traceback" not in res.stderr


def test_every_protocol_in_help_is_importable() -> None:
    import importlib

    for module, _ in DECODE_PROTOCOLS.values():
        assert callable(importlib.import_module(module).decode_frame_arg)


def test_sim_device_serves_a_pty_a_driver_can_read() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pledgewatch", "sim", "device", "r2000",
                             "--pty", "--seed", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/")
        with serial.Serial(path, 115200, timeout=0.1) as port:
            port.write(r2000.encode_real_time_inventory(1, 1))
            dec = r2000.Decoder()
            out: list[object] = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                    getattr(m, "type", "") == "inventory_done" for m in out):
                out += dec.feed(port.read(256))
        tags = [m for m in out if getattr(m, "type", "") == "tag_read"]
        assert tags and dec.errors == 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_from_host_flag_after_protocol() -> None:
    code, lines, _ = run("decode", "r2000", "--from-host", "A0 04 01 89 01 D1")
    assert code == 0 and lines[0]["name"] == "real_time_inventory"


def test_empty_epc_tag_frame_is_an_error() -> None:
    code, lines, _ = run("decode", "r2000", "A0 07 01 89 01 00 00 52 7C")
    assert code == 1 and lines[0]["error"] == "bad_field"


def test_chafon_single_corrupted_frame_is_one_bad_checksum() -> None:
    code, lines, _ = run("decode", "chafon", "05 00 2F 00 CD 8D")
    assert code == 1 and [ln["error"] for ln in lines] == ["bad_checksum"]


def test_closed_stdout_is_not_a_traceback(tmp_path: Path) -> None:
    frames = tmp_path / "gll.txt"
    frames.write_text("$GPGLL,4916.45,N,12311.12,W,225444,A,*1D\n" * 20000)
    res = subprocess.run(
        ["sh", "-c", f"'{sys.executable}' -m pledgewatch decode nmea < '{frames}' | head -1"],
        capture_output=True, text=True, timeout=120)
    assert len(res.stdout.splitlines()) == 1 and '"sentence": "GLL"' in res.stdout
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr
