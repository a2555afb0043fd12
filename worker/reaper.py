"""The reaper (the recovery pass): sends again the studies whose worker or task was lost.

Three cases:

* *running* under a lease that lapsed (``lease_seconds`` without a heartbeat): the
  worker that claimed them died, whatever the broker does about its task. At a worker's
  start-up (``node`` given) also every study that node still holds: it belongs to the
  node's previous life;
* *queued* in a job that has seen no activity for ``reap_queued_after``: the task
  message never reached Redis (the API died between its commit and the enqueue, or the
  broker refused the send: ``core/dispatch.py``'s policy) or Redis lost it (a restart
  without persistence). These are sent again only once their queue is empty: while a
  long nightly backlog drains, their message is most likely still waiting in it, and a
  re-send would only double the backlog. A lost one is sent when the queue runs dry.

Each worker runs a pass at start-up and every ``reap_interval`` seconds
(``worker/recovery.py``); beat sends one as a task too. Passes may overlap: the
conditions are checked again under the jobs' locks (``db/status.py::requeue``), so only
one of them re-queues or re-sends a study. It re-queues in one transaction and sends the
ids after the commit, and counts what it took back (``worker/metrics.py``).
Sending a study twice is harmless anyway: a worker skips studies done with the current
model version or held by another live worker's lease, results are unique per (study,
model version), and the delivery cap (``max_deliveries``) still counts every claim, so
a study that kills every worker that takes it is failed for good instead of being
re-queued for ever.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis

from config.settings import Settings
from core.dispatch import Dispatcher
from db import status
from db.models import utcnow
from db.repositories import leases as leases_repo
from db.repositories import studies as studies_repo
from db.session import session_scope
from worker.metrics import record_recovery

logger = logging.getLogger(__name__)


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


def reap(
    settings: Settings,
    dispatcher: Dispatcher,
    now: datetime | None = None,
    node: str | None = None,
) -> ReapReport:
    """One reaper pass over the configured database.

    Args:
        settings: The deadline ``reap_queued_after``.
        dispatcher: Sends the chunks again, after the commit; its broker tells the depth
            of each queue (see the module's notes).
        now: The current time (tests pass their own).
        node: The Celery node name of a worker that is starting: the running studies
            it holds are re-queued whatever their lease says.

    Returns:
        The studies re-queued and re-sent, and the number of tasks sent.
    """
    now = now or utcnow()
    idle_before = now - timedelta(seconds=settings.reap_queued_after)
    report = ReapReport()
    with session_scope(settings.sqlalchemy_url, dispatcher.after_commit) as session:
        running = leases_repo.recoverable(session, now, node)
        idle: list[tuple[int, int, str]] = []
        if settings.reap_queued_after:
            idle = studies_repo.queued_among(
                session, studies_repo.idle_queued(session, idle_before)
            )
    idle = _drop_waiting(idle, dispatcher)  # before any lock: a busy queue costs nothing
    if not running and not idle:
        return report
    idle_jobs: dict[int, list[int]] = defaultdict(list)
    for study_id, job_id, _queue in idle:
        idle_jobs[job_id].append(study_id)
    with session_scope(settings.sqlalchemy_url, dispatcher.after_commit) as session:
        taken = status.requeue(
            session,
            list(running),
            idle_jobs,
            now=now,
            idle_before=idle_before,
            node=node,
        )
    report.requeued_running, report.resent_queued = taken.requeued, taken.resent
    report.holders = {i: running[i] for i in taken.requeued}
    if taken.to_send:
        _log(report, node)
    by_queue: dict[str, list[int]] = defaultdict(list)
    for study_id, queue in taken.to_send:
        by_queue[queue].append(study_id)
    for queue, ids in by_queue.items():  # after the commit
        report.tasks_sent += dispatcher.send(ids, queue)
    record_recovery(report)  # tumorseg_worker_leases_recovered_total and studies resent
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
    idle: list[tuple[int, int, str]], dispatcher: Dispatcher
) -> list[tuple[int, int, str]]:
    """Leave out idle queued studies whose queue still holds messages."""
    busy: dict[str, bool] = {}
    kept = []
    for study_id, job_id, queue in idle:
        if queue not in busy:
            try:
                busy[queue] = dispatcher.queue_depth(queue) > 0
            except redis.RedisError as exc:  # no answer: send, as without a depth
                logger.warning("reaper: depth of %s unknown (%s); re-sending", queue, exc)
                busy[queue] = False
        if not busy[queue]:
            kept.append((study_id, job_id, queue))
    return kept
