"""The web viewer: sign-in, jobs list, job and study pages, upload form (HTML, /ui)."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Path, Request, Response, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from api.deps import (
    AdmissionDep,
    SessionDep,
    SettingsDep,
    UiSecretDep,
    UiSessionDep,
)
from api.schemas import MAX_ID, JobOut, JobPage, in_range
from api.services import ui as service
from api.services import ui_session as web
from api.services.errors import ServiceError

router = APIRouter(prefix="/ui", include_in_schema=False)
JobId = Annotated[int, Path(ge=1, le=MAX_ID), in_range(1, MAX_ID)]
StudyId = Annotated[int, Path(ge=1, le=MAX_ID), in_range(1, MAX_ID)]
_API_DIR = FsPath(__file__).resolve().parents[1]
STATIC_DIR = _API_DIR / "static"
templates = Jinja2Templates(directory=_API_DIR / "templates")
templates.env.filters["status_words"] = service.status_words

#: Pages load scripts, styles and images from this origin only and are never framed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(PAGE_HEADERS)
    return response


def _cookie(response: Response, name: str, value: str, max_age: int, path: str) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=path, httponly=True, secure=True, samesite="strict"
    )


def is_page(request: Request) -> bool:
    """Whether the request is for the viewer's pages (its errors answer HTML), not for the
    JSON that the pages poll under ``/ui/api``."""
    path = request.url.path
    return (path == "/ui" or path.startswith("/ui/")) and not path.startswith("/ui/api/")


def error_page(
    request: Request, status_code: int, detail: str, headers: dict[str, str] | None = None
) -> HTMLResponse:
    """The viewer's error page: what went wrong, and the way back to the jobs (with the
    error's own headers, such as ``Retry-After``)."""
    try:
        title = HTTPStatus(status_code).phrase
    except ValueError:
        title = "Error"
    context = {"ui": None, "status_code": status_code, "title": title, "detail": detail}
    response = _page(request, "error.html", context, status_code)
    response.headers.update(headers or {})
    return response


def _login_page(
    request: Request, secret: bytes, next_path: str, error: str | None, status_code: int
) -> HTMLResponse:
    nonce = request.cookies.get(web.LOGIN_COOKIE) or web.new_login_nonce()
    context = {"csrf": web.form_token(secret, nonce), "next": next_path, "error": error}
    response = _page(request, "login.html", context, status_code)
    _cookie(response, web.LOGIN_COOKIE, nonce, 3600, "/ui/login")
    return response


@router.get("/login")
def login_form(request: Request, secret: UiSecretDep, next: str = "/ui") -> HTMLResponse:
    """Sign-in form."""
    return _login_page(request, secret, web.safe_next(next), None, 200)


@router.post("/login", response_model=None)
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    secret: UiSecretDep,
    key: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/ui",
) -> Response:
    """Check an API key and start a web session."""
    next_path = web.safe_next(next)
    if not web.check_form_token(secret, request.cookies.get(web.LOGIN_COOKIE), csrf):
        return _login_page(request, secret, next_path, "The form expired; try again.", 400)
    try:
        token = web.sign_in(session, settings, secret, key)
    except ServiceError:
        return _login_page(request, secret, next_path, "Invalid or revoked API key.", 401)
    response = RedirectResponse(next_path, status_code=303)
    _cookie(response, web.SESSION_COOKIE, token, settings.ui_session_seconds, "/ui")
    response.delete_cookie(web.LOGIN_COOKIE, path="/ui/login")
    return response


@router.post("/logout")
def logout(
    ui: UiSessionDep, secret: UiSecretDep, csrf: Annotated[str, Form(max_length=200)] = ""
) -> RedirectResponse:
    """End the web session."""
    if not web.check_form_token(secret, ui.token, csrf):
        raise ServiceError(400, "invalid form token")
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(web.SESSION_COOKIE, path="/ui", secure=True, httponly=True)
    return response


@router.get("")
def jobs(
    request: Request, session: SessionDep, ui: UiSessionDep, secret: UiSecretDep
) -> HTMLResponse:
    """Jobs list with live progress, and the upload form."""
    page = service.jobs_page(session, ui.principal)
    context = {"ui": ui, "csrf": web.form_token(secret, ui.token), "page": page, "error": None}
    return _page(request, "jobs.html", context)


@router.post("/jobs", response_model=None)
def upload(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admission: AdmissionDep,
    ui: UiSessionDep,
    secret: UiSecretDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
    files: Annotated[list[UploadFile] | None, File()] = None,
    labels: Annotated[list[UploadFile] | None, File()] = None,
    name: Annotated[str, Form(max_length=1000)] = "",
    spacing_mm: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Submit the upload form as a job (the service behind POST /v1/jobs)."""
    if not web.check_form_token(secret, ui.token, csrf):
        raise ServiceError(400, "invalid form token: reload the page and try again")
    limit = settings.max_upload_bytes
    try:
        job_id = service.submit(
            session,
            settings,
            admission,
            ui.principal,
            service.read_uploads(files, limit),
            service.read_uploads(labels, limit),
            name=name,
            spacing_mm=spacing_mm,
        )
    except ServiceError as exc:
        page = service.jobs_page(session, ui.principal)
        context = {"ui": ui, "csrf": csrf, "page": page, "error": exc.detail}
        return _page(request, "jobs.html", context, exc.status_code)
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}")
def job(
    request: Request, job_id: JobId, session: SessionDep, ui: UiSessionDep, secret: UiSecretDep
) -> HTMLResponse:
    """One job: progress and the sortable, filterable table of its studies."""
    context = {
        "ui": ui,
        "csrf": web.form_token(secret, ui.token),
        "job": service.job_page(session, job_id, ui.principal),
    }
    return _page(request, "job.html", context)


@router.get("/jobs/{job_id}/{table}.csv")
def job_table(
    job_id: JobId, table: Literal["results", "lesions"], session: SessionDep, ui: UiSessionDep
) -> Response:
    """A job's results.csv or lesions.csv, as GET /v1/jobs/{id}/<table>.csv."""
    return Response(
        service.table_csv(session, job_id, table, ui.principal),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="job-{job_id}-{table}.csv"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/studies/{study_id}")
def study(
    request: Request, study_id: StudyId, session: SessionDep, ui: UiSessionDep, secret: UiSecretDep
) -> HTMLResponse:
    """One study: the MIP with its mask overlaid (or compared to its label), the sortable
    lesions, the biomarkers and the model version."""
    context = {
        "ui": ui,
        "csrf": web.form_token(secret, ui.token),
        "page": service.study_page(session, study_id, ui.principal),
    }
    return _page(request, "study.html", context)


@router.get("/studies/{study_id}/{kind}.png")
def study_image(
    study_id: StudyId,
    kind: Literal["input", "mask", "overlay", "comparison"],
    session: SessionDep,
    ui: UiSessionDep,
) -> Response:
    """A study's input image, mask, overlay or comparison with its label as PNG."""
    data = service.image(session, study_id, kind, ui.principal)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, no-store"})


@router.get("/api/jobs", response_model=JobPage)
def jobs_json(session: SessionDep, ui: UiSessionDep) -> JobPage:
    """The jobs list as JSON, for the list page's live progress."""
    return service.jobs_page(session, ui.principal)


@router.get("/api/jobs/{job_id}", response_model=JobOut)
def job_json(job_id: JobId, session: SessionDep, ui: UiSessionDep) -> JobOut:
    """One job as JSON, for the job page's live table."""
    return service.job_page(session, job_id, ui.principal)
