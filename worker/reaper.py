"""The reaper (the recovery pass): sends again the studies whose worker or task was lost.

Three cases:

* *running* under a lease that lapsed (``lease_seconds`` without a heartbeat): the
  worker that claimed them died, whatever the broker does about its task. At a worker's
  start-up (``node`` given) also every study that node still holds: it belongs to the
  node's previous life. Rows without a lease (claimed before leases existed) come back
  after ``reap_after`` instead;
* *queued* in a job that has seen no activity for ``reap_queued_after``: the task
  message never reached Redis (the API died between its commit and the enqueue) or
  Redis lost it (a restart without persistence). Given ``queue_depth``, these are sent
  again only once their queue is empty: while a long nightly backlog drains, their
  message is most likely still waiting in it, and a re-send would only double the
  backlog. A lost one is sent when the queue runs dry.

Each worker runs a pass at start-up and every ``reap_interval`` seconds
(``worker/recovery.py``); beat sends one as a task too. Passes may overlap: the
conditions are checked again under the jobs' locks, so only one of them re-queues or
re-sends a study. It re-queues in one transaction and sends the ids after the commit.
Sending a study twice is harmless anyway: a worker skips studies done with the current
model version or held by another live worker's lease, results are unique per (study,
model version), and the delivery cap (``max_deliveries``) still counts every claim, so
a study that kills every worker that takes it is failed for good instead of being
re-queued for ever.
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
from db.repositories import leases as leases_repo
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
    #: Lease owner (``node:pid``) that held each re-queued study; None without a lease.
    holders: dict[int, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "requeued_running": self.requeued_running,
            "resent_queued": self.resent_queued,
            "tasks_sent": self.tasks_sent,
            "holders": {str(k): v for k, v in self.holders.items()},
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
    node: str | None = None,
) -> ReapReport:
    """One reaper pass over the configured database.

    Args:
        settings: Deadlines (``reap_after``, ``reap_queued_after``) and chunk size.
        send: Publishes one chunk of study ids to a queue.
        now: The current time (tests pass their own).
        queue_depth: When given, idle queued studies are sent again only from an empty
            queue (see the module's notes); studies whose worker is gone always are.
        node: The Celery node name of a worker that is starting: the running studies
            it holds are re-queued whatever their lease says.

    Returns:
        The studies re-queued and re-sent, and the number of tasks sent.
    """
    now = now or utcnow()
    backstop = now - timedelta(seconds=settings.reap_after)
    idle_before = now - timedelta(seconds=settings.reap_queued_after)
    report = ReapReport()
    with session_scope(settings.sqlalchemy_url) as session:
        running = leases_repo.recoverable(session, now, backstop, node)
        idle: list[tuple[int, int, str]] = []
        if settings.reap_queued_after:
            idle = studies_repo.queued_among(
                session, studies_repo.idle_queued(session, idle_before)
            )
    if idle and queue_depth is not None:  # before any lock: a busy queue costs nothing
        idle = _drop_waiting(idle, queue_depth)
    if not running and not idle:
        return report
    with session_scope(settings.sqlalchemy_url) as session:
        idle_jobs = {job_id for _, job_id, _ in idle}
        job_ids = sorted(idle_jobs | set(studies_repo.job_ids_of(session, list(running))))
        resend: set[int] = set()
        for job_id in job_ids:  # the workers' lock: no claim or store interleaves
            if job_id in idle_jobs and jobs_repo.lock_job_if_idle(session, job_id, idle_before):
                resend |= {study_id for study_id, j, _ in idle if j == job_id}
            else:  # not idle after all (or only running studies to take back)
                jobs_repo.lock_job(session, job_id)
        requeued = leases_repo.requeue(session, list(running), now, backstop, node)
        to_send = studies_repo.queued_among(session, sorted(resend | set(requeued)))
        report.requeued_running = requeued
        report.resent_queued = sorted({i for i, _, _ in to_send} - set(requeued))
        report.holders = {i: running[i] for i in requeued}
        leases_repo.count_resent(session, report.resent_queued)
        for job_id in job_ids:
            job = jobs_repo.get_job(session, job_id)
            if job is not None:
                jobs_repo.refresh_job_status(session, job)
    by_queue: dict[str, list[int]] = defaultdict(list)
    for study_id, _job_id, queue in to_send:
        by_queue[queue].append(study_id)
    if to_send:
        _log(report, node)
    for queue, ids in by_queue.items():  # after the commit
        for start in range(0, len(ids), settings.chunk_size):
            send(ids[start : start + settings.chunk_size], queue)
            report.tasks_sent += 1
    return report


def _log(report: ReapReport, node: str | None) -> None:
    when = f"start-up of {node}" if node else "pass"
    if report.requeued_running:
        holders = sorted({h or "no lease" for h in report.holders.values()})
        logger.warning(
            "recovery (%s): re-queued %d running studies whose worker is gone (%s): %s",
            when,
            len(report.requeued_running),
            ", ".join(holders),
            report.requeued_running,
        )
    if report.resent_queued:
        logger.warning(
            "recovery (%s): re-sent %d queued studies whose task was lost: %s",
            when,
            len(report.resent_queued),
            report.resent_queued,
        )


def _drop_waiting(
    idle: list[tuple[int, int, str]], queue_depth: QueueDepth
) -> list[tuple[int, int, str]]:
    """Leave out idle queued studies whose queue still holds messages."""
    busy: dict[str, bool] = {}
    kept = []
    for study_id, job_id, queue in idle:
        if queue not in busy:
            try:
                busy[queue] = queue_depth(queue) > 0
            except Exception as exc:  # no answer: send, as without a depth
                logger.warning("reaper: depth of %s unknown (%s); re-sending", queue, exc)
                busy[queue] = False
        if not busy[queue]:
            kept.append((study_id, job_id, queue))
    return kept
