"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import DispatcherDep, SessionDep, SettingsDep
from api.schemas import Health, Readiness
from api.services.health import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(
    response: Response, session: SessionDep, settings: SettingsDep, dispatcher: DispatcherDep
) -> Readiness:
    """Database, broker and model artifact are reachable (503 otherwise)."""
    checks = readiness(session, settings, dispatcher)
    ok = all(v.startswith("ok") for v in checks.values())
    response.status_code = 200 if ok else 503
    return Readiness(status="ready" if ok else "not ready", checks=checks)
