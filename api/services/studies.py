"""Study views and stored images."""

from __future__ import annotations

from typing import Literal

from sqlalchemy.orm import Session

from api import schemas
from api.services.auth import Principal
from api.services.errors import ServiceError
from api.services.overlay import render_comparison, render_overlay
from api.views import study_view
from db.models import PacsExportState, Study, StudyStatus
from db.repositories import pacs as pacs_repo
from db.repositories import studies as studies_repo


def get_study_or_404(session: Session, study_id: int, principal: Principal) -> Study:
    """The study, or a 404 service error when it does not exist or the caller cannot see it."""
    study = studies_repo.get_study(session, study_id)
    if study is None or not principal.can_see(study.job):
        raise ServiceError(404, f"study {study_id} not found")
    return study


def study_out(session: Session, study_id: int, principal: Principal) -> schemas.StudyOut:
    """The study schema with its newest result's metrics, biomarkers and lesions."""
    study = get_study_or_404(session, study_id, principal)
    result = studies_repo.latest_result(session, study_id)
    lesions = studies_repo.lesions_of(session, study_id, result.model_version) if result else []
    view = study_view(study, result, lesions)
    view.pacs = pacs_origin(session, study_id)
    return view


def pacs_origin(session: Session, study_id: int) -> schemas.PacsOriginOut | None:
    """Where a study from a PACS came from and what was sent back; None for others."""
    origin = pacs_repo.pacs_study(session, study_id)
    if origin is None:
        return None
    exports = [
        schemas.PacsExportOut(
            model_version=e.model_version,
            state=e.state.value,
            attempts=e.attempts,
            last_error=e.last_error,
            next_attempt_at=e.next_attempt_at if e.state is PacsExportState.PENDING else None,
            sent_at=e.sent_at,
            objects=[schemas.PacsObjectOut.model_validate(o) for o in e.objects],
        )
        for e in pacs_repo.exports_of(session, study_id)
    ]
    return schemas.PacsOriginOut(
        endpoint=origin.endpoint,
        study_instance_uid=origin.study_instance_uid,
        series_instance_uid=origin.series_instance_uid,
        identity=origin.identity,
        instances=len(origin.sop_instance_uids),
        units=origin.units,
        suv_factor=origin.suv_factor,
        suv_note=origin.suv_note,
        exports=exports,
    )


def image(
    session: Session,
    study_id: int,
    kind: Literal["mask", "overlay", "comparison"],
    principal: Principal,
) -> bytes:
    """PNG bytes of the study's newest mask, overlay, or comparison with its label.

    Raises:
        ServiceError: 404 for a study the caller cannot see; 409 while it has no mask,
            and for a comparison of a study without a label.
    """
    study = get_study_or_404(session, study_id, principal)
    result = studies_repo.latest_result(session, study_id, with_bytes=True)
    if study.status is not StudyStatus.SUCCEEDED or result is None:
        raise ServiceError(
            409,
            f"study {study_id} is {study.status.value}: no {kind} yet"
            + (f" ({study.error})" if study.error else ""),
        )
    if kind == "mask":
        return result.mask_png
    if kind == "comparison":
        if study.label_png is None:
            raise ServiceError(409, f"study {study_id} has no label to compare its mask with")
        return render_comparison(study.input_png, result.mask_png, study.label_png)
    return render_overlay(study.input_png, result.mask_png)
