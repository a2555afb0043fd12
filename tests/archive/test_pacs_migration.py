"""Migration 0009: the PACS tables come and go, and leave the rest of the schema alone."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from db.migrate import alembic_config
from db.session import create_db_engine


def test_0009_adds_and_removes_only_the_pacs_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pacs.db'}"
    revision = ScriptDirectory.from_config(alembic_config(url)).get_revision("0009")
    assert revision is not None
    below = str(revision.down_revision)  # whatever 0009 is chained after
    command.upgrade(alembic_config(url), below)
    engine = create_db_engine(url)
    try:
        before = set(inspect(engine).get_table_names())
        command.upgrade(alembic_config(url), "0009")
        engine.dispose()
        after = set(inspect(engine).get_table_names())
        assert after - before == {"pacs_studies", "pacs_exports"}
        unique = inspect(engine).get_unique_constraints("pacs_exports")
        assert {"study_id", "model_version"} in [set(u["column_names"]) for u in unique]
        indexes = {i["name"] for i in inspect(engine).get_indexes("pacs_exports")}
        assert "ix_pacs_exports_state_due" in indexes
        command.downgrade(alembic_config(url), below)
        engine.dispose()
        assert set(inspect(engine).get_table_names()) == before
    finally:
        engine.dispose()
