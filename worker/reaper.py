"""The reaper: sends again the studies whose task was lost, so no job waits for ever.

Two cases, each with a deadline from the settings:

* *running* longer than ``reap_after`` (which the settings keep above the task's hard
  time limit): the worker that claimed them died and the broker did not hand the task
  to another one, e.g. because Redis lost its unacknowledged messages in a restart;
* *queued* in a job that has seen no activity for ``reap_queued_after``: the task
  message never reached Redis, e.g. the API died between its commit and the enqueue.
  Given ``queue_depth``, these are sent again only once their queue is empty: while a
  long nightly backlog drains, their message is most likely still waiting in it, and a
  re-send would only double the backlog. A lost one is sent when the queue runs dry.

The reaper re-queues them in one transaction and sends their ids after the commit.
Sending a study twice is harmless: a worker skips studies already done with the current
model version, results are unique per (study, model version), and the delivery cap
(``max_deliveries``) still counts every claim, so a study that kills every worker that
takes it is failed for good instead of being re-queued for ever.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from config.settings import SEGMENT_TASK_NAME, Settings
from db.models import utcnow
from db.repositories import jobs as jobs_repo
from db.repositories import studies as studies_repo
from db.session import session_scope

logger = logging.getLogger(__name__)

#: Celery name of the periodic task that runs :func:`reap` (for a beat schedule).
REAP_TASK_NAME = "tumorseg.reap"

#: ``send(study_ids, queue)`` publishes one chunk task.
Sender = Callable[[list[int], str], None]

#: ``queue_depth(queue)``: messages waiting in a broker queue.
QueueDepth = Callable[[str], int]


@dataclass
class ReapReport:
    """What one reaper pass did."""

    requeued_running: list[int] = field(default_factory=list)
    resent_queued: list[int] = field(default_factory=list)
    tasks_sent: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "requeued_running": self.requeued_running,
            "resent_queued": self.resent_queued,
            "tasks_sent": self.tasks_sent,
        }


def celery_sender(app: Any) -> Sender:
    """A :data:`Sender` publishing ``segment_chunk`` tasks through a Celery app."""

    def send(study_ids: list[int], queue: str) -> None:
        app.send_task(SEGMENT_TASK_NAME, args=[study_ids], queue=queue)

    return send


def celery_queue_depth(app: Any) -> QueueDepth:
    """A :data:`QueueDepth` asking the Celery app's broker (priority sub-queues included)."""

    def depth(queue: str) -> int:
        with app.connection_for_read() as conn:
            try:
                return int(conn.default_channel.queue_declare(queue, passive=True).message_count)
            except conn.channel_errors:  # no such queue (Redis drops an empty list)
                return 0

    return depth


def reap(
    settings: Settings,
    send: Sender,
    now: datetime | None = None,
    queue_depth: QueueDepth | None = None,
) -> ReapReport:
    """One reaper pass over the configured database.

    Args:
        settings: Deadlines (``reap_after``, ``reap_queued_after``) and chunk size.
        send: Publishes one chunk of study ids to a queue.
        now: The current time (tests pass their own).
        queue_depth: When given, idle queued studies are sent again only from an empty
            queue (see the module's notes); studies stuck running are always re-sent.

    Returns:
        The studies re-queued and re-sent, and the number of tasks sent.
    """
    now = now or utcnow()
    running_cutoff = now - timedelta(seconds=settings.reap_after)
    report = ReapReport()
    with session_scope(settings.sqlalchemy_url) as session:
        running = studies_repo.stuck_running(session, running_cutoff)
        queued: list[int] = []
        if settings.reap_queued_after:
            idle_cutoff = now - timedelta(seconds=settings.reap_queued_after)
            queued = studies_repo.idle_queued(session, idle_cutoff)
        if not running and not queued:
            return report
        candidates = sorted({*running, *queued})
        job_ids = studies_repo.job_ids_of(session, candidates)
        for job_id in job_ids:  # the workers' lock: no claim or store interleaves
            jobs_repo.lock_job(session, job_id)
        studies_repo.requeue_running(session, running, running_cutoff)
        to_send = studies_repo.queued_among(session, candidates)
        for job_id in job_ids:
            job = jobs_repo.get_job(session, job_id)
            if job is not None:
                jobs_repo.refresh_job_status(session, job)
    if queue_depth is not None:
        to_send = _drop_waiting(to_send, set(queued) - set(running), queue_depth)
    by_queue: dict[str, list[int]] = defaultdict(list)
    sent = {study_id for study_id, _, _ in to_send}
    for study_id, _job_id, queue in to_send:
        by_queue[queue].append(study_id)
    report.requeued_running = [i for i in running if i in sent]
    report.resent_queued = [i for i in queued if i in sent]
    for queue, ids in by_queue.items():  # after the commit
        for start in range(0, len(ids), settings.chunk_size):
            send(ids[start : start + settings.chunk_size], queue)
            report.tasks_sent += 1
    if report.tasks_sent:
        logger.warning("reaper: %s", report.as_dict())
    return report


def _drop_waiting(
    to_send: list[tuple[int, int, str]], idle_queued: set[int], queue_depth: QueueDepth
) -> list[tuple[int, int, str]]:
    """Leave out idle queued studies whose queue still holds messages."""
    busy: dict[str, bool] = {}
    kept = []
    for study_id, job_id, queue in to_send:
        if study_id in idle_queued:
            if queue not in busy:
                try:
                    busy[queue] = queue_depth(queue) > 0
                except Exception as exc:  # no answer: send, as without a depth
                    logger.warning("reaper: depth of %s unknown (%s); re-sending", queue, exc)
                    busy[queue] = False
            if busy[queue]:
                continue
        kept.append((study_id, job_id, queue))
    return kept
