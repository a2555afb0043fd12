"""Jobs: submit, inspect, list and cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Response, UploadFile

from api.deps import ProducerDep, SessionDep, SettingsDep
from api.schemas import JobOut, JobPage
from api.services import jobs as service
from api.services.jobs import Upload

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _read(files: list[UploadFile] | None, limit: int) -> list[Upload]:
    # read one byte over the limit so the service can tell "too big" apart
    return [Upload(f.filename or f"file{i}.png", f.file.read(limit + 1)) for i, f in
            enumerate(files or [])]  # fmt: skip


@router.post("", status_code=202, response_model=JobOut)
def create_job(
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    producer: ProducerDep,
    files: Annotated[list[UploadFile] | None, File(description="PNG studies")] = None,
    labels: Annotated[list[UploadFile] | None, File(description="Optional label masks")] = None,
) -> JobOut:
    """Submit PNG studies (and optional label masks) as one segmentation job."""
    limit = settings.max_upload_bytes
    job = service.submit_job(session, settings, producer, _read(files, limit), _read(labels, limit))
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return service.job_view(session, job)


@router.get("", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobPage:
    """List jobs, newest first."""
    return service.list_jobs(session, limit, offset)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: int, session: SessionDep) -> JobOut:
    """Status, counts, progress, timings, aggregates and studies of one job."""
    return service.job_view(session, service.get_job_or_404(session, job_id))


@router.delete("/{job_id}", response_model=JobOut)
def cancel_job(job_id: int, session: SessionDep) -> JobOut:
    """Cancel the studies of a job that have not started yet."""
    return service.job_view(session, service.cancel_job(session, job_id))
