"""Reports: the nightly archive report."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import PrincipalDep, SessionDep, SettingsDep
from api.schemas import NightlyReportOut, error_responses, in_range
from api.services import reports as service

router = APIRouter(prefix="/reports", tags=["reports"], responses=error_responses(401, 403, 422))


@router.get("/nightly", response_model=NightlyReportOut)
def nightly_report(
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    day: Annotated[
        date | None,
        Query(
            alias="date",
            description=f"YYYY-MM-DD, from {service.FIRST_DAY} to {service.LAST_DAY}; "
            "default today",
        ),
        in_range(service.FIRST_DAY, service.LAST_DAY),
    ] = None,
) -> NightlyReportOut:
    """The archive studies of one night with lesions, largest lesion and failures."""
    return service.nightly(session, settings, principal, day)
