"""The one Celery configuration: the task names, the app every process builds, and
beat's schedule.

Producers (the API, the archive scan, the recovery pass) send by name through
``core/dispatch.py``; workers register the tasks of ``worker/tasks.py`` on the same app.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue

from config.settings import Settings
from core.broker import broker_url

#: Segment one chunk of studies (``worker/tasks.py``); args: the study ids.
SEGMENT_TASK = "tumorseg.segment_chunk"
#: Scan the hospital archive (beat, nightly).
ARCHIVE_SCAN_TASK = "tumorseg.archive_scan"
#: One recovery pass (``worker/reaper.py``; beat, every ``reap_interval``).
REAP_TASK = "tumorseg.reap"
#: Send one study's results back to its PACS (``worker/pacs_export.py``); args: the
#: outbox row id.
PACS_EXPORT_TASK = "tumorseg.pacs_export"
#: One outbox pass (``archive/pacs_export.py``): finished PACS studies become exports,
#: and due exports are sent (beat, every ``pacs_outbox_interval``).
PACS_OUTBOX_TASK = "tumorseg.pacs_outbox"


def celery_config(settings: Settings, url: str) -> dict[str, Any]:
    """The Celery configuration of every process, producers and workers alike.

    Long model tasks run with late acknowledgement, are re-queued when a worker dies,
    never prefetched beyond the one running, and killed at a hard time limit that stays
    below the broker's visibility timeout (the settings refuse anything else). A producer
    gives up on a broker that does not answer within seconds (the studies stay queued).

    Args:
        settings: Service settings.
        url: Resolved broker URL (the embedded server's when none is configured).

    Returns:
        Keyword arguments for ``Celery.conf.update``.
    """
    return {
        "broker_url": url,
        # "priority": BRPOP always lists the queues in the order below, so a worker takes
        # interactive work first and nightly work only when no interactive task waits
        # (kombu's default "round_robin" would alternate between the queues).
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "queue_order_strategy": "priority",
        },
        "broker_connection_timeout": 3,
        "broker_connection_retry_on_startup": True,  # a worker waits for its broker
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.2},
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
            SEGMENT_TASK: {"queue": settings.interactive_queue},
            ARCHIVE_SCAN_TASK: {"queue": settings.nightly_queue},
            # PACS export: seconds of network I/O each, like the recovery pass
            PACS_EXPORT_TASK: {"queue": settings.interactive_queue},
            PACS_OUTBOX_TASK: {"queue": settings.interactive_queue},
        },
        # the scan is acknowledged on receipt (a lost scan is simply tomorrow's) and may
        # run longer than a chunk; its Redis lock expires with the same limit
        "task_annotations": {
            ARCHIVE_SCAN_TASK: {
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


def _queue(name: str) -> Queue:
    # kombu's constructors have no annotations
    return Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]


def beat_config(settings: Settings) -> dict[str, Any]:
    """What beat sends, and when: the nightly archive scan, the recovery pass and, when a
    PACS takes exports, the PACS outbox pass.

    The crontab ``archive_cron`` is read in ``archive_timezone`` (the machine's local
    zone when unset). Two beats may run: the scan task takes a Redis lock, so they never
    submit twice.

    Returns:
        Keyword arguments for ``Celery.conf.update``.
    """
    return {
        "timezone": settings.archive_timezone,
        "enable_utc": settings.archive_timezone is not None,  # neither: local time
        "beat_schedule": {
            "nightly-archive-scan": {
                "task": ARCHIVE_SCAN_TASK,
                "schedule": crontab.from_string(settings.archive_cron),
                "options": {"queue": settings.nightly_queue},
            },
            "stuck-study-reaper": {  # worker.reaper: re-send studies whose task was lost
                "task": REAP_TASK,
                "schedule": float(settings.reap_interval),
                # a pass that waited behind a backlog for longer than the interval is
                # dropped: the workers' own passes (worker/recovery.py) ran meanwhile
                "options": {
                    "queue": settings.interactive_queue,
                    "expires": float(settings.reap_interval),
                },
            },
            **_pacs_outbox_entry(settings),
        },
        "beat_schedule_filename": str(settings.var_dir / "celerybeat-schedule"),
    }


def _pacs_outbox_entry(settings: Settings) -> dict[str, Any]:
    """Beat's outbox pass (new exports for finished PACS studies, retries of due ones),
    when some PACS endpoint takes exports."""
    if not any(endpoint.export for endpoint in settings.pacs_endpoints):
        return {}
    interval = float(settings.pacs_outbox_interval)
    return {
        "pacs-outbox": {
            "task": PACS_OUTBOX_TASK,
            "schedule": interval,
            "options": {"queue": settings.interactive_queue, "expires": interval},
        }
    }


def celery_app(settings: Settings, include: Sequence[str] = ()) -> Celery:
    """The Celery app on the configured broker (the embedded one when none is set).

    Args:
        settings: Service settings.
        include: Modules whose tasks the app registers (a worker's: ``worker.tasks``);
            producers need none, they send by name.
    """
    app = Celery("tumorseg", include=list(include))
    app.conf.update(celery_config(settings, broker_url(settings)))
    return app
