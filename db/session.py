"""Engine factory and the unit-of-work context manager.

SQLite (the default) runs in WAL mode with a busy timeout so that the API and the
workers can share the file; PostgreSQL is reached through ``postgresql+psycopg://``.
Engines are cached per process *and* per pid, so a forked worker never reuses its
parent's connections.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000

_engines: dict[tuple[str, int], Engine] = {}
_factories: dict[tuple[str, int], sessionmaker[Session]] = {}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    """Create a new engine for ``url`` with the service's connection settings.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///./var/tumorseg.db`` or
            ``postgresql+psycopg://user@host/db``.

    Returns:
        A fresh engine; prefer :func:`get_engine` for the per-process shared one.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def get_engine(url: str) -> Engine:
    """Return this process's shared engine for ``url`` (created on first use)."""
    key = (url, os.getpid())
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = create_db_engine(url)
    return engine


def get_session_factory(url: str) -> sessionmaker[Session]:
    """Return this process's session factory for ``url``."""
    key = (url, os.getpid())
    factory = _factories.get(key)
    if factory is None:
        factory = _factories[key] = sessionmaker(get_engine(url), expire_on_commit=False)
    return factory


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, always close.

    Args:
        url: Database URL of the session.

    Yields:
        A session; repositories only flush, this context manager commits.
    """
    session = get_session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Dispose every engine of this process (tests, shutdown)."""
    for key, engine in list(_engines.items()):
        if key[1] == os.getpid():
            engine.dispose()
        _engines.pop(key, None)
        _factories.pop(key, None)
