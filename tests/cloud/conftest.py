"""Cloud test fixtures: a migrated database (SQLite file, and a real PostgreSQL), a registered
gateway with its Ed25519 key, and real gateway-built envelopes (through the gateway's own
``Outbox``)."""

from __future__ import annotations

import importlib.util
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import models
from cloud.db.session import make_engine, make_sessionmaker
from protocols.uplink import Reading

T0_MS = 1_767_225_600_000  # 2026-01-01
_db_counter = itertools.count(1)


def _postgres() -> Any:
    try:
        from tests.services import postgres
    except ImportError as exc:  # never a skip: PostgreSQL is a supported store
        pytest.fail(f"tests.services.postgres is missing ({exc}); the PostgreSQL runs of the "
                    f"ingest tests need it")
    return postgres


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One throwaway PostgreSQL cluster for the session; each test gets its own database."""
    with _postgres()(tmp_path_factory.mktemp("pg"), fsync=False) as url:
        yield url


def _create_schema(url: str) -> None:
    if importlib.util.find_spec("cloud.db.migrate") is not None:
        from cloud.db.migrate import upgrade

        upgrade(url)
        return
    engine = create_engine(url)
    try:
        models.Base.metadata.create_all(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a fresh database on a real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cloud.db'}"
        _create_schema(url)
        yield url
        return
    server: str = request.getfixturevalue("pg_server")
    name = f"ingest_{next(_db_counter)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    _create_schema(url)
    yield url
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass
class Db:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    engines: list[Engine] = field(default_factory=list)

    def another_sessionmaker(self) -> sessionmaker[Session]:
        """A session factory on its own engine (its own connections), like another process."""
        engine = make_engine(self.url)
        self.engines.append(engine)
        return make_sessionmaker(engine)

    def add_gateway(self, gateway_id: str, key: Ed25519PrivateKey, *,
                    disabled: bool = False, site_code: str | None = None) -> int:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        with self.sessions.begin() as s:
            bank = s.scalar(select(models.Bank).where(models.Bank.code == "bank1"))
            if bank is None:
                bank = models.Bank(code="bank1", name="Bank One")
                s.add(bank)
                s.flush()
            site = models.Site(bank_id=bank.id, code=site_code or f"site-{gateway_id}",
                               name="Ranch", kind="ranch")
            s.add(site)
            s.flush()
            s.add(models.Gateway(gateway_id=gateway_id, site_id=site.id, public_key=raw,
                                 disabled=disabled, last_seq=0))
            return site.id

    def set_disabled(self, gateway_id: str, disabled: bool) -> None:
        with self.sessions.begin() as s:
            gw = s.scalar(select(models.Gateway).where(models.Gateway.gateway_id == gateway_id))
            assert gw is not None
            gw.disabled = disabled

    def counts(self) -> dict[str, int]:
        """Rows in every table ingest writes (and the gateway's last_seq / last_seen)."""
        out: dict[str, int] = {}
        with self.sessions() as s:
            for model in (models.IngestedBatch, models.Reading, models.WeighTicket,
                          models.FeedEvent, models.Position, models.Device):
                out[model.__tablename__] = int(s.scalar(select(func.count())
                                                        .select_from(model)) or 0)
            for gw in s.scalars(select(models.Gateway)):
                out[f"last_seq:{gw.gateway_id}"] = gw.last_seq
                out[f"last_seen:{gw.gateway_id}"] = gw.last_seen_ms or 0
        return out


@pytest.fixture
def db(db_url: str) -> Iterator[Db]:
    engine = make_engine(db_url)
    d = Db(db_url, engine, make_sessionmaker(engine))
    try:
        yield d
    finally:
        for e in [engine, *d.engines]:
            e.dispose()


def reading_mix(n: int, seed: int = 1, t0_ms: int = T0_MS) -> list[Reading]:
    """Every kind the cloud projects or tracks, mostly tag sightings like a real ranch."""
    rng = random.Random(seed)
    out: list[Reading] = []
    t = t0_ms
    for i in range(n):
        t += rng.randint(1, 50)
        x = i % 20
        if x == 0:
            out.append(Reading("position", f"gps:truck{i % 3}", t, t + 5,
                               {"lat": -31.4 + rng.random() / 100, "lon": -64.2, "fix": True}))
        elif x == 1:
            out.append(Reading("feed_event", "digistar:mixer1", t, t + 5,
                               {"event": "unload", "kg": 120.5, "pen": "P3"}))
        elif x == 2:
            out.append(Reading("weigh_ticket", "xk3190:bridge1", t, t + 5, {
                "gross_kg": 30000, "tare_kg": 12000.5, "net_kg": 17999.5,
                "truck_id": f"AB{i}", "in_ms": t - 60_000, "out_ms": t,
                "direction": "inbound"}))
        elif x == 3:
            out.append(Reading("device_online", "r2000:gate1", t, t + 5, {}))
        elif x == 4:
            out.append(Reading("weight", "toledo:chute1", t, t + 5,
                               {"weight_kg": 412.5, "stable": True}))
        else:
            out.append(Reading("tag_sighting", f"r2000:gate{i % 2}", t, t + 5, {
                "epc": f"E2801160600002{rng.getrandbits(40):010X}", "antenna": 1 + i % 4,
                "count": rng.randint(1, 30), "first_ms": t - 1000, "last_ms": t,
                "rssi_max_dbm": -55.5}))
    return out


def gateway_envelopes(path: Path, gateway_id: str, key: Ed25519PrivateKey,
                      readings: list[Reading], per_batch: int) -> list[bytes]:
    """Envelopes exactly as a gateway builds them: through its durable outbox."""
    from gateway.outbox import Outbox

    clock = itertools.count(T0_MS, 1000)
    out: list[bytes] = []
    with Outbox(path, gateway_id=gateway_id, disk_budget_bytes=1 << 30,
                clock_ms=lambda: next(clock), synchronous="NORMAL") as ob:
        ob.append(readings)
        while (batch := ob.next_batch(per_batch, 4_000_000, key)) is not None:
            out.append(batch.envelope)
            ob.ack(batch.seq)
    return out
