"""`tumorseg model list | register DIR | promote VERSION`: the model registry.

Workers check the promoted version at the start of every task and reload when it
changes, so `promote` refreshes the fleet without a restart.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="list registered versions (* = promoted)")
    reg = sub.add_parser("register", help="register an artifact folder")
    reg.add_argument(
        "path", type=Path, help="artifact folder (manifest.json + model.safetensors or members)"
    )
    reg.add_argument("--promote", action="store_true", help="promote it right away")
    pro = sub.add_parser("promote", help="make VERSION the one workers use")
    pro.add_argument("version")


def run(args: argparse.Namespace) -> int:
    from cli.tables import format_table
    from config.settings import get_settings
    from db.migrate import upgrade_to_head
    from db.repositories import model_versions
    from db.session import session_scope

    settings = get_settings()
    upgrade_to_head(settings.sqlalchemy_url)
    if args.action == "list":
        with session_scope(settings.sqlalchemy_url) as session:
            rows = model_versions.list_versions(session)
            if not rows:
                print("no registered versions: workers use the bundled default artifact")
                return 0
            table = []
            for row in rows:
                dice = (row.manifest.get("metrics", {}).get("validation", {}) or {}).get("dice")
                table.append(
                    (
                        "*" if row.promoted else "",
                        row.version,
                        str(row.trained),
                        f"{dice:.4f}" if isinstance(dice, float) else "-",
                        row.path,
                    )
                )
            print(format_table(("promoted", "version", "trained", "dice", "path"), table))
        return 0
    if args.action == "register":
        import json

        from model.artifact import load_members
        from model.manifest import ArtifactError

        path = args.path.resolve()
        try:
            manifest, _ = load_members(path)  # full check: manifest, hashes, every member fits
        except ArtifactError as exc:
            print(f"tumorseg model register: {exc}")
            return 2
        with session_scope(settings.sqlalchemy_url) as session:
            model_versions.register(
                session,
                manifest.version,
                str(path),
                json.loads(manifest.to_json()),
                manifest.trained,
            )
            if args.promote:
                model_versions.promote(session, manifest.version)
        print(f"registered {manifest.version}{' and promoted it' if args.promote else ''}")
        return 0
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            row = model_versions.promote(session, args.version)
            print(f"promoted {row.version}: workers switch at their next task")
    except LookupError as exc:
        print(f"tumorseg model promote: {exc}")
        return 2
    return 0
