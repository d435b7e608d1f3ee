"""Wiring of the alert package into the app's lifespan: the webhook dispatcher task, the
flag that ends SSE streams at shutdown, and the dispatcher's Prometheus counters.

``app.state.alerts_config`` (an :class:`AlertsConfig`) may be set before the app starts to
tune polling (tests use short intervals); otherwise the defaults apply.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable

from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from cloud.alerts.stream import StreamConfig
from cloud.alerts.webhooks import DispatcherConfig, WebhookDispatcher

__all__ = ["AlertsConfig", "alerts_config", "start_alerts", "stop_alerts", "stop_streams",
           "streams_stop_flag"]


@dataclasses.dataclass(frozen=True, slots=True)
class AlertsConfig:
    stream: StreamConfig = dataclasses.field(default_factory=StreamConfig)
    dispatcher: DispatcherConfig = dataclasses.field(default_factory=DispatcherConfig)
    webhooks_enabled: bool = True  # run the dispatcher in this process


def alerts_config(app: FastAPI) -> AlertsConfig:
    config = getattr(app.state, "alerts_config", None)
    return config if isinstance(config, AlertsConfig) else AlertsConfig()


def streams_stop_flag(app: FastAPI) -> threading.Event:
    """Set when SSE streams must end (thread-safe: a signal handler may set it)."""
    flag = getattr(app.state, "alerts_streams_stop", None)
    if not isinstance(flag, threading.Event):
        flag = threading.Event()
        app.state.alerts_streams_stop = flag
    return flag


def stop_streams(app: FastAPI) -> None:
    """End every open SSE stream at its next poll. Servers that wait for open responses
    before running the lifespan's shutdown (uvicorn) must call this when asked to exit."""
    streams_stop_flag(app).set()


class _DispatcherCollector(Collector):
    def __init__(self, dispatcher: WebhookDispatcher) -> None:
        self.dispatcher = dispatcher

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("pledgewatch_webhook_deliveries",
                                     "webhook delivery attempts by outcome",
                                     labels=["outcome"])
        for field in dataclasses.fields(self.dispatcher.stats):
            family.add_metric([field.name], float(getattr(self.dispatcher.stats, field.name)))
        yield family


async def start_alerts(app: FastAPI, sessions: sessionmaker[Session],
                       clock_ms: Callable[[], int]) -> None:
    """Start the webhook dispatcher (unless disabled) and arm the streams' stop flag."""
    streams_stop_flag(app).clear()
    config = alerts_config(app)
    app.state.webhook_dispatcher = None
    if not config.webhooks_enabled:
        return
    dispatcher = WebhookDispatcher(sessions=sessions, clock_ms=clock_ms,
                                   config=config.dispatcher)
    await dispatcher.start()
    app.state.webhook_dispatcher = dispatcher
    registry = getattr(app.state, "registry", None)
    if registry is not None:
        collector = _DispatcherCollector(dispatcher)
        registry.register(collector)
        app.state.webhook_collector = collector


async def stop_alerts(app: FastAPI) -> None:
    stop_streams(app)
    dispatcher = getattr(app.state, "webhook_dispatcher", None)
    if dispatcher is None:
        return
    collector = getattr(app.state, "webhook_collector", None)
    if collector is not None:
        app.state.registry.unregister(collector)
        app.state.webhook_collector = None
    await dispatcher.stop()
    app.state.webhook_dispatcher = None
