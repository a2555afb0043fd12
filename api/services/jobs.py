"""Job intake and cancellation (the answers the routes build are ``api/views.py``'s)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from api.services.auth import Principal
from api.services.errors import ServiceError
from api.services.labels import LabelMatchError, match_labels
from config.settings import Settings
from core.dispatch import send_after_commit
from db import status
from db.models import (
    DEFAULT_TENANT,
    JOB_NAME_LENGTH,
    Job,
    JobSource,
    StudyStatus,
)
from db.repositories import jobs as jobs_repo
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

    new_studies, heights = [], []
    for i, upload in enumerate(files):
        label = labels[pairs[i]] if i in pairs else None
        error, height = _check(upload, settings, single=len(files) == 1)
        heights.append(height)
        if error is None and label is not None:
            what = f"label {label.filename}"
            error, _ = _check(label, settings, single=len(files) == 1, what=what)
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
    # sent tallest last: a chunk then holds studies of similar height, whose batches the
    # worker pads little (docs/BENCHMARKS.md, pipeline)
    queued = [s for s in job.studies if s.status is StudyStatus.QUEUED]
    ids = [s.id for s in sorted(queued, key=lambda s: heights[s.position])]
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


def _check(
    upload: Upload, settings: Settings, single: bool, what: str | None = None
) -> tuple[str | None, int]:
    """(Why the PNG is unusable or None, its height: 0 when unusable)."""
    limits = ImageLimits(settings.max_image_side, settings.max_image_pixels)
    try:
        height, _ = validate_png(upload.data, what or upload.filename, limits)
    except InvalidImage as exc:
        if single:
            raise ServiceError(413 if exc.too_large else 422, str(exc)) from exc
        return str(exc), 0
    return None, height


def cancel_job(session: Session, job_id: int, principal: Principal) -> Job:
    """Cancel the studies of a job that have not started; 404 when the caller cannot see it."""
    get_job_or_404(session, job_id, principal)
    n = status.cancel_unfinished(session, job_id)
    logger.info("job %d: %d studies cancelled by key %d", job_id, n, principal.key_id)
    return get_job_or_404(session, job_id, principal)


def get_job_or_404(session: Session, job_id: int, principal: Principal) -> Job:
    """The job, or a 404 service error when it does not exist or belongs to another tenant."""
    job = jobs_repo.get_job(session, job_id)
    if job is None or not principal.can_see(job):
        raise ServiceError(404, f"job {job_id} not found")
    return job
