"""``tumorseg keys create|list|revoke``: manage API keys in the configured database."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create a key; it is printed once, on the last line")
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument("--tenant", default="default", help="tenant of its jobs (default)")
    create.add_argument("--admin", action="store_true", help="may see every tenant's jobs")
    sub.add_parser("list", help="list keys (prefixes only, never the keys)")
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id", type=int)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; 0 on success, 2 on bad input."""
    import sys

    from api.services.auth import create_key
    from cli.tables import format_table
    from config.settings import get_settings
    from db.migrate import upgrade_to_head
    from db.repositories import api_keys as keys_repo
    from db.session import session_scope

    url = get_settings().sqlalchemy_url
    upgrade_to_head(url)
    with session_scope(url) as session:
        if args.action == "create":
            try:
                row, key = create_key(session, args.name, args.tenant, args.admin)
            except ValueError as exc:
                print(f"tumorseg keys: {exc}", file=sys.stderr)
                return 2
            role = "admin" if row.is_admin else "client"
            print(
                f"created {role} key {row.id} ({row.prefix}...) for {row.name!r}, tenant "
                f"{row.tenant!r}; store it now, it is not shown again:"
            )
            print(key)
            return 0
        if args.action == "list":
            rows = [
                (
                    str(row.id),
                    f"{row.prefix}...",
                    row.name,
                    row.tenant,
                    "admin" if row.is_admin else "client",
                    f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active",
                )
                for row in keys_repo.list_keys(session)
            ]
            print(format_table(("id", "prefix", "name", "tenant", "role", "state"), rows))
            return 0
        if keys_repo.revoke(session, args.key_id) is None:
            print(f"tumorseg keys: no key {args.key_id}", file=sys.stderr)
            return 2
        print(f"key {args.key_id} revoked")
        return 0
