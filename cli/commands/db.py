"""``tumorseg db upgrade``: bring the database to the newest schema."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("action", choices=["upgrade"], help="upgrade: migrate to the newest schema")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action."""
    from config.settings import get_settings
    from db.migrate import upgrade_to_head

    settings = get_settings()
    revision = upgrade_to_head(settings.sqlalchemy_url)
    print(f"database {settings.sqlalchemy_url} is at revision {revision}")
    return 0
