"""Runs the :class:`~cloud.domain.engine.DomainEngine` inside ``cloud serve``.

The engine needs every batch of every gateway of a site, whichever cloud process ingested
it (several processes share one database and split the MQTT subscription), so it does not
listen to this process's ingest: it tails the ``ingested_batches`` table. Each step reads
the batches received since the last one, with an overlap of :data:`TAIL_OVERLAP_MS`
because a batch committed by another process can become visible after a later one; the
``(gateway_id, seq)`` already handed to the engine are remembered for that window, so none
is applied twice. Run the rules in exactly one process (``PLEDGEWATCH_RULES_ENABLED=false``
on the others).

:meth:`RulesRunner.run` evaluates every ``interval_s`` in a worker thread (never on the
event loop) and re-reads the registry every ``reload_s`` (new pledges, release orders,
prices). After a restart the engine state is rebuilt from the stored readings of the last
``baseline_days`` + 2 days without writing their alerts again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.alerts.service import rule_params
from cloud.db.models import IngestedBatch
from cloud.db.models import Reading as ReadingRow
from cloud.domain.engine import DomainEngine
from cloud.domain.model import DAY_MS, RuleParams
from protocols.uplink import Batch, Reading

__all__ = ["TAIL_OVERLAP_MS", "RulesRunner"]

log = logging.getLogger(__name__)

TAIL_OVERLAP_MS: Final = 60_000  # a batch may become visible this long after a later one
_IN_CHUNK: Final = 500


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
        self.sessions = sessions
        self._seen: dict[tuple[str, int], int] = {}  # (gateway, seq) -> received_ms
        self._since_ms = 0
        self.errors = 0

    def _warm(self) -> int:
        params = self.engine.default_params
        now = self.clock_ms()
        replayed = self.engine.warm_start(now - (params.baseline_days + 2) * DAY_MS)
        self._seen = {key: now for key in replayed}
        self._since_ms = now
        return self.engine.stats.readings

    def _tail(self) -> int:
        """Hand the engine every batch received since the last step. Returns how many."""
        with self.sessions() as session:
            batches = session.execute(
                select(IngestedBatch.id, IngestedBatch.gateway_id, IngestedBatch.seq,
                       IngestedBatch.created_ms, IngestedBatch.received_ms)
                .where(IngestedBatch.received_ms >= self._since_ms - TAIL_OVERLAP_MS)
                .order_by(IngestedBatch.received_ms, IngestedBatch.id)).all()
            new = [b for b in batches if (b.gateway_id, b.seq) not in self._seen]
            readings: dict[int, list[Reading]] = collections.defaultdict(list)
            ids = [b.id for b in new]
            for lo in range(0, len(ids), _IN_CHUNK):
                rows = session.execute(
                    select(ReadingRow.batch_id, ReadingRow.kind, ReadingRow.device_id,
                           ReadingRow.ts_ms, ReadingRow.recv_ms, ReadingRow.data)
                    .where(ReadingRow.batch_id.in_(ids[lo:lo + _IN_CHUNK]))
                    .order_by(ReadingRow.id))
                for batch_id, kind, device_id, ts_ms, recv_ms, data in rows:
                    readings[batch_id].append(Reading(kind, device_id, ts_ms, recv_ms, data))
        for b in new:
            self._seen[(b.gateway_id, b.seq)] = b.received_ms
            self._since_ms = max(self._since_ms, b.received_ms)
            self.engine.on_batch(b.gateway_id, Batch(b.gateway_id, b.seq, b.created_ms,
                                                     tuple(readings.get(b.id, ()))))
        horizon = self._since_ms - 2 * TAIL_OVERLAP_MS
        if len(self._seen) > 4 * len(new) + 1000:
            self._seen = {k: v for k, v in self._seen.items() if v >= horizon}
        return len(new)

    def _step(self, reload: bool) -> int:
        if reload:
            self.engine.load()
        self._tail()
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
