"""Migration 0009: the PACS tables come and go, and leave the rest of the schema alone."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import inspect

from db.migrate import alembic_config, head_revision, upgrade_to_head
from db.session import create_db_engine


def test_0009_adds_and_removes_only_the_pacs_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pacs.db'}"
    command.upgrade(alembic_config(url), "0006")
    engine = create_db_engine(url)
    try:
        before = set(inspect(engine).get_table_names())
        assert upgrade_to_head(url) == head_revision()
        engine.dispose()
        after = set(inspect(engine).get_table_names())
        assert after - before == {"pacs_studies", "pacs_exports"}
        unique = inspect(engine).get_unique_constraints("pacs_exports")
        assert {"study_id", "model_version"} in [set(u["column_names"]) for u in unique]
        indexes = {i["name"] for i in inspect(engine).get_indexes("pacs_exports")}
        assert "ix_pacs_exports_state_due" in indexes
        command.downgrade(alembic_config(url), "0006")
        engine.dispose()
        assert set(inspect(engine).get_table_names()) == before
    finally:
        engine.dispose()
