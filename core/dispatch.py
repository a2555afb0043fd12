"""Sending work to the workers: sends that wait for the commit, and the one
broker-failure policy.

Every producer sends through a :class:`Dispatcher`: the API (``POST /v1/jobs``,
``POST /predict``, the web viewer), the archive scan, the recovery pass. Tasks carry
study ids only; their names and the Celery configuration are in ``core/celery_app.py``.

*After the commit.* A unit of work asks for its studies to be sent with
:func:`send_after_commit` (``db.session.after_commit`` underneath); once it has committed,
``db.session.session_scope`` hands them to :meth:`Dispatcher.after_commit`, which sends
them and announces the jobs the unit of work finished (``core/job_notices.py``). A
rollback forgets them, so a task never names a study that is not in the database, and a
unit of work with something to send and no dispatcher refuses to commit.

*The broker is down.* A send the broker refuses is logged and dropped: the studies stay
queued in the database, and the recovery pass (``worker/reaper.py``) sends them once
their job has been idle for ``reap_queued_after`` seconds and their queue is empty. The
API still answers 202 with the job, and the archive scan still reports the job; nothing
is failed or deleted, and the same policy holds for every producer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from config.settings import Settings
from core.broker import redis_client, redis_py_url
from core.celery_app import SEGMENT_TASK, celery_app
from core.job_notices import JobNotices
from db.session import after_commit
from db.status import JOB_FINISHED

logger = logging.getLogger(__name__)

#: What ``db.session.after_commit`` hands on for studies to send: (queue, study ids).
SEND = "send"
#: ... for one task sent by name: (task name, args: ids only, queue).
SEND_TASK = "send_task"


def send_after_commit(session: Session, study_ids: Sequence[int], queue: str) -> None:
    """Send these studies to ``queue`` once the session's unit of work has committed."""
    if study_ids:
        after_commit(session, SEND, (queue, list(study_ids)))


def task_after_commit(session: Session, name: str, args: Sequence[Any], queue: str) -> None:
    """Send the task ``name`` (ids only in ``args``; the PACS exports) once the session's
    unit of work has committed."""
    after_commit(session, SEND_TASK, (name, list(args), queue))


class Dispatcher:
    """Sends chunk tasks through one Celery app, and announces finished jobs.

    Args:
        settings: Service settings (queues, chunk size).
        app: The Celery app to send through (a worker's own); a new producer app on the
            configured broker when None.
    """

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or celery_app(settings)
        self.redis_url = redis_py_url(str(self.app.conf.broker_url))
        self._redis = redis_client(self.redis_url)
        #: Finished-job notices on the broker's Redis (``POST /predict`` waits on them).
        self.notices = JobNotices(self._redis, self.redis_url)

    def send(self, study_ids: Sequence[int], queue: str) -> int:
        """Send the studies to ``queue`` now, one task per ``chunk_size`` of them.

        A broker that refuses is logged, not raised: the studies stay queued and the
        recovery pass sends them (see the module's notes).

        Returns:
            The number of tasks sent.
        """
        size = self.settings.chunk_size
        chunks = [list(study_ids[i : i + size]) for i in range(0, len(study_ids), size)]
        sent = 0
        try:
            with self.app.producer_or_acquire() as producer:
                for chunk in chunks:
                    self.app.send_task(SEGMENT_TASK, args=[chunk], queue=queue, producer=producer)
                    sent += 1
        except Exception as exc:  # kombu raises many types for a missing broker
            logger.warning(
                "broker unavailable (%s: %s): %d of %d studies for %s stay queued; the "
                "recovery pass sends them",
                type(exc).__name__,
                exc,
                len(study_ids) - sent * size,
                len(study_ids),
                queue,
            )
        return sent

    def send_by_name(self, name: str, args: Sequence[Any], queue: str) -> bool:
        """Send one task by name now; a broker that refuses is logged, not raised (the
        PACS outbox sends it again when it comes due).

        Returns:
            Whether it was sent.
        """
        try:
            self.app.send_task(name, args=list(args), queue=queue)
        except Exception as exc:  # kombu raises many types for a missing broker
            logger.warning(
                "broker unavailable (%s: %s): %s%s not sent", type(exc).__name__, exc, name, args
            )
            return False
        return True

    def queue_depth(self, queue: str) -> int:
        """Tasks waiting in ``queue`` (raises ``redis.RedisError`` when Redis is away)."""
        return int(self._redis.llen(queue))

    def ping(self) -> None:
        """Raise ``redis.RedisError`` unless the broker answers PING within 2 s."""
        self._redis.ping()

    def after_commit(self, pending: Sequence[tuple[str, Any]]) -> None:
        """Take a committed unit of work's hand-ons (``db.session.session_scope``'s
        ``on_commit``): send its studies and tasks, then announce the jobs it finished."""
        finished: set[int] = set()
        for kind, payload in pending:
            if kind == SEND:
                queue, study_ids = payload
                self.send(study_ids, queue)
            elif kind == SEND_TASK:
                name, args, queue = payload
                self.send_by_name(name, args, queue)
            elif kind == JOB_FINISHED:
                finished.add(int(payload))
            else:
                raise ValueError(f"nothing takes {kind!r} after a commit")
        if finished:
            self.notices.announce(sorted(finished))

    def close(self) -> None:
        """Release the broker connections."""
        self._redis.close()
        self.app.close()
