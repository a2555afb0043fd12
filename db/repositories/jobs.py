"""Jobs and their studies: creation and the queries the views and the workers need (their
status changes are ``db/status.py``'s)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

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
    studies_of_job = [
        Study(
            position=position,
            filename=new.filename,
            input_png=new.input_png,
            label_filename=new.label_filename,
            label_png=new.label_png,
            spacing_row_mm=new.spacing_mm[0] if new.spacing_mm else None,
            spacing_col_mm=new.spacing_mm[1] if new.spacing_mm else None,
            status=StudyStatus.FAILED if new.error is not None else StudyStatus.QUEUED,
            error=new.error,
            attempts=0,
            requeues=0,
            started_at=None,
            finished_at=now if new.error is not None else None,
            lease_owner=None,
            lease_expires_at=None,
        )
        for position, new in enumerate(studies)
    ]
    status.open_job(session, job, studies_of_job)
    session.add(job)
    session.flush()
    _insert_studies(session, job, studies_of_job)
    status.announce_if_finished(session, job)
    return job


def _insert_studies(session: Session, job: Job, studies: list[Study]) -> None:
    """Insert a new job's studies in one statement (an ORM flush would insert them one by
    one on SQLite, to match each returned id to its row) and attach them to the job as
    persistent rows, so that nothing written is read back."""
    columns = [c.key for c in Study.__table__.columns if c.key != "id"]
    rows = [{**{c: getattr(s, c) for c in columns}, "job_id": job.id} for s in studies]
    by_position = {s.position: s for s in studies}
    if rows:
        returned = session.execute(insert(Study).returning(Study.id, Study.position), rows)
        for study_id, position in returned:
            by_position[position].id = study_id
    for study in studies:
        study.job_id = job.id
        make_transient_to_detached(study)
        session.add(study)
    set_committed_value(job, "studies", studies)


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
