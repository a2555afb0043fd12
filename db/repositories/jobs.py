"""Jobs and their studies: creation and the queries the views and the workers need (their
status changes are ``db/status.py``'s)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import status
from db.models import (
    DEFAULT_TENANT,
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
    spacing_mm: tuple[float, float] | None = None  # pixel size (rows, columns), when known


def create_job(
    session: Session,
    queue: str,
    studies: Sequence[NewStudy],
    tenant: str = DEFAULT_TENANT,
    source: JobSource = JobSource.API,
    name: str | None = None,
) -> Job:
    """Add a job with its studies and flush so ids are assigned.

    Args:
        session: The unit of work.
        queue: Celery queue the job's chunks go to.
        studies: The studies, in submission order.
        tenant: Tenant that owns the job (the submitting key's).
        source: Where the job came from (API, /predict, archive scan).
        name: What the submitter calls the job (at most ``JOB_NAME_LENGTH`` characters).

    Returns:
        The new job; studies with an ``error`` are already failed.
    """
    now = utcnow()
    job = Job(
        status=JobStatus.QUEUED,
        queue=queue,
        tenant=tenant,
        source=source,
        name=name,
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
                spacing_row_mm=new.spacing_mm[0] if new.spacing_mm else None,
                spacing_col_mm=new.spacing_mm[1] if new.spacing_mm else None,
                status=StudyStatus.FAILED if failed else StudyStatus.QUEUED,
                error=new.error,
                attempts=0,
                finished_at=now if failed else None,
            )
        )
    session.add(job)
    session.flush()
    status.refresh_jobs(session, [job.id])
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


def requeued_studies(session: Session, job_id: int) -> int:
    """Number of the job's studies that the recovery sent again at least once."""
    stmt = select(func.count()).where(Study.job_id == job_id, Study.requeues > 0)
    return int(session.scalar(stmt) or 0)


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
