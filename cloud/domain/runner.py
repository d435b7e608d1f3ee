"""Runs the :class:`~cloud.domain.engine.DomainEngine` inside ``cloud serve``.

The ingest hands every committed batch to :meth:`RulesRunner.on_stored` (in the event loop;
it only appends to an inbox, never waits); :meth:`RulesRunner.run` drains the inbox and
evaluates every ``interval_s`` in a worker thread, and re-reads the registry every
``reload_s`` (new pledges, release orders, prices). After a restart the engine state is
rebuilt from the stored readings of the last ``baseline_days`` + 2 days without writing
their alerts again; batches the ingest hands over that the rebuild already read are
skipped.
"""

from __future__ import annotations

import asyncio
import collections
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
        self._inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self._replayed: set[tuple[str, int]] = set()
        self.errors = 0

    async def on_stored(self, gateway_id: str, batch: Any) -> None:
        # never wait for the engine on the event loop: the worker drains this inbox
        self._inbox.append((gateway_id, batch))

    def _drain(self) -> None:
        while self._inbox:
            gateway_id, batch = self._inbox.popleft()
            if (gateway_id, batch.seq) in self._replayed:
                continue  # committed while the warm start read it: already in the state
            self.engine.on_batch(gateway_id, batch)

    def _warm(self) -> int:
        params = self.engine.default_params
        since = self.clock_ms() - (params.baseline_days + 2) * DAY_MS
        with self._lock:
            self._replayed = self.engine.warm_start(since)
            return self.engine.stats.readings

    def _step(self, reload: bool) -> int:
        with self._lock:
            if reload:
                self.engine.load()
            self._drain()
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
