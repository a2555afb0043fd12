"""What the web viewer shows: the same job and study services as the JSON API.

Pages get their data from :mod:`api.services.jobs` and :mod:`api.services.studies`
(the views of ``GET /v1/jobs`` and ``GET /v1/studies/{id}``), and uploads go through
:func:`api.services.jobs.submit_job` after the same admission check as ``POST /v1/jobs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fastapi import UploadFile
from sqlalchemy.orm import Session

from api import schemas, views
from api.services import exports
from api.services import jobs as jobs_service
from api.services import studies as studies_service
from api.services.auth import Principal
from api.services.jobs import Upload
from api.services.limits import Admission
from config.settings import Settings
from db import status

ImageKind = Literal["input", "mask", "overlay", "comparison"]
CsvTable = Literal["results", "lesions"]
NOT_AVAILABLE = "n/a"


@dataclass(frozen=True)
class Biomarker:
    """One row of the study page's biomarkers: its name, value and definition."""

    name: str
    value: str
    definition: str


@dataclass(frozen=True)
class StudyPage:
    """A study with its job's model version and the numbers the study page shows."""

    study: schemas.StudyOut
    job: schemas.JobSummary
    burden: list[tuple[str, str]]
    biomarkers: list[Biomarker]
    has_label: bool


def read_uploads(files: Sequence[UploadFile] | None, limit: int) -> list[Upload]:
    """Read uploaded files into memory, one byte over ``limit`` so "too big" shows.

    Args:
        files: The multipart files of one form field (None when the field is missing).
        limit: The upload limit in bytes.

    Returns:
        The uploads, in form order; files with no name are left out (an empty picker).
    """
    uploads = []
    for i, f in enumerate(files or []):
        data = f.file.read(limit + 1)
        if f.filename or data:
            uploads.append(Upload(f.filename or f"file{i}.png", data))
    return uploads


def submit(
    session: Session,
    settings: Settings,
    admission: Admission,
    principal: Principal,
    files: Sequence[Upload],
    labels: Sequence[Upload],
    name: str | None = None,
    spacing_mm: str | None = None,
) -> int:
    """Submit an upload form as a job, exactly like ``POST /v1/jobs``.

    Args:
        session: The request's unit of work.
        settings: The service settings.
        admission: The rate limit and back-pressure check of submissions.
        principal: The signed-in key.
        files: The studies.
        labels: Their optional labels.
        name: The form's job name (optional).
        spacing_mm: The form's pixel spacing, ``S`` or ``ROWS,COLUMNS`` (optional).

    Returns:
        The new job's id.

    Raises:
        ServiceError: Rate limit, back-pressure, or refused uploads, name or spacing (as
            the API).
    """
    admission.admit(principal.key_id, settings.interactive_queue)
    job = jobs_service.submit_job(
        session,
        settings,
        files,
        labels,
        tenant=principal.tenant,
        spacing_mm=jobs_service.parse_spacing(spacing_mm),
        name=name,
    )
    return job.id


def status_words(status: str) -> str:
    """A job or study status as the viewer shows it: ``partially_failed`` is "partially
    failed" (``common.js``'s ``statusWords`` does the same in the browser)."""
    return status.replace("_", " ")


def jobs_page(session: Session, principal: Principal, limit: int = 50) -> schemas.JobPage:
    """The newest jobs the caller may see (as ``GET /v1/jobs``)."""
    return views.list_jobs(session, limit, 0, principal)


def job_page(session: Session, job_id: int, principal: Principal) -> schemas.JobOut:
    """One job with its studies (as ``GET /v1/jobs/{id}``); 404 for another tenant's."""
    return views.job_view(session, jobs_service.get_job_or_404(session, job_id, principal))


def study_page(session: Session, study_id: int, principal: Principal) -> StudyPage:
    """A study, its job summary and its tumor burden; 404 for another tenant's."""
    study = studies_service.study_out(session, study_id, principal)
    job = jobs_service.get_job_or_404(session, study.job_id, principal)
    summary = views.job_summary(job, status.study_counts(session, job.id))
    return StudyPage(
        study=study,
        job=summary,
        burden=burden_rows(study.metrics),
        biomarkers=biomarker_rows(study.biomarkers),
        has_label=study.label_filename is not None,
    )


def table_csv(session: Session, job_id: int, table: CsvTable, principal: Principal) -> str:
    """A job's ``results.csv`` or ``lesions.csv`` (as ``GET /v1/jobs/{id}/<table>.csv``)."""
    if table == "results":
        return exports.results_csv(session, job_id, principal)
    return exports.lesions_csv(session, job_id, principal)


def _value(value: float | None, fmt: str, unit: str) -> str:
    return NOT_AVAILABLE if value is None else f"{value:{fmt}}{unit}"


def biomarker_rows(b: schemas.StudyBiomarkers | None) -> list[Biomarker]:
    """The study page's biomarkers (docs/BIOMARKERS.md), "n/a" for unknown values: the cm
    values without a pixel spacing, all but the area and count in older results."""
    if b is None:
        return []
    return [
        Biomarker(
            "tumor area (sTMTV)",
            f"{_value(b.tumor_area_px, 'd', ' px')} · {_value(b.tumor_area_cm2, '.2f', ' cm²')}",
            "Predicted tumor pixels, the MIP surrogate of the total metabolic tumor volume; "
            "× the pixel area in cm².",
        ),
        Biomarker("lesions", str(b.lesion_count), "Predicted lesions (8-connected regions)."),
        Biomarker(
            "sDmax",
            f"{_value(b.sdmax_px, '.1f', ' px')} · {_value(b.sdmax_cm, '.2f', ' cm')}",
            "The largest distance between two lesions' centroids (0 with fewer than two).",
        ),
        Biomarker(
            "sDmax / body height",
            _value(b.sdmax_per_height, ".3f", ""),
            "sDmax over the imaged body's height: dissemination as a share of the body.",
        ),
        Biomarker(
            "body height",
            f"{_value(b.body_height_px, 'd', ' px')} · {_value(b.body_height_cm, '.1f', ' cm')}",
            "Height of the box around the imaged body (its extent, not the stature).",
        ),
        Biomarker(
            "body width",
            f"{_value(b.body_width_px, 'd', ' px')} · {_value(b.body_width_cm, '.1f', ' cm')}",
            "Width of the box around the imaged body.",
        ),
    ]


def burden_rows(metrics: schemas.StudyMetrics | None) -> list[tuple[str, str]]:
    """Label/value rows of a study's metrics for the study page (empty without metrics)."""
    if metrics is None:
        return []
    m = metrics

    def num(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    return [
        ("lesions", str(m.lesions)),
        ("largest lesion", f"{m.largest_lesion_px} px"),
        ("tumor pixels", str(m.tumor_pixels)),
        (
            "tumor fraction",
            num(None if m.tumor_fraction is None else m.tumor_fraction * 100, ".3f") + " %",
        ),  # fmt: skip
        ("uptake mean / max", f"{num(m.uptake_mean, '.3f')} / {num(m.uptake_max, '.3f')}"),
        ("Dice", num(m.dice, ".4f")),
        ("precision / recall", f"{num(m.precision, '.3f')} / {num(m.recall, '.3f')}"),
        ("image", f"{m.width} × {m.height} px"),
        ("inference", num(m.inference_seconds, ".2f") + " s"),
        ("model version", m.model_version),
    ]


def image(session: Session, study_id: int, kind: ImageKind, principal: Principal) -> bytes:
    """PNG bytes of a study's input image, or of its newest mask, overlay or comparison.

    Raises:
        ServiceError: 404 for another tenant's study; 409 for a mask or overlay not
            made yet, and for the comparison of a study without a label.
    """
    if kind == "input":
        study = studies_service.get_study_or_404(session, study_id, principal)
        return study.input_png
    return studies_service.image(session, study_id, kind, principal)
