"""Fixtures of the alert tests: the seeded two-bank world (``helpers.seed``) on a SQLite file
and on a real PostgreSQL, and the cloud app on that database with short polling intervals.

``db_url`` overrides the one of ``tests/cloud/conftest.py``: the schema is migrated and the
world seeded once per session (a SQLite file that every test gets a copy of; one PostgreSQL
database whose alert tables are emptied after each test), which is much faster than
migrating per test.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cloud.alerts.runtime import AlertsConfig
from cloud.alerts.stream import StreamConfig
from cloud.alerts.webhooks import DispatcherConfig
from cloud.api.app import create_app
from cloud.db.migrate import upgrade
from cloud.db.session import make_engine, make_sessionmaker
from cloud.settings import CloudSettings
from tests.cloud.alerts.helpers import SeededBank, seed

FAST = AlertsConfig(
    stream=StreamConfig(poll_s=0.02, heartbeat_s=0.2),
    dispatcher=DispatcherConfig(poll_s=0.02, timeout_s=5.0, base_backoff_ms=20,
                                max_backoff_ms=100, max_attempts=4),
)
World = dict[str, SeededBank]
# children first (foreign keys)
_ALERT_TABLES = ("webhook_deliveries", "alert_events", "alert_comments", "alerts", "webhooks",
                 "rule_configs", "valuations", "animal_status")


def _migrate_and_seed(url: str) -> World:
    upgrade(url)
    engine = make_engine(url)
    try:
        return seed(make_sessionmaker(engine))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, World]:
    path = tmp_path_factory.mktemp("alerts-template") / "template.db"
    return path, _migrate_and_seed(f"sqlite:///{path}")


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> tuple[str, World]:
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text('CREATE DATABASE "alerts_template"'))
    finally:
        admin.dispose()
    url = make_url(pg_server).set(database="alerts_template")
    return "alerts_template", _migrate_and_seed(url.render_as_string(hide_password=False))


@pytest.fixture(scope="session")
def pg_database(pg_server: str, pg_template: tuple[str, World]) -> str:
    """One database on the session's PostgreSQL, seeded (the template itself: creating a
    database per test costs a checkpoint, about a second on a busy machine)."""
    name, _ = pg_template
    return make_url(pg_server).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The seeded world: a fresh copy of the SQLite template file, or the PostgreSQL
    database with the alert tables emptied after each test."""
    if request.param == "sqlite":
        template, _ = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "cloud.db")
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
        return
    url = request.getfixturevalue("pg_database")
    yield url
    engine = create_engine(url)
    try:  # back to the seeded state: only the alert tables are written by these tests
        with engine.begin() as conn:
            for table in _ALERT_TABLES:
                conn.execute(text(f"DELETE FROM {table}"))
    finally:
        engine.dispose()


@pytest.fixture
def world(request: pytest.FixtureRequest, db_url: str) -> World:
    """The seeded banks of the database ``db_url`` was copied from."""
    which = "pg_template" if db_url.startswith("postgresql") else "sqlite_template"
    _, banks = request.getfixturevalue(which)
    return banks  # type: ignore[no-any-return]


def make_app(db_url: str, config: AlertsConfig = FAST) -> FastAPI:
    settings = CloudSettings(_env_file=None, database_url=db_url,  # type: ignore[call-arg]
                             secret_key="alerts-test-secret")
    app = create_app(settings)
    app.state.alerts_config = config
    return app


@pytest.fixture
def client(db_url: str, world: World) -> Iterator[TestClient]:
    with TestClient(make_app(db_url)) as c:
        yield c
