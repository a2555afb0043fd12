"""Studies: metrics, mask and overlay."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api.deps import SessionDep
from api.schemas import StudyOut
from api.services import studies as service

router = APIRouter(prefix="/studies", tags=["studies"])

PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}}}


@router.get("/{study_id}", response_model=StudyOut)
def get_study(study_id: int, session: SessionDep) -> StudyOut:
    """One study with its status and metrics."""
    return service.study_out(session, study_id)


@router.get("/{study_id}/mask.png", response_class=Response, responses=PNG)
def get_mask(study_id: int, session: SessionDep) -> Response:
    """Predicted mask in competition format: input size, values 0 and 255."""
    return Response(service.image(session, study_id, "mask"), media_type="image/png")


@router.get("/{study_id}/overlay.png", response_class=Response, responses=PNG)
def get_overlay(study_id: int, session: SessionDep) -> Response:
    """The study rendered with the predicted tumor tinted and outlined."""
    return Response(service.image(session, study_id, "overlay"), media_type="image/png")
