"""The alembic migrations build exactly the schema of ``cloud.db.models`` on SQLite and on a
real PostgreSQL, and running them again changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, pool, text

from cloud.db.migrate import (
    MIGRATIONS_DIR,
    MigrationError,
    current_revision,
    head_revision,
    schema_diff,
    upgrade,
)
from cloud.db.models import Base
from tests.services import postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
    else:
        with postgres(tmp_path, fsync=False) as url:
            yield url


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_on_an_empty_database_builds_the_models_schema(empty_db: str) -> None:
    assert current_revision(empty_db) is None
    assert schema_diff(empty_db)  # an empty database differs from the models

    upgrade(empty_db)

    assert current_revision(empty_db) == head_revision()
    assert _tables(empty_db) == set(Base.metadata.tables) | {"alembic_version"}
    assert schema_diff(empty_db) == []


def test_upgrade_twice_is_a_no_op(empty_db: str) -> None:
    upgrade(empty_db)
    engine = create_engine(empty_db)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO banks (code, name) VALUES ('b1', 'Bank One')"))
        upgrade(empty_db)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT code, name, created_at FROM banks")).all()
    finally:
        engine.dispose()
    assert [(code, name) for code, name, _ in rows] == [("b1", "Bank One")]
    assert rows[0][2] is not None  # the portable server default filled created_at
    assert current_revision(empty_db) == head_revision()
    assert schema_diff(empty_db) == []


def test_sqlite_migration_leaves_foreign_keys_enforced_for_the_app(tmp_path: Path) -> None:
    from sqlalchemy.exc import IntegrityError

    from cloud.db.session import make_engine

    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO sites (bank_id, code, name, kind) "
                              "VALUES (999, 's', 'S', 'ranch')"))
    finally:
        engine.dispose()


def test_a_broken_database_url_is_a_migration_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'cloud.db'}"
    with pytest.raises(MigrationError) as info:
        upgrade(url)
    assert info.value.reason == "migration_failed"


def test_migrations_ship_as_files_next_to_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py")) == [
        "0001_initial.py", "0002_alerts.py", "0003_batch_signature.py",
        "0004_animal_entry_date.py"]
    assert head_revision() == "0004"


def _columns(url: str, table: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        return {c["name"]: c for c in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def _downgrade(url: str, revision: str) -> None:
    """``alembic downgrade`` (not offered by cloud.db.migrate: the cloud only moves up)."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":  # as cloud.db.migrate does for batch mode
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            cfg.attributes["connection"] = conn
            with conn.begin():
                command.downgrade(cfg, revision)
    finally:
        engine.dispose()


def test_0003_adds_a_nullable_batch_signature_and_goes_back_down(empty_db: str) -> None:
    upgrade(empty_db, "0002")
    engine = create_engine(empty_db)
    old_row = {"gateway_id": "gw-1", "seq": 7, "created_ms": 1, "received_ms": 2,
               "readings": 3}
    insert_row = text("INSERT INTO ingested_batches (gateway_id, seq, created_ms, received_ms,"
                      " readings) VALUES (:gateway_id, :seq, :created_ms, :received_ms, "
                      ":readings)")
    select_rows = text("SELECT gateway_id, seq, created_ms, received_ms, readings "
                       "FROM ingested_batches")
    try:
        with engine.begin() as conn:
            conn.execute(insert_row, old_row)
        assert "signature" not in _columns(empty_db, "ingested_batches")

        upgrade(empty_db, "0003")
        assert current_revision(empty_db) == "0003"
        assert _columns(empty_db, "ingested_batches")["signature"]["nullable"]
        with engine.begin() as conn:
            assert conn.execute(text("SELECT seq, signature FROM ingested_batches")).all() \
                == [(7, None)]  # a row from before: no signature, kept
            conn.execute(text("INSERT INTO ingested_batches (gateway_id, seq, created_ms, "
                              "received_ms, readings, signature) VALUES ('gw-1', 8, 1, 2, "
                              "3, :sig)"), {"sig": bytes(range(64))})
            assert bytes(conn.execute(text("SELECT signature FROM ingested_batches WHERE "
                                           "seq = 8")).scalar_one()) == bytes(range(64))

        _downgrade(empty_db, "0002")
        assert current_revision(empty_db) == "0002"
        assert "signature" not in _columns(empty_db, "ingested_batches")
        with engine.connect() as conn:
            assert [r.seq for r in conn.execute(select_rows)] == [7, 8]  # rows survive

        upgrade(empty_db)
        assert current_revision(empty_db) == head_revision()
        assert schema_diff(empty_db) == []  # the models' column, as 0003 makes it
    finally:
        engine.dispose()
