"""Job intake, cancellation and the views the routes return."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from api import schemas
from api.services.auth import Principal
from api.services.errors import ServiceError
from api.services.labels import LabelMatchError, match_labels
from config.settings import Settings
from core.dispatch import send_after_commit
from db import status
from db.models import (
    BIOMARKER_FIELDS,
    DEFAULT_TENANT,
    JOB_NAME_LENGTH,
    LESION_FIELDS,
    METRIC_FIELDS,
    Job,
    JobSource,
    Lesion,
    Result,
    Study,
    StudyStatus,
)
from db.repositories import jobs as jobs_repo
from db.repositories import studies as studies_repo
from model.png import ImageLimits, InvalidImage, validate_png

logger = logging.getLogger(__name__)

UNTRAINED_WARNING = (
    "MODEL {version} IS UNTRAINED (placeholder artifact): masks and metrics are not "
    "meaningful. Train and promote a model before trusting any result."
)


@dataclass(frozen=True)
class Upload:
    """One uploaded file, read into memory within the size limit."""

    filename: str
    data: bytes


def submit_job(
    session: Session,
    settings: Settings,
    files: Sequence[Upload],
    labels: Sequence[Upload] = (),
    queue: str | None = None,
    tenant: str = DEFAULT_TENANT,
    source: JobSource = JobSource.API,
    spacing_mm: tuple[float, float] | None = None,
    name: str | None = None,
) -> Job:
    """Validate uploads, store the job with its studies, and send them after the commit.

    A single study that is not a usable PNG refuses the request (4xx). In a job of
    several studies, a bad one is stored as failed with the reason and the rest run.
    File names are reduced to a safe base name (no directories, no control characters).
    ``name`` is stored as :func:`job_name` returns it.

    Raises:
        ServiceError: No files, too many, a file over the size limit, unmatched labels,
            or a one-study job whose image is unusable.
    """
    name = job_name(name)
    if not files:
        raise ServiceError(400, "no files: send one or more PNG studies in the field 'files'")
    if len(files) > settings.max_studies_per_job:
        raise ServiceError(
            413, f"{len(files)} studies is over the limit of {settings.max_studies_per_job}"
        )
    files = [Upload(safe_filename(f.filename, i), f.data) for i, f in enumerate(files)]
    labels = [Upload(safe_filename(f.filename, i), f.data) for i, f in enumerate(labels)]
    for upload in (*files, *labels):
        if len(upload.data) > settings.max_upload_bytes:
            raise ServiceError(
                413, f"{upload.filename} is over the upload limit of {settings.max_upload_bytes} B"
            )
    try:
        pairs = match_labels([f.filename for f in files], [lab.filename for lab in labels])
    except LabelMatchError as exc:
        raise ServiceError(422, str(exc)) from exc

    new_studies = []
    for i, upload in enumerate(files):
        label = labels[pairs[i]] if i in pairs else None
        error = _check(upload, settings, single=len(files) == 1)
        if error is None and label is not None:
            error = _check(label, settings, single=len(files) == 1, what=f"label {label.filename}")
        new_studies.append(
            jobs_repo.NewStudy(
                filename=upload.filename,
                input_png=upload.data,
                label_filename=label.filename if label else None,
                label_png=label.data if label else None,
                error=error,
                spacing_mm=spacing_mm,
            )
        )
    job = jobs_repo.create_job(
        session, queue or settings.interactive_queue, new_studies, tenant, source=source, name=name
    )
    ids = jobs_repo.queued_study_ids(session, job.id)
    send_after_commit(session, ids, job.queue)
    logger.info("job %d: %d studies, %d queued", job.id, len(files), len(ids))
    return job


def job_name(text: str | None) -> str | None:
    """A job's name as stored: without control characters and surrounding blanks; None
    when nothing is left.

    Raises:
        ServiceError: 422 for a name over ``JOB_NAME_LENGTH`` characters.
    """
    if text is None:
        return None
    name = "".join(ch for ch in text if ch.isprintable()).strip()
    if len(name) > JOB_NAME_LENGTH:
        raise ServiceError(
            422, f"name is {len(name)} characters long; give at most {JOB_NAME_LENGTH}"
        )
    return name or None


#: Largest pixel size accepted, mm (whole-body PET pixels are 2 to 6 mm).
MAX_SPACING_MM = 50.0


def parse_spacing(text: str | None) -> tuple[float, float] | None:
    """The pixel spacing of a submission's form field: ``S`` (square pixels) or
    ``ROWS,COLUMNS``, in mm; None when not given.

    Raises:
        ServiceError: 422 for anything else, or a size not in (0, 50] mm.
    """
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(0 < v <= MAX_SPACING_MM for v in values):
        raise ServiceError(
            422,
            f"spacing_mm {text[:40]!r}: give the pixel size in mm as 'S' or 'ROWS,COLUMNS', "
            f"each above 0 and at most {MAX_SPACING_MM:g}",
        )
    return (values[0], values[-1])


def safe_filename(name: str, index: int) -> str:
    """The base name of an uploaded file without directories or control characters.

    Args:
        name: The name the client sent (may hold ``../``, NUL, any unicode).
        index: Position of the file, for a fallback name.

    Returns:
        At most 200 characters, never empty, never ``.`` or ``..``.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if base in ("", ".", ".."):
        base = f"file{index}.png"
    return base[-200:]


def _check(upload: Upload, settings: Settings, single: bool, what: str | None = None) -> str | None:
    limits = ImageLimits(settings.max_image_side, settings.max_image_pixels)
    try:
        validate_png(upload.data, what or upload.filename, limits)
    except InvalidImage as exc:
        if single:
            raise ServiceError(413 if exc.too_large else 422, str(exc)) from exc
        return str(exc)
    return None


def cancel_job(session: Session, job_id: int, principal: Principal) -> Job:
    """Cancel the studies of a job that have not started; 404 when the caller cannot see it."""
    get_job_or_404(session, job_id, principal)
    n = status.cancel_queued(session, job_id)
    logger.info("job %d: %d studies cancelled by key %d", job_id, n, principal.key_id)
    return get_job_or_404(session, job_id, principal)


def get_job_or_404(session: Session, job_id: int, principal: Principal) -> Job:
    """The job, or a 404 service error when it does not exist or belongs to another tenant."""
    job = jobs_repo.get_job(session, job_id)
    if job is None or not principal.can_see(job):
        raise ServiceError(404, f"job {job_id} not found")
    return job


# -- views -------------------------------------------------------------------------
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
    finished = sum(counts[s] for s in (StudyStatus.SUCCEEDED, StudyStatus.FAILED,
                                       StudyStatus.CANCELLED))  # fmt: skip
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


def list_jobs(session: Session, limit: int, offset: int, principal: Principal) -> schemas.JobPage:
    """One page of the job summaries the caller may see, newest first."""
    tenant = None if principal.is_admin else principal.tenant
    jobs, total = jobs_repo.list_jobs(session, limit, offset, tenant)
    counts = status.counts_for_jobs(session, [j.id for j in jobs])
    items = [job_summary(j, counts[j.id]) for j in jobs]
    return schemas.JobPage(items=items, total=total, limit=limit, offset=offset)
