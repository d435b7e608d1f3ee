"""The ``on_stored`` hook that copies each stored batch to InfluxDB (when configured)."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.db.models import Gateway, Site
from cloud.influx import InfluxWriter, to_line_protocol
from protocols.uplink import Batch

__all__ = ["InfluxHook"]

log = logging.getLogger("pledgewatch.cloud.influx")


class InfluxHook:
    """Writes a batch's readings as line protocol, tagged with the gateway's site code.
    Errors propagate to the ingest service, which logs and counts them (the batch stays
    stored in the database either way)."""

    def __init__(self, *, writer: InfluxWriter, sessions: sessionmaker[Session]) -> None:
        self.writer = writer
        self.sessions = sessions
        self._sites: dict[str, str] = {}
        self.written = 0

    def _site_code(self, gateway_id: str) -> str:
        if gateway_id not in self._sites:
            with self.sessions() as s:
                code = s.execute(select(Site.code).join(Gateway, Gateway.site_id == Site.id)
                                 .where(Gateway.gateway_id == gateway_id)).scalar_one()
            self._sites[gateway_id] = code
        return self._sites[gateway_id]

    async def __call__(self, gateway_id: str, batch: Batch) -> None:
        site = await asyncio.to_thread(self._site_code, gateway_id)
        lines = to_line_protocol(site, batch.readings)
        if lines:
            await self.writer.write(lines)
            self.written += len(lines)
