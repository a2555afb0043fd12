"""What the API answers about jobs and studies: schemas built from the rows.

The routes and the web viewer build their answers here, from rows a service or
repository read (or, for a job just submitted, from what was written: no query).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from api import schemas
from api.services.auth import Principal
from db import status
from db.models import (
    BIOMARKER_FIELDS,
    LESION_FIELDS,
    METRIC_FIELDS,
    UNFINISHED_STUDY,
    Job,
    Lesion,
    Result,
    Study,
    StudyStatus,
)
from db.repositories import jobs as jobs_repo
from db.repositories import studies as studies_repo

UNTRAINED_WARNING = (
    "MODEL {version} IS UNTRAINED (placeholder artifact): masks and metrics are not "
    "meaningful. Train and promote a model before trusting any result."
)


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return round((b - a).total_seconds(), 3)


def metrics_view(result: Result | None) -> schemas.StudyMetrics | None:
    """The metrics schema of a result (None without one)."""
    if result is None:
        return None
    values = {name: getattr(result, name) for name in METRIC_FIELDS}
    return schemas.StudyMetrics(
        model_version=result.model_version,
        height=result.height,
        width=result.width,
        inference_seconds=result.inference_seconds,
        **values,
    )


def biomarkers_view(result: Result | None) -> schemas.StudyBiomarkers | None:
    """The biomarkers schema of a result (None without one)."""
    if result is None:
        return None
    return schemas.StudyBiomarkers(
        tumor_area_px=result.tumor_pixels,
        lesion_count=result.lesions,
        **{name: getattr(result, name) for name in BIOMARKER_FIELDS},
    )


def lesion_view(lesion: Lesion) -> schemas.LesionOut:
    """The schema of one lesion row."""
    box = [lesion.bbox_row0, lesion.bbox_col0, lesion.bbox_row1, lesion.bbox_col1]
    values = {name: getattr(lesion, name) for name in LESION_FIELDS if not name.startswith("bbox")}
    return schemas.LesionOut(bbox=box, **values)


def study_view(
    study: Study, result: Result | None, lesions: Sequence[Lesion] | None = None
) -> schemas.StudyOut:
    """The study schema; mask and overlay URLs only once it succeeded, and its lesions
    when given."""
    done = study.status is StudyStatus.SUCCEEDED and result is not None
    rows_mm, cols_mm = study.spacing_row_mm, study.spacing_col_mm
    return schemas.StudyOut(
        id=study.id,
        job_id=study.job_id,
        position=study.position,
        filename=study.filename,
        label_filename=study.label_filename,
        status=study.status.value,
        error=study.error,
        attempts=study.attempts,
        requeues=study.requeues,
        worker=study.lease_owner if study.status is StudyStatus.RUNNING else None,
        spacing_mm=[rows_mm, cols_mm] if rows_mm is not None and cols_mm is not None else None,
        metrics=metrics_view(result),
        biomarkers=biomarkers_view(result),
        lesions=[lesion_view(le) for le in lesions] if lesions is not None else None,
        mask_url=f"/v1/studies/{study.id}/mask.png" if done else None,
        overlay_url=f"/v1/studies/{study.id}/overlay.png" if done else None,
    )


def job_summary(job: Job, counts: dict[StudyStatus, int]) -> schemas.JobSummary:
    """The job schema without studies or aggregates."""
    total = sum(counts.values())
    finished = total - sum(counts[s] for s in UNFINISHED_STUDY)
    untrained = job.model_trained is False
    return schemas.JobSummary(
        id=job.id,
        name=job.name,
        status=job.status.value,
        total=total,
        counts={s.value: n for s, n in counts.items()},
        progress=round(finished / total, 4) if total else 1.0,
        model_version=job.model_version,
        model_trained=job.model_trained,
        warning=UNTRAINED_WARNING.format(version=job.model_version) if untrained else None,
        error=job.error,
        timings=schemas.JobTimings(
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            queued_seconds=_seconds(job.created_at, job.started_at),
            running_seconds=_seconds(job.started_at, job.finished_at),
            total_seconds=_seconds(job.created_at, job.finished_at),
        ),
    )


def job_view(session: Session, job: Job, with_studies: bool = True) -> schemas.JobOut:
    """The full job schema with counts, aggregates and every study (or, without
    ``with_studies``, the status alone: a poll then costs the same for 10 studies or
    10,000)."""
    counts = status.study_counts(session, job.id)
    labelled, mean_dice = jobs_repo.dice_summary(session, job.id)
    studies = None
    if with_studies:
        rows = list(job.studies)
        results = studies_repo.latest_results(session, [s.id for s in rows])
        studies = [study_view(s, results.get(s.id)) for s in rows]
    return schemas.JobOut(
        **job_summary(job, counts).model_dump(),
        aggregates=schemas.JobAggregates(
            labelled_studies=labelled,
            mean_dice=mean_dice,
            requeued_studies=jobs_repo.requeued_studies(session, job.id),
        ),
        studies=studies,
    )


def new_job_view(job: Job) -> schemas.JobOut:
    """The answer to a job just submitted, from what was written (its studies are in the
    session): no query."""
    counts = dict.fromkeys(StudyStatus, 0)
    for study in job.studies:
        counts[study.status] += 1
    return schemas.JobOut(
        **job_summary(job, counts).model_dump(),
        aggregates=schemas.JobAggregates(labelled_studies=0, mean_dice=None, requeued_studies=0),
        studies=[study_view(s, None) for s in job.studies],
    )


def list_jobs(session: Session, limit: int, offset: int, principal: Principal) -> schemas.JobPage:
    """One page of the job summaries the caller may see, newest first."""
    tenant = None if principal.is_admin else principal.tenant
    jobs, total = jobs_repo.list_jobs(session, limit, offset, tenant)
    counts = status.counts_for_jobs(session, [j.id for j in jobs])
    items = [job_summary(j, counts[j.id]) for j in jobs]
    return schemas.JobPage(items=items, total=total, limit=limit, offset=offset)
