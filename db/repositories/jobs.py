"""Jobs and their studies: creation, locking, counting, status and cancellation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import (
    DEFAULT_TENANT,
    UNFINISHED_STUDY,
    Job,
    JobSource,
    JobStatus,
    Result,
    Study,
    StudyStatus,
    utcnow,
)


@dataclass(frozen=True)
class NewStudy:
    """One study of a job being created."""

    filename: str
    input_png: bytes
    label_filename: str | None = None
    label_png: bytes | None = None
    error: str | None = None  # set: the study is failed at intake and never queued


def create_job(
    session: Session,
    queue: str,
    studies: Sequence[NewStudy],
    tenant: str = DEFAULT_TENANT,
    source: JobSource = JobSource.API,
) -> Job:
    """Add a job with its studies and flush so ids are assigned.

    Args:
        session: The unit of work.
        queue: Celery queue the job's chunks go to.
        studies: The studies, in submission order.
        tenant: Tenant that owns the job (the submitting key's).
        source: Where the job came from (API, /predict, archive scan).

    Returns:
        The new job; studies with an ``error`` are already failed.
    """
    now = utcnow()
    job = Job(
        status=JobStatus.QUEUED,
        queue=queue,
        tenant=tenant,
        source=source,
        created_at=now,
        updated_at=now,
    )
    for position, new in enumerate(studies):
        failed = new.error is not None
        job.studies.append(
            Study(
                position=position,
                filename=new.filename,
                input_png=new.input_png,
                label_filename=new.label_filename,
                label_png=new.label_png,
                status=StudyStatus.FAILED if failed else StudyStatus.QUEUED,
                error=new.error,
                attempts=0,
                finished_at=now if failed else None,
            )
        )
    session.add(job)
    session.flush()
    refresh_job_status(session, job)
    return job


def get_job(session: Session, job_id: int) -> Job | None:
    """Return the job or None."""
    return session.get(Job, job_id)


def list_jobs(
    session: Session, limit: int, offset: int, tenant: str | None = None
) -> tuple[list[Job], int]:
    """Return one page of jobs, newest first, and the total number of jobs.

    Args:
        session: The unit of work.
        limit: Page size.
        offset: Jobs to skip.
        tenant: Only this tenant's jobs; None for every tenant's.
    """
    count = select(func.count()).select_from(Job)
    page = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
    if tenant is not None:
        owned = func.coalesce(Job.tenant, DEFAULT_TENANT) == tenant
        count, page = count.where(owned), page.where(owned)
    total = session.scalar(count) or 0
    return list(session.scalars(page)), total


def lock_job(session: Session, job_id: int) -> Job | None:
    """Take the job's write lock for the rest of the transaction and return the job.

    An UPDATE is the first statement, so it serialises writers on both backends: a row
    lock on PostgreSQL, the database write lock on SQLite (no stale read snapshot).
    """
    session.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow()))
    job = session.get(Job, job_id, populate_existing=True)
    return job


def lock_job_if_idle(session: Session, job_id: int, idle_before: datetime) -> Job | None:
    """Like :func:`lock_job`, but only while the job has seen no activity since
    ``idle_before``; None when it has (or does not exist).

    The check and the lock are one UPDATE, so of two reaper passes that both found the
    job idle only the first gets it: the second sees the first one's activity.
    """
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.updated_at < idle_before)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return session.get(Job, job_id, populate_existing=True)


def touch_jobs(session: Session, job_ids: Sequence[int]) -> None:
    """Record activity on the jobs (a worker has one of their chunks in hand), in id order
    like every job lock, so that the reaper does not take their queued studies for lost."""
    for job_id in sorted(job_ids):
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow()))


def requeued_studies(session: Session, job_id: int) -> int:
    """Number of the job's studies that the recovery sent again at least once."""
    stmt = select(func.count()).where(Study.job_id == job_id, Study.requeues > 0)
    return int(session.scalar(stmt) or 0)


def study_counts(session: Session, job_id: int) -> dict[StudyStatus, int]:
    """Number of studies of the job in each status (every status present, maybe 0)."""
    counts = dict.fromkeys(StudyStatus, 0)
    rows = session.execute(
        select(Study.status, func.count()).where(Study.job_id == job_id).group_by(Study.status)
    )
    for status, n in rows:
        counts[StudyStatus(status)] = n
    return counts


def counts_for_jobs(session: Session, job_ids: Sequence[int]) -> dict[int, dict[StudyStatus, int]]:
    """Like :func:`study_counts` for several jobs in one query."""
    out = {job_id: dict.fromkeys(StudyStatus, 0) for job_id in job_ids}
    if not job_ids:
        return out
    rows = session.execute(
        select(Study.job_id, Study.status, func.count())
        .where(Study.job_id.in_(job_ids))
        .group_by(Study.job_id, Study.status)
    )
    for job_id, status, n in rows:
        out[job_id][StudyStatus(status)] = n
    return out


def status_from_counts(counts: dict[StudyStatus, int], current: JobStatus) -> JobStatus:
    """Derive a job's status from its study counts."""
    unfinished = sum(counts[s] for s in UNFINISHED_STUDY)
    if unfinished:
        started = counts[StudyStatus.RUNNING] or current is JobStatus.RUNNING
        return JobStatus.RUNNING if started else JobStatus.QUEUED
    if counts[StudyStatus.CANCELLED]:
        return JobStatus.CANCELLED
    if counts[StudyStatus.FAILED] and counts[StudyStatus.SUCCEEDED]:
        return JobStatus.PARTIALLY_FAILED
    if counts[StudyStatus.FAILED]:
        return JobStatus.FAILED
    return JobStatus.SUCCEEDED


def refresh_job_status(session: Session, job: Job) -> JobStatus:
    """Recompute and store the job's status (and finish time) from its studies."""
    session.flush()
    status = status_from_counts(study_counts(session, job.id), job.status)
    job.status = status
    if status in (JobStatus.QUEUED, JobStatus.RUNNING):
        job.finished_at = None
    elif job.finished_at is None:
        job.finished_at = utcnow()
    session.flush()
    return status


def cancel_job(session: Session, job_id: int) -> int:
    """Cancel the job's studies that have not started; running ones finish.

    Returns:
        The number of studies cancelled.
    """
    job = lock_job(session, job_id)
    if job is None:
        return 0
    result = session.execute(
        update(Study)
        .where(Study.job_id == job_id, Study.status == StudyStatus.QUEUED)
        .values(status=StudyStatus.CANCELLED, error="cancelled by request", finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    refresh_job_status(session, session.get(Job, job_id) or job)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def fail_queued_studies(session: Session, job_id: int, message: str) -> int:
    """Fail every still-queued study of the job with ``message`` (e.g. broker down)."""
    result = session.execute(
        update(Study)
        .where(Study.job_id == job_id, Study.status == StudyStatus.QUEUED)
        .values(status=StudyStatus.FAILED, error=message, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    job = session.get(Job, job_id)
    if job is not None:
        job.error = message
        refresh_job_status(session, job)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def queued_study_ids(session: Session, job_id: int) -> list[int]:
    """Ids of the job's queued studies in submission order."""
    stmt = select(Study.id).where(Study.job_id == job_id, Study.status == StudyStatus.QUEUED)
    return list(session.scalars(stmt.order_by(Study.position)))


def dice_summary(session: Session, job_id: int) -> tuple[int, float | None]:
    """Number of labelled studies with a result and their mean Dice (newest result each)."""
    rows = session.execute(
        select(Result.study_id, Result.dice)
        .join(Study, Study.id == Result.study_id)
        .where(Study.job_id == job_id, Study.status == StudyStatus.SUCCEEDED)
        .order_by(Result.id)
    )
    latest: dict[int, float | None] = {}
    for study_id, dice in rows:
        latest[study_id] = dice
    values = [d for d in latest.values() if d is not None]
    return len(values), (sum(values) / len(values) if values else None)
