"""The Celery application, configured from :class:`config.settings.Settings`.

Long model tasks are run with late acknowledgement, re-queued when a worker dies, never
prefetched beyond the one running, and killed at a hard time limit that stays below the
broker's visibility timeout (the settings refuse anything else).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from config.settings import SEGMENT_TASK_NAME, Settings


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
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout},
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
        "task_queues": [Queue(settings.batch_queue), Queue(settings.interactive_queue)],
        "task_default_queue": settings.batch_queue,
        "task_routes": {SEGMENT_TASK_NAME: {"queue": settings.batch_queue}},
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
