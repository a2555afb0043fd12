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

    from config.embedded import broker_url
    from config.settings import get_settings
    from db.migrate import upgrade_to_head
    from worker.celery_app import create_celery_app
    from worker.reaper import celery_queue_depth, celery_sender, reap

    settings = get_settings()
    upgrade_to_head(settings.sqlalchemy_url)
    app = create_celery_app(settings, broker_url(settings), include_tasks=False)
    send, depth = celery_sender(app), celery_queue_depth(app)
    try:
        while True:
            report = reap(settings, send, queue_depth=depth)
            print(json.dumps(report.as_dict()), flush=True)
            if args.every is None:
                return 0
            time.sleep(args.every)
    finally:
        app.close()
