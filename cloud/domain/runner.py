"""Runs the :class:`~cloud.domain.engine.DomainEngine` inside ``cloud serve``.

The ingest hands every committed batch to :meth:`RulesRunner.on_stored` (in the event loop,
cheap: it only buffers); :meth:`RulesRunner.run` evaluates every ``interval_s`` in a worker
thread and re-reads the registry every ``reload_s`` (new pledges, release orders, prices).
One lock serialises the two, so the engine sees one thread at a time. After a restart the
engine is rebuilt from the stored readings of the last ``warm_days``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cloud.alerts.service import rule_params
from cloud.domain.engine import DomainEngine
from cloud.domain.model import DAY_MS, RuleParams

__all__ = ["RulesRunner"]

log = logging.getLogger(__name__)


class RulesRunner:
    def __init__(self, sessions: sessionmaker[Session], *, clock_ms: Callable[[], int],
                 interval_s: float = 2.0, reload_s: float = 60.0,
                 params: RuleParams | None = None) -> None:
        # per bank/site overrides set through PUT /v1/rules, re-read with the registry
        self.engine = DomainEngine(sessions, clock_ms=clock_ms, params=params,
                                   params_for=rule_params)
        self.clock_ms = clock_ms
        self.interval_s = interval_s
        self.reload_s = reload_s
        self._lock = threading.Lock()
        self.errors = 0

    async def on_stored(self, gateway_id: str, batch: Any) -> None:
        with self._lock:
            self.engine.on_batch(gateway_id, batch)

    def _warm(self) -> int:
        params = self.engine.default_params
        since = self.clock_ms() - (params.baseline_days + 2) * DAY_MS
        with self._lock:
            return self.engine.warm_start(since)

    def _step(self, reload: bool) -> int:
        with self._lock:
            if reload:
                self.engine.load()
            return self.engine.step()

    async def run(self) -> None:
        n = await asyncio.to_thread(self._warm)
        log.info("rules engine warm: %d stored readings replayed", n)
        last_reload = time.monotonic()
        while True:
            await asyncio.sleep(self.interval_s)
            reload = time.monotonic() - last_reload >= self.reload_s
            if reload:
                last_reload = time.monotonic()
            try:
                await asyncio.to_thread(self._step, reload)
            except Exception:  # a database blip must not end the rules for good
                self.errors += 1
                log.exception("rules step failed; retrying in %.1f s", self.interval_s)
