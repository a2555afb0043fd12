"""The Celery application, configured from :class:`config.settings.Settings`.

Long model tasks are run with late acknowledgement, re-queued when a worker dies, never
prefetched beyond the one running, and killed at a hard time limit that stays below the
broker's visibility timeout (the settings refuse anything else).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue

from config.settings import ARCHIVE_SCAN_TASK_NAME, SEGMENT_TASK_NAME, Settings
from worker.reaper import REAP_TASK_NAME


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def celery_config(settings: Settings, broker_url: str) -> dict[str, Any]:
    """The Celery configuration mapping for ``settings``; shared by producers and workers.

    Args:
        settings: Service settings.
        broker_url: Resolved broker URL (the embedded server's when none is configured).

    Returns:
        Keyword arguments for ``Celery.conf.update``.
    """
    return {
        "broker_url": broker_url,
        # "priority": BRPOP always lists the queues in the order below, so a worker takes
        # interactive work first and nightly work only when no interactive task waits
        # (kombu's default "round_robin" would alternate between the queues).
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "queue_order_strategy": "priority",
        },
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,  # results live in the database
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_serializer": "json",
        "accept_content": ["json"],
        # each queue on its own direct exchange: a bare Queue(name) would be bound to the
        # default queue's exchange and key, and a message for one would reach both
        "task_queues": [_queue(settings.interactive_queue), _queue(settings.nightly_queue)],
        "task_default_queue": settings.interactive_queue,
        "task_routes": {
            SEGMENT_TASK_NAME: {"queue": settings.interactive_queue},
            ARCHIVE_SCAN_TASK_NAME: {"queue": settings.nightly_queue},
        },
        # the scan is acknowledged on receipt (a lost scan is simply tomorrow's) and may
        # run longer than a chunk; its Redis lock expires with the same limit
        "task_annotations": {
            ARCHIVE_SCAN_TASK_NAME: {
                "acks_late": False,
                "time_limit": settings.archive_scan_time_limit,
                "soft_time_limit": settings.archive_scan_time_limit - 30,
            }
        },
        "worker_hijack_root_logger": False,
        "worker_max_tasks_per_child": 200,
        "worker_send_task_events": False,
        "timezone": "UTC",
    }


def create_celery_app(settings: Settings, broker_url: str, include_tasks: bool = True) -> Celery:
    """Build the Celery app.

    Args:
        settings: Service settings.
        broker_url: Resolved broker URL.
        include_tasks: Register ``worker.tasks`` (False for pure producers).

    Returns:
        A configured Celery application.
    """
    app = Celery("tumorseg", include=["worker.tasks"] if include_tasks else [])
    app.conf.update(celery_config(settings, broker_url))
    return app


def beat_config(settings: Settings) -> dict[str, Any]:
    """The extra configuration of the Celery beat process: the nightly archive scan.

    The crontab ``archive_cron`` is read in ``archive_timezone`` (the machine's local
    zone when unset). Two beats may run: the scan task takes a Redis lock, so they never
    submit twice.

    Args:
        settings: Service settings.

    Returns:
        Keyword arguments for ``Celery.conf.update``.
    """
    return {
        "timezone": settings.archive_timezone,
        "enable_utc": settings.archive_timezone is not None,  # neither: local time
        "beat_schedule": {
            "nightly-archive-scan": {
                "task": ARCHIVE_SCAN_TASK_NAME,
                "schedule": crontab.from_string(settings.archive_cron),
                "options": {"queue": settings.nightly_queue},
            },
            "stuck-study-reaper": {  # worker.reaper: re-send studies whose task was lost
                "task": REAP_TASK_NAME,
                "schedule": float(settings.reap_interval),
                # a pass that waited behind a backlog for longer than the interval is
                # dropped: the workers' own passes (worker/recovery.py) ran meanwhile
                "options": {
                    "queue": settings.interactive_queue,
                    "expires": float(settings.reap_interval),
                },
            },
        },
        "beat_schedule_filename": str(settings.var_dir / "celerybeat-schedule"),
    }
