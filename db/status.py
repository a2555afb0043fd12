"""Every change of a study's status, and of its job's, with the job locks in one place.

A change locks the studies' jobs first, in id order, so that two writers never deadlock
and no claim, store, cancellation or recovery interleaves with another on the same job.
The lock is an UPDATE of the job's ``updated_at``, the transaction's first write: a row
lock on PostgreSQL, the database write lock on SQLite (no stale read snapshot); it also
records activity, which the recovery pass reads. Then the studies change, and each job's
status is derived again from its studies' counts.

Callers: the worker claims, finishes and fails studies; the recovery pass re-queues and
re-sends them; the API cancels; a new job gets its first status. Nothing else writes
``Study.status`` or ``Job.status``. The jobs a change finishes are handed on after the
unit of work commits (``db.session.after_commit`` with :data:`JOB_FINISHED`), so that
they are announced (``core/dispatch.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import UNFINISHED_STUDY, Job, JobStatus, Study, StudyStatus, utcnow
from db.repositories import leases as leases_repo
from db.repositories import studies as studies_repo
from db.session import after_commit

#: What ``db.session.after_commit`` hands on for a job that reached a final status (its id).
JOB_FINISHED = "job_finished"


# -- locks -------------------------------------------------------------------------
def lock_jobs(session: Session, job_ids: Sequence[int]) -> list[Job]:
    """Take the jobs' write locks, in id order, for the rest of the transaction, and
    record activity on them; the jobs that exist, fresh from the database."""
    jobs = []
    for job_id in sorted(set(job_ids)):
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow()))
        job = session.get(Job, job_id, populate_existing=True)
        if job is not None:
            jobs.append(job)
    return jobs


def lock_job_if_idle(session: Session, job_id: int, idle_before: datetime) -> Job | None:
    """Like :func:`lock_jobs`, but only while the job has seen no activity since
    ``idle_before``; None when it has (or does not exist).

    The check and the lock are one UPDATE, so of two recovery passes that both found the
    job idle only the first gets it: the second sees the first one's activity.
    """
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.updated_at < idle_before)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        return None
    return session.get(Job, job_id, populate_existing=True)


# -- counts and the job's status ---------------------------------------------------
def study_counts(session: Session, job_id: int) -> dict[StudyStatus, int]:
    """Number of studies of the job in each status (every status present, maybe 0)."""
    return counts_for_jobs(session, [job_id])[job_id]


def counts_for_jobs(session: Session, job_ids: Sequence[int]) -> dict[int, dict[StudyStatus, int]]:
    """Like :func:`study_counts` for several jobs in one query."""
    out = {job_id: dict.fromkeys(StudyStatus, 0) for job_id in job_ids}
    if not job_ids:
        return out
    rows = session.execute(
        select(Study.job_id, Study.status, func.count())
        .where(Study.job_id.in_(list(job_ids)))
        .group_by(Study.job_id, Study.status)
    )
    for job_id, status, n in rows:
        out[job_id][StudyStatus(status)] = n
    return out


def job_status(counts: Mapping[StudyStatus, int], current: JobStatus) -> JobStatus:
    """A job's status from its study counts.

    A finished job says what its studies gave: succeeded (or partially failed, counting
    rejected studies as failed) whenever one succeeded, cancelled counts or not (the
    counts say how many); cancelled only when nothing succeeded and something was
    cancelled.
    """
    if sum(counts[s] for s in UNFINISHED_STUDY):
        started = counts[StudyStatus.RUNNING] or current is JobStatus.RUNNING
        return JobStatus.RUNNING if started else JobStatus.QUEUED
    failed = counts[StudyStatus.FAILED] + counts[StudyStatus.REJECTED]
    if counts[StudyStatus.SUCCEEDED]:
        return JobStatus.PARTIALLY_FAILED if failed else JobStatus.SUCCEEDED
    if counts[StudyStatus.CANCELLED]:
        return JobStatus.CANCELLED
    if failed:
        return JobStatus.FAILED
    return JobStatus.SUCCEEDED


def open_job(session: Session, job: Job, studies: Sequence[Study]) -> None:
    """Give a new job its first status from its studies (in memory, not yet written),
    without reading anything back; a job whose every study failed at intake ends here."""
    counts = dict.fromkeys(StudyStatus, 0)
    for study in studies:
        counts[study.status] += 1
    job.status = job_status(counts, JobStatus.QUEUED)
    if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        job.finished_at = job.created_at or utcnow()


def announce_if_finished(session: Session, job: Job) -> None:
    """Announce a job that :func:`open_job` finished, once it has its id."""
    if job.finished_at is not None:
        after_commit(session, JOB_FINISHED, job.id)


def refresh_jobs(session: Session, job_ids: Sequence[int]) -> None:
    """Derive and store each job's status (and finish time) from its studies; the jobs
    that finish now are announced after the commit (:data:`JOB_FINISHED`)."""
    session.flush()
    for job_id, job_counts in counts_for_jobs(session, sorted(set(job_ids))).items():
        job = session.get(Job, job_id)
        if job is None:
            continue
        job.status = job_status(job_counts, job.status)
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            job.finished_at = None
        elif job.finished_at is None:
            job.finished_at = utcnow()
            after_commit(session, JOB_FINISHED, job_id)
    session.flush()


# -- the worker's changes ----------------------------------------------------------
@dataclass
class Claim:
    """What a claim did with each study of a chunk."""

    #: Studies now running under the claimer's lease, with their image bytes.
    studies: list[Study] = field(default_factory=list)
    #: Cancelled, failed, done with this model version, or held by another live worker.
    skipped: list[int] = field(default_factory=list)
    #: Failed for good now: past the delivery cap.
    failed: list[int] = field(default_factory=list)
    #: An earlier delivery claimed some of them and never finished: only one study was
    #: claimed, so that a study that kills its worker uses up only its own deliveries.
    interrupted: bool = False


def claim(
    session: Session,
    study_ids: Sequence[int],
    *,
    owner: str,
    lease_until: datetime,
    model_version: str,
    model_trained: bool,
    max_deliveries: int,
    give_up: str,
    held_elsewhere: Callable[[Study, datetime], bool],
) -> Claim:
    """Mark the studies running under ``owner``'s lease, one more attempt each.

    Skipped: cancelled or failed studies, studies done with ``model_version``, and
    running ones that ``held_elsewhere(study, now)`` says another live worker holds.
    Studies with ``max_deliveries`` attempts already are failed with ``give_up``. When
    an earlier delivery claimed some and never finished them (``attempts`` of a queued
    or running study), only the first claimable study is claimed, and the rest are left
    for the next claim. The jobs record their start and the model version.
    """
    job_ids = studies_repo.job_ids_of(session, study_ids)
    now = utcnow()
    for job in lock_jobs(session, job_ids):
        job.started_at = job.started_at or now
        job.model_version, job.model_trained = model_version, model_trained
    studies = studies_repo.load_studies(session, study_ids, with_bytes=True)
    done = studies_repo.studies_with_result(session, [s.id for s in studies], model_version)
    out = Claim(interrupted=any(s.status in UNFINISHED_STUDY and s.attempts >= 1 for s in studies))
    for study in studies:
        if out.interrupted and out.studies:
            break  # one at a time: the rest wait for the next claim
        finished = study.status in (StudyStatus.FAILED, StudyStatus.CANCELLED)
        if finished or (study.status is StudyStatus.SUCCEEDED and study.id in done):
            out.skipped.append(study.id)
        elif study.status is StudyStatus.RUNNING and held_elsewhere(study, now):
            out.skipped.append(study.id)  # a duplicate delivery: it is running
        elif study.attempts >= max_deliveries:
            _end(study, StudyStatus.FAILED, give_up, now)
            out.failed.append(study.id)
        else:
            study.attempts += 1
            study.status, study.started_at, study.error = StudyStatus.RUNNING, now, None
            study.lease_owner, study.lease_expires_at = owner, lease_until
            out.studies.append(study)
    refresh_jobs(session, job_ids)
    return out


@dataclass
class Finish:
    """What :func:`finish` did."""

    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    #: No longer running (deleted, or finished elsewhere): left as they are.
    skipped: list[int] = field(default_factory=list)
    #: Refused by the input check (``model/quality.py``), with the reason.
    rejected: list[int] = field(default_factory=list)


def finish(
    session: Session,
    errors: Mapping[int, str | None],
    job_ids: Sequence[int] | None = None,
    rejected: Collection[int] = (),
) -> Finish:
    """End running studies: succeeded where ``errors[id]`` is None, else failed with it
    (rejected with it when the id is in ``rejected``).

    Args:
        session: The unit of work.
        errors: Study id -> None (succeeded) or the reason it failed.
        job_ids: Their jobs, when the caller knows them (a claim told it).
        rejected: The studies the input check refused; their reason is in ``errors``.
    """
    if job_ids is None:
        job_ids = studies_repo.job_ids_of(session, list(errors))
    lock_jobs(session, job_ids)
    now = utcnow()
    studies = {s.id: s for s in studies_repo.load_studies(session, list(errors))}
    out = Finish()
    for study_id, error in errors.items():
        study = studies.get(study_id)
        if study is None or study.status is not StudyStatus.RUNNING:
            out.skipped.append(study_id)
        elif error is None:
            _end(study, StudyStatus.SUCCEEDED, None, now)
            out.succeeded.append(study_id)
        elif study_id in rejected:
            _end(study, StudyStatus.REJECTED, error, now)
            out.rejected.append(study_id)
        else:
            _end(study, StudyStatus.FAILED, error, now)
            out.failed.append(study_id)
    refresh_jobs(session, job_ids)
    return out


def fail_unfinished(session: Session, study_ids: Sequence[int], message: str) -> int:
    """Fail the studies among ``study_ids`` that are still queued or running (a task that
    died in a way it can report), so that no job waits for ever; how many."""
    job_ids = studies_repo.job_ids_of(session, study_ids)
    lock_jobs(session, job_ids)
    now = utcnow()
    unfinished = [
        s for s in studies_repo.load_studies(session, study_ids) if s.status in UNFINISHED_STUDY
    ]
    for study in unfinished:
        _end(study, StudyStatus.FAILED, message, now)
    refresh_jobs(session, job_ids)
    return len(unfinished)


def _end(study: Study, status: StudyStatus, error: str | None, now: datetime) -> None:
    study.status, study.error, study.finished_at = status, error, now
    study.lease_owner = study.lease_expires_at = None


def still_running(session: Session, study_ids: Sequence[int], owner: str) -> set[int]:
    """The studies among ``study_ids`` that are still running under ``owner``'s lease (the
    others were cancelled, or taken back, while its chunk ran)."""
    if not study_ids:
        return set()
    stmt = select(Study.id).where(
        Study.id.in_(list(study_ids)),
        Study.status == StudyStatus.RUNNING,
        Study.lease_owner == owner,
    )
    return set(session.scalars(stmt))


# -- cancellation --------------------------------------------------------------------
def cancel_unfinished(session: Session, job_id: int) -> int:
    """Cancel the job's studies that have no result yet: queued ones, and those of a
    running chunk (its worker skips them before their batch, and drops the result of a
    batch that was running); how many."""
    if not lock_jobs(session, [job_id]):
        return 0
    result = session.execute(
        update(Study)
        .where(Study.job_id == job_id, Study.status.in_(UNFINISHED_STUDY))
        .values(
            status=StudyStatus.CANCELLED,
            error="cancelled by request",
            finished_at=utcnow(),
            lease_owner=None,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    refresh_jobs(session, [job_id])
    return int(result.rowcount or 0)  # type: ignore[attr-defined]  # an UPDATE's CursorResult


# -- recovery ------------------------------------------------------------------------
@dataclass
class Requeue:
    """What :func:`requeue` did."""

    #: Running studies whose worker is gone, queued again.
    requeued: list[int] = field(default_factory=list)
    #: Queued studies of idle jobs whose task was lost, counted as re-sent.
    resent: list[int] = field(default_factory=list)
    #: (study id, queue) of every study to send after the commit, in job order.
    to_send: list[tuple[int, str]] = field(default_factory=list)


def requeue(
    session: Session,
    running: Sequence[int],
    idle: Mapping[int, Sequence[int]],
    *,
    now: datetime,
    idle_before: datetime,
    node: str | None = None,
) -> Requeue:
    """Take back lost work: ``running`` studies whose worker is gone go back to queued, and
    the queued studies of the ``idle`` jobs (job id -> study ids) are re-sent if their job
    is still idle.

    The conditions are checked again under the locks (the lease conditions of
    ``db.repositories.leases.lapsed``, the job's idleness in :func:`lock_job_if_idle`), so
    that a study a worker finished or renewed meanwhile is left alone, and of two
    overlapping passes only one takes a study back. ``attempts`` is kept (the delivery cap
    still counts these tries) and ``requeues`` counts one more.
    """
    job_ids = sorted(set(idle) | set(studies_repo.job_ids_of(session, running)))
    resend: set[int] = set()
    for job_id in job_ids:  # the workers' lock: no claim or store interleaves
        if job_id in idle and lock_job_if_idle(session, job_id, idle_before):
            resend |= set(idle[job_id])
        else:  # not idle after all (or only running studies to take back)
            lock_jobs(session, [job_id])
    out = Requeue()
    if running:
        rows = session.execute(
            update(Study)
            .where(Study.id.in_(list(running)), leases_repo.lapsed(now, node))
            .values(
                status=StudyStatus.QUEUED,
                started_at=None,
                lease_owner=None,
                lease_expires_at=None,
                requeues=Study.requeues + 1,
            )
            .returning(Study.id)
            .execution_options(synchronize_session=False)
        )
        out.requeued = sorted(int(i) for i in rows.scalars())
    queued = studies_repo.queued_among(session, sorted(resend | set(out.requeued)))
    out.to_send = [(study_id, queue) for study_id, _job_id, queue in queued]
    out.resent = sorted({study_id for study_id, _ in out.to_send} - set(out.requeued))
    if out.resent:
        session.execute(
            update(Study)
            .where(Study.id.in_(out.resent))
            .values(requeues=Study.requeues + 1)
            .execution_options(synchronize_session=False)
        )
    session.expire_all()
    refresh_jobs(session, job_ids)
    return out
