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


def test_running_rows_from_before_leases_get_a_lapsed_lease(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import text

    from db.repositories import leases as leases_repo
    from db.session import session_scope

    url = f"sqlite:///{tmp_path / 'pre-lease.db'}"
    command.upgrade(alembic_config(url), "0006")  # a database from before 0008
    engine = create_db_engine(url)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO jobs (id, status, queue, created_at, updated_at) "
                    "VALUES (1, 'running', 'q', :now, :now)"
                ),
                {"now": now},
            )
            for sid, state, owner in ((1, "running", None), (2, "running", "w@h:7"),
                                      (3, "queued", None)):  # fmt: skip
                conn.execute(
                    text(
                        "INSERT INTO studies (id, job_id, position, filename, input_png, "
                        "status, attempts, requeues, started_at, lease_owner, lease_expires_at) "
                        "VALUES (:id, 1, :id, 's.png', x'00', :state, 1, 0, :now, :owner, "
                        ":expires)"
                    ),
                    {"id": sid, "state": state, "now": now, "owner": owner,
                     "expires": now.replace(year=now.year + 1) if owner else None},
                )  # fmt: skip
        upgrade_to_head(url)
        with session_scope(url) as session:
            lost = leases_repo.recoverable(session, now)
        assert lost == {1: "before-leases:0"}, "the pre-lease row is taken back, the held one not"
    finally:
        engine.dispose()
