"""``tumorseg reap [--every SECONDS]``: re-queue studies whose task was lost."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument(
        "--every", type=float, default=None, help="repeat every SECONDS until stopped"
    )


def run(args: argparse.Namespace) -> int:
    """Run one reaper pass (or one every ``--every`` seconds); print what was re-sent."""
    import json
    import time

    from config.settings import get_settings
    from core.dispatch import Dispatcher
    from db.migrate import upgrade_to_head
    from worker.reaper import reap

    settings = get_settings()
    upgrade_to_head(settings.sqlalchemy_url)
    dispatcher = Dispatcher(settings)
    try:
        while True:
            report = reap(settings, dispatcher)
            print(json.dumps(report.as_dict()), flush=True)
            if args.every is None:
                return 0
            time.sleep(args.every)
    finally:
        dispatcher.close()
