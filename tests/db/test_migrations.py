"""Alembic migrations bring fresh and older databases to head, idempotently."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import inspect

from db.migrate import alembic_config, current_revision, head_revision, upgrade_to_head
from db.session import create_db_engine

TABLES = {
    "jobs",
    "studies",
    "results",
    "model_versions",
    "api_keys",
    "archive_entries",
    "lesions",
    "alembic_version",
}


def test_fresh_sqlite_database_is_upgraded_to_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'fresh.db'}"
    assert upgrade_to_head(url) == head_revision()
    engine = create_db_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            assert mode == "wal"
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_restores_an_older_database(db_url: str) -> None:
    assert upgrade_to_head(db_url) == head_revision()  # already at head: no-op
    engine = create_db_engine(db_url)
    try:
        names = set(inspect(engine).get_table_names())
        assert {"jobs", "studies", "results", "model_versions"} <= names
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
    finally:
        engine.dispose()


def test_database_at_base_is_brought_up_to_date(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade_to_head(url)
    command.downgrade(alembic_config(url), "base")  # an "older" database: no tables
    engine = create_db_engine(url)
    try:
        assert "jobs" not in inspect(engine).get_table_names()
        upgrade_to_head(url)
        assert set(inspect(create_db_engine(url)).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_migrations_build_the_schema_the_models_declare(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.models import Base

    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
