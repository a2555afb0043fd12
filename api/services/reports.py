"""The nightly archive report, for callers allowed to see archive jobs."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy.orm import Session

from api import schemas
from api.services.auth import Principal
from api.services.errors import ServiceError
from archive.nightly_report import FIRST_DAY, LAST_DAY, nightly_report
from config.settings import Settings
from db.models import DEFAULT_TENANT

__all__ = ["FIRST_DAY", "LAST_DAY", "nightly"]


def nightly(
    session: Session, settings: Settings, principal: Principal, day: date | None
) -> schemas.NightlyReportOut:
    """The report of ``day`` (today in the archive time zone when None).

    Raises:
        ServiceError: 403 for keys of other tenants (archive jobs belong to the default).
    """
    if not (principal.is_admin or principal.tenant == DEFAULT_TENANT):
        raise ServiceError(403, f"the nightly report covers tenant {DEFAULT_TENANT!r} only")
    zone = settings.archive_tzinfo
    report = nightly_report(session, day or datetime.now(zone).date(), zone)
    return schemas.NightlyReportOut.model_validate(report.as_dict())
