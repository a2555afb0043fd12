"""A temporary PostgreSQL database: created and migrated for one use, then dropped.

The tests and `bench/store.py` run against real PostgreSQL without touching the server's
own databases; each gets a fresh database of its own and leaves nothing behind.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from db.migrate import upgrade_to_head
from db.session import dispose_engines


@contextmanager
def temporary_database(admin_url: str, prefix: str) -> Iterator[tuple[str, str, Engine]]:
    """Create and migrate a database named `prefix_<random>` on the server of `admin_url`,
    and drop it after.

    Args:
        admin_url: A PostgreSQL URL whose user may create databases.
        prefix: Start of the new database's name.

    Yields:
        (url, name, admin engine): the admin engine (AUTOCOMMIT, on `admin_url`'s database)
        can alter the database while it is in use.
    """
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        try:
            upgrade_to_head(url)
            yield url, name, admin
        finally:
            dispose_engines()
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
