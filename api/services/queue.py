"""Sending chunk tasks to the broker, only after the database commit.

The API is a pure Celery *producer*: it sends the task by name, so it never imports the
worker package (nor, through it, torch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from celery import Celery
from sqlalchemy.orm import Session

from config.settings import SEGMENT_TASK_NAME, Settings

logger = logging.getLogger(__name__)

_AFTER_COMMIT = "tumorseg_after_commit"


class BrokerUnavailable(RuntimeError):
    """The broker refused or could not take a message."""


class QueueProducer:
    """Publishes ``segment_chunk`` tasks (ids only) to the configured queues."""

    def __init__(self, settings: Settings, broker_url: str) -> None:
        self.settings = settings
        self.broker_url = broker_url
        self.app = Celery("tumorseg-api", broker=broker_url)
        self.app.conf.update(
            broker_transport_options={"visibility_timeout": settings.visibility_timeout},
            broker_connection_timeout=3,
            broker_connection_retry_on_startup=False,
            task_serializer="json",
            task_ignore_result=True,
            task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2},
        )

    def send_chunks(self, chunks: Sequence[Sequence[int]], queue: str) -> None:
        """Publish one task per chunk of study ids.

        Raises:
            BrokerUnavailable: The broker could not be reached.
        """
        try:
            with self.app.producer_or_acquire() as producer:
                for chunk in chunks:
                    self.app.send_task(
                        SEGMENT_TASK_NAME, args=[list(chunk)], queue=queue, producer=producer
                    )
        except Exception as exc:  # kombu raises many types for a missing broker
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Release broker connections."""
        self.app.close()


def chunked(ids: Sequence[int], size: int) -> list[list[int]]:
    """Split ids into lists of at most ``size``."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's current unit of work has committed."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def commit_and_dispatch(session: Session) -> None:
    """Commit the unit of work, then run its after-commit callbacks (e.g. enqueue)."""
    session.commit()
    callbacks = session.info.pop(_AFTER_COMMIT, [])
    for callback in callbacks:
        callback()


def discard_pending(session: Session) -> None:
    """Forget after-commit callbacks of a unit of work that was rolled back."""
    session.info.pop(_AFTER_COMMIT, None)
