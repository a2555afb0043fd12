"""The DM i AI 2023 competition endpoint."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Response

from api.deps import (
    AdmissionDep,
    CommittedPrincipalDep,
    DispatcherDep,
    SessionDep,
    SettingsDep,
)
from api.schemas import PredictRequest, PredictResponse, error_responses
from api.services.predict import predict_one

router = APIRouter(tags=["competition"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=error_responses(400, 401, 413, 422, 429, 503, 504),
)
async def predict(
    body: PredictRequest,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
    principal: CommittedPrincipalDep,
    admission: AdmissionDep,
) -> PredictResponse:
    """Segment one base64 PNG and answer an RGB 0/255 mask of the same size (504 on timeout)."""
    result = await predict_one(session, settings, dispatcher, admission, principal, body.img)
    response.headers["X-Model-Version"] = result.model_version
    response.headers["X-Model-Trained"] = str(result.model_trained).lower()
    return PredictResponse(img=base64.b64encode(result.rgb_png).decode("ascii"))
