"""Studies: metrics, mask and overlay."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from api.deps import PrincipalDep, SessionDep
from api.schemas import MAX_ID, StudyOut, error_responses, in_range
from api.services import studies as service

router = APIRouter(prefix="/studies", tags=["studies"], responses=error_responses(401, 404, 422))

StudyId = Annotated[int, Path(ge=1, le=MAX_ID, description="Study id"), in_range(1, MAX_ID)]

PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}},
    **error_responses(409),
}


@router.get("/{study_id}", response_model=StudyOut)
def get_study(study_id: StudyId, session: SessionDep, principal: PrincipalDep) -> StudyOut:
    """One study with its status and metrics."""
    return service.study_out(session, study_id, principal)


@router.get("/{study_id}/mask.png", response_class=Response, responses=PNG)
def get_mask(study_id: StudyId, session: SessionDep, principal: PrincipalDep) -> Response:
    """Predicted mask in competition format: input size, values 0 and 255."""
    return Response(service.image(session, study_id, "mask", principal), media_type="image/png")


@router.get("/{study_id}/overlay.png", response_class=Response, responses=PNG)
def get_overlay(study_id: StudyId, session: SessionDep, principal: PrincipalDep) -> Response:
    """The study rendered with the predicted tumor tinted and outlined."""
    data = service.image(session, study_id, "overlay", principal)
    return Response(data, media_type="image/png")


@router.get("/{study_id}/comparison.png", response_class=Response, responses=PNG)
def get_comparison(study_id: StudyId, session: SessionDep, principal: PrincipalDep) -> Response:
    """A labelled study with its mask compared to the label: hits, false positives and
    misses in three colours (409 without a label)."""
    data = service.image(session, study_id, "comparison", principal)
    return Response(data, media_type="image/png")
