"""``tumorseg worker``: run a Celery worker that segments chunks."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument(
        "--queues",
        default=None,
        help="comma-separated queues, highest priority first (default: interactive,nightly)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=None, help="processes (TUMORSEG_WORKER_CONCURRENCY)"
    )
    parser.add_argument("--hostname", default="tumorseg@%h", help="Celery node name")


def run(args: argparse.Namespace) -> int:
    """Upgrade the database, then run the worker until stopped."""
    from config.settings import get_settings

    if args.concurrency:
        # The pool children read their settings again: the command line must win there too.
        import os

        os.environ["TUMORSEG_WORKER_CONCURRENCY"] = str(args.concurrency)
        get_settings.cache_clear()
    settings = get_settings()
    # first: the exporter sets up prometheus_client's multiprocess mode before the worker's
    # modules import it, and a busy port stops the worker here
    from worker import exporter

    exporter.start(settings)

    from core.celery_app import celery_app
    from db.migrate import upgrade_to_head
    from worker.recovery import install

    upgrade_to_head(settings.sqlalchemy_url)
    # order matters: with queue_order_strategy=priority the first queue is served first
    queues = args.queues or f"{settings.interactive_queue},{settings.nightly_queue}"
    app = celery_app(settings, include=["worker.tasks", "worker.pacs_export"])
    install(app, settings)  # recovery at start-up and every reap_interval seconds
    app.worker_main(
        [
            "worker",
            f"--queues={queues}",
            f"--concurrency={settings.worker_concurrency}",
            f"--loglevel={settings.log_level}",
            f"--hostname={args.hostname}",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0
