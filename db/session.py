"""Engine factory and the one unit of work: :func:`session_scope`.

SQLite (the default) runs in WAL mode with a busy timeout so that the API and the
workers can share the file; PostgreSQL is reached through ``postgresql+psycopg://``.
Engines are cached per process *and* per pid, so a forked worker never reuses its
parent's connections.

*After the commit.* A unit of work may ask for things to happen once it has committed
(:func:`after_commit`): tasks to send (``core/dispatch.py``), jobs it finished to
announce (``db/status.py``). The API's requests, the worker's tasks, the archive scan
and the command line all open their unit of work with :func:`session_scope` and hand it
an ``on_commit`` that takes them (``core.dispatch.Dispatcher.after_commit``); a unit of
work that holds any and has no ``on_commit`` refuses to commit, so nothing is dropped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
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


#: Key in ``Session.info``: the (kind, payload) pairs to hand on once the unit of work
#: has committed.
AFTER_COMMIT = "tumorseg.after_commit"

#: Takes a committed unit of work's (kind, payload) pairs.
OnCommit = Callable[[Sequence[tuple[str, Any]]], None]


def after_commit(session: Session, kind: str, payload: Any) -> None:
    """Hand ``payload`` to the unit of work's ``on_commit`` once it has committed; a
    rollback forgets it."""
    session.info.setdefault(AFTER_COMMIT, []).append((kind, payload))


def commit(session: Session, on_commit: OnCommit | None) -> None:
    """Commit the unit of work, then hand its :func:`after_commit` pairs to ``on_commit``.

    Raises:
        RuntimeError: The unit of work holds pairs and there is no ``on_commit``; it
            is not committed.
    """
    pending: list[tuple[str, Any]] = session.info.get(AFTER_COMMIT) or []
    if pending and on_commit is None:
        kinds = sorted({kind for kind, _ in pending})
        raise RuntimeError(
            f"this unit of work holds {', '.join(kinds)} for after its commit and nothing "
            "to take them: open it with session_scope(url, on_commit=...)"
        )
    session.commit()
    session.info.pop(AFTER_COMMIT, None)
    if pending and on_commit is not None:
        on_commit(pending)


def rollback(session: Session) -> None:
    """Roll the unit of work back and forget what it would have handed on."""
    session.info.pop(AFTER_COMMIT, None)
    session.rollback()


@contextmanager
def session_scope(url: str, on_commit: OnCommit | None = None) -> Iterator[Session]:
    """One unit of work: commit (then hand on its :func:`after_commit` pairs) on
    success, roll back on error, always close.

    Args:
        url: Database URL of the session.
        on_commit: Takes what the unit of work asked for after its commit; needed when
            it sends tasks or finishes jobs (``core.dispatch.Dispatcher.after_commit``).

    Yields:
        A session; repositories only flush, this context manager commits.
    """
    session = get_session_factory(url)()
    try:
        yield session
        commit(session, on_commit)
    except BaseException:
        rollback(session)
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
