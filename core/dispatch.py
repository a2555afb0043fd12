"""Sending work to the workers: the task names, the one Celery configuration, and sends
that wait for the commit.

Every producer sends through a :class:`Dispatcher`: the API (``POST /v1/jobs``,
``POST /predict``, the web viewer), the archive scan, the recovery pass and beat (whose
schedule is :func:`beat_config`). Tasks carry study ids only.

*After the commit.* A unit of work asks for its studies to be sent with
:func:`send_after_commit`; the dispatcher sends them once the commit succeeded
(:meth:`Dispatcher.commit`, :meth:`Dispatcher.unit_of_work`), and a rollback forgets
them. So a task never names a study that is not in the database.

*The broker is down.* A send the broker refuses is logged and dropped: the studies stay
queued in the database, and the recovery pass (``worker/reaper.py``) sends them once
their job has been idle for ``reap_queued_after`` seconds and their queue is empty. The
API still answers 202 with the job, and the archive scan still reports the job; nothing
is failed or deleted, and the same policy holds for every producer.

*Finished jobs.* Status changes record the jobs they finish in the unit of work
(``db/status.py``); after the commit the dispatcher publishes each on a Redis channel of
its own, which ``POST /predict`` waits on (:meth:`Dispatcher.watch_job`) instead of
polling the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import redis
import redis.asyncio
from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue
from sqlalchemy.orm import Session

from config.settings import Settings
from core.broker import broker_url, redis_py_url
from db.session import get_session_factory
from db.status import FINISHED_JOBS

logger = logging.getLogger(__name__)

#: Segment one chunk of studies (``worker/tasks.py``); args: the study ids.
SEGMENT_TASK = "tumorseg.segment_chunk"
#: Scan the hospital archive (beat, nightly).
ARCHIVE_SCAN_TASK = "tumorseg.archive_scan"
#: One recovery pass (``worker/reaper.py``; beat, every ``reap_interval``).
REAP_TASK = "tumorseg.reap"

#: Key in ``Session.info``: (queue, study ids) to send once the unit of work commits.
_PENDING_SENDS = "tumorseg.pending_sends"

# -- PACS export (docs/ARCHIVE.md) ------------------------------------------------------
#: Send one study's results back to its PACS (``worker/pacs_export.py``); args: the
#: outbox row id.
PACS_EXPORT_TASK = "tumorseg.pacs_export"
#: One outbox pass (``archive/pacs_export.py``): finished PACS studies become exports,
#: and due exports are sent (beat, every ``pacs_outbox_interval``).
PACS_OUTBOX_TASK = "tumorseg.pacs_outbox"
#: Key in ``Session.info``: (task name, args, queue) to send once the unit of work commits.
_PENDING_TASKS = "tumorseg.pending_tasks"
# -- end of PACS export -----------------------------------------------------------------


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
            **_pacs_outbox_entry(settings),  # PACS export
        },
        "beat_schedule_filename": str(settings.var_dir / "celerybeat-schedule"),
    }


# -- PACS export -----------------------------------------------------------------------
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


# -- end of PACS export -----------------------------------------------------------------


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


def send_after_commit(session: Session, study_ids: Sequence[int], queue: str) -> None:
    """Send these studies to ``queue`` once the session's unit of work has committed."""
    if study_ids:
        session.info.setdefault(_PENDING_SENDS, []).append((queue, list(study_ids)))


# -- PACS export -----------------------------------------------------------------------
def task_after_commit(session: Session, name: str, args: Sequence[Any], queue: str) -> None:
    """Send the task ``name`` (ids only in ``args``) once the unit of work has committed."""
    session.info.setdefault(_PENDING_TASKS, []).append((name, list(args), queue))


# -- end of PACS export -----------------------------------------------------------------


def finished_channel(job_id: int) -> str:
    """The Redis channel on which a job's end is announced."""
    return f"tumorseg:job-finished:{job_id}"


class Dispatcher:
    """Sends chunk tasks and finished-job notices through one Celery app and its broker.

    Args:
        settings: Service settings (queues, chunk size, database).
        app: The Celery app to send through (a worker's own); a new producer app on the
            configured broker when None.
    """

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or celery_app(settings)
        url = str(self.app.conf.broker_url)
        self.redis_url = redis_py_url(url)
        #: A redis-py client on the broker: notices, queue depths, the API's rate limit.
        self.redis = redis.Redis.from_url(
            self.redis_url, socket_timeout=2, socket_connect_timeout=2
        )

    # -- sending -------------------------------------------------------------------
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

    # -- PACS export ---------------------------------------------------------------
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

    # -- end of PACS export --------------------------------------------------------

    def queue_depth(self, queue: str) -> int:
        """Tasks waiting in ``queue`` (raises ``redis.RedisError`` when Redis is away)."""
        return int(self.redis.llen(queue))

    def announce_finished(self, job_ids: Sequence[int]) -> None:
        """Publish that these jobs finished (a lost notice only delays a waiter)."""
        try:
            for job_id in job_ids:
                self.redis.publish(finished_channel(job_id), str(job_id))
        except redis.RedisError as exc:
            logger.warning("finished-job notice for %s not sent: %s", list(job_ids), exc)

    # -- units of work -------------------------------------------------------------
    def commit(self, session: Session) -> None:
        """Commit the unit of work, then send its tasks and announce the jobs it finished."""
        session.commit()
        sends: list[tuple[str, list[int]]] = session.info.pop(_PENDING_SENDS, [])
        finished: set[int] = session.info.pop(FINISHED_JOBS, set())
        tasks: list[tuple[str, list[Any], str]] = session.info.pop(_PENDING_TASKS, [])  # PACS
        for queue, study_ids in sends:
            self.send(study_ids, queue)
        for name, args, queue in tasks:  # PACS export
            self.send_by_name(name, args, queue)
        if finished:
            self.announce_finished(sorted(finished))

    @staticmethod
    def rollback(session: Session) -> None:
        """Roll the unit of work back and forget what it would have sent."""
        session.info.pop(_PENDING_SENDS, None)
        session.info.pop(FINISHED_JOBS, None)
        session.info.pop(_PENDING_TASKS, None)  # PACS export
        session.rollback()

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """One unit of work on the configured database: commit and then dispatch on
        success, roll back on error, always close."""
        session = get_session_factory(self.settings.sqlalchemy_url)()
        try:
            yield session
            self.commit(session)
        except BaseException:
            self.rollback(session)
            raise
        finally:
            session.close()

    # -- waiting for a job ---------------------------------------------------------
    @asynccontextmanager
    async def watch_job(self, job_id: int) -> AsyncIterator[Callable[[float], Awaitable[bool]]]:
        """Subscribe to the job's end and yield ``wait(timeout)``: True once the end is
        announced, False after ``timeout`` seconds (always so when Redis could not be
        subscribed to; the end may still come from a recovery pass once it is back).
        Check the database inside, then wait, so that an end between the two is seen."""
        client = redis.asyncio.Redis.from_url(self.redis_url, socket_connect_timeout=2)
        pubsub = client.pubsub()

        async def wait(timeout: float) -> bool:
            if not pubsub.subscribed:
                await asyncio.sleep(timeout)
                return False
            with suppress(TimeoutError, redis.RedisError):
                async with asyncio.timeout(timeout):
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            return True
            return False

        try:
            try:
                await pubsub.subscribe(finished_channel(job_id))
                await pubsub.get_message(timeout=2)  # the confirmation: Redis has subscribed us
            except redis.RedisError as exc:
                logger.warning("job %d: no finished-job notice to wait for (%s)", job_id, exc)
            yield wait
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py: no hints
            await client.aclose()

    def close(self) -> None:
        """Release the broker connections."""
        self.redis.close()
        self.app.close()
