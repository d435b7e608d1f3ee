"""The cloud's HTTP app: the composition root of ``pledgewatch cloud serve``.

``create_app(settings)`` returns a FastAPI app whose lifespan owns every resource: the
database engine and session factory (schema migrated to head at start-up), and the ingest
service (its writer task and thread pools), started before the first request and stopped
after the last. (The MQTT consumer and the InfluxDB hook are not wired here yet.)
Nothing here reads the environment; settings come in.

Surface: ``/v1/ingest`` (gateways), the read API ``/v1/sites``, ``/v1/loans``,
``/v1/gateways`` (bearer tokens), ``/healthz``, ``/metrics`` (Prometheus text, unauthenticated,
meant for the internal scrape network), OpenAPI at ``/docs`` and ``/openapi.json``.

Errors the API raises on purpose answer ``{"reason": "<machine word>", "detail": "<prose>"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Protocol

from fastapi import FastAPI, Request, Response, status
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud import read
from cloud.alerts.runtime import start_alerts, stop_alerts
from cloud.api.deps import SessionDep
from cloud.api.routes import alerts, gateways, loans, rules, sites, valuation, webhooks
from cloud.api.schemas import ErrorPublic, HealthPublic
from cloud.dashboard import router as dashboard_router
from cloud.db.models import Base
from cloud.db.session import make_engine, make_sessionmaker
from cloud.errors import CloudError
from cloud.influx import InfluxV1Writer, open_writer
from cloud.ingest.influx_hook import InfluxHook
from cloud.ratelimit import TokenBuckets
from cloud.settings import CloudSettings

__all__ = ["BodyLimitMiddleware", "BodyTooLargeError", "IngestFactory", "IngestRunner",
           "add_error_handlers", "create_app"]


class IngestRunner(Protocol):
    """What the app needs of the ingest service: started and stopped by the lifespan."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# (settings, sessions, on_stored hook or None) -> the ingest service
IngestFactory = Callable[[CloudSettings, sessionmaker[Session], Any], IngestRunner]

# statuses of the CloudErrors the read API raises; anything else is the raiser's to map
_ERROR_STATUS: Final[Mapping[type[CloudError], int]] = {
    read.NotFoundError: status.HTTP_404_NOT_FOUND,
    read.BadCursorError: status.HTTP_400_BAD_REQUEST,
    read.AuthenticationError: status.HTTP_401_UNAUTHORIZED,
}
_REASON_BY_STATUS: Final[Mapping[int, str]] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "too_large", 429: "busy",
}


def _import_ingest() -> tuple[Any, Any]:
    """(IngestService class, ingest router). A missing module is an error, never skipped."""
    try:
        from cloud.api.routes.ingest import router
        from cloud.ingest.service import IngestService
    except ImportError as exc:
        raise ImportError(
            "the cloud app needs cloud.ingest.service.IngestService and "
            f"cloud.api.routes.ingest.router, but importing them failed: {exc}") from exc
    return IngestService, router


def _default_ingest(settings: CloudSettings, factory: sessionmaker[Session],
                    on_stored: Any = None) -> IngestRunner:
    service_cls, _ = _import_ingest()
    runner: IngestRunner = service_cls.from_settings(settings, factory, clock_ms=_wall_clock_ms,
                                                     on_stored=on_stored)
    return runner


async def _cancel_on_exit(coro: Any) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await coro


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _migrate(url: str) -> None:
    """Bring the schema to head: alembic when the migrations module is there, else
    ``create_all`` (tables only, for a tree without migrations)."""
    if importlib.util.find_spec("cloud.db.migrate") is not None:
        from cloud.db.migrate import upgrade

        upgrade(url)
        return
    engine = make_engine(url)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()


def create_app(settings: CloudSettings, *, ingest: IngestFactory | None = None) -> FastAPI:
    """The cloud app for ``settings``. ``ingest`` builds the ingest service (default: the real
    :class:`cloud.ingest.service.IngestService`); the lifespan starts and stops it."""
    ingest_factory = ingest or _default_ingest
    _, ingest_router = _import_ingest()  # fail at build time, not at the first request
    registry = CollectorRegistry(auto_describe=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        factory = make_sessionmaker(engine)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = factory
        writer = open_writer(v1_url=settings.influx_v1_url, v1_db=settings.influx_v1_db,
                             url=settings.influx_url, token=settings.influx_token,
                             org=settings.influx_org, bucket=settings.influx_bucket)
        try:
            hook = None
            if writer is not None:
                if isinstance(writer, InfluxV1Writer):
                    await writer.ensure_db()
                hook = InfluxHook(writer=writer, sessions=factory)
            app.state.influx = hook
            rules = None
            if settings.rules_enabled:
                from cloud.domain.runner import RulesRunner

                rules = RulesRunner(factory, clock_ms=_wall_clock_ms,
                                    interval_s=settings.rules_interval_s)
            app.state.rules = rules
            service = ingest_factory(settings, factory, hook)
            app.state.ingest = service
            collector = _IngestCollector(service)
            registry.register(collector)
            try:
                await service.start()
                try:
                    await start_alerts(app, factory, _wall_clock_ms)
                    async with asyncio.TaskGroup() as tg:
                        mqtt_task = None
                        rules_task = (None if rules is None else
                                      tg.create_task(_cancel_on_exit(rules.run()),
                                                     name="rules"))
                        if settings.mqtt_host:
                            from cloud.ingest.mqtt import MqttIngest

                            app.state.mqtt = MqttIngest(
                                host=settings.mqtt_host, port=settings.mqtt_port,
                                service=service,  # type: ignore[arg-type]
                                client_id=settings.mqtt_client_id,
                                topic=settings.mqtt_topic)
                            mqtt_task = tg.create_task(app.state.mqtt.run(),
                                                       name="mqtt-ingest")
                        try:
                            yield
                        finally:
                            if mqtt_task is not None:
                                mqtt_task.cancel()
                            if rules_task is not None:
                                rules_task.cancel()
                finally:
                    await stop_alerts(app)
                    await service.stop()
            finally:
                registry.unregister(collector)
        finally:
            if writer is not None:
                await writer.aclose()
            engine.dispose()

    app = FastAPI(
        title="pledgewatch cloud",
        summary="Verified ingest of gateway batches and a bank-scoped read API.",
        version="0.1.0",
        lifespan=lifespan,
        responses={401: {"model": ErrorPublic, "description": "Missing or bad bearer token"}},
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.rate_limit = TokenBuckets(settings.api_rate_per_s, settings.api_burst)

    requests = Counter("pledgewatch_http_requests", "HTTP requests by route and status",
                       ["method", "route", "status"], registry=registry)
    app.add_middleware(_MetricsMiddleware, counter=requests)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    add_error_handlers(app)

    app.include_router(ingest_router)
    for module in (sites, loans, gateways, alerts, webhooks, rules, valuation):
        app.include_router(module.router)
    app.include_router(dashboard_router)  # /dashboard/ (static page) and / -> /dashboard/

    @app.get("/healthz", response_model=HealthPublic, tags=["ops"],
             responses={503: {"model": HealthPublic, "description": "Database unreachable"}})
    def healthz(session: SessionDep, response: Response) -> HealthPublic:
        ok = read.database_ok(session)
        if not ok:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return HealthPublic(status="ok" if ok else "degraded", database=ok)

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _error_body(reason: str, detail: str) -> dict[str, str]:
    return ErrorPublic(reason=reason, detail=detail).model_dump()


def add_error_handlers(app: FastAPI) -> None:
    """Answer every ``HTTPException`` and the read API's errors as ``ErrorPublic``."""
    async def on_http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail
        if isinstance(detail, dict) and "reason" in detail:
            body = _error_body(str(detail["reason"]), str(detail.get("detail", "")))
        else:
            body = _error_body(_REASON_BY_STATUS.get(exc.status_code, "error"), str(detail))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_read_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CloudError)
        code = next(s for cls, s in _ERROR_STATUS.items() if isinstance(exc, cls))
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        return JSONResponse(_error_body(exc.reason, str(exc)), status_code=code,
                            headers=headers)

    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for cls in _ERROR_STATUS:
        app.add_exception_handler(cls, on_read_error)


class BodyTooLargeError(HTTPException):
    """Raised out of ``receive()`` when a body without (or lying about) Content-Length grows
    past the cap. An ``HTTPException`` so FastAPI's body parsing re-raises it as is."""

    def __init__(self, limit: int) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE,
                         detail={"reason": "too_large",
                                 "detail": f"request body exceeds {limit} bytes"})


class BodyLimitMiddleware:
    """413 for a request body over ``max_body_bytes``: at once from ``Content-Length``, or as
    soon as a streamed body passes the cap (nothing past the cap is read)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_json(send, 413, _error_body(
                "too_large", f"request body of {declared} bytes exceeds {limit} bytes"))
            return

        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLargeError as exc:
            if started:
                raise
            assert isinstance(exc.detail, dict)
            await _send_json(send, 413, exc.detail)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, code: int, body: Mapping[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": code,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


class _MetricsMiddleware:
    """Counts requests by method, route template (``/v1/sites/{site_id}/devices``, never the
    raw path, so label cardinality stays bounded; ``unmatched`` for 404s of no route) and
    status."""

    def __init__(self, app: ASGIApp, *, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        code = 500

        async def tracked_send(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.counter.labels(scope["method"], template, str(code)).inc()


class _IngestCollector(Collector):
    """Exports the ingest service's counters (``service.stats``: integer fields become
    ``pledgewatch_ingest_<field>_total``; ``rejected`` (reason -> count) becomes
    ``pledgewatch_ingest_rejected_total{reason=...}``) and its queue ``depth`` as a gauge.
    Read at scrape time, so the service keeps plain integers and knows nothing of Prometheus.
    """

    def __init__(self, service: object) -> None:
        self.service = service

    def collect(self) -> Iterable[Metric]:
        stats = getattr(self.service, "stats", None)
        fields = vars(stats) if stats is not None and hasattr(stats, "__dict__") else {}
        for name, value in sorted(fields.items()):
            if isinstance(value, Mapping):
                family = CounterMetricFamily(f"pledgewatch_ingest_{name}",
                                             f"ingest batches {name}, by reason",
                                             labels=["reason"])
                for reason, count in sorted(value.items()):
                    family.add_metric([str(reason)], float(count))
                yield family
            elif isinstance(value, int | float) and not isinstance(value, bool):
                yield CounterMetricFamily(f"pledgewatch_ingest_{name}", f"ingest {name}",
                                          value=float(value))
        depth = getattr(self.service, "depth", None)
        if isinstance(depth, int):
            yield GaugeMetricFamily("pledgewatch_ingest_queue_depth",
                                    "batches admitted and not yet answered", value=depth)
