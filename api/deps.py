"""FastAPI dependencies: settings, unit of work, dispatcher, caller, admission, web session,
metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.metrics import ApiMetrics
from api.services.auth import Principal, authenticate
from api.services.limits import Admission
from api.services.ui_session import SESSION_COOKIE, UiSession
from api.services.ui_session import verify as verify_ui
from config.settings import Settings
from core.dispatch import Dispatcher
from db.session import commit, session_scope


def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_dispatcher(request: Request) -> Dispatcher:
    """The app's dispatcher: tasks after the commit, finished-job notices."""
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


def get_session(request: Request) -> Iterator[Session]:
    """One unit of work per request: commit (then send its tasks) on success, roll back
    on error."""
    settings: Settings = request.app.state.settings
    with session_scope(settings.sqlalchemy_url, get_dispatcher(request).after_commit) as session:
        yield session


_bearer = HTTPBearer(auto_error=False, description="An API key from `tumorseg keys create`.")


def get_admission(request: Request) -> Admission:
    """The app's rate limiter and back-pressure check."""
    admission: Admission = request.app.state.admission
    return admission


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# scope="function": the commit (and the enqueue after it) happens before the response
# is sent, so a client never sees a job id that is not yet in the database.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def get_principal(session: SessionDep, credentials: BearerDep) -> Principal:
    """The caller of the request, from its bearer API key (401 without a valid one)."""
    return authenticate(session, credentials.credentials if credentials else None)


def get_principal_committed(
    session: SessionDep, credentials: BearerDep, dispatcher: DispatcherDep
) -> Principal:
    """`get_principal` for async routes, its write (the key's ``last_used_at``) committed
    in the same call: no transaction, and no lock of the key's row, stays open while the
    route awaits or waits for a thread (the key's other requests would block on it
    holding theirs)."""
    principal = authenticate(session, credentials.credentials if credentials else None)
    commit(session, dispatcher.after_commit)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
CommittedPrincipalDep = Annotated[Principal, Depends(get_principal_committed)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]


def get_ui_secret(request: Request) -> bytes:
    """The key that signs the web viewer's cookies and form tokens."""
    secret: bytes = request.app.state.ui_secret
    return secret


UiSecretDep = Annotated[bytes, Depends(get_ui_secret)]


def get_ui_session(request: Request, session: SessionDep, secret: UiSecretDep) -> UiSession:
    """The web viewer's signed-in session (redirect to /ui/login without a valid cookie)."""
    next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return verify_ui(session, secret, request.cookies.get(SESSION_COOKIE), next_path)


UiSessionDep = Annotated[UiSession, Depends(get_ui_session)]


def get_metrics(request: Request) -> ApiMetrics:
    """The app's Prometheus metrics."""
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
