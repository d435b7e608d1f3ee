"""The ``pledgewatch`` command line: ``decode``, ``sim device``, ``demo``.

Exit codes: 0 success, 1 some input was bad (decode), 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from protocols._base import FrameError, Message

__all__ = ["DECODE_PROTOCOLS", "main"]

# protocol name -> (module, input form shown in help)
DECODE_PROTOCOLS: Final = {
    "r2000": ("protocols.r2000", "hex"),
    "thingmagic": ("protocols.thingmagic", "hex"),
    "chafon": ("protocols.chafon", "hex"),
    "nmea": ("protocols.nmea", "text line"),
    "xk3190": ("protocols.xk3190", "hex"),
    "toledo": ("protocols.toledo", "hex, or the printed status+weight+tare form"),
    "mtsics": ("protocols.mtsics", "text line"),
    "digistar": ("protocols.digistar", "text with <STX> notation, or hex"),
    "modbus": ("protocols.modbus", "hex"),
    "llrp": ("protocols.llrp", "hex of one or more LLRP messages"),
    "iso11784": ("protocols.iso11784", "animal ID in any display form"),
}

EXIT_OK: Final = 0
EXIT_BAD_INPUT: Final = 1
EXIT_USAGE: Final = 2


class UsageError(Exception):
    """Bad command-line usage: printed as one line, exit 2."""


def _emit(obj: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _frames_from(args_frames: Sequence[str], stdin: TextIO) -> Iterable[str]:
    if args_frames:
        yield from args_frames
        return
    for line in stdin:
        line = line.rstrip("\r\n")
        if line.strip() and not line.lstrip().startswith("#"):
            yield line


def _split_direction(frame: str, default: str) -> tuple[str, str]:
    """A pasted log line may start with ``> `` (host -> device) or ``< `` (device -> host)."""
    s = frame.lstrip()
    if s[:2] in ("> ", "< "):
        return ("host" if s[0] == ">" else "device"), s[2:].strip()
    return default, frame


def cmd_decode(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    proto = ns.protocol
    if proto not in DECODE_PROTOCOLS:
        raise UsageError(f"unknown protocol {proto!r}; choose one of: "
                         f"{', '.join(DECODE_PROTOCOLS)}")
    module = importlib.import_module(DECODE_PROTOCOLS[proto][0])
    decode = module.decode_frame_arg
    default_dir = "host" if ns.from_host else "device"
    bad = 0
    count = 0
    for frame in _frames_from(ns.frames, stdin):
        count += 1
        sent_by, text = _split_direction(frame, default_dir)
        try:
            items: list[Message | FrameError] = decode(text, sent_by=sent_by)
        except ValueError as exc:  # bad hex or an argument the codec cannot take
            items = [FrameError("bad_input", text.encode("utf-8", "replace"), 0, str(exc),
                                proto)]
        if not items:
            items = [FrameError("incomplete", text.encode("utf-8", "replace"), 0,
                                "no complete frame in input", proto)]
        for item in items:
            d = item.to_dict()
            if item.type == "error":
                bad += 1
                d.setdefault("input", frame)
            _emit(d, out)
    if count == 0:
        err.write("pledgewatch decode: no frames given (pass FRAME arguments or lines on "
                  "stdin)\n")
        return EXIT_USAGE
    return EXIT_BAD_INPUT if bad else EXIT_OK


def _parse_faults(spec: str | None) -> Any:
    from firmware_sim import Faults

    if not spec:
        return Faults()
    kw: dict[str, float] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in Faults.__dataclass_fields__:
            raise UsageError(f"bad --faults item {part!r}; use name=probability with names "
                             f"{', '.join(Faults.__dataclass_fields__)}")
        try:
            kw[key] = int(value) if key == "garbage_max" else float(value)
        except ValueError:
            raise UsageError(f"bad --faults value in {part!r}: not a number") from None
    try:
        return Faults(**kw)  # type: ignore[arg-type]
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_sim_run(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    from pathlib import Path

    from firmware_sim.world.scenario import ScenarioError
    from pledgewatch.simrun.run import run
    from pledgewatch.simrun.score import format_report, score_dir

    if ns.speed is not None and not ns.speed > 0:
        raise UsageError("--speed must be a positive number of simulated seconds per second")
    scenario = Path(ns.scenario)
    if not scenario.is_file():
        raise UsageError(f"no scenario file {scenario}")
    try:
        result = run(scenario, Path(ns.out), speed=ns.speed,
                     progress=None if ns.quiet else err)
    except ScenarioError as exc:
        err.write(f"pledgewatch sim run: {exc}\n")
        return EXIT_BAD_INPUT
    out.write(f"simulated {result.sim_ms / 3_600_000:.1f} h in {result.wall_s:.1f} s "
              f"(x{result.speedup:,.0f}): {result.observations:,} observations, "
              f"{result.readings:,} readings in {result.batches:,} batches, "
              f"{result.alerts} alerts\n")
    report = score_dir(Path(ns.out))
    out.write(format_report(report) + "\n")
    out.write(f"wrote {ns.out}/truth.jsonl, alerts.jsonl, valuations.jsonl, score.json\n")
    return EXIT_OK


def cmd_sim_score(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    from pledgewatch.simrun.score import main_score

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        return main_score([ns.dir, *(["--json"] if ns.json else [])])


def cmd_sim_device(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    import signal
    import threading

    from firmware_sim import DEVICE_KINDS, PtyLink, TcpLink, WallClock, device_class

    if ns.kind not in DEVICE_KINDS:
        raise UsageError(f"unknown device kind {ns.kind!r}; choose one of: "
                         f"{', '.join(DEVICE_KINDS)}")
    faults = _parse_faults(ns.faults)
    cls = device_class(ns.kind)
    device = cls.demo(seed=ns.seed, faults=faults, clock=WallClock())
    link: PtyLink | TcpLink
    link = TcpLink(device, port=ns.tcp) if ns.tcp is not None else PtyLink(device)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with link:
        where = link.path if isinstance(link, PtyLink) else link.url
        out.write(where + "\n")
        out.flush()
        err.write(f"simulated {ns.kind} device serving on {where} (seed {ns.seed}); "
                  "Ctrl-C to stop\n")
        try:
            while not stop.wait(0.2 if ns.duration is None else min(0.2, ns.duration)):
                if link.error is not None:
                    raise link.error
                if ns.duration is not None:
                    ns.duration -= 0.2
                    if ns.duration <= 0:
                        break
        except KeyboardInterrupt:
            pass
    err.write(f"stopped: {len(device.sent)} frames sent, {device.received} bytes received\n")
    return EXIT_OK


def cmd_demo(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    from pledgewatch.demo import DemoOptions, main_demo

    if ns.speed is not None and not ns.speed > 0:
        raise UsageError("--speed must be a positive number of simulated seconds per second")
    if ns.duration is not None and not ns.duration > 0:
        raise UsageError("--duration must be a positive number of seconds")
    for flag, port in (("--port", ns.port), ("--mqtt-port", ns.mqtt_port)):
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"{flag} must be 1-65535, got {port}")
    return main_demo(DemoOptions(scenario=ns.scenario, speed=ns.speed, duration_s=ns.duration,
                                 data_dir=ns.data_dir, port=ns.port, mqtt_port=ns.mqtt_port,
                                 mosquitto=ns.mosquitto, postgres=ns.postgres), out, err)


def cmd_edge_keygen(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    from gateway.errors import KeyFileError
    from gateway.keys import generate_keypair, public_key_b64, public_key_path

    try:
        ns.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = generate_keypair(ns.path)
    except KeyFileError as exc:
        err.write(f"pledgewatch edge keygen: {exc}\n")
        return EXIT_BAD_INPUT
    out.write(public_key_b64(key) + "\n")
    err.write(f"private key {ns.path} (mode 0600), public key {public_key_path(ns.path)}; "
              "register the public key (printed above) with the cloud\n")
    return EXIT_OK


def _load_site(ns: argparse.Namespace, err: TextIO) -> Any:
    from gateway.config import ConfigError, load_config

    try:
        return load_config(ns.config)
    except ConfigError as exc:
        for line in exc.problems:
            err.write(line + "\n")
        return None


def cmd_edge_check(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    from gateway.errors import GatewayError
    from gateway.keys import load_private_key

    cfg = _load_site(ns, err)
    if cfg is None:
        return EXIT_BAD_INPUT
    try:
        load_private_key(cfg.gateway.key_file)
    except GatewayError as exc:
        err.write(f"{ns.config}: gateway.key_file: {exc}\n")
        return EXIT_BAD_INPUT
    out.write(f"{ns.config}: ok: gateway {cfg.gateway.id}, {len(cfg.device)} devices, "
              f"uplink {cfg.uplink.kind}\n")
    return EXIT_OK


def cmd_edge_run(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    import asyncio
    import logging

    from gateway.app import Gateway
    from gateway.errors import GatewayError

    cfg = _load_site(ns, err)
    if cfg is None:
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO, stream=err,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        gw = Gateway(cfg, ack_log=ns.ack_log)
    except (GatewayError, ValueError, TypeError) as exc:
        err.write(f"{ns.config}: {exc}\n")
        return EXIT_BAD_INPUT
    if gw.outbox.recovered_from is not None:
        err.write(f"outbox was corrupt ({gw.outbox.recovery_problem}); moved to "
                  f"{gw.outbox.recovered_from}, started a fresh one\n")

    async def main_task() -> None:
        import signal

        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        def ready(port: int) -> None:
            err.write(f"gateway {cfg.gateway.id} running; health on "
                      f"http://{cfg.gateway.http_host}:{port}/healthz\n")

        await gw.run(on_ready=ready)

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main_task())
    err.write("gateway stopped\n")
    return EXIT_OK


def cmd_edge_drivers(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    import inspect

    from edge.drivers import DRIVERS

    kinds = {**DRIVERS, "mqtt_json": "edge.mqtt_json:MqttJsonSource"}
    if ns.kind is None:
        for kind, target in kinds.items():
            doc = inspect.getdoc(importlib.import_module(target.partition(":")[0])) or ""
            out.write(f"{kind:<11} {doc.splitlines()[0] if doc else ''}\n")
        out.write("\n`pledgewatch edge drivers KIND` prints a driver's options.\n")
        return EXIT_OK
    if ns.kind not in kinds:
        raise UsageError(f"unknown device kind {ns.kind!r}; choose one of: {', '.join(kinds)}")
    module = importlib.import_module(kinds[ns.kind].partition(":")[0])
    out.write((inspect.getdoc(module) or "") + "\n")
    return EXIT_OK


def cmd_cloud_serve(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    from pydantic import ValidationError

    from cloud.settings import CloudSettings

    overrides: dict[str, Any] = {}
    if ns.database_url:
        overrides["database_url"] = ns.database_url
    try:
        settings = CloudSettings(**overrides)
    except ValidationError as exc:
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "settings"
            err.write(f"pledgewatch cloud serve: {where}: "
                      f"{e['msg'].removeprefix('Value error, ')}\n")
        return EXIT_BAD_INPUT
    from cloud.serve import serve

    err.write(f"cloud on http://{ns.host}:{ns.port} (API docs at /docs), database "
              f"{settings.database_url.split('@')[-1]}\n")
    serve(settings, host=ns.host, port=ns.port)
    return EXIT_OK


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pledgewatch",
        description="Collateral monitoring for cattle and warehouse goods: device codecs, "
                    "simulated devices, edge gateway and cloud.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    protos = "\n".join(f"  {k:<11} {v[1]}" for k, v in DECODE_PROTOCOLS.items())
    d = sub.add_parser(
        "decode", help="decode device frames to JSON (for installers wiring a device)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Decode frames of a device protocol and print one JSON object per "
                    "message.\nExit 0 if every frame decoded, 1 if any was bad, 2 on usage "
                    "errors.\n\nProtocols and FRAME forms:\n" + protos +
                    "\n\nWith no FRAME, lines are read from stdin ('#' lines skipped). A "
                    "line starting\nwith '> ' is taken as sent by the host, '< ' as sent by the "
                    "device.")
    d.add_argument("protocol", metavar="PROTOCOL", help=", ".join(DECODE_PROTOCOLS))
    d.add_argument("frames", metavar="FRAME", nargs="*")
    d.add_argument("--from-host", action="store_true",
                   help="frames are host commands (default: device output)")
    d.set_defaults(func=cmd_decode)

    s = sub.add_parser("sim", help="simulated devices and worlds")
    ssub = s.add_subparsers(dest="sim_command", metavar="SIMCOMMAND")
    sd = ssub.add_parser("device", help="serve one simulated device on a pty or TCP port")
    sd.add_argument("kind", metavar="KIND", help="r2000, thingmagic, gps, xk3190, toledo, "
                                                 "digistar, modbus, llrp (TCP only)")
    where = sd.add_mutually_exclusive_group()
    where.add_argument("--pty", action="store_true", help="serve on a pty pair (default); "
                       "prints the device path")
    where.add_argument("--tcp", type=int, metavar="PORT",
                       help="serve on 127.0.0.1:PORT (0 = any free port); prints the URL")
    sd.add_argument("--seed", type=int, default=0)
    sd.add_argument("--faults", metavar="SPEC",
                    help="fault probabilities, e.g. split=0.1,garbage=0.05,bad_checksum=0.01")
    sd.add_argument("--duration", type=float, help="stop after this many seconds")
    sd.set_defaults(func=cmd_sim_device)
    sr = ssub.add_parser("run", help="run a scenario's whole chain (world, gateways, cloud, "
                                     "rules) and write truth, alerts, valuations and a score")
    sr.add_argument("--scenario", required=True, metavar="FILE", help="scenario TOML "
                    "(see docs/scenarios.md and scenarios/)")
    sr.add_argument("--out", required=True, metavar="DIR", help="output directory")
    sr.add_argument("--speed", type=float, metavar="X", help="simulated seconds per wall "
                    "second (default: as fast as possible)")
    sr.add_argument("--quiet", action="store_true", help="no progress bar")
    sr.set_defaults(func=cmd_sim_run)
    ss = ssub.add_parser("score", help="match a run's alerts to its truth (docs/scoring.md)")
    ss.add_argument("dir", metavar="DIR", help="output directory of `sim run`")
    ss.add_argument("--json", action="store_true", help="print score.json instead of a table")
    ss.set_defaults(func=cmd_sim_score)

    e = sub.add_parser("edge", help="the site gateway: run it, check its config, make its key")
    esub = e.add_subparsers(dest="edge_command", metavar="EDGECOMMAND")
    er = esub.add_parser("run", help="run the gateway of a site config")
    er.add_argument("--config", required=True, type=Path, metavar="SITE.toml")
    er.add_argument("--ack-log", type=Path, metavar="FILE",
                    help="append a digest of every reading committed to the outbox (audits, "
                         "tests)")
    er.add_argument("-v", "--verbose", action="store_true")
    er.set_defaults(func=cmd_edge_run)
    ec = esub.add_parser("check", help="validate a site config and its key file")
    ec.add_argument("--config", required=True, type=Path, metavar="SITE.toml")
    ec.set_defaults(func=cmd_edge_check)
    ed = esub.add_parser("drivers", help="list device kinds, or show one driver's options")
    ed.add_argument("kind", nargs="?", metavar="KIND")
    ed.set_defaults(func=cmd_edge_drivers)
    ek = esub.add_parser("keygen", help="create the gateway's Ed25519 key pair (private key "
                                        "mode 0600, PATH.pub beside it)")
    ek.add_argument("path", type=Path, metavar="PATH")
    ek.set_defaults(func=cmd_edge_keygen)

    c = sub.add_parser("cloud", help="the cloud: serve the API and ingest, administer banks")
    csub = c.add_subparsers(dest="cloud_command", metavar="CLOUDCOMMAND")
    cs = csub.add_parser("serve", help="serve the HTTP API and ingest (settings from "
                                       "PLEDGEWATCH_* environment variables or .env)")
    cs.add_argument("--host", default="127.0.0.1")
    cs.add_argument("--port", type=int, default=8000)
    cs.add_argument("--database-url", metavar="URL",
                    help="default: $PLEDGEWATCH_DATABASE_URL, else sqlite:///pledgewatch.db")
    cs.set_defaults(func=cmd_cloud_serve)
    if list(argv[:1]) == ["cloud"]:
        # the admin commands pull in SQLAlchemy: only load them when a cloud command runs
        from cloud.cli import add_admin_parser

        add_admin_parser(csub)

    dm = sub.add_parser(
        "demo", help="the whole system on this machine: MQTT broker, cloud with dashboard, "
                     "and a simulated ranch and warehouse with a scripted story (docs/demo.md)",
        description="Start an MQTT broker, the cloud (API, docs, dashboard) and the simulated "
                    "sites of a scenario; print the dashboard URL, a token, and every alert as "
                    "it opens. Ctrl-C stops everything.")
    from pledgewatch.demo import DEFAULT_PORT, DEFAULT_SCENARIO, STORY_WALL_S

    dm.add_argument("--speed", type=float, metavar="X",
                    help="simulated seconds per wall second (default: the scenario's whole "
                         f"story in about {STORY_WALL_S:.0f} s)")
    dm.add_argument("--duration", type=float, metavar="S",
                    help="stop after S wall seconds (default: run until Ctrl-C)")
    dm.add_argument("--data-dir", type=Path, metavar="DIR",
                    help="keep the database, outboxes and outputs here (default: a temporary "
                         "directory removed at exit)")
    dm.add_argument("--port", type=int, metavar="PORT",
                    help=f"HTTP port on 127.0.0.1 (default: {DEFAULT_PORT}, or the next free "
                         "one)")
    dm.add_argument("--mqtt-port", type=int, metavar="PORT",
                    help="port of the embedded broker on 127.0.0.1 (default: any free one)")
    dm.add_argument("--mosquitto", metavar="HOST:PORT",
                    help="use this MQTT broker instead of the embedded one")
    dm.add_argument("--postgres", metavar="URL",
                    help="use this (empty) PostgreSQL database instead of SQLite, e.g. "
                         "postgresql://user:pass@127.0.0.1:5432/pledgewatch_demo")
    dm.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO, metavar="FILE",
                    help="scenario TOML (default: scenarios/demo.toml)")
    dm.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None, stdin: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    stdin = stdin or sys.stdin
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    if argv[:1] == ["decode"] and "--from-host" in argv:
        # allow the flag anywhere, e.g. after PROTOCOL (argparse would take it for a FRAME
        # position error otherwise)
        argv = ["decode", "--from-host", *[a for a in argv[1:] if a != "--from-host"]]
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed usage (exit 2) or --help (exit 0)
        return EXIT_USAGE if exc.code else EXIT_OK
    if not getattr(ns, "func", None):
        parser.print_help(err)
        return EXIT_USAGE
    try:
        return int(ns.func(ns, out, err, stdin))
    except UsageError as exc:
        err.write(f"pledgewatch: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `pledgewatch decode ... | head -1`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the exit-time flush
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
