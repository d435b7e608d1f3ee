"""Real services for tests, started on free loopback ports and stopped afterwards.

A missing service binary is a test failure with the command that installs it, never a skip.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in MOSQUITTO_CANDIDATES if os.access(p, os.X_OK)), None)
    if not found:
        pytest.fail("mosquitto is not installed: run `sudo bash scripts/setup-system.sh` "
                    "(apt-get install mosquitto)")
    return found


@dataclass
class Mosquitto:
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        # as root, mosquitto drops to user "mosquitto", which cannot write the test's private
        # tmp dir; stay root there (ignored when not started as root)
        conf.write_text(f"user {getpass.getuser()}\n"
                        f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        f"persistence true\npersistence_location {self.data_dir}/\n"
                        "autosave_interval 1\nmax_queued_messages 100000\n")
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(port=free_port(), data_dir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# --- PostgreSQL --------------------------------------------------------------------------------

POSTGRES_INSTALL = "sudo apt-get install postgresql (or: sudo bash scripts/setup-system.sh)"
POSTGRES_OS_USER = "postgres"  # created by Debian's postgresql package; initdb refuses root


def postgres_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` that has ``initdb`` and ``pg_ctl``."""
    found = sorted((p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")
                    if (p.parent / "pg_ctl").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) are not installed: run "
                    f"`{POSTGRES_INSTALL}`")
    return found[-1]


def _as_postgres_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", POSTGRES_OS_USER, "--", *cmd]


def _run_pg(cmd: list[str], cwd: Path, log: Path | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    proc = subprocess.run(_as_postgres_user(cmd), cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n"
                    f"{proc.stderr}\n{tail}")


@contextlib.contextmanager
def postgres(tmp_path: Path, *, fsync: bool = True) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port; yields a
    ``postgresql+psycopg://`` URL of its ``postgres`` database (superuser ``postgres``, trust
    auth). As root, the cluster is created and run by the unprivileged OS user ``postgres``
    in a directory it owns (initdb refuses to run as root). ``fsync=False`` trades crash
    safety of the test cluster for speed. The server log is copied to ``tmp_path`` at stop."""
    bindir = postgres_bindir()
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam(POSTGRES_OS_USER)
        except KeyError:
            pytest.fail(f"running as root needs the OS user {POSTGRES_OS_USER!r} to own the "
                        f"test cluster: run `{POSTGRES_INSTALL}`")
    # a short path of its own: tmp_path is private to root, and unix socket paths are capped
    root = Path(tempfile.mkdtemp(prefix="pw-pg-"))
    if os.geteuid() == 0:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, log = root / "data", root / "server.log"
    port = free_port()
    _run_pg([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C", "--no-sync"], cwd=root)
    options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
               + ("" if fsync else " -c fsync=off -c synchronous_commit=off"
                  " -c full_page_writes=off"))
    started = False
    try:
        _run_pg([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                 "-w", "-t", "60", "start"], cwd=root, log=log)
        started = True
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        try:
            if started:
                _run_pg([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t",
                         "60", "stop"], cwd=root, log=log)
        finally:
            if log.exists():
                with contextlib.suppress(OSError):
                    shutil.copyfile(log, tmp_path / "postgres.log")
            shutil.rmtree(root, ignore_errors=True)


# --- InfluxDB 1.x ------------------------------------------------------------------------------

INFLUXD_CANDIDATES = ("/usr/bin/influxd", "/usr/sbin/influxd")
INFLUXD_INSTALL = "sudo apt-get install influxdb (or: sudo bash scripts/setup-system.sh)"


def influxd_binary() -> str:
    found = shutil.which("influxd") or next(
        (p for p in INFLUXD_CANDIDATES if os.access(p, os.X_OK)), None)
    if not found:
        pytest.fail(f"influxd (InfluxDB 1.x) is not installed: run `{INFLUXD_INSTALL}`")
    return found


def wait_for_http(url: str, timeout_s: float = 30.0,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer after {timeout_s} s")


@contextlib.contextmanager
def influxd(tmp_path: Path) -> Iterator[str]:
    """Debian's InfluxDB 1.x on a free loopback port with everything in ``tmp_path``; yields
    its HTTP URL (``http://127.0.0.1:<port>``). Other listeners are off or on free loopback
    ports; usage reporting and the ``_internal`` monitor store are off."""
    binary = influxd_binary()
    base = tmp_path / "influxd"
    base.mkdir(parents=True, exist_ok=True)
    http_port, rpc_port = free_port(), free_port()
    conf = base / "influxdb.conf"
    conf.write_text(
        "reporting-disabled = true\n"
        f'bind-address = "127.0.0.1:{rpc_port}"\n'
        f'[meta]\n  dir = "{base}/meta"\n'
        f'[data]\n  dir = "{base}/data"\n  wal-dir = "{base}/wal"\n'
        '  query-log-enabled = false\n'
        "[monitor]\n  store-enabled = false\n"
        f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{http_port}"\n'
        "  log-enabled = false\n  pprof-enabled = false\n"
        "[ifql]\n  enabled = false\n"
        "[continuous_queries]\n  enabled = false\n"
        "[logging]\n  level = \"warn\"\n  suppress-logo = true\n")
    url = f"http://127.0.0.1:{http_port}"
    with (base / "influxd.log").open("wb") as log:
        proc = subprocess.Popen([binary, "-config", str(conf)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=base)
        try:
            try:
                wait_for_http(f"{url}/ping", proc=proc)
            except (TimeoutError, RuntimeError) as exc:
                pytest.fail(f"influxd did not start: {exc}\n"
                            f"{(base / 'influxd.log').read_text(errors='replace')[-3000:]}")
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
