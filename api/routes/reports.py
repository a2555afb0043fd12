"""Reports: the nightly archive report."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import PrincipalDep, SessionDep, SettingsDep
from api.schemas import NightlyReportOut, error_responses
from api.services import reports as service

router = APIRouter(prefix="/reports", tags=["reports"], responses=error_responses(401, 403, 422))


@router.get("/nightly", response_model=NightlyReportOut)
def nightly_report(
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    day: Annotated[
        date | None, Query(alias="date", description="YYYY-MM-DD; default today")
    ] = None,
) -> NightlyReportOut:
    """The archive studies of one night with lesions, largest lesion and failures."""
    return service.nightly(session, settings, principal, day)
