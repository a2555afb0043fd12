"""``tumorseg worker``: run a Celery worker that segments chunks."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument(
        "--queues", default=None, help="comma-separated queues (default: batch and interactive)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=None, help="processes (TUMORSEG_WORKER_CONCURRENCY)"
    )
    parser.add_argument("--hostname", default="tumorseg@%h", help="Celery node name")


def run(args: argparse.Namespace) -> int:
    """Upgrade the database, then run the worker until stopped."""
    from config.embedded import broker_url
    from config.settings import get_settings
    from db.migrate import upgrade_to_head
    from worker.celery_app import create_celery_app

    settings = get_settings()
    upgrade_to_head(settings.sqlalchemy_url)
    queues = args.queues or f"{settings.interactive_queue},{settings.batch_queue}"
    app = create_celery_app(settings, broker_url(settings))
    app.worker_main(
        [
            "worker",
            f"--queues={queues}",
            f"--concurrency={args.concurrency or settings.worker_concurrency}",
            f"--loglevel={settings.log_level}",
            f"--hostname={args.hostname}",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0
