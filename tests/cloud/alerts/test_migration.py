"""Migration 0002 on SQLite and PostgreSQL: upgrading builds exactly the alert models'
tables (nothing for autogenerate to add), with the write-lock row; downgrading to 0001 drops
them and leaves the registry and its data alone; upgrading again works."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, pool, text
from sqlalchemy.engine import make_url

from cloud.alerts import models as alert_models
from cloud.db.migrate import (
    MIGRATIONS_DIR,
    current_revision,
    head_revision,
    schema_diff,
    upgrade,
)
from cloud.db.models import Base

ALERT_TABLES = {"alerts", "alert_events", "alert_comments", "alert_write_lock", "webhooks",
                "webhook_deliveries", "rule_configs", "valuations", "animal_status"}
_names = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: str = request.getfixturevalue("pg_server")
    name = f"alerts_migration_{next(_names)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _downgrade(url: str, revision: str) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            cfg.attributes["connection"] = conn
            with conn.begin():
                command.downgrade(cfg, revision)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    assert set(Base.metadata.tables) >= ALERT_TABLES  # cloud.alerts.models is on Base
    assert Base.metadata.tables["alerts"] is alert_models.Alert.__table__
    upgrade(empty_url, "0001")
    assert not ALERT_TABLES & _tables(empty_url)
    engine = create_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO banks (code, name) VALUES ('b1', 'Bank One')"))
    finally:
        engine.dispose()

    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
    assert _tables(empty_url) >= ALERT_TABLES
    assert schema_diff(empty_url) == []
    engine = create_engine(empty_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, generation FROM alert_write_lock")).all() \
                == [(1, 0)]
    finally:
        engine.dispose()

    _downgrade(empty_url, "0001")
    assert current_revision(empty_url) == "0001"
    assert not ALERT_TABLES & _tables(empty_url)
    engine = create_engine(empty_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT code FROM banks")).scalars().all() == ["b1"]
    finally:
        engine.dispose()

    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
    assert schema_diff(empty_url) == []
