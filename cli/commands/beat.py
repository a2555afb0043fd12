"""``tumorseg beat``: run Celery beat, which sends the nightly archive scan on schedule."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("--print-schedule", action="store_true", help="print the schedule and exit")


def run(args: argparse.Namespace) -> int:
    """Run beat until stopped (the scan itself runs on a worker, on the nightly queue)."""
    from config.settings import get_settings
    from core.celery_app import beat_config, celery_app

    settings = get_settings()
    app = celery_app(settings)
    app.conf.update(beat_config(settings))
    if args.print_schedule:
        zone = settings.archive_timezone or "local time"
        for name, entry in app.conf.beat_schedule.items():
            when = entry["schedule"]
            shown = f"every {when:g}s" if isinstance(when, int | float) else f"{when} ({zone})"
            queue = entry.get("options", {}).get("queue", "default")
            print(f"{name}: {entry['task']} {shown} on queue {queue}")
        return 0
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    app.Beat(loglevel=settings.log_level, schedule=app.conf.beat_schedule_filename).run()
    return 0
