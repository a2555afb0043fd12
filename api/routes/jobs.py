"""Jobs: submit, inspect, list and cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile

from api import views
from api.deps import AdmissionDep, PrincipalDep, SessionDep, SettingsDep
from api.schemas import JOB_LINKS, MAX_ID, JobOut, JobPage, error_responses, in_range
from api.services import exports
from api.services import jobs as service
from api.services.jobs import Upload

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=error_responses(401, 422))

JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="Job id"), in_range(1, MAX_ID)]


def _read(files: list[UploadFile] | None, limit: int) -> list[Upload]:
    # read one byte over the limit so the service can tell "too big" apart
    return [
        Upload(f.filename or f"file{i}.png", f.file.read(limit + 1))
        for i, f in enumerate(files or [])
    ]


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses={202: {"links": JOB_LINKS}, **error_responses(400, 413, 429, 503)},
)
def create_job(
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    admission: AdmissionDep,
    files: Annotated[list[UploadFile], File(default_factory=list, description="PNG studies")],
    labels: Annotated[
        list[UploadFile], File(default_factory=list, description="Optional label masks")
    ],
    spacing_mm: Annotated[
        str | None,
        Form(description="Pixel size of every study in mm: 'S', or 'ROWS,COLUMNS'; optional"),
    ] = None,
    name: Annotated[
        str | None,
        Form(max_length=service.JOB_NAME_LENGTH, description="What to call the job; optional"),
    ] = None,
) -> JobOut:
    """Submit PNG studies (and optional label masks) as one segmentation job."""
    admission.admit(principal.key_id, settings.interactive_queue)
    limit = settings.max_upload_bytes
    job = service.submit_job(
        session,
        settings,
        _read(files, limit),
        _read(labels, limit),
        tenant=principal.tenant,
        spacing_mm=service.parse_spacing(spacing_mm),
        name=name,
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return views.new_job_view(job)


@router.get("", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200), in_range(1, 200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID), in_range(0, MAX_ID)] = 0,
) -> JobPage:
    """List the caller's jobs (every tenant's for an admin key), newest first."""
    return views.list_jobs(session, limit, offset, principal)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404))
def get_job(
    job_id: JobId,
    session: SessionDep,
    principal: PrincipalDep,
    studies: Annotated[
        bool, Query(description="false: the status alone, without the list of studies")
    ] = True,
) -> JobOut:
    """Status, counts, progress, timings, aggregates and studies of one job."""
    job = service.get_job_or_404(session, job_id, principal)
    return views.job_view(session, job, with_studies=studies)


@router.delete("/{job_id}", response_model=JobOut, responses=error_responses(404))
def cancel_job(job_id: JobId, session: SessionDep, principal: PrincipalDep) -> JobOut:
    """Cancel the studies of a job that have not started yet."""
    return views.job_view(session, service.cancel_job(session, job_id, principal))


CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}}, **error_responses(404)}


def _csv_response(text: str, name: str) -> Response:
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/{job_id}/results.csv", response_class=Response, responses=CSV)
def get_results_csv(job_id: JobId, session: SessionDep, principal: PrincipalDep) -> Response:
    """One row per study: status, metrics and MIP biomarkers (docs/BIOMARKERS.md)."""
    text = exports.results_csv(session, job_id, principal)
    return _csv_response(text, f"job-{job_id}-results.csv")


@router.get("/{job_id}/lesions.csv", response_class=Response, responses=CSV)
def get_lesions_csv(job_id: JobId, session: SessionDep, principal: PrincipalDep) -> Response:
    """One row per predicted lesion of every study (docs/BIOMARKERS.md)."""
    text = exports.lesions_csv(session, job_id, principal)
    return _csv_response(text, f"job-{job_id}-lesions.csv")
