"""Migration 0003: existing jobs become API jobs; the archive table comes and goes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import inspect, text

from db.migrate import alembic_config, head_revision, upgrade_to_head
from db.session import create_db_engine


def test_0003_marks_existing_jobs_as_api_jobs_and_downgrades_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0002")
    engine = create_db_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO jobs (status, queue, created_at, updated_at) "
                    "VALUES ('succeeded', 'tumorseg.batch', '2026-01-01', '2026-01-01')"
                )
            )
        assert upgrade_to_head(url) == head_revision()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT source FROM jobs")).scalar_one() == "api"
        unique = inspect(engine).get_unique_constraints("archive_entries")
        assert {"content_hash", "model_version"} in [set(u["column_names"]) for u in unique]
        command.downgrade(alembic_config(url), "0002")
        engine.dispose()
        names = set(inspect(engine).get_table_names())
        assert "archive_entries" not in names
        assert "jobs" in names
    finally:
        engine.dispose()
