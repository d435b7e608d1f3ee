"""``pledgewatch demo`` (what ``make run`` runs): the whole system on one laptop, in one
process, with no server to install.

::

    amqtt broker, in this process, 127.0.0.1      (or --mosquitto HOST:PORT)
       ^ the simulated gateways publish signed batches on pledgewatch/ingest/<gateway_id>, QoS 1
       v the cloud's MQTT ingest consumes them
    cloud app (cloud.api.app.create_app) under uvicorn on 127.0.0.1:PORT: API, /docs, /dashboard
       | its IngestService stores each batch (SQLite in the data dir, or --postgres), then
       | hands it to the simulation's domain engine (rules, valuation -> alerts)
    sim runner (pledgewatch.simrun.run.run_async) on scenarios/demo.toml: world -> device bytes
       -> real protocol decoders and edge aggregators -> gateway outboxes -> envelopes

All of it shares one asyncio loop. The runner owns the simulated clock: the served ingest
stamps batches with it, so alerts carry simulated times while the API's tokens and the
dashboard run on the wall clock.

Why the parts are wired as they are:

* The runner's ``submit`` publishes a batch and then waits until the cloud's MQTT consumer
  has answered it (stored, duplicate or refused), like the in-process ingest of ``sim run``:
  the rules then see each batch before the next simulated upload, so a fast demo opens its
  alerts at the same simulated moments as ``sim run``, and a slow cloud slows the story
  instead of falling behind it.
* amqtt has no shared subscriptions (``$share/...`` would match nothing), so with the
  embedded broker the cloud subscribes to ``pledgewatch/ingest/+`` directly; it is the only
  consumer there. On an external mosquitto it uses a shared subscription in a group of its
  own, so a stale persistent session left in the cloud's usual group by some other process
  cannot take half of the demo's batches; the demo's own persistent session is removed at
  exit.
* The rules and the valuation run in the sim runner's domain engine, on the simulated clock
  (``SimCloud.on_stored`` is chained after the app's own ingest hooks); the served app's
  wall-clock rules runner is switched off.
* The demo owns SIGINT and SIGTERM (uvicorn's own handlers are switched off) and stops the
  parts in order: the runner, the uploaders, the web server (its lifespan stops the MQTT
  consumer and the ingest), then the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Final, TextIO

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_SCENARIO",
    "DemoError",
    "DemoOptions",
    "default_speed",
    "format_alert",
    "parse_host_port",
    "run_demo",
]

log = logging.getLogger("pledgewatch.demo")

DEFAULT_SCENARIO: Final = Path(__file__).resolve().parents[1] / "scenarios" / "demo.toml"
DEFAULT_PORT: Final = 8000
PORT_TRIES: Final = 20  # 8000, 8001, ... when the default port is taken
STORY_WALL_S: Final = 120.0  # the default --speed plays the whole scenario in about this long
LOOPBACK: Final = "127.0.0.1"
DEMO_EMAIL: Final = "demo@pledgewatch.example"
DEMO_ROLE: Final = "admin"  # the demo user may try everything: ack, rules, webhooks
UPLINK_TOPIC: Final = "pledgewatch/ingest/{gateway_id}"  # gateway.config's default
PLAIN_TOPIC: Final = "pledgewatch/ingest/+"
REPLAY_WINDOW: Final = 1_000_000  # as the runner's in-process ingest
CONNECT_TIMEOUT_S: Final = 5.0
READY_TIMEOUT_S: Final = 30.0  # cloud up and subscribed
ANSWER_TIMEOUT_S: Final = 30.0  # one published batch answered by the cloud
STOP_TIMEOUT_S: Final = 10.0
BROKER_TRIES: Final = 5
EXIT_OK: Final = 0
EXIT_ERROR: Final = 1


class DemoError(Exception):
    """Something the user can fix (a port in use, an unreachable service, a bad flag): shown
    as one line, exit 1, no traceback."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    scenario: Path = DEFAULT_SCENARIO
    speed: float | None = None  # simulated s per wall s; None: see default_speed
    duration_s: float | None = None  # stop after this many wall seconds
    data_dir: Path | None = None  # None: a temporary directory removed at exit
    port: int | None = None  # None: DEFAULT_PORT or the next free one
    mqtt_port: int | None = None  # embedded broker; None: any free port
    mosquitto: str | None = None  # HOST:PORT of an external broker
    postgres: str | None = None  # URL of an external database


def default_speed(duration_ms: int) -> float:
    """Simulated seconds per wall second that play ``duration_ms`` in about STORY_WALL_S."""
    return max(1.0, duration_ms / 1000 / STORY_WALL_S)


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DemoError(f"--mosquitto wants HOST:PORT (e.g. 127.0.0.1:1883), got {text!r}")
    return host, int(port)


def _sim_time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def format_alert(alert: dict[str, Any], *, where: str | None) -> str:
    """One line per opened alert, columns aligned for a terminal::

        [sim 2026-01-02 03:10] HIGH     animal_missing         ranch-1  animal E280...  not seen
    """
    when = alert.get("opened_at_ms") or alert.get("event_time_ms") or 0
    subject = f"{alert.get('subject_type', '')} {alert.get('subject_id', '')}".strip()
    summary = " ".join(str(alert.get("summary") or "").split())
    # summaries often start with their subject ("animal E280... not seen for 12 h"): once
    # on the line is enough
    for prefix in (subject, str(alert.get("subject_id") or "")):
        if prefix and summary.startswith(prefix + " "):
            summary = summary[len(prefix) + 1:]
            break
    return (f"[sim {_sim_time(int(when))}] {str(alert.get('severity', '')).upper():<8} "
            f"{alert.get('kind', ''):<21} {where or '-':<12} {subject}  {summary}")


# -- sockets and external services ---------------------------------------------------------------
def _bind(port: int) -> socket.socket:
    """A listening-ready socket on 127.0.0.1:port, or OSError (EADDRINUSE when taken). The
    web server is handed this very socket, so nobody can take the port in between."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _http_socket(port: int | None, err: TextIO) -> socket.socket:
    if port is not None:
        try:
            return _bind(port)
        except OSError as exc:
            raise DemoError(f"cannot listen on {LOOPBACK}:{port}: "
                            f"{os.strerror(exc.errno) if exc.errno else exc} (give another "
                            f"--port, or leave it out to take a free one)") from None
    for candidate in range(DEFAULT_PORT, DEFAULT_PORT + PORT_TRIES):
        try:
            sock = _bind(candidate)
        except OSError:
            continue
        if candidate != DEFAULT_PORT:
            err.write(f"port {DEFAULT_PORT} is in use; serving on {candidate} instead\n")
        return sock
    raise DemoError(f"ports {DEFAULT_PORT}-{DEFAULT_PORT + PORT_TRIES - 1} on {LOOPBACK} are "
                    "all in use; give a free one with --port")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def postgres_url(url: str) -> str:
    """The SQLAlchemy URL for a PostgreSQL URL as people write it (``postgresql://``,
    ``postgres://``), on the psycopg 3 driver the cloud uses."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise DemoError(f"--postgres wants a PostgreSQL URL (postgresql://USER:PASS@HOST:PORT/DB), "
                    f"got {url.split('@')[-1]!r}")


def _shown_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # only for display: never fail over it
        return url.split("@")[-1]


def _check_postgres(url: str) -> None:
    """Reachable, and empty of pledgewatch data: the demo registers its own bank, sites and
    gateways and would collide with an earlier run's."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url, connect_args={"connect_timeout": int(CONNECT_TIMEOUT_S)})
    try:
        with engine.connect() as conn:
            if inspect(conn).has_table("banks"):
                n = conn.execute(text("SELECT count(*) FROM banks")).scalar_one()
                if n:
                    banks = f"{n} bank" + ("s" if n != 1 else "")
                    raise DemoError(f"database {_shown_url(url)} already holds pledgewatch "
                                    f"data ({banks}); give the demo an empty database "
                                    "(e.g. `createdb pledgewatch_demo`)")
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise DemoError(f"cannot use PostgreSQL at {_shown_url(url)}: "
                        f"{reason[0] if reason else type(exc).__name__}") from None
    finally:
        engine.dispose()


async def _check_broker(host: str, port: int) -> None:
    import aiomqtt

    try:
        async with aiomqtt.Client(host, port, identifier=f"pledgewatch-demo-probe-{os.getpid()}",
                                  timeout=CONNECT_TIMEOUT_S):
            pass
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        raise DemoError(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from None


async def _forget_session(host: str, port: int, client_id: str) -> None:
    """Connect once as ``client_id`` with a clean session: the broker drops the persistent
    session (and its queue) that the cloud's MQTT consumer left there."""
    import aiomqtt

    with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
        async with aiomqtt.Client(host, port, identifier=client_id, clean_session=True,
                                  timeout=CONNECT_TIMEOUT_S):
            pass


@contextlib.asynccontextmanager
async def embedded_broker(port: int | None) -> AsyncIterator[int]:
    """An amqtt broker on 127.0.0.1 (``port``, or a free one); yields the port."""
    from amqtt.broker import Broker  # type: ignore[import-untyped]
    from amqtt.errors import BrokerError  # type: ignore[import-untyped]

    broker = None
    for attempt in range(1 if port is not None else BROKER_TRIES):
        chosen = port if port is not None else _free_port()
        candidate = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{chosen}"}},
            # anonymous loopback clients only; no $SYS topics, no packet logging
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        })
        try:
            await candidate.start()
        except BrokerError as exc:
            in_use = isinstance(exc.__cause__, OSError) and \
                exc.__cause__.errno == errno.EADDRINUSE
            if port is not None:
                raise DemoError(f"cannot start the MQTT broker on {LOOPBACK}:{port}: "
                                f"{'address in use' if in_use else exc}") from None
            if not in_use or attempt == BROKER_TRIES - 1:
                raise DemoError(f"cannot start the MQTT broker: {exc}") from None
            continue
        broker, port = candidate, chosen
        break
    assert broker is not None and port is not None
    try:
        yield port
    finally:
        await broker.shutdown()


# -- the served cloud ------------------------------------------------------------------------
def _uvicorn_server(config: Any) -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn without its signal handlers: the demo owns SIGINT/SIGTERM and stops the
        parts in order (uvicorn would also re-raise the signal after its own shutdown)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return _Server(config)


@dataclasses.dataclass(slots=True)
class ServedCloud:
    app: Any
    url: str
    server: Any
    task: asyncio.Task[None]

    def mqtt_stats(self) -> Any:
        consumer = getattr(self.app.state, "mqtt", None)
        return consumer.stats if consumer is not None else None

    def answered(self) -> int:
        """Batches the MQTT consumer has finished with (stored, duplicate or refused)."""
        st = self.mqtt_stats()
        if st is None:
            return 0
        return int(st.stored + st.duplicates + sum(st.rejected.values()))


@contextlib.asynccontextmanager
async def served_cloud(settings: Any, sock: socket.socket, *,
                       ingest: Callable[..., Any] | None = None) -> AsyncIterator[ServedCloud]:
    """``create_app(settings, ingest=ingest)`` under uvicorn on ``sock``, in this loop.
    Entered once it answers HTTP and (when ``settings.mqtt_host`` is set) its MQTT consumer
    has subscribed; on exit, SSE streams are ended and the server shut down gracefully."""
    import uvicorn

    from cloud.alerts.runtime import stop_streams
    from cloud.api.app import create_app

    app = create_app(settings, ingest=ingest)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                            server_header=False, proxy_headers=False,
                            timeout_graceful_shutdown=5)
    server = _uvicorn_server(config)
    host, port = sock.getsockname()[:2]

    async def serve() -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits on a failed lifespan start-up
            await server.serve(sockets=[sock])

    task = asyncio.create_task(serve(), name="demo-http")
    cloud = ServedCloud(app=app, url=f"http://{host}:{port}", server=server, task=task)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            stats = cloud.mqtt_stats()
            if server.started and (not settings.mqtt_host or (stats and stats.subscribed)):
                break
            if task.done():
                raise DemoError("the cloud did not start (see the log above)")
            if time.monotonic() > deadline:
                what = "subscribe to the MQTT broker" if server.started else "start"
                raise DemoError(f"the cloud did not {what} within {READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.02)
        yield cloud
    finally:
        stop_streams(app)
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)
        except TimeoutError:
            server.force_exit = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task, STOP_TIMEOUT_S)
        sock.close()


class MqttSubmit:
    """The runner's ``submit``: publish each envelope as its gateway would (QoS 1 through
    :class:`gateway.uploader.MqttUploader`), then wait until the cloud answered it."""

    def __init__(self, *, host: str, port: int, cloud: ServedCloud) -> None:
        self.host, self.port, self.cloud = host, port, cloud
        self.published = 0
        self._uploaders: dict[str, Any] = {}

    async def __call__(self, gateway_id: str, envelope: bytes) -> None:
        from gateway.uploader import MqttUploader
        from protocols.uplink import UplinkError, unpack_header

        up = self._uploaders.get(gateway_id)
        if up is None:
            up = MqttUploader(host=self.host, port=self.port, topic=UPLINK_TOPIC,
                              gateway_id=gateway_id)
            self._uploaders[gateway_id] = up
        try:
            seq = unpack_header(envelope).seq
        except UplinkError:
            seq = -1
        await up.send(envelope, seq=seq)
        self.published += 1
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while self.cloud.answered() < self.published:
            if time.monotonic() > deadline or self.cloud.task.done():
                # counted by the runner as refused; the run goes on
                raise TimeoutError(f"the cloud has not taken batch {gateway_id}/{seq} from "
                                   f"the broker within {ANSWER_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.002)

    async def aclose(self) -> None:
        for up in self._uploaders.values():
            await up.__aexit__(None, None, None)
        self._uploaders.clear()


# -- the demo ------------------------------------------------------------------------------
class _Output:
    """stdout lines, flushed one by one (the demo is often read through a pipe)."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


async def run_demo(opts: DemoOptions, out: TextIO, err: TextIO) -> int:
    """Run the demo until the duration passes or SIGINT/SIGTERM; see the module docstring."""
    io = _Output(out, err)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    temporary: list[Path] = []  # removed even on a forced exit

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            io.note("stopping (Ctrl-C again to force) ...")
            stop.set()
        elif sig == signal.SIGINT:  # a second Ctrl-C; a repeated SIGTERM just waits
            io.note("forced stop")
            for path in temporary:
                shutil.rmtree(path, ignore_errors=True)
            os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await _run(opts, io, stop, temporary)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(opts: DemoOptions, io: _Output, stop: asyncio.Event,
               temporary: list[Path]) -> int:
    from firmware_sim.world.scenario import ScenarioError, load_scenario

    started = time.monotonic()
    if not opts.scenario.is_file():
        raise DemoError(f"no scenario file {opts.scenario}")
    try:
        scenario = load_scenario(opts.scenario)
    except ScenarioError as exc:
        raise DemoError(str(exc)) from None
    if opts.speed is not None and not opts.speed > 0:
        raise DemoError("--speed must be a positive number of simulated seconds per second")
    speed = opts.speed if opts.speed is not None else default_speed(scenario.duration_ms)
    database_url = postgres_url(opts.postgres) if opts.postgres else None
    external = parse_host_port(opts.mosquitto) if opts.mosquitto else None
    if opts.mosquitto and opts.mqtt_port is not None:
        raise DemoError("--mqtt-port is the embedded broker's; it cannot go with --mosquitto")

    async with contextlib.AsyncExitStack() as stack:
        sock = _http_socket(opts.port, io.err)
        stack.callback(sock.close)
        if database_url is not None:
            await asyncio.to_thread(_check_postgres, database_url)
        if external is not None:
            await _check_broker(*external)
        if opts.data_dir is not None:
            data_dir = opts.data_dir.resolve()
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DemoError(f"cannot use --data-dir {opts.data_dir}: {exc}") from None
            keep = True
        else:
            data_dir = Path(tempfile.mkdtemp(prefix="pledgewatch-demo-"))
            temporary.append(data_dir)
            stack.callback(shutil.rmtree, data_dir, True)
            keep = False

        if external is not None:
            mqtt_host, mqtt_port = external
            # a group of its own (see the module docstring); the session is removed at exit
            topic = f"$share/pledgewatch-demo-{os.getpid()}/{PLAIN_TOPIC}"
            stack.push_async_callback(_forget_session, mqtt_host, mqtt_port,
                                      f"pledgewatch-cloud-{os.getpid()}")
            broker_note = f"mosquitto at {mqtt_host}:{mqtt_port}"
        else:
            mqtt_host = LOOPBACK
            mqtt_port = await stack.enter_async_context(embedded_broker(opts.mqtt_port))
            topic = PLAIN_TOPIC
            broker_note = f"embedded (amqtt) on {LOOPBACK}:{mqtt_port}"

        if stop.is_set():  # Ctrl-C while the services were checked
            return EXIT_OK
        demo = _Demo(opts=opts, io=io, stack=stack, sock=sock, data_dir=data_dir, keep=keep,
                     speed=speed, database_url=database_url, mqtt=(mqtt_host, mqtt_port),
                     topic=topic, broker_note=broker_note)
        return await demo.run(stop, started)
    return EXIT_OK  # pragma: no cover - the stack does not swallow exceptions


class _Demo:
    def __init__(self, *, opts: DemoOptions, io: _Output, stack: contextlib.AsyncExitStack,
                 sock: socket.socket, data_dir: Path, keep: bool, speed: float,
                 database_url: str | None, mqtt: tuple[str, int], topic: str,
                 broker_note: str) -> None:
        self.opts, self.io, self.stack, self.sock = opts, io, stack, sock
        self.data_dir, self.keep, self.speed = data_dir, keep, speed
        self.database_url, self.mqtt, self.topic = database_url, mqtt, topic
        self.broker_note = broker_note
        self.cloud: ServedCloud | None = None
        self.sessions: Any = None
        self.where: dict[int, str] = {}  # site id -> code
        self.loans: dict[int, str] = {}  # loan id -> code
        self.alerts = 0
        self._submit: MqttSubmit | None = None

    async def run(self, stop: asyncio.Event, started: float) -> int:
        from pledgewatch.simrun.run import run_async

        deadline = None if self.opts.duration_s is None else started + self.opts.duration_s
        runner = asyncio.create_task(run_async(
            self.opts.scenario, self.data_dir, speed=self.speed, progress=None,
            on_alert=self.on_alert, database_url=self.database_url, submit=self.submit,
            on_ready=self.on_ready), name="demo-sim")
        stopper = asyncio.create_task(stop.wait(), name="demo-stop")
        try:
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED,
                               timeout=None if deadline is None
                               else max(0.0, deadline - time.monotonic()))
            if runner.done():
                self._story_done(runner)
                if not stop.is_set():
                    await asyncio.wait({stopper}, timeout=None if deadline is None
                                       else max(0.0, deadline - time.monotonic()))
        finally:
            for task in (runner, stopper):
                task.cancel()
            for task in (runner, stopper):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return EXIT_OK

    def _story_done(self, runner: asyncio.Task[Any]) -> None:
        exc = runner.exception()
        if exc is not None:  # a DemoError (e.g. the cloud did not start) or a bug
            raise exc
        result = runner.result()
        outputs = (f"{self.data_dir}/alerts.jsonl, truth.jsonl, valuations.jsonl"
                   if self.keep else "(in the temporary data dir, removed at exit)")
        self.io.note(f"story finished: {result.sim_ms / 3_600_000:.0f} simulated hours in "
                     f"{result.wall_s:.0f} s (x{result.speedup:,.0f}), {result.alerts} alerts; "
                     f"outputs {outputs}. The cloud keeps serving {self._url('/dashboard/')} "
                     "until Ctrl-C.")

    def _url(self, path: str) -> str:
        assert self.cloud is not None
        return self.cloud.url + path

    # -- hooks of run_async ------------------------------------------------------------------
    async def on_ready(self, sim: Any) -> None:
        from cloud.settings import CloudSettings

        self.sessions = sim.sessions
        bank, token = await asyncio.to_thread(self._demo_user, sim.sessions)

        def ingest(settings: Any, sessions: Any, hook: Any) -> Any:
            from cloud.ingest.service import IngestService

            async def stored(gateway_id: str, batch: Any) -> None:
                if hook is not None:
                    await hook(gateway_id, batch)
                await sim.on_stored(gateway_id, batch)

            return IngestService(sessions=sessions, clock_ms=sim.clock,
                                 queue_size=settings.ingest_queue_size,
                                 replay_window=REPLAY_WINDOW, on_stored=stored,
                                 max_envelope_bytes=settings.max_body_bytes)

        # rules_enabled=False: the runner's domain engine evaluates the rules, on the
        # simulated clock; the app's own rules runner would judge March's readings by today
        # the client id _forget_session removes at exit (not the host-name default, which a
        # real cloud on this host would share)
        settings = CloudSettings(database_url=sim.url, demo=True, mqtt_host=self.mqtt[0],
                                 mqtt_port=self.mqtt[1], mqtt_topic=self.topic,
                                 mqtt_client_id=f"pledgewatch-cloud-{os.getpid()}",
                                 rules_enabled=False)
        self.cloud = await self.stack.enter_async_context(
            served_cloud(settings, self.sock, ingest=ingest))
        submit = MqttSubmit(host=self.mqtt[0], port=self.mqtt[1], cloud=self.cloud)
        self.stack.push_async_callback(submit.aclose)
        self._submit = submit
        database = _shown_url(sim.url) if self.database_url else f"SQLite {sim.url[10:]}"
        io = self.io
        io.line(f"pledgewatch demo: {self.opts.scenario.name}, bank {bank}, "
                f"x{self.speed:,.0f} (simulated seconds per second)")
        io.line(f"  dashboard  {self._url('/dashboard/')}")
        io.line(f"  API docs   {self._url('/docs')}")
        io.line(f"  token      {token}")
        io.line("             (shown once: log in to the dashboard or call the API with it)")
        io.line(f"  data dir   {self.data_dir}"
                + ("" if self.keep else " (temporary, removed at exit)"))
        io.line(f"  database   {database}")
        io.line(f"  MQTT       {self.broker_note}")
        io.line("Alerts appear below as they open. Ctrl-C stops the demo.")

    def _demo_user(self, sessions: Any) -> tuple[str, str]:
        """A user of the bank with the most sites, and a token for it."""
        from sqlalchemy import func, select

        from cloud.admin.service import create_token, create_user
        from cloud.db import models as m

        with sessions() as session, session.begin():
            bank = session.execute(
                select(m.Bank.code).join(m.Site, m.Site.bank_id == m.Bank.id)
                .group_by(m.Bank.id, m.Bank.code)
                .order_by(func.count(m.Site.id).desc(), m.Bank.id)).scalars().first()
            if bank is None:
                raise DemoError("the scenario registers no bank with a site")
            self.where = {s.id: s.code for s in session.scalars(select(m.Site))}
            self.loans = {ln.id: ln.code for ln in session.scalars(select(m.Loan))}
            create_user(session, bank_code=bank, email=DEMO_EMAIL, role=DEMO_ROLE)
            token, _ = create_token(session, bank_code=bank, email=DEMO_EMAIL)
        return bank, token

    async def submit(self, gateway_id: str, envelope: bytes) -> None:
        assert self._submit is not None, "on_ready comes before the first batch"
        await self._submit(gateway_id, envelope)

    def on_alert(self, alert: dict[str, Any]) -> None:
        self.alerts += 1
        where = alert.get("site") or alert.get("loan")
        if where is None and self.sessions is not None:
            where = self._where(int(alert["id"]))
        self.io.line(format_alert(alert, where=where))

    def _where(self, alert_id: int) -> str | None:
        from cloud.alerts.models import Alert

        with self.sessions() as session:
            row = session.get(Alert, alert_id)
            if row is None:
                return None
            if row.site_id is not None:
                return self.where.get(row.site_id)
            return self.loans.get(row.loan_id) if row.loan_id is not None else None


def main_demo(opts: DemoOptions, out: TextIO, err: TextIO) -> int:
    """Entry point of the CLI: bad input is one line on ``err`` and exit 1."""
    logging.basicConfig(level=logging.WARNING, stream=err,
                        format="%(levelname)s %(name)s: %(message)s")
    # amqtt reports every dropped client connection (ours, at shutdown) as a warning
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    try:
        return asyncio.run(run_demo(opts, out, err))
    except DemoError as exc:
        err.write(f"pledgewatch demo: {exc}\n")
        return EXIT_ERROR
