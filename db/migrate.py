"""Bring a database to the newest schema with Alembic.

The API, the worker and every CLI command that touches the database call
:func:`upgrade_to_head` at start, so a fresh or older database is always brought up to
date. Concurrent callers are serialised: a PostgreSQL advisory lock, or a file lock
beside a SQLite file.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from db.session import create_db_engine

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x7475_6D6F  # "tumo"


def alembic_config(url: str) -> Config:
    """Return an Alembic config pointing at this package's migrations and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration revision id."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database behind ``connection`` is at (None when empty)."""
    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _sqlite_file_lock(database: str | None) -> Iterator[None]:
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade_to_head(url: str) -> str:
    """Upgrade the database at ``url`` to the newest schema; a no-op when current.

    Args:
        url: SQLAlchemy URL of the database.

    Returns:
        The revision the database is at afterwards.
    """
    parsed = make_url(url)
    engine = create_db_engine(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            with _sqlite_file_lock(parsed.database), engine.connect() as conn:
                return _upgrade(conn, url)
        with engine.connect() as conn:
            if parsed.get_backend_name() == "postgresql":
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
            try:
                return _upgrade(conn, url)
            finally:
                if parsed.get_backend_name() == "postgresql":
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                    conn.commit()
    finally:
        engine.dispose()


def _upgrade(conn: Connection, url: str) -> str:
    before = current_revision(conn)
    conn.commit()
    head = head_revision()
    if before != head:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
        logger.info("database upgraded from %s to %s", before, head)
    return head
